/*
 * reply.h - the client side of RFC 5321 4.2: reading SMTP replies, and the
 * EHLO capability list (SMTP-06). Pure and resumable: no I/O, no globals,
 * no allocation (the parser holds its storage inline, so it can be
 * re-initialised at any time and needs no free function).
 *
 * Reply syntax accepted:
 *	reply = *( code "-" [text] EOL ) code [ " " [text] ] EOL
 *	code  = 3 digits, 100..599, the same on every line
 *	EOL   = CR LF, or a bare LF (CR directly before the LF is stripped;
 *		a CR anywhere else is kept as text and escaped when rendered)
 * Anything else is REPLY_ERROR with a static reason: Postfix refuses to
 * "ignore garbage" in replies, because under PIPELINING a skipped line would
 * pair the next reply with the wrong command. A NUL octet is garbage too.
 *
 * Usage:
 *	smtp_reply_init(&p);
 *	st = smtp_reply_feed(&p, in, len, &used);   (drop `used` bytes of in)
 *	REPLY_NEED_MORE: all of in was taken; feed more when it arrives.
 *	REPLY_DONE: smtp_reply_get(&p) is the reply; it stays valid until the
 *		next feed, which starts a new reply. `used` stops right after the
 *		final line: the rest of in is the next (pipelined) reply, or, after
 *		a 220 to STARTTLS, plaintext the caller must refuse.
 *	REPLY_ERROR: smtp_reply_error(&p) says why; every later feed fails the
 *		same way until smtp_reply_init().
 *
 * Enhanced status codes (RFC 2034/3463): taken from the first line only
 * when they have the form class.subject.detail (1-3 digits each) followed by
 * a space or the end of the line, and the class is 2, 4 or 5 and equals the
 * first digit of the reply code (ESC-01). Otherwise the text is plain text
 * and smtp_reply_status() derives a generic code from the reply code
 * (2.0.0, 4.0.0 or 5.0.0) - act on the code, never on the text (SMTP-06).
 *
 * Limits (anti-pattern 2, unbounded multi-line replies): a line longer than
 * SMTP_REPLY_MAX_LINE octets (code and separator included, EOL excluded),
 * more than SMTP_REPLY_MAX_LINES lines, or more than SMTP_REPLY_MAX_SIZE
 * octets in all (EOLs included) make the reply an error.
 */
#ifndef STRICTRELAY_SMTP_REPLY_H
#define STRICTRELAY_SMTP_REPLY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SMTP_REPLY_MAX_LINE 2048
#define SMTP_REPLY_MAX_LINES 200
#define SMTP_REPLY_MAX_SIZE 65536
#define SMTP_ENHANCED_MAX 12 /* "5.123.123" plus room */

enum smtp_reply_status {
	REPLY_NEED_MORE = 0,
	REPLY_DONE,
	REPLY_ERROR,
};

/* One complete reply. Line texts are NUL-terminated strings in text[]. */
struct smtp_reply {
	int code;                            /* 100..599 */
	char enhanced[SMTP_ENHANCED_MAX];    /* "5.1.1" from the first line, "" if none */
	size_t nlines;                       /* >= 1 */
	uint32_t line_off[SMTP_REPLY_MAX_LINES];
	char text[SMTP_REPLY_MAX_SIZE];
};

struct smtp_reply_parser {
	int state;
	int digits;           /* code digits read on the current line */
	int line_code;        /* code being read on the current line */
	bool last_line;       /* the current line ends the reply */
	size_t line_len;      /* octets of the current line, EOL excluded */
	size_t total;         /* octets of the reply so far */
	size_t text_len;      /* octets used in reply.text */
	const char *error;    /* static reason once in error */
	struct smtp_reply reply;
};

void smtp_reply_init(struct smtp_reply_parser *p);

/*
 * Consumes bytes of in up to the end of one reply. *consumed (never NULL)
 * gets how many bytes were used: all of them for REPLY_NEED_MORE, up to and
 * including the final line's LF for REPLY_DONE, up to the offending octet
 * for REPLY_ERROR.
 */
