/* Unit tests for tlsrpt/dkim.c: relaxed canonicalization (RFC 6376
 * 3.4.2/3.4.4, incl. the 3.4.5 examples), known-answer body hashes
 * (computed once with Python's hashlib and dkimpy's Relaxed canonicalizer),
 * h= contents and bottom-up order with repeated fields, no l= (RPT-26),
 * folding at 78 columns, key loading and refusals, the public TXT value,
 * and a verification of our own signatures with OpenSSL (the verifier's
 * header selection re-implemented here). dkimpy verifies them in
 * tests/integration/test_dkim.py. */
#include <stdint.h>
#include <strings.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "mta/util.h"
#include "test.h"
#include "tlsrpt/dkim.h"

#define NOW 1795426200 /* 2026-11-23 09:30:00 UTC */

static const char *const TLSRPT_HEADERS[] = {
	"From", "To", "Subject", "Date", "Message-ID", "MIME-Version", "Content-Type",
	"TLS-Report-Domain", "TLS-Report-Submitter", NULL,
};

static char tmpdir[] = "/tmp/test_dkim.XXXXXX";
static EVP_PKEY *rsa_pkey, *ed_pkey;
static char rsa_path[128], ed_path[128];

/* --- helpers --------------------------------------------------------------- */

static char *canon_h(const char *field)
{
	struct buf b;
	buf_init(&b, 0);
	if (dkim_canon_header(field, strlen(field), &b) < 0) {
		buf_free(&b);
		return NULL;
	}
	return buf_steal(&b, NULL);
}

static char *canon_b(const char *body, size_t len)
{
	struct buf b;
	buf_init(&b, 0);
	if (dkim_canon_body(body, len, &b) < 0) {
		buf_free(&b);
		return NULL;
	}
	return buf_steal(&b, NULL);
}

static void write_pem(const char *path, EVP_PKEY *k, const EVP_CIPHER *enc)
{
	FILE *f = fopen(path, "w");
	if (f == NULL)
		abort();
	unsigned char pass[] = "secret";
	if (PEM_write_PrivateKey(f, k, enc, enc ? pass : NULL, enc ? 6 : 0, NULL, NULL) != 1)
		abort();
	fclose(f);
}

static void path_for(char *dst, size_t n, const char *name)
{
	snprintf(dst, n, "%s/%s", tmpdir, name);
}

/* Removes CR LF (unfolding) and returns a copy. */
static char *unfold(const char *s)
{
	char *o = xstrdup(s);
	size_t j = 0;
	for (size_t i = 0; o[i] != '\0'; i++)
		if (o[i] != '\r' && o[i] != '\n')
			o[j++] = o[i];
	o[j] = '\0';
	return o;
}

/* The value of tag name in a DKIM-Signature field (unfolded, whitespace
 * removed), or false. Counts how often the tag occurs in *count. */
static bool get_tag(const char *field, const char *name, char *out, size_t outlen, int *count)
{
	char *u = unfold(field);
	char *p = strchr(u, ':');
	bool found = false;
	if (count)
		*count = 0;
	while (p != NULL) {
		p++;
		char *end = strchr(p, ';');
		if (end)
			*end = '\0';
		char *eq = strchr(p, '=');
		if (eq != NULL) {
			*eq = '\0';
			char *t = str_trim(p);
			if (strcmp(t, name) == 0) {
				size_t o = 0;
				for (char *v = eq + 1; *v && o + 1 < outlen; v++)
					if (*v != ' ' && *v != '\t')
						out[o++] = *v;
				out[o] = '\0';
				found = true;
				if (count)
					(*count)++;
			}
		}
		p = end;
	}
	free(u);
	return found;
}

static bool lines_ok(const char *field)
{
	const char *s = field;
	bool first = true;
	while (*s != '\0') {
		const char *e = strstr(s, "\r\n");
		if (e == NULL)
			return false; /* must end with CR LF */
		if (e - s > 78)
			return false;
		if (!first && s[0] != ' ')
			return false;
		if (first && strncmp(s, "DKIM-Signature: ", 16) != 0)
			return false;
		first = false;
		s = e + 2;
	}
	return !first;
}

static EVP_PKEY *gen(const char *type, size_t bits)
{
	EVP_PKEY *k = bits ? EVP_PKEY_Q_keygen(NULL, NULL, type, bits)
			   : EVP_PKEY_Q_keygen(NULL, NULL, type);
	if (k == NULL)
		abort();
	return k;
}

