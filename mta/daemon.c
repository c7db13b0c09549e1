/* daemon.c - see daemon.h */
#include "daemon.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "mta/https.h"
#include "mta/log.h"
#include "policy/mtasts.h"
#include "policy/preflight.h"
#include "policy/resolver.h"
#include "queue/scheduler.h"
#include "tlsrpt/dkim.h"
#include "tlsrpt/job.h"
#include "queue/store.h"
#include "smtp/server.h"
#include "smtp/tls.h"

#define DNS_TRIES 2

struct daemon {
	uv_loop_t loop;
	const struct config *cfg;
	struct store *store;
	struct resolver *resolver;
	struct https_client *https;
	struct mtasts *mtasts;
	struct preflight *preflight;
	struct tlsrpt_daemon *tlsrpt;
	struct dkim_key *dkim;
	SSL_CTX *client_ctx;
	struct scheduler *scheduler;
	struct smtp_server *server;
	uv_signal_t sigterm, sigint, sighup;
	uv_timer_t grace;
	bool stopping;
};

static void on_closed_noop(uv_handle_t *h)
{
	(void)h;
}

/* The last step of a stop: every outcome and every message is committed. */
static void on_tlsrpt_stopped(void *arg)
{
	struct daemon *d = arg;
	uv_timer_stop(&d->grace);
	uv_close((uv_handle_t *)&d->grace, on_closed_noop);
	/* Users before what they use: policies, then HTTPS, then DNS. */
	mtasts_free(d->mtasts);
	d->mtasts = NULL;
	https_client_free(d->https);
	d->https = NULL;
	resolver_free(d->resolver);
	d->resolver = NULL;
	struct store_stats stats;
	store_get_stats(d->store, &stats);
	store_close(d->store);
	d->store = NULL;
	log_info("main", "stopped: store commits=%llu operations=%llu largest_batch=%llu",
		 stats.commits, stats.ops, stats.max_batch);
	uv_close((uv_handle_t *)&d->sigterm, on_closed_noop);
	uv_close((uv_handle_t *)&d->sigint, on_closed_noop);
	uv_close((uv_handle_t *)&d->sighup, on_closed_noop);
}

static void on_scheduler_stopped(void *arg)
{
	struct daemon *d = arg;
	d->scheduler = NULL;
	if (d->tlsrpt != NULL) {
		struct tlsrpt_daemon *t = d->tlsrpt;
		d->tlsrpt = NULL;
		tlsrpt_daemon_stop(t, on_tlsrpt_stopped, d);
		return;
	}
	on_tlsrpt_stopped(d);
}

/* No client is connected any more: stop delivering. */
static void on_server_drained(void *arg)
{
	struct daemon *d = arg;
	d->server = NULL;
	preflight_free(d->preflight);
	d->preflight = NULL;
	scheduler_shutdown(d->scheduler, on_scheduler_stopped, d);
}

static void on_message_queued(void *arg)
{
	struct daemon *d = arg;
	if (d->scheduler != NULL)
		scheduler_kick(d->scheduler);
}

static void on_grace_expired(uv_timer_t *t)
{
	struct daemon *d = t->data;
	log_warn("main", "shutdown grace period (%ds) over: closing %u remaining connections",
		 SHUTDOWN_GRACE_SECONDS, d->server ? smtp_server_connections(d->server) : 0);
	if (d->server != NULL)
		smtp_server_force_close(d->server);
}

static void on_stop_signal(uv_signal_t *s, int signum)
{
	struct daemon *d = s->data;
	if (d->stopping) {
		log_warn("main", "signal %d again: closing connections now", signum);
		if (d->server != NULL)
			smtp_server_force_close(d->server);
		return;
	}
	d->stopping = true;
	log_info("main", "signal %d: stopping (no new connections; finishing open transactions, at most %ds)",
		 signum, SHUTDOWN_GRACE_SECONDS);
	uv_timer_start(&d->grace, on_grace_expired, SHUTDOWN_GRACE_SECONDS * 1000, 0);
	smtp_server_shutdown(d->server, on_server_drained, d);
}

static void on_sighup(uv_signal_t *s, int signum)
{
	(void)s;
	(void)signum;
	log_warn("main", "SIGHUP: configuration reload is not implemented yet; restart to apply changes");
}

