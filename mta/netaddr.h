/*
 * netaddr.h - network lists (CIDR) and host:port endpoints. Pure functions.
 *
 * netlist_parse() accepts a comma/blank separated list of addresses and
 * networks: "127.0.0.0/8, ::1/128, 10.1.2.3" (a bare address is a /32 or
 * /128). Host bits set below the prefix are an error ("10.0.0.1/8" is refused:
 * it usually means the operator meant something else). IPv4-mapped IPv6
 * client addresses (::ffff:a.b.c.d) match IPv4 networks.
 *
 * hostport_parse() accepts "host:port", "[v6addr]:port", "[host]:port",
 * "host" and "[host]" (default port). The bracket form is remembered because
 * for routes "[host]" means "no MX lookup".
 */
#ifndef STRICTRELAY_NETADDR_H
#define STRICTRELAY_NETADDR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

struct netmask {
	int family;          /* AF_INET or AF_INET6 */
	uint8_t addr[16];    /* network byte order; 4 bytes used for AF_INET */
	unsigned prefix;     /* 0..32 or 0..128 */
};

struct netlist {
	struct netmask *v;
	size_t n;
};

/* 0 on success; -1 with a reason in err naming the bad item. Appends to l
 * (on failure l is left as it was). */
int netlist_parse(struct netlist *l, const char *text, char *err, size_t errlen);
bool netlist_match(const struct netlist *l, const struct sockaddr *sa);
/* Matches a textual address ("127.0.0.1", "::1"); false if unparsable. */
bool netlist_match_str(const struct netlist *l, const char *addr);
void netlist_free(struct netlist *l);
void netlist_copy(struct netlist *dst, const struct netlist *src);
/* "127.0.0.0/8" */
void netmask_format(const struct netmask *m, char *dst, size_t dstlen);

struct hostport {
	char *host;        /* without brackets; never NULL after a successful parse */
	uint16_t port;
	bool bracketed;    /* written as [host] */
};

int hostport_parse(struct hostport *hp, const char *text, uint16_t default_port, char *err,
		   size_t errlen);
void hostport_free(struct hostport *hp);
/* "host:port", or "[host]:port" for bracketed names and IPv6 literals */
void hostport_format(const struct hostport *hp, char *dst, size_t dstlen);

/* "1.2.3.4" / "::1" (RFC 5952 via inet_ntop) and port of a sockaddr. */
void sockaddr_format(const struct sockaddr *sa, char *ip, size_t iplen, uint16_t *port);

/* The address to bind for hp: an IP literal, or a name resolved with
 * getaddrinfo (blocking: for start-up only). 0, or -1 with err. */
int hostport_sockaddr(const struct hostport *hp, struct sockaddr_storage *ss, char *err,
		      size_t errlen);

#endif
