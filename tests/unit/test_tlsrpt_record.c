/*
 * Unit tests for tlsrpt/record.c: the _smtp._tls TXT record (RPT-01..03),
 * from a table.
 */
#include "test.h"
#include "tlsrpt/record.h"

struct rpt_case {
	const char *recs[4];             /* NULL-terminated */
	enum tlsrpt_txt_result result;
	/* TLSRPT_TXT_OK: the endpoints as "kind uri [addr]" joined by "|" */
	const char *rua;
	const char *why;                 /* exact reason; NULL: not checked */
};

#define R "v=TLSRPTv1; rua="

static const struct rpt_case cases[] = {
	/* checklist RPT-02 tests, literally */
	{ { "v=TLSRPTv1; rua=mailto:a@x.example,https://r.example/t" }, TLSRPT_TXT_OK,
	  "mailto mailto:a@x.example a@x.example|https https://r.example/t", "" },
	{ { "v=TLSRPTv1;" }, TLSRPT_TXT_INVALID, NULL, "missing rua" },
	/* unknown fields are accepted (and ignored) */
	{ { R "mailto:a@x.example; foo=bar; x_y.z-1=a:b/c" }, TLSRPT_TXT_OK,
	  "mailto mailto:a@x.example a@x.example", "" },
	{ { "v=TLSRPTv1; foo=bar; rua=mailto:a@x.example;" }, TLSRPT_TXT_OK,
	  "mailto mailto:a@x.example a@x.example", "" },
	/* RFC 8460 3 examples */
	{ { "v=TLSRPTv1;rua=mailto:reports@example.com" }, TLSRPT_TXT_OK,
	  "mailto mailto:reports@example.com reports@example.com", "" },
	{ { "v=TLSRPTv1; rua=https://reporting.example.com/v1/tlsrpt" }, TLSRPT_TXT_OK,
	  "https https://reporting.example.com/v1/tlsrpt", "" },
	/* RPT-01: selection */
	{ { NULL }, TLSRPT_TXT_NONE, NULL, "no v=TLSRPTv1 record" },
	{ { "v=spf1 -all" }, TLSRPT_TXT_NONE, NULL, "no v=TLSRPTv1 record" },
	{ { "V=TLSRPTv1; rua=mailto:a@x.example" }, TLSRPT_TXT_NONE, NULL, NULL },
	{ { "v=TLSRPTv10; rua=mailto:a@x.example" }, TLSRPT_TXT_NONE, NULL, NULL },
	{ { "v=TLSRPTv1 rua=mailto:a@x.example" }, TLSRPT_TXT_NONE, NULL, NULL },
	{ { "v=spf1 -all", R "mailto:a@x.example" }, TLSRPT_TXT_OK,
	  "mailto mailto:a@x.example a@x.example", "" },
	{ { R "mailto:a@x.example", R "mailto:b@x.example" }, TLSRPT_TXT_MULTIPLE, NULL,
	  "2 v=TLSRPTv1 records" },
	{ { R "mailto:a@x.example", "v=TLSRPTv1;" }, TLSRPT_TXT_MULTIPLE, NULL, NULL },
	/* D1-style blanks before ";", blanks around "," */
	{ { "v=TLSRPTv1 ; rua=mailto:a@x.example" }, TLSRPT_TXT_OK,
	  "mailto mailto:a@x.example a@x.example", "" },
	{ { "v=TLSRPTv1;\trua=mailto:a@x.example \t,\t https://r.example/ ;\t" }, TLSRPT_TXT_OK,
	  "mailto mailto:a@x.example a@x.example|https https://r.example/", "" },
	{ { R "mailto:a@x.example " }, TLSRPT_TXT_OK, "mailto mailto:a@x.example a@x.example",
	  "" },
	{ { "v=TLSRPTv1" }, TLSRPT_TXT_INVALID, NULL, "missing rua" },
	{ { "v=TLSRPTv1;;rua=mailto:a@x.example" }, TLSRPT_TXT_INVALID, NULL, "empty field" },
	{ { R "mailto:a@x.example;;" }, TLSRPT_TXT_INVALID, NULL, "empty field" },
	{ { R "mailto:a@x.example https://r.example/" }, TLSRPT_TXT_INVALID, NULL,
	  "'h' where ';' or the end was expected" },
	/* rua: case-sensitive key, required once, non-empty list */
	{ { "v=TLSRPTv1; RUA=mailto:a@x.example" }, TLSRPT_TXT_INVALID, NULL, "missing rua" },
	{ { R "mailto:a@x.example; rua=mailto:b@x.example" }, TLSRPT_TXT_INVALID, NULL,
	  "duplicate rua" },
	{ { R }, TLSRPT_TXT_INVALID, NULL, "empty uri in rua" },
	{ { R ";" }, TLSRPT_TXT_INVALID, NULL, "empty uri in rua" },
	{ { R "mailto:a@x.example," }, TLSRPT_TXT_INVALID, NULL, "empty uri in rua" },
	{ { R "mailto:a@x.example,,https://r.example/" }, TLSRPT_TXT_INVALID, NULL,
	  "empty uri in rua" },
	/* "!", "," and ";" must be %-encoded inside a uri */
	{ { R "mailto:a!b@x.example" }, TLSRPT_TXT_INVALID, NULL, "raw '!' in a rua uri" },
	{ { R "mailto:a%21b@x.example" }, TLSRPT_TXT_OK,
	  "mailto mailto:a%21b@x.example a!b@x.example", "" },
	{ { R "mailto:a@x.example,b@y.example" }, TLSRPT_TXT_INVALID, NULL,
	  "uri b@y.example has no scheme" },
	{ { R "mailto:a@x.example%2Cb@y.example" }, TLSRPT_TXT_INVALID, NULL, NULL },
	{ { R "https://r.example/a;b" }, TLSRPT_TXT_INVALID, NULL, "field b has no '='" },
	{ { R "https://r.example/a%3Bb" }, TLSRPT_TXT_OK, "https https://r.example/a%3Bb", "" },
	/* mailto: decoding, query dropped */
	{ { R "mailto:tls%2Breports@example.com" }, TLSRPT_TXT_OK,
	  "mailto mailto:tls%2Breports@example.com tls+reports@example.com", "" },
	{ { R "mailto:tls+reports@Example.COM" }, TLSRPT_TXT_OK,
	  "mailto mailto:tls+reports@Example.COM tls+reports@Example.COM", "" },
	{ { R "mailto:a@x.example?subject=TLS%20report" }, TLSRPT_TXT_OK,
	  "mailto mailto:a@x.example?subject=TLS%20report a@x.example", "" },
	{ { R "mailto:a@x.example?to=evil@y.example&cc=b@z.example" }, TLSRPT_TXT_OK,
	  "mailto mailto:a@x.example?to=evil@y.example&cc=b@z.example a@x.example", "" },
	{ { R "mailto:a@x.example#frag" }, TLSRPT_TXT_OK,
	  "mailto mailto:a@x.example#frag a@x.example", "" },
	{ { R "mailto:?to=a@x.example" }, TLSRPT_TXT_INVALID, NULL,
	  "mailto uri without an address" },
	{ { R "mailto:" }, TLSRPT_TXT_INVALID, NULL, "mailto uri without an address" },
	{ { R "mailto:a%00b@x.example" }, TLSRPT_TXT_INVALID, NULL, NULL },
	{ { R "mailto:a%20b@x.example" }, TLSRPT_TXT_INVALID, NULL, NULL },
	{ { R "mailto:a%C3%A9@x.example" }, TLSRPT_TXT_INVALID, NULL, NULL },
	{ { R "mailto:a%zz@x.example" }, TLSRPT_TXT_INVALID, NULL, "bad %-escape in a rua uri" },
	{ { R "mailto:a@x.example%4" }, TLSRPT_TXT_INVALID, NULL, "bad %-escape in a rua uri" },
	{ { R "mailto:a@x.example%" }, TLSRPT_TXT_INVALID, NULL, NULL },
	{ { R "mailto:postmaster" }, TLSRPT_TXT_INVALID, NULL, NULL },
	{ { R "mailto:a@" }, TLSRPT_TXT_INVALID, NULL, NULL },
	{ { R "mailto:@x.example" }, TLSRPT_TXT_INVALID, NULL, NULL },
	{ { R "mailto:@r.example:a@x.example" }, TLSRPT_TXT_INVALID, NULL, NULL },
	{ { R "mailto:a@b@x.example" }, TLSRPT_TXT_INVALID, NULL, NULL },
	{ { R "mailto:a..b@x.example" }, TLSRPT_TXT_INVALID, NULL, NULL },
	{ { R "mailto:a@x..example" }, TLSRPT_TXT_INVALID, NULL, NULL },
	{ { R "mailto:a@[192.0.2.1]" }, TLSRPT_TXT_INVALID, NULL, NULL },
	{ { R "mailto:a%3Eb@x.example" }, TLSRPT_TXT_INVALID, NULL, NULL },
	/* https */
	{ { R "https://r.example" }, TLSRPT_TXT_OK, "https https://r.example", "" },
	{ { R "HTTPS://R.example/T?x=1&y=%2C" }, TLSRPT_TXT_OK,
	  "https HTTPS://R.example/T?x=1&y=%2C", "" },
	{ { R "MailTo:A@x.example" }, TLSRPT_TXT_OK, "mailto MailTo:A@x.example A@x.example",
	  "" },
	{ { R "https:r.example/t" }, TLSRPT_TXT_INVALID, NULL, "https uri https:r.example/t has no host" },
	{ { R "https://" }, TLSRPT_TXT_INVALID, NULL, NULL },
	{ { R "https:///t" }, TLSRPT_TXT_INVALID, NULL, NULL },
	{ { R "https://[2001:db8::1]:8443/t" }, TLSRPT_TXT_OK,
	  "https https://[2001:db8::1]:8443/t", "" },
	/* RPT-03: other schemes ignored; none usable: invalid */
	{ { R "ftp://x.example/r,mailto:a@x.example" }, TLSRPT_TXT_OK,
	  "mailto mailto:a@x.example a@x.example", "" },
	{ { R "http://r.example/t" }, TLSRPT_TXT_INVALID, NULL, "no mailto: or https: uri in rua" },
	{ { R "urn:x-foo:bar, tel:+1-555-0100" }, TLSRPT_TXT_INVALID, NULL, NULL },
	/* uri syntax */
	{ { R "a@x.example" }, TLSRPT_TXT_INVALID, NULL, "uri a@x.example has no scheme" },
	{ { R ":a@x.example" }, TLSRPT_TXT_INVALID, NULL, NULL },
	{ { R "1mailto:a@x.example" }, TLSRPT_TXT_INVALID, NULL, NULL },
	{ { R "mailto" }, TLSRPT_TXT_INVALID, NULL, NULL },
	{ { R "mailto:a\"b@x.example" }, TLSRPT_TXT_INVALID, NULL, "rua uri contains '\"'" },
	{ { R "https://r.example/<t>" }, TLSRPT_TXT_INVALID, NULL, NULL },
	{ { R "https://r.example/\xc3\xa9" }, TLSRPT_TXT_INVALID, NULL,
	  "rua uri contains byte 0xc3" },
	{ { R "mailto:a@x.example\x01" }, TLSRPT_TXT_INVALID, NULL, NULL },
	/* extensions: syntax checked, then ignored */
	{ { R "mailto:a@x.example; foo" }, TLSRPT_TXT_INVALID, NULL, "field foo has no '='" },
	{ { R "mailto:a@x.example; foo=" }, TLSRPT_TXT_INVALID, NULL, "empty field value" },
	{ { R "mailto:a@x.example; foo=a=b" }, TLSRPT_TXT_INVALID, NULL, NULL },
	{ { R "mailto:a@x.example; _foo=a" }, TLSRPT_TXT_INVALID, NULL, NULL },
	{ { R "mailto:a@x.example; foo=\xc3\xa9" }, TLSRPT_TXT_INVALID, NULL, NULL },
	{ { R "mailto:a@x.example; v=TLSRPTv2" }, TLSRPT_TXT_OK,
	  "mailto mailto:a@x.example a@x.example", "" },
};

