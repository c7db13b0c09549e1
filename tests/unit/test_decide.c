/* Unit tests for policy/decide.c: the delivery decision table. */
#include "policy/decide.h"
#include "test.h"

static struct tls_verify_info cert(enum tls_cert_result r)
{
	struct tls_verify_info i;
	memset(&i, 0, sizeof(i));
	i.result = r;
	snprintf(i.detail, sizeof(i.detail), "%s", tls_cert_result_name(r));
	return i;
}

/* One row: a request, the peer's behaviour, and where the session ends. */
struct row {
	const char *name;
	enum tls_level tls;
	bool requiretls;
	bool tls_required_no;
	enum sts_mode sts;
	/* the MX */
	bool starttls_offered;
	bool handshake_ok;
	enum tls_cert_result cert;
	bool requiretls_offered;
	/* expected: the stage that fails (0 = delivered), its result and status */
	int fail_stage; /* 1 ehlo, 2 tls, 3 tls_ehlo */
	enum decide_result result;
	const char *status;
	bool used_tls;
};

static const struct row rows[] = {
	/* opportunistic */
	{ "may, no starttls", TLS_LEVEL_MAY, 0, 0, STS_MODE_NONE, false, true, TLS_CERT_OK, 0, 0, DECIDE_OK, "", false },
	{ "may, self-signed", TLS_LEVEL_MAY, 0, 0, STS_MODE_NONE, true, true, TLS_CERT_UNTRUSTED, 0, 0, DECIDE_OK, "", true },
	{ "may, handshake fails", TLS_LEVEL_MAY, 0, 0, STS_MODE_NONE, true, false, TLS_CERT_OK, 0, 2, DECIDE_RETRY_PLAIN, "4.7.5", true },
	{ "none, starttls offered", TLS_LEVEL_NONE, 0, 0, STS_MODE_NONE, true, true, TLS_CERT_OK, 0, 0, DECIDE_OK, "", false },
	/* encrypt: TLS needed, any certificate */
	{ "encrypt, no starttls", TLS_LEVEL_ENCRYPT, 0, 0, STS_MODE_NONE, false, true, TLS_CERT_OK, 0, 1, DECIDE_NEXT_MX, "4.7.10", false },
	{ "encrypt, expired", TLS_LEVEL_ENCRYPT, 0, 0, STS_MODE_NONE, true, true, TLS_CERT_EXPIRED, 0, 0, DECIDE_OK, "", true },
	{ "encrypt, handshake fails", TLS_LEVEL_ENCRYPT, 0, 0, STS_MODE_NONE, true, false, TLS_CERT_OK, 0, 2, DECIDE_NEXT_MX, "4.7.5", true },
	/* verify */
	{ "verify, good", TLS_LEVEL_VERIFY, 0, 0, STS_MODE_NONE, true, true, TLS_CERT_OK, 0, 0, DECIDE_OK, "", true },
	{ "verify, wrong name", TLS_LEVEL_VERIFY, 0, 0, STS_MODE_NONE, true, true, TLS_CERT_NAME_MISMATCH, 0, 2, DECIDE_NEXT_MX, "4.7.5", true },
	{ "verify, untrusted", TLS_LEVEL_VERIFY, 0, 0, STS_MODE_NONE, true, true, TLS_CERT_UNTRUSTED, 0, 2, DECIDE_NEXT_MX, "4.7.5", true },
	{ "verify, no starttls", TLS_LEVEL_VERIFY, 0, 0, STS_MODE_NONE, false, true, TLS_CERT_OK, 0, 1, DECIDE_NEXT_MX, "4.7.10", false },
	/* MTA-STS */
	{ "sts enforce, bad cert", TLS_LEVEL_MAY, 0, 0, STS_MODE_ENFORCE, true, true, TLS_CERT_EXPIRED, 0, 2, DECIDE_NEXT_MX, "4.7.5", true },
	{ "sts enforce, no starttls", TLS_LEVEL_MAY, 0, 0, STS_MODE_ENFORCE, false, true, TLS_CERT_OK, 0, 1, DECIDE_NEXT_MX, "4.7.10", false },
	{ "sts testing, bad cert", TLS_LEVEL_MAY, 0, 0, STS_MODE_TESTING, true, true, TLS_CERT_UNTRUSTED, 0, 0, DECIDE_OK, "", true },
	{ "sts enforce + TLS-Required: No, bad cert", TLS_LEVEL_MAY, 0, 1, STS_MODE_ENFORCE, true, true, TLS_CERT_UNTRUSTED, 0, 0, DECIDE_OK, "", true },
	{ "sts enforce + TLS-Required: No, no starttls", TLS_LEVEL_MAY, 0, 1, STS_MODE_ENFORCE, false, true, TLS_CERT_OK, 0, 0, DECIDE_OK, "", false },
	/* REQUIRETLS */
	{ "requiretls, all good", TLS_LEVEL_MAY, 1, 0, STS_MODE_ENFORCE, true, true, TLS_CERT_OK, 1, 0, DECIDE_OK, "", true },
	{ "requiretls, not advertised", TLS_LEVEL_MAY, 1, 0, STS_MODE_ENFORCE, true, true, TLS_CERT_OK, 0, 3, DECIDE_NEXT_MX, "5.7.30", true },
	{ "requiretls, no starttls", TLS_LEVEL_MAY, 1, 0, STS_MODE_ENFORCE, false, true, TLS_CERT_OK, 1, 1, DECIDE_NEXT_MX, "5.7.10", false },
	{ "requiretls, bad cert", TLS_LEVEL_MAY, 1, 0, STS_MODE_ENFORCE, true, true, TLS_CERT_NAME_MISMATCH, 1, 2, DECIDE_NEXT_MX, "5.7.10", true },
	{ "requiretls beats tls=none", TLS_LEVEL_NONE, 1, 0, STS_MODE_NONE, false, true, TLS_CERT_OK, 1, 1, DECIDE_NEXT_MX, "5.7.10", false },
	{ "requiretls beats TLS-Required: No", TLS_LEVEL_MAY, 1, 1, STS_MODE_ENFORCE, true, true, TLS_CERT_UNTRUSTED, 1, 2, DECIDE_NEXT_MX, "5.7.10", true },
};

