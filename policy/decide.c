/* decide.c - see decide.h */
#include "decide.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static void ok(struct verdict *v)
{
	memset(v, 0, sizeof(*v));
	v->result = DECIDE_OK;
}

void verdict_set(struct verdict *v, enum decide_result r, bool permanent, const char *status,
		 const char *fmt, ...)
{
	memset(v, 0, sizeof(*v));
	v->result = r;
	v->permanent = permanent;
	snprintf(v->status, sizeof(v->status), "%s", status);
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(v->reason, sizeof(v->reason), fmt, ap);
	va_end(ap);
}

void decide_needs(const struct delivery_req *req, const char *mx_host, struct mx_needs *out)
{
	memset(out, 0, sizeof(*out));
	/* "TLS-Required: No" switches off MTA-STS (RFC 8689 5), never REQUIRETLS:
	 * the header is ignored when the parameter is present. */
	bool sts_enforced = req->sts == STS_MODE_ENFORCE && !req->tls_required_no;
	out->requiretls = req->requiretls;
	out->starttls = req->tls >= TLS_LEVEL_ENCRYPT || req->requiretls || sts_enforced;
	out->verify = req->tls == TLS_LEVEL_VERIFY || req->requiretls || sts_enforced;
	/* REQUIRETLS wins over a route's tls=none (RTLS-16). */
	out->try_starttls = req->tls != TLS_LEVEL_NONE || out->starttls;
	out->plain_fallback = !out->starttls;
	out->verify_name = req->verify_name ? req->verify_name : mx_host;
	out->sts_checked = sts_enforced;
	out->sts_report_only = req->sts == STS_MODE_TESTING && !req->tls_required_no;
}

static size_t strip_dot_len(const char *s)
{
	size_t n = strlen(s);
	while (n > 0 && s[n - 1] == '.')
		n--;
	return n;
}

static bool ieq_n(const char *a, const char *b, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		char x = a[i], y = b[i];
		if (x >= 'A' && x <= 'Z')
			x = (char)(x - 'A' + 'a');
		if (y >= 'A' && y <= 'Z')
			y = (char)(y - 'A' + 'a');
		if (x != y)
			return false;
	}
	return true;
}

bool sts_mx_match(const char *pattern, const char *host)
{
	size_t pl = strip_dot_len(pattern), hl = strip_dot_len(host);
	if (pl == 0 || hl == 0)
		return false;
	if (pl >= 2 && pattern[0] == '*' && pattern[1] == '.') {
		/* "*.example.com": exactly one non-empty label before ".example.com" */
		const char *suffix = pattern + 1; /* ".example.com" */
		size_t sl = pl - 1;
		if (hl <= sl || !ieq_n(host + hl - sl, suffix, sl))
			return false;
		size_t label = hl - sl;
		return memchr(host, '.', label) == NULL && label > 0;
	}
	return pl == hl && ieq_n(pattern, host, pl);
}

void decide_mx(const struct delivery_req *req, const char *mx_host, struct verdict *v)
{
	if (req->sts != STS_MODE_ENFORCE || req->tls_required_no || req->sts_mx == NULL) {
		ok(v);
		return;
	}
	for (size_t i = 0; i < req->sts_mx->n; i++) {
		if (sts_mx_match(req->sts_mx->v[i], mx_host)) {
			ok(v);
			return;
		}
	}
	bool permanent = req->requiretls && !req->sts_stale;
	verdict_set(v, DECIDE_NEXT_MX, permanent, permanent ? "5.7.30" : "4.7.5",
	     "MX %s does not match the MTA-STS policy of the domain%s", mx_host,
	     req->sts_stale ? " (cached; a newer policy could not be fetched)" : "");
}

void decide_ehlo(const struct mx_needs *n, bool starttls_offered, struct verdict *v)
{
	if (starttls_offered || !n->starttls) {
		ok(v);
		return;
	}
	if (n->requiretls)
		verdict_set(v, DECIDE_NEXT_MX, true, "5.7.10",
		     "REQUIRETLS: the MX does not offer STARTTLS");
	else
		verdict_set(v, DECIDE_NEXT_MX, false, "4.7.10",
		     "TLS is required but the MX does not offer STARTTLS");
}

void decide_tls(const struct mx_needs *n, bool handshake_ok, const char *handshake_error,
		const struct tls_verify_info *cert, struct verdict *v)
{
	if (!handshake_ok) {
		if (n->plain_fallback) {
			verdict_set(v, DECIDE_RETRY_PLAIN, false, "4.7.5", "TLS handshake failed: %s",
			     handshake_error ? handshake_error : "unknown error");
			return;
		}
		verdict_set(v, DECIDE_NEXT_MX, n->requiretls, n->requiretls ? "5.7.10" : "4.7.5",
		     "%sTLS handshake failed: %s", n->requiretls ? "REQUIRETLS: " : "",
		     handshake_error ? handshake_error : "unknown error");
		return;
	}
	if (!n->verify || cert->result == TLS_CERT_OK) {
		ok(v);
		return;
	}
	verdict_set(v, DECIDE_NEXT_MX, n->requiretls, n->requiretls ? "5.7.10" : "4.7.5",
	     "%scertificate of the MX not valid for %s: %s (%s)",
	     n->requiretls ? "REQUIRETLS: " : "", n->verify_name, tls_cert_result_name(cert->result),
	     cert->detail);
}

void decide_tls_ehlo(const struct mx_needs *n, bool requiretls_offered, struct verdict *v)
{
	if (!n->requiretls || requiretls_offered) {
		ok(v);
		return;
	}
	verdict_set(v, DECIDE_NEXT_MX, true, "5.7.30",
	     "REQUIRETLS: the next hop does not advertise REQUIRETLS");
}

void decide_exhausted(const struct delivery_req *req, const struct verdict *mx_verdicts, size_t n,
		      struct verdict *out)
{
	(void)req;
	const struct verdict *temp = NULL, *perm = NULL;
	for (size_t i = 0; i < n; i++) {
		if (mx_verdicts[i].result == DECIDE_OK)
			continue;
		if (mx_verdicts[i].permanent) {
			if (perm == NULL)
				perm = &mx_verdicts[i];
		} else {
			temp = &mx_verdicts[i]; /* the last one: usually the most relevant */
		}
	}
	/* Anything that may go away (a refused connection, a 4xx greeting)
	 * means "try again later", even for REQUIRETLS (decision D6). */
	if (temp != NULL) {
		*out = *temp;
		out->permanent = false;
		if (out->status[0] != '4')
			out->status[0] = '4';
		return;
	}
	if (perm != NULL) {
		*out = *perm;
		return;
	}
	verdict_set(out, DECIDE_NEXT_MX, false, "4.4.1", "no MX host could be tried");
}
