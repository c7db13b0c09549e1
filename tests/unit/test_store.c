/* Unit tests for queue/store.c: migrations, enqueue, group commit, reopen. */
#include <stdlib.h>
#include <unistd.h>

#include "queue/store.h"
#include "test.h"

static char dir[] = "/tmp/strictrelay-test-store-XXXXXX";
static int done_ok, done_failed;

static void on_done(void *arg, int status, const char *error)
{
	(void)arg;
	if (status == 0)
		done_ok++;
	else {
		done_failed++;
		fprintf(stderr, "  (expected?) store error: %s\n", error ? error : "?");
	}
}

static struct queued_message *make_message(const char *id, int nrcpt)
{
	struct queued_message *m = xcalloc(1, sizeof(*m));
	snprintf(m->id, sizeof(m->id), "%s", id);
	m->sender = xstrdup("alice@example.org");
	for (int i = 0; i < nrcpt; i++) {
		char r[64];
		snprintf(r, sizeof(r), "r%d@Example.NET", i);
		strlist_add(&m->rcpts, r);
	}
	m->flags = MSG_REQUIRETLS;
	m->body = xstrdup("Subject: x\r\n\r\nbody\r\n");
	m->body_len = strlen(m->body);
	m->arrival = 1700000000;
	m->client_addr = xstrdup("127.0.0.1");
	m->client_helo = xstrdup("client");
	m->client_tls = xstrdup("TLSv1.3 X");
	m->auth_user = xstrdup("");
	return m;
}

static long long count(sqlite3 *db, const char *sql)
{
	sqlite3_stmt *st;
	long long n = -1;
	if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
		n = sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	return n;
}

static void test_enqueue_group_commit(void)
{
	uv_loop_t loop;
	uv_loop_init(&loop);
	struct store *st;
	char err[256];
	REQUIRE(store_open(&st, &loop, dir, err, sizeof(err)) == 0);
	/* Submitted before the loop runs, so the writer sees many at once. */
	for (int i = 0; i < 200; i++) {
		char id[QID_LEN + 1];
		qid_generate(id);
		store_enqueue(st, make_message(id, 2), on_done, NULL);
	}
	/* A duplicate id fails alone, without taking its batch down. */
	store_enqueue(st, make_message("000000000001", 1), on_done, NULL);
	store_enqueue(st, make_message("000000000001", 1), on_done, NULL);
	while (done_ok + done_failed < 202)
		uv_run(&loop, UV_RUN_ONCE);
	CHECK_INT(done_ok, 201);
	CHECK_INT(done_failed, 1);
	struct store_stats stats;
	store_get_stats(st, &stats);
	CHECK(stats.commits < 202);   /* batched */
	CHECK(stats.max_batch > 1);
	CHECK_INT(stats.ops, 202);
	store_close(st);
	uv_run(&loop, UV_RUN_DEFAULT);
	CHECK_INT(uv_loop_close(&loop), 0);
}

static void test_reopen_and_content(void)
{
	sqlite3 *db;
	char err[256];
	REQUIRE(store_db_open(&db, dir, err, sizeof(err)) == 0);
	CHECK_INT(count(db, "SELECT count(*) FROM messages"), 201);
	CHECK_INT(count(db, "SELECT count(*) FROM recipients"), 401);
	CHECK_INT(count(db, "SELECT count(*) FROM bodies"), 201);
	CHECK_INT(count(db, "SELECT count(*) FROM recipients WHERE domain = 'example.net'"), 401);
	CHECK_INT(count(db, "SELECT count(*) FROM messages WHERE flags = 1"), 201);
	CHECK_INT(count(db, "SELECT count(*) FROM events WHERE kind = 'received'"), 201);
	CHECK_INT(store_schema_version(db), 5);
	/* A database from a newer strictrelay is refused, not touched. */
	sqlite3_exec(db, "UPDATE schema_version SET version = 99", NULL, NULL, NULL);
	sqlite3_close(db);
	CHECK(store_db_open(&db, dir, err, sizeof(err)) < 0);
	CHECK(strstr(err, "newer") != NULL);
}

static void test_qid_unique_and_sorted(void)
{
	char prev[QID_LEN + 1], id[QID_LEN + 1];
	qid_generate(prev);
	CHECK(qid_valid(prev));
	for (int i = 0; i < 100000; i++) {
		qid_generate(id);
		if (strcmp(id, prev) <= 0) {
			CHECK(!"queue ids must be strictly increasing");
			break;
		}
		memcpy(prev, id, sizeof(id));
	}
	CHECK(!qid_valid("0123456789A"));
	CHECK(!qid_valid("0123456789AI"));
	CHECK(!qid_valid("0123456789abc"));
}

int main(void)
{
	if (mkdtemp(dir) == NULL) {
		perror("mkdtemp");
		return 1;
	}
	RUN(test_qid_unique_and_sorted);
	RUN(test_enqueue_group_commit);
	RUN(test_reopen_and_content);
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	if (system(cmd) != 0)
		fprintf(stderr, "cannot remove %s\n", dir);
	TEST_EXIT();
}
