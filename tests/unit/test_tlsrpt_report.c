/*
 * Unit tests for tlsrpt/report.c: aggregation of one policy domain's day
 * of sessions into an RFC 8460 report (RPT-10..14, D11, D12), the JSON
 * checked against the field tables by Python's json module, the file name
 * (RPT-20), the report-id and gzip (RPT-21).
 */
#include <signal.h>
#include <stdint.h>
#include <sys/wait.h>
#include <unistd.h>

#include "test.h"
#include "tlsrpt/report.h"

#define DAY 1795305600LL /* 2026-11-22T00:00:00Z */
#define DOMAIN "example.net"

#define POL_A "version: STSv1\nmode: enforce\nmx: mx1.example.net\nmx: *.backup.example.net\nmax_age: 86400"
#define MX_A "mx1.example.net\n*.backup.example.net"
#define POL_B "version: STSv1\r\nmode: testing\r\nmx: mx1.example.net\r\n\r\nmax_age: 604800\r\n"
#define MX_B "mx1.example.net"

static const struct tlsrpt_report_params params = {
	.organization_name = "Sender Example Org",
	.contact_info = "tlsrpt@mail.sndr.example",
	.report_id = "2026-11-22.example.net.0011223344556677@mail.sndr.example",
	.policy_domain = DOMAIN,
	.start = DAY,
	.end = DAY + 86400,
};

/* An sts session: tls true when the result is success. */
static struct tlsrpt_session sts(const char *pol, const char *mx, const char *result,
				 const char *detail, const char *mx_host, const char *mx_ip,
				 const char *helo, const char *sending_ip)
{
	struct tlsrpt_session s = {
		.time = DAY + 3600,
		.policy_domain = DOMAIN,
		.policy_type = "sts",
		.mx_host = mx_host,
		.mx_ip = mx_ip,
		.mx_helo = helo,
		.sending_ip = sending_ip,
		.starttls_offered = true,
		.tls = strcmp(result, "success") == 0,
		.result_type = result,
		.detail = detail,
		.policy_strings = pol,
		.policy_mx = mx,
	};
	return s;
}

static struct tlsrpt_session nopol(bool offered, bool tls, const char *result, const char *detail,
				   const char *mx_host, const char *mx_ip)
{
	struct tlsrpt_session s = {
		.time = DAY + 7200,
		.policy_domain = DOMAIN,
		.policy_type = "no-policy-found",
		.mx_host = mx_host,
		.mx_ip = mx_ip,
		.mx_helo = "mx.example.net",
		.sending_ip = "192.0.2.1",
		.starttls_offered = offered,
		.tls = tls,
		.result_type = result,
		.detail = detail,
		.policy_strings = "",
		.policy_mx = "",
	};
	return s;
}

static struct tlsrpt_session fetch_failure(const char *result, const char *detail)
{
	struct tlsrpt_session s = {
		.time = DAY + 60,
		.policy_domain = DOMAIN,
		.policy_type = "sts",
		.mx_host = "",
		.mx_ip = "",
		.mx_helo = "",
		.sending_ip = "",
		.result_type = result,
		.detail = detail,
		.policy_strings = "",
		.policy_mx = "",
	};
	return s;
}

static char *report_json(const struct tlsrpt_session *rows, size_t n, bool pretty)
{
	struct tlsrpt_report r;
	char why[200];
	if (tlsrpt_report_build(&params, rows, n, &r, why, sizeof(why)) != 0) {
		fprintf(stderr, "%s: build failed: %s\n", test_current, why);
		test_failures++;
		return xstrdup("");
	}
	struct buf b;
	buf_init(&b, 0);
	tlsrpt_report_json(&r, &b, pretty);
	tlsrpt_report_free(&r);
	return buf_steal(&b, NULL);
}

/* The realistic day used for the golden output and the Python check: two
 * versions of the sts policy, successes, and four kinds of failure. */
static size_t realistic_day(struct tlsrpt_session *v)
{
	size_t n = 0;
	for (int i = 0; i < 5; i++)
		v[n++] = sts(POL_A, MX_A, "success", "", "mx1.example.net", "203.0.113.10",
			     "mx1.example.net", "198.51.100.7");
	v[n++] = sts(POL_A, MX_A, "certificate-expired", "certificate has expired",
		     "mx2.backup.example.net", "2001:DB8:0:0:0:0:0:25", "mx2.backup.example.net",
		     "2001:db8:abcd:0012::1");
	v[n++] = sts(POL_A, MX_A, "certificate-expired", "certificate has expired",
		     "MX2.backup.example.net.", "2001:db8::25", "mx2.backup.example.net",
		     "2001:db8:abcd:12:0:0:0:1");
	v[n++] = sts(POL_A, MX_A, "validation-failure", "mx-not-in-policy", "mx9.example.org", "",
		     "", "");
	for (int i = 0; i < 3; i++)
		v[n++] = sts(POL_B, MX_B, "success", "", "mx1.example.net", "203.0.113.10",
			     "mx1.example.net", "198.51.100.7");
	v[n] = sts(POL_B, MX_B, "starttls-not-supported", "", "mx1.example.net", "203.0.113.11",
		   "mx1-b.example.net", "198.51.100.7");
	v[n++].tls = false;
	v[n++] = sts(POL_B, MX_B, "certificate-not-trusted", "unable to get local issuer certificate",
		     "mx1.example.net", "203.0.113.12", "mx1.example.net", "198.51.100.7");
	return n;
}

/* Runs python3 on the JSON with a checker of the RPT-10 field tables; true
 * when it exits 0. quiet: its complaints go to /dev/null (for JSON that is
 * meant to fail). */
