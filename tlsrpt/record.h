/*
 * record.h - the SMTP TLS Reporting policy record: the TXT record at
 * `_smtp._tls.DOMAIN` (RFC 8460 section 3; checklist RPT-01..03), which
 * says where reports for DOMAIN go. Pure: no I/O, no clock, no globals;
 * memory only through xmalloc() and friends.
 *
 * API
 *   tlsrpt_txt_select()     all TXT records of _smtp._tls.DOMAIN -> endpoints
 *   tlsrpt_txt_candidate()  is a record a "v=TLSRPTv1" record
 *   tlsrpt_record_parse()   one record against the grammar
 *   tlsrpt_record_free()
 *   tlsrpt_rua_kind_name()  "mailto", "https"
 *
 * Grammar (RFC 8460 3, keys case-sensitive):
 *	record   = %s"v=TLSRPTv1" 1*(delim field) [delim] *WSP
 *	delim    = *WSP ";" *WSP
 *	field    = %s"rua=" uri *(*WSP "," *WSP uri) / name "=" value
 *	name     = (ALPHA / DIGIT) *31(ALPHA / DIGIT / "_" / "-" / ".")
 *	value    = 1*(%x21-3A / %x3C / %x3E-7E)
 *	uri      = scheme ":" 1*(RFC 3986 characters, or "%" 2HEXDIG)
 * Inside a uri the characters "!", "," and ";" must be %-encoded: a raw "!"
 * makes the record invalid; a raw "," or ";" cannot be told from the
 * separators, so it splits the uri (and what follows then usually fails as
 * a uri or a field).
 *
 * Decisions (the RFC is silent; checklist [I]):
 *   - A record counts when it starts with "v=TLSRPTv1" followed by *WSP and
 *     then ";" or the end: the same tolerance as MTA-STS decision D1.
 *     Blanks after the last field are tolerated too; an empty field (";;")
 *     is invalid.
 *   - rua is required, and a second rua field makes the record invalid.
 *   - Only mailto: and https: endpoints are kept (schemes compared without
 *     regard to case); a syntactically valid uri of another scheme is
 *     skipped (RPT-03). A record left with no endpoint at all is invalid,
 *     so TLSRPT_TXT_OK always comes with at least one.
 *   - mailto: the address is the uri's path, percent-decoded; the query
 *     ("?subject=...", also "?to=" and "?cc=") and any fragment are
 *     dropped, so a record can never add recipients through header fields.
 *     The decoded address must be one RFC 5321 Mailbox with a domain name
 *     (no address literal, no "postmaster" alone), ASCII only, without a
 *     source route; otherwise the record is invalid.
 *   - https: the uri must be "https://" with a non-empty authority; it is
 *     kept exactly as published (no decoding).
 *   - Caps: a uri longer than TLSRPT_URI_MAX makes the record invalid; at
 *     most TLSRPT_RUA_MAX endpoints are kept (later ones are still checked,
 *     then dropped), so one record cannot make us send reports to hundreds
 *     of places.
 * Records are NUL-terminated strings, one per DNS record, character-strings
 * joined (RPT-01); anything after a NUL is not seen.
 *
 * Failure reasons ("why") are short English phrases for logs, with input
 * bytes quoted by str_quote(). why may be NULL; "" on success.
 */
#ifndef STRICTRELAY_TLSRPT_RECORD_H
#define STRICTRELAY_TLSRPT_RECORD_H

#include <stdbool.h>
#include <stddef.h>

#include "mta/util.h"

#define TLSRPT_RUA_MAX 8      /* endpoints kept from one record */
#define TLSRPT_URI_MAX 2048   /* octets of one uri as published */

enum tlsrpt_txt_result {
	TLSRPT_TXT_OK = 0,    /* exactly one v=TLSRPTv1 record, valid, >= 1 endpoint */
	TLSRPT_TXT_NONE,      /* no v=TLSRPTv1 record: the domain wants no reports */
	TLSRPT_TXT_MULTIPLE,  /* more than one: the domain does not use TLSRPT (RPT-01) */
	TLSRPT_TXT_INVALID,   /* one, but it does not parse (why says how) */
};

enum tlsrpt_rua_kind {
	TLSRPT_RUA_MAILTO,
	TLSRPT_RUA_HTTPS,
};

struct tlsrpt_rua {
	enum tlsrpt_rua_kind kind;
	char *uri;    /* as published ("mailto:tls%2Breports@example.com?subject=x") */
	char *addr;   /* mailto: the decoded address ("tls+reports@example.com");
	               * https: NULL */
};

struct tlsrpt_record {
	struct tlsrpt_rua *rua;  /* in record order */
	size_t nrua;             /* 1..TLSRPT_RUA_MAX after success */
	size_t index;            /* which of the records it came from (select) */
};

/*
 * Picks the v=TLSRPTv1 record out of all TXT records of _smtp._tls.DOMAIN
 * (records may be NULL: none) and parses it. out is filled only for
 * TLSRPT_TXT_OK (otherwise empty); the caller frees it with
 * tlsrpt_record_free(). Why: "no v=TLSRPTv1 record", "2 v=TLSRPTv1
 * records" or the parse error.
 */
enum tlsrpt_txt_result tlsrpt_txt_select(const struct strlist *records, struct tlsrpt_record *out,
					 char *why, size_t whylen);

/* "v=TLSRPTv1" followed by *WSP and then ";" or the end of the record. */
bool tlsrpt_txt_candidate(const char *record);

/* One record. 0 with out filled (free with tlsrpt_record_free()), or -1 +
 * why with out empty. out is overwritten without being freed first. */
int tlsrpt_record_parse(const char *record, struct tlsrpt_record *out, char *why, size_t whylen);

/* Frees the endpoints and zeroes *r. */
void tlsrpt_record_free(struct tlsrpt_record *r);

/* "mailto" or "https". Static text. */
const char *tlsrpt_rua_kind_name(enum tlsrpt_rua_kind kind);

#endif
