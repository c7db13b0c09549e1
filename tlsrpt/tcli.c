/* tcli.c - see tcli.h */
#include "tcli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <uv.h>

#include "mta/cli.h"
#include "mta/https.h"
#include "mta/log.h"
#include "policy/resolver.h"
#include "queue/store.h"
#include "tlsrpt/dkim.h"
#include "tlsrpt/job.h"

#define DNS_TRIES 2

const char tcli_help[] =
	"NAME\n"
	"    strictrelay tlsrpt - SMTP TLS reports (RFC 8460)\n"
	"\n"
	"SYNOPSIS\n"
	"    strictrelay [-c FILE] tlsrpt run [--date YYYY-MM-DD] [--out DIR] [--no-send] [--force]\n"
	"    strictrelay [-c FILE] tlsrpt dkim-record\n"
	"\n"
	"DESCRIPTION\n"
	"    run          builds the reports for one UTC day (default: yesterday): one\n"
	"                 per policy domain with recorded sessions and a usable\n"
	"                 _smtp._tls record, as RFC 8460 JSON, gzipped, sent to each\n"
	"                 rua: POST to https: URIs, DKIM-signed mail through the queue\n"
	"                 for mailto: URIs. `serve` does this itself once a day.\n"
	"                 --out DIR    also write each report file into DIR\n"
	"                 --no-send    build (and write) only; record nothing\n"
	"                 --force      report a day again (a new report-id)\n"
	"    dkim-record  prints the DNS TXT record to publish for [tlsrpt] dkim_key\n"
	"                 at dkim_selector._domainkey.dkim_domain\n";

struct tctx {
	uv_loop_t loop;
	struct store *store;
	struct resolver *resolver;
	struct https_client *https;
	struct tlsrpt_summary sum;
	bool done;
};

static void on_done(void *arg, const struct tlsrpt_summary *s)
{
	struct tctx *t = arg;
	t->sum = *s;
	t->done = true;
	https_client_free(t->https);
	t->https = NULL;
	resolver_free(t->resolver);
	t->resolver = NULL;
	store_close(t->store);
	t->store = NULL;
}

static int parse_date(const char *s, int64_t *out)
{
	int y, m, d;
	char extra;
	if (sscanf(s, "%4d-%2d-%2d%c", &y, &m, &d, &extra) != 3 || m < 1 || m > 12 || d < 1 || d > 31)
		return -1;
	struct tm tm = { .tm_year = y - 1900, .tm_mon = m - 1, .tm_mday = d };
	time_t t = timegm(&tm);
	if (t == (time_t)-1)
		return -1;
	struct tm back;
	gmtime_r(&t, &back);
	if (back.tm_mday != d) /* 2026-02-31 */
		return -1;
	*out = (int64_t)t;
	return 0;
}

static int dkim_record(const struct config *cfg)
{
	if (cfg->tlsrpt.dkim_key[0] == '\0') {
		fprintf(stderr, "strictrelay: tlsrpt: no [tlsrpt] dkim_key configured\n");
		return EXIT_RUNTIME;
	}
	struct dkim_key *k;
	char err[300] = "";
	if (dkim_key_load(cfg->tlsrpt.dkim_key, &k, err, sizeof(err)) < 0) {
		fprintf(stderr, "strictrelay: tlsrpt: %s\n", err);
		return EXIT_RUNTIME;
	}
	if (err[0] != '\0')
		fprintf(stderr, "strictrelay: tlsrpt: warning: %s\n", err);
	struct buf txt;
	buf_init(&txt, 0);
	dkim_public_txt(k, &txt);
	printf("%s._domainkey.%s. IN TXT ", cfg->tlsrpt.dkim_selector, cfg->tlsrpt.dkim_domain);
	/* DNS character-strings hold 255 octets: split long records */
	for (size_t i = 0; i < txt.len; i += 255)
		printf("%s\"%.*s\"", i ? " " : "", (int)(txt.len - i < 255 ? txt.len - i : 255),
		       txt.data + i);
	printf("\n");
	buf_free(&txt);
	dkim_key_free(k);
	return EXIT_OK;
}

