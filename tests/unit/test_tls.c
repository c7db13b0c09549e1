/*
 * Unit tests for smtp/tls.c: a client and a server tls_conn talking through
 * their memory BIOs (no sockets), with certificates made here by OpenSSL:
 * the verdicts of tls_client_verify for each kind of bad certificate.
 */
#include <stdlib.h>
#include <unistd.h>

#include <openssl/ec.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "smtp/tls.h"
#include "test.h"

static char dir[] = "/tmp/strictrelay-test-tls-XXXXXX";

static EVP_PKEY *new_key(void)
{
	return EVP_EC_gen("P-256");
}

static void add_ext(X509 *cert, X509 *issuer, int nid, const char *value)
{
	X509V3_CTX ctx;
	X509V3_set_ctx(&ctx, issuer, cert, NULL, NULL, 0);
	X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
	if (ext != NULL) {
		X509_add_ext(cert, ext, -1);
		X509_EXTENSION_free(ext);
	}
}

/* A certificate for cn/san signed by issuer (self-signed when NULL),
 * valid from now+from_days to now+to_days. */
static X509 *new_cert(EVP_PKEY *key, const char *cn, const char *san, X509 *issuer,
		      EVP_PKEY *issuer_key, long from_days, long to_days, bool ca)
{
	static long serial = 1;
	X509 *c = X509_new();
	X509_set_version(c, 2);
	ASN1_INTEGER_set(X509_get_serialNumber(c), serial++);
	X509_gmtime_adj(X509_getm_notBefore(c), from_days * 86400);
	X509_gmtime_adj(X509_getm_notAfter(c), to_days * 86400);
	X509_set_pubkey(c, key);
	X509_NAME *name = X509_get_subject_name(c);
	X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
	X509_set_issuer_name(c, issuer ? X509_get_subject_name(issuer) : name);
	if (ca) {
		add_ext(c, issuer ? issuer : c, NID_basic_constraints, "critical,CA:TRUE");
		add_ext(c, issuer ? issuer : c, NID_key_usage, "critical,keyCertSign,cRLSign");
	}
	if (san != NULL)
		add_ext(c, issuer ? issuer : c, NID_subject_alt_name, san);
	X509_sign(c, issuer_key ? issuer_key : key, EVP_sha256());
	return c;
}

static void write_pem(const char *name, X509 *cert, EVP_PKEY *key, char *path, size_t len)
{
	snprintf(path, len, "%s/%s", dir, name);
	FILE *f = fopen(path, "w");
	if (cert)
		PEM_write_X509(f, cert);
	if (key)
		PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL);
	fclose(f);
}

static char ca_path[256];
static X509 *ca;
static EVP_PKEY *ca_key;

/* Runs a handshake between a server using cert/key and a client expecting
 * verify_name; returns the client's verdict. */
static enum tls_cert_result handshake(X509 *cert, EVP_PKEY *key, const char *verify_name)
{
	char cpath[256], kpath[256], err[256];
	write_pem("srv.crt", cert, NULL, cpath, sizeof(cpath));
	write_pem("srv.key", NULL, key, kpath, sizeof(kpath));
	SSL_CTX *sctx = tls_server_ctx_new(cpath, kpath, err, sizeof(err));
	SSL_CTX *cctx = tls_client_ctx_new(ca_path, err, sizeof(err));
	if (sctx == NULL || cctx == NULL) {
		fprintf(stderr, "ctx: %s\n", err);
		test_failures++;
		return TLS_CERT_OTHER;
	}
	struct tls_conn s, c;
	CHECK_INT(tls_conn_init_server(&s, sctx), 0);
	CHECK_INT(tls_conn_init_client(&c, cctx, verify_name, verify_name), 0);
	struct buf wire;
	buf_init(&wire, 0);
	enum tls_status cs = TLS_WANT, ss = TLS_WANT;
	for (int i = 0; i < 20 && (cs != TLS_OK || ss != TLS_OK); i++) {
		cs = tls_handshake(&c);
		buf_reset(&wire);
		tls_take_output(&c, &wire);
		tls_feed(&s, wire.data, wire.len);
		ss = tls_handshake(&s);
		buf_reset(&wire);
		tls_take_output(&s, &wire);
		tls_feed(&c, wire.data, wire.len);
	}
	CHECK_INT(cs, TLS_OK);
	CHECK_INT(ss, TLS_OK);
	/* Application data both ways. */
	CHECK_INT(tls_write(&c, "EHLO x\r\n", 8), TLS_OK);
	buf_reset(&wire);
	tls_take_output(&c, &wire);
	tls_feed(&s, wire.data, wire.len);
	struct buf plain;
	buf_init(&plain, 0);
	CHECK_INT(tls_read(&s, &plain), TLS_WANT);
	CHECK_STR(plain.data, "EHLO x\r\n");
	char desc[160];
	tls_describe(&c, desc, sizeof(desc));
	CHECK(strncmp(desc, "TLSv1.", 6) == 0);
	struct tls_verify_info info;
	tls_client_verify(&c, &info);
	buf_free(&plain);
	buf_free(&wire);
	tls_conn_free(&s);
	tls_conn_free(&c);
	SSL_CTX_free(sctx);
	SSL_CTX_free(cctx);
	return info.result;
}

