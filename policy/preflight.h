/*
 * preflight.h - RCPT-time REQUIRETLS check: can mail for DOMAIN provably not
 * satisfy REQUIRETLS right now? Then the server refuses the recipient with
 * 550 5.7.30 at once instead of accepting and bouncing later (no
 * backscatter).
 *
 * Refused only on definite answers: a null MX or a domain that does not
 * exist; no MTA-STS policy (definitely none, not a failed lookup), or one
 * in testing or none mode (decision D4); an enforce policy that no MX host
 * matches; an address literal; MTA-STS switched off in this relay. Routed
 * domains are never refused (the route host decides at delivery, RTLS-15).
 * Anything unknown - a temporary DNS or fetch failure, or no answer within
 * [requiretls] preflight_timeout - accepts, so a slow DNS never rejects good
 * mail. Answers come from the same caches delivery uses, so repeated
 * recipients at one domain cost nothing.
 */
#ifndef STRICTRELAY_POLICY_PREFLIGHT_H
#define STRICTRELAY_POLICY_PREFLIGHT_H

#include <stdbool.h>

#include <uv.h>

#include "mta/config.h"

struct resolver;
struct mtasts;
struct preflight;
struct preflight_check;

typedef void preflight_cb(void *arg, bool refuse, const char *reason);

/* mtasts may be NULL (MTA-STS off: every REQUIRETLS domain is refused). */
struct preflight *preflight_new(uv_loop_t *loop, const struct config *cfg, struct resolver *r,
				struct mtasts *m);
/* Checks still running are answered "accept" first. */
/* SIGHUP: cfg (which must outlive p) for checks started from now on. */
void preflight_set_config(struct preflight *p, const struct config *cfg);
void preflight_free(struct preflight *p);

/* The callback always runs from the loop. */
struct preflight_check *preflight_start(struct preflight *p, const char *domain, preflight_cb *cb,
					void *arg);
/* The callback will not run. */
void preflight_cancel(struct preflight_check *c);

#endif
