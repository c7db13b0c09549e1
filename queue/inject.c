/* inject.c - the pure parts of `strictrelay sendmail`; see inject.h */
#include "inject.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/evp.h>

#include "smtp/parse.h"

/* --- the command line ------------------------------------------------------ */

static bool is_digits(const char *s)
{
	if (*s == '\0')
		return false;
	for (; *s != '\0'; s++)
		if (*s < '0' || *s > '9')
			return false;
	return true;
}

/* -bX: only -bm delivers; -bi has nothing to do; the rest are elsewhere. */
static int parse_mode(struct inject_opts *o, const char *v, char *err, size_t errlen)
{
	if (strcmp(v, "m") == 0) {
		o->mode = INJECT_MODE_DELIVER;
		return 0;
	}
	if (strcmp(v, "i") == 0) {
		o->mode = INJECT_MODE_NOTHING;
		return 0;
	}
	const char *instead = "";
	if (strcmp(v, "p") == 0)
		instead = " (use `strictrelay queue list`)";
	else if (strcmp(v, "d") == 0 || strcmp(v, "D") == 0)
		instead = " (use `strictrelay serve`)";
	else if (strcmp(v, "s") == 0)
		instead = " (send over SMTP to the relay's listen address instead)";
	errf(err, errlen, "-b%s is not supported%s; only -bm (the default) and -bi", v, instead);
	return -1;
}

/* One option that takes a value. */
static int option_value(struct inject_opts *o, char c, const char *v, char *err, size_t errlen)
{
	switch (c) {
	case 'f':
	case 'r':
		o->sender = v;
		return 0;
	case 'F':
		o->fullname = v;
		return 0;
	case 'c':
	case 'C':
		if (*v == '\0') {
			errf(err, errlen, "-%c needs a file name", c);
			return -1;
		}
		o->config = v;
		return 0;
	case 'o':
		/* -oi is -i; sendmail's other -oX options mean nothing here */
		if (strcmp(v, "i") == 0)
			o->ignore_dots = true;
		return 0;
	case 'b':
		return parse_mode(o, v, err, errlen);
	case 'N':
		if (smtp_parse_notify(v, o->notify, sizeof(o->notify)) < 0) {
			errf(err, errlen,
			     "-N \"%s\": give never, or a list of success, delay, failure", v);
			return -1;
		}
		return 0;
	case 'R':
		if (str_ieq(v, "full"))
			o->ret = "FULL";
		else if (str_ieq(v, "hdrs"))
			o->ret = "HDRS";
		else {
			errf(err, errlen, "-R \"%s\": give full or hdrs", v);
			return -1;
		}
		return 0;
	case 'V':
		if (*v == '\0' || strlen(v) > 100 || !smtp_valid_xtext(v)) {
			errf(err, errlen, "-V \"%s\": the envelope id must be xtext of at most 100 characters",
			     v);
			return -1;
		}
		o->envid = v;
		return 0;
	case 'B':
		if (str_ieq(v, "8BITMIME"))
			o->body_8bitmime = true;
		else if (!str_ieq(v, "7BIT")) {
			errf(err, errlen, "-B \"%s\": give 7BIT or 8BITMIME", v);
			return -1;
		}
		return 0;
	default:
		/* -e -L -O -p -X: accepted, meaningless here */
		return 0;
	}
}

