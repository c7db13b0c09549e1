/*
 * job.h - the TLS reporting job (RFC 8460): once per UTC day, for every
 * policy domain with recorded sessions, look up `_smtp._tls.DOMAIN`, build
 * the report (tlsrpt/report.h), gzip it and deliver it to every rua:
 * https: URIs get a POST (application/tlsrpt+gzip), mailto: URIs a
 * multipart/report mail (tlsrpt/mail.h, DKIM-signed when [tlsrpt] dkim_* is
 * set) that goes through strictrelay's own queue with TLS-Required: No.
 *
 * Rules the job keeps:
 *   - one report per policy domain per day, never two (table tlsrpt_reports,
 *     looked up before building; `tlsrpt run --force` makes a new one);
 *   - sessions that carried report mail or any TLS-Required: No mail are not
 *     counted (their rows have tls_required_no = 1), so reports never feed
 *     the next day's reports (RPT-13, RPT-27);
 *   - a domain without a usable _smtp._tls record gets no report (logged,
 *     recorded as state no-rua so it is not looked at again that day);
 *   - a report counts as delivered once any endpoint took it (RPT-03); an
 *     HTTPS endpoint that failed is retried with back-off for 24 hours
 *     (RPT-28); a mailto report is handed to the queue, which retries.
 *
 * Everything runs on the loop; SQLite reads happen on the job's own
 * connection, writes through the store's writer.
 */
#ifndef STRICTRELAY_TLSRPT_JOB_H
#define STRICTRELAY_TLSRPT_JOB_H

#include <stdbool.h>
#include <stdint.h>

#include <uv.h>

#include "mta/config.h"

struct resolver;
struct https_client;
struct store;
struct dkim_key;

#define TLSRPT_LOOKBACK_DAYS 7   /* missed days caught up after downtime */
#define TLSRPT_RETRY_WINDOW 86400 /* HTTPS deliveries are retried this long */

struct tlsrpt_env {
	uv_loop_t *loop;
	const struct config *cfg;
	struct resolver *resolver;
	struct https_client *https;
	struct store *store;
	const struct dkim_key *dkim;   /* NULL: reports by mail go unsigned */
	void (*queued)(void *arg);     /* a report mail was queued (kick delivery) */
	void *queued_arg;
};

struct tlsrpt_opts {
	const char *out_dir;  /* also write each report file there; NULL = no */
	bool send;            /* false: build (and write) only, record nothing */
	bool force;           /* build and send even when the day was reported */
};

struct tlsrpt_summary {
	unsigned domains;     /* policy domains with sessions that day */
	unsigned reports;     /* reports built */
	unsigned delivered;   /* accepted by at least one endpoint (or queued) */
	unsigned pending;     /* waiting for an HTTPS retry */
	unsigned no_rua;      /* no usable _smtp._tls record */
	unsigned skipped;     /* already reported */
	unsigned errors;
};

typedef void tlsrpt_done_cb(void *arg, const struct tlsrpt_summary *s);

/* Reports one UTC day (day = its first second). 0, or -1 + err before
 * anything started. done runs from the loop. */
int tlsrpt_run_day(const struct tlsrpt_env *env, int64_t day, const struct tlsrpt_opts *opts,
		   tlsrpt_done_cb *done, void *arg, char *err, size_t errlen);

/* The daemon's part: checks every 10 minutes (and soon after start) for days
 * whose reports are due (after a random delay of at most [tlsrpt]
 * max_delay past midnight), catches up on missed days, retries HTTPS
 * deliveries. (Old results are purged by queue/purge.c, also when TLS
 * reporting is off.) */
struct tlsrpt_daemon;
struct tlsrpt_daemon *tlsrpt_daemon_start(const struct tlsrpt_env *env);
/* Stops the timer; a run in progress finishes first. done may be NULL. */
void tlsrpt_daemon_stop(struct tlsrpt_daemon *d, void (*done)(void *arg), void *arg);

/* The UTC midnight at or before t. */
int64_t tlsrpt_day_start(int64_t t);

#endif
