/*
 * passwdcli.c - `strictrelay passwd USER`: reads a password (twice, without
 * echo, from a terminal; else one line from standard input) and prints the
 * "USER:HASH" line for [auth] users_file.
 */
#include "passwdcli.h"

#include <stdio.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "mta/cli.h"
#include "smtp/sasl.h"
#include "smtp/userdb.h"

const char passwdcli_help[] =
	"NAME\n"
	"    strictrelay passwd - make a users_file line for SMTP AUTH\n"
	"\n"
	"SYNOPSIS\n"
	"    strictrelay passwd USER\n"
	"    printf '%s\\n' \"$PASSWORD\" | strictrelay passwd USER\n"
	"\n"
	"DESCRIPTION\n"
	"    Reads a password and prints \"USER:HASH\" for [auth] users_file. On a\n"
	"    terminal the password is asked for twice without echo; otherwise the\n"
	"    first line of standard input is the password. The hash is scrypt\n"
	"    (N=2^15, r=8, p=1, 16-octet random salt): checking it costs about 32 MiB\n"
	"    and tens of milliseconds, which the relay does off its event loop.\n"
	"    PBKDF2-SHA256 hashes ($pbkdf2-sha256$i=ITERATIONS$SALT$HASH, at least\n"
	"    100000 iterations) made elsewhere are accepted in the file too.\n"
	"    Append the line to the users file and send the relay SIGHUP (or restart\n"
	"    it) to use it.\n"
	"\n"
	"EXIT STATUS\n"
	"    0 success, 1 the passwords differ or no password was given, 2 usage.\n"
	"\n"
	"EXAMPLES\n"
	"    strictrelay passwd app1 >> /etc/strictrelay/users\n";

/* One line without its newline; false at EOF before any character. */
static bool read_line(FILE *f, char *buf, size_t len)
{
	if (fgets(buf, (int)len, f) == NULL)
		return false;
	size_t n = strlen(buf);
	if (n > 0 && buf[n - 1] == '\n')
		buf[--n] = '\0';
	if (n > 0 && buf[n - 1] == '\r')
		buf[--n] = '\0';
	return true;
}

static bool prompt(FILE *tty, const char *text, char *buf, size_t len)
{
	struct termios old, quiet;
	int fd = fileno(tty);
	fputs(text, stderr);
	fflush(stderr);
	bool restore = tcgetattr(fd, &old) == 0;
	if (restore) {
		quiet = old;
		quiet.c_lflag &= ~(tcflag_t)ECHO;
		tcsetattr(fd, TCSAFLUSH, &quiet);
	}
	bool ok = read_line(tty, buf, len);
	if (restore)
		tcsetattr(fd, TCSAFLUSH, &old);
	fputc('\n', stderr);
	return ok;
}

int passwdcli_main(int argc, char **argv)
{
	if (argc < 2)
		return cli_usage_error("passwd", "missing USER");
	if (argc > 2)
		return cli_usage_error("passwd", "unexpected argument \"%s\"", argv[2]);
	const char *user = argv[1];
	/* blanks and '#' would not survive the users file's trimming and comments */
	if (!sasl_valid_user(user, strlen(user)) || strpbrk(user, " #") != NULL)
		return cli_usage_error("passwd", "\"%s\" is not a usable user name (1 to %d octets; no blanks, ':', '#' or control characters)",
				       user, SASL_MAX_FIELD);
	char pw[SASL_MAX_FIELD + 2], again[SASL_MAX_FIELD + 2];
	int rc = EXIT_RUNTIME;
	if (isatty(STDIN_FILENO)) {
		if (!prompt(stdin, "Password: ", pw, sizeof(pw)) ||
		    !prompt(stdin, "Again: ", again, sizeof(again))) {
			fprintf(stderr, "strictrelay: passwd: no password given\n");
			goto out;
		}
		if (strcmp(pw, again) != 0) {
			fprintf(stderr, "strictrelay: passwd: the passwords differ\n");
			goto out;
		}
	} else if (!read_line(stdin, pw, sizeof(pw))) {
		fprintf(stderr, "strictrelay: passwd: no password on standard input\n");
		goto out;
	}
	if (pw[0] == '\0' || strlen(pw) > SASL_MAX_FIELD) {
		fprintf(stderr, "strictrelay: passwd: the password must have 1 to %d octets\n",
			SASL_MAX_FIELD);
		goto out;
	}
	char hash[USERDB_HASH_MAX], err[256];
	if (userdb_hash(pw, hash, sizeof(hash), err, sizeof(err)) < 0) {
		fprintf(stderr, "strictrelay: passwd: %s\n", err);
		goto out;
	}
	printf("%s:%s\n", user, hash);
	rc = EXIT_OK;
out:
	OPENSSL_cleanse(pw, sizeof(pw));
	OPENSSL_cleanse(again, sizeof(again));
	return rc;
}
