/* store.c - see store.h */
#include "store.h"

#include <errno.h>
#if defined(__GLIBC__)
#include <malloc.h>
#endif
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "mta/log.h"

#define MAX_BATCH 1024
#define STMT_CACHE 32

/* --- schema -------------------------------------------------------------- */

/*
 * Migration i brings the schema from version i to i + 1. Never edit a
 * migration that has shipped: add a new one.
 */
static const char *const migrations[] = {
	/* 0 -> 1: the queue */
	"CREATE TABLE messages ("
	"  id TEXT PRIMARY KEY,"
	"  sender TEXT NOT NULL,"
	"  size INTEGER NOT NULL,"
	"  flags INTEGER NOT NULL DEFAULT 0,"
	"  arrival INTEGER NOT NULL,"
	"  client_addr TEXT NOT NULL DEFAULT '',"
	"  client_helo TEXT NOT NULL DEFAULT '',"
	"  client_tls TEXT NOT NULL DEFAULT '',"
	"  auth_user TEXT NOT NULL DEFAULT '',"
	"  held INTEGER NOT NULL DEFAULT 0"
	");"
	"CREATE TABLE bodies ("
	"  message_id TEXT PRIMARY KEY REFERENCES messages(id) ON DELETE CASCADE,"
	"  data BLOB NOT NULL"
	");"
	"CREATE TABLE recipients ("
	"  id INTEGER PRIMARY KEY,"
	"  message_id TEXT NOT NULL REFERENCES messages(id) ON DELETE CASCADE,"
	"  address TEXT NOT NULL,"
	"  domain TEXT NOT NULL,"
	"  state TEXT NOT NULL DEFAULT 'queued' CHECK (state IN ('queued', 'sent', 'bounced')),"
	"  attempts INTEGER NOT NULL DEFAULT 0,"
	"  next_attempt INTEGER NOT NULL,"
	"  last_attempt INTEGER,"
	"  last_reply TEXT NOT NULL DEFAULT '',"
	"  route TEXT NOT NULL DEFAULT ''"
	");"
	"CREATE INDEX recipients_due ON recipients(state, next_attempt);"
	"CREATE INDEX recipients_message ON recipients(message_id);"
	"CREATE TABLE events ("
	"  id INTEGER PRIMARY KEY,"
	"  message_id TEXT NOT NULL,"
	"  time INTEGER NOT NULL,"
	"  kind TEXT NOT NULL,"
	"  recipient TEXT NOT NULL DEFAULT '',"
	"  detail TEXT NOT NULL DEFAULT ''"
	");"
	"CREATE INDEX events_message ON events(message_id);",
	/* 1 -> 2: one row per outbound session's TLS outcome (RFC 8460) */
	"CREATE TABLE tls_sessions ("
	"  id INTEGER PRIMARY KEY,"
	"  time INTEGER NOT NULL,"
	"  policy_domain TEXT NOT NULL,"
	"  policy_type TEXT NOT NULL,"
	"  mx_host TEXT NOT NULL,"
	"  mx_ip TEXT NOT NULL,"
	"  mx_helo TEXT NOT NULL DEFAULT '',"
	"  sending_ip TEXT NOT NULL DEFAULT '',"
	"  starttls_offered INTEGER NOT NULL,"
	"  tls INTEGER NOT NULL,"
	"  verified INTEGER NOT NULL,"
	"  result_type TEXT NOT NULL,"
	"  tls_version TEXT NOT NULL DEFAULT '',"
	"  cipher TEXT NOT NULL DEFAULT '',"
	"  detail TEXT NOT NULL DEFAULT '',"
	"  tls_required_no INTEGER NOT NULL DEFAULT 0"
	");"
	"CREATE INDEX tls_sessions_time ON tls_sessions(time, policy_domain);",
	/* 2 -> 3: the MTA-STS policy cache (RFC 8461 5.1); the policy in force
	 * for each TLS session (RFC 8460 policy-string, mx-host) */
	"CREATE TABLE sts_policies ("
	"  domain TEXT PRIMARY KEY,"
	"  id TEXT NOT NULL,"
	"  policy TEXT NOT NULL,"
	"  mode TEXT NOT NULL,"
	"  max_age INTEGER NOT NULL,"
	"  fetched INTEGER NOT NULL,"
	"  expires INTEGER NOT NULL,"
	"  last_used INTEGER NOT NULL DEFAULT 0"
	");"
	"ALTER TABLE tls_sessions ADD COLUMN policy_strings TEXT NOT NULL DEFAULT '';"
	"ALTER TABLE tls_sessions ADD COLUMN policy_mx TEXT NOT NULL DEFAULT '';",
	/* 3 -> 4: the DSN extension (RFC 3461) parameters */
	"ALTER TABLE messages ADD COLUMN ret TEXT NOT NULL DEFAULT '';"
	"ALTER TABLE messages ADD COLUMN envid TEXT NOT NULL DEFAULT '';"
	"ALTER TABLE recipients ADD COLUMN notify TEXT NOT NULL DEFAULT '';"
	"ALTER TABLE recipients ADD COLUMN orcpt TEXT NOT NULL DEFAULT '';",
	/* 4 -> 5: TLS reports made and where they went (RFC 8460) */
	"CREATE TABLE tlsrpt_reports ("
	"  id INTEGER PRIMARY KEY,"
	"  day INTEGER NOT NULL,"
	"  policy_domain TEXT NOT NULL,"
	"  report_id TEXT NOT NULL,"
	"  filename TEXT NOT NULL,"
	"  created INTEGER NOT NULL,"
	"  report BLOB NOT NULL,"
	"  state TEXT NOT NULL CHECK (state IN ('pending', 'sent', 'failed', 'no-rua')),"
	"  detail TEXT NOT NULL DEFAULT ''"
	");"
	"CREATE INDEX tlsrpt_reports_day ON tlsrpt_reports(day, policy_domain);"
	"CREATE TABLE tlsrpt_deliveries ("
	"  id INTEGER PRIMARY KEY,"
	"  report INTEGER NOT NULL REFERENCES tlsrpt_reports(id) ON DELETE CASCADE,"
	"  rua TEXT NOT NULL,"
	"  kind TEXT NOT NULL CHECK (kind IN ('https', 'mailto')),"
	"  state TEXT NOT NULL CHECK (state IN ('pending', 'sent', 'queued', 'failed')),"
	"  attempts INTEGER NOT NULL DEFAULT 0,"
	"  next_attempt INTEGER NOT NULL,"
	"  last_result TEXT NOT NULL DEFAULT '',"
	"  queue_id TEXT NOT NULL DEFAULT ''"
	");"
	"CREATE INDEX tlsrpt_deliveries_due ON tlsrpt_deliveries(state, next_attempt);",
};

