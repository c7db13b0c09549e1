/* purge.c - see purge.h */
#include "queue/purge.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>

#include "mta/log.h"
#include "mta/util.h"
#include "tlsrpt/job.h"

struct purge {
	uv_timer_t timer;
	struct store *store;
	int64_t retention;
	bool timer_open;
	bool stopped;
	bool in_flight;          /* a batch is submitted */
	/* the pass in progress */
	int64_t cutoff;
	int64_t deleted[3];      /* per statement below, this pass */
	int64_t batch[3];        /* per statement, the batch in flight */
	uint64_t started_ms;
};

/* Each deletes at most ?2 rows older than ?1. events has no index on time
 * (one more B-tree to write at every event slowed end-to-end delivery in
 * an A/B benchmark): ids grow with time, so the scan stops at the first
 * young row, and what it walks before that is old events of messages
 * still queued, plus whatever is deleted now. */
static const char *const sqls[] = {
	"DELETE FROM tls_sessions WHERE id IN"
	" (SELECT id FROM tls_sessions WHERE time < ?1 LIMIT ?2)",
	"DELETE FROM tlsrpt_reports WHERE id IN"
	" (SELECT id FROM tlsrpt_reports WHERE created < ?1 AND state != 'pending' LIMIT ?2)",
	"DELETE FROM events WHERE id IN"
	" (SELECT id FROM events WHERE id < coalesce("
	"   (SELECT id FROM events WHERE time >= ?1 ORDER BY id LIMIT 1),"
	"   (SELECT max(id) + 1 FROM events), 0)"
	" AND time < ?1 AND message_id NOT IN (SELECT id FROM messages) LIMIT ?2)",
};

int64_t purge_cutoff(int64_t now, int64_t retention)
{
	int64_t cutoff = now - retention;
	int64_t window = tlsrpt_day_start(now) - (int64_t)(TLSRPT_LOOKBACK_DAYS + 1) * 86400;
	return cutoff < window ? cutoff : window;
}

static void maybe_free(struct purge *p)
{
	if (p->stopped && !p->timer_open && !p->in_flight)
		free(p);
}

/* Writer thread: one batch per table. */
static int batch_exec(struct store_tx *tx, void *data, char *err, size_t errlen)
{
	struct purge *p = data;
	sqlite3 *db = store_tx_db(tx);
	for (size_t i = 0; i < SR_ARRAY_LEN(sqls); i++) {
		p->batch[i] = 0;
		sqlite3_stmt *st = store_tx_stmt(tx, sqls[i]);
		if (st == NULL) {
			snprintf(err, errlen, "%s", sqlite3_errmsg(db));
			return -1;
		}
		sqlite3_bind_int64(st, 1, p->cutoff);
		sqlite3_bind_int(st, 2, PURGE_BATCH);
		if (store_tx_step_done(tx, st, err, errlen) < 0)
			return -1;
		p->batch[i] = sqlite3_changes(db);
	}
	return 0;
}

static void submit_batch(struct purge *p);

static void batch_done(void *arg, int status, const char *error)
{
	struct purge *p = arg;
	p->in_flight = false;
	if (status != 0) {
		log_error("queue", "purging history older than %lld failed: %s", (long long)p->cutoff,
			  error ? error : "?");
		maybe_free(p);
		return;
	}
	bool more = false;
	for (size_t i = 0; i < SR_ARRAY_LEN(sqls); i++) {
		p->deleted[i] += p->batch[i];
		if (p->batch[i] >= PURGE_BATCH)
			more = true;
	}
	if (more && !p->stopped) {
		submit_batch(p);
		return;
	}
	if (p->deleted[0] + p->deleted[1] + p->deleted[2] > 0)
		log_info("queue", "purged history before %lld: tls_sessions=%lld tlsrpt_reports=%lld events=%lld took=%.2fs",
			 (long long)p->cutoff, (long long)p->deleted[0], (long long)p->deleted[1],
			 (long long)p->deleted[2], (double)(now_ms() - p->started_ms) / 1000.0);
	maybe_free(p);
}

static void submit_batch(struct purge *p)
{
	p->in_flight = true;
	store_submit(p->store, batch_exec, p, batch_done, p);
}

static void on_timer(uv_timer_t *t)
{
	struct purge *p = t->data;
	if (p->stopped || p->in_flight)
		return;
	p->cutoff = purge_cutoff(now_unix(), p->retention);
	for (size_t i = 0; i < SR_ARRAY_LEN(sqls); i++)
		p->deleted[i] = 0;
	p->started_ms = now_ms();
	submit_batch(p);
}

static void on_timer_closed(uv_handle_t *h)
{
	struct purge *p = h->data;
	p->timer_open = false;
	maybe_free(p);
}

struct purge *purge_start(uv_loop_t *loop, struct store *st, int64_t retention)
{
	struct purge *p = xcalloc(1, sizeof(*p));
	p->store = st;
	p->retention = retention;
	uv_timer_init(loop, &p->timer);
	p->timer.data = p;
	p->timer_open = true;
	uv_timer_start(&p->timer, on_timer, PURGE_FIRST_MS, PURGE_INTERVAL_MS);
	return p;
}

void purge_stop(struct purge *p)
{
	if (p == NULL || p->stopped)
		return;
	p->stopped = true;
	uv_close((uv_handle_t *)&p->timer, on_timer_closed);
}
