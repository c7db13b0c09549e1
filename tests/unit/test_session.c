/* Unit tests for smtp/session.c: the inbound protocol engine, without sockets. */
#include "smtp/session.h"
#include "test.h"

static void fixed_qid(char out[QID_LEN + 1])
{
	memcpy(out, "0123456789AB", QID_LEN + 1);
}

static struct strlist accept_domains;
static struct smtp_session_config cfg = {
	.hostname = "relay.test",
	.max_message_size = 1000,
	.max_recipients = 3,
	.max_errors = 50,
	.tls_available = true,
	.normalize_bare_newlines = false,
	.accept_domains = &accept_domains,
	.new_qid = fixed_qid,
};

static struct smtp_session s;
static struct buf out;
static enum smtp_action last_action;

static void start(bool trusted)
{
	buf_init(&out, 0);
	smtp_session_init(&s, &cfg, "192.0.2.7", trusted);
	smtp_session_greeting(&s, &out);
}

static void finish(void)
{
	smtp_session_free(&s);
	buf_free(&out);
}

/* Sends one line; returns the reply text (all lines) and clears the buffer. */
static const char *cmd(const char *line)
{
	static char reply_copy[4096];
	char l[1024];
	snprintf(l, sizeof(l), "%s", line);
	buf_reset(&out);
	last_action = smtp_session_command(&s, l, &out);
	snprintf(reply_copy, sizeof(reply_copy), "%s", out.data ? out.data : "");
	return reply_copy;
}

#define CHECK_REPLY(line, prefix)                                                    \
	do {                                                                         \
		const char *r_ = cmd(line);                                          \
		if (strncmp(r_, prefix, strlen(prefix)) != 0) {                      \
			fprintf(stderr, "%s:%d: %s: \"%s\" -> \"%s\", expected \"%s\"\n", \
				__FILE__, __LINE__, test_current, line, r_, prefix); \
			test_failures++;                                             \
		}                                                                    \
	} while (0)

static enum smtp_action feed_data_n(const char *data, size_t len)
{
	size_t used = smtp_data_feed(&s.data, data, len, &s.message);
	CHECK_INT(used, len);
	CHECK(s.data.done);
	buf_reset(&out);
	return smtp_session_data_end(&s, &out);
}

static enum smtp_action feed_data(const char *data)
{
	return feed_data_n(data, strlen(data));
}

static void test_greeting_and_ehlo(void)
{
	start(true);
	CHECK_STR(out.data, "220 relay.test ESMTP strictrelay\r\n");
	const char *r = cmd("EHLO client.example");
	CHECK(strstr(r, "250-relay.test greets client.example [192.0.2.7]\r\n") == r);
	CHECK(strstr(r, "250-PIPELINING\r\n") != NULL);
	CHECK(strstr(r, "250-SIZE 1000\r\n") != NULL);
	CHECK(strstr(r, "250-8BITMIME\r\n") != NULL);
	CHECK(strstr(r, "250-ENHANCEDSTATUSCODES\r\n") != NULL);
	CHECK(strstr(r, "250-STARTTLS\r\n") != NULL);
	CHECK(strstr(r, "REQUIRETLS") == NULL);
	CHECK(strstr(r, "250 SMTPUTF8\r\n") != NULL);
	CHECK_REPLY("HELO client.example", "250 relay.test\r\n");
	CHECK_REPLY("EHLO", "501 5.5.2");
	finish();
}

static void test_order(void)
{
	start(true);
	CHECK_REPLY("MAIL FROM:<a@example.org>", "503 5.5.1");
	CHECK_REPLY("RCPT TO:<b@example.net>", "503 5.5.1");
	CHECK_REPLY("DATA", "503 5.5.1");
	CHECK_REPLY("EHLO c", "250-");
	CHECK_REPLY("RCPT TO:<b@example.net>", "503 5.5.1");
	CHECK_REPLY("MAIL FROM:<a@example.org>", "250 2.1.0");
	CHECK_REPLY("MAIL FROM:<a@example.org>", "503 5.5.1");
	CHECK_REPLY("DATA", "554 5.5.1");
	CHECK_REPLY("RSET", "250 2.0.0");
	CHECK_REPLY("RCPT TO:<b@example.net>", "503 5.5.1");
	CHECK_REPLY("NOOP", "250 2.0.0");
	CHECK_REPLY("VRFY x", "252 2.5.0");
	CHECK_REPLY("HELP", "214-2.0.0");
	CHECK_REPLY("EXPN list", "502 5.5.1");
	CHECK_REPLY("FOO", "500 5.5.1");
	CHECK_REPLY("QUIT", "221 2.0.0");
	CHECK_INT(last_action, SMTP_ACT_CLOSE);
	finish();
}

