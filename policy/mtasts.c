/* mtasts.c - see mtasts.h */
#include "mtasts.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mta/https.h"
#include "mta/log.h"
#include "mta/metrics.h"
#include "policy/resolver.h"
#include "policy/sts.h"
#include "queue/delivery.h"
#include "queue/store.h"

struct discovery;

/* One domain's policy as far as this process knows it. */
struct entry {
	struct entry *next;
	char *domain;
	bool have;                  /* a policy is cached (maybe expired) */
	char id[STS_ID_MAX + 1];
	char *text;                 /* the policy file as fetched */
	struct sts_policy pol;
	int64_t fetched;
	int64_t expires;
	int64_t loaded;             /* when the memory copy was read from SQLite */
	int64_t last_used;
	bool used_dirty;            /* last_used not yet written back */
	int64_t failed_at;          /* the last failed fetch (STS-17) */
	char failed_id[STS_ID_MAX + 1];
	struct discovery *disc;     /* in flight, or NULL */
};

struct mtasts_query {
	struct mtasts_query *next;
	mtasts_cb *cb;
	void *arg;
	bool cancelled;
};

struct discovery {
	struct mtasts *m;
	struct entry *e;
	bool force;
	struct dns_query *txtq;
	struct https_op *op;
	char txt_id[STS_ID_MAX + 1];
	char txt_desc[200];
	char failure_type[40];
	char failure[300];
	bool temporary;      /* the TXT lookup failed temporarily */
	/* a policy fetched now that may not be cached (max_age 0) */
	bool fresh;
	struct mtasts_query *waiters;
};

struct mtasts {
	uv_loop_t *loop;
	const struct config *cfg;
	struct resolver *resolver;
	struct https_client *https;
	struct store *store;        /* NULL: write the cache through db */
	sqlite3 *db;
	struct store_tx *tx;
	struct entry *entries;
	uv_timer_t refresh;
	bool closing;
};

static void discovery_start(struct mtasts *m, struct entry *e, bool force);

/* --- the SQLite cache ----------------------------------------------------- */

static const char sql_load[] =
	"SELECT id, policy, fetched, expires, last_used FROM sts_policies WHERE domain = ?";
static const char sql_save[] =
	"INSERT INTO sts_policies (domain, id, policy, mode, max_age, fetched, expires, last_used)"
	" VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"
	" ON CONFLICT(domain) DO UPDATE SET id = ?2, policy = ?3, mode = ?4, max_age = ?5,"
	" fetched = ?6, expires = ?7, last_used = ?8";
static const char sql_used[] = "UPDATE sts_policies SET last_used = ?2 WHERE domain = ?1";
static const char sql_due[] =
	"SELECT domain FROM sts_policies WHERE fetched <= ?1 AND last_used >= ?2";

static void entry_clear_policy(struct entry *e)
{
	if (e->have)
		sts_policy_free(&e->pol);
	free(e->text);
	e->text = NULL;
	e->have = false;
	e->id[0] = '\0';
}

/* (Re)reads the entry from SQLite unless the memory copy is recent. */
static void entry_load(struct mtasts *m, struct entry *e, int64_t now)
{
	if (e->disc != NULL || now - e->loaded < STS_CACHE_MEMORY_SECONDS)
		return;
	e->loaded = now;
	sqlite3_stmt *st = store_tx_stmt(m->tx, sql_load);
	if (st == NULL)
		return;
	sqlite3_bind_text(st, 1, e->domain, -1, SQLITE_STATIC);
	if (sqlite3_step(st) == SQLITE_ROW) {
		const char *id = (const char *)sqlite3_column_text(st, 0);
		const char *text = (const char *)sqlite3_column_text(st, 1);
		struct sts_policy pol;
		char why[200];
		if (id != NULL && text != NULL &&
		    sts_policy_parse(text, strlen(text), &pol, why, sizeof(why)) == 0) {
			entry_clear_policy(e);
			e->have = true;
			e->pol = pol;
			e->text = xstrdup(text);
			snprintf(e->id, sizeof(e->id), "%s", id);
			e->fetched = sqlite3_column_int64(st, 2);
			e->expires = sqlite3_column_int64(st, 3);
			if (sqlite3_column_int64(st, 4) > e->last_used)
				e->last_used = sqlite3_column_int64(st, 4);
		}
	}
	sqlite3_reset(st);
}

