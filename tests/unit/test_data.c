/* Unit tests for smtp/data.c: end of data, dot-unstuffing, smuggling variants. */
#include <stdint.h>

#include "smtp/data.h"
#include "test.h"

struct result {
	size_t consumed;
	bool done;
	unsigned flags;
	struct buf out;
};

/* Feeds in[] in chunks of `chunk` bytes (0 = all at once). */
static struct result feed(const char *in, size_t len, size_t chunk, bool normalize,
			  uint64_t max)
{
	struct smtp_data_reader r;
	struct result res = { 0 };
	smtp_data_init(&r, max, normalize);
	buf_init(&res.out, 0);
	size_t off = 0;
	while (off < len && !r.done) {
		size_t n = chunk ? chunk : len;
		if (n > len - off)
			n = len - off;
		size_t c = smtp_data_feed(&r, in + off, n, &res.out);
		off += c;
		if (c < n && !r.done) {
			CHECK(!"reader stopped early without end of data");
			break;
		}
	}
	res.consumed = off;
	res.done = r.done;
	res.flags = r.flags;
	return res;
}

static void expect(const char *in, size_t len, bool done, size_t consumed, const char *body,
		   unsigned flags, bool normalize)
{
	if (consumed == (size_t)-1)
		consumed = len;
	/* Same result whatever the chunking. */
	for (size_t chunk = 0; chunk <= len; chunk++) {
		struct result r = feed(in, len, chunk, normalize, 1 << 20);
		CHECK_INT(r.done, done);
		CHECK_INT(r.consumed, consumed);
		CHECK_INT(r.flags, flags);
		if (body != NULL)
			CHECK_STR(r.out.data ? r.out.data : "", body);
		buf_free(&r.out);
	}
}

#define EXPECT(lit, done, consumed, body, flags, norm) \
	expect(lit, sizeof(lit) - 1, done, consumed, body, flags, norm)
/* the whole input is one message */
#define ALL ((size_t)-1)

static void test_basic(void)
{
	EXPECT("Subject: x\r\n\r\nhello\r\n.\r\n", true, ALL, "Subject: x\r\n\r\nhello\r\n", 0,
	       false);
	/* empty message */
	EXPECT(".\r\n", true, ALL, "", 0, false);
	/* dot-unstuffing; ".." round-trips as "." */
	EXPECT("..foo\r\n..\r\n.\r\n", true, ALL, ".foo\r\n.\r\n", 0, false);
	/* pipelined command after the end is left unconsumed */
	EXPECT("a\r\n.\r\nQUIT\r\n", true, 6, "a\r\n", 0, false);
	/* not yet complete */
	EXPECT("a\r\n.\r", false, 5, NULL, 0, false);
}

static void test_smuggling_matrix(void)
{
	/* Every variant from the smtpsmug set: none may end the data, and the
	 * text after it (a would-be second message) stays inside this one. */
	static const struct {
		const char *seq;
		size_t len;
		unsigned flag;
	} v[] = {
		{ "\n.\n", 3, SMTP_DATA_BARE_LF },
		{ "\n.\r\n", 4, SMTP_DATA_BARE_LF },
		{ "\r\n.\n", 4, SMTP_DATA_BARE_LF },
		{ "\r.\r\n", 4, SMTP_DATA_BARE_CR },
		{ "\r\n.\r", 4, SMTP_DATA_BARE_CR },
		{ "\r\n\0.\r\n", 6, SMTP_DATA_NUL },
	};
	for (size_t i = 0; i < SR_ARRAY_LEN(v); i++) {
		char in[256];
		size_t n = 0;
		memcpy(in + n, "body", 4);
		n += 4;
		memcpy(in + n, v[i].seq, v[i].len);
		n += v[i].len;
		static const char tail[] = "MAIL FROM:<evil@x>\r\nRCPT TO:<v@y>\r\nDATA\r\nsmuggled\r\n";
		memcpy(in + n, tail, sizeof(tail) - 1);
		n += sizeof(tail) - 1;
		size_t before_end = n;
		memcpy(in + n, ".\r\n", 3);
		n += 3;
		for (int norm = 0; norm <= 1; norm++) {
			for (size_t chunk = 0; chunk <= 7; chunk++) {
				struct result r = feed(in, n, chunk, norm, 1 << 20);
				CHECK(r.done);
				/* the only end is the real one, at the very end */
				CHECK_INT(r.consumed, n);
				CHECK(r.flags & v[i].flag);
				/* the smuggled commands are message content */
				CHECK(r.out.data != NULL && strstr(r.out.data, "MAIL FROM:<evil@x>") != NULL);
				/* stored with CRLF only: no bare LF or CR survives */
				for (size_t k = 0; k < r.out.len; k++) {
					if (r.out.data[k] == '\n')
						CHECK(k > 0 && r.out.data[k - 1] == '\r');
					if (r.out.data[k] == '\r')
						CHECK(k + 1 < r.out.len && r.out.data[k + 1] == '\n');
				}
				(void)before_end;
				buf_free(&r.out);
			}
		}
	}
}

