/* txtrec.c - see txtrec.h */
#include "txtrec.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define NAME_MAX_LEN 32

bool txtrec_is_alnum(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

bool txtrec_is_wsp(unsigned char c)
{
	return c == ' ' || c == '\t';
}

static bool is_name_char(unsigned char c)
{
	return txtrec_is_alnum(c) || c == '_' || c == '-' || c == '.';
}

/* %x21-3A / %x3C / %x3E-7E */
static bool is_value_char(unsigned char c)
{
	return c >= 0x21 && c <= 0x7e && c != ';' && c != '=';
}

const char *txtrec_quote(char *dst, size_t dstlen, const char *s, size_t n)
{
	char tmp[101];
	size_t k = n < sizeof(tmp) - 1 ? n : sizeof(tmp) - 1;
	memcpy(tmp, s, k);
	tmp[k] = '\0';
	return str_quote(dst, dstlen, tmp);
}

const char *txtrec_show_char(char *dst, size_t dstlen, unsigned char c)
{
	if (c > 0x20 && c < 0x7f)
		snprintf(dst, dstlen, "'%c'", c);
	else
		snprintf(dst, dstlen, "byte 0x%02x", c);
	return dst;
}

bool txtrec_candidate(const char *record, const char *version)
{
	size_t vl = strlen(version);
	if (record == NULL || strncmp(record, version, vl) != 0)
		return false;
	const char *p = record + vl;
	while (txtrec_is_wsp((unsigned char)*p))
		p++;
	return *p == ';' || *p == '\0';
}

size_t txtrec_count(const struct strlist *records, const char *version, size_t *first)
{
	size_t found = 0;
	*first = 0;
	for (size_t i = 0; records != NULL && i < records->n; i++) {
		if (txtrec_candidate(records->v[i], version) && found++ == 0)
			*first = i;
	}
	return found;
}

int txtrec_start(struct txtrec *it, const char *record, const char *version, char *why,
		 size_t whylen)
{
	size_t vl = strlen(version);
	if (record == NULL || strncmp(record, version, vl) != 0) {
		errf(why, whylen, "does not start with %s", version);
		return -1;
	}
	it->p = record + vl;
	return 0;
}

int txtrec_next(struct txtrec *it, const char **name, size_t *nlen, char *why, size_t whylen)
{
	char q[64], c[16];
	const char *p = it->p;
	/* delim = *WSP ";" *WSP, or blanks up to the end */
	while (txtrec_is_wsp((unsigned char)*p))
		p++;
	if (*p == '\0')
		return 0;
	if (*p != ';') {
		errf(why, whylen, "%s where ';' or the end was expected",
			   txtrec_show_char(c, sizeof(c), (unsigned char)*p));
		return -1;
	}
	p++;
	while (txtrec_is_wsp((unsigned char)*p))
		p++;
	if (*p == '\0')
		return 0; /* trailing ";" */
	const char *n = p;
	if (*p == ';') {
		errf(why, whylen, "empty field");
		return -1;
	}
	if (!txtrec_is_alnum((unsigned char)*p)) {
		errf(why, whylen, "field name starts with %s",
			   txtrec_show_char(c, sizeof(c), (unsigned char)*p));
		return -1;
	}
	while (is_name_char((unsigned char)*p))
		p++;
	size_t len = (size_t)(p - n);
	if (*p != '=') {
		errf(why, whylen, "field %s has no '='", txtrec_quote(q, sizeof(q), n, len));
		return -1;
	}
	if (len > NAME_MAX_LEN) {
		errf(why, whylen, "field name %s longer than %d", txtrec_quote(q, sizeof(q), n, len),
			   NAME_MAX_LEN);
		return -1;
	}
	it->p = p + 1;
	*name = n;
	*nlen = len;
	return 1;
}

int txtrec_value(struct txtrec *it, const char **value, size_t *vlen, const char *what, char *why,
		 size_t whylen)
{
	char c[16];
	const char *p = it->p;
	*value = p;
	while (is_value_char((unsigned char)*p))
		p++;
	/* The value must end at a blank, ";" or the end of the record. */
	if (*p != '\0' && *p != ';' && !txtrec_is_wsp((unsigned char)*p)) {
		errf(why, whylen, "%s contains %s", what,
			   txtrec_show_char(c, sizeof(c), (unsigned char)*p));
		return -1;
	}
	*vlen = (size_t)(p - *value);
	if (*vlen == 0) {
		errf(why, whylen, "empty %s", what);
		return -1;
	}
	it->p = p;
	return 0;
}
