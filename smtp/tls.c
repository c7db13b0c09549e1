/* tls.c - see tls.h */
#include "tls.h"

#include <stdio.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/x509v3.h>

static void openssl_error(char *dst, size_t dstlen, const char *what)
{
	unsigned long e = ERR_peek_last_error();
	char reason[200] = "unknown error";
	if (e != 0)
		ERR_error_string_n(e, reason, sizeof(reason));
	snprintf(dst, dstlen, "%s: %s", what, reason);
	ERR_clear_error();
}

static void ctx_common(SSL_CTX *ctx)
{
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
	/* Idle connections should not keep 30+ KB of TLS buffers. */
	SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
}

SSL_CTX *tls_server_ctx_new(const char *cert_file, const char *key_file, char *err, size_t errlen)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
	if (ctx == NULL) {
		openssl_error(err, errlen, "SSL_CTX_new");
		return NULL;
	}
	ctx_common(ctx);
	SSL_CTX_set_options(ctx, SSL_OP_CIPHER_SERVER_PREFERENCE);
	if (SSL_CTX_use_certificate_chain_file(ctx, cert_file) != 1) {
		char what[300];
		snprintf(what, sizeof(what), "tls_cert \"%s\"", cert_file);
		openssl_error(err, errlen, what);
		SSL_CTX_free(ctx);
		return NULL;
	}
	if (SSL_CTX_use_PrivateKey_file(ctx, key_file, SSL_FILETYPE_PEM) != 1) {
		char what[300];
		snprintf(what, sizeof(what), "tls_key \"%s\"", key_file);
		openssl_error(err, errlen, what);
		SSL_CTX_free(ctx);
		return NULL;
	}
	if (SSL_CTX_check_private_key(ctx) != 1) {
		openssl_error(err, errlen, "tls_key does not match tls_cert");
		SSL_CTX_free(ctx);
		return NULL;
	}
	return ctx;
}

SSL_CTX *tls_client_ctx_new(const char *ca_file, char *err, size_t errlen)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	if (ctx == NULL) {
		openssl_error(err, errlen, "SSL_CTX_new");
		return NULL;
	}
	ctx_common(ctx);
	int ok = (ca_file != NULL && *ca_file != '\0')
			 ? SSL_CTX_load_verify_locations(ctx, ca_file, NULL)
			 : SSL_CTX_set_default_verify_paths(ctx);
	if (ok != 1) {
		char what[300];
		snprintf(what, sizeof(what), "ca_file \"%s\"", ca_file ? ca_file : "(system)");
		openssl_error(err, errlen, what);
		SSL_CTX_free(ctx);
		return NULL;
	}
	/* Verification runs during the handshake but never aborts it: the
	 * delivery decision looks at the result (tls_client_verify). */
	SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
	return ctx;
}

static int conn_init(struct tls_conn *t, SSL_CTX *ctx)
{
	memset(t, 0, sizeof(*t));
	t->ssl = SSL_new(ctx);
	if (t->ssl == NULL) {
		openssl_error(t->error, sizeof(t->error), "SSL_new");
		return -1;
	}
	t->in = BIO_new(BIO_s_mem());
	t->out = BIO_new(BIO_s_mem());
	if (t->in == NULL || t->out == NULL) {
		BIO_free(t->in);
		BIO_free(t->out);
		SSL_free(t->ssl);
		t->ssl = NULL;
		openssl_error(t->error, sizeof(t->error), "BIO_new");
		return -1;
	}
	/* An empty read BIO means "want read", not end of file. */
	BIO_set_mem_eof_return(t->in, -1);
	SSL_set_bio(t->ssl, t->in, t->out); /* the SSL owns both BIOs now */
	return 0;
}

int tls_conn_init_server(struct tls_conn *t, SSL_CTX *ctx)
{
	if (conn_init(t, ctx) < 0)
		return -1;
	SSL_set_accept_state(t->ssl);
	return 0;
}

int tls_conn_init_client(struct tls_conn *t, SSL_CTX *ctx, const char *sni,
			 const char *verify_name)
{
	if (conn_init(t, ctx) < 0)
		return -1;
	SSL_set_connect_state(t->ssl);
	if (sni != NULL && *sni != '\0' && SSL_set_tlsext_host_name(t->ssl, sni) != 1) {
		openssl_error(t->error, sizeof(t->error), "SNI");
		return -1;
	}
	if (verify_name != NULL) {
		/* RFC 6125 as MTA-STS uses it: DNS-ID only, whole-label wildcards. */
		SSL_set_hostflags(t->ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS |
						  X509_CHECK_FLAG_NEVER_CHECK_SUBJECT);
		if (SSL_set1_host(t->ssl, verify_name) != 1) {
			openssl_error(t->error, sizeof(t->error), "SSL_set1_host");
			return -1;
		}
	}
	return 0;
}

void tls_conn_free(struct tls_conn *t)
{
	if (t->ssl != NULL)
		SSL_free(t->ssl); /* frees the BIOs too */
	memset(t, 0, sizeof(*t));
}

