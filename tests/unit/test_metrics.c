/* Unit tests for the pure parts of mta/metrics.c: HTTP request parsing
 * (table, every prefix, caps, random and mutated input), routing, responses,
 * the Prometheus text rendering (checked line by line) and the counters. */
#include <ctype.h>
#include <stdint.h>

#include "mta/metrics.h"
#include "mta/util.h"
#include "test.h"

#define CAP METRICS_MAX_REQUEST
#define HEAD_LEN (-100) /* expected: the length of the whole input */

struct parse_case {
	const char *in;
	long rc;            /* HEAD_LEN, a length, -2 or -1 */
	int status;         /* for -1 */
	const char *method; /* for success */
	const char *path;
};

static const struct parse_case cases[] = {
	{ "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:9325\r\n\r\n", HEAD_LEN, 0, "GET", "/metrics" },
	{ "GET /metrics HTTP/1.0\r\n\r\n", HEAD_LEN, 0, "GET", "/metrics" },
	{ "HEAD /healthz HTTP/1.0\r\n\r\n", HEAD_LEN, 0, "HEAD", "/healthz" },
	{ "GET /metrics?name[]=x&a=%20 HTTP/1.0\r\n\r\n", HEAD_LEN, 0, "GET", "/metrics" },
	{ "GET /?a?b HTTP/1.0\r\n\r\n", HEAD_LEN, 0, "GET", "/" },
	{ "\r\n\r\nGET / HTTP/1.0\r\n\r\n", HEAD_LEN, 0, "GET", "/" },
	{ "GET / HTTP/1.1\r\nhOsT: x\r\nAccept: */*\r\nX-Empty:\r\nX-Tab:\ta\tb\r\n\r\n", HEAD_LEN,
	  0, "GET", "/" },
	{ "GET / HTTP/1.0\r\nX-Utf8: \xc3\xa9t\xc3\xa9\r\n\r\n", HEAD_LEN, 0, "GET", "/" },
	{ "get /metrics HTTP/1.0\r\n\r\n", HEAD_LEN, 0, "get", "/metrics" },
	{ "BREW /metrics HTTP/1.0\r\n\r\n", HEAD_LEN, 0, "BREW", "/metrics" },
	{ "ABCDEFGHIJKLMNOP / HTTP/1.0\r\n\r\n", HEAD_LEN, 0, "ABCDEFGHIJKLMNOP", "/" },
	/* the head ends at the empty line; what follows is not ours */
	{ "POST /metrics HTTP/1.0\r\nContent-Length: 4\r\n\r\nbody", 45, 0, "POST", "/metrics" },
	/* incomplete */
	{ "", -2, 0, NULL, NULL },
	{ "G", -2, 0, NULL, NULL },
	{ "GET /metrics HTTP/1.1", -2, 0, NULL, NULL },
	{ "GET /metrics HTTP/1.1\r", -2, 0, NULL, NULL },
	{ "GET /metrics HTTP/1.1\r\nHost: x\r\n", -2, 0, NULL, NULL },
	{ "GET /metrics HTTP/1.1\r\nHost: x\r\n\r", -2, 0, NULL, NULL },
	/* line ends */
	{ "GET / HTTP/1.0\n\n", -1, 400, NULL, NULL },
	{ "GET / HTTP/1.0\r\n\n", -1, 400, NULL, NULL },
	{ "GET / HTTP/1.0\rX\r\n\r\n", -1, 400, NULL, NULL },
	{ "GET / HTTP/1.1\r\nHost: x\nY: z\r\n\r\n", -1, 400, NULL, NULL },
	/* request line */
	{ "GET  /metrics HTTP/1.1\r\n\r\n", -1, 400, NULL, NULL },
	{ " GET / HTTP/1.0\r\n\r\n", -1, 400, NULL, NULL },
	{ "GET /metrics  HTTP/1.1\r\n\r\n", -1, 400, NULL, NULL },
	{ "GET /metrics HTTP/1.1 \r\n\r\n", -1, 400, NULL, NULL },
	{ "GET /metrics\r\n\r\n", -1, 400, NULL, NULL },
	{ "GET\r\n\r\n", -1, 400, NULL, NULL },
	{ "\r\n", -2, 0, NULL, NULL },
	{ "GET http://x/metrics HTTP/1.1\r\nHost: x\r\n\r\n", -1, 400, NULL, NULL },
	{ "OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n", -1, 400, NULL, NULL },
	{ "GET metrics HTTP/1.0\r\n\r\n", -1, 400, NULL, NULL },
	{ "GET /a#b HTTP/1.0\r\n\r\n", -1, 400, NULL, NULL },
	{ "GET /\x7f HTTP/1.0\r\n\r\n", -1, 400, NULL, NULL },
	{ "GET /\xc3\xa9 HTTP/1.0\r\n\r\n", -1, 400, NULL, NULL },
	{ "G(T / HTTP/1.0\r\n\r\n", -1, 400, NULL, NULL },
	{ "ABCDEFGHIJKLMNOPQ / HTTP/1.0\r\n\r\n", -1, 400, NULL, NULL },
	{ "GET / HTTP/2.0\r\n\r\n", -1, 505, NULL, NULL },
	{ "GET / HTTP/1.2\r\n\r\n", -1, 505, NULL, NULL },
	{ "GET / HTTP/0.9\r\n\r\n", -1, 505, NULL, NULL },
	{ "GET / HTTP/1.10\r\n\r\n", -1, 400, NULL, NULL },
	{ "GET / http/1.1\r\n\r\n", -1, 400, NULL, NULL },
	{ "GET / HTTP/1.x\r\n\r\n", -1, 400, NULL, NULL },
	{ "GET / HTTP/1\r\n\r\n", -1, 400, NULL, NULL },
	/* garbage is refused before the line is complete */
	{ "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", -1, 400, NULL, NULL },
	{ "GET /\x01", -1, 400, NULL, NULL },
	/* headers */
	{ "GET / HTTP/1.1\r\n\r\n", -1, 400, NULL, NULL },                       /* no Host */
	{ "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", -1, 400, NULL, NULL }, /* two */
	{ "GET / HTTP/1.1\r\nHost : a\r\n\r\n", -1, 400, NULL, NULL },
	{ "GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n", -1, 400, NULL, NULL },
	{ "GET / HTTP/1.1\r\nHost: a\r\n\tfolded\r\n\r\n", -1, 400, NULL, NULL },
	{ "GET / HTTP/1.1\r\nHost: a\r\n: empty name\r\n\r\n", -1, 400, NULL, NULL },
	{ "GET / HTTP/1.1\r\nHost: a\r\nNo-Colon\r\n\r\n", -1, 400, NULL, NULL },
	{ "GET / HTTP/1.1\r\nHost: a\r\nX-Ctl: a\x01b\r\n\r\n", -1, 400, NULL, NULL },
	{ "GET / HTTP/1.1\r\nHost: a\r\nX-Del: a\x7f\r\n\r\n", -1, 400, NULL, NULL },
	{ "GET / HTTP/1.1\r\nHost: a\r\nX(y): a\r\n\r\n", -1, 400, NULL, NULL },
	{ "GET / HTTP/1.1\r\nHostx: a\r\n\r\n", -1, 400, NULL, NULL },           /* no Host */
};