static void setup(void)
{
	if (mkdtemp(tmpdir) == NULL)
		abort();
	rsa_pkey = gen("RSA", 2048);
	ed_pkey = gen("ED25519", 0);
	path_for(rsa_path, sizeof(rsa_path), "rsa2048.pem");
	path_for(ed_path, sizeof(ed_path), "ed25519.pem");
	write_pem(rsa_path, rsa_pkey, NULL);
	write_pem(ed_path, ed_pkey, NULL);
}

static struct dkim_key *load(const char *path)
{
	struct dkim_key *k = NULL;
	char err[512];
	if (dkim_key_load(path, &k, err, sizeof(err)) < 0) {
		fprintf(stderr, "load %s: %s\n", path, err);
		return NULL;
	}
	return k;
}

/*
 * Verifies sig (our DKIM-Signature field) over msg the way a verifier does:
 * for each h= name the last not yet used field of that name, relaxed; then
 * the signature field with the b= value removed; RSA/Ed25519 check.
 */
static bool verify(const char *sigfield, const char *msg, EVP_PKEY *pub, bool ed)
{
	char h[4096], b[1024];
	if (!get_tag(sigfield, "h", h, sizeof(h), NULL) || !get_tag(sigfield, "b", b, sizeof(b), NULL))
		return false;
	/* the message's header fields */
	const char *fields[256];
	size_t flen[256], nf = 0;
	const char *p = msg;
	while (*p != '\0' && strncmp(p, "\r\n", 2) != 0 && nf < 256) {
		const char *e = p;
		for (;;) {
			e = strstr(e, "\r\n");
			if (e == NULL)
				return false;
			if (e[2] == ' ' || e[2] == '\t') {
				e += 2;
				continue;
			}
			break;
		}
		fields[nf] = p;
		flen[nf++] = (size_t)(e - p);
		p = e + 2;
	}
	struct buf data;
	buf_init(&data, 0);
	bool used[256] = { false };
	char *save = NULL;
	for (char *name = strtok_r(h, ":", &save); name != NULL; name = strtok_r(NULL, ":", &save)) {
		for (size_t i = nf; i-- > 0;) {
			if (used[i])
				continue;
			const char *c = memchr(fields[i], ':', flen[i]);
			size_t nl = (size_t)(c - fields[i]);
			while (nl > 0 && (fields[i][nl - 1] == ' ' || fields[i][nl - 1] == '\t'))
				nl--;
			if (nl == strlen(name) && strncasecmp(fields[i], name, nl) == 0) {
				used[i] = true;
				struct buf t;
				buf_init(&t, 0);
				buf_append(&t, fields[i], flen[i]);
				char *cf = canon_h(t.data);
				buf_puts(&data, cf);
				free(cf);
				buf_free(&t);
				break;
			}
		}
	}
	/* our field minus the b= value (which is last) and the final CR LF */
	char *copy = xstrdup(sigfield);
	char *bt = strstr(copy, " b=");
	if (bt == NULL)
		bt = strstr(copy, "\tb=");
	if (bt == NULL) {
		free(copy);
		buf_free(&data);
		return false;
	}
	bt[3] = '\0';
	char *cs = canon_h(copy);
	free(copy);
	buf_append(&data, cs, strlen(cs) - 2);
	free(cs);

	unsigned char sig[1024], md[32];
	int siglen = EVP_DecodeBlock(sig, (unsigned char *)b, (int)strlen(b));
	size_t bl = strlen(b);
	while (bl > 0 && b[bl - 1] == '=') {
		siglen--;
		bl--;
	}
	bool ok = false;
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	if (ed) {
		unsigned int ml = 0;
		if (EVP_Digest(data.data, data.len, md, &ml, EVP_sha256(), NULL) == 1 &&
		    EVP_DigestVerifyInit(ctx, NULL, NULL, NULL, pub) == 1)
			ok = EVP_DigestVerify(ctx, sig, (size_t)siglen, md, ml) == 1;
	} else if (EVP_DigestVerifyInit(ctx, NULL, EVP_sha256(), NULL, pub) == 1) {
		ok = EVP_DigestVerify(ctx, sig, (size_t)siglen, (unsigned char *)data.data,
				      data.len) == 1;
	}
	EVP_MD_CTX_free(ctx);
	ERR_clear_error();
	buf_free(&data);
	return ok;
}

static char *sign(const struct dkim_key *k, const char *const *hdrs, const char *msg)
{
	struct buf out;
	char err[256];
	buf_init(&out, 0);
	if (dkim_sign(k, "sender.example", "tlsrpt2026", hdrs, msg, strlen(msg), NOW, &out, err,
		      sizeof(err)) < 0) {
		fprintf(stderr, "sign: %s\n", err);
		buf_free(&out);
		return NULL;
	}
	return buf_steal(&out, NULL);
}

