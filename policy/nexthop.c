/* nexthop.c - see nexthop.h */
#include "nexthop.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mta/netaddr.h"
#include "mta/util.h"

/* One host's address lookup. */
struct host_lookup {
	struct nexthop_query *q;
	size_t i;                 /* index in q->nh.hosts */
	struct dns_query *dq;     /* NULL once answered */
};

struct nexthop_query {
	struct resolver *r;
	char *domain;             /* normalized; NULL for address literals */
	bool mx_lookup;
	nexthop_cb *cb;
	void *arg;
	struct dns_query *dq;     /* the MX lookup, or the call_soon step */
	struct host_lookup *lk;   /* one per host */
	size_t pending;           /* address lookups not yet answered */
	bool delivering;
	bool have_ttl;
	struct nexthop nh;
};

const char *nexthop_status_name(enum nexthop_status s)
{
	static const char *const names[] = {
		[NH_OK] = "OK",
		[NH_NULL_MX] = "NULL_MX",
		[NH_NXDOMAIN] = "NXDOMAIN",
		[NH_NODATA] = "NODATA",
		[NH_NO_ADDRESS] = "NO_ADDRESS",
		[NH_TEMPFAIL] = "TEMPFAIL",
		[NH_BADNAME] = "BADNAME",
	};
	return (unsigned)s < SR_ARRAY_LEN(names) ? names[s] : "?";
}

static void set_status(struct nexthop *nh, enum nexthop_status st, const char *fmt, ...)
	SR_PRINTF(3, 4);
static void set_status(struct nexthop *nh, enum nexthop_status st, const char *fmt, ...)
{
	va_list ap;
	nh->status = st;
	va_start(ap, fmt);
	vsnprintf(nh->detail, sizeof(nh->detail), fmt, ap);
	va_end(ap);
}

static void take_ttl(struct nexthop_query *q, uint32_t ttl)
{
	if (!q->have_ttl || ttl < q->nh.ttl)
		q->nh.ttl = ttl;
	q->have_ttl = true;
}

static void query_free(struct nexthop_query *q)
{
	for (size_t i = 0; i < q->nh.nhosts; i++) {
		free(q->nh.hosts[i].name);
		free(q->nh.hosts[i].addrs);
	}
	free(q->nh.hosts);
	free(q->lk);
	free(q->domain);
	free(q);
}

static void finish(struct nexthop_query *q)
{
	q->delivering = true;
	q->cb(q->arg, &q->nh);
	query_free(q);
}

/* hosts[] with n empty entries. */
static void hosts_alloc(struct nexthop_query *q, size_t n)
{
	q->nh.hosts = xcalloc(n ? n : 1, sizeof(*q->nh.hosts));
	q->nh.nhosts = n;
}

static void host_set_addr(struct nexthop_host *h, const struct sockaddr_storage *ss)
{
	h->addrs = xmalloc(sizeof(*h->addrs));
	h->addrs[0] = *ss;
	h->naddrs = 1;
	h->addr_status = DNS_OK;
}

/* An address literal or bare IP: one host, no DNS. */
static void literal_host(struct nexthop_query *q, const struct sockaddr_storage *ss)
{
	char ip[64];
	sockaddr_format((const struct sockaddr *)ss, ip, sizeof(ip), NULL);
	hosts_alloc(q, 1);
	q->nh.hosts[0].name = xstrdup(ip);
	host_set_addr(&q->nh.hosts[0], ss);
	set_status(&q->nh, NH_OK, "address literal: no DNS lookup");
}

/* --- the verdict once every address lookup is in ------------------------------ */

static const struct nexthop_host *first_failed(const struct nexthop *nh, enum dns_status st)
{
	for (size_t i = 0; i < nh->nhosts; i++)
		if (nh->hosts[i].naddrs == 0 && nh->hosts[i].addr_status == st)
			return &nh->hosts[i];
	return NULL;
}

