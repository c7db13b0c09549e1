/* util.c - see util.h */
#include "util.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/rand.h>

static void oom(size_t n)
{
	/* Not log_msg(): logging allocates nothing, but keep this path minimal. */
	fprintf(stderr, "strictrelay: panic: out of memory allocating %zu bytes\n", n);
	abort();
}

void *xmalloc(size_t n)
{
	void *p = malloc(n ? n : 1);
	if (p == NULL)
		oom(n);
	return p;
}

void *xcalloc(size_t nmemb, size_t size)
{
	void *p = calloc(nmemb ? nmemb : 1, size ? size : 1);
	if (p == NULL)
		oom(nmemb * size);
	return p;
}

void *xrealloc(void *p, size_t n)
{
	void *q = realloc(p, n ? n : 1);
	if (q == NULL)
		oom(n);
	return q;
}

char *xstrdup(const char *s)
{
	return xstrndup(s, strlen(s));
}

char *xstrndup(const char *s, size_t n)
{
	char *p = xmalloc(n + 1);
	memcpy(p, s, n);
	p[n] = '\0';
	return p;
}

char *xvasprintf(const char *fmt, va_list ap)
{
	va_list ap2;
	va_copy(ap2, ap);
	int n = vsnprintf(NULL, 0, fmt, ap2);
	va_end(ap2);
	if (n < 0)
		oom(0);
	char *p = xmalloc((size_t)n + 1);
	vsnprintf(p, (size_t)n + 1, fmt, ap);
	return p;
}

char *xasprintf(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	char *p = xvasprintf(fmt, ap);
	va_end(ap);
	return p;
}

/* --- struct buf --------------------------------------------------------- */

void buf_init(struct buf *b, size_t max)
{
	b->data = NULL;
	b->len = 0;
	b->cap = 0;
	b->max = max;
}

static void buf_reserve(struct buf *b, size_t need)
{
	/* need + 1 and the doubling below must not wrap around. */
	if (need > SIZE_MAX / 2)
		oom(need);
	if (need + 1 <= b->cap)
		return;
	size_t cap = b->cap ? b->cap : 64;
	while (cap < need + 1)
		cap *= 2;
	b->data = xrealloc(b->data, cap);
	b->cap = cap;
}

int buf_append(struct buf *b, const void *p, size_t n)
{
	if (b->max != 0 && (n > b->max || b->len > b->max - n))
		return -1;
	/* Uncapped: len + n must still not wrap (buf_reserve would then
	 * see a small size and memcpy would overrun the allocation). */
	if (n > SIZE_MAX / 2)
		oom(n);
	buf_reserve(b, b->len + n);
	if (n > 0)
		memcpy(b->data + b->len, p, n);
	b->len += n;
	b->data[b->len] = '\0';
	return 0;
}

int buf_putc(struct buf *b, char c)
{
	return buf_append(b, &c, 1);
}

int buf_puts(struct buf *b, const char *s)
{
	return buf_append(b, s, strlen(s));
}

int buf_vprintf(struct buf *b, const char *fmt, va_list ap)
{
	va_list ap2;
	va_copy(ap2, ap);
	int n = vsnprintf(NULL, 0, fmt, ap2);
	va_end(ap2);
	if (n < 0)
		return -1;
	if (b->max != 0 && ((size_t)n > b->max || b->len > b->max - (size_t)n))
		return -1;
	buf_reserve(b, b->len + (size_t)n);
	vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
	b->len += (size_t)n;
	return 0;
}

int buf_printf(struct buf *b, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int r = buf_vprintf(b, fmt, ap);
	va_end(ap);
	return r;
}

void buf_consume(struct buf *b, size_t n)
{
	if (n >= b->len) {
		b->len = 0;
	} else {
		memmove(b->data, b->data + n, b->len - n);
		b->len -= n;
	}
	if (b->data != NULL)
		b->data[b->len] = '\0';
}

void buf_reset(struct buf *b)
{
	b->len = 0;
	if (b->data != NULL)
		b->data[0] = '\0';
}

void buf_free(struct buf *b)
{
	free(b->data);
	b->data = NULL;
	b->len = 0;
	b->cap = 0;
}

bool buf_contains(const struct buf *b, const char *s)
{
	size_t n = strlen(s);
	if (n == 0 || b->data == NULL)
		return false;
	const char *h = b->data, *end = b->data + b->len;
	while ((size_t)(end - h) >= n) {
		const char *c = memchr(h, s[0], (size_t)(end - h) - n + 1);
		if (c == NULL)
			return false;
		if (memcmp(c, s, n) == 0)
			return true;
		h = c + 1;
	}
	return false;
}

