/* requiretls.c - see requiretls.h */
#include "requiretls.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>

#include "smtp/parse.h"

static int add_domain(struct strlist *l, const char *d, const char *item, char *err, size_t errlen)
{
	if (!smtp_valid_domain(d, false) || d[0] == '[') {
		snprintf(err, errlen, "require_for: \"%s\": \"%s\" is not a domain name", item, d);
		return -1;
	}
	char *copy = xstrdup(d);
	str_lower(copy);
	strlist_add_owned(l, copy);
	return 0;
}

static int parse_item(struct rtls_rules *r, const char *item, char *err, size_t errlen)
{
	if (str_iprefix(item, "user:")) {
		if (item[5] == '\0') {
			snprintf(err, errlen, "require_for: \"%s\": user name missing", item);
			return -1;
		}
		strlist_add(&r->users, item + 5);
		return 0;
	}
	if (str_iprefix(item, "to:"))
		return add_domain(&r->rcpt_domains, item + 3, item, err, errlen);
	/* "from:" may be left out where an '@' makes the meaning plain */
	if (str_iprefix(item, "from:") || strchr(item, '@') != NULL) {
		const char *v = str_iprefix(item, "from:") ? item + 5 : item;
		const char *at = strchr(v, '@');
		if (at == NULL || at == v)
			return add_domain(&r->sender_domains, at == v ? v + 1 : v, item, err, errlen);
		if (!smtp_valid_domain(at + 1, false) || at[1] == '[') {
			snprintf(err, errlen, "require_for: \"%s\": not a sender address", item);
			return -1;
		}
		char *copy = xstrdup(v);
		str_lower(copy);
		strlist_add_owned(&r->senders, copy);
		return 0;
	}
	/* a bare domain name: mail to that domain */
	if (!str_iprefix(item, "net:") && strchr(item, ':') == NULL && strchr(item, '/') == NULL &&
	    smtp_valid_domain(item, false)) {
		unsigned char a[4];
		if (inet_pton(AF_INET, item, a) != 1)
			return add_domain(&r->rcpt_domains, item, item, err, errlen);
	}
	/* "net:CIDR" or a bare address or network (IPv6 ones contain ':') */
	char why[256];
	if (netlist_parse(&r->nets, str_iprefix(item, "net:") ? item + 4 : item, why, sizeof(why)) < 0) {
		snprintf(err, errlen,
			 "require_for: \"%s\": not a network, user:NAME, from:ADDRESS|DOMAIN or to:DOMAIN (%s)",
			 item, why);
		return -1;
	}
	return 0;
}

int rtls_rules_parse(struct rtls_rules *r, const struct strlist *items, char *err, size_t errlen)
{
	for (size_t i = 0; i < items->n; i++)
		if (parse_item(r, items->v[i], err, errlen) < 0)
			return -1;
	return 0;
}

void rtls_rules_free(struct rtls_rules *r)
{
	netlist_free(&r->nets);
	strlist_free(&r->users);
	strlist_free(&r->senders);
	strlist_free(&r->sender_domains);
	strlist_free(&r->rcpt_domains);
}

bool rtls_rules_empty(const struct rtls_rules *r)
{
	return r->nets.n == 0 && r->users.n == 0 && r->senders.n == 0 && r->sender_domains.n == 0 &&
	       r->rcpt_domains.n == 0;
}

bool rtls_rules_match_sender(const struct rtls_rules *r, const char *client_addr,
			     const char *auth_user, const char *sender, char *why, size_t whylen)
{
	if (sender == NULL || sender[0] == '\0')
		return false; /* null return path: RFC 8689 4.2.1 does not apply */
	if (client_addr != NULL && client_addr[0] != '\0' && netlist_match_str(&r->nets, client_addr)) {
		snprintf(why, whylen, "client network (%s)", client_addr);
		return true;
	}
	if (auth_user != NULL && auth_user[0] != '\0') {
		for (size_t i = 0; i < r->users.n; i++) {
			if (strcmp(r->users.v[i], auth_user) == 0) {
				snprintf(why, whylen, "user %s", auth_user);
				return true;
			}
		}
	}
	if (strlist_contains_ci(&r->senders, sender)) {
		snprintf(why, whylen, "sender %s", sender);
		return true;
	}
	const char *at = strrchr(sender, '@');
	if (at != NULL && strlist_contains_ci(&r->sender_domains, at + 1)) {
		snprintf(why, whylen, "sender domain %s", at + 1);
		return true;
	}
	return false;
}

bool rtls_rules_match_rcpt(const struct rtls_rules *r, const char *domain, char *why,
			   size_t whylen)
{
	if (strlist_contains_ci(&r->rcpt_domains, domain)) {
		snprintf(why, whylen, "recipient domain %s", domain);
		return true;
	}
	return false;
}