int tcli_main(const struct config *cfg, int argc, char **argv)
{
	if (argc >= 2 && strcmp(argv[1], "dkim-record") == 0) {
		if (argc > 2)
			return cli_usage_error("tlsrpt", "dkim-record takes no arguments");
		return dkim_record(cfg);
	}
	if (argc < 2 || strcmp(argv[1], "run") != 0)
		return cli_usage_error("tlsrpt", "use `tlsrpt run` or `tlsrpt dkim-record`");
	struct tlsrpt_opts o = { .send = true };
	int64_t day = tlsrpt_day_start(now_unix()) - 86400; /* yesterday */
	for (int i = 2; i < argc; i++) {
		if (strcmp(argv[i], "--no-send") == 0) {
			o.send = false;
		} else if (strcmp(argv[i], "--force") == 0) {
			o.force = true;
		} else if (strcmp(argv[i], "--date") == 0 && i + 1 < argc) {
			if (parse_date(argv[++i], &day) < 0)
				return cli_usage_error("tlsrpt", "--date wants YYYY-MM-DD, not \"%s\"", argv[i]);
		} else if (strcmp(argv[i], "--out") == 0 && i + 1 < argc) {
			o.out_dir = argv[++i];
		} else {
			return cli_usage_error("tlsrpt", "unexpected argument \"%s\"", argv[i]);
		}
	}
	struct tctx t;
	memset(&t, 0, sizeof(t));
	char err[512] = "";
	struct dkim_key *dkim = NULL;
	if (cfg->tlsrpt.dkim_key[0] != '\0') {
		if (dkim_key_load(cfg->tlsrpt.dkim_key, &dkim, err, sizeof(err)) < 0) {
			fprintf(stderr, "strictrelay: tlsrpt: %s\n", err);
			return EXIT_RUNTIME;
		}
		if (err[0] != '\0')
			log_warn("tlsrpt", "%s", err);
	}
	int rc = EXIT_RUNTIME;
	if (https_global_init(err, sizeof(err)) < 0 || uv_loop_init(&t.loop) != 0) {
		fprintf(stderr, "strictrelay: tlsrpt: %s\n", err);
		dkim_key_free(dkim);
		return EXIT_RUNTIME;
	}
	if (store_open(&t.store, &t.loop, cfg->queue.state_dir, err, sizeof(err)) < 0 ||
	    resolver_new(&t.resolver, &t.loop, cfg->delivery.dns_servers, cfg->delivery.ndns_servers,
			 (unsigned)cfg->delivery.dns_timeout * 1000, DNS_TRIES, err, sizeof(err)) < 0 ||
	    https_client_new(&t.https, &t.loop, t.resolver, cfg->delivery.ca_file, err,
			     sizeof(err)) < 0) {
		fprintf(stderr, "strictrelay: tlsrpt: %s\n", err);
		goto out;
	}
	struct tlsrpt_env env = {
		.loop = &t.loop,
		.cfg = cfg,
		.resolver = t.resolver,
		.https = t.https,
		.store = t.store,
		.dkim = dkim,
	};
	if (tlsrpt_run_day(&env, day, &o, on_done, &t, err, sizeof(err)) < 0) {
		fprintf(stderr, "strictrelay: tlsrpt: %s\n", err);
		goto out;
	}
	uv_run(&t.loop, UV_RUN_DEFAULT);
	if (t.done) {
		char d[40];
		fmt_time_iso(d, sizeof(d), tlsrpt_day_start(day));
		printf("%.10s: %u policy domain%s, %u report%s built, %u delivered, %u pending, %u without rua, %u already reported, %u errors\n",
		       d, t.sum.domains, t.sum.domains == 1 ? "" : "s", t.sum.reports,
		       t.sum.reports == 1 ? "" : "s", t.sum.delivered, t.sum.pending, t.sum.no_rua,
		       t.sum.skipped, t.sum.errors);
		rc = t.sum.errors ? EXIT_RUNTIME : EXIT_OK;
	}
out:
	if (t.https != NULL)
		https_client_free(t.https);
	if (t.resolver != NULL)
		resolver_free(t.resolver);
	if (t.store != NULL)
		store_close(t.store);
	uv_run(&t.loop, UV_RUN_DEFAULT);
	if (uv_loop_close(&t.loop) != 0)
		log_error("tlsrpt", "event loop still has open handles at exit");
	dkim_key_free(dkim);
	return rc;
}
