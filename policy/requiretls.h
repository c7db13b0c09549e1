/*
 * requiretls.h - [requiretls] require_for: operator rules that handle mail
 * as REQUIRETLS on behalf of senders that cannot say so themselves (most
 * SMTP libraries, swaks). Pure.
 *
 * Items of the list (comma separated), case-insensitive prefixes:
 *   10.0.0.0/8, 192.0.2.7, ::1        a client network (bare address = one host)
 *   net:10.0.0.0/8                    the same, explicitly
 *   user:alice                        an authenticated user (SMTP AUTH)
 *   from:alice@example.org            a sender address ("from:" optional)
 *   from:@example.org, from:example.org   every sender in that domain (@example.org too)
 *   to:example.com, example.com       mail to a recipient in that domain
 * A message matching any item is tagged MSG_REQUIRETLS_RULE and then handled
 * exactly like one whose MAIL FROM carried REQUIRETLS. A null sender is
 * never tagged (RFC 8689 4.2.1 applies only to a non-empty return path).
 */
#ifndef STRICTRELAY_POLICY_REQUIRETLS_H
#define STRICTRELAY_POLICY_REQUIRETLS_H

#include <stdbool.h>
#include <stddef.h>

#include "mta/netaddr.h"
#include "mta/util.h"

struct rtls_rules {
	struct netlist nets;
	struct strlist users;
	struct strlist senders;         /* addresses, lower case */
	struct strlist sender_domains;  /* lower case */
	struct strlist rcpt_domains;    /* lower case */
};

/* 0, or -1 with err naming the bad item. Appends to r. */
int rtls_rules_parse(struct rtls_rules *r, const struct strlist *items, char *err, size_t errlen);
void rtls_rules_free(struct rtls_rules *r);
bool rtls_rules_empty(const struct rtls_rules *r);

/*
 * Whether mail from this client/user/sender must be REQUIRETLS whatever its
 * recipients: why says which item matched ("network 10.0.0.0/8").
 */
bool rtls_rules_match_sender(const struct rtls_rules *r, const char *client_addr,
			     const char *auth_user, const char *sender, char *why, size_t whylen);

/* Whether mail to this recipient domain must be REQUIRETLS. */
bool rtls_rules_match_rcpt(const struct rtls_rules *r, const char *domain, char *why,
			   size_t whylen);

#endif
