/*
 * dsn.h - builds delivery status notifications: bounces and delay notices
 * (RFC 3464 message/delivery-status inside RFC 6522 multipart/report;
 * RFC 6533 for SMTPUTF8 messages). Pure: a struct in, a complete RFC 5322
 * message out; no I/O, no globals, no clock (the caller passes "now").
 *
 * The message built (DSN-11/12):
 *	From: Mail Delivery System <from_address>
 *	To: <original_sender>
 *	Subject, Date, Message-ID, Auto-Submitted: auto-replied (RFC 3834),
 *	[TLS-Required: No], MIME-Version, Content-Type: multipart/report;
 *	report-type=delivery-status; boundary="..."
 *	part 1  text/plain: what happened, for humans, quoting each remote reply
 *	part 2  message/delivery-status (message/global-delivery-status): a
 *		per-message block (Reporting-MTA, X-Strictrelay-Queue-ID,
 *		[Original-Envelope-Id], Arrival-Date), then one block per
 *		recipient (Final-Recipient, [Original-Recipient], Action, Status,
 *		[Remote-MTA], [Diagnostic-Code], Last-Attempt-Date,
 *		[Will-Retry-Until]), blocks separated by one blank line
 *	part 3  the original: message/rfc822 (message/global) when a recipient
 *		failed and the message is at most DSN_MAX_FULL octets; otherwise
 *		its header section only, text/rfc822-headers
 *		(message/global-headers).
 *
 * Decisions:
 *  - Headers only, always, for a REQUIRETLS message (MSG_REQUIRETLS or
 *    MSG_REQUIRETLS_RULE): RTLS-20/21 and decision D7 - the bounce is
 *    redacted and is itself NOT sent with REQUIRETLS. Also headers only for
 *    RET=HDRS, for originals above DSN_MAX_FULL, and for reports without a
 *    failed recipient (a delayed message is still on its way).
 *  - "Global" (RFC 6533) types when the message was SMTPUTF8, or when any
 *    address involved is not ASCII; Final-Recipient then uses the "utf-8"
 *    address type with the address as is (utf-8-address form).
 *  - Diagnostic-Code is "smtp; ..." when the diagnostic is an SMTP reply
 *    ("550 5.1.1 ..."), else "x-strictrelay; ..." (a local reason such as a
 *    timeout). It is made one line of printable ASCII (control and 8-bit
 *    octets as \xNN), cut to DSN_MAX_DIAGNOSTIC and folded.
 *  - TLS-Required: No is added when the original carried it and no
 *    REQUIRETLS (RTLS-23).
 *  - The included original gets CR LF line endings (bare CR or LF become
 *    CR LF) and no line above 998 octets: longer lines are split, header
 *    lines by folding (CR LF SP). The header section is cut at a field
 *    boundary after DSN_MAX_HEADERS octets.
 *  - The output is 7-bit except where the original (or a UTF-8 address of a
 *    global DSN) is 8-bit; those parts and the message then say
 *    Content-Transfer-Encoding: 8bit.
 *  - Boundary and Message-ID derive from seed (and now), so the output is
 *    deterministic; the boundary is checked against every part and changed
 *    (a counter is appended) while it occurs in one.
 *  - Subject: "Undelivered Mail Returned to Sender" when a recipient
 *    failed, else "Delayed Mail (still being retried)" when one is delayed,
 *    else "Successful Mail Delivery Report". Part 1 explains at most
 *    DSN_MAX_LISTED recipients; part 2 lists them all.
 *
 * Ownership: everything in the params is borrowed. dsn_build() appends to
 * out, which the caller initialised (its cap, if any, is respected) and
 * frees.
 */
#ifndef STRICTRELAY_SMTP_DSN_H
#define STRICTRELAY_SMTP_DSN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mta/util.h"

#define DSN_MAX_FULL 50000            /* originals returned whole up to this size */
#define DSN_MAX_HEADERS (256 * 1024)  /* header section returned at most */
#define DSN_MAX_DIAGNOSTIC 1024       /* octets of one Diagnostic-Code text */
#define DSN_MAX_REPORT (8 * 1024 * 1024) /* parts 1 and 2, each */
#define DSN_MAX_LISTED 50             /* recipients explained in part 1 */
#define DSN_MAX_ADDRESS 512           /* octets of an address (sender, recipient, ORCPT) */
#define DSN_MAX_HOST 255              /* octets of reporting_mta */

struct dsn_recipient {
	const char *address;        /* final recipient, "user@domain" */
	const char *orcpt;          /* ORCPT as given ("rfc822;addr"), or NULL */
	const char *action;         /* "failed", "delayed", "delivered", "relayed", "expanded" */
	const char *status;         /* "5.1.1"; an invalid one becomes X.0.0 for the action */
	const char *diagnostic;     /* remote reply ("550 5.1.1 ...") or local reason;
				     * NULL or "" = none */
	const char *remote_mta;     /* MX host name, or NULL */
	int64_t last_attempt;       /* unix seconds; 0 = not written */
	int64_t will_retry_until;   /* unix seconds, for "delayed"; 0 = not written */
};

struct dsn_params {
	const char *reporting_mta;  /* our host name */
	const char *from_address;   /* "MAILER-DAEMON@host" */
	const char *original_sender; /* the DSN goes to it; must not be empty */
	const char *original_id;    /* queue id of the original */
	const char *envid;          /* ENVID of the original, or NULL */
	int64_t arrival;            /* unix seconds */
	const char *message;        /* the original, headers and body, CR LF */
	size_t message_len;
	uint32_t flags;             /* enum msg_flags of the original */
	bool ret_hdrs;              /* RET=HDRS was requested */
	const struct dsn_recipient *rcpts;
	size_t nrcpts;
	int64_t now;                /* unix seconds: Date and Message-ID */
	const char *seed;           /* unique per DSN (e.g. its queue id) */
};

/*
 * Appends the DSN to out. Returns 0, or -1 (out left as it was) when the
 * input is unusable - an empty original sender (a bounce about a bounce,
 * SMTP-10: the caller must not ask, this is a defence), no recipients, an
 * action outside the list above, an empty address or host name, or one with
 * control characters or longer than DSN_MAX_ADDRESS / DSN_MAX_HOST - or
 * when a cap (out's or one of the DSN_MAX_* above) is reached.
 */
int dsn_build(const struct dsn_params *p, struct buf *out);

/*
 * The status code for a reply: enhanced when it is a valid code whose class
 * equals code / 100 (2, 4 or 5), else 2.0.0 / 4.0.0 / 5.0.0 from the basic
 * code (1xx and 3xx count as temporary: 4.0.0). enhanced may be NULL or "".
 * Returns enhanced itself or static text.
 */
const char *dsn_status_from_reply(int code, const char *enhanced);

#endif