static void test_mail_params(void)
{
	start(true);
	cmd("EHLO c");
	CHECK_REPLY("MAIL FROM:<a@example.org> SIZE=1001", "552 5.3.4");
	CHECK_REPLY("MAIL FROM:<a@example.org> SIZE=abc", "501 5.5.4");
	CHECK_REPLY("MAIL FROM:<a@example.org> BODY=BINARYMIME", "501 5.5.4");
	CHECK_REPLY("MAIL FROM:<a@example.org> AUTH=<>", "555 5.5.4");
	CHECK_REPLY("MAIL FROM:<a@example.org> RET=PART", "501 5.5.4");
	CHECK_REPLY("MAIL FROM:<a@example.org> ENVID=a=b", "501 5.5.4");
	CHECK_REPLY("MAIL FROM:<a@example.org> ENVID=+4", "501 5.5.4");
	CHECK_REPLY("MAIL FROM:<a@example.org> REQUIRETLS", "530 5.7.10");
	CHECK_REPLY("MAIL FROM:<a\xc3\xa9@example.org>", "553 5.6.7");
	CHECK_REPLY("MAIL FROM:<a@example.org> SIZE=1 SIZE=2", "501 5.5.4");
	CHECK_REPLY("MAIL FROM:<a@example.org> SIZE=1000 BODY=8bitmime SMTPUTF8", "250 2.1.0");
	CHECK_INT(s.flags, MSG_BODY_8BITMIME | MSG_SMTPUTF8);
	finish();
}

static void test_requiretls_after_tls(void)
{
	start(true);
	cmd("EHLO c");
	CHECK_REPLY("STARTTLS extra", "501 5.5.2");
	CHECK_REPLY("STARTTLS", "220 2.0.0");
	CHECK_INT(last_action, SMTP_ACT_STARTTLS);
	smtp_session_tls_started(&s, "TLSv1.3 TLS_AES_256_GCM_SHA384");
	/* EHLO state forgotten */
	CHECK_REPLY("MAIL FROM:<a@example.org>", "503 5.5.1");
	const char *r = cmd("EHLO c");
	CHECK(strstr(r, "250-REQUIRETLS\r\n") != NULL);
	CHECK(strstr(r, "STARTTLS\r\n") == NULL);
	CHECK_REPLY("STARTTLS", "503 5.5.1");
	CHECK_REPLY("MAIL FROM:<a@example.org> REQUIRETLS", "250 2.1.0");
	CHECK(s.flags & MSG_REQUIRETLS);
	CHECK_REPLY("RCPT TO:<b@example.net>", "250 2.1.5");
	CHECK_REPLY("DATA", "354 ");
	CHECK_INT(feed_data("TLS-Required: No\r\nSubject: t\r\n\r\nhi\r\n.\r\n"), SMTP_ACT_ENQUEUE);
	struct queued_message *m = smtp_session_take_message(&s);
	REQUIRE(m != NULL);
	/* REQUIRETLS wins over the header (RFC 8689 4.1) */
	CHECK(m->flags & MSG_REQUIRETLS);
	CHECK(!(m->flags & MSG_TLS_REQUIRED_NO));
	CHECK(strstr(m->body, "with ESMTPS id 0123456789AB") != NULL);
	CHECK(strstr(m->body, "(version=TLSv1.3 cipher=TLS_AES_256_GCM_SHA384)") != NULL);
	CHECK_STR(m->client_tls, "TLSv1.3 TLS_AES_256_GCM_SHA384");
	queued_message_free(m);
	free(m);
	buf_reset(&out);
	smtp_session_queued(&s, true, &out);
	CHECK_STR(out.data, "250 2.0.0 Ok: queued as 0123456789AB\r\n");
	CHECK_INT(s.state, SMTP_STATE_READY);
	finish();
}

