/*
 * httpsget - fetch URLs with strictrelay's HTTPS client (mta/https.h), for
 * the integration tests and for people debugging MTA-STS fetches.
 *
 *   httpsget --dns IP:PORT [--ca FILE] [--post FILE --type TYPE] [--max N]
 *            [--timeout-ms N] [--repeat N] [--print N] [--cancel-after-ms N]
 *            [--free-after-ms N] [--debug] https://HOST[:PORT]/PATH ...
 *
 * Every URL (each --repeat N times) is requested at once, in one process
 * and one loop; results are printed as they complete. --post sends the
 * file's bytes with Content-Type TYPE. --cancel-after-ms cancels every
 * request still pending after N ms (their callbacks must then never run);
 * --free-after-ms frees the client after N ms (pending requests complete
 * with SHUTDOWN). --dns system uses /etc/resolv.conf.
 *
 * Output (stable; network text escaped as \xNN, also '\\' and spaces in url=):
 *   result url=URL status=200 error=OK ip=127.1.2.1 body_len=12 verify=0 elapsed_ms=5
 *   content_type text/plain; charset=utf-8
 *   detail TEXT
 *   body FIRST-BYTES        (at most --print bytes, default 4096)
 *   .
 * and at the end "cancelled N" when --cancel-after-ms cancelled any.
 *
 * Exit: 0 when every request not cancelled got a response (error=OK,
 * whatever the HTTP status), 1 if any ended with an error (or a cancelled
 * request's callback ran), 2 on usage, 3 if the loop did not close cleanly
 * afterwards (uv_loop_close() != 0), 4 when the client could not start.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "mta/https.h"
#include "mta/log.h"
#include "mta/netaddr.h"
#include "mta/util.h"
#include "policy/resolver.h"

#define POST_MAX (64u << 20)

struct job {
	struct run *run;
	const char *url;
	char host[300];
	uint16_t port;
	char path[2048];
	struct https_op *op;
	bool done, cancelled;
};

struct run {
	uv_loop_t *loop;
	struct resolver *r;
	struct https_client *c;
	struct job *jobs;
	size_t njobs, ndone, nerrors, ncancelled;
	bool bad_callback;
	size_t print_max;
	uv_timer_t timer;
	bool timer_open;
	bool cancel_mode;
};

static void on_timer_closed(uv_handle_t *h)
{
	(void)h;
}

/*
 * Once every request is accounted for, free the client and the resolver
 * at once (often from inside the last callback: that is allowed and worth
 * exercising). Waiting for the loop to run dry instead would also wait for
 * c-ares to give up on a cancelled query (resolver.h BUGS).
 */
static void maybe_finish(struct run *run)
{
	if (run->ndone + run->ncancelled < run->njobs)
		return;
	struct https_client *c = run->c;
	run->c = NULL;
	https_client_free(c);
	resolver_free(run->r);
	run->r = NULL;
	if (run->timer_open) {
		run->timer_open = false;
		uv_close((uv_handle_t *)&run->timer, on_timer_closed);
	}
}

static void usage(void)
{
	fprintf(stderr,
		"usage: httpsget --dns IP:PORT|system [--ca FILE] [--post FILE --type TYPE] "
		"[--max N] [--timeout-ms N]\n"
		"                [--repeat N] [--print N] [--cancel-after-ms N] "
		"[--free-after-ms N] [--debug] https://HOST[:PORT]/PATH ...\n");
	exit(2);
}

/* Printable ASCII stays, the rest (and '\\', and spaces in a key=value
 * field) becomes \xNN. */
static void put_escaped(const char *s, size_t n, bool field)
{
	for (size_t i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)s[i];
		if (ch > (field ? 0x20 : 0x1f) && ch < 0x7f && ch != '\\')
			putchar(ch);
		else
			printf("\\x%02x", ch);
	}
}

static void on_result(void *arg, const struct https_response *res)
{
	struct job *j = arg;
	struct run *run = j->run;
	if (j->cancelled || j->done)
		run->bad_callback = true;
	j->done = true;
	j->op = NULL;
	run->ndone++;
	if (res->error != HTTPS_OK)
		run->nerrors++;
	printf("result url=");
	put_escaped(j->url, strlen(j->url), true);
	printf(" status=%d error=%s ip=%s body_len=%zu verify=%ld elapsed_ms=%u\n", res->status,
	       https_error_name(res->error), res->ip[0] ? res->ip : "-", res->body_len,
	       res->verify_result, res->elapsed_ms);
	printf("content_type ");
	put_escaped(res->content_type, strlen(res->content_type), false);
	printf("\ndetail ");
	put_escaped(res->detail, strlen(res->detail), false);
	printf("\nbody ");
	put_escaped(res->body, res->body_len < run->print_max ? res->body_len : run->print_max,
		    false);
	printf("\n.\n");
	fflush(stdout);
	maybe_finish(run);
}

