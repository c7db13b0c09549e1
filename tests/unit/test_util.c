/* Unit tests for mta/util.c: allocation helpers, capped buffers, string lists,
 * string helpers, str_quote, time formatting, randomness. */
#include "mta/util.h"
#include "test.h"

#include <stdint.h>

static void test_alloc(void)
{
	char *p = xmalloc(0);
	CHECK(p != NULL);
	free(p);
	int *z = xcalloc(4, sizeof(int));
	CHECK(z[0] == 0 && z[3] == 0);
	z = xrealloc(z, 100 * sizeof(int));
	z[99] = 7;
	CHECK_INT(z[99], 7);
	free(z);
	p = xstrndup("abcdef", 3);
	CHECK_STR(p, "abc");
	free(p);
	p = xstrdup("");
	CHECK_STR(p, "");
	free(p);
	p = xasprintf("%s-%d-%05.1f", "x", 42, 3.14159);
	CHECK_STR(p, "x-42-003.1");
	free(p);
	p = xasprintf("%s", "");
	CHECK_STR(p, "");
	free(p);
}

static void test_buf_basic(void)
{
	struct buf b;
	buf_init(&b, 0);
	CHECK(b.data == NULL);
	CHECK_INT(buf_puts(&b, "hello"), 0);
	CHECK_INT(buf_putc(&b, ' '), 0);
	CHECK_INT(buf_printf(&b, "%s %d", "world", 7), 0);
	CHECK_STR(b.data, "hello world 7");
	CHECK_INT(b.len, 13);
	CHECK(b.data[b.len] == '\0');
	buf_consume(&b, 6);
	CHECK_STR(b.data, "world 7");
	CHECK_INT(b.len, 7);
	buf_consume(&b, 100);
	CHECK_STR(b.data, "");
	CHECK_INT(b.len, 0);
	/* Binary data with NULs is kept; the terminator is still added. */
	CHECK_INT(buf_append(&b, "a\0b", 3), 0);
	CHECK_INT(b.len, 3);
	CHECK(memcmp(b.data, "a\0b", 4) == 0);
	buf_reset(&b);
	CHECK_INT(b.len, 0);
	CHECK_STR(b.data, "");
	CHECK_INT(buf_append(&b, NULL, 0), 0);
	CHECK_INT(b.len, 0);
	/* Growth well beyond the first allocation. */
	for (int i = 0; i < 10000; i++)
		CHECK_INT(buf_putc(&b, (char)('a' + i % 26)), 0);
	CHECK_INT(b.len, 10000);
	CHECK(b.cap > b.len);
	CHECK(b.data[9999] == 'a' + 9999 % 26 && b.data[10000] == '\0');
	buf_free(&b);
	CHECK(b.data == NULL);
	CHECK_INT(b.len, 0);
	/* Empty printf on a fresh buffer still yields a string. */
	buf_init(&b, 0);
	CHECK_INT(buf_printf(&b, "%s", ""), 0);
	REQUIRE(b.data != NULL);
	CHECK_STR(b.data, "");
	buf_free(&b);
	buf_free(&b);
}

static void test_buf_contains(void)
{
	struct buf b;
	buf_init(&b, 0);
	CHECK(!buf_contains(&b, "x"));          /* no storage yet */
	/* NULs in the data do not end the search; a match at the very end counts. */
	CHECK_INT(buf_append(&b, "ab\0--=_b1\0=_b12", 15), 0);
	CHECK(buf_contains(&b, "=_b1"));
	CHECK(buf_contains(&b, "=_b12"));
	CHECK(buf_contains(&b, "a"));
	CHECK(!buf_contains(&b, "=_b123"));    /* longer than what is left */
	CHECK(!buf_contains(&b, "b2"));
	CHECK(!buf_contains(&b, ""));
	buf_free(&b);
}