static void test_starttls_refusals(void)
{
	start(true);
	cmd("EHLO c");
	cmd("MAIL FROM:<a@example.org>");
	CHECK_REPLY("STARTTLS", "503 5.5.1");
	finish();
	struct smtp_session_config notls = cfg;
	notls.tls_available = false;
	buf_init(&out, 0);
	smtp_session_init(&s, &notls, "192.0.2.7", true);
	const char *r = cmd("EHLO c");
	CHECK(strstr(r, "STARTTLS") == NULL);
	CHECK_REPLY("STARTTLS", "502 5.5.1");
	finish();
}

static void test_relay_control(void)
{
	strlist_add(&accept_domains, "accepted.test");
	start(false);
	cmd("EHLO c");
	CHECK_REPLY("MAIL FROM:<a@example.org>", "250 ");
	CHECK_REPLY("RCPT TO:<b@example.net>", "554 5.7.1");
	CHECK_REPLY("RCPT TO:<b@ACCEPTED.test>", "250 2.1.5");
	CHECK_REPLY("RCPT TO:<postmaster>", "550 5.1.1");
	finish();
	/* RFC 5321 4.5.1: with [server] postmaster set, "<Postmaster>" is
	 * accepted from anyone, and goes there; other bare names still not */
	struct smtp_session_config pmcfg = cfg;
	pmcfg.postmaster = "hostmaster@admin.example";
	buf_init(&out, 0);
	smtp_session_init(&s, &pmcfg, "192.0.2.7", false);
	cmd("EHLO c");
	CHECK_REPLY("MAIL FROM:<a@example.org>", "250 ");
	CHECK_REPLY("RCPT TO:<PostMaster>", "250 2.1.5");
	CHECK_REPLY("RCPT TO:<bob>", "501 5.1.3");
	CHECK_REPLY("RCPT TO:<b@example.net>", "554 5.7.1");
	REQUIRE(s.rcpts.n == 1);
	CHECK_STR(s.rcpts.v[0], "hostmaster@admin.example");
	finish();
	start(true);
	cmd("EHLO c");
	cmd("MAIL FROM:<a@example.org>");
	CHECK_REPLY("RCPT TO:<b@example.net>", "250 2.1.5");
	CHECK_REPLY("RCPT TO:<c@example.net>", "250 2.1.5");
	CHECK_REPLY("RCPT TO:<d@example.net>", "250 2.1.5");
	CHECK_REPLY("RCPT TO:<e@example.net>", "452 4.5.3");
	CHECK_REPLY("RCPT TO:<e@example.net> FOO=BAR", "555 5.5.4");
	finish();
	strlist_free(&accept_domains);
}

static void test_data_refusals(void)
{
	start(true);
	cmd("EHLO c");
	cmd("MAIL FROM:<a@example.org>");
	cmd("RCPT TO:<b@example.net>");
	cmd("DATA");
	CHECK_INT(feed_data("a\nb\r\n.\r\n"), SMTP_ACT_NONE);
	CHECK(strncmp(out.data, "550 5.5.2", 9) == 0);
	CHECK_INT(s.state, SMTP_STATE_READY);
	cmd("MAIL FROM:<a@example.org>");
	cmd("RCPT TO:<b@example.net>");
	cmd("DATA");
	char big[1200];
	memset(big, 'x', 1100);
	strcpy(big + 1100, "\r\n.\r\n");
	CHECK_INT(feed_data(big), SMTP_ACT_NONE);
	CHECK(strncmp(out.data, "552 5.3.4", 9) == 0);
	cmd("MAIL FROM:<a@example.org>");
	cmd("RCPT TO:<b@example.net>");
	cmd("DATA");
	CHECK_INT(feed_data_n("x\r\n\0\r\n.\r\n", 9), SMTP_ACT_NONE);
	CHECK(strncmp(out.data, "554 5.6.0", 9) == 0);
	finish();
}

