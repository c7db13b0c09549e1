/* dkim.c - see dkim.h */
#include "dkim.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#define KEY_FILE_MAX (256 * 1024)  /* a PEM key file is a few KiB */
#define SHA256_LEN 32
#define B64_LEN(n) (4 * (((n) + 2) / 3))

struct dkim_key {
	EVP_PKEY *pkey;
	enum dkim_alg type;
	int bits;
};

/* One header field of the message: p[0..len) without its final CR LF. */
struct field {
	const char *p;
	size_t len;
	size_t namelen;   /* the name, blanks before the colon excluded */
};

struct header {
	struct field *f;
	size_t n, cap;
	size_t body_off;  /* where the body starts (== len: empty) */
};

/* A buffer being written; the first failed append sticks. */
struct out {
	struct buf *b;
	bool err;
};

/* Where canonical output goes: a buffer or a running digest. */
struct sink {
	struct buf *b;
	EVP_MD_CTX *md;
	bool err;
};

/* --- errors ------------------------------------------------------------ */

/* "WHAT: <last OpenSSL error>", and OpenSSL's error queue emptied. */
static void ssl_err(char *err, size_t errlen, const char *what)
{
	char e[256] = "unknown error";
	unsigned long code, last = 0;
	while ((code = ERR_get_error()) != 0)
		last = code;
	if (last != 0)
		ERR_error_string_n(last, e, sizeof(e));
	errf(err, errlen, "%s: %s", what, e);
}

/* --- small helpers ----------------------------------------------------- */

static bool is_wsp(char c)
{
	return c == ' ' || c == '\t';
}

/* ftext (RFC 5322 3.6.8): printable ASCII except ":" */
static bool is_ftext(char c)
{
	unsigned char u = (unsigned char)c;
	return u >= 33 && u <= 126 && u != ':';
}

static char lower(char c)
{
	return c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
}

static bool name_eq(const char *a, size_t an, const char *b, size_t bn)
{
	if (an != bn)
		return false;
	for (size_t i = 0; i < an; i++)
		if (lower(a[i]) != lower(b[i]))
			return false;
	return true;
}

static void out_put(struct out *o, const void *p, size_t n)
{
	if (!o->err && buf_append(o->b, p, n) < 0)
		o->err = true;
}

static void out_puts(struct out *o, const char *s)
{
	out_put(o, s, strlen(s));
}

static void truncate_to(struct buf *b, size_t len)
{
	if (b->data != NULL && len <= b->len) {
		b->len = len;
		b->data[len] = '\0';
	}
}

static void sink_put(struct sink *s, const char *p, size_t n)
{
	if (s->err || n == 0)
		return;
	if (s->b != NULL) {
		if (buf_append(s->b, p, n) < 0)
			s->err = true;
	} else if (EVP_DigestUpdate(s->md, p, n) != 1) {
		s->err = true;
	}
}

/* base64 without line breaks, xmalloc'ed; NULL if OpenSSL misbehaves. */
static char *base64(const unsigned char *p, size_t n)
{
	if (n > (size_t)INT_MAX / 4 * 3 - 3)
		return NULL;
	size_t want = B64_LEN(n);
	char *o = xmalloc(want + 1);
	int r = EVP_EncodeBlock((unsigned char *)o, p, (int)n);
	if (r < 0 || (size_t)r != want) {
		free(o);
		return NULL;
	}
	o[want] = '\0';
	return o;
}

/* A DNS name for d= and s=: labels of letters, digits, '-' and '_'. */
static bool dns_name_ok(const char *s)
{
	if (s == NULL || *s == '\0' || strlen(s) > DKIM_MAX_NAME)
		return false;
	size_t label = 0;
	for (; *s != '\0'; s++) {
		char c = *s;
		if (c == '.') {
			if (label == 0)
				return false;
			label = 0;
			continue;
		}
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '-' || c == '_'))
			return false;
		if (++label > 63)
			return false;
	}
	return label > 0;
}

/* --- keys -------------------------------------------------------------- */

/* PEM pass phrase callback: we never have one; remember that one was asked. */
static int no_passphrase(char *buf, int size, int rwflag, void *u)
{
	(void)buf;
	(void)size;
	(void)rwflag;
	*(bool *)u = true;
	return -1;
}

