/* daemon.c - see daemon.h */
#include "daemon.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <uv.h>

#include "mta/https.h"
#include "mta/log.h"
#include "mta/metrics.h"
#include "mta/privdrop.h"
#include "policy/mtasts.h"
#include "policy/preflight.h"
#include "policy/resolver.h"
#include "queue/purge.h"
#include "queue/scheduler.h"
#include "tlsrpt/dkim.h"
#include "tlsrpt/job.h"
#include "queue/store.h"
#include "smtp/server.h"
#include "smtp/tls.h"
#include "smtp/userdb.h"

#define DNS_TRIES 2
#define MAX_CHANGED_KEYS 128

extern char **environ;

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
	struct metrics *metrics;
	struct purge *purge;
	uv_signal_t sigterm, sigint, sighup;
	uv_timer_t grace;
	bool stopping;
	/* Configurations loaded by SIGHUP: the newest is cfg; older ones stay
	 * alive until exit because work started under them still reads them. */
	struct config **reloaded;
	size_t nreloaded;
};

static void on_closed_noop(uv_handle_t *h)
{
	(void)h;
}

/* MTA-STS, HTTPS and DNS; users before what they use. */
static void free_lookups(struct daemon *d)
{
	mtasts_free(d->mtasts);
	d->mtasts = NULL;
	https_client_free(d->https);
	d->https = NULL;
	resolver_free(d->resolver);
	d->resolver = NULL;
}

