/*
 * Unit tests for policy/sts.c: the _mta-sts TXT record (STS-02..05, D1) and
 * the policy file (STS-30..35, D2, D3), from tables.
 */
#include <stdint.h>

#include "policy/sts.h"
#include "test.h"

#define ID32 "abcdefghijklmnopqrstuvwxyz012345"
#define ID33 ID32 "6"
#define NAME32 "a2345678901234567890123456789012"

/* --- TXT ---------------------------------------------------------------- */

struct txt_case {
	const char *recs[4];          /* NULL-terminated */
	enum sts_txt_result result;
	const char *id;               /* STS_TXT_OK */
	size_t index;                 /* STS_TXT_OK */
	const char *why;              /* exact reason, or NULL: not checked */
};

static const struct txt_case txt_cases[] = {
	/* RFC 8461 3.1 example */
	{ { "v=STSv1; id=20160831085700Z;" }, STS_TXT_OK, "20160831085700Z", 0, "" },
	/* checklist STS-04 tests, literally */
	{ { "v=STSv1; id=2024-01-01" }, STS_TXT_INVALID, NULL, 0, "id contains '-'" },
	{ { "v=STSv1; id=" ID33 }, STS_TXT_INVALID, NULL, 0, "id longer than 32" },
	{ { "V=STSv1;id=1" }, STS_TXT_NONE, NULL, 0, "no v=STSv1 record" },
	{ { "v=STSv1;" }, STS_TXT_INVALID, NULL, 0, "missing id" },
	{ { "v=STSv1; id=1; foo=bar" }, STS_TXT_OK, "1", 0, "" },
	/* STS-05 / D1: blanks before ";" */
	{ { "v=STSv1 ;id=1" }, STS_TXT_OK, "1", 0, "" },
	{ { "v=STSv1\t \t; id=1" }, STS_TXT_OK, "1", 0, "" },
	/* STS-03: an SPF record next to one valid record */
	{ { "v=spf1 -all", "v=STSv1; id=abc" }, STS_TXT_OK, "abc", 1, "" },
	{ { "v=STSv1; id=abc", "v=spf1 -all", "hello" }, STS_TXT_OK, "abc", 0, "" },
	/* two v=STSv1 records: no usable policy, whether or not they parse */
	{ { "v=STSv1; id=a", "v=STSv1; id=b" }, STS_TXT_MULTIPLE, NULL, 0, "2 v=STSv1 records" },
	{ { "v=STSv1; id=a", "v=STSv1; id=a" }, STS_TXT_MULTIPLE, NULL, 0, NULL },
	{ { "v=STSv1; id=a", "v=STSv1;", "v=STSv1" }, STS_TXT_MULTIPLE, NULL, 0,
	  "3 v=STSv1 records" },
	{ { "v=STSv1; id=a", "V=STSv1; id=b" }, STS_TXT_OK, "a", 0, "" },
	/* duplicated id field */
	{ { "v=STSv1; id=a; id=b" }, STS_TXT_INVALID, NULL, 0, "duplicate id" },
	{ { "v=STSv1; id=a; id=a" }, STS_TXT_INVALID, NULL, 0, "duplicate id" },
	/* STS-02: "v=STSv1; id=ab" "c1" arrives joined */
	{ { "v=STSv1; id=ab" "c1" }, STS_TXT_OK, "abc1", 0, "" },
	/* no records, or none of ours */
	{ { NULL }, STS_TXT_NONE, NULL, 0, "no v=STSv1 record" },
	{ { "v=STSv10; id=1" }, STS_TXT_NONE, NULL, 0, NULL },
	{ { "v=STSv1id=1" }, STS_TXT_NONE, NULL, 0, NULL },
	{ { "v=STSv1 id=1" }, STS_TXT_NONE, NULL, 0, NULL },
	{ { " v=STSv1; id=1" }, STS_TXT_NONE, NULL, 0, NULL },
	{ { "v=stsv1; id=1" }, STS_TXT_NONE, NULL, 0, NULL },
	{ { "" }, STS_TXT_NONE, NULL, 0, NULL },
	/* the version alone (a candidate, but no id) */
	{ { "v=STSv1" }, STS_TXT_INVALID, NULL, 0, "missing id" },
	{ { "v=STSv1  " }, STS_TXT_INVALID, NULL, 0, "missing id" },
	/* id syntax */
	{ { "v=STSv1; id=" ID32 }, STS_TXT_OK, ID32, 0, "" },
	{ { "v=STSv1; id=AbC019" }, STS_TXT_OK, "AbC019", 0, "" },
	{ { "v=STSv1; id=" }, STS_TXT_INVALID, NULL, 0, "empty id" },
	{ { "v=STSv1; id=;" }, STS_TXT_INVALID, NULL, 0, "empty id" },
	{ { "v=STSv1; id=a_b" }, STS_TXT_INVALID, NULL, 0, "id contains '_'" },
	{ { "v=STSv1; id=a.b" }, STS_TXT_INVALID, NULL, 0, "id contains '.'" },
	{ { "v=STSv1; id=a=b" }, STS_TXT_INVALID, NULL, 0, "id contains '='" },
	{ { "v=STSv1; id=\xc3\xa9" }, STS_TXT_INVALID, NULL, 0, "id contains byte 0xc3" },
	{ { "v=STSv1; id=a\x01" }, STS_TXT_INVALID, NULL, 0, "id contains byte 0x01" },
	{ { "v=STSv1; id=abc def" }, STS_TXT_INVALID, NULL, 0, NULL },
	{ { "v=STSv1; id =1" }, STS_TXT_INVALID, NULL, 0, "field id has no '='" },
	/* keys are case-sensitive: "ID" is an extension */
	{ { "v=STSv1; ID=1" }, STS_TXT_INVALID, NULL, 0, "missing id" },
	{ { "v=STSv1; Id=1; id=2; ID=3" }, STS_TXT_OK, "2", 0, "" },
	/* delimiters */
	{ { "v=STSv1;id=1" }, STS_TXT_OK, "1", 0, "" },
	{ { "v=STSv1;id=1;" }, STS_TXT_OK, "1", 0, "" },
	{ { "v=STSv1; id=1 ; " }, STS_TXT_OK, "1", 0, "" },
	{ { "v=STSv1;\tid=1\t;\tfoo=bar\t" }, STS_TXT_OK, "1", 0, "" },
	{ { "v=STSv1; id=1 " }, STS_TXT_OK, "1", 0, "" },
	{ { "v=STSv1;;id=1" }, STS_TXT_INVALID, NULL, 0, "empty field" },
	{ { "v=STSv1; id=1;;" }, STS_TXT_INVALID, NULL, 0, "empty field" },
	{ { "v=STSv1; ; id=1" }, STS_TXT_INVALID, NULL, 0, "empty field" },
	{ { "v=STSv1; id=1 foo=bar" }, STS_TXT_INVALID, NULL, 0,
	  "'f' where ';' or the end was expected" },
	{ { "v=STSv1; id=1;\r\n" }, STS_TXT_INVALID, NULL, 0, NULL },
	/* extensions: name and value syntax, then ignored */
	{ { "v=STSv1; id=1; v=STSv2" }, STS_TXT_OK, "1", 0, "" },
	{ { "v=STSv1; id=1; x_y.z-9=a!b:c<>~" }, STS_TXT_OK, "1", 0, "" },
	{ { "v=STSv1; id=1; " NAME32 "=x" }, STS_TXT_OK, "1", 0, "" },
	{ { "v=STSv1; id=1; " NAME32 "3=x" }, STS_TXT_INVALID, NULL, 0, NULL },
	{ { "v=STSv1; id=1; foo" }, STS_TXT_INVALID, NULL, 0, "field foo has no '='" },
	{ { "v=STSv1; id=1; foo=" }, STS_TXT_INVALID, NULL, 0, "empty field value" },
	{ { "v=STSv1; id=1; _foo=bar" }, STS_TXT_INVALID, NULL, 0, NULL },
	{ { "v=STSv1; id=1; -foo=bar" }, STS_TXT_INVALID, NULL, 0, NULL },
	{ { "v=STSv1; id=1; foo=b=ar" }, STS_TXT_INVALID, NULL, 0, "field value contains '='" },
	{ { "v=STSv1; id=1; foo=\xc3\xa9" }, STS_TXT_INVALID, NULL, 0, NULL },
	{ { "v=STSv1; id=1; foo=a\x7f" }, STS_TXT_INVALID, NULL, 0, NULL },
	{ { "v=STSv1; id=1; f@o=bar" }, STS_TXT_INVALID, NULL, 0, NULL },
	{ { "v=STSv1; =bar; id=1" }, STS_TXT_INVALID, NULL, 0, NULL },
};

