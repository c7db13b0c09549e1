/*
 * resolver.h - the program's one DNS resolver: c-ares 1.18 driven by the
 * libuv loop, with one answer cache for every lookup.
 *
 * How it runs: c-ares tells us through its socket-state callback which
 * sockets to watch; each gets a uv_poll_t (freed in its close callback), and
 * one uv_timer_t follows ares_timeout() and calls
 * ares_process_fd(ARES_SOCKET_BAD, ARES_SOCKET_BAD) for retransmissions and
 * timeouts. No threads, no blocking call (c-ares 1.18 has neither
 * ares_process_fds nor an event thread; see STYLE.md 1).
 *
 * API
 *   resolver_new()        a channel on the loop; servers as "host:port", or
 *                         /etc/resolv.conf when there are none
 *   resolver_query_mx()   MX RRset: host lower case without trailing dot,
 *                         pref; a null MX ("0 .") is host "" pref 0
 *   resolver_query_addrs() A and AAAA in parallel, one callback with both:
 *                         IPv4 addresses first, then IPv6, port 0
 *   resolver_query_txt()  TXT: one string per record, its character-strings
 *                         joined with nothing between (RFC 8461/8460)
 *   resolver_call_soon()  a "query" that asks nothing: its callback runs from
 *                         the loop like any other (for answers that need no
 *                         DNS, e.g. address literals in nexthop.c)
 *   dns_query_cancel()    the callback will not be called
 *   resolver_flush_cache()
 *   resolver_free()
 *
 * Callbacks: void cb(void *arg, const struct dns_result *res) (policy/dns.h).
 * Every callback runs from the loop, never inside the call that started the
 * query, also for cache hits and refused names, so callers never see
 * re-entrancy. res is borrowed: valid only during the callback (copy with
 * dns_result_copy()). A callback may start new queries, cancel other ones and
 * call resolver_free().
 *
 * Statuses (DNS_*, dns.h), as c-ares 1.18 reports them:
 *   ARES_SUCCESS with records      OK
 *   ARES_ENOTFOUND                 NXDOMAIN
 *   ARES_ENODATA, or an answer without records of the type (CNAME only)  NODATA
 *   ARES_ECONNREFUSED              TEMPFAIL: this is how 1.18 reports SERVFAIL
 *                                  and REFUSED (after trying every server),
 *                                  and a refused UDP port
 *   ARES_ETIMEOUT, EBADRESP, network errors, failed TCP retry   TEMPFAIL
 *   a name refused by dns_name_normalize()    BADNAME (never sent)
 * A temporary failure is never reported as NXDOMAIN or NODATA: the relay
 * would bounce mail over a passing DNS problem.
 * addrs: OK if A or AAAA had records (the other one may have failed: such a
 * partial answer is not cached); else TEMPFAIL if either failed temporarily;
 * NXDOMAIN if both say the name does not exist; else NODATA.
 *
 * Truncation: c-ares repeats a truncated UDP answer over TCP (ARES_FLAG_IGNTC
 * is never set). EDNS0 with a 1232-byte buffer keeps most answers on UDP.
 * Search domains are never applied (ares_query, ARES_FLAG_NOSEARCH): every
 * name is absolute.
 *
 * Cache: answers are cached under (kind, lower-case name): OK for
 * min(TTL, 300 s), NXDOMAIN/NODATA for min(SOA-derived TTL, 60 s) (30 s when
 * the answer carries no SOA), TEMPFAIL never. At most RESOLVER_CACHE_MAX
 * entries; the oldest goes first. A hit reports the remaining TTL and
 * res->cached = true.
 *
 * Ownership and lifetime
 *   - The resolver borrows the loop; resolver_free() closes every handle it
 *     opened, and the loop must then run once more to finish the closes
 *     (after that uv_loop_close() returns 0). The struct is freed in the last
 *     close callback.
 *   - A struct dns_query * belongs to the resolver. It is valid until its
 *     callback has returned or dns_query_cancel() was called; after cancel
 *     the caller may free the object arg points to at once. Cancelling from
 *     inside the query's own callback is a no-op.
 *   - resolver_free(): every query not yet delivered completes, inside
 *     resolver_free(), with DNS_TEMPFAIL "resolver shutting down" (queries
 *     started from those callbacks too). Cancelled queries stay silent.
 *
 * Limits: names <= 253 characters, labels <= 63, letters, digits, '-', '_'
 * (A-labels only: a name with non-ASCII bytes is DNS_BADNAME, UTF8-05).
 * Timeouts: timeout_ms is the first try's timeout against one server;
 * c-ares doubles it for each later round over the server list (with one
 * server and 2 tries a silent server fails after 3 x timeout_ms).
 *
 * BUGS: c-ares 1.18 cannot cancel one query: a cancelled query keeps its
 * c-ares slot (and a little memory) until the server answers or it times out.
 * Identical concurrent queries are not merged.
 */
#ifndef STRICTRELAY_POLICY_RESOLVER_H
#define STRICTRELAY_POLICY_RESOLVER_H

#include <stddef.h>
#include <uv.h>

#include "mta/netaddr.h"
#include "policy/dns.h"

#define RESOLVER_CACHE_MAX 10000
#define RESOLVER_DEFAULT_TIMEOUT_MS 5000
#define RESOLVER_DEFAULT_TRIES 2

struct resolver;
struct dns_query;

typedef void dns_cb(void *arg, const struct dns_result *res);

/*
 * servers: nservers "host:port" entries whose host is an IP address (port 0
 * means 53); none: the servers of /etc/resolv.conf (our timeout and tries
 * still apply). timeout_ms and tries of 0 take the defaults above.
 * 0 and *out, or -1 with the reason in err (nothing to close then).
 */
int resolver_new(struct resolver **out, uv_loop_t *loop, const struct hostport *servers,
		 size_t nservers, unsigned timeout_ms, unsigned tries, char *err, size_t errlen);

/* See "Ownership and lifetime". NULL is a no-op. */
void resolver_free(struct resolver *r);

/* Never NULL. name is copied. */
struct dns_query *resolver_query_mx(struct resolver *r, const char *name, dns_cb *cb, void *arg);
struct dns_query *resolver_query_addrs(struct resolver *r, const char *name, dns_cb *cb,
				       void *arg);
struct dns_query *resolver_query_txt(struct resolver *r, const char *name, dns_cb *cb, void *arg);
/* cb gets an empty DNS_OK result (DNS_TEMPFAIL "resolver shutting down"
 * when resolver_free() comes first). */
struct dns_query *resolver_call_soon(struct resolver *r, dns_cb *cb, void *arg);

/* NULL is a no-op. */
void dns_query_cancel(struct dns_query *q);

void resolver_flush_cache(struct resolver *r);
size_t resolver_cache_count(const struct resolver *r);

#endif
