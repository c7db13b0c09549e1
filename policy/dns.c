/* dns.c - see dns.h */
#include "dns.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DNS_TYPE_SOA 6

const char *dns_status_name(enum dns_status s)
{
	switch (s) {
	case DNS_OK:
		return "OK";
	case DNS_NXDOMAIN:
		return "NXDOMAIN";
	case DNS_NODATA:
		return "NODATA";
	case DNS_TEMPFAIL:
		return "TEMPFAIL";
	case DNS_BADNAME:
		return "BADNAME";
	}
	return "?";
}

/* --- results ---------------------------------------------------------------- */

void dns_result_free(struct dns_result *res)
{
	dns_mx_free(res->mx, res->nmx);
	free(res->addrs);
	strlist_free(&res->txt);
	memset(res, 0, sizeof(*res));
}

void dns_result_copy(struct dns_result *dst, const struct dns_result *src)
{
	*dst = *src;
	dst->mx = NULL;
	dst->addrs = NULL;
	memset(&dst->txt, 0, sizeof(dst->txt));
	if (src->nmx > 0) {
		dst->mx = xcalloc(src->nmx, sizeof(*dst->mx));
		for (size_t i = 0; i < src->nmx; i++) {
			dst->mx[i].host = xstrdup(src->mx[i].host);
			dst->mx[i].pref = src->mx[i].pref;
		}
	}
	if (src->naddrs > 0) {
		dst->addrs = xmalloc(src->naddrs * sizeof(*dst->addrs));
		memcpy(dst->addrs, src->addrs, src->naddrs * sizeof(*dst->addrs));
	}
	strlist_copy(&dst->txt, &src->txt);
}

/* --- names ------------------------------------------------------------------ */

static bool ldh_or_underscore(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       c == '-' || c == '_';
}

int dns_name_normalize(const char *name, char *out, char *err, size_t errlen)
{
	size_t len = name != NULL ? strlen(name) : 0;
	/* One trailing dot is the absolute form of the same name. */
	if (len > 0 && name[len - 1] == '.')
		len--;
	if (len == 0) {
		snprintf(err, errlen, "empty name");
		return -1;
	}
	if (len > DNS_NAME_MAX) {
		snprintf(err, errlen, "name longer than %d characters", DNS_NAME_MAX);
		return -1;
	}
	size_t label = 0;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)name[i];
		if (c == '.') {
			if (label == 0) {
				snprintf(err, errlen, "empty label");
				return -1;
			}
			label = 0;
		} else if (c >= 0x80) {
			snprintf(err, errlen, "non-ASCII name (only A-labels are looked up)");
			return -1;
		} else if (!ldh_or_underscore(c)) {
			snprintf(err, errlen, "invalid character 0x%02x in name", c);
			return -1;
		} else if (++label > DNS_LABEL_MAX) {
			snprintf(err, errlen, "label longer than %d characters", DNS_LABEL_MAX);
			return -1;
		}
		out[i] = (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : (char)c;
	}
	if (label == 0) {
		/* "a..": the dot we removed followed another one */
		snprintf(err, errlen, "empty label");
		return -1;
	}
	out[len] = '\0';
	return 0;
}

/* --- raw messages ------------------------------------------------------------ */

static uint16_t get16(const unsigned char *p)
{
	return (uint16_t)((p[0] << 8) | p[1]);
}