static void test_txt_table(void)
{
	for (size_t i = 0; i < SR_ARRAY_LEN(txt_cases); i++) {
		const struct txt_case *tc = &txt_cases[i];
		struct strlist recs = { 0 };
		for (size_t j = 0; j < 4 && tc->recs[j] != NULL; j++)
			strlist_add(&recs, tc->recs[j]);
		struct sts_txt out;
		char why[128];
		enum sts_txt_result r = sts_txt_select(&recs, &out, why, sizeof(why));
		if (r != tc->result)
			fprintf(stderr, "txt case %zu (%s): result %d, expected %d (%s)\n", i,
				tc->recs[0] ? tc->recs[0] : "-", r, tc->result, why);
		CHECK_INT(r, tc->result);
		if (tc->result == STS_TXT_OK) {
			CHECK_STR(out.id, tc->id);
			CHECK_INT(out.index, tc->index);
		} else {
			CHECK_STR(out.id, "");
		}
		if (tc->why != NULL && strcmp(why, tc->why) != 0) {
			fprintf(stderr, "txt case %zu (%s)\n", i, tc->recs[0]);
			CHECK_STR(why, tc->why);
		}
		strlist_free(&recs);
	}
}

static void test_txt_helpers(void)
{
	CHECK(sts_txt_candidate("v=STSv1"));
	CHECK(sts_txt_candidate("v=STSv1;"));
	CHECK(sts_txt_candidate("v=STSv1 \t;x"));
	CHECK(sts_txt_candidate("v=STSv1 "));
	CHECK(!sts_txt_candidate("v=STSv1 x"));
	CHECK(!sts_txt_candidate("v=STSv1,id=1"));
	CHECK(!sts_txt_candidate("V=STSv1;"));
	CHECK(!sts_txt_candidate(NULL));
	struct sts_txt t;
	char why[64];
	/* parse() alone: no candidate check first */
	CHECK_INT(sts_txt_parse("v=spf1", &t, why, sizeof(why)), -1);
	CHECK_STR(why, "does not start with v=STSv1");
	CHECK_INT(sts_txt_parse("v=STSv1;id=x", &t, NULL, 0), 0);
	CHECK_STR(t.id, "x");
	/* a small why buffer is cut, still terminated */
	CHECK_INT(sts_txt_parse("v=STSv1; id=1-2", &t, why, 6), -1);
	CHECK_STR(why, "id co");
	/* NULL record list */
	CHECK_INT(sts_txt_select(NULL, &t, why, sizeof(why)), STS_TXT_NONE);
}

