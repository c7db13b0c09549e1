/*
 * config_check.c - the I/O half of config validation (see config.h): the
 * files a config names exist, are readable and hold what they should.
 *
 * Kept apart from config.c so the pure parser has no OpenSSL or filesystem
 * dependency. `strictrelay check-config` and `serve` call this at start-up so
 * an operator learns about a missing key file before the first STARTTLS.
 *
 * Every message is "WHERE: KEY \"PATH\": reason", WHERE being the key's origin
 * ("FILE:LINE", "environment VAR" or "default").
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

static int ferr(const struct config *cfg, char *err, size_t errlen, const char *section,
		const char *key, const char *path, const char *fmt, ...) SR_PRINTF(7, 8);

/* Formats the message with the key's origin; always returns -1. */
static int ferr(const struct config *cfg, char *err, size_t errlen, const char *section,
		const char *key, const char *path, const char *fmt, ...)
{
	char reason[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(reason, sizeof(reason), fmt, ap);
	va_end(ap);
	if (err != NULL && errlen > 0)
		snprintf(err, errlen, "%s: %s \"%s\": %s", config_origin(cfg, section, key), key,
			 path, reason);
	/* Whatever OpenSSL queued is summarised above; do not leak it into
	 * the next, unrelated, ERR_get_error() caller. */
	ERR_clear_error();
	return -1;
}

/*
 * Opens a regular file for reading. NULL with *reason set otherwise: fopen()
 * happily opens a directory (the later read error would be confusing), and
 * a plain open() of a FIFO would hang check-config until a writer appears.
 */
static FILE *open_regular(const char *path, const char **reason)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
	struct stat st;
	if (fd < 0) {
		*reason = strerror(errno);
		return NULL;
	}
	if (fstat(fd, &st) < 0) {
		*reason = strerror(errno);
		close(fd);
		return NULL;
	}
	if (S_ISDIR(st.st_mode) || !S_ISREG(st.st_mode)) {
		*reason = S_ISDIR(st.st_mode) ? "is a directory" : "not a regular file";
		close(fd);
		return NULL;
	}
	FILE *f = fdopen(fd, "r");
	if (f == NULL) {
		*reason = strerror(errno);
		close(fd);
	}
	return f;
}

/* Never prompt on the terminal for a passphrase: the daemon can not. */
static int no_passphrase(char *buf, int size, int rwflag, void *u)
{
	return -1;
}

/*
 * Reads every PEM certificate in path. Returns how many (0: none), or -1
 * when the file can not be opened. *first receives the first one (caller
 * frees with X509_free) when first is not NULL. "TRUSTED CERTIFICATE"
 * blocks count too when aux is true (CA bundles contain them).
 */
static int read_certs(const char *path, bool aux, X509 **first, const char **reason)
{
	FILE *f = open_regular(path, reason);
	int n = 0;
	if (f == NULL)
		return -1;
	for (;;) {
		X509 *x = aux ? PEM_read_X509_AUX(f, NULL, no_passphrase, NULL)
			      : PEM_read_X509(f, NULL, no_passphrase, NULL);
		if (x == NULL)
			break;
		if (n == 0 && first != NULL)
			*first = x;
		else
			X509_free(x);
		n++;
	}
	/* The loop ends on "no start line" at end of file: expected. */
	ERR_clear_error();
	fclose(f);
	return n;
}

static EVP_PKEY *read_key(const char *path, const char **reason)
{
	FILE *f = open_regular(path, reason);
	if (f == NULL)
		return NULL;
	EVP_PKEY *k = PEM_read_PrivateKey(f, NULL, no_passphrase, NULL);
	if (k == NULL)
		*reason = "no PEM private key (or it is encrypted: the daemon has no passphrase)";
	fclose(f);
	return k;
}

static int check_readable(const struct config *cfg, const char *section, const char *key,
			  const char *path, char *err, size_t errlen)
{
	const char *reason = NULL;
	FILE *f;
	if (path == NULL || *path == '\0')
		return 0;
	f = open_regular(path, &reason);
	if (f == NULL)
		return ferr(cfg, err, errlen, section, key, path, "%s", reason);
	fclose(f);
	return 0;
}

static int check_tls(const struct config *cfg, char *err, size_t errlen)
{
	const char *cert_path = cfg->server.tls_cert, *key_path = cfg->server.tls_key;
	const char *reason = NULL;
	X509 *cert = NULL;
	EVP_PKEY *key = NULL;
	int rc = 0;
	if (cert_path != NULL && *cert_path != '\0') {
		int n = read_certs(cert_path, false, &cert, &reason);
		if (n < 0)
			return ferr(cfg, err, errlen, "server", "tls_cert", cert_path, "%s", reason);
		if (n == 0)
			return ferr(cfg, err, errlen, "server", "tls_cert", cert_path,
				    "no PEM certificate found");
	}
	if (key_path != NULL && *key_path != '\0') {
		key = read_key(key_path, &reason);
		if (key == NULL) {
			rc = ferr(cfg, err, errlen, "server", "tls_key", key_path, "%s", reason);
			goto out;
		}
	}
	/* The first certificate is the server's; the rest is its chain. */
	if (cert != NULL && key != NULL && X509_check_private_key(cert, key) != 1)
		rc = ferr(cfg, err, errlen, "server", "tls_key", key_path,
			  "does not match tls_cert \"%s\"", cert_path);
out:
	X509_free(cert);
	EVP_PKEY_free(key);
	return rc;
}

static int check_ca_file(const struct config *cfg, char *err, size_t errlen)
{
	const char *path = cfg->delivery.ca_file, *reason = NULL;
	if (path == NULL || *path == '\0')
		return 0;
	int n = read_certs(path, true, NULL, &reason);
	if (n < 0)
		return ferr(cfg, err, errlen, "delivery", "ca_file", path, "%s", reason);
	if (n == 0)
		return ferr(cfg, err, errlen, "delivery", "ca_file", path,
			    "no PEM certificate found");
	return 0;
}

/* The daemon creates state_dir itself; here we only refuse a file in its place. */
static int check_state_dir(const struct config *cfg, char *err, size_t errlen)
{
	const char *path = cfg->queue.state_dir;
	struct stat st;
	if (path == NULL || *path == '\0')
		return 0;
	if (stat(path, &st) < 0) {
		if (errno == ENOENT)
			return 0;
		return ferr(cfg, err, errlen, "queue", "state_dir", path, "%s", strerror(errno));
	}
	if (!S_ISDIR(st.st_mode))
		return ferr(cfg, err, errlen, "queue", "state_dir", path, "not a directory");
	return 0;
}

int config_check_files(const struct config *cfg, char *err, size_t errlen)
{
	if (check_tls(cfg, err, errlen) < 0 || check_ca_file(cfg, err, errlen) < 0 ||
	    check_readable(cfg, "tlsrpt", "dkim_key", cfg->tlsrpt.dkim_key, err, errlen) < 0 ||
	    check_readable(cfg, "auth", "users_file", cfg->auth.users_file, err, errlen) < 0 ||
	    check_state_dir(cfg, err, errlen) < 0)
		return -1;
	return 0;
}
