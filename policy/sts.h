/*
 * sts.h - the two MTA-STS (RFC 8461) text formats: the `_mta-sts` TXT
 * record (section 3.1) and the policy file (section 3.2). Pure: no I/O, no
 * clock, no globals; memory only through xmalloc() and friends. Discovery,
 * the HTTPS fetch and the cache live in policy/mtasts.c; matching an MX
 * name against a pattern is sts_mx_match() in policy/decide.h.
 *
 * API
 *   sts_txt_select()       all TXT records of _mta-sts.DOMAIN -> the id
 *   sts_txt_candidate()    is a record a "v=STSv1" record (STS-03, D1)
 *   sts_txt_parse()        one record against the full grammar (STS-04)
 *   sts_policy_parse()     a policy file -> struct sts_policy (STS-30..35)
 *   sts_policy_free()
 *   sts_mx_pattern_valid() the syntax of an mx value (STS-34)
 *   sts_mode_name()        "enforce", "testing", "none"
 *
 * Failure reasons ("why") are short English phrases for logs and TLS
 * reports ("id contains '-'", "line 4: bad mx pattern \"a..b\""). Bytes
 * taken from the input are quoted with str_quote(), so a peer cannot forge
 * log lines through them. why may be NULL; it is always NUL-terminated
 * when whylen > 0, and "" on success.
 *
 * --- TXT record (RFC 8461 3.1) -------------------------------------------
 *
 *	record    = %s"v=STSv1" 1*(delim field) [delim] *WSP
 *	delim     = *WSP ";" *WSP
 *	field     = %s"id=" 1*32(ALPHA / DIGIT) / name "=" value
 *	name      = (ALPHA / DIGIT) *31(ALPHA / DIGIT / "_" / "-" / ".")
 *	value     = 1*(%x21-3A / %x3C / %x3E-7E)
 *
 * Keys are case-sensitive: "ID=x" is an extension, not the id. A field
 * named "id" is always the id and must have the id's syntax (so
 * "id=2024-01-01" is invalid, not an extension). Extensions are ignored.
 * Decisions: a record counts as a v=STSv1 record when it starts with
 * "v=STSv1" followed by *WSP and then ";" or the end (D1, STS-05: errata
 * 6285); a second id field makes the record invalid (which one would be
 * meant?); blanks after the last field are tolerated, like those before
 * ";" (D1); an empty field (";;") is invalid, as the grammar says.
 * Records are NUL-terminated strings, one per DNS record, with their
 * character-strings already joined (STS-02); anything after a NUL is not
 * seen.
 *
 * --- Policy file (RFC 8461 3.2) ------------------------------------------
 *
 * Lines end in LF or CR LF, mixed freely; the last one needs no terminator
 * (STS-30). Each non-blank line, trimmed of SP and HTAB at both ends
 * (STS-35: tolerated, though the grammar has neither), is
 *	key ":" *WSP value
 * with key = name above. Keys and the values STSv1, enforce, testing and
 * none are case-sensitive: "Mode: enforce" is an unknown key.
 *	version: STSv1     required, first occurrence wins
 *	mode: enforce|testing|none   required, first occurrence wins
 *	max_age: 1*10DIGIT required, first occurrence wins; at most
 *			   STS_MAX_AGE_MAX (D2: more is invalid, as in
 *			   postfix-mta-sts-resolver and chasquid); 0 is valid
 *	mx: ["*."] Domain  every line counts; at least one unless mode is none
 * Unknown keys are ignored (STS-32), and so are later occurrences of
 * version, mode and max_age (their values are not checked).
 *
 * Invalid (sts_policy_parse() returns -1, reason naming the line):
 *	- input longer than STS_POLICY_MAX (64 KiB, RFC 8461 3.3);
 *	- a line without ":", or whose key is not a valid name (so an HTML
 *	  page or a misspelt "mode : enforce" is not half-read);
 *	- a control character (anything below 0x20 but HTAB, and 0x7f; a CR
 *	  not directly before LF counts) or invalid UTF-8 anywhere. Why so
 *	  strict: the lines go verbatim into RFC 8460 reports, which are
 *	  I-JSON (UTF-8);
 *	- a bad value for the first version, mode or max_age;
 *	- any bad mx value (D3: a typo must not silently shrink the MX set);
 *	- a required key missing.
 * A UTF-8 byte order mark is not skipped: it makes the first key unknown.
 *
 * An mx value is an optional "*." and then an RFC 5321 Domain: LDH labels
 * of 1-63 octets, no leading or trailing hyphen, at most 253 octets, no
 * trailing dot, ASCII only (IDNs as A-labels; a U-label is invalid). The
 * wildcard is allowed only as the whole first label.
 */