static void on_timer(uv_timer_t *t)
{
	struct run *run = t->data;
	if (run->cancel_mode) {
		for (size_t i = 0; i < run->njobs; i++) {
			struct job *j = &run->jobs[i];
			if (!j->done && j->op != NULL) {
				https_cancel(j->op);
				j->op = NULL;
				j->cancelled = true;
				run->ncancelled++;
			}
		}
	} else {
		/* Pending requests complete with SHUTDOWN inside this call. */
		struct https_client *c = run->c;
		run->c = NULL;
		https_client_free(c);
	}
	if (run->timer_open) {
		run->timer_open = false;
		uv_close((uv_handle_t *)t, on_timer_closed);
	}
	maybe_finish(run);
}

/* https://HOST[:PORT]/PATH; 0 or -1. Only split here: the client judges. */
static int parse_url(struct job *j)
{
	const char *u = j->url;
	if (strncmp(u, "https://", 8) != 0)
		return -1;
	u += 8;
	size_t hlen = strcspn(u, ":/");
	if (hlen == 0 || hlen >= sizeof(j->host))
		return -1;
	memcpy(j->host, u, hlen);
	j->host[hlen] = '\0';
	u += hlen;
	j->port = 443;
	if (*u == ':') {
		char *end;
		unsigned long p = strtoul(u + 1, &end, 10);
		if (end == u + 1 || p == 0 || p > 65535)
			return -1;
		j->port = (uint16_t)p;
		u = end;
	}
	snprintf(j->path, sizeof(j->path), "%s", *u ? u : "/");
	return 0;
}

static unsigned long parse_num(const char *opt, const char *v, unsigned long max)
{
	char *end;
	errno = 0;
	unsigned long n = strtoul(v, &end, 10);
	if (*v == '\0' || *end != '\0' || errno != 0 || n > max) {
		fprintf(stderr, "httpsget: bad value for %s: \"%s\"\n", opt, v);
		exit(2);
	}
	return n;
}

static char *read_file(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	if (f == NULL) {
		fprintf(stderr, "httpsget: %s: %s\n", path, strerror(errno));
		exit(2);
	}
	struct buf b;
	buf_init(&b, POST_MAX);
	char chunk[65536];
	size_t n;
	while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0) {
		if (buf_append(&b, chunk, n) < 0) {
			fprintf(stderr, "httpsget: %s: over %u bytes\n", path, POST_MAX);
			exit(2);
		}
	}
	if (ferror(f)) {
		fprintf(stderr, "httpsget: %s: read error\n", path);
		exit(2);
	}
	fclose(f);
	return buf_steal(&b, len);
}

