/*
 * util.h - allocation wrappers, bounded byte buffers and small string helpers.
 *
 * Every allocation in strictrelay goes through xmalloc() and friends. They never
 * return NULL: on failure they log and abort(). The daemon cannot make progress
 * without memory, and everything it acknowledged is already in SQLite, so dying
 * loudly is the safe answer (Postfix's mymalloc does the same).
 *
 * struct buf is a growable byte buffer with a cap fixed at creation (max == 0
 * means "no cap"). buf_append() refuses to grow past the cap and returns -1, so
 * every consumer of network input decides what "too much" means up front.
 * The data is always NUL-terminated (the NUL is not counted in len), so a
 * buffer holding text can be passed to string functions directly.
 */
#ifndef STRICTRELAY_UTIL_H
#define STRICTRELAY_UTIL_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#if defined(__GNUC__)
#define SR_PRINTF(fmt, args) __attribute__((format(printf, fmt, args)))
#else
#define SR_PRINTF(fmt, args)
#endif

#define SR_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

void *xmalloc(size_t n);
void *xcalloc(size_t nmemb, size_t size);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);
char *xasprintf(const char *fmt, ...) SR_PRINTF(1, 2);
char *xvasprintf(const char *fmt, va_list ap) SR_PRINTF(1, 0);

struct buf {
	char *data;   /* NUL-terminated; NULL until the first append */
	size_t len;   /* bytes used, not counting the NUL */
	size_t cap;   /* bytes allocated */
	size_t max;   /* cap on len; 0 = unlimited */
};

void buf_init(struct buf *b, size_t max);
/* 0 on success, -1 when the result would exceed b->max (nothing appended). */
int buf_append(struct buf *b, const void *p, size_t n);
int buf_putc(struct buf *b, char c);
int buf_puts(struct buf *b, const char *s);
int buf_printf(struct buf *b, const char *fmt, ...) SR_PRINTF(2, 3);
int buf_vprintf(struct buf *b, const char *fmt, va_list ap) SR_PRINTF(2, 0);
/* Drop the first n bytes (n <= len). */
void buf_consume(struct buf *b, size_t n);
void buf_reset(struct buf *b);
void buf_free(struct buf *b);
/* Does s (non-empty) occur anywhere in b? (memmem is a GNU extension.) */
bool buf_contains(const struct buf *b, const char *s);
/* Hands the storage to the caller (never NULL; "" for an empty buffer) and resets b. */
char *buf_steal(struct buf *b, size_t *len);

/*
 * A buffer for building a whole text whose first failed append (the cap
 * reached) sticks: write everything, check err once at the end. data is
 * never NULL after part_init.
 */
struct part {
	struct buf b;
	bool err;
};
void part_init(struct part *p, size_t max);
void part_put(struct part *p, const char *s, size_t n);
void part_puts(struct part *p, const char *s);
void part_printf(struct part *p, const char *fmt, ...) SR_PRINTF(2, 3);

/* vsnprintf into err when err is not NULL: the "why" out-parameter idiom. */
void errf(char *err, size_t errlen, const char *fmt, ...) SR_PRINTF(3, 4);

/* Length (1..4) of the valid UTF-8 sequence at s, or 0: no overlong forms,
 * no surrogates, nothing above U+10FFFF. */
size_t utf8_seq_len(const unsigned char *s, size_t n);

/* A growable array of owned strings. */
struct strlist {
	char **v;
	size_t n;
	size_t cap;
};
void strlist_add(struct strlist *l, const char *s);
void strlist_add_owned(struct strlist *l, char *s);
void strlist_free(struct strlist *l);
void strlist_copy(struct strlist *dst, const struct strlist *src);
bool strlist_contains_ci(const struct strlist *l, const char *s);
/* Splits "a, b ,c" on commas (and, when also_space, on blanks), trims, skips
 * empty items. */
void strlist_split(struct strlist *l, const char *s, bool also_space);

bool str_ieq(const char *a, const char *b);
bool str_iprefix(const char *s, const char *prefix);
/* true if the last bytes of s equal suffix, ignoring ASCII case */
bool str_isuffix(const char *s, const char *suffix);
void str_lower(char *s);
/* Trims ASCII blanks (space, tab, CR, LF) in place; returns s advanced past
 * leading blanks. */
char *str_trim(char *s);
bool str_is_ascii(const char *s, size_t n);

/*
 * Writes a log-safe rendering of src into dst: unchanged when it holds only
 * printable ASCII without spaces, '"' or '\\'; otherwise wrapped in double
 * quotes with '"', '\\' and control or non-ASCII bytes escaped (\xNN).
 * Truncates (ending in "...") to fit dstlen. Returns dst.
 * Every value that came from the network goes through this before logging,
 * so a peer cannot forge log lines.
 */
const char *str_quote(char *dst, size_t dstlen, const char *src);

/* Monotonic milliseconds and wall-clock seconds. */
uint64_t now_ms(void);
int64_t now_unix(void);
/* "2026-11-23T09:30:00Z" */
void fmt_time_iso(char *dst, size_t dstlen, int64_t unix_secs);
/* RFC 5322 date: "Mon, 23 Nov 2026 09:30:00 +0000" */
void fmt_time_rfc5322(char *dst, size_t dstlen, int64_t unix_secs);
/* "3d04h", "2h05m", "5m", "12s": compact age for listings (negative: "0s") */
void fmt_duration(char *dst, size_t dstlen, int64_t secs);

/* Fills dst with n cryptographically random bytes (OpenSSL RAND_bytes);
 * aborts if the RNG fails. */
void random_bytes(void *dst, size_t n);
uint32_t random_u32(void);

#endif
