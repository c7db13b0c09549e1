/* Unit tests for policy/dns.c (the pure parts of the resolver and of next-hop
 * resolution: names, MX ordering and null MX, address ordering, TXT joining,
 * TTLs of raw answers, the cache) and for the resolver's and nexthop's loop
 * contract where no DNS server is needed: answers always come from the loop,
 * cancel means silence, resolver_free() completes what is left, and the loop
 * closes cleanly. The only socket used is a UDP port on 127.254.253.1 that
 * nobody listens on. */
#include "policy/dns.h"
#include "policy/nexthop.h"
#include "policy/resolver.h"
#include "mta/util.h"
#include "test.h"

#include <arpa/inet.h>
#include <netinet/in.h>

/* --- a fixed random source ---------------------------------------------------- */

static uint32_t xorshift(void *arg)
{
	uint32_t *s = arg;
	uint32_t x = *s;
	x ^= x << 13;
	x ^= x >> 17;
	x ^= x << 5;
	*s = x;
	return x;
}

/* --- names -------------------------------------------------------------------- */

static void expect_name(const char *in, const char *out)
{
	char norm[DNS_NAME_MAX + 1], err[128] = "";
	int rc = dns_name_normalize(in, norm, err, sizeof(err));
	if (out == NULL) {
		CHECK_INT(rc, -1);
		CHECK(err[0] != '\0');
	} else {
		CHECK_INT(rc, 0);
		if (rc == 0)
			CHECK_STR(norm, out);
		else
			fprintf(stderr, "  name \"%s\": %s\n", in, err);
	}
}

static void test_names(void)
{
	char l63[64], l64[65], long254[256], long253[256];
	memset(l63, 'a', 63);
	l63[63] = '\0';
	memset(l64, 'a', 64);
	l64[64] = '\0';
	/* 63+1+63+1+63+1+61 = 253 */
	snprintf(long253, sizeof(long253), "%s.%s.%s.%.61s", l63, l63, l63, l63);
	snprintf(long254, sizeof(long254), "%s.%s.%s.%.62s", l63, l63, l63, l63);
	CHECK_INT(strlen(long253), 253);
	CHECK_INT(strlen(long254), 254);

	expect_name("Example.TEST", "example.test");
	expect_name("example.test.", "example.test");
	expect_name("_mta-sts.example.test", "_mta-sts.example.test");
	expect_name("_smtp._tls.Example.test", "_smtp._tls.example.test");
	expect_name("xn--bcher-kva.test", "xn--bcher-kva.test");
	expect_name("localhost", "localhost");
	expect_name("192.0.2.1", "192.0.2.1");
	expect_name(l63, l63);
	expect_name(long253, long253);
	char dotted[260];
	snprintf(dotted, sizeof(dotted), "%s.", long253);
	expect_name(dotted, long253); /* the trailing dot does not count */

	expect_name("", NULL);
	expect_name(".", NULL);
	expect_name("a..b", NULL);
	expect_name(".a", NULL);
	expect_name("a..", NULL);
	expect_name(l64, NULL);
	expect_name(long254, NULL);
	expect_name("bücher.test", NULL); /* UTF-8: A-labels only */
	expect_name("a b.test", NULL);
	expect_name("a/b.test", NULL);
	expect_name("a*.test", NULL);
	expect_name("[192.0.2.1]", NULL);
	expect_name(NULL, NULL);

	char norm[DNS_NAME_MAX + 1], err[128];
	dns_name_normalize("bücher.test", norm, err, sizeof(err));
	CHECK(strstr(err, "A-label") != NULL);
}

/* --- MX ordering -------------------------------------------------------------- */

static void test_mx_order_sorted(void)
{
	struct dns_mx mx[] = {
		{ "c", 30 }, { "a", 10 }, { "z", 65535 }, { "b", 20 }, { "zero", 0 },
	};
	uint32_t seed = 1;
	dns_mx_order(mx, SR_ARRAY_LEN(mx), xorshift, &seed);
	CHECK_STR(mx[0].host, "zero");
	CHECK_STR(mx[1].host, "a");
	CHECK_STR(mx[2].host, "b");
	CHECK_STR(mx[3].host, "c");
	CHECK_STR(mx[4].host, "z");
	/* nothing to do for 0 or 1 records */
	dns_mx_order(mx, 0, xorshift, &seed);
	dns_mx_order(mx, 1, xorshift, &seed);
	CHECK_STR(mx[0].host, "zero");
}

