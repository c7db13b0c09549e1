/* metrics.c - health and metrics endpoint and the process counters; see metrics.h */
#include "metrics.h"

#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <sqlite3.h>

#include "mta/log.h"
#include "mta/netaddr.h"
#include "queue/store.h"
#include "smtp/server.h"

#define CONTENT_TYPE_METRICS "text/plain; version=0.0.4; charset=utf-8"
#define CONTENT_TYPE_TEXT "text/plain; charset=utf-8"
/* Bytes a client may still send after our answer before we stop listening. */
#define MAX_DISCARD (1024 * 1024)

/* --- counters ------------------------------------------------------------ */

const char *const metrics_tls_results[METRICS_TLS_NRESULTS] = {
	"success",
	/* RFC 8460 4.3.1 negotiation failures */
	"starttls-not-supported",
	"certificate-host-mismatch",
	"certificate-expired",
	"certificate-not-trusted",
	"validation-failure",
	/* 4.3.2.1 DANE */
	"tlsa-invalid",
	"dnssec-invalid",
	"dane-required",
	/* 4.3.2.2 MTA-STS */
	"sts-policy-fetch-error",
	"sts-policy-invalid",
	"sts-webpki-invalid",
};
#define TLS_VALIDATION_FAILURE 5

/* Touched on the loop thread only (metrics.h). */
static struct {
	uint64_t c[METRICS_NCOUNTERS];
	uint64_t tls[METRICS_TLS_NRESULTS];
} counters;

void metrics_count(enum metrics_counter c)
{
	if (c >= 0 && c < METRICS_NCOUNTERS)
		counters.c[c]++;
}

void metrics_count_tls(const char *result_type)
{
	size_t i = TLS_VALIDATION_FAILURE;
	for (size_t k = 0; result_type != NULL && k < METRICS_TLS_NRESULTS; k++) {
		if (strcmp(result_type, metrics_tls_results[k]) == 0) {
			i = k;
			break;
		}
	}
	counters.tls[i]++;
}

void metrics_count_outcome(enum rcpt_outcome o, const char *status, bool requiretls)
{
	switch (o) {
	case RCPT_SENT:
		counters.c[METRICS_DELIVERED]++;
		if (requiretls)
			counters.c[METRICS_REQUIRETLS_DELIVERED]++;
		break;
	case RCPT_DEFERRED:
		counters.c[METRICS_DEFERRED]++;
		break;
	case RCPT_BOUNCED:
		counters.c[METRICS_BOUNCED]++;
		if (status != NULL && strcmp(status, "5.7.30") == 0)
			counters.c[METRICS_REQUIRETLS_BOUNCED]++;
		break;
	case RCPT_PENDING:
		break;
	}
}

void metrics_snapshot_counters(struct metrics_snapshot *s)
{
	memcpy(s->counters, counters.c, sizeof(s->counters));
	memcpy(s->tls, counters.tls, sizeof(s->tls));
}

/* --- request parsing (pure) ------------------------------------------------ */

