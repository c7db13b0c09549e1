/* pcli.c - see pcli.h */
#include "pcli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "mta/cli.h"
#include "mta/https.h"
#include "mta/json.h"
#include "mta/log.h"
#include "mta/netaddr.h"
#include "policy/mtasts.h"
#include "policy/nexthop.h"
#include "policy/resolver.h"
#include "policy/sts.h"
#include "smtp/client.h"
#include "smtp/parse.h"
#include "smtp/tls.h"
#include "tlsrpt/record.h"

#define DNS_TRIES 2

struct pcli;

struct probe {
	struct pcli *pc;
	char *host;
	bool in_policy;
	bool have_facts;
	bool done;
	char ip[64];
	bool connected, greeted, starttls, starttls_refused, tls, requiretls;
	char helo[256];
	char tls_desc[160];
	enum tls_cert_result cert;
	char cert_detail[160];
	char verify_name[256];
	char error[300];
	struct client_dest dest;
};

struct mxinfo {
	char *name;
	unsigned pref;
	struct strlist addrs;
	char addr_detail[200];
};

struct pcli {
	uv_loop_t loop;
	const struct config *cfg;
	char domain[256];
	bool refresh, probe, json;
	struct resolver *resolver;
	struct https_client *https;
	struct mtasts *mtasts;
	SSL_CTX *tls_ctx;
	int pending;
	int64_t now;
	/* next hop */
	enum nexthop_status nh_status;
	char nh_detail[300];
	bool implicit_mx;
	struct mxinfo *mx;
	size_t nmx;
	/* _mta-sts TXT as published */
	enum dns_status sts_dns;
	char sts_dns_detail[200];
	struct strlist sts_txt;
	/* the policy that applies */
	bool have_policy;
	enum sts_mode mode;
	char id[40];
	struct strlist lines, patterns;
	int64_t fetched, expires;
	char source[16];
	char txt_verdict[200];
	char failure_type[40];
	char failure[300];
	/* _smtp._tls */
	enum dns_status rpt_dns;
	struct strlist rpt_txt;
	enum tlsrpt_txt_result rpt_result;
	char rpt_why[200];
	struct tlsrpt_record rpt;
	/* probes */
	struct probe *probes;
	size_t nprobes;
};

static void step_done(struct pcli *pc);

/* --- lookups --------------------------------------------------------------- */

static void on_nexthop(void *arg, const struct nexthop *nh)
{
	struct pcli *pc = arg;
	pc->nh_status = nh->status;
	snprintf(pc->nh_detail, sizeof(pc->nh_detail), "%s", nh->detail);
	pc->implicit_mx = nh->implicit_mx;
	pc->mx = xcalloc(nh->nhosts ? nh->nhosts : 1, sizeof(*pc->mx));
	pc->nmx = nh->nhosts;
	for (size_t i = 0; i < nh->nhosts; i++) {
		const struct nexthop_host *h = &nh->hosts[i];
		pc->mx[i].name = xstrdup(h->name);
		pc->mx[i].pref = h->pref;
		snprintf(pc->mx[i].addr_detail, sizeof(pc->mx[i].addr_detail), "%s", h->addr_detail);
		for (size_t k = 0; k < h->naddrs; k++) {
			char ip[64];
			sockaddr_format((const struct sockaddr *)&h->addrs[k], ip, sizeof(ip), NULL);
			strlist_add(&pc->mx[i].addrs, ip);
		}
	}
	step_done(pc);
}

static void on_sts_txt(void *arg, const struct dns_result *res)
{
	struct pcli *pc = arg;
	pc->sts_dns = res->status;
	snprintf(pc->sts_dns_detail, sizeof(pc->sts_dns_detail), "%s", res->detail);
	strlist_copy(&pc->sts_txt, &res->txt);
	step_done(pc);
}