static void test_buf_cap(void)
{
	struct buf b;
	buf_init(&b, 8);
	CHECK_INT(buf_puts(&b, "12345"), 0);
	CHECK_INT(buf_puts(&b, "678"), 0); /* exactly at the cap */
	CHECK_INT(b.len, 8);
	CHECK_INT(buf_putc(&b, 'x'), -1);
	CHECK_INT(buf_puts(&b, ""), 0);
	CHECK_STR(b.data, "12345678");
	buf_consume(&b, 3);
	CHECK_INT(buf_puts(&b, "abcd"), -1); /* 5 + 4 > 8: nothing appended */
	CHECK_STR(b.data, "45678");
	CHECK_INT(buf_puts(&b, "abc"), 0);
	CHECK_STR(b.data, "45678abc");
	buf_reset(&b);
	CHECK_INT(buf_printf(&b, "%d", 123456789), -1);
	CHECK_INT(b.len, 0);
	CHECK_INT(buf_printf(&b, "%d", 12345678), 0);
	CHECK_STR(b.data, "12345678");
	CHECK_INT(buf_printf(&b, "%s", ""), 0);
	CHECK_INT(buf_printf(&b, "x"), -1);
	CHECK_STR(b.data, "12345678");
	buf_free(&b);

	/* A single append larger than the cap, and one that would wrap. */
	buf_init(&b, 4);
	CHECK_INT(buf_append(&b, "12345", 5), -1);
	CHECK_INT(buf_putc(&b, 'a'), 0);
	CHECK_INT(buf_append(&b, "x", SIZE_MAX), -1);
	CHECK_INT(b.len, 1);
	buf_free(&b);
}

static void test_buf_steal(void)
{
	struct buf b;
	size_t len = 99;
	buf_init(&b, 0);
	char *s = buf_steal(&b, &len);
	CHECK_STR(s, "");
	CHECK_INT(len, 0);
	free(s);
	buf_puts(&b, "abc");
	s = buf_steal(&b, &len);
	CHECK_STR(s, "abc");
	CHECK_INT(len, 3);
	CHECK(b.data == NULL);
	CHECK_INT(b.len, 0);
	CHECK_INT(b.cap, 0);
	free(s);
	/* The buffer is reusable after a steal. */
	buf_puts(&b, "again");
	s = buf_steal(&b, NULL);
	CHECK_STR(s, "again");
	free(s);
}

static void test_strlist(void)
{
	struct strlist l = { 0 };
	strlist_split(&l, " a, b ,c,,  , d e ", false);
	REQUIRE(l.n == 4);
	CHECK_STR(l.v[0], "a");
	CHECK_STR(l.v[1], "b");
	CHECK_STR(l.v[2], "c");
	CHECK_STR(l.v[3], "d e");
	strlist_free(&l);
	CHECK_INT(l.n, 0);
	CHECK(l.v == NULL);

	strlist_split(&l, "a b,\tc , d\n", true);
	REQUIRE(l.n == 4);
	CHECK_STR(l.v[0], "a");
	CHECK_STR(l.v[1], "b");
	CHECK_STR(l.v[2], "c");
	CHECK_STR(l.v[3], "d");
	/* Appends to what is there. */
	strlist_split(&l, "e", true);
	CHECK_INT(l.n, 5);
	strlist_free(&l);

	strlist_split(&l, "", true);
	CHECK_INT(l.n, 0);
	strlist_split(&l, " , ,, ", true);
	CHECK_INT(l.n, 0);
	strlist_split(&l, ",", false);
	CHECK_INT(l.n, 0);
	strlist_free(&l);

	for (int i = 0; i < 100; i++)
		strlist_add_owned(&l, xasprintf("item%d", i));
	strlist_add(&l, "Example.COM");
	CHECK_INT(l.n, 101);
	CHECK_STR(l.v[57], "item57");
	CHECK(strlist_contains_ci(&l, "example.com"));
	CHECK(strlist_contains_ci(&l, "ITEM99"));
	CHECK(!strlist_contains_ci(&l, "item100"));
	CHECK(!strlist_contains_ci(&l, "example.co"));
	struct strlist c = { 0 };
	strlist_add(&c, "first");
	strlist_copy(&c, &l);
	CHECK_INT(c.n, 102);
	CHECK_STR(c.v[0], "first");
	CHECK_STR(c.v[101], "Example.COM");
	CHECK(c.v[101] != l.v[100]);
	strlist_free(&c);
	strlist_free(&l);
	CHECK(!strlist_contains_ci(&l, "x"));
}

