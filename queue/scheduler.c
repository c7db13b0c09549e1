/* scheduler.c - see scheduler.h */
#include "scheduler.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mta/log.h"
#include "policy/sts.h"
#include "queue/delivery.h"
#include "smtp/client.h"

#define TICK_MS 1000
#define CLAIM_BATCH 1000      /* recipients read per tick */
#define MAX_QUEUED_JOBS 20000 /* jobs waiting in memory for a session */
#define BACKLOG_JOBS 1000     /* jobs waiting: a kick waits for ... */
#define BACKLOG_KICK_MS 250   /* ... this long, so kicks coalesce */

struct dest;

struct session {
	struct session *next;
	struct scheduler *s;
	struct dest *d;
	struct smtp_client *client;
	bool idle;                /* parked: on d->idle, waiting for a job */
	struct session *next_idle;
};

struct dest {
	struct dest *next;
	char *key;
	struct client_dest cd;
	char *verify_name;        /* owned copy behind cd.req.verify_name */
	struct delivery_job *head, *tail;
	size_t njobs;
	unsigned active;          /* sessions running for this destination (idle ones too) */
	struct session *idle;     /* parked sessions, newest first */
};

struct scheduler {
	uv_loop_t *loop;
	const struct config *cfg;
	struct store *store;
	struct resolver *resolver;
	struct mtasts *mtasts;
	SSL_CTX *client_ctx;
	sqlite3 *db;              /* reader connection (and the TEMP claims table) */
	struct store_tx *tx;
	uv_timer_t timer;
	struct dest *dests;
	struct session *sessions;
	unsigned active;          /* sessions in total */
	size_t queued_jobs;
	unsigned pending_records; /* outcome writes not yet committed */
	bool stopping;
	void (*stopped)(void *arg);
	void *stopped_arg;
};

static void dest_kick(struct scheduler *s, struct dest *d);
static void kick_all(struct scheduler *s);
static void maybe_stopped(struct scheduler *s);

/* --- claims -------------------------------------------------------------- */

static const char sql_claim[] = "INSERT OR IGNORE INTO temp.inflight (id) VALUES (?)";
static const char sql_unclaim[] = "DELETE FROM temp.inflight WHERE id = ?";
/* A claim with hold_until stays until then: see hold_job(). */
static const char sql_hold[] = "UPDATE temp.inflight SET hold_until = ? WHERE id = ?";
static const char sql_unhold[] = "DELETE FROM temp.inflight WHERE hold_until <= ?";

static void claim(struct scheduler *s, int64_t rowid, bool on)
{
	sqlite3_stmt *st = store_tx_stmt(s->tx, on ? sql_claim : sql_unclaim);
	if (st == NULL)
		return;
	sqlite3_bind_int64(st, 1, rowid);
	if (sqlite3_step(st) != SQLITE_DONE)
		log_error("scheduler", "claims table: %s", sqlite3_errmsg(s->db));
	sqlite3_reset(st);
}

static void release_job(struct scheduler *s, struct delivery_job *job)
{
	for (size_t i = 0; i < job->nrcpts; i++)
		claim(s, job->rcpts[i].rowid, false);
	job_free(job);
}

/*
 * The outcome could not be written (a full disk, say), so the database
 * still says "due now": keep the recipients claimed until the first retry
 * step has passed, or the next tick would start them again at once, in a
 * tight loop against the destination and the disk.
 */
static void hold_job(struct scheduler *s, struct delivery_job *job)
{
	int64_t step = s->cfg->queue.nretry_schedule > 0 ? s->cfg->queue.retry_schedule[0] : 60;
	sqlite3_stmt *st = store_tx_stmt(s->tx, sql_hold);
	for (size_t i = 0; st != NULL && i < job->nrcpts; i++) {
		sqlite3_bind_int64(st, 1, now_unix() + step);
		sqlite3_bind_int64(st, 2, job->rcpts[i].rowid);
		if (sqlite3_step(st) != SQLITE_DONE)
			log_error("scheduler", "claims table: %s", sqlite3_errmsg(s->db));
		sqlite3_reset(st);
	}
	job_free(job);
}

