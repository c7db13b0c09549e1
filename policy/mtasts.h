/*
 * mtasts.h - MTA-STS (RFC 8461) on the sending side: policy discovery,
 * HTTPS fetch, the policy cache, and the answer "which policy applies to
 * mail for DOMAIN right now".
 *
 * Every lookup checks `_mta-sts.DOMAIN` TXT (the resolver caches it for its
 * TTL, so this is usually a memory hit), and fetches the policy from
 * https://mta-sts.DOMAIN/.well-known/mta-sts.txt when there is no cached
 * policy, the cached one expired, or the TXT id changed. The cache lives in
 * SQLite (table sts_policies) and survives restarts; the daemon keeps a
 * memory copy of each entry for CACHE_MEMORY_SECONDS, so `strictrelay policy
 * DOMAIN --refresh` in another process is seen within that time.
 *
 * Never fail open (STS-06, STS-19, STS-41): a cached, unexpired policy is
 * used whenever no new one can be had - TXT gone, TXT broken, DNS failing,
 * fetch failing or the new policy invalid. Only without such a policy does
 * the domain count as having none (STS-18), and the failure is reported.
 * A fetch for an id that failed is not retried for FETCH_BACKOFF seconds
 * (STS-17). Policies in use are refreshed about daily (STS-20).
 *
 * Fetch failures are recorded as TLS report rows (tls_sessions with an empty
 * mx_host and result_type sts-policy-fetch-error, sts-policy-invalid or
 * sts-webpki-invalid).
 *
 * Lookups for the same domain share one discovery. Callbacks always run from
 * the loop, never inside mtasts_get().
 */
#ifndef STRICTRELAY_POLICY_MTASTS_H
#define STRICTRELAY_POLICY_MTASTS_H

#include <stdbool.h>
#include <stdint.h>

#include <sqlite3.h>
#include <uv.h>

#include "mta/config.h"
#include "policy/decide.h"

#define STS_FETCH_BACKOFF 300      /* seconds between fetches of a failing id */
#define STS_MAX_BODY 65536         /* RFC 8461 3.3 suggests 64 KiB */
#define STS_CACHE_MEMORY_SECONDS 60
#define STS_REFRESH_INTERVAL 3600  /* how often to look for policies to refresh */
#define STS_REFRESH_AGE 86400      /* refresh policies fetched longer ago than this */

struct resolver;
struct https_client;
struct store;
struct mtasts;
struct mtasts_query;

/* What applies to a domain; valid only during the callback. */
struct sts_result {
	bool have_policy;          /* a policy (fresh or cached) applies */
	enum sts_mode mode;        /* STS_MODE_NONE without a policy */
	const char *id;            /* "" without a policy */
	const struct strlist *mx;  /* patterns (empty without a policy) */
	const struct strlist *lines; /* the policy as RFC 8460 policy-string lines */
	int64_t fetched;
	int64_t expires;
	const char *source;        /* "fetched", "cache" or "none" */
	const char *txt;           /* what the TXT lookup said, for diagnostics */
	bool temporary;            /* no policy applies only because of a temporary
	                            * problem (DNS failure, fetch failure): it may
	                            * apply on the next try */
	bool stale;                /* the cached policy is used, but DNS announces
	                            * another id that could not be fetched (now or
	                            * within the back-off): it may be outdated */
	const char *failure_type;  /* "" or an RFC 8460 result type for this lookup */
	const char *failure;       /* "" or what went wrong */
};

typedef void mtasts_cb(void *arg, const struct sts_result *res);

/* store may be NULL (CLI use: the cache is written directly through db). */
int mtasts_new(struct mtasts **out, uv_loop_t *loop, const struct config *cfg,
	       struct resolver *resolver, struct https_client *https, struct store *store,
	       char *err, size_t errlen);

/* Lookups in flight complete with no policy and failure "shutting down";
 * the refresh timer is closed (the loop must run afterwards). */
/* SIGHUP: cfg (which must outlive m) for fetches started from now on. */
void mtasts_set_config(struct mtasts *m, const struct config *cfg);
void mtasts_free(struct mtasts *m);

/* force: fetch the policy even when the cached one is current (--refresh). */
struct mtasts_query *mtasts_get(struct mtasts *m, const char *domain, bool force, mtasts_cb *cb,
				void *arg);

/* The callback will not run; the caller may free its object at once. */
void mtasts_cancel(struct mtasts_query *q);

#endif