int inject_parse_args(struct inject_opts *o, int argc, char **argv, int first, char *err,
		      size_t errlen)
{
	memset(o, 0, sizeof(*o));
	o->ret = "";
	o->envid = "";
	bool options_done = false;
	for (int i = first; i < argc; i++) {
		const char *a = argv[i];
		if (options_done || a[0] != '-' || a[1] == '\0') {
			strlist_add(&o->rcpts, a);
			continue;
		}
		if (strcmp(a, "--") == 0) {
			options_done = true;
			continue;
		}
		if (strcmp(a, "--help") == 0) {
			o->mode = INJECT_MODE_HELP;
			continue;
		}
		if (a[1] == '-') {
			errf(err, errlen, "unknown option %s", a);
			return -1;
		}
		/* A cluster of flags ("-ti"), the last of which may take a value
		 * attached ("-fuser@example.org") or as the next argument. */
		for (const char *p = a + 1; *p != '\0'; p++) {
			char c = *p;
			if (strchr("tivGImnUx", c) != NULL) {
				if (c == 't')
					o->extract = true;
				else if (c == 'i')
					o->ignore_dots = true;
				else if (c == 'v')
					o->verbose = true;
				continue;
			}
			if (c == 'q') {
				errf(err, errlen, "%s: use `strictrelay queue flush` to deliver the queue now",
				     a);
				return -1;
			}
			if (c == 'h') {
				/* -h N (hop count) is ignored; -h alone asks for help */
				const char *v = p[1] != '\0' ? p + 1 : (i + 1 < argc ? argv[i + 1] : "");
				if (is_digits(v)) {
					if (p[1] == '\0')
						i++;
				} else {
					o->mode = INJECT_MODE_HELP;
				}
				break;
			}
			if (strchr("fFrcCobNRVBeLOpX", c) == NULL) {
				errf(err, errlen, "unknown option -%c", c);
				return -1;
			}
			const char *v;
			if (p[1] != '\0') {
				v = p + 1;
			} else if (i + 1 < argc) {
				v = argv[++i];
			} else {
				errf(err, errlen, "-%c needs a value", c);
				return -1;
			}
			if (option_value(o, c, v, err, errlen) < 0)
				return -1;
			break;
		}
	}
	return 0;
}

void inject_opts_free(struct inject_opts *o)
{
	strlist_free(&o->rcpts);
}

/* --- reading the message ------------------------------------------------------ */

void inject_reader_init(struct inject_reader *r, uint64_t max_size, bool ignore_dots)
{
	memset(r, 0, sizeof(*r));
	r->max_size = max_size;
	r->ignore_dots = ignore_dots;
	r->line_no = 1;
}

static void put(struct inject_reader *r, struct buf *out, const char *p, size_t n)
{
	r->size += n;
	if (r->flags & INJECT_TOO_BIG)
		return;
	if (r->size > r->max_size) {
		r->flags |= INJECT_TOO_BIG;
		return;
	}
	if (buf_append(out, p, n) < 0)
		r->flags |= INJECT_TOO_BIG; /* the caller capped out below max_size */
}

static void end_line(struct inject_reader *r, struct buf *out)
{
	if (r->held_dot) {
		/* the line is "." (held only without -i) */
		r->held_dot = false;
		r->done = true;
		return;
	}
	if (r->line_no == r->long_line)
		r->long_len = r->line_len;
	put(r, out, "\r\n", 2);
	r->line_len = 0;
	r->line_no++;
}

/* Octets of one line that are not CR or LF. */
static void line_text(struct inject_reader *r, const char *p, size_t n, struct buf *out)
{
	if (r->line_len == 0 && !r->ignore_dots && p[0] == '.') {
		r->held_dot = true;
		r->line_len = 1;
		p++;
		n--;
		if (n == 0)
			return;
	}
	if (r->held_dot) {
		r->held_dot = false;
		put(r, out, ".", 1);
	}
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)p[i];
		if (c == '\0' && !(r->flags & INJECT_NUL)) {
			r->flags |= INJECT_NUL;
			r->nul_line = r->line_no;
		} else if (c >= 0x80) {
			r->flags |= INJECT_8BIT;
		}
	}
	r->line_len += n;
	if (r->line_len > INJECT_MAX_LINE && !(r->flags & INJECT_LINE_TOO_LONG)) {
		r->flags |= INJECT_LINE_TOO_LONG;
		r->long_line = r->line_no;
	}
	put(r, out, p, n);
}

size_t inject_reader_feed(struct inject_reader *r, const char *in, size_t len, struct buf *out)
{
	size_t i = 0;
	while (i < len && !r->done) {
		char c = in[i];
		if (r->pending_cr) {
			r->pending_cr = false;
			if (c == '\n') {
				end_line(r, out);
				i++;
				continue;
			}
			end_line(r, out); /* a bare CR ends a line too */
			continue;
		}
		if (c == '\r') {
			r->pending_cr = true;
			i++;
			continue;
		}
		if (c == '\n') {
			end_line(r, out);
			i++;
			continue;
		}
		size_t j = i;
		while (j < len && in[j] != '\r' && in[j] != '\n')
			j++;
		line_text(r, in + i, j - i, out);
		i = j;
	}
	return i;
}

void inject_reader_finish(struct inject_reader *r, struct buf *out)
{
	if (r->done)
		return;
	if (r->pending_cr || r->line_len > 0) {
		r->pending_cr = false;
		end_line(r, out);
	}
}

