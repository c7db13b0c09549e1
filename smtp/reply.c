/* reply.c - see reply.h */
#include "reply.h"

#include <string.h>

enum {
	S_START,   /* nothing of a reply read yet (or the last one was returned) */
	S_CODE,    /* reading the 3 code digits of a line */
	S_SEP,     /* after the code: "-", " " or the end of the line */
	S_SEP_CR,  /* "ddd" CR: only LF may follow */
	S_TEXT,    /* the text of a line */
	S_CR,      /* a CR in the text: EOL if LF follows, else text */
	S_DONE,    /* a complete reply is in p->reply */
	S_ERROR,
};

/* Error reasons; static, so they can also be compared by pointer. */
static const char E_CODE[] = "reply does not start with a 3-digit code 100..599";
static const char E_SEP[] = "reply code not followed by a space, '-' or end of line";
static const char E_CHANGED[] = "reply code changed on a continuation line";
static const char E_NUL[] = "NUL octet in reply";
static const char E_LINE[] = "reply line longer than 2048 octets";
static const char E_LINES[] = "reply with more than 200 lines";
static const char E_SIZE[] = "reply longer than 65536 octets";

void smtp_reply_init(struct smtp_reply_parser *p)
{
	p->state = S_START;
	p->digits = 0;
	p->line_code = 0;
	p->last_line = false;
	p->line_len = 0;
	p->total = 0;
	p->text_len = 0;
	p->error = NULL;
	p->reply.code = 0;
	p->reply.enhanced[0] = '\0';
	p->reply.nlines = 0;
	p->reply.text[0] = '\0';
}

static void start_reply(struct smtp_reply_parser *p)
{
	smtp_reply_init(p);
	p->state = S_CODE;
}

static enum smtp_reply_status fail(struct smtp_reply_parser *p, const char *why)
{
	p->state = S_ERROR;
	p->error = why;
	return REPLY_ERROR;
}

static void start_line(struct smtp_reply_parser *p)
{
	p->state = S_CODE;
	p->digits = 0;
	p->line_code = 0;
	p->line_len = 0;
}

/* Stores one text octet of the current line. */
static enum smtp_reply_status text_octet(struct smtp_reply_parser *p, char c)
{
	if (c == '\0')
		return fail(p, E_NUL);
	if (++p->line_len > SMTP_REPLY_MAX_LINE)
		return fail(p, E_LINE);
	/* total bounds text_len (each line spends at least 4 octets of code
	 * and EOL on at most 1 NUL); checked anyway. */
	if (p->text_len + 1 >= sizeof(p->reply.text))
		return fail(p, E_SIZE);
	p->reply.text[p->text_len++] = c;
	return REPLY_NEED_MORE;
}

size_t smtp_enhanced_scan(const char *s, size_t len, int code)
{
	int cls = code / 100;
	if (len < 5 || (cls != 2 && cls != 4 && cls != 5) || s[0] != (char)('0' + cls) ||
	    s[1] != '.')
		return 0;
	size_t i = 2;
	for (int part = 0; part < 2; part++) {
		size_t start = i;
		while (i < len && i - start < 3 && s[i] >= '0' && s[i] <= '9')
			i++;
		if (i == start)
			return 0;
		if (part == 0) {
			if (i >= len || s[i] != '.')
				return 0;
			i++;
		}
	}
	if (i < len && s[i] != ' ')
		return 0;
	return i;
}

const char *smtp_status_generic(int code)
{
	switch (code / 100) {
	case 2:
		return "2.0.0";
	case 5:
		return "5.0.0";
	default:
		return "4.0.0";
	}
}

/* The current line is complete. */
static enum smtp_reply_status end_line(struct smtp_reply_parser *p)
{
	struct smtp_reply *r = &p->reply;
	p->reply.text[p->text_len++] = '\0';
	if (r->nlines == 1) {
		const char *t = r->text + r->line_off[0];
		size_t n = smtp_enhanced_scan(t, strlen(t), r->code);
		if (n > 0 && n < sizeof(r->enhanced)) {
			memcpy(r->enhanced, t, n);
			r->enhanced[n] = '\0';
		}
	}
	if (p->last_line) {
		p->state = S_DONE;
		return REPLY_DONE;
	}
	start_line(p);
	return REPLY_NEED_MORE;
}

/* The separator of the current line has been read: the line exists. */
static void open_line(struct smtp_reply_parser *p, bool last)
{
	struct smtp_reply *r = &p->reply;
	r->line_off[r->nlines++] = (uint32_t)p->text_len;
	p->last_line = last;
	p->line_len = 4;
}

