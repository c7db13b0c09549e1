/* Unit tests for smtp/sasl.c, smtp/userdb.c and smtp/clients.c: SMTP AUTH
 * decoding, password hashes, the users file and per-client limits. */
#include <openssl/evp.h>

#include "smtp/clients.h"
#include "smtp/sasl.h"
#include "smtp/userdb.h"
#include "test.h"

static void test_base64(void)
{
	unsigned char out[64];
	CHECK_INT(sasl_base64_decode("", out, sizeof(out)), 0);
	CHECK_INT(sasl_base64_decode("YQ==", out, sizeof(out)), 1);
	CHECK(out[0] == 'a');
	CHECK_INT(sasl_base64_decode("YWI=", out, sizeof(out)), 2);
	CHECK_INT(sasl_base64_decode("YWJj", out, sizeof(out)), 3);
	CHECK(memcmp(out, "abc", 3) == 0);
	CHECK_INT(sasl_base64_decode("YWJ", out, sizeof(out)), -1);    /* length */
	CHECK_INT(sasl_base64_decode("Y===", out, sizeof(out)), -1);   /* too much padding */
	CHECK_INT(sasl_base64_decode("YQ==YWJj", out, sizeof(out)), -1); /* data after pad */
	CHECK_INT(sasl_base64_decode("YR==", out, sizeof(out)), -1);   /* non-zero pad bits */
	CHECK_INT(sasl_base64_decode("YW J", out, sizeof(out)), -1);
	CHECK_INT(sasl_base64_decode("YWJj", out, 2), -1);            /* does not fit */
	char enc[16];
	for (size_t n = 0; n <= 5; n++) {
		const unsigned char src[] = "\x00\xff\x10xy";
		EVP_EncodeBlock((unsigned char *)enc, src, (int)n);
		CHECK_INT(sasl_base64_decode(enc, out, sizeof(out)), (long)n);
		CHECK(memcmp(out, src, n) == 0);
	}
}

static void test_plain_login(void)
{
	char user[SASL_MAX_FIELD + 1], pass[SASL_MAX_FIELD + 1];
	CHECK_INT(sasl_plain_decode("AGFsaWNlAHNlY3JldA==", user, pass), SASL_OK);
	CHECK_STR(user, "alice");
	CHECK_STR(pass, "secret");
	/* "alice\0alice\0secret": authzid equal to authcid is fine */
	CHECK_INT(sasl_plain_decode("YWxpY2UAYWxpY2UAc2VjcmV0", user, pass), SASL_OK);
	/* "bob\0alice\0secret" */
	CHECK_INT(sasl_plain_decode("Ym9iAGFsaWNlAHNlY3JldA==", user, pass), SASL_AUTHZID);
	/* "\0alice" (no password field), "\0\0secret" (no user), "\0alice\0" */
	CHECK_INT(sasl_plain_decode("AGFsaWNl", user, pass), SASL_BAD_FORMAT);
	CHECK_INT(sasl_plain_decode("AABzZWNyZXQ=", user, pass), SASL_BAD_FORMAT);
	CHECK_INT(sasl_plain_decode("AGFsaWNlAA==", user, pass), SASL_BAD_FORMAT);
	/* "\0alice\0se\0cret": NUL inside the password */
	CHECK_INT(sasl_plain_decode("AGFsaWNlAHNlAGNyZXQ=", user, pass), SASL_BAD_FORMAT);
	/* "\0a:b\0x": ':' cannot be in a user name */
	CHECK_INT(sasl_plain_decode("AGE6YgB4", user, pass), SASL_BAD_FORMAT);
	CHECK_INT(sasl_plain_decode("not base64!", user, pass), SASL_BAD_BASE64);
	/* a user name of 300 octets */
	unsigned char raw[320];
	raw[0] = '\0';
	memset(raw + 1, 'u', 300);
	raw[301] = '\0';
	raw[302] = 'p';
	char enc[512];
	EVP_EncodeBlock((unsigned char *)enc, raw, 303);
	CHECK_INT(sasl_plain_decode(enc, user, pass), SASL_BAD_FORMAT); /* too long */
	CHECK_INT(sasl_login_decode("YWxpY2U=", user, 1), SASL_OK);
	CHECK_STR(user, "alice");
	CHECK_INT(sasl_login_decode("", user, 1), SASL_BAD_FORMAT);
	CHECK_INT(sasl_login_decode("YQBi", user, 0), SASL_BAD_FORMAT); /* "a\0b" */
}