int store_schema_version(sqlite3 *db)
{
	sqlite3_stmt *st;
	int v = 0;
	if (sqlite3_prepare_v2(db, "SELECT version FROM schema_version", -1, &st, NULL) != SQLITE_OK)
		return 0; /* no table yet */
	if (sqlite3_step(st) == SQLITE_ROW)
		v = sqlite3_column_int(st, 0);
	sqlite3_finalize(st);
	return v;
}

static int exec_sql(sqlite3 *db, const char *sql, char *err, size_t errlen)
{
	char *msg = NULL;
	if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK) {
		snprintf(err, errlen, "%s", msg ? msg : sqlite3_errmsg(db));
		sqlite3_free(msg);
		return -1;
	}
	return 0;
}

int store_migrate(sqlite3 *db, char *err, size_t errlen)
{
	const int latest = (int)SR_ARRAY_LEN(migrations);
	/* IMMEDIATE: two processes starting at once must not both migrate. */
	if (exec_sql(db, "BEGIN IMMEDIATE", err, errlen) < 0)
		return -1;
	if (exec_sql(db, "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)",
		     err, errlen) < 0)
		goto fail;
	int v = store_schema_version(db);
	if (v > latest) {
		snprintf(err, errlen,
			 "the queue database has schema version %d, newer than this strictrelay "
			 "knows (%d): refusing to touch it",
			 v, latest);
		goto fail;
	}
	for (; v < latest; v++) {
		if (exec_sql(db, migrations[v], err, errlen) < 0)
			goto fail;
	}
	char sql[128];
	snprintf(sql, sizeof(sql), "DELETE FROM schema_version; INSERT INTO schema_version VALUES (%d)",
		 latest);
	if (exec_sql(db, sql, err, errlen) < 0)
		goto fail;
	return exec_sql(db, "COMMIT", err, errlen);
fail:
	sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
	return -1;
}