static void on_policy(void *arg, const struct sts_result *res)
{
	struct pcli *pc = arg;
	pc->have_policy = res->have_policy;
	pc->mode = res->mode;
	snprintf(pc->id, sizeof(pc->id), "%s", res->id);
	strlist_copy(&pc->lines, res->lines);
	strlist_copy(&pc->patterns, res->mx);
	pc->fetched = res->fetched;
	pc->expires = res->expires;
	snprintf(pc->source, sizeof(pc->source), "%s", res->source);
	snprintf(pc->txt_verdict, sizeof(pc->txt_verdict), "%s", res->txt);
	snprintf(pc->failure_type, sizeof(pc->failure_type), "%s", res->failure_type);
	snprintf(pc->failure, sizeof(pc->failure), "%s", res->failure);
	step_done(pc);
}

static void on_rpt_txt(void *arg, const struct dns_result *res)
{
	struct pcli *pc = arg;
	pc->rpt_dns = res->status;
	strlist_copy(&pc->rpt_txt, &res->txt);
	pc->rpt_result = TLSRPT_TXT_NONE;
	if (res->status == DNS_OK)
		pc->rpt_result = tlsrpt_txt_select(&res->txt, &pc->rpt, pc->rpt_why, sizeof(pc->rpt_why));
	step_done(pc);
}

/* --- probes ---------------------------------------------------------------- */

static struct delivery_job *probe_next_job(void *arg)
{
	(void)arg;
	return NULL; /* a probe never sends mail */
}

static void probe_job_done(void *arg, struct delivery_job *job)
{
	(void)arg;
	job_free(job);
}

static void probe_failed(void *arg, const struct verdict *v, enum sts_mode sts)
{
	(void)sts;
	struct probe *p = arg;
	if (!p->have_facts)
		snprintf(p->error, sizeof(p->error), "%s", v->reason);
}

static void probe_facts(void *arg, const struct client_facts *f)
{
	struct probe *p = arg;
	if (p->have_facts)
		return; /* keep the first connection: the one that tried TLS */
	p->have_facts = true;
	snprintf(p->ip, sizeof(p->ip), "%s", f->mx_ip);
	p->connected = f->connected;
	p->greeted = f->greeted;
	p->starttls = f->starttls_offered;
	p->starttls_refused = f->starttls_refused;
	p->tls = f->tls;
	p->requiretls = f->requiretls_offered;
	snprintf(p->helo, sizeof(p->helo), "%s", f->helo ? f->helo : "");
	snprintf(p->tls_desc, sizeof(p->tls_desc), "%s", f->tls_desc ? f->tls_desc : "");
	p->cert = f->cert->result;
	snprintf(p->cert_detail, sizeof(p->cert_detail), "%s",
		 f->tls ? f->cert->detail : (f->handshake_error ? f->handshake_error : ""));
	snprintf(p->verify_name, sizeof(p->verify_name), "%s", f->verify_name);
	snprintf(p->error, sizeof(p->error), "%s", f->error);
}

static void probe_closed(void *arg)
{
	struct probe *p = arg;
	p->done = true;
	step_done(p->pc);
}

static bool in_policy(const struct pcli *pc, const char *host)
{
	for (size_t i = 0; i < pc->patterns.n; i++)
		if (sts_mx_match(pc->patterns.v[i], host))
			return true;
	return false;
}

static void start_probes(struct pcli *pc)
{
	pc->probes = xcalloc(pc->nmx ? pc->nmx : 1, sizeof(*pc->probes));
	pc->nprobes = pc->nmx;
	for (size_t i = 0; i < pc->nmx; i++) {
		struct probe *p = &pc->probes[i];
		p->pc = pc;
		p->host = pc->mx[i].name;
		p->in_policy = in_policy(pc, p->host);
		/* Opportunistic, so every stage runs and reports what it found;
		 * the certificate is still checked against the MX name. */
		p->dest.lookup_name = p->host;
		p->dest.mx_lookup = false;
		p->dest.route = false;
		p->dest.port = pc->cfg->delivery.smtp_port;
		p->dest.policy_domain = pc->domain;
		p->dest.label = p->host;
		p->dest.req.tls = TLS_LEVEL_MAY;
		pc->pending++;
		struct smtp_client_params params = {
			.loop = &pc->loop,
			.cfg = pc->cfg,
			.resolver = pc->resolver,
			.tls_ctx = pc->tls_ctx,
			.dest = &p->dest,
			.ops = { probe_next_job, probe_job_done, probe_failed, probe_closed, probe_facts },
			.arg = p,
		};
		smtp_client_start(&params);
	}
	if (pc->nmx == 0) {
		pc->pending++;
		step_done(pc);
	}
}