/* Reads the whole file (at most KEY_FILE_MAX octets) into *data. */
static int read_key_file(const char *path, char **data, size_t *len, char *err, size_t errlen)
{
	FILE *f = fopen(path, "rb");
	if (f == NULL) {
		errf(err, errlen, "DKIM key %s: %s", path, strerror(errno));
		return -1;
	}
	char *d = xmalloc(KEY_FILE_MAX + 1);
	size_t n = fread(d, 1, KEY_FILE_MAX + 1, f);
	int rc = 0;
	if (ferror(f)) {
		errf(err, errlen, "DKIM key %s: read error", path);
		rc = -1;
	} else if (n > KEY_FILE_MAX) {
		errf(err, errlen, "DKIM key %s: larger than %d octets, not a PEM key", path,
			KEY_FILE_MAX);
		rc = -1;
	}
	fclose(f);
	if (rc < 0) {
		OPENSSL_cleanse(d, KEY_FILE_MAX + 1);
		free(d);
		return -1;
	}
	*data = d;
	*len = n;
	return 0;
}

int dkim_key_load(const char *pem_path, struct dkim_key **out, char *err, size_t errlen)
{
	*out = NULL;
	errf(err, errlen, "%s", "");
	if (pem_path == NULL || *pem_path == '\0') {
		errf(err, errlen, "DKIM key: no file name");
		return -1;
	}
	char *data;
	size_t len;
	if (read_key_file(pem_path, &data, &len, err, errlen) < 0)
		return -1;

	ERR_clear_error();
	EVP_PKEY *pkey = NULL;
	bool asked = false;
	BIO *bio = BIO_new_mem_buf(data, (int)len);
	if (bio == NULL) {
		ssl_err(err, errlen, "DKIM key: BIO_new_mem_buf");
		goto fail;
	}
	pkey = PEM_read_bio_PrivateKey(bio, NULL, no_passphrase, &asked);
	BIO_free(bio);
	if (pkey == NULL) {
		if (asked) {
			ERR_clear_error();
			errf(err, errlen, "DKIM key %s: encrypted; a key without a pass phrase is needed",
				pem_path);
		} else {
			char what[600];
			snprintf(what, sizeof(what), "DKIM key %s: no PEM private key", pem_path);
			ssl_err(err, errlen, what);
		}
		goto fail;
	}

	struct dkim_key *k = xcalloc(1, sizeof(*k));
	k->pkey = pkey;
	int id = EVP_PKEY_get_base_id(pkey);
	if (id == EVP_PKEY_RSA) {
		k->type = DKIM_ALG_RSA_SHA256;
		k->bits = EVP_PKEY_get_bits(pkey);
		if (k->bits < DKIM_RSA_MIN_BITS || k->bits > DKIM_RSA_MAX_BITS) {
			errf(err, errlen, "DKIM key %s: RSA key of %d bits; %d to %d are accepted",
				pem_path, k->bits, DKIM_RSA_MIN_BITS, DKIM_RSA_MAX_BITS);
			dkim_key_free(k);
			goto fail_cleansed;
		}
		if (k->bits < DKIM_RSA_WARN_BITS)
			errf(err, errlen,
				"DKIM key %s: RSA key of only %d bits; %d or more is recommended "
				"(RFC 8301)",
				pem_path, k->bits, DKIM_RSA_WARN_BITS);
		else if (k->bits > 4096)
			errf(err, errlen,
				"DKIM key %s: RSA key of %d bits; verifiers need only support up to "
				"4096 (RFC 8301)",
				pem_path, k->bits);
	} else if (id == EVP_PKEY_ED25519) {
		k->type = DKIM_ALG_ED25519_SHA256;
		k->bits = 256;
	} else {
		const char *name = EVP_PKEY_get0_type_name(pkey);
		errf(err, errlen,
			"DKIM key %s: key type %s is not supported; DKIM needs RSA (rsa-sha256) or "
			"Ed25519 (ed25519-sha256)",
			pem_path, name != NULL ? name : "unknown");
		dkim_key_free(k);
		goto fail_cleansed;
	}
	OPENSSL_cleanse(data, len);
	free(data);
	*out = k;
	return 0;

fail:
	EVP_PKEY_free(pkey);
fail_cleansed:
	ERR_clear_error();
	OPENSSL_cleanse(data, len);
	free(data);
	return -1;
}

