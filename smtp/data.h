/*
 * data.h - the DATA phase reader: end-of-data detection, dot-unstuffing and
 * line checks (RFC 5321 4.1.1.4, 4.5.2, 4.5.3.1.6). Pure and resumable: feed
 * it whatever the socket delivered, in pieces of any size.
 *
 * End of data is CR LF "." CR LF and nothing else: the CR LF that ends the
 * DATA command counts as the first CR LF. A "." line terminated by a bare LF
 * or bare CR, or preceded by one, never ends the data (SMTP smuggling,
 * CVE-2023-51764/5/6). Bare CR and bare LF are flagged; with
 * BARE_NEWLINE_NORMALIZE they are stored as CR LF (still never an end of
 * data), otherwise the caller refuses the message once the real end arrives.
 * NUL bytes are flagged and dropped.
 *
 * The stored message has CR LF line endings and no dot-stuffing. Bytes are
 * stored until the size limit is passed; after that the reader keeps reading
 * to the end of data without storing (RFC 1870: reply 552 after the end).
 */
#ifndef STRICTRELAY_SMTP_DATA_H
#define STRICTRELAY_SMTP_DATA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mta/util.h"

#define SMTP_MAX_TEXT_LINE 998 /* octets, excluding CR LF (RFC 5322 2.1.1) */

enum smtp_data_flags {
	SMTP_DATA_TOO_BIG = 1 << 0,       /* more than max_size octets */
	SMTP_DATA_LINE_TOO_LONG = 1 << 1, /* a line longer than 998 octets */
	SMTP_DATA_BARE_LF = 1 << 2,
	SMTP_DATA_BARE_CR = 1 << 3,
	SMTP_DATA_NUL = 1 << 4,
	SMTP_DATA_8BIT = 1 << 5,          /* an octet >= 0x80 was seen */
};

struct smtp_data_reader {
	/* settings */
	uint64_t max_size;
	bool normalize_bare;  /* store bare CR/LF as CRLF instead of only flagging */
	/* state */
	int state;
	bool line_after_crlf; /* the current line began after a proper CR LF */
	size_t line_len;      /* octets of the current line so far */
	uint64_t size;        /* octets of message (stored or not) */
	unsigned flags;       /* enum smtp_data_flags */
	bool done;
};

void smtp_data_init(struct smtp_data_reader *r, uint64_t max_size, bool normalize_bare);

/*
 * Consumes input up to and including the end-of-data line, appending message
 * octets to out (which the caller created without a cap, or with a cap above
 * max_size). Returns the number of input bytes consumed; r->done is set once
 * CR LF . CR LF was read, and the bytes after it (pipelined commands) are
 * left unconsumed.
 */
size_t smtp_data_feed(struct smtp_data_reader *r, const char *in, size_t len, struct buf *out);

/*
 * Adds dot-stuffing for transmission and guarantees CR LF line endings:
 * bare CR or LF in msg are sent as CR LF (RFC 5321 2.3.8), a line starting
 * with "." gets another ".", and the message ends with CR LF before the
 * terminating ".\r\n", which is appended. Used by the SMTP client.
 */
void smtp_data_stuff(const char *msg, size_t len, struct buf *out);

#endif
