/* sendmail.c - see sendmail.h */
#include "sendmail.h"

#include <errno.h>
#include <grp.h>
#include <stdarg.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sysexits.h>
#include <unistd.h>

#include "mta/util.h"
#include "policy/requiretls.h"
#include "queue/inject.h"
#include "queue/message.h"
#include "queue/store.h"
#include "smtp/parse.h"

#define MAX_RECEIVED_HEADERS 100 /* as on the SMTP path: a mail loop */

const char sendmail_help[] =
	"NAME\n"
	"    strictrelay sendmail - queue a message from a local program\n"
	"\n"
	"SYNOPSIS\n"
	"    strictrelay [-c FILE] sendmail [-t] [-i|-oi] [-f SENDER] [-F NAME] [-v]\n"
	"                [-N DSN] [-R full|hdrs] [-V ENVID] [-B 7BIT|8BITMIME]\n"
	"                [-bm] [-oX...] [--] [RECIPIENT...] < MESSAGE\n"
	"    sendmail ...   (the same, through a link named sendmail)\n"
	"\n"
	"DESCRIPTION\n"
	"    Reads one message (RFC 5322 headers and body) on standard input and\n"
	"    writes it into the queue ([queue] state_dir) in one transaction. It\n"
	"    works whether or not `strictrelay serve` runs: a running relay starts\n"
	"    delivering within a second, a stopped one when it starts. Compatible\n"
	"    with the sendmail/Postfix command line, so cron, PHP's mail(), mutt,\n"
	"    git send-email and the like can use it as /usr/sbin/sendmail:\n"
	"        ln -s \"$(command -v strictrelay)\" /usr/sbin/sendmail\n"
	"    (etc/install.sh --sendmail-link does this when no other MTA has it).\n"
	"\n"
	"    Lines may end in LF, CR LF or CR; they are queued with CR LF. Without\n"
	"    -i a line holding only \".\" ends the message. The message may be at\n"
	"    most [server] max_message_size octets, each line at most 998.\n"
	"    Added: a Received: header, and From:, Date: and Message-ID: when\n"
	"    missing (From: is the sender, with -F's name). Bcc: and Resent-Bcc:\n"
	"    headers are removed. Recipients are checked like RCPT TO addresses\n"
	"    and need a domain (this relay has no local mailboxes). [requiretls]\n"
	"    require_for from: and to: items make the message REQUIRETLS.\n"
	"    Nothing is written to the relay's log.\n"
	"\n"
	"OPTIONS\n"
	"    -t          also send to the addresses in To:, Cc: and Bcc: (or, when\n"
	"                the message has them, Resent-To:, Resent-Cc:, Resent-Bcc:)\n"
	"    -i, -oi     a line with a single \".\" does not end the message\n"
	"    -f SENDER, -r SENDER\n"
	"                the envelope sender (\"<>\" for none); default: the login\n"
	"                name of the user running the command @ [server] hostname\n"
	"    -F NAME     the full name in an added From: header\n"
	"    -c FILE, -C FILE\n"
	"                the configuration file (default " CONFIG_DEFAULT_PATH ")\n"
	"    -v          print the queue id\n"
	"    -N DSN      DSN NOTIFY for every recipient: never, or a list of\n"
	"                success, delay, failure\n"
	"    -R full|hdrs, -V ENVID\n"
	"                DSN RET and ENVID (RFC 3461)\n"
	"    -B 7BIT|8BITMIME\n"
	"                the body type declared onwards\n"
	"    -bm         deliver (the default); -bi does nothing (no aliases)\n"
	"    -h, --help  print this help\n"
	"    Accepted and ignored: -oX (other than -oi), -e X, -h N, -L X, -O X,\n"
	"    -p X, -X X, -G, -I, -m, -n, -U, -x. Not supported: -bs, -bd, -bp\n"
	"    (see `strictrelay queue list`), -bv, -bt, -q (`strictrelay queue flush`).\n"
	"\n"
	"FILES\n"
	"    STATE_DIR/queue.db\n"
	"        Only users who may write it (root and the owner of [queue]\n"
	"        state_dir, or its group when the directory is group-writable) can\n"
	"        queue mail. A queue created here by root belongs to [server] user.\n"
	"\n"
	"EXIT STATUS\n"
	"    0 queued; 64 usage error; 65 bad address, no recipients or a message\n"
	"    that cannot be queued (too big, line too long, NUL, mail loop); 74\n"
	"    standard input unreadable; 75 temporary failure (database busy; try\n"
	"    again); 77 the queue is not writable for this user; 78 the\n"
	"    configuration cannot be read. (<sysexits.h>, as sendmail.)\n"
	"\n"
	"EXAMPLES\n"
	"    printf 'Subject: hi\\n\\nhello\\n' | strictrelay sendmail bob@example.net\n"
	"    sendmail -t -i -f app@example.org < message.eml\n";