static void describe(char *dst, size_t dstlen, const struct tlsrpt_record *r)
{
	dst[0] = '\0';
	for (size_t i = 0; i < r->nrua; i++) {
		const struct tlsrpt_rua *u = &r->rua[i];
		snprintf(dst + strlen(dst), dstlen - strlen(dst), "%s%s %s%s%s", i ? "|" : "",
			 tlsrpt_rua_kind_name(u->kind), u->uri, u->addr ? " " : "",
			 u->addr ? u->addr : "");
	}
}

static void test_table(void)
{
	for (size_t i = 0; i < SR_ARRAY_LEN(cases); i++) {
		const struct rpt_case *tc = &cases[i];
		struct strlist recs = { 0 };
		for (size_t j = 0; j < 4 && tc->recs[j] != NULL; j++)
			strlist_add(&recs, tc->recs[j]);
		struct tlsrpt_record rec;
		char why[160], got[1024];
		enum tlsrpt_txt_result r = tlsrpt_txt_select(&recs, &rec, why, sizeof(why));
		if (r != tc->result)
			fprintf(stderr, "case %zu (%s): result %d, expected %d (%s)\n", i,
				tc->recs[0] ? tc->recs[0] : "-", r, tc->result, why);
		CHECK_INT(r, tc->result);
		if (r == TLSRPT_TXT_OK) {
			CHECK(rec.nrua >= 1 && rec.nrua <= TLSRPT_RUA_MAX);
			describe(got, sizeof(got), &rec);
			if (tc->rua != NULL)
				CHECK_STR(got, tc->rua);
		} else {
			CHECK(rec.nrua == 0 && rec.rua == NULL);
		}
		if (tc->why != NULL && strcmp(why, tc->why) != 0) {
			fprintf(stderr, "case %zu (%s)\n", i, tc->recs[0]);
			CHECK_STR(why, tc->why);
		}
		tlsrpt_record_free(&rec);
		strlist_free(&recs);
	}
}

