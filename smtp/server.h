/*
 * server.h - the inbound SMTP listener: libuv sockets, STARTTLS over memory
 * BIOs, the protocol engine (session.h) and the durable store (store.h).
 *
 * One struct per connection embeds its uv_tcp_t and uv_timer_t, counts its
 * open handles and is freed only in the last close callback, and never while
 * the store still holds a pending write for it (STYLE.md 1 and 2.10).
 *
 * Limits: max_connections (extra clients get 421 4.3.2 and are closed), the
 * command line cap (2048 octets), command/data timeouts, a cap on unsent
 * replies (a client that pipelines without reading is paused), and the
 * engine's error cap.
 */
#ifndef STRICTRELAY_SMTP_SERVER_H
#define STRICTRELAY_SMTP_SERVER_H

#include <openssl/ssl.h>
#include <uv.h>

#include "mta/config.h"
#include "queue/store.h"

struct preflight;

#define SMTP_MAX_COMMAND_LINE 2048

struct smtp_server;

struct smtp_server_params {
	const struct config *cfg;  /* borrowed; must outlive the server */
	SSL_CTX *tls_ctx;          /* NULL = no STARTTLS; the server takes a reference */
	struct store *store;
	/* RCPT-time REQUIRETLS checks ([requiretls] preflight); NULL = none. */
	struct preflight *preflight;
	/* Called after each message is durably queued (the scheduler looks at once). */
	void (*queued)(void *arg);
	void *queued_arg;
};

/* Binds every [server] listen address. 0, or -1 with err naming the address. */
int smtp_server_start(struct smtp_server **out, uv_loop_t *loop,
		      const struct smtp_server_params *params, char *err, size_t errlen);

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