static void test_tls_required_no_and_loop(void)
{
	start(true);
	cmd("HELO c");
	cmd("MAIL FROM:<>");
	cmd("RCPT TO:<b@example.net>");
	cmd("DATA");
	CHECK_INT(feed_data("Subject: x\r\ntls-required:  NO \r\n\r\nbody\r\n.\r\n"), SMTP_ACT_ENQUEUE);
	struct queued_message *m = smtp_session_take_message(&s);
	REQUIRE(m != NULL);
	CHECK(m->flags & MSG_TLS_REQUIRED_NO);
	CHECK_STR(m->sender, "");
	CHECK(strncmp(m->body, "Received: from c ([192.0.2.7])\r\n\tby relay.test (strictrelay) with SMTP id", 70) == 0);
	queued_message_free(m);
	free(m);
	smtp_session_queued(&s, false, &out);
	CHECK(strstr(out.data, "451 4.3.0") != NULL);

	/* 101 Received: headers = a loop */
	cmd("MAIL FROM:<a@example.org>");
	cmd("RCPT TO:<b@example.net>");
	cmd("DATA");
	struct buf msg;
	buf_init(&msg, 0);
	for (int i = 0; i < 101; i++)
		buf_puts(&msg, "Received: x\r\n");
	buf_puts(&msg, "\r\n.\r\n");
	struct smtp_session_config big = cfg;
	big.max_message_size = 100000;
	s.cfg = &big;
	smtp_data_init(&s.data, big.max_message_size, false);
	CHECK_INT(feed_data(msg.data), SMTP_ACT_NONE);
	CHECK(strncmp(out.data, "554 5.4.6", 9) == 0);
	buf_free(&msg);
	s.cfg = &cfg;
	finish();
}

static void test_folded_header_and_helo_params(void)
{
	start(true);
	cmd("EHLO c");
	cmd("MAIL FROM:<a@example.org>");
	cmd("RCPT TO:<b@example.net>");
	cmd("DATA");
	CHECK_INT(feed_data("Subject: x\r\nTLS-Required:\r\n\tNo\r\n\r\nbody\r\n.\r\n"), SMTP_ACT_ENQUEUE);
	struct queued_message *m = smtp_session_take_message(&s);
	REQUIRE(m != NULL);
	CHECK(m->flags & MSG_TLS_REQUIRED_NO);
	queued_message_free(m);
	free(m);
	smtp_session_queued(&s, true, &out);
	/* "No" followed by more text is not the header's value */
	cmd("MAIL FROM:<a@example.org>");
	cmd("RCPT TO:<b@example.net>");
	cmd("DATA");
	CHECK_INT(feed_data("TLS-Required: Nope\r\n\r\nbody\r\n.\r\n"), SMTP_ACT_ENQUEUE);
	m = smtp_session_take_message(&s);
	REQUIRE(m != NULL);
	CHECK(!(m->flags & MSG_TLS_REQUIRED_NO));
	queued_message_free(m);
	free(m);
	smtp_session_queued(&s, true, &out);
	/* in the body it does not count */
	cmd("MAIL FROM:<a@example.org>");
	cmd("RCPT TO:<b@example.net>");
	cmd("DATA");
	CHECK_INT(feed_data("Subject: y\r\n\r\nTLS-Required: No\r\n.\r\n"), SMTP_ACT_ENQUEUE);
	m = smtp_session_take_message(&s);
	REQUIRE(m != NULL);
	CHECK(!(m->flags & MSG_TLS_REQUIRED_NO));
	queued_message_free(m);
	free(m);
	smtp_session_queued(&s, true, &out);
	/* HELO: no service extensions, so no MAIL parameters */
	cmd("HELO c");
	CHECK_REPLY("MAIL FROM:<a@example.org> SIZE=10", "555 5.5.4");
	CHECK_REPLY("MAIL FROM:<a@example.org>", "250 2.1.0");
	finish();
}

static void test_size_saturates(void)
{
	start(true);
	cmd("EHLO c");
	/* 20 digits is valid RFC 1870 syntax even above 2^64: too big, not bad */
	CHECK_REPLY("MAIL FROM:<a@example.org> SIZE=99999999999999999999", "552 5.3.4");
	CHECK_REPLY("MAIL FROM:<a@example.org> SIZE=999999999999999999999", "501 5.5.4");
	finish();
}

