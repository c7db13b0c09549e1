/* netaddr.c - see netaddr.h */
#include "netaddr.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

static int parse_one(struct netmask *m, const char *item, char *err, size_t errlen)
{
	char addr[INET6_ADDRSTRLEN + 8];
	const char *slash = strchr(item, '/');
	size_t alen = slash ? (size_t)(slash - item) : strlen(item);
	if (alen == 0 || alen >= sizeof(addr)) {
		snprintf(err, errlen, "bad network \"%s\"", item);
		return -1;
	}
	memcpy(addr, item, alen);
	addr[alen] = '\0';
	memset(m, 0, sizeof(*m));
	unsigned maxbits;
	if (inet_pton(AF_INET, addr, m->addr) == 1) {
		m->family = AF_INET;
		maxbits = 32;
	} else if (inet_pton(AF_INET6, addr, m->addr) == 1) {
		m->family = AF_INET6;
		maxbits = 128;
	} else {
		snprintf(err, errlen, "bad network \"%s\": \"%s\" is not an IP address", item, addr);
		return -1;
	}
	m->prefix = maxbits;
	if (slash != NULL) {
		const char *p = slash + 1;
		char *end;
		if (*p < '0' || *p > '9') {
			snprintf(err, errlen, "bad network \"%s\": prefix length missing", item);
			return -1;
		}
		unsigned long v = strtoul(p, &end, 10);
		if (*end != '\0' || v > maxbits) {
			snprintf(err, errlen, "bad network \"%s\": prefix length must be 0..%u", item,
				 maxbits);
			return -1;
		}
		m->prefix = (unsigned)v;
	}
	/* Host bits below the prefix must be zero. */
	for (unsigned bit = m->prefix; bit < maxbits; bit++) {
		if (m->addr[bit / 8] & (0x80u >> (bit % 8))) {
			snprintf(err, errlen,
				 "bad network \"%s\": address has bits set beyond the /%u prefix",
				 item, m->prefix);
			return -1;
		}
	}
	return 0;
}

int netlist_parse(struct netlist *l, const char *text, char *err, size_t errlen)
{
	struct strlist items = { 0 };
	const size_t n0 = l->n;
	strlist_split(&items, text, true);
	for (size_t i = 0; i < items.n; i++) {
		struct netmask m;
		if (parse_one(&m, items.v[i], err, errlen) < 0) {
			/* All or nothing: a caller keeping l must not see half a list. */
			l->n = n0;
			strlist_free(&items);
			return -1;
		}
		l->v = xrealloc(l->v, (l->n + 1) * sizeof(*l->v));
		l->v[l->n++] = m;
	}
	strlist_free(&items);
	return 0;
}

static bool mask_match(const struct netmask *m, int family, const uint8_t *addr)
{
	if (m->family != family)
		return false;
	unsigned full = m->prefix / 8, rest = m->prefix % 8;
	if (memcmp(m->addr, addr, full) != 0)
		return false;
	if (rest == 0)
		return true;
	uint8_t mask = (uint8_t)(0xffu << (8 - rest));
	return (m->addr[full] & mask) == (addr[full] & mask);
}

static bool match_addr(const struct netlist *l, int family, const uint8_t *addr)
{
	static const uint8_t v4mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };
	for (size_t i = 0; i < l->n; i++) {
		if (mask_match(&l->v[i], family, addr))
			return true;
		if (family == AF_INET6 && memcmp(addr, v4mapped, 12) == 0 &&
		    mask_match(&l->v[i], AF_INET, addr + 12))
			return true;
	}
	return false;
}

bool netlist_match(const struct netlist *l, const struct sockaddr *sa)
{
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *s4 = (const struct sockaddr_in *)sa;
		return match_addr(l, AF_INET, (const uint8_t *)&s4->sin_addr);
	}
	if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)sa;
		return match_addr(l, AF_INET6, (const uint8_t *)&s6->sin6_addr);
	}
	return false;
}

bool netlist_match_str(const struct netlist *l, const char *addr)
{
	uint8_t a[16];
	if (inet_pton(AF_INET, addr, a) == 1)
		return match_addr(l, AF_INET, a);
	if (inet_pton(AF_INET6, addr, a) == 1)
		return match_addr(l, AF_INET6, a);
	return false;
}

void netlist_free(struct netlist *l)
{
	free(l->v);
	l->v = NULL;
	l->n = 0;
}

void netlist_copy(struct netlist *dst, const struct netlist *src)
{
	dst->v = NULL;
	dst->n = src->n;
	if (src->n > 0) {
		dst->v = xmalloc(src->n * sizeof(*src->v));
		memcpy(dst->v, src->v, src->n * sizeof(*src->v));
	}
}