/* --- policy file -------------------------------------------------------- */

struct pol_case {
	const char *text;
	int rc;
	enum sts_mode mode;
	int64_t max_age;
	const char *mx;    /* patterns joined by "," */
	const char *why;   /* expected reason; NULL: not checked */
};

#define V "version: STSv1\n"
#define ME "mode: enforce\n"
#define MA "max_age: 86400\n"
#define MX "mx: mail.example.com\n"

static const struct pol_case pol_cases[] = {
	/* RFC 8461 3.2 example */
	{ "version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\nmx: *.example.net\r\n"
	  "mx: backupmx.example.com\r\nmax_age: 604800\r\n",
	  0, STS_MODE_ENFORCE, 604800, "mail.example.com,*.example.net,backupmx.example.com", "" },
	{ V "mode: testing\n" MA MX, 0, STS_MODE_TESTING, 86400, "mail.example.com", "" },
	/* STS-30: keys and values are case-sensitive */
	{ V "Mode: enforce\n" MA MX, -1, 0, 0, NULL, "missing mode" },
	{ V "MODE: enforce\n" MA MX, -1, 0, 0, NULL, "missing mode" },
	{ V "mode: Enforce\n" MA MX, -1, 0, 0, NULL, "line 2: unknown mode Enforce" },
	{ V "mode: TESTING\n" MA MX, -1, 0, 0, NULL, NULL },
	{ V "mode: None\n" MA, -1, 0, 0, NULL, NULL },
	{ V "mode: strict\n" MA MX, -1, 0, 0, NULL, NULL },
	{ V "mode: enforce enforce\n" MA MX, -1, 0, 0, NULL, NULL },
	{ "version: stsv1\n" ME MA MX, -1, 0, 0, NULL, "line 1: version stsv1 is not STSv1" },
	{ "version: STSv2\n" ME MA MX, -1, 0, 0, NULL, NULL },
	{ "Version: STSv1\n" ME MA MX, -1, 0, 0, NULL, "missing version" },
	{ "version:\n" ME MA MX, -1, 0, 0, NULL, NULL },
	/* STS-31: required keys; mx unless mode none */
	{ ME MA MX, -1, 0, 0, NULL, "missing version" },
	{ V MA MX, -1, 0, 0, NULL, "missing mode" },
	{ V ME MX, -1, 0, 0, NULL, "missing max_age" },
	{ V ME MA, -1, 0, 0, NULL, "no mx with mode enforce" },
	{ V "mode: testing\n" MA, -1, 0, 0, NULL, "no mx with mode testing" },
	{ V "mode: none\n" MA, 0, STS_MODE_NONE, 86400, "", "" },
	{ V "mode: none\n" MA MX, 0, STS_MODE_NONE, 86400, "mail.example.com", "" },
	{ "", -1, 0, 0, NULL, "missing version" },
	{ "\n\r\n  \n\t\n", -1, 0, 0, NULL, "missing version" },
	/* STS-32: first wins for everything but mx; unknown keys ignored */
	{ V ME "mode: none\n" MA MX, 0, STS_MODE_ENFORCE, 86400, "mail.example.com", "" },
	{ V "mode: none\n" ME MA, 0, STS_MODE_NONE, 86400, "", "" },
	{ V ME "mode: bogus\n" MA MX, 0, STS_MODE_ENFORCE, 86400, "mail.example.com", "" },
	{ V "mode: bogus\n" ME MA MX, -1, 0, 0, NULL, NULL },
	{ V "version: STSv9\n" ME MA MX, 0, STS_MODE_ENFORCE, 86400, "mail.example.com", "" },
	{ V ME "max_age: 5\nmax_age: 7\nmax_age: x\n" MX, 0, STS_MODE_ENFORCE, 5,
	  "mail.example.com", "" },
	{ V ME MA "mx: a.example\nmx: b.example\nmx: a.example\n", 0, STS_MODE_ENFORCE, 86400,
	  "a.example,b.example,a.example", "" },
	{ V ME MA MX "foo: bar baz\nx-y_z.1: \xc3\xa9t\xc3\xa9\nempty:\n", 0, STS_MODE_ENFORCE,
	  86400, "mail.example.com", "" },
	/* STS-33 / D2: max_age bounds */
	{ V ME "max_age: 0\n" MX, 0, STS_MODE_ENFORCE, 0, "mail.example.com", "" },
	{ V ME "max_age: 1\n" MX, 0, STS_MODE_ENFORCE, 1, "mail.example.com", "" },
	{ V ME "max_age: 31557600\n" MX, 0, STS_MODE_ENFORCE, 31557600, "mail.example.com", "" },
	{ V ME "max_age: 0031557600\n" MX, 0, STS_MODE_ENFORCE, 31557600, "mail.example.com", "" },
	{ V ME "max_age: 31557601\n" MX, -1, 0, 0, NULL,
	  "line 3: max_age 31557601 is above 31557600" },
	{ V ME "max_age: 9999999999\n" MX, -1, 0, 0, NULL,
	  "line 3: max_age 9999999999 is above 31557600" },
	{ V ME "max_age: 10000000000\n" MX, -1, 0, 0, NULL,
	  "line 3: max_age 10000000000 is not 1-10 digits" },
	{ V ME "max_age: 00000000001\n" MX, -1, 0, 0, NULL, NULL },
	{ V ME "max_age: 99999999999999999999999\n" MX, -1, 0, 0, NULL, NULL },
	{ V ME "max_age:\n" MX, -1, 0, 0, NULL, NULL },
	{ V ME "max_age: -1\n" MX, -1, 0, 0, NULL, "line 3: max_age -1 is not a number" },
	{ V ME "max_age: +1\n" MX, -1, 0, 0, NULL, NULL },
	{ V ME "max_age: 1s\n" MX, -1, 0, 0, NULL, NULL },
	{ V ME "max_age: 0x10\n" MX, -1, 0, 0, NULL, NULL },
	{ V ME "max_age: 1 2\n" MX, -1, 0, 0, NULL, NULL },
	{ V ME "max_age: 1.5\n" MX, -1, 0, 0, NULL, NULL },
	/* STS-34 / D3: mx syntax; a bad line spoils the policy */
	{ V ME MA "mx: mail..example.com\n", -1, 0, 0, NULL,
	  "line 4: bad mx pattern mail..example.com" },
	{ V ME MA "mx: *.*.example.com\n", -1, 0, 0, NULL, NULL },
	{ V ME MA "mx: mail.example.com.\n", -1, 0, 0, NULL, NULL },
	{ V ME MA "mx: *mail.example.com\n", -1, 0, 0, NULL, NULL },
	{ V ME MA "mx: ex_ample.com\n", -1, 0, 0, NULL, NULL },
	{ V ME MA MX "mx: mail..example.com\n", -1, 0, 0, NULL,
	  "line 5: bad mx pattern mail..example.com" },
	{ V "mode: none\n" MA "mx: ex_ample.com\n", -1, 0, 0, NULL, NULL },
	{ V ME MA "mx: b\xc3\xbc" "cher.example\n", -1, 0, 0, NULL,
	  "line 4: bad mx pattern \"b\\xc3\\xbccher.example\"" },
	{ V ME MA "mx: xn--bcher-kva.example\n", 0, STS_MODE_ENFORCE, 86400,
	  "xn--bcher-kva.example", "" },
	{ V ME MA "mx: *.XN--Bcher-KVA.Example\n", 0, STS_MODE_ENFORCE, 86400,
	  "*.xn--bcher-kva.example", "" },
	{ V ME MA "mx: MAIL.Example.COM\n", 0, STS_MODE_ENFORCE, 86400, "mail.example.com", "" },
	{ V ME MA "mx: *\n", -1, 0, 0, NULL, NULL },
	{ V ME MA "mx: *.\n", -1, 0, 0, NULL, NULL },
	{ V ME MA "mx: .example.com\n", -1, 0, 0, NULL, NULL },
	{ V ME MA "mx: -mail.example.com\n", -1, 0, 0, NULL, NULL },
	{ V ME MA "mx: mail-.example.com\n", -1, 0, 0, NULL, NULL },
	{ V ME MA "mx: mail.example.com*\n", -1, 0, 0, NULL, NULL },
	{ V ME MA "mx: mail.*.example.com\n", -1, 0, 0, NULL, NULL },
	{ V ME MA "mx: [192.0.2.1]\n", -1, 0, 0, NULL, NULL },
	{ V ME MA "mx: mail example.com\n", -1, 0, 0, NULL, NULL },
	{ V ME MA "mx: mail.example.com, mx2.example.com\n", -1, 0, 0, NULL, NULL },
	{ V ME MA "mx:\n", -1, 0, 0, NULL, "line 4: bad mx pattern \"\"" },
	{ V ME MA "mx: m-x.e-x.example\n", 0, STS_MODE_ENFORCE, 86400, "m-x.e-x.example", "" },
	{ V ME MA "mx: localhost\n", 0, STS_MODE_ENFORCE, 86400, "localhost", "" },
	{ V ME MA "mx: *.com\n", 0, STS_MODE_ENFORCE, 86400, "*.com", "" },
	{ V ME MA "mx: 1.2.3.4\n", 0, STS_MODE_ENFORCE, 86400, "1.2.3.4", "" },
	/* STS-35: blank lines and blanks around lines, keys still case-sensitive */
	{ "\n  version: STSv1  \r\n\r\n\t mode:enforce\t\n \n max_age:\t86400 \n   mx:  "
	  "mail.example.com \t\n\n",
	  0, STS_MODE_ENFORCE, 86400, "mail.example.com", "" },
	/* the last terminator is optional */
	{ V ME MA "mx: mail.example.com", 0, STS_MODE_ENFORCE, 86400, "mail.example.com", "" },
	/* lines that are not fields */
	{ V ME MA MX "this is not a field\n", -1, 0, 0, NULL,
	  "line 5: no ':' in \"this is not a field\"" },
	{ V "mode : enforce\n" MA MX, -1, 0, 0, NULL, "line 2: bad key \"mode \"" },
	{ V ME MA MX ": x\n", -1, 0, 0, NULL, "line 5: bad key \"\"" },
	{ V ME MA MX "_x: y\n", -1, 0, 0, NULL, NULL },
	{ V ME MA MX NAME32 ": y\n", 0, STS_MODE_ENFORCE, 86400, "mail.example.com", "" },
	{ V ME MA MX NAME32 "3: y\n", -1, 0, 0, NULL, NULL },
	{ "<html>\n<body>" V ME MA MX "</body></html>\n", -1, 0, 0, NULL, NULL },
	{ "\xef\xbb\xbf" V ME MA MX, -1, 0, 0, NULL, NULL },
	/* control characters, bare CR, invalid UTF-8 */
	{ V ME MA "mx: mail.example.com\r", -1, 0, 0, NULL, "line 4: control character 0x0d" },
	{ V ME "max_age: 86400\r\r\n" MX, -1, 0, 0, NULL, "line 3: control character 0x0d" },
	{ V "mode: enforce\rmx: mail.example.com\n" MA, -1, 0, 0, NULL, NULL },
	{ V ME MA MX "foo: a\x01" "b\n", -1, 0, 0, NULL, "line 5: control character 0x01" },
	{ V ME MA MX "foo: a\x7f\n", -1, 0, 0, NULL, NULL },
	{ V ME MA MX "foo: \xc3\n", -1, 0, 0, NULL, "line 5: invalid UTF-8" },
	{ V ME MA MX "foo: \xc0\x80\n", -1, 0, 0, NULL, NULL },  /* overlong */
	{ V ME MA MX "foo: \xed\xa0\x80\n", -1, 0, 0, NULL, NULL }, /* surrogate */
	{ V ME MA MX "foo: \xf4\x90\x80\x80\n", -1, 0, 0, NULL, NULL }, /* > U+10FFFF */
	{ V ME MA MX "foo: \xff\n", -1, 0, 0, NULL, NULL },
	{ V ME MA MX "foo: \xf0\x9f\x93\xa7 \xe2\x82\xac\n", 0, STS_MODE_ENFORCE, 86400,
	  "mail.example.com", "" },
};

