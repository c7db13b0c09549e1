/* data.c - see data.h */
#include "data.h"

#include <string.h>

enum {
	S_SOL,    /* start of a line */
	S_TEXT,   /* inside a line */
	S_CR,     /* saw CR inside a line */
	S_DOT,    /* a line began with "." */
	S_DOT_CR, /* a line is "." followed by CR */
};

void smtp_data_init(struct smtp_data_reader *r, uint64_t max_size, bool normalize_bare)
{
	memset(r, 0, sizeof(*r));
	r->max_size = max_size;
	r->normalize_bare = normalize_bare;
	r->state = S_SOL;
	/* The CR LF ending the DATA command is the first CR LF of CR LF . CR LF */
	r->line_after_crlf = true;
}

static void emit(struct smtp_data_reader *r, struct buf *out, const char *p, size_t n)
{
	if (!(r->flags & SMTP_DATA_TOO_BIG) && r->size + n > r->max_size)
		r->flags |= SMTP_DATA_TOO_BIG;
	r->size += n;
	/* Past the limit nothing more is stored: the message will be refused. */
	if (!(r->flags & SMTP_DATA_TOO_BIG) && buf_append(out, p, n) < 0)
		r->flags |= SMTP_DATA_TOO_BIG;
}

static void end_line(struct smtp_data_reader *r, struct buf *out, bool proper_crlf)
{
	emit(r, out, "\r\n", 2);
	r->line_len = 0;
	r->line_after_crlf = proper_crlf;
	r->state = S_SOL;
}

static void count_text(struct smtp_data_reader *r, size_t n)
{
	r->line_len += n;
	if (r->line_len > SMTP_MAX_TEXT_LINE)
		r->flags |= SMTP_DATA_LINE_TOO_LONG;
}

static void bare_terminator(struct smtp_data_reader *r, unsigned flag)
{
	/* In reject mode the message is refused after the real end, so what is
	 * stored does not matter; storing CR LF keeps one code path. */
	r->flags |= flag;
}

size_t smtp_data_feed(struct smtp_data_reader *r, const char *in, size_t len, struct buf *out)
{
	size_t i = 0;
	while (i < len && !r->done) {
		unsigned char c = (unsigned char)in[i];
		switch (r->state) {
		case S_SOL:
			if (c == '.') {
				r->state = S_DOT;
				i++;
				break;
			}
			r->state = S_TEXT;
			break; /* reprocess c as text */
		case S_TEXT: {
			/* Fast path: a run of ordinary octets. */
			size_t j = i;
			bool high = false;
			while (j < len && in[j] != '\r' && in[j] != '\n' && in[j] != '\0') {
				high |= (unsigned char)in[j] >= 0x80;
				j++;
			}
			if (j > i) {
				if (high)
					r->flags |= SMTP_DATA_8BIT;
				count_text(r, j - i);
				emit(r, out, in + i, j - i);
				i = j;
				break;
			}
			i++;
			if (c == '\r') {
				r->state = S_CR;
			} else if (c == '\n') {
				bare_terminator(r, SMTP_DATA_BARE_LF);
				end_line(r, out, false);
			} else { /* NUL */
				r->flags |= SMTP_DATA_NUL;
			}
			break;
		}
		case S_CR:
			if (c == '\n') {
				i++;
				end_line(r, out, true);
			} else {
				/* bare CR: ends the line, c starts the next one */
				bare_terminator(r, SMTP_DATA_BARE_CR);
				end_line(r, out, false);
			}
			break;
		case S_DOT:
			if (c == '\r') {
				r->state = S_DOT_CR;
				i++;
			} else if (c == '\n') {
				/* "." + bare LF: content, never the end of data */
				i++;
				bare_terminator(r, SMTP_DATA_BARE_LF);
				count_text(r, 1);
				emit(r, out, ".", 1);
				end_line(r, out, false);
			} else {
				/* dot-stuffed line: the leading "." is dropped */
				r->state = S_TEXT;
			}
			break;
		case S_DOT_CR:
			if (c == '\n') {
				i++;
				if (r->line_after_crlf) {
					r->done = true;
					break;
				}
				/* "." line after a bare terminator: content */
				count_text(r, 1);
				emit(r, out, ".", 1);
				end_line(r, out, true);
			} else {
				bare_terminator(r, SMTP_DATA_BARE_CR);
				count_text(r, 1);
				emit(r, out, ".", 1);
				end_line(r, out, false);
			}
			break;
		}
	}
	return i;
}

void smtp_data_stuff(const char *msg, size_t len, struct buf *out)
{
	bool sol = true;
	size_t i = 0;
	while (i < len) {
		if (sol && msg[i] == '.')
			buf_putc(out, '.');
		sol = false;
		size_t j = i;
		while (j < len && msg[j] != '\r' && msg[j] != '\n')
			j++;
		buf_append(out, msg + i, j - i);
		if (j == len) {
			i = j;
			break;
		}
		/* CR LF, bare CR and bare LF all become CR LF on the wire. */
		if (msg[j] == '\r' && j + 1 < len && msg[j + 1] == '\n')
			j++;
		buf_append(out, "\r\n", 2);
		sol = true;
		i = j + 1;
	}
	if (!sol)
		buf_append(out, "\r\n", 2);
	buf_append(out, ".\r\n", 3);
}