/* Equal preferences are shuffled: across seeds, each of the 3! orders of three
 * equal records shows up about as often, and the other preferences stay put. */
static void test_mx_order_shuffle(void)
{
	unsigned counts[6] = { 0 };
	const unsigned runs = 6000;
	for (uint32_t seed = 1; seed <= runs; seed++) {
		struct dns_mx mx[] = {
			{ "b2", 20 }, { "a", 10 }, { "b1", 20 }, { "c", 30 }, { "b3", 20 },
		};
		uint32_t s = seed * 2654435761u;
		if (s == 0)
			s = 1;
		dns_mx_order(mx, SR_ARRAY_LEN(mx), xorshift, &s);
		CHECK_STR(mx[0].host, "a");
		CHECK_STR(mx[4].host, "c");
		CHECK_INT(mx[1].pref, 20);
		CHECK_INT(mx[3].pref, 20);
		int k = (mx[1].host[1] - '1') * 2 + (mx[2].host[1] < mx[3].host[1] ? 0 : 1);
		REQUIRE(k >= 0 && k < 6);
		counts[k]++;
	}
	for (int i = 0; i < 6; i++) {
		/* expected 1000 each; 800..1200 is > 6 sigma either way */
		if (counts[i] < 800 || counts[i] > 1200)
			fprintf(stderr, "  order %d seen %u times of %u\n", i, counts[i], runs);
		CHECK(counts[i] >= 800 && counts[i] <= 1200);
	}
}

/* The same seed gives the same order (the ordering is a pure function). */
static void test_mx_order_deterministic(void)
{
	struct dns_mx a[] = { { "m1", 5 }, { "m2", 5 }, { "m3", 5 }, { "m4", 5 } };
	struct dns_mx b[] = { { "m1", 5 }, { "m2", 5 }, { "m3", 5 }, { "m4", 5 } };
	uint32_t s1 = 42, s2 = 42;
	dns_mx_order(a, 4, xorshift, &s1);
	dns_mx_order(b, 4, xorshift, &s2);
	for (int i = 0; i < 4; i++)
		CHECK_STR(a[i].host, b[i].host);
}

static void test_null_mx(void)
{
	struct dns_mx only[] = { { "", 0 } };
	struct dns_mx two_roots[] = { { "", 0 }, { "", 10 } };
	struct dns_mx mixed[] = { { "", 0 }, { "mx.example.test", 10 } };
	struct dns_mx normal[] = { { "mx.example.test", 0 } };
	CHECK(dns_mx_is_null(only, 1));
	CHECK(dns_mx_is_null(two_roots, 2));
	CHECK(!dns_mx_is_null(mixed, 2));
	CHECK(!dns_mx_is_null(normal, 1));
	CHECK(!dns_mx_is_null(NULL, 0));

	/* next to real hosts, a root host is skipped */
	struct dns_mx *sel;
	uint32_t seed = 7;
	size_t n = dns_mx_select(mixed, 2, NEXTHOP_MAX_MX, xorshift, &seed, &sel);
	REQUIRE(n == 1);
	CHECK_STR(sel[0].host, "mx.example.test");
	CHECK_INT(sel[0].pref, 10);
	dns_mx_free(sel, n);
}

static void test_mx_select(void)
{
	/* 15 hosts, one listed twice: at most 10, the best preferences, the
	 * duplicate kept at its better place only */
	struct dns_mx mx[16];
	char names[16][16];
	for (int i = 0; i < 15; i++) {
		snprintf(names[i], sizeof(names[i]), "mx%02d.test", i);
		mx[i].host = names[i];
		mx[i].pref = (unsigned)(100 - i * 5); /* mx14 is the best */
	}
	mx[15].host = names[14];
	mx[15].pref = 200;
	uint32_t seed = 3;
	struct dns_mx *sel;
	size_t n = dns_mx_select(mx, 16, NEXTHOP_MAX_MX, xorshift, &seed, &sel);
	REQUIRE(n == 10);
	CHECK_STR(sel[0].host, "mx14.test");
	CHECK_INT(sel[0].pref, 30);
	CHECK_STR(sel[9].host, "mx05.test");
	for (size_t i = 1; i < n; i++)
		CHECK(sel[i - 1].pref <= sel[i].pref);
	for (size_t i = 1; i < n; i++)
		CHECK(strcmp(sel[i].host, "mx14.test") != 0);
	dns_mx_free(sel, n);
	/* the input is untouched (select works on a copy) */
	CHECK_STR(mx[0].host, "mx00.test");
}

