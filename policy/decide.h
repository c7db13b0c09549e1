/*
 * decide.h - the delivery decision: what transport security a delivery
 * needs and, at each stage of an outbound session, whether this MX may be
 * used. Pure: data in, verdict out (STYLE.md 2.6: parse -> eval, with an
 * explicit failure outcome; never fail open).
 *
 * The SMTP client calls, for every MX it tries:
 *   decide_mx()          before connecting (MTA-STS mx pattern check)
 *   decide_ehlo()        after the first EHLO: STARTTLS or not
 *   decide_tls()         after the handshake: is the certificate good enough
 *   decide_tls_ehlo()    after the EHLO inside TLS (REQUIRETLS advertised?)
 * A verdict other than DECIDE_OK means "leave this MX and try the next"; the
 * verdict's status and reason are remembered, and when every MX has failed
 * decide_exhausted() turns them into a deferral or a bounce.
 *
 * Inputs that later issues fill in: the MTA-STS policy (issue 4) and the
 * REQUIRETLS rules (issue 5) enter through struct delivery_req.
 */
#ifndef STRICTRELAY_POLICY_DECIDE_H
#define STRICTRELAY_POLICY_DECIDE_H

#include <stdbool.h>
#include <stddef.h>

#include "mta/config.h"
#include "smtp/tls_result.h"

enum sts_mode {
	STS_MODE_NONE = 0,  /* no policy, or mode none */
	STS_MODE_TESTING,
	STS_MODE_ENFORCE,
};

/* What the delivery of one message to one destination requires. */
struct delivery_req {
	enum tls_level tls;        /* route level or the default (may); require_tls makes it verify */
	const char *verify_name;   /* a route's verify_name; NULL = the MX host name */
	bool requiretls;           /* REQUIRETLS message with a non-empty reverse path */
	bool tls_required_no;      /* "TLS-Required: No": MTA-STS failures are ignored */
	enum sts_mode sts;         /* the MTA-STS policy in force for the domain */
	const struct strlist *sts_mx; /* its mx patterns (enforce/testing) */
	/* DNS announces a newer policy that could not be fetched: the cached one
	 * still applies, but an MX it does not name may be in the new one, so
	 * that mismatch is temporary, also for REQUIRETLS (RFC 8461 5.1). */
	bool sts_stale;
};

/* How strictly one MX must be approached; derived from the request. */
struct mx_needs {
	bool starttls;           /* STARTTLS must be offered and succeed */
	bool verify;             /* the certificate must chain and match */
	bool requiretls;         /* the next hop must advertise REQUIRETLS */
	bool try_starttls;       /* offer-dependent: use STARTTLS when offered */
	bool plain_fallback;     /* a failed handshake may be retried without TLS */
	const char *verify_name; /* the name to check */
	bool sts_checked;        /* an MTA-STS policy decides (enforce) */
	bool sts_report_only;    /* testing: failures are only recorded */
};

enum decide_result {
	DECIDE_OK,        /* go on with this MX */
	DECIDE_NEXT_MX,   /* do not use this MX; try the next one */
	DECIDE_RETRY_PLAIN, /* opportunistic TLS failed: reconnect to this MX without TLS */
};

struct verdict {
	enum decide_result result;
	bool permanent;       /* the failure can never go away by retrying (5.7.30) */
	char status[16];      /* enhanced status code: "4.7.5", "5.7.30" */
	char reason[256];     /* for logs, DSNs and TLS reports */
};

/* Fills v: a failure (r != DECIDE_OK) with its status and reason. */
void verdict_set(struct verdict *v, enum decide_result r, bool permanent, const char *status,
		 const char *fmt, ...) SR_PRINTF(5, 6);

/* The needs for one MX (host is the MX name, or the domain for implicit MX). */
void decide_needs(const struct delivery_req *req, const char *mx_host, struct mx_needs *out);

/* MTA-STS enforce: an MX that matches no mx pattern is never used (STS-50a). */
void decide_mx(const struct delivery_req *req, const char *mx_host, struct verdict *v);

void decide_ehlo(const struct mx_needs *n, bool starttls_offered, struct verdict *v);

/* handshake_ok false: the TLS handshake failed (error in detail). */
void decide_tls(const struct mx_needs *n, bool handshake_ok, const char *handshake_error,
		const struct tls_verify_info *cert, struct verdict *v);

void decide_tls_ehlo(const struct mx_needs *n, bool requiretls_offered, struct verdict *v);

/*
 * Every MX failed: the last verdict of each (n of them) decides. A permanent
 * failure (REQUIRETLS can never be met) bounces; anything else defers with
 * the most informative reason.
 */
void decide_exhausted(const struct delivery_req *req, const struct verdict *mx_verdicts, size_t n,
		      struct verdict *out);

/* MTA-STS pattern match (RFC 8461 4.1): exact, or "*.suffix" for exactly
 * one more left-most label; case-insensitive; trailing dots ignored. */
bool sts_mx_match(const char *pattern, const char *host);

#endif