static void release_held(struct scheduler *s)
{
	sqlite3_stmt *st = store_tx_stmt(s->tx, sql_unhold);
	if (st == NULL)
		return;
	sqlite3_bind_int64(st, 1, now_unix());
	if (sqlite3_step(st) != SQLITE_DONE)
		log_error("scheduler", "claims table: %s", sqlite3_errmsg(s->db));
	sqlite3_reset(st);
}

/* --- destinations ---------------------------------------------------------- */

static bool is_address_literal(const char *domain)
{
	return domain[0] == '[';
}

/* The next hop and policy class for a recipient domain; key identifies it. */
static struct dest *dest_for(struct scheduler *s, const char *domain, const char *sender,
			     uint32_t flags)
{
	const struct config *cfg = s->cfg;
	bool requiretls = (flags & (MSG_REQUIRETLS | MSG_REQUIRETLS_RULE)) && sender[0] != '\0';
	bool tls_no = (flags & MSG_TLS_REQUIRED_NO) && !requiretls;
	enum tls_level tls = cfg->delivery.require_tls ? TLS_LEVEL_VERIFY : TLS_LEVEL_MAY;
	const char *lookup = domain, *verify_name = NULL, *policy_domain = domain;
	bool mx_lookup = true;
	uint16_t port = cfg->delivery.smtp_port;
	char literal[300], label[400];
	const struct route *route = is_address_literal(domain) ? NULL : config_find_route(cfg, domain);
	if (is_address_literal(domain)) {
		/* user@[192.0.2.1]: that address, no DNS, no MTA-STS */
		const char *p = domain + 1;
		if (str_iprefix(p, "IPv6:"))
			p += 5;
		snprintf(literal, sizeof(literal), "%s", p);
		char *close = strchr(literal, ']');
		if (close != NULL)
			*close = '\0';
		lookup = literal;
		mx_lookup = false;
		snprintf(label, sizeof(label), "%s", domain);
	} else if (route != NULL) {
		lookup = route->next_hop.host;
		mx_lookup = !route->next_hop.bracketed;
		if (route->next_hop.port != 0)
			port = route->next_hop.port;
		tls = route->tls;
		verify_name = route->verify_name;
		/* STS-08: with a smarthost the policy domain is the smarthost's */
		policy_domain = route->next_hop.host;
		/* one token, so log lines stay key=value */
		snprintf(label, sizeof(label), "route(%s)%s%s%s:%u", route->domain,
			 route->next_hop.bracketed ? "[" : "", route->next_hop.host,
			 route->next_hop.bracketed ? "]" : "", port);
	} else {
		snprintf(label, sizeof(label), "%s", domain);
	}
	/* The route is part of the key: two routes to one host stay apart, so
	 * logs and `queue show` name the route each recipient took. */
	char key[800];
	snprintf(key, sizeof(key), "%s|%s|%d|%u|%d|%s|%d|%d", route ? route->domain : "", lookup,
		 mx_lookup, port, (int)tls, verify_name ? verify_name : "", requiretls, tls_no);
	for (struct dest *d = s->dests; d != NULL; d = d->next)
		if (strcmp(d->key, key) == 0)
			return d;

	struct dest *d = xcalloc(1, sizeof(*d));
	d->key = xstrdup(key);
	d->cd.lookup_name = xstrdup(lookup);
	d->cd.mx_lookup = mx_lookup;
	d->cd.route = route != NULL;
	d->cd.port = port;
	d->cd.policy_domain = xstrdup(policy_domain);
	d->cd.label = xstrdup(label);
	d->verify_name = verify_name ? xstrdup(verify_name) : NULL;
	d->cd.req = (struct delivery_req){
		.tls = tls,
		.verify_name = d->verify_name,
		.requiretls = requiretls,
		.tls_required_no = tls_no,
		.sts = STS_MODE_NONE, /* MTA-STS comes with its own module */
	};
	d->next = s->dests;
	s->dests = d;
	return d;
}

static void dest_free(struct scheduler *s, struct dest *d)
{
	struct dest **pp = &s->dests;
	while (*pp != NULL && *pp != d)
		pp = &(*pp)->next;
	if (*pp == d)
		*pp = d->next;
	free(d->key);
	free(d->cd.lookup_name);
	free(d->cd.policy_domain);
	free(d->cd.label);
	free(d->verify_name);
	free(d);
}