static bool is_tchar(unsigned char c)
{
	if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
		return true;
	return c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

/*
 * Finds the CRLF ending the line that starts at pos: 1 with *eol at its CR,
 * 0 when the line is not complete in p[0..n), -1 on a bare CR, a bare LF or
 * a NUL (never part of a valid head).
 */
static int find_line(const unsigned char *p, size_t n, size_t pos, size_t *eol)
{
	for (size_t i = pos; i < n; i++) {
		if (p[i] == '\0' || p[i] == '\n')
			return -1;
		if (p[i] == '\r') {
			if (i + 1 >= n)
				return 0;
			if (p[i + 1] != '\n')
				return -1;
			*eol = i;
			return 1;
		}
	}
	return 0;
}

static long refuse(struct metrics_http_request *req, int status)
{
	req->error_status = status;
	return -1;
}

/* "METHOD SP origin-form SP HTTP/1.x" in p[0..len). */
static long parse_request_line(const unsigned char *p, size_t len, struct metrics_http_request *req)
{
	size_t i = 0;
	while (i < len && is_tchar(p[i]))
		i++;
	if (i == 0 || i >= len || p[i] != ' ')
		return refuse(req, 400);
	if (i > METRICS_HTTP_METHOD_MAX)
		return refuse(req, 400);
	memcpy(req->method, p, i);
	req->method[i] = '\0';
	size_t t = ++i;
	if (t >= len || p[t] != '/')
		return refuse(req, 400); /* origin-form only */
	size_t path_end = 0;
	bool in_query = false;
	while (i < len && p[i] != ' ') {
		if (p[i] < 0x21 || p[i] > 0x7e || p[i] == '#')
			return refuse(req, 400);
		if (p[i] == '?' && !in_query) {
			in_query = true;
			path_end = i;
		}
		i++;
	}
	if (i - t > METRICS_HTTP_PATH_MAX)
		return refuse(req, 414);
	if (!in_query)
		path_end = i;
	memcpy(req->path, p + t, path_end - t);
	req->path[path_end - t] = '\0';
	if (i >= len || p[i] != ' ')
		return refuse(req, 400);
	i++;
	/* HTTP-version = "HTTP/" DIGIT "." DIGIT, case-sensitive */
	if (len - i != 8 || memcmp(p + i, "HTTP/", 5) != 0 || p[i + 6] != '.' ||
	    p[i + 5] < '0' || p[i + 5] > '9' || p[i + 7] < '0' || p[i + 7] > '9')
		return refuse(req, 400);
	if (p[i + 5] != '1')
		return refuse(req, 505);
	req->minor_version = p[i + 7] - '0';
	if (req->minor_version > 1)
		return refuse(req, 505);
	return 0;
}

/* "name: value" in p[0..len); 0 or -1 (400). */
static long parse_header(const unsigned char *p, size_t len, struct metrics_http_request *req)
{
	size_t i = 0;
	while (i < len && is_tchar(p[i]))
		i++;
	/* an empty name, a blank before the colon, or obs-fold (a line that
	 * starts with a blank) */
	if (i == 0 || i >= len || p[i] != ':')
		return refuse(req, 400);
	bool host = i == 4 && strncasecmp((const char *)p, "host", 4) == 0;
	for (size_t k = i + 1; k < len; k++) {
		unsigned char c = p[k];
		if (c != '\t' && (c < 0x20 || c == 0x7f))
			return refuse(req, 400);
	}
	if (host) {
		if (req->has_host)
			return refuse(req, 400); /* RFC 9112 3.2: exactly one */
		req->has_host = true;
	}
	return 0;
}

long metrics_http_parse(const char *buf, size_t len, size_t max, struct metrics_http_request *req)
{
	memset(req, 0, sizeof(*req));
	const unsigned char *p = (const unsigned char *)buf;
	size_t n = len < max ? len : max;
	size_t pos = 0;
	/* RFC 9112 2.2: empty lines before the request line are ignored */
	while (pos + 1 < n && p[pos] == '\r' && p[pos + 1] == '\n')
		pos += 2;
	size_t eol = 0;
	int r = find_line(p, n, pos, &eol);
	if (r < 0)
		return refuse(req, 400);
	if (r == 0) {
		/* the request line alone could be refused already */
		for (size_t i = pos; i < n && p[i] != '\r'; i++)
			if (p[i] < 0x20 || p[i] > 0x7e)
				return refuse(req, 400);
		return n >= max ? refuse(req, 414) : -2;
	}
	if (parse_request_line(p + pos, eol - pos, req) < 0)
		return -1;
	pos = eol + 2;
	for (;;) {
		r = find_line(p, n, pos, &eol);
		if (r < 0)
			return refuse(req, 400);
		if (r == 0)
			return n >= max ? refuse(req, 431) : -2;
		if (eol == pos)
			break;
		if (parse_header(p + pos, eol - pos, req) < 0)
			return -1;
		pos = eol + 2;
	}
	if (req->minor_version == 1 && !req->has_host)
		return refuse(req, 400);
	return (long)(eol + 2);
}

enum metrics_route metrics_http_route(const struct metrics_http_request *req, bool *head)
{
	*head = false;
	enum metrics_route route;
	if (strcmp(req->path, "/metrics") == 0)
		route = METRICS_ROUTE_METRICS;
	else if (strcmp(req->path, "/healthz") == 0)
		route = METRICS_ROUTE_HEALTHZ;
	else
		return METRICS_ROUTE_NOT_FOUND;
	if (strcmp(req->method, "HEAD") == 0)
		*head = true;
	else if (strcmp(req->method, "GET") != 0)
		return METRICS_ROUTE_BAD_METHOD;
	return route;
}

const char *metrics_http_reason(int status)
{
	switch (status) {
	case 200: return "OK";
	case 400: return "Bad Request";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 408: return "Request Timeout";
	case 414: return "URI Too Long";
	case 431: return "Request Header Fields Too Large";
	case 500: return "Internal Server Error";
	case 503: return "Service Unavailable";
	case 505: return "HTTP Version Not Supported";
	default: return "Error";
	}
}

void metrics_http_response(struct buf *out, int status, const char *content_type,
			   const char *body, size_t body_len, bool head)
{
	buf_printf(out,
		   "HTTP/1.1 %d %s\r\n"
		   "Content-Type: %s\r\n"
		   "Content-Length: %zu\r\n"
		   "Connection: close\r\n"
		   "Cache-Control: no-store\r\n"
		   "%s"
		   "\r\n",
		   status, metrics_http_reason(status), content_type, body_len,
		   status == 405 ? "Allow: GET, HEAD\r\n" : "");
	if (!head && body_len > 0)
		buf_append(out, body, body_len);
}

/* --- rendering (pure) ------------------------------------------------------ */

/* Label values: backslash, double quote and line feed escaped (0.0.4). */
static void put_label_value(struct part *out, const char *s)
{
	for (; *s != '\0'; s++) {
		if (*s == '\\')
			part_puts(out, "\\\\");
		else if (*s == '"')
			part_puts(out, "\\\"");
		else if (*s == '\n')
			part_puts(out, "\\n");
		else
			part_put(out, s, 1);
	}
}

static void family(struct part *out, const char *name, const char *type, const char *help)
{
	part_printf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void sample(struct part *out, const char *name, const char *label, const char *value,
		   unsigned long long v)
{
	part_puts(out, name);
	if (label != NULL) {
		part_printf(out, "{%s=\"", label);
		put_label_value(out, value);
		part_puts(out, "\"}");
	}
	part_printf(out, " %llu\n", v);
}

static void counter(struct part *out, const char *name, const char *help, uint64_t v)
{
	family(out, name, "counter", help);
	sample(out, name, NULL, NULL, (unsigned long long)v);
}

static void gauge(struct part *out, const char *name, const char *help, uint64_t v)
{
	family(out, name, "gauge", help);
	sample(out, name, NULL, NULL, (unsigned long long)v);
}

void metrics_render(struct part *out, const struct metrics_snapshot *s)
{
	const uint64_t *c = s->counters;
	counter(out, "strictrelay_messages_accepted_total",
		"Messages accepted from SMTP clients (stored durably, 250 sent).",
		c[METRICS_ACCEPTED]);
	counter(out, "strictrelay_recipients_delivered_total",
		"Recipients delivered to the next hop.", c[METRICS_DELIVERED]);
	counter(out, "strictrelay_recipients_deferred_total",
		"Delivery attempts that left a recipient queued for a retry.",
		c[METRICS_DEFERRED]);
	counter(out, "strictrelay_recipients_bounced_total",
		"Recipients that failed for good (a bounce is sent unless the sender is null).",
		c[METRICS_BOUNCED]);
	counter(out, "strictrelay_requiretls_delivered_total",
		"Recipients of REQUIRETLS messages delivered.", c[METRICS_REQUIRETLS_DELIVERED]);
	counter(out, "strictrelay_requiretls_bounced_total",
		"Recipients bounced 5.7.30 because REQUIRETLS could not be honoured.",
		c[METRICS_REQUIRETLS_BOUNCED]);

	const char *tls = "strictrelay_tls_results_total";
	family(out, tls, "counter",
	       "Outbound TLS outcomes recorded for TLS reporting, by RFC 8460 result type (success: the session met its policy).");
	for (size_t i = 0; i < METRICS_TLS_NRESULTS; i++)
		sample(out, tls, "result", metrics_tls_results[i], (unsigned long long)s->tls[i]);

	counter(out, "strictrelay_mta_sts_cache_hits_total",
		"MTA-STS lookups answered by a cached policy without fetching it.",
		c[METRICS_STS_CACHE_HITS]);
	counter(out, "strictrelay_mta_sts_fetches_total", "MTA-STS policy fetches started.",
		c[METRICS_STS_FETCHES]);
	counter(out, "strictrelay_mta_sts_fetch_failures_total",
		"MTA-STS policy fetches that gave no valid policy.", c[METRICS_STS_FETCH_FAILURES]);

	const char *rq = "strictrelay_queue_recipients";
	family(out, rq, "gauge",
	       "Recipients waiting in the queue (queued: not tried yet; deferred: waiting for a retry; held: their message is on hold).");
	if (s->store_up) {
		sample(out, rq, "state", "queued", (unsigned long long)s->rcpt_queued);
		sample(out, rq, "state", "deferred", (unsigned long long)s->rcpt_deferred);
		sample(out, rq, "state", "held", (unsigned long long)s->rcpt_held);
	}
	const char *mq = "strictrelay_queue_messages";
	family(out, mq, "gauge", "Messages in the queue (held: on hold).");
	if (s->store_up) {
		sample(out, mq, "state", "active", (unsigned long long)s->msgs_active);
		sample(out, mq, "state", "held", (unsigned long long)s->msgs_held);
	}
	const char *age = "strictrelay_queue_oldest_message_age_seconds";
	family(out, age, "gauge", "Age of the oldest message in the queue (0 when it is empty).");
	if (s->store_up)
		sample(out, age, NULL, NULL,
		       (unsigned long long)(s->oldest_age > 0 ? s->oldest_age : 0));
	gauge(out, "strictrelay_store_up",
	      "1 when the queue database answered this scrape (the queue gauges are missing otherwise).",
	      s->store_up ? 1 : 0);

	gauge(out, "strictrelay_smtp_connections", "Inbound SMTP connections open.",
	      s->connections);
	gauge(out, "strictrelay_start_time_seconds", "When the relay started (Unix time).",
	      (uint64_t)(s->start_time > 0 ? s->start_time : 0));
	const char *bi = "strictrelay_build_info";
	family(out, bi, "gauge", "Always 1; the version is in the label.");
	sample(out, bi, "version", s->version != NULL ? s->version : "", 1);
}

/* --- the listener ---------------------------------------------------------- */

struct client {
	struct metrics *m;
	struct client *prev, *next;
	struct client *wnext;   /* waiting for a database read */
	uv_tcp_t tcp;
	uv_timer_t timer;
	uv_write_t wreq;
	uv_shutdown_t sreq;
	int open_handles;
	enum { WANT_NONE, WANT_METRICS, WANT_HEALTH } want;
	bool head;            /* the request was HEAD */
	bool request_done;    /* a whole request head is in: the rest is discarded */
	bool responded;       /* an answer is written or being written */
	bool peer_eof;        /* the client shut down its side */
	bool closing;         /* uv_close called */
	size_t inlen;
	size_t discarded;     /* bytes read after our answer */
	struct buf out;
	char peer[64];
	char in[METRICS_MAX_REQUEST];
};

/*
 * One read of the database, run on libuv's thread pool so that counting a
 * large queue never stalls the loop. The connection is used by one job at
 * a time; the job touches only itself and the connection (never the
 * counters, never the log).
 */
struct db_job {
	uv_work_t req;
	struct metrics *m;
	bool queue;           /* read the queue gauges, not only answer */
	int rc;               /* 0, or -1 with err */
	char err[256];
	uint64_t rcpt_queued, rcpt_deferred, rcpt_held;
	uint64_t msgs_active, msgs_held;
	int64_t oldest_arrival; /* 0: empty queue */
};

struct metrics {
	uv_loop_t *loop;
	struct smtp_server *const *server;
	const bool *stopping;
	uv_tcp_t listener;
	bool listener_open;   /* initialised and not yet closed */
	bool stopped;         /* metrics_stop called (or start failed) */
	sqlite3 *db;
	sqlite3_stmt *st_rcpts, *st_msgs, *st_health;
	struct db_job job;
	bool job_running;
	struct client *waiters; /* clients waiting for a job's result */
	struct client *clients;
	unsigned nclients;
	int64_t start_time;
	char name[80];
	char discard[4096];
};

static const char sql_rcpts[] =
	"SELECT m.held != 0, r.attempts > 0, count(*)"
	" FROM recipients r JOIN messages m ON m.id = r.message_id"
	" WHERE r.state = 'queued' GROUP BY 1, 2";
static const char sql_msgs[] = "SELECT held != 0, count(*), min(arrival) FROM messages GROUP BY 1";
static const char sql_health[] = "SELECT count(*) FROM schema_version";

static void maybe_free(struct metrics *m)
{
	if (!m->stopped || m->listener_open || m->nclients > 0 || m->job_running)
		return;
	sqlite3_finalize(m->st_rcpts);
	sqlite3_finalize(m->st_msgs);
	sqlite3_finalize(m->st_health);
	if (m->db != NULL)
		sqlite3_close(m->db);
	free(m);
}

static void on_client_closed(uv_handle_t *h)
{
	struct client *c = h->data;
	if (--c->open_handles > 0)
		return;
	struct metrics *m = c->m;
	if (c->prev != NULL)
		c->prev->next = c->next;
	else
		m->clients = c->next;
	if (c->next != NULL)
		c->next->prev = c->prev;
	m->nclients--;
	buf_free(&c->out);
	free(c);
	maybe_free(m);
}

static void unwait(struct client *c)
{
	struct client **pp = &c->m->waiters;
	while (*pp != NULL && *pp != c)
		pp = &(*pp)->wnext;
	if (*pp == c)
		*pp = c->wnext;
	c->wnext = NULL;
	c->want = WANT_NONE;
}

static void client_close(struct client *c)
{
	if (c->closing)
		return;
	c->closing = true;
	if (c->want != WANT_NONE)
		unwait(c);
	uv_close((uv_handle_t *)&c->tcp, on_client_closed);
	uv_close((uv_handle_t *)&c->timer, on_client_closed);
}

static void on_timeout(uv_timer_t *t);

static void on_shutdown(uv_shutdown_t *req, int status)
{
	struct client *c = req->data;
	/* Our answer is out and our FIN sent: wait (shortly) for the client's
	 * FIN, so that unread bytes of its request do not turn our close into
	 * a reset that could destroy the answer in flight. */
	if (status < 0 || c->closing || c->peer_eof) {
		client_close(c);
		return;
	}
	uv_timer_start(&c->timer, on_timeout, METRICS_LINGER_MS, 0);
}

static void on_written(uv_write_t *req, int status)
{
	struct client *c = req->data;
	if (status < 0 || c->closing) {
		client_close(c);
		return;
	}
	c->sreq.data = c;
	if (uv_shutdown(&c->sreq, (uv_stream_t *)&c->tcp, on_shutdown) < 0)
		client_close(c);
}

static void respond(struct client *c, int status, const char *content_type, const char *body,
		    size_t body_len, bool head)
{
	c->responded = true;
	metrics_http_response(&c->out, status, content_type, body, body_len, head);
	uv_buf_t b = uv_buf_init(c->out.data, (unsigned)c->out.len);
	c->wreq.data = c;
	/* the write and the lingering close share what is left of the time */
	uv_timer_start(&c->timer, on_timeout, METRICS_LINGER_MS * 2, 0);
	if (uv_write(&c->wreq, (uv_stream_t *)&c->tcp, &b, 1, on_written) < 0)
		client_close(c);
}

static void respond_text(struct client *c, int status, const char *text, bool head)
{
	respond(c, status, CONTENT_TYPE_TEXT, text, strlen(text), head);
}

/* --- database reads (thread pool) --- */

static int job_fail(struct db_job *j)
{
	snprintf(j->err, sizeof(j->err), "%s", sqlite3_errmsg(j->m->db));
	return -1;
}

/* The queue by state, in one read transaction. Runs on a worker thread. */
static int job_read_queue(struct db_job *j)
{
	struct metrics *m = j->m;
	if (sqlite3_exec(m->db, "BEGIN", NULL, NULL, NULL) != SQLITE_OK)
		return job_fail(j);
	int rc, ret = 0;
	while ((rc = sqlite3_step(m->st_rcpts)) == SQLITE_ROW) {
		bool held = sqlite3_column_int(m->st_rcpts, 0) != 0;
		bool tried = sqlite3_column_int(m->st_rcpts, 1) != 0;
		uint64_t n = (uint64_t)sqlite3_column_int64(m->st_rcpts, 2);
		if (held)
			j->rcpt_held += n;
		else if (tried)
			j->rcpt_deferred += n;
		else
			j->rcpt_queued += n;
	}
	if (rc != SQLITE_DONE)
		ret = job_fail(j);
	sqlite3_reset(m->st_rcpts);
	while (ret == 0 && (rc = sqlite3_step(m->st_msgs)) == SQLITE_ROW) {
		bool held = sqlite3_column_int(m->st_msgs, 0) != 0;
		uint64_t n = (uint64_t)sqlite3_column_int64(m->st_msgs, 1);
		int64_t arrival = sqlite3_column_int64(m->st_msgs, 2);
		if (held)
			j->msgs_held += n;
		else
			j->msgs_active += n;
		if (n > 0 && (j->oldest_arrival == 0 || arrival < j->oldest_arrival))
			j->oldest_arrival = arrival;
	}
	if (ret == 0 && rc != SQLITE_DONE)
		ret = job_fail(j);
	sqlite3_reset(m->st_msgs);
	sqlite3_exec(m->db, "COMMIT", NULL, NULL, NULL);
	return ret;
}

static void job_work(uv_work_t *req)
{
	struct db_job *j = req->data;
	struct metrics *m = j->m;
	int rc = sqlite3_step(m->st_health);
	j->rc = rc == SQLITE_ROW ? 0 : job_fail(j);
	sqlite3_reset(m->st_health);
	if (j->rc == 0 && j->queue)
		j->rc = job_read_queue(j);
}

static void serve_metrics(struct client *c, const struct db_job *j)
{
	struct metrics *m = c->m;
	struct metrics_snapshot s;
	memset(&s, 0, sizeof(s));
	metrics_snapshot_counters(&s);
	s.store_up = j->rc == 0;
	if (s.store_up) {
		s.rcpt_queued = j->rcpt_queued;
		s.rcpt_deferred = j->rcpt_deferred;
		s.rcpt_held = j->rcpt_held;
		s.msgs_active = j->msgs_active;
		s.msgs_held = j->msgs_held;
		if (j->oldest_arrival > 0) {
			int64_t now = now_unix();
			s.oldest_age = now > j->oldest_arrival ? now - j->oldest_arrival : 0;
		}
	}
	s.connections = *m->server != NULL ? smtp_server_connections(*m->server) : 0;
	s.start_time = m->start_time;
	s.version = STRICTRELAY_VERSION;
	struct part p;
	part_init(&p, METRICS_MAX_BODY);
	metrics_render(&p, &s);
	if (p.err) {
		log_error("metrics", "the metrics page is larger than %d bytes", METRICS_MAX_BODY);
		respond_text(c, 500, "metrics page too large\n", c->head);
	} else {
		respond(c, 200, CONTENT_TYPE_METRICS, p.b.data, p.b.len, c->head);
	}
	buf_free(&p.b);
}

static void serve_healthz(struct client *c, const struct db_job *j)
{
	if (*c->m->stopping) {
		respond_text(c, 503, "shutting down\n", c->head);
	} else if (j->rc != 0) {
		char why[300];
		snprintf(why, sizeof(why), "queue database: %s\n", j->err);
		respond_text(c, 503, why, c->head);
	} else {
		respond_text(c, 200, "ok\n", c->head);
	}
}

static void job_kick(struct metrics *m);

static void job_done(uv_work_t *req, int status)
{
	struct db_job *j = req->data;
	struct metrics *m = j->m;
	m->job_running = false;
	if (status < 0 && j->rc == 0) {
		j->rc = -1;
		snprintf(j->err, sizeof(j->err), "%s", uv_strerror(status));
	}
	if (m->stopped) {
		maybe_free(m);
		return;
	}
	if (j->rc != 0)
		log_warn("metrics", "cannot read the queue database: %s", j->err);
	/* Serve everyone this read answers; a scrape that came in during a
	 * health-only read waits for the next job. */
	struct client **pp = &m->waiters;
	while (*pp != NULL) {
		struct client *c = *pp;
		if (c->want == WANT_METRICS && !j->queue) {
			pp = &c->wnext;
			continue;
		}
		*pp = c->wnext;
		c->wnext = NULL;
		int want = c->want;
		c->want = WANT_NONE;
		if (want == WANT_METRICS)
			serve_metrics(c, j);
		else
			serve_healthz(c, j);
	}
	job_kick(m);
}

static void job_kick(struct metrics *m)
{
	if (m->job_running || m->waiters == NULL || m->stopped)
		return;
	struct db_job *j = &m->job;
	memset(j, 0, sizeof(*j));
	j->m = m;
	j->req.data = j;
	for (struct client *c = m->waiters; c != NULL; c = c->wnext)
		if (c->want == WANT_METRICS)
			j->queue = true;
	int r = uv_queue_work(m->loop, &j->req, job_work, job_done);
	if (r < 0) {
		j->rc = -1;
		snprintf(j->err, sizeof(j->err), "%s", uv_strerror(r));
		j->queue = true;
		job_done(&j->req, 0); /* answers every waiter */
		return;
	}
	m->job_running = true;
}

static void wait_for_db(struct client *c, int want, bool head)
{
	c->want = want;
	c->head = head;
	c->wnext = c->m->waiters;
	c->m->waiters = c;
	job_kick(c->m);
}

static void handle(struct client *c, const struct metrics_http_request *req)
{
	bool head;
	enum metrics_route route = metrics_http_route(req, &head);
	char path[80];
	log_debug("metrics", "client=%s method=%s path=%s", c->peer, req->method,
		  str_quote(path, sizeof(path), req->path));
	switch (route) {
	case METRICS_ROUTE_METRICS:
		wait_for_db(c, WANT_METRICS, head);
		break;
	case METRICS_ROUTE_HEALTHZ:
		if (*c->m->stopping)
			respond_text(c, 503, "shutting down\n", head);
		else
			wait_for_db(c, WANT_HEALTH, head);
		break;
	case METRICS_ROUTE_NOT_FOUND:
		respond_text(c, 404, "not found\n", head);
		break;
	case METRICS_ROUTE_BAD_METHOD:
		respond_text(c, 405, "method not allowed\n", false);
		break;
	}
}

static void on_timeout(uv_timer_t *t)
{
	struct client *c = t->data;
	if (c->closing)
		return;
	if (c->want != WANT_NONE) {
		bool head = c->head;
		unwait(c);
		log_warn("metrics", "client=%s the queue database did not answer within %d s",
			 c->peer, METRICS_TIMEOUT_MS / 1000);
		respond_text(c, 503, "queue database: no answer in time\n", head);
		return;
	}
	if (!c->responded) {
		log_info("metrics", "client=%s no complete request within %d s", c->peer,
			 METRICS_TIMEOUT_MS / 1000);
		respond_text(c, 408, "request timeout\n", false);
		return;
	}
	client_close(c);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
	(void)suggested;
	struct client *c = h->data;
	if (c->request_done || c->inlen >= sizeof(c->in))
		*b = uv_buf_init(c->m->discard, sizeof(c->m->discard));
	else
		*b = uv_buf_init(c->in + c->inlen, (unsigned)(sizeof(c->in) - c->inlen));
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *b)
{
	(void)b;
	struct client *c = s->data;
	if (c->closing)
		return;
	if (nread == UV_EOF && c->request_done && !c->responded) {
		/* a client that half-closes after its request still gets the
		 * answer (which may be waiting for the database) */
		c->peer_eof = true;
		uv_read_stop(s);
		return;
	}
	if (nread < 0) {
		/* EOF (after our answer: the normal end) or an error */
		client_close(c);
		return;
	}
	if (nread == 0)
		return;
	if (c->request_done) {
		c->discarded += (size_t)nread;
		if (c->discarded > MAX_DISCARD)
			client_close(c);
		return;
	}
	c->inlen += (size_t)nread;
	struct metrics_http_request req;
	long r = metrics_http_parse(c->in, c->inlen, sizeof(c->in), &req);
	if (r == -2)
		return;
	c->request_done = true;
	if (r < 0) {
		log_info("metrics", "client=%s request refused: %d %s", c->peer, req.error_status,
			 metrics_http_reason(req.error_status));
		char text[64];
		snprintf(text, sizeof(text), "%s\n", metrics_http_reason(req.error_status));
		respond_text(c, req.error_status, text, false);
		return;
	}
	handle(c, &req);
}

static void on_connection(uv_stream_t *server, int status)
{
	struct metrics *m = server->data;
	if (status < 0) {
		log_warn("metrics", "accept on %s: %s", m->name, uv_strerror(status));
		return;
	}
	struct client *c = xcalloc(1, sizeof(*c));
	c->m = m;
	buf_init(&c->out, 0);
	snprintf(c->peer, sizeof(c->peer), "?");
	uv_tcp_init(m->loop, &c->tcp);
	uv_timer_init(m->loop, &c->timer);
	c->tcp.data = c->timer.data = c;
	c->open_handles = 2;
	c->next = m->clients;
	if (m->clients != NULL)
		m->clients->prev = c;
	m->clients = c;
	m->nclients++;
	int r = uv_accept(server, (uv_stream_t *)&c->tcp);
	if (r < 0) {
		log_warn("metrics", "accept on %s: %s", m->name, uv_strerror(r));
		client_close(c);
		return;
	}
	struct sockaddr_storage ss;
	int sslen = sizeof(ss);
	if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &sslen) == 0)
		sockaddr_format((struct sockaddr *)&ss, c->peer, sizeof(c->peer), NULL);
	if (m->nclients > METRICS_MAX_CLIENTS) {
		log_warn("metrics", "client=%s refused: %d clients already", c->peer,
			 METRICS_MAX_CLIENTS);
		client_close(c);
		return;
	}
	uv_timer_start(&c->timer, on_timeout, METRICS_TIMEOUT_MS, 0);
	r = uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
	if (r < 0)
		client_close(c);
}