static int fail(int status, const char *fmt, ...) SR_PRINTF(2, 3);
static int fail(int status, const char *fmt, ...)
{
	va_list ap;
	fputs("strictrelay: sendmail: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	return status;
}

/* --- invocation -------------------------------------------------------------- */

/* Index of sendmail's first argument, or 0 when argv is not for sendmail;
 * *config: a -c given to strictrelay before the command word. */
static int sendmail_first_arg(int argc, char **argv, const char **config)
{
	*config = NULL;
	if (argc < 1 || argv[0] == NULL)
		return 0;
	const char *base = strrchr(argv[0], '/');
	base = base ? base + 1 : argv[0];
	if (strcmp(base, "sendmail") == 0)
		return 1;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if ((strcmp(a, "-c") == 0 || strcmp(a, "--config") == 0) && i + 1 < argc)
			*config = argv[++i];
		else if (strncmp(a, "--config=", 9) == 0)
			*config = a + 9;
		else if (strcmp(a, "-d") == 0 || strcmp(a, "--debug") == 0)
			continue;
		else
			return strcmp(a, "sendmail") == 0 ? i + 1 : 0;
	}
	return 0;
}

bool sendmail_invoked(int argc, char **argv)
{
	const char *config;
	return sendmail_first_arg(argc, argv, &config) > 0;
}

/* --- the queue database ------------------------------------------------------- */

/* "root and user strictrelay (the owner of DIR)" for a permission error. */
static void who_may_write(const char *dir, char *dst, size_t dstlen)
{
	struct stat st;
	if (stat(dir, &st) < 0) {
		snprintf(dst, dstlen, "root");
		return;
	}
	if (st.st_uid == 0 && !(st.st_mode & S_IWGRP)) {
		snprintf(dst, dstlen, "root (the owner of %s)", dir);
		return;
	}
	const struct passwd *pw = getpwuid(st.st_uid);
	char owner[128];
	if (pw != NULL)
		snprintf(owner, sizeof(owner), "user %s", pw->pw_name);
	else
		snprintf(owner, sizeof(owner), "uid %u", (unsigned)st.st_uid);
	char group[160] = "";
	if (st.st_mode & S_IWGRP) {
		const struct group *gr = getgrgid(st.st_gid);
		if (gr != NULL)
			snprintf(group, sizeof(group), " and members of group %s", gr->gr_name);
		else
			snprintf(group, sizeof(group), " and members of gid %u", (unsigned)st.st_gid);
	}
	snprintf(dst, dstlen, "root and %s (the owner of %s)%s", owner, dir, group);
}

static bool exists(const char *path)
{
	struct stat st;
	return stat(path, &st) == 0;
}

/* A queue that root creates belongs to the user the relay runs as. */
static void give_to_relay_user(const struct config *cfg, const char *dir, bool dir_new,
			       const char *db, bool db_new)
{
	if (geteuid() != 0 || cfg->server.user == NULL || cfg->server.user[0] == '\0' ||
	    (!dir_new && !db_new))
		return;
	const struct passwd *pw = getpwnam(cfg->server.user);
	if (pw == NULL) {
		fail(0, "warning: [server] user %s does not exist; %s stays root's",
		     cfg->server.user, dir);
		return;
	}
	if (dir_new && chown(dir, pw->pw_uid, pw->pw_gid) < 0)
		fail(0, "warning: cannot give %s to %s: %s", dir, cfg->server.user, strerror(errno));
	if (db_new && chown(db, pw->pw_uid, pw->pw_gid) < 0)
		fail(0, "warning: cannot give %s to %s: %s", db, cfg->server.user, strerror(errno));
}