static void test_strings(void)
{
	CHECK(str_ieq("Example.COM", "example.com"));
	CHECK(str_ieq("", ""));
	CHECK(!str_ieq("abc", "abcd"));
	CHECK(!str_ieq("abcd", "abc"));
	CHECK(!str_ieq("", "a"));
	CHECK(!str_ieq("a", ""));
	/* ASCII only: no locale folding of other bytes. */
	CHECK(!str_ieq("\xc3\xa9", "\xc3\x89"));
	CHECK(str_iprefix("STRICTRELAY_X", "strictrelay_"));
	CHECK(str_iprefix("abc", ""));
	CHECK(!str_iprefix("ab", "abc"));
	CHECK(str_isuffix("mail.Example.com", ".EXAMPLE.COM"));
	CHECK(str_isuffix("abc", ""));
	CHECK(!str_isuffix("example.com", ".example.com"));
	CHECK(!str_isuffix("", "a"));

	char s[] = "MiXeD-123.Org";
	str_lower(s);
	CHECK_STR(s, "mixed-123.org");

	char t1[] = " \t\r\n x y \r\n";
	CHECK_STR(str_trim(t1), "x y");
	char t2[] = "   ";
	CHECK_STR(str_trim(t2), "");
	char t3[] = "";
	CHECK_STR(str_trim(t3), "");
	char t4[] = "plain";
	CHECK(str_trim(t4) == t4);

	CHECK(str_is_ascii("hello\x7f", 6));
	CHECK(!str_is_ascii("h\x80", 2));
	CHECK(str_is_ascii("h\x80", 1));
	CHECK(str_is_ascii("", 0));
}

static void test_quote(void)
{
	char d[64];
	CHECK_STR(str_quote(d, sizeof(d), "alice@example.com"), "alice@example.com");
	CHECK_STR(str_quote(d, sizeof(d), ""), "\"\"");
	CHECK_STR(str_quote(d, sizeof(d), "a b"), "\"a b\"");
	CHECK_STR(str_quote(d, sizeof(d), "a\"b"), "\"a\\\"b\"");
	CHECK_STR(str_quote(d, sizeof(d), "a\\b"), "\"a\\\\b\"");
	CHECK_STR(str_quote(d, sizeof(d), "k=v"), "\"k=v\"");
	CHECK_STR(str_quote(d, sizeof(d), "line\r\nx=1"), "\"line\\x0d\\x0ax=1\"");
	CHECK_STR(str_quote(d, sizeof(d), "tab\there"), "\"tab\\x09here\"");
	CHECK_STR(str_quote(d, sizeof(d), "\x7f"), "\"\\x7f\"");
	CHECK_STR(str_quote(d, sizeof(d), "us\xc3\xa9r"), "\"us\\xc3\\xa9r\"");
	CHECK(str_quote(d, sizeof(d), "x") == d);

	/* Exactly fitting, plain and quoted. */
	CHECK_STR(str_quote(d, 6, "abcde"), "abcde");
	CHECK_STR(str_quote(d, 6, "a b"), "\"a b\"");
	CHECK_STR(str_quote(d, 3, ""), "\"\"");

	/* Truncation ends in ..." and uses the whole buffer. */
	const char *longv = "this value is far too long for the buffer";
	str_quote(d, 16, longv);
	CHECK_STR(d, "\"this value...\"");
	CHECK_INT(strlen(d), 15);
	str_quote(d, 10, "abcdefghijklmnop");
	CHECK_STR(d, "\"abcd...\"");
	/* An escape is never split. */
	str_quote(d, 11, "ab\x01\x02\x03\x04");
	CHECK_STR(d, "\"ab...\"");
	str_quote(d, 12, "ab\"cdefgh ij");
	CHECK_STR(d, "\"ab\\\"cd...\"");

	/* Every size: NUL-terminated within dstlen and the quotes balanced. */
	const char *srcs[] = { "", "a b", "plainbutlongervalue", longv, "a\"b\\c", "\x01\x02\x03" };
	for (size_t s = 0; s < SR_ARRAY_LEN(srcs); s++) {
		for (size_t n = 1; n <= 48; n++) {
			char buf[64];
			memset(buf, 'Z', sizeof(buf));
			str_quote(buf, n, srcs[s]);
			size_t len = strnlen(buf, n);
			CHECK(len < n);
			CHECK(buf[n] == 'Z');
			int quotes = 0;
			for (size_t i = 0; i < len; i++)
				if (buf[i] == '"' && (i == 0 || buf[i - 1] != '\\'))
					quotes++;
			if (quotes % 2 != 0)
				fprintf(stderr, "unbalanced: n=%zu src=%zu [%s]\n", n, s, buf);
			CHECK(quotes % 2 == 0);
		}
	}
	/* dstlen 0 writes nothing. */
	d[0] = 'Q';
	str_quote(d, 0, "x");
	CHECK(d[0] == 'Q');
}

