/* preflight.c - see preflight.h */
#include "preflight.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mta/log.h"
#include "policy/decide.h"
#include "policy/mtasts.h"
#include "policy/nexthop.h"
#include "policy/sts.h"

struct preflight {
	uv_loop_t *loop;
	const struct config *cfg;
	struct resolver *resolver;
	struct mtasts *mtasts;
	struct preflight_check *checks; /* running */
};

struct preflight_check {
	struct preflight_check *prev, *next;
	struct preflight *p;
	char domain[256];
	preflight_cb *cb;
	void *arg;
	uv_timer_t timer;
	struct mtasts_query *stsq;
	struct nexthop_query *nhq;
	bool answered;
	/* what came back */
	bool sts_done, nh_done;
	bool have_policy, temporary;
	enum sts_mode mode;
	struct strlist patterns;
	enum nexthop_status nh_status;
	struct strlist mx_hosts;
};

static void on_timer_closed(uv_handle_t *h)
{
	struct preflight_check *c = h->data;
	strlist_free(&c->patterns);
	strlist_free(&c->mx_hosts);
	free(c);
}

/* Stops everything; the callback runs (once) if refuse_or_accept is given. */
static void finish(struct preflight_check *c, bool call, bool refuse, const char *reason)
{
	if (c->answered)
		return;
	c->answered = true;
	if (c->stsq != NULL)
		mtasts_cancel(c->stsq);
	if (c->nhq != NULL)
		nexthop_cancel(c->nhq);
	c->stsq = NULL;
	c->nhq = NULL;
	if (c->prev != NULL)
		c->prev->next = c->next;
	else
		c->p->checks = c->next;
	if (c->next != NULL)
		c->next->prev = c->prev;
	uv_timer_stop(&c->timer);
	uv_close((uv_handle_t *)&c->timer, on_timer_closed);
	if (call) {
		log_debug("preflight", "domain=%s %s: %s", c->domain, refuse ? "refuse" : "accept",
			  reason);
		c->cb(c->arg, refuse, reason);
	}
}

/* Decides as soon as the answers allow it. */
static void decide(struct preflight_check *c)
{
	char why[300];
	if (c->nh_done) {
		switch (c->nh_status) {
		case NH_NULL_MX:
			finish(c, true, true, "the domain accepts no mail (null MX)");
			return;
		case NH_NXDOMAIN:
		case NH_NODATA:
		case NH_BADNAME:
			finish(c, true, true, "the domain has no mail servers");
			return;
		default:
			break;
		}
	}
	/* Wait for both answers (or the budget), so a null MX or a missing
	 * domain is named as such rather than as "no policy". */
	if (!c->sts_done || !c->nh_done)
		return;
	if (!c->have_policy) {
		if (c->temporary)
			finish(c, true, false, "MTA-STS policy unknown for now");
		else
			finish(c, true, true,
			       "the domain has no MTA-STS policy (REQUIRETLS needs one in enforce mode)");
		return;
	}
	if (c->mode != STS_MODE_ENFORCE) {
		snprintf(why, sizeof(why),
			 "the domain's MTA-STS policy is in %s mode (REQUIRETLS needs enforce)",
			 sts_mode_name(c->mode));
		finish(c, true, true, why);
		return;
	}
	if (c->nh_status != NH_OK) {
		finish(c, true, false, "MX hosts unknown for now");
		return;
	}
	for (size_t i = 0; i < c->mx_hosts.n; i++)
		for (size_t k = 0; k < c->patterns.n; k++)
			if (sts_mx_match(c->patterns.v[k], c->mx_hosts.v[i])) {
				finish(c, true, false, "an MX host matches the enforce policy");
				return;
			}
	finish(c, true, true, "no MX host of the domain matches its MTA-STS policy");
}

static void on_policy(void *arg, const struct sts_result *res)
{
	struct preflight_check *c = arg;
	c->stsq = NULL;
	c->sts_done = true;
	c->have_policy = res->have_policy;
	c->temporary = res->temporary;
	c->mode = res->mode;
	strlist_copy(&c->patterns, res->mx);
	decide(c);
}

static void on_nexthop(void *arg, const struct nexthop *nh)
{
	struct preflight_check *c = arg;
	c->nhq = NULL;
	c->nh_done = true;
	c->nh_status = nh->status;
	for (size_t i = 0; i < nh->nhosts; i++)
		strlist_add(&c->mx_hosts, nh->hosts[i].name);
	decide(c);
}

static void on_timeout(uv_timer_t *t)
{
	struct preflight_check *c = t->data;
	finish(c, true, false, "no answer within preflight_timeout");
}

static void on_immediate(uv_timer_t *t)
{
	struct preflight_check *c = t->data;
	const struct route *r = config_find_route(c->p->cfg, c->domain);
	if (r != NULL) {
		finish(c, true, false, "routed: the route host decides at delivery");
	} else if (c->domain[0] == '[') {
		finish(c, true, true, "an address literal has no MX hosts to validate");
	} else if (c->p->mtasts == NULL) {
		finish(c, true, true, "MTA-STS is off in this relay, so no MX host can be validated");
	} else {
		c->stsq = mtasts_get(c->p->mtasts, c->domain, false, on_policy, c);
		c->nhq = nexthop_resolve(c->p->resolver, c->domain, true, on_nexthop, c);
		uv_timer_start(&c->timer, on_timeout,
			       (uint64_t)c->p->cfg->requiretls.preflight_timeout * 1000u, 0);
	}
}

struct preflight_check *preflight_start(struct preflight *p, const char *domain, preflight_cb *cb,
					void *arg)
{
	struct preflight_check *c = xcalloc(1, sizeof(*c));
	c->p = p;
	snprintf(c->domain, sizeof(c->domain), "%s", domain);
	str_lower(c->domain);
	c->cb = cb;
	c->arg = arg;
	c->next = p->checks;
	if (p->checks != NULL)
		p->checks->prev = c;
	p->checks = c;
	uv_timer_init(p->loop, &c->timer);
	c->timer.data = c;
	/* the first step runs from the loop too: callbacks never re-enter */
	uv_timer_start(&c->timer, on_immediate, 0, 0);
	return c;
}

void preflight_cancel(struct preflight_check *c)
{
	finish(c, false, false, "");
}

struct preflight *preflight_new(uv_loop_t *loop, const struct config *cfg, struct resolver *r,
				struct mtasts *m)
{
	struct preflight *p = xcalloc(1, sizeof(*p));
	p->loop = loop;
	p->cfg = cfg;
	p->resolver = r;
	p->mtasts = m;
	return p;
}

void preflight_set_config(struct preflight *p, const struct config *cfg)
{
	if (p != NULL)
		p->cfg = cfg;
}

void preflight_free(struct preflight *p)
{
	if (p == NULL)
		return;
	while (p->checks != NULL)
		finish(p->checks, true, false, "shutting down");
	free(p);
}