static int enqueue(const struct config *cfg, const struct queued_message *m)
{
	const char *dir = cfg->queue.state_dir;
	char dbpath[4096];
	snprintf(dbpath, sizeof(dbpath), "%s/%s", dir, STORE_DB_NAME);
	bool dir_existed = exists(dir), db_existed = exists(dbpath);
	char who[512];
	/* Say who may write before SQLite says "unable to open database file". */
	if ((dir_existed && access(dir, W_OK | X_OK) < 0 && (errno == EACCES || errno == EPERM)) ||
	    (db_existed && access(dbpath, R_OK | W_OK) < 0 && (errno == EACCES || errno == EPERM))) {
		who_may_write(dir, who, sizeof(who));
		return fail(EX_NOPERM, "cannot write the queue %s: %s; only %s may queue mail",
			    dbpath, strerror(EACCES), who);
	}
	if (dir_existed && access(dir, W_OK) < 0 && errno == EROFS)
		return fail(EX_TEMPFAIL, "cannot write the queue %s: %s", dbpath, strerror(EROFS));

	char err[600];
	sqlite3 *db;
	if (store_db_open(&db, dir, err, sizeof(err)) < 0) {
		if (strstr(err, "Permission denied") != NULL || strstr(err, "readonly") != NULL) {
			who_may_write(dir_existed ? dir : ".", who, sizeof(who));
			return fail(EX_NOPERM, "cannot write the queue: %s; only %s may queue mail", err,
				    dir_existed ? who : "a user who may create [queue] state_dir");
		}
		return fail(EX_TEMPFAIL, "cannot open the queue: %s", err);
	}
	struct store_tx *tx = store_tx_new(db);
	int status = 0;
	char *msg = NULL;
	if (sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, &msg) != SQLITE_OK) {
		status = fail(EX_TEMPFAIL, "cannot write the queue %s: %s", dbpath,
			      msg ? msg : sqlite3_errmsg(db));
	} else if (store_exec_enqueue(tx, m, err, sizeof(err)) < 0) {
		status = fail(EX_TEMPFAIL, "cannot write the queue %s: %s", dbpath, err);
		sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
	} else if (sqlite3_exec(db, "COMMIT", NULL, NULL, &msg) != SQLITE_OK) {
		status = fail(EX_TEMPFAIL, "cannot write the queue %s: %s", dbpath,
			      msg ? msg : sqlite3_errmsg(db));
		sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
	}
	sqlite3_free(msg);
	store_tx_free(tx);
	sqlite3_close(db);
	give_to_relay_user(cfg, dir, !dir_existed, dbpath, !db_existed);
	return status;
}

/* --- the command -------------------------------------------------------------- */

/* Reads standard input into out through the reader. 0 / -1 (errno). */
static int read_message(struct inject_reader *r, struct buf *out)
{
	char chunk[65536];
	for (;;) {
		ssize_t n = read(STDIN_FILENO, chunk, sizeof(chunk));
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		if (n == 0)
			break;
		inject_reader_feed(r, chunk, (size_t)n, out);
		if (r->done)
			return 0; /* the "." line: the rest is not ours */
	}
	inject_reader_finish(r, out);
	return 0;
}