struct save_op {
	char *domain, *id, *policy;
	const char *mode;
	int64_t max_age, fetched, expires, last_used;
	bool used_only;
};

static int bind_save(struct store_tx *tx, const struct save_op *op, char *err, size_t errlen)
{
	sqlite3_stmt *st = store_tx_stmt(tx, op->used_only ? sql_used : sql_save);
	if (st == NULL) {
		snprintf(err, errlen, "%s", sqlite3_errmsg(store_tx_db(tx)));
		return -1;
	}
	sqlite3_bind_text(st, 1, op->domain, -1, SQLITE_STATIC);
	if (op->used_only) {
		sqlite3_bind_int64(st, 2, op->last_used);
	} else {
		sqlite3_bind_text(st, 2, op->id, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 3, op->policy, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 4, op->mode, -1, SQLITE_STATIC);
		sqlite3_bind_int64(st, 5, op->max_age);
		sqlite3_bind_int64(st, 6, op->fetched);
		sqlite3_bind_int64(st, 7, op->expires);
		sqlite3_bind_int64(st, 8, op->last_used);
	}
	return store_tx_step_done(tx, st, err, errlen);
}

static int save_exec(struct store_tx *tx, void *data, char *err, size_t errlen)
{
	return bind_save(tx, data, err, errlen);
}

static void save_free(struct save_op *op)
{
	free(op->domain);
	free(op->id);
	free(op->policy);
	free(op);
}

static void save_done(void *arg, int status, const char *error)
{
	struct save_op *op = arg;
	if (status != 0)
		log_error("mta-sts", "domain=%s cannot save the policy cache: %s", op->domain,
			  error ? error : "?");
	save_free(op);
}

/* Writes through the store's writer (daemon) or directly (CLI). */
static void save(struct mtasts *m, struct save_op *op)
{
	if (m->store != NULL) {
		store_submit(m->store, save_exec, op, save_done, op);
		return;
	}
	char err[256];
	if (bind_save(m->tx, op, err, sizeof(err)) < 0)
		log_error("mta-sts", "domain=%s cannot save the policy cache: %s", op->domain, err);
	save_free(op);
}

static void save_policy(struct mtasts *m, const struct entry *e)
{
	struct save_op *op = xcalloc(1, sizeof(*op));
	op->domain = xstrdup(e->domain);
	op->id = xstrdup(e->id);
	op->policy = xstrdup(e->text);
	op->mode = sts_mode_name(e->pol.mode);
	op->max_age = e->pol.max_age;
	op->fetched = e->fetched;
	op->expires = e->expires;
	op->last_used = e->last_used;
	save(m, op);
}

/* --- results ------------------------------------------------------------- */

static void record_failure(struct mtasts *m, const struct entry *e, const struct discovery *d)
{
	if (m->store == NULL || d->failure_type[0] == '\0')
		return;
	struct tls_session_record r;
	memset(&r, 0, sizeof(r));
	r.time = now_unix();
	snprintf(r.policy_domain, sizeof(r.policy_domain), "%s", e->domain);
	snprintf(r.policy_type, sizeof(r.policy_type), "sts");
	snprintf(r.result_type, sizeof(r.result_type), "%s", d->failure_type);
	snprintf(r.detail, sizeof(r.detail), "%s", d->failure);
	tls_session_record(m->store, &r);
}

