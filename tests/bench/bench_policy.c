/*
 * bench_policy.c - micro-benchmark of the cached MTA-STS decision: the pure
 * path in policy/decide.h that runs for every MX of a delivery once the
 * domain's policy is in memory (decide_needs, decide_mx with its
 * sts_mx_match() loop, decide_ehlo, decide_tls, decide_tls_ehlo), the
 * pattern matcher on its own, the refusal path (an MX outside the policy,
 * which formats a reason), and sts_policy_parse() of the cached text (what
 * a reload of the memory copy from SQLite costs).
 *
 * Not a test: prints ns per call for each and exits 0.
 *
 *   bench_policy [SECONDS_PER_CASE]      (default 0.3)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mta/util.h"
#include "policy/decide.h"
#include "policy/sts.h"

static volatile unsigned sink; /* keeps the compiler from dropping the work */

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static const char policy_text[] =
	"version: STSv1\r\n"
	"mode: enforce\r\n"
	"mx: mx1.example.com\r\n"
	"mx: mx2.example.com\r\n"
	"mx: *.mail.example.net\r\n"
	"mx: backup.example.org\r\n"
	"max_age: 604800\r\n";

/* The MX hosts of the domain, in the order delivery tries them. */
static const char *const mx_hosts[] = {
	"mx1.example.com", "MX2.Example.Com.", "in1.mail.example.net", "backup.example.org",
};
#define N_MX (sizeof(mx_hosts) / sizeof(mx_hosts[0]))

static struct sts_policy pol;
static struct delivery_req req;
static const struct tls_verify_info cert_ok = {.result = TLS_CERT_OK};

/* One MX through every stage of a TLS session that succeeds. */
static unsigned one_mx(const char *host)
{
	struct mx_needs n;
	struct verdict v;
	unsigned r = 0;
	decide_needs(&req, host, &n);
	decide_mx(&req, host, &v);
	r += (unsigned)v.result;
	decide_ehlo(&n, true, &v);
	r += (unsigned)v.result;
	decide_tls(&n, true, NULL, &cert_ok, &v);
	r += (unsigned)v.result;
	decide_tls_ehlo(&n, true, &v);
	return r + (unsigned)v.result;
}

static void case_decision(void)
{
	static size_t i;
	sink += one_mx(mx_hosts[i++ % N_MX]);
}

static void case_refused(void)
{
	struct verdict v;
	decide_mx(&req, "mx.elsewhere.example", &v);
	sink += (unsigned)v.result;
}

static void case_match(void)
{
	static size_t i;
	sink += sts_mx_match("*.mail.example.net", mx_hosts[i++ % N_MX]);
}

static void case_parse(void)
{
	struct sts_policy p;
	char why[200];
	if (sts_policy_parse(policy_text, sizeof(policy_text) - 1, &p, why, sizeof(why)) != 0) {
		fprintf(stderr, "bench_policy: policy does not parse: %s\n", why);
		exit(1);
	}
	sink += (unsigned)p.mx.n;
	sts_policy_free(&p);
}

/* Runs fn in batches until secs have passed; returns ns per call. */
static double run(void (*fn)(void), double secs)
{
	unsigned long calls = 0, batch = 1000;
	for (unsigned long i = 0; i < batch; i++) /* warm up */
		fn();
	double t0 = now_s(), t;
	do {
		for (unsigned long i = 0; i < batch; i++)
			fn();
		calls += batch;
		t = now_s();
		if (t - t0 < secs / 10)
			batch *= 2;
	} while (t - t0 < secs);
	return (t - t0) * 1e9 / (double)calls;
}

int main(int argc, char **argv)
{
	double secs = argc > 1 ? atof(argv[1]) : 0.3;
	if (secs <= 0) {
		fprintf(stderr, "usage: bench_policy [SECONDS_PER_CASE]\n");
		return 2;
	}
	char why[200];
	if (sts_policy_parse(policy_text, sizeof(policy_text) - 1, &pol, why, sizeof(why)) != 0) {
		fprintf(stderr, "bench_policy: policy does not parse: %s\n", why);
		return 1;
	}
	req = (struct delivery_req){
		.tls = TLS_LEVEL_MAY,
		.sts = pol.mode,
		.sts_mx = &pol.mx,
	};
	/* the decision must be the real one: every listed MX passes, others not */
	for (size_t i = 0; i < N_MX; i++) {
		if (one_mx(mx_hosts[i]) != DECIDE_OK) {
			fprintf(stderr, "bench_policy: %s refused\n", mx_hosts[i]);
			return 1;
		}
	}
	struct verdict v;
	decide_mx(&req, "mx.elsewhere.example", &v);
	if (v.result != DECIDE_NEXT_MX) {
		fprintf(stderr, "bench_policy: an MX outside the policy passed\n");
		return 1;
	}

	printf("cached MTA-STS decision, enforce policy with %zu mx patterns:\n", pol.mx.n);
	printf("  one MX, all stages (needs, mx, ehlo, tls, tls_ehlo): %8.1f ns/call\n",
	       run(case_decision, secs));
	printf("  MX outside the policy (decide_mx refusal):           %8.1f ns/call\n",
	       run(case_refused, secs));
	printf("  sts_mx_match(\"*.mail.example.net\", host):            %8.1f ns/call\n",
	       run(case_match, secs));
	printf("  sts_policy_parse() of the cached text (reload):      %8.1f ns/call\n",
	       run(case_parse, secs));
	sts_policy_free(&pol);
	return 0;
}
