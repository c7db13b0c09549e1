/*
 * report.h - builds one SMTP TLS Report (RFC 8460 section 4; checklist
 * RPT-10..14, RPT-20/21, decisions D11/D12): the outbound sessions of ONE
 * policy domain during ONE UTC day in, the report JSON, its file name and
 * its gzip encoding out. Pure: no sockets, no SQLite, no clock, no
 * randomness, no globals; memory only through xmalloc() and friends (zlib
 * is given allocators that use them). Sending it (mail with DKIM, HTTPS)
 * lives elsewhere.
 *
 * API
 *   tlsrpt_report_build()     rows + parameters -> struct tlsrpt_report
 *   tlsrpt_report_json()      the report as I-JSON, compact or pretty
 *   tlsrpt_report_free()
 *   tlsrpt_contact_domain()   contact-info -> the submitter domain
 *   tlsrpt_report_id()        "2026-11-22.example.net.<hex>@sndr.example"
 *   tlsrpt_report_filename()  "sndr.example!example.net!B!E!uid.json.gz"
 *   tlsrpt_normalize_ip()     an address in RFC 5952 / dotted form
 *   tlsrpt_gzip(), tlsrpt_gunzip()
 *
 * --- Input: the caller's contract ----------------------------------------
 *
 * The rows are the tls_sessions rows (queue/store.c migrations 2 and 3,
 * written through queue/delivery.h struct tls_session_record) with
 *	policy_domain = the report's policy domain (ASCII case ignored)
 *	start <= time < end   (the report's date range)
 *	tls_required_no = 0
 * The caller selects them that way. Rows with tls_required_no = 1 are the
 * sessions that carried report mail or TLS-Required: No mail; RFC 8460
 * says the delivery of reports SHOULD NOT be counted (RPT-27) and we leave
 * TLS-Required: No sessions out as Postfix does (RPT-13, D11), so they
 * must not be passed: struct tlsrpt_session has no field for the flag. A
 * row of another domain, outside the range or of an unknown policy type
 * makes the build fail (a caller bug, not something to paper over); so
 * does an empty row set (a day without sessions has no report).
 *
 * Each row is one session and counts exactly once in its policy's summary:
 * a connection that reached the greeting, an MX skipped because it is not
 * in the policy (D8: result_type validation-failure, detail
 * "mx-not-in-policy", no IPs), or an MTA-STS policy fetch failure (empty
 * mx_host; result_type sts-policy-fetch-error, sts-policy-invalid or
 * sts-webpki-invalid; policy_type "sts" without policy text).
 *
 * --- Aggregation (each rule a decision; [I] where the RFC is silent) ----
 *
 *  - Policies: one policies[] element per distinct (policy_type,
 *    policy_strings, policy_mx) seen that day, since a policy can change
 *    during the day. For no-policy-found only the type is the key (its
 *    strings and mx are not written, so two elements would look the same;
 *    a "mode: none" policy is recorded as no-policy-found, STS-56).
 *    policy-string has one element per non-empty line of policy_strings
 *    (a trailing CR dropped), in the recorded order, never nested;
 *    mx-host is an ARRAY of the non-empty lines of policy_mx (D12: the
 *    prose of RFC 8460 4.4, though Appendix B shows a string). Both are
 *    written for every type but no-policy-found, also when empty (a
 *    fetch failure with no policy known): the type is then stable for
 *    parsers. policy-domain is always written: the parameter, lower-cased.
 *  - Success [I], D11 extension: for every type but no-policy-found (sts;
 *    also a future tlsa) a session succeeded iff result_type is
 *    "success". For no-policy-found it succeeded iff a TLS session was
 *    established (tls = 1): certificate problems are no failure when no
 *    policy asks for validation. Without TLS it failed, as
 *    starttls-not-supported when STARTTLS was not offered, else
 *    validation-failure (offered, but the handshake or the STARTTLS
 *    command failed). A row with an empty mx_host (a policy fetch
 *    failure) always failed with its result_type. An empty result_type
 *    on a failure is written as validation-failure.
 *  - failure-details: per policy, one element per distinct (result-type,
 *    sending-mta-ip, receiving-mx-hostname, receiving-mx-helo,
 *    receiving-ip), with failed-session-count = the rows in it. So the
 *    counts add up to total-failure-session-count (RPT-12 would allow
 *    otherwise).
 *  - failure-reason-code: the row's detail (an OpenSSL error name, a
 *    certificate problem, "mx-not-in-policy", a fetch error text), for
 *    every result type, when non-empty; additional-information (a URI) is
 *    never written. When the rows of one element have different details,
 *    the most frequent non-empty one is written (ties: the smallest in
 *    byte order); an element whose rows have none omits the field.
 *    Details are cut to TLSRPT_REASON_MAX octets (at a UTF-8 boundary).
 *  - Empty values are omitted, never written as "": receiving-mx-helo,
 *    receiving-ip and failure-reason-code when unknown, and for policy
 *    fetch failures (no MX) also receiving-mx-hostname; sending-mta-ip
 *    when the row has none (fetch failures, D8 rows). The RFC calls
 *    sending-mta-ip and receiving-mx-hostname required, but there is no
 *    MTA session to describe in those rows.
 *  - Addresses (sending-mta-ip, receiving-ip) are normalised for grouping
 *    and output: IPv6 in RFC 5952 form (RPT-14: lower case, longest zero
 *    run as "::", no leading zeros), IPv4-mapped IPv6 (::ffff:a.b.c.d) as
 *    the IPv4 address it is on the wire. Text that is no address is kept
 *    unchanged. receiving-mx-hostname is lower-cased, a trailing dot
 *    dropped; receiving-mx-helo is kept as the peer sent it, cut to 255
 *    octets.
 *  - A policy with only successes still gets "failure-details": [] [I]:
 *    the 4.4 schema lists the member in every policies[] element and no
 *    text makes it conditional; an empty array satisfies readers that
 *    require it and readers that iterate it.
 *  - Order is deterministic: policies sorted by (type, strings, mx) and
 *    failure-details by (result-type, sending-mta-ip,
 *    receiving-mx-hostname, receiving-mx-helo, receiving-ip), in byte
 *    order; the input order does not matter.
 *
 * --- Output ---------------------------------------------------------------
 *
 * I-JSON (RFC 7493) through mta/json.h: UTF-8 (invalid octets become
 * U+FFFD), unique keys, counts as integers. Members in the order of the
 * RFC 8460 4.4 schema:
 *	organization-name, date-range {start-datetime, end-datetime},
 *	contact-info, report-id, policies [ {policy {policy-type,
 *	policy-string, policy-domain, mx-host}, summary
 *	{total-successful-session-count, total-failure-session-count},
 *	failure-details [ {result-type, sending-mta-ip,
 *	receiving-mx-hostname, receiving-mx-helo, receiving-ip,
 *	failed-session-count, failure-reason-code} ]} ]
 * Datetimes are RFC 3339 in UTC with "Z" ("2026-11-22T00:00:00Z"): start
 * and end exactly as given, so a day is midnight to the next midnight.
 * Compact JSON is for sending, pretty (two-space indents, final newline)
 * for people and tests.
 *
 * Ownership: all input strings are borrowed (NULL counts as ""); struct
 * tlsrpt_report owns copies and is freed with tlsrpt_report_free().
 * Functions returning char * return xmalloc'd strings the caller frees.
 * Failure reasons ("why") are short English phrases with input bytes
 * quoted by str_quote(); why may be NULL; "" on success.
 */
