/* qcli.c - see qcli.h */
#include "qcli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mta/cli.h"
#include "mta/log.h"
#include "queue/message.h"
#include "queue/store.h"

static const char *col_text(sqlite3_stmt *st, int i)
{
	const unsigned char *t = sqlite3_column_text(st, i);
	return t ? (const char *)t : "";
}

static void fmt_size(char *dst, size_t dstlen, long long n)
{
	if (n < 1024)
		snprintf(dst, dstlen, "%lld", n);
	else if (n < 1024 * 1024)
		snprintf(dst, dstlen, "%.1fK", (double)n / 1024);
	else
		snprintf(dst, dstlen, "%.1fM", (double)n / (1024 * 1024));
}

/* Where mail for domain goes: a route, an address literal, or its MX hosts. */
static void next_hop_text(const struct config *cfg, const char *domain, char *dst, size_t dstlen)
{
	const struct route *r = domain[0] == '[' ? NULL : config_find_route(cfg, domain);
	if (domain[0] == '[') {
		snprintf(dst, dstlen, "address %s", domain);
	} else if (r != NULL) {
		char hp[300];
		hostport_format(&r->next_hop, hp, sizeof(hp));
		snprintf(dst, dstlen, "route %s -> %s%s tls=%s", r->domain,
			 r->next_hop.bracketed ? "" : "MX of ", hp, tls_level_name(r->tls));
	} else {
		snprintf(dst, dstlen, "MX of %s", domain);
	}
}

/* Prints the recipients of one message, one indented line each. */
static int print_recipients(const struct config *cfg, sqlite3 *db, const char *id, int64_t now,
			    const char *indent)
{
	sqlite3_stmt *st;
	if (sqlite3_prepare_v2(db,
			       "SELECT address, state, attempts, next_attempt, last_reply, route, domain"
			       " FROM recipients WHERE message_id = ? ORDER BY id",
			       -1, &st, NULL) != SQLITE_OK)
		return -1;
	sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
	while (sqlite3_step(st) == SQLITE_ROW) {
		const char *state = col_text(st, 1);
		char next[32] = "";
		int64_t due = sqlite3_column_int64(st, 3);
		if (strcmp(state, "queued") == 0) {
			char d[24];
			fmt_duration(d, sizeof(d), due - now);
			snprintf(next, sizeof(next), due <= now ? " due now" : " next in %s", d);
		}
		const char *reply = col_text(st, 4);
		const char *route = col_text(st, 5);
		char hop[400];
		if (*route == '\0' && strcmp(state, "queued") == 0) {
			/* not tried yet: say where it will go */
			next_hop_text(cfg, col_text(st, 6), hop, sizeof(hop));
			route = hop;
		}
		printf("%s%-8s %s  attempts=%d%s%s%s%s%s\n", indent, state, col_text(st, 0),
		       sqlite3_column_int(st, 2), next, *route ? " via " : "", route,
		       *reply ? "  last: " : "", reply);
	}
	sqlite3_finalize(st);
	return 0;
}

