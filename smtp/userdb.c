/* userdb.c - see userdb.h */
#include "userdb.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "mta/util.h"
#include "smtp/sasl.h"

#define SALT_LEN 16
#define KEY_LEN 32
#define DEFAULT_SCRYPT_LN 15
#define SCRYPT_R 8
#define SCRYPT_P 1
#define MIN_SCRYPT_LN 14
#define MAX_SCRYPT_MEM ((uint64_t)256 << 20)
#define MIN_PBKDF2_ITER 100000
#define MAX_PBKDF2_ITER 10000000
#define MAX_FILE_SIZE (16 << 20)

enum kdf { KDF_SCRYPT, KDF_PBKDF2 };

struct parsed_hash {
	enum kdf kdf;
	unsigned ln, r, p;      /* scrypt */
	unsigned long iter;     /* pbkdf2 */
	unsigned char salt[64];
	size_t salt_len;
	unsigned char key[64];
	size_t key_len;
};

static int parse_uint(const char *s, const char *prefix, unsigned long max, unsigned long *out)
{
	size_t pl = strlen(prefix);
	if (strncmp(s, prefix, pl) != 0)
		return -1;
	s += pl;
	if (*s < '0' || *s > '9')
		return -1;
	unsigned long v = 0;
	for (; *s >= '0' && *s <= '9'; s++) {
		v = v * 10 + (unsigned long)(*s - '0');
		if (v > max)
			return -1;
	}
	if (*s != '\0')
		return -1;
	*out = v;
	return 0;
}

/* Splits "$kdf$params$salt$key" and checks every part. */
static int parse_hash(const char *hash, struct parsed_hash *ph, char *err, size_t errlen)
{
	char copy[USERDB_HASH_MAX];
	if (strlen(hash) >= sizeof(copy)) {
		errf(err, errlen, "hash too long");
		return -1;
	}
	snprintf(copy, sizeof(copy), "%s", hash);
	char *f[5];
	size_t nf = 0;
	char *p = copy;
	if (*p != '$') {
		errf(err, errlen, "hash does not start with $scrypt$ or $pbkdf2-sha256$");
		return -1;
	}
	p++;
	while (nf < 5) {
		f[nf++] = p;
		char *d = strchr(p, '$');
		if (d == NULL)
			break;
		*d = '\0';
		p = d + 1;
	}
	if (nf != 4) {
		errf(err, errlen, "hash must have 4 $-separated fields ($kdf$params$salt$hash)");
		return -1;
	}
	memset(ph, 0, sizeof(*ph));
	if (strcmp(f[0], "scrypt") == 0) {
		ph->kdf = KDF_SCRYPT;
		unsigned long ln, r, pp;
		char *a = f[1], *b = strchr(a, ','), *c = b ? strchr(b + 1, ',') : NULL;
		if (b == NULL || c == NULL) {
			errf(err, errlen, "scrypt parameters must be ln=N,r=N,p=N");
			return -1;
		}
		*b = *c = '\0';
		if (parse_uint(a, "ln=", 40, &ln) < 0 || parse_uint(b + 1, "r=", 64, &r) < 0 ||
		    parse_uint(c + 1, "p=", 64, &pp) < 0 || r == 0 || pp == 0) {
			errf(err, errlen, "scrypt parameters must be ln=N,r=N,p=N");
			return -1;
		}
		if (ln < MIN_SCRYPT_LN) {
			errf(err, errlen, "scrypt ln=%lu is too weak (at least %d)", ln, MIN_SCRYPT_LN);
			return -1;
		}
		uint64_t mem = (uint64_t)128 * r * ((uint64_t)1 << ln) * pp;
		if (ln > 24 || mem > MAX_SCRYPT_MEM) {
			errf(err, errlen, "scrypt parameters need more than %llu MiB per check",
			     (unsigned long long)(MAX_SCRYPT_MEM >> 20));
			return -1;
		}
		ph->ln = (unsigned)ln;
		ph->r = (unsigned)r;
		ph->p = (unsigned)pp;
	} else if (strcmp(f[0], "pbkdf2-sha256") == 0) {
		ph->kdf = KDF_PBKDF2;
		if (parse_uint(f[1], "i=", MAX_PBKDF2_ITER, &ph->iter) < 0) {
			errf(err, errlen, "pbkdf2-sha256 parameters must be i=N (N at most %d)",
			     MAX_PBKDF2_ITER);
			return -1;
		}
		if (ph->iter < MIN_PBKDF2_ITER) {
			errf(err, errlen, "pbkdf2-sha256 with %lu iterations is too weak (at least %d)",
			     ph->iter, MIN_PBKDF2_ITER);
			return -1;
		}
	} else {
		errf(err, errlen, "unknown hash type \"%s\" (scrypt or pbkdf2-sha256)", f[0]);
		return -1;
	}
	long sl = sasl_base64_decode(f[2], ph->salt, sizeof(ph->salt));
	long kl = sasl_base64_decode(f[3], ph->key, sizeof(ph->key));
	if (sl < 8 || kl < 16) {
		errf(err, errlen, "salt or hash is not base64 of at least 8 / 16 octets");
		return -1;
	}
	ph->salt_len = (size_t)sl;
	ph->key_len = (size_t)kl;
	return 0;
}