/* --- addresses ---------------------------------------------------------------- */

static struct sockaddr_storage ip(const char *text)
{
	struct sockaddr_storage ss;
	if (dns_parse_ip(text, &ss) < 0)
		fprintf(stderr, "  bad test address %s\n", text);
	return ss;
}

static const char *fmt_ip(const struct sockaddr_storage *ss, char *buf, size_t len)
{
	sockaddr_format((const struct sockaddr *)ss, buf, len, NULL);
	return buf;
}

static void test_addrs_order(void)
{
	struct sockaddr_storage a[] = {
		ip("2001:db8::1"), ip("192.0.2.1"), ip("2001:db8::2"), ip("192.0.2.2"), ip("192.0.2.3"),
	};
	dns_addrs_order(a, SR_ARRAY_LEN(a));
	const char *want[] = { "192.0.2.1", "192.0.2.2", "192.0.2.3", "2001:db8::1", "2001:db8::2" };
	char buf[64];
	for (size_t i = 0; i < SR_ARRAY_LEN(a); i++)
		CHECK_STR(fmt_ip(&a[i], buf, sizeof(buf)), want[i]);
	dns_addrs_order(a, 0);
	dns_addrs_order(a, 1);
	CHECK_STR(fmt_ip(&a[0], buf, sizeof(buf)), "192.0.2.1");
}

static void test_addrs_status(void)
{
	CHECK_INT(dns_addrs_status(DNS_OK, DNS_NODATA, 1), DNS_OK);
	CHECK_INT(dns_addrs_status(DNS_TEMPFAIL, DNS_OK, 2), DNS_OK);
	CHECK_INT(dns_addrs_status(DNS_NODATA, DNS_NODATA, 0), DNS_NODATA);
	CHECK_INT(dns_addrs_status(DNS_NXDOMAIN, DNS_NXDOMAIN, 0), DNS_NXDOMAIN);
	/* one says NXDOMAIN, the other that the name exists: not NXDOMAIN */
	CHECK_INT(dns_addrs_status(DNS_NXDOMAIN, DNS_NODATA, 0), DNS_NODATA);
	/* a temporary failure beats every negative answer */
	CHECK_INT(dns_addrs_status(DNS_TEMPFAIL, DNS_NXDOMAIN, 0), DNS_TEMPFAIL);
	CHECK_INT(dns_addrs_status(DNS_NODATA, DNS_TEMPFAIL, 0), DNS_TEMPFAIL);
	CHECK_INT(dns_addrs_status(DNS_TEMPFAIL, DNS_TEMPFAIL, 0), DNS_TEMPFAIL);
}

static void test_literals(void)
{
	struct sockaddr_storage ss;
	char buf[64];
	CHECK_INT(dns_addr_literal("[192.0.2.1]", &ss), 0);
	CHECK_STR(fmt_ip(&ss, buf, sizeof(buf)), "192.0.2.1");
	CHECK_INT(dns_addr_literal("[IPv6:2001:DB8::1]", &ss), 0);
	CHECK_STR(fmt_ip(&ss, buf, sizeof(buf)), "2001:db8::1");
	CHECK_INT(dns_addr_literal("[ipv6:::1]", &ss), 0);
	CHECK_INT(ss.ss_family, AF_INET6);
	CHECK_INT(dns_addr_literal("[2001:db8::1]", &ss), -1);   /* tag required */
	CHECK_INT(dns_addr_literal("[IPv6:192.0.2.1]", &ss), -1);
	CHECK_INT(dns_addr_literal("[300.0.2.1]", &ss), -1);
	CHECK_INT(dns_addr_literal("[192.0.2]", &ss), -1);
	CHECK_INT(dns_addr_literal("[host.test]", &ss), -1);
	CHECK_INT(dns_addr_literal("[x-tag:foo]", &ss), -1);
	CHECK_INT(dns_addr_literal("[]", &ss), -1);
	CHECK_INT(dns_addr_literal("192.0.2.1", &ss), -1);
	CHECK_INT(dns_parse_ip("192.0.2.1", &ss), 0);
	CHECK_INT(dns_parse_ip("::1", &ss), 0);
	CHECK_INT(dns_parse_ip("host.test", &ss), -1);
}