int main(int argc, char **argv)
{
	const char *dns = NULL, *ca = NULL, *post_file = NULL, *type = NULL;
	unsigned long max = 0, timeout = 0, repeat = 1, print_max = 4096;
	long cancel_after = -1, free_after = -1;
	bool debug = false;
	const char **urls = xcalloc((size_t)argc, sizeof(*urls));
	size_t nurls = 0;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		bool has = i + 1 < argc;
		if (strcmp(a, "--dns") == 0 && has)
			dns = argv[++i];
		else if (strcmp(a, "--ca") == 0 && has)
			ca = argv[++i];
		else if (strcmp(a, "--post") == 0 && has)
			post_file = argv[++i];
		else if (strcmp(a, "--type") == 0 && has)
			type = argv[++i];
		else if (strcmp(a, "--max") == 0 && has)
			max = parse_num(a, argv[++i], 1ul << 30);
		else if (strcmp(a, "--timeout-ms") == 0 && has)
			timeout = parse_num(a, argv[++i], 10000000);
		else if (strcmp(a, "--repeat") == 0 && has)
			repeat = parse_num(a, argv[++i], 10000);
		else if (strcmp(a, "--print") == 0 && has)
			print_max = parse_num(a, argv[++i], 1ul << 30);
		else if (strcmp(a, "--cancel-after-ms") == 0 && has)
			cancel_after = (long)parse_num(a, argv[++i], 1000000);
		else if (strcmp(a, "--free-after-ms") == 0 && has)
			free_after = (long)parse_num(a, argv[++i], 1000000);
		else if (strcmp(a, "--debug") == 0)
			debug = true;
		else if (a[0] == '-')
			usage();
		else
			urls[nurls++] = a;
	}
	if (dns == NULL || nurls == 0 || repeat == 0 || (post_file != NULL) != (type != NULL) ||
	    (cancel_after >= 0 && free_after >= 0))
		usage();
	log_setup(LOG_FORMAT_TEXT, debug);

	char err[256];
	if (https_global_init(err, sizeof(err)) < 0) {
		fprintf(stderr, "httpsget: %s\n", err);
		return 4;
	}
	struct hostport server = { 0 };
	size_t nservers = 0;
	if (strcmp(dns, "system") != 0) {
		if (hostport_parse(&server, dns, 53, err, sizeof(err)) < 0) {
			fprintf(stderr, "httpsget: --dns: %s\n", err);
			return 2;
		}
		nservers = 1;
	}
	size_t body_len = 0;
	char *body = post_file != NULL ? read_file(post_file, &body_len) : NULL;

	uv_loop_t loop;
	int e = uv_loop_init(&loop);
	if (e < 0) {
		fprintf(stderr, "httpsget: uv_loop_init: %s\n", uv_strerror(e));
		return 4;
	}
	struct run run = { .loop = &loop, .print_max = print_max };
	int rc = 0;
	if (resolver_new(&run.r, &loop, nservers ? &server : NULL, nservers, 0, 0, err,
			 sizeof(err)) < 0) {
		fprintf(stderr, "httpsget: %s\n", err);
		rc = 4;
	} else if (https_client_new(&run.c, &loop, run.r, ca, err, sizeof(err)) < 0) {
		fprintf(stderr, "httpsget: %s\n", err);
		rc = 4;
	}
	if (rc == 0) {
		run.njobs = nurls * repeat;
		run.jobs = xcalloc(run.njobs, sizeof(*run.jobs));
		for (size_t k = 0; k < run.njobs; k++) {
			struct job *j = &run.jobs[k];
			j->run = &run;
			j->url = urls[k % nurls];
			if (parse_url(j) < 0) {
				fprintf(stderr, "httpsget: not an https://HOST[:PORT]/PATH URL: %s\n",
					j->url);
				exit(2);
			}
		}
		for (size_t k = 0; k < run.njobs; k++) {
			struct job *j = &run.jobs[k];
			struct https_request req = {
				.method = body != NULL ? "POST" : "GET",
				.host = j->host,
				.port = j->port,
				.path = j->path,
				.content_type = type,
				.body = body,
				.body_len = body_len,
				.max_body = max,
				.timeout_ms = (unsigned)timeout,
			};
			j->op = https_request(run.c, &req, on_result, j);
		}
		if (cancel_after >= 0 || free_after >= 0) {
			run.cancel_mode = cancel_after >= 0;
			e = uv_timer_init(&loop, &run.timer);
			run.timer.data = &run;
			if (e == 0)
				e = uv_timer_start(&run.timer, on_timer,
						   (uint64_t)(run.cancel_mode ? cancel_after : free_after),
						   0);
			if (e < 0) {
				fprintf(stderr, "httpsget: uv_timer: %s\n", uv_strerror(e));
				exit(1);
			}
			run.timer_open = true;
		}
		/* Runs until every request is delivered (or cancelled) and the
		 * client, when freed early, has closed its handles. */
		uv_run(&loop, UV_RUN_DEFAULT);
		if (run.ndone + run.ncancelled != run.njobs) {
			fprintf(stderr, "httpsget: the loop stopped with %zu of %zu requests open\n",
				run.njobs - run.ndone - run.ncancelled, run.njobs);
			rc = 1;
		}
		if (run.ncancelled > 0)
			printf("cancelled %zu\n", run.ncancelled);
		if (run.bad_callback) {
			fprintf(stderr, "httpsget: a callback ran twice or after its cancel\n");
			rc = 1;
		}
		if (run.nerrors > 0 && rc == 0)
			rc = 1;
	}
	/* The client before the resolver it borrows. */
	https_client_free(run.c);
	resolver_free(run.r);
	uv_run(&loop, UV_RUN_DEFAULT);
	e = uv_loop_close(&loop);
	free(run.jobs);
	free(body);
	free(urls);
	hostport_free(&server);
	https_global_cleanup();
	fflush(stdout);
	if (e != 0) {
		fprintf(stderr, "httpsget: uv_loop_close: %s (a handle was left open)\n",
			uv_strerror(e));
		return 3;
	}
	return rc;
}
