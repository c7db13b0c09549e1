/*
 * metrics.h - health and metrics: process-wide counters, and an optional
 * HTTP listener ([metrics] listen, meant for loopback) serving them in the
 * Prometheus text format 0.0.4 at GET /metrics, and GET /healthz.
 *
 * Counters live in one struct owned by this module and are incremented ON
 * THE LOOP THREAD ONLY, by one-line calls where the events happen (a store
 * operation's done callback, never its exec function on the writer thread).
 * They count from the start of the process whether or not the listener is
 * on; a counter only moves once the event is final (a recipient's outcome
 * is counted after its COMMIT).
 *
 * Gauges are read at scrape time: the queue by state from the recipients
 * and messages tables, in one read transaction on a connection of our own
 * run on libuv's thread pool (counting a queue of 100k messages takes
 * hundreds of milliseconds, which the loop must not wait for; WAL lets it
 * read while the writer writes; one read at a time, shared by the clients
 * waiting for it), active SMTP connections from the server.
 *
 * HTTP: one request per connection (Connection: close). The request head is
 * capped at METRICS_MAX_REQUEST bytes (431 beyond), the whole exchange at
 * METRICS_TIMEOUT_MS (408 when no request came in that time), at most
 * METRICS_MAX_CLIENTS at once (more are closed at once). GET and HEAD only
 * (405 otherwise, on the two known paths; 404 for any other path).
 * /healthz answers 200 "ok\n" when the loop runs and the queue database
 * answers a query, else 503 with the reason ("shutting down" once a stop
 * began; "queue database: ..." when the read fails or takes longer than
 * the client's deadline).
 *
 * The pure parts (request parsing, routing, rendering) are exported for the
 * unit tests; they do no I/O, read no clock and never trust their input.
 */
#ifndef STRICTRELAY_MTA_METRICS_H
#define STRICTRELAY_MTA_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "mta/config.h"
#include "mta/util.h"
#include "queue/delivery.h"

#define METRICS_MAX_REQUEST 8192      /* request line + headers */
#define METRICS_TIMEOUT_MS 10000      /* whole exchange */
#define METRICS_LINGER_MS 2000        /* waiting for the client's FIN after our answer */
#define METRICS_MAX_CLIENTS 16
#define METRICS_MAX_BODY (1024 * 1024) /* rendered /metrics page */
#define METRICS_DB_BUSY_MS 5000       /* the longest a read waits for a database lock */

/* --- counters (loop thread only) ---------------------------------------- */

enum metrics_counter {
	METRICS_ACCEPTED,            /* messages queued from SMTP clients (250 sent) */
	METRICS_DELIVERED,           /* recipients delivered */
	METRICS_DEFERRED,            /* attempts that left a recipient queued for a retry */
	METRICS_BOUNCED,             /* recipients bounced (failed for good) */
	METRICS_REQUIRETLS_DELIVERED, /* recipients of REQUIRETLS messages delivered */
	METRICS_REQUIRETLS_BOUNCED,  /* recipients bounced 5.7.30 */
	METRICS_STS_CACHE_HITS,      /* MTA-STS lookups answered by a cached policy */
	METRICS_STS_FETCHES,         /* MTA-STS policy fetches started */
	METRICS_STS_FETCH_FAILURES,  /* fetches that gave no valid policy */
	METRICS_NCOUNTERS
};

/* "success" first, then the RFC 8460 section 4.3 result types. */
#define METRICS_TLS_NRESULTS 12
extern const char *const metrics_tls_results[METRICS_TLS_NRESULTS];

void metrics_count(enum metrics_counter c);
/* One TLS outcome as recorded for TLS reporting; a result type outside the
 * list counts as "validation-failure", as the report builder files it. */
void metrics_count_tls(const char *result_type);
/* One recipient's committed outcome (RCPT_PENDING is ignored). requiretls:
 * the message's REQUIRETLS is in force (flag set, sender not null). */
void metrics_count_outcome(enum rcpt_outcome o, const char *status, bool requiretls);