char *buf_steal(struct buf *b, size_t *len)
{
	char *p = b->data;
	if (len != NULL)
		*len = b->len;
	if (p == NULL)
		p = xstrdup("");
	b->data = NULL;
	b->len = 0;
	b->cap = 0;
	return p;
}

/* --- struct part: the sticky-error writer ------------------------------ */

void part_init(struct part *p, size_t max)
{
	buf_init(&p->b, max);
	p->err = buf_append(&p->b, "", 0) < 0;
}

void part_put(struct part *p, const char *s, size_t n)
{
	if (!p->err && buf_append(&p->b, s, n) < 0)
		p->err = true;
}

void part_puts(struct part *p, const char *s)
{
	part_put(p, s, strlen(s));
}

void part_printf(struct part *p, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	if (!p->err && buf_vprintf(&p->b, fmt, ap) < 0)
		p->err = true;
	va_end(ap);
}

void errf(char *err, size_t errlen, const char *fmt, ...)
{
	if (err == NULL || errlen == 0)
		return;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

size_t utf8_seq_len(const unsigned char *s, size_t n)
{
	unsigned c = s[0];
	size_t len;
	uint32_t cp, min;
	if (c < 0x80)
		return n > 0 ? 1 : 0;
	if (c >= 0xc2 && c <= 0xdf) {
		len = 2;
		cp = c & 0x1f;
		min = 0x80;
	} else if (c >= 0xe0 && c <= 0xef) {
		len = 3;
		cp = c & 0x0f;
		min = 0x800;
	} else if (c >= 0xf0 && c <= 0xf4) {
		len = 4;
		cp = c & 0x07;
		min = 0x10000;
	} else {
		return 0;
	}
	if (n < len)
		return 0;
	for (size_t i = 1; i < len; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = (cp << 6) | (s[i] & 0x3f);
	}
	if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	return len;
}

/* --- struct strlist ----------------------------------------------------- */

void strlist_add_owned(struct strlist *l, char *s)
{
	if (l->n == l->cap) {
		l->cap = l->cap ? l->cap * 2 : 4;
		l->v = xrealloc(l->v, l->cap * sizeof(*l->v));
	}
	l->v[l->n++] = s;
}

void strlist_add(struct strlist *l, const char *s)
{
	strlist_add_owned(l, xstrdup(s));
}

void strlist_free(struct strlist *l)
{
	for (size_t i = 0; i < l->n; i++)
		free(l->v[i]);
	free(l->v);
	l->v = NULL;
	l->n = 0;
	l->cap = 0;
}

void strlist_copy(struct strlist *dst, const struct strlist *src)
{
	for (size_t i = 0; i < src->n; i++)
		strlist_add(dst, src->v[i]);
}

bool strlist_contains_ci(const struct strlist *l, const char *s)
{
	for (size_t i = 0; i < l->n; i++)
		if (str_ieq(l->v[i], s))
			return true;
	return false;
}

void strlist_split(struct strlist *l, const char *s, bool also_space)
{
	const char *p = s;
	while (*p != '\0') {
		size_t n = 0;
		while (p[n] != '\0' && p[n] != ',' &&
		       !(also_space && (p[n] == ' ' || p[n] == '\t')))
			n++;
		char *item = xstrndup(p, n);
		char *t = str_trim(item);
		if (*t != '\0')
			strlist_add(l, t);
		free(item);
		p += n;
		if (*p != '\0')
			p++;
	}
}

/* --- strings ------------------------------------------------------------ */

static int lower(int c)
{
	return (c >= 'A' && c <= 'Z') ? c + ('a' - 'A') : c;
}

bool str_ieq(const char *a, const char *b)
{
	while (*a != '\0' && lower((unsigned char)*a) == lower((unsigned char)*b)) {
		a++;
		b++;
	}
	return *a == '\0' && *b == '\0';
}

bool str_iprefix(const char *s, const char *prefix)
{
	while (*prefix != '\0') {
		if (lower((unsigned char)*s) != lower((unsigned char)*prefix))
			return false;
		s++;
		prefix++;
	}
	return true;
}

bool str_isuffix(const char *s, const char *suffix)
{
	size_t ls = strlen(s), lx = strlen(suffix);
	return lx <= ls && str_ieq(s + ls - lx, suffix);
}

void str_lower(char *s)
{
	for (; *s != '\0'; s++)
		*s = (char)lower((unsigned char)*s);
}

static bool is_blank(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

char *str_trim(char *s)
{
	while (is_blank(*s))
		s++;
	size_t n = strlen(s);
	while (n > 0 && is_blank(s[n - 1]))
		s[--n] = '\0';
	return s;
}

bool str_is_ascii(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)s[i] >= 0x80)
			return false;
	return true;
}