/* --- TXT ---------------------------------------------------------------------- */

static void test_txt_join(void)
{
	const unsigned char s1[] = "v=STSv1; ", s2[] = "id=2024", s3[] = "v=TLSRPTv1;", s4[] = "",
			    s5[] = { 'a', 0, 'b' };
	struct dns_txt_piece p[] = {
		{ s1, 9, true }, { s2, 7, false }, /* one record, two strings */
		{ s3, 11, true },                  /* a second record */
		{ s4, 0, true },                   /* an empty record */
		{ s5, 3, true },                   /* NUL inside */
	};
	struct strlist out = { 0 };
	dns_txt_join(p, SR_ARRAY_LEN(p), &out);
	REQUIRE(out.n == 4);
	CHECK_STR(out.v[0], "v=STSv1; id=2024");
	CHECK_STR(out.v[1], "v=TLSRPTv1;");
	CHECK_STR(out.v[2], "");
	CHECK_STR(out.v[3], "a\x7f" "b");
	strlist_free(&out);

	/* a first piece without record_start still opens a record */
	struct dns_txt_piece q[] = { { s2, 7, false }, { s3, 11, false } };
	dns_txt_join(q, 2, &out);
	REQUIRE(out.n == 1);
	CHECK_STR(out.v[0], "id=2024v=TLSRPTv1;");
	strlist_free(&out);
	dns_txt_join(q, 0, &out);
	CHECK_INT(out.n, 0);
}

/* --- TTLs of raw answers ---------------------------------------------------------- */

static void test_msg_ttls(void)
{
	/* example.test MX: two answers, TTL 300 and 120 */
	static const unsigned char pos[] = {
		0x12, 0x34, 0x81, 0x80, 0, 1, 0, 2, 0, 0, 0, 0,
		7, 'e', 'x', 'a', 'm', 'p', 'l', 'e', 4, 't', 'e', 's', 't', 0, 0, 15, 0, 1,
		0xc0, 0x0c, 0, 15, 0, 1, 0, 0, 0x01, 0x2c, 0, 8, 0, 10, 3, 'm', 'x', '1', 0xc0, 0x0c,
		0xc0, 0x0c, 0, 15, 0, 1, 0, 0, 0x00, 0x78, 0, 8, 0, 20, 3, 'm', 'x', '2', 0xc0, 0x0c,
	};
	struct dns_msg_ttl t;
	CHECK_INT(dns_msg_ttls(pos, sizeof(pos), &t), 0);
	CHECK(t.has_answer);
	CHECK_INT(t.answer_min, 120);
	CHECK(!t.has_soa);

	/* NXDOMAIN with an SOA: TTL 3600, MINIMUM 45 -> 45 */
	static const unsigned char neg[] = {
		0x12, 0x34, 0x81, 0x83, 0, 1, 0, 0, 0, 1, 0, 0,
		7, 'e', 'x', 'a', 'm', 'p', 'l', 'e', 4, 't', 'e', 's', 't', 0, 0, 15, 0, 1,
		0xc0, 0x0c, 0, 6, 0, 1, 0, 0, 0x0e, 0x10, 0, 32,
		2, 'n', 's', 0xc0, 0x0c, 4, 'h', 'o', 's', 't', 0xc0, 0x0c,
		0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 4, 0, 0, 0, 45,
	};
	CHECK_INT(dns_msg_ttls(neg, sizeof(neg), &t), 0);
	CHECK(!t.has_answer);
	CHECK(t.has_soa);
	CHECK_INT(t.negative, 45);

	/* the SOA's own TTL wins when smaller */
	unsigned char neg2[sizeof(neg)];
	memcpy(neg2, neg, sizeof(neg));
	neg2[30 + 6] = 0;
	neg2[30 + 7] = 0;
	neg2[30 + 8] = 0;
	neg2[30 + 9] = 10;
	CHECK_INT(dns_msg_ttls(neg2, sizeof(neg2), &t), 0);
	CHECK_INT(t.negative, 10);

	/* a TTL with the top bit set counts as 0 */
	unsigned char big[sizeof(pos)];
	memcpy(big, pos, sizeof(pos));
	big[30 + 6] = 0x80;
	CHECK_INT(dns_msg_ttls(big, sizeof(big), &t), 0);
	CHECK_INT(t.answer_min, 0);

	/* cut short: malformed */
	CHECK_INT(dns_msg_ttls(pos, sizeof(pos) - 3, &t), -1);
	CHECK_INT(dns_msg_ttls(pos, 11, &t), -1);
	CHECK_INT(dns_msg_ttls(NULL, 0, &t), -1);
	/* a label pointing past the end */
	unsigned char bad[] = { 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 60, 'a' };
	CHECK_INT(dns_msg_ttls(bad, sizeof(bad), &t), -1);
}