#ifndef STRICTRELAY_TLSRPT_REPORT_H
#define STRICTRELAY_TLSRPT_REPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mta/util.h"

#define TLSRPT_REASON_MAX 256      /* octets of one failure-reason-code */
#define TLSRPT_HELO_MAX 255        /* octets of one receiving-mx-helo */
#define TLSRPT_ORG_MAX 256         /* octets of organization-name */
#define TLSRPT_REPORT_ID_MAX 255   /* octets of report-id */
#define TLSRPT_UNIQUE_ID_MAX 64    /* characters of a file name's unique-id */
#define TLSRPT_ID_RANDOM 8         /* random octets in tlsrpt_report_id() */
#define TLSRPT_TIME_MAX 253402300799LL /* 9999-12-31T23:59:59Z */

/* One tls_sessions row: the columns the report needs. Strings borrowed. */
struct tlsrpt_session {
	int64_t time;                /* unix seconds */
	const char *policy_domain;
	const char *policy_type;     /* "sts", "no-policy-found" */
	const char *mx_host;         /* "" for a policy fetch failure */
	const char *mx_ip;
	const char *mx_helo;
	const char *sending_ip;
	bool starttls_offered;
	bool tls;                    /* a TLS session was established */
	const char *result_type;     /* "success" or an RFC 8460 result-type */
	const char *detail;          /* failure-reason-code or error text */
	const char *policy_strings;  /* policy lines, "\n"-joined */
	const char *policy_mx;       /* mx patterns, "\n"-joined */
};

struct tlsrpt_report_params {
	const char *organization_name; /* 1..TLSRPT_ORG_MAX octets */
	const char *contact_info;      /* addr-spec "tlsrpt@sndr.example" (ASCII) */
	const char *report_id;         /* 1..TLSRPT_REPORT_ID_MAX of %x21-7E
					* without "<" and ">" (it goes into the
					* Subject as <report-id>, RPT-25) */
	const char *policy_domain;     /* A-label domain */
	int64_t start;                 /* date range [start, end), unix seconds, */
	int64_t end;                   /* 0 <= start < end <= TLSRPT_TIME_MAX */
};

