/* Unit tests for mta/netaddr.c: CIDR lists (parse, match, v4-mapped v6,
 * host bits), host:port endpoints, formatting. */
#include "mta/netaddr.h"
#include "mta/util.h"
#include "test.h"

#include <arpa/inet.h>
#include <netinet/in.h>

static struct sockaddr_in sin4(const char *ip, uint16_t port)
{
	struct sockaddr_in s;
	memset(&s, 0, sizeof(s));
	s.sin_family = AF_INET;
	s.sin_port = htons(port);
	inet_pton(AF_INET, ip, &s.sin_addr);
	return s;
}

static struct sockaddr_in6 sin6(const char *ip, uint16_t port)
{
	struct sockaddr_in6 s;
	memset(&s, 0, sizeof(s));
	s.sin6_family = AF_INET6;
	s.sin6_port = htons(port);
	inet_pton(AF_INET6, ip, &s.sin6_addr);
	return s;
}

static void expect_net_error(const char *text, const char *msg)
{
	struct netlist l = { 0 };
	char err[256] = "";
	CHECK_INT(netlist_parse(&l, text, err, sizeof(err)), -1);
	CHECK_STR(err, msg);
	netlist_free(&l);
}

static void test_netlist_parse(void)
{
	struct netlist l = { 0 };
	char err[256] = "";
	CHECK_INT(netlist_parse(&l, "127.0.0.0/8, ::1/128 10.1.2.3,2001:db8::/32\t0.0.0.0/0",
				err, sizeof(err)),
		  0);
	REQUIRE(l.n == 5);
	CHECK_INT(l.v[0].family, AF_INET);
	CHECK_INT(l.v[0].prefix, 8);
	CHECK_INT(l.v[1].family, AF_INET6);
	CHECK_INT(l.v[1].prefix, 128);
	CHECK_INT(l.v[2].prefix, 32); /* a bare address is a host */
	CHECK_INT(l.v[3].prefix, 32);
	CHECK_INT(l.v[4].prefix, 0);
	char m[64];
	netmask_format(&l.v[0], m, sizeof(m));
	CHECK_STR(m, "127.0.0.0/8");
	netmask_format(&l.v[1], m, sizeof(m));
	CHECK_STR(m, "::1/128");
	netmask_format(&l.v[2], m, sizeof(m));
	CHECK_STR(m, "10.1.2.3/32");
	netmask_format(&l.v[3], m, sizeof(m));
	CHECK_STR(m, "2001:db8::/32");

	/* Appends; empty text adds nothing. */
	CHECK_INT(netlist_parse(&l, "192.168.0.0/16", err, sizeof(err)), 0);
	CHECK_INT(l.n, 6);
	CHECK_INT(netlist_parse(&l, "", err, sizeof(err)), 0);
	CHECK_INT(netlist_parse(&l, " , ", err, sizeof(err)), 0);
	CHECK_INT(l.n, 6);

	struct netlist c = { 0 };
	netlist_copy(&c, &l);
	CHECK_INT(c.n, 6);
	CHECK(c.v != l.v);
	CHECK(memcmp(c.v, l.v, 6 * sizeof(*l.v)) == 0);
	netlist_free(&c);
	netlist_free(&l);
	CHECK_INT(l.n, 0);
	CHECK(l.v == NULL);
	netlist_copy(&c, &l);
	CHECK_INT(c.n, 0);
	CHECK(c.v == NULL);

	/* A failed parse leaves the list as it was. */
	REQUIRE(netlist_parse(&l, "10.0.0.0/8", err, sizeof(err)) == 0);
	CHECK_INT(netlist_parse(&l, "192.168.0.0/16, 172.16.0.0/12, bogus", err, sizeof(err)), -1);
	CHECK_INT(l.n, 1);
	CHECK(!netlist_match_str(&l, "192.168.1.1"));
	CHECK(netlist_match_str(&l, "10.1.1.1"));
	netlist_free(&l);

	/* Prefix boundaries. */
	CHECK_INT(netlist_parse(&l, "10.0.0.0/32 ::/0 ::/128 11.0.0.0/07", err, sizeof(err)), -1);
	netlist_free(&l);
	CHECK_INT(netlist_parse(&l, "10.0.0.0/32 ::/0 ::/128 10.0.0.0/008", err, sizeof(err)), 0);
	CHECK_INT(l.v[3].prefix, 8);
	netlist_free(&l);
}

