/* Unit tests for smtp/reply.c: reply parsing (whole, in every chunk size,
 * pipelined), caps and garbage, enhanced codes, rendering, EHLO capabilities. */
#include <stdint.h>

#include "mta/util.h"
#include "smtp/reply.h"
#include "test.h"

/* Parsers are 66 KiB: keep them off the stack. */
static struct smtp_reply_parser P;

/* Feeds in[] in chunks of `chunk` bytes (0 = all at once) until the parser
 * has an answer; *used gets the bytes consumed in all. */
static enum smtp_reply_status feed_chunks(struct smtp_reply_parser *p, const char *in, size_t len,
					  size_t chunk, size_t *used)
{
	size_t off = 0;
	enum smtp_reply_status st = REPLY_NEED_MORE;
	while (off < len) {
		size_t n = chunk ? chunk : len;
		if (n > len - off)
			n = len - off;
		size_t c = 12345;
		st = smtp_reply_feed(p, in + off, n, &c);
		CHECK(c <= n);
		off += c;
		if (st != REPLY_NEED_MORE)
			break;
		CHECK_INT(c, n);
	}
	*used = off;
	return st;
}

struct reply_case {
	const char *in;
	enum smtp_reply_status st;
	size_t consumed;      /* (size_t)-1: all of in */
	int code;
	const char *enhanced;
	size_t nlines;
	const char *render;   /* or the error reason for REPLY_ERROR (NULL: any) */
	const char *status;   /* smtp_reply_status() */
};

#define ALL ((size_t)-1)
#define E_CODE "reply does not start with a 3-digit code 100..599"
#define E_SEP "reply code not followed by a space, '-' or end of line"
#define E_CHANGED "reply code changed on a continuation line"