void dkim_key_free(struct dkim_key *k)
{
	if (k == NULL)
		return;
	EVP_PKEY_free(k->pkey);
	free(k);
}

enum dkim_alg dkim_key_type(const struct dkim_key *k)
{
	return k->type;
}

const char *dkim_key_alg(const struct dkim_key *k)
{
	return k->type == DKIM_ALG_ED25519_SHA256 ? "ed25519-sha256" : "rsa-sha256";
}

int dkim_key_bits(const struct dkim_key *k)
{
	return k->bits;
}

/* "*", or names of [a-z0-9] separated by single colons */
static bool service_ok(const char *s)
{
	if (strcmp(s, "*") == 0)
		return true;
	bool prev_colon = true;
	for (; *s != '\0'; s++) {
		if (*s == ':') {
			if (prev_colon)
				return false;
			prev_colon = true;
		} else if ((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9')) {
			prev_colon = false;
		} else {
			return false;
		}
	}
	return !prev_colon;
}

int dkim_public_txt(const struct dkim_key *k, struct buf *out)
{
	return dkim_public_txt_service(k, DKIM_SERVICE_DEFAULT, out);
}

int dkim_public_txt_service(const struct dkim_key *k, const char *service, struct buf *out)
{
	unsigned char *der = NULL;
	size_t derlen = 0;
	int rc = -1;
	if (service != NULL && *service != '\0' && !service_ok(service))
		return -1;
	if (k->type == DKIM_ALG_RSA_SHA256) {
		int n = i2d_PUBKEY(k->pkey, NULL);
		if (n <= 0)
			goto done;
		der = xmalloc((size_t)n);
		unsigned char *p = der;
		if (i2d_PUBKEY(k->pkey, &p) != n)
			goto done;
		derlen = (size_t)n;
	} else {
		der = xmalloc(SHA256_LEN);
		derlen = SHA256_LEN;
		if (EVP_PKEY_get_raw_public_key(k->pkey, der, &derlen) != 1 || derlen != 32)
			goto done;
	}
	char *p64 = base64(der, derlen);
	if (p64 == NULL)
		goto done;
	bool with_s = service != NULL && *service != '\0';
	if (buf_printf(out, "v=DKIM1; k=%s; %s%s%sp=%s",
		       k->type == DKIM_ALG_RSA_SHA256 ? "rsa" : "ed25519", with_s ? "s=" : "",
		       with_s ? service : "", with_s ? "; " : "", p64) == 0)
		rc = 0;
	free(p64);
done:
	ERR_clear_error();
	free(der);
	return rc;
}

/* --- canonicalization -------------------------------------------------- */

/* Relaxed field: "name:value\r\n" into the sink. -1 without a valid name. */
static int canon_header(const char *f, size_t len, struct sink *s)
{
	const char *colon = memchr(f, ':', len);
	if (colon == NULL)
		return -1;
	size_t nl = (size_t)(colon - f);
	while (nl > 0 && is_wsp(f[nl - 1]))
		nl--;
	if (nl == 0)
		return -1;
	char name[DKIM_MAX_FIELD_NAME];
	size_t i = 0;
	while (i < nl) {
		/* lower-cased in chunks, so any name length works */
		size_t k = 0;
		for (; k < sizeof(name) && i < nl; k++, i++) {
			if (!is_ftext(f[i]))
				return -1;
			name[k] = lower(f[i]);
		}
		sink_put(s, name, k);
	}
	sink_put(s, ":", 1);
	/* the value: CR and LF dropped (unfolding), blank runs -> one SP,
	 * blanks at both ends dropped */
	const char *v = colon + 1, *end = f + len;
	bool started = false, blank = false;
	while (v < end) {
		if (*v == '\r' || *v == '\n') {
			v++;
		} else if (is_wsp(*v)) {
			blank = started;
			v++;
		} else {
			const char *r = v;
			while (r < end && !is_wsp(*r) && *r != '\r' && *r != '\n')
				r++;
			if (blank)
				sink_put(s, " ", 1);
			sink_put(s, v, (size_t)(r - v));
			blank = false;
			started = true;
			v = r;
		}
	}
	sink_put(s, "\r\n", 2);
	return 0;
}

int dkim_canon_header(const char *field, size_t len, struct buf *out)
{
	size_t start = out->len;
	struct sink s = { .b = out };
	if (field == NULL || canon_header(field, len, &s) < 0 || s.err) {
		truncate_to(out, start);
		return -1;
	}
	return 0;
}

/*
 * Relaxed body (RFC 6376 3.4.4): lines end at CR LF only. Blank runs become
 * one SP, trailing blanks go; empty lines are held back and written only
 * when a non-empty line follows, so the empty lines at the end vanish. A
 * last line without CR LF gets one when it is not empty.
 */
static void canon_body(const char *body, size_t len, struct sink *s)
{
	size_t pending = 0; /* empty lines held back */
	size_t i = 0;
	while (i < len) {
		size_t j = i;
		while (j < len && !(body[j] == '\r' && j + 1 < len && body[j + 1] == '\n'))
			j++;
		/* is there anything but blanks on the line? */
		size_t k = i;
		while (k < j && is_wsp(body[k]))
			k++;
		if (k == j) {
			pending++;
		} else {
			for (; pending > 0; pending--)
				sink_put(s, "\r\n", 2);
			bool blank = k > i;
			size_t p = k;
			while (p < j) {
				size_t r = p;
				while (r < j && !is_wsp(body[r]))
					r++;
				if (blank)
					sink_put(s, " ", 1);
				sink_put(s, body + p, r - p);
				blank = false;
				p = r;
				while (p < j && is_wsp(body[p])) {
					blank = true;
					p++;
				}
			}
			sink_put(s, "\r\n", 2);
		}
		i = j < len ? j + 2 : j;
	}
}

int dkim_canon_body(const char *body, size_t len, struct buf *out)
{
	size_t start = out->len;
	struct sink s = { .b = out };
	if (body == NULL)
		len = 0;
	canon_body(body, len, &s);
	if (!s.err && out->data == NULL && buf_append(out, "", 0) < 0)
		s.err = true;
	if (s.err) {
		truncate_to(out, start);
		return -1;
	}
	return 0;
}

/* --- the message --------------------------------------------------------- */

static void header_free(struct header *h)
{
	free(h->f);
	memset(h, 0, sizeof(*h));
}

/*
 * Splits the header section into fields and checks the whole message for
 * bare CR and LF. 0, or -1 with err.
 */
static int parse_message(const char *msg, size_t len, struct header *h, char *err, size_t errlen)
{
	memset(h, 0, sizeof(*h));
	h->body_off = len;
	for (size_t i = 0; i < len; i++) {
		if ((msg[i] == '\r' && (i + 1 >= len || msg[i + 1] != '\n')) ||
		    (msg[i] == '\n' && (i == 0 || msg[i - 1] != '\r'))) {
			errf(err, errlen, "bare %s at offset %zu of the message",
				msg[i] == '\r' ? "CR" : "LF", i);
			return -1;
		}
	}
	size_t pos = 0;
	while (pos < len) {
		const char *cr = memchr(msg + pos, '\r', len - pos);
		size_t eol = cr != NULL ? (size_t)(cr - msg) : len;
		size_t next = cr != NULL ? eol + 2 : len;
		if (eol == pos) {
			h->body_off = next;
			return 0;
		}
		if (is_wsp(msg[pos])) {
			if (h->n == 0) {
				errf(err, errlen, "header section starts with a continuation line");
				goto fail;
			}
			struct field *f = &h->f[h->n - 1];
			f->len = eol - (size_t)(f->p - msg);
		} else {
			const char *colon = memchr(msg + pos, ':', eol - pos);
			if (colon == NULL) {
				errf(err, errlen, "header line without a colon at offset %zu", pos);
				goto fail;
			}
			size_t nl = (size_t)(colon - (msg + pos));
			while (nl > 0 && is_wsp(msg[pos + nl - 1]))
				nl--;
			for (size_t i = 0; i < nl; i++) {
				if (!is_ftext(msg[pos + i])) {
					errf(err, errlen, "invalid header field name at offset %zu",
						pos);
					goto fail;
				}
			}
			if (nl == 0) {
				errf(err, errlen, "empty header field name at offset %zu", pos);
				goto fail;
			}
			if (h->n == h->cap) {
				h->cap = h->cap ? 2 * h->cap : 32;
				h->f = xrealloc(h->f, h->cap * sizeof(*h->f));
			}
			h->f[h->n++] = (struct field){ .p = msg + pos, .len = eol - pos, .namelen = nl };
		}
		pos = next;
	}
	h->body_off = len;
	return 0;
fail:
	header_free(h);
	return -1;
}

static int body_hash(const char *body, size_t len, char b64[45], char *err, size_t errlen)
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;
	int rc = -1;
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	if (ctx == NULL || EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1) {
		ssl_err(err, errlen, "SHA-256");
		goto done;
	}
	struct sink s = { .md = ctx };
	canon_body(body, len, &s);
	if (s.err || EVP_DigestFinal_ex(ctx, md, &mdlen) != 1 || mdlen != SHA256_LEN) {
		ssl_err(err, errlen, "SHA-256");
		goto done;
	}
	char *e = base64(md, mdlen);
	if (e == NULL) {
		ssl_err(err, errlen, "base64");
		goto done;
	}
	memcpy(b64, e, 45);
	free(e);
	rc = 0;
done:
	EVP_MD_CTX_free(ctx);
	return rc;
}