/* --- headers --------------------------------------------------------------------- */

static bool is_wsp(char c)
{
	return c == ' ' || c == '\t';
}

/* Offset just past the line at off (its LF), or len. */
static size_t next_line(const char *msg, size_t len, size_t off)
{
	const char *lf = off < len ? memchr(msg + off, '\n', len - off) : NULL;
	return lf ? (size_t)(lf - msg) + 1 : len;
}

/* Length of the field name of a header line ("Name:" or "Name :"), 0 when
 * the line is not a header field. */
static size_t field_name_len(const char *line, size_t n)
{
	size_t i = 0;
	while (i < n && (unsigned char)line[i] > 32 && (unsigned char)line[i] < 127 &&
	       line[i] != ':')
		i++;
	size_t name = i;
	while (i < n && is_wsp(line[i]))
		i++;
	if (name == 0 || i >= n || line[i] != ':')
		return 0;
	return name;
}

static bool name_is(const char *name, size_t n, const char *want)
{
	size_t k = strlen(want);
	if (n != k)
		return false;
	for (size_t i = 0; i < n; i++) {
		char a = name[i], b = want[i];
		if (a >= 'A' && a <= 'Z')
			a = (char)(a - 'A' + 'a');
		if (b >= 'A' && b <= 'Z')
			b = (char)(b - 'A' + 'a');
		if (a != b)
			return false;
	}
	return true;
}

char *inject_next_field(const char *msg, size_t end, size_t off, size_t *name_len, size_t *next)
{
	if (off >= end)
		return NULL;
	size_t eol = next_line(msg, end, off);
	size_t n = field_name_len(msg + off, eol - off);
	*name_len = n;
	struct buf v;
	buf_init(&v, 0);
	const char *colon = memchr(msg + off, ':', eol - off);
	size_t from = colon ? (size_t)(colon - msg) + 1 : eol;
	for (;;) {
		size_t text = eol;
		while (text > from && (msg[text - 1] == '\n' || msg[text - 1] == '\r'))
			text--;
		buf_append(&v, msg + from, text - from);
		if (eol >= end || !is_wsp(msg[eol]))
			break;
		from = eol;
		eol = next_line(msg, end, eol);
	}
	*next = eol;
	size_t dummy;
	return buf_steal(&v, &dummy);
}

/* RFC 8689 5: the value is "No", blanks around it allowed, any case. */
static bool tls_required_no(const char *v)
{
	while (is_wsp(*v))
		v++;
	if (!str_iprefix(v, "no"))
		return false;
	for (v += 2; *v != '\0'; v++)
		if (!is_wsp(*v))
			return false;
	return true;
}

void inject_scan_headers(const char *msg, size_t len, struct inject_header_info *h)
{
	memset(h, 0, sizeof(*h));
	if (len >= 5 && memcmp(msg, "From ", 5) == 0)
		h->start = next_line(msg, len, 0);
	size_t off = h->start;
	for (;;) {
		if (off >= len)
			break;
		size_t eol = next_line(msg, len, off);
		const char *line = msg + off;
		size_t n = eol - off;
		if ((n >= 2 && line[0] == '\r' && line[1] == '\n') || (n >= 1 && line[0] == '\n')) {
			h->separator = true;
			break;
		}
		if (is_wsp(line[0])) {
			if (off == h->start)
				break; /* the body starts with a blank: no headers at all */
		} else if (field_name_len(line, n) == 0) {
			break; /* not a header field: the body starts here */
		}
		off = eol;
	}
	h->end = off;
	size_t name_len, next;
	for (off = h->start; off < h->end; off = next) {
		char *value = inject_next_field(msg, h->end, off, &name_len, &next);
		const char *name = msg + off;
		if (name_is(name, name_len, "From"))
			h->has_from = true;
		else if (name_is(name, name_len, "Date"))
			h->has_date = true;
		else if (name_is(name, name_len, "Message-ID"))
			h->has_message_id = true;
		else if (name_is(name, name_len, "Received"))
			h->received++;
		else if (name_is(name, name_len, "Resent-To") || name_is(name, name_len, "Resent-Cc") ||
			 name_is(name, name_len, "Resent-Bcc"))
			h->has_resent_rcpt = true;
		else if (name_is(name, name_len, "TLS-Required") && tls_required_no(value))
			h->tls_required_no = true;
		free(value);
	}
}