static void check_case(const struct parse_case *c, const char *in, size_t len)
{
	struct metrics_http_request req;
	long rc = metrics_http_parse(in, len, CAP, &req);
	long want = c->rc == HEAD_LEN ? (long)len : c->rc;
	if (rc != want) {
		fprintf(stderr, "input %s\n", in);
		CHECK_INT(rc, want);
		return;
	}
	if (rc == -1)
		CHECK_INT(req.error_status, c->status);
	if (rc > 0) {
		CHECK_STR(req.method, c->method);
		CHECK_STR(req.path, c->path);
	}
}

static void test_parse_table(void)
{
	for (size_t i = 0; i < SR_ARRAY_LEN(cases); i++)
		check_case(&cases[i], cases[i].in, strlen(cases[i].in));
	/* a NUL anywhere */
	static const char nul[] = "GET /\0 HTTP/1.0\r\n\r\n";
	struct metrics_http_request req;
	CHECK_INT(metrics_http_parse(nul, sizeof(nul) - 1, CAP, &req), -1);
	CHECK_INT(req.error_status, 400);
	static const char nul2[] = "GET / HTTP/1.1\r\nHost: a\0b\r\n\r\n";
	CHECK_INT(metrics_http_parse(nul2, sizeof(nul2) - 1, CAP, &req), -1);
	CHECK_INT(req.error_status, 400);
}

