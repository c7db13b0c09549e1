/*
 * client.h - one outbound SMTP session to one destination (libuv, OpenSSL
 * memory BIOs): resolve the next hop, try its MX hosts and addresses in
 * order, EHLO (HELO fallback), STARTTLS and the certificate check as the
 * delivery decision (policy/decide.h) says, then deliver jobs one after the
 * other on the same connection until the scheduler has no more, and QUIT.
 * With [delivery] connection_cache_time set, a session with no job left asks
 * ops->park() whether to stay: if so it waits that long (after RSET) for
 * smtp_client_resume(), then QUITs. A job whose connection turns out gone
 * on resume (no reply to MAIL yet) comes back untried, recipients pending.
 *
 * Jobs come from ops->next_job() once the session is ready; each job comes
 * back through ops->job_done() with every recipient's outcome filled in (or
 * all still RCPT_PENDING when the session was aborted before it was tried).
 * If no MX could be used at all, ops->failed() gets the verdict and the
 * scheduler fails the jobs still waiting for this destination. ops->closed()
 * is the last callback; the session frees itself after it returns.
 *
 * Every connection that reached the SMTP greeting leaves one TLS record
 * (queue/delivery.h tls_session_record) and one log line with the outcome.
 */
#ifndef STRICTRELAY_SMTP_CLIENT_H
#define STRICTRELAY_SMTP_CLIENT_H

#include <openssl/ssl.h>
#include <uv.h>

#include "mta/config.h"
#include "policy/decide.h"
#include "queue/delivery.h"
#include "queue/store.h"

struct mtasts;
struct resolver;
struct smtp_client;

/* Where and how: one scheduler destination. */
struct client_dest {
	char *lookup_name;   /* the domain (MX lookup) or the host itself */
	bool mx_lookup;      /* false: lookup_name is the host ([host] route, address literal) */
	bool route;          /* a configured route: a next hop that does not resolve is a
	                      * configuration problem (defer), not a bad recipient domain */
	uint16_t port;
	char *policy_domain; /* for TLS reporting: the recipient domain, or the route host */
	char *label;         /* for logs, one token: "example.com", "route(*)[relay.test]:2525" */
	struct delivery_req req;
};

/* What one connection found out (strictrelay policy --probe). */
struct client_facts {
	const char *mx_host;
	const char *mx_ip;
	bool connected;
	bool greeted;            /* the peer answered EHLO or HELO */
	const char *helo;        /* its name from the greeting/EHLO */
	bool starttls_offered;
	bool starttls_refused;
	bool tls;                /* a TLS session was established */
	const char *tls_desc;    /* "TLSv1.3 TLS_AES_256_GCM_SHA384" */
	const char *handshake_error;
	const struct tls_verify_info *cert;
	const char *verify_name;
	bool requiretls_offered; /* in the EHLO inside TLS */
	const char *error;       /* why the connection failed, or "" */
};

struct client_ops {
	struct delivery_job *(*next_job)(void *arg);
	void (*job_done)(void *arg, struct delivery_job *job);
	/* sts: the MTA-STS mode that applied, for the log lines */
	void (*failed)(void *arg, const struct verdict *v, enum sts_mode sts);
	void (*closed)(void *arg);
	/* optional: called as each connection ends */
	void (*conn_done)(void *arg, const struct client_facts *f);
	/* optional: no job now; true = stay open (idle) until resumed, the
	 * idle time runs out (QUIT) or the MX closes the connection */
	bool (*park)(void *arg);
};

struct smtp_client_params {
	uv_loop_t *loop;
	const struct config *cfg;
	struct resolver *resolver;
	struct mtasts *mtasts;    /* NULL: no MTA-STS lookups */
	SSL_CTX *tls_ctx;
	struct store *store;      /* NULL: record nothing (policy --probe) */
	const struct client_dest *dest; /* borrowed: must outlive the session */
	struct client_ops ops;
	void *arg;
};

struct smtp_client *smtp_client_start(const struct smtp_client_params *p);

/* An idle (parked) session takes the next job now; false when it is no
 * longer idle (quitting, closed or aborted): start another one then. */
bool smtp_client_resume(struct smtp_client *c);

/* Stops the session now (shutdown): a job in hand comes back with its
 * recipients still pending, unless its message data was already sent. */
void smtp_client_abort(struct smtp_client *c);

#endif