static bool python_check(const char *json, bool quiet)
{
	static const char script[] =
		"import json, sys, re, ipaddress\n"
		"def nodup(pairs):\n"
		"    keys = [k for k, v in pairs]\n"
		"    assert len(keys) == len(set(keys)), (\"duplicate key\", keys)\n"
		"    return dict(pairs)\n"
		"def isint(v):\n"
		"    return type(v) is int and v >= 0\n"
		"r = json.loads(sys.stdin.buffer.read().decode(\"utf-8\"), object_pairs_hook=nodup)\n"
		"assert set(r) == {\"organization-name\", \"date-range\", \"contact-info\","
		" \"report-id\", \"policies\"}, sorted(r)\n"
		"for k in (\"organization-name\", \"contact-info\", \"report-id\"):\n"
		"    assert isinstance(r[k], str) and r[k], k\n"
		"assert re.fullmatch(r\"[^@\\s]+@[a-z0-9.-]+\", r[\"contact-info\"])\n"
		"dr = r[\"date-range\"]\n"
		"assert set(dr) == {\"start-datetime\", \"end-datetime\"}, dr\n"
		"for v in dr.values():\n"
		"    assert re.fullmatch(r\"\\d{4}-\\d\\d-\\d\\dT00:00:00Z\", v), v\n"
		"assert dr[\"start-datetime\"] < dr[\"end-datetime\"]\n"
		"assert isinstance(r[\"policies\"], list) and r[\"policies\"]\n"
		"types = {\"starttls-not-supported\", \"certificate-host-mismatch\","
		" \"certificate-expired\", \"certificate-not-trusted\", \"validation-failure\","
		" \"tlsa-invalid\", \"dnssec-invalid\", \"dane-required\", \"sts-policy-fetch-error\","
		" \"sts-policy-invalid\", \"sts-webpki-invalid\"}\n"
		"fkeys = {\"result-type\", \"sending-mta-ip\", \"receiving-mx-hostname\","
		" \"receiving-mx-helo\", \"receiving-ip\", \"failed-session-count\","
		" \"additional-information\", \"failure-reason-code\"}\n"
		"for p in r[\"policies\"]:\n"
		"    assert set(p) == {\"policy\", \"summary\", \"failure-details\"}, sorted(p)\n"
		"    pol = p[\"policy\"]\n"
		"    assert pol[\"policy-type\"] in (\"sts\", \"tlsa\", \"no-policy-found\")\n"
		"    assert isinstance(pol[\"policy-domain\"], str) and pol[\"policy-domain\"]\n"
		"    if pol[\"policy-type\"] == \"no-policy-found\":\n"
		"        assert set(pol) == {\"policy-type\", \"policy-domain\"}, sorted(pol)\n"
		"    else:\n"
		"        assert set(pol) == {\"policy-type\", \"policy-string\", \"policy-domain\","
		" \"mx-host\"}, sorted(pol)\n"
		"        for k in (\"policy-string\", \"mx-host\"):\n"
		"            assert isinstance(pol[k], list), k\n"
		"            assert all(isinstance(s, str) and s for s in pol[k]), k\n"
		"    s = p[\"summary\"]\n"
		"    assert set(s) == {\"total-successful-session-count\","
		" \"total-failure-session-count\"}, sorted(s)\n"
		"    assert all(isint(v) for v in s.values()), s\n"
		"    fd = p[\"failure-details\"]\n"
		"    assert isinstance(fd, list)\n"
		"    total = 0\n"
		"    for f in fd:\n"
		"        assert set(f) <= fkeys, sorted(f)\n"
		"        assert \"result-type\" in f and \"failed-session-count\" in f, f\n"
		"        assert f[\"result-type\"] in types, f\n"
		"        assert isint(f[\"failed-session-count\"]) and f[\"failed-session-count\"] > 0\n"
		"        for k, v in f.items():\n"
		"            if k != \"failed-session-count\":\n"
		"                assert isinstance(v, str) and v, (k, v)\n"
		"        for k in (\"sending-mta-ip\", \"receiving-ip\"):\n"
		"            if k in f:\n"
		"                assert ipaddress.ip_address(f[k]).compressed == f[k], f[k]\n"
		"        total += f[\"failed-session-count\"]\n"
		"    assert total == s[\"total-failure-session-count\"], (total, s)\n";
	const char *python = "/usr/bin/python3";
	if (access(python, X_OK) != 0) {
		fprintf(stderr, "%s: %s missing, JSON check skipped\n", test_current, python);
		return true;
	}
	char *cmd = xasprintf("%s -c '%s'%s", python, script, quiet ? " 2>/dev/null" : "");
	FILE *f = popen(cmd, "w");
	free(cmd);
	if (f == NULL)
		return false;
	fwrite(json, 1, strlen(json), f);
	int st = pclose(f);
	return st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0;
}

static bool python_valid(const char *json)
{
	return python_check(json, false);
}

static bool python_rejects(const char *json)
{
	return !python_check(json, true);
}

static const struct tlsrpt_policy *find_policy(const struct tlsrpt_report *r, const char *type,
					       size_t nstrings)
{
	for (size_t i = 0; i < r->npolicies; i++)
		if (strcmp(r->policies[i].type, type) == 0 && r->policies[i].strings.n == nstrings)
			return &r->policies[i];
	return NULL;
}

