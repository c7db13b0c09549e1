/*
 * dnsq - query strictrelay's resolver (policy/resolver.h) and next-hop
 * resolution (policy/nexthop.h) from the command line, for the integration
 * tests and for people debugging DNS.
 *
 *   dnsq SERVERS TYPE NAME [--timeout-ms N] [--tries N] [--repeat N] [--debug]
 *   dnsq SERVERS --stdin  [--timeout-ms N] [--tries N] [--debug]
 *
 * SERVERS: "ip:port[,ip:port...]" ("[v6]:port" for IPv6), or "system" for
 * /etc/resolv.conf. TYPE: mx | addrs | txt | nexthop (MX lookup) | route
 * (the host itself, as for a [host] route).
 * --repeat N runs the same query N times in one process (the cache is
 * shared); --stdin reads "TYPE NAME" lines (and "flush" for
 * resolver_flush_cache), one at a time, so a test can change the world
 * between queries. Each result ends with a line "." and stdout is flushed.
 *
 * Output (stable; one item per line; network text escaped as \xNN):
 *   status=OK cached=no ttl=30 elapsed_ms=2 detail=...
 *   mx PREF HOST                    (mx, in answer order)
 *   addr IP                         (addrs)
 *   txt TEXT                        (txt, one line per record)
 *   status=OK implicit_mx=no ttl=30 elapsed_ms=2 detail=...   (nexthop/route)
 *   host PREF NAME addr_status=OK addrs=IP,IP[ detail=...]
 *
 * Exit: 0 when every query got an answer (whatever its status), 1 on a
 * tool error, 2 on usage, 3 if the loop did not close cleanly afterwards
 * (a handle left open: uv_loop_close() != 0).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "mta/log.h"
#include "mta/netaddr.h"
#include "mta/util.h"
#include "policy/nexthop.h"
#include "policy/resolver.h"

enum qtype { Q_MX, Q_ADDRS, Q_TXT, Q_NEXTHOP, Q_ROUTE };

struct run {
	uv_loop_t *loop;
	struct resolver *r;
	uint64_t started;
	bool done;
};

static void usage(void)
{
	fprintf(stderr, "usage: dnsq SERVERS mx|addrs|txt|nexthop|route NAME [--timeout-ms N] "
			"[--tries N] [--repeat N] [--debug]\n"
			"       dnsq SERVERS --stdin [--timeout-ms N] [--tries N] [--debug]\n"
			"SERVERS: ip:port[,ip:port...] | [v6]:port | system\n");
	exit(2);
}

/* Printable ASCII stays, the rest (and '\\') becomes \xNN: one item per line. */
static void put_escaped(const char *s)
{
	for (const unsigned char *p = (const unsigned char *)s; *p != '\0'; p++) {
		if (*p >= 0x20 && *p < 0x7f && *p != '\\')
			putchar(*p);
		else
			printf("\\x%02x", *p);
	}
}

static void put_addr(const struct sockaddr_storage *ss)
{
	char ip[64];
	sockaddr_format((const struct sockaddr *)ss, ip, sizeof(ip), NULL);
	fputs(ip, stdout);
}

static void on_dns(void *arg, const struct dns_result *res)
{
	struct run *run = arg;
	printf("status=%s cached=%s ttl=%u elapsed_ms=%llu detail=", dns_status_name(res->status),
	       res->cached ? "yes" : "no", res->ttl,
	       (unsigned long long)(now_ms() - run->started));
	put_escaped(res->detail);
	putchar('\n');
	for (size_t i = 0; i < res->nmx; i++) {
		printf("mx %u ", res->mx[i].pref);
		put_escaped(res->mx[i].host);
		putchar('\n');
	}
	for (size_t i = 0; i < res->naddrs; i++) {
		fputs("addr ", stdout);
		put_addr(&res->addrs[i]);
		putchar('\n');
	}
	for (size_t i = 0; i < res->txt.n; i++) {
		fputs("txt ", stdout);
		put_escaped(res->txt.v[i]);
		putchar('\n');
	}
	run->done = true;
}

static void on_nexthop(void *arg, const struct nexthop *nh)
{
	struct run *run = arg;
	printf("status=%s implicit_mx=%s ttl=%u elapsed_ms=%llu detail=",
	       nexthop_status_name(nh->status), nh->implicit_mx ? "yes" : "no", nh->ttl,
	       (unsigned long long)(now_ms() - run->started));
	put_escaped(nh->detail);
	putchar('\n');
	for (size_t i = 0; i < nh->nhosts; i++) {
		const struct nexthop_host *h = &nh->hosts[i];
		printf("host %u ", h->pref);
		put_escaped(h->name);
		printf(" addr_status=%s addrs=", dns_status_name(h->addr_status));
		for (size_t k = 0; k < h->naddrs; k++) {
			if (k > 0)
				putchar(',');
			put_addr(&h->addrs[k]);
		}
		if (h->naddrs == 0) {
			fputs(" detail=", stdout);
			put_escaped(h->addr_detail);
		}
		putchar('\n');
	}
	run->done = true;
}

static int parse_type(const char *s, enum qtype *t)
{
	static const char *const names[] = { "mx", "addrs", "txt", "nexthop", "route" };
	for (size_t i = 0; i < SR_ARRAY_LEN(names); i++) {
		if (strcmp(s, names[i]) == 0) {
			*t = (enum qtype)i;
			return 0;
		}
	}
	return -1;
}