static void join(char *dst, size_t dstlen, const struct strlist *l, const char *sep)
{
	dst[0] = '\0';
	for (size_t i = 0; i < l->n; i++) {
		if (i > 0)
			strncat(dst, sep, dstlen - strlen(dst) - 1);
		strncat(dst, l->v[i], dstlen - strlen(dst) - 1);
	}
}

static void test_policy_table(void)
{
	for (size_t i = 0; i < SR_ARRAY_LEN(pol_cases); i++) {
		const struct pol_case *tc = &pol_cases[i];
		struct sts_policy p;
		char why[256], mx[1024];
		int rc = sts_policy_parse(tc->text, strlen(tc->text), &p, why, sizeof(why));
		if (rc != tc->rc)
			fprintf(stderr, "policy case %zu: rc %d, expected %d (%s)\n", i, rc, tc->rc,
				why);
		CHECK_INT(rc, tc->rc);
		if (tc->why != NULL && strcmp(why, tc->why) != 0) {
			fprintf(stderr, "policy case %zu\n", i);
			CHECK_STR(why, tc->why);
		}
		if (rc == 0 && tc->rc == 0) {
			CHECK_INT(p.mode, tc->mode);
			CHECK_INT(p.max_age, tc->max_age);
			join(mx, sizeof(mx), &p.mx, ",");
			CHECK_STR(mx, tc->mx);
			CHECK(p.lines.n >= 3);
		}
		if (rc != 0) {
			CHECK(p.mx.n == 0 && p.lines.n == 0 && p.mx.v == NULL && p.lines.v == NULL);
			CHECK(why[0] != '\0');
		}
		sts_policy_free(&p);
	}
}

