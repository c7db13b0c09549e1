/*
 * purge.h - housekeeping of the queue database: history older than
 * [tlsrpt] retention is deleted, whether or not TLS reporting is on (the
 * TLS results are recorded either way, and the events of messages that left
 * the queue are written by every delivery).
 *
 * What goes: tls_sessions rows, TLS reports that are no longer pending
 * (their deliveries with them, ON DELETE CASCADE), and the events of
 * messages no longer queued. Never anything inside the TLSRPT catch-up
 * window (TLSRPT_LOOKBACK_DAYS), whose results may still be reported.
 *
 * A pass deletes at most PURGE_BATCH rows per table per store operation and
 * submits the next batch when one was full, so the store's writer (and with
 * it every 250 waiting for a commit) is never held up for long.
 */
#ifndef STRICTRELAY_QUEUE_PURGE_H
#define STRICTRELAY_QUEUE_PURGE_H

#include <stdint.h>

#include <uv.h>

#include "queue/store.h"

#define PURGE_BATCH 5000
#define PURGE_FIRST_MS 5000                /* the first pass after the start */
#define PURGE_INTERVAL_MS (3600 * 1000)    /* then hourly */

/* The time before which rows go: now - retention, but never later than the
 * start of the UTC day TLSRPT_LOOKBACK_DAYS + 1 days before now's. */
int64_t purge_cutoff(int64_t now, int64_t retention);

struct purge;

/* Starts the timer (loop thread). retention in seconds, read once. */
struct purge *purge_start(uv_loop_t *loop, struct store *st, int64_t retention);

/* Stops the timer and submits no more; a batch in flight completes in
 * store_close(). Frees p once its timer is closed and no batch is in flight
 * (the loop must run). p may be NULL. */
void purge_stop(struct purge *p);

#endif