static const struct reply_case cases[] = {
	{ "250 OK\r\n", REPLY_DONE, ALL, 250, "", 1, "250 OK", "2.0.0" },
	{ "250 ok\n", REPLY_DONE, ALL, 250, "", 1, "250 ok", "2.0.0" },  /* bare LF */
	{ "250\r\n", REPLY_DONE, ALL, 250, "", 1, "250", "2.0.0" },      /* no text */
	{ "250\n", REPLY_DONE, ALL, 250, "", 1, "250", "2.0.0" },
	{ "250 \r\n", REPLY_DONE, ALL, 250, "", 1, "250", "2.0.0" },
	{ "220 mx.example.com ESMTP ready\r\n", REPLY_DONE, ALL, 220, "", 1,
	  "220 mx.example.com ESMTP ready", "2.0.0" },
	{ "250-mx.example.com Hello\r\n250-PIPELINING\r\n250 SIZE 1000\r\n", REPLY_DONE, ALL, 250,
	  "", 3, "250 mx.example.com Hello PIPELINING SIZE 1000", "2.0.0" },
	{ "250-a\n250-\r\n250 b\r\n", REPLY_DONE, ALL, 250, "", 3, "250 a b", "2.0.0" },
	{ "550 5.1.1 <x@y>: no such user\r\n", REPLY_DONE, ALL, 550, "5.1.1", 1,
	  "550 5.1.1 <x@y>: no such user", "5.1.1" },
	/* the enhanced code is shown once, also when every line repeats it */
	{ "550-5.1.1 The account\r\n550-5.1.1 does not exist.\r\n550 5.1.1 See help.\r\n",
	  REPLY_DONE, ALL, 550, "5.1.1", 3, "550 5.1.1 The account does not exist. See help.",
	  "5.1.1" },
	{ "250 2.0.0\r\n", REPLY_DONE, ALL, 250, "2.0.0", 1, "250 2.0.0", "2.0.0" },
	{ "550 5.7.30 REQUIRETLS support required\r\n", REPLY_DONE, ALL, 550, "5.7.30", 1,
	  "550 5.7.30 REQUIRETLS support required", "5.7.30" },
	{ "451 4.123.456 x\r\n", REPLY_DONE, ALL, 451, "4.123.456", 1, "451 4.123.456 x",
	  "4.123.456" },
	/* not enhanced codes: wrong class, bad form, trailing junk */
	{ "550 4.1.1 mismatch\r\n", REPLY_DONE, ALL, 550, "", 1, "550 4.1.1 mismatch", "5.0.0" },
	{ "250 5.0.0 mismatch\r\n", REPLY_DONE, ALL, 250, "", 1, "250 5.0.0 mismatch", "2.0.0" },
	{ "451 4.7.1234 x\r\n", REPLY_DONE, ALL, 451, "", 1, "451 4.7.1234 x", "4.0.0" },
	{ "451 4.7 x\r\n", REPLY_DONE, ALL, 451, "", 1, "451 4.7 x", "4.0.0" },
	{ "451 4..1 x\r\n", REPLY_DONE, ALL, 451, "", 1, "451 4..1 x", "4.0.0" },
	{ "250 2.0.0ok\r\n", REPLY_DONE, ALL, 250, "", 1, "250 2.0.0ok", "2.0.0" },
	{ "354 3.0.0 go ahead\r\n", REPLY_DONE, ALL, 354, "", 1, "354 3.0.0 go ahead", "4.0.0" },
	/* enhanced codes come from the first line only */
	{ "550-no code here\r\n550 5.1.1 late\r\n", REPLY_DONE, ALL, 550, "", 2,
	  "550 no code here 5.1.1 late", "5.0.0" },
	{ "421 4.4.2 closing\r\n", REPLY_DONE, ALL, 421, "4.4.2", 1, "421 4.4.2 closing", "4.4.2" },
	{ "100 x\r\n", REPLY_DONE, ALL, 100, "", 1, "100 x", "4.0.0" },
	{ "599 x\r\n", REPLY_DONE, ALL, 599, "", 1, "599 x", "5.0.0" },
	/* a CR inside a line is text, escaped when rendered */
	{ "250 a\rb\r\n", REPLY_DONE, ALL, 250, "", 1, "250 a\\x0Db", "2.0.0" },
	{ "250 a\r\r\n", REPLY_DONE, ALL, 250, "", 1, "250 a\\x0D", "2.0.0" },
	/* escaping: controls and 8-bit octets (a backslash stays as it is) */
	{ "550 caf\xc3\xa9 \\ \x1b[31m\x7f\r\n", REPLY_DONE, ALL, 550, "", 1,
	  "550 caf\\xC3\\xA9 \\ \\x1B[31m\\x7F", "5.0.0" },
	/* consumed stops after the final line */
	{ "220 ready\r\nEHLO", REPLY_DONE, 11, 220, "", 1, "220 ready", "2.0.0" },
	{ "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n", REPLY_DONE, 14, 250, "2.1.0", 1, "250 2.1.0 Ok",
	  "2.1.0" },
	{ "250 a\n\n", REPLY_DONE, 6, 250, "", 1, "250 a", "2.0.0" },
	/* incomplete */
	{ "250 OK\r", REPLY_NEED_MORE, ALL, 0, NULL, 0, NULL, NULL },
	{ "250-a\r\n250", REPLY_NEED_MORE, ALL, 0, NULL, 0, NULL, NULL },
	{ "25", REPLY_NEED_MORE, ALL, 0, NULL, 0, NULL, NULL },
	/* garbage */
	{ "25O ok\r\n", REPLY_ERROR, 3, 0, NULL, 0, E_CODE, NULL },
	{ "abc\r\n", REPLY_ERROR, 1, 0, NULL, 0, E_CODE, NULL },
	{ "099 x\r\n", REPLY_ERROR, 1, 0, NULL, 0, E_CODE, NULL },
	{ "600 x\r\n", REPLY_ERROR, 1, 0, NULL, 0, E_CODE, NULL },
	{ "\r\n", REPLY_ERROR, 1, 0, NULL, 0, E_CODE, NULL },
	{ "2\r\n", REPLY_ERROR, 2, 0, NULL, 0, E_CODE, NULL },
	{ " 250 x\r\n", REPLY_ERROR, 1, 0, NULL, 0, NULL, NULL },
	{ "250x\r\n", REPLY_ERROR, 4, 0, NULL, 0, E_SEP, NULL },
	{ "250\tx\r\n", REPLY_ERROR, 4, 0, NULL, 0, NULL, NULL },
	{ "250\rX", REPLY_ERROR, 5, 0, NULL, 0, E_SEP, NULL },
	{ "2500 x\r\n", REPLY_ERROR, 4, 0, NULL, 0, NULL, NULL },
	{ "250-a\r\n251 b\r\n", REPLY_ERROR, 10, 0, NULL, 0, E_CHANGED, NULL },
	{ "250-a\r\n550 b\r\n", REPLY_ERROR, 10, 0, NULL, 0, E_CHANGED, NULL },
	{ "250-a\r\nhello\r\n", REPLY_ERROR, 8, 0, NULL, 0, NULL, NULL },
	{ "250-a\r\n\r\n250 b\r\n", REPLY_ERROR, 8, 0, NULL, 0, NULL, NULL },
	{ "250 a\0b\r\n", REPLY_ERROR, 6, 0, NULL, 0, "NUL octet in reply", NULL },
};