static enum smtp_reply_status step(struct smtp_reply_parser *p, char c)
{
	struct smtp_reply *r = &p->reply;
	switch (p->state) {
	case S_CODE:
		if (p->digits == 0 && r->nlines >= SMTP_REPLY_MAX_LINES)
			return fail(p, E_LINES);
		if (c < '0' || c > '9' || (p->digits == 0 && (c < '1' || c > '5')))
			return fail(p, E_CODE);
		p->line_code = p->line_code * 10 + (c - '0');
		if (++p->digits < 3)
			return REPLY_NEED_MORE;
		if (r->nlines == 0)
			r->code = p->line_code;
		else if (p->line_code != r->code)
			return fail(p, E_CHANGED);
		p->state = S_SEP;
		return REPLY_NEED_MORE;
	case S_SEP:
		switch (c) {
		case '-':
			open_line(p, false);
			p->state = S_TEXT;
			return REPLY_NEED_MORE;
		case ' ':
			open_line(p, true);
			p->state = S_TEXT;
			return REPLY_NEED_MORE;
		case '\r':
			open_line(p, true);
			p->line_len = 3;
			p->state = S_SEP_CR;
			return REPLY_NEED_MORE;
		case '\n':
			open_line(p, true);
			p->line_len = 3;
			return end_line(p);
		default:
			return fail(p, E_SEP);
		}
	case S_SEP_CR:
		if (c != '\n')
			return fail(p, E_SEP);
		return end_line(p);
	case S_TEXT:
		if (c == '\r') {
			p->state = S_CR;
			return REPLY_NEED_MORE;
		}
		if (c == '\n')
			return end_line(p);
		return text_octet(p, c);
	case S_CR:
		if (c == '\n')
			return end_line(p);
		/* a CR inside the line is text; c is looked at again */
		p->state = S_TEXT;
		if (text_octet(p, '\r') == REPLY_ERROR)
			return REPLY_ERROR;
		return step(p, c);
	default:
		return fail(p, E_CODE); /* not reached: callers handle the rest */
	}
}

enum smtp_reply_status smtp_reply_feed(struct smtp_reply_parser *p, const char *in, size_t len,
				       size_t *consumed)
{
	*consumed = 0;
	if (p->state == S_ERROR)
		return REPLY_ERROR;
	if (p->state == S_START || p->state == S_DONE)
		start_reply(p);
	for (size_t i = 0; i < len; i++) {
		if (++p->total > SMTP_REPLY_MAX_SIZE) {
			*consumed = i;
			return fail(p, E_SIZE);
		}
		enum smtp_reply_status st = step(p, in[i]);
		if (st != REPLY_NEED_MORE) {
			*consumed = i + 1;
			return st;
		}
	}
	*consumed = len;
	return REPLY_NEED_MORE;
}

const struct smtp_reply *smtp_reply_get(const struct smtp_reply_parser *p)
{
	return p->state == S_DONE ? &p->reply : NULL;
}

const char *smtp_reply_error(const struct smtp_reply_parser *p)
{
	return p->state == S_ERROR && p->error != NULL ? p->error : "";
}

const char *smtp_reply_line(const struct smtp_reply *r, size_t i)
{
	if (i >= r->nlines)
		return "";
	return r->text + r->line_off[i];
}

const char *smtp_reply_status(const struct smtp_reply *r)
{
	return r->enhanced[0] != '\0' ? r->enhanced : smtp_status_generic(r->code);
}

/* --- rendering -------------------------------------------------------------- */

/*
 * Writes whole units (an octet or its escape) into dst; when one does not
 * fit, the output is cut back to the last unit boundary that leaves room
 * for "..." and the ellipsis is appended.
 */
struct out {
	char *dst;
	size_t cap;   /* dstlen - 1: room for text */
	size_t len;
	size_t mark;  /* last unit boundary with room for "..." after it */
	bool full;
};

static void out_unit(struct out *o, const char *u, size_t n)
{
	if (o->full)
		return;
	if (n > o->cap - o->len) {
		o->full = true;
		if (o->cap >= 3) {
			o->len = o->mark;
			memcpy(o->dst + o->len, "...", 3);
			o->len += 3;
		}
		return;
	}
	memcpy(o->dst + o->len, u, n);
	o->len += n;
	if (o->cap >= 3 && o->len <= o->cap - 3)
		o->mark = o->len;
}

static void out_escaped(struct out *o, const char *s, size_t n)
{
	static const char hex[] = "0123456789ABCDEF";
	for (size_t i = 0; i < n && !o->full; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c < 0x20 || c >= 0x7f) {
			char u[4] = { '\\', 'x', hex[c >> 4], hex[c & 15] };
			out_unit(o, u, 4);
		} else {
			out_unit(o, (const char *)&c, 1);
		}
	}
}

static const char *render(const struct smtp_reply *r, char *dst, size_t dstlen, bool with_code)
{
	if (dstlen == 0)
		return dst;
	struct out o = { .dst = dst, .cap = dstlen - 1 };
	size_t elen = strlen(r->enhanced);
	bool sep = false;
	if (with_code) {
		char code[4] = { (char)('0' + r->code / 100 % 10), (char)('0' + r->code / 10 % 10),
				 (char)('0' + r->code % 10), '\0' };
		out_unit(&o, code, 3);
		if (elen > 0) {
			out_unit(&o, " ", 1);
			out_unit(&o, r->enhanced, elen);
		}
		sep = true;
	}
	for (size_t i = 0; i < r->nlines && !o.full; i++) {
		const char *t = smtp_reply_line(r, i);
		size_t n = strlen(t);
		/* The enhanced code is shown once, up front (or not at all). */
		if (elen > 0 && n >= elen && memcmp(t, r->enhanced, elen) == 0 &&
		    (n == elen || t[elen] == ' ')) {
			t += elen;
			n -= elen;
			if (n > 0) {
				t++;
				n--;
			}
		}
		if (n == 0)
			continue;
		if (sep)
			out_unit(&o, " ", 1);
		out_escaped(&o, t, n);
		sep = true;
	}
	dst[o.len] = '\0';
	return dst;
}

