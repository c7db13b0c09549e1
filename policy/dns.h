/*
 * dns.h - DNS result types and the pure helpers behind policy/resolver.c and
 * policy/nexthop.c. No I/O, no clock, no globals: the resolver feeds them raw
 * answers and the time, unit tests feed them tables.
 *
 * What lives here:
 *   struct dns_result     what every resolver callback sees (resolver.h)
 *   dns_name_normalize()  the names we are willing to send: A-labels only
 *   dns_msg_ttls()        the TTLs of a raw answer (c-ares 1.18 hides them
 *                         for MX and TXT), incl. the SOA minimum of a
 *                         negative answer (RFC 2308)
 *   dns_txt_join()        TXT character-strings -> one string per record
 *   dns_addrs_status()    the verdict of an A + AAAA pair
 *   dns_mx_order() and dns_mx_select()  RFC 5321 5.1 ordering
 *   dns_addrs_order()     IPv4 first, then IPv6
 *   dns_addr_literal(), dns_parse_ip()   "[192.0.2.1]", "[IPv6:...]", bare IPs
 *   struct dns_cache      the bounded answer cache (positive <= 300 s,
 *                         negative <= 60 s, never a temporary failure)
 *
 * Ownership: a struct dns_result owns its arrays; dns_result_free() frees the
 * contents (not the struct). Strings handed to these functions are borrowed.
 */
#ifndef STRICTRELAY_POLICY_DNS_H
#define STRICTRELAY_POLICY_DNS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "mta/util.h"

#define DNS_NAME_MAX 253        /* presentation form without the trailing dot */
#define DNS_LABEL_MAX 63
#define DNS_DETAIL_MAX 160

/* Lifetimes in the cache (seconds). */
#define DNS_CACHE_POSITIVE_MAX 300
#define DNS_CACHE_NEGATIVE_MAX 60
/* Negative answers without an SOA in the authority section. */
#define DNS_NEGATIVE_TTL_DEFAULT 30

enum dns_status {
	DNS_OK,
	DNS_NXDOMAIN,  /* the name does not exist */
	DNS_NODATA,    /* the name exists, without records of the type asked */
	DNS_TEMPFAIL,  /* SERVFAIL, REFUSED, timeout, network or parse trouble: try later */
	DNS_BADNAME,   /* a name we refuse to send (never reached the wire) */
};

/* "OK", "NXDOMAIN", "NODATA", "TEMPFAIL", "BADNAME" */
const char *dns_status_name(enum dns_status s);

/* What was asked: also the cache's key space. */
enum dns_qkind {
	DNS_Q_MX,
	DNS_Q_ADDRS,   /* A and AAAA together */
	DNS_Q_TXT,
	DNS_Q_NONE,    /* resolver_call_soon(): nothing asked */
};

struct dns_mx {
	char *host;     /* lower case, no trailing dot; "" for the root (null MX) */
	unsigned pref;
};

struct dns_result {
	enum dns_status status;
	char detail[DNS_DETAIL_MAX];  /* what happened, for logs; "" when OK */
	struct dns_mx *mx;            /* MX: in answer order (see dns_mx_order) */
	size_t nmx;
	struct sockaddr_storage *addrs; /* ADDRS: IPv4 first, then IPv6; port 0 */
	size_t naddrs;
	struct strlist txt;           /* TXT: one entry per record, strings joined */
	uint32_t ttl;                 /* seconds: the smallest TTL seen (remaining
	                               * lifetime for a cache hit) */
	bool cached;                  /* answered from the cache */
};

/* Frees the arrays and zeroes *res (it may be reused). */
void dns_result_free(struct dns_result *res);
/* Deep copy; dst is overwritten (not freed first). */
void dns_result_copy(struct dns_result *dst, const struct dns_result *src);

/*
 * Checks name and writes its cache/lookup form to out (DNS_NAME_MAX + 1
 * bytes): lower case, one trailing dot removed. Refused: empty names, more
 * than 253 characters, empty labels, labels over 63, bytes other than
 * letters, digits, '-' and '_' (so non-ASCII: A-labels only, UTF8-05).
 * 0, or -1 with the reason in err.
 */
int dns_name_normalize(const char *name, char *out, char *err, size_t errlen);

