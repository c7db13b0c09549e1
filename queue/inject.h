/*
 * inject.h - the pure parts of `strictrelay sendmail` (queue/sendmail.c):
 * the sendmail command line, reading the message from a byte stream, header
 * scanning for -t, Bcc removal, the headers a local submission gets added,
 * and line ending normalisation. Data in, data out: no I/O, no globals.
 *
 * Command line (Postfix/sendmail compatible; options may come anywhere
 * before "--", as GNU getopt allows):
 *   -t            recipients also from To:/Cc:/Bcc: (Resent-To/-Cc/-Bcc when
 *                 the message has any Resent- recipient field)
 *   -i, -oi       a line with a single "." is ordinary text
 *   -f ADDR, -r ADDR   the envelope sender ("" or "<>" = null sender)
 *   -F NAME       full name for an added From: header
 *   -c FILE, -C FILE   the configuration file
 *   -N DSN        NOTIFY for every recipient: never, or success,delay,failure
 *   -R full|hdrs  DSN RET;  -V ENVID  DSN ENVID (xtext)
 *   -B 7BIT|8BITMIME   body type (8BITMIME sets MSG_BODY_8BITMIME)
 *   -v            print the queue id
 *   -bm           deliver mail (the default); -bi: nothing to do (no aliases)
 *   -oX..., -e X, -h N, -L X, -O X, -p X, -X X, -G, -I, -m, -n, -U, -x:
 *                 accepted and ignored
 *   -h, --help    help
 * Refused with a usage error: -bs, -bd, -bp, -bv, -bt, -q and unknown flags.
 *
 * Reading (struct inject_reader): feed it stdin in pieces of any size. LF,
 * CR LF and bare CR all end a line and come out as CR LF. Without -i a line
 * holding only "." ends the message (the rest of the input is not read).
 * The text is checked as it streams: size (stored up to max_size, counted
 * beyond), lines over 998 octets, NUL, 8-bit octets.
 *
 * Building (inject_build): with the message read, the envelope decided and
 * a queue id: a leading mbox "From " line is dropped, Bcc:/Resent-Bcc: are
 * removed (always: they name hidden recipients), a Received: header is
 * prepended and From:, Date: and Message-ID: are added when missing.
 *
 * Addresses: RFC 5322 address lists (display names, comments, quoted
 * strings, groups) reduce to addr-specs, each checked with the SMTP path
 * parser (smtp/parse.h) so a locally injected address is valid exactly when
 * it would be in RCPT TO. Addresses need a domain (this relay has no local
 * mailboxes).
 */
#ifndef STRICTRELAY_QUEUE_INJECT_H
#define STRICTRELAY_QUEUE_INJECT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mta/util.h"

/* --- the command line ------------------------------------------------------ */

enum inject_mode {
	INJECT_MODE_DELIVER,   /* -bm (default) */
	INJECT_MODE_HELP,      /* -h, --help */
	INJECT_MODE_NOTHING,   /* -bi (newaliases): nothing to do, exit 0 */
};

struct inject_opts {
	enum inject_mode mode;
	bool extract;          /* -t */
	bool ignore_dots;      /* -i, -oi */
	bool verbose;          /* -v */
	bool body_8bitmime;    /* -B 8BITMIME */
	/* The strings point into argv. */
	const char *sender;    /* -f/-r as given; NULL = not given */
	const char *fullname;  /* -F; NULL = not given */
	const char *config;    /* -c/-C; NULL = not given */
	char notify[40];       /* -N normalised ("NEVER", "SUCCESS,FAILURE"), "" = not given */
	const char *ret;       /* "FULL", "HDRS" or "" */
	const char *envid;     /* -V, "" = not given */
	struct strlist rcpts;  /* the recipient arguments, as given */
};

/*
 * Parses argv[first..argc-1]. 0, or -1 with err saying which argument is
 * wrong (a usage error). o owns only o->rcpts: inject_opts_free().
 */
int inject_parse_args(struct inject_opts *o, int argc, char **argv, int first, char *err,
		      size_t errlen);
void inject_opts_free(struct inject_opts *o);

/* --- reading the message ------------------------------------------------------ */

#define INJECT_MAX_LINE 998 /* octets, excluding CR LF (RFC 5322 2.1.1) */

enum inject_read_flags {
	INJECT_TOO_BIG = 1u << 0,        /* more than max_size octets (after CR LF) */
	INJECT_LINE_TOO_LONG = 1u << 1,  /* a line over INJECT_MAX_LINE octets */
	INJECT_NUL = 1u << 2,            /* a NUL octet */
	INJECT_8BIT = 1u << 3,           /* an octet >= 0x80 */
};