static void test_dsn_parameters(void)
{
	start(true);
	const char *r = cmd("EHLO c");
	CHECK(strstr(r, "250-DSN\r\n") != NULL);
	CHECK_REPLY("MAIL FROM:<a@example.org> RET=hdrs ENVID=QQ+2B1", "250 2.1.0");
	CHECK_REPLY("RCPT TO:<b@example.net> NOTIFY=failure,success ORCPT=rfc822;b+40example.net", "250 2.1.5");
	CHECK_REPLY("RCPT TO:<c@example.net> NOTIFY=NEVER", "250 2.1.5");
	CHECK_REPLY("RCPT TO:<d@example.net>", "250 2.1.5");
	CHECK_REPLY("RCPT TO:<e@example.net> NOTIFY=DELAY,NEVER", "501 5.5.4");
	CHECK_REPLY("RCPT TO:<e@example.net> NOTIFY=", "501 5.5.4");
	CHECK_REPLY("RCPT TO:<e@example.net> ORCPT=;x", "501 5.5.4");
	CHECK_REPLY("DATA", "354 ");
	CHECK_INT(feed_data("Subject: x\r\n\r\nbody\r\n.\r\n"), SMTP_ACT_ENQUEUE);
	struct queued_message *m = smtp_session_take_message(&s);
	REQUIRE(m != NULL);
	CHECK_STR(m->ret, "HDRS");
	CHECK_STR(m->envid, "QQ+2B1");
	REQUIRE(m->rcpts.n == 3 && m->notify.n == 3 && m->orcpt.n == 3);
	CHECK_STR(m->notify.v[0], "SUCCESS,FAILURE");
	CHECK_STR(m->orcpt.v[0], "rfc822;b+40example.net");
	CHECK_STR(m->notify.v[1], "NEVER");
	CHECK_STR(m->notify.v[2], "");
	CHECK_STR(m->orcpt.v[2], "");
	queued_message_free(m);
	free(m);
	finish();
}

static void test_too_many_errors(void)
{
	struct smtp_session_config few = cfg;
	few.max_errors = 5;
	buf_init(&out, 0);
	smtp_session_init(&s, &few, "192.0.2.7", true);
	for (int i = 0; i < 4; i++)
		CHECK_REPLY("BOGUS", "500 5.5.1");
	const char *r = cmd("BOGUS");
	CHECK(strstr(r, "421 4.7.0") != NULL);
	CHECK_INT(last_action, SMTP_ACT_CLOSE);
	finish();
}

/* NOOP, RSET, VRFY and HELP are free 100 times per message; past that each
 * one is an error, so a NOOP loop cannot hold a connection slot forever. */
static void test_junk_commands(void)
{
	static const char *const junk[] = { "NOOP", "RSET", "VRFY x", "HELP" };
	struct smtp_session_config few = cfg;
	few.max_errors = 5;
	buf_init(&out, 0);
	smtp_session_init(&s, &few, "192.0.2.7", true);
	cmd("EHLO c");
	for (int round = 0; round < 2; round++) {
		for (int i = 0; i < 100; i++) {
			const char *r = cmd(junk[i % 4]);
			CHECK(strstr(r, "421 ") == NULL);
			CHECK_INT(last_action, SMTP_ACT_NONE);
		}
		if (round == 0) {
			/* an accepted message starts the count again */
			CHECK_REPLY("MAIL FROM:<a@example.org>", "250 2.1.0");
			CHECK_REPLY("RCPT TO:<b@example.net>", "250 2.1.5");
			CHECK_REPLY("DATA", "354 ");
			CHECK_INT(feed_data("Subject: t\r\n\r\nhi\r\n.\r\n"), SMTP_ACT_ENQUEUE);
			struct queued_message *m = smtp_session_take_message(&s);
			REQUIRE(m != NULL);
			queued_message_free(m);
			free(m);
			buf_reset(&out);
			smtp_session_queued(&s, true, &out);
			CHECK_STR(out.data, "250 2.0.0 Ok: queued as 0123456789AB\r\n");
		}
	}
	/* the 101st onwards: still answered, and counted; the 5th error closes */
	for (int i = 0; i < 4; i++) {
		CHECK_STR(cmd("NOOP"), "250 2.0.0 Ok\r\n");
		CHECK_INT(last_action, SMTP_ACT_NONE);
	}
	CHECK_STR(cmd("NOOP"), "250 2.0.0 Ok\r\n421 4.7.0 relay.test Too many errors; closing connection\r\n");
	CHECK_INT(last_action, SMTP_ACT_CLOSE);
	finish();
}

static uint64_t space_size_seen;
static bool space_ok;
static bool space_hook(void *arg, uint64_t size)
{
	(void)arg;
	space_size_seen = size;
	return space_ok;
}