const char *smtp_reply_render(const struct smtp_reply *r, char *dst, size_t dstlen)
{
	return render(r, dst, dstlen, true);
}

const char *smtp_reply_text(const struct smtp_reply *r, char *dst, size_t dstlen)
{
	return render(r, dst, dstlen, false);
}

/* --- EHLO capabilities ---------------------------------------------------- */

/* ASCII case-insensitive: does word[0..n) equal kw? */
static bool word_is(const char *word, size_t n, const char *kw)
{
	size_t k = strlen(kw);
	if (n != k)
		return false;
	for (size_t i = 0; i < n; i++) {
		char a = word[i], b = kw[i];
		if (a >= 'a' && a <= 'z')
			a = (char)(a - 'a' + 'A');
		if (a != b)
			return false;
	}
	return true;
}

/* Copies s[0..n) as printable ASCII (anything else becomes '?'), cut to
 * fit dstsize. */
static void copy_printable(char *dst, size_t dstsize, const char *s, size_t n)
{
	if (n >= dstsize)
		n = dstsize - 1;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		dst[i] = c >= 0x20 && c < 0x7f ? (char)c : '?';
	}
	dst[n] = '\0';
}

static size_t word_len(const char *s)
{
	size_t n = 0;
	while (s[n] != '\0' && s[n] != ' ')
		n++;
	return n;
}

static void take_name(const struct smtp_reply *r, struct smtp_caps *caps)
{
	const char *t = smtp_reply_line(r, 0);
	while (*t == ' ')
		t++;
	size_t n = word_len(t);
	if (n > 0)
		copy_printable(caps->name, sizeof(caps->name), t, n);
}

/* "SIZE", "SIZE 0", "SIZE 35882577": 0 = no limit. */
static uint64_t parse_size(const char *s)
{
	while (*s == ' ')
		s++;
	uint64_t v = 0;
	size_t i = 0;
	for (; s[i] >= '0' && s[i] <= '9'; i++) {
		unsigned d = (unsigned)(s[i] - '0');
		if (v > (UINT64_MAX - d) / 10)
			v = UINT64_MAX; /* saturate: no practical limit */
		else
			v = v * 10 + d;
	}
	if (s[i] != '\0' && s[i] != ' ')
		return 0; /* "SIZE 12abc": no usable limit */
	return v;
}

static void set_auth(struct smtp_caps *caps, const char *list)
{
	while (*list == ' ')
		list++;
	size_t n = strlen(list);
	while (n > 0 && list[n - 1] == ' ')
		n--;
	caps->auth = true;
	copy_printable(caps->auth_mechs, sizeof(caps->auth_mechs), list, n);
}

int smtp_caps_parse(const struct smtp_reply *ehlo, struct smtp_caps *caps)
{
	char name[SMTP_CAPS_NAME_MAX];
	memcpy(name, caps->name, sizeof(name));
	name[sizeof(name) - 1] = '\0';
	memset(caps, 0, sizeof(*caps));
	memcpy(caps->name, name, sizeof(name));
	if (ehlo->code / 100 != 2 || ehlo->nlines == 0)
		return -1;
	take_name(ehlo, caps);
	bool auth_space = false; /* "AUTH x" wins over the old "AUTH=x" */
	for (size_t i = 1; i < ehlo->nlines; i++) {
		const char *t = smtp_reply_line(ehlo, i);
		size_t n = word_len(t);
		if (word_is(t, n, "STARTTLS"))
			caps->starttls = true;
		else if (word_is(t, n, "PIPELINING"))
			caps->pipelining = true;
		else if (word_is(t, n, "8BITMIME"))
			caps->eightbitmime = true;
		else if (word_is(t, n, "SMTPUTF8"))
			caps->smtputf8 = true;
		else if (word_is(t, n, "REQUIRETLS"))
			caps->requiretls = true;
		else if (word_is(t, n, "ENHANCEDSTATUSCODES"))
			caps->enhancedstatuscodes = true;
		else if (word_is(t, n, "DSN"))
			caps->dsn = true;
		else if (word_is(t, n, "CHUNKING"))
			caps->chunking = true;
		else if (word_is(t, n, "SIZE")) {
			caps->size = true;
			caps->size_limit = parse_size(t + n);
		} else if (word_is(t, n, "AUTH")) {
			set_auth(caps, t + n);
			auth_space = true;
		} else if (n > 5 && word_is(t, 5, "AUTH=") && !auth_space) {
			set_auth(caps, t + 5);
		}
	}
	return 0;
}

void smtp_caps_name_from_greeting(const struct smtp_reply *greeting, struct smtp_caps *caps)
{
	if (greeting->nlines > 0)
		take_name(greeting, caps);
}
