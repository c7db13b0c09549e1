/* Unit tests for queue/inject.c: the sendmail command line, reading the
 * message (dots, line endings, limits), -t header extraction, Bcc removal
 * and the headers added to a locally injected message. */
#include <stdint.h>

#include "queue/inject.h"
#include "test.h"

/* --- the command line ------------------------------------------------------ */

static int parse(struct inject_opts *o, const char *const *args, char *err, size_t errlen)
{
	char *argv[32];
	int argc = 0;
	argv[argc++] = (char *)"sendmail";
	for (; args[argc - 1] != NULL; argc++)
		argv[argc] = (char *)args[argc - 1];
	return inject_parse_args(o, argc, argv, 1, err, errlen);
}

#define ARGS(...) ((const char *const[]){ __VA_ARGS__, NULL })

static void test_flags(void)
{
	struct inject_opts o;
	char err[300];
	REQUIRE(parse(&o, ARGS("-t", "-i", "-f", "app@example.org", "-F", "The App", "-v",
			       "bob@example.net"),
		      err, sizeof(err)) == 0);
	CHECK(o.extract);
	CHECK(o.ignore_dots);
	CHECK(o.verbose);
	CHECK_STR(o.sender, "app@example.org");
	CHECK_STR(o.fullname, "The App");
	CHECK_INT(o.rcpts.n, 1);
	CHECK_STR(o.rcpts.v[0], "bob@example.net");
	CHECK_INT(o.mode, INJECT_MODE_DELIVER);
	inject_opts_free(&o);

	/* attached values, clusters, -oi, ignored -o options, -bm, options
	 * after recipients (GNU getopt permutes), "--" */
	REQUIRE(parse(&o, ARGS("-ti", "-fapp@example.org", "-oem", "-odb", "a@x.test", "-bm",
			       "-oi", "-Fname", "-c", "/etc/x.conf", "--", "-b@x.test"),
		      err, sizeof(err)) == 0);
	CHECK(o.extract);
	CHECK(o.ignore_dots);
	CHECK_STR(o.sender, "app@example.org");
	CHECK_STR(o.fullname, "name");
	CHECK_STR(o.config, "/etc/x.conf");
	CHECK_INT(o.rcpts.n, 2);
	CHECK_STR(o.rcpts.v[1], "-b@x.test");
	inject_opts_free(&o);

	/* -oi alone sets ignore_dots; -oem does not */
	REQUIRE(parse(&o, ARGS("-oem", "a@x.test"), err, sizeof(err)) == 0);
	CHECK(!o.ignore_dots);
	inject_opts_free(&o);
	REQUIRE(parse(&o, ARGS("-oi", "a@x.test"), err, sizeof(err)) == 0);
	CHECK(o.ignore_dots);
	inject_opts_free(&o);

	/* -f "" and -r: the null sender / a synonym */
	REQUIRE(parse(&o, ARGS("-f", "", "a@x.test"), err, sizeof(err)) == 0);
	CHECK_STR(o.sender, "");
	inject_opts_free(&o);
	REQUIRE(parse(&o, ARGS("-r", "x@y.test"), err, sizeof(err)) == 0);
	CHECK_STR(o.sender, "x@y.test");
	inject_opts_free(&o);

	/* DSN options */
	REQUIRE(parse(&o, ARGS("-N", "delay,failure", "-R", "hdrs", "-V", "abc+2B1", "-B",
			       "8bitmime", "a@x.test"),
		      err, sizeof(err)) == 0);
	CHECK_STR(o.notify, "FAILURE,DELAY");
	CHECK_STR(o.ret, "HDRS");
	CHECK_STR(o.envid, "abc+2B1");
	CHECK(o.body_8bitmime);
	inject_opts_free(&o);

	/* ignored: -h N, -e x, -L x, -O x, -U, -m */
	REQUIRE(parse(&o, ARGS("-h", "17", "-e", "m", "-L", "tag", "-O", "a=b", "-U", "-m",
			       "a@x.test"),
		      err, sizeof(err)) == 0);
	CHECK_INT(o.mode, INJECT_MODE_DELIVER);
	CHECK_INT(o.rcpts.n, 1);
	inject_opts_free(&o);

	/* help, newaliases */
	REQUIRE(parse(&o, ARGS("--help"), err, sizeof(err)) == 0);
	CHECK_INT(o.mode, INJECT_MODE_HELP);
	inject_opts_free(&o);
	REQUIRE(parse(&o, ARGS("-h"), err, sizeof(err)) == 0);
	CHECK_INT(o.mode, INJECT_MODE_HELP);
	inject_opts_free(&o);
	REQUIRE(parse(&o, ARGS("-bi"), err, sizeof(err)) == 0);
	CHECK_INT(o.mode, INJECT_MODE_NOTHING);
	inject_opts_free(&o);

	/* usage errors name the option */
	static const struct {
		const char *args[4];
		const char *in_err;
	} bad[] = {
		{ { "-z", NULL }, "-z" },
		{ { "--frobnicate", NULL }, "--frobnicate" },
		{ { "-f", NULL }, "-f needs a value" },
		{ { "-bp", NULL }, "queue list" },
		{ { "-bs", NULL }, "-bs" },
		{ { "-q", NULL }, "queue flush" },
		{ { "-N", "sometimes", NULL }, "-N" },
		{ { "-R", "most", NULL }, "-R" },
		{ { "-V", "a=b", NULL }, "-V" },
		{ { "-B", "BINARYMIME", NULL }, "-B" },
	};
	for (size_t i = 0; i < SR_ARRAY_LEN(bad); i++) {
		err[0] = '\0';
		CHECK(parse(&o, bad[i].args, err, sizeof(err)) < 0);
		if (strstr(err, bad[i].in_err) == NULL)
			CHECK_STR(err, bad[i].in_err);
		inject_opts_free(&o);
	}
}