static int mkdir_p(const char *dir, char *err, size_t errlen)
{
	char path[4096];
	snprintf(path, sizeof(path), "%s", dir);
	for (char *p = path + 1; *p != '\0'; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(path, 0755) < 0 && errno != EEXIST) {
			snprintf(err, errlen, "state_dir: cannot create %s: %s", path, strerror(errno));
			return -1;
		}
		*p = '/';
	}
	if (mkdir(path, 0700) < 0 && errno != EEXIST) {
		snprintf(err, errlen, "state_dir: cannot create %s: %s", path, strerror(errno));
		return -1;
	}
	return 0;
}

int store_db_open(sqlite3 **dbp, const char *state_dir, char *err, size_t errlen)
{
	*dbp = NULL;
	if (mkdir_p(state_dir, err, errlen) < 0)
		return -1;
	char path[4096];
	snprintf(path, sizeof(path), "%s/%s", state_dir, STORE_DB_NAME);
	sqlite3 *db;
	int rc = sqlite3_open_v2(path, &db,
				 SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
				 NULL);
	if (rc != SQLITE_OK) {
		snprintf(err, errlen, "%s: %s", path, db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
		sqlite3_close(db);
		return -1;
	}
	sqlite3_busy_timeout(db, 10000);
	char e[256];
	/* synchronous=FULL: a COMMIT returns only once the WAL is on disk. */
	if (exec_sql(db,
		     "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;",
		     e, sizeof(e)) < 0 ||
	    store_migrate(db, e, sizeof(e)) < 0) {
		snprintf(err, errlen, "%s: %s", path, e);
		sqlite3_close(db);
		return -1;
	}
	*dbp = db;
	return 0;
}

/* --- statement cache ----------------------------------------------------- */

struct store_tx {
	sqlite3 *db;
	struct {
		const char *sql;
		sqlite3_stmt *stmt;
	} cache[STMT_CACHE];
	size_t n;
};

struct store_tx *store_tx_new(sqlite3 *db)
{
	struct store_tx *tx = xcalloc(1, sizeof(*tx));
	tx->db = db;
	return tx;
}

void store_tx_free(struct store_tx *tx)
{
	if (tx == NULL)
		return;
	for (size_t i = 0; i < tx->n; i++)
		sqlite3_finalize(tx->cache[i].stmt);
	free(tx);
}

sqlite3 *store_tx_db(struct store_tx *tx)
{
	return tx->db;
}

sqlite3_stmt *store_tx_stmt(struct store_tx *tx, const char *sql)
{
	for (size_t i = 0; i < tx->n; i++) {
		if (tx->cache[i].sql == sql) {
			sqlite3_reset(tx->cache[i].stmt);
			sqlite3_clear_bindings(tx->cache[i].stmt);
			return tx->cache[i].stmt;
		}
	}
	sqlite3_stmt *st;
	if (sqlite3_prepare_v3(tx->db, sql, -1, SQLITE_PREPARE_PERSISTENT, &st, NULL) != SQLITE_OK) {
		log_error("store", "cannot prepare statement: %s", sqlite3_errmsg(tx->db));
		return NULL;
	}
	if (tx->n < STMT_CACHE) {
		tx->cache[tx->n].sql = sql;
		tx->cache[tx->n].stmt = st;
		tx->n++;
	} else {
		panic("store: statement cache full (raise STMT_CACHE)");
	}
	return st;
}

/* --- the writer ---------------------------------------------------------- */

struct store_op {
	struct store_op *next;
	store_exec_fn exec;
	void *data;
	store_done_fn done;
	void *arg;
	int status;
	char error[200];
};

struct op_list {
	struct store_op *head;
	struct store_op *tail;
	size_t n;
};

struct store {
	uv_loop_t *loop;
	uv_async_t async;     /* writer -> loop: completions are ready */
	pthread_t thread;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct op_list pending;  /* loop -> writer */
	struct op_list completed; /* writer -> loop */
	bool stopping;
	bool thread_started;
	sqlite3 *db;             /* the writer's connection */
	struct store_tx *tx;
	struct store_stats stats;
};

static void list_push(struct op_list *l, struct store_op *op)
{
	op->next = NULL;
	if (l->tail != NULL)
		l->tail->next = op;
	else
		l->head = op;
	l->tail = op;
	l->n++;
}

static void list_splice(struct op_list *dst, struct op_list *src)
{
	if (src->head == NULL)
		return;
	if (dst->tail != NULL)
		dst->tail->next = src->head;
	else
		dst->head = src->head;
	dst->tail = src->tail;
	dst->n += src->n;
	memset(src, 0, sizeof(*src));
}

/* Takes up to MAX_BATCH operations off the pending list (lock held). */
static struct op_list take_batch(struct store *st)
{
	struct op_list batch = { 0 };
	while (st->pending.head != NULL && batch.n < MAX_BATCH) {
		struct store_op *op = st->pending.head;
		st->pending.head = op->next;
		if (st->pending.head == NULL)
			st->pending.tail = NULL;
		st->pending.n--;
		list_push(&batch, op);
	}
	return batch;
}

/* STORE_FULL if the last failure on db was a full disk (or database), else -1. */
static int failure_status(sqlite3 *db)
{
	return (sqlite3_extended_errcode(db) & 0xff) == SQLITE_FULL ? STORE_FULL : -1;
}

static void fail_batch(struct op_list *batch, int status, const char *why)
{
	for (struct store_op *op = batch->head; op != NULL; op = op->next) {
		op->status = status;
		snprintf(op->error, sizeof(op->error), "%s", why);
	}
}

static void run_batch(struct store *st, struct op_list *batch)
{
	char err[256];
	if (exec_sql(st->db, "BEGIN IMMEDIATE", err, sizeof(err)) < 0) {
		log_error("store", "BEGIN failed: %s", err);
		fail_batch(batch, failure_status(st->db), err);
		return;
	}
	for (struct store_op *op = batch->head; op != NULL; op = op->next) {
		exec_sql(st->db, "SAVEPOINT op", err, sizeof(err));
		op->error[0] = '\0';
		op->status = op->exec(st->tx, op->data, op->error, sizeof(op->error)) < 0
				     ? failure_status(st->db)
				     : 0;
		if (op->status < 0)
			exec_sql(st->db, "ROLLBACK TO op", err, sizeof(err));
		exec_sql(st->db, "RELEASE op", err, sizeof(err));
	}
	if (exec_sql(st->db, "COMMIT", err, sizeof(err)) < 0) {
		int status = failure_status(st->db);
		log_error("store", "COMMIT of %zu operations failed: %s", batch->n, err);
		sqlite3_exec(st->db, "ROLLBACK", NULL, NULL, NULL);
		fail_batch(batch, status, err);
		return;
	}
	st->stats.commits++;
	st->stats.ops += batch->n;
	if (batch->n > st->stats.max_batch)
		st->stats.max_batch = batch->n;
}

static void *writer_main(void *arg)
{
	struct store *st = arg;
	pthread_mutex_lock(&st->lock);
	for (;;) {
		while (st->pending.head == NULL && !st->stopping)
			pthread_cond_wait(&st->cond, &st->lock);
		if (st->pending.head == NULL && st->stopping)
			break;
		struct op_list batch = take_batch(st);
		pthread_mutex_unlock(&st->lock);
		run_batch(st, &batch);
		pthread_mutex_lock(&st->lock);
		list_splice(&st->completed, &batch);
		uv_async_send(&st->async);
	}
	pthread_mutex_unlock(&st->lock);
	return NULL;
}

static void run_completions(struct store *st)
{
	pthread_mutex_lock(&st->lock);
	struct op_list done = st->completed;
	memset(&st->completed, 0, sizeof(st->completed));
	pthread_mutex_unlock(&st->lock);
	struct store_op *op = done.head;
	while (op != NULL) {
		struct store_op *next = op->next;
		if (op->done != NULL)
			op->done(op->arg, op->status, op->status < 0 ? op->error : NULL);
		free(op);
		op = next;
	}
}

static void on_async(uv_async_t *h)
{
	run_completions(h->data);
}

int store_open(struct store **out, uv_loop_t *loop, const char *state_dir, char *err,
	       size_t errlen)
{
	*out = NULL;
	struct store *st = xcalloc(1, sizeof(*st));
	st->loop = loop;
	if (store_db_open(&st->db, state_dir, err, errlen) < 0) {
		free(st);
		return -1;
	}
	st->tx = store_tx_new(st->db);
	pthread_mutex_init(&st->lock, NULL);
	pthread_cond_init(&st->cond, NULL);
	uv_async_init(loop, &st->async, on_async);
	st->async.data = st;
#if defined(__GLIBC__)
	/* Each operation runs in a SAVEPOINT whose RELEASE frees SQLite's 64 KiB
	 * in-memory statement journal. With glibc's default (dynamic) trim
	 * threshold the writer thread's arena was then trimmed about once per
	 * operation: an madvise() plus a TLB shootdown on every CPU running the
	 * process, 15% of the relay's CPU when relaying (tests/bench). */
	mallopt(M_TRIM_THRESHOLD, 4 << 20);
#endif
	int rc = pthread_create(&st->thread, NULL, writer_main, st);
	if (rc != 0) {
		snprintf(err, errlen, "cannot start the store writer thread: %s", strerror(rc));
		/* The async handle must be closed through the loop. */
		uv_close((uv_handle_t *)&st->async, NULL);
		store_tx_free(st->tx);
		sqlite3_close(st->db);
		/* st leaks deliberately: its handle is closing; start-up fails anyway */
		return -1;
	}
	st->thread_started = true;
	*out = st;
	return 0;
}

static void on_store_closed(uv_handle_t *h)
{
	struct store *st = h->data;
	pthread_mutex_destroy(&st->lock);
	pthread_cond_destroy(&st->cond);
	free(st);
}

void store_close(struct store *st)
{
	if (st == NULL)
		return;
	pthread_mutex_lock(&st->lock);
	st->stopping = true;
	pthread_cond_signal(&st->cond);
	pthread_mutex_unlock(&st->lock);
	if (st->thread_started)
		pthread_join(st->thread, NULL);
	run_completions(st);
	store_tx_free(st->tx);
	st->tx = NULL;
	/* Leave the WAL checkpointed so the database file alone is current. */
	sqlite3_wal_checkpoint_v2(st->db, NULL, SQLITE_CHECKPOINT_TRUNCATE, NULL, NULL);
	sqlite3_close(st->db);
	st->db = NULL;
	uv_close((uv_handle_t *)&st->async, on_store_closed);
}

void store_submit(struct store *st, store_exec_fn exec, void *data, store_done_fn done, void *arg)
{
	struct store_op *op = xcalloc(1, sizeof(*op));
	op->exec = exec;
	op->data = data;
	op->done = done;
	op->arg = arg;
	pthread_mutex_lock(&st->lock);
	if (st->stopping) {
		pthread_mutex_unlock(&st->lock);
		panic("store: operation submitted after store_close");
	}
	list_push(&st->pending, op);
	pthread_cond_signal(&st->cond);
	pthread_mutex_unlock(&st->lock);
}

void store_get_stats(struct store *st, struct store_stats *out)
{
	*out = st->stats; /* read without the lock: counters for humans */
}

/* --- enqueue ------------------------------------------------------------- */

static const char sql_insert_message[] =
	"INSERT INTO messages (id, sender, size, flags, arrival, client_addr, client_helo,"
	" client_tls, auth_user, ret, envid) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";
static const char sql_insert_body[] = "INSERT INTO bodies (message_id, data) VALUES (?, ?)";
static const char sql_insert_rcpt[] =
	"INSERT INTO recipients (message_id, address, domain, next_attempt, notify, orcpt)"
	" VALUES (?, ?, ?, ?, ?, ?)";
static const char sql_insert_event[] =
	"INSERT INTO events (message_id, time, kind, recipient, detail) VALUES (?, ?, ?, ?, ?)";

int store_tx_step_done(struct store_tx *tx, sqlite3_stmt *st, char *err, size_t errlen)
{
	if (st == NULL) {
		snprintf(err, errlen, "prepare failed: %s", sqlite3_errmsg(tx->db));
		return -1;
	}
	int rc = sqlite3_step(st);
	if (rc != SQLITE_DONE) {
		snprintf(err, errlen, "%s", sqlite3_errmsg(tx->db));
		sqlite3_reset(st);
		return -1;
	}
	sqlite3_reset(st);
	return 0;
}

int store_exec_enqueue(struct store_tx *tx, const struct queued_message *m, char *err,
		       size_t errlen)
{
	sqlite3_stmt *st = store_tx_stmt(tx, sql_insert_message);
	if (st != NULL) {
		sqlite3_bind_text(st, 1, m->id, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 2, m->sender, -1, SQLITE_STATIC);
		sqlite3_bind_int64(st, 3, (sqlite3_int64)m->body_len);
		sqlite3_bind_int64(st, 4, m->flags);
		sqlite3_bind_int64(st, 5, m->arrival);
		sqlite3_bind_text(st, 6, m->client_addr ? m->client_addr : "", -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 7, m->client_helo ? m->client_helo : "", -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 8, m->client_tls ? m->client_tls : "", -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 9, m->auth_user ? m->auth_user : "", -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 10, m->ret ? m->ret : "", -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 11, m->envid ? m->envid : "", -1, SQLITE_STATIC);
	}
	if (store_tx_step_done(tx, st, err, errlen) < 0)
		return -1;

	st = store_tx_stmt(tx, sql_insert_body);
	if (st != NULL) {
		sqlite3_bind_text(st, 1, m->id, -1, SQLITE_STATIC);
		sqlite3_bind_blob64(st, 2, m->body, m->body_len, SQLITE_STATIC);
	}
	if (store_tx_step_done(tx, st, err, errlen) < 0)
		return -1;

	for (size_t i = 0; i < m->rcpts.n; i++) {
		const char *addr = m->rcpts.v[i];
		const char *at = strrchr(addr, '@');
		char *domain = xstrdup(at ? at + 1 : "");
		str_lower(domain);
		st = store_tx_stmt(tx, sql_insert_rcpt);
		if (st != NULL) {
			sqlite3_bind_text(st, 1, m->id, -1, SQLITE_STATIC);
			sqlite3_bind_text(st, 2, addr, -1, SQLITE_STATIC);
			sqlite3_bind_text(st, 3, domain, -1, SQLITE_STATIC);
			sqlite3_bind_int64(st, 4, m->arrival);
			sqlite3_bind_text(st, 5, i < m->notify.n ? m->notify.v[i] : "", -1, SQLITE_STATIC);
			sqlite3_bind_text(st, 6, i < m->orcpt.n ? m->orcpt.v[i] : "", -1, SQLITE_STATIC);
		}
		int rc = store_tx_step_done(tx, st, err, errlen);
		free(domain);
		if (rc < 0)
			return -1;
	}

	char detail[600];
	snprintf(detail, sizeof(detail), "from=<%s> nrcpt=%zu size=%zu client=%s tls=%s", m->sender,
		 m->rcpts.n, m->body_len, m->client_addr ? m->client_addr : "",
		 (m->client_tls && *m->client_tls) ? m->client_tls : "none");
	st = store_tx_stmt(tx, sql_insert_event);
	if (st != NULL) {
		sqlite3_bind_text(st, 1, m->id, -1, SQLITE_STATIC);
		sqlite3_bind_int64(st, 2, m->arrival);
		sqlite3_bind_text(st, 3, "received", -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 4, "", -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 5, detail, -1, SQLITE_TRANSIENT);
	}
	return store_tx_step_done(tx, st, err, errlen);
}

struct enqueue_req {
	struct queued_message *m;
	store_done_fn done;
	void *arg;
};

static int enqueue_exec(struct store_tx *tx, void *data, char *err, size_t errlen)
{
	struct enqueue_req *req = data;
	return store_exec_enqueue(tx, req->m, err, errlen);
}

static void enqueue_done(void *arg, int status, const char *error)
{
	struct enqueue_req *req = arg;
	if (req->done != NULL)
		req->done(req->arg, status, error);
	queued_message_free(req->m);
	free(req->m);
	free(req);
}

void store_enqueue(struct store *st, struct queued_message *m, store_done_fn done, void *arg)
{
	struct enqueue_req *req = xcalloc(1, sizeof(*req));
	req->m = m;
	req->done = done;
	req->arg = arg;
	store_submit(st, enqueue_exec, req, enqueue_done, req);
}