/* [queue] min_free_space: the hook sees the SIZE parameter (0 without one);
 * false refuses the MAIL with 452 4.3.1, which is no client error. */
static void test_free_space_at_mail(void)
{
	struct smtp_session_config sp = cfg;
	sp.max_errors = 2;
	sp.space_available = space_hook;
	buf_init(&out, 0);
	smtp_session_init(&s, &sp, "192.0.2.7", true);
	cmd("EHLO c");
	space_ok = false;
	for (int i = 0; i < 3; i++)
		CHECK_REPLY("MAIL FROM:<a@example.org> SIZE=900", "452 4.3.1 Insufficient system storage");
	CHECK_INT(space_size_seen, 900);
	CHECK_INT(last_action, SMTP_ACT_NONE);
	CHECK_REPLY("RCPT TO:<b@example.net>", "503 5.5.1");
	space_ok = true;
	CHECK_REPLY("MAIL FROM:<a@example.org>", "250 2.1.0");
	CHECK_INT(space_size_seen, 0);
	finish();
}

/* AUTH PLAIN "\0alice\0secret" and LOGIN "alice" / "secret" */
#define PLAIN_ALICE "AGFsaWNlAHNlY3JldA=="

static bool rate_ok;
static bool rate_hook(void *arg, const char *client)
{
	(void)arg;
	CHECK_STR(client, "192.0.2.7");
	return rate_ok;
}

static void start_submission(struct smtp_session_config *sub, bool tls)
{
	*sub = cfg;
	sub->submission = true;
	sub->auth_available = true;
	buf_init(&out, 0);
	smtp_session_init(&s, sub, "192.0.2.7", false);
	if (tls)
		smtp_session_tls_started(&s, "TLSv1.3 TLS_AES_256_GCM_SHA384");
}

static void test_auth_needs_tls(void)
{
	struct smtp_session_config sub;
	start_submission(&sub, false);
	const char *r = cmd("EHLO c");
	CHECK(strstr(r, "AUTH") == NULL);
	CHECK(strstr(r, "STARTTLS") != NULL);
	CHECK_REPLY("AUTH PLAIN " PLAIN_ALICE, "538 5.7.11");
	CHECK_REPLY("MAIL FROM:<a@example.org>", "530 5.7.0 Must issue a STARTTLS");
	finish();
	/* port 25 (not submission): no AUTH at all, even inside TLS */
	buf_init(&out, 0);
	smtp_session_init(&s, &cfg, "192.0.2.7", true);
	smtp_session_tls_started(&s, "TLSv1.3 X");
	r = cmd("EHLO c");
	CHECK(strstr(r, "AUTH") == NULL);
	CHECK_REPLY("AUTH PLAIN " PLAIN_ALICE, "502 5.5.1");
	finish();
}

static void test_auth_plain(void)
{
	struct smtp_session_config sub;
	start_submission(&sub, true);
	const char *r = cmd("EHLO c");
	CHECK(strstr(r, "250-AUTH PLAIN LOGIN\r\n") != NULL);
	CHECK_REPLY("MAIL FROM:<a@example.org>", "530 5.7.0 Authentication required");
	CHECK_REPLY("AUTH CRAM-MD5", "504 5.5.4");
	CHECK_REPLY("AUTH PLAIN !!!!", "501 5.5.2");
	/* authzid differs from authcid: "bob\0alice\0secret" */
	CHECK_REPLY("AUTH PLAIN Ym9iAGFsaWNlAHNlY3JldA==", "535 5.7.8");
	CHECK_REPLY("AUTH PLAIN " PLAIN_ALICE, "");
	CHECK_INT(last_action, SMTP_ACT_AUTH_CHECK);
	CHECK_STR(smtp_session_auth_user(&s), "alice");
	CHECK_STR(smtp_session_auth_password(&s), "secret");
	buf_reset(&out);
	smtp_session_auth_checked(&s, SMTP_AUTH_FAILED, &out);
	CHECK(strncmp(out.data, "535 5.7.8", 9) == 0);
	CHECK_STR(smtp_session_auth_password(&s), "");
	CHECK_REPLY("MAIL FROM:<a@example.org>", "530 5.7.0");
	/* two-step PLAIN */
	CHECK_REPLY("AUTH PLAIN", "334 ");
	CHECK_REPLY(PLAIN_ALICE, "");
	CHECK_INT(last_action, SMTP_ACT_AUTH_CHECK);
	buf_reset(&out);
	smtp_session_auth_checked(&s, SMTP_AUTH_OK, &out);
	CHECK(strncmp(out.data, "235 2.7.0", 9) == 0);
	CHECK_STR(s.auth_user, "alice");
	r = cmd("EHLO c");
	CHECK(strstr(r, "AUTH") == NULL); /* no second AUTH */
	CHECK_REPLY("AUTH PLAIN " PLAIN_ALICE, "503 5.5.1");
	/* authenticated: relays anywhere, the Received: says ESMTPSA */
	CHECK_REPLY("MAIL FROM:<a@example.org> AUTH=<>", "250 ");
	CHECK_REPLY("RCPT TO:<b@example.net>", "250 2.1.5");
	CHECK_REPLY("DATA", "354");
	CHECK_INT(feed_data("Subject: x\r\n\r\nhi\r\n.\r\n"), SMTP_ACT_ENQUEUE);
	struct queued_message *m = smtp_session_take_message(&s);
	REQUIRE(m != NULL);
	CHECK_STR(m->auth_user, "alice");
	CHECK(strstr(m->body, "with ESMTPSA") != NULL);
	queued_message_free(m);
	free(m);
	finish();
}