static void test_table(void)
{
	for (size_t i = 0; i < SR_ARRAY_LEN(rows); i++) {
		const struct row *r = &rows[i];
		test_current = r->name;
		struct delivery_req req = {
			.tls = r->tls,
			.requiretls = r->requiretls,
			.tls_required_no = r->tls_required_no,
			.sts = r->sts,
		};
		struct mx_needs n;
		decide_needs(&req, "mx.example.test", &n);
		CHECK_STR(n.verify_name, "mx.example.test");
		struct verdict v;
		int stage = 0;
		bool used_tls = false;
		decide_ehlo(&n, r->starttls_offered, &v);
		if (v.result != DECIDE_OK) {
			stage = 1;
		} else if (r->starttls_offered && n.try_starttls) {
			used_tls = true;
			struct tls_verify_info c = cert(r->cert);
			decide_tls(&n, r->handshake_ok, "boom", &c, &v);
			if (v.result != DECIDE_OK)
				stage = 2;
			else {
				decide_tls_ehlo(&n, r->requiretls_offered, &v);
				if (v.result != DECIDE_OK)
					stage = 3;
			}
		} else {
			/* plaintext: only legal if nothing needed TLS */
			CHECK(!n.starttls);
			CHECK(!n.requiretls);
		}
		CHECK_INT(stage, r->fail_stage);
		CHECK_INT(v.result, r->result);
		CHECK_STR(v.status, r->status);
		CHECK_INT(used_tls, r->used_tls);
	}
	test_current = "test_table";
}

static void test_verify_name(void)
{
	struct delivery_req req = { .tls = TLS_LEVEL_VERIFY, .verify_name = "relay.isp.test" };
	struct mx_needs n;
	decide_needs(&req, "10.0.0.5", &n);
	CHECK_STR(n.verify_name, "relay.isp.test");
}

