/* sts.c - see sts.h */
#include "sts.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "mta/txtrec.h"

/* a policy key octet: ALPHA / DIGIT / "_" / "-" / "." */
static bool is_name_char(unsigned char c)
{
	return txtrec_is_alnum(c) || c == '_' || c == '-' || c == '.';
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
	return txtrec_candidate(record, STS_TXT_VERSION);
}

/*
 * The id's value: the caller scanned it with the extension value syntax, so
 * the reason can name the first character the id does not allow.
 */
static int check_id(const char *v, size_t n, char *why, size_t whylen)
{
	char c[16];
	for (size_t i = 0; i < n; i++) {
		if (!txtrec_is_alnum((unsigned char)v[i])) {
			errf(why, whylen, "id contains %s",
				txtrec_show_char(c, sizeof(c), (unsigned char)v[i]));
			return -1;
		}
	}
	if (n > STS_ID_MAX) {
		errf(why, whylen, "id longer than %d", STS_ID_MAX);
		return -1;
	}
	return 0;
}

int sts_txt_parse(const char *record, struct sts_txt *out, char *why, size_t whylen)
{
	memset(out, 0, sizeof(*out));
	errf(why, whylen, "%s", "");
	struct txtrec it;
	if (txtrec_start(&it, record, STS_TXT_VERSION, why, whylen) < 0)
		return -1;
	bool have_id = false;
	const char *name;
	size_t nlen;
	int rc;
	while ((rc = txtrec_next(&it, &name, &nlen, why, whylen)) == 1) {
		bool is_id = nlen == 2 && memcmp(name, "id", 2) == 0;
		const char *value;
		size_t vlen;
		if (txtrec_value(&it, &value, &vlen, is_id ? "id" : "field value", why, whylen) < 0)
			goto fail;
		if (!is_id)
			continue; /* extensions are ignored */
		if (have_id) {
			errf(why, whylen, "duplicate id");
			goto fail;
		}
		if (check_id(value, vlen, why, whylen) < 0)
			goto fail;
		memcpy(out->id, value, vlen);
		out->id[vlen] = '\0';
		have_id = true;
	}
	if (rc < 0)
		goto fail;
	if (!have_id) {
		errf(why, whylen, "missing id");
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
	size_t which;
	memset(out, 0, sizeof(*out));
	errf(why, whylen, "%s", "");
	size_t found = txtrec_count(records, STS_TXT_VERSION, &which);
	if (found == 0) {
		errf(why, whylen, "no %s record", STS_TXT_VERSION);
		return STS_TXT_NONE;
	}
	if (found > 1) {
		errf(why, whylen, "%zu %s records", found, STS_TXT_VERSION);
		return STS_TXT_MULTIPLE;
	}
	if (sts_txt_parse(records->v[which], out, why, whylen) < 0)
		return STS_TXT_INVALID;
	out->index = which;
	return STS_TXT_OK;
}

/* --- policy file -------------------------------------------------------- */

/* LDH label of 1-63 octets without a hyphen at either end. */
static bool valid_label(const char *s, size_t n)
{
	if (n == 0 || n > 63 || s[0] == '-' || s[n - 1] == '-')
		return false;
	for (size_t i = 0; i < n; i++)
		if (!txtrec_is_alnum((unsigned char)s[i]) && s[i] != '-')
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
		errf(st->why, st->whylen, "line %u: max_age %s is not 1-10 digits", st->lineno,
			txtrec_quote(q, sizeof(q), v, vn));
		return -1;
	}
	int64_t n = 0;
	for (size_t i = 0; i < vn; i++) {
		if (v[i] < '0' || v[i] > '9') {
			errf(st->why, st->whylen, "line %u: max_age %s is not a number",
				st->lineno, txtrec_quote(q, sizeof(q), v, vn));
			return -1;
		}
		n = n * 10 + (v[i] - '0'); /* 10 digits fit in 64 bits */
	}
	if (n > STS_MAX_AGE_MAX) {
		errf(st->why, st->whylen, "line %u: max_age %lld is above %d", st->lineno,
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
			size_t k = utf8_seq_len((const unsigned char *)s + i, n - i);
			if (k == 0) {
				errf(st->why, st->whylen, "line %u: invalid UTF-8", st->lineno);
				return -1;
			}
			i += k;
			continue;
		}
		if ((c < 0x20 && c != '\t') || c == 0x7f) {
			errf(st->why, st->whylen, "line %u: control character 0x%02x", st->lineno,
				c);
			return -1;
		}
		i++;
	}
	while (n > 0 && txtrec_is_wsp((unsigned char)*s)) {
		s++;
		n--;
	}
	while (n > 0 && txtrec_is_wsp((unsigned char)s[n - 1]))
		n--;
	if (n == 0)
		return 0; /* blank line (STS-35) */

	const char *colon = memchr(s, ':', n);
	if (colon == NULL) {
		errf(st->why, st->whylen, "line %u: no ':' in %s", st->lineno,
			txtrec_quote(q, sizeof(q), s, n));
		return -1;
	}
	const char *k = s;
	size_t kn = (size_t)(colon - s);
	bool key_ok = kn > 0 && kn <= 32 && txtrec_is_alnum((unsigned char)k[0]);
	for (size_t i = 0; key_ok && i < kn; i++)
		key_ok = is_name_char((unsigned char)k[i]);
	if (!key_ok) {
		errf(st->why, st->whylen, "line %u: bad key %s", st->lineno,
			txtrec_quote(q, sizeof(q), k, kn));
		return -1;
	}
	const char *v = colon + 1;
	size_t vn = n - kn - 1;
	while (vn > 0 && txtrec_is_wsp((unsigned char)*v)) {
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
			errf(st->why, st->whylen, "line %u: version %s is not STSv1", st->lineno,
				txtrec_quote(q, sizeof(q), v, vn));
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
			errf(st->why, st->whylen, "line %u: unknown mode %s", st->lineno,
				txtrec_quote(q, sizeof(q), v, vn));
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
			errf(st->why, st->whylen, "line %u: bad mx pattern %s", st->lineno,
				txtrec_quote(q, sizeof(q), v, vn));
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
	errf(why, whylen, "%s", "");
	if (len > STS_POLICY_MAX) {
		errf(why, whylen, "policy longer than %d bytes", STS_POLICY_MAX);
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
		errf(why, whylen, "missing version");
		goto fail;
	}
	if (!st.have_mode) {
		errf(why, whylen, "missing mode");
		goto fail;
	}
	if (!st.have_max_age) {
		errf(why, whylen, "missing max_age");
		goto fail;
	}
	if (out->mode != STS_MODE_NONE && out->mx.n == 0) {
		errf(why, whylen, "no mx with mode %s", sts_mode_name(out->mode));
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