/* The same policy with LF, CRLF, mixed endings and no final terminator. */
static void test_policy_line_endings(void)
{
	static const char *const texts[] = {
		"version: STSv1\nmode: testing\nmx: a.example\nmx: *.b.example\nmax_age: 3600\n",
		"version: STSv1\r\nmode: testing\r\nmx: a.example\r\nmx: *.b.example\r\n"
		"max_age: 3600\r\n",
		"version: STSv1\r\nmode: testing\nmx: a.example\r\nmx: *.b.example\n"
		"max_age: 3600\r\n",
		"version: STSv1\nmode: testing\r\nmx: a.example\nmx: *.b.example\r\nmax_age: 3600",
		"version: STSv1\r\n\r\nmode: testing\n\nmx: a.example\r\n\nmx: *.b.example\r\n"
		"max_age: 3600",
	};
	struct sts_policy ref;
	char why[128];
	REQUIRE(sts_policy_parse(texts[0], strlen(texts[0]), &ref, why, sizeof(why)) == 0);
	for (size_t i = 1; i < SR_ARRAY_LEN(texts); i++) {
		struct sts_policy p;
		REQUIRE(sts_policy_parse(texts[i], strlen(texts[i]), &p, why, sizeof(why)) == 0);
		CHECK_INT(p.mode, ref.mode);
		CHECK_INT(p.max_age, ref.max_age);
		CHECK_INT(p.mx.n, ref.mx.n);
		for (size_t j = 0; j < p.mx.n && j < ref.mx.n; j++)
			CHECK_STR(p.mx.v[j], ref.mx.v[j]);
		CHECK_INT(p.lines.n, ref.lines.n);
		for (size_t j = 0; j < p.lines.n && j < ref.lines.n; j++)
			CHECK_STR(p.lines.v[j], ref.lines.v[j]);
		sts_policy_free(&p);
	}
	sts_policy_free(&ref);
}