static void test_hash_roundtrip(void)
{
	char hash[USERDB_HASH_MAX], err[200];
	REQUIRE(userdb_hash("correct horse", hash, sizeof(hash), err, sizeof(err)) == 0);
	CHECK(strncmp(hash, "$scrypt$ln=15,r=8,p=1$", 22) == 0);
	CHECK_INT(userdb_check(hash, "correct horse"), 1);
	CHECK_INT(userdb_check(hash, "correct horsf"), 0);
	CHECK_INT(userdb_check(hash, ""), 0);
	char again[USERDB_HASH_MAX];
	REQUIRE(userdb_hash("correct horse", again, sizeof(again), err, sizeof(err)) == 0);
	CHECK(strcmp(hash, again) != 0); /* salted */
	/* PBKDF2-SHA256, 100000 iterations, salt "saltsaltsaltsalt", password
	 * "password": made with Python's hashlib.pbkdf2_hmac. */
	const char *pb = "$pbkdf2-sha256$i=100000$c2FsdHNhbHRzYWx0c2FsdA==$"
			 "T78tEi/mr8Yageny/jk6s5+Qanjd3ceXdjwOeEhX6bQ=";
	CHECK_INT(userdb_hash_check_format(pb, err, sizeof(err)), 0);
	CHECK_INT(userdb_check(pb, "password"), 1);
	CHECK_INT(userdb_check(pb, "Password"), 0);
}

static void test_hash_formats(void)
{
	char err[200];
	static const char *const bad[] = {
		"plaintext",
		"$scrypt$ln=10,r=8,p=1$c2FsdHNhbHQ=$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", /* weak */
		"$scrypt$ln=30,r=8,p=1$c2FsdHNhbHQ=$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", /* huge */
		"$scrypt$ln=15,r=8$c2FsdHNhbHQ=$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
		"$pbkdf2-sha256$i=1000$c2FsdHNhbHQ=$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
		"$pbkdf2-sha256$i=100000$c2FsdA==$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", /* salt */
		"$md5$x$y$z",
		"$scrypt$ln=15,r=8,p=1$c2FsdHNhbHQ=",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err[0] = '\0';
		CHECK_INT(userdb_hash_check_format(bad[i], err, sizeof(err)), -1);
		CHECK(err[0] != '\0');
		CHECK_INT(userdb_check(bad[i], "x"), -1);
	}
}

static void test_users_file(void)
{
	char hash[USERDB_HASH_MAX], err[300], text[1024];
	REQUIRE(userdb_hash("pw1", hash, sizeof(hash), err, sizeof(err)) == 0);
	snprintf(text, sizeof(text), "# users\n\n zed : %s \r\nalice:%s\n", hash, hash);
	struct userdb db;
	REQUIRE(userdb_parse(&db, "users", text, err, sizeof(err)) == 0);
	CHECK_INT(db.n, 2);
	bool known;
	const char *h = userdb_lookup(&db, "alice", &known);
	CHECK(known);
	CHECK_STR(h, hash);
	h = userdb_lookup(&db, "zed", &known);
	CHECK(known);
	h = userdb_lookup(&db, "mallory", &known);
	CHECK(!known);
	CHECK_STR(h, db.dummy);
	CHECK_INT(userdb_check(h, "pw1"), 0);
	userdb_free(&db);

	snprintf(text, sizeof(text), "alice:%s\nalice:%s\n", hash, hash);
	CHECK_INT(userdb_parse(&db, "users", text, err, sizeof(err)), -1);
	CHECK(strstr(err, "users:2: user alice appears twice") != NULL);
	CHECK_INT(userdb_parse(&db, "users", "# c\nbob\n", err, sizeof(err)), -1);
	CHECK(strstr(err, "users:2: expected user:hash") != NULL);
	CHECK_INT(userdb_parse(&db, "users", "bob:secret\n", err, sizeof(err)), -1);
	CHECK(strstr(err, "users:1: user bob:") != NULL);
	CHECK(strstr(err, "strictrelay passwd") != NULL);
	/* an empty file is valid: nobody can authenticate */
	REQUIRE(userdb_parse(&db, "users", "", err, sizeof(err)) == 0);
	CHECK_INT(db.n, 0);
	userdb_lookup(&db, "x", &known);
	CHECK(!known);
	userdb_free(&db);
}