static void check_case(const struct reply_case *c, size_t len, size_t chunk)
{
	smtp_reply_init(&P);
	size_t used = 0;
	enum smtp_reply_status st = feed_chunks(&P, c->in, len, chunk, &used);
	CHECK_INT(st, c->st);
	CHECK_INT(used, c->consumed == ALL ? len : c->consumed);
	if (st != c->st) {
		fprintf(stderr, "  input \"%s\" chunk %zu: %s\n", c->in, chunk,
			smtp_reply_error(&P));
		return;
	}
	if (st == REPLY_ERROR) {
		CHECK(smtp_reply_get(&P) == NULL);
		CHECK(smtp_reply_error(&P)[0] != '\0');
		if (c->render != NULL)
			CHECK_STR(smtp_reply_error(&P), c->render);
		return;
	}
	if (st == REPLY_NEED_MORE) {
		CHECK(smtp_reply_get(&P) == NULL);
		CHECK_STR(smtp_reply_error(&P), "");
		return;
	}
	const struct smtp_reply *r = smtp_reply_get(&P);
	REQUIRE(r != NULL);
	CHECK_INT(r->code, c->code);
	CHECK_STR(r->enhanced, c->enhanced);
	CHECK_INT(r->nlines, c->nlines);
	char out[512];
	CHECK_STR(smtp_reply_render(r, out, sizeof(out)), c->render);
	CHECK_STR(smtp_reply_status(r), c->status);
}

static void test_table(void)
{
	for (size_t i = 0; i < SR_ARRAY_LEN(cases); i++) {
		/* the NUL case needs its real length */
		size_t len = strlen(cases[i].in);
		if (strncmp(cases[i].in, "250 a", 5) == 0 && cases[i].in[5] == '\0' &&
		    cases[i].st == REPLY_ERROR)
			len = 9;
		/* Same answer whatever the chunking, one byte at a time included. */
		for (size_t chunk = 0; chunk <= len; chunk++)
			check_case(&cases[i], len, chunk);
	}
}

static void test_lines(void)
{
	static const char in[] = "250-mx.example.com greets you\r\n250-PIPELINING\r\n250-\r\n"
				 "250 2.0.0 last\r\n";
	size_t used;
	smtp_reply_init(&P);
	REQUIRE(smtp_reply_feed(&P, in, sizeof(in) - 1, &used) == REPLY_DONE);
	const struct smtp_reply *r = smtp_reply_get(&P);
	REQUIRE(r != NULL);
	CHECK_INT(r->nlines, 4);
	CHECK_STR(smtp_reply_line(r, 0), "mx.example.com greets you");
	CHECK_STR(smtp_reply_line(r, 1), "PIPELINING");
	CHECK_STR(smtp_reply_line(r, 2), "");
	CHECK_STR(smtp_reply_line(r, 3), "2.0.0 last");
	CHECK_STR(smtp_reply_line(r, 4), "");
	/* the first line has no enhanced code, so none is shown or stripped */
	CHECK_STR(r->enhanced, "");
	char out[128];
	CHECK_STR(smtp_reply_text(r, out, sizeof(out)),
		  "mx.example.com greets you PIPELINING 2.0.0 last");
}