/* Runs one query to its answer; 0, or -1 if the loop ran dry without one. */
static int run_query(struct run *run, enum qtype t, const char *name)
{
	run->done = false;
	run->started = now_ms();
	switch (t) {
	case Q_MX:
		resolver_query_mx(run->r, name, on_dns, run);
		break;
	case Q_ADDRS:
		resolver_query_addrs(run->r, name, on_dns, run);
		break;
	case Q_TXT:
		resolver_query_txt(run->r, name, on_dns, run);
		break;
	case Q_NEXTHOP:
	case Q_ROUTE:
		nexthop_resolve(run->r, name, t == Q_NEXTHOP, on_nexthop, run);
		break;
	}
	uv_run(run->loop, UV_RUN_DEFAULT);
	puts(".");
	fflush(stdout);
	if (!run->done) {
		fprintf(stderr, "dnsq: the loop stopped without an answer for %s\n", name);
		return -1;
	}
	return 0;
}

static int run_stdin(struct run *run)
{
	char line[1024];
	while (fgets(line, sizeof(line), stdin) != NULL) {
		char *s = str_trim(line);
		if (*s == '\0' || *s == '#')
			continue;
		if (strcmp(s, "flush") == 0) {
			resolver_flush_cache(run->r);
			puts(".");
			fflush(stdout);
			continue;
		}
		char *sp = strchr(s, ' ');
		enum qtype t;
		if (sp == NULL) {
			fprintf(stderr, "dnsq: expected \"TYPE NAME\", got \"%s\"\n", s);
			return -1;
		}
		*sp = '\0';
		if (parse_type(s, &t) < 0) {
			fprintf(stderr, "dnsq: unknown query type \"%s\"\n", s);
			return -1;
		}
		if (run_query(run, t, str_trim(sp + 1)) < 0)
			return -1;
	}
	return 0;
}

static unsigned parse_uint(const char *opt, const char *v)
{
	char *end;
	unsigned long n = strtoul(v, &end, 10);
	if (*v == '\0' || *end != '\0' || n > 1000000) {
		fprintf(stderr, "dnsq: bad value for %s: \"%s\"\n", opt, v);
		exit(2);
	}
	return (unsigned)n;
}

/* "system" -> none; else a comma list of ip:port. */
static size_t parse_servers(const char *text, struct hostport **out)
{
	*out = NULL;
	if (strcmp(text, "system") == 0)
		return 0;
	struct strlist items = { 0 };
	strlist_split(&items, text, false);
	struct hostport *hp = xcalloc(items.n ? items.n : 1, sizeof(*hp));
	for (size_t i = 0; i < items.n; i++) {
		char err[256];
		if (hostport_parse(&hp[i], items.v[i], 53, err, sizeof(err)) < 0) {
			fprintf(stderr, "dnsq: %s\n", err);
			exit(2);
		}
	}
	size_t n = items.n;
	strlist_free(&items);
	*out = hp;
	return n;
}

int main(int argc, char **argv)
{
	const char *servers_text = NULL, *type_text = NULL, *name = NULL;
	unsigned timeout_ms = 0, tries = 0, repeat = 1;
	bool use_stdin = false, debug = false;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (strcmp(a, "--timeout-ms") == 0 && i + 1 < argc)
			timeout_ms = parse_uint(a, argv[++i]);
		else if (strcmp(a, "--tries") == 0 && i + 1 < argc)
			tries = parse_uint(a, argv[++i]);
		else if (strcmp(a, "--repeat") == 0 && i + 1 < argc)
			repeat = parse_uint(a, argv[++i]);
		else if (strcmp(a, "--stdin") == 0)
			use_stdin = true;
		else if (strcmp(a, "--debug") == 0)
			debug = true;
		else if (a[0] == '-' && a[1] == '-')
			usage();
		else if (servers_text == NULL)
			servers_text = a;
		else if (type_text == NULL)
			type_text = a;
		else if (name == NULL)
			name = a;
		else
			usage();
	}
	enum qtype t = Q_MX;
	if (servers_text == NULL || (use_stdin ? type_text != NULL : name == NULL))
		usage();
	if (!use_stdin && parse_type(type_text, &t) < 0)
		usage();
	log_setup(LOG_FORMAT_TEXT, debug);

	struct hostport *servers;
	size_t nservers = parse_servers(servers_text, &servers);
	uv_loop_t loop;
	int e = uv_loop_init(&loop);
	if (e < 0) {
		fprintf(stderr, "dnsq: uv_loop_init: %s\n", uv_strerror(e));
		return 1;
	}
	struct run run = { .loop = &loop };
	char err[256];
	int rc = 0;
	if (resolver_new(&run.r, &loop, servers, nservers, timeout_ms, tries, err, sizeof(err)) < 0) {
		fprintf(stderr, "dnsq: %s\n", err);
		rc = 1;
	} else {
		if (use_stdin)
			rc = run_stdin(&run) < 0 ? 1 : 0;
		for (unsigned i = 0; !use_stdin && i < repeat && rc == 0; i++)
			rc = run_query(&run, t, name) < 0 ? 1 : 0;
		resolver_free(run.r);
	}
	for (size_t i = 0; i < nservers; i++)
		hostport_free(&servers[i]);
	free(servers);
	uv_run(&loop, UV_RUN_DEFAULT);
	e = uv_loop_close(&loop);
	if (e != 0) {
		fprintf(stderr, "dnsq: uv_loop_close: %s (a handle was left open)\n", uv_strerror(e));
		return 3;
	}
	return rc;
}