struct inject_reader {
	uint64_t max_size;
	bool ignore_dots;
	/* state */
	bool pending_cr;      /* a CR was read; LF may follow */
	bool held_dot;        /* the current line so far is "." (not yet written) */
	size_t line_len;      /* octets of the current line so far */
	uint64_t line_no;     /* 1-based number of the current line */
	uint64_t size;        /* octets of message, CR LF endings, stored or not */
	unsigned flags;       /* enum inject_read_flags */
	uint64_t long_line;   /* number of the first line that is too long */
	uint64_t long_len;    /* and its length (as far as counted) */
	uint64_t nul_line;    /* number of the first line with a NUL */
	bool done;            /* the "." line was read */
};

void inject_reader_init(struct inject_reader *r, uint64_t max_size, bool ignore_dots);

/*
 * Consumes input and appends message octets (CR LF lines) to out until the
 * end-of-message line; returns how many input bytes were consumed (all of
 * them unless r->done was set, in which case the bytes after the "." line
 * are left). Stops appending once max_size is passed (INJECT_TOO_BIG).
 */
size_t inject_reader_feed(struct inject_reader *r, const char *in, size_t len, struct buf *out);

/* End of input: terminates a last line that had no line ending. */
void inject_reader_finish(struct inject_reader *r, struct buf *out);

/* --- headers --------------------------------------------------------------------- */

struct inject_header_info {
	size_t start;           /* offset of the first header (after a mbox "From " line) */
	size_t end;             /* offset just past the last header line */
	bool separator;         /* an empty line follows the headers (at end) */
	bool has_from, has_date, has_message_id;
	bool has_resent_rcpt;   /* Resent-To/Cc/Bcc present */
	bool tls_required_no;   /* "TLS-Required: No" (RFC 8689 5) */
	unsigned received;      /* Received: fields */
};

/*
 * Finds the header section of a CR LF message: from the start (after a
 * leading "From " line) up to the first empty line, or the first line that
 * is neither a "Name:" field nor a continuation (that line starts the body).
 */
void inject_scan_headers(const char *msg, size_t len, struct inject_header_info *h);

/*
 * The value (after the ':') of the field starting at msg[off], unfolded
 * (its CR LFs removed); *name_len is the length of the name at msg[off]
 * and *next the offset of the next field. NULL when off >= end. Caller
 * frees the result.
 */
char *inject_next_field(const char *msg, size_t end, size_t off, size_t *name_len, size_t *next);

/*
 * Appends the addr-specs of an RFC 5322 address-list (or a command-line
 * recipient argument, which may be one) to out, each checked as a mail
 * address with a domain. 0, or -1 with err naming the bad address.
 * *utf8 is set when an address has non-ASCII octets.
 */
int inject_parse_address_list(const char *value, struct strlist *out, bool *utf8, char *err,
			      size_t errlen);

/*
 * One address ("a@b", "<a@b>" or "Name <a@b>"; "" and "<>" are the null
 * sender when allow_null): the addr-spec in out. 0 / -1 + err.
 */
int inject_parse_address(const char *in, bool allow_null, char *out, size_t outlen, bool *utf8,
			 char *err, size_t errlen);

/*
 * -t: the recipients named in To/Cc/Bcc (or the Resent- ones). 0 / -1 with
 * err naming the header and the address.
 */
int inject_header_rcpts(const char *msg, const struct inject_header_info *h,
			struct strlist *out, bool *utf8, char *err, size_t errlen);

/* Appends addr to l unless it is there already (domain compared without case). */
void inject_add_rcpt(struct strlist *l, const char *addr);

/* --- the queued message ----------------------------------------------------------- */

struct inject_build_params {
	const char *hostname;     /* [server] hostname */
	const char *qid;
	int64_t now;              /* unix seconds */
	unsigned uid;             /* the invoking user */
	const char *login;        /* the invoking user's login name */
	const char *sender;       /* envelope sender, "" = null */
	const char *fullname;     /* for an added From:, NULL or "" = none */
	const struct strlist *rcpts;
};

/*
 * The message as queued: Received: + the headers without Bcc:/Resent-Bcc:
 * + the missing From:/Date:/Message-ID: + the body. Appends to out.
 */
void inject_build(const struct inject_build_params *p, const char *msg, size_t len,
		  const struct inject_header_info *h, struct buf *out);

#endif