static void test_pipelined(void)
{
	/* MAIL, RCPT, RCPT, DATA replies in one read (RFC 2920) */
	static const char in[] = "250 2.1.0 Ok\r\n550-5.1.1 no\r\n550 5.1.1 such user\r\n"
				 "250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n";
	static const struct {
		int code;
		const char *render;
	} want[] = {
		{ 250, "250 2.1.0 Ok" },
		{ 550, "550 5.1.1 no such user" },
		{ 250, "250 2.1.5 Ok" },
		{ 354, "354 End data with <CR><LF>.<CR><LF>" },
	};
	for (size_t chunk = 0; chunk <= 8; chunk++) {
		smtp_reply_init(&P);
		size_t off = 0, k = 0, len = sizeof(in) - 1;
		while (off < len) {
			size_t n = chunk ? chunk : len - off;
			if (n > len - off)
				n = len - off;
			size_t used;
			enum smtp_reply_status st = smtp_reply_feed(&P, in + off, n, &used);
			off += used;
			REQUIRE(st != REPLY_ERROR);
			if (st == REPLY_DONE) {
				REQUIRE(k < SR_ARRAY_LEN(want));
				const struct smtp_reply *r = smtp_reply_get(&P);
				char out[128];
				CHECK_INT(r->code, want[k].code);
				CHECK_STR(smtp_reply_render(r, out, sizeof(out)), want[k].render);
				k++;
			}
		}
		CHECK_INT(k, SR_ARRAY_LEN(want));
	}
	/* the reply stays until the next feed, which starts a new one */
	smtp_reply_init(&P);
	size_t used;
	CHECK_INT(smtp_reply_feed(&P, "250 a\r\n", 7, &used), REPLY_DONE);
	CHECK(smtp_reply_get(&P) != NULL);
	CHECK_INT(smtp_reply_feed(&P, "25", 2, &used), REPLY_NEED_MORE);
	CHECK(smtp_reply_get(&P) == NULL);
	CHECK_INT(smtp_reply_feed(&P, "1 b\r\n", 5, &used), REPLY_DONE);
	CHECK_INT(smtp_reply_get(&P)->code, 251);
}

/* Builds n lines of `width` octets each (code and separator included). */
static char *make_reply(size_t n, size_t width, size_t *len)
{
	char *s = xmalloc(n * (width + 2) + 1);
	size_t o = 0;
	for (size_t i = 0; i < n; i++) {
		memcpy(s + o, i + 1 < n ? "250-" : "250 ", 4);
		memset(s + o + 4, 'a', width - 4);
		o += width;
		memcpy(s + o, "\r\n", 2);
		o += 2;
	}
	s[o] = '\0';
	*len = o;
	return s;
}

static enum smtp_reply_status feed_all(const char *in, size_t len, size_t chunk)
{
	size_t used;
	smtp_reply_init(&P);
	return feed_chunks(&P, in, len, chunk, &used);
}

static void test_caps(void)
{
	size_t len;
	char *s;
	/* line length: 2048 octets without the EOL is the most */
	s = make_reply(1, SMTP_REPLY_MAX_LINE, &len);
	CHECK_INT(feed_all(s, len, 0), REPLY_DONE);
	CHECK_INT(strlen(smtp_reply_line(smtp_reply_get(&P), 0)), SMTP_REPLY_MAX_LINE - 4);
	free(s);
	s = make_reply(1, SMTP_REPLY_MAX_LINE + 1, &len);
	CHECK_INT(feed_all(s, len, 0), REPLY_ERROR);
	CHECK_STR(smtp_reply_error(&P), "reply line longer than 2048 octets");
	CHECK_INT(feed_all(s, len, 1), REPLY_ERROR);
	free(s);
	/* the line cap also holds on a line that never ends */
	s = xmalloc(10000);
	memcpy(s, "250 ", 4);
	memset(s + 4, 'x', 9996);
	CHECK_INT(feed_all(s, 10000, 0), REPLY_ERROR);
	free(s);
	/* a CR before the LF is not part of the line */
	s = make_reply(1, SMTP_REPLY_MAX_LINE, &len);
	CHECK_INT(feed_all(s, len, 1), REPLY_DONE);
	free(s);

	/* 200 lines is the most */
	s = make_reply(SMTP_REPLY_MAX_LINES, 10, &len);
	CHECK_INT(feed_all(s, len, 0), REPLY_DONE);
	CHECK_INT(smtp_reply_get(&P)->nlines, SMTP_REPLY_MAX_LINES);
	free(s);
	s = make_reply(SMTP_REPLY_MAX_LINES + 1, 10, &len);
	CHECK_INT(feed_all(s, len, 0), REPLY_ERROR);
	CHECK_STR(smtp_reply_error(&P), "reply with more than 200 lines");
	free(s);

	/* 64 KiB in all */
	s = make_reply(32, 2000, &len); /* 64064 octets */
	CHECK_INT(feed_all(s, len, 0), REPLY_DONE);
	free(s);
	s = make_reply(40, 2000, &len); /* 80080 octets */
	CHECK_INT(feed_all(s, len, 0), REPLY_ERROR);
	CHECK_STR(smtp_reply_error(&P), "reply longer than 65536 octets");
	CHECK_INT(feed_all(s, len, 7), REPLY_ERROR);
	free(s);
	/* exactly 65536 octets: 32 lines of 2046 + CRLF = 65536 */
	s = make_reply(32, 2046, &len);
	CHECK_INT(len, 65536);
	CHECK_INT(feed_all(s, len, 0), REPLY_DONE);
	free(s);
	s = make_reply(32, 2047, &len);
	CHECK_INT(feed_all(s, len, 0), REPLY_ERROR);
	free(s);

	/* errors stick until init */
	size_t used;
	smtp_reply_init(&P);
	CHECK_INT(smtp_reply_feed(&P, "xyz\r\n", 5, &used), REPLY_ERROR);
	CHECK_INT(smtp_reply_feed(&P, "250 ok\r\n", 8, &used), REPLY_ERROR);
	CHECK_INT(used, 0);
	smtp_reply_init(&P);
	CHECK_INT(smtp_reply_feed(&P, "250 ok\r\n", 8, &used), REPLY_DONE);
	/* an empty feed */
	smtp_reply_init(&P);
	CHECK_INT(smtp_reply_feed(&P, "", 0, &used), REPLY_NEED_MORE);
	CHECK_INT(used, 0);
}