int dkim_body_hash(const char *msg, size_t len, char b64[45], char *err, size_t errlen)
{
	struct header h;
	if (msg == NULL)
		len = 0;
	if (parse_message(msg, len, &h, err, errlen) < 0)
		return -1;
	int rc = body_hash(msg + h.body_off, len - h.body_off, b64, err, errlen);
	header_free(&h);
	return rc;
}

/* --- the DKIM-Signature field -------------------------------------------- */

struct folder {
	struct out o;
	size_t col;   /* characters on the current line */
};

static void fold_newline(struct folder *f)
{
	out_puts(&f->o, "\r\n ");
	f->col = 1;
}

/* A piece that must not be split; a fold before it if it does not fit.
 * sep (" " or "") is what goes between it and the previous piece when
 * no fold is needed. */
static void fold_atom(struct folder *f, const char *s, size_t n, const char *sep)
{
	size_t sl = strlen(sep);
	if (f->col > 1 && f->col + sl + n > DKIM_FOLD_WIDTH) {
		fold_newline(f);
	} else {
		out_puts(&f->o, sep);
		f->col += sl;
	}
	out_put(&f->o, s, n);
	f->col += n;
}

/* base64 text that may be split anywhere; nothing follows it. */
static void fold_base64(struct folder *f, const char *s)
{
	size_t n = strlen(s);
	while (n > 0) {
		if (f->col >= DKIM_FOLD_WIDTH)
			fold_newline(f);
		size_t room = DKIM_FOLD_WIDTH - f->col;
		size_t k = n < room ? n : room;
		out_put(&f->o, s, k);
		f->col += k;
		s += k;
		n -= k;
	}
}

