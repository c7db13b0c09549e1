/*
 * tls.h - TLS over memory BIOs, for libuv sockets (STYLE.md "TLS over memory
 * BIOs"). No socket I/O here: the caller feeds ciphertext from the network
 * with tls_feed(), runs tls_handshake()/tls_read()/tls_write(), and after
 * EVERY call sends what tls_take_output() returns (a handshake or a session
 * ticket can produce output during a read).
 *
 * Contexts are made once (at start-up and on reload), never per connection.
 * Protocol floor: TLS 1.2 (RFC 8461 and RFC 8689 both need 1.2+).
 *
 * Client-side certificate checks (tls_client_verify) follow RFC 6125 as
 * MTA-STS wants it: SAN dNSName only (no CN fallback), a wildcard only as the
 * whole left-most label, and chain validation against the configured CA file
 * or the system store. The handshake itself never fails on verification, so
 * opportunistic sessions can go on; the caller decides with the result.
 */
#ifndef STRICTRELAY_SMTP_TLS_H
#define STRICTRELAY_SMTP_TLS_H

#include <stdbool.h>
#include <stddef.h>

#include <openssl/ssl.h>

#include "mta/util.h"
#include "smtp/tls_result.h"

enum tls_status {
	TLS_ERROR = -1,  /* fatal: see tls_last_error() */
	TLS_OK = 0,
	TLS_WANT = 1,    /* needs more input from the peer */
	TLS_CLOSED = 2,  /* the peer sent close_notify */
};

struct tls_conn {
	SSL *ssl;
	BIO *in;         /* network -> SSL */
	BIO *out;        /* SSL -> network */
	bool done;       /* handshake complete */
	char error[256]; /* last error text */
};

/* NULL on failure with the reason in err (names the file). */
SSL_CTX *tls_server_ctx_new(const char *cert_file, const char *key_file, char *err,
			    size_t errlen);
/* ca_file NULL or "" = the system trust store. */
SSL_CTX *tls_client_ctx_new(const char *ca_file, char *err, size_t errlen);

int tls_conn_init_server(struct tls_conn *t, SSL_CTX *ctx);
/* sni: name sent in the handshake; verify_name: name the certificate must
 * carry (NULL = no name check). */
int tls_conn_init_client(struct tls_conn *t, SSL_CTX *ctx, const char *sni,
			 const char *verify_name);
void tls_conn_free(struct tls_conn *t);

void tls_feed(struct tls_conn *t, const void *data, size_t len);
enum tls_status tls_handshake(struct tls_conn *t);
/* Appends all plaintext available to out. TLS_WANT when it drained the input. */
enum tls_status tls_read(struct tls_conn *t, struct buf *out);
enum tls_status tls_write(struct tls_conn *t, const void *data, size_t len);
/* Moves pending ciphertext into out; returns the number of bytes moved. */
size_t tls_take_output(struct tls_conn *t, struct buf *out);
/* Sends close_notify (output must then be flushed). */
void tls_shutdown(struct tls_conn *t);

/* "TLSv1.3 TLS_AES_256_GCM_SHA384" */
void tls_describe(const struct tls_conn *t, char *dst, size_t dstlen);
const char *tls_last_error(const struct tls_conn *t);

void tls_client_verify(const struct tls_conn *t, struct tls_verify_info *info);

#endif