static void test_render_truncation(void)
{
	size_t used;
	smtp_reply_init(&P);
	static const char in[] = "550 5.1.1 abc\x01\x02\x03" "def\r\n";
	REQUIRE(smtp_reply_feed(&P, in, sizeof(in) - 1, &used) == REPLY_DONE);
	const struct smtp_reply *r = smtp_reply_get(&P);
	char full[128];
	smtp_reply_render(r, full, sizeof(full));
	CHECK_STR(full, "550 5.1.1 abc\\x01\\x02\\x03def");
	/* every size: a prefix of the full rendering or a cut one ending in
	 * "...", never half an escape */
	for (size_t n = 0; n <= strlen(full) + 1; n++) {
		char out[128];
		memset(out, '#', sizeof(out));
		smtp_reply_render(r, out, n);
		if (n == 0) {
			CHECK(out[0] == '#');
			continue;
		}
		size_t l = strlen(out);
		CHECK(l < n);
		if (n > strlen(full)) {
			CHECK_STR(out, full);
			continue;
		}
		if (n >= 4) {
			REQUIRE(l >= 3);
			CHECK(memcmp(out + l - 3, "...", 3) == 0);
			CHECK(strncmp(out, full, l - 3) == 0);
			/* the kept part ends at a unit boundary: no dangling "\x0" */
			const char *bs = strrchr(out, '\\');
			if (bs != NULL && bs + 4 <= out + l - 3)
				CHECK(bs[1] == 'x');
			if (bs != NULL)
				CHECK(out + l - 3 - bs >= 4);
		}
	}
	char tiny[8];
	smtp_reply_render(r, tiny, sizeof(tiny));
	CHECK_STR(tiny, "550 ...");
}

static const struct smtp_reply *parse(const char *in)
{
	size_t used;
	smtp_reply_init(&P);
	if (smtp_reply_feed(&P, in, strlen(in), &used) != REPLY_DONE)
		return NULL;
	return smtp_reply_get(&P);
}