static int queue_list(const struct config *cfg, sqlite3 *db)
{
	sqlite3_stmt *st;
	int rc = sqlite3_prepare_v2(
		db,
		"SELECT m.id, m.arrival, m.size, m.flags, m.sender, m.held,"
		" (SELECT count(*) FROM recipients r WHERE r.message_id = m.id),"
		" (SELECT count(*) FROM recipients r WHERE r.message_id = m.id AND r.state = 'queued')"
		" FROM messages m ORDER BY m.arrival, m.id",
		-1, &st, NULL);
	if (rc != SQLITE_OK) {
		fprintf(stderr, "strictrelay: queue list: %s\n", sqlite3_errmsg(db));
		return EXIT_RUNTIME;
	}
	int64_t now = now_unix();
	unsigned messages = 0;
	while (sqlite3_step(st) == SQLITE_ROW) {
		if (messages == 0)
			printf("%-12s  %-6s %-7s %-5s %-16s %s\n", "ID", "AGE", "SIZE", "RCPTS",
			       "STATE", "SENDER / FLAGS");
		messages++;
		const char *id = col_text(st, 0);
		char age[24], size[24], flags[160];
		fmt_duration(age, sizeof(age), now - sqlite3_column_int64(st, 1));
		fmt_size(size, sizeof(size), sqlite3_column_int64(st, 2));
		msg_flags_format((uint32_t)sqlite3_column_int64(st, 3), flags, sizeof(flags));
		const char *sender = col_text(st, 4);
		int total = sqlite3_column_int(st, 6), pending = sqlite3_column_int(st, 7);
		char state[32];
		if (sqlite3_column_int(st, 5))
			snprintf(state, sizeof(state), "held");
		else
			snprintf(state, sizeof(state), pending ? "queued" : "done");
		printf("%-12s  %-6s %-7s %-5d %-16s <%s>%s%s\n", id, age, size, total, state, sender,
		       strcmp(flags, "-") ? " " : "", strcmp(flags, "-") ? flags : "");
		print_recipients(cfg, db, id, now, "      ");
	}
	sqlite3_finalize(st);
	if (messages == 0)
		printf("Queue is empty.\n");
	else
		printf("-- %u message%s\n", messages, messages == 1 ? "" : "s");
	return EXIT_OK;
}

static void print_headers(const char *body, size_t len, bool whole)
{
	if (whole) {
		fwrite(body, 1, len, stdout);
		return;
	}
	/* Up to the first empty line, with CR LF shown as LF. */
	size_t i = 0;
	while (i < len) {
		const char *eol = memchr(body + i, '\n', len - i);
		size_t n = eol ? (size_t)(eol - (body + i)) : len - i;
		size_t shown = (n > 0 && body[i + n - 1] == '\r') ? n - 1 : n;
		if (shown == 0)
			break;
		printf("  %.*s\n", (int)shown, body + i);
		i += n + 1;
	}
}

/* Prints "history:" and the message's events; returns how many there were. */
static int print_history(sqlite3 *db, const char *id)
{
	sqlite3_stmt *ev;
	int n = 0;
	if (sqlite3_prepare_v2(db,
			       "SELECT time, kind, recipient, detail FROM events WHERE message_id = ?"
			       " ORDER BY id",
			       -1, &ev, NULL) != SQLITE_OK)
		return 0;
	sqlite3_bind_text(ev, 1, id, -1, SQLITE_STATIC);
	while (sqlite3_step(ev) == SQLITE_ROW) {
		if (n++ == 0)
			printf("history:\n");
		char t[40];
		fmt_time_iso(t, sizeof(t), sqlite3_column_int64(ev, 0));
		const char *rcpt = col_text(ev, 2);
		printf("  %s %s%s%s %s\n", t, col_text(ev, 1), *rcpt ? " " : "", rcpt,
		       col_text(ev, 3));
	}
	sqlite3_finalize(ev);
	return n;
}