static void test_bare_lf_normalized(void)
{
	EXPECT("a\nb\r\n.\r\n", true, ALL, "a\r\nb\r\n", SMTP_DATA_BARE_LF, true);
	EXPECT("a\rb\r\n.\r\n", true, ALL, "a\r\nb\r\n", SMTP_DATA_BARE_CR, true);
	/* ".\n" is content "." (stored unstuffed as "."), not an end */
	EXPECT("x\r\n.\nmore\r\n.\r\n", true, ALL, "x\r\n.\r\nmore\r\n", SMTP_DATA_BARE_LF, true);
}

static void test_line_length(void)
{
	char in[2100];
	size_t n = 0;
	memset(in, 'a', 998);
	n = 998;
	memcpy(in + n, "\r\n.\r\n", 5);
	n += 5;
	struct result r = feed(in, n, 0, false, 1 << 20);
	CHECK(r.done);
	CHECK_INT(r.flags & SMTP_DATA_LINE_TOO_LONG, 0);
	buf_free(&r.out);

	memset(in, 'a', 999);
	n = 999;
	memcpy(in + n, "\r\n.\r\n", 5);
	n += 5;
	r = feed(in, n, 100, false, 1 << 20);
	CHECK(r.done);
	CHECK(r.flags & SMTP_DATA_LINE_TOO_LONG);
	buf_free(&r.out);

	/* a stuffed line of 998 content octets is fine (999 on the wire) */
	in[0] = '.';
	memset(in + 1, 'b', 998);
	n = 999;
	memcpy(in + n, "\r\n.\r\n", 5);
	n += 5;
	r = feed(in, n, 0, false, 1 << 20);
	CHECK(r.done);
	CHECK_INT(r.flags & SMTP_DATA_LINE_TOO_LONG, 0);
	buf_free(&r.out);
}

static void test_size_limit(void)
{
	static const char in[] = "0123456789\r\n0123456789\r\n.\r\n";
	/* 24 octets of message */
	struct result r = feed(in, sizeof(in) - 1, 0, false, 24);
	CHECK(r.done);
	CHECK_INT(r.flags & SMTP_DATA_TOO_BIG, 0);
	CHECK_INT(r.out.len, 24);
	buf_free(&r.out);
	r = feed(in, sizeof(in) - 1, 5, false, 23);
	CHECK(r.done); /* reads on to the end */
	CHECK(r.flags & SMTP_DATA_TOO_BIG);
	CHECK(r.out.len <= 23);
	buf_free(&r.out);
}

static void test_8bit(void)
{
	EXPECT("caf\xc3\xa9\r\n.\r\n", true, ALL, "caf\xc3\xa9\r\n", SMTP_DATA_8BIT, false);
}

static void check_stuff(const char *msg, const char *wire)
{
	struct buf out;
	buf_init(&out, 0);
	smtp_data_stuff(msg, strlen(msg), &out);
	CHECK_STR(out.data, wire);
	/* and the reader turns it back into the message (modulo final CRLF) */
	struct result r = feed(out.data, out.len, 0, false, 1 << 20);
	CHECK(r.done);
	CHECK_INT(r.consumed, out.len);
	buf_free(&r.out);
	buf_free(&out);
}

static void test_stuff(void)
{
	check_stuff("a\r\n.b\r\n.\r\n", "a\r\n..b\r\n..\r\n.\r\n");
	check_stuff("no final newline", "no final newline\r\n.\r\n");
	check_stuff("bare\nlf\rcr\r\n", "bare\r\nlf\r\ncr\r\n.\r\n");
	check_stuff("x\n.\n", "x\r\n..\r\n.\r\n");
	check_stuff("", ".\r\n");
}

int main(void)
{
	RUN(test_basic);
	RUN(test_smuggling_matrix);
	RUN(test_bare_lf_normalized);
	RUN(test_line_length);
	RUN(test_size_limit);
	RUN(test_8bit);
	RUN(test_stuff);
	TEST_EXIT();
}
