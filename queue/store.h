/*
 * store.h - the durable queue in SQLite: schema and migrations, and one
 * writer thread that batches concurrent writes into one transaction (group
 * commit), so durability costs one fsync per batch rather than per message.
 *
 * Durability: WAL with synchronous=FULL; a write's callback runs (on the
 * loop thread) only after the COMMIT that holds it returned, i.e. after the
 * WAL was fsync'd. The SMTP server replies 250 from that callback.
 *
 * Every write is an operation: an exec function that runs ON THE WRITER
 * THREAD inside the batch transaction (each in its own SAVEPOINT, so one
 * failing operation does not take the others down), and a done callback that
 * runs on the LOOP THREAD afterwards. Exec functions must only touch their
 * own data and the database. Operations commit in submission order.
 *
 * Readers (CLI commands, the scheduler) use their own connections
 * (store_db_open); WAL lets them read while the writer writes.
 *
 * Lifetime: store_open() starts the writer; store_close() lets it finish
 * every submitted operation, runs their callbacks, joins it and closes the
 * async handle (the loop must run once more to complete that close).
 */
#ifndef STRICTRELAY_QUEUE_STORE_H
#define STRICTRELAY_QUEUE_STORE_H

#include <stdbool.h>
#include <stddef.h>

#include <sqlite3.h>
#include <uv.h>

#include "queue/message.h"

#define STORE_DB_NAME "queue.db"

struct store;

/* Prepared statements cached per connection (keyed by the SQL's address, so
 * pass string literals). */
struct store_tx;
sqlite3_stmt *store_tx_stmt(struct store_tx *tx, const char *sql);
sqlite3 *store_tx_db(struct store_tx *tx);
/* Runs a write statement (st from store_tx_stmt; NULL means its prepare
 * failed) once and resets it: 0 on SQLITE_DONE, else -1 with SQLite's message. */
int store_tx_step_done(struct store_tx *tx, sqlite3_stmt *st, char *err, size_t errlen);

typedef int (*store_exec_fn)(struct store_tx *tx, void *data, char *err, size_t errlen);
/* status: 0 committed, -1 failed (error says why), STORE_FULL failed because
 * the disk (or the database) is full: a condition that passes once space
 * returns (the SMTP server answers 452 4.3.1). */
#define STORE_FULL (-2)
typedef void (*store_done_fn)(void *arg, int status, const char *error);

int store_open(struct store **out, uv_loop_t *loop, const char *state_dir, char *err,
	       size_t errlen);
void store_close(struct store *st);

/* Queues an operation for the writer. data belongs to the caller until done runs. */
void store_submit(struct store *st, store_exec_fn exec, void *data, store_done_fn done,
		  void *arg);

/* Persists a new message (takes ownership of m; freed after done runs). */
void store_enqueue(struct store *st, struct queued_message *m, store_done_fn done, void *arg);

/* The exec step of store_enqueue, for callers that batch it with more work. */
int store_exec_enqueue(struct store_tx *tx, const struct queued_message *m, char *err,
		       size_t errlen);

/* Counters for logs and benchmarks. */
struct store_stats {
	unsigned long long commits;
	unsigned long long ops;
	unsigned long long max_batch;
};
void store_get_stats(struct store *st, struct store_stats *out);

/*
 * Opens (creating and migrating if needed) the database in state_dir with the
 * connection settings every user shares (WAL, synchronous=FULL, foreign keys,
 * busy timeout). For CLI commands and the scheduler's reads.
 */
int store_db_open(sqlite3 **db, const char *state_dir, char *err, size_t errlen);

/* Brings the schema up to the current version; 0 / -1 + err. */
int store_migrate(sqlite3 *db, char *err, size_t errlen);
int store_schema_version(sqlite3 *db);

/* A statement cache for a connection used by one thread (readers). */
struct store_tx *store_tx_new(sqlite3 *db);
void store_tx_free(struct store_tx *tx);

#endif