static void finalize(struct nexthop_query *q)
{
	struct nexthop *nh = &q->nh;
	size_t usable = 0;
	for (size_t i = 0; i < nh->nhosts; i++)
		usable += nh->hosts[i].naddrs > 0;
	const struct nexthop_host *h0 = &nh->hosts[0];
	const struct nexthop_host *tf = first_failed(nh, DNS_TEMPFAIL);
	const char *what = !q->mx_lookup ? "route host" : nh->implicit_mx ? "implicit MX" : "MX";
	if (usable > 0) {
		set_status(nh, NH_OK, "%s: %zu of %zu host(s) with addresses", what, usable,
			   nh->nhosts);
	} else if (tf != NULL) {
		/* A temporary failure decides over any permanent-looking answer. */
		set_status(nh, NH_TEMPFAIL, "%s: no host with an address; %s: %s", what, tf->name,
			   tf->addr_detail);
	} else if (!q->mx_lookup) {
		if (h0->addr_status == DNS_NXDOMAIN)
			set_status(nh, NH_NXDOMAIN, "route host %s does not exist", h0->name);
		else
			set_status(nh, NH_NO_ADDRESS, "route host %s has no address: %s", h0->name,
				   h0->addr_detail);
	} else if (nh->implicit_mx) {
		if (h0->addr_status == DNS_NXDOMAIN)
			set_status(nh, NH_NXDOMAIN, "domain does not exist (no MX, A lookup: NXDOMAIN)");
		else
			set_status(nh, NH_NODATA, "domain has no MX, A or AAAA records");
	} else {
		set_status(nh, NH_NO_ADDRESS, "none of %zu MX host(s) has an address; %s: %s",
			   nh->nhosts, h0->name, h0->addr_detail);
	}
	finish(q);
}

static void on_addrs(void *arg, const struct dns_result *res)
{
	struct host_lookup *lk = arg;
	struct nexthop_query *q = lk->q;
	struct nexthop_host *h = &q->nh.hosts[lk->i];
	lk->dq = NULL;
	h->addr_status = res->status;
	snprintf(h->addr_detail, sizeof(h->addr_detail), "%s", res->detail);
	if (res->naddrs > 0) {
		h->addrs = xmalloc(res->naddrs * sizeof(*h->addrs));
		memcpy(h->addrs, res->addrs, res->naddrs * sizeof(*h->addrs));
		h->naddrs = res->naddrs;
		dns_addrs_order(h->addrs, h->naddrs);
	}
	take_ttl(q, res->ttl);
	if (--q->pending == 0)
		finalize(q);
}

/* Looks up every host's addresses in parallel (hosts written as IPs need
 * none). Called from a resolver callback or before any lookup ran, so the
 * verdict may be given at once without re-entering our caller. */
static void start_host_lookups(struct nexthop_query *q)
{
	struct nexthop *nh = &q->nh;
	q->lk = xcalloc(nh->nhosts ? nh->nhosts : 1, sizeof(*q->lk));
	q->pending = 0;
	for (size_t i = 0; i < nh->nhosts; i++) {
		struct sockaddr_storage ss;
		q->lk[i].q = q;
		q->lk[i].i = i;
		if (dns_parse_ip(nh->hosts[i].name, &ss) == 0)
			host_set_addr(&nh->hosts[i], &ss);
		else
			q->pending++;
	}
	if (q->pending == 0) {
		finalize(q);
		return;
	}
	for (size_t i = 0; i < nh->nhosts; i++)
		if (nh->hosts[i].naddrs == 0)
			q->lk[i].dq = resolver_query_addrs(q->r, nh->hosts[i].name, on_addrs, &q->lk[i]);
}

static void one_host(struct nexthop_query *q, const char *name)
{
	hosts_alloc(q, 1);
	q->nh.hosts[0].name = xstrdup(name);
}

static uint32_t random_source(void *arg)
{
	(void)arg;
	return random_u32();
}