/* --- reading -------------------------------------------------------------------- */

struct readres {
	struct buf out;
	size_t consumed;
	struct inject_reader r;
};

/* Feeds in chunks of `chunk` bytes (0 = all at once), then finish. */
static void read_all(struct readres *res, const char *in, size_t len, size_t chunk,
		     bool ignore_dots, uint64_t max)
{
	inject_reader_init(&res->r, max, ignore_dots);
	buf_init(&res->out, 0);
	res->consumed = 0;
	while (res->consumed < len && !res->r.done) {
		size_t n = chunk ? chunk : len;
		if (n > len - res->consumed)
			n = len - res->consumed;
		size_t c = inject_reader_feed(&res->r, in + res->consumed, n, &res->out);
		res->consumed += c;
		if (c < n && !res->r.done) {
			CHECK(!"reader stopped early without the end line");
			break;
		}
	}
	if (!res->r.done)
		inject_reader_finish(&res->r, &res->out);
}

/* The same output and consumption whatever the chunking. */
static void expect_read(const char *in, bool ignore_dots, const char *want, size_t consumed,
			bool done, unsigned flags)
{
	size_t len = strlen(in);
	for (size_t chunk = 0; chunk <= len; chunk++) {
		struct readres res;
		read_all(&res, in, len, chunk, ignore_dots, 1 << 20);
		CHECK_STR(res.out.data ? res.out.data : "", want);
		CHECK_INT(res.consumed, consumed);
		CHECK_INT(res.r.done, done);
		CHECK_INT(res.r.flags, flags);
		buf_free(&res.out);
	}
}

static void test_line_endings(void)
{
	/* LF, CR LF, bare CR: all CR LF */
	expect_read("a\nb\n", false, "a\r\nb\r\n", 4, false, 0);
	expect_read("a\r\nb\r\n", false, "a\r\nb\r\n", 6, false, 0);
	expect_read("a\rb\r", false, "a\r\nb\r\n", 4, false, 0);
	expect_read("a\r\rb\n", false, "a\r\n\r\nb\r\n", 5, false, 0);
	expect_read("a\n\r\nb", false, "a\r\n\r\nb\r\n", 5, false, 0);
	/* the last line without an ending gets one */
	expect_read("Subject: x\n\nbody", false, "Subject: x\r\n\r\nbody\r\n", 16, false, 0);
	expect_read("", false, "", 0, false, 0);
	/* 8-bit is flagged, kept */
	expect_read("caf\xc3\xa9\n", false, "caf\xc3\xa9\r\n", 6, false, INJECT_8BIT);
}

static void test_dots(void)
{
	/* without -i: a "." line ends the message; the rest is not consumed */
	expect_read("a\n.\nb\n", false, "a\r\n", 4, true, 0);
	expect_read("a\r\n.\r\nb\r\n", false, "a\r\n", 6, true, 0);
	expect_read("a\n.", false, "a\r\n", 3, true, 0);       /* "." at EOF ends it too */
	expect_read(".\n", false, "", 2, true, 0);
	/* a bare CR after the dot ends the line as well (CR is a line ending here) */
	expect_read("a\n.\rb\n", false, "a\r\n", 4, true, 0);
	/* not a lone dot: ordinary text, never dot-stuffed here */
	expect_read("..\n.x\n. \nx.\n", false, "..\r\n.x\r\n. \r\nx.\r\n", 12, false, 0);
	/* with -i: dots mean nothing */
	expect_read("a\n.\nb\n", true, "a\r\n.\r\nb\r\n", 6, false, 0);
	expect_read(".", true, ".\r\n", 1, false, 0);
}