struct tlsrpt_failure {
	char *result_type;
	char *sending_ip;            /* "" = omitted */
	char *mx_host;               /* "" = omitted (policy fetch failure) */
	char *mx_helo;               /* "" = omitted */
	char *mx_ip;                 /* "" = omitted */
	char *reason;                /* failure-reason-code; "" = omitted */
	uint64_t count;
};

struct tlsrpt_policy {
	char *type;                  /* policy-type */
	struct strlist strings;      /* policy-string (not written for no-policy-found) */
	struct strlist mx;           /* mx-host (not written for no-policy-found) */
	uint64_t successes;
	uint64_t failures;
	struct tlsrpt_failure *fail; /* sorted */
	size_t nfail;
};

struct tlsrpt_report {
	char *organization_name;
	char *contact_info;
	char *report_id;
	char *policy_domain;         /* lower case */
	int64_t start;
	int64_t end;
	struct tlsrpt_policy *policies; /* sorted; at least one after a build */
	size_t npolicies;
};

/*
 * Aggregates rows[0..nrows) under p (rules above) into out. 0 on success
 * (out owned by the caller: tlsrpt_report_free()), or -1 + why with out
 * zeroed: a bad parameter, nrows == 0, a row of another policy domain,
 * outside [start, end) or with a policy_type other than "sts", "tlsa" and
 * "no-policy-found". out is overwritten without being freed first.
 */
int tlsrpt_report_build(const struct tlsrpt_report_params *p, const struct tlsrpt_session *rows,
			size_t nrows, struct tlsrpt_report *out, char *why, size_t whylen);

/* Appends the report JSON to out (give it no cap, or a generous one: a
 * capped buffer would silently truncate). */
void tlsrpt_report_json(const struct tlsrpt_report *r, struct buf *out, bool pretty);

/* Frees everything and zeroes *r. */
void tlsrpt_report_free(struct tlsrpt_report *r);

/*
 * The domain of an addr-spec contact-info (RPT-20/24: the file name's
 * sender and TLS-Report-Submitter), lower-cased, xmalloc'd; NULL when
 * contact_info is not one ASCII mailbox with a domain name (no address
 * literal).
 */
char *tlsrpt_contact_domain(const char *contact_info);

/*
 * A report-id of the shape id-left "@" id-right, as the RPT-25 Subject
 * wants ("Report-ID: <id>"):
 *	"<YYYY-MM-DD of start, UTC>.<policy-domain>.<hex of rnd>@<submitter>"
 * e.g. "2026-11-22.example.net.8f3a0c1d2e4b5a69@mail.sndr.example".
 * rnd is TLSRPT_ID_RANDOM octets the caller draws (random_bytes()); the
 * same hex makes a good file name unique-id. Domains are lower-cased.
 * xmalloc'd, or NULL when a domain is not an A-label domain, start is out
 * of range, or the result would exceed TLSRPT_REPORT_ID_MAX.
 */
char *tlsrpt_report_id(int64_t start, const char *policy_domain, const char *submitter,
		       const unsigned char rnd[TLSRPT_ID_RANDOM]);

/*
 * The RPT-20 file name "sender!policy-domain!begin!end[!unique-id].ext":
 * sender = the submitter domain, begin/end unix seconds (decimal, no
 * sign), ext "json.gz" when gzipped else "json". Domains must be A-label
 * domains (written lower case); 0 <= begin < end <= TLSRPT_TIME_MAX;
 * unique_id NULL (left out) or 1..TLSRPT_UNIQUE_ID_MAX ALNUM. xmalloc'd,
 * or NULL + why.
 */
char *tlsrpt_report_filename(const char *sender, const char *policy_domain, int64_t begin,
			     int64_t end, const char *unique_id, bool gzipped, char *why,
			     size_t whylen);

/*
 * Writes the normal form of an IP address into dst (RPT-14): IPv6 as RFC
 * 5952 text (inet_ntop), an IPv4-mapped IPv6 address as dotted IPv4,
 * IPv4 dotted. true when s was an address; false (dst = s, cut to fit)
 * when it was not, or dst was too small (dstlen >= 46 holds any address).
 */
bool tlsrpt_normalize_ip(const char *s, char *dst, size_t dstlen);

/*
 * gzip (RFC 1952, RPT-21) of in[0..len) appended to out: zlib deflate with
 * the gzip wrapper (windowBits 15 + 16), so out starts 1f 8b 08; mtime 0,
 * so the same input gives the same octets. 0, or -1 when out's cap was
 * reached (out then holds a partial stream: discard it) or zlib failed.
 */
int tlsrpt_gzip(const void *in, size_t len, struct buf *out);

/*
 * Inflates one gzip member in[0..len) and appends it to out. 0, or -1
 * when the data is not exactly one complete, valid gzip member (trailing
 * octets count as invalid) or the output would exceed max octets
 * (0 = no cap). For tests and tools.
 */
int tlsrpt_gunzip(const void *in, size_t len, struct buf *out, size_t max);

#endif