/* Every proper prefix of a complete head needs more bytes (or, once a
 * refusal is certain, refuses the same way); the buffer is never read past
 * len (ASan checks: each prefix is its own allocation). */
static void test_parse_prefixes(void)
{
	for (size_t i = 0; i < SR_ARRAY_LEN(cases); i++) {
		const struct parse_case *c = &cases[i];
		size_t len = strlen(c->in);
		long full = c->rc == HEAD_LEN ? (long)len : c->rc;
		for (size_t n = 0; n < len; n++) {
			char *p = xmalloc(n ? n : 1);
			memcpy(p, c->in, n);
			struct metrics_http_request req;
			long rc = metrics_http_parse(p, n, CAP, &req);
			if (full > 0 && (size_t)full <= n)
				CHECK_INT(rc, full);
			else if (full > 0 || full == -2)
				CHECK_INT(rc, -2);
			else if (rc == -1)
				CHECK_INT(req.error_status, c->status);
			else
				CHECK_INT(rc, -2);
			free(p);
		}
	}
}

static void test_parse_caps(void)
{
	struct metrics_http_request req;
	char *big = xmalloc(2 * CAP);
	/* headers that never end: refused 431 once CAP bytes are in, not before */
	size_t n = (size_t)snprintf(big, 2 * CAP, "GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: ");
	memset(big + n, 'a', 2 * CAP - n);
	CHECK_INT(metrics_http_parse(big, CAP - 1, CAP, &req), -2);
	CHECK_INT(metrics_http_parse(big, CAP, CAP, &req), -1);
	CHECK_INT(req.error_status, 431);
	CHECK_INT(metrics_http_parse(big, 2 * CAP, CAP, &req), -1);
	CHECK_INT(req.error_status, 431);
	/* a head ending exactly at the cap is fine; one byte more is not */
	memcpy(big + CAP - 4, "\r\n\r\n", 4);
	CHECK_INT(metrics_http_parse(big, CAP, CAP, &req), CAP);
	CHECK_STR(req.path, "/metrics");
	CHECK_INT(metrics_http_parse(big, CAP, CAP - 1, &req), -1);
	CHECK_INT(req.error_status, 431);
	/* a request line that never ends */
	memcpy(big, "GET /", 5);
	memset(big + 5, 'a', 2 * CAP - 5);
	CHECK_INT(metrics_http_parse(big, CAP - 1, CAP, &req), -2);
	CHECK_INT(metrics_http_parse(big, CAP, CAP, &req), -1);
	CHECK_INT(req.error_status, 414);
	/* targets up to METRICS_HTTP_PATH_MAX */
	for (size_t len = METRICS_HTTP_PATH_MAX - 1; len <= METRICS_HTTP_PATH_MAX + 1; len++) {
		char line[600];
		char target[METRICS_HTTP_PATH_MAX + 2];
		target[0] = '/';
		memset(target + 1, 'p', len - 1);
		target[len] = '\0';
		int k = snprintf(line, sizeof(line), "GET %s HTTP/1.0\r\n\r\n", target);
		long rc = metrics_http_parse(line, (size_t)k, CAP, &req);
		if (len <= METRICS_HTTP_PATH_MAX) {
			CHECK_INT(rc, k);
			CHECK_STR(req.path, target);
		} else {
			CHECK_INT(rc, -1);
			CHECK_INT(req.error_status, 414);
		}
	}
	/* the query counts towards the cap; the path alone is kept */
	char line[600];
	int k = snprintf(line, sizeof(line), "GET /metrics?%0*d HTTP/1.0\r\n\r\n",
			 METRICS_HTTP_PATH_MAX, 7);
	CHECK_INT(metrics_http_parse(line, (size_t)k, CAP, &req), -1);
	CHECK_INT(req.error_status, 414);
	free(big);
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint32_t rnd(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return (uint32_t)rng_state;
}

static void check_result(long rc, size_t len, const struct metrics_http_request *req)
{
	if (rc > 0) {
		CHECK((size_t)rc <= len);
		CHECK(strlen(req->method) >= 1 && strlen(req->method) <= METRICS_HTTP_METHOD_MAX);
		CHECK(req->path[0] == '/');
		for (const char *p = req->path; *p; p++)
			CHECK(*p > 0x20 && *p < 0x7f);
	} else if (rc == -1) {
		int s = req->error_status;
		CHECK(s == 400 || s == 414 || s == 431 || s == 505);
	} else {
		CHECK_INT(rc, -2);
	}
}

/* Random bytes and mutations of valid heads: no crash, no read past the
 * input (each its own allocation), only the documented answers. */
static void test_parse_random(void)
{
	static const char alphabet[] = "GET /metrics HTTP/1.1\r\n:Host\t ?#\x00\x7f\x80\xff";
	for (int iter = 0; iter < 20000; iter++) {
		size_t len = rnd() % 300;
		char *p = xmalloc(len ? len : 1);
		for (size_t i = 0; i < len; i++)
			p[i] = (rnd() & 1) ? (char)rnd() : alphabet[rnd() % (sizeof(alphabet) - 1)];
		struct metrics_http_request req;
		check_result(metrics_http_parse(p, len, 256, &req), len, &req);
		free(p);
	}
	for (int iter = 0; iter < 20000; iter++) {
		const char *base = cases[rnd() % SR_ARRAY_LEN(cases)].in;
		size_t len = strlen(base);
		char *p = xmalloc(len ? len : 1);
		memcpy(p, base, len);
		for (int m = 0; len > 0 && m < 3; m++)
			p[rnd() % len] = (char)rnd();
		struct metrics_http_request req;
		check_result(metrics_http_parse(p, len, CAP, &req), len, &req);
		free(p);
	}
}

static enum metrics_route route_of(const char *method, const char *path, bool *head)
{
	struct metrics_http_request req;
	memset(&req, 0, sizeof(req));
	snprintf(req.method, sizeof(req.method), "%s", method);
	snprintf(req.path, sizeof(req.path), "%s", path);
	return metrics_http_route(&req, head);
}

static void test_route(void)
{
	bool head = true;
	CHECK_INT(route_of("GET", "/metrics", &head), METRICS_ROUTE_METRICS);
	CHECK(!head);
	CHECK_INT(route_of("HEAD", "/metrics", &head), METRICS_ROUTE_METRICS);
	CHECK(head);
	CHECK_INT(route_of("GET", "/healthz", &head), METRICS_ROUTE_HEALTHZ);
	CHECK(!head);
	CHECK_INT(route_of("HEAD", "/healthz", &head), METRICS_ROUTE_HEALTHZ);
	CHECK(head);
	CHECK_INT(route_of("POST", "/metrics", &head), METRICS_ROUTE_BAD_METHOD);
	CHECK_INT(route_of("get", "/metrics", &head), METRICS_ROUTE_BAD_METHOD);
	CHECK_INT(route_of("DELETE", "/healthz", &head), METRICS_ROUTE_BAD_METHOD);
	CHECK_INT(route_of("GET", "/", &head), METRICS_ROUTE_NOT_FOUND);
	CHECK_INT(route_of("GET", "/metrics/", &head), METRICS_ROUTE_NOT_FOUND);
	CHECK_INT(route_of("GET", "/METRICS", &head), METRICS_ROUTE_NOT_FOUND);
	CHECK_INT(route_of("GET", "/healthz/x", &head), METRICS_ROUTE_NOT_FOUND);
	CHECK_INT(route_of("POST", "/nothing", &head), METRICS_ROUTE_NOT_FOUND);
}

static void test_response(void)
{
	struct buf b;
	buf_init(&b, 0);
	metrics_http_response(&b, 200, "text/plain", "ok\n", 3, false);
	CHECK_STR(b.data, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n"
			  "Connection: close\r\nCache-Control: no-store\r\n\r\nok\n");
	buf_reset(&b);
	metrics_http_response(&b, 200, "text/plain", "ok\n", 3, true);
	CHECK_STR(b.data, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n"
			  "Connection: close\r\nCache-Control: no-store\r\n\r\n");
	buf_reset(&b);
	metrics_http_response(&b, 405, "text/plain", "no\n", 3, false);
	CHECK_STR(b.data, "HTTP/1.1 405 Method Not Allowed\r\nContent-Type: text/plain\r\n"
			  "Content-Length: 3\r\nConnection: close\r\nCache-Control: no-store\r\n"
			  "Allow: GET, HEAD\r\n\r\nno\n");
	buf_free(&b);
	CHECK_STR(metrics_http_reason(431), "Request Header Fields Too Large");
	CHECK_STR(metrics_http_reason(503), "Service Unavailable");
	CHECK_STR(metrics_http_reason(408), "Request Timeout");
}

/* --- the exposition format, checked strictly ------------------------------ */

static bool is_name(const char *s, size_t n)
{
	if (n == 0 || !(isalpha((unsigned char)s[0]) || s[0] == '_' || s[0] == ':'))
		return false;
	for (size_t i = 1; i < n; i++)
		if (!(isalnum((unsigned char)s[i]) || s[i] == '_' || s[i] == ':'))
			return false;
	return true;
}

struct fam {
	char name[128];
	bool help, type, counter;
	unsigned samples;
};

/* Checks text line by line; returns the number of families (or -1). */
static int check_exposition(const char *text, struct fam *fams, int maxfams)
{
	int nf = 0;
	const char *p = text;
	CHECK(*p != '\0');
	CHECK(text[strlen(text) - 1] == '\n');
	while (*p != '\0') {
		const char *nl = strchr(p, '\n');
		if (nl == NULL) {
			CHECK(!"last line without a newline");
			return -1;
		}
		char line[1024];
		size_t len = (size_t)(nl - p);
		if (len >= sizeof(line)) {
			CHECK(!"line too long");
			return -1;
		}
		memcpy(line, p, len);
		line[len] = '\0';
		p = nl + 1;
		if (strncmp(line, "# HELP ", 7) == 0 || strncmp(line, "# TYPE ", 7) == 0) {
			bool help = line[2] == 'H';
			char *name = line + 7;
			char *sp = strchr(name, ' ');
			if (sp == NULL || !is_name(name, (size_t)(sp - name))) {
				fprintf(stderr, "bad line: %s\n", line);
				CHECK(!"bad HELP/TYPE line");
				return -1;
			}
			*sp = '\0';
			const char *rest = sp + 1;
			if (help) {
				/* a new family: never seen before */
				for (int i = 0; i < nf; i++)
					if (strcmp(fams[i].name, name) == 0)
						CHECK(!"family repeated");
				if (nf >= maxfams)
					return -1;
				memset(&fams[nf], 0, sizeof(fams[nf]));
				snprintf(fams[nf].name, sizeof(fams[nf].name), "%s", name);
				fams[nf].help = rest[0] != '\0' && strchr(rest, '\\') == NULL;
				nf++;
			} else {
				CHECK(nf > 0 && strcmp(fams[nf - 1].name, name) == 0 &&
				      !fams[nf - 1].type && fams[nf - 1].samples == 0);
				CHECK(strcmp(rest, "counter") == 0 || strcmp(rest, "gauge") == 0);
				if (nf > 0) {
					fams[nf - 1].type = true;
					fams[nf - 1].counter = strcmp(rest, "counter") == 0;
				}
			}
			continue;
		}
		CHECK(line[0] != '#' && line[0] != '\0');
		/* name{label="value",...} value */
		size_t i = 0;
		while (line[i] != '\0' && line[i] != '{' && line[i] != ' ')
			i++;
		CHECK(is_name(line, i));
		CHECK(nf > 0 && fams[nf - 1].type && strlen(fams[nf - 1].name) == i &&
		      strncmp(fams[nf - 1].name, line, i) == 0);
		if (line[i] == '{') {
			i++;
			for (;;) {
				size_t s = i;
				while (isalnum((unsigned char)line[i]) || line[i] == '_')
					i++;
				CHECK(i > s && !isdigit((unsigned char)line[s]));
				CHECK(line[i] == '=' && line[i + 1] == '"');
				if (line[i] != '=' || line[i + 1] != '"')
					return -1;
				i += 2;
				while (line[i] != '"' && line[i] != '\0') {
					if (line[i] == '\\') {
						CHECK(line[i + 1] == '\\' || line[i + 1] == '"' ||
						      line[i + 1] == 'n');
						i++;
					}
					i++;
				}
				CHECK(line[i] == '"');
				if (line[i] != '"')
					return -1;
				i++;
				if (line[i] == ',') {
					i++;
					continue;
				}
				CHECK(line[i] == '}');
				i++;
				break;
			}
		}
		CHECK(line[i] == ' ');
		i++;
		CHECK(line[i] != '\0');
		for (const char *v = line + i; *v; v++)
			CHECK(isdigit((unsigned char)*v));
		if (nf > 0)
			fams[nf - 1].samples++;
	}
	for (int k = 0; k < nf; k++) {
		CHECK(fams[k].help && fams[k].type);
		CHECK(strncmp(fams[k].name, "strictrelay_", 12) == 0);
		size_t n = strlen(fams[k].name);
		bool total = n > 6 && strcmp(fams[k].name + n - 6, "_total") == 0;
		CHECK(total == fams[k].counter);
	}
	return nf;
}

static const struct fam *find_fam(const struct fam *f, int n, const char *name)
{
	for (int i = 0; i < n; i++)
		if (strcmp(f[i].name, name) == 0)
			return &f[i];
	return NULL;
}

static void test_render(void)
{
	struct metrics_snapshot s;
	memset(&s, 0, sizeof(s));
	for (int i = 0; i < METRICS_NCOUNTERS; i++)
		s.counters[i] = 100 + (uint64_t)i;
	for (int i = 0; i < METRICS_TLS_NRESULTS; i++)
		s.tls[i] = 200 + (uint64_t)i;
	s.counters[METRICS_DELIVERED] = UINT64_MAX;
	s.store_up = true;
	s.rcpt_queued = 3;
	s.rcpt_deferred = 4;
	s.rcpt_held = 5;
	s.msgs_active = 6;
	s.msgs_held = 7;
	s.oldest_age = 3600;
	s.connections = 9;
	s.start_time = 1795000000;
	s.version = "1.2\"3\\4\n";
	struct part p;
	part_init(&p, METRICS_MAX_BODY);
	metrics_render(&p, &s);
	REQUIRE(!p.err);
	struct fam fams[64];
	int nf = check_exposition(p.b.data, fams, 64);
	CHECK_INT(nf, 17);
	const char *want[] = {
		"strictrelay_messages_accepted_total 100\n",
		"strictrelay_recipients_delivered_total 18446744073709551615\n",
		"strictrelay_recipients_deferred_total 102\n",
		"strictrelay_recipients_bounced_total 103\n",
		"strictrelay_requiretls_delivered_total 104\n",
		"strictrelay_requiretls_bounced_total 105\n",
		"strictrelay_mta_sts_cache_hits_total 106\n",
		"strictrelay_mta_sts_fetches_total 107\n",
		"strictrelay_mta_sts_fetch_failures_total 108\n",
		"strictrelay_tls_results_total{result=\"success\"} 200\n",
		"strictrelay_tls_results_total{result=\"starttls-not-supported\"} 201\n",
		"strictrelay_tls_results_total{result=\"certificate-expired\"} 203\n",
		"strictrelay_tls_results_total{result=\"sts-webpki-invalid\"} 211\n",
		"strictrelay_queue_recipients{state=\"queued\"} 3\n",
		"strictrelay_queue_recipients{state=\"deferred\"} 4\n",
		"strictrelay_queue_recipients{state=\"held\"} 5\n",
		"strictrelay_queue_messages{state=\"active\"} 6\n",
		"strictrelay_queue_messages{state=\"held\"} 7\n",
		"strictrelay_queue_oldest_message_age_seconds 3600\n",
		"strictrelay_store_up 1\n",
		"strictrelay_smtp_connections 9\n",
		"strictrelay_start_time_seconds 1795000000\n",
		"strictrelay_build_info{version=\"1.2\\\"3\\\\4\\n\"} 1\n",
		"# TYPE strictrelay_tls_results_total counter\n",
		"# TYPE strictrelay_queue_recipients gauge\n",
	};
	for (size_t i = 0; i < SR_ARRAY_LEN(want); i++) {
		if (strstr(p.b.data, want[i]) == NULL) {
			fprintf(stderr, "missing: %s", want[i]);
			CHECK(!"line missing");
		}
	}
	const struct fam *t = find_fam(fams, nf, "strictrelay_tls_results_total");
	CHECK(t != NULL && t->samples == METRICS_TLS_NRESULTS);
	buf_free(&p.b);

	/* the database did not answer: the queue families stay, without samples */
	s.store_up = false;
	part_init(&p, METRICS_MAX_BODY);
	metrics_render(&p, &s);
	REQUIRE(!p.err);
	int nf2 = check_exposition(p.b.data, fams, 64);
	CHECK_INT(nf2, nf);
	CHECK(strstr(p.b.data, "strictrelay_store_up 0\n") != NULL);
	CHECK(strstr(p.b.data, "strictrelay_queue_recipients{") == NULL);
	CHECK(strstr(p.b.data, "\nstrictrelay_queue_oldest_message_age_seconds ") == NULL);
	const struct fam *q = find_fam(fams, nf2, "strictrelay_queue_messages");
	CHECK(q != NULL && q->samples == 0);
	buf_free(&p.b);

	/* the cap holds */
	part_init(&p, 100);
	metrics_render(&p, &s);
	CHECK(p.err);
	buf_free(&p.b);
}

static void test_counters(void)
{
	struct metrics_snapshot a, b;
	metrics_snapshot_counters(&a);
	metrics_count(METRICS_ACCEPTED);
	metrics_count(METRICS_ACCEPTED);
	metrics_count(METRICS_NCOUNTERS); /* ignored */
	metrics_count_outcome(RCPT_SENT, "2.0.0", false);
	metrics_count_outcome(RCPT_SENT, "2.0.0", true);
	metrics_count_outcome(RCPT_DEFERRED, "4.4.1", true);
	metrics_count_outcome(RCPT_BOUNCED, "5.7.30", true);
	metrics_count_outcome(RCPT_BOUNCED, "5.1.1", false);
	metrics_count_outcome(RCPT_BOUNCED, NULL, false);
	metrics_count_outcome(RCPT_PENDING, "", true);
	metrics_count_tls("success");
	metrics_count_tls("sts-policy-invalid");
	metrics_count_tls("no-such-type");
	metrics_count_tls(NULL);
	metrics_snapshot_counters(&b);
	CHECK_INT(b.counters[METRICS_ACCEPTED] - a.counters[METRICS_ACCEPTED], 2);
	CHECK_INT(b.counters[METRICS_DELIVERED] - a.counters[METRICS_DELIVERED], 2);
	CHECK_INT(b.counters[METRICS_REQUIRETLS_DELIVERED] - a.counters[METRICS_REQUIRETLS_DELIVERED], 1);
	CHECK_INT(b.counters[METRICS_DEFERRED] - a.counters[METRICS_DEFERRED], 1);
	CHECK_INT(b.counters[METRICS_BOUNCED] - a.counters[METRICS_BOUNCED], 3);
	CHECK_INT(b.counters[METRICS_REQUIRETLS_BOUNCED] - a.counters[METRICS_REQUIRETLS_BOUNCED], 1);
	CHECK_INT(b.tls[0] - a.tls[0], 1);
	CHECK_STR(metrics_tls_results[0], "success");
	for (int i = 1; i < METRICS_TLS_NRESULTS; i++) {
		uint64_t d = b.tls[i] - a.tls[i];
		if (strcmp(metrics_tls_results[i], "sts-policy-invalid") == 0)
			CHECK_INT(d, 1);
		else if (strcmp(metrics_tls_results[i], "validation-failure") == 0)
			CHECK_INT(d, 2);
		else
			CHECK_INT(d, 0);
	}
}

int main(void)
{
	RUN(test_parse_table);
	RUN(test_parse_prefixes);
	RUN(test_parse_caps);
	RUN(test_parse_random);
	RUN(test_route);
	RUN(test_response);
	RUN(test_render);
	RUN(test_counters);
	TEST_EXIT();
}