/* lines: the RFC 8460 policy-string, one "key: value" per non-blank line. */
static void test_policy_lines(void)
{
	const char *text = "  version:STSv1\r\n\nmode:\t enforce  \nmx: Mail.Example.COM\n"
			   "mode: none\nfoo:\nmx: *.example.net\nbar: x  y \n"
			   "max_age: 86400";
	struct sts_policy p;
	char why[128], all[1024];
	REQUIRE(sts_policy_parse(text, strlen(text), &p, why, sizeof(why)) == 0);
	join(all, sizeof(all), &p.lines, "|");
	CHECK_STR(all, "version: STSv1|mode: enforce|mx: Mail.Example.COM|mode: none|foo:|"
		       "mx: *.example.net|bar: x  y|max_age: 86400");
	join(all, sizeof(all), &p.mx, "|");
	CHECK_STR(all, "mail.example.com|*.example.net");
	CHECK_INT(p.mode, STS_MODE_ENFORCE);
	/* the parsed patterns work with the matcher (STS-51) */
	CHECK(sts_mx_match(p.mx.v[0], "MAIL.example.com."));
	CHECK(sts_mx_match(p.mx.v[1], "mx1.example.net"));
	CHECK(!sts_mx_match(p.mx.v[1], "example.net"));
	CHECK(!sts_mx_match(p.mx.v[1], "a.b.example.net"));
	sts_policy_free(&p);
	sts_policy_free(&p); /* harmless twice */
}