static void step_done(struct pcli *pc)
{
	if (--pc->pending > 0)
		return;
	if (pc->probe && pc->probes == NULL && pc->nh_status == NH_OK) {
		start_probes(pc);
		return;
	}
	/* Everything answered: let the loop run dry. */
	mtasts_free(pc->mtasts);
	pc->mtasts = NULL;
	https_client_free(pc->https);
	pc->https = NULL;
	resolver_free(pc->resolver);
	pc->resolver = NULL;
}

/* --- verdicts -------------------------------------------------------------- */

static bool probe_verified(const struct probe *p)
{
	return p->have_facts && p->tls && p->cert == TLS_CERT_OK;
}

/* Could a REQUIRETLS message go out now? (RFC 8689 4.2.1, decision D4) */
static const char *requiretls_verdict(const struct pcli *pc, char *why, size_t whylen,
				      int *possible)
{
	const struct route *r = config_find_route(pc->cfg, pc->domain);
	if (r != NULL) {
		snprintf(why, whylen,
			 "mail for %s takes route %s: it needs verified TLS to the route host and REQUIRETLS advertised there (RTLS-15)",
			 pc->domain, r->domain);
		*possible = -1;
		return "depends on the route";
	}
	if (!pc->have_policy || pc->mode != STS_MODE_ENFORCE) {
		snprintf(why, whylen,
			 "REQUIRETLS needs the MX hosts validated by an MTA-STS policy in enforce mode (DNSSEC is not supported yet); %s has %s",
			 pc->domain,
			 !pc->have_policy ? "no MTA-STS policy"
					  : pc->mode == STS_MODE_TESTING ? "a policy in testing mode"
									 : "a policy in mode none");
		*possible = 0;
		return "no";
	}
	bool any_match = false;
	for (size_t i = 0; i < pc->nmx; i++)
		any_match |= in_policy(pc, pc->mx[i].name);
	if (!any_match) {
		snprintf(why, whylen, "no MX host of %s matches its MTA-STS policy", pc->domain);
		*possible = 0;
		return "no";
	}
	if (!pc->probe) {
		snprintf(why, whylen,
			 "only if an MX host in the policy offers REQUIRETLS over verified TLS: run with --probe to check");
		*possible = -1;
		return "unknown";
	}
	for (size_t i = 0; i < pc->nprobes; i++) {
		const struct probe *p = &pc->probes[i];
		if (p->in_policy && probe_verified(p) && p->requiretls) {
			snprintf(why, whylen, "via %s: in the policy, certificate valid, REQUIRETLS offered",
				 p->host);
			*possible = 1;
			return "yes";
		}
	}
	snprintf(why, whylen,
		 "no MX host in the policy offers REQUIRETLS over verified TLS (see the MX check)");
	*possible = 0;
	return "no";
}

static const char *probe_summary(const struct probe *p, char *dst, size_t dstlen)
{
	if (!p->have_facts || !p->connected) {
		snprintf(dst, dstlen, "no connection: %s", p->error[0] ? p->error : "not reached");
	} else if (!p->greeted) {
		snprintf(dst, dstlen, "refused: %s", p->error);
	} else if (!p->starttls || p->starttls_refused) {
		snprintf(dst, dstlen, "STARTTLS %s", p->starttls ? "refused" : "not offered");
	} else if (!p->tls) {
		snprintf(dst, dstlen, "TLS handshake failed: %s", p->cert_detail);
	} else {
		snprintf(dst, dstlen, "STARTTLS, %s, certificate %s for %s%s%s, REQUIRETLS %s",
			 p->tls_desc, p->cert == TLS_CERT_OK ? "valid" : "NOT valid", p->verify_name,
			 p->cert == TLS_CERT_OK ? "" : ": ", p->cert == TLS_CERT_OK ? "" : p->cert_detail,
			 p->requiretls ? "offered" : "not offered");
	}
	return dst;
}