/* The command line is parsed; cfg is loaded. */
static int run(const struct config *cfg, const struct inject_opts *o)
{
	char err[600];
	uid_t uid = getuid();
	const struct passwd *pw = getpwuid(uid);
	char login[256] = "", gecos[256] = "";
	if (pw != NULL) {
		snprintf(login, sizeof(login), "%s", pw->pw_name);
		/* the full name: the GECOS text before the first comma */
		snprintf(gecos, sizeof(gecos), "%s", pw->pw_gecos ? pw->pw_gecos : "");
		gecos[strcspn(gecos, ",")] = '\0';
	}

	/* the envelope sender */
	bool utf8 = false;
	char sender[SMTP_MAX_PATH + 1];
	if (o->sender != NULL) {
		if (inject_parse_address(o->sender, true, sender, sizeof(sender), &utf8, err,
					 sizeof(err)) < 0)
			return fail(EX_DATAERR, "sender (-f): %s", err);
	} else if (login[0] == '\0') {
		return fail(EX_DATAERR, "no login name for uid %u: give the sender with -f",
			    (unsigned)uid);
	} else {
		char def[SMTP_MAX_PATH + 300];
		snprintf(def, sizeof(def), "%s@%s", login, cfg->server.hostname);
		if (inject_parse_address(def, false, sender, sizeof(sender), &utf8, err,
					 sizeof(err)) < 0)
			return fail(EX_DATAERR,
				    "the default sender (login@[server] hostname) is not an address: %s; "
				    "give the sender with -f",
				    err);
	}

	/* recipients named on the command line */
	struct strlist args = { 0 };
	for (size_t i = 0; i < o->rcpts.n; i++) {
		if (inject_parse_address_list(o->rcpts.v[i], &args, &utf8, err, sizeof(err)) < 0) {
			strlist_free(&args);
			return fail(EX_DATAERR, "recipient %s", err);
		}
	}

	/* the message */
	struct inject_reader r;
	inject_reader_init(&r, cfg->server.max_message_size, o->ignore_dots);
	struct buf msg;
	buf_init(&msg, 0);
	int status = 0;
	struct strlist rcpts = { 0 };
	struct queued_message m = { 0 };
	if (read_message(&r, &msg) < 0) {
		status = fail(EX_IOERR, "cannot read the message from standard input: %s",
			      strerror(errno));
		goto out;
	}
	if (r.flags & INJECT_TOO_BIG) {
		status = fail(EX_DATAERR,
			      "the message is %llu octets, more than [server] max_message_size "
			      "(%llu, %s)",
			      (unsigned long long)r.size,
			      (unsigned long long)cfg->server.max_message_size,
			      config_origin(cfg, "server", "max_message_size"));
		goto out;
	}
	if (r.flags & INJECT_NUL) {
		status = fail(EX_DATAERR, "the message has a NUL character on line %llu",
			      (unsigned long long)r.nul_line);
		goto out;
	}
	if (r.flags & INJECT_LINE_TOO_LONG) {
		status = fail(EX_DATAERR,
			      "line %llu of the message is %llu octets long; mail allows %d (RFC 5322 "
			      "2.1.1): encode the body (quoted-printable or base64)",
			      (unsigned long long)r.long_line, (unsigned long long)r.long_len,
			      INJECT_MAX_LINE);
		goto out;
	}
	struct inject_header_info h;
	inject_scan_headers(msg.data ? msg.data : "", msg.len, &h);
	if (h.received > MAX_RECEIVED_HEADERS) {
		status = fail(EX_DATAERR, "the message has %u Received: headers: mail loop?",
			      h.received);
		goto out;
	}
	if (o->extract && inject_header_rcpts(msg.data ? msg.data : "", &h, &rcpts, &utf8, err,
					      sizeof(err)) < 0) {
		status = fail(EX_DATAERR, "-t: %s", err);
		goto out;
	}
	for (size_t i = 0; i < args.n; i++)
		inject_add_rcpt(&rcpts, args.v[i]);
	if (rcpts.n == 0) {
		status = fail(EX_DATAERR, o->extract ? "no recipients: none on the command line and "
						       "no To:, Cc: or Bcc: header"
						     : "no recipients: name them as arguments, or use -t "
						       "to take them from the headers");
		goto out;
	}
	if (rcpts.n > cfg->server.max_recipients) {
		status = fail(EX_DATAERR, "%zu recipients; [server] max_recipients is %u", rcpts.n,
			      cfg->server.max_recipients);
		goto out;
	}

	/* flags, as smtp/session.c sets them */
	uint32_t flags = 0;
	if (r.flags & INJECT_8BIT)
		flags |= MSG_HAS_8BIT;
	if (o->body_8bitmime)
		flags |= MSG_BODY_8BITMIME;
	if (utf8)
		flags |= MSG_SMTPUTF8;
	struct rtls_rules rules = { 0 };
	if (rtls_rules_parse(&rules, &cfg->requiretls.require_for, err, sizeof(err)) < 0) {
		rtls_rules_free(&rules);
		status = fail(EX_CONFIG, "%s: [requiretls] require_for: %s", cfg->path, err);
		goto out;
	}
	char why[160];
	bool tagged = rtls_rules_match_sender(&rules, "", "", sender, why, sizeof(why));
	for (size_t i = 0; i < rcpts.n && !tagged && sender[0] != '\0'; i++) {
		const char *at = strrchr(rcpts.v[i], '@');
		tagged = at != NULL && rtls_rules_match_rcpt(&rules, at + 1, why, sizeof(why));
	}
	rtls_rules_free(&rules);
	if (tagged)
		flags |= MSG_REQUIRETLS_RULE;
	else if (h.tls_required_no)
		flags |= MSG_TLS_REQUIRED_NO;

	qid_generate(m.id);
	const char *fullname = o->fullname ? o->fullname : gecos;
	struct inject_build_params bp = {
		.hostname = cfg->server.hostname,
		.qid = m.id,
		.now = now_unix(),
		.uid = (unsigned)uid,
		.login = login[0] ? login : "unknown",
		.sender = sender,
		.fullname = fullname,
		.rcpts = &rcpts,
	};
	struct buf body;
	buf_init(&body, 0);
	inject_build(&bp, msg.data ? msg.data : "", msg.len, &h, &body);
	m.body = buf_steal(&body, &m.body_len);
	m.sender = xstrdup(sender);
	strlist_copy(&m.rcpts, &rcpts);
	for (size_t i = 0; i < rcpts.n; i++) {
		strlist_add(&m.notify, o->notify);
		strlist_add(&m.orcpt, "");
	}
	m.ret = xstrdup(o->ret);
	m.envid = xstrdup(o->envid);
	m.flags = flags;
	m.arrival = bp.now;
	m.client_addr = xstrdup("local");
	m.client_helo = xstrdup(login);
	m.client_tls = xstrdup("");
	m.auth_user = xstrdup("");
	status = enqueue(cfg, &m);
	if (status == 0 && o->verbose)
		printf("strictrelay: sendmail: queued as %s\n", m.id);
out:
	queued_message_free(&m);
	strlist_free(&rcpts);
	strlist_free(&args);
	buf_free(&msg);
	return status;
}