static void test_index(void)
{
	struct strlist recs = { 0 };
	strlist_add(&recs, "v=spf1 -all");
	strlist_add(&recs, "google-site-verification=abc");
	strlist_add(&recs, "v=TLSRPTv1; rua=mailto:a@x.example");
	struct tlsrpt_record rec;
	CHECK_INT(tlsrpt_txt_select(&recs, &rec, NULL, 0), TLSRPT_TXT_OK);
	CHECK_INT(rec.index, 2);
	tlsrpt_record_free(&rec);
	tlsrpt_record_free(&rec); /* harmless twice */
	strlist_free(&recs);
	CHECK_INT(tlsrpt_txt_select(NULL, &rec, NULL, 0), TLSRPT_TXT_NONE);
}

static void test_candidate(void)
{
	CHECK(tlsrpt_txt_candidate("v=TLSRPTv1"));
	CHECK(tlsrpt_txt_candidate("v=TLSRPTv1;"));
	CHECK(tlsrpt_txt_candidate("v=TLSRPTv1 \t;rua=x"));
	CHECK(!tlsrpt_txt_candidate("v=TLSRPTv1 rua=x"));
	CHECK(!tlsrpt_txt_candidate("v=tlsrptv1;"));
	CHECK(!tlsrpt_txt_candidate(NULL));
	struct tlsrpt_record rec;
	char why[64];
	CHECK_INT(tlsrpt_record_parse("v=STSv1; id=1", &rec, why, sizeof(why)), -1);
	CHECK_STR(why, "does not start with v=TLSRPTv1");
}