static int derive(const struct parsed_hash *ph, const char *password, unsigned char *out)
{
	size_t pl = strlen(password);
	if (ph->kdf == KDF_SCRYPT) {
		uint64_t n = (uint64_t)1 << ph->ln;
		uint64_t maxmem = MAX_SCRYPT_MEM + (1 << 20);
		return EVP_PBE_scrypt(password, pl, ph->salt, ph->salt_len, n, ph->r, ph->p, maxmem,
				      out, ph->key_len) == 1 ? 0 : -1;
	}
	return PKCS5_PBKDF2_HMAC(password, (int)pl, ph->salt, (int)ph->salt_len, (int)ph->iter,
				 EVP_sha256(), (int)ph->key_len, out) == 1 ? 0 : -1;
}

int userdb_hash(const char *password, char *out, size_t outlen, char *err, size_t errlen)
{
	struct parsed_hash ph = {
		.kdf = KDF_SCRYPT, .ln = DEFAULT_SCRYPT_LN, .r = SCRYPT_R, .p = SCRYPT_P,
		.salt_len = SALT_LEN, .key_len = KEY_LEN,
	};
	random_bytes(ph.salt, SALT_LEN);
	if (derive(&ph, password, ph.key) < 0) {
		errf(err, errlen, "scrypt failed (out of memory?)");
		return -1;
	}
	char salt[64], key[64];
	EVP_EncodeBlock((unsigned char *)salt, ph.salt, (int)ph.salt_len);
	EVP_EncodeBlock((unsigned char *)key, ph.key, (int)ph.key_len);
	int n = snprintf(out, outlen, "$scrypt$ln=%u,r=%u,p=%u$%s$%s", ph.ln, ph.r, ph.p, salt, key);
	OPENSSL_cleanse(&ph, sizeof(ph));
	if (n < 0 || (size_t)n >= outlen) {
		errf(err, errlen, "output buffer too small");
		return -1;
	}
	return 0;
}

int userdb_hash_check_format(const char *hash, char *err, size_t errlen)
{
	struct parsed_hash ph;
	return parse_hash(hash, &ph, err, errlen);
}

int userdb_check(const char *hash, const char *password)
{
	struct parsed_hash ph;
	char err[160];
	if (parse_hash(hash, &ph, err, sizeof(err)) < 0)
		return -1;
	unsigned char key[64];
	int rc = -1;
	if (derive(&ph, password, key) == 0)
		rc = CRYPTO_memcmp(key, ph.key, ph.key_len) == 0 ? 1 : 0;
	OPENSSL_cleanse(key, sizeof(key));
	return rc;
}

static int cmp_entry(const void *a, const void *b)
{
	return strcmp(((const struct userdb_entry *)a)->user, ((const struct userdb_entry *)b)->user);
}