/* --- addresses ---------------------------------------------------------------------- */

/* Checks one addr-spec with the SMTP path parser; appends it to out. */
static int check_addr(const char *addr, struct strlist *out, bool *utf8, char *err, size_t errlen)
{
	size_t n = strlen(addr);
	if (n + 2 > SMTP_MAX_PATH) {
		errf(err, errlen, "\"%.60s...\": address longer than %d characters", addr,
		     SMTP_MAX_PATH - 2);
		return -1;
	}
	if (strchr(addr, '@') == NULL) {
		errf(err, errlen,
		     "\"%s\": address has no domain (this relay has no local mailboxes; write user@domain)",
		     addr);
		return -1;
	}
	char path[SMTP_MAX_PATH + 1];
	snprintf(path, sizeof(path), "<%s>", addr);
	char *s = path;
	struct smtp_path p;
	const char *detail = NULL;
	if (smtp_parse_path(&s, &p, &detail) != SMTP_PARSE_OK) {
		errf(err, errlen, "\"%s\": %s", addr, detail ? detail : "bad address");
		return -1;
	}
	if (p.addr[0] == '\0' || p.domain[0] == '\0') {
		errf(err, errlen,
		     "\"%s\": address has no domain (this relay has no local mailboxes; write user@domain)",
		     addr);
		return -1;
	}
	if (p.has_utf8 && utf8 != NULL)
		*utf8 = true;
	strlist_add(out, p.addr);
	return 0;
}

/* Copies a quoted string at *pp (at the '"') into b, quotes and escapes
 * included; advances *pp to the closing quote. -1 if unterminated. */
static int copy_quoted(const char **pp, struct buf *b)
{
	const char *p = *pp;
	buf_putc(b, '"');
	for (p++; *p != '\0' && *p != '"'; p++) {
		if (*p == '\\' && p[1] != '\0') {
			buf_putc(b, *p++);
		}
		buf_putc(b, *p);
	}
	if (*p != '"')
		return -1;
	buf_putc(b, '"');
	*pp = p;
	return 0;
}

/* Skips a (possibly nested) comment at *pp (at the '('); leaves *pp on
 * its closing ')'. -1 if unterminated. */
static int skip_comment(const char **pp)
{
	const char *p = *pp;
	int depth = 0;
	for (; *p != '\0'; p++) {
		if (*p == '\\' && p[1] != '\0') {
			p++;
		} else if (*p == '(') {
			depth++;
		} else if (*p == ')') {
			if (--depth == 0) {
				*pp = p;
				return 0;
			}
		}
	}
	return -1;
}

int inject_parse_address_list(const char *value, struct strlist *out, bool *utf8, char *err,
			      size_t errlen)
{
	struct buf text, angle;
	buf_init(&text, 0);
	buf_init(&angle, 0);
	bool in_angle = false, have_angle = false, in_group = false;
	bool space = false, gap = false;
	int rc = 0;
	for (const char *p = value;; p++) {
		char c = *p;
		bool element_end = c == '\0' || (!in_angle && (c == ',' || (c == ';' && in_group)));
		if (element_end) {
			if (in_angle) {
				errf(err, errlen, "\"%s\": missing '>'", value);
				rc = -1;
				break;
			}
			const char *addr = have_angle ? (angle.data ? angle.data : "")
						      : (text.data ? text.data : "");
			if (!have_angle && gap) {
				errf(err, errlen, "\"%s\": not an address (a name needs the address in <>)",
				     addr);
				rc = -1;
				break;
			}
			if (*addr != '\0' && check_addr(addr, out, utf8, err, errlen) < 0) {
				rc = -1;
				break;
			}
			buf_reset(&text);
			buf_reset(&angle);
			have_angle = space = gap = false;
			if (c == ';')
				in_group = false;
			if (c == '\0')
				break;
			continue;
		}
		if (c == '(') {
			if (skip_comment(&p) < 0) {
				errf(err, errlen, "\"%s\": unterminated comment", value);
				rc = -1;
				break;
			}
			space = true;
			continue;
		}
		if (c == ' ' || c == '\t' || c == '\r' || c == '\n') {
			space = true;
			continue;
		}
		struct buf *into = in_angle ? &angle : &text;
		if (c == '"') {
			if (!in_angle && space && text.len > 0)
				gap = true;
			space = false;
			if (copy_quoted(&p, into) < 0) {
				errf(err, errlen, "\"%s\": unterminated quoted string", value);
				rc = -1;
				break;
			}
			continue;
		}
		if (in_angle) {
			if (c == '>') {
				in_angle = false;
				have_angle = true;
			} else {
				buf_putc(&angle, c);
			}
			continue;
		}
		if (c == '<') {
			if (have_angle) {
				errf(err, errlen, "\"%s\": two <addresses> without a comma", value);
				rc = -1;
				break;
			}
			/* what came before was the display name */
			in_angle = true;
			buf_reset(&text);
			space = gap = false;
			continue;
		}
		if (have_angle) {
			errf(err, errlen, "\"%s\": text after the <address>", value);
			rc = -1;
			break;
		}
		if (c == ':' && !in_group) {
			/* "group: a@x, b@y;" - what came before names the group */
			in_group = true;
			buf_reset(&text);
			space = gap = false;
			continue;
		}
		if (space && text.len > 0)
			gap = true;
		space = false;
		if (c == '[') {
			/* a domain literal, which may hold ':' */
			const char *close = strchr(p, ']');
			if (close == NULL) {
				errf(err, errlen, "\"%s\": missing ']'", value);
				rc = -1;
				break;
			}
			buf_append(&text, p, (size_t)(close - p) + 1);
			p = close;
			continue;
		}
		buf_putc(&text, c);
	}
	buf_free(&text);
	buf_free(&angle);
	return rc;
}