static void dest_push(struct scheduler *s, struct dest *d, struct delivery_job *job)
{
	job->next = NULL;
	if (d->tail != NULL)
		d->tail->next = job;
	else
		d->head = job;
	d->tail = job;
	d->njobs++;
	s->queued_jobs++;
}

static struct delivery_job *dest_pop(struct scheduler *s, struct dest *d)
{
	struct delivery_job *job = d->head;
	if (job == NULL)
		return NULL;
	d->head = job->next;
	if (d->head == NULL)
		d->tail = NULL;
	job->next = NULL;
	d->njobs--;
	s->queued_jobs--;
	return job;
}

/* --- outcomes -------------------------------------------------------------- */

struct record_ctx {
	struct scheduler *s;
	struct delivery_job *job;
};

static void on_recorded(void *arg, int status, const char *error)
{
	(void)error;
	struct record_ctx *rc = arg;
	struct scheduler *s = rc->s;
	/* Committed: the recipients may be picked again (when due); a bounce
	 * may have been queued. Failed: they stay queued, held for a while. */
	if (status == 0)
		release_job(s, rc->job);
	else
		hold_job(s, rc->job);
	free(rc);
	s->pending_records--;
	if (s->stopping)
		maybe_stopped(s);
	else
		scheduler_kick(s);
}

static void finish_job(struct scheduler *s, struct delivery_job *job)
{
	bool any = false;
	for (size_t i = 0; i < job->nrcpts; i++)
		if (job->rcpts[i].outcome != RCPT_PENDING)
			any = true;
	if (!any) {
		/* untried (a shutdown, or a cached connection found gone):
		 * due again at once */
		release_job(s, job);
		scheduler_kick(s);
		return;
	}
	struct record_ctx *rc = xmalloc(sizeof(*rc));
	rc->s = s;
	rc->job = job;
	s->pending_records++;
	delivery_record(s->store, s->cfg, job, now_unix(), on_recorded, rc);
}

/* --- session callbacks ------------------------------------------------------ */

static struct delivery_job *on_next_job(void *arg)
{
	struct session *se = arg;
	if (se->s->stopping)
		return NULL;
	return dest_pop(se->s, se->d);
}

static void on_job_done(void *arg, struct delivery_job *job)
{
	struct session *se = arg;
	finish_job(se->s, job);
}

/*
 * No MX of the destination could be used: the jobs waiting for it fail the
 * same way now rather than one by one. All sessions of a destination use
 * the same MX list, so waiting for the others would only start new sessions
 * into the same wall (which is what happened before: a tight reconnect loop
 * that never recorded a deferral).
 */
static void on_failed(void *arg, const struct verdict *v, enum sts_mode sts)
{
	struct session *se = arg;
	struct scheduler *s = se->s;
	struct dest *d = se->d;
	struct delivery_job *job;
	while ((job = dest_pop(s, d)) != NULL) {
		enum rcpt_outcome o = v->permanent ? RCPT_BOUNCED : RCPT_DEFERRED;
		for (size_t i = 0; i < job->nrcpts; i++) {
			char to[300], reason[300];
			log_info("delivery", "id=%s to=<%s> dest=%s sts=%s requiretls=%s status=%s dsn=%s reason=%s",
				 job->msg->id, str_quote(to, sizeof(to), job->rcpts[i].address),
				 d->cd.label, sts_mode_name(sts), requiretls_log(job->msg),
				 o == RCPT_BOUNCED ? "bounced" : "deferred", v->status,
				 str_quote(reason, sizeof(reason), v->reason));
		}
		job_set_pending(job, o, v->status, v->reason);
		snprintf(job->via, sizeof(job->via), "%s", d->cd.label);
		finish_job(s, job);
	}
}

/* Takes se off its destination's idle list, if it is there. */
static void unpark(struct session *se)
{
	if (!se->idle)
		return;
	struct session **pp = &se->d->idle;
	while (*pp != NULL && *pp != se)
		pp = &(*pp)->next_idle;
	if (*pp == se)
		*pp = se->next_idle;
	se->idle = false;
	se->next_idle = NULL;
}

/* The session has no job: it may wait for one ([delivery]
 * connection_cache_time), unless the scheduler is stopping. */