static void test_grouping(void)
{
	struct tlsrpt_session v[32];
	size_t n = realistic_day(v);
	struct tlsrpt_report r;
	char why[200];
	REQUIRE(tlsrpt_report_build(&params, v, n, &r, why, sizeof(why)) == 0);
	CHECK_STR(why, "");
	CHECK_STR(r.policy_domain, DOMAIN);
	REQUIRE(r.npolicies == 2);

	const struct tlsrpt_policy *a = find_policy(&r, "sts", 5);
	const struct tlsrpt_policy *b = find_policy(&r, "sts", 4);
	REQUIRE(a != NULL && b != NULL);
	CHECK_STR(a->strings.v[0], "version: STSv1");
	CHECK_STR(a->strings.v[2], "mx: mx1.example.net");
	CHECK_STR(a->strings.v[4], "max_age: 86400");
	REQUIRE(a->mx.n == 2);
	CHECK_STR(a->mx.v[0], "mx1.example.net");
	CHECK_STR(a->mx.v[1], "*.backup.example.net");
	CHECK_INT(a->successes, 5);
	CHECK_INT(a->failures, 3);
	REQUIRE(a->nfail == 2);
	/* two spellings of the same host and addresses: one group */
	CHECK_STR(a->fail[0].result_type, "certificate-expired");
	CHECK_INT(a->fail[0].count, 2);
	CHECK_STR(a->fail[0].mx_host, "mx2.backup.example.net");
	CHECK_STR(a->fail[0].mx_ip, "2001:db8::25");
	CHECK_STR(a->fail[0].sending_ip, "2001:db8:abcd:12::1");
	CHECK_STR(a->fail[0].reason, "certificate has expired");
	/* D8: no IPs, no helo */
	CHECK_STR(a->fail[1].result_type, "validation-failure");
	CHECK_STR(a->fail[1].reason, "mx-not-in-policy");
	CHECK_STR(a->fail[1].mx_ip, "");
	CHECK_STR(a->fail[1].sending_ip, "");
	CHECK_INT(a->fail[1].count, 1);

	/* CR LF and blank lines of the policy text are dropped */
	CHECK_STR(b->strings.v[1], "mode: testing");
	CHECK_STR(b->strings.v[3], "max_age: 604800");
	CHECK_INT(b->successes, 3);
	CHECK_INT(b->failures, 2);
	REQUIRE(b->nfail == 2);
	CHECK_STR(b->fail[0].result_type, "certificate-not-trusted");
	CHECK_STR(b->fail[1].result_type, "starttls-not-supported");
	CHECK_STR(b->fail[1].mx_helo, "mx1-b.example.net");
	CHECK_STR(b->fail[1].reason, "");
	tlsrpt_report_free(&r);
	CHECK(r.policies == NULL && r.npolicies == 0);

	/* same sender, MX and IPs, different result types or helo: separate */
	struct tlsrpt_session w[4];
	w[0] = sts(POL_A, MX_A, "certificate-expired", "", "mx1.example.net", "203.0.113.10", "a",
		   "198.51.100.7");
	w[1] = sts(POL_A, MX_A, "certificate-host-mismatch", "", "mx1.example.net",
		   "203.0.113.10", "a", "198.51.100.7");
	w[2] = sts(POL_A, MX_A, "certificate-expired", "", "mx1.example.net", "203.0.113.10", "b",
		   "198.51.100.7");
	w[3] = sts(POL_A, MX_A, "certificate-expired", "", "mx1.example.net", "203.0.113.10", "a",
		   "198.51.100.8");
	REQUIRE(tlsrpt_report_build(&params, w, 4, &r, why, sizeof(why)) == 0);
	REQUIRE(r.npolicies == 1);
	CHECK_INT(r.policies[0].nfail, 4);
	CHECK_INT(r.policies[0].failures, 4);
	CHECK_INT(r.policies[0].successes, 0);
	tlsrpt_report_free(&r);
}

static void test_sts_success_rule(void)
{
	struct tlsrpt_session v[3];
	/* TLS established but not policy-compliant: a failure */
	v[0] = sts(POL_A, MX_A, "certificate-host-mismatch", "no SAN matches", "mx1.example.net",
		   "203.0.113.10", "mx1.example.net", "198.51.100.7");
	v[0].tls = true;
	v[1] = sts(POL_A, MX_A, "success", "", "mx1.example.net", "203.0.113.10",
		   "mx1.example.net", "198.51.100.7");
	/* an empty result type is written as validation-failure */
	v[2] = sts(POL_A, MX_A, "", "", "mx1.example.net", "203.0.113.10", "mx1.example.net",
		   "198.51.100.7");
	struct tlsrpt_report r;
	REQUIRE(tlsrpt_report_build(&params, v, 3, &r, NULL, 0) == 0);
	REQUIRE(r.npolicies == 1);
	CHECK_INT(r.policies[0].successes, 1);
	CHECK_INT(r.policies[0].failures, 2);
	REQUIRE(r.policies[0].nfail == 2);
	CHECK_STR(r.policies[0].fail[0].result_type, "certificate-host-mismatch");
	CHECK_STR(r.policies[0].fail[0].reason, "no SAN matches");
	CHECK_STR(r.policies[0].fail[1].result_type, "validation-failure");
	tlsrpt_report_free(&r);
}

static void test_no_policy_found(void)
{
	struct tlsrpt_session v[6];
	/* TLS with an untrusted certificate: success without a policy */
	v[0] = nopol(true, true, "certificate-not-trusted", "self-signed certificate",
		     "mx.example.net", "192.0.2.25");
	v[1] = nopol(true, true, "success", "", "mx.example.net", "192.0.2.25");
	/* no STARTTLS */
	v[2] = nopol(false, false, "starttls-not-supported", "", "mx.example.net", "192.0.2.25");
	/* offered, handshake failed */
	v[3] = nopol(true, false, "validation-failure", "handshake failure", "mx.example.net",
		     "192.0.2.25");
	v[4] = nopol(true, false, "certificate-not-trusted", "handshake failure",
		     "mx.example.net", "192.0.2.25");
	/* a mode none policy recorded as no-policy-found: same element */
	v[5] = nopol(true, true, "success", "", "mx.example.net", "192.0.2.25");
	v[5].policy_strings = "version: STSv1\nmode: none\nmax_age: 86400";
	struct tlsrpt_report r;
	REQUIRE(tlsrpt_report_build(&params, v, 6, &r, NULL, 0) == 0);
	REQUIRE(r.npolicies == 1);
	const struct tlsrpt_policy *p = &r.policies[0];
	CHECK_STR(p->type, "no-policy-found");
	CHECK_INT(p->successes, 3);
	CHECK_INT(p->failures, 3);
	REQUIRE(p->nfail == 2);
	CHECK_STR(p->fail[0].result_type, "starttls-not-supported");
	CHECK_INT(p->fail[0].count, 1);
	CHECK_STR(p->fail[0].reason, "");
	CHECK_STR(p->fail[1].result_type, "validation-failure");
	CHECK_INT(p->fail[1].count, 2);
	CHECK_STR(p->fail[1].reason, "handshake failure");
	struct buf b;
	buf_init(&b, 0);
	tlsrpt_report_json(&r, &b, false);
	CHECK(strstr(b.data, "\"policy\":{\"policy-type\":\"no-policy-found\","
			     "\"policy-domain\":\"example.net\"},") != NULL);
	CHECK(strstr(b.data, "policy-string") == NULL);
	CHECK(strstr(b.data, "\"mx-host\"") == NULL);
	CHECK(python_valid(b.data));
	buf_free(&b);
	tlsrpt_report_free(&r);
}