/* --- canonicalization ------------------------------------------------------ */

static void test_canon_header(void)
{
	static const struct {
		const char *in, *want;
	} cases[] = {
		{ "Subject:  Hello \t World  ", "subject:Hello World\r\n" },
		{ "SUBJECT \t: value", "subject:value\r\n" },
		{ "Subject: a\r\n\tb\r\n   c", "subject:a b c\r\n" },
		{ "X-Empty:", "x-empty:\r\n" },
		{ "X-Empty:  \t ", "x-empty:\r\n" },
		{ "TLS-Report-Domain: Example.NET", "tls-report-domain:Example.NET\r\n" },
		/* RFC 6376 3.4.5 */
		{ "A: X", "a:X\r\n" },
		{ "B : Y\t\r\n\tZ  ", "b:Y Z\r\n" },
		{ "Received: from x\r\n by y", "received:from x by y\r\n" },
		{ "X-8bit: caf\xc3\xa9  ok", "x-8bit:caf\xc3\xa9 ok\r\n" },
	};
	for (size_t i = 0; i < SR_ARRAY_LEN(cases); i++) {
		char *c = canon_h(cases[i].in);
		CHECK_STR(c, cases[i].want);
		free(c);
	}
	CHECK(canon_h("no colon here") == NULL);
	CHECK(canon_h(": empty name") == NULL);
	CHECK(canon_h("Bad Name: x") == NULL);
	CHECK(canon_h("\x01X: y") == NULL);

	/* a cap: -1 and the buffer unchanged */
	struct buf b;
	buf_init(&b, 10);
	REQUIRE(buf_puts(&b, "abc") == 0);
	CHECK_INT(dkim_canon_header("Subject: a long value", 21, &b), -1);
	CHECK_STR(b.data, "abc");
	CHECK_INT(b.len, 3);
	buf_free(&b);
}

static void test_canon_body(void)
{
	static const struct {
		const char *in, *want;
	} cases[] = {
		{ "", "" },
		{ "\r\n", "" },
		{ "\r\n\r\n\r\n", "" },
		{ " \t\r\n\r\n", "" },
		{ " \t", "" },
		{ "abc", "abc\r\n" },
		{ "abc  \t", "abc\r\n" },
		{ "abc  \t\r\n", "abc\r\n" },
		/* RFC 6376 3.4.5 */
		{ " C \r\nD \t E\r\n\r\n\r\n", " C\r\nD E\r\n" },
		{ "a\r\n\r\nb\r\n\r\n", "a\r\n\r\nb\r\n" },
		{ "line one  \r\n\r\n \t \r\nline   four\t\xc3\xa9 \r\n\r\n \r\n",
		  "line one\r\n\r\n\r\nline four \xc3\xa9\r\n" },
		{ "\t\tindent\r\n", " indent\r\n" },
		{ "x\r\n\r\ny", "x\r\n\r\ny\r\n" },
	};
	for (size_t i = 0; i < SR_ARRAY_LEN(cases); i++) {
		char *c = canon_b(cases[i].in, strlen(cases[i].in));
		CHECK_STR(c, cases[i].want);
		free(c);
	}
	/* NUL octets are data */
	char *c = canon_b("a\0b  \r\n", 7);
	REQUIRE(c != NULL);
	CHECK(memcmp(c, "a\0b\r\n", 6) == 0);
	free(c);
}

static void check_bh(const char *msg, const char *want)
{
	char bh[45], err[256];
	REQUIRE(dkim_body_hash(msg, strlen(msg), bh, err, sizeof(err)) == 0);
	CHECK_STR(bh, want);
}

#define H_EMPTY "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="