/* The last step of a stop: every outcome and every message is committed. */
static void on_tlsrpt_stopped(void *arg)
{
	struct daemon *d = arg;
	uv_timer_stop(&d->grace);
	uv_close((uv_handle_t *)&d->grace, on_closed_noop);
	free_lookups(d);
	metrics_stop(&d->metrics);
	purge_stop(d->purge);
	d->purge = NULL;
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

/* Reads the SMTP AUTH users file; NULL with err on failure. */
static struct userdb *load_users(const char *path, char *err, size_t errlen)
{
	char warn[512];
	struct userdb *users = xcalloc(1, sizeof(*users));
	if (userdb_load(users, path, err, errlen, warn, sizeof(warn)) < 0) {
		free(users);
		return NULL;
	}
	if (warn[0] != '\0')
		log_warn("main", "%s", warn);
	log_info("main", "SMTP AUTH users: %zu from %s", users->n, path);
	return users;
}

/* Keys whose new value needs a restart: what they configure was built
 * once at start-up (sockets, the resolver, the TLS report job...). */
static bool needs_restart(const char *key)
{
	static const char *const keys[] = {
		"server.listen", "server.submission_listen", "server.submission_tls_listen",
		"server.user", "server.run_as_root", "queue.state_dir", "delivery.dns_servers",
		"delivery.dns_timeout", "delivery.ca_file", "mta_sts.enabled", "metrics.listen",
		"auth.users_file",
	};
	for (size_t i = 0; i < SR_ARRAY_LEN(keys); i++)
		if (strcmp(keys[i], key) == 0)
			return true;
	return str_iprefix(key, "tlsrpt.");
}

/*
 * SIGHUP: read the file (and environment) again; if it is valid, new
 * connections, commands and deliveries use it, along with a freshly loaded
 * certificate and users file. Nothing open is interrupted. An invalid file
 * changes nothing.
 */
static void reload(struct daemon *d)
{
	char err[1024];
	struct config *nc = xcalloc(1, sizeof(*nc));
	if (config_load(nc, d->cfg->path, environ, err, sizeof(err)) < 0 ||
	    config_check_files(nc, err, sizeof(err)) < 0) {
		log_error("main", "SIGHUP: %s; keeping the running configuration", err);
		goto fail;
	}
	SSL_CTX *tls_ctx = NULL;
	if (nc->server.tls_cert[0] != '\0') {
		tls_ctx = tls_server_ctx_new(nc->server.tls_cert, nc->server.tls_key, err, sizeof(err));
		if (tls_ctx == NULL) {
			log_error("main", "SIGHUP: %s: %s; keeping the running configuration",
				  config_origin(nc, "server", "tls_cert"), err);
			goto fail;
		}
	}
	struct userdb *users = NULL;
	if (nc->auth.users_file[0] != '\0' && d->cfg->auth.users_file[0] != '\0') {
		users = load_users(nc->auth.users_file, err, sizeof(err));
		if (users == NULL) {
			log_error("main", "SIGHUP: %s; keeping the running configuration", err);
			SSL_CTX_free(tls_ctx);
			goto fail;
		}
	}

	char changed[MAX_CHANGED_KEYS][CONFIG_KEY_NAME_MAX];
	size_t n = config_changed_keys(d->cfg, nc, changed, MAX_CHANGED_KEYS);
	struct buf applied, restart;
	buf_init(&applied, 0);
	buf_init(&restart, 0);
	for (size_t i = 0; i < n; i++) {
		struct buf *b = needs_restart(changed[i]) ? &restart : &applied;
		buf_printf(b, "%s%s", b->len ? "," : "", changed[i]);
	}

	smtp_server_reload(d->server, nc, tls_ctx, users);
	SSL_CTX_free(tls_ctx); /* the server holds its own reference */
	scheduler_set_config(d->scheduler, nc);
	preflight_set_config(d->preflight, nc);
	if (d->mtasts != NULL)
		mtasts_set_config(d->mtasts, nc);
	log_setup(nc->log.format, log_debug_enabled());
	log_set_syslog(nc->log.syslog);
	d->reloaded = xrealloc(d->reloaded, (d->nreloaded + 1) * sizeof(*d->reloaded));
	d->reloaded[d->nreloaded++] = nc;
	d->cfg = nc;
	log_info("main", "SIGHUP: reloaded %s: changed=%s certificate=%s users=%s", nc->path,
		 applied.len ? applied.data : "none", tls_ctx ? "reloaded" : "none",
		 users ? "reloaded" : "none");
	if (restart.len > 0)
		log_warn("main", "SIGHUP: these settings changed but take effect only after a restart: %s",
			 restart.data);
	buf_free(&applied);
	buf_free(&restart);
	return;
fail:
	config_free(nc);
	free(nc);
}

static void on_sighup(uv_signal_t *s, int signum)
{
	struct daemon *d = s->data;
	(void)signum;
	if (d->stopping) {
		log_info("main", "SIGHUP ignored: stopping");
		return;
	}
	reload(d);
}

/*
 * After the ports are bound: become [server] user, and refuse to go on as
 * root unless run_as_root says so.
 */
static int drop_privileges(const struct config *cfg)
{
	char err[512];
	if (cfg->server.user[0] != '\0') {
		if (geteuid() != 0) {
			log_info("main", "not started as root: [server] user = %s ignored, running as uid %u",
				 cfg->server.user, (unsigned)geteuid());
			return 0;
		}
		if (privdrop_prepare_dir(cfg->queue.state_dir, cfg->server.user, err, sizeof(err)) < 0 ||
		    privdrop_switch(cfg->server.user, err, sizeof(err)) < 0) {
			log_error("main", "%s", err);
			return -1;
		}
		log_info("main", "dropped privileges: user=%s uid=%u gid=%u", cfg->server.user,
			 (unsigned)getuid(), (unsigned)getgid());
		return 0;
	}
	if (geteuid() == 0) {
		if (!cfg->server.run_as_root) {
			log_error("main", "refusing to run as root: set [server] user to an unprivileged account (e.g. user = strictrelay), or run_as_root = yes to accept the risk");
			return -1;
		}
		log_warn("main", "running as root (run_as_root = yes): consider [server] user");
	}
	return 0;
}

/* Start-up failed part way: stop what was started, newest first. */
static void abort_startup(struct daemon *d)
{
	if (d->server != NULL) {
		smtp_server_shutdown(d->server, NULL, NULL);
		d->server = NULL;
	}
	if (d->tlsrpt != NULL) {
		tlsrpt_daemon_stop(d->tlsrpt, NULL, NULL);
		d->tlsrpt = NULL;
	}
	if (d->scheduler != NULL) {
		scheduler_shutdown(d->scheduler, NULL, NULL);
		d->scheduler = NULL;
	}
	preflight_free(d->preflight);
	d->preflight = NULL;
	metrics_stop(&d->metrics);
	purge_stop(d->purge);
	d->purge = NULL;
	/* Nothing ran yet, so nothing waits for the store: close it before
	 * running the loop, whose async handle would otherwise keep it alive. */
	if (d->store != NULL)
		store_close(d->store);
	d->store = NULL;
	uv_run(&d->loop, UV_RUN_DEFAULT);
	free_lookups(d);
}

/* Everything after the privilege drop; 0, or -1 after logging why. */
static int start_services(struct daemon *d, SSL_CTX *tls_ctx, struct userdb *users)
{
	const struct config *cfg = d->cfg;
	char err[512];
	if (store_open(&d->store, &d->loop, cfg->queue.state_dir, err, sizeof(err)) < 0) {
		log_error("main", "queue: %s", err);
		goto fail;
	}
	d->purge = purge_start(&d->loop, d->store, cfg->tlsrpt.retention);
	struct metrics_params mparams = { cfg, &d->server, &d->stopping };
	if (metrics_start(&d->metrics, &mparams, err, sizeof(err)) < 0) {
		log_error("main", "%s", err);
		goto fail;
	}
	if (resolver_new(&d->resolver, &d->loop, cfg->delivery.dns_servers,
			 cfg->delivery.ndns_servers, (unsigned)cfg->delivery.dns_timeout * 1000,
			 DNS_TRIES, err, sizeof(err)) < 0) {
		log_error("main", "DNS resolver: %s", err);
		goto fail;
	}
	d->client_ctx = tls_client_ctx_new(cfg->delivery.ca_file, err, sizeof(err));
	if (d->client_ctx == NULL) {
		log_error("main", "%s: %s", config_origin(cfg, "delivery", "ca_file"), err);
		goto fail;
	}
	if (https_client_new(&d->https, &d->loop, d->resolver, cfg->delivery.ca_file, err,
			     sizeof(err)) < 0) {
		log_error("main", "HTTPS client: %s", err);
		goto fail;
	}
	if (mtasts_new(&d->mtasts, &d->loop, cfg, d->resolver, d->https, d->store, err,
		       sizeof(err)) < 0) {
		log_error("main", "MTA-STS: %s", err);
		goto fail;
	}
	if (scheduler_start(&d->scheduler, &d->loop, cfg, d->store, d->resolver,
			    cfg->mta_sts.enabled ? d->mtasts : NULL, d->client_ctx, err,
			    sizeof(err)) < 0) {
		log_error("main", "scheduler: %s", err);
		goto fail;
	}
	d->preflight = preflight_new(&d->loop, cfg, d->resolver,
				     cfg->mta_sts.enabled ? d->mtasts : NULL);
	if (cfg->tlsrpt.enabled) {
		struct tlsrpt_env env = {
			.loop = &d->loop,
			.cfg = cfg,
			.resolver = d->resolver,
			.https = d->https,
			.store = d->store,
			.dkim = d->dkim,
			.queued = on_message_queued,
			.queued_arg = d,
		};
		d->tlsrpt = tlsrpt_daemon_start(&env);
	}
	struct smtp_server_params params = {
		.cfg = cfg,
		.tls_ctx = tls_ctx,
		.store = d->store,
		.preflight = d->preflight,
		.users = users, /* the server owns it from here, also on failure */
		.queued = on_message_queued,
		.queued_arg = d,
	};
	if (smtp_server_start(d->server, &params, err, sizeof(err)) < 0) {
		log_error("main", "%s", err);
		return -1;
	}
	return 0;
fail:
	userdb_destroy(users); /* not handed to the server yet */
	return -1;
}

int daemon_serve(const struct config *cfg)
{
	struct daemon d;
	memset(&d, 0, sizeof(d));
	d.cfg = cfg;
	char err[512];

	signal(SIGPIPE, SIG_IGN);
	log_set_syslog(cfg->log.syslog);
	/* Before any thread (the store's writer) exists. */
	if (https_global_init(err, sizeof(err)) < 0) {
		log_error("main", "%s", err);
		return 1;
	}
	log_info("main", "strictrelay %s starting hostname=%s state_dir=%s uid=%u", STRICTRELAY_VERSION,
		 cfg->server.hostname, cfg->queue.state_dir, (unsigned)geteuid());

	/* 1. While still root: keys, passwords and ports. */
	SSL_CTX *tls_ctx = NULL;
	struct userdb *users = NULL;
	int rc = 1;
	if (cfg->server.tls_cert[0] != '\0') {
		tls_ctx = tls_server_ctx_new(cfg->server.tls_cert, cfg->server.tls_key, err,
					     sizeof(err));
		if (tls_ctx == NULL) {
			log_error("main", "%s: %s", config_origin(cfg, "server", "tls_cert"), err);
			return 1;
		}
	} else {
		log_warn("main", "no tls_cert configured: STARTTLS, REQUIRETLS and AUTH are not offered to clients");
	}
	if (cfg->auth.users_file[0] != '\0') {
		users = load_users(cfg->auth.users_file, err, sizeof(err));
		if (users == NULL) {
			log_error("main", "[auth] users_file: %s", err);
			SSL_CTX_free(tls_ctx);
			return 1;
		}
	}
	if (cfg->tlsrpt.enabled && cfg->tlsrpt.dkim_key[0] != '\0') {
		err[0] = '\0';
		if (dkim_key_load(cfg->tlsrpt.dkim_key, &d.dkim, err, sizeof(err)) < 0) {
			log_error("main", "%s: %s", config_origin(cfg, "tlsrpt", "dkim_key"), err);
			goto fail_early;
		}
		if (err[0] != '\0')
			log_warn("main", "[tlsrpt] dkim_key: %s", err);
	}
	if (uv_loop_init(&d.loop) != 0) {
		log_error("main", "cannot initialise the event loop");
		goto fail_early;
	}
	if (smtp_server_bind(&d.server, &d.loop, cfg, err, sizeof(err)) < 0) {
		log_error("main", "%s", err);
		userdb_destroy(users);
		goto out;
	}
	if (metrics_bind(&d.metrics, &d.loop, cfg, err, sizeof(err)) < 0) {
		log_error("main", "%s", err);
		userdb_destroy(users);
		abort_startup(&d);
		goto out;
	}
	/* 2. Root is no longer needed. */
	if (drop_privileges(cfg) < 0) {
		userdb_destroy(users);
		abort_startup(&d);
		goto out;
	}
	/* 3. Everything else, as the unprivileged user. */
	if (start_services(&d, tls_ctx, users) < 0) {
		abort_startup(&d);
		goto out;
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
out:
	/* Let close callbacks run, then the loop must be empty. */
	uv_run(&d.loop, UV_RUN_DEFAULT);
	if (uv_loop_close(&d.loop) != 0)
		log_error("main", "event loop still has open handles at exit");
	SSL_CTX_free(tls_ctx);
	SSL_CTX_free(d.client_ctx);
	dkim_key_free(d.dkim);
	for (size_t i = 0; i < d.nreloaded; i++) {
		config_free(d.reloaded[i]);
		free(d.reloaded[i]);
	}
	free(d.reloaded);
	return rc;
fail_early:
	userdb_destroy(users);
	SSL_CTX_free(tls_ctx);
	dkim_key_free(d.dkim);
	return 1;
}