/* --- the cache ------------------------------------------------------------------- */

static void result_mx(struct dns_result *r, enum dns_status st, uint32_t ttl, const char *host)
{
	memset(r, 0, sizeof(*r));
	r->status = st;
	r->ttl = ttl;
	if (host != NULL) {
		r->mx = xcalloc(1, sizeof(*r->mx));
		r->mx[0].host = xstrdup(host);
		r->mx[0].pref = 10;
		r->nmx = 1;
	}
}

static void test_cache_lifetimes(void)
{
	struct dns_cache *c = dns_cache_new(100);
	struct dns_result in, out;
	uint64_t t0 = 1000000;

	result_mx(&in, DNS_OK, 3600, "mx.a.test");
	dns_cache_put(c, DNS_Q_MX, "a.test", &in, t0);
	dns_result_free(&in);
	CHECK(dns_cache_get(c, DNS_Q_MX, "a.test", t0 + 1000, &out));
	CHECK(out.cached);
	CHECK_INT(out.ttl, 299);             /* capped at 300 s, 1 s gone */
	REQUIRE(out.nmx == 1);
	CHECK_STR(out.mx[0].host, "mx.a.test");
	dns_result_free(&out);
	CHECK(!dns_cache_get(c, DNS_Q_ADDRS, "a.test", t0, &out)); /* other kind */
	CHECK(!dns_cache_get(c, DNS_Q_MX, "a.test", t0 + 300000, &out)); /* expired */
	CHECK_INT(dns_cache_count(c), 0);

	result_mx(&in, DNS_OK, 5, "mx.b.test");
	dns_cache_put(c, DNS_Q_MX, "b.test", &in, t0);
	dns_result_free(&in);
	CHECK(dns_cache_get(c, DNS_Q_MX, "b.test", t0 + 4999, &out));
	CHECK_INT(out.ttl, 1);
	dns_result_free(&out);
	CHECK(!dns_cache_get(c, DNS_Q_MX, "b.test", t0 + 5000, &out));

	/* negative answers: at most 60 s */
	result_mx(&in, DNS_NXDOMAIN, 3600, NULL);
	dns_cache_put(c, DNS_Q_MX, "nx.test", &in, t0);
	result_mx(&in, DNS_NODATA, 30, NULL);
	dns_cache_put(c, DNS_Q_TXT, "nodata.test", &in, t0);
	CHECK(dns_cache_get(c, DNS_Q_MX, "nx.test", t0 + 59000, &out));
	CHECK_INT(out.status, DNS_NXDOMAIN);
	dns_result_free(&out);
	CHECK(!dns_cache_get(c, DNS_Q_MX, "nx.test", t0 + 60000, &out));
	CHECK(dns_cache_get(c, DNS_Q_TXT, "nodata.test", t0 + 29000, &out));
	dns_result_free(&out);
	CHECK(!dns_cache_get(c, DNS_Q_TXT, "nodata.test", t0 + 30000, &out));

	/* never: temporary failures, bad names, TTL 0 */
	result_mx(&in, DNS_TEMPFAIL, 300, NULL);
	dns_cache_put(c, DNS_Q_MX, "tf.test", &in, t0);
	result_mx(&in, DNS_BADNAME, 300, NULL);
	dns_cache_put(c, DNS_Q_MX, "bad.test", &in, t0);
	result_mx(&in, DNS_OK, 0, "mx.zero.test");
	dns_cache_put(c, DNS_Q_MX, "zero.test", &in, t0);
	dns_result_free(&in);
	CHECK(!dns_cache_get(c, DNS_Q_MX, "tf.test", t0, &out));
	CHECK(!dns_cache_get(c, DNS_Q_MX, "bad.test", t0, &out));
	CHECK(!dns_cache_get(c, DNS_Q_MX, "zero.test", t0, &out));

	/* a TEMPFAIL does not even replace... it removes a stale entry */
	result_mx(&in, DNS_OK, 100, "mx.r.test");
	dns_cache_put(c, DNS_Q_MX, "r.test", &in, t0);
	dns_result_free(&in);
	result_mx(&in, DNS_TEMPFAIL, 0, NULL);
	dns_cache_put(c, DNS_Q_MX, "r.test", &in, t0);
	CHECK(!dns_cache_get(c, DNS_Q_MX, "r.test", t0, &out));
	dns_cache_free(c);
}