static void test_fetch_failures(void)
{
	struct tlsrpt_session v[5];
	v[0] = fetch_failure("sts-policy-fetch-error", "policy host mta-sts.example.net answered HTTP 404");
	v[1] = fetch_failure("sts-policy-fetch-error", "policy host mta-sts.example.net answered HTTP 404");
	v[2] = fetch_failure("sts-policy-invalid", "line 3: bad mx pattern \"a..b\"");
	v[3] = fetch_failure("sts-webpki-invalid", "");
	/* later sessions ran without a policy */
	v[4] = nopol(true, true, "success", "", "mx.example.net", "192.0.2.25");
	struct tlsrpt_report r;
	REQUIRE(tlsrpt_report_build(&params, v, 5, &r, NULL, 0) == 0);
	REQUIRE(r.npolicies == 2);
	/* "no-policy-found" < "sts" */
	CHECK_STR(r.policies[0].type, "no-policy-found");
	const struct tlsrpt_policy *p = &r.policies[1];
	CHECK_STR(p->type, "sts");
	CHECK_INT(p->strings.n, 0);
	CHECK_INT(p->successes, 0);
	CHECK_INT(p->failures, 4);
	REQUIRE(p->nfail == 3);
	CHECK_STR(p->fail[0].result_type, "sts-policy-fetch-error");
	CHECK_INT(p->fail[0].count, 2);
	CHECK_STR(p->fail[1].result_type, "sts-policy-invalid");
	CHECK_STR(p->fail[2].result_type, "sts-webpki-invalid");
	struct buf b;
	buf_init(&b, 0);
	tlsrpt_report_json(&r, &b, false);
	CHECK(strstr(b.data,
		     "{\"policy\":{\"policy-type\":\"sts\",\"policy-string\":[],"
		     "\"policy-domain\":\"example.net\",\"mx-host\":[]},"
		     "\"summary\":{\"total-successful-session-count\":0,"
		     "\"total-failure-session-count\":4},"
		     "\"failure-details\":[{\"result-type\":\"sts-policy-fetch-error\","
		     "\"failed-session-count\":2,\"failure-reason-code\":\"policy host "
		     "mta-sts.example.net answered HTTP 404\"},{\"result-type\":\"sts-policy-invalid\","
		     "\"failed-session-count\":1,\"failure-reason-code\":"
		     "\"line 3: bad mx pattern \\\"a..b\\\"\"},{\"result-type\":"
		     "\"sts-webpki-invalid\",\"failed-session-count\":1}]}") != NULL);
	CHECK(strstr(b.data, "receiving-") == NULL);
	CHECK(strstr(b.data, "sending-mta-ip") == NULL);
	CHECK(python_valid(b.data));
	buf_free(&b);
	tlsrpt_report_free(&r);
}

static void test_reason_choice(void)
{
	const char *details[] = { "", "b", "a", "b", "", "", "a", "c" };
	struct tlsrpt_session v[8];
	for (size_t i = 0; i < 8; i++)
		v[i] = sts(POL_A, MX_A, "validation-failure", details[i], "mx1.example.net",
			   "203.0.113.10", "mx1.example.net", "198.51.100.7");
	struct tlsrpt_report r;
	/* "" most frequent but ignored; "a" and "b" tie: the smaller */
	REQUIRE(tlsrpt_report_build(&params, v, 8, &r, NULL, 0) == 0);
	REQUIRE(r.npolicies == 1 && r.policies[0].nfail == 1);
	CHECK_INT(r.policies[0].fail[0].count, 8);
	CHECK_STR(r.policies[0].fail[0].reason, "a");
	tlsrpt_report_free(&r);

	v[0].detail = "b";
	REQUIRE(tlsrpt_report_build(&params, v, 8, &r, NULL, 0) == 0);
	CHECK_STR(r.policies[0].fail[0].reason, "b");
	tlsrpt_report_free(&r);

	for (size_t i = 0; i < 8; i++)
		v[i].detail = "";
	REQUIRE(tlsrpt_report_build(&params, v, 8, &r, NULL, 0) == 0);
	CHECK_STR(r.policies[0].fail[0].reason, "");
	tlsrpt_report_free(&r);

	/* cut to TLSRPT_REASON_MAX without splitting a UTF-8 sequence; the
	 * peer's helo cut to TLSRPT_HELO_MAX */
	char longd[600], longh[600];
	memset(longd, 'x', sizeof(longd));
	memcpy(longd + TLSRPT_REASON_MAX - 1, "\xc3\xa9", 2); /* U+00E9 across the cut */
	longd[sizeof(longd) - 1] = '\0';
	memset(longh, 'h', sizeof(longh));
	longh[sizeof(longh) - 1] = '\0';
	v[0].detail = longd;
	v[0].mx_helo = longh;
	REQUIRE(tlsrpt_report_build(&params, v, 1, &r, NULL, 0) == 0);
	CHECK_INT(strlen(r.policies[0].fail[0].reason), TLSRPT_REASON_MAX - 1);
	CHECK_INT(strlen(r.policies[0].fail[0].mx_helo), TLSRPT_HELO_MAX);
	tlsrpt_report_free(&r);
}