int daemon_serve(const struct config *cfg)
{
	struct daemon d;
	memset(&d, 0, sizeof(d));
	d.cfg = cfg;
	char err[512];

	signal(SIGPIPE, SIG_IGN);
	/* Before any thread (the store's writer) exists. */
	if (https_global_init(err, sizeof(err)) < 0) {
		log_error("main", "%s", err);
		return 1;
	}
	log_info("main", "strictrelay %s starting hostname=%s state_dir=%s", STRICTRELAY_VERSION,
		 cfg->server.hostname, cfg->queue.state_dir);

	SSL_CTX *tls_ctx = NULL;
	if (cfg->server.tls_cert[0] != '\0') {
		tls_ctx = tls_server_ctx_new(cfg->server.tls_cert, cfg->server.tls_key, err,
					     sizeof(err));
		if (tls_ctx == NULL) {
			log_error("main", "%s: %s", config_origin(cfg, "server", "tls_cert"), err);
			return 1;
		}
	} else {
		log_warn("main", "no tls_cert configured: STARTTLS and REQUIRETLS are not offered to clients");
	}

	if (uv_loop_init(&d.loop) != 0) {
		log_error("main", "cannot initialise the event loop");
		SSL_CTX_free(tls_ctx);
		return 1;
	}
	int rc = 1;
	if (store_open(&d.store, &d.loop, cfg->queue.state_dir, err, sizeof(err)) < 0) {
		log_error("main", "queue: %s", err);
		goto out;
	}
	if (resolver_new(&d.resolver, &d.loop, cfg->delivery.dns_servers, cfg->delivery.ndns_servers,
			 (unsigned)cfg->delivery.dns_timeout * 1000, DNS_TRIES, err, sizeof(err)) < 0) {
		log_error("main", "DNS resolver: %s", err);
		goto fail_store;
	}
	d.client_ctx = tls_client_ctx_new(cfg->delivery.ca_file, err, sizeof(err));
	if (d.client_ctx == NULL) {
		log_error("main", "%s: %s", config_origin(cfg, "delivery", "ca_file"), err);
		goto fail_resolver;
	}
	if (https_client_new(&d.https, &d.loop, d.resolver, cfg->delivery.ca_file, err,
			     sizeof(err)) < 0) {
		log_error("main", "HTTPS client: %s", err);
		goto fail_resolver;
	}
	if (mtasts_new(&d.mtasts, &d.loop, cfg, d.resolver, d.https, d.store, err, sizeof(err)) < 0) {
		log_error("main", "MTA-STS: %s", err);
		goto fail_https;
	}
	if (scheduler_start(&d.scheduler, &d.loop, cfg, d.store, d.resolver,
			    cfg->mta_sts.enabled ? d.mtasts : NULL, d.client_ctx, err,
			    sizeof(err)) < 0) {
		log_error("main", "scheduler: %s", err);
		goto fail_mtasts;
	}
	d.preflight = preflight_new(&d.loop, cfg, d.resolver, cfg->mta_sts.enabled ? d.mtasts : NULL);
	struct smtp_server_params params = {
		.cfg = cfg,
		.tls_ctx = tls_ctx,
		.store = d.store,
		.preflight = d.preflight,
		.queued = on_message_queued,
		.queued_arg = &d,
	};
	if (cfg->tlsrpt.enabled) {
		if (cfg->tlsrpt.dkim_key[0] != '\0') {
			err[0] = '\0';
			if (dkim_key_load(cfg->tlsrpt.dkim_key, &d.dkim, err, sizeof(err)) < 0) {
				log_error("main", "%s: %s", config_origin(cfg, "tlsrpt", "dkim_key"), err);
				scheduler_shutdown(d.scheduler, NULL, NULL);
				preflight_free(d.preflight);
				uv_run(&d.loop, UV_RUN_DEFAULT);
				goto fail_mtasts;
			}
			if (err[0] != '\0')
				log_warn("main", "[tlsrpt] dkim_key: %s", err);
		}
		struct tlsrpt_env env = {
			.loop = &d.loop,
			.cfg = cfg,
			.resolver = d.resolver,
			.https = d.https,
			.store = d.store,
			.dkim = d.dkim,
			.queued = on_message_queued,
			.queued_arg = &d,
		};
		d.tlsrpt = tlsrpt_daemon_start(&env);
	}
	if (smtp_server_start(&d.server, &d.loop, &params, err, sizeof(err)) < 0) {
		log_error("main", "%s", err);
		scheduler_shutdown(d.scheduler, NULL, NULL);
		preflight_free(d.preflight);
		if (d.tlsrpt != NULL)
			tlsrpt_daemon_stop(d.tlsrpt, NULL, NULL);
		uv_run(&d.loop, UV_RUN_DEFAULT);
		goto fail_mtasts;
	}
	uv_timer_init(&d.loop, &d.grace);
	d.grace.data = &d;
	uv_signal_init(&d.loop, &d.sigterm);
	uv_signal_init(&d.loop, &d.sigint);
	uv_signal_init(&d.loop, &d.sighup);
	d.sigterm.data = d.sigint.data = d.sighup.data = &d;
	uv_signal_start(&d.sigterm, on_stop_signal, SIGTERM);
	uv_signal_start(&d.sigint, on_stop_signal, SIGINT);
	uv_signal_start(&d.sighup, on_sighup, SIGHUP);
	log_info("main", "ready");
	uv_run(&d.loop, UV_RUN_DEFAULT);
	rc = 0;
	goto out;
fail_mtasts:
	mtasts_free(d.mtasts);
fail_https:
	https_client_free(d.https);
fail_resolver:
	resolver_free(d.resolver);
fail_store:
	store_close(d.store);
out:
	/* Let close callbacks run, then the loop must be empty. */
	uv_run(&d.loop, UV_RUN_DEFAULT);
	if (uv_loop_close(&d.loop) != 0)
		log_error("main", "event loop still has open handles at exit");
	SSL_CTX_free(tls_ctx);
	SSL_CTX_free(d.client_ctx);
	dkim_key_free(d.dkim);
	return rc;
}