/* --- output ---------------------------------------------------------------- */

static const char *nh_status_name(enum nexthop_status s)
{
	switch (s) {
	case NH_OK:
		return "ok";
	case NH_NULL_MX:
		return "null-mx";
	case NH_NXDOMAIN:
		return "nxdomain";
	case NH_NODATA:
		return "nodata";
	case NH_NO_ADDRESS:
		return "no-address";
	case NH_TEMPFAIL:
		return "tempfail";
	case NH_BADNAME:
		return "badname";
	}
	return "?";
}

static void print_text(struct pcli *pc)
{
	char t1[40], t2[40], d1[24], d2[24], why[400];
	fmt_time_iso(t1, sizeof(t1), pc->now);
	printf("Domain:      %s   (checked %s)\n", pc->domain, t1);
	const struct route *r = config_find_route(pc->cfg, pc->domain);
	if (r != NULL) {
		char hp[300];
		hostport_format(&r->next_hop, hp, sizeof(hp));
		printf("Route:       %s -> %s%s tls=%s (MTA-STS does not apply to routed mail)\n",
		       r->domain, r->next_hop.bracketed ? "" : "MX of ", hp, tls_level_name(r->tls));
	}
	printf("\nMX hosts%s:\n", pc->implicit_mx ? " (no MX records: the domain's own address)" : "");
	if (pc->nh_status != NH_OK)
		printf("  none usable: %s (%s)\n", nh_status_name(pc->nh_status), pc->nh_detail);
	for (size_t i = 0; i < pc->nmx; i++) {
		printf("  %3u %-40s", pc->mx[i].pref, pc->mx[i].name);
		for (size_t k = 0; k < pc->mx[i].addrs.n; k++)
			printf(" %s", pc->mx[i].addrs.v[k]);
		if (pc->mx[i].addrs.n == 0)
			printf(" (no address: %s)", pc->mx[i].addr_detail);
		printf("\n");
	}

	printf("\nMTA-STS record (_mta-sts.%s):\n", pc->domain);
	if (pc->sts_dns != DNS_OK)
		printf("  none (%s%s%s)\n", dns_status_name(pc->sts_dns), pc->sts_dns_detail[0] ? ": " : "",
		       pc->sts_dns_detail);
	for (size_t i = 0; i < pc->sts_txt.n; i++) {
		char q[600];
		printf("  %s\n", str_quote(q, sizeof(q), pc->sts_txt.v[i]));
	}
	printf("  verdict: %s\n", pc->txt_verdict);

	printf("\nMTA-STS policy:\n");
	if (!pc->have_policy) {
		printf("  none applies");
		if (pc->failure[0])
			printf(" (%s: %s)", pc->failure_type, pc->failure);
		printf("\n");
	} else {
		fmt_time_iso(t1, sizeof(t1), pc->fetched);
		fmt_time_iso(t2, sizeof(t2), pc->expires);
		fmt_duration(d1, sizeof(d1), pc->now - pc->fetched);
		fmt_duration(d2, sizeof(d2), pc->expires - pc->now);
		printf("  mode %s, id %s, from the %s\n", sts_mode_name(pc->mode), pc->id,
		       strcmp(pc->source, "fetched") == 0 ? "policy host just now" : "cache");
		printf("  fetched %s (%s ago), expires %s (in %s)\n", t1, d1, t2, d2);
		if (pc->failure[0])
			printf("  note: %s: %s (the cached policy still applies)\n", pc->failure_type,
			       pc->failure);
		for (size_t i = 0; i < pc->lines.n; i++)
			printf("    %s\n", pc->lines.v[i]);
	}

	printf("\nTLSRPT record (_smtp._tls.%s):\n", pc->domain);
	if (pc->rpt_result == TLSRPT_TXT_OK) {
		for (size_t i = 0; i < pc->rpt.nrua; i++)
			printf("  rua %s\n", pc->rpt.rua[i].uri);
	} else if (pc->rpt_dns != DNS_OK) {
		printf("  none (%s)\n", dns_status_name(pc->rpt_dns));
	} else {
		printf("  none usable: %s\n", pc->rpt_why[0] ? pc->rpt_why : "no v=TLSRPTv1 record");
	}

	printf("\nMX check:\n");
	for (size_t i = 0; i < pc->nmx; i++) {
		const char *host = pc->mx[i].name;
		printf("  %-40s in policy: %s", host,
		       pc->have_policy && pc->mode != STS_MODE_NONE ? (in_policy(pc, host) ? "yes" : "NO")
								  : "-");
		if (pc->probe && i < pc->nprobes) {
			char sum[600];
			printf("\n  %-40s %s", "", probe_summary(&pc->probes[i], sum, sizeof(sum)));
		} else if (!pc->probe) {
			printf("   TLS: not checked (--probe connects and tries STARTTLS)");
		}
		printf("\n");
	}

	printf("\nDelivery now:\n");
	if (r == NULL && pc->nh_status != NH_OK) {
		bool permanent = pc->nh_status == NH_NULL_MX || pc->nh_status == NH_NXDOMAIN ||
				 pc->nh_status == NH_NODATA || pc->nh_status == NH_BADNAME;
		printf("  mail is %s: %s\n", permanent ? "bounced" : "deferred", pc->nh_detail);
		return;
	}
	if (r != NULL)
		printf("  mail goes by route %s (tls=%s)\n", r->domain, tls_level_name(r->tls));
	else if (pc->have_policy && pc->mode == STS_MODE_ENFORCE)
		printf("  enforce: only MX hosts in the policy, over TLS with a valid certificate; otherwise deferred\n");
	else if (pc->have_policy && pc->mode == STS_MODE_TESTING)
		printf("  testing: as without a policy (STARTTLS when offered); failures are reported\n");
	else if (pc->cfg->delivery.require_tls)
		printf("  require_tls = yes: verified TLS to the MX name, or deferred\n");
	else
		printf("  opportunistic: STARTTLS when offered, any certificate\n");
	int possible;
	const char *v = requiretls_verdict(pc, why, sizeof(why), &possible);
	printf("  REQUIRETLS message: %s: %s\n", v, why);
}