static void deliver(struct discovery *d)
{
	struct mtasts *m = d->m;
	struct entry *e = d->e;
	int64_t now = now_unix();
	static const struct strlist empty;
	/* A policy fetched now applies even if max_age 0 expired it at once;
	 * otherwise only an unexpired cached one (STS-19). */
	bool use = e->have && (d->fresh || e->expires > now);
	struct sts_result res = {
		.have_policy = use,
		.mode = use ? e->pol.mode : STS_MODE_NONE,
		.id = use ? e->id : "",
		.mx = use ? &e->pol.mx : &empty,
		.lines = use ? &e->pol.lines : &empty,
		.fetched = use ? e->fetched : 0,
		.expires = use ? e->expires : 0,
		.source = !use ? "none" : d->fresh ? "fetched" : "cache",
		.txt = d->txt_desc,
		.temporary = !use && (d->temporary || d->failure_type[0] != '\0'),
		.stale = use && !d->fresh && d->txt_id[0] != '\0' && strcmp(e->id, d->txt_id) != 0,
		.failure_type = d->failure_type,
		.failure = d->failure,
	};
	if (use) {
		e->last_used = now;
		e->used_dirty = true;
	}
	if (use && !d->fresh)
		metrics_count(METRICS_STS_CACHE_HITS);
	if (d->failure_type[0] != '\0') {
		/* STS-20, STS-60: a failing refresh while a "none" policy is
		 * cached is no news: neither logged nor reported */
		bool quiet = use && e->pol.mode == STS_MODE_NONE;
		if (!quiet) {
			log_warn("mta-sts", "domain=%s %s: %s; %s", e->domain, d->failure_type, d->failure,
				 use ? "keeping the cached policy" : "no policy applies");
			record_failure(m, e, d);
		}
	}
	log_debug("mta-sts", "domain=%s txt=%s policy=%s mode=%s source=%s", e->domain, d->txt_desc,
		  use ? e->id : "-", sts_mode_name(res.mode), res.source);
	e->disc = NULL;
	struct mtasts_query *q = d->waiters;
	while (q != NULL) {
		struct mtasts_query *next = q->next;
		if (!q->cancelled)
			q->cb(q->arg, &res);
		free(q);
		q = next;
	}
	free(d);
}

static void failure(struct discovery *d, const char *type, const char *fmt, ...) SR_PRINTF(3, 4);
static void failure(struct discovery *d, const char *type, const char *fmt, ...)
{
	snprintf(d->failure_type, sizeof(d->failure_type), "%s", type);
	metrics_count(METRICS_STS_FETCH_FAILURES);
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(d->failure, sizeof(d->failure), fmt, ap);
	va_end(ap);
	d->e->failed_at = now_unix();
	snprintf(d->e->failed_id, sizeof(d->e->failed_id), "%s", d->txt_id);
}

/* --- the fetch ------------------------------------------------------------ */

/* STS-15: text/plain, case-insensitive, parameters ignored. */
static bool is_text_plain(const char *ct)
{
	while (*ct == ' ')
		ct++;
	if (!str_iprefix(ct, "text/plain"))
		return false;
	const char *rest = ct + 10;
	while (*rest == ' ')
		rest++;
	return *rest == '\0' || *rest == ';';
}

static void on_fetched(void *arg, const struct https_response *res)
{
	struct discovery *d = arg;
	struct entry *e = d->e;
	d->op = NULL;
	char host[300];
	snprintf(host, sizeof(host), "mta-sts.%s", e->domain);
	if (res->error == HTTPS_CERT) {
		failure(d, "sts-webpki-invalid", "policy host %s: %s", host, res->detail);
	} else if (res->error != HTTPS_OK) {
		failure(d, "sts-policy-fetch-error", "fetching the policy from %s: %s", host,
			res->detail);
	} else if (res->status != 200) {
		/* STS-13: only 200 counts; redirects are never followed */
		failure(d, "sts-policy-fetch-error", "policy host %s answered HTTP %d", host,
			res->status);
	} else if (!is_text_plain(res->content_type)) {
		failure(d, "sts-policy-invalid", "policy host %s sent media type \"%s\", not text/plain",
			host, res->content_type);
	} else {
		struct sts_policy pol;
		char why[200];
		if (sts_policy_parse(res->body, res->body_len, &pol, why, sizeof(why)) < 0) {
			failure(d, "sts-policy-invalid", "the policy from %s is invalid: %s", host, why);
		} else {
			/* STS-41: the cache is replaced only by a valid new policy. */
			entry_clear_policy(e);
			e->have = true;
			e->pol = pol;
			e->text = xstrndup(res->body, res->body_len);
			snprintf(e->id, sizeof(e->id), "%s", d->txt_id);
			e->fetched = now_unix();
			e->expires = e->fetched + pol.max_age;
			e->last_used = e->fetched;
			e->loaded = e->fetched;
			e->failed_id[0] = '\0';
			d->fresh = true;
			log_info("mta-sts", "domain=%s policy id=%s mode=%s max_age=%lld mx=%zu fetched from %s (%s)",
				 e->domain, e->id, sts_mode_name(pol.mode), (long long)pol.max_age, pol.mx.n,
				 host, res->ip);
			save_policy(d->m, e);
		}
	}
	deliver(d);
}