int sendmail_main(int argc, char **argv, char **envp)
{
	const char *global_config;
	int first = sendmail_first_arg(argc, argv, &global_config);
	if (first == 0)
		return fail(EX_SOFTWARE, "not invoked as sendmail");
	struct inject_opts o;
	char err[1024];
	if (inject_parse_args(&o, argc, argv, first, err, sizeof(err)) < 0) {
		inject_opts_free(&o);
		fail(0, "%s", err);
		fputs("Run `strictrelay sendmail --help` for usage.\n", stderr);
		return EX_USAGE;
	}
	if (o.mode != INJECT_MODE_DELIVER) {
		/* help, or -bi: neither needs the configuration */
		if (o.mode == INJECT_MODE_HELP)
			fputs(sendmail_help, stdout);
		inject_opts_free(&o);
		return 0;
	}
	const char *path = o.config ? o.config : global_config ? global_config : CONFIG_DEFAULT_PATH;
	struct config cfg;
	if (config_load(&cfg, path, envp, err, sizeof(err)) < 0) {
		config_free(&cfg);
		inject_opts_free(&o);
		return fail(EX_CONFIG, "cannot use the configuration: %s", err);
	}
	int rc = run(&cfg, &o);
	config_free(&cfg);
	inject_opts_free(&o);
	return rc;
}