static void print_json(struct pcli *pc)
{
	struct buf b;
	buf_init(&b, 0);
	struct json j;
	json_init(&j, &b, true);
	char t[40];
	json_obj(&j);
	json_kstr(&j, "domain", pc->domain);
	fmt_time_iso(t, sizeof(t), pc->now);
	json_kstr(&j, "checked", t);
	const struct route *r = config_find_route(pc->cfg, pc->domain);
	if (r != NULL) {
		char hp[300];
		hostport_format(&r->next_hop, hp, sizeof(hp));
		json_key(&j, "route");
		json_obj(&j);
		json_kstr(&j, "domain", r->domain);
		json_kstr(&j, "next_hop", hp);
		json_kbool(&j, "mx_lookup", !r->next_hop.bracketed);
		json_kstr(&j, "tls", tls_level_name(r->tls));
		json_end(&j);
	}
	json_kstr(&j, "mx_status", nh_status_name(pc->nh_status));
	json_kbool(&j, "implicit_mx", pc->implicit_mx);
	json_key(&j, "mx");
	json_arr(&j);
	for (size_t i = 0; i < pc->nmx; i++) {
		json_obj(&j);
		json_kstr(&j, "host", pc->mx[i].name);
		json_kint(&j, "preference", pc->mx[i].pref);
		json_key(&j, "addresses");
		json_arr(&j);
		for (size_t k = 0; k < pc->mx[i].addrs.n; k++)
			json_str(&j, pc->mx[i].addrs.v[k]);
		json_end(&j);
		json_kbool(&j, "in_policy", in_policy(pc, pc->mx[i].name));
		if (pc->probe && i < pc->nprobes) {
			const struct probe *p = &pc->probes[i];
			json_key(&j, "probe");
			json_obj(&j);
			json_kstr(&j, "ip", p->ip);
			json_kbool(&j, "connected", p->connected);
			json_kstr(&j, "helo", p->helo);
			json_kbool(&j, "starttls", p->starttls && !p->starttls_refused);
			json_kbool(&j, "tls", p->tls);
			json_kstr(&j, "tls_version", p->tls_desc);
			json_kbool(&j, "certificate_valid", probe_verified(p));
			json_kstr(&j, "certificate_result", p->tls ? tls_cert_result_name(p->cert) : "");
			json_kstr(&j, "certificate_detail", p->cert_detail);
			json_kstr(&j, "verify_name", p->verify_name);
			json_kbool(&j, "requiretls", p->requiretls);
			json_kstr(&j, "error", p->error);
			json_end(&j);
		}
		json_end(&j);
	}
	json_end(&j);
	json_key(&j, "mta_sts");
	json_obj(&j);
	json_kstr(&j, "txt_status", dns_status_name(pc->sts_dns));
	json_key(&j, "txt");
	json_arr(&j);
	for (size_t i = 0; i < pc->sts_txt.n; i++)
		json_str(&j, pc->sts_txt.v[i]);
	json_end(&j);
	json_kstr(&j, "txt_verdict", pc->txt_verdict);
	json_kbool(&j, "policy_applies", pc->have_policy);
	json_kstr(&j, "source", pc->source);
	json_kstr(&j, "failure_type", pc->failure_type);
	json_kstr(&j, "failure", pc->failure);
	if (pc->have_policy) {
		json_key(&j, "policy");
		json_obj(&j);
		json_kstr(&j, "id", pc->id);
		json_kstr(&j, "mode", sts_mode_name(pc->mode));
		json_key(&j, "mx");
		json_arr(&j);
		for (size_t i = 0; i < pc->patterns.n; i++)
			json_str(&j, pc->patterns.v[i]);
		json_end(&j);
		json_key(&j, "lines");
		json_arr(&j);
		for (size_t i = 0; i < pc->lines.n; i++)
			json_str(&j, pc->lines.v[i]);
		json_end(&j);
		fmt_time_iso(t, sizeof(t), pc->fetched);
		json_kstr(&j, "fetched", t);
		fmt_time_iso(t, sizeof(t), pc->expires);
		json_kstr(&j, "expires", t);
		json_kint(&j, "age_seconds", pc->now - pc->fetched);
		json_kint(&j, "expires_in_seconds", pc->expires - pc->now);
		json_end(&j);
	}
	json_end(&j);
	json_key(&j, "tlsrpt");
	json_obj(&j);
	json_kstr(&j, "txt_status", dns_status_name(pc->rpt_dns));
	json_kbool(&j, "valid", pc->rpt_result == TLSRPT_TXT_OK);
	json_key(&j, "rua");
	json_arr(&j);
	if (pc->rpt_result == TLSRPT_TXT_OK)
		for (size_t i = 0; i < pc->rpt.nrua; i++)
			json_str(&j, pc->rpt.rua[i].uri);
	json_end(&j);
	json_end(&j);
	char why[400];
	int possible;
	const char *v = requiretls_verdict(pc, why, sizeof(why), &possible);
	json_key(&j, "requiretls");
	json_obj(&j);
	json_kstr(&j, "verdict", v);
	json_key(&j, "possible");
	if (possible < 0)
		json_null(&j);
	else
		json_bool(&j, possible == 1);
	json_kstr(&j, "reason", why);
	json_end(&j);
	json_end(&j);
	fwrite(b.data, 1, b.len, stdout);
	buf_free(&b);
}

