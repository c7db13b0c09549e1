/*
 * https.h - the program's one HTTPS client: MTA-STS policy fetches
 * (RFC 8461 3.3) now, TLSRPT report POSTs (RFC 8460 3) later.
 *
 * How it runs: one curl multi handle driven by the libuv loop (curl's
 * docs/examples/multi-uv.c pattern, STYLE.md 1). CURLMOPT_SOCKETFUNCTION
 * starts, changes or stops a uv_poll_t per socket (attached with
 * curl_multi_assign, freed in its close callback); CURLMOPT_TIMERFUNCTION
 * drives one uv_timer_t. Host names are resolved by our own resolver
 * (policy/resolver.h, A + AAAA) and handed to curl with CURLOPT_RESOLVE, so
 * Debian's threaded getaddrinfo resolver never runs: no threads, no blocking
 * call (notes gotcha 4).
 *
 * API
 *   https_global_init()  curl_global_init(); main() must call it once, at
 *                        program start, before any thread exists (before
 *                        the store starts its writer thread)
 *   https_global_cleanup()  at exit, after every client was freed (optional)
 *   https_client_new()   one per daemon, on the loop, with the resolver
 *   https_request()      GET or POST one URL; the callback runs from the loop
 *   https_cancel()       the callback will not run
 *   https_client_free()
 *   https_error_name()   "OK", "DNS", ... for logs
 *
 * What every request does (RFC 8461 3.3 / STS-10..16, STS-21, NAME-01/03/05,
 * RPT-22). These are the only behaviour, not options:
 *   - https:// only, HTTP/1.1; never a proxy (CURLOPT_PROXY "" and NOPROXY
 *     "*", whatever the environment says); no cookies, no .netrc, no HSTS or
 *     Alt-Svc cache, no conditional request, no Accept-Encoding (the body cap
 *     counts the bytes on the wire, and no decompression bomb is possible).
 *   - Redirects are never followed: a 3xx is returned as the status, its
 *     body as the body (STS-13, RPT-22).
 *   - TLS 1.2 or newer. The certificate must chain to ca_file (or the system
 *     store), be within its validity, have purpose serverAuth, and carry a
 *     subjectAltName dNSName matching host: no fallback to the subject CN
 *     (OpenSSL X509_CHECK_FLAG_NEVER_CHECK_SUBJECT, set through
 *     CURLOPT_SSL_CTX_FUNCTION, because curl's own host check falls back to
 *     the CN when there is no SAN), and a wildcard only as the whole leftmost
 *     label (X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS). SNI is host.
 *   - A fresh connection and a full handshake for every request (no
 *     connection reuse, no TLS session resumption): each fetch sees the
 *     certificate as it is now, and reports the address it used.
 *   - The response body is kept up to max_body bytes; one byte more aborts
 *     the transfer (HTTPS_TOO_BIG). Nothing beyond the cap is ever stored.
 *   - timeout_ms bounds the whole request: DNS, connect, TLS, transfer.
 *
 * Errors (enum https_error), from curl's result (curl 7.88 + OpenSSL 3):
 *   CURLE_OK                                    OK (any HTTP status)
 *   our resolver: no address (NXDOMAIN, NODATA, TEMPFAIL, BADNAME);
 *   CURLE_COULDNT_RESOLVE_HOST                  DNS
 *   CURLE_COULDNT_CONNECT (refused, unreachable), CURLE_SEND_ERROR,
 *   CURLE_RECV_ERROR (reset after connecting)   CONNECT
 *   CURLE_PEER_FAILED_VERIFICATION (untrusted, self-signed, expired, not yet
 *   valid, name mismatch, no SAN)               CERT (verify_result says which)
 *   CURLE_SSL_CONNECT_ERROR and other TLS codes  TLS
 *   CURLE_OPERATION_TIMEDOUT, or our deadline while resolving   TIMEOUT
 *   CURLE_FILESIZE_EXCEEDED, or our write callback over the cap  TOO_BIG
 *   CURLE_GOT_NOTHING, CURLE_WEIRD_SERVER_REPLY, CURLE_PARTIAL_FILE, other
 *   codes                                       PROTOCOL
 *   https_client_free() first                   SHUTDOWN
 *   a request refused before it started (bad host, path, method, limits)
 *                                               INVALID
 *   curl refused an option, out of memory, CURLE_SSL_CACERT_BADFILE
 *                                               INTERNAL
 *
 * Callbacks: void cb(void *arg, const struct https_response *res). Every
 * callback runs from the loop, never inside https_request() (also for a
 * request refused at once) and never inside a curl call, so a callback may
 * start requests, cancel other ones and call https_client_free(). res and
 * everything it points to is borrowed: valid only during the callback.
 *
 * Ownership and lifetime
 *   - The client borrows the loop and the resolver: free the client before
 *     the resolver. https_client_free() closes every handle it opened; the
 *     loop must then run once more to finish the closes (after that
 *     uv_loop_close() returns 0). The struct is freed in the last close
 *     callback.
 *   - https_request() copies everything in *req (the caller's struct and
 *     strings may go away when it returns). It never returns NULL.
 *   - A struct https_op * belongs to the client. It is valid until its
 *     callback has returned or https_cancel() was called; after cancel the
 *     caller may free the object arg points to at once. Cancelling from
 *     inside the op's own callback is a no-op.
 *   - https_client_free(): requests whose result is ready are delivered with
 *     it; every other request not yet delivered completes, inside
 *     https_client_free(), with HTTPS_SHUTDOWN "shutting down" (requests
 *     started from those callbacks too). Cancelled requests stay silent.
 *     After https_client_free() returns, the client must not be used.
 *
 * Limits: host <= 253 characters (a DNS name, A-labels only, not an IP
 * literal: RFC 8461 and 8460 name hosts, and a dNSName never matches an
 * address, NAME-04); path <= HTTPS_PATH_MAX printable ASCII characters
 * without spaces, starting with '/'; max_body <= HTTPS_MAX_BODY_LIMIT;
 * POST bodies <= HTTPS_MAX_POST; timeout_ms <= HTTPS_MAX_TIMEOUT_MS; at most
 * HTTPS_MAX_ADDRS addresses of the host are tried (IPv4 first).
 *
 * BUGS: curl parses the CA file into an X509_STORE on the loop thread. It
 * keeps that store in the multi handle for 24 hours (curl 7.87+,
 * CURLOPT_CA_CACHE_TIMEOUT; only without a CA directory, which is why none
 * is set), so the cost (~10 ms for the system bundle) is paid about once a
 * day, not per request. A cancelled request's DNS query keeps its c-ares
 * slot until it ends (resolver.h BUGS).
 */
