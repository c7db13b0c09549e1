/* Unit tests for policy/requiretls.c: require_for rule syntax and matching. */
#include "policy/requiretls.h"
#include "test.h"

static int parse(struct rtls_rules *r, const char *text, char *err, size_t errlen)
{
	struct strlist items = { 0 };
	strlist_split(&items, text, false);
	int rc = rtls_rules_parse(r, &items, err, errlen);
	strlist_free(&items);
	return rc;
}

static void test_syntax(void)
{
	struct rtls_rules r = { 0 };
	char err[300] = "";
	CHECK_INT(parse(&r, "10.0.0.0/8, net:192.0.2.0/24, ::1, user:alice, from:bob@Example.ORG, "
			    "from:@corp.test, sales.test, alice@x.test, @y.test, to:Bank.Test",
			 err, sizeof(err)),
		  0);
	CHECK_STR(err, "");
	CHECK_INT(r.nets.n, 3);
	CHECK_INT(r.users.n, 1);
	CHECK_INT(r.senders.n, 2);
	CHECK_STR(r.senders.v[0], "bob@example.org");
	CHECK_INT(r.sender_domains.n, 2);
	CHECK_INT(r.rcpt_domains.n, 2);
	CHECK_STR(r.rcpt_domains.v[1], "bank.test");
	CHECK(!rtls_rules_empty(&r));
	rtls_rules_free(&r);

	struct rtls_rules e = { 0 };
	CHECK(rtls_rules_empty(&e));
	CHECK_INT(parse(&e, "10.0.0.1/8", err, sizeof(err)), -1);
	CHECK(strstr(err, "10.0.0.1/8") != NULL);
	CHECK_INT(parse(&e, "user:", err, sizeof(err)), -1);
	CHECK_INT(parse(&e, "to:not_a_domain", err, sizeof(err)), -1);
	CHECK_INT(parse(&e, "from:a@", err, sizeof(err)), -1);
	CHECK_INT(parse(&e, "bogus:thing", err, sizeof(err)), -1);
	CHECK_INT(parse(&e, "to:[192.0.2.1]", err, sizeof(err)), -1);
	rtls_rules_free(&e);
}

static void test_match(void)
{
	struct rtls_rules r = { 0 };
	char err[300], why[200];
	REQUIRE(parse(&r, "10.0.0.0/8, user:alice, from:boss@corp.test, from:@secret.test, to:bank.test",
		      err, sizeof(err)) == 0);
	CHECK(rtls_rules_match_sender(&r, "10.1.2.3", "", "x@y.test", why, sizeof(why)));
	CHECK(strstr(why, "10.1.2.3") != NULL);
	CHECK(rtls_rules_match_sender(&r, "::ffff:10.1.2.3", "", "x@y.test", why, sizeof(why)));
	CHECK(!rtls_rules_match_sender(&r, "11.1.2.3", "", "x@y.test", why, sizeof(why)));
	CHECK(rtls_rules_match_sender(&r, "11.1.2.3", "alice", "x@y.test", why, sizeof(why)));
	CHECK(!rtls_rules_match_sender(&r, "11.1.2.3", "Alice", "x@y.test", why, sizeof(why)));
	CHECK(rtls_rules_match_sender(&r, "11.1.2.3", "", "BOSS@corp.test", why, sizeof(why)));
	CHECK(!rtls_rules_match_sender(&r, "11.1.2.3", "", "other@corp.test", why, sizeof(why)));
	CHECK(rtls_rules_match_sender(&r, "11.1.2.3", "", "any@Secret.Test", why, sizeof(why)));
	CHECK(!rtls_rules_match_sender(&r, "11.1.2.3", "", "any@sub.secret.test", why, sizeof(why)));
	/* a null sender is never tagged (RFC 8689 4.2.1) */
	CHECK(!rtls_rules_match_sender(&r, "10.1.2.3", "alice", "", why, sizeof(why)));
	CHECK(rtls_rules_match_rcpt(&r, "BANK.test", why, sizeof(why)));
	CHECK(!rtls_rules_match_rcpt(&r, "www.bank.test", why, sizeof(why)));
	rtls_rules_free(&r);
}

int main(void)
{
	RUN(test_syntax);
	RUN(test_match);
	TEST_EXIT();
}