static void test_netlist_errors(void)
{
	expect_net_error("10.0.0.1/8",
			 "bad network \"10.0.0.1/8\": address has bits set beyond the /8 prefix");
	expect_net_error("127.0.0.0/8, 192.168.1.1/24",
			 "bad network \"192.168.1.1/24\": address has bits set beyond the /24 prefix");
	expect_net_error("2001:db8::1/64",
			 "bad network \"2001:db8::1/64\": address has bits set beyond the /64 prefix");
	expect_net_error("10.0.0.0/33", "bad network \"10.0.0.0/33\": prefix length must be 0..32");
	expect_net_error("::/129", "bad network \"::/129\": prefix length must be 0..128");
	expect_net_error("10.0.0.0/", "bad network \"10.0.0.0/\": prefix length missing");
	expect_net_error("10.0.0.0/-1", "bad network \"10.0.0.0/-1\": prefix length missing");
	expect_net_error("10.0.0.0/8x", "bad network \"10.0.0.0/8x\": prefix length must be 0..32");
	expect_net_error("10.0.0.0/99999999999999999999999",
			 "bad network \"10.0.0.0/99999999999999999999999\": prefix length must be "
			 "0..32");
	expect_net_error("/8", "bad network \"/8\"");
	expect_net_error("example.com",
			 "bad network \"example.com\": \"example.com\" is not an IP address");
	expect_net_error("10.0.0", "bad network \"10.0.0\": \"10.0.0\" is not an IP address");
	expect_net_error("256.0.0.0/8",
			 "bad network \"256.0.0.0/8\": \"256.0.0.0\" is not an IP address");
	expect_net_error("fe80::1%eth0",
			 "bad network \"fe80::1%eth0\": \"fe80::1%eth0\" is not an IP address");
	/* Longer than any address: refused, no overflow. */
	expect_net_error("1111:2222:3333:4444:5555:6666:7777:8888:9999:aaaa:bbbb:cccc/64",
			 "bad network \"1111:2222:3333:4444:5555:6666:7777:8888:9999:aaaa:bbbb:"
			 "cccc/64\"");
}

static void test_netlist_host_bits_ok(void)
{
	/* 10.0.0.128/25 is a proper network: bit 25 onward are zero. */
	struct netlist l = { 0 };
	char err[256];
	CHECK_INT(netlist_parse(&l, "10.0.0.128/25", err, sizeof(err)), 0);
	CHECK(netlist_match_str(&l, "10.0.0.200"));
	CHECK(!netlist_match_str(&l, "10.0.0.127"));
	netlist_free(&l);
}