enum smtp_reply_status smtp_reply_feed(struct smtp_reply_parser *p, const char *in, size_t len,
				       size_t *consumed);

/* The reply after REPLY_DONE (NULL otherwise). */
const struct smtp_reply *smtp_reply_get(const struct smtp_reply_parser *p);

/* Why the parser failed ("" when it did not). Static text. */
const char *smtp_reply_error(const struct smtp_reply_parser *p);

/* Text of line i (0 <= i < nlines), without code and separator. */
const char *smtp_reply_line(const struct smtp_reply *r, size_t i);

/* The reply's enhanced code, or the generic one for its basic code. */
const char *smtp_reply_status(const struct smtp_reply *r);

/*
 * Renders the reply as one line for logs and DSNs: "550 5.1.1 text of line
 * one text of line two" (the lines' texts joined by a space; an enhanced
 * code repeated at the start of later lines is dropped). Octets below 0x20,
 * and 0x7f and above, are written as "\xNN", so the result is printable
 * ASCII and a peer cannot forge log lines. '\' is left alone: the rendering
 * is for display, and the DSN builder (which sanitises the same way) then
 * passes it through unchanged instead of escaping it twice. Truncated to
 * fit dstlen, ending in "..." when cut (never inside an escape).
 * Returns dst (always NUL-terminated when dstlen > 0).
 */
const char *smtp_reply_render(const struct smtp_reply *r, char *dst, size_t dstlen);

/* The same without the code and enhanced code: the joined text only. */
const char *smtp_reply_text(const struct smtp_reply *r, char *dst, size_t dstlen);

/*
 * Length of a valid enhanced status code at the start of s[0..len) whose
 * class matches the reply code (class 2, 4 or 5 = code / 100), followed by
 * a space or the end of s; 0 when there is none.
 */
size_t smtp_enhanced_scan(const char *s, size_t len, int code);

/* "2.0.0", "4.0.0" or "5.0.0" for code; codes outside 2xx and 5xx give
 * "4.0.0" (not a final answer: temporary). Static text. */
const char *smtp_status_generic(int code);

/* --- EHLO capabilities (RFC 5321 4.1.1.1 and the extensions' RFCs) ------ */

#define SMTP_CAPS_NAME_MAX 256
#define SMTP_CAPS_AUTH_MAX 256

/* Plain data: clearing it with memset() is a valid reset. */
struct smtp_caps {
	char name[SMTP_CAPS_NAME_MAX];    /* the server's name (TLSRPT receiving-mx-helo) */
	bool starttls;
	bool pipelining;
	bool eightbitmime;
	bool smtputf8;
	bool requiretls;
	bool enhancedstatuscodes;
	bool dsn;
	bool chunking;
	bool size;                        /* SIZE advertised */
	uint64_t size_limit;              /* 0 = no limit declared; saturates at UINT64_MAX */
	bool auth;
	char auth_mechs[SMTP_CAPS_AUTH_MAX]; /* "PLAIN LOGIN", as advertised */
};

/*
 * Fills caps from a reply to EHLO: everything is reset first (TLS-02: after
 * STARTTLS nothing learnt before counts), then the first word of the first
 * line becomes name (kept from before when the EHLO reply names nobody),
 * and each later line's first word is matched case-insensitively against
 * the keywords above; unknown keywords are ignored. Returns 0, or -1 (caps
 * reset, name kept) when the reply is not a 2xx.
 *
 * Names and AUTH lists are copied as printable ASCII: other octets become
 * '?', and they are cut to fit.
 */
int smtp_caps_parse(const struct smtp_reply *ehlo, struct smtp_caps *caps);

/* Sets only caps->name, from the first word of a 220 greeting (a HELO
 * session has no EHLO reply to take it from). */
void smtp_caps_name_from_greeting(const struct smtp_reply *greeting, struct smtp_caps *caps);

#endif