/* Tags up to "b=" (value empty) into f. */
static void build_sig_field(struct folder *f, const struct dkim_key *k, const char *domain,
			    const char *selector, int64_t now, const char *const *hnames,
			    size_t nh, const char *bh)
{
	char tmp[600];
	out_puts(&f->o, "DKIM-Signature:");
	f->col = strlen("DKIM-Signature:");
	fold_atom(f, "v=1;", 4, " ");
	snprintf(tmp, sizeof(tmp), "a=%s;", dkim_key_alg(k));
	fold_atom(f, tmp, strlen(tmp), " ");
	fold_atom(f, "c=relaxed/relaxed;", strlen("c=relaxed/relaxed;"), " ");
	snprintf(tmp, sizeof(tmp), "d=%s;", domain);
	fold_atom(f, tmp, strlen(tmp), " ");
	snprintf(tmp, sizeof(tmp), "s=%s;", selector);
	fold_atom(f, tmp, strlen(tmp), " ");
	snprintf(tmp, sizeof(tmp), "t=%lld;", (long long)now);
	fold_atom(f, tmp, strlen(tmp), " ");
	for (size_t i = 0; i < nh; i++) {
		snprintf(tmp, sizeof(tmp), "%s%s%s", i == 0 ? "h=" : "", hnames[i],
			 i + 1 < nh ? ":" : ";");
		fold_atom(f, tmp, strlen(tmp), i == 0 ? " " : "");
	}
	snprintf(tmp, sizeof(tmp), "bh=%s;", bh);
	fold_atom(f, tmp, strlen(tmp), " ");
	/* "b=" with room for DKIM_B_MIN_CHARS of its value on the same line */
	if (f->col + 1 + 2 + DKIM_B_MIN_CHARS > DKIM_FOLD_WIDTH) {
		fold_newline(f);
		out_puts(&f->o, "b=");
		f->col += 2;
	} else {
		fold_atom(f, "b=", 2, " ");
	}
}