static void test_netlist_match(void)
{
	struct netlist l = { 0 };
	char err[256];
	REQUIRE(netlist_parse(&l, "127.0.0.0/8, 10.1.0.0/17, 192.0.2.7, 2001:db8::/33, ::1",
			      err, sizeof(err)) == 0);
	CHECK(netlist_match_str(&l, "127.0.0.1"));
	CHECK(netlist_match_str(&l, "127.255.255.255"));
	CHECK(!netlist_match_str(&l, "128.0.0.1"));
	CHECK(netlist_match_str(&l, "10.1.127.255"));
	CHECK(!netlist_match_str(&l, "10.1.128.0"));
	CHECK(netlist_match_str(&l, "192.0.2.7"));
	CHECK(!netlist_match_str(&l, "192.0.2.8"));
	CHECK(netlist_match_str(&l, "2001:db8:7fff::1"));
	CHECK(!netlist_match_str(&l, "2001:db8:8000::1"));
	CHECK(netlist_match_str(&l, "::1"));
	CHECK(!netlist_match_str(&l, "::2"));
	CHECK(!netlist_match_str(&l, "not an address"));
	CHECK(!netlist_match_str(&l, ""));
	/* IPv4-mapped IPv6 clients (dual-stack sockets) match IPv4 networks. */
	CHECK(netlist_match_str(&l, "::ffff:127.0.0.1"));
	CHECK(netlist_match_str(&l, "::ffff:10.1.5.5"));
	CHECK(!netlist_match_str(&l, "::ffff:10.1.200.5"));
	/* ...but IPv4-compatible or other embeddings do not. */
	CHECK(!netlist_match_str(&l, "::127.0.0.1"));
	CHECK(!netlist_match_str(&l, "64:ff9b::127.0.0.1"));

	struct sockaddr_in a4 = sin4("10.1.3.4", 2525);
	CHECK(netlist_match(&l, (struct sockaddr *)&a4));
	a4 = sin4("10.2.3.4", 2525);
	CHECK(!netlist_match(&l, (struct sockaddr *)&a4));
	struct sockaddr_in6 a6 = sin6("::ffff:192.0.2.7", 25);
	CHECK(netlist_match(&l, (struct sockaddr *)&a6));
	a6 = sin6("::ffff:192.0.2.8", 25);
	CHECK(!netlist_match(&l, (struct sockaddr *)&a6));
	a6 = sin6("2001:db8::25", 25);
	CHECK(netlist_match(&l, (struct sockaddr *)&a6));
	struct sockaddr other;
	memset(&other, 0, sizeof(other));
	other.sa_family = AF_UNIX;
	CHECK(!netlist_match(&l, &other));
	netlist_free(&l);

	/* An IPv6 network does not match IPv4 clients, and /0 matches its family. */
	REQUIRE(netlist_parse(&l, "::/0", err, sizeof(err)) == 0);
	CHECK(netlist_match_str(&l, "2001:db8::1"));
	CHECK(!netlist_match_str(&l, "10.0.0.1"));
	netlist_free(&l);
	REQUIRE(netlist_parse(&l, "0.0.0.0/0", err, sizeof(err)) == 0);
	CHECK(netlist_match_str(&l, "203.0.113.9"));
	CHECK(netlist_match_str(&l, "::ffff:203.0.113.9"));
	CHECK(!netlist_match_str(&l, "2001:db8::1"));
	netlist_free(&l);
	/* An empty list matches nobody. */
	CHECK(!netlist_match_str(&l, "127.0.0.1"));
}

static void expect_hp(const char *text, uint16_t defport, const char *host, uint16_t port,
		      bool bracketed, const char *formatted)
{
	struct hostport hp;
	char err[256] = "", f[300];
	CHECK_INT(hostport_parse(&hp, text, defport, err, sizeof(err)), 0);
	CHECK_STR(err, "");
	if (hp.host == NULL)
		return;
	CHECK_STR(hp.host, host);
	CHECK_INT(hp.port, port);
	CHECK_INT(hp.bracketed, bracketed);
	hostport_format(&hp, f, sizeof(f));
	CHECK_STR(f, formatted);
	hostport_free(&hp);
	CHECK(hp.host == NULL);
}

static void expect_hp_error(const char *text, uint16_t defport, const char *msg)
{
	struct hostport hp;
	char err[256] = "";
	CHECK_INT(hostport_parse(&hp, text, defport, err, sizeof(err)), -1);
	CHECK_STR(err, msg);
	CHECK(hp.host == NULL);
}