static void test_ip_normalisation(void)
{
	static const struct {
		const char *in, *out;
		bool ok;
	} cases[] = {
		{ "2001:db8:abcd:0012::1", "2001:db8:abcd:12::1", true }, /* RFC 8460's example */
		{ "2001:DB8:0:0:0:0:0:1", "2001:db8::1", true },
		{ "2001:0db8:0000:0000:0001:0000:0000:0001", "2001:db8::1:0:0:1", true }, /* first run */
		{ "2001:db8:0:0:1:0:0:0", "2001:db8:0:0:1::", true },                     /* longest */
		{ "2001:db8:0:1:1:1:1:1", "2001:db8:0:1:1:1:1:1", true },                 /* one 0: no :: */
		{ "0:0:0:0:0:0:0:1", "::1", true },
		{ "::", "::", true },
		{ "::ffff:192.0.2.33", "192.0.2.33", true },
		{ "::FFFF:c000:0221", "192.0.2.33", true },
		{ "192.0.2.33", "192.0.2.33", true },
		{ "192.0.2.033", "192.0.2.033", false },
		{ "fe80::1%eth0", "fe80::1%eth0", false },
		{ "mx.example.net", "mx.example.net", false },
		{ "", "", false },
	};
	for (size_t i = 0; i < SR_ARRAY_LEN(cases); i++) {
		char out[64];
		bool ok = tlsrpt_normalize_ip(cases[i].in, out, sizeof(out));
		CHECK_INT(ok, cases[i].ok);
		CHECK_STR(out, cases[i].out);
	}
	char small[8];
	CHECK(!tlsrpt_normalize_ip("2001:db8::1", small, sizeof(small)));
	CHECK_INT(strlen(small), 7);

	/* in a report: both addresses, and grouping on the normal form */
	struct tlsrpt_session v[2];
	v[0] = sts(POL_A, MX_A, "certificate-expired", "", "mx1.example.net",
		   "2001:0DB8:0000:0000:0000:0000:0000:0025", "mx1", "::ffff:198.51.100.7");
	v[1] = sts(POL_A, MX_A, "certificate-expired", "", "mx1.example.net", "2001:db8::25", "mx1",
		   "198.51.100.7");
	char *j = report_json(v, 2, false);
	CHECK(strstr(j, "\"sending-mta-ip\":\"198.51.100.7\",\"receiving-mx-hostname\":"
			"\"mx1.example.net\",\"receiving-mx-helo\":\"mx1\",\"receiving-ip\":"
			"\"2001:db8::25\",\"failed-session-count\":2}") != NULL);
	CHECK(python_valid(j));
	free(j);
}

/* s with the first occurrence of from replaced by to; NULL if none. */
static char *replace(const char *s, const char *from, const char *to)
{
	const char *p = strstr(s, from);
	if (p == NULL)
		return NULL;
	return xasprintf("%.*s%s%s", (int)(p - s), s, to, p + strlen(from));
}

static void test_python_check(void)
{
	struct tlsrpt_session v[32];
	size_t n = realistic_day(v);
	for (int pretty = 0; pretty < 2; pretty++) {
		char *j = report_json(v, n, pretty);
		CHECK(python_valid(j));
		free(j);
	}
	/* the checker itself rejects what the checklist warns about (RPT-10) */
	CHECK(python_rejects("{}"));
	char *j = report_json(v, n, false);
	static const char *const breaks[][2] = {
		{ "\"mx-host\":[\"mx1.example.net\"]", "\"mx-host\":\"mx1.example.net\"" },
		{ "\"total-failure-session-count\":3", "\"total-failure-session-count\":\"3\"" },
		{ "\"policies\":[", "\"policies\":[],\"x\":[" },
		{ "\"receiving-ip\":\"2001:db8::25\"", "\"receiving-ip\":\"2001:DB8::25\"" },
		{ "\"start-datetime\":\"2026-11-22T00:00:00Z\"",
		  "\"start-datetime\":\"2026-11-22 00:00:00\"" },
		{ "\"result-type\":\"validation-failure\"", "\"result-type\":\"mx-not-in-policy\"" },
		{ "\"contact-info\":", "\"report-id\":\"x\",\"contact-info\":" },
	};
	for (size_t i = 0; i < SR_ARRAY_LEN(breaks); i++) {
		char *bad = replace(j, breaks[i][0], breaks[i][1]);
		CHECK(bad != NULL);
		if (bad != NULL && !python_rejects(bad)) {
			fprintf(stderr, "%s: break %zu not caught\n", test_current, i);
			test_failures++;
		}
		free(bad);
	}
	free(j);
}