static void test_cache_bounded(void)
{
	struct dns_cache *c = dns_cache_new(50);
	struct dns_result in, out;
	char name[32];
	for (int i = 0; i < 120; i++) {
		snprintf(name, sizeof(name), "d%d.test", i);
		result_mx(&in, DNS_OK, 300, name);
		dns_cache_put(c, DNS_Q_MX, name, &in, 1000 + (uint64_t)i);
		dns_result_free(&in);
		CHECK(dns_cache_count(c) <= 50);
	}
	CHECK_INT(dns_cache_count(c), 50);
	/* the oldest went first */
	CHECK(!dns_cache_get(c, DNS_Q_MX, "d0.test", 2000, &out));
	CHECK(!dns_cache_get(c, DNS_Q_MX, "d69.test", 2000, &out));
	CHECK(dns_cache_get(c, DNS_Q_MX, "d70.test", 2000, &out));
	dns_result_free(&out);
	CHECK(dns_cache_get(c, DNS_Q_MX, "d119.test", 2000, &out));
	CHECK_STR(out.mx[0].host, "d119.test");
	dns_result_free(&out);
	/* re-inserting a name replaces it, never duplicates it */
	result_mx(&in, DNS_OK, 300, "new");
	dns_cache_put(c, DNS_Q_MX, "d100.test", &in, 3000);
	dns_result_free(&in);
	CHECK_INT(dns_cache_count(c), 50);
	CHECK(dns_cache_get(c, DNS_Q_MX, "d100.test", 3000, &out));
	CHECK_STR(out.mx[0].host, "new");
	dns_result_free(&out);
	dns_cache_flush(c);
	CHECK_INT(dns_cache_count(c), 0);
	CHECK(!dns_cache_get(c, DNS_Q_MX, "d119.test", 2000, &out));
	dns_cache_free(c);
}

/* --- the loop contract (no DNS server needed) ------------------------------------- */

struct seen {
	int calls;
	enum dns_status status;
	char detail[DNS_DETAIL_MAX];
	struct resolver *free_me;   /* resolver_free() from inside the callback */
};

static void on_dns(void *arg, const struct dns_result *res)
{
	struct seen *s = arg;
	s->calls++;
	s->status = res->status;
	snprintf(s->detail, sizeof(s->detail), "%s", res->detail);
	if (s->free_me != NULL) {
		struct resolver *r = s->free_me;
		s->free_me = NULL;
		resolver_free(r);
	}
}

struct nh_seen {
	int calls;
	enum nexthop_status status;
	char host[64];
	char addr[64];
	size_t nhosts;
};

static void on_nh(void *arg, const struct nexthop *nh)
{
	struct nh_seen *s = arg;
	s->calls++;
	s->status = nh->status;
	s->nhosts = nh->nhosts;
	s->host[0] = s->addr[0] = '\0';
	if (nh->nhosts > 0) {
		snprintf(s->host, sizeof(s->host), "%s", nh->hosts[0].name);
		if (nh->hosts[0].naddrs > 0)
			fmt_ip(&nh->hosts[0].addrs[0], s->addr, sizeof(s->addr));
	}
}

/* A UDP port nobody serves, outside the lab slots (127.1-250.x.y). */
static struct resolver *dead_resolver(uv_loop_t *loop)
{
	struct hostport hp = { .host = "127.254.253.1", .port = 9 };
	struct resolver *r = NULL;
	char err[200] = "";
	if (resolver_new(&r, loop, &hp, 1, 200, 1, err, sizeof(err)) < 0)
		fprintf(stderr, "  resolver_new: %s\n", err);
	return r;
}