static void test_ehlo(void)
{
	struct smtp_caps caps;
	memset(&caps, 0, sizeof(caps));
	const struct smtp_reply *r = parse("250-mx.example.com Hello [192.0.2.1]\r\n"
					   "250-PIPELINING\r\n"
					   "250-SIZE 35882577\r\n"
					   "250-8BITMIME\r\n"
					   "250-STARTTLS\r\n"
					   "250-ENHANCEDSTATUSCODES\r\n"
					   "250-SMTPUTF8\r\n"
					   "250-REQUIRETLS\r\n"
					   "250-DSN\r\n"
					   "250-CHUNKING\r\n"
					   "250-AUTH PLAIN LOGIN\r\n"
					   "250-X-UNKNOWN foo bar\r\n"
					   "250 VRFY\r\n");
	REQUIRE(r != NULL);
	CHECK_INT(smtp_caps_parse(r, &caps), 0);
	CHECK_STR(caps.name, "mx.example.com");
	CHECK(caps.pipelining && caps.eightbitmime && caps.starttls && caps.enhancedstatuscodes &&
	      caps.smtputf8 && caps.requiretls && caps.dsn && caps.chunking && caps.size &&
	      caps.auth);
	CHECK_INT(caps.size_limit, 35882577);
	CHECK_STR(caps.auth_mechs, "PLAIN LOGIN");

	/* TLS-02: a new EHLO reply replaces everything */
	r = parse("250-mx2.example.com\r\n250 8BITMIME\r\n");
	REQUIRE(r != NULL);
	CHECK_INT(smtp_caps_parse(r, &caps), 0);
	CHECK_STR(caps.name, "mx2.example.com");
	CHECK(caps.eightbitmime);
	CHECK(!caps.starttls && !caps.requiretls && !caps.pipelining && !caps.size && !caps.auth);
	CHECK_INT(caps.size_limit, 0);
	CHECK_STR(caps.auth_mechs, "");

	/* keywords in any case; near-misses are unknown */
	r = parse("250-mx\r\n250-starttls\r\n250-RequireTLS\r\n250-pipelining\r\n250-STARTTLSX\r\n"
		  "250-SIZEX 10\r\n250-XDSN\r\n250 smtputf8\r\n");
	REQUIRE(r != NULL);
	CHECK_INT(smtp_caps_parse(r, &caps), 0);
	CHECK(caps.starttls && caps.requiretls && caps.pipelining && caps.smtputf8);
	CHECK(!caps.size && !caps.dsn);

	/* the first line is the name, never a keyword */
	r = parse("250 STARTTLS\r\n");
	REQUIRE(r != NULL);
	smtp_caps_parse(r, &caps);
	CHECK_STR(caps.name, "STARTTLS");
	CHECK(!caps.starttls);

	/* SIZE forms */
	static const struct {
		const char *line;
		uint64_t limit;
	} sizes[] = {
		{ "SIZE", 0 },
		{ "SIZE 0", 0 },
		{ "SIZE 1", 1 },
		{ "size 10240000", 10240000 },
		{ "SIZE  100", 100 },
		{ "SIZE 100 ", 100 },
		{ "SIZE 18446744073709551615", UINT64_MAX },
		{ "SIZE 18446744073709551614", UINT64_MAX - 1 },
		{ "SIZE 18446744073709551616", UINT64_MAX },       /* overflow saturates */
		{ "SIZE 99999999999999999999", UINT64_MAX },       /* 20 digits */
		{ "SIZE 123456789012345678901234567890", UINT64_MAX },
		{ "SIZE abc", 0 },
		{ "SIZE 12abc", 0 },
		{ "SIZE -5", 0 },
	};
	for (size_t i = 0; i < SR_ARRAY_LEN(sizes); i++) {
		char in[128];
		snprintf(in, sizeof(in), "250-mx\r\n250 %s\r\n", sizes[i].line);
		r = parse(in);
		REQUIRE(r != NULL);
		CHECK_INT(smtp_caps_parse(r, &caps), 0);
		CHECK(caps.size);
		if (caps.size_limit != sizes[i].limit)
			fprintf(stderr, "  %s -> %llu\n", sizes[i].line,
				(unsigned long long)caps.size_limit);
		CHECK(caps.size_limit == sizes[i].limit);
	}

	/* AUTH: the RFC 4954 form wins over the old "AUTH=" one */
	r = parse("250-mx\r\n250-AUTH=LOGIN\r\n250 AUTH PLAIN LOGIN CRAM-MD5\r\n");
	REQUIRE(r != NULL);
	smtp_caps_parse(r, &caps);
	CHECK(caps.auth);
	CHECK_STR(caps.auth_mechs, "PLAIN LOGIN CRAM-MD5");
	r = parse("250-mx\r\n250 AUTH=LOGIN PLAIN\r\n");
	REQUIRE(r != NULL);
	smtp_caps_parse(r, &caps);
	CHECK(caps.auth);
	CHECK_STR(caps.auth_mechs, "LOGIN PLAIN");
	r = parse("250-mx\r\n250 AUTH\r\n");
	REQUIRE(r != NULL);
	smtp_caps_parse(r, &caps);
	CHECK(caps.auth);
	CHECK_STR(caps.auth_mechs, "");

	/* names: printable ASCII only, capped */
	r = parse("250-mx\x01.ex\xc3\xa9 hi\r\n250 DSN\r\n");
	REQUIRE(r != NULL);
	smtp_caps_parse(r, &caps);
	CHECK_STR(caps.name, "mx?.ex??");
	char longname[700];
	memcpy(longname, "250 ", 4);
	memset(longname + 4, 'n', 600);
	memcpy(longname + 604, "\r\n", 3);
	r = parse(longname);
	REQUIRE(r != NULL);
	smtp_caps_parse(r, &caps);
	CHECK_INT(strlen(caps.name), SMTP_CAPS_NAME_MAX - 1);

	/* not a 2xx: -1 and no capabilities, the name kept */
	strcpy(caps.name, "kept.example");
	caps.starttls = true;
	r = parse("550 go away\r\n");
	REQUIRE(r != NULL);
	CHECK_INT(smtp_caps_parse(r, &caps), -1);
	CHECK(!caps.starttls);
	CHECK_STR(caps.name, "kept.example");
	/* an EHLO reply naming nobody keeps the greeting's name */
	r = parse("250-\r\n250 STARTTLS\r\n");
	REQUIRE(r != NULL);
	CHECK_INT(smtp_caps_parse(r, &caps), 0);
	CHECK_STR(caps.name, "kept.example");
	CHECK(caps.starttls);
}