static int queue_show(const struct config *cfg, sqlite3 *db, const char *id, bool whole)
{
	if (!qid_valid(id)) {
		fprintf(stderr, "strictrelay: queue show: \"%s\" is not a queue id (12 characters, e.g. from `queue list`)\n",
			id);
		return EXIT_USAGE;
	}
	sqlite3_stmt *st;
	if (sqlite3_prepare_v2(db,
			       "SELECT m.arrival, m.size, m.flags, m.sender, m.client_addr,"
			       " m.client_helo, m.client_tls, m.auth_user, m.held, b.data"
			       " FROM messages m LEFT JOIN bodies b ON b.message_id = m.id"
			       " WHERE m.id = ?",
			       -1, &st, NULL) != SQLITE_OK) {
		fprintf(stderr, "strictrelay: queue show: %s\n", sqlite3_errmsg(db));
		return EXIT_RUNTIME;
	}
	sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
	if (sqlite3_step(st) != SQLITE_ROW) {
		sqlite3_finalize(st);
		/* Delivered or bounced messages leave the queue; their history stays. */
		sqlite3_stmt *cnt;
		int nev = 0;
		if (sqlite3_prepare_v2(db, "SELECT count(*) FROM events WHERE message_id = ?", -1,
				       &cnt, NULL) == SQLITE_OK) {
			sqlite3_bind_text(cnt, 1, id, -1, SQLITE_STATIC);
			if (sqlite3_step(cnt) == SQLITE_ROW)
				nev = sqlite3_column_int(cnt, 0);
			sqlite3_finalize(cnt);
		}
		if (nev > 0) {
			printf("id:          %s\n", id);
			printf("state:       no longer queued\n");
			print_history(db, id);
			return EXIT_OK;
		}
		fprintf(stderr, "strictrelay: queue show: no message %s in the queue\n", id);
		return EXIT_RUNTIME;
	}
	int64_t now = now_unix();
	int64_t arrival = sqlite3_column_int64(st, 0);
	char when[40], age[24], flags[160];
	fmt_time_iso(when, sizeof(when), arrival);
	fmt_duration(age, sizeof(age), now - arrival);
	msg_flags_format((uint32_t)sqlite3_column_int64(st, 2), flags, sizeof(flags));
	const char *tls = col_text(st, 6);
	const char *user = col_text(st, 7);
	printf("id:          %s\n", id);
	printf("arrival:     %s (%s ago)\n", when, age);
	printf("size:        %lld\n", (long long)sqlite3_column_int64(st, 1));
	printf("sender:      <%s>\n", col_text(st, 3));
	printf("flags:       %s\n", flags);
	printf("client:      %s helo=%s tls=%s%s%s\n", col_text(st, 4), col_text(st, 5),
	       *tls ? tls : "none", *user ? " user=" : "", user);
	printf("state:       %s\n", sqlite3_column_int(st, 8) ? "held" : "active");
	printf("recipients:\n");
	print_recipients(cfg, db, id, now, "  ");

	print_history(db, id);
	const char *body = sqlite3_column_blob(st, 9);
	size_t blen = (size_t)sqlite3_column_bytes(st, 9);
	printf(whole ? "message:\n" : "headers:\n");
	if (body != NULL)
		print_headers(body, blen, whole);
	sqlite3_finalize(st);
	return EXIT_OK;
}

static bool message_exists(sqlite3 *db, const char *id)
{
	sqlite3_stmt *st;
	bool found = false;
	if (sqlite3_prepare_v2(db, "SELECT 1 FROM messages WHERE id = ?", -1, &st, NULL) != SQLITE_OK)
		return false;
	sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
	found = sqlite3_step(st) == SQLITE_ROW;
	sqlite3_finalize(st);
	return found;
}

/* Runs one UPDATE/DELETE for a message (or all, for flush without an id)
 * and reports how many rows it touched. */