static uint32_t get32(const unsigned char *p)
{
	return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

/* Skips a (possibly compressed) name at *off. 0, or -1 if malformed. */
static int skip_name(const unsigned char *msg, size_t len, size_t *off)
{
	size_t o = *off;
	for (;;) {
		if (o >= len)
			return -1;
		unsigned char b = msg[o];
		if (b == 0) {
			*off = o + 1;
			return 0;
		}
		if ((b & 0xc0) == 0xc0) {
			if (o + 2 > len)
				return -1;
			*off = o + 2;
			return 0;
		}
		if ((b & 0xc0) != 0)
			return -1; /* obsolete label types */
		o += 1 + b;
	}
}

static uint32_t sane_ttl(uint32_t t)
{
	/* RFC 2181 8: a TTL with the top bit set is treated as zero. */
	return t > 0x7fffffffu ? 0 : t;
}

int dns_msg_ttls(const unsigned char *msg, size_t len, struct dns_msg_ttl *out)
{
	memset(out, 0, sizeof(*out));
	if (msg == NULL || len < 12)
		return -1;
	unsigned qd = get16(msg + 4), an = get16(msg + 6), ns = get16(msg + 8);
	size_t off = 12;
	for (unsigned i = 0; i < qd; i++) {
		if (skip_name(msg, len, &off) < 0 || off + 4 > len)
			return -1;
		off += 4;
	}
	for (unsigned i = 0; i < an + ns; i++) {
		if (skip_name(msg, len, &off) < 0 || off + 10 > len)
			return -1;
		uint16_t type = get16(msg + off);
		uint32_t ttl = sane_ttl(get32(msg + off + 4));
		uint16_t rdlen = get16(msg + off + 8);
		off += 10;
		if (off + rdlen > len)
			return -1;
		if (i < an) {
			if (!out->has_answer || ttl < out->answer_min)
				out->answer_min = ttl;
			out->has_answer = true;
		} else if (type == DNS_TYPE_SOA && rdlen >= 22) {
			/* MNAME and RNAME (at least one byte each), then five
			 * 32-bit fields, MINIMUM last. */
			uint32_t minimum = sane_ttl(get32(msg + off + rdlen - 4));
			uint32_t neg = ttl < minimum ? ttl : minimum;
			if (!out->has_soa || neg < out->negative)
				out->negative = neg;
			out->has_soa = true;
		}
		off += rdlen;
	}
	return 0;
}

/* --- TXT ------------------------------------------------------------------- */

static void txt_flush(struct buf *b, struct strlist *out)
{
	size_t n;
	strlist_add_owned(out, buf_steal(b, &n));
}

void dns_txt_join(const struct dns_txt_piece *p, size_t n, struct strlist *out)
{
	struct buf b;
	buf_init(&b, 0); /* bounded by the DNS message it came from */
	for (size_t i = 0; i < n; i++) {
		/* The first piece starts a record whatever its flag says. */
		if (i > 0 && p[i].record_start)
			txt_flush(&b, out);
		for (size_t k = 0; k < p[i].len; k++) {
			char c = p[i].data[k] == 0 ? 0x7f : (char)p[i].data[k];
			buf_putc(&b, c);
		}
	}
	if (n > 0)
		txt_flush(&b, out);
	buf_free(&b);
}

/* --- addresses ---------------------------------------------------------------- */

enum dns_status dns_addrs_status(enum dns_status a, enum dns_status aaaa, size_t naddrs)
{
	if (naddrs > 0)
		return DNS_OK;
	if (a == DNS_TEMPFAIL || aaaa == DNS_TEMPFAIL)
		return DNS_TEMPFAIL;
	if (a == DNS_BADNAME || aaaa == DNS_BADNAME)
		return DNS_BADNAME;
	if (a == DNS_NXDOMAIN && aaaa == DNS_NXDOMAIN)
		return DNS_NXDOMAIN;
	/* An empty OK cannot happen (the parsers say NODATA), but if it did,
	 * "exists, no addresses" is what it means. */
	return DNS_NODATA;
}

void dns_addrs_order(struct sockaddr_storage *a, size_t n)
{
	if (n < 2)
		return;
	struct sockaddr_storage *tmp = xmalloc(n * sizeof(*tmp));
	size_t k = 0;
	for (size_t i = 0; i < n; i++)
		if (a[i].ss_family == AF_INET)
			tmp[k++] = a[i];
	for (size_t i = 0; i < n; i++)
		if (a[i].ss_family != AF_INET)
			tmp[k++] = a[i];
	memcpy(a, tmp, n * sizeof(*tmp));
	free(tmp);
}

int dns_parse_ip(const char *text, struct sockaddr_storage *ss)
{
	memset(ss, 0, sizeof(*ss));
	struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
	struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
	if (inet_pton(AF_INET, text, &s4->sin_addr) == 1) {
		s4->sin_family = AF_INET;
		return 0;
	}
	if (inet_pton(AF_INET6, text, &s6->sin6_addr) == 1) {
		s6->sin6_family = AF_INET6;
		return 0;
	}
	memset(ss, 0, sizeof(*ss));
	return -1;
}

int dns_addr_literal(const char *text, struct sockaddr_storage *ss)
{
	char inner[INET6_ADDRSTRLEN + 8];
	size_t len = strlen(text);
	if (len < 3 || text[0] != '[' || text[len - 1] != ']' || len - 2 >= sizeof(inner))
		return -1;
	memcpy(inner, text + 1, len - 2);
	inner[len - 2] = '\0';
	memset(ss, 0, sizeof(*ss));
	if (str_iprefix(inner, "IPv6:")) {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
		if (inet_pton(AF_INET6, inner + 5, &s6->sin6_addr) != 1)
			return -1;
		s6->sin6_family = AF_INET6;
		return 0;
	}
	struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
	if (inet_pton(AF_INET, inner, &s4->sin_addr) != 1)
		return -1;
	s4->sin_family = AF_INET;
	return 0;
}

/* --- MX ordering ---------------------------------------------------------------- */

static int mx_cmp(const void *a, const void *b)
{
	const struct dns_mx *x = a, *y = b;
	return x->pref < y->pref ? -1 : x->pref > y->pref;
}

/* Uniform in [0, n) (n <= 2^32) from one 32-bit draw: multiply-shift, whose
 * bias is at most n / 2^32, negligible for an MX RRset. */
static size_t pick(dns_random_fn rnd, void *arg, size_t n)
{
	return (size_t)(((uint64_t)rnd(arg) * (uint64_t)n) >> 32);
}

void dns_mx_order(struct dns_mx *mx, size_t n, dns_random_fn rnd, void *arg)
{
	if (n < 2)
		return;
	/* qsort is not stable, which does not matter: every group of equal
	 * preference is shuffled next. */
	qsort(mx, n, sizeof(*mx), mx_cmp);
	size_t start = 0;
	while (start < n) {
		size_t end = start + 1;
		while (end < n && mx[end].pref == mx[start].pref)
			end++;
		/* Fisher-Yates over [start, end). */
		for (size_t i = end - start; i > 1; i--) {
			size_t j = pick(rnd, arg, i);
			struct dns_mx t = mx[start + i - 1];
			mx[start + i - 1] = mx[start + j];
			mx[start + j] = t;
		}
		start = end;
	}
}

bool dns_mx_is_null(const struct dns_mx *mx, size_t n)
{
	if (n == 0)
		return false;
	for (size_t i = 0; i < n; i++)
		if (mx[i].host[0] != '\0')
			return false;
	return true;
}

size_t dns_mx_select(const struct dns_mx *mx, size_t n, size_t max, dns_random_fn rnd, void *arg,
		     struct dns_mx **out)
{
	struct dns_mx *tmp = xcalloc(n ? n : 1, sizeof(*tmp));
	memcpy(tmp, mx, n * sizeof(*tmp)); /* shallow: hosts stay borrowed */
	dns_mx_order(tmp, n, rnd, arg);
	struct dns_mx *sel = xcalloc(max ? max : 1, sizeof(*sel));
	size_t k = 0;
	for (size_t i = 0; i < n && k < max; i++) {
		if (tmp[i].host[0] == '\0')
			continue;
		bool dup = false;
		for (size_t j = 0; j < k && !dup; j++)
			dup = strcmp(sel[j].host, tmp[i].host) == 0;
		if (dup)
			continue;
		sel[k].host = xstrdup(tmp[i].host);
		sel[k].pref = tmp[i].pref;
		k++;
	}
	free(tmp);
	*out = sel;
	return k;
}

void dns_mx_free(struct dns_mx *mx, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(mx[i].host);
	free(mx);
}

/* --- cache ------------------------------------------------------------------------ */

struct cache_entry {
	struct cache_entry *hnext;          /* hash chain */
	struct cache_entry *older, *newer;  /* insertion order */
	enum dns_qkind kind;
	uint64_t expires_ms;
	struct dns_result res;
	char name[];                        /* normalized */
};

struct dns_cache {
	struct cache_entry **buckets;
	size_t nbuckets;                    /* a power of two */
	size_t count, max;
	struct cache_entry *oldest, *newest;
};

static size_t cache_hash(const struct dns_cache *c, enum dns_qkind kind, const char *name)
{
	/* FNV-1a; names are not attacker-chosen in bulk, and chains stay short
	 * with the table at least as large as the entry cap. */
	uint64_t h = 1469598103934665603ull ^ (uint64_t)kind;
	for (const unsigned char *p = (const unsigned char *)name; *p != '\0'; p++) {
		h ^= *p;
		h *= 1099511628211ull;
	}
	return (size_t)(h & (c->nbuckets - 1));
}

struct dns_cache *dns_cache_new(size_t max_entries)
{
	struct dns_cache *c = xcalloc(1, sizeof(*c));
	c->max = max_entries ? max_entries : 1;
	c->nbuckets = 16;
	while (c->nbuckets < c->max)
		c->nbuckets *= 2;
	c->buckets = xcalloc(c->nbuckets, sizeof(*c->buckets));
	return c;
}

static struct cache_entry **cache_find(struct dns_cache *c, enum dns_qkind kind, const char *name)
{
	struct cache_entry **pp = &c->buckets[cache_hash(c, kind, name)];
	while (*pp != NULL && ((*pp)->kind != kind || strcmp((*pp)->name, name) != 0))
		pp = &(*pp)->hnext;
	return pp;
}

static void cache_remove(struct dns_cache *c, struct cache_entry **pp)
{
	struct cache_entry *e = *pp;
	*pp = e->hnext;
	if (e->older != NULL)
		e->older->newer = e->newer;
	else
		c->oldest = e->newer;
	if (e->newer != NULL)
		e->newer->older = e->older;
	else
		c->newest = e->older;
	dns_result_free(&e->res);
	free(e);
	c->count--;
}

static uint32_t cache_lifetime(const struct dns_result *res)
{
	switch (res->status) {
	case DNS_OK:
		return res->ttl < DNS_CACHE_POSITIVE_MAX ? res->ttl : DNS_CACHE_POSITIVE_MAX;
	case DNS_NXDOMAIN:
	case DNS_NODATA:
		return res->ttl < DNS_CACHE_NEGATIVE_MAX ? res->ttl : DNS_CACHE_NEGATIVE_MAX;
	case DNS_TEMPFAIL:
	case DNS_BADNAME:
		break;
	}
	return 0;
}

void dns_cache_put(struct dns_cache *c, enum dns_qkind kind, const char *name,
		   const struct dns_result *res, uint64_t now_ms)
{
	uint32_t life = cache_lifetime(res);
	struct cache_entry **pp = cache_find(c, kind, name);
	if (*pp != NULL)
		cache_remove(c, pp);
	if (life == 0)
		return;
	if (c->count >= c->max)
		cache_remove(c, cache_find(c, c->oldest->kind, c->oldest->name));
	size_t nlen = strlen(name);
	struct cache_entry *e = xcalloc(1, sizeof(*e) + nlen + 1);
	memcpy(e->name, name, nlen + 1);
	e->kind = kind;
	e->expires_ms = now_ms + (uint64_t)life * 1000;
	dns_result_copy(&e->res, res);
	e->res.cached = false;
	pp = cache_find(c, kind, name); /* the eviction may have changed the chain */
	e->hnext = *pp;
	*pp = e;
	e->older = c->newest;
	if (c->newest != NULL)
		c->newest->newer = e;
	else
		c->oldest = e;
	c->newest = e;
	c->count++;
}

bool dns_cache_get(struct dns_cache *c, enum dns_qkind kind, const char *name, uint64_t now_ms,
		   struct dns_result *out)
{
	struct cache_entry **pp = cache_find(c, kind, name);
	if (*pp == NULL)
		return false;
	struct cache_entry *e = *pp;
	if (now_ms >= e->expires_ms) {
		cache_remove(c, pp);
		return false;
	}
	dns_result_copy(out, &e->res);
	out->ttl = (uint32_t)((e->expires_ms - now_ms + 999) / 1000);
	out->cached = true;
	return true;
}

void dns_cache_flush(struct dns_cache *c)
{
	while (c->oldest != NULL)
		cache_remove(c, cache_find(c, c->oldest->kind, c->oldest->name));
}

size_t dns_cache_count(const struct dns_cache *c)
{
	return c->count;
}

void dns_cache_free(struct dns_cache *c)
{
	if (c == NULL)
		return;
	dns_cache_flush(c);
	free(c->buckets);
	free(c);
}