static void test_resolver_new_errors(void)
{
	uv_loop_t loop;
	uv_loop_init(&loop);
	struct resolver *r = NULL;
	char err[200] = "";
	struct hostport hp = { .host = "dns.example.test", .port = 53 };
	CHECK_INT(resolver_new(&r, &loop, &hp, 1, 0, 0, err, sizeof(err)), -1);
	CHECK(r == NULL);
	CHECK(strstr(err, "dns.example.test") != NULL);
	struct hostport v6[] = { { .host = "::1", .port = 5353 }, { .host = "127.0.0.1" } };
	CHECK_INT(resolver_new(&r, &loop, v6, 2, 0, 0, err, sizeof(err)), 0);
	resolver_free(r);
	uv_run(&loop, UV_RUN_DEFAULT);
	CHECK_INT(uv_loop_close(&loop), 0);
}

static void test_async_badname_and_cancel(void)
{
	uv_loop_t loop;
	uv_loop_init(&loop);
	struct resolver *r = dead_resolver(&loop);
	REQUIRE(r != NULL);
	struct seen a = { 0 }, b = { 0 }, c = { 0 };
	resolver_query_mx(r, "bad..name", on_dns, &a);
	struct dns_query *qb = resolver_query_txt(r, "bücher.test", on_dns, &b);
	resolver_call_soon(r, on_dns, &c);
	/* never from inside the call */
	CHECK_INT(a.calls, 0);
	CHECK_INT(b.calls, 0);
	CHECK_INT(c.calls, 0);
	dns_query_cancel(qb);
	uv_run(&loop, UV_RUN_DEFAULT);
	CHECK_INT(a.calls, 1);
	CHECK_INT(a.status, DNS_BADNAME);
	CHECK(strstr(a.detail, "empty label") != NULL);
	CHECK_INT(b.calls, 0); /* cancelled: silent */
	CHECK_INT(c.calls, 1);
	CHECK_INT(c.status, DNS_OK);
	resolver_free(r);
	uv_run(&loop, UV_RUN_DEFAULT);
	CHECK_INT(uv_loop_close(&loop), 0);
}

/* A refused UDP port is a temporary failure, never a negative answer; a
 * query still out when resolver_free() runs completes there with TEMPFAIL;
 * a cancelled one stays silent. */
static void test_tempfail_and_free(void)
{
	uv_loop_t loop;
	uv_loop_init(&loop);
	struct resolver *r = dead_resolver(&loop);
	REQUIRE(r != NULL);
	struct seen a = { 0 };
	resolver_query_addrs(r, "host.example.test", on_dns, &a);
	uv_run(&loop, UV_RUN_DEFAULT);
	CHECK_INT(a.calls, 1);
	CHECK_INT(a.status, DNS_TEMPFAIL);
	CHECK_INT(resolver_cache_count(r), 0); /* TEMPFAIL is never cached */

	struct seen p = { 0 }, x = { 0 }, q = { 0 };
	resolver_query_mx(r, "pending.example.test", on_dns, &p);
	struct dns_query *qx = resolver_query_mx(r, "cancelled.example.test", on_dns, &x);
	resolver_query_mx(r, "in..valid", on_dns, &q); /* on the ready list */
	dns_query_cancel(qx);
	resolver_free(r);
	CHECK_INT(p.calls, 1);
	CHECK_INT(p.status, DNS_TEMPFAIL);
	CHECK_STR(p.detail, "resolver shutting down");
	CHECK_INT(q.calls, 1);
	CHECK_INT(q.status, DNS_TEMPFAIL);
	CHECK_INT(x.calls, 0);
	uv_run(&loop, UV_RUN_DEFAULT);
	CHECK_INT(p.calls, 1);
	CHECK_INT(uv_loop_close(&loop), 0);
}

/* resolver_free() from inside a callback, with more answers waiting. */
static void test_free_from_callback(void)
{
	uv_loop_t loop;
	uv_loop_init(&loop);
	struct resolver *r = dead_resolver(&loop);
	REQUIRE(r != NULL);
	struct seen a = { 0 }, b = { 0 };
	a.free_me = r;
	resolver_call_soon(r, on_dns, &a);
	resolver_call_soon(r, on_dns, &b);
	uv_run(&loop, UV_RUN_DEFAULT);
	CHECK_INT(a.calls, 1);
	CHECK_INT(a.status, DNS_OK);
	CHECK_INT(b.calls, 1);
	CHECK_INT(b.status, DNS_TEMPFAIL); /* completed by resolver_free */
	CHECK_INT(uv_loop_close(&loop), 0);
}