static void test_limit_key(void)
{
	char k[CLIENTS_KEY_MAX];
	clients_limit_key("192.0.2.77", 32, 64, k);
	CHECK_STR(k, "192.0.2.77");
	clients_limit_key("192.0.2.77", 24, 64, k);
	CHECK_STR(k, "192.0.2.0/24");
	clients_limit_key("192.0.2.77", 20, 64, k);
	CHECK_STR(k, "192.0.0.0/20");
	clients_limit_key("10.255.255.255", 8, 64, k);
	CHECK_STR(k, "10.0.0.0/8");
	clients_limit_key("2001:db8:1:2:3:4:5:6", 32, 64, k);
	CHECK_STR(k, "2001:db8:1:2::/64");
	clients_limit_key("2001:db8:1:2:3:4:5:6", 32, 56, k);
	CHECK_STR(k, "2001:db8:1::/56");
	clients_limit_key("2001:db8::1", 32, 128, k);
	CHECK_STR(k, "2001:db8::1");
	clients_limit_key("unknown", 24, 64, k);
	CHECK_STR(k, "unknown");
	/* two addresses of one /24 share a connection limit */
	struct clients t;
	clients_init(&t);
	char a[CLIENTS_KEY_MAX], b[CLIENTS_KEY_MAX];
	clients_limit_key("198.51.100.1", 24, 64, a);
	clients_limit_key("198.51.100.2", 24, 64, b);
	CHECK(clients_connect(&t, a, 1, 0));
	CHECK(!clients_connect(&t, b, 1, 0));
	clients_free(&t);
}

static void test_client_limits(void)
{
	struct clients t;
	clients_init(&t);
	CHECK(clients_connect(&t, "192.0.2.1", 2, 1000));
	CHECK(clients_connect(&t, "192.0.2.1", 2, 1000));
	CHECK(!clients_connect(&t, "192.0.2.1", 2, 1000));
	CHECK(clients_connect(&t, "192.0.2.2", 2, 1000));
	CHECK_INT(clients_connections(&t, "192.0.2.1"), 2);
	clients_disconnect(&t, "192.0.2.1", 1000);
	CHECK(clients_connect(&t, "192.0.2.1", 2, 1000));

	/* 3 a minute: a burst of 3, then one every 20 s */
	for (int i = 0; i < 3; i++)
		CHECK(clients_message(&t, "192.0.2.3", 3, 5000));
	CHECK(!clients_message(&t, "192.0.2.3", 3, 5000));
	CHECK(!clients_message(&t, "192.0.2.3", 3, 24000));
	CHECK(clients_message(&t, "192.0.2.3", 3, 25001));
	CHECK(!clients_message(&t, "192.0.2.3", 3, 25002));
	CHECK(clients_message(&t, "192.0.2.3", 0, 25003)); /* 0 = no limit */

	/* 2 failures in 10 s lock; the lock lifts when the window passes */
	CHECK(!clients_auth_locked(&t, "192.0.2.4", 2, 10000, 100000));
	CHECK_INT(clients_auth_failed(&t, "192.0.2.4", 10000, 100000), 1);
	CHECK(!clients_auth_locked(&t, "192.0.2.4", 2, 10000, 101000));
	CHECK_INT(clients_auth_failed(&t, "192.0.2.4", 10000, 102000), 2);
	CHECK(clients_auth_locked(&t, "192.0.2.4", 2, 10000, 105000));
	CHECK(!clients_auth_locked(&t, "192.0.2.5", 2, 10000, 105000));
	CHECK(!clients_auth_locked(&t, "192.0.2.4", 2, 10000, 110001));
	clients_auth_failed(&t, "192.0.2.4", 10000, 120000);
	clients_auth_succeeded(&t, "192.0.2.4", 120001);
	CHECK_INT(clients_auth_failed(&t, "192.0.2.4", 10000, 120002), 1);

	/* sweeping forgets idle clients without connections only */
	size_t before = t.n;
	clients_sweep(&t, 60000, 1000000);
	CHECK(t.n < before);
	CHECK_INT(clients_connections(&t, "192.0.2.1"), 2);
	CHECK_INT(clients_connections(&t, "192.0.2.2"), 1);
	CHECK(!clients_auth_locked(&t, "192.0.2.4", 1, 10000, 1000000));
	/* many distinct clients */
	for (int i = 0; i < 20000; i++) {
		char a[32];
		snprintf(a, sizeof(a), "10.%d.%d.%d", i >> 16, (i >> 8) & 255, i & 255);
		CHECK(clients_connect(&t, a, 1, 2000000));
		clients_disconnect(&t, a, 2000000);
	}
	clients_sweep(&t, 60000, 3000000);
	CHECK_INT(t.n, 2);
	clients_free(&t);
}

int main(void)
{
	RUN(test_base64);
	RUN(test_plain_login);
	RUN(test_hash_roundtrip);
	RUN(test_hash_formats);
	RUN(test_users_file);
	RUN(test_limit_key);
	RUN(test_client_limits);
	TEST_EXIT();
}
