/* resolver.c - see resolver.h */
#include "resolver.h"

/* ares.h (1.18) uses fd_set without including the header that defines it. */
#include <sys/select.h>
#include <ares.h>

#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mta/log.h"

#define DNS_CLASS_IN 1
#define DNS_TYPE_A 1
#define DNS_TYPE_MX 15
#define DNS_TYPE_TXT 16
#define DNS_TYPE_AAAA 28

/* EDNS0 buffer size of DNS flag day 2020: no IP fragmentation on any path. */
#define EDNS_BUFSIZE 1232

#define SHUTDOWN_DETAIL "resolver shutting down"

/* One socket c-ares asked us to watch. */
struct sockpoll {
	uv_poll_t poll;
	struct resolver *r;
	ares_socket_t fd;
	struct sockpoll *next;    /* r->polls: sockets being watched (not closing) */
};

/* One c-ares query: a dns_query has one, or two for A + AAAA. */
struct dns_sub {
	struct dns_query *q;
	int type;
	enum dns_status status;
	char detail[DNS_DETAIL_MAX];
	uint32_t ttl;
	struct sockaddr_storage *addrs;   /* A / AAAA only */
	size_t naddrs;
};

struct dns_query {
	struct resolver *r;
	enum dns_qkind kind;
	char name[DNS_NAME_MAX + 1];      /* normalized */
	dns_cb *cb;
	void *arg;
	int pending;                      /* c-ares queries not yet called back */
	bool cancelled;                   /* waiting for c-ares only to be freed */
	bool ready;                       /* on r's ready list */
	bool delivering;                  /* inside its callback */
	bool partial;                     /* A or AAAA failed: do not cache */
	struct dns_sub sub[2];
	struct dns_result res;
	struct dns_query *prev, *next;    /* ready list */
};

struct resolver {
	uv_loop_t *loop;
	ares_channel channel;
	uv_timer_t timer;                 /* ares_timeout() */
	uv_idle_t idle;                   /* delivers the ready list */
	int open_handles;                 /* timer, idle and the sockpolls */
	bool freeing;
	struct sockpoll *polls;
	struct dns_query *ready_head, *ready_tail;
	size_t nready;
	struct dns_cache *cache;
};

static void on_timer(uv_timer_t *t);
static void on_idle(uv_idle_t *h);

/* --- handles ------------------------------------------------------------------ */

static void handle_closed(struct resolver *r)
{
	if (--r->open_handles == 0 && r->freeing)
		free(r);
}

static void on_own_handle_closed(uv_handle_t *h)
{
	handle_closed(h->data);
}

static void on_poll_closed(uv_handle_t *h)
{
	struct sockpoll *sp = h->data;
	struct resolver *r = sp->r;
	free(sp);
	handle_closed(r);
}

static void poll_close(struct sockpoll *sp)
{
	uv_close((uv_handle_t *)&sp->poll, on_poll_closed);
}

/* Follows c-ares's next deadline (retransmission or timeout). */
static void arm_timer(struct resolver *r)
{
	if (r->freeing)
		return;
	struct timeval tv;
	struct timeval *tvp = ares_timeout(r->channel, NULL, &tv);
	if (tvp == NULL) {
		uv_timer_stop(&r->timer);
		return;
	}
	/* Rounded up: firing early would only re-arm for the remainder. */
	uint64_t ms = (uint64_t)tvp->tv_sec * 1000 + ((uint64_t)tvp->tv_usec + 999) / 1000;
	int e = uv_timer_start(&r->timer, on_timer, ms, 0);
	if (e < 0)
		panic("resolver: uv_timer_start: %s", uv_strerror(e));
}