static void test_body_hash(void)
{
	/* sha256("") - RFC 6376 3.4.4: the empty body stays empty */
	check_bh("From: a@b.example\r\n", H_EMPTY);
	check_bh("From: a@b.example\r\n\r\n", H_EMPTY);
	check_bh("From: a@b.example\r\n\r\n\r\n\r\n", H_EMPTY);
	check_bh("From: a@b.example\r\n\r\n \t\r\n\r\n", H_EMPTY);
	check_bh("From: a@b.example", H_EMPTY);
	/* sha256("abc\r\n") */
	check_bh("From: a@b.example\r\n\r\nabc", "VSuraGTHp7aaUC7RhUuSRcDhow8AiqoLKB2mJYX9sCU=");
	check_bh("From: a@b.example\r\n\r\nabc \t \r\n\r\n",
		 "VSuraGTHp7aaUC7RhUuSRcDhow8AiqoLKB2mJYX9sCU=");
	/* RFC 6376 3.4.5 */
	check_bh("A: X\r\nB : Y\t\r\n\tZ  \r\n\r\n C \r\nD \t E\r\n\r\n\r\n",
		 "unak6JHq0wL+Q1HP7dW1tjBx9FLA6DffoZ0qrLwbbpo=");
	/* RFC 6376 appendix A body */
	check_bh("From: Joe SixPack <joe@football.example.com>\r\n"
		 "Subject: Is dinner ready?\r\n\r\n"
		 "Hi.\r\n\r\nWe lost the game. Are you hungry yet?\r\n\r\nJoe.\r\n",
		 "2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8=");
	check_bh("From: a@b.example\r\n\r\n"
		 "line one  \r\n\r\n \t \r\nline   four\t\xc3\xa9 \r\n\r\n \r\n",
		 "r4w+6nObE+C0l687SlNn7vQPNWdrPQLrnzTArftfRSA=");

	char bh[45], err[256];
	CHECK_INT(dkim_body_hash("From: a\nTo: b\r\n\r\n", 17, bh, err, sizeof(err)), -1);
	CHECK(strstr(err, "bare LF") != NULL);
	CHECK_INT(dkim_body_hash("From: a\r\n\r\nx\ry\r\n", 16, bh, err, sizeof(err)), -1);
	CHECK(strstr(err, "bare CR") != NULL);
	CHECK_INT(dkim_body_hash(" cont\r\nFrom: a\r\n", 16, bh, err, sizeof(err)), -1);
	CHECK_INT(dkim_body_hash("From: a\r\nno colon\r\n\r\n", 21, bh, err, sizeof(err)), -1);
}

/* --- keys ------------------------------------------------------------------ */

static void test_keys(void)
{
	char path[160], err[512];
	struct dkim_key *k = NULL;

	REQUIRE(dkim_key_load(rsa_path, &k, err, sizeof(err)) == 0);
	CHECK_STR(err, "");
	CHECK_STR(dkim_key_alg(k), "rsa-sha256");
	CHECK_INT(dkim_key_bits(k), 2048);
	CHECK_INT(dkim_key_type(k), DKIM_ALG_RSA_SHA256);
	dkim_key_free(k);

	REQUIRE(dkim_key_load(ed_path, &k, err, sizeof(err)) == 0);
	CHECK_STR(err, "");
	CHECK_STR(dkim_key_alg(k), "ed25519-sha256");
	CHECK_INT(dkim_key_type(k), DKIM_ALG_ED25519_SHA256);
	dkim_key_free(k);

	/* 1024: accepted with a warning */
	EVP_PKEY *p = gen("RSA", 1024);
	path_for(path, sizeof(path), "rsa1024.pem");
	write_pem(path, p, NULL);
	EVP_PKEY_free(p);
	REQUIRE(dkim_key_load(path, &k, err, sizeof(err)) == 0);
	CHECK(strstr(err, "1024") != NULL);
	CHECK(strstr(err, "2048") != NULL);
	dkim_key_free(k);
	unlink(path);

	/* refused: too small, EC, Ed448, encrypted, not a key, missing */
	p = gen("RSA", 768);
	path_for(path, sizeof(path), "rsa768.pem");
	write_pem(path, p, NULL);
	EVP_PKEY_free(p);
	k = (struct dkim_key *)1;
	CHECK_INT(dkim_key_load(path, &k, err, sizeof(err)), -1);
	CHECK(k == NULL);
	CHECK(strstr(err, "768") != NULL && strstr(err, path) != NULL);
	unlink(path);

	p = EVP_EC_gen("P-256");
	REQUIRE(p != NULL);
	path_for(path, sizeof(path), "ec.pem");
	write_pem(path, p, NULL);
	EVP_PKEY_free(p);
	CHECK_INT(dkim_key_load(path, &k, err, sizeof(err)), -1);
	CHECK(k == NULL);
	CHECK(strstr(err, path) != NULL && strstr(err, "EC") != NULL);
	unlink(path);

	p = gen("ED448", 0);
	path_for(path, sizeof(path), "ed448.pem");
	write_pem(path, p, NULL);
	EVP_PKEY_free(p);
	CHECK_INT(dkim_key_load(path, &k, err, sizeof(err)), -1);
	CHECK(strstr(err, path) != NULL && strstr(err, "not supported") != NULL);
	unlink(path);

	path_for(path, sizeof(path), "enc.pem");
	write_pem(path, ed_pkey, EVP_aes_128_cbc());
	CHECK_INT(dkim_key_load(path, &k, err, sizeof(err)), -1);
	CHECK(strstr(err, "encrypted") != NULL);
	unlink(path);

	path_for(path, sizeof(path), "junk.pem");
	FILE *f = fopen(path, "w");
	REQUIRE(f != NULL);
	fputs("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", f);
	fclose(f);
	CHECK_INT(dkim_key_load(path, &k, err, sizeof(err)), -1);
	CHECK(strstr(err, "no PEM private key") != NULL);
	unlink(path);

	path_for(path, sizeof(path), "missing.pem");
	CHECK_INT(dkim_key_load(path, &k, err, sizeof(err)), -1);
	CHECK(strstr(err, "No such file") != NULL);
	CHECK(ERR_peek_error() == 0);
}