static void fetch(struct discovery *d)
{
	struct mtasts *m = d->m;
	char host[300];
	snprintf(host, sizeof(host), "mta-sts.%s", d->e->domain);
	struct https_request req = {
		.method = "GET",
		.host = host,
		.port = m->cfg->mta_sts.https_port,
		.path = "/.well-known/mta-sts.txt",
		.max_body = STS_MAX_BODY,
		.timeout_ms = (unsigned)(m->cfg->mta_sts.fetch_timeout * 1000),
		.user_agent = "strictrelay/" STRICTRELAY_VERSION,
	};
	metrics_count(METRICS_STS_FETCHES);
	d->op = https_request(m->https, &req, on_fetched, d);
}

/* --- discovery ------------------------------------------------------------ */

static void on_txt(void *arg, const struct dns_result *res)
{
	struct discovery *d = arg;
	struct entry *e = d->e;
	d->txtq = NULL;
	int64_t now = now_unix();
	bool cached_valid = e->have && e->expires > now;
	if (res->status == DNS_OK) {
		char why[200];
		struct sts_txt txt;
		enum sts_txt_result st = sts_txt_select(&res->txt, &txt, why, sizeof(why));
		if (st == STS_TXT_OK)
			snprintf(d->txt_id, sizeof(d->txt_id), "%s", txt.id);
		switch (st) {
		case STS_TXT_OK:
			snprintf(d->txt_desc, sizeof(d->txt_desc), "id=%s", d->txt_id);
			break;
		case STS_TXT_NONE:
			snprintf(d->txt_desc, sizeof(d->txt_desc), "no v=STSv1 record");
			break;
		case STS_TXT_MULTIPLE:
			snprintf(d->txt_desc, sizeof(d->txt_desc), "several v=STSv1 records (ignored)");
			break;
		case STS_TXT_INVALID:
			snprintf(d->txt_desc, sizeof(d->txt_desc), "invalid record: %s", why);
			break;
		}
		if (st != STS_TXT_OK) {
			deliver(d); /* the cached policy, if any, stays (STS-06) */
			return;
		}
	} else {
		snprintf(d->txt_desc, sizeof(d->txt_desc), "%s",
			 res->status == DNS_TEMPFAIL ? res->detail : "no record");
		d->temporary = res->status == DNS_TEMPFAIL;
		if (res->status == DNS_TEMPFAIL && !cached_valid)
			log_info("mta-sts", "domain=%s _mta-sts TXT lookup failed: %s", e->domain,
				 res->detail);
		deliver(d); /* STS-19: DNS failing -> the cached policy, if any */
		return;
	}
	if (!d->force && cached_valid && strcmp(e->id, d->txt_id) == 0) {
		deliver(d);
		return;
	}
	/* STS-17: a failing id is not fetched again within the back-off; the
	 * policy is unknown for now, not absent (REQUIRETLS defers on that). */
	if (!d->force && strcmp(e->failed_id, d->txt_id) == 0 &&
	    now - e->failed_at < STS_FETCH_BACKOFF) {
		d->temporary = true;
		deliver(d);
		return;
	}
	fetch(d);
}

static void discovery_start(struct mtasts *m, struct entry *e, bool force)
{
	struct discovery *d = xcalloc(1, sizeof(*d));
	d->m = m;
	d->e = e;
	d->force = force;
	e->disc = d;
	char name[300];
	snprintf(name, sizeof(name), "_mta-sts.%s", e->domain);
	d->txtq = resolver_query_txt(m->resolver, name, on_txt, d);
}

static struct entry *entry_get(struct mtasts *m, const char *domain)
{
	for (struct entry *e = m->entries; e != NULL; e = e->next)
		if (str_ieq(e->domain, domain))
			return e;
	struct entry *e = xcalloc(1, sizeof(*e));
	e->domain = xstrdup(domain);
	str_lower(e->domain);
	e->next = m->entries;
	m->entries = e;
	return e;
}