static void test_time(void)
{
	char d[64];
	fmt_time_iso(d, sizeof(d), 0);
	CHECK_STR(d, "1970-01-01T00:00:00Z");
	fmt_time_iso(d, sizeof(d), 1795426200);
	CHECK_STR(d, "2026-11-23T09:30:00Z");
	fmt_time_rfc5322(d, sizeof(d), 1795426200);
	CHECK_STR(d, "Mon, 23 Nov 2026 09:30:00 +0000");
	fmt_time_rfc5322(d, sizeof(d), 951782400);
	CHECK_STR(d, "Tue, 29 Feb 2000 00:00:00 +0000");

	fmt_duration(d, sizeof(d), 0);
	CHECK_STR(d, "0s");
	fmt_duration(d, sizeof(d), -5);
	CHECK_STR(d, "0s");
	fmt_duration(d, sizeof(d), 59);
	CHECK_STR(d, "59s");
	fmt_duration(d, sizeof(d), 60);
	CHECK_STR(d, "1m");
	fmt_duration(d, sizeof(d), 3599);
	CHECK_STR(d, "59m");
	fmt_duration(d, sizeof(d), 3600 + 5 * 60);
	CHECK_STR(d, "1h05m");
	fmt_duration(d, sizeof(d), 3 * 86400 + 4 * 3600 + 59);
	CHECK_STR(d, "3d04h");

	uint64_t a = now_ms(), b = now_ms();
	CHECK(b >= a);
	CHECK(now_unix() > 1700000000);
}

static void test_random(void)
{
	unsigned char z[32] = { 0 }, r[32] = { 0 };
	random_bytes(r, sizeof(r));
	CHECK(memcmp(z, r, sizeof(r)) != 0);
	uint32_t a = random_u32(), b = random_u32(), c = random_u32();
	CHECK(!(a == b && b == c));
	random_bytes(r, 0);
}

int main(void)
{
	RUN(test_alloc);
	RUN(test_buf_basic);
	RUN(test_buf_contains);
	RUN(test_buf_cap);
	RUN(test_buf_steal);
	RUN(test_strlist);
	RUN(test_strings);
	RUN(test_quote);
	RUN(test_time);
	RUN(test_random);
	TEST_EXIT();
}