static void on_listener_closed(uv_handle_t *h)
{
	struct metrics *m = h->data;
	m->listener_open = false;
	maybe_free(m);
}

static bool is_loopback(const struct sockaddr_storage *ss)
{
	if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *a = (const struct sockaddr_in *)ss;
		return ((const unsigned char *)&a->sin_addr)[0] == 127;
	}
	return IN6_IS_ADDR_LOOPBACK(&((const struct sockaddr_in6 *)ss)->sin6_addr);
}

static int prepare(struct metrics *m, const char *sql, sqlite3_stmt **st, char *err, size_t errlen)
{
	if (sqlite3_prepare_v2(m->db, sql, -1, st, NULL) != SQLITE_OK) {
		errf(err, errlen, "queue database: %s", sqlite3_errmsg(m->db));
		return -1;
	}
	return 0;
}

/* Undoes a half-made metrics_bind()/metrics_start(). */
static void start_failed(struct metrics *m)
{
	m->stopped = true;
	if (m->listener_open)
		uv_close((uv_handle_t *)&m->listener, on_listener_closed);
	else
		maybe_free(m);
}

int metrics_bind(struct metrics **out, uv_loop_t *loop, const struct config *cfg, char *err,
		 size_t errlen)
{
	*out = NULL;
	if (cfg->metrics.listen.host == NULL)
		return 0;
	struct metrics *m = xcalloc(1, sizeof(*m));
	m->loop = loop;
	hostport_format(&cfg->metrics.listen, m->name, sizeof(m->name));
	const char *origin = config_origin(cfg, "metrics", "listen");
	char e[256];
	struct sockaddr_storage ss;
	if (hostport_sockaddr(&cfg->metrics.listen, &ss, e, sizeof(e)) < 0) {
		errf(err, errlen, "%s: [metrics] listen %s: %s", origin, m->name, e);
		start_failed(m);
		return -1;
	}
	uv_tcp_init(m->loop, &m->listener);
	m->listener.data = m;
	m->listener_open = true;
	unsigned flags = ss.ss_family == AF_INET6 ? UV_TCP_IPV6ONLY : 0;
	int r = uv_tcp_bind(&m->listener, (struct sockaddr *)&ss, flags);
	if (r < 0) {
		errf(err, errlen, "%s: [metrics] listen %s: %s", origin, m->name, uv_strerror(r));
		start_failed(m);
		return -1;
	}
	if (!is_loopback(&ss))
		log_warn("metrics", "%s is not a loopback address: anyone who can reach it can read /metrics",
			 m->name);
	*out = m;
	return 0;
}