static void test_greeting_name(void)
{
	struct smtp_caps caps;
	memset(&caps, 0, sizeof(caps));
	const struct smtp_reply *r = parse("220 mx.example.com ESMTP Postfix\r\n");
	REQUIRE(r != NULL);
	smtp_caps_name_from_greeting(r, &caps);
	CHECK_STR(caps.name, "mx.example.com");
	CHECK(!caps.starttls);
	r = parse("220-mx1.example.net welcome\r\n220 more\r\n");
	REQUIRE(r != NULL);
	smtp_caps_name_from_greeting(r, &caps);
	CHECK_STR(caps.name, "mx1.example.net");
	/* an EHLO reply then names the server anew */
	r = parse("250-mx1-ehlo.example.net\r\n250 PIPELINING\r\n");
	REQUIRE(r != NULL);
	smtp_caps_parse(r, &caps);
	CHECK_STR(caps.name, "mx1-ehlo.example.net");
}

static void test_enhanced_scan(void)
{
	CHECK_INT(smtp_enhanced_scan("5.1.1", 5, 550), 5);
	CHECK_INT(smtp_enhanced_scan("5.1.1 x", 7, 550), 5);
	CHECK_INT(smtp_enhanced_scan("5.1.10", 6, 550), 6);
	CHECK_INT(smtp_enhanced_scan("5.1.1", 5, 450), 0);
	CHECK_INT(smtp_enhanced_scan("3.1.1", 5, 354), 0);
	CHECK_INT(smtp_enhanced_scan("5.1.1x", 6, 550), 0);
	CHECK_INT(smtp_enhanced_scan("5.1.", 4, 550), 0);
	CHECK_INT(smtp_enhanced_scan("5.1111.1", 8, 550), 0);
	CHECK_INT(smtp_enhanced_scan("5.1.1111", 8, 550), 0);
	CHECK_INT(smtp_enhanced_scan("5.1.1", 3, 550), 0);
	CHECK_STR(smtp_status_generic(250), "2.0.0");
	CHECK_STR(smtp_status_generic(451), "4.0.0");
	CHECK_STR(smtp_status_generic(554), "5.0.0");
	CHECK_STR(smtp_status_generic(354), "4.0.0");
}

int main(void)
{
	RUN(test_table);
	RUN(test_lines);
	RUN(test_pipelined);
	RUN(test_caps);
	RUN(test_render_truncation);
	RUN(test_ehlo);
	RUN(test_greeting_name);
	RUN(test_enhanced_scan);
	TEST_EXIT();
}