static void test_sts_match(void)
{
	CHECK(sts_mx_match("mail.example.com", "mail.example.com"));
	CHECK(sts_mx_match("mail.example.com", "MAIL.Example.COM."));
	CHECK(sts_mx_match("*.example.com", "mail.example.com"));
	CHECK(sts_mx_match("*.example.com", "MAIL.Example.COM."));
	CHECK(!sts_mx_match("*.example.com", "example.com"));
	CHECK(!sts_mx_match("*.example.com", "a.b.example.com"));
	CHECK(!sts_mx_match("*.example.com", "mail.example.com.evil"));
	CHECK(!sts_mx_match("*.example.com", ".example.com"));
	CHECK(!sts_mx_match("mail.example.com", "xmail.example.com"));
	CHECK(!sts_mx_match("", "mail.example.com"));
}

static void test_mx_candidate(void)
{
	struct strlist mx = { 0 };
	strlist_add(&mx, "*.example.com");
	struct delivery_req req = { .tls = TLS_LEVEL_MAY, .sts = STS_MODE_ENFORCE, .sts_mx = &mx };
	struct verdict v;
	decide_mx(&req, "mx1.example.com", &v);
	CHECK_INT(v.result, DECIDE_OK);
	decide_mx(&req, "mx1.evil.test", &v);
	CHECK_INT(v.result, DECIDE_NEXT_MX);
	CHECK_STR(v.status, "4.7.5");
	req.sts = STS_MODE_TESTING;
	decide_mx(&req, "mx1.evil.test", &v);
	CHECK_INT(v.result, DECIDE_OK);
	req.sts = STS_MODE_ENFORCE;
	req.tls_required_no = true;
	decide_mx(&req, "mx1.evil.test", &v);
	CHECK_INT(v.result, DECIDE_OK);
	/* REQUIRETLS: a mismatch is permanent, unless the cached policy may be
	 * outdated (a newer one could not be fetched): then it is temporary */
	req.tls_required_no = false;
	req.requiretls = true;
	decide_mx(&req, "mx1.evil.test", &v);
	CHECK_INT(v.result, DECIDE_NEXT_MX);
	CHECK(v.permanent);
	CHECK_STR(v.status, "5.7.30");
	req.sts_stale = true;
	decide_mx(&req, "mx1.evil.test", &v);
	CHECK_INT(v.result, DECIDE_NEXT_MX);
	CHECK(!v.permanent);
	CHECK_STR(v.status, "4.7.5");
	decide_mx(&req, "mx1.example.com", &v);
	CHECK_INT(v.result, DECIDE_OK);
	strlist_free(&mx);
}

static void test_exhausted(void)
{
	struct delivery_req req = { .requiretls = true };
	struct verdict v[3], out;
	memset(v, 0, sizeof(v));
	v[0] = (struct verdict){ .result = DECIDE_NEXT_MX, .permanent = true, .status = "5.7.30" };
	v[1] = (struct verdict){ .result = DECIDE_NEXT_MX, .permanent = true, .status = "5.7.10" };
	decide_exhausted(&req, v, 2, &out);
	CHECK(out.permanent);
	CHECK_STR(out.status, "5.7.30");
	/* one MX refused the connection: try again later (D6) */
	v[2] = (struct verdict){ .result = DECIDE_NEXT_MX, .permanent = false, .status = "4.4.1" };
	decide_exhausted(&req, v, 3, &out);
	CHECK(!out.permanent);
	CHECK_STR(out.status, "4.4.1");
	decide_exhausted(&req, v, 0, &out);
	CHECK(!out.permanent);
	CHECK(out.status[0] == '4');
}

int main(void)
{
	RUN(test_table);
	RUN(test_verify_name);
	RUN(test_sts_match);
	RUN(test_mx_candidate);
	RUN(test_exhausted);
	TEST_EXIT();
}
