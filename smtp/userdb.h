/*
 * userdb.h - SMTP AUTH users: password hashes and the users file.
 *
 * Hash formats (one per line in [auth] users_file as "user:hash"):
 *   $scrypt$ln=15,r=8,p=1$SALT$HASH          (default; N = 2^ln)
 *   $pbkdf2-sha256$i=600000$SALT$HASH         (PBKDF2-HMAC-SHA256)
 * SALT and HASH are standard padded base64; the salt is 16 random octets,
 * the hash 32. `strictrelay passwd USER` writes scrypt lines. Parameters
 * weaker than the floor (scrypt ln < 14, PBKDF2 below 100000 iterations) or
 * costlier than the ceiling (scrypt memory > 256 MiB) are refused when the
 * file is loaded, so a typo cannot make a hash cheap to brute-force or make
 * every login exhaust memory.
 *
 * Checking a password costs tens of milliseconds of CPU by design: callers
 * on the event loop run userdb_check() on libuv's thread pool. Everything
 * here is thread-safe once loaded (a loaded userdb is read-only).
 */
#ifndef STRICTRELAY_SMTP_USERDB_H
#define STRICTRELAY_SMTP_USERDB_H

#include <stdbool.h>
#include <stddef.h>

#define USERDB_HASH_MAX 200

struct userdb_entry {
	char *user;
	char *hash;
};

struct userdb {
	struct userdb_entry *v; /* sorted by user */
	size_t n;
	char dummy[USERDB_HASH_MAX]; /* checked for unknown users (same cost) */
};

/* A new hash of password with the default (scrypt) parameters; 0 or -1 + err. */
int userdb_hash(const char *password, char *out, size_t outlen, char *err, size_t errlen);

/* 0 when hash is in a known format with acceptable parameters, else -1 + err. */
int userdb_hash_check_format(const char *hash, char *err, size_t errlen);

/* 1 = the password matches, 0 = it does not, -1 = the hash is malformed. */
int userdb_check(const char *hash, const char *password);

/* Parses a users file's text; errors name path:line. 0 or -1 + err. */
int userdb_parse(struct userdb *db, const char *path, const char *text, char *err,
		 size_t errlen);

/* Reads and parses path; warns (in warn) when others may read it. */
int userdb_load(struct userdb *db, const char *path, char *err, size_t errlen, char *warn,
		size_t warnlen);

/* The hash to check for user: theirs, or db->dummy for an unknown user
 * (so a wrong user name costs the same time as a wrong password). */
const char *userdb_lookup(const struct userdb *db, const char *user, bool *known);

void userdb_free(struct userdb *db);

/* userdb_free() and free() of a heap-allocated db; NULL is fine. */
void userdb_destroy(struct userdb *db);

#endif
