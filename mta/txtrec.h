/*
 * txtrec.h - the DNS TXT record grammar MTA-STS (RFC 8461 3.1) and TLSRPT
 * (RFC 8460 3) share, pure:
 *
 *	record = version *( *WSP ";" *WSP field ) [ *WSP ";" ] *WSP
 *	field  = name "=" value
 *	name   = (ALPHA / DIGIT) *31(ALPHA / DIGIT / "_" / "-" / ".")
 *	value  = 1*(%x21-3A / %x3C / %x3E-7E)       (the generic one; a field
 *	                                             may have its own syntax)
 *
 * txtrec_start() checks the version, txtrec_next() returns each field's
 * name and leaves the cursor at its value, which the caller scans, either
 * with txtrec_value() (the generic syntax) or by itself, leaving it->p
 * after the value. Error reasons are short English phrases written to why.
 */
#ifndef STRICTRELAY_TXTREC_H
#define STRICTRELAY_TXTREC_H

#include <stdbool.h>
#include <stddef.h>

#include "mta/util.h"

struct txtrec {
	const char *p; /* the cursor */
};

/* "VERSION" followed by *WSP and then ";" or the end (decision D1). */
bool txtrec_candidate(const char *record, const char *version);

/* How many of records are candidates for version; *first = the first one. */
size_t txtrec_count(const struct strlist *records, const char *version, size_t *first);

/* 0, or -1 with why "does not start with VERSION". */
int txtrec_start(struct txtrec *it, const char *record, const char *version, char *why,
		 size_t whylen);

/* 1 = a field (its name; it->p at the value), 0 = the end, -1 = syntax error. */
int txtrec_next(struct txtrec *it, const char **name, size_t *nlen, char *why, size_t whylen);

/* Scans a generic value; what names it in reasons ("field value", "id"). */
int txtrec_value(struct txtrec *it, const char **value, size_t *vlen, const char *what, char *why,
		 size_t whylen);

bool txtrec_is_wsp(unsigned char c);
bool txtrec_is_alnum(unsigned char c);
/* "'-'" for a printable octet, "byte 0x01" otherwise */
const char *txtrec_show_char(char *dst, size_t dstlen, unsigned char c);
/* a log-safe rendering of n input octets (cut when long) */
const char *txtrec_quote(char *dst, size_t dstlen, const char *s, size_t n);

#endif