static void test_verdicts(void)
{
	EVP_PKEY *k = new_key();
	X509 *good = new_cert(k, "mx.example.test", "DNS:mx.example.test", ca, ca_key, -1, 30, false);
	CHECK_INT(handshake(good, k, "mx.example.test"), TLS_CERT_OK);
	CHECK_INT(handshake(good, k, "MX.Example.TEST"), TLS_CERT_OK);
	CHECK_INT(handshake(good, k, "other.example.test"), TLS_CERT_NAME_MISMATCH);

	X509 *wild = new_cert(k, "w", "DNS:*.example.test", ca, ca_key, -1, 30, false);
	CHECK_INT(handshake(wild, k, "mx.example.test"), TLS_CERT_OK);
	CHECK_INT(handshake(wild, k, "a.b.example.test"), TLS_CERT_NAME_MISMATCH);
	CHECK_INT(handshake(wild, k, "example.test"), TLS_CERT_NAME_MISMATCH);

	X509 *partial = new_cert(k, "p", "DNS:mx*.example.test", ca, ca_key, -1, 30, false);
	CHECK_INT(handshake(partial, k, "mx1.example.test"), TLS_CERT_NAME_MISMATCH);

	/* CN only, no SAN: refused (RFC 6125/9525 DNS-ID only) */
	X509 *cnonly = new_cert(k, "mx.example.test", NULL, ca, ca_key, -1, 30, false);
	CHECK_INT(handshake(cnonly, k, "mx.example.test"), TLS_CERT_NAME_MISMATCH);

	X509 *expired = new_cert(k, "mx.example.test", "DNS:mx.example.test", ca, ca_key, -60, -30, false);
	CHECK_INT(handshake(expired, k, "mx.example.test"), TLS_CERT_EXPIRED);

	X509 *self = new_cert(k, "mx.example.test", "DNS:mx.example.test", NULL, NULL, -1, 30, false);
	CHECK_INT(handshake(self, k, "mx.example.test"), TLS_CERT_UNTRUSTED);

	EVP_PKEY *k2 = new_key();
	X509 *other_ca = new_cert(k2, "Other CA", NULL, NULL, NULL, -1, 30, true);
	X509 *by_other = new_cert(k, "mx.example.test", "DNS:mx.example.test", other_ca, k2, -1, 30, false);
	CHECK_INT(handshake(by_other, k, "mx.example.test"), TLS_CERT_UNTRUSTED);

	/* no name to check: chain only */
	CHECK_INT(handshake(good, k, NULL), TLS_CERT_OK);

	X509_free(good);
	X509_free(wild);
	X509_free(partial);
	X509_free(cnonly);
	X509_free(expired);
	X509_free(self);
	X509_free(other_ca);
	X509_free(by_other);
	EVP_PKEY_free(k);
	EVP_PKEY_free(k2);
}

static void test_bad_files(void)
{
	char err[256];
	CHECK(tls_server_ctx_new("/nonexistent.pem", "/nonexistent.key", err, sizeof(err)) == NULL);
	CHECK(strstr(err, "/nonexistent.pem") != NULL);
	/* key that does not match the certificate */
	EVP_PKEY *k = new_key(), *k2 = new_key();
	X509 *c = new_cert(k, "x", "DNS:x", ca, ca_key, -1, 30, false);
	char cpath[256], kpath[256];
	write_pem("m.crt", c, NULL, cpath, sizeof(cpath));
	write_pem("m.key", NULL, k2, kpath, sizeof(kpath));
	CHECK(tls_server_ctx_new(cpath, kpath, err, sizeof(err)) == NULL);
	X509_free(c);
	EVP_PKEY_free(k);
	EVP_PKEY_free(k2);
}

int main(void)
{
	if (mkdtemp(dir) == NULL)
		return 1;
	ca_key = new_key();
	ca = new_cert(ca_key, "Test CA", NULL, NULL, NULL, -1, 365, true);
	write_pem("ca.crt", ca, NULL, ca_path, sizeof(ca_path));
	RUN(test_verdicts);
	RUN(test_bad_files);
	X509_free(ca);
	EVP_PKEY_free(ca_key);
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	if (system(cmd) != 0)
		return 1;
	TEST_EXIT();
}
