/* parse.c - see parse.h */
#include "parse.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>

#include "mta/util.h"

static const struct {
	const char *name;
	enum smtp_verb verb;
} verbs[] = {
	{ "HELO", SMTP_VERB_HELO },   { "EHLO", SMTP_VERB_EHLO },
	{ "MAIL", SMTP_VERB_MAIL },   { "RCPT", SMTP_VERB_RCPT },
	{ "DATA", SMTP_VERB_DATA },   { "RSET", SMTP_VERB_RSET },
	{ "NOOP", SMTP_VERB_NOOP },   { "QUIT", SMTP_VERB_QUIT },
	{ "HELP", SMTP_VERB_HELP },   { "VRFY", SMTP_VERB_VRFY },
	{ "EXPN", SMTP_VERB_EXPN },   { "STARTTLS", SMTP_VERB_STARTTLS },
	{ "AUTH", SMTP_VERB_AUTH },   { "BDAT", SMTP_VERB_BDAT },
	{ "ETRN", SMTP_VERB_ETRN },   { "TURN", SMTP_VERB_TURN },
};

const char *smtp_verb_name(enum smtp_verb v)
{
	for (size_t i = 0; i < SR_ARRAY_LEN(verbs); i++)
		if (verbs[i].verb == v)
			return verbs[i].name;
	return "UNKNOWN";
}

static bool is_alpha(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static bool is_digit(unsigned char c)
{
	return c >= '0' && c <= '9';
}

static bool is_blank(unsigned char c)
{
	return c == ' ' || c == '\t';
}

/* RFC 5322 atext, plus UTF-8 octets (RFC 6531) which the caller flags. */
static bool is_atext(unsigned char c)
{
	return is_alpha(c) || is_digit(c) || strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL || c >= 0x80;
}

static bool valid_label(const char *s, size_t n, bool allow_utf8)
{
	if (n == 0 || n > 63)
		return false;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		bool ok = is_alpha(c) || is_digit(c) || (c == '-' && i > 0 && i < n - 1) ||
			  (allow_utf8 && c >= 0x80);
		if (!ok)
			return false;
	}
	return true;
}

static bool valid_address_literal(const char *d)
{
	size_t n = strlen(d);
	if (n < 3 || d[0] != '[' || d[n - 1] != ']')
		return false;
	char tmp[SMTP_MAX_DOMAIN + 1];
	if (n - 2 >= sizeof(tmp))
		return false;
	memcpy(tmp, d + 1, n - 2);
	tmp[n - 2] = '\0';
	unsigned char a[16];
	if (str_iprefix(tmp, "IPv6:"))
		return inet_pton(AF_INET6, tmp + 5, a) == 1;
	return inet_pton(AF_INET, tmp, a) == 1;
}

bool smtp_valid_domain(const char *d, bool allow_utf8)
{
	size_t n = strlen(d);
	if (n == 0 || n > SMTP_MAX_DOMAIN)
		return false;
	if (d[0] == '[')
		return valid_address_literal(d);
	const char *label = d;
	for (;;) {
		const char *dot = strchr(label, '.');
		size_t len = dot ? (size_t)(dot - label) : strlen(label);
		if (!valid_label(label, len, allow_utf8))
			return false;
		if (dot == NULL)
			return true;
		label = dot + 1;
	}
}

/* Dot-string: Atom *("." Atom) */
static bool valid_dot_string(const char *s, size_t n)
{
	if (n == 0 || s[0] == '.' || s[n - 1] == '.')
		return false;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c == '.') {
			if (s[i + 1] == '.')
				return false;
		} else if (!is_atext(c)) {
			return false;
		}
	}
	return true;
}

/* Quoted-string including its quotes; quoted-pairSMTP = "\" %d32-126 */
static bool valid_quoted_string(const char *s, size_t n)
{
	if (n < 2 || s[0] != '"' || s[n - 1] != '"')
		return false;
	for (size_t i = 1; i < n - 1; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c == '\\') {
			if (i + 1 >= n - 1)
				return false;
			unsigned char e = (unsigned char)s[++i];
			if (e < 32 || e > 126)
				return false;
		} else if (c == '"' || (c < 32) || c == 127) {
			return false;
		}
	}
	return true;
}