int metrics_start(struct metrics **mp, const struct metrics_params *p, char *err, size_t errlen)
{
	struct metrics *m = *mp;
	if (m == NULL)
		return 0;
	m->server = p->server;
	m->stopping = p->stopping;
	m->start_time = now_unix();
	char e[256];
	if (store_db_open(&m->db, p->cfg->queue.state_dir, e, sizeof(e)) < 0) {
		errf(err, errlen, "metrics: queue database: %s", e);
		goto fail;
	}
	/* reads run on the thread pool; a lock (rare in WAL) is waited for
	 * within the client's own deadline */
	sqlite3_busy_timeout(m->db, METRICS_DB_BUSY_MS);
	if (prepare(m, sql_rcpts, &m->st_rcpts, e, sizeof(e)) < 0 ||
	    prepare(m, sql_msgs, &m->st_msgs, e, sizeof(e)) < 0 ||
	    prepare(m, sql_health, &m->st_health, e, sizeof(e)) < 0) {
		errf(err, errlen, "metrics: %s", e);
		goto fail;
	}
	int r = uv_listen((uv_stream_t *)&m->listener, 64, on_connection);
	if (r < 0) {
		errf(err, errlen, "%s: [metrics] listen %s: %s",
		     config_origin(p->cfg, "metrics", "listen"), m->name, uv_strerror(r));
		goto fail;
	}
	log_info("metrics", "metrics listening on %s paths=/metrics,/healthz", m->name);
	return 0;
fail:
	*mp = NULL;
	start_failed(m);
	return -1;
}

void metrics_stop(struct metrics **mp)
{
	struct metrics *m = *mp;
	*mp = NULL;
	if (m == NULL || m->stopped)
		return;
	m->stopped = true;
	for (struct client *c = m->clients; c != NULL; c = c->next)
		client_close(c);
	if (m->listener_open)
		uv_close((uv_handle_t *)&m->listener, on_listener_closed);
	else
		maybe_free(m);
}