static void test_limits(void)
{
	/* size: stored up to max, counted beyond */
	struct readres res;
	const char *in = "0123456789\n0123456789\n0123456789\n";
	read_all(&res, in, strlen(in), 7, false, 20);
	CHECK(res.r.flags & INJECT_TOO_BIG);
	CHECK_INT(res.r.size, 36);
	CHECK(res.out.len <= 20);
	buf_free(&res.out);
	read_all(&res, in, strlen(in), 0, false, 36);
	CHECK_INT(res.r.flags, 0);
	CHECK_INT(res.out.len, 36);
	buf_free(&res.out);

	/* line length: 998 is fine, 999 is not; the line number and length are kept */
	struct buf big;
	buf_init(&big, 0);
	buf_puts(&big, "Subject: long\n\n");
	for (int i = 0; i < 998; i++)
		buf_putc(&big, 'x');
	buf_puts(&big, "\n");
	read_all(&res, big.data, big.len, 0, false, 1 << 20);
	CHECK_INT(res.r.flags, 0);
	CHECK_INT(res.out.len, big.len + 3);
	buf_free(&res.out);
	for (int i = 0; i < 5000; i++)
		buf_putc(&big, 'y');
	buf_puts(&big, "\nend\n");
	for (size_t chunk = 1; chunk < 5000; chunk = chunk * 3 + 1) {
		read_all(&res, big.data, big.len, chunk, false, 1 << 20);
		CHECK_INT(res.r.flags, INJECT_LINE_TOO_LONG);
		CHECK_INT(res.r.long_line, 4);
		CHECK_INT(res.r.long_len, 5000);
		CHECK_INT(res.out.len, big.len + 5);      /* still read whole: CR added per line */
		buf_free(&res.out);
	}
	/* a long line that starts with a dot: the held dot counts */
	buf_reset(&big);
	buf_putc(&big, '.');
	for (int i = 0; i < 998; i++)
		buf_putc(&big, 'z');
	read_all(&res, big.data, big.len, 0, false, 1 << 20);
	CHECK_INT(res.r.flags, INJECT_LINE_TOO_LONG);
	CHECK_INT(res.r.long_len, 999);
	buf_free(&res.out);
	buf_free(&big);

	/* NUL: flagged with its line */
	read_all(&res, "a\nb\0c\n", 6, 0, false, 100);
	CHECK(res.r.flags & INJECT_NUL);
	CHECK_INT(res.r.nul_line, 2);
	buf_free(&res.out);
}

/* --- headers and addresses ---------------------------------------------------- */

static void expect_list(const char *value, int rc, const char *want)
{
	struct strlist l = { 0 };
	char err[300] = "";
	bool utf8 = false;
	CHECK_INT(inject_parse_address_list(value, &l, &utf8, err, sizeof(err)), rc);
	if (rc == 0) {
		struct buf joined;
		buf_init(&joined, 0);
		for (size_t i = 0; i < l.n; i++)
			buf_printf(&joined, "%s%s", i ? " " : "", l.v[i]);
		CHECK_STR(joined.data ? joined.data : "", want);
		buf_free(&joined);
	} else if (strstr(err, want) == NULL) {
		CHECK_STR(err, want);
	}
	strlist_free(&l);
}

