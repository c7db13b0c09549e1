/* record.c - see record.h */
#include "record.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "mta/txtrec.h"
#include "smtp/parse.h"

#define TLSRPT_VERSION "v=TLSRPTv1"

static bool is_alpha(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static bool is_digit(unsigned char c)
{
	return c >= '0' && c <= '9';
}

/* RFC 3986 characters allowed raw in a rua uri: unreserved, gen-delims and
 * sub-delims except "!", "," and ";" (RFC 8460 3), and "%" for escapes. */
static bool is_uri_char(unsigned char c)
{
	return txtrec_is_alnum(c) || (c != '\0' && strchr("-._~:/?#[]@$&'()*+=%", c) != NULL);
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

const char *tlsrpt_rua_kind_name(enum tlsrpt_rua_kind kind)
{
	return kind == TLSRPT_RUA_HTTPS ? "https" : "mailto";
}

bool tlsrpt_txt_candidate(const char *record)
{
	return txtrec_candidate(record, TLSRPT_VERSION);
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
			errf(why, whylen, "mailto address %s contains %s",
				txtrec_quote(q, sizeof(q), s, end), c == ',' ? "','" :
				"a control, space or non-ASCII octet");
			goto fail;
		}
		path[o++] = (char)c;
	}
	path[o++] = '>';
	path[o] = '\0';
	if (o == 2 || path[1] == '@') {
		errf(why, whylen, "mailto uri without an address");
		goto fail;
	}
	char *p = path;
	struct smtp_path sp;
	const char *detail = NULL;
	if (smtp_parse_path(&p, &sp, &detail) != SMTP_PARSE_OK || *p != '\0' ||
	    sp.addr != path + 1 || *sp.domain == '\0' || sp.domain[0] == '[') {
		errf(why, whylen, "mailto address %s: %s", txtrec_quote(q, sizeof(q), s, end),
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
		while (sl < n && (txtrec_is_alnum((unsigned char)u[sl]) || u[sl] == '+' || u[sl] == '-' ||
				  u[sl] == '.'))
			sl++;
	}
	if (sl == 0 || sl == n || u[sl] != ':') {
		errf(why, whylen, "uri %s has no scheme", txtrec_quote(q, sizeof(q), u, n));
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
			errf(why, whylen, "https uri %s has no host",
				txtrec_quote(q, sizeof(q), u, n));
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
		while (*p != '\0' && *p != ';' && *p != ',' && !txtrec_is_wsp((unsigned char)*p)) {
			unsigned char ch = (unsigned char)*p;
			if (ch == '!') {
				errf(why, whylen, "raw '!' in a rua uri");
				return -1;
			}
			if (!is_uri_char(ch)) {
				errf(why, whylen, "rua uri contains %s",
					txtrec_show_char(c, sizeof(c), ch));
				return -1;
			}
			if (ch == '%' && (hexval((unsigned char)p[1]) < 0 ||
					  hexval((unsigned char)p[2]) < 0)) {
				errf(why, whylen, "bad %%-escape in a rua uri");
				return -1;
			}
			p++;
		}
		size_t n = (size_t)(p - u);
		if (n == 0) {
			errf(why, whylen, "empty uri in rua");
			return -1;
		}
		if (n > TLSRPT_URI_MAX) {
			errf(why, whylen, "rua uri longer than %d", TLSRPT_URI_MAX);
			return -1;
		}
		if (add_uri(out, u, n, why, whylen) < 0)
			return -1;
		const char *after = p;
		while (txtrec_is_wsp((unsigned char)*p))
			p++;
		if (*p != ',') {
			*pp = after;
			return 0;
		}
		p++;
		while (txtrec_is_wsp((unsigned char)*p))
			p++;
	}
}

int tlsrpt_record_parse(const char *record, struct tlsrpt_record *out, char *why, size_t whylen)
{
	memset(out, 0, sizeof(*out));
	errf(why, whylen, "%s", "");
	struct txtrec it;
	if (txtrec_start(&it, record, TLSRPT_VERSION, why, whylen) < 0)
		return -1;
	bool have_rua = false;
	const char *name;
	size_t nlen;
	int rc;
	while ((rc = txtrec_next(&it, &name, &nlen, why, whylen)) == 1) {
		if (nlen == 3 && memcmp(name, "rua", 3) == 0) {
			if (have_rua) {
				errf(why, whylen, "duplicate rua");
				goto fail;
			}
			have_rua = true;
			if (parse_rua(&it.p, out, why, whylen) < 0)
				goto fail;
			continue;
		}
		const char *value;
		size_t vlen;
		if (txtrec_value(&it, &value, &vlen, "field value", why, whylen) < 0)
			goto fail;
		/* an extension: ignored */
	}
	if (rc < 0)
		goto fail;
	if (!have_rua) {
		errf(why, whylen, "missing rua");
		goto fail;
	}
	if (out->nrua == 0) {
		errf(why, whylen, "no mailto: or https: uri in rua");
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
	size_t which;
	memset(out, 0, sizeof(*out));
	errf(why, whylen, "%s", "");
	size_t found = txtrec_count(records, TLSRPT_VERSION, &which);
	if (found == 0) {
		errf(why, whylen, "no %s record", TLSRPT_VERSION);
		return TLSRPT_TXT_NONE;
	}
	if (found > 1) {
		errf(why, whylen, "%zu %s records", found, TLSRPT_VERSION);
		return TLSRPT_TXT_MULTIPLE;
	}
	if (tlsrpt_record_parse(records->v[which], out, why, whylen) < 0)
		return TLSRPT_TXT_INVALID;
	out->index = which;
	return TLSRPT_TXT_OK;
}
