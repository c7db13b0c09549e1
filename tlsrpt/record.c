/* record.c - see record.h */
#include "record.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "smtp/parse.h"

#define TLSRPT_VERSION "v=TLSRPTv1"

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

static bool is_alpha(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static bool is_digit(unsigned char c)
{
	return c >= '0' && c <= '9';
}

static bool is_alnum(unsigned char c)
{
	return is_alpha(c) || is_digit(c);
}

static bool is_wsp(unsigned char c)
{
	return c == ' ' || c == '\t';
}

static bool is_name_char(unsigned char c)
{
	return is_alnum(c) || c == '_' || c == '-' || c == '.';
}

/* extension value octet: %x21-3A / %x3C / %x3E-7E */
static bool is_value_char(unsigned char c)
{
	return c >= 0x21 && c <= 0x7e && c != ';' && c != '=';
}

/* RFC 3986 characters allowed raw in a rua uri: unreserved, gen-delims and
 * sub-delims except "!", "," and ";" (RFC 8460 3), and "%" for escapes. */
static bool is_uri_char(unsigned char c)
{
	return is_alnum(c) || (c != '\0' && strchr("-._~:/?#[]@$&'()*+=%", c) != NULL);
}

static int hexval(unsigned char c)
{
	if (is_digit(c))
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

static const char *quote_slice(char *dst, size_t dstlen, const char *s, size_t n)
{
	char tmp[101];
	size_t k = n < sizeof(tmp) - 1 ? n : sizeof(tmp) - 1;
	memcpy(tmp, s, k);
	tmp[k] = '\0';
	return str_quote(dst, dstlen, tmp);
}

static const char *show_char(char *dst, size_t dstlen, unsigned char c)
{
	if (c > 0x20 && c < 0x7f)
		snprintf(dst, dstlen, "'%c'", c);
	else
		snprintf(dst, dstlen, "byte 0x%02x", c);
	return dst;
}

const char *tlsrpt_rua_kind_name(enum tlsrpt_rua_kind kind)
{
	return kind == TLSRPT_RUA_HTTPS ? "https" : "mailto";
}

bool tlsrpt_txt_candidate(const char *record)
{
	size_t vl = strlen(TLSRPT_VERSION);
	if (record == NULL || strncmp(record, TLSRPT_VERSION, vl) != 0)
		return false;
	const char *p = record + vl;
	while (is_wsp((unsigned char)*p))
		p++;
	return *p == ';' || *p == '\0';
}

void tlsrpt_record_free(struct tlsrpt_record *r)
{
	for (size_t i = 0; i < r->nrua; i++) {
		free(r->rua[i].uri);
		free(r->rua[i].addr);
	}
	free(r->rua);
	memset(r, 0, sizeof(*r));
}

/*
 * The address of a mailto uri (after "mailto:"): the path up to "?" or "#",
 * percent-decoded, one Mailbox with a domain name. Returns it (xmalloc'd)
 * or NULL with why set.
 */
static char *mailto_addr(const char *s, size_t n, char *why, size_t whylen)
{
	char q[64];
	size_t end = 0;
	while (end < n && s[end] != '?' && s[end] != '#')
		end++;
	/* "<" addr ">" NUL: the form smtp_parse_path() checks */
	char *path = xmalloc(end + 3);
	size_t o = 0;
	path[o++] = '<';
	for (size_t i = 0; i < end; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c == '%') {
			/* the uri scan made sure two hex digits follow */
			c = (unsigned char)(hexval((unsigned char)s[i + 1]) * 16 +
					    hexval((unsigned char)s[i + 2]));
			i += 2;
		}
		if (c < 0x21 || c >= 0x7f || c == ',') {
			set_why(why, whylen, "mailto address %s contains %s",
				quote_slice(q, sizeof(q), s, end), c == ',' ? "','" :
				"a control, space or non-ASCII octet");
			goto fail;
		}
		path[o++] = (char)c;
	}
	path[o++] = '>';
	path[o] = '\0';
	if (o == 2 || path[1] == '@') {
		set_why(why, whylen, "mailto uri without an address");
		goto fail;
	}
	char *p = path;
	struct smtp_path sp;
	const char *detail = NULL;
	if (smtp_parse_path(&p, &sp, &detail) != SMTP_PARSE_OK || *p != '\0' ||
	    sp.addr != path + 1 || *sp.domain == '\0' || sp.domain[0] == '[') {
		set_why(why, whylen, "mailto address %s: %s", quote_slice(q, sizeof(q), s, end),
			detail ? detail : "not a mailbox with a domain name");
		goto fail;
	}
	char *addr = xstrdup(sp.addr);
	free(path);
	return addr;
fail:
	free(path);
	return NULL;
}

/* "https://" + a non-empty authority; s points after "https:". */
static bool https_ok(const char *s, size_t n)
{
	if (n < 3 || s[0] != '/' || s[1] != '/')
		return false;
	return s[2] != '/' && s[2] != '?' && s[2] != '#';
}

/*
 * One uri of n octets (already scanned: only uri characters, well-formed
 * escapes). Appends it to out when it is mailto: or https: and there is
 * room. 0, or -1 with why set.
 */
static int add_uri(struct tlsrpt_record *out, const char *u, size_t n, char *why, size_t whylen)
{
	char q[64];
	size_t sl = 0;
	if (n > 0 && is_alpha((unsigned char)u[0])) {
		sl = 1;
		while (sl < n && (is_alnum((unsigned char)u[sl]) || u[sl] == '+' || u[sl] == '-' ||
				  u[sl] == '.'))
			sl++;
	}
	if (sl == 0 || sl == n || u[sl] != ':') {
		set_why(why, whylen, "uri %s has no scheme", quote_slice(q, sizeof(q), u, n));
		return -1;
	}
	const char *rest = u + sl + 1;
	size_t rn = n - sl - 1;
	enum tlsrpt_rua_kind kind;
	char *addr = NULL;
	if (sl == 6 && strncasecmp(u, "mailto", 6) == 0) {
		kind = TLSRPT_RUA_MAILTO;
		addr = mailto_addr(rest, rn, why, whylen);
		if (addr == NULL)
			return -1;
	} else if (sl == 5 && strncasecmp(u, "https", 5) == 0) {
		kind = TLSRPT_RUA_HTTPS;
		if (!https_ok(rest, rn)) {
			set_why(why, whylen, "https uri %s has no host",
				quote_slice(q, sizeof(q), u, n));
			return -1;
		}
	} else {
		return 0; /* another scheme: ignored (RPT-03) */
	}
	if (out->nrua == TLSRPT_RUA_MAX) {
		free(addr);
		return 0;
	}
	if (out->rua == NULL)
		out->rua = xcalloc(TLSRPT_RUA_MAX, sizeof(*out->rua));
	struct tlsrpt_rua *r = &out->rua[out->nrua++];
	r->kind = kind;
	r->uri = xstrndup(u, n);
	r->addr = addr;
	return 0;
}

/* rua value at *pp: uri *(*WSP "," *WSP uri). Leaves *pp after the last uri. */
static int parse_rua(const char **pp, struct tlsrpt_record *out, char *why, size_t whylen)
{
	char c[16];
	const char *p = *pp;
	for (;;) {
		const char *u = p;
		while (*p != '\0' && *p != ';' && *p != ',' && !is_wsp((unsigned char)*p)) {
			unsigned char ch = (unsigned char)*p;
			if (ch == '!') {
				set_why(why, whylen, "raw '!' in a rua uri");
				return -1;
			}
			if (!is_uri_char(ch)) {
				set_why(why, whylen, "rua uri contains %s",
					show_char(c, sizeof(c), ch));
				return -1;
			}
			if (ch == '%' && (hexval((unsigned char)p[1]) < 0 ||
					  hexval((unsigned char)p[2]) < 0)) {
				set_why(why, whylen, "bad %%-escape in a rua uri");
				return -1;
			}
			p++;
		}
		size_t n = (size_t)(p - u);
		if (n == 0) {
			set_why(why, whylen, "empty uri in rua");
			return -1;
		}
		if (n > TLSRPT_URI_MAX) {
			set_why(why, whylen, "rua uri longer than %d", TLSRPT_URI_MAX);
			return -1;
		}
		if (add_uri(out, u, n, why, whylen) < 0)
			return -1;
		const char *after = p;
		while (is_wsp((unsigned char)*p))
			p++;
		if (*p != ',') {
			*pp = after;
			return 0;
		}
		p++;
		while (is_wsp((unsigned char)*p))
			p++;
	}
}

int tlsrpt_record_parse(const char *record, struct tlsrpt_record *out, char *why, size_t whylen)
{
	char q[64], c[16];
	memset(out, 0, sizeof(*out));
	set_why(why, whylen, "%s", "");
	size_t vl = strlen(TLSRPT_VERSION);
	if (record == NULL || strncmp(record, TLSRPT_VERSION, vl) != 0) {
		set_why(why, whylen, "does not start with %s", TLSRPT_VERSION);
		return -1;
	}
	const char *p = record + vl;
	bool have_rua = false;
	for (;;) {
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
		if (nlen == 3 && memcmp(name, "rua", 3) == 0) {
			if (have_rua) {
				set_why(why, whylen, "duplicate rua");
				goto fail;
			}
			have_rua = true;
			if (parse_rua(&p, out, why, whylen) < 0)
				goto fail;
			continue;
		}
		const char *value = p;
		while (is_value_char((unsigned char)*p))
			p++;
		if (*p != '\0' && *p != ';' && !is_wsp((unsigned char)*p)) {
			set_why(why, whylen, "field value contains %s",
				show_char(c, sizeof(c), (unsigned char)*p));
			goto fail;
		}
		if (p == value) {
			set_why(why, whylen, "empty field value");
			goto fail;
		}
		/* an extension: ignored */
	}
	if (!have_rua) {
		set_why(why, whylen, "missing rua");
		goto fail;
	}
	if (out->nrua == 0) {
		set_why(why, whylen, "no mailto: or https: uri in rua");
		goto fail;
	}
	return 0;
fail:
	tlsrpt_record_free(out);
	return -1;
}

enum tlsrpt_txt_result tlsrpt_txt_select(const struct strlist *records, struct tlsrpt_record *out,
					 char *why, size_t whylen)
{
	size_t found = 0, which = 0;
	memset(out, 0, sizeof(*out));
	set_why(why, whylen, "%s", "");
	for (size_t i = 0; records != NULL && i < records->n; i++) {
		if (tlsrpt_txt_candidate(records->v[i])) {
			if (found++ == 0)
				which = i;
		}
	}
	if (found == 0) {
		set_why(why, whylen, "no %s record", TLSRPT_VERSION);
		return TLSRPT_TXT_NONE;
	}
	if (found > 1) {
		set_why(why, whylen, "%zu %s records", found, TLSRPT_VERSION);
		return TLSRPT_TXT_MULTIPLE;
	}
	if (tlsrpt_record_parse(records->v[which], out, why, whylen) < 0)
		return TLSRPT_TXT_INVALID;
	out->index = which;
	return TLSRPT_TXT_OK;
}