#ifndef STRICTRELAY_HTTPS_H
#define STRICTRELAY_HTTPS_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

struct resolver;
struct https_client;
struct https_op;

#define HTTPS_DEFAULT_MAX_BODY 65536          /* STS-16: 64 KiB */
#define HTTPS_MAX_BODY_LIMIT (16u << 20)
#define HTTPS_MAX_POST (64u << 20)
#define HTTPS_DEFAULT_TIMEOUT_MS 60000u       /* RFC 8461 10.3: 60 s */
#define HTTPS_MAX_TIMEOUT_MS 600000u
#define HTTPS_PATH_MAX 1024
#define HTTPS_MAX_ADDRS 16
#define HTTPS_DETAIL_MAX 256
#define HTTPS_CONTENT_TYPE_MAX 128

enum https_error {
	HTTPS_OK,        /* a response arrived: see status (any, also 3xx/4xx/5xx) */
	HTTPS_DNS,       /* no address for host */
	HTTPS_CONNECT,   /* no TCP connection, or it broke */
	HTTPS_CERT,      /* PKIX: untrusted, expired, name mismatch, no SAN */
	HTTPS_TLS,       /* another handshake failure (version, alert, not TLS) */
	HTTPS_TIMEOUT,   /* timeout_ms passed (DNS included) */
	HTTPS_TOO_BIG,   /* the body exceeded max_body */
	HTTPS_PROTOCOL,  /* not a valid HTTP response */
	HTTPS_SHUTDOWN,  /* https_client_free() came first */
	HTTPS_INVALID,   /* the request was refused before it started */
	HTTPS_INTERNAL,  /* curl refused an option, out of memory, bad CA file */
};