static bool on_park(void *arg)
{
	struct session *se = arg;
	if (se->s->stopping)
		return false;
	se->idle = true;
	se->next_idle = se->d->idle;
	se->d->idle = se;
	return true;
}

/* A destination needs a connection slot that idle sessions elsewhere hold:
 * end one of those (it closes, and on_closed kicks everyone again). */
static void evict_idle(struct scheduler *s, const struct dest *except)
{
	for (struct dest *d = s->dests; d != NULL; d = d->next) {
		if (d == except || d->idle == NULL)
			continue;
		struct session *se = d->idle;
		unpark(se);
		smtp_client_abort(se->client);
		return;
	}
}

static void on_closed(void *arg)
{
	struct session *se = arg;
	struct scheduler *s = se->s;
	struct dest *d = se->d;
	unpark(se);
	struct session **pp = &s->sessions;
	while (*pp != NULL && *pp != se)
		pp = &(*pp)->next;
	if (*pp == se)
		*pp = se->next;
	free(se);
	d->active--;
	s->active--;
	if (s->stopping) {
		if (d->active == 0) {
			struct delivery_job *job;
			while ((job = dest_pop(s, d)) != NULL)
				release_job(s, job);
			dest_free(s, d);
		}
		maybe_stopped(s);
		return;
	}
	if (d->active == 0 && d->njobs == 0)
		dest_free(s, d);
	/* A slot is free: the destinations waiting for one may go on. */
	kick_all(s);
}

static void dest_kick(struct scheduler *s, struct dest *d)
{
	const struct config *cfg = s->cfg;
	/* Idle connections first: no new connection, no new handshake. */
	while (!s->stopping && d->njobs > 0 && d->idle != NULL) {
		struct session *se = d->idle;
		unpark(se);
		smtp_client_resume(se->client); /* false: it is leaving anyway */
	}
	if (!s->stopping && d->njobs > d->active && d->active < cfg->delivery.max_per_domain &&
	    s->active >= cfg->delivery.max_connections)
		evict_idle(s, d);
	while (!s->stopping && d->njobs > d->active && d->active < cfg->delivery.max_per_domain &&
	       s->active < cfg->delivery.max_connections) {
		struct session *se = xcalloc(1, sizeof(*se));
		se->s = s;
		se->d = d;
		se->next = s->sessions;
		s->sessions = se;
		d->active++;
		s->active++;
		struct smtp_client_params p = {
			.loop = s->loop,
			.cfg = cfg,
			.resolver = s->resolver,
			.mtasts = s->mtasts,
			.tls_ctx = s->client_ctx,
			.store = s->store,
			.dest = &d->cd,
			.ops = { on_next_job, on_job_done, on_failed, on_closed, NULL, on_park },
			.arg = se,
		};
		se->client = smtp_client_start(&p);
	}
}

static void kick_all(struct scheduler *s)
{
	struct dest *d = s->dests;
	while (d != NULL) {
		struct dest *next = d->next;
		if (d->njobs > 0)
			dest_kick(s, d);
		d = next;
	}
}

/* --- picking due recipients ----------------------------------------------- */

static const char sql_due[] =
	"SELECT r.id, r.message_id, r.address, r.domain, r.attempts, m.sender, m.flags, m.arrival,"
	" r.notify, r.orcpt, m.ret, m.envid"
	" FROM recipients r JOIN messages m ON m.id = r.message_id"
	" WHERE r.state = 'queued' AND r.next_attempt <= ?1 AND m.held = 0"
	"   AND r.id NOT IN (SELECT id FROM temp.inflight)"
	" ORDER BY r.message_id, r.domain LIMIT ?2";
static const char sql_body[] = "SELECT data FROM bodies WHERE message_id = ?";

/*
 * The body of message id with one reference for the caller: prev's (the
 * previous row's job; rows come ordered by message) when it is the same
 * message, else read from the queue. Bodies are shared only between the jobs
 * of one tick: a search through every body in memory made each load cost
 * O(jobs waiting), quadratic in a backlog.
 */