static void test_auth_login_and_cancel(void)
{
	struct smtp_session_config sub;
	start_submission(&sub, true);
	cmd("EHLO c");
	CHECK_REPLY("AUTH LOGIN", "334 VXNlcm5hbWU6");
	CHECK_REPLY("*", "501 5.0.0");
	CHECK_REPLY("AUTH LOGIN YWxpY2U=", "334 UGFzc3dvcmQ6");
	CHECK_REPLY("c2VjcmV0", "");
	CHECK_INT(last_action, SMTP_ACT_AUTH_CHECK);
	CHECK_STR(smtp_session_auth_user(&s), "alice");
	CHECK_STR(smtp_session_auth_password(&s), "secret");
	buf_reset(&out);
	smtp_session_auth_checked(&s, SMTP_AUTH_LOCKED, &out);
	CHECK(strncmp(out.data, "421 4.7.0", 9) == 0);
	CHECK_INT(s.state, SMTP_STATE_CLOSED);
	finish();
	/* STARTTLS forgets an earlier AUTH (RFC 3207 4.2) */
	start_submission(&sub, true);
	snprintf(s.auth_user, sizeof(s.auth_user), "alice");
	smtp_session_tls_started(&s, "TLSv1.3 X");
	CHECK_STR(s.auth_user, "");
	finish();
}

static void test_sender_domains_and_rate(void)
{
	struct strlist senders = { 0 };
	strlist_add(&senders, "example.org");
	struct smtp_session_config c2 = cfg;
	c2.sender_domains = &senders;
	c2.message_allowed = rate_hook;
	buf_init(&out, 0);
	smtp_session_init(&s, &c2, "192.0.2.7", true);
	cmd("EHLO c");
	rate_ok = true;
	CHECK_REPLY("MAIL FROM:<a@elsewhere.test>", "553 5.7.1");
	CHECK_REPLY("MAIL FROM:<a@EXAMPLE.org>", "250 ");
	cmd("RSET");
	CHECK_REPLY("MAIL FROM:<>", "250 ");
	cmd("RSET");
	rate_ok = false;
	CHECK_REPLY("MAIL FROM:<a@example.org>", "450 4.7.1");
	finish();
	strlist_free(&senders);
}

int main(void)
{
	RUN(test_greeting_and_ehlo);
	RUN(test_order);
	RUN(test_mail_params);
	RUN(test_requiretls_after_tls);
	RUN(test_starttls_refusals);
	RUN(test_relay_control);
	RUN(test_data_refusals);
	RUN(test_tls_required_no_and_loop);
	RUN(test_folded_header_and_helo_params);
	RUN(test_size_saturates);
	RUN(test_dsn_parameters);
	RUN(test_too_many_errors);
	RUN(test_junk_commands);
	RUN(test_free_space_at_mail);
	RUN(test_auth_needs_tls);
	RUN(test_auth_plain);
	RUN(test_auth_login_and_cancel);
	RUN(test_sender_domains_and_rate);
	TEST_EXIT();
}