static void test_public_txt(void)
{
	struct dkim_key *k = load(rsa_path);
	REQUIRE(k != NULL);
	struct buf b;
	buf_init(&b, 0);
	REQUIRE(dkim_public_txt(k, &b) == 0);
	const char *pre = "v=DKIM1; k=rsa; s=tlsrpt; p=";
	REQUIRE(strncmp(b.data, pre, strlen(pre)) == 0);
	const char *p64 = b.data + strlen(pre);
	unsigned char der[1024];
	int n = EVP_DecodeBlock(der, (const unsigned char *)p64, (int)strlen(p64));
	REQUIRE(n > 0);
	const unsigned char *dp = der;
	EVP_PKEY *pub = d2i_PUBKEY(NULL, &dp, n);
	REQUIRE(pub != NULL);
	CHECK(EVP_PKEY_eq(pub, rsa_pkey) == 1);
	EVP_PKEY_free(pub);
	dkim_key_free(k);
	buf_free(&b);

	k = load(ed_path);
	REQUIRE(k != NULL);
	buf_init(&b, 0);
	REQUIRE(dkim_public_txt(k, &b) == 0);
	pre = "v=DKIM1; k=ed25519; s=tlsrpt; p=";
	REQUIRE(strncmp(b.data, pre, strlen(pre)) == 0);
	p64 = b.data + strlen(pre);
	CHECK_INT(strlen(p64), 44);
	unsigned char raw[64], want[32];
	size_t wl = sizeof(want);
	REQUIRE(EVP_PKEY_get_raw_public_key(ed_pkey, want, &wl) == 1);
	CHECK_INT(EVP_DecodeBlock(raw, (const unsigned char *)p64, 44), 33); /* 32 + padding */
	CHECK(memcmp(raw, want, 32) == 0);
	/* other service types */
	static const struct {
		const char *service, *want;
	} sv[] = {
		{ "tlsrpt", "v=DKIM1; k=ed25519; s=tlsrpt; p=" },
		{ "email:tlsrpt", "v=DKIM1; k=ed25519; s=email:tlsrpt; p=" },
		{ "*", "v=DKIM1; k=ed25519; s=*; p=" },
		{ "", "v=DKIM1; k=ed25519; p=" },
		{ NULL, "v=DKIM1; k=ed25519; p=" },
	};
	for (size_t i = 0; i < SR_ARRAY_LEN(sv); i++) {
		struct buf t;
		buf_init(&t, 0);
		CHECK_INT(dkim_public_txt_service(k, sv[i].service, &t), 0);
		CHECK(t.data != NULL && strncmp(t.data, sv[i].want, strlen(sv[i].want)) == 0 &&
		      strcmp(t.data + strlen(sv[i].want), p64) == 0);
		buf_free(&t);
	}
	static const char *const bad[] = { "Email", "email::tlsrpt", ":tlsrpt", "tlsrpt:",
					   "e mail", "*:email", "tls;rpt" };
	for (size_t i = 0; i < SR_ARRAY_LEN(bad); i++) {
		struct buf t;
		buf_init(&t, 0);
		CHECK_INT(dkim_public_txt_service(k, bad[i], &t), -1);
		CHECK_INT(t.len, 0);
		buf_free(&t);
	}
	/* the cap is respected */
	struct buf small;
	buf_init(&small, 20);
	CHECK_INT(dkim_public_txt(k, &small), -1);
	CHECK_INT(small.len, 0);
	buf_free(&small);
	dkim_key_free(k);
	buf_free(&b);
}

/* --- signing --------------------------------------------------------------- */