int inject_parse_address(const char *in, bool allow_null, char *out, size_t outlen, bool *utf8,
			 char *err, size_t errlen)
{
	char *copy = xstrdup(in);
	char *t = str_trim(copy);
	bool null = *t == '\0' || strcmp(t, "<>") == 0;
	free(copy);
	if (null) {
		if (!allow_null) {
			errf(err, errlen, "empty address");
			return -1;
		}
		snprintf(out, outlen, "%s", "");
		return 0;
	}
	struct strlist l = { 0 };
	int rc = inject_parse_address_list(in, &l, utf8, err, errlen);
	if (rc == 0 && l.n != 1) {
		errf(err, errlen, "\"%s\": give exactly one address", in);
		rc = -1;
	}
	if (rc == 0)
		snprintf(out, outlen, "%s", l.v[0]);
	strlist_free(&l);
	return rc;
}

/* Same address: local part exactly, domain without case. */
static bool same_addr(const char *a, const char *b)
{
	const char *at_a = strrchr(a, '@'), *at_b = strrchr(b, '@');
	if (at_a == NULL || at_b == NULL)
		return strcmp(a, b) == 0;
	return at_a - a == at_b - b && memcmp(a, b, (size_t)(at_a - a)) == 0 &&
	       str_ieq(at_a + 1, at_b + 1);
}

void inject_add_rcpt(struct strlist *l, const char *addr)
{
	for (size_t i = 0; i < l->n; i++)
		if (same_addr(l->v[i], addr))
			return;
	strlist_add(l, addr);
}

int inject_header_rcpts(const char *msg, const struct inject_header_info *h,
			struct strlist *out, bool *utf8, char *err, size_t errlen)
{
	static const char *const plain[] = { "To", "Cc", "Bcc" };
	static const char *const resent[] = { "Resent-To", "Resent-Cc", "Resent-Bcc" };
	const char *const *names = h->has_resent_rcpt ? resent : plain;
	size_t name_len, next;
	for (size_t off = h->start; off < h->end; off = next) {
		char *value = inject_next_field(msg, h->end, off, &name_len, &next);
		const char *name = msg + off;
		for (size_t k = 0; k < 3; k++) {
			if (!name_is(name, name_len, names[k]))
				continue;
			struct strlist found = { 0 };
			char why[400];
			if (inject_parse_address_list(value, &found, utf8, why, sizeof(why)) < 0) {
				errf(err, errlen, "%s: header: %s", names[k], why);
				strlist_free(&found);
				free(value);
				return -1;
			}
			for (size_t i = 0; i < found.n; i++)
				inject_add_rcpt(out, found.v[i]);
			strlist_free(&found);
		}
		free(value);
	}
	return 0;
}

/* --- the queued message ----------------------------------------------------------- */

/* A display name: as is when it is an RFC 5322 atom sequence, else a quoted
 * string; non-ASCII (valid UTF-8) as an RFC 2047 encoded word. */