enum smtp_parse_status smtp_parse_path(char **sp, struct smtp_path *path, const char **detail)
{
	char *s = *sp;
	while (is_blank((unsigned char)*s))
		s++;
	memset(path, 0, sizeof(*path));
	if (*s != '<') {
		*detail = "address must be enclosed in <>";
		return SMTP_PARSE_BAD_PATH;
	}
	char *start = s + 1;
	/* Find the closing '>' outside a quoted string. */
	char *p = start;
	bool quoted = false;
	for (; *p != '\0'; p++) {
		if (quoted && *p == '\\' && p[1] != '\0') {
			p++;
			continue;
		}
		if (*p == '"')
			quoted = !quoted;
		else if (!quoted && *p == '>')
			break;
	}
	if (*p != '>') {
		*detail = "missing '>' after the address";
		return SMTP_PARSE_BAD_PATH;
	}
	if ((size_t)(p - s + 1) > SMTP_MAX_PATH) {
		*detail = "address longer than 256 characters";
		return SMTP_PARSE_BAD_PATH;
	}
	*p = '\0';
	*sp = p + 1;

	/* Source route "@a,@b:" is obsolete: parse and drop it (RFC 5321 4.1.2). */
	if (*start == '@') {
		char *colon = strchr(start, ':');
		if (colon == NULL) {
			*detail = "bad source route";
			return SMTP_PARSE_BAD_PATH;
		}
		start = colon + 1;
	}
	path->addr = start;
	path->domain = start + strlen(start);
	if (*start == '\0')
		return SMTP_PARSE_OK; /* null path "<>" */

	for (char *q = start; *q != '\0'; q++) {
		unsigned char c = (unsigned char)*q;
		if (c < 32 || c == 127) {
			*detail = "control character in address";
			return SMTP_PARSE_BAD_PATH;
		}
		if (c >= 0x80)
			path->has_utf8 = true;
	}
	char *at = strrchr(start, '@');
	if (at == NULL) {
		/* RFC 5321 4.5.1: "postmaster" without a domain is a valid recipient. */
		if (str_ieq(start, "postmaster"))
			return SMTP_PARSE_OK;
		*detail = "address has no domain";
		return SMTP_PARSE_BAD_PATH;
	}
	size_t llen = (size_t)(at - start);
	if (llen > SMTP_MAX_LOCALPART) {
		*detail = "local part longer than 64 characters";
		return SMTP_PARSE_BAD_PATH;
	}
	if (!(valid_dot_string(start, llen) || valid_quoted_string(start, llen))) {
		*detail = "bad local part";
		return SMTP_PARSE_BAD_PATH;
	}
	path->domain = at + 1;
	if (!smtp_valid_domain(path->domain, path->has_utf8)) {
		*detail = "bad domain";
		return SMTP_PARSE_BAD_PATH;
	}
	return SMTP_PARSE_OK;
}

static bool is_param_key_char(unsigned char c)
{
	return is_alpha(c) || is_digit(c) || c == '-';
}

/* esmtp-param = esmtp-keyword ["=" esmtp-value]; value = 1*(%d33-60 / %d62-126) */
static enum smtp_parse_status parse_params(char *s, struct smtp_cmd *cmd)
{
	for (;;) {
		while (is_blank((unsigned char)*s))
			s++;
		if (*s == '\0')
			return SMTP_PARSE_OK;
		if (cmd->nparams == SMTP_MAX_PARAMS) {
			cmd->detail = "too many parameters";
			return SMTP_PARSE_BAD_PARAM;
		}
		char *key = s;
		if (!is_alpha((unsigned char)*s) && !is_digit((unsigned char)*s)) {
			cmd->detail = "bad parameter syntax";
			return SMTP_PARSE_BAD_PARAM;
		}
		while (is_param_key_char((unsigned char)*s))
			s++;
		char *value = NULL;
		if (*s == '=') {
			*s++ = '\0';
			value = s;
			while (*s != '\0' && !is_blank((unsigned char)*s)) {
				unsigned char c = (unsigned char)*s;
				if (c < 33 || c > 126 || c == '=') {
					cmd->detail = "bad parameter value";
					return SMTP_PARSE_BAD_PARAM;
				}
				s++;
			}
			if (s == value) {
				cmd->detail = "empty parameter value";
				return SMTP_PARSE_BAD_PARAM;
			}
		} else if (*s != '\0' && !is_blank((unsigned char)*s)) {
			cmd->detail = "bad parameter syntax";
			return SMTP_PARSE_BAD_PARAM;
		}
		if (*s != '\0')
			*s++ = '\0';
		cmd->params[cmd->nparams].key = key;
		cmd->params[cmd->nparams].value = value;
		cmd->nparams++;
	}
}

