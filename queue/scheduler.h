/*
 * scheduler.h - picks due recipients from the queue and runs the SMTP
 * sessions that deliver them.
 *
 * Due recipients (state queued, next_attempt <= now, message not held) are
 * grouped into jobs (one message, one recipient domain) and queued on a
 * destination: the next hop plus the policy class of the message (normal,
 * REQUIRETLS, TLS-Required: No), so one session only carries mail that
 * needs the same security. Each destination runs up to max_per_domain
 * sessions, all of them at most [delivery] max_connections; a session
 * delivers queued jobs one after the other on one connection.
 *
 * Claimed recipients are remembered in memory (a TEMP table of the reader
 * connection) until their outcome is committed, so nothing is picked twice;
 * after a crash the claims are gone and the recipients are simply due again:
 * only sessions in flight at the crash can deliver twice.
 *
 * The queue is polled every second, so `queue flush|hold|release|delete`
 * from the CLI take effect within a second; scheduler_kick() looks at once
 * (new mail, a bounce queued).
 */
#ifndef STRICTRELAY_QUEUE_SCHEDULER_H
#define STRICTRELAY_QUEUE_SCHEDULER_H

#include <openssl/ssl.h>
#include <uv.h>

#include "mta/config.h"
#include "queue/store.h"

struct mtasts;
struct resolver;
struct scheduler;

/* mtasts may be NULL (MTA-STS off). */
int scheduler_start(struct scheduler **out, uv_loop_t *loop, const struct config *cfg,
		    struct store *store, struct resolver *resolver, struct mtasts *mtasts,
		    SSL_CTX *client_ctx, char *err, size_t errlen);

/* SIGHUP: new routes, limits and retry schedule for work started from now
 * on. cfg must outlive the scheduler. */
void scheduler_set_config(struct scheduler *s, const struct config *cfg);
void scheduler_kick(struct scheduler *s);

/* Stops starting sessions, aborts running ones (their jobs stay queued) and
 * waits for pending outcome writes; done runs when the scheduler is freed. */
void scheduler_shutdown(struct scheduler *s, void (*done)(void *arg), void *arg);

#endif