/* One byte of src as written inside quotes; returns its length (1, 2 or 4). */
static size_t quote_byte(unsigned char c, char out[5])
{
	if (c == '"' || c == '\\') {
		out[0] = '\\';
		out[1] = (char)c;
		return 2;
	}
	if (c < ' ' || c >= 0x7f) {
		snprintf(out, 5, "\\x%02x", c);
		return 4;
	}
	out[0] = (char)c;
	return 1;
}

const char *str_quote(char *dst, size_t dstlen, const char *src)
{
	const unsigned char *p;
	char tmp[5];
	size_t o = 0, need = 2;
	if (dstlen == 0)
		return dst;
	bool plain = *src != '\0';
	for (p = (const unsigned char *)src; *p != '\0'; p++)
		if (*p <= ' ' || *p >= 0x7f || *p == '"' || *p == '\\' || *p == '=')
			plain = false;
	if (plain) {
		size_t n = strlen(src);
		if (n < dstlen) {
			memcpy(dst, src, n + 1);
			return dst;
		}
	}
	/* The whole quoted form, when it fits. */
	for (p = (const unsigned char *)src; *p != '\0'; p++)
		need += quote_byte(*p, tmp);
	if (need < dstlen) {
		dst[o++] = '"';
		for (p = (const unsigned char *)src; *p != '\0'; p++) {
			size_t k = quote_byte(*p, tmp);
			memcpy(dst + o, tmp, k);
			o += k;
		}
		dst[o++] = '"';
		dst[o] = '\0';
		return dst;
	}
	/*
	 * Truncated: '"' + prefix + "...\"" + NUL. Quotes must stay balanced
	 * (a lone '"' would swallow the rest of a key=value log line), so a
	 * buffer too small for "\"...\"" gets a bare "..." or nothing.
	 */
	if (dstlen < 6) {
		const char *e = dstlen >= 4 ? "..." : "";
		memcpy(dst, e, strlen(e) + 1);
		return dst;
	}
	dst[o++] = '"';
	for (p = (const unsigned char *)src; *p != '\0'; p++) {
		size_t k = quote_byte(*p, tmp);
		/* Never split an escape; keep room for "...\"" and the NUL. */
		if (o + k + 5 > dstlen)
			break;
		memcpy(dst + o, tmp, k);
		o += k;
	}
	memcpy(dst + o, "...\"", 5);
	return dst;
}

/* --- time --------------------------------------------------------------- */

uint64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

int64_t now_unix(void)
{
	return (int64_t)time(NULL);
}

void fmt_time_iso(char *dst, size_t dstlen, int64_t unix_secs)
{
	time_t t = (time_t)unix_secs;
	struct tm tm;
	gmtime_r(&t, &tm);
	strftime(dst, dstlen, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

void fmt_time_rfc5322(char *dst, size_t dstlen, int64_t unix_secs)
{
	static const char days[7][4] = { "Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat" };
	static const char months[12][4] = { "Jan", "Feb", "Mar", "Apr", "May", "Jun",
					     "Jul", "Aug", "Sep", "Oct", "Nov", "Dec" };
	time_t t = (time_t)unix_secs;
	struct tm tm;
	gmtime_r(&t, &tm);
	/* Written by hand: strftime's %a/%b follow the locale. */
	snprintf(dst, dstlen, "%s, %02d %s %04d %02d:%02d:%02d +0000", days[tm.tm_wday],
		 tm.tm_mday, months[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min,
		 tm.tm_sec);
}

void fmt_duration(char *dst, size_t dstlen, int64_t secs)
{
	if (secs < 0)
		secs = 0;
	if (secs < 60)
		snprintf(dst, dstlen, "%llds", (long long)secs);
	else if (secs < 3600)
		snprintf(dst, dstlen, "%lldm", (long long)(secs / 60));
	else if (secs < 86400)
		snprintf(dst, dstlen, "%lldh%02lldm", (long long)(secs / 3600),
			 (long long)(secs % 3600 / 60));
	else
		snprintf(dst, dstlen, "%lldd%02lldh", (long long)(secs / 86400),
			 (long long)(secs % 86400 / 3600));
}

/* --- randomness --------------------------------------------------------- */

void random_bytes(void *dst, size_t n)
{
	if (RAND_bytes(dst, (int)n) != 1) {
		fprintf(stderr, "strictrelay: panic: RAND_bytes failed\n");
		abort();
	}
}

uint32_t random_u32(void)
{
	uint32_t v;
	random_bytes(&v, sizeof(v));
	return v;
}