/* 64 KiB cap: exactly STS_POLICY_MAX bytes parse, one more does not. */
static void test_policy_cap(void)
{
	const char *head = V ME MA MX "pad: ";
	size_t hl = strlen(head);
	char *text = malloc(STS_POLICY_MAX + 2);
	REQUIRE(text != NULL);
	memcpy(text, head, hl);
	memset(text + hl, 'x', STS_POLICY_MAX - hl - 1);
	text[STS_POLICY_MAX - 1] = '\n';
	struct sts_policy p;
	char why[128];
	CHECK_INT(sts_policy_parse(text, STS_POLICY_MAX, &p, why, sizeof(why)), 0);
	CHECK_INT(p.mode, STS_MODE_ENFORCE);
	sts_policy_free(&p);
	text[STS_POLICY_MAX] = '\n';
	CHECK_INT(sts_policy_parse(text, STS_POLICY_MAX + 1, &p, why, sizeof(why)), -1);
	CHECK_STR(why, "policy longer than 65536 bytes");
	/* a long bad line is cut in the reason */
	memcpy(text, V ME MA "mx: ", strlen(V ME MA "mx: "));
	memset(text + strlen(V ME MA "mx: "), 'a', 1000);
	CHECK_INT(sts_policy_parse(text, strlen(V ME MA "mx: ") + 1000, &p, why, sizeof(why)), -1);
	CHECK(strlen(why) < 100);
	CHECK(strstr(why, "...") != NULL);
	free(text);
}