static void test_address_lists(void)
{
	expect_list("bob@example.net", 0, "bob@example.net");
	expect_list(" <bob@example.net> ", 0, "bob@example.net");
	expect_list("Bob Smith <bob@example.net>, carol@example.org (Carol)", 0,
		    "bob@example.net carol@example.org");
	expect_list("\"Smith, Bob\" <bob@example.net>,\"Doe (J)\" <j@x.test>", 0,
		    "bob@example.net j@x.test");
	expect_list("team: a@x.test, B <b@y.test>;, c@z.test", 0, "a@x.test b@y.test c@z.test");
	expect_list("undisclosed-recipients:;", 0, "");
	expect_list("\"john doe\"@example.net", 0, "\"john doe\"@example.net");
	expect_list("a@[192.0.2.1], b@[IPv6:2001:db8::1]", 0, "a@[192.0.2.1] b@[IPv6:2001:db8::1]");
	expect_list("<@relay.test:a@x.test>", 0, "a@x.test");
	expect_list("a@x.test,,b@x.test,", 0, "a@x.test b@x.test");
	expect_list("(just (nested) comment) a@x.test", 0, "a@x.test");
	/* errors name what is wrong */
	expect_list("root", -1, "no domain");
	expect_list("Bob bob@example.net", -1, "not an address");
	expect_list("<bob@example.net", -1, "missing '>'");
	expect_list("\"unterminated@x.test", -1, "unterminated quoted string");
	expect_list("a@x.test (oops", -1, "unterminated comment");
	expect_list("a@-bad-.test", -1, "bad domain");
	expect_list("<a@x.test> junk", -1, "text after");

	char out[300], err[300];
	bool utf8 = false;
	CHECK_INT(inject_parse_address("<>", true, out, sizeof(out), &utf8, err, sizeof(err)), 0);
	CHECK_STR(out, "");
	CHECK_INT(inject_parse_address("", false, out, sizeof(out), &utf8, err, sizeof(err)), -1);
	CHECK_INT(inject_parse_address("App <app@example.org>", false, out, sizeof(out), &utf8, err,
					sizeof(err)), 0);
	CHECK_STR(out, "app@example.org");
	CHECK_INT(inject_parse_address("a@x.test, b@x.test", true, out, sizeof(out), &utf8, err,
					sizeof(err)), -1);
	CHECK(!utf8);
	CHECK_INT(inject_parse_address("j\xc3\xb6rg@example.org", false, out, sizeof(out), &utf8,
					err, sizeof(err)), 0);
	CHECK(utf8);
}

static void test_scan_headers(void)
{
	struct inject_header_info h;
	const char *m = "From alice Mon Nov 23 10:00:00 2026\r\n"
			"From: a@x.test\r\nDate: now\r\nMessage-Id: <1@x>\r\n"
			"Received: one\r\nReceived: two\r\nTLS-Required:\r\n  No \r\n\r\nbody\r\n";
	inject_scan_headers(m, strlen(m), &h);
	CHECK_INT(h.start, 37);
	CHECK(h.has_from && h.has_date && h.has_message_id && h.separator);
	CHECK_INT(h.received, 2);
	CHECK(h.tls_required_no);
	CHECK_STR(m + h.end, "\r\nbody\r\n");

	/* no empty line: the first non-header line starts the body */
	m = "Subject: x\r\nthis is text\r\n";
	inject_scan_headers(m, strlen(m), &h);
	CHECK(!h.separator && !h.has_from);
	CHECK_STR(m + h.end, "this is text\r\n");
	/* headers only */
	m = "Subject: x\r\n";
	inject_scan_headers(m, strlen(m), &h);
	CHECK_INT(h.end, strlen(m));
	CHECK(!h.separator);
	/* nothing */
	inject_scan_headers("", 0, &h);
	CHECK_INT(h.end, 0);
	/* a body that starts with a blank */
	m = " indented\r\n";
	inject_scan_headers(m, strlen(m), &h);
	CHECK_INT(h.end, 0);
	/* "TLS-Required: Not really" is not "No" */
	m = "TLS-Required: Not really\r\n\r\n";
	inject_scan_headers(m, strlen(m), &h);
	CHECK(!h.tls_required_no);
}

static void test_extract(void)
{
	/* -t: To, Cc, Bcc with folding; duplicates once; other headers ignored */
	const char *m = "To: Bob <bob@example.net>,\r\n\tcarol@example.org\r\n"
			"Subject: to: nobody@example.com\r\n"
			"cc: dave@example.com (Dave), bob@EXAMPLE.NET\r\n"
			"Bcc: \r\n  secret@example.com\r\n"
			"X-To: not@example.com\r\n\r\nTo: body@example.com\r\n";
	struct inject_header_info h;
	inject_scan_headers(m, strlen(m), &h);
	struct strlist r = { 0 };
	char err[300];
	bool utf8 = false;
	REQUIRE(inject_header_rcpts(m, &h, &r, &utf8, err, sizeof(err)) == 0);
	REQUIRE(r.n == 4);
	CHECK_STR(r.v[0], "bob@example.net");
	CHECK_STR(r.v[1], "carol@example.org");
	CHECK_STR(r.v[2], "dave@example.com");
	CHECK_STR(r.v[3], "secret@example.com");
	strlist_free(&r);

	/* Resent- fields win when present */
	m = "To: old@example.net\r\nResent-To: new@example.net\r\nResent-Bcc: hidden@example.net\r\n\r\n";
	inject_scan_headers(m, strlen(m), &h);
	CHECK(h.has_resent_rcpt);
	REQUIRE(inject_header_rcpts(m, &h, &r, &utf8, err, sizeof(err)) == 0);
	REQUIRE(r.n == 2);
	CHECK_STR(r.v[0], "new@example.net");
	CHECK_STR(r.v[1], "hidden@example.net");
	strlist_free(&r);

	/* a bad address names the header */
	m = "To: ok@example.net\r\nCc: root\r\n\r\n";
	inject_scan_headers(m, strlen(m), &h);
	CHECK_INT(inject_header_rcpts(m, &h, &r, &utf8, err, sizeof(err)), -1);
	CHECK(strstr(err, "Cc: header") != NULL && strstr(err, "root") != NULL);
	strlist_free(&r);
}