void tls_feed(struct tls_conn *t, const void *data, size_t len)
{
	/* A memory BIO grows as needed; BIO_write only fails on OOM. */
	if (len > 0 && BIO_write(t->in, data, (int)len) != (int)len)
		snprintf(t->error, sizeof(t->error), "BIO_write failed");
}

static enum tls_status ssl_status(struct tls_conn *t, int r, const char *what)
{
	int e = SSL_get_error(t->ssl, r);
	switch (e) {
	case SSL_ERROR_WANT_READ:
	case SSL_ERROR_WANT_WRITE:
		return TLS_WANT;
	case SSL_ERROR_ZERO_RETURN:
		return TLS_CLOSED;
	default:
		openssl_error(t->error, sizeof(t->error), what);
		return TLS_ERROR;
	}
}

/*
 * OpenSSL's error queue is per thread, and SSL_get_error() reads it: an
 * error another user of OpenSSL left behind (libcurl after a failed
 * handshake, say) would make a healthy session look broken. So every SSL
 * call below starts with an empty queue.
 */
enum tls_status tls_handshake(struct tls_conn *t)
{
	if (t->done)
		return TLS_OK;
	ERR_clear_error();
	int r = SSL_do_handshake(t->ssl);
	if (r == 1) {
		t->done = true;
		return TLS_OK;
	}
	return ssl_status(t, r, "TLS handshake");
}

enum tls_status tls_read(struct tls_conn *t, struct buf *out)
{
	char tmp[16384];
	for (;;) {
		ERR_clear_error();
		int r = SSL_read(t->ssl, tmp, sizeof(tmp));
		if (r > 0) {
			if (buf_append(out, tmp, (size_t)r) < 0) {
				snprintf(t->error, sizeof(t->error), "input buffer full");
				return TLS_ERROR;
			}
			continue;
		}
		return ssl_status(t, r, "TLS read");
	}
}

enum tls_status tls_write(struct tls_conn *t, const void *data, size_t len)
{
	if (len == 0)
		return TLS_OK;
	/* Memory BIOs never block, so SSL_write takes everything at once. */
	ERR_clear_error();
	int r = SSL_write(t->ssl, data, (int)len);
	if (r == (int)len)
		return TLS_OK;
	return ssl_status(t, r, "TLS write");
}

size_t tls_take_output(struct tls_conn *t, struct buf *out)
{
	size_t total = 0;
	char *p;
	long n = BIO_get_mem_data(t->out, &p);
	if (n > 0) {
		buf_append(out, p, (size_t)n);
		total = (size_t)n;
		(void)BIO_reset(t->out);
	}
	return total;
}

void tls_shutdown(struct tls_conn *t)
{
	ERR_clear_error();
	if (t->ssl != NULL && t->done)
		(void)SSL_shutdown(t->ssl);
	ERR_clear_error();
}

void tls_describe(const struct tls_conn *t, char *dst, size_t dstlen)
{
	if (t->ssl == NULL || !t->done) {
		snprintf(dst, dstlen, "none");
		return;
	}
	snprintf(dst, dstlen, "%s %s", SSL_get_version(t->ssl), SSL_get_cipher_name(t->ssl));
}

const char *tls_last_error(const struct tls_conn *t)
{
	return t->error[0] ? t->error : "unknown TLS error";
}

void tls_client_verify(const struct tls_conn *t, struct tls_verify_info *info)
{
	memset(info, 0, sizeof(*info));
	X509 *cert = SSL_get1_peer_certificate(t->ssl);
	if (cert == NULL) {
		info->result = TLS_CERT_NONE;
		snprintf(info->detail, sizeof(info->detail), "no certificate presented");
		return;
	}
	X509_NAME_oneline(X509_get_subject_name(cert), info->subject, sizeof(info->subject));
	X509_free(cert);
	long v = SSL_get_verify_result(t->ssl);
	info->x509_error = v;
	switch (v) {
	case X509_V_OK:
		info->result = TLS_CERT_OK;
		break;
	case X509_V_ERR_CERT_HAS_EXPIRED:
	case X509_V_ERR_CERT_NOT_YET_VALID:
		info->result = TLS_CERT_EXPIRED;
		break;
	case X509_V_ERR_HOSTNAME_MISMATCH:
	case X509_V_ERR_IP_ADDRESS_MISMATCH:
		info->result = TLS_CERT_NAME_MISMATCH;
		break;
	case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
	case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
	case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
	case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
	case X509_V_ERR_CERT_UNTRUSTED:
	case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
	case X509_V_ERR_CERT_SIGNATURE_FAILURE:
		info->result = TLS_CERT_UNTRUSTED;
		break;
	default:
		info->result = TLS_CERT_OTHER;
		break;
	}
	if (v != X509_V_OK)
		snprintf(info->detail, sizeof(info->detail), "%s",
			 X509_verify_cert_error_string(v));
	else
		snprintf(info->detail, sizeof(info->detail), "verified");
}