static enum smtp_parse_status parse_mail_rcpt(struct smtp_cmd *cmd, const char *prefix)
{
	char *s = cmd->arg;
	size_t plen = strlen(prefix);
	if (!str_iprefix(s, prefix)) {
		cmd->detail = cmd->verb == SMTP_VERB_MAIL ? "use MAIL FROM:<address>"
							  : "use RCPT TO:<address>";
		return SMTP_PARSE_SYNTAX;
	}
	s += plen;
	enum smtp_parse_status st = smtp_parse_path(&s, &cmd->path, &cmd->detail);
	if (st != SMTP_PARSE_OK)
		return st;
	if (*s != '\0' && !is_blank((unsigned char)*s)) {
		cmd->detail = "junk after the address";
		return SMTP_PARSE_SYNTAX;
	}
	return parse_params(s, cmd);
}

enum smtp_parse_status smtp_parse_command(char *line, struct smtp_cmd *cmd)
{
	memset(cmd, 0, sizeof(*cmd));
	for (char *q = line; *q != '\0'; q++) {
		unsigned char c = (unsigned char)*q;
		if ((c < 32 && c != '\t') || c == 127) {
			cmd->detail = "control character in command";
			return SMTP_PARSE_SYNTAX;
		}
	}
	char *s = line;
	while (is_blank((unsigned char)*s))
		s++;
	char *verb = s;
	while (*s != '\0' && !is_blank((unsigned char)*s))
		s++;
	size_t vlen = (size_t)(s - verb);
	char *arg = s;
	while (is_blank((unsigned char)*arg))
		arg++;
	/* Trim trailing blanks of the argument. */
	size_t alen = strlen(arg);
	while (alen > 0 && is_blank((unsigned char)arg[alen - 1]))
		arg[--alen] = '\0';
	if (*s != '\0')
		*s = '\0';
	cmd->arg = arg;
	cmd->verb = SMTP_VERB_UNKNOWN;
	for (size_t i = 0; i < SR_ARRAY_LEN(verbs); i++) {
		if (strlen(verbs[i].name) == vlen && str_iprefix(verb, verbs[i].name)) {
			cmd->verb = verbs[i].verb;
			break;
		}
	}
	switch (cmd->verb) {
	case SMTP_VERB_UNKNOWN:
		cmd->detail = "command unrecognized";
		return SMTP_PARSE_UNKNOWN_VERB;
	case SMTP_VERB_MAIL:
		return parse_mail_rcpt(cmd, "FROM:");
	case SMTP_VERB_RCPT:
		return parse_mail_rcpt(cmd, "TO:");
	case SMTP_VERB_HELO:
	case SMTP_VERB_EHLO:
		if (*arg == '\0') {
			cmd->detail = "hostname required";
			return SMTP_PARSE_SYNTAX;
		}
		return SMTP_PARSE_OK;
	case SMTP_VERB_DATA:
	case SMTP_VERB_RSET:
	case SMTP_VERB_QUIT:
	case SMTP_VERB_STARTTLS:
		if (*arg != '\0') {
			cmd->detail = "no parameters allowed";
			return SMTP_PARSE_SYNTAX;
		}
		return SMTP_PARSE_OK;
	default:
		return SMTP_PARSE_OK;
	}
}

/* RFC 3461 4: xtext = *( xchar / "+" 2HEXCHAR ), xchar = 33..126 except
 * "+" and "="; the hex digits in upper case. */
bool smtp_valid_xtext(const char *v)
{
	for (const char *p = v; *p != '\0'; p++) {
		unsigned char c = (unsigned char)*p;
		if (c == '+') {
			for (int k = 1; k <= 2; k++)
				if (!((p[k] >= '0' && p[k] <= '9') || (p[k] >= 'A' && p[k] <= 'F')))
					return false;
			p += 2;
		} else if (c < 33 || c > 126 || c == '=') {
			return false;
		}
	}
	return true;
}

/* NOTIFY=NEVER or a list of SUCCESS, FAILURE, DELAY; normalised upper case. */
int smtp_parse_notify(const char *v, char *out, size_t outlen)
{
	if (str_ieq(v, "NEVER")) {
		snprintf(out, outlen, "NEVER");
		return 0;
	}
	bool success = false, failure = false, delay = false;
	struct strlist items = { 0 };
	strlist_split(&items, v, false);
	int rc = items.n > 0 ? 0 : -1;
	for (size_t i = 0; i < items.n; i++) {
		if (str_ieq(items.v[i], "SUCCESS"))
			success = true;
		else if (str_ieq(items.v[i], "FAILURE"))
			failure = true;
		else if (str_ieq(items.v[i], "DELAY"))
			delay = true;
		else
			rc = -1; /* includes NEVER combined with others */
	}
	strlist_free(&items);
	if (rc < 0)
		return -1;
	snprintf(out, outlen, "%s%s%s%s%s", success ? "SUCCESS" : "",
		 success && (failure || delay) ? "," : "", failure ? "FAILURE" : "",
		 failure && delay ? "," : "", delay ? "DELAY" : "");
	return 0;
}