int userdb_parse(struct userdb *db, const char *path, const char *text, char *err, size_t errlen)
{
	memset(db, 0, sizeof(*db));
	size_t cap = 0;
	unsigned lineno = 0;
	const char *p = text;
	while (*p != '\0') {
		lineno++;
		const char *eol = strchr(p, '\n');
		size_t len = eol ? (size_t)(eol - p) : strlen(p);
		char *line = xstrndup(p, len);
		p += len + (eol ? 1 : 0);
		char *t = str_trim(line);
		if (*t == '\0' || *t == '#') {
			free(line);
			continue;
		}
		char *colon = strchr(t, ':');
		char herr[160];
		if (colon == NULL || colon == t) {
			errf(err, errlen, "%s:%u: expected user:hash", path, lineno);
			goto fail_line;
		}
		*colon = '\0';
		char *user = str_trim(t), *hash = str_trim(colon + 1);
		for (const char *u = user; *u != '\0'; u++) {
			if ((unsigned char)*u < 0x20 || *u == 0x7f) {
				errf(err, errlen, "%s:%u: control character in the user name", path, lineno);
				goto fail_line;
			}
		}
		if (strlen(user) > SASL_MAX_FIELD) {
			errf(err, errlen, "%s:%u: user name longer than %d octets", path, lineno,
			     SASL_MAX_FIELD);
			goto fail_line;
		}
		if (parse_hash(hash, &(struct parsed_hash){ 0 }, herr, sizeof(herr)) < 0) {
			errf(err, errlen, "%s:%u: user %s: %s (make hashes with `strictrelay passwd USER`)",
			     path, lineno, user, herr);
			goto fail_line;
		}
		for (size_t i = 0; i < db->n; i++) {
			if (strcmp(db->v[i].user, user) == 0) {
				errf(err, errlen, "%s:%u: user %s appears twice", path, lineno, user);
				goto fail_line;
			}
		}
		if (db->n == cap) {
			cap = cap ? cap * 2 : 16;
			db->v = xrealloc(db->v, cap * sizeof(*db->v));
		}
		db->v[db->n].user = xstrdup(user);
		db->v[db->n].hash = xstrdup(hash);
		db->n++;
		OPENSSL_cleanse(line, len);
		free(line);
		continue;
fail_line:
		OPENSSL_cleanse(line, len);
		free(line);
		userdb_free(db);
		return -1;
	}
	if (db->n > 0)
		qsort(db->v, db->n, sizeof(*db->v), cmp_entry);
	/* A dummy with the parameters of the first user's hash would be
	 * better, but the default cost is what `passwd` writes. */
	if (userdb_hash("strictrelay-dummy-password", db->dummy, sizeof(db->dummy), err, errlen) < 0) {
		userdb_free(db);
		return -1;
	}
	return 0;
}

int userdb_load(struct userdb *db, const char *path, char *err, size_t errlen, char *warn,
		size_t warnlen)
{
	if (warn != NULL && warnlen > 0)
		warn[0] = '\0';
	FILE *f = fopen(path, "r");
	if (f == NULL) {
		errf(err, errlen, "%s: %s", path, strerror(errno));
		return -1;
	}
	struct stat sb;
	if (fstat(fileno(f), &sb) == 0 && (sb.st_mode & S_IROTH) && warn != NULL)
		snprintf(warn, warnlen, "%s is readable by every user; chmod o-r it (it holds password hashes)",
			 path);
	struct buf b;
	buf_init(&b, MAX_FILE_SIZE);
	char chunk[4096];
	size_t n;
	int rc = 0;
	while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0) {
		if (buf_append(&b, chunk, n) < 0) {
			errf(err, errlen, "%s: larger than %d MiB", path, MAX_FILE_SIZE >> 20);
			rc = -1;
			break;
		}
	}
	if (rc == 0 && ferror(f)) {
		errf(err, errlen, "%s: read error", path);
		rc = -1;
	}
	fclose(f);
	if (rc == 0) {
		buf_putc(&b, '\0');
		if (memchr(b.data, '\0', b.len - 1) != NULL) {
			errf(err, errlen, "%s: contains a NUL byte", path);
			rc = -1;
		} else {
			rc = userdb_parse(db, path, b.data, err, errlen);
		}
	}
	if (b.data != NULL)
		OPENSSL_cleanse(b.data, b.len);
	buf_free(&b);
	return rc;
}

const char *userdb_lookup(const struct userdb *db, const char *user, bool *known)
{
	struct userdb_entry key = { .user = (char *)user };
	const struct userdb_entry *e =
		db->n ? bsearch(&key, db->v, db->n, sizeof(*db->v), cmp_entry) : NULL;
	*known = e != NULL;
	return e ? e->hash : db->dummy;
}

void userdb_destroy(struct userdb *db)
{
	if (db == NULL)
		return;
	userdb_free(db);
	free(db);
}

void userdb_free(struct userdb *db)
{
	for (size_t i = 0; i < db->n; i++) {
		free(db->v[i].user);
		OPENSSL_cleanse(db->v[i].hash, strlen(db->v[i].hash));
		free(db->v[i].hash);
	}
	free(db->v);
	memset(db, 0, sizeof(*db));
}