static int do_sign(const struct dkim_key *k, const struct buf *data, unsigned char **sig,
		   size_t *siglen, char *err, size_t errlen)
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;
	const unsigned char *in = (const unsigned char *)data->data;
	size_t inlen = data->len;
	int rc = -1;
	*sig = NULL;
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	if (ctx == NULL) {
		ssl_err(err, errlen, "EVP_MD_CTX_new");
		return -1;
	}
	if (k->type == DKIM_ALG_ED25519_SHA256) {
		/* RFC 8463 3: PureEd25519 over the SHA-256 hash of the data */
		if (EVP_Digest(in, inlen, md, &mdlen, EVP_sha256(), NULL) != 1 ||
		    mdlen != SHA256_LEN) {
			ssl_err(err, errlen, "SHA-256");
			goto done;
		}
		in = md;
		inlen = mdlen;
		if (EVP_DigestSignInit(ctx, NULL, NULL, NULL, k->pkey) != 1) {
			ssl_err(err, errlen, "Ed25519 signing");
			goto done;
		}
	} else if (EVP_DigestSignInit(ctx, NULL, EVP_sha256(), NULL, k->pkey) != 1) {
		ssl_err(err, errlen, "RSA-SHA256 signing");
		goto done;
	}
	size_t n = 0;
	if (EVP_DigestSign(ctx, NULL, &n, in, inlen) != 1 || n == 0) {
		ssl_err(err, errlen, "signature size");
		goto done;
	}
	*sig = xmalloc(n);
	if (EVP_DigestSign(ctx, *sig, &n, in, inlen) != 1 || n == 0) {
		ssl_err(err, errlen, "signing");
		free(*sig);
		*sig = NULL;
		goto done;
	}
	*siglen = n;
	rc = 0;
done:
	EVP_MD_CTX_free(ctx);
	OPENSSL_cleanse(md, sizeof(md));
	return rc;
}

static int check_sign_args(const struct dkim_key *k, const char *domain, const char *selector,
			   const char *const *names, const char *msg, size_t len, int64_t now,
			   char *err, size_t errlen)
{
	if (k == NULL || k->pkey == NULL) {
		errf(err, errlen, "no DKIM key");
		return -1;
	}
	if (!dns_name_ok(domain)) {
		errf(err, errlen, "invalid DKIM domain (d=)");
		return -1;
	}
	if (!dns_name_ok(selector)) {
		errf(err, errlen, "invalid DKIM selector (s=)");
		return -1;
	}
	if (now < 0) {
		errf(err, errlen, "negative signing time");
		return -1;
	}
	if (msg == NULL && len != 0) {
		errf(err, errlen, "no message");
		return -1;
	}
	if (names == NULL) {
		errf(err, errlen, "no header fields to sign");
		return -1;
	}
	bool from = false;
	size_t i = 0;
	for (; names[i] != NULL; i++) {
		const char *s = names[i];
		size_t n = strlen(s);
		if (i >= DKIM_MAX_SIGN_HEADERS) {
			errf(err, errlen, "more than %d header names to sign",
				DKIM_MAX_SIGN_HEADERS);
			return -1;
		}
		if (n == 0 || n > DKIM_MAX_FIELD_NAME) {
			errf(err, errlen, "header name to sign is empty or longer than %d",
				DKIM_MAX_FIELD_NAME);
			return -1;
		}
		/* ftext would allow ";" and "=", which could inject tags via h= */
		for (size_t j = 0; j < n; j++) {
			char c = s[j];
			if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
			      c == '-' || c == '_' || c == '.')) {
				errf(err, errlen, "invalid header name to sign");
				return -1;
			}
		}
		from |= name_eq(s, n, "From", 4);
	}
	if (!from) {
		errf(err, errlen, "From is not among the header fields to sign (RFC 6376 5.4)");
		return -1;
	}
	return 0;
}