static const char golden[] =
	"{\"organization-name\":\"Sender Example Org\","
	"\"date-range\":{\"start-datetime\":\"2026-11-22T00:00:00Z\","
	"\"end-datetime\":\"2026-11-23T00:00:00Z\"},"
	"\"contact-info\":\"tlsrpt@mail.sndr.example\","
	"\"report-id\":\"2026-11-22.example.net.0011223344556677@mail.sndr.example\","
	"\"policies\":["
	"{\"policy\":{\"policy-type\":\"sts\",\"policy-string\":[\"version: STSv1\","
	"\"mode: enforce\",\"mx: mx1.example.net\",\"mx: *.backup.example.net\","
	"\"max_age: 86400\"],\"policy-domain\":\"example.net\","
	"\"mx-host\":[\"mx1.example.net\",\"*.backup.example.net\"]},"
	"\"summary\":{\"total-successful-session-count\":5,\"total-failure-session-count\":3},"
	"\"failure-details\":["
	"{\"result-type\":\"certificate-expired\",\"sending-mta-ip\":\"2001:db8:abcd:12::1\","
	"\"receiving-mx-hostname\":\"mx2.backup.example.net\","
	"\"receiving-mx-helo\":\"mx2.backup.example.net\",\"receiving-ip\":\"2001:db8::25\","
	"\"failed-session-count\":2,\"failure-reason-code\":\"certificate has expired\"},"
	"{\"result-type\":\"validation-failure\",\"receiving-mx-hostname\":\"mx9.example.org\","
	"\"failed-session-count\":1,\"failure-reason-code\":\"mx-not-in-policy\"}]},"
	"{\"policy\":{\"policy-type\":\"sts\",\"policy-string\":[\"version: STSv1\","
	"\"mode: testing\",\"mx: mx1.example.net\",\"max_age: 604800\"],"
	"\"policy-domain\":\"example.net\",\"mx-host\":[\"mx1.example.net\"]},"
	"\"summary\":{\"total-successful-session-count\":3,\"total-failure-session-count\":2},"
	"\"failure-details\":["
	"{\"result-type\":\"certificate-not-trusted\",\"sending-mta-ip\":\"198.51.100.7\","
	"\"receiving-mx-hostname\":\"mx1.example.net\",\"receiving-mx-helo\":\"mx1.example.net\","
	"\"receiving-ip\":\"203.0.113.12\",\"failed-session-count\":1,"
	"\"failure-reason-code\":\"unable to get local issuer certificate\"},"
	"{\"result-type\":\"starttls-not-supported\",\"sending-mta-ip\":\"198.51.100.7\","
	"\"receiving-mx-hostname\":\"mx1.example.net\",\"receiving-mx-helo\":\"mx1-b.example.net\","
	"\"receiving-ip\":\"203.0.113.11\",\"failed-session-count\":1}]}]}";

static void test_golden(void)
{
	struct tlsrpt_session v[32];
	size_t n = realistic_day(v);
	char *j = report_json(v, n, false);
	CHECK_STR(j, golden);
	free(j);
	/* the input order does not matter */
	for (size_t i = 0; i < n / 2; i++) {
		struct tlsrpt_session t = v[i];
		v[i] = v[n - 1 - i];
		v[n - 1 - i] = t;
	}
	j = report_json(v, n, false);
	CHECK_STR(j, golden);
	free(j);
	/* pretty: same document, indented, final newline */
	j = report_json(v, n, true);
	static const char head[] =
		"{\n  \"organization-name\": \"Sender Example Org\",\n  \"date-range\": {\n";
	CHECK(strncmp(j, head, strlen(head)) == 0);
	CHECK(strstr(j, "\"failure-details\": [\n") != NULL);
	CHECK(j[strlen(j) - 1] == '\n');
	free(j);
}

static void test_only_successes(void)
{
	struct tlsrpt_session v[1];
	v[0] = sts(POL_A, MX_A, "success", "", "mx1.example.net", "203.0.113.10",
		   "mx1.example.net", "198.51.100.7");
	char *j = report_json(v, 1, false);
	CHECK(strstr(j, "\"summary\":{\"total-successful-session-count\":1,"
			"\"total-failure-session-count\":0},\"failure-details\":[]}]}") != NULL);
	CHECK(python_valid(j));
	free(j);
	j = report_json(v, 1, true);
	CHECK(strstr(j, "\"failure-details\": []\n") != NULL);
	free(j);
}

static void test_contract(void)
{
	struct tlsrpt_session v[1];
	struct tlsrpt_report r;
	char why[200];
	v[0] = sts(POL_A, MX_A, "success", "", "mx1.example.net", "203.0.113.10", "mx1",
		   "198.51.100.7");

	CHECK(tlsrpt_report_build(&params, v, 0, &r, why, sizeof(why)) == -1);
	CHECK_STR(why, "no sessions to report");
	CHECK(r.npolicies == 0 && r.policies == NULL && r.report_id == NULL);

	v[0].policy_domain = "EXAMPLE.NET"; /* case is ignored */
	CHECK(tlsrpt_report_build(&params, v, 1, &r, why, sizeof(why)) == 0);
	tlsrpt_report_free(&r);
	v[0].policy_domain = "example.org";
	CHECK(tlsrpt_report_build(&params, v, 1, &r, why, sizeof(why)) == -1);
	CHECK_STR(why, "row 0 is for policy domain example.org");
	v[0].policy_domain = DOMAIN;

	v[0].time = DAY + 86400; /* end is exclusive */
	CHECK(tlsrpt_report_build(&params, v, 1, &r, why, sizeof(why)) == -1);
	CHECK_STR(why, "row 0: time 1795392000 is outside the date range");
	v[0].time = DAY - 1;
	CHECK(tlsrpt_report_build(&params, v, 1, &r, why, sizeof(why)) == -1);
	v[0].time = DAY;
	CHECK(tlsrpt_report_build(&params, v, 1, &r, why, sizeof(why)) == 0);
	tlsrpt_report_free(&r);

	v[0].policy_type = "dane";
	CHECK(tlsrpt_report_build(&params, v, 1, &r, why, sizeof(why)) == -1);
	CHECK_STR(why, "row 0: unknown policy type dane");
	v[0].policy_type = NULL;
	CHECK(tlsrpt_report_build(&params, v, 1, &r, why, sizeof(why)) == -1);
	v[0].policy_type = "sts";

	struct tlsrpt_report_params p = params;
	p.contact_info = "no-at-sign";
	CHECK(tlsrpt_report_build(&p, v, 1, &r, why, sizeof(why)) == -1);
	CHECK_STR(why, "contact-info no-at-sign is not a mailbox with a domain name");
	p = params;
	p.report_id = "has space";
	CHECK(tlsrpt_report_build(&p, v, 1, &r, why, sizeof(why)) == -1);
	p.report_id = "<x@y>";
	CHECK(tlsrpt_report_build(&p, v, 1, &r, why, sizeof(why)) == -1);
	p = params;
	p.organization_name = "";
	CHECK(tlsrpt_report_build(&p, v, 1, &r, why, sizeof(why)) == -1);
	p = params;
	p.policy_domain = "example.net.";
	CHECK(tlsrpt_report_build(&p, v, 1, &r, why, sizeof(why)) == -1);
	p.policy_domain = "[192.0.2.1]";
	CHECK(tlsrpt_report_build(&p, v, 1, &r, why, sizeof(why)) == -1);
	p = params;
	p.end = p.start;
	CHECK(tlsrpt_report_build(&p, v, 1, &r, why, sizeof(why)) == -1);
	CHECK_STR(why, "bad date range 1795305600..1795305600");

	/* the policy domain is written lower case, whatever the parameter */
	p = params;
	p.policy_domain = "Example.NET";
	REQUIRE(tlsrpt_report_build(&p, v, 1, &r, why, sizeof(why)) == 0);
	CHECK_STR(r.policy_domain, "example.net");
	tlsrpt_report_free(&r);
}

