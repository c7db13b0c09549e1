/*
 * mail.h - the e-mail that carries one TLS report to a mailto: rua
 * (RFC 8460 5.3; checklist RPT-20..27). Pure: parameters in, a complete
 * RFC 5322 message out (CR LF lines, 7-bit); no I/O, no clock, no globals.
 * tlsrpt_mail_sign() adds the DKIM signature (RPT-26) with tlsrpt/dkim.h.
 *
 * The message built:
 *	From: <from>
 *	To: <to>
 *	Date: <now, RFC 5322>
 *	Message-ID: <tlsrpt.NOW.SEED@FROM-DOMAIN>
 *	Subject: Report Domain: <policy-domain> Submitter: <submitter>
 *	 Report-ID: <<report-id>>                         (RPT-25, folded before
 *	                                                   a keyword when long)
 *	TLS-Report-Domain: <policy-domain>                 (RPT-24)
 *	TLS-Report-Submitter: <submitter>                  (RPT-24)
 *	Auto-Submitted: auto-generated                     (RFC 3834)
 *	TLS-Required: No                                   (RPT-27 [I], RFC 8689)
 *	MIME-Version: 1.0
 *	Content-Type: multipart/report; report-type="tlsrpt";
 *	 boundary="..."                                    (RPT-23)
 *
 *	part 1  text/plain; charset=us-ascii, 7bit: the summary
 *	part 2  application/tlsrpt+gzip, base64 in lines of 76 characters,
 *		Content-Disposition: attachment; filename="<filename>"
 *
 * Decisions:
 *  - From and To are bare addr-specs; the Message-ID's right side is the
 *    domain of from. Message-ID and boundary derive from seed and now, so
 *    the output is deterministic; the boundary is checked against both
 *    parts and changed (a counter appended) while it occurs in one.
 *  - The report must be gzip (starts with 1f 8b, RPT-21) and filename must
 *    end in ".json.gz" (RPT-20); the name's shape is otherwise the
 *    caller's (tlsrpt/report.*), but it may hold only printable ASCII
 *    without blanks, '"', '\\', '/' (it is put in a quoted string).
 *  - submitter must be the domain of the report's contact-info (RPT-24);
 *    the caller passes that domain, this module cannot check it.
 *  - The summary must be ASCII (tabs allowed, no other control
 *    characters); LF, CR and CR LF become CR LF, a final line break is
 *    added, lines above 998 octets are broken.
 *  - Domains are A-labels: letters, digits, '-', '_' and dots, labels of
 *    1..63 octets, at most 253 octets. Addresses: local@domain, ASCII
 *    atext/dots (or a quoted local part without control characters), at
 *    most TLSRPT_MAIL_MAX_ADDRESS octets. report_id: id-left "@" id-right
 *    of atext and dots, at most TLSRPT_MAIL_MAX_ID octets.
 *
 * Ownership: everything in the params is borrowed. Both functions append
 * to out, which the caller initialised (its cap is respected) and frees;
 * on failure out is left as it was and err holds a one-line English
 * message (err may be NULL when errlen is 0).
 */
#ifndef STRICTRELAY_TLSRPT_MAIL_H
#define STRICTRELAY_TLSRPT_MAIL_H

#include <stddef.h>
#include <stdint.h>

#include "mta/util.h"
#include "tlsrpt/dkim.h"

#define TLSRPT_MAIL_MAX_REPORT (16u * 1024 * 1024) /* gzip octets */
#define TLSRPT_MAIL_MAX_SUMMARY (64u * 1024)
#define TLSRPT_MAIL_MAX_ADDRESS 254
#define TLSRPT_MAIL_MAX_ID 512
#define TLSRPT_MAIL_MAX_FILENAME 512

struct tlsrpt_mail_params {
	const char *from;           /* [tlsrpt] report_from: "tlsrpt-noreply@mx.sender.example" */
	const char *to;             /* the decoded mailto: rua address */
	const char *policy_domain;  /* "example.net" */
	const char *submitter;      /* domain of contact-info: "sender.example" */
	const char *report_id;      /* "2026-11-23T00:00:00Z.example.net@sender.example" */
	const unsigned char *report; /* the gzipped JSON */
	size_t report_len;
	const char *filename;       /* "sender.example!example.net!B!E!ID.json.gz" */
	const char *summary;        /* text for humans */
	int64_t now;                /* Date, Message-ID */
	const char *seed;           /* unique per message: Message-ID and boundary */
};

/*
 * The header names tlsrpt_mail_sign() puts in h= (RPT-26): From, To,
 * Subject, Date, Message-ID, MIME-Version, Content-Type, TLS-Report-Domain,
 * TLS-Report-Submitter. NULL-terminated.
 */
extern const char *const tlsrpt_mail_sign_headers[];

/* Appends the unsigned message to out. 0, or -1 with err (see above). */
int tlsrpt_mail_build(const struct tlsrpt_mail_params *p, struct buf *out, char *err,
		      size_t errlen);

/*
 * Builds the message and, when key is not NULL, signs it with
 * d=dkim_domain, s=dkim_selector, t=now, h=tlsrpt_mail_sign_headers, then
 * appends the DKIM-Signature header field followed by the message to out.
 * With key NULL the message goes out unsigned; RFC 8460 receivers MUST then
 * ignore it (RPT-26), so callers should only do that knowingly. 0, or -1
 * with err.
 */
int tlsrpt_mail_sign(const struct tlsrpt_mail_params *p, const struct dkim_key *key,
		     const char *dkim_domain, const char *dkim_selector, struct buf *out,
		     char *err, size_t errlen);

#endif
