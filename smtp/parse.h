/*
 * parse.h - SMTP command line and address parsing (RFC 5321 section 4.1).
 * Pure: no I/O, no allocation.
 *
 * smtp_parse_command() takes one command line WITHOUT its line terminator,
 * as a NUL-terminated, writable buffer, and tokenises it in place: the
 * returned struct points into that buffer, which must outlive it.
 *
 * Accepted leniencies (what deployed clients send): the verb in any case;
 * blanks between "FROM:" and "<"; source routes ("<@a,@b:u@d>"), which are
 * parsed and dropped as RFC 5321 section 4.1.2 says. Not accepted: paths
 * without angle brackets, NUL or control characters, parameters without a
 * keyword.
 *
 * Limits (RFC 5321 4.5.3.1): local part 64 octets, domain 255, path 256
 * including "<>"; at most SMTP_MAX_PARAMS parameters.
 */
#ifndef STRICTRELAY_SMTP_PARSE_H
#define STRICTRELAY_SMTP_PARSE_H

#include <stdbool.h>
#include <stddef.h>

#define SMTP_MAX_PARAMS 16
#define SMTP_MAX_LOCALPART 64
#define SMTP_MAX_DOMAIN 255
#define SMTP_MAX_PATH 256

enum smtp_verb {
	SMTP_VERB_UNKNOWN = 0,
	SMTP_VERB_HELO,
	SMTP_VERB_EHLO,
	SMTP_VERB_MAIL,
	SMTP_VERB_RCPT,
	SMTP_VERB_DATA,
	SMTP_VERB_RSET,
	SMTP_VERB_NOOP,
	SMTP_VERB_QUIT,
	SMTP_VERB_HELP,
	SMTP_VERB_VRFY,
	SMTP_VERB_EXPN,
	SMTP_VERB_STARTTLS,
	SMTP_VERB_AUTH,
	SMTP_VERB_BDAT,
	SMTP_VERB_ETRN,
	SMTP_VERB_TURN,
};

enum smtp_parse_status {
	SMTP_PARSE_OK = 0,
	SMTP_PARSE_UNKNOWN_VERB,   /* 500 5.5.1 */
	SMTP_PARSE_SYNTAX,         /* 501 5.5.2 (detail says what) */
	SMTP_PARSE_BAD_PATH,       /* 501 5.1.7 / 5.1.3: address syntax */
	SMTP_PARSE_BAD_PARAM,      /* 501 5.5.4: parameter syntax or too many */
};

struct smtp_param {
	char *key;      /* as sent; compare case-insensitively */
	char *value;    /* NULL when the parameter has no "=value" */
};

/* A parsed RFC 5321 Path. */
struct smtp_path {
	char *addr;     /* "local@domain", "" for the null path "<>", or "postmaster" */
	char *domain;   /* points into addr after '@'; "" when there is none */
	bool has_utf8;  /* non-ASCII octets present (needs SMTPUTF8) */
};

struct smtp_cmd {
	enum smtp_verb verb;
	char *arg;                      /* text after the verb, trimmed; "" if none */
	struct smtp_path path;          /* MAIL and RCPT */
	struct smtp_param params[SMTP_MAX_PARAMS];
	size_t nparams;
	const char *detail;             /* on error: what was wrong (static text) */
};

const char *smtp_verb_name(enum smtp_verb v);

enum smtp_parse_status smtp_parse_command(char *line, struct smtp_cmd *cmd);

/*
 * Parses "<...>" at *s (after optional blanks), NUL-terminating the address
 * in place; advances *s past '>'. Used by smtp_parse_command and exposed for
 * tests. Returns SMTP_PARSE_OK or SMTP_PARSE_BAD_PATH with cmd-style detail.
 */
enum smtp_parse_status smtp_parse_path(char **s, struct smtp_path *path, const char **detail);

/* RFC 5321 Domain (LDH labels; U-labels when allow_utf8) or address literal. */
bool smtp_valid_domain(const char *d, bool allow_utf8);

/* RFC 3461 4: xtext = *( xchar / "+" 2HEXCHAR ), upper-case hex. */
bool smtp_valid_xtext(const char *v);

/* RFC 3461 4.1 NOTIFY: NEVER or a list of SUCCESS, FAILURE, DELAY (any
 * case); writes the normalised upper-case form. 0, or -1 if invalid. */
int smtp_parse_notify(const char *v, char *out, size_t outlen);

#endif