/* --- the pure parts --------------------------------------------------------- */

#define METRICS_HTTP_METHOD_MAX 16
#define METRICS_HTTP_PATH_MAX 256

struct metrics_http_request {
	char method[METRICS_HTTP_METHOD_MAX + 1];
	char path[METRICS_HTTP_PATH_MAX + 1]; /* request-target up to '?' */
	int minor_version;                     /* HTTP/1.x */
	bool has_host;
	int error_status;                      /* when refused: 400, 414, 431, 505 */
};

/*
 * Parses a request head in buf[0..len) (not NUL-terminated; any bytes).
 * Returns the head's length (> 0) once the empty line ending it is in,
 * -2 when more bytes are needed, or -1 when the request is refused, with
 * the status to answer in req->error_status. Strict: CRLF line ends only,
 * origin-form targets of visible ASCII, HTTP/1.0 or 1.1, token header
 * names, no obs-fold, no control bytes, Host required (once) in 1.1. A head
 * not complete within max bytes is refused 431. Never allocates.
 */
long metrics_http_parse(const char *buf, size_t len, size_t max, struct metrics_http_request *req);

enum metrics_route {
	METRICS_ROUTE_METRICS,
	METRICS_ROUTE_HEALTHZ,
	METRICS_ROUTE_NOT_FOUND,
	METRICS_ROUTE_BAD_METHOD,
};
/* *head: the method is HEAD (answer without a body). */
enum metrics_route metrics_http_route(const struct metrics_http_request *req, bool *head);

/* A whole response: status line, Content-Type, Content-Length, Connection:
 * close, Cache-Control: no-store, Allow for 405; the body unless head. */
void metrics_http_response(struct buf *out, int status, const char *content_type,
			   const char *body, size_t body_len, bool head);
const char *metrics_http_reason(int status);

/* Everything one scrape shows. */
struct metrics_snapshot {
	uint64_t counters[METRICS_NCOUNTERS];
	uint64_t tls[METRICS_TLS_NRESULTS];
	bool store_up;               /* the queue gauges below were read */
	uint64_t rcpt_queued;        /* never tried yet, message not held */
	uint64_t rcpt_deferred;      /* tried and waiting for a retry, not held */
	uint64_t rcpt_held;          /* pending recipients of held messages */
	uint64_t msgs_active;
	uint64_t msgs_held;
	int64_t oldest_age;          /* seconds; 0 with an empty queue */
	unsigned connections;        /* inbound SMTP connections */
	int64_t start_time;          /* unix seconds */
	const char *version;
};

/* The counters so far (the gauges are left alone). */
void metrics_snapshot_counters(struct metrics_snapshot *s);

/* Renders s in the text format 0.0.4 (every family with # HELP and # TYPE). */
void metrics_render(struct part *out, const struct metrics_snapshot *s);

/* --- the listener --------------------------------------------------------------- */

struct metrics;
struct smtp_server;

struct metrics_params {
	const struct config *cfg;    /* borrowed; listen and state_dir are read */
	/* Read at scrape time: the daemon's own fields, NULL / false until
	 * (and once no longer) they apply. */
	struct smtp_server *const *server;
	const bool *stopping;
};

/*
 * Binds [metrics] listen; called while still root, so a port below 1024
 * works. With listen unset *out is NULL and 0 is returned (metrics off).
 * -1 with err naming the address on failure (nothing left open).
 */
int metrics_bind(struct metrics **out, uv_loop_t *loop, const struct config *cfg, char *err,
		 size_t errlen);

/*
 * After the privilege drop and store_open(): opens the database connection
 * and starts listening on what metrics_bind() bound. *m NULL: 0 (metrics
 * off). -1 with err on failure, and *m is closed and set to NULL.
 */
int metrics_start(struct metrics **m, const struct metrics_params *p, char *err, size_t errlen);

/* Closes the listener and every client and sets *m to NULL; the struct is
 * freed from the close callbacks (the loop must run afterwards). *m may be
 * NULL. */
void metrics_stop(struct metrics **m);

#endif