static struct msg_body *load_body(struct scheduler *s, struct msg_body *prev, const char *id,
				  const char *sender, uint32_t flags, int64_t arrival, const char *ret,
				  const char *envid)
{
	if (prev != NULL && strcmp(prev->id, id) == 0) {
		prev->refs++;
		return prev;
	}
	sqlite3_stmt *st = store_tx_stmt(s->tx, sql_body);
	if (st == NULL)
		return NULL;
	sqlite3_bind_text(st, 1, id, -1, SQLITE_TRANSIENT);
	if (sqlite3_step(st) != SQLITE_ROW) {
		sqlite3_reset(st);
		log_error("scheduler", "id=%s message data missing from the queue", id);
		return NULL;
	}
	struct msg_body *b = xcalloc(1, sizeof(*b));
	b->refs = 1;
	snprintf(b->id, sizeof(b->id), "%s", id);
	b->sender = xstrdup(sender);
	b->flags = flags;
	b->arrival = arrival;
	b->ret = xstrdup(ret ? ret : "");
	b->envid = xstrdup(envid ? envid : "");
	b->len = (size_t)sqlite3_column_bytes(st, 0);
	b->data = xmalloc(b->len + 1);
	if (b->len > 0)
		memcpy(b->data, sqlite3_column_blob(st, 0), b->len);
	b->data[b->len] = '\0';
	sqlite3_reset(st);
	return b;
}

static void add_rcpt(struct delivery_job *job, int64_t rowid, const char *address,
		     unsigned attempts, const char *notify, const char *orcpt)
{
	job->rcpts = xrealloc(job->rcpts, (job->nrcpts + 1) * sizeof(*job->rcpts));
	struct job_rcpt *r = &job->rcpts[job->nrcpts++];
	memset(r, 0, sizeof(*r));
	r->rowid = rowid;
	r->address = xstrdup(address);
	r->attempts = attempts;
	r->notify = xstrdup(notify ? notify : "");
	r->orcpt = xstrdup(orcpt ? orcpt : "");
}

static void tick(struct scheduler *s)
{
	if (s->stopping || s->queued_jobs >= MAX_QUEUED_JOBS)
		return;
	release_held(s);
	sqlite3_stmt *st = store_tx_stmt(s->tx, sql_due);
	if (st == NULL)
		return;
	sqlite3_bind_int64(st, 1, now_unix());
	sqlite3_bind_int(st, 2, CLAIM_BATCH);
	struct delivery_job *cur = NULL;
	struct dest *cur_dest = NULL;
	int rows = 0;
	/* Rows come ordered by message and domain: consecutive rows of the
	 * same pair form one job. Claims are written after the read. */
	struct {
		struct delivery_job *job;
		struct dest *d;
	} *made = NULL;
	size_t nmade = 0;
	int rc;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		rows++;
		int64_t rowid = sqlite3_column_int64(st, 0);
		const char *id = (const char *)sqlite3_column_text(st, 1);
		const char *addr = (const char *)sqlite3_column_text(st, 2);
		const char *domain = (const char *)sqlite3_column_text(st, 3);
		unsigned attempts = (unsigned)sqlite3_column_int(st, 4);
		const char *sender = (const char *)sqlite3_column_text(st, 5);
		uint32_t flags = (uint32_t)sqlite3_column_int64(st, 6);
		int64_t arrival = sqlite3_column_int64(st, 7);
		const char *notify = (const char *)sqlite3_column_text(st, 8);
		const char *orcpt = (const char *)sqlite3_column_text(st, 9);
		const char *ret = (const char *)sqlite3_column_text(st, 10);
		const char *envid = (const char *)sqlite3_column_text(st, 11);
		if (cur == NULL || strcmp(cur->msg->id, id) != 0 || strcmp(cur->domain, domain) != 0) {
			struct msg_body *b = load_body(s, cur ? cur->msg : NULL, id, sender, flags,
						       arrival, ret, envid);
			if (b == NULL) {
				cur = NULL;
				continue;
			}
			cur = xcalloc(1, sizeof(*cur));
			cur->msg = b;
			cur->domain = xstrdup(domain);
			cur_dest = dest_for(s, domain, sender, flags);
			made = xrealloc(made, (nmade + 1) * sizeof(*made));
			made[nmade].job = cur;
			made[nmade].d = cur_dest;
			nmade++;
		}
		add_rcpt(cur, rowid, addr, attempts, notify, orcpt);
	}
	if (rc != SQLITE_DONE)
		log_error("scheduler", "reading due recipients: %s", sqlite3_errmsg(s->db));
	sqlite3_reset(st);
	for (size_t i = 0; i < nmade; i++) {
		for (size_t k = 0; k < made[i].job->nrcpts; k++)
			claim(s, made[i].job->rcpts[k].rowid, true);
		dest_push(s, made[i].d, made[i].job);
	}
	for (size_t i = 0; i < nmade; i++)
		dest_kick(s, made[i].d);
	free(made);
	/* A full batch: there may be more due right now. */
	if (rows == CLAIM_BATCH)
		scheduler_kick(s);
}