static void test_nexthop_literals(void)
{
	uv_loop_t loop;
	uv_loop_init(&loop);
	struct resolver *r = dead_resolver(&loop);
	REQUIRE(r != NULL);
	struct nh_seen v4 = { 0 }, v6 = { 0 }, bare = { 0 }, bad = { 0 }, badname = { 0 },
		       cancelled = { 0 }, v6bare = { 0 };
	nexthop_resolve(r, "[192.0.2.1]", true, on_nh, &v4);
	nexthop_resolve(r, "[IPv6:2001:DB8::1]", true, on_nh, &v6);
	nexthop_resolve(r, "192.0.2.7", false, on_nh, &bare);
	nexthop_resolve(r, "2001:db8::7", false, on_nh, &v6bare);
	nexthop_resolve(r, "[300.1.1.1]", true, on_nh, &bad);
	nexthop_resolve(r, "exa mple.test", true, on_nh, &badname);
	struct nexthop_query *qc = nexthop_resolve(r, "[192.0.2.9]", false, on_nh, &cancelled);
	CHECK_INT(v4.calls + v6.calls + bare.calls + bad.calls + badname.calls, 0);
	nexthop_cancel(qc);
	uv_run(&loop, UV_RUN_DEFAULT);
	CHECK_INT(v4.calls, 1);
	CHECK_INT(v4.status, NH_OK);
	CHECK_STR(v4.host, "192.0.2.1");
	CHECK_STR(v4.addr, "192.0.2.1");
	CHECK_INT(v6.status, NH_OK);
	CHECK_STR(v6.addr, "2001:db8::1");
	CHECK_INT(bare.status, NH_OK);
	CHECK_STR(bare.addr, "192.0.2.7");
	CHECK_INT(v6bare.status, NH_OK);
	CHECK_STR(v6bare.addr, "2001:db8::7");
	CHECK_INT(bad.calls, 1);
	CHECK_INT(bad.status, NH_BADNAME);
	CHECK_INT(badname.status, NH_BADNAME);
	CHECK_INT(cancelled.calls, 0);

	/* a DNS failure never turns into a negative verdict */
	struct nh_seen tf = { 0 }, route = { 0 };
	nexthop_resolve(r, "example.test", true, on_nh, &tf);
	nexthop_resolve(r, "relay.example.test", false, on_nh, &route);
	uv_run(&loop, UV_RUN_DEFAULT);
	CHECK_INT(tf.calls, 1);
	CHECK_INT(tf.status, NH_TEMPFAIL);
	CHECK_INT(route.calls, 1);
	CHECK_INT(route.status, NH_TEMPFAIL);
	CHECK_INT(route.nhosts, 1);
	CHECK_STR(route.host, "relay.example.test");

	/* resolver_free completes a resolution in progress with TEMPFAIL */
	struct nh_seen late = { 0 };
	nexthop_resolve(r, "late.example.test", true, on_nh, &late);
	resolver_free(r);
	CHECK_INT(late.calls, 1);
	CHECK_INT(late.status, NH_TEMPFAIL);
	uv_run(&loop, UV_RUN_DEFAULT);
	CHECK_INT(uv_loop_close(&loop), 0);
}

int main(void)
{
	RUN(test_names);
	RUN(test_mx_order_sorted);
	RUN(test_mx_order_shuffle);
	RUN(test_mx_order_deterministic);
	RUN(test_null_mx);
	RUN(test_mx_select);
	RUN(test_addrs_order);
	RUN(test_addrs_status);
	RUN(test_literals);
	RUN(test_txt_join);
	RUN(test_msg_ttls);
	RUN(test_cache_lifetimes);
	RUN(test_cache_bounded);
	RUN(test_resolver_new_errors);
	RUN(test_async_badname_and_cancel);
	RUN(test_tempfail_and_free);
	RUN(test_free_from_callback);
	RUN(test_nexthop_literals);
	TEST_EXIT();
}