static void test_contact_domain(void)
{
	char *d = tlsrpt_contact_domain("tlsrpt@Mail.Sndr.Example");
	CHECK_STR(d, "mail.sndr.example");
	free(d);
	d = tlsrpt_contact_domain("\"odd@local\"@sndr.example");
	CHECK_STR(d, "sndr.example");
	free(d);
	CHECK(tlsrpt_contact_domain("postmaster") == NULL);
	CHECK(tlsrpt_contact_domain("a@[192.0.2.1]") == NULL);
	CHECK(tlsrpt_contact_domain("a@b@c.example") == NULL);
	CHECK(tlsrpt_contact_domain("<a@b.example>") == NULL);
	CHECK(tlsrpt_contact_domain("a b@c.example") == NULL);
	CHECK(tlsrpt_contact_domain("mailto:a@b.example") == NULL);
	CHECK(tlsrpt_contact_domain("@a:b@c.example") == NULL);
	CHECK(tlsrpt_contact_domain("j\xc3\xb6rg@b.example") == NULL);
	CHECK(tlsrpt_contact_domain("") == NULL);
	CHECK(tlsrpt_contact_domain(NULL) == NULL);
}

static void test_report_id(void)
{
	const unsigned char rnd[TLSRPT_ID_RANDOM] = { 0x8f, 0x3a, 0x0c, 0x1d, 0x2e, 0x4b, 0x5a, 0x69 };
	char *id = tlsrpt_report_id(DAY + 4000, "Example.NET", "mail.sndr.example", rnd);
	CHECK_STR(id, "2026-11-22.example.net.8f3a0c1d2e4b5a69@mail.sndr.example");
	/* usable as report-id */
	struct tlsrpt_report_params p = params;
	p.report_id = id;
	struct tlsrpt_session v[1];
	v[0] = sts(POL_A, MX_A, "success", "", "mx1.example.net", "203.0.113.10", "mx1",
		   "198.51.100.7");
	struct tlsrpt_report r;
	CHECK(tlsrpt_report_build(&p, v, 1, &r, NULL, 0) == 0);
	tlsrpt_report_free(&r);
	free(id);
	CHECK(tlsrpt_report_id(DAY, "bad domain", "mail.sndr.example", rnd) == NULL);
	CHECK(tlsrpt_report_id(DAY, "example.net", "", rnd) == NULL);
	CHECK(tlsrpt_report_id(-1, "example.net", "mail.sndr.example", rnd) == NULL);
	id = tlsrpt_report_id(0, "example.net", "mail.sndr.example", rnd);
	CHECK_STR(id, "1970-01-01.example.net.8f3a0c1d2e4b5a69@mail.sndr.example");
	free(id);
}

static void test_filename(void)
{
	char why[200];
	/* the checklist's RPT-20 example */
	char *f = tlsrpt_report_filename("mail.sndr.example", "example.net", 1470013207,
					 1470099607, "001", true, why, sizeof(why));
	CHECK_STR(f, "mail.sndr.example!example.net!1470013207!1470099607!001.json.gz");
	CHECK_STR(why, "");
	free(f);
	f = tlsrpt_report_filename("Mail.Sndr.Example", "EXAMPLE.net", DAY, DAY + 86400,
				   "8f3a0C1d", false, why, sizeof(why));
	CHECK_STR(f, "mail.sndr.example!example.net!1795305600!1795392000!8f3a0C1d.json");
	free(f);
	f = tlsrpt_report_filename("mail.sndr.example", "example.net", DAY, DAY + 86400, NULL,
				   true, why, sizeof(why));
	CHECK_STR(f, "mail.sndr.example!example.net!1795305600!1795392000.json.gz");
	free(f);

	CHECK(tlsrpt_report_filename("mail.sndr.example", "example.net", DAY, DAY + 1, "",
				     true, why, sizeof(why)) == NULL);
	CHECK_STR(why, "bad unique-id \"\"");
	CHECK(tlsrpt_report_filename("mail.sndr.example", "example.net", DAY, DAY + 1, "a-1",
				     true, why, sizeof(why)) == NULL);
	CHECK(tlsrpt_report_filename("mail.sndr.example", "example.net", DAY, DAY + 1, "a!b",
				     true, why, sizeof(why)) == NULL);
	CHECK(tlsrpt_report_filename("mail!sndr.example", "example.net", DAY, DAY + 1, "1",
				     true, why, sizeof(why)) == NULL);
	CHECK_STR(why, "bad sender domain mail!sndr.example");
	CHECK(tlsrpt_report_filename("mail.sndr.example", "ex/ample.net", DAY, DAY + 1, "1",
				     true, why, sizeof(why)) == NULL);
	CHECK(tlsrpt_report_filename("mail.sndr.example", "b\xc3\xbc" "cher.example", DAY,
				     DAY + 1, "1", true, why, sizeof(why)) == NULL);
	CHECK(tlsrpt_report_filename(NULL, "example.net", DAY, DAY + 1, "1", true, why,
				     sizeof(why)) == NULL);
	CHECK(tlsrpt_report_filename("mail.sndr.example", "example.net", DAY, DAY, "1", true,
				     why, sizeof(why)) == NULL);
	CHECK_STR(why, "bad time range 1795305600..1795305600");
	CHECK(tlsrpt_report_filename("mail.sndr.example", "example.net", -5, DAY, "1", true, why,
				     sizeof(why)) == NULL);
	char longid[TLSRPT_UNIQUE_ID_MAX + 2];
	memset(longid, 'a', sizeof(longid));
	longid[TLSRPT_UNIQUE_ID_MAX] = '\0';
	f = tlsrpt_report_filename("a.example", "b.example", 0, 1, longid, true, NULL, 0);
	CHECK(f != NULL);
	free(f);
	longid[TLSRPT_UNIQUE_ID_MAX] = 'a';
	longid[TLSRPT_UNIQUE_ID_MAX + 1] = '\0';
	CHECK(tlsrpt_report_filename("a.example", "b.example", 0, 1, longid, true, NULL, 0) ==
	      NULL);
}