static const char DUPS[] = "Received: from a by b; Mon, 23 Nov 2026 09:00:00 +0000\r\n"
			   "From: Reports <tlsrpt@sender.example>\r\n"
			   "X-Dup: one\r\n"
			   "To: rua@example.net\r\n"
			   "Received: from c\r\n\tby d; Mon, 23 Nov 2026 09:10:00 +0000\r\n"
			   "x-dup : two  \r\n"
			   "Subject: duplicates\r\n"
			   "X-DUP: three\r\n"
			   "\r\n"
			   "body\r\n";

/* DUPS with the first and last X-Dup exchanged */
static const char DUPS_SWAPPED[] = "Received: from a by b; Mon, 23 Nov 2026 09:00:00 +0000\r\n"
				   "From: Reports <tlsrpt@sender.example>\r\n"
				   "X-DUP: three\r\n"
				   "To: rua@example.net\r\n"
				   "Received: from c\r\n\tby d; Mon, 23 Nov 2026 09:10:00 +0000\r\n"
				   "x-dup : two  \r\n"
				   "Subject: duplicates\r\n"
				   "X-Dup: one\r\n"
				   "\r\n"
				   "body\r\n";

static void test_h_order(void)
{
	static const char *const names[] = { "From", "X-Dup", "To", "Received", "Cc", "from",
					     "X-Missing", NULL };
	struct dkim_key *k = load(rsa_path);
	REQUIRE(k != NULL);
	char *sig = sign(k, names, DUPS);
	REQUIRE(sig != NULL);
	char h[1024], v[1024];
	int cnt;
	REQUIRE(get_tag(sig, "h", h, sizeof(h), &cnt));
	CHECK_INT(cnt, 1);
	/* each occurrence once, absent names left out, a repeated name once */
	CHECK_STR(h, "From:X-Dup:X-Dup:X-Dup:To:Received:Received");
	CHECK(get_tag(sig, "v", v, sizeof(v), NULL) && strcmp(v, "1") == 0);
	CHECK(get_tag(sig, "a", v, sizeof(v), NULL) && strcmp(v, "rsa-sha256") == 0);
	CHECK(get_tag(sig, "c", v, sizeof(v), NULL) && strcmp(v, "relaxed/relaxed") == 0);
	CHECK(get_tag(sig, "d", v, sizeof(v), NULL) && strcmp(v, "sender.example") == 0);
	CHECK(get_tag(sig, "s", v, sizeof(v), NULL) && strcmp(v, "tlsrpt2026") == 0);
	CHECK(get_tag(sig, "t", v, sizeof(v), NULL) && strcmp(v, "1795426200") == 0);
	/* sha256("body\r\n") */
	CHECK(get_tag(sig, "bh", v, sizeof(v), NULL) &&
	      strcmp(v, "Ck5SoRNWUpSR4X0COv7R5ub2pUTtl6xz4dTFz++ji4M=") == 0);
	CHECK(!get_tag(sig, "l", v, sizeof(v), NULL));
	CHECK(get_tag(sig, "b", v, sizeof(v), NULL) && strlen(v) == 344);
	CHECK(lines_ok(sig));
	/* the tag order: v a c d s t h bh b */
	char *u = unfold(sig);
	const char *order[] = { " v=", " a=", " c=", " d=", " s=", " t=", " h=", " bh=", " b=" };
	const char *prev = u;
	for (size_t i = 0; i < SR_ARRAY_LEN(order); i++) {
		const char *at = strstr(prev, order[i]);
		CHECK(at != NULL);
		if (at != NULL)
			prev = at;
	}
	free(u);

	EVP_PKEY *pub = rsa_pkey;
	CHECK(verify(sig, DUPS, pub, false));
	/* the same fields in another order no longer verify */
	CHECK(!verify(sig, DUPS_SWAPPED, pub, false));
	free(sig);
	dkim_key_free(k);
}

static const char *const MESSAGES[] = {
	"From: tlsrpt@sender.example\r\nTo: rua@example.net\r\nSubject: hi\r\n\r\nhello\r\n",
	/* no body at all, and an empty one */
	"From: tlsrpt@sender.example\r\nTo: rua@example.net\r\n",
	"From: tlsrpt@sender.example\r\nTo: rua@example.net\r\n\r\n",
	/* folded headers, trailing whitespace, blank lines at the end */
	"From: Reports\r\n <tlsrpt@sender.example>\r\nSubject: Report Domain: example.net\r\n"
	"  Submitter: sender.example\r\n\tReport-ID: <x@y>   \r\nTo:  rua@example.net \r\n\r\n"
	"  indented   text \t\r\n\r\nmore\t\r\n\r\n\r\n",
	/* no final CR LF */
	"From: tlsrpt@sender.example\r\n\r\nlast line without CRLF   ",
};