struct https_request {
	const char *method;        /* "GET" or "POST" */
	const char *host;          /* DNS name; trailing dot and case ignored */
	uint16_t port;             /* 0 = 443 */
	const char *path;          /* "/.well-known/mta-sts.txt" (with any query) */
	const char *content_type;  /* POST only, required: "application/tlsrpt+gzip" */
	const void *body;          /* POST only; may be NULL when body_len is 0 */
	size_t body_len;
	size_t max_body;           /* response body cap; 0 = HTTPS_DEFAULT_MAX_BODY */
	unsigned timeout_ms;       /* whole request incl. DNS; 0 = HTTPS_DEFAULT_TIMEOUT_MS */
	const char *user_agent;    /* NULL or "" = "strictrelay/VERSION" */
};

struct https_response {
	int status;                /* HTTP status, 0 if no response line arrived; it
	                            * may be set when error != HTTPS_OK (e.g. TOO_BIG):
	                            * check error first */
	enum https_error error;
	char detail[HTTPS_DETAIL_MAX];  /* curl's error text or ours ("" when OK), for
	                            * logs and TLSRPT failure details; may hold
	                            * network text: str_quote() before logging */
	long verify_result;        /* OpenSSL X509_V_* of the certificate check (0 when
	                            * it passed or was not reached): for NAME-07 */
	char content_type[HTTPS_CONTENT_TYPE_MAX]; /* as received, "" if none;
	                            * truncated if longer (the media type comes first) */
	const char *body;          /* NUL-terminated (the NUL is not counted); "" and
	                            * body_len 0 unless error == HTTPS_OK */
	size_t body_len;
	char ip[64];               /* the address used: the one curl connected to,
	                            * or when no connection succeeded and DNS gave a
	                            * single address, that one; else "" */
	unsigned elapsed_ms;       /* from https_request() to the result */
};

typedef void https_cb(void *arg, const struct https_response *res);

/*
 * curl_global_init(CURL_GLOBAL_DEFAULT). Call once at program start, before
 * any thread is started (curl 7.88 does not promise a thread-safe init).
 * 0, or -1 with the reason in err.
 */
int https_global_init(char *err, size_t errlen);
void https_global_cleanup(void);

/*
 * ca_file: PEM trust anchors, and then only these (the system CA directory
 * is not consulted); NULL or "" = the system bundle curl was built with
 * (Debian: /etc/ssl/certs/ca-certificates.crt). It must load now (checked,
 * so a typo fails at start-up rather than every fetch). Also checks that libcurl
 * uses OpenSSL 3 (the SSL_CTX hook depends on it) and supports every option
 * we rely on. 0 and *out, or -1 with the reason in err (nothing to close
 * then).
 */
int https_client_new(struct https_client **out, uv_loop_t *loop, struct resolver *resolver,
		     const char *ca_file, char *err, size_t errlen);

/* See "Ownership and lifetime". NULL is a no-op. */
void https_client_free(struct https_client *c);

/* Never NULL. */
struct https_op *https_request(struct https_client *c, const struct https_request *req,
			       https_cb *cb, void *arg);

/* NULL is a no-op. */
void https_cancel(struct https_op *op);

/* Requests not yet delivered (for tests and metrics). */
size_t https_client_pending(const struct https_client *c);

/* "OK", "DNS", "CONNECT", "CERT", "TLS", "TIMEOUT", "TOO_BIG", "PROTOCOL",
 * "SHUTDOWN", "INVALID", "INTERNAL" */
const char *https_error_name(enum https_error e);

#endif