static void put_display_name(struct buf *out, const char *name)
{
	size_t n = strlen(name);
	bool ascii = true, plain = true;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)name[i];
		if (c >= 0x80)
			ascii = false;
		else if (!(c == ' ' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
			   (c >= '0' && c <= '9') || strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL))
			plain = false;
	}
	if (!ascii) {
		/* RFC 2047 B encoding; invalid UTF-8 becomes '?' first */
		struct buf clean;
		buf_init(&clean, 0);
		for (size_t i = 0; i < n;) {
			size_t k = utf8_seq_len((const unsigned char *)name + i, n - i);
			unsigned char c = (unsigned char)name[i];
			if (k == 0 || (k == 1 && c < 32)) {
				buf_putc(&clean, '?');
				i++;
			} else {
				buf_append(&clean, name + i, k);
				i += k;
			}
		}
		char *enc = xmalloc(4 * ((clean.len + 2) / 3) + 1);
		EVP_EncodeBlock((unsigned char *)enc, (const unsigned char *)clean.data,
				(int)clean.len);
		buf_printf(out, "=?UTF-8?B?%s?=", enc);
		free(enc);
		buf_free(&clean);
		return;
	}
	if (plain) {
		buf_puts(out, name);
		return;
	}
	buf_putc(out, '"');
	for (size_t i = 0; i < n; i++) {
		char c = name[i];
		if ((unsigned char)c < 32 || c == 127)
			continue;
		if (c == '"' || c == '\\')
			buf_putc(out, '\\');
		buf_putc(out, c);
	}
	buf_putc(out, '"');
}

/* Whether the header line at off is a Bcc: or Resent-Bcc: field. */
static bool is_bcc(const char *msg, size_t len, size_t off)
{
	size_t eol = next_line(msg, len, off);
	size_t n = field_name_len(msg + off, eol - off);
	return name_is(msg + off, n, "Bcc") || name_is(msg + off, n, "Resent-Bcc");
}

void inject_build(const struct inject_build_params *p, const char *msg, size_t len,
		  const struct inject_header_info *h, struct buf *out)
{
	char date[64];
	fmt_time_rfc5322(date, sizeof(date), p->now);
	/* Like the SMTP path's (smtp/session.c), with the local user in place
	 * of the client. */
	buf_printf(out, "Received: by %s (strictrelay, from userid %u)\r\n\tid %s", p->hostname,
		   p->uid, p->qid);
	if (p->rcpts->n == 1 && strlen(p->rcpts->v[0]) < 256)
		buf_printf(out, "\r\n\tfor <%s>", p->rcpts->v[0]);
	buf_printf(out, "; %s\r\n", date);

	/* the headers, without Bcc: (each field with its continuation lines) */
	size_t off = h->start;
	while (off < h->end) {
		size_t eol = next_line(msg, h->end, off);
		bool drop = is_bcc(msg, h->end, off);
		while (eol < h->end && is_wsp(msg[eol]))
			eol = next_line(msg, h->end, eol);
		if (!drop)
			buf_append(out, msg + off, eol - off);
		off = eol;
	}
	if (h->end > h->start && (out->len < 2 || out->data[out->len - 1] != '\n'))
		buf_puts(out, "\r\n");

	if (!h->has_from) {
		buf_puts(out, "From: ");
		if (p->fullname != NULL && p->fullname[0] != '\0') {
			put_display_name(out, p->fullname);
			buf_putc(out, ' ');
		}
		if (p->sender[0] != '\0')
			buf_printf(out, "<%s>\r\n", p->sender);
		else
			buf_printf(out, "<%s@%s>\r\n", p->login, p->hostname);
	}
	if (!h->has_date)
		buf_printf(out, "Date: %s\r\n", date);
	if (!h->has_message_id) {
		char stamp[32];
		time_t t = (time_t)p->now;
		struct tm tm;
		gmtime_r(&t, &tm);
		strftime(stamp, sizeof(stamp), "%Y%m%d%H%M%S", &tm);
		buf_printf(out, "Message-ID: <%s.%s@%s>\r\n", stamp, p->qid, p->hostname);
	}
	/* the body, after the empty line (added when the message had none) */
	if (h->separator) {
		buf_append(out, msg + h->end, len - h->end);
	} else if (h->end < len) {
		buf_puts(out, "\r\n");
		buf_append(out, msg + h->end, len - h->end);
	}
}