static void test_sign_verify(void)
{
	struct dkim_key *keys[2] = { load(rsa_path), load(ed_path) };
	EVP_PKEY *pubs[2] = { rsa_pkey, ed_pkey };
	REQUIRE(keys[0] != NULL && keys[1] != NULL);
	for (size_t ki = 0; ki < 2; ki++) {
		for (size_t i = 0; i < SR_ARRAY_LEN(MESSAGES); i++) {
			char *sig = sign(keys[ki], TLSRPT_HEADERS, MESSAGES[i]);
			REQUIRE(sig != NULL);
			char v[1024];
			CHECK(!get_tag(sig, "l", v, sizeof(v), NULL));
			CHECK(get_tag(sig, "a", v, sizeof(v), NULL) &&
			      strcmp(v, ki ? "ed25519-sha256" : "rsa-sha256") == 0);
			CHECK(lines_ok(sig));
			if (!verify(sig, MESSAGES[i], pubs[ki], ki == 1)) {
				fprintf(stderr, "message %zu key %zu does not verify\n", i, ki);
				CHECK(false);
			}
			/* a changed body no longer matches bh= */
			char bh[45], err[128];
			struct buf t;
			buf_init(&t, 0);
			buf_puts(&t, MESSAGES[i]);
			buf_puts(&t, "\r\nX");
			if (strstr(MESSAGES[i], "\r\n\r\n") == NULL)
				buf_puts(&t, "\r\n");
			REQUIRE(dkim_body_hash(t.data, t.len, bh, err, sizeof(err)) == 0);
			CHECK(get_tag(sig, "bh", v, sizeof(v), NULL) && strcmp(v, bh) != 0);
			buf_free(&t);
			/* a changed signed header fails the signature */
			char *m = xstrdup(MESSAGES[i]);
			m[strlen("From: t")] = 'T';
			CHECK(!verify(sig, m, pubs[ki], ki == 1));
			free(m);
			free(sig);
		}
		/* Ed25519 is deterministic, so the same input signs the same */
		if (ki == 1) {
			char *a = sign(keys[1], TLSRPT_HEADERS, MESSAGES[0]);
			char *b = sign(keys[1], TLSRPT_HEADERS, MESSAGES[0]);
			CHECK(a != NULL && b != NULL && strcmp(a, b) == 0);
			free(a);
			free(b);
		}
	}
	dkim_key_free(keys[0]);
	dkim_key_free(keys[1]);
}

static void test_folding(void)
{
	/* many long names: h= must be folded between names */
	struct buf msg;
	buf_init(&msg, 0);
	const char *names[40];
	char store[39][40];
	names[0] = "From";
	buf_puts(&msg, "From: tlsrpt@sender.example\r\n");
	for (int i = 1; i < 39; i++) {
		snprintf(store[i], sizeof(store[i]), "X-Some-Rather-Long-Header-Name-%02d", i);
		names[i] = store[i];
		buf_printf(&msg, "%s: value %d\r\n", store[i], i);
	}
	names[39] = NULL;
	buf_puts(&msg, "\r\nbody\r\n");
	struct dkim_key *k = load(rsa_path);
	REQUIRE(k != NULL);
	struct buf out;
	char err[256];
	buf_init(&out, 0);
	REQUIRE(dkim_sign(k, "a-rather-long-signing-domain-name.mail.sender.example",
			  "selector-with-a-long-name-2026-11", names, msg.data, msg.len, NOW, &out, err,
			  sizeof(err)) == 0);
	CHECK(lines_ok(out.data));
	char h[2048];
	REQUIRE(get_tag(out.data, "h", h, sizeof(h), NULL));
	CHECK(strncmp(h, "From:X-Some-Rather-Long-Header-Name-01:", 39) == 0);
	CHECK(verify(out.data, msg.data, rsa_pkey, false));
	/* the header goes in front of the message unchanged */
	CHECK(out.len > 2 && memcmp(out.data + out.len - 2, "\r\n", 2) == 0);
	CHECK(strstr(out.data, "\r\n\r\n") == NULL);
	buf_free(&out);
	buf_free(&msg);
	dkim_key_free(k);
}