/* --- building ------------------------------------------------------------------------ */

static char *build(const char *msg, const char *sender, const char *fullname,
		   const struct strlist *rcpts)
{
	struct inject_header_info h;
	inject_scan_headers(msg, strlen(msg), &h);
	struct inject_build_params p = {
		.hostname = "relay.test",
		.qid = "0123456789AB",
		.now = 1795425000, /* Mon, 23 Nov 2026 09:10:00 +0000 */
		.uid = 1000,
		.login = "alice",
		.sender = sender,
		.fullname = fullname,
		.rcpts = rcpts,
	};
	struct buf out;
	buf_init(&out, 0);
	inject_build(&p, msg, strlen(msg), &h, &out);
	size_t n;
	return buf_steal(&out, &n);
}

static void test_build(void)
{
	struct strlist one = { 0 }, two = { 0 };
	strlist_add(&one, "bob@example.net");
	strlist_add(&two, "bob@example.net");
	strlist_add(&two, "carol@example.org");

	/* everything missing; one recipient: "for <...>" */
	char *got = build("Subject: hi\r\n\r\nhello\r\n", "alice@relay.test", "Alice Liddell", &one);
	CHECK_STR(got, "Received: by relay.test (strictrelay, from userid 1000)\r\n"
		       "\tid 0123456789AB\r\n\tfor <bob@example.net>; Mon, 23 Nov 2026 09:10:00 +0000\r\n"
		       "Subject: hi\r\n"
		       "From: Alice Liddell <alice@relay.test>\r\n"
		       "Date: Mon, 23 Nov 2026 09:10:00 +0000\r\n"
		       "Message-ID: <20261123091000.0123456789AB@relay.test>\r\n"
		       "\r\nhello\r\n");
	free(got);

	/* present headers are kept; Bcc (folded) and Resent-Bcc removed; two recipients */
	got = build("From: Me <me@x.test>\r\nDate: d\r\nMessage-ID: <m@x>\r\n"
		    "Bcc: a@x.test,\r\n b@x.test\r\nTo: t@x.test\r\nResent-Bcc: c@x.test\r\n"
		    "\r\nBcc: in the body stays\r\n",
		    "me@x.test", NULL, &two);
	CHECK_STR(got, "Received: by relay.test (strictrelay, from userid 1000)\r\n"
		       "\tid 0123456789AB; Mon, 23 Nov 2026 09:10:00 +0000\r\n"
		       "From: Me <me@x.test>\r\nDate: d\r\nMessage-ID: <m@x>\r\nTo: t@x.test\r\n"
		       "\r\nBcc: in the body stays\r\n");
	free(got);

	/* no headers at all: an empty line separates the added ones from the body;
	 * a null sender: From is the login; a name needing quotes */
	got = build("just text\r\n", "", "Smith, John", &one);
	CHECK(strstr(got, "From: \"Smith, John\" <alice@relay.test>\r\n") != NULL);
	CHECK(strstr(got, "@relay.test>\r\n\r\njust text\r\n") != NULL);
	free(got);

	/* an mbox "From " line is dropped; a non-ASCII name is RFC 2047 encoded */
	got = build("From alice Mon Nov 23 10:00:00 2026\r\nSubject: s\r\n\r\nb\r\n", "a@x.test",
		    "J\xc3\xb6rg", &one);
	CHECK(strstr(got, "From alice") == NULL);
	CHECK(strstr(got, "From: =?UTF-8?B?SsO2cmc=?= <a@x.test>\r\n") != NULL);
	free(got);

	/* an empty message */
	got = build("", "a@x.test", "", &one);
	CHECK(strstr(got, "\r\nFrom: <a@x.test>\r\nDate: ") != NULL);
	free(got);

	strlist_free(&one);
	strlist_free(&two);
}

int main(void)
{
	RUN(test_flags);
	RUN(test_line_endings);
	RUN(test_dots);
	RUN(test_limits);
	RUN(test_address_lists);
	RUN(test_scan_headers);
	RUN(test_extract);
	RUN(test_build);
	TEST_EXIT();
}
