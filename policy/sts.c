/* sts.c - see sts.h */
#include "sts.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static void set_why(char *why, size_t whylen, const char *fmt, ...) SR_PRINTF(3, 4);
static void set_why(char *why, size_t whylen, const char *fmt, ...)
{
	if (why == NULL || whylen == 0)
		return;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(why, whylen, fmt, ap);
	va_end(ap);
}

static bool is_alnum(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

static bool is_wsp(unsigned char c)
{
	return c == ' ' || c == '\t';
}

/* name = (ALPHA / DIGIT) *31(ALPHA / DIGIT / "_" / "-" / ".") */
static bool is_name_char(unsigned char c)
{
	return is_alnum(c) || c == '_' || c == '-' || c == '.';
}

/* TXT extension value octet: %x21-3A / %x3C / %x3E-7E */
static bool is_txt_value_char(unsigned char c)
{
	return c >= 0x21 && c <= 0x7e && c != ';' && c != '=';
}

/* A log-safe rendering of n input bytes (cut, ending in "...", when long). */
static const char *quote_slice(char *dst, size_t dstlen, const char *s, size_t n)
{
	char tmp[101];
	size_t k = n < sizeof(tmp) - 1 ? n : sizeof(tmp) - 1;
	memcpy(tmp, s, k);
	tmp[k] = '\0';
	return str_quote(dst, dstlen, tmp);
}

/* "'-'" for a printable octet, "byte 0x01" otherwise. */
static const char *show_char(char *dst, size_t dstlen, unsigned char c)
{
	if (c > 0x20 && c < 0x7f)
		snprintf(dst, dstlen, "'%c'", c);
	else
		snprintf(dst, dstlen, "byte 0x%02x", c);
	return dst;
}

const char *sts_mode_name(enum sts_mode mode)
{
	switch (mode) {
	case STS_MODE_ENFORCE:
		return "enforce";
	case STS_MODE_TESTING:
		return "testing";
	case STS_MODE_NONE:
		break;
	}
	return "none";
}

/* --- TXT record --------------------------------------------------------- */

#define STS_TXT_VERSION "v=STSv1"

bool sts_txt_candidate(const char *record)
{
	size_t vl = strlen(STS_TXT_VERSION);
	if (record == NULL || strncmp(record, STS_TXT_VERSION, vl) != 0)
		return false;
	const char *p = record + vl;
	while (is_wsp((unsigned char)*p))
		p++;
	return *p == ';' || *p == '\0';
}

/*
 * The id's value: the caller scanned it with the extension value syntax, so
 * the reason can name the first character the id does not allow.
 */
static int check_id(const char *v, size_t n, char *why, size_t whylen)
{
	char c[16];
	for (size_t i = 0; i < n; i++) {
		if (!is_alnum((unsigned char)v[i])) {
			set_why(why, whylen, "id contains %s",
				show_char(c, sizeof(c), (unsigned char)v[i]));
			return -1;
		}
	}
	if (n > STS_ID_MAX) {
		set_why(why, whylen, "id longer than %d", STS_ID_MAX);
		return -1;
	}
	return 0;
}

int sts_txt_parse(const char *record, struct sts_txt *out, char *why, size_t whylen)
{
	char q[64], c[16];
	memset(out, 0, sizeof(*out));
	set_why(why, whylen, "%s", "");
	size_t vl = strlen(STS_TXT_VERSION);
	if (record == NULL || strncmp(record, STS_TXT_VERSION, vl) != 0) {
		set_why(why, whylen, "does not start with %s", STS_TXT_VERSION);
		return -1;
	}
	const char *p = record + vl;
	bool have_id = false;
	for (;;) {
		/* delim = *WSP ";" *WSP, or blanks up to the end */
		while (is_wsp((unsigned char)*p))
			p++;
		if (*p == '\0')
			break;
		if (*p != ';') {
			set_why(why, whylen, "%s where ';' or the end was expected",
				show_char(c, sizeof(c), (unsigned char)*p));
			goto fail;
		}
		p++;
		while (is_wsp((unsigned char)*p))
			p++;
		if (*p == '\0')
			break; /* trailing ";" */

		/* field: name "=" value */
		const char *name = p;
		if (*p == ';') {
			set_why(why, whylen, "empty field");
			goto fail;
		}
		if (!is_alnum((unsigned char)*p)) {
			set_why(why, whylen, "field name starts with %s",
				show_char(c, sizeof(c), (unsigned char)*p));
			goto fail;
		}
		while (is_name_char((unsigned char)*p))
			p++;
		size_t nlen = (size_t)(p - name);
		if (*p != '=') {
			set_why(why, whylen, "field %s has no '='", quote_slice(q, sizeof(q), name, nlen));
			goto fail;
		}
		if (nlen > 32) {
			set_why(why, whylen, "field name %s longer than 32",
				quote_slice(q, sizeof(q), name, nlen));
			goto fail;
		}
		p++;
		const char *value = p;
		while (is_txt_value_char((unsigned char)*p))
			p++;
		size_t vlen = (size_t)(p - value);
		bool is_id = nlen == 2 && memcmp(name, "id", 2) == 0;
		/* The value must end at a blank, ";" or the end of the record. */
		if (*p != '\0' && *p != ';' && !is_wsp((unsigned char)*p)) {
			set_why(why, whylen, "%s contains %s", is_id ? "id" : "field value",
				show_char(c, sizeof(c), (unsigned char)*p));
			goto fail;
		}
		if (vlen == 0) {
			set_why(why, whylen, "empty %s", is_id ? "id" : "field value");
			goto fail;
		}
		if (!is_id)
			continue; /* extensions are ignored */
		if (have_id) {
			set_why(why, whylen, "duplicate id");
			goto fail;
		}
		if (check_id(value, vlen, why, whylen) < 0)
			goto fail;
		memcpy(out->id, value, vlen);
		out->id[vlen] = '\0';
		have_id = true;
	}
	if (!have_id) {
		set_why(why, whylen, "missing id");
		goto fail;
	}
	return 0;
fail:
	memset(out, 0, sizeof(*out));
	return -1;
}

enum sts_txt_result sts_txt_select(const struct strlist *records, struct sts_txt *out, char *why,
				   size_t whylen)
{
	size_t found = 0, which = 0;
	memset(out, 0, sizeof(*out));
	set_why(why, whylen, "%s", "");
	for (size_t i = 0; records != NULL && i < records->n; i++) {
		if (sts_txt_candidate(records->v[i])) {
			if (found++ == 0)
				which = i;
		}
	}
	if (found == 0) {
		set_why(why, whylen, "no %s record", STS_TXT_VERSION);
		return STS_TXT_NONE;
	}
	if (found > 1) {
		set_why(why, whylen, "%zu %s records", found, STS_TXT_VERSION);
		return STS_TXT_MULTIPLE;
	}
	if (sts_txt_parse(records->v[which], out, why, whylen) < 0)
		return STS_TXT_INVALID;
	out->index = which;
	return STS_TXT_OK;
}

/* --- policy file -------------------------------------------------------- */

/* Length of the valid UTF-8 sequence of 2-4 octets at s (s[0] >= 0x80), or
 * 0: no overlong forms, no surrogates, nothing above U+10FFFF. */
static size_t utf8_seq(const unsigned char *s, size_t n)
{
	unsigned c = s[0];
	size_t len;
	uint32_t cp, min;
	if (c >= 0xc2 && c <= 0xdf) {
		len = 2;
		cp = c & 0x1f;
		min = 0x80;
	} else if (c >= 0xe0 && c <= 0xef) {
		len = 3;
		cp = c & 0x0f;
		min = 0x800;
	} else if (c >= 0xf0 && c <= 0xf4) {
		len = 4;
		cp = c & 0x07;
		min = 0x10000;
	} else {
		return 0;
	}
	if (n < len)
		return 0;
	for (size_t i = 1; i < len; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = (cp << 6) | (s[i] & 0x3f);
	}
	if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	return len;
}

/* LDH label of 1-63 octets without a hyphen at either end. */
static bool valid_label(const char *s, size_t n)
{
	if (n == 0 || n > 63 || s[0] == '-' || s[n - 1] == '-')
		return false;
	for (size_t i = 0; i < n; i++)
		if (!is_alnum((unsigned char)s[i]) && s[i] != '-')
			return false;
	return true;
}

bool sts_mx_pattern_valid(const char *s, size_t n)
{
	if (n >= 2 && s[0] == '*' && s[1] == '.') {
		s += 2;
		n -= 2;
	}
	if (n == 0 || n > STS_DOMAIN_MAX)
		return false;
	size_t start = 0;
	for (size_t i = 0; i <= n; i++) {
		if (i == n || s[i] == '.') {
			if (!valid_label(s + start, i - start))
				return false;
			start = i + 1;
		}
	}
	return true;
}

struct policy_state {
	struct sts_policy *out;
	unsigned lineno;
	bool have_version, have_mode, have_max_age;
	char *why;
	size_t whylen;
};

/* The n bytes at s are exactly want (case-sensitive, STS-30). */
static bool span_is(const char *s, size_t n, const char *want)
{
	return n == strlen(want) && memcmp(s, want, n) == 0;
}

/* max_age = 1*10DIGIT, at most STS_MAX_AGE_MAX (D2). */
static int parse_max_age(struct policy_state *st, const char *v, size_t vn)
{
	char q[64];
	if (vn == 0 || vn > 10) {
		set_why(st->why, st->whylen, "line %u: max_age %s is not 1-10 digits", st->lineno,
			quote_slice(q, sizeof(q), v, vn));
		return -1;
	}
	int64_t n = 0;
	for (size_t i = 0; i < vn; i++) {
		if (v[i] < '0' || v[i] > '9') {
			set_why(st->why, st->whylen, "line %u: max_age %s is not a number",
				st->lineno, quote_slice(q, sizeof(q), v, vn));
			return -1;
		}
		n = n * 10 + (v[i] - '0'); /* 10 digits fit in 64 bits */
	}
	if (n > STS_MAX_AGE_MAX) {
		set_why(st->why, st->whylen, "line %u: max_age %lld is above %d", st->lineno,
			(long long)n, STS_MAX_AGE_MAX);
		return -1;
	}
	st->out->max_age = n;
	return 0;
}

/* One line without its terminator. */
static int policy_line(struct policy_state *st, const char *s, size_t n)
{
	char q[64];
	/* Octets: HTAB, printable ASCII, or valid UTF-8 (see sts.h). */
	for (size_t i = 0; i < n;) {
		unsigned char c = (unsigned char)s[i];
		if (c >= 0x80) {
			size_t k = utf8_seq((const unsigned char *)s + i, n - i);
			if (k == 0) {
				set_why(st->why, st->whylen, "line %u: invalid UTF-8", st->lineno);
				return -1;
			}
			i += k;
			continue;
		}
		if ((c < 0x20 && c != '\t') || c == 0x7f) {
			set_why(st->why, st->whylen, "line %u: control character 0x%02x", st->lineno,
				c);
			return -1;
		}
		i++;
	}
	while (n > 0 && is_wsp((unsigned char)*s)) {
		s++;
		n--;
	}
	while (n > 0 && is_wsp((unsigned char)s[n - 1]))
		n--;
	if (n == 0)
		return 0; /* blank line (STS-35) */

	const char *colon = memchr(s, ':', n);
	if (colon == NULL) {
		set_why(st->why, st->whylen, "line %u: no ':' in %s", st->lineno,
			quote_slice(q, sizeof(q), s, n));
		return -1;
	}
	const char *k = s;
	size_t kn = (size_t)(colon - s);
	bool key_ok = kn > 0 && kn <= 32 && is_alnum((unsigned char)k[0]);
	for (size_t i = 0; key_ok && i < kn; i++)
		key_ok = is_name_char((unsigned char)k[i]);
	if (!key_ok) {
		set_why(st->why, st->whylen, "line %u: bad key %s", st->lineno,
			quote_slice(q, sizeof(q), k, kn));
		return -1;
	}
	const char *v = colon + 1;
	size_t vn = n - kn - 1;
	while (vn > 0 && is_wsp((unsigned char)*v)) {
		v++;
		vn--;
	}
	strlist_add_owned(&st->out->lines, xasprintf("%.*s:%s%.*s", (int)kn, k, vn ? " " : "",
						     (int)vn, v));

	if (span_is(k, kn, "version")) {
		if (st->have_version)
			return 0; /* the first wins (STS-32) */
		st->have_version = true;
		if (!span_is(v, vn, "STSv1")) {
			set_why(st->why, st->whylen, "line %u: version %s is not STSv1", st->lineno,
				quote_slice(q, sizeof(q), v, vn));
			return -1;
		}
	} else if (span_is(k, kn, "mode")) {
		if (st->have_mode)
			return 0;
		st->have_mode = true;
		if (span_is(v, vn, "enforce")) {
			st->out->mode = STS_MODE_ENFORCE;
		} else if (span_is(v, vn, "testing")) {
			st->out->mode = STS_MODE_TESTING;
		} else if (span_is(v, vn, "none")) {
			st->out->mode = STS_MODE_NONE;
		} else {
			set_why(st->why, st->whylen, "line %u: unknown mode %s", st->lineno,
				quote_slice(q, sizeof(q), v, vn));
			return -1;
		}
	} else if (span_is(k, kn, "max_age")) {
		if (st->have_max_age)
			return 0;
		st->have_max_age = true;
		return parse_max_age(st, v, vn);
	} else if (span_is(k, kn, "mx")) {
		/* Every mx line counts, and a bad one spoils the policy (D3). */
		if (!sts_mx_pattern_valid(v, vn)) {
			set_why(st->why, st->whylen, "line %u: bad mx pattern %s", st->lineno,
				quote_slice(q, sizeof(q), v, vn));
			return -1;
		}
		char *pat = xstrndup(v, vn);
		str_lower(pat);
		strlist_add_owned(&st->out->mx, pat);
	}
	/* Anything else is an extension and ignored (STS-32). */
	return 0;
}

int sts_policy_parse(const char *text, size_t len, struct sts_policy *out, char *why,
		     size_t whylen)
{
	struct policy_state st = { .out = out, .why = why, .whylen = whylen };
	memset(out, 0, sizeof(*out));
	set_why(why, whylen, "%s", "");
	if (len > STS_POLICY_MAX) {
		set_why(why, whylen, "policy longer than %d bytes", STS_POLICY_MAX);
		return -1;
	}
	size_t pos = 0;
	while (pos < len) {
		st.lineno++;
		const char *line = text + pos;
		const char *lf = memchr(line, '\n', len - pos);
		size_t n = lf ? (size_t)(lf - line) : len - pos;
		pos += n + (lf ? 1 : 0);
		/* CR LF or LF; a CR without the LF stays in the line (and is refused) */
		if (lf && n > 0 && line[n - 1] == '\r')
			n--;
		if (policy_line(&st, line, n) < 0)
			goto fail;
	}
	if (!st.have_version) {
		set_why(why, whylen, "missing version");
		goto fail;
	}
	if (!st.have_mode) {
		set_why(why, whylen, "missing mode");
		goto fail;
	}
	if (!st.have_max_age) {
		set_why(why, whylen, "missing max_age");
		goto fail;
	}
	if (out->mode != STS_MODE_NONE && out->mx.n == 0) {
		set_why(why, whylen, "no mx with mode %s", sts_mode_name(out->mode));
		goto fail;
	}
	return 0;
fail:
	sts_policy_free(out);
	return -1;
}

void sts_policy_free(struct sts_policy *p)
{
	strlist_free(&p->mx);
	strlist_free(&p->lines);
	memset(p, 0, sizeof(*p));
}
