/*
 * server.h - the inbound SMTP listener: libuv sockets, STARTTLS over memory
 * BIOs, the protocol engine (session.h) and the durable store (store.h).
 *
 * One struct per connection embeds its uv_tcp_t and uv_timer_t, counts its
 * open handles and is freed only in the last close callback, and never while
 * the store still holds a pending write for it (STYLE.md 1 and 2.10).
 *
 * Listeners: [server] listen (port 25: relay_networks and accept_domains),
 * submission_listen (STARTTLS, then AUTH required) and submission_tls_listen
 * (implicit TLS, then AUTH required). Passwords are checked on libuv's thread
 * pool (the KDF is slow by design); failed attempts per client address are
 * counted and lock AUTH out for [auth] failure_window after max_failures.
 *
 * Limits: max_connections (extra clients get 421 4.3.2 and are closed),
 * max_connections_per_client, max_messages_per_minute per client (450 4.7.1
 * at MAIL), the command line cap (2048 octets), command/data timeouts, a cap
 * on unsent replies (a client that pipelines without reading is paused), and
 * the engine's error cap.
 *
 * Start-up is two steps so that privileges can be dropped in between:
 * smtp_server_bind() binds every address (as root, for port 25), and
 * smtp_server_start() starts accepting once the store and the rest exist.
 */
#ifndef STRICTRELAY_SMTP_SERVER_H
#define STRICTRELAY_SMTP_SERVER_H

#include <openssl/ssl.h>
#include <uv.h>

#include "mta/config.h"
#include "queue/store.h"

struct preflight;
struct userdb;

#define SMTP_MAX_COMMAND_LINE 2048

struct smtp_server;

struct smtp_server_params {
	const struct config *cfg;  /* borrowed; must outlive the server */
	SSL_CTX *tls_ctx;          /* NULL = no STARTTLS; the server takes a reference */
	struct store *store;
	/* RCPT-time REQUIRETLS checks ([requiretls] preflight); NULL = none. */
	struct preflight *preflight;
	/* SMTP AUTH users (the server takes ownership); NULL = no AUTH. */
	struct userdb *users;
	/* Called after each message is durably queued (the scheduler looks at once). */
	void (*queued)(void *arg);
	void *queued_arg;
};

/* Binds every listen, submission_listen and submission_tls_listen address
 * (nothing is accepted yet). 0, or -1 with err naming the address. */
int smtp_server_bind(struct smtp_server **out, uv_loop_t *loop, const struct config *cfg,
		     char *err, size_t errlen);

/* Starts accepting. On -1 (err says why) stop the server with
 * smtp_server_shutdown(). */
int smtp_server_start(struct smtp_server *srv, const struct smtp_server_params *params, char *err,
		      size_t errlen);

/*
 * SIGHUP: new settings for new commands and connections. cfg must outlive
 * the server; tls_ctx (a new reference is taken) and users (ownership
 * passes) replace the current ones unless NULL. Listen addresses are not
 * changed (that needs a restart).
 */
void smtp_server_reload(struct smtp_server *srv, const struct config *cfg, SSL_CTX *tls_ctx,
			struct userdb *users);

/*
 * Graceful stop: close the listeners, say 421 to idle clients, let sessions in
 * the middle of a transaction finish it (then 421). done runs once every
 * connection is gone and the server is freed.
 */
void smtp_server_shutdown(struct smtp_server *srv, void (*done)(void *arg), void *arg);

/* Closes every remaining connection now (after the drain deadline). */
void smtp_server_force_close(struct smtp_server *srv);

unsigned smtp_server_connections(const struct smtp_server *srv);

#endif