/* NUL bytes are data, not the end of the text. */
static void test_policy_nul(void)
{
	static const char text[] = V ME MA MX "foo: a\0b\n";
	struct sts_policy p;
	char why[128];
	CHECK_INT(sts_policy_parse(text, sizeof(text) - 1, &p, why, sizeof(why)), -1);
	CHECK_STR(why, "line 5: control character 0x00");
	/* only len bytes are read: the NUL past them is not seen */
	CHECK_INT(sts_policy_parse(text, sizeof(text) - 1 - 3, &p, why, sizeof(why)), 0);
	sts_policy_free(&p);
	CHECK_INT(sts_policy_parse(NULL, 0, &p, NULL, 0), -1);
}

static void test_mx_pattern(void)
{
	static const struct {
		const char *s;
		bool ok;
	} cases[] = {
		{ "mail.example.com", true },
		{ "*.example.com", true },
		{ "x", true },
		{ "xn--bcher-kva.example", true },
		{ "0.example", true },
		{ "a-b--c.example", true },
		{ "", false },
		{ "*", false },
		{ "*.", false },
		{ "**.example.com", false },
		{ "*.*.example.com", false },
		{ "*mail.example.com", false },
		{ "mail.*.com", false },
		{ "mail..example.com", false },
		{ "mail.example.com.", false },
		{ ".mail.example.com", false },
		{ "ex_ample.com", false },
		{ "-a.example", false },
		{ "a-.example", false },
		{ "b\xc3\xbc" "cher.example", false },
		{ "[192.0.2.1]", false },
		{ "a b.example", false },
	};
	for (size_t i = 0; i < SR_ARRAY_LEN(cases); i++) {
		if (sts_mx_pattern_valid(cases[i].s, strlen(cases[i].s)) != cases[i].ok)
			fprintf(stderr, "mx pattern %s\n", cases[i].s);
		CHECK(sts_mx_pattern_valid(cases[i].s, strlen(cases[i].s)) == cases[i].ok);
	}
	/* label and name lengths */
	char name[300];
	memset(name, 'a', 63);
	strcpy(name + 63, ".example");
	CHECK(sts_mx_pattern_valid(name, strlen(name)));
	memset(name, 'a', 64);
	strcpy(name + 64, ".example");
	CHECK(!sts_mx_pattern_valid(name, strlen(name)));
	/* 253 octets: 63+1+63+1+63+1+61 */
	size_t o = 0;
	for (int l = 0; l < 3; l++) {
		memset(name + o, 'b', 63);
		o += 63;
		name[o++] = '.';
	}
	memset(name + o, 'c', 61);
	o += 61;
	name[o] = '\0';
	CHECK_INT(strlen(name), 253);
	CHECK(sts_mx_pattern_valid(name, 253));
	char star[300] = "*.";
	strcat(star, name);
	CHECK(sts_mx_pattern_valid(star, strlen(star)));
	name[o++] = 'c';
	name[o] = '\0';
	CHECK(!sts_mx_pattern_valid(name, 254));
	/* n bytes only */
	CHECK(sts_mx_pattern_valid("a.example.", 9));
}

static void test_mode_name(void)
{
	CHECK_STR(sts_mode_name(STS_MODE_ENFORCE), "enforce");
	CHECK_STR(sts_mode_name(STS_MODE_TESTING), "testing");
	CHECK_STR(sts_mode_name(STS_MODE_NONE), "none");
}

int main(void)
{
	RUN(test_txt_table);
	RUN(test_txt_helpers);
	RUN(test_policy_table);
	RUN(test_policy_line_endings);
	RUN(test_policy_lines);
	RUN(test_policy_cap);
	RUN(test_policy_nul);
	RUN(test_mx_pattern);
	RUN(test_mode_name);
	TEST_EXIT();
}