int dkim_sign(const struct dkim_key *k, const char *domain, const char *selector,
	      const char *const *sign_headers, const char *msg, size_t len, int64_t now,
	      struct buf *header_out, char *err, size_t errlen)
{
	if (check_sign_args(k, domain, selector, sign_headers, msg, len, now, err, errlen) < 0)
		return -1;
	if (msg == NULL)
		msg = "";
	struct header h;
	if (parse_message(msg, len, &h, err, errlen) < 0)
		return -1;

	int rc = -1;
	const char **hnames = xcalloc(DKIM_MAX_H_ENTRIES, sizeof(*hnames));
	size_t *sel = xcalloc(DKIM_MAX_H_ENTRIES, sizeof(*sel));
	size_t nh = 0, nfrom = 0;
	unsigned char *sig = NULL;
	size_t siglen = 0;
	char *b64 = NULL;
	struct buf data, field;
	buf_init(&data, 0);
	buf_init(&field, 0);

	for (size_t i = 0; i < h.n; i++)
		if (name_eq(h.f[i].p, h.f[i].namelen, "From", 4))
			nfrom++;
	if (nfrom != 1) {
		errf(err, errlen, "%s From header field (RFC 5322 3.6: exactly one)",
			nfrom == 0 ? "no" : "more than one");
		goto done;
	}

	/* h=: per listed name (first listing only), its fields bottom-up */
	for (size_t i = 0; sign_headers[i] != NULL; i++) {
		const char *name = sign_headers[i];
		size_t nl = strlen(name);
		bool dup = false;
		for (size_t j = 0; j < i && !dup; j++)
			dup = name_eq(sign_headers[j], strlen(sign_headers[j]), name, nl);
		if (dup)
			continue;
		for (size_t f = h.n; f-- > 0;) {
			if (!name_eq(h.f[f].p, h.f[f].namelen, name, nl))
				continue;
			if (nh == DKIM_MAX_H_ENTRIES) {
				errf(err, errlen, "more than %d header fields to sign",
					DKIM_MAX_H_ENTRIES);
				goto done;
			}
			hnames[nh] = name;
			sel[nh++] = f;
		}
	}

	char bh[45];
	if (body_hash(msg + h.body_off, len - h.body_off, bh, err, errlen) < 0)
		goto done;

	struct sink ds = { .b = &data };
	for (size_t i = 0; i < nh; i++)
		if (canon_header(h.f[sel[i]].p, h.f[sel[i]].len, &ds) < 0)
			ds.err = true;
	/* the DKIM-Signature field itself, b= empty, no final CR LF */
	struct folder fo = { .o = { .b = &field } };
	build_sig_field(&fo, k, domain, selector, now, hnames, nh, bh);
	size_t before = data.len;
	if (fo.o.err || ds.err || canon_header(field.data, field.len, &ds) < 0 || ds.err ||
	    data.len < before + 2) {
		errf(err, errlen, "internal error building the signed data");
		goto done;
	}
	truncate_to(&data, data.len - 2);

	if (do_sign(k, &data, &sig, &siglen, err, errlen) < 0)
		goto done;
	b64 = base64(sig, siglen);
	if (b64 == NULL) {
		ssl_err(err, errlen, "base64");
		goto done;
	}
	fold_base64(&fo, b64);
	out_puts(&fo.o, "\r\n");
	if (fo.o.err) {
		errf(err, errlen, "internal error building the signature");
		goto done;
	}
	if (buf_append(header_out, field.data, field.len) < 0) {
		errf(err, errlen, "DKIM-Signature does not fit the output buffer");
		goto done;
	}
	rc = 0;
done:
	free(hnames);
	free(sel);
	free(sig);
	free(b64);
	buf_free(&data);
	buf_free(&field);
	header_free(&h);
	return rc;
}