void netmask_format(const struct netmask *m, char *dst, size_t dstlen)
{
	char a[INET6_ADDRSTRLEN];
	inet_ntop(m->family, m->addr, a, sizeof(a));
	snprintf(dst, dstlen, "%s/%u", a, m->prefix);
}

int hostport_parse(struct hostport *hp, const char *text, uint16_t default_port, char *err,
		   size_t errlen)
{
	const char *host, *portstr = NULL;
	size_t hlen;
	memset(hp, 0, sizeof(*hp));
	if (text[0] == '[') {
		const char *close = strchr(text, ']');
		if (close == NULL) {
			snprintf(err, errlen, "bad address \"%s\": missing ']'", text);
			return -1;
		}
		host = text + 1;
		hlen = (size_t)(close - host);
		hp->bracketed = true;
		if (close[1] == ':')
			portstr = close + 2;
		else if (close[1] != '\0') {
			snprintf(err, errlen, "bad address \"%s\": junk after ']'", text);
			return -1;
		}
	} else {
		const char *colon = strchr(text, ':');
		if (colon != NULL && strchr(colon + 1, ':') != NULL) {
			snprintf(err, errlen,
				 "bad address \"%s\": write IPv6 addresses in brackets, e.g. [::1]:25",
				 text);
			return -1;
		}
		host = text;
		hlen = colon ? (size_t)(colon - text) : strlen(text);
		if (colon != NULL)
			portstr = colon + 1;
	}
	if (hlen == 0) {
		snprintf(err, errlen, "bad address \"%s\": host missing", text);
		return -1;
	}
	for (size_t i = 0; i < hlen; i++) {
		char c = host[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '.' || c == '-' || c == ':' || c == '_')) {
			snprintf(err, errlen, "bad address \"%s\": bad character in host", text);
			return -1;
		}
	}
	hp->port = default_port;
	if (portstr != NULL) {
		char *end;
		unsigned long v = strtoul(portstr, &end, 10);
		if (*portstr < '0' || *portstr > '9' || *end != '\0' || v == 0 || v > 65535) {
			snprintf(err, errlen, "bad address \"%s\": port must be 1..65535", text);
			return -1;
		}
		hp->port = (uint16_t)v;
	}
	if (hp->port == 0) {
		snprintf(err, errlen, "bad address \"%s\": port missing", text);
		return -1;
	}
	hp->host = xstrndup(host, hlen);
	return 0;
}

void hostport_free(struct hostport *hp)
{
	free(hp->host);
	hp->host = NULL;
}

void hostport_format(const struct hostport *hp, char *dst, size_t dstlen)
{
	if (hp->bracketed || strchr(hp->host, ':') != NULL)
		snprintf(dst, dstlen, "[%s]:%u", hp->host, hp->port);
	else
		snprintf(dst, dstlen, "%s:%u", hp->host, hp->port);
}

void sockaddr_format(const struct sockaddr *sa, char *ip, size_t iplen, uint16_t *port)
{
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *s4 = (const struct sockaddr_in *)sa;
		inet_ntop(AF_INET, &s4->sin_addr, ip, (socklen_t)iplen);
		if (port)
			*port = ntohs(s4->sin_port);
	} else if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)sa;
		inet_ntop(AF_INET6, &s6->sin6_addr, ip, (socklen_t)iplen);
		if (port)
			*port = ntohs(s6->sin6_port);
	} else {
		snprintf(ip, iplen, "unknown");
		if (port)
			*port = 0;
	}
}

int hostport_sockaddr(const struct hostport *hp, struct sockaddr_storage *ss, char *err,
		      size_t errlen)
{
	memset(ss, 0, sizeof(*ss));
	struct sockaddr_in *sin = (struct sockaddr_in *)ss;
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
	if (inet_pton(AF_INET, hp->host, &sin->sin_addr) == 1) {
		sin->sin_family = AF_INET;
		sin->sin_port = htons(hp->port);
		return 0;
	}
	if (inet_pton(AF_INET6, hp->host, &sin6->sin6_addr) == 1) {
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons(hp->port);
		return 0;
	}
	/* A host name: resolved once at start-up, where blocking is fine. */
	struct addrinfo hints = { .ai_flags = AI_PASSIVE, .ai_socktype = SOCK_STREAM };
	struct addrinfo *res;
	char port[8];
	snprintf(port, sizeof(port), "%u", hp->port);
	int r = getaddrinfo(hp->host, port, &hints, &res);
	if (r != 0) {
		snprintf(err, errlen, "%s: %s", hp->host, gai_strerror(r));
		return -1;
	}
	memcpy(ss, res->ai_addr, res->ai_addrlen);
	freeaddrinfo(res);
	return 0;
}