/* --- main ------------------------------------------------------------------ */

static void pcli_free(struct pcli *pc)
{
	for (size_t i = 0; i < pc->nmx; i++) {
		free(pc->mx[i].name);
		strlist_free(&pc->mx[i].addrs);
	}
	free(pc->mx);
	free(pc->probes);
	strlist_free(&pc->sts_txt);
	strlist_free(&pc->lines);
	strlist_free(&pc->patterns);
	strlist_free(&pc->rpt_txt);
	if (pc->rpt_result == TLSRPT_TXT_OK)
		tlsrpt_record_free(&pc->rpt);
	if (pc->tls_ctx != NULL)
		SSL_CTX_free(pc->tls_ctx);
}

int pcli_main(const struct config *cfg, int argc, char **argv)
{
	struct pcli *pc = xcalloc(1, sizeof(*pc));
	pc->cfg = cfg;
	const char *domain = NULL;
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--refresh") == 0)
			pc->refresh = true;
		else if (strcmp(argv[i], "--probe") == 0)
			pc->probe = true;
		else if (strcmp(argv[i], "--json") == 0)
			pc->json = true;
		else if (argv[i][0] == '-' || domain != NULL) {
			free(pc);
			return cli_usage_error("policy", "unexpected argument \"%s\"", argv[i]);
		} else
			domain = argv[i];
	}
	if (domain == NULL) {
		free(pc);
		return cli_usage_error("policy", "which domain? (strictrelay policy DOMAIN)");
	}
	snprintf(pc->domain, sizeof(pc->domain), "%s", domain);
	str_lower(pc->domain);
	if (!smtp_valid_domain(pc->domain, false) || pc->domain[0] == '[') {
		free(pc);
		return cli_usage_error("policy", "\"%s\" is not a domain name (A-labels only)", domain);
	}
	/* Diagnostics go to stderr as log lines; keep them to warnings unless -d. */
	char err[512];
	if (https_global_init(err, sizeof(err)) < 0 || uv_loop_init(&pc->loop) != 0) {
		fprintf(stderr, "strictrelay: policy: %s\n", err);
		free(pc);
		return EXIT_RUNTIME;
	}
	pc->now = now_unix();
	int rc = EXIT_RUNTIME;
	if (resolver_new(&pc->resolver, &pc->loop, cfg->delivery.dns_servers, cfg->delivery.ndns_servers,
			 (unsigned)cfg->delivery.dns_timeout * 1000, DNS_TRIES, err, sizeof(err)) < 0 ||
	    https_client_new(&pc->https, &pc->loop, pc->resolver, cfg->delivery.ca_file, err,
			     sizeof(err)) < 0 ||
	    mtasts_new(&pc->mtasts, &pc->loop, cfg, pc->resolver, pc->https, NULL, err, sizeof(err)) < 0 ||
	    (pc->tls_ctx = tls_client_ctx_new(cfg->delivery.ca_file, err, sizeof(err))) == NULL) {
		fprintf(stderr, "strictrelay: policy: %s\n", err);
		if (pc->mtasts != NULL)
			mtasts_free(pc->mtasts);
		if (pc->https != NULL)
			https_client_free(pc->https);
		if (pc->resolver != NULL)
			resolver_free(pc->resolver);
		uv_run(&pc->loop, UV_RUN_DEFAULT);
		goto out;
	}
	char name[300];
	pc->pending = 4;
	nexthop_resolve(pc->resolver, pc->domain, true, on_nexthop, pc);
	snprintf(name, sizeof(name), "_mta-sts.%s", pc->domain);
	resolver_query_txt(pc->resolver, name, on_sts_txt, pc);
	mtasts_get(pc->mtasts, pc->domain, pc->refresh, on_policy, pc);
	snprintf(name, sizeof(name), "_smtp._tls.%s", pc->domain);
	resolver_query_txt(pc->resolver, name, on_rpt_txt, pc);
	uv_run(&pc->loop, UV_RUN_DEFAULT);
	if (pc->json)
		print_json(pc);
	else
		print_text(pc);
	rc = EXIT_OK;
out:
	if (uv_loop_close(&pc->loop) != 0)
		log_error("policy", "event loop still has open handles at exit");
	pcli_free(pc);
	free(pc);
	return rc;
}
