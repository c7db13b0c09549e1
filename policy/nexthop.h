/*
 * nexthop.h - RFC 5321 section 5.1: which hosts, and which addresses, to try
 * for a destination. Built on the resolver (resolver.h); no sockets of its own.
 *
 * nexthop_resolve(r, domain, mx_lookup, cb, arg)
 *   mx_lookup = true: domain is a mail domain.
 *     - MX RRset found: hosts sorted by preference, random order among equal
 *       preferences, at most NEXTHOP_MAX_MX; the addresses of every host are
 *       looked up in parallel. A root host ("0 .") alone (or only root hosts)
 *       is a null MX (RFC 7505): NH_NULL_MX; next to real hosts it is skipped.
 *       An MX host written as an IP address is used as that address (no DNS);
 *       the domain's own name as MX host is fine.
 *     - no MX (NODATA): implicit MX: the domain's own A/AAAA, pref 0,
 *       implicit_mx = true.
 *   mx_lookup = false: domain is the host itself (a bracketed route [host]):
 *     its A/AAAA, no MX lookup.
 *   Either way an address literal ("[192.0.2.1]", "[IPv6:2001:db8::1]"), and
 *   with mx_lookup = false a bare IP, needs no DNS at all.
 *
 * Result (struct nexthop), status:
 *   NH_OK          hosts[] has at least one host with addresses. Hosts whose
 *                  lookup failed (temporarily or not) keep their place with
 *                  naddrs = 0 and addr_status saying why: skip them.
 *   NH_NULL_MX     the domain accepts no mail: bounce 556 5.1.10 (RFC 7505).
 *   NH_NXDOMAIN    the domain (or the route host) does not exist. For a mail
 *                  domain: bounce. For a route it is a configuration error:
 *                  the caller defers.
 *   NH_NODATA      the domain exists without MX, A or AAAA: it cannot take
 *                  mail (RFC 5321 5.1 "an error"): bounce.
 *   NH_NO_ADDRESS  MX hosts (or the route host) exist but none has an
 *                  address: treat as temporary (a DNS operator's slip).
 *   NH_TEMPFAIL    a lookup failed temporarily and no host has an address:
 *                  defer. A temporary DNS failure never ends as a bounce.
 *   NH_BADNAME     domain is not a valid DNS name / address literal: bounce.
 * detail says what happened, for logs.
 *
 * Addresses per host: IPv4 first, then IPv6 (dns_addrs_order() says why),
 * all kept, port 0 (the caller sets the SMTP port).
 *
 * Ownership: the callback gets the result borrowed, valid only during the
 * callback (copy what you keep). The handle belongs to this module: valid
 * until the callback returned or nexthop_cancel(), after which the callback
 * is never called and arg may be freed at once. The callback always runs
 * from the loop, never inside nexthop_resolve(). resolver_free() completes
 * outstanding resolutions with NH_TEMPFAIL.
 */
#ifndef STRICTRELAY_POLICY_NEXTHOP_H
#define STRICTRELAY_POLICY_NEXTHOP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "policy/dns.h"
#include "policy/resolver.h"

#define NEXTHOP_MAX_MX 10
#define NEXTHOP_DETAIL_MAX 256

enum nexthop_status {
	NH_OK,
	NH_NULL_MX,
	NH_NXDOMAIN,
	NH_NODATA,
	NH_NO_ADDRESS,
	NH_TEMPFAIL,
	NH_BADNAME,
};

/* "OK", "NULL_MX", "NXDOMAIN", "NODATA", "NO_ADDRESS", "TEMPFAIL", "BADNAME" */
const char *nexthop_status_name(enum nexthop_status s);

struct nexthop_host {
	char *name;                       /* lower case; the IP's text for literals */
	unsigned pref;                    /* MX preference; 0 implicit MX / route */
	struct sockaddr_storage *addrs;   /* IPv4 first, then IPv6; port 0 */
	size_t naddrs;
	enum dns_status addr_status;      /* DNS_OK when naddrs > 0 */
	char addr_detail[DNS_DETAIL_MAX]; /* why there are no addresses */
};

struct nexthop {
	enum nexthop_status status;
	char detail[NEXTHOP_DETAIL_MAX];
	bool implicit_mx;                 /* no MX RRset: the domain's own address */
	struct nexthop_host *hosts;       /* in the order to try */
	size_t nhosts;
	uint32_t ttl;                     /* smallest TTL of the answers used */
};

struct nexthop_query;
typedef void nexthop_cb(void *arg, const struct nexthop *nh);

/* Never NULL. domain is copied. */
struct nexthop_query *nexthop_resolve(struct resolver *r, const char *domain, bool mx_lookup,
				      nexthop_cb *cb, void *arg);
/* NULL is a no-op; a no-op from inside the query's own callback. */
void nexthop_cancel(struct nexthop_query *q);

#endif
