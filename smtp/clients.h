/*
 * clients.h - what the SMTP server remembers per client IP address: open
 * connections, a message-rate token bucket and failed AUTH attempts. Pure
 * (the caller passes the time), so the limits are unit tested without
 * sockets or clocks.
 *
 * Entries are created on first use and dropped by clients_sweep() once the
 * client has no connection and nothing it did still counts, so the table
 * stays as small as the set of recently active clients.
 */
#ifndef STRICTRELAY_SMTP_CLIENTS_H
#define STRICTRELAY_SMTP_CLIENTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CLIENTS_BUCKETS 4096

struct client_entry {
	struct client_entry *next;
	char addr[64];
	unsigned conns;
	double tokens;              /* messages this client may still start */
	uint64_t tokens_ms;         /* when tokens was last topped up */
	unsigned auth_failures;     /* within the current window */
	uint64_t auth_window_ms;    /* when the first of them happened */
	uint64_t last_ms;
};

struct clients {
	struct client_entry *buckets[CLIENTS_BUCKETS];
	size_t n;
};

/*
 * The key connection and message limits are counted under: the client's
 * address masked to v4_prefix / v6_prefix bits ("192.0.2.0/24"), or the
 * address itself for a full-length prefix (or text that is not an IP).
 * out needs CLIENTS_KEY_MAX bytes.
 */
#define CLIENTS_KEY_MAX 64
void clients_limit_key(const char *addr, unsigned v4_prefix, unsigned v6_prefix,
		       char out[CLIENTS_KEY_MAX]);

void clients_init(struct clients *t);
void clients_free(struct clients *t);

/* A new connection from addr: false (and nothing counted) when the client
 * already has max_conns open. */
bool clients_connect(struct clients *t, const char *addr, unsigned max_conns, uint64_t now_ms);
void clients_disconnect(struct clients *t, const char *addr, uint64_t now_ms);
unsigned clients_connections(const struct clients *t, const char *addr);

/* A MAIL command: true and one message counted, or false when the client
 * has started per_minute messages in the last minute (0 = no limit). */
bool clients_message(struct clients *t, const char *addr, unsigned per_minute, uint64_t now_ms);

/* AUTH attempts: locked = max_failures failed within window_ms. */
bool clients_auth_locked(struct clients *t, const char *addr, unsigned max_failures,
			 uint64_t window_ms, uint64_t now_ms);
/* Counts a failure; returns the failures now counted in the window. */
unsigned clients_auth_failed(struct clients *t, const char *addr, uint64_t window_ms,
			     uint64_t now_ms);
void clients_auth_succeeded(struct clients *t, const char *addr, uint64_t now_ms);

/* Forgets clients idle for longer than keep_ms with no open connection. */
void clients_sweep(struct clients *t, uint64_t keep_ms, uint64_t now_ms);

#endif