static void test_hostport(void)
{
	expect_hp("mx.example.com:2525", 25, "mx.example.com", 2525, false, "mx.example.com:2525");
	expect_hp("mx.example.com", 25, "mx.example.com", 25, false, "mx.example.com:25");
	expect_hp("[mx.example.com]", 25, "mx.example.com", 25, true, "[mx.example.com]:25");
	expect_hp("[mx.example.com]:587", 25, "mx.example.com", 587, true, "[mx.example.com]:587");
	expect_hp("127.0.0.1:25", 0, "127.0.0.1", 25, false, "127.0.0.1:25");
	expect_hp("[::1]:2525", 25, "::1", 2525, true, "[::1]:2525");
	expect_hp("[::]", 53, "::", 53, true, "[::]:53");
	expect_hp("[2001:db8::1]:65535", 25, "2001:db8::1", 65535, true, "[2001:db8::1]:65535");
	expect_hp("[10.0.0.5]:1", 25, "10.0.0.5", 1, true, "[10.0.0.5]:1");
	expect_hp("h:025", 25, "h", 25, false, "h:25");
	expect_hp("under_score.example", 25, "under_score.example", 25, false,
		  "under_score.example:25");

	expect_hp_error("", 25, "bad address \"\": host missing");
	expect_hp_error(":25", 25, "bad address \":25\": host missing");
	expect_hp_error("[]:25", 25, "bad address \"[]:25\": host missing");
	expect_hp_error("[::1", 25, "bad address \"[::1\": missing ']'");
	expect_hp_error("[::1]25", 25, "bad address \"[::1]25\": junk after ']'");
	expect_hp_error("[::1]:", 25, "bad address \"[::1]:\": port must be 1..65535");
	expect_hp_error("host:", 25, "bad address \"host:\": port must be 1..65535");
	expect_hp_error("host:0", 25, "bad address \"host:0\": port must be 1..65535");
	expect_hp_error("host:65536", 25, "bad address \"host:65536\": port must be 1..65535");
	expect_hp_error("host:-1", 25, "bad address \"host:-1\": port must be 1..65535");
	expect_hp_error("host:+25", 25, "bad address \"host:+25\": port must be 1..65535");
	expect_hp_error("host: 25", 25, "bad address \"host: 25\": port must be 1..65535");
	expect_hp_error("host:25x", 25, "bad address \"host:25x\": port must be 1..65535");
	expect_hp_error("host:99999999999999999999", 25,
			"bad address \"host:99999999999999999999\": port must be 1..65535");
	expect_hp_error("::1", 25,
			"bad address \"::1\": write IPv6 addresses in brackets, e.g. [::1]:25");
	expect_hp_error("2001:db8::1:25", 25,
			"bad address \"2001:db8::1:25\": write IPv6 addresses in brackets, e.g. "
			"[::1]:25");
	expect_hp_error("host", 0, "bad address \"host\": port missing");
	expect_hp_error("[host]", 0, "bad address \"[host]\": port missing");
	expect_hp_error("ho st:25", 25, "bad address \"ho st:25\": bad character in host");
	expect_hp_error("host,other", 25, "bad address \"host,other\": bad character in host");
	expect_hp_error("[a/b]:25", 25, "bad address \"[a/b]:25\": bad character in host");
	expect_hp_error("[fe80::1%eth0]:25", 25,
			"bad address \"[fe80::1%eth0]:25\": bad character in host");
}

static void test_sockaddr_format(void)
{
	char ip[64];
	uint16_t port = 0;
	struct sockaddr_in a4 = sin4("192.0.2.1", 2525);
	sockaddr_format((struct sockaddr *)&a4, ip, sizeof(ip), &port);
	CHECK_STR(ip, "192.0.2.1");
	CHECK_INT(port, 2525);
	struct sockaddr_in6 a6 = sin6("2001:0db8:0000:0000:0000:0000:0000:0001", 25);
	sockaddr_format((struct sockaddr *)&a6, ip, sizeof(ip), &port);
	CHECK_STR(ip, "2001:db8::1");
	CHECK_INT(port, 25);
	sockaddr_format((struct sockaddr *)&a6, ip, sizeof(ip), NULL);
	CHECK_STR(ip, "2001:db8::1");
	struct sockaddr other;
	memset(&other, 0, sizeof(other));
	other.sa_family = AF_UNIX;
	sockaddr_format(&other, ip, sizeof(ip), &port);
	CHECK_STR(ip, "unknown");
	CHECK_INT(port, 0);
}

int main(void)
{
	RUN(test_netlist_parse);
	RUN(test_netlist_errors);
	RUN(test_netlist_host_bits_ok);
	RUN(test_netlist_match);
	RUN(test_hostport);
	RUN(test_sockaddr_format);
	TEST_EXIT();
}