static void mx_hosts(struct nexthop_query *q, const struct dns_result *res)
{
	struct dns_mx *sel;
	size_t n = dns_mx_select(res->mx, res->nmx, NEXTHOP_MAX_MX, random_source, NULL, &sel);
	hosts_alloc(q, n);
	for (size_t i = 0; i < n; i++) {
		q->nh.hosts[i].name = sel[i].host; /* ownership moves */
		q->nh.hosts[i].pref = sel[i].pref;
	}
	free(sel);
}

static void on_mx(void *arg, const struct dns_result *res)
{
	struct nexthop_query *q = arg;
	q->dq = NULL;
	take_ttl(q, res->ttl);
	switch (res->status) {
	case DNS_OK:
		if (dns_mx_is_null(res->mx, res->nmx)) {
			set_status(&q->nh, NH_NULL_MX,
				   "null MX (RFC 7505): the domain accepts no mail");
			finish(q);
			return;
		}
		mx_hosts(q, res);
		start_host_lookups(q);
		return;
	case DNS_NODATA:
		/* RFC 5321 5.1: no MX RRset, the domain itself is the host. */
		q->nh.implicit_mx = true;
		one_host(q, q->domain);
		start_host_lookups(q);
		return;
	case DNS_NXDOMAIN:
		set_status(&q->nh, NH_NXDOMAIN, "domain does not exist (MX lookup: NXDOMAIN)");
		break;
	case DNS_TEMPFAIL:
		set_status(&q->nh, NH_TEMPFAIL, "MX lookup failed: %s", res->detail);
		break;
	case DNS_BADNAME:
		set_status(&q->nh, NH_BADNAME, "%s", res->detail);
		break;
	}
	finish(q);
}

/* The verdict was known at the start: deliver it from the loop. */
static void on_soon(void *arg, const struct dns_result *res)
{
	struct nexthop_query *q = arg;
	q->dq = NULL;
	if (res->status != DNS_OK) /* resolver_free() came first */
		set_status(&q->nh, NH_TEMPFAIL, "%s", res->detail);
	finish(q);
}

struct nexthop_query *nexthop_resolve(struct resolver *r, const char *domain, bool mx_lookup,
				      nexthop_cb *cb, void *arg)
{
	struct nexthop_query *q = xcalloc(1, sizeof(*q));
	q->r = r;
	q->mx_lookup = mx_lookup;
	q->cb = cb;
	q->arg = arg;
	struct sockaddr_storage ss;
	char norm[DNS_NAME_MAX + 1], err[DNS_DETAIL_MAX];
	if (domain[0] == '[') {
		/* RFC 5321 4.1.3: a literal is the address, MX lookup or not. */
		if (dns_addr_literal(domain, &ss) == 0)
			literal_host(q, &ss);
		else
			set_status(&q->nh, NH_BADNAME, "invalid address literal");
	} else if (!mx_lookup && dns_parse_ip(domain, &ss) == 0) {
		literal_host(q, &ss);
	} else if (dns_name_normalize(domain, norm, err, sizeof(err)) < 0) {
		set_status(&q->nh, NH_BADNAME, "invalid domain name: %s", err);
	} else {
		q->domain = xstrdup(norm);
		if (mx_lookup) {
			q->dq = resolver_query_mx(r, q->domain, on_mx, q);
		} else {
			one_host(q, q->domain);
			start_host_lookups(q); /* a name: always a lookup, never at once */
		}
		return q;
	}
	q->dq = resolver_call_soon(r, on_soon, q);
	return q;
}

void nexthop_cancel(struct nexthop_query *q)
{
	if (q == NULL || q->delivering)
		return;
	dns_query_cancel(q->dq);
	if (q->lk != NULL)
		for (size_t i = 0; i < q->nh.nhosts; i++)
			dns_query_cancel(q->lk[i].dq);
	query_free(q);
}