static int queue_change(sqlite3 *db, const char *sub, const char *id)
{
	static const struct {
		const char *sub;
		const char *sql_one;
		const char *sql_all;
		const char *done;
	} ops[] = {
		{ "flush",
		  "UPDATE recipients SET next_attempt = 0 WHERE message_id = ?1 AND state = 'queued'",
		  "UPDATE recipients SET next_attempt = 0 WHERE state = 'queued'",
		  "due now (the relay picks it up within a second)" },
		{ "hold", "UPDATE messages SET held = 1 WHERE id = ?1", NULL,
		  "held: not delivered until released (deliveries already under way finish)" },
		{ "release", "UPDATE messages SET held = 0 WHERE id = ?1", NULL, "released" },
		{ "delete", "DELETE FROM messages WHERE id = ?1", NULL, "deleted (no bounce is sent)" },
	};
	for (size_t i = 0; i < SR_ARRAY_LEN(ops); i++) {
		if (strcmp(ops[i].sub, sub) != 0)
			continue;
		if (id != NULL && !qid_valid(id)) {
			fprintf(stderr, "strictrelay: queue %s: \"%s\" is not a queue id (12 characters, e.g. from `queue list`)\n",
				sub, id);
			return EXIT_USAGE;
		}
		if (id == NULL && ops[i].sql_all == NULL)
			return cli_usage_error("queue", "%s needs a queue id", sub);
		sqlite3_stmt *st;
		const char *sql = id ? ops[i].sql_one : ops[i].sql_all;
		if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) {
			fprintf(stderr, "strictrelay: queue %s: %s\n", sub, sqlite3_errmsg(db));
			return EXIT_RUNTIME;
		}
		if (id != NULL)
			sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
		int rc = sqlite3_step(st);
		sqlite3_finalize(st);
		if (rc != SQLITE_DONE) {
			fprintf(stderr, "strictrelay: queue %s: %s\n", sub, sqlite3_errmsg(db));
			return EXIT_RUNTIME;
		}
		int n = sqlite3_changes(db);
		/* flush changes no row for a message without queued recipients,
		 * so only a missing message is an error there. */
		if (id != NULL && n == 0 && (strcmp(sub, "flush") != 0 || !message_exists(db, id))) {
			fprintf(stderr, "strictrelay: queue %s: no message %s in the queue\n", sub, id);
			return EXIT_RUNTIME;
		}
		if (id != NULL) {
			char detail[64];
			snprintf(detail, sizeof(detail), "by the queue command");
			sqlite3_stmt *ev;
			if (sqlite3_prepare_v2(db, "INSERT INTO events (message_id, time, kind, detail) VALUES (?, ?, ?, ?)",
					       -1, &ev, NULL) == SQLITE_OK) {
				sqlite3_bind_text(ev, 1, id, -1, SQLITE_STATIC);
				sqlite3_bind_int64(ev, 2, now_unix());
				sqlite3_bind_text(ev, 3, sub, -1, SQLITE_STATIC);
				sqlite3_bind_text(ev, 4, detail, -1, SQLITE_STATIC);
				sqlite3_step(ev);
				sqlite3_finalize(ev);
			}
			printf("%s: %s\n", id, ops[i].done);
		} else {
			printf("%d recipient%s %s\n", n, n == 1 ? "" : "s", ops[i].done);
		}
		return EXIT_OK;
	}
	return cli_usage_error("queue", "unknown subcommand \"%s\"", sub);
}

int qcli_main(const struct config *cfg, int argc, char **argv)
{
	if (argc < 2)
		return cli_usage_error("queue", "missing subcommand (list, show, flush, hold, release or delete)");
	const char *sub = argv[1];
	sqlite3 *db;
	char err[512];
	int rc;
	if (strcmp(sub, "list") == 0) {
		if (argc > 2)
			return cli_usage_error("queue", "list takes no arguments");
		if (store_db_open(&db, cfg->queue.state_dir, err, sizeof(err)) < 0) {
			fprintf(stderr, "strictrelay: queue: %s\n", err);
			return EXIT_RUNTIME;
		}
		rc = queue_list(cfg, db);
	} else if (strcmp(sub, "show") == 0) {
		const char *id = NULL;
		bool whole = false;
		for (int i = 2; i < argc; i++) {
			if (strcmp(argv[i], "--body") == 0)
				whole = true;
			else if (id == NULL)
				id = argv[i];
			else
				return cli_usage_error("queue", "show takes one queue id");
		}
		if (id == NULL)
			return cli_usage_error("queue", "show needs a queue id");
		if (store_db_open(&db, cfg->queue.state_dir, err, sizeof(err)) < 0) {
			fprintf(stderr, "strictrelay: queue: %s\n", err);
			return EXIT_RUNTIME;
		}
		rc = queue_show(cfg, db, id, whole);
	} else {
		if (argc > 3)
			return cli_usage_error("queue", "%s takes at most one queue id", sub);
		if (strcmp(sub, "flush") != 0 && strcmp(sub, "hold") != 0 &&
		    strcmp(sub, "release") != 0 && strcmp(sub, "delete") != 0)
			return cli_usage_error("queue", "unknown subcommand \"%s\"", sub);
		if (store_db_open(&db, cfg->queue.state_dir, err, sizeof(err)) < 0) {
			fprintf(stderr, "strictrelay: queue: %s\n", err);
			return EXIT_RUNTIME;
		}
		rc = queue_change(db, sub, argc > 2 ? argv[2] : NULL);
	}
	sqlite3_close(db);
	return rc;
}
