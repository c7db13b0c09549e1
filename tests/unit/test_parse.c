/* Unit tests for smtp/parse.c: commands, paths, parameters, malformed input. */
#include "smtp/parse.h"
#include "test.h"

static enum smtp_parse_status parse(const char *line, struct smtp_cmd *cmd, char *store)
{
	strcpy(store, line);
	return smtp_parse_command(store, cmd);
}

static void test_verbs(void)
{
	char b[600];
	struct smtp_cmd c;
	CHECK_INT(parse("EHLO client.example", &c, b), SMTP_PARSE_OK);
	CHECK_INT(c.verb, SMTP_VERB_EHLO);
	CHECK_STR(c.arg, "client.example");
	CHECK_INT(parse("ehlo   client.example  ", &c, b), SMTP_PARSE_OK);
	CHECK_STR(c.arg, "client.example");
	CHECK_INT(parse("EHLO", &c, b), SMTP_PARSE_SYNTAX);
	CHECK_INT(parse("StartTLS", &c, b), SMTP_PARSE_OK);
	CHECK_INT(c.verb, SMTP_VERB_STARTTLS);
	CHECK_INT(parse("STARTTLS now", &c, b), SMTP_PARSE_SYNTAX);
	CHECK_INT(parse("DATA x", &c, b), SMTP_PARSE_SYNTAX);
	CHECK_INT(parse("QUIT", &c, b), SMTP_PARSE_OK);
	CHECK_INT(parse("FROB", &c, b), SMTP_PARSE_UNKNOWN_VERB);
	CHECK_INT(parse("", &c, b), SMTP_PARSE_UNKNOWN_VERB);
	CHECK_INT(parse("MAILFROM:<a@b.c>", &c, b), SMTP_PARSE_UNKNOWN_VERB);
	CHECK_INT(parse("NOOP\x01", &c, b), SMTP_PARSE_SYNTAX);
	CHECK_INT(parse("VRFY someone", &c, b), SMTP_PARSE_OK);
	CHECK_INT(c.verb, SMTP_VERB_VRFY);
}

static void test_mail(void)
{
	char b[600];
	struct smtp_cmd c;
	CHECK_INT(parse("MAIL FROM:<alice@example.com>", &c, b), SMTP_PARSE_OK);
	CHECK_STR(c.path.addr, "alice@example.com");
	CHECK_STR(c.path.domain, "example.com");
	CHECK_INT(c.nparams, 0);
	CHECK_INT(parse("mail from: <alice@example.com> SIZE=1000 BODY=8BITMIME REQUIRETLS", &c, b),
		  SMTP_PARSE_OK);
	CHECK_INT(c.nparams, 3);
	CHECK_STR(c.params[0].key, "SIZE");
	CHECK_STR(c.params[0].value, "1000");
	CHECK_STR(c.params[2].key, "REQUIRETLS");
	CHECK(c.params[2].value == NULL);
	CHECK_INT(parse("MAIL FROM:<>", &c, b), SMTP_PARSE_OK);
	CHECK_STR(c.path.addr, "");
	CHECK_INT(parse("MAIL FROM:<@relay.a,@relay.b:bob@example.org>", &c, b), SMTP_PARSE_OK);
	CHECK_STR(c.path.addr, "bob@example.org");
	CHECK_INT(parse("MAIL FROM:<\"john doe\"@example.org>", &c, b), SMTP_PARSE_OK);
	CHECK_STR(c.path.addr, "\"john doe\"@example.org");
	CHECK_INT(parse("MAIL FROM:<\"a>b\"@example.org> SIZE=1", &c, b), SMTP_PARSE_OK);
	CHECK_STR(c.path.addr, "\"a>b\"@example.org");
	CHECK_INT(parse("MAIL FROM:<u@[127.0.0.1]>", &c, b), SMTP_PARSE_OK);
	CHECK_INT(parse("MAIL FROM:<u@[IPv6:::1]>", &c, b), SMTP_PARSE_OK);
	CHECK_INT(parse("MAIL FROM:<u@[300.0.0.1]>", &c, b), SMTP_PARSE_BAD_PATH);
	CHECK_INT(parse("MAIL FROM:<us\xc3\xa9r@example.org> SMTPUTF8", &c, b), SMTP_PARSE_OK);
	CHECK(c.path.has_utf8);
}