struct mtasts_query *mtasts_get(struct mtasts *m, const char *domain, bool force, mtasts_cb *cb,
				void *arg)
{
	struct entry *e = entry_get(m, domain);
	entry_load(m, e, now_unix());
	struct mtasts_query *q = xcalloc(1, sizeof(*q));
	q->cb = cb;
	q->arg = arg;
	if (e->disc == NULL)
		discovery_start(m, e, force);
	else if (force)
		e->disc->force = true;
	q->next = e->disc->waiters;
	e->disc->waiters = q;
	return q;
}

void mtasts_cancel(struct mtasts_query *q)
{
	q->cancelled = true;
}

/* --- proactive refresh (STS-20) --------------------------------------------- */

static void on_refreshed(void *arg, const struct sts_result *res)
{
	(void)arg;
	(void)res; /* deliver() logged any failure */
}

static void on_refresh_timer(uv_timer_t *t)
{
	struct mtasts *m = t->data;
	int64_t now = now_unix();
	/* write back when policies were last used */
	for (struct entry *e = m->entries; e != NULL; e = e->next) {
		if (!e->used_dirty || !e->have)
			continue;
		e->used_dirty = false;
		struct save_op *op = xcalloc(1, sizeof(*op));
		op->domain = xstrdup(e->domain);
		op->last_used = e->last_used;
		op->used_only = true;
		save(m, op);
	}
	/* Policies in use (last 30 days) fetched more than a day ago are
	 * fetched again whatever their id says. */
	sqlite3_stmt *st = store_tx_stmt(m->tx, sql_due);
	if (st == NULL)
		return;
	sqlite3_bind_int64(st, 1, now - STS_REFRESH_AGE);
	sqlite3_bind_int64(st, 2, now - 30 * 86400);
	struct strlist due = { 0 };
	while (sqlite3_step(st) == SQLITE_ROW)
		strlist_add(&due, (const char *)sqlite3_column_text(st, 0));
	sqlite3_reset(st);
	for (size_t i = 0; i < due.n; i++) {
		log_info("mta-sts", "domain=%s refreshing the cached policy", due.v[i]);
		mtasts_get(m, due.v[i], true, on_refreshed, NULL);
	}
	strlist_free(&due);
}

/* --- lifetime ------------------------------------------------------------- */

int mtasts_new(struct mtasts **out, uv_loop_t *loop, const struct config *cfg,
	       struct resolver *resolver, struct https_client *https, struct store *store,
	       char *err, size_t errlen)
{
	struct mtasts *m = xcalloc(1, sizeof(*m));
	m->loop = loop;
	m->cfg = cfg;
	m->resolver = resolver;
	m->https = https;
	m->store = store;
	if (store_db_open(&m->db, cfg->queue.state_dir, err, errlen) < 0) {
		free(m);
		return -1;
	}
	m->tx = store_tx_new(m->db);
	uv_timer_init(loop, &m->refresh);
	m->refresh.data = m;
	if (store != NULL)
		/* soon after start (a restart catches up), then hourly */
		uv_timer_start(&m->refresh, on_refresh_timer, 10 * 1000, STS_REFRESH_INTERVAL * 1000);
	*out = m;
	return 0;
}

static void on_refresh_closed(uv_handle_t *h)
{
	free(h->data);
}

void mtasts_set_config(struct mtasts *m, const struct config *cfg)
{
	m->cfg = cfg;
}

void mtasts_free(struct mtasts *m)
{
	if (m == NULL)
		return;
	m->closing = true;
	struct entry *e = m->entries;
	while (e != NULL) {
		struct entry *next = e->next;
		struct discovery *d = e->disc;
		if (d != NULL) {
			if (d->txtq != NULL)
				dns_query_cancel(d->txtq);
			if (d->op != NULL)
				https_cancel(d->op);
			d->txtq = NULL;
			d->op = NULL;
			snprintf(d->txt_desc, sizeof(d->txt_desc), "shutting down");
			deliver(d);
		}
		entry_clear_policy(e);
		free(e->domain);
		free(e);
		e = next;
	}
	m->entries = NULL;
	store_tx_free(m->tx);
	sqlite3_close(m->db);
	uv_timer_stop(&m->refresh);
	uv_close((uv_handle_t *)&m->refresh, on_refresh_closed);
}