static void on_tick(uv_timer_t *t)
{
	tick(t->data);
}

void scheduler_set_config(struct scheduler *s, const struct config *cfg)
{
	s->cfg = cfg;
}

void scheduler_kick(struct scheduler *s)
{
	if (s->stopping)
		return;
	/* Coalesced: one tick on the next loop turn, then back to polling. With
	 * a backlog in memory a new message only joins its end, and every tick
	 * reads the whole due set again: one tick per BACKLOG_KICK_MS, not one
	 * per commit. */
	uint64_t delay = s->queued_jobs >= BACKLOG_JOBS ? BACKLOG_KICK_MS : 0;
	if (uv_is_active((uv_handle_t *)&s->timer) && uv_timer_get_due_in(&s->timer) <= delay)
		return;
	uv_timer_start(&s->timer, on_tick, delay, TICK_MS);
}

int scheduler_start(struct scheduler **out, uv_loop_t *loop, const struct config *cfg,
		    struct store *store, struct resolver *resolver, struct mtasts *mtasts,
		    SSL_CTX *client_ctx, char *err, size_t errlen)
{
	struct scheduler *s = xcalloc(1, sizeof(*s));
	s->loop = loop;
	s->cfg = cfg;
	s->store = store;
	s->resolver = resolver;
	s->mtasts = mtasts;
	s->client_ctx = client_ctx;
	if (store_db_open(&s->db, cfg->queue.state_dir, err, errlen) < 0) {
		free(s);
		return -1;
	}
	char *msg = NULL;
	/* The index keeps release_held() from scanning every claim each tick. */
	if (sqlite3_exec(s->db,
			 "CREATE TEMP TABLE inflight (id INTEGER PRIMARY KEY, hold_until INTEGER);"
			 "CREATE INDEX temp.inflight_hold ON inflight (hold_until)"
			 " WHERE hold_until IS NOT NULL",
			 NULL, NULL, &msg) != SQLITE_OK) {
		snprintf(err, errlen, "scheduler: %s", msg ? msg : "cannot create the claims table");
		sqlite3_free(msg);
		sqlite3_close(s->db);
		free(s);
		return -1;
	}
	s->tx = store_tx_new(s->db);
	uv_timer_init(loop, &s->timer);
	s->timer.data = s;
	uv_timer_start(&s->timer, on_tick, 0, TICK_MS);
	*out = s;
	return 0;
}

static void on_timer_closed(uv_handle_t *h)
{
	struct scheduler *s = h->data;
	void (*done)(void *) = s->stopped;
	void *arg = s->stopped_arg;
	free(s);
	if (done != NULL)
		done(arg);
}

static void maybe_stopped(struct scheduler *s)
{
	if (!s->stopping || s->active > 0 || s->pending_records > 0 || uv_is_closing((uv_handle_t *)&s->timer))
		return;
	while (s->dests != NULL) {
		struct dest *d = s->dests;
		struct delivery_job *job;
		while ((job = dest_pop(s, d)) != NULL)
			release_job(s, job);
		dest_free(s, d);
	}
	store_tx_free(s->tx);
	sqlite3_close(s->db);
	uv_close((uv_handle_t *)&s->timer, on_timer_closed);
}

void scheduler_shutdown(struct scheduler *s, void (*done)(void *arg), void *arg)
{
	s->stopping = true;
	s->stopped = done;
	s->stopped_arg = arg;
	uv_timer_stop(&s->timer);
	for (struct session *se = s->sessions; se != NULL; se = se->next)
		smtp_client_abort(se->client);
	maybe_stopped(s);
}