static void test_mail_bad(void)
{
	char b[600];
	struct smtp_cmd c;
	CHECK_INT(parse("MAIL alice@example.com", &c, b), SMTP_PARSE_SYNTAX);
	CHECK_INT(parse("MAIL FROM:alice@example.com", &c, b), SMTP_PARSE_BAD_PATH);
	CHECK_INT(parse("MAIL FROM:<alice@example.com", &c, b), SMTP_PARSE_BAD_PATH);
	CHECK_INT(parse("MAIL FROM:<alice>", &c, b), SMTP_PARSE_BAD_PATH);
	CHECK_INT(parse("MAIL FROM:<alice@>", &c, b), SMTP_PARSE_BAD_PATH);
	CHECK_INT(parse("MAIL FROM:<@example.com>", &c, b), SMTP_PARSE_BAD_PATH);
	CHECK_INT(parse("MAIL FROM:<a..b@example.com>", &c, b), SMTP_PARSE_BAD_PATH);
	CHECK_INT(parse("MAIL FROM:<.a@example.com>", &c, b), SMTP_PARSE_BAD_PATH);
	CHECK_INT(parse("MAIL FROM:<a@example.com.>", &c, b), SMTP_PARSE_BAD_PATH);
	CHECK_INT(parse("MAIL FROM:<a@-example.com>", &c, b), SMTP_PARSE_BAD_PATH);
	CHECK_INT(parse("MAIL FROM:<a@exa_mple.com>", &c, b), SMTP_PARSE_BAD_PATH);
	CHECK_INT(parse("MAIL FROM:<a b@example.com>", &c, b), SMTP_PARSE_BAD_PATH);
	CHECK_INT(parse("MAIL FROM:<a@example.com>junk", &c, b), SMTP_PARSE_SYNTAX);
	CHECK_INT(parse("MAIL FROM:<a@example.com> =x", &c, b), SMTP_PARSE_BAD_PARAM);
	CHECK_INT(parse("MAIL FROM:<a@example.com> SIZE=", &c, b), SMTP_PARSE_BAD_PARAM);
	CHECK_INT(parse("MAIL FROM:<a@example.com> SIZE=a=b", &c, b), SMTP_PARSE_BAD_PARAM);
	CHECK_INT(parse("MAIL FROM:<a@example.com> A B C D E F G H I J K L M N O P Q", &c, b),
		  SMTP_PARSE_BAD_PARAM);
	/* 65-octet local part */
	char line[600];
	strcpy(line, "MAIL FROM:<");
	memset(line + 11, 'x', 65);
	strcpy(line + 76, "@example.com>");
	CHECK_INT(parse(line, &c, b), SMTP_PARSE_BAD_PATH);
	/* 64 is fine */
	strcpy(line, "MAIL FROM:<");
	memset(line + 11, 'x', 64);
	strcpy(line + 75, "@example.com>");
	CHECK_INT(parse(line, &c, b), SMTP_PARSE_OK);
	/* path over 256 octets */
	strcpy(line, "MAIL FROM:<a@");
	for (int i = 0; i < 5; i++)
		strcat(line, "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.");
	strcat(line, "com>");
	CHECK_INT(parse(line, &c, b), SMTP_PARSE_BAD_PATH);
}

static void test_rcpt(void)
{
	char b[600];
	struct smtp_cmd c;
	CHECK_INT(parse("RCPT TO:<bob@example.net>", &c, b), SMTP_PARSE_OK);
	CHECK_STR(c.path.domain, "example.net");
	CHECK_INT(parse("RCPT TO:<Postmaster>", &c, b), SMTP_PARSE_OK);
	CHECK_STR(c.path.addr, "Postmaster");
	CHECK_STR(c.path.domain, "");
	CHECK_INT(parse("RCPT TO:<bob>", &c, b), SMTP_PARSE_BAD_PATH);
	CHECK_INT(parse("RCPT FROM:<bob@example.net>", &c, b), SMTP_PARSE_SYNTAX);
	CHECK_INT(parse("RCPT TO:<bob@example.net> NOTIFY=SUCCESS,FAILURE", &c, b), SMTP_PARSE_OK);
	CHECK_STR(c.params[0].value, "SUCCESS,FAILURE");
}

static void test_domains(void)
{
	CHECK(smtp_valid_domain("example.com", false));
	CHECK(smtp_valid_domain("a-b.example", false));
	CHECK(!smtp_valid_domain("a-.example", false));
	CHECK(!smtp_valid_domain("", false));
	CHECK(!smtp_valid_domain("a..b", false));
	CHECK(!smtp_valid_domain("ex\xc3\xa4mple.com", false));
	CHECK(smtp_valid_domain("ex\xc3\xa4mple.com", true));
	CHECK(smtp_valid_domain("[192.0.2.1]", false));
	char label[80];
	memset(label, 'a', 64);
	label[64] = '\0';
	CHECK(!smtp_valid_domain(label, false));
	label[63] = '\0';
	CHECK(smtp_valid_domain(label, false));
}

int main(void)
{
	RUN(test_verbs);
	RUN(test_mail);
	RUN(test_mail_bad);
	RUN(test_rcpt);
	RUN(test_domains);
	TEST_EXIT();
}