#ifndef STRICTRELAY_POLICY_STS_H
#define STRICTRELAY_POLICY_STS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mta/util.h"
#include "policy/decide.h"

#define STS_ID_MAX 32              /* octets of a TXT id */
#define STS_POLICY_MAX 65536       /* octets of a policy file */
#define STS_MAX_AGE_MAX 31557600   /* seconds (about a year) */
#define STS_DOMAIN_MAX 253         /* an mx domain, without "*." */

enum sts_txt_result {
	STS_TXT_OK = 0,     /* exactly one v=STSv1 record, and it is valid */
	STS_TXT_NONE,       /* no v=STSv1 record: the domain has no MTA-STS */
	STS_TXT_MULTIPLE,   /* more than one: no usable policy (STS-03) */
	STS_TXT_INVALID,    /* one, but it does not parse (why says how) */
};

struct sts_txt {
	char id[STS_ID_MAX + 1];   /* [A-Za-z0-9]{1,32} */
	size_t index;              /* which of the records it came from */
};

/*
 * Picks the v=STSv1 record out of all TXT records of _mta-sts.DOMAIN
 * (records may be NULL: no records) and parses it. out is filled only for
 * STS_TXT_OK (otherwise zeroed). Why: "no v=STSv1 record", "2 v=STSv1
 * records" or the parse error.
 */
enum sts_txt_result sts_txt_select(const struct strlist *records, struct sts_txt *out, char *why,
				   size_t whylen);

/* "v=STSv1" followed by *WSP and then ";" or the end of the record. */
bool sts_txt_candidate(const char *record);

/* One record against the grammar above. 0 with out filled, or -1 + why
 * (out zeroed). */
int sts_txt_parse(const char *record, struct sts_txt *out, char *why, size_t whylen);

struct sts_policy {
	enum sts_mode mode;
	int64_t max_age;           /* seconds, 0..STS_MAX_AGE_MAX */
	struct strlist mx;         /* patterns, lower case, in file order */
	/* The policy for RFC 8460 "policy-string": one "key: value" element
	 * per non-blank line, in file order, every line (unknown keys and
	 * repeats included), with the blanks around the value dropped and
	 * the text otherwise as published. */
	struct strlist lines;
};

/*
 * Parses a policy file of len bytes (not NUL-terminated; NUL bytes are
 * invalid). out is overwritten without being freed first. 0 on success:
 * out owns its lists, release them with sts_policy_free(). -1 on failure:
 * out holds nothing (empty lists; freeing it is harmless) and why says
 * what was wrong, naming the line ("line 3: ...") when one line was.
 */
int sts_policy_parse(const char *text, size_t len, struct sts_policy *out, char *why,
		     size_t whylen);

/* Frees the lists and zeroes *p (which may then be reused). */
void sts_policy_free(struct sts_policy *p);

/* ["*."] Domain as above, n bytes at s (no NUL needed). */
bool sts_mx_pattern_valid(const char *s, size_t n);

/* "enforce", "testing" or "none" (anything else: "none"). Static text. */
const char *sts_mode_name(enum sts_mode mode);

#endif