/* Caps: at most TLSRPT_RUA_MAX endpoints kept; a uri over TLSRPT_URI_MAX. */
static void test_caps(void)
{
	struct buf b;
	buf_init(&b, 0);
	buf_puts(&b, "v=TLSRPTv1; rua=");
	for (int i = 0; i < TLSRPT_RUA_MAX + 3; i++)
		buf_printf(&b, "%smailto:r%d@x.example", i ? "," : "", i);
	struct tlsrpt_record rec;
	char why[128];
	REQUIRE(tlsrpt_record_parse(b.data, &rec, why, sizeof(why)) == 0);
	CHECK_INT(rec.nrua, TLSRPT_RUA_MAX);
	CHECK_STR(rec.rua[0].addr, "r0@x.example");
	CHECK_STR(rec.rua[TLSRPT_RUA_MAX - 1].addr, "r7@x.example");
	tlsrpt_record_free(&rec);
	/* later ones are still checked */
	buf_puts(&b, ",mailto:bad..x@x.example");
	CHECK_INT(tlsrpt_record_parse(b.data, &rec, why, sizeof(why)), -1);

	buf_reset(&b);
	buf_puts(&b, "v=TLSRPTv1; rua=https://r.example/");
	while (b.len < strlen("v=TLSRPTv1; rua=") + TLSRPT_URI_MAX)
		buf_putc(&b, 'a');
	CHECK_INT(tlsrpt_record_parse(b.data, &rec, why, sizeof(why)), 0);
	tlsrpt_record_free(&rec);
	buf_putc(&b, 'a');
	CHECK_INT(tlsrpt_record_parse(b.data, &rec, why, sizeof(why)), -1);
	CHECK_STR(why, "rua uri longer than 2048");
	buf_free(&b);
}

int main(void)
{
	RUN(test_table);
	RUN(test_index);
	RUN(test_candidate);
	RUN(test_caps);
	TEST_EXIT();
}