static void test_refusals(void)
{
	struct dkim_key *k = load(ed_path);
	REQUIRE(k != NULL);
	static const char *const no_from[] = { "To", "Subject", NULL };
	static const char *const bad_name[] = { "From", "Bad Name", NULL };
	static const char *const empty_name[] = { "From", "", NULL };
	static const char *const inject[] = { "From", "X;l=5", NULL };
	static const char *const colon[] = { "From", "To:Cc", NULL };
	const char *ok = MESSAGES[0];
	struct buf out;
	char err[256];
	buf_init(&out, 0);
	buf_puts(&out, "keep");

#define REFUSE(key, d, s, names, msg, len, now)                                              \
	do {                                                                                 \
		err[0] = '\0';                                                               \
		CHECK_INT(dkim_sign(key, d, s, names, msg, len, now, &out, err, sizeof(err)), \
			  -1);                                                               \
		CHECK(err[0] != '\0');                                                       \
		CHECK_STR(out.data, "keep");                                                 \
	} while (0)

	REFUSE(NULL, "sender.example", "s", TLSRPT_HEADERS, ok, strlen(ok), NOW);
	REFUSE(k, "sender.example", "s", no_from, ok, strlen(ok), NOW);
	CHECK(strstr(err, "From") != NULL);
	REFUSE(k, "sender.example", "s", bad_name, ok, strlen(ok), NOW);
	REFUSE(k, "sender.example", "s", empty_name, ok, strlen(ok), NOW);
	REFUSE(k, "sender.example", "s", inject, ok, strlen(ok), NOW);
	REFUSE(k, "sender.example", "s", colon, ok, strlen(ok), NOW);
	REFUSE(k, "sender.example", "s", NULL, ok, strlen(ok), NOW);
	REFUSE(k, "bad domain", "s", TLSRPT_HEADERS, ok, strlen(ok), NOW);
	REFUSE(k, "sender.example.", "s", TLSRPT_HEADERS, ok, strlen(ok), NOW);
	REFUSE(k, "sender..example", "s", TLSRPT_HEADERS, ok, strlen(ok), NOW);
	REFUSE(k, "sender.example", "s;l=5", TLSRPT_HEADERS, ok, strlen(ok), NOW);
	REFUSE(k, "sender.example", "", TLSRPT_HEADERS, ok, strlen(ok), NOW);
	REFUSE(k, "sender.example", "s", TLSRPT_HEADERS, ok, strlen(ok), -1);
	REFUSE(k, "sender.example", "s", TLSRPT_HEADERS, NULL, 5, NOW);
	const char *m = "To: x@y.example\r\n\r\nno from\r\n";
	REFUSE(k, "sender.example", "s", TLSRPT_HEADERS, m, strlen(m), NOW);
	CHECK(strstr(err, "no From") != NULL);
	m = "From: a@y.example\r\nFrom: b@y.example\r\n\r\n";
	REFUSE(k, "sender.example", "s", TLSRPT_HEADERS, m, strlen(m), NOW);
	m = "From: a@y.example\nTo: b\n\nbody\n";
	REFUSE(k, "sender.example", "s", TLSRPT_HEADERS, m, strlen(m), NOW);
	CHECK(strstr(err, "bare LF") != NULL);
	m = "From: a@y.example\r\n\r\nbo\rdy\r\n";
	REFUSE(k, "sender.example", "s", TLSRPT_HEADERS, m, strlen(m), NOW);
	m = "\tcontinued\r\nFrom: a@y.example\r\n\r\n";
	REFUSE(k, "sender.example", "s", TLSRPT_HEADERS, m, strlen(m), NOW);
	m = "From: a@y.example\r\nnot a field\r\n\r\n";
	REFUSE(k, "sender.example", "s", TLSRPT_HEADERS, m, strlen(m), NOW);

	/* the output cap */
	struct buf small;
	buf_init(&small, 100);
	CHECK_INT(dkim_sign(k, "sender.example", "s", TLSRPT_HEADERS, ok, strlen(ok), NOW, &small,
			    err, sizeof(err)),
		  -1);
	CHECK_INT(small.len, 0);
	buf_free(&small);
	/* err may be NULL */
	CHECK_INT(dkim_sign(k, "bad domain", "s", TLSRPT_HEADERS, ok, strlen(ok), NOW, &out, NULL,
			    0),
		  -1);
	buf_free(&out);
	dkim_key_free(k);
	CHECK(ERR_peek_error() == 0);
}

static void teardown(void)
{
	unlink(rsa_path);
	unlink(ed_path);
	rmdir(tmpdir);
	EVP_PKEY_free(rsa_pkey);
	EVP_PKEY_free(ed_pkey);
}

int main(void)
{
	setup();
	RUN(test_canon_header);
	RUN(test_canon_body);
	RUN(test_body_hash);
	RUN(test_keys);
	RUN(test_public_txt);
	RUN(test_h_order);
	RUN(test_sign_verify);
	RUN(test_folding);
	RUN(test_refusals);
	teardown();
	TEST_EXIT();
}