static void on_timer(uv_timer_t *t)
{
	struct resolver *r = t->data;
	ares_process_fd(r->channel, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
	arm_timer(r);
}

static void on_poll(uv_poll_t *h, int status, int events)
{
	struct sockpoll *sp = h->data;
	struct resolver *r = sp->r;
	ares_socket_t fd = sp->fd;
	if (status < 0) {
		/* Let c-ares find the socket error itself (read/write fail and
		 * it moves the queries on); both directions, like Node does. */
		ares_process_fd(r->channel, fd, fd);
	} else {
		ares_process_fd(r->channel, (events & UV_READABLE) ? fd : ARES_SOCKET_BAD,
				(events & UV_WRITABLE) ? fd : ARES_SOCKET_BAD);
	}
	arm_timer(r);
}

/*
 * c-ares's socket-state callback: start, change or stop watching fd.
 * If libuv cannot watch a socket we log it and carry on: the queries on it
 * then time out through the timer and c-ares retries or reports TEMPFAIL.
 */
static void on_sock_state(void *data, ares_socket_t fd, int readable, int writable)
{
	struct resolver *r = data;
	struct sockpoll **pp = &r->polls;
	while (*pp != NULL && (*pp)->fd != fd)
		pp = &(*pp)->next;
	struct sockpoll *sp = *pp;
	if (!readable && !writable) {
		if (sp != NULL) {
			/* Unlinked at once: c-ares may reuse the fd number for a
			 * new socket before this close completes. */
			*pp = sp->next;
			poll_close(sp);
		}
		return;
	}
	if (sp == NULL) {
		sp = xcalloc(1, sizeof(*sp));
		int e = uv_poll_init_socket(r->loop, &sp->poll, fd);
		if (e < 0) {
			log_error("dns", "cannot watch DNS socket fd=%d: %s", (int)fd, uv_strerror(e));
			free(sp);
			return;
		}
		sp->r = r;
		sp->fd = fd;
		sp->poll.data = sp;
		sp->next = r->polls;
		r->polls = sp;
		r->open_handles++;
	}
	int events = (readable ? UV_READABLE : 0) | (writable ? UV_WRITABLE : 0);
	int e = uv_poll_start(&sp->poll, events, on_poll);
	if (e < 0)
		log_error("dns", "cannot watch DNS socket fd=%d: %s", (int)fd, uv_strerror(e));
}

/* --- the ready list ---------------------------------------------------------- */

static void ready_push(struct resolver *r, struct dns_query *q)
{
	q->ready = true;
	q->next = NULL;
	q->prev = r->ready_tail;
	if (r->ready_tail != NULL)
		r->ready_tail->next = q;
	else
		r->ready_head = q;
	r->ready_tail = q;
	r->nready++;
	if (!r->freeing) {
		int e = uv_idle_start(&r->idle, on_idle);
		if (e < 0)
			panic("resolver: uv_idle_start: %s", uv_strerror(e));
	}
}

static void ready_unlink(struct resolver *r, struct dns_query *q)
{
	if (q->prev != NULL)
		q->prev->next = q->next;
	else
		r->ready_head = q->next;
	if (q->next != NULL)
		q->next->prev = q->prev;
	else
		r->ready_tail = q->prev;
	q->prev = q->next = NULL;
	q->ready = false;
	r->nready--;
}

static void query_free(struct dns_query *q)
{
	dns_result_free(&q->res);
	free(q->sub[0].addrs);
	free(q->sub[1].addrs);
	free(q);
}

static const char *kind_name(enum dns_qkind k)
{
	static const char *const names[] = {
		[DNS_Q_MX] = "MX", [DNS_Q_ADDRS] = "A+AAAA", [DNS_Q_TXT] = "TXT", [DNS_Q_NONE] = "none",
	};
	return (unsigned)k < SR_ARRAY_LEN(names) ? names[k] : "?";
}

static void deliver(struct dns_query *q)
{
	q->delivering = true;
	if (log_debug_enabled()) {
		char name[DNS_NAME_MAX * 4 + 8];
		log_debug("dns", "answer type=%s name=%s status=%s cached=%s ttl=%u", kind_name(q->kind),
			  str_quote(name, sizeof(name), q->name), dns_status_name(q->res.status),
			  q->res.cached ? "yes" : "no", q->res.ttl);
	}
	q->cb(q->arg, &q->res);
	query_free(q);
}

static void on_idle(uv_idle_t *h)
{
	struct resolver *r = h->data;
	/* Only what was ready when this turn began: a cache hit started from a
	 * callback waits for the next turn like any other answer. */
	size_t n = r->nready;
	while (n-- > 0 && r->ready_head != NULL && !r->freeing) {
		struct dns_query *q = r->ready_head;
		ready_unlink(r, q);
		deliver(q);
	}
	/* resolver_free() (maybe from a callback above) closed the idle handle */
	if (!r->freeing && r->ready_head == NULL)
		uv_idle_stop(&r->idle);
}

/* --- answers ------------------------------------------------------------------ */

static const char *type_name(int type)
{
	switch (type) {
	case DNS_TYPE_A:
		return "A";
	case DNS_TYPE_AAAA:
		return "AAAA";
	case DNS_TYPE_MX:
		return "MX";
	case DNS_TYPE_TXT:
		return "TXT";
	}
	return "?";
}

/* A negative answer's lifetime: the SOA's (RFC 2308) when the server sent one. */
static uint32_t negative_ttl(const unsigned char *abuf, int alen)
{
	struct dns_msg_ttl t;
	if (abuf != NULL && alen > 0 && dns_msg_ttls(abuf, (size_t)alen, &t) == 0 && t.has_soa)
		return t.negative;
	return DNS_NEGATIVE_TTL_DEFAULT;
}

static void sub_set(struct dns_sub *s, enum dns_status st, const char *fmt, ...) SR_PRINTF(3, 4);
static void sub_set(struct dns_sub *s, enum dns_status st, const char *fmt, ...)
{
	va_list ap;
	s->status = st;
	va_start(ap, fmt);
	vsnprintf(s->detail, sizeof(s->detail), fmt, ap);
	va_end(ap);
}

static void sub_nodata(struct dns_sub *s, const unsigned char *abuf, int alen)
{
	sub_set(s, DNS_NODATA, "no %s records (NODATA)", type_name(s->type));
	s->ttl = negative_ttl(abuf, alen);
}

/* A c-ares failure status -> ours. ENOTFOUND and ENODATA are answers; every
 * other failure is temporary (BADNAME aside), whatever c-ares calls it. */
static void sub_error(struct dns_sub *s, int status, int timeouts, const unsigned char *abuf,
		      int alen)
{
	switch (status) {
	case ARES_ENOTFOUND:
		sub_set(s, DNS_NXDOMAIN, "name does not exist (NXDOMAIN)");
		s->ttl = negative_ttl(abuf, alen);
		return;
	case ARES_ENODATA:
		sub_nodata(s, abuf, alen);
		return;
	case ARES_ECONNREFUSED:
		/* c-ares 1.18 ends here after every server said SERVFAIL or
		 * REFUSED (or the UDP port was closed) */
		sub_set(s, DNS_TEMPFAIL, "SERVFAIL or REFUSED from the DNS server (or connection refused)");
		return;
	case ARES_ETIMEOUT:
		sub_set(s, DNS_TEMPFAIL, "no answer: timeout after %d tries", timeouts);
		return;
	case ARES_ESERVFAIL:
		sub_set(s, DNS_TEMPFAIL, "SERVFAIL from the DNS server");
		return;
	case ARES_EREFUSED:
		sub_set(s, DNS_TEMPFAIL, "REFUSED by the DNS server");
		return;
	case ARES_EFORMERR:
	case ARES_ENOTIMP:
	case ARES_EBADRESP:
		sub_set(s, DNS_TEMPFAIL, "bad DNS answer: %s", ares_strerror(status));
		return;
	case ARES_EBADNAME:
		sub_set(s, DNS_BADNAME, "name refused by c-ares");
		return;
	case ARES_EDESTRUCTION:
	case ARES_ECANCELLED:
		sub_set(s, DNS_TEMPFAIL, SHUTDOWN_DETAIL);
		return;
	}
	sub_set(s, DNS_TEMPFAIL, "DNS lookup failed: %s", ares_strerror(status));
}

/* Parse failures other than "no records of this type" are temporary: a
 * garbled answer says nothing about the name. */
static void sub_parse_error(struct dns_sub *s, int rc, const unsigned char *abuf, int alen)
{
	if (rc == ARES_ENODATA)
		sub_nodata(s, abuf, alen);
	else
		sub_set(s, DNS_TEMPFAIL, "bad %s answer: %s", type_name(s->type), ares_strerror(rc));
}

static void parse_mx(struct dns_sub *s, struct dns_result *res, const unsigned char *abuf, int alen)
{
	struct ares_mx_reply *list = NULL;
	int rc = ares_parse_mx_reply(abuf, alen, &list);
	if (rc != ARES_SUCCESS) {
		sub_parse_error(s, rc, abuf, alen);
		return;
	}
	size_t n = 0;
	for (struct ares_mx_reply *m = list; m != NULL; m = m->next)
		n++;
	res->mx = xcalloc(n ? n : 1, sizeof(*res->mx));
	for (struct ares_mx_reply *m = list; m != NULL; m = m->next) {
		char *host = xstrdup(m->host);
		size_t len = strlen(host);
		if (len > 0 && host[len - 1] == '.')
			host[len - 1] = '\0';
		str_lower(host);
		res->mx[res->nmx].host = host;
		res->mx[res->nmx].pref = m->priority;
		res->nmx++;
	}
	ares_free_data(list);
	if (n == 0)
		sub_nodata(s, abuf, alen);
	else
		sub_set(s, DNS_OK, "%s", "");
}

static void parse_txt(struct dns_sub *s, struct dns_result *res, const unsigned char *abuf,
		      int alen)
{
	struct ares_txt_ext *list = NULL;
	int rc = ares_parse_txt_reply_ext(abuf, alen, &list);
	if (rc != ARES_SUCCESS) {
		sub_parse_error(s, rc, abuf, alen);
		return;
	}
	size_t n = 0;
	for (struct ares_txt_ext *t = list; t != NULL; t = t->next)
		n++;
	struct dns_txt_piece *p = xcalloc(n ? n : 1, sizeof(*p));
	size_t i = 0;
	for (struct ares_txt_ext *t = list; t != NULL; t = t->next, i++) {
		p[i].data = t->txt;
		p[i].len = t->length;
		p[i].record_start = t->record_start != 0;
	}
	dns_txt_join(p, n, &res->txt);
	free(p);
	ares_free_data(list);
	if (res->txt.n == 0)
		sub_nodata(s, abuf, alen);
	else
		sub_set(s, DNS_OK, "%s", "");
}

static void parse_addrs(struct dns_sub *s, const unsigned char *abuf, int alen)
{
	struct hostent *he = NULL;
	int rc = s->type == DNS_TYPE_A ? ares_parse_a_reply(abuf, alen, &he, NULL, NULL)
				       : ares_parse_aaaa_reply(abuf, alen, &he, NULL, NULL);
	if (rc != ARES_SUCCESS) {
		sub_parse_error(s, rc, abuf, alen);
		return;
	}
	size_t n = 0;
	while (he->h_addr_list[n] != NULL)
		n++;
	s->addrs = xcalloc(n ? n : 1, sizeof(*s->addrs));
	for (size_t i = 0; i < n; i++) {
		if (s->type == DNS_TYPE_A) {
			struct sockaddr_in *a = (struct sockaddr_in *)&s->addrs[i];
			a->sin_family = AF_INET;
			memcpy(&a->sin_addr, he->h_addr_list[i], sizeof(a->sin_addr));
		} else {
			struct sockaddr_in6 *a = (struct sockaddr_in6 *)&s->addrs[i];
			a->sin6_family = AF_INET6;
			memcpy(&a->sin6_addr, he->h_addr_list[i], sizeof(a->sin6_addr));
		}
	}
	s->naddrs = n;
	ares_free_hostent(he);
	if (n == 0)
		sub_nodata(s, abuf, alen);
	else
		sub_set(s, DNS_OK, "%s", "");
}

/* The answer to one c-ares query, into s (and q->res for MX and TXT). */
static void sub_fill(struct dns_sub *s, int status, int timeouts, const unsigned char *abuf,
		     int alen)
{
	if (status != ARES_SUCCESS) {
		sub_error(s, status, timeouts, abuf, alen);
		return;
	}
	struct dns_msg_ttl t;
	if (dns_msg_ttls(abuf, (size_t)alen, &t) == 0 && t.has_answer)
		s->ttl = t.answer_min;
	switch (s->type) {
	case DNS_TYPE_MX:
		parse_mx(s, &s->q->res, abuf, alen);
		break;
	case DNS_TYPE_TXT:
		parse_txt(s, &s->q->res, abuf, alen);
		break;
	default:
		parse_addrs(s, abuf, alen);
		break;
	}
}

/* Both halves of an addrs query -> q->res: IPv4 first (dns_addrs_order's why). */
static void finish_addrs(struct dns_query *q)
{
	struct dns_sub *a = &q->sub[0], *aaaa = &q->sub[1];
	struct dns_result *res = &q->res;
	res->naddrs = a->naddrs + aaaa->naddrs;
	res->addrs = xcalloc(res->naddrs ? res->naddrs : 1, sizeof(*res->addrs));
	if (a->naddrs > 0)
		memcpy(res->addrs, a->addrs, a->naddrs * sizeof(*res->addrs));
	if (aaaa->naddrs > 0)
		memcpy(res->addrs + a->naddrs, aaaa->addrs, aaaa->naddrs * sizeof(*res->addrs));
	res->status = dns_addrs_status(a->status, aaaa->status, res->naddrs);
	res->ttl = a->ttl < aaaa->ttl ? a->ttl : aaaa->ttl;
	q->partial = a->status == DNS_TEMPFAIL || aaaa->status == DNS_TEMPFAIL;
	if (res->status == DNS_OK && !q->partial)
		res->detail[0] = '\0';
	else if (a->status == aaaa->status && strcmp(a->detail, aaaa->detail) == 0)
		snprintf(res->detail, sizeof(res->detail), "%s", a->detail);
	else
		snprintf(res->detail, sizeof(res->detail), "A: %s; AAAA: %s",
			 a->status == DNS_OK ? "ok" : a->detail,
			 aaaa->status == DNS_OK ? "ok" : aaaa->detail);
}

static void query_finish(struct dns_query *q)
{
	struct resolver *r = q->r;
	if (q->kind == DNS_Q_ADDRS) {
		finish_addrs(q);
	} else {
		q->res.status = q->sub[0].status;
		q->res.ttl = q->sub[0].ttl;
		snprintf(q->res.detail, sizeof(q->res.detail), "%s", q->sub[0].detail);
	}
	if (!r->freeing && !q->partial)
		dns_cache_put(r->cache, q->kind, q->name, &q->res, now_ms());
}

static void on_ares(void *arg, int status, int timeouts, unsigned char *abuf, int alen)
{
	struct dns_sub *s = arg;
	struct dns_query *q = s->q;
	sub_fill(s, status, timeouts, abuf, alen);
	if (--q->pending > 0)
		return;
	/* A cancelled query's answer still fills the cache. */
	query_finish(q);
	if (q->cancelled)
		query_free(q);
	else
		ready_push(q->r, q);
}

/* --- queries ---------------------------------------------------------------------- */

static void res_set(struct dns_result *res, enum dns_status st, const char *detail)
{
	res->status = st;
	snprintf(res->detail, sizeof(res->detail), "%s", detail);
}

static void send_one(struct dns_query *q, int i, int type)
{
	q->sub[i].type = type;
	ares_query(q->r->channel, q->name, DNS_CLASS_IN, type, on_ares, &q->sub[i]);
}

static struct dns_query *query_start(struct resolver *r, enum dns_qkind kind, const char *name,
				     dns_cb *cb, void *arg)
{
	struct dns_query *q = xcalloc(1, sizeof(*q));
	q->r = r;
	q->kind = kind;
	q->cb = cb;
	q->arg = arg;
	q->sub[0].q = q->sub[1].q = q;
	char err[DNS_DETAIL_MAX - 16];
	if (r->freeing) {
		res_set(&q->res, DNS_TEMPFAIL, SHUTDOWN_DETAIL);
	} else if (kind == DNS_Q_NONE) {
		res_set(&q->res, DNS_OK, "");
	} else if (dns_name_normalize(name, q->name, err, sizeof(err)) < 0) {
		q->res.status = DNS_BADNAME;
		snprintf(q->res.detail, sizeof(q->res.detail), "invalid name: %s", err);
	} else if (!dns_cache_get(r->cache, kind, q->name, now_ms(), &q->res)) {
		/* pending counts both halves before either is sent: c-ares may
		 * call back from inside ares_query(). */
		q->pending = kind == DNS_Q_ADDRS ? 2 : 1;
		if (kind == DNS_Q_MX) {
			send_one(q, 0, DNS_TYPE_MX);
		} else if (kind == DNS_Q_TXT) {
			send_one(q, 0, DNS_TYPE_TXT);
		} else {
			send_one(q, 0, DNS_TYPE_A);
			send_one(q, 1, DNS_TYPE_AAAA);
		}
		arm_timer(r);
		return q;
	}
	ready_push(r, q);
	return q;
}

struct dns_query *resolver_query_mx(struct resolver *r, const char *name, dns_cb *cb, void *arg)
{
	return query_start(r, DNS_Q_MX, name, cb, arg);
}

struct dns_query *resolver_query_addrs(struct resolver *r, const char *name, dns_cb *cb,
				       void *arg)
{
	return query_start(r, DNS_Q_ADDRS, name, cb, arg);
}

struct dns_query *resolver_query_txt(struct resolver *r, const char *name, dns_cb *cb, void *arg)
{
	return query_start(r, DNS_Q_TXT, name, cb, arg);
}

struct dns_query *resolver_call_soon(struct resolver *r, dns_cb *cb, void *arg)
{
	return query_start(r, DNS_Q_NONE, NULL, cb, arg);
}

void dns_query_cancel(struct dns_query *q)
{
	if (q == NULL || q->delivering || q->cancelled)
		return;
	if (q->ready) {
		ready_unlink(q->r, q);
		query_free(q);
		return;
	}
	/* Still with c-ares, which cannot drop one query: on_ares frees it. */
	q->cancelled = true;
	q->cb = NULL;
	q->arg = NULL;
}

/* --- the resolver ----------------------------------------------------------------- */

/* "ip:port" / "[ip6]:port" for ares_set_servers_ports_csv(). */
static int servers_csv(struct buf *csv, const struct hostport *servers, size_t n, char *err,
		       size_t errlen)
{
	for (size_t i = 0; i < n; i++) {
		struct sockaddr_storage ss;
		if (servers[i].host == NULL || dns_parse_ip(servers[i].host, &ss) < 0) {
			snprintf(err, errlen, "DNS server \"%s\" is not an IP address",
				 servers[i].host ? servers[i].host : "");
			return -1;
		}
		unsigned port = servers[i].port ? servers[i].port : 53;
		buf_printf(csv, ss.ss_family == AF_INET6 ? "%s[%s]:%u" : "%s%s:%u", i ? "," : "",
			   servers[i].host, port);
	}
	return 0;
}

int resolver_new(struct resolver **out, uv_loop_t *loop, const struct hostport *servers,
		 size_t nservers, unsigned timeout_ms, unsigned tries, char *err, size_t errlen)
{
	*out = NULL;
	struct buf csv;
	buf_init(&csv, 0);
	if (servers_csv(&csv, servers, nservers, err, errlen) < 0) {
		buf_free(&csv);
		return -1;
	}
	/* c-ares allocates through our wrappers too (util.h: all allocation). */
	int rc = ares_library_init_mem(ARES_LIB_INIT_ALL, xmalloc, free, xrealloc);
	if (rc != ARES_SUCCESS) {
		snprintf(err, errlen, "c-ares library init: %s", ares_strerror(rc));
		buf_free(&csv);
		return -1;
	}
	struct resolver *r = xcalloc(1, sizeof(*r));
	r->loop = loop;
	struct ares_options opts;
	memset(&opts, 0, sizeof(opts));
	/* IGNTC stays off: truncated answers are retried over TCP. */
	opts.flags = ARES_FLAG_NOSEARCH | ARES_FLAG_NOALIASES | ARES_FLAG_EDNS;
	opts.timeout = (int)(timeout_ms ? timeout_ms : RESOLVER_DEFAULT_TIMEOUT_MS);
	opts.tries = (int)(tries ? tries : RESOLVER_DEFAULT_TRIES);
	opts.ednspsz = EDNS_BUFSIZE;
	opts.sock_state_cb = on_sock_state;
	opts.sock_state_cb_data = r;
	int mask = ARES_OPT_FLAGS | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES | ARES_OPT_EDNSPSZ |
		   ARES_OPT_SOCK_STATE_CB;
	rc = ares_init_options(&r->channel, &opts, mask);
	if (rc != ARES_SUCCESS) {
		snprintf(err, errlen, "c-ares init: %s", ares_strerror(rc));
		goto fail;
	}
	if (nservers > 0) {
		rc = ares_set_servers_ports_csv(r->channel, csv.data);
		if (rc != ARES_SUCCESS) {
			snprintf(err, errlen, "DNS servers \"%s\": %s", csv.data, ares_strerror(rc));
			ares_destroy(r->channel);
			goto fail;
		}
	}
	buf_free(&csv);
	uv_timer_init(loop, &r->timer);
	uv_idle_init(loop, &r->idle);
	r->timer.data = r;
	r->idle.data = r;
	r->open_handles = 2;
	r->cache = dns_cache_new(RESOLVER_CACHE_MAX);
	*out = r;
	return 0;
fail:
	ares_library_cleanup();
	buf_free(&csv);
	free(r);
	return -1;
}

void resolver_free(struct resolver *r)
{
	if (r == NULL || r->freeing)
		return;
	r->freeing = true;
	uv_timer_stop(&r->timer);
	uv_idle_stop(&r->idle);
	/* Calls on_ares (ARES_EDESTRUCTION) for every query still out, which
	 * puts it on the ready list, and on_sock_state for open sockets. */
	ares_destroy(r->channel);
	r->channel = NULL;
	ares_library_cleanup();
	while (r->polls != NULL) {
		struct sockpoll *sp = r->polls;
		r->polls = sp->next;
		poll_close(sp);
	}
	/* Callbacks here may start queries: they land on this list too. */
	struct dns_query *q;
	while ((q = r->ready_head) != NULL) {
		ready_unlink(r, q);
		dns_result_free(&q->res);
		res_set(&q->res, DNS_TEMPFAIL, SHUTDOWN_DETAIL);
		deliver(q);
	}
	dns_cache_free(r->cache);
	r->cache = NULL;
	uv_close((uv_handle_t *)&r->timer, on_own_handle_closed);
	uv_close((uv_handle_t *)&r->idle, on_own_handle_closed);
}

void resolver_flush_cache(struct resolver *r)
{
	if (r->cache != NULL)
		dns_cache_flush(r->cache);
}

size_t resolver_cache_count(const struct resolver *r)
{
	return r->cache != NULL ? dns_cache_count(r->cache) : 0;
}