/* TTLs found in a raw DNS message. Values over 2^31-1 count as 0 (RFC 2181 8). */
struct dns_msg_ttl {
	bool has_answer;      /* at least one answer RR */
	uint32_t answer_min;  /* smallest TTL in the answer section */
	bool has_soa;         /* an SOA in the authority section */
	uint32_t negative;    /* min(SOA TTL, SOA MINIMUM): RFC 2308 section 5 */
};
/* 0, or -1 if the message is malformed (whatever was read is still filled in). */
int dns_msg_ttls(const unsigned char *msg, size_t len, struct dns_msg_ttl *out);

/*
 * TXT records as c-ares 1.18 hands them out (ares_parse_txt_reply_ext): one
 * piece per character-string, record_start set on the first string of each
 * record. Appends one string per record to out, its character-strings
 * concatenated with nothing between (RFC 7208 3.3, 8461 3.1, 8460 3).
 * A NUL byte inside a record becomes 0x7f: the record then fails any TXT
 * grammar we parse instead of being silently cut short at the NUL.
 */
struct dns_txt_piece {
	const unsigned char *data;
	size_t len;
	bool record_start;
};
void dns_txt_join(const struct dns_txt_piece *p, size_t n, struct strlist *out);

/*
 * The verdict of an A and an AAAA lookup of one name, naddrs being the
 * addresses both found: OK if any; else TEMPFAIL if either failed
 * temporarily; NXDOMAIN only if both say the name does not exist; else
 * NODATA. A temporary failure is never turned into a negative answer.
 */
enum dns_status dns_addrs_status(enum dns_status a, enum dns_status aaaa, size_t naddrs);

/* A random source: uniform 32-bit values. Production passes random_u32. */
typedef uint32_t (*dns_random_fn)(void *arg);

/* Sorts by preference, ascending; records of equal preference in random
 * order (RFC 5321 5.1), drawn from rnd. */
void dns_mx_order(struct dns_mx *mx, size_t n, dns_random_fn rnd, void *arg);

/* true if the MX RRset is a null MX (RFC 7505): every record's host is the
 * root. A root host next to real ones is not a null MX (dns_mx_select skips
 * it). false for an empty set. */
bool dns_mx_is_null(const struct dns_mx *mx, size_t n);

/*
 * The MX hosts to try, in order: dns_mx_order(), then root hosts dropped,
 * a host listed twice kept at its first (best) place, at most max hosts.
 * *out is a new array (free with dns_mx_free); returns its length.
 */
size_t dns_mx_select(const struct dns_mx *mx, size_t n, size_t max, dns_random_fn rnd, void *arg,
		     struct dns_mx **out);
void dns_mx_free(struct dns_mx *mx, size_t n);

/*
 * Stable reorder: IPv4 addresses first, then IPv6, each family keeping its
 * order. Why: a host with a broken IPv6 path costs a full connect timeout
 * per IPv6 address before IPv4 is tried, and IPv4 to an MX practically
 * always works; every address is still kept and tried.
 */
void dns_addrs_order(struct sockaddr_storage *a, size_t n);

/* "192.0.2.1" or "2001:db8::1" -> *ss (port 0). 0, or -1 if not an IP. */
int dns_parse_ip(const char *text, struct sockaddr_storage *ss);
/* RFC 5321 4.1.3 address literal: "[192.0.2.1]" or "[IPv6:2001:db8::1]"
 * (tag case-insensitive). 0, or -1 (other tags are not supported). */
int dns_addr_literal(const char *text, struct sockaddr_storage *ss);

/*
 * The answer cache: one table for every kind of lookup, keyed by
 * (kind, normalized name), bounded to max entries (the oldest insertion is
 * evicted first; expired entries go when met). Lifetimes:
 * OK min(ttl, 300 s), NXDOMAIN/NODATA min(ttl, 60 s), TEMPFAIL and BADNAME
 * never, ttl 0 never. Times are the caller's monotonic milliseconds.
 */
struct dns_cache;
struct dns_cache *dns_cache_new(size_t max_entries);
void dns_cache_free(struct dns_cache *c);
/* true and a copy in *out (ttl = remaining seconds, rounded up; cached =
 * true) on a hit; false on a miss (out untouched). */
bool dns_cache_get(struct dns_cache *c, enum dns_qkind kind, const char *name, uint64_t now_ms,
		   struct dns_result *out);
void dns_cache_put(struct dns_cache *c, enum dns_qkind kind, const char *name,
		   const struct dns_result *res, uint64_t now_ms);
void dns_cache_flush(struct dns_cache *c);
size_t dns_cache_count(const struct dns_cache *c);

#endif