static void test_gzip(void)
{
	struct tlsrpt_session v[32];
	size_t n = realistic_day(v);
	char *j = report_json(v, n, false);
	size_t jlen = strlen(j);
	struct buf z, back;
	buf_init(&z, 0);
	buf_init(&back, 0);
	REQUIRE(tlsrpt_gzip(j, jlen, &z) == 0);
	REQUIRE(z.len > 18);
	CHECK((unsigned char)z.data[0] == 0x1f);
	CHECK((unsigned char)z.data[1] == 0x8b);
	CHECK((unsigned char)z.data[2] == 0x08); /* deflate */
	CHECK(z.len < jlen);
	CHECK(tlsrpt_gunzip(z.data, z.len, &back, 0) == 0);
	CHECK_INT(back.len, jlen);
	CHECK(back.len == jlen && memcmp(back.data, j, jlen) == 0);

	/* deterministic */
	struct buf z2;
	buf_init(&z2, 0);
	REQUIRE(tlsrpt_gzip(j, jlen, &z2) == 0);
	CHECK(z2.len == z.len && memcmp(z2.data, z.data, z.len) == 0);
	buf_free(&z2);

	/* cap, truncation, trailing octets, not gzip */
	buf_reset(&back);
	CHECK(tlsrpt_gunzip(z.data, z.len, &back, jlen - 1) == -1);
	buf_reset(&back);
	CHECK(tlsrpt_gunzip(z.data, z.len, &back, jlen) == 0);
	buf_reset(&back);
	CHECK(tlsrpt_gunzip(z.data, z.len - 1, &back, 0) == -1);
	buf_reset(&back);
	CHECK(tlsrpt_gunzip(z.data, 10, &back, 0) == -1);
	buf_reset(&back);
	buf_putc(&z, 'x');
	CHECK(tlsrpt_gunzip(z.data, z.len, &back, 0) == -1);
	buf_reset(&back);
	CHECK(tlsrpt_gunzip(j, jlen, &back, 0) == -1);
	buf_reset(&back);
	CHECK(tlsrpt_gunzip("", 0, &back, 0) == -1);
	z.data[z.len - 6] ^= 0x01; /* CRC */
	buf_reset(&back);
	CHECK(tlsrpt_gunzip(z.data, z.len - 1, &back, 0) == -1);

	/* empty input is a valid member */
	buf_reset(&z);
	buf_reset(&back);
	REQUIRE(tlsrpt_gzip("", 0, &z) == 0);
	CHECK(tlsrpt_gunzip(z.data, z.len, &back, 0) == 0);
	CHECK_INT(back.len, 0);

	/* larger than one chunk either way */
	size_t big = 256 * 1024 + 17;
	unsigned char *in = xmalloc(big);
	uint32_t x = 2463534242u;
	for (size_t i = 0; i < big; i++) {
		x ^= x << 13;
		x ^= x >> 17;
		x ^= x << 5;
		in[i] = (unsigned char)(i % 7 == 0 ? x : 'a' + i % 3);
	}
	buf_reset(&z);
	buf_reset(&back);
	REQUIRE(tlsrpt_gzip(in, big, &z) == 0);
	CHECK(tlsrpt_gunzip(z.data, z.len, &back, big) == 0);
	CHECK(back.len == big && memcmp(back.data, in, big) == 0);

	/* out's cap is respected */
	struct buf capped;
	buf_init(&capped, 100);
	CHECK(tlsrpt_gzip(in, big, &capped) == -1);
	CHECK(capped.len <= 100);
	buf_free(&capped);
	free(in);

	buf_free(&z);
	buf_free(&back);
	free(j);
}

int main(void)
{
	signal(SIGPIPE, SIG_IGN); /* python may exit before reading everything */
	RUN(test_grouping);
	RUN(test_sts_success_rule);
	RUN(test_no_policy_found);
	RUN(test_fetch_failures);
	RUN(test_reason_choice);
	RUN(test_ip_normalisation);
	RUN(test_python_check);
	RUN(test_golden);
	RUN(test_only_successes);
	RUN(test_contract);
	RUN(test_contact_domain);
	RUN(test_report_id);
	RUN(test_filename);
	RUN(test_gzip);
	TEST_EXIT();
}
