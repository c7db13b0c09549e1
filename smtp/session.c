/* session.c - see session.h */
#include "session.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "mta/log.h"
#include "smtp/parse.h"

#define DEFAULT_MAX_ERRORS 20
/* RCPTs past max_recipients answered 452 before each one counts as an
 * error (Postfix's smtpd_recipient_overshoot_limit): a client that goes on
 * that long is not going to send the rest in a later transaction. */
#define MAX_EXCESS_RECIPIENTS 1000
/* NOOP, RSET, VRFY and HELP since the last accepted message before each
 * one counts as an error (Postfix's smtpd_junk_command_limit): they cost a
 * client nothing and would otherwise keep a connection slot forever. */
#define MAX_JUNK_COMMANDS 100
#define MAX_RECEIVED_HEADERS 100 /* loop detection (RFC 5321 6.3) */
#define MAX_HELO 255

static const char *const state_names[] = {
	[SMTP_STATE_CONNECTED] = "connected", [SMTP_STATE_READY] = "ready",
	[SMTP_STATE_MAIL] = "mail",           [SMTP_STATE_RCPT] = "rcpt",
	[SMTP_STATE_DATA] = "data",           [SMTP_STATE_QUEUEING] = "queueing",
	[SMTP_STATE_CLOSED] = "closed",
};

const char *smtp_state_name(enum smtp_state st)
{
	return state_names[st];
}

static void session_set_state(struct smtp_session *s, enum smtp_state st)
{
	if (s->state != st)
		log_debug("smtpd", "client=%s state %s -> %s", s->client_addr,
			  state_names[s->state], state_names[st]);
	s->state = st;
}

static void reply(struct buf *out, const char *fmt, ...) SR_PRINTF(2, 3);
static void reply(struct buf *out, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	buf_vprintf(out, fmt, ap);
	va_end(ap);
	buf_append(out, "\r\n", 2);
}

void smtp_session_init(struct smtp_session *s, const struct smtp_session_config *cfg,
		       const char *client_addr, bool client_trusted)
{
	memset(s, 0, sizeof(*s));
	s->cfg = cfg;
	snprintf(s->client_addr, sizeof(s->client_addr), "%s", client_addr);
	s->client_trusted = client_trusted;
	s->state = SMTP_STATE_CONNECTED;
	buf_init(&s->message, 0);
}

static void transaction_reset(struct smtp_session *s)
{
	free(s->sender);
	s->sender = NULL;
	free(s->pending_rcpt);
	s->pending_rcpt = NULL;
	free(s->pending_orcpt);
	s->pending_orcpt = NULL;
	strlist_free(&s->notify);
	strlist_free(&s->orcpt);
	free(s->ret);
	s->ret = NULL;
	free(s->envid);
	s->envid = NULL;
	s->rtls_rule = false;
	s->rtls_why[0] = '\0';
	s->qid[0] = '\0';
	s->flags = 0;
	strlist_free(&s->rcpts);
	buf_free(&s->message);
	if (s->ready != NULL) {
		queued_message_free(s->ready);
		free(s->ready);
		s->ready = NULL;
	}
	if (s->state == SMTP_STATE_MAIL || s->state == SMTP_STATE_RCPT ||
	    s->state == SMTP_STATE_DATA || s->state == SMTP_STATE_QUEUEING)
		session_set_state(s, SMTP_STATE_READY);
}

static void auth_wipe(struct smtp_session *s)
{
	OPENSSL_cleanse(s->auth_pass, sizeof(s->auth_pass));
	s->auth_name[0] = '\0';
}

void smtp_session_free(struct smtp_session *s)
{
	auth_wipe(s);
	transaction_reset(s);
	free(s->helo);
	s->helo = NULL;
}

void smtp_session_greeting(struct smtp_session *s, struct buf *out)
{
	reply(out, "220 %s ESMTP strictrelay", s->cfg->hostname);
}

/* Counts a client error; after too many the session ends. */
static enum smtp_action client_error(struct smtp_session *s, struct buf *out)
{
	unsigned max = s->cfg->max_errors ? s->cfg->max_errors : DEFAULT_MAX_ERRORS;
	if (++s->errors < max)
		return SMTP_ACT_NONE;
	log_warn("smtpd", "client=%s too many errors (%u), disconnecting", s->client_addr,
		 s->errors);
	reply(out, "421 4.7.0 %s Too many errors; closing connection", s->cfg->hostname);
	session_set_state(s, SMTP_STATE_CLOSED);
	return SMTP_ACT_CLOSE;
}

/* After its reply: a command that moves no mail. Past MAX_JUNK_COMMANDS
 * since the last accepted message, each one counts as an error. */
static enum smtp_action junk_command(struct smtp_session *s, struct buf *out)
{
	if (++s->junk_commands <= MAX_JUNK_COMMANDS)
		return SMTP_ACT_NONE;
	if (s->junk_commands == MAX_JUNK_COMMANDS + 1)
		log_info("smtpd", "client=%s %d NOOP/RSET/VRFY/HELP without a message: counting each further one as an error",
			 s->client_addr, MAX_JUNK_COMMANDS);
	return client_error(s, out);
}

/* Keeps printable ASCII; anything else becomes '?', so the value is safe in
 * a Received: header. */
static char *sanitize_helo(const char *arg)
{
	size_t n = strlen(arg);
	if (n > MAX_HELO)
		n = MAX_HELO;
	char *h = xstrndup(arg, n);
	for (char *p = h; *p != '\0'; p++)
		if ((unsigned char)*p <= ' ' || (unsigned char)*p >= 0x7f || *p == '(' ||
		    *p == ')' || *p == ';')
			*p = '?';
	return h;
}

static void do_helo(struct smtp_session *s, struct smtp_cmd *cmd, bool esmtp, struct buf *out)
{
	transaction_reset(s);
	free(s->helo);
	s->helo = sanitize_helo(cmd->arg);
	s->esmtp = esmtp;
	session_set_state(s, SMTP_STATE_READY);
	if (!esmtp) {
		reply(out, "250 %s", s->cfg->hostname);
		return;
	}
	reply(out, "250-%s greets %s [%s]", s->cfg->hostname, s->helo, s->client_addr);
	reply(out, "250-PIPELINING");
	reply(out, "250-SIZE %llu", (unsigned long long)s->cfg->max_message_size);
	reply(out, "250-8BITMIME");
	reply(out, "250-ENHANCEDSTATUSCODES");
	reply(out, "250-DSN");
	if (s->cfg->tls_available && !s->tls)
		reply(out, "250-STARTTLS");
	/* RFC 8689: REQUIRETLS only on a TLS session. */
	if (s->tls)
		reply(out, "250-REQUIRETLS");
	/* RFC 4954 4: AUTH only where the password cannot be sniffed. */
	if (s->tls && s->cfg->auth_available && s->auth_user[0] == '\0')
		reply(out, "250-AUTH PLAIN LOGIN");
	reply(out, "250 SMTPUTF8");
}

/* RFC 1870: size-value = 1*20DIGIT. A 20-digit value may exceed 64 bits: it
 * is still valid syntax, so it saturates (and is refused as too big). */
static bool parse_size(const char *v, uint64_t *out)
{
	uint64_t n = 0;
	if (v == NULL || *v == '\0' || strlen(v) > 20)
		return false;
	for (; *v != '\0'; v++) {
		if (*v < '0' || *v > '9')
			return false;
		unsigned d = (unsigned)(*v - '0');
		if (n > (UINT64_MAX - d) / 10)
			n = UINT64_MAX;
		else
			n = n * 10 + d;
	}
	*out = n;
	return true;
}

static bool seen_param(const struct smtp_cmd *cmd, size_t upto, const char *key)
{
	for (size_t i = 0; i < upto; i++)
		if (str_ieq(cmd->params[i].key, key))
			return true;
	return false;
}

static enum smtp_action do_mail(struct smtp_session *s, struct smtp_cmd *cmd, struct buf *out)
{
	if (s->state == SMTP_STATE_CONNECTED) {
		reply(out, "503 5.5.1 Send EHLO or HELO first");
		return client_error(s, out);
	}
	if (s->state != SMTP_STATE_READY) {
		reply(out, "503 5.5.1 Nested MAIL command");
		return client_error(s, out);
	}
	if (s->cfg->submission && s->auth_user[0] == '\0') {
		if (!s->tls)
			reply(out, "530 5.7.0 Must issue a STARTTLS command first");
		else
			reply(out, "530 5.7.0 Authentication required");
		return client_error(s, out);
	}
	if (!s->esmtp && cmd->nparams > 0) {
		/* Service extensions exist only after EHLO (RFC 5321 4.1.1.1). */
		reply(out, "555 5.5.4 MAIL parameters need EHLO, not HELO");
		return client_error(s, out);
	}
	uint32_t flags = 0;
	uint64_t size = 0; /* SIZE=, 0 when not given */
	const char *ret = "", *envid = "";
	for (size_t i = 0; i < cmd->nparams; i++) {
		const struct smtp_param *p = &cmd->params[i];
		if (seen_param(cmd, i, p->key)) {
			reply(out, "501 5.5.4 Duplicate parameter %s", p->key);
			return client_error(s, out);
		}
		if (str_ieq(p->key, "SIZE")) {
			if (!parse_size(p->value, &size)) {
				reply(out, "501 5.5.4 Bad SIZE value");
				return client_error(s, out);
			}
			if (size > s->cfg->max_message_size) {
				reply(out, "552 5.3.4 Message size exceeds fixed maximum message size (%llu)",
				      (unsigned long long)s->cfg->max_message_size);
				return SMTP_ACT_NONE;
			}
		} else if (str_ieq(p->key, "BODY")) {
			if (p->value != NULL && str_ieq(p->value, "8BITMIME")) {
				flags |= MSG_BODY_8BITMIME;
			} else if (p->value == NULL || !str_ieq(p->value, "7BIT")) {
				reply(out, "501 5.5.4 BODY must be 7BIT or 8BITMIME");
				return client_error(s, out);
			}
		} else if (str_ieq(p->key, "SMTPUTF8")) {
			if (p->value != NULL) {
				reply(out, "501 5.5.4 SMTPUTF8 takes no value");
				return client_error(s, out);
			}
			flags |= MSG_SMTPUTF8;
		} else if (str_ieq(p->key, "RET")) {
			/* RFC 3461 4.3 */
			if (p->value == NULL || !(str_ieq(p->value, "FULL") || str_ieq(p->value, "HDRS"))) {
				reply(out, "501 5.5.4 RET must be FULL or HDRS");
				return client_error(s, out);
			}
			ret = str_ieq(p->value, "FULL") ? "FULL" : "HDRS";
		} else if (str_ieq(p->key, "ENVID")) {
			/* RFC 3461 4.4: xtext, at most 100 characters */
			if (p->value == NULL || strlen(p->value) > 100 || !smtp_valid_xtext(p->value)) {
				reply(out, "501 5.5.4 Bad ENVID (xtext of at most 100 characters)");
				return client_error(s, out);
			}
			envid = p->value;
		} else if (str_ieq(p->key, "AUTH") && s->cfg->auth_available) {
			/* RFC 4954 5: AUTH=<> or AUTH=xtext from an authenticated
			 * client. We record who authenticated ourselves, so the
			 * value is checked for syntax and otherwise ignored. */
			if (p->value == NULL ||
			    (strcmp(p->value, "<>") != 0 &&
			     (strlen(p->value) > 500 || !smtp_valid_xtext(p->value)))) {
				reply(out, "501 5.5.4 Bad AUTH parameter (<> or xtext)");
				return client_error(s, out);
			}
		} else if (str_ieq(p->key, "REQUIRETLS")) {
			/* RFC 8689 section 4: only valid on a TLS session, where we
			 * advertised it. 5.7.10 = Encryption needed. */
			if (!s->tls) {
				reply(out, "530 5.7.10 REQUIRETLS needs a TLS session: issue STARTTLS first");
				return client_error(s, out);
			}
			if (p->value != NULL) {
				reply(out, "501 5.5.4 REQUIRETLS takes no value");
				return client_error(s, out);
			}
			flags |= MSG_REQUIRETLS;
		} else {
			reply(out, "555 5.5.4 Unsupported parameter %s", p->key);
			return client_error(s, out);
		}
	}
	if (cmd->path.has_utf8 && !(flags & MSG_SMTPUTF8)) {
		reply(out, "553 5.6.7 Non-ASCII sender address needs the SMTPUTF8 parameter");
		return client_error(s, out);
	}
	if (s->auth_user[0] == '\0' && s->client_trusted && cmd->path.domain[0] != '\0' &&
	    s->cfg->sender_domains != NULL && s->cfg->sender_domains->n > 0 &&
	    !strlist_contains_ci(s->cfg->sender_domains, cmd->path.domain)) {
		char q[300];
		log_warn("smtpd", "client=%s sender refused from=<%s>: domain not in [server] sender_domains",
			 s->client_addr, str_quote(q, sizeof(q), cmd->path.addr));
		reply(out, "553 5.7.1 <%s>: Sender address rejected: this relay does not send mail from %s",
		      cmd->path.addr, cmd->path.domain);
		return SMTP_ACT_NONE;
	}
	if (s->cfg->space_available != NULL && !s->cfg->space_available(s->cfg->hook_arg, size)) {
		reply(out, "452 4.3.1 Insufficient system storage; try again later");
		return SMTP_ACT_NONE;
	}
	if (s->cfg->message_allowed != NULL &&
	    !s->cfg->message_allowed(s->cfg->hook_arg, s->client_addr)) {
		log_warn("smtpd", "client=%s message rate limit reached", s->client_addr);
		reply(out, "450 4.7.1 Too many messages from [%s] (or its network) in the last minute; try again later",
		      s->client_addr);
		return SMTP_ACT_NONE;
	}
	s->flags = flags;
	s->sender = xstrdup(cmd->path.addr);
	s->ret = xstrdup(ret);
	s->envid = xstrdup(envid);
	/* [requiretls] require_for: the client, user or sender may make this
	 * transaction REQUIRETLS whatever the MAIL FROM said. */
	if (s->cfg->requiretls_rules != NULL && !(flags & MSG_REQUIRETLS))
		s->rtls_rule = rtls_rules_match_sender(s->cfg->requiretls_rules, s->client_addr,
						       s->auth_user, s->sender, s->rtls_why,
						       sizeof(s->rtls_why));
	if (s->cfg->new_qid != NULL)
		s->cfg->new_qid(s->qid);
	else
		qid_generate(s->qid);
	session_set_state(s, SMTP_STATE_MAIL);
	reply(out, "250 2.1.0 Sender <%s> OK", s->sender);
	return SMTP_ACT_NONE;
}

static bool accepted_domain(const struct smtp_session *s, const char *domain)
{
	return s->cfg->accept_domains != NULL && strlist_contains_ci(s->cfg->accept_domains, domain);
}

static void add_rcpt(struct smtp_session *s, const char *addr, const char *notify,
		     const char *orcpt, struct buf *out)
{
	/* The same recipient twice is delivered once (with the first one's
	 * DSN parameters). */
	bool dup = false;
	for (size_t i = 0; i < s->rcpts.n; i++)
		if (strcmp(s->rcpts.v[i], addr) == 0)
			dup = true;
	if (!dup) {
		strlist_add(&s->rcpts, addr);
		strlist_add(&s->notify, notify);
		strlist_add(&s->orcpt, orcpt);
	}
	session_set_state(s, SMTP_STATE_RCPT);
	reply(out, "250 2.1.5 Recipient <%s> OK", addr);
}

static enum smtp_action do_rcpt(struct smtp_session *s, struct smtp_cmd *cmd, struct buf *out)
{
	if (s->state != SMTP_STATE_MAIL && s->state != SMTP_STATE_RCPT) {
		reply(out, "503 5.5.1 Need MAIL before RCPT");
		return client_error(s, out);
	}
	char notify[40] = "";
	const char *orcpt = "";
	for (size_t i = 0; i < cmd->nparams; i++) {
		const struct smtp_param *p = &cmd->params[i];
		if (seen_param(cmd, i, p->key)) {
			reply(out, "501 5.5.4 Duplicate parameter %s", p->key);
			return client_error(s, out);
		}
		if (str_ieq(p->key, "NOTIFY")) {
			if (p->value == NULL || smtp_parse_notify(p->value, notify, sizeof(notify)) < 0) {
				reply(out, "501 5.5.4 NOTIFY must be NEVER or a list of SUCCESS, FAILURE, DELAY");
				return client_error(s, out);
			}
		} else if (str_ieq(p->key, "ORCPT")) {
			/* RFC 3461 4.2: addr-type ";" xtext */
			const char *semi = p->value ? strchr(p->value, ';') : NULL;
			if (semi == NULL || semi == p->value || strlen(p->value) > 500 ||
			    !smtp_valid_xtext(semi + 1)) {
				reply(out, "501 5.5.4 Bad ORCPT (addr-type;xtext)");
				return client_error(s, out);
			}
			orcpt = p->value;
		} else {
			reply(out, "555 5.5.4 Unsupported parameter %s", p->key);
			return client_error(s, out);
		}
	}
	if (cmd->path.addr[0] == '\0') {
		reply(out, "501 5.1.3 Bad recipient address syntax: empty address");
		return client_error(s, out);
	}
	/* RFC 5321 4.5.1: "<Postmaster>" without a domain must be accepted,
	 * from anyone; this relay has no mailboxes, so it goes on to
	 * [server] postmaster when that is set. */
	bool postmaster = false;
	char pm[SMTP_MAX_PATH + 1];
	if (cmd->path.domain[0] == '\0') {
		const char *to = s->cfg->postmaster;
		bool is_pm = str_ieq(cmd->path.addr, "postmaster");
		if (!is_pm || to == NULL || to[0] == '\0') {
			if (is_pm)
				log_info("smtpd", "id=%s client=%s RCPT <postmaster> refused: [server] postmaster is not set",
					 s->qid, s->client_addr);
			reply(out, "550 5.1.1 <%s>: this relay has no local mailboxes; use an address with a domain",
			      cmd->path.addr);
			return SMTP_ACT_NONE;
		}
		snprintf(pm, sizeof(pm), "%s", to);
		log_info("smtpd", "id=%s client=%s RCPT <postmaster> goes to <%s> ([server] postmaster)",
			 s->qid, s->client_addr, pm);
		cmd->path.addr = pm;
		cmd->path.domain = strrchr(pm, '@') + 1; /* validated: local@domain */
		postmaster = true;
	}
	if (cmd->path.has_utf8 && !(s->flags & MSG_SMTPUTF8)) {
		reply(out, "553 5.6.7 Non-ASCII recipient address needs SMTPUTF8 in MAIL FROM");
		return client_error(s, out);
	}
	if (!postmaster && !s->client_trusted && s->auth_user[0] == '\0' &&
	    !accepted_domain(s, cmd->path.domain)) {
		char from[300], to[300];
		log_warn("smtpd", "id=%s client=%s relay denied from=<%s> to=<%s>", s->qid,
			 s->client_addr, s->sender[0] ? str_quote(from, sizeof(from), s->sender) : "",
			 str_quote(to, sizeof(to), cmd->path.addr));
		reply(out, "554 5.7.1 <%s>: Relay access denied", cmd->path.addr);
		return SMTP_ACT_NONE;
	}
	if (s->rcpts.n >= s->cfg->max_recipients) {
		reply(out, "452 4.5.3 Too many recipients");
		if (++s->excess_rcpts > MAX_EXCESS_RECIPIENTS)
			return client_error(s, out);
		return SMTP_ACT_NONE;
	}
	bool rcpt_rule = false;
	char why[160] = "";
	if (s->cfg->requiretls_rules != NULL && !(s->flags & MSG_REQUIRETLS) && !s->rtls_rule &&
	    s->sender[0] != '\0')
		rcpt_rule = rtls_rules_match_rcpt(s->cfg->requiretls_rules, cmd->path.domain, why,
						  sizeof(why));
	if (rcpt_rule) {
		/* one recipient's domain makes the whole message REQUIRETLS */
		s->rtls_rule = true;
		snprintf(s->rtls_why, sizeof(s->rtls_why), "%s", why);
	}
	bool requiretls = ((s->flags & MSG_REQUIRETLS) || s->rtls_rule) && s->sender[0] != '\0';
	if (requiretls && s->cfg->requiretls_preflight) {
		s->pending_rcpt = xstrdup(cmd->path.addr);
		snprintf(s->pending_notify, sizeof(s->pending_notify), "%s", notify);
		s->pending_orcpt = xstrdup(orcpt);
		return SMTP_ACT_RCPT_CHECK;
	}
	add_rcpt(s, cmd->path.addr, notify, orcpt, out);
	return SMTP_ACT_NONE;
}

const char *smtp_session_pending_domain(const struct smtp_session *s)
{
	const char *at = s->pending_rcpt ? strrchr(s->pending_rcpt, '@') : NULL;
	return at ? at + 1 : "";
}

void smtp_session_rcpt_checked(struct smtp_session *s, bool refuse, const char *reason,
			       struct buf *out)
{
	char *rcpt = s->pending_rcpt;
	s->pending_rcpt = NULL;
	if (rcpt == NULL)
		return;
	if (refuse) {
		char q[300];
		log_info("smtpd", "id=%s client=%s requiretls preflight refused to=<%s>: %s", s->qid,
			 s->client_addr, str_quote(q, sizeof(q), rcpt), reason);
		reply(out, "550 5.7.30 <%s>: REQUIRETLS cannot be satisfied: %s", rcpt, reason);
	} else {
		add_rcpt(s, rcpt, s->pending_notify, s->pending_orcpt ? s->pending_orcpt : "", out);
	}
	free(rcpt);
	free(s->pending_orcpt);
	s->pending_orcpt = NULL;
}

static enum smtp_action do_data(struct smtp_session *s, struct buf *out)
{
	if (s->state == SMTP_STATE_MAIL) {
		reply(out, "554 5.5.1 No valid recipients");
		return client_error(s, out);
	}
	if (s->state != SMTP_STATE_RCPT) {
		reply(out, "503 5.5.1 Need MAIL and RCPT before DATA");
		return client_error(s, out);
	}
	smtp_data_init(&s->data, s->cfg->max_message_size, s->cfg->normalize_bare_newlines);
	buf_reset(&s->message);
	session_set_state(s, SMTP_STATE_DATA);
	reply(out, "354 End data with <CR><LF>.<CR><LF>");
	return SMTP_ACT_DATA;
}

static enum smtp_action do_starttls(struct smtp_session *s, struct buf *out)
{
	if (!s->cfg->tls_available) {
		reply(out, "502 5.5.1 STARTTLS not available");
		return client_error(s, out);
	}
	if (s->tls) {
		reply(out, "503 5.5.1 TLS already active");
		return client_error(s, out);
	}
	if (s->state == SMTP_STATE_MAIL || s->state == SMTP_STATE_RCPT) {
		reply(out, "503 5.5.1 MAIL transaction in progress");
		return client_error(s, out);
	}
	reply(out, "220 2.0.0 Ready to start TLS");
	return SMTP_ACT_STARTTLS;
}

/* --- SMTP AUTH (RFC 4954) ---------------------------------------------- */

static enum smtp_action auth_fail_syntax(struct smtp_session *s, enum sasl_status st,
					 struct buf *out)
{
	auth_wipe(s);
	s->auth_step = SMTP_AUTH_NONE;
	if (st == SASL_BAD_BASE64)
		reply(out, "501 5.5.2 Cannot decode the response (base64)");
	else if (st == SASL_AUTHZID)
		reply(out, "535 5.7.8 Authentication credentials invalid (authorization identity not allowed)");
	else
		reply(out, "501 5.5.2 Malformed authentication response");
	return client_error(s, out);
}

/* Both credentials are known: hand them to the I/O layer. */
static enum smtp_action auth_check(struct smtp_session *s)
{
	s->auth_step = SMTP_AUTH_CHECKING;
	return SMTP_ACT_AUTH_CHECK;
}

static enum smtp_action auth_response(struct smtp_session *s, const char *line, struct buf *out)
{
	if (strcmp(line, "*") == 0) {
		auth_wipe(s);
		s->auth_step = SMTP_AUTH_NONE;
		reply(out, "501 5.0.0 Authentication cancelled");
		return client_error(s, out);
	}
	enum sasl_status st;
	switch (s->auth_step) {
	case SMTP_AUTH_PLAIN:
		st = sasl_plain_decode(line, s->auth_name, s->auth_pass);
		if (st != SASL_OK)
			return auth_fail_syntax(s, st, out);
		return auth_check(s);
	case SMTP_AUTH_LOGIN_USER:
		st = sasl_login_decode(line, s->auth_name, 1);
		if (st != SASL_OK)
			return auth_fail_syntax(s, st, out);
		s->auth_step = SMTP_AUTH_LOGIN_PASS;
		reply(out, "334 UGFzc3dvcmQ6"); /* "Password:" */
		return SMTP_ACT_NONE;
	case SMTP_AUTH_LOGIN_PASS:
		st = sasl_login_decode(line, s->auth_pass, 0);
		if (st != SASL_OK)
			return auth_fail_syntax(s, st, out);
		return auth_check(s);
	default:
		return SMTP_ACT_NONE;
	}
}

static enum smtp_action do_auth(struct smtp_session *s, struct smtp_cmd *cmd, struct buf *out)
{
	if (!s->cfg->auth_available) {
		reply(out, "502 5.5.1 AUTH not available on this port");
		return client_error(s, out);
	}
	if (!s->tls) {
		reply(out, "538 5.7.11 Encryption required for requested authentication mechanism");
		return client_error(s, out);
	}
	if (!s->esmtp) {
		reply(out, "503 5.5.1 Send EHLO first");
		return client_error(s, out);
	}
	if (s->auth_user[0] != '\0') {
		reply(out, "503 5.5.1 Already authenticated");
		return client_error(s, out);
	}
	if (s->state != SMTP_STATE_READY) {
		reply(out, "503 5.5.1 AUTH not allowed during a mail transaction");
		return client_error(s, out);
	}
	/* "AUTH mechanism [initial-response]" */
	char *mech = cmd->arg;
	char *resp = mech;
	while (*resp != '\0' && *resp != ' ')
		resp++;
	if (*resp == ' ') {
		*resp++ = '\0';
		while (*resp == ' ')
			resp++;
	}
	if (*mech == '\0') {
		reply(out, "501 5.5.4 AUTH needs a mechanism (PLAIN or LOGIN)");
		return client_error(s, out);
	}
	if (str_ieq(mech, "PLAIN")) {
		s->auth_step = SMTP_AUTH_PLAIN;
		if (*resp == '\0') {
			reply(out, "334 ");
			return SMTP_ACT_NONE;
		}
		/* RFC 4954 4: "=" is an empty initial response */
		return auth_response(s, strcmp(resp, "=") == 0 ? "" : resp, out);
	}
	if (str_ieq(mech, "LOGIN")) {
		s->auth_step = SMTP_AUTH_LOGIN_USER;
		if (*resp == '\0') {
			reply(out, "334 VXNlcm5hbWU6"); /* "Username:" */
			return SMTP_ACT_NONE;
		}
		return auth_response(s, resp, out);
	}
	reply(out, "504 5.5.4 Unrecognized authentication type (use PLAIN or LOGIN)");
	return client_error(s, out);
}

const char *smtp_session_auth_user(const struct smtp_session *s)
{
	return s->auth_name;
}

const char *smtp_session_auth_password(const struct smtp_session *s)
{
	return s->auth_pass;
}

void smtp_session_auth_checked(struct smtp_session *s, enum smtp_auth_result result,
			       struct buf *out)
{
	if (s->auth_step != SMTP_AUTH_CHECKING)
		return;
	s->auth_step = SMTP_AUTH_NONE;
	char q[300];
	str_quote(q, sizeof(q), s->auth_name);
	switch (result) {
	case SMTP_AUTH_OK:
		snprintf(s->auth_user, sizeof(s->auth_user), "%s", s->auth_name);
		log_info("smtpd", "client=%s auth=ok user=%s", s->client_addr, q);
		reply(out, "235 2.7.0 Authentication successful");
		break;
	case SMTP_AUTH_FAILED:
		log_warn("smtpd", "client=%s auth=failed user=%s", s->client_addr, q);
		reply(out, "535 5.7.8 Authentication credentials invalid");
		auth_wipe(s);
		(void)client_error(s, out);
		return;
	case SMTP_AUTH_LOCKED:
		log_warn("smtpd", "client=%s auth=locked user=%s: too many failed attempts from this address",
			 s->client_addr, q);
		reply(out, "421 4.7.0 %s Too many failed authentication attempts; try again later",
		      s->cfg->hostname);
		session_set_state(s, SMTP_STATE_CLOSED);
		break;
	case SMTP_AUTH_TEMPFAIL:
		log_warn("smtpd", "client=%s auth=tempfail user=%s", s->client_addr, q);
		reply(out, "454 4.7.0 Temporary authentication failure");
		break;
	}
	auth_wipe(s);
}

static void do_help(struct buf *out)
{
	reply(out, "214-2.0.0 strictrelay: an SMTP relay that enforces transport security");
	reply(out, "214-2.0.0 Commands: EHLO HELO STARTTLS AUTH MAIL RCPT DATA RSET NOOP VRFY HELP QUIT");
	reply(out, "214-2.0.0 MAIL FROM:<address> [SIZE=n] [BODY=8BITMIME] [SMTPUTF8] [REQUIRETLS] [RET=FULL|HDRS] [ENVID=x]");
	reply(out, "214 2.0.0 RCPT TO:<address> [NOTIFY=NEVER|SUCCESS,FAILURE,DELAY] [ORCPT=rfc822;x]");
}

static enum smtp_action parse_error(struct smtp_session *s, enum smtp_parse_status st,
				    const struct smtp_cmd *cmd, struct buf *out)
{
	switch (st) {
	case SMTP_PARSE_UNKNOWN_VERB:
		reply(out, "500 5.5.1 Command unrecognized");
		break;
	case SMTP_PARSE_BAD_PATH:
		if (cmd->verb == SMTP_VERB_MAIL)
			reply(out, "501 5.1.7 Bad sender address syntax: %s", cmd->detail);
		else
			reply(out, "501 5.1.3 Bad recipient address syntax: %s", cmd->detail);
		break;
	case SMTP_PARSE_BAD_PARAM:
		reply(out, "501 5.5.4 Syntax error in parameters: %s", cmd->detail);
		break;
	default:
		reply(out, "501 5.5.2 Syntax error: %s", cmd->detail ? cmd->detail : "bad command");
		break;
	}
	return client_error(s, out);
}

enum smtp_action smtp_session_command(struct smtp_session *s, char *line, struct buf *out)
{
	if (s->state == SMTP_STATE_CLOSED)
		return SMTP_ACT_CLOSE;
	if (s->auth_step == SMTP_AUTH_PLAIN || s->auth_step == SMTP_AUTH_LOGIN_USER ||
	    s->auth_step == SMTP_AUTH_LOGIN_PASS)
		return auth_response(s, line, out);
	struct smtp_cmd cmd;
	enum smtp_parse_status st = smtp_parse_command(line, &cmd);
	if (st != SMTP_PARSE_OK)
		return parse_error(s, st, &cmd, out);
	switch (cmd.verb) {
	case SMTP_VERB_EHLO:
		do_helo(s, &cmd, true, out);
		return SMTP_ACT_NONE;
	case SMTP_VERB_HELO:
		do_helo(s, &cmd, false, out);
		return SMTP_ACT_NONE;
	case SMTP_VERB_MAIL:
		return do_mail(s, &cmd, out);
	case SMTP_VERB_RCPT:
		return do_rcpt(s, &cmd, out);
	case SMTP_VERB_DATA:
		return do_data(s, out);
	case SMTP_VERB_RSET:
		transaction_reset(s);
		reply(out, "250 2.0.0 Ok");
		return junk_command(s, out);
	case SMTP_VERB_NOOP:
		reply(out, "250 2.0.0 Ok");
		return junk_command(s, out);
	case SMTP_VERB_QUIT:
		reply(out, "221 2.0.0 Bye");
		session_set_state(s, SMTP_STATE_CLOSED);
		return SMTP_ACT_CLOSE;
	case SMTP_VERB_HELP:
		do_help(out);
		return junk_command(s, out);
	case SMTP_VERB_VRFY:
		reply(out, "252 2.5.0 Cannot VRFY user, but will accept message and attempt delivery");
		return junk_command(s, out);
	case SMTP_VERB_STARTTLS:
		return do_starttls(s, out);
	case SMTP_VERB_AUTH:
		return do_auth(s, &cmd, out);
	case SMTP_VERB_EXPN:
	case SMTP_VERB_BDAT:
	case SMTP_VERB_ETRN:
	case SMTP_VERB_TURN:
		reply(out, "502 5.5.1 %s not implemented", smtp_verb_name(cmd.verb));
		return client_error(s, out);
	case SMTP_VERB_UNKNOWN:
		break;
	}
	return parse_error(s, SMTP_PARSE_UNKNOWN_VERB, &cmd, out);
}

enum smtp_action smtp_session_line_too_long(struct smtp_session *s, struct buf *out)
{
	reply(out, "500 5.5.2 Line too long");
	return client_error(s, out);
}

/* --- end of data --------------------------------------------------------- */

/* RFC 8689 5: "TLS-Required:" [FWS] "No" CRLF, the ABNF literal matching
 * in any case; v is the unfolded field value. */
static bool tls_required_no_value(const char *v, size_t n)
{
	size_t i = 0;
	while (i < n && (v[i] == ' ' || v[i] == '\t'))
		i++;
	if (n - i < 2 || !str_iprefix(v + i, "no"))
		return false;
	for (i += 2; i < n; i++)
		if (v[i] != ' ' && v[i] != '\t')
			return false;
	return true;
}

/*
 * Looks at the header section (up to the first empty line): counts
 * Received: fields and finds "TLS-Required: No". Folded fields (a line
 * starting with a blank continues the previous one) are unfolded first.
 */
static void scan_headers(const char *msg, size_t len, unsigned *received, bool *tls_required_no)
{
	*received = 0;
	*tls_required_no = false;
	struct buf field;
	buf_init(&field, 0);
	size_t i = 0;
	for (;;) {
		const char *line = msg + i;
		const char *eol = i < len ? memchr(line, '\n', len - i) : NULL;
		size_t n = eol ? (size_t)(eol - line) + 1 : len - i;
		size_t text = n;
		while (text > 0 && (line[text - 1] == '\n' || line[text - 1] == '\r'))
			text--;
		bool continuation = i < len && text > 0 && (line[0] == ' ' || line[0] == '\t');
		if (!continuation && field.len > 0) {
			/* one complete (unfolded) field */
			if (str_iprefix(field.data, "Received:"))
				(*received)++;
			else if (str_iprefix(field.data, "TLS-Required:") &&
				 tls_required_no_value(field.data + 13, field.len - 13))
				*tls_required_no = true;
			buf_reset(&field);
		}
		if (i >= len || text == 0)
			break; /* end of the header section */
		buf_append(&field, line, text);
		i += n;
	}
	buf_free(&field);
}

static void build_received(struct smtp_session *s, struct buf *hdr)
{
	const char *proto;
	bool utf8 = (s->flags & MSG_SMTPUTF8) != 0;
	if (!s->esmtp)
		proto = "SMTP";
	else if (utf8)
		proto = s->tls ? "UTF8SMTPS" : "UTF8SMTP";
	else if (s->auth_user[0] != '\0')
		proto = s->tls ? "ESMTPSA" : "ESMTPA"; /* RFC 3848 */
	else
		proto = s->tls ? "ESMTPS" : "ESMTP";
	char date[64];
	fmt_time_rfc5322(date, sizeof(date), now_unix());
	buf_printf(hdr, "Received: from %s ([%s])\r\n\tby %s (strictrelay) with %s id %s",
		   s->helo ? s->helo : "unknown", s->client_addr, s->cfg->hostname, proto, s->qid);
	if (s->tls) {
		/* tls_info is "VERSION CIPHER" */
		char version[64] = "", cipher[96] = "";
		sscanf(s->tls_info, "%63s %95s", version, cipher);
		buf_printf(hdr, "\r\n\t(version=%s cipher=%s)", version, cipher);
	}
	if (s->rcpts.n == 1 && strlen(s->rcpts.v[0]) < 256)
		buf_printf(hdr, "\r\n\tfor <%s>", s->rcpts.v[0]);
	buf_printf(hdr, "; %s\r\n", date);
}

static enum smtp_action refuse_message(struct smtp_session *s, struct buf *out, const char *why,
				       const char *fmt, ...) SR_PRINTF(4, 5);
static enum smtp_action refuse_message(struct smtp_session *s, struct buf *out, const char *why,
				       const char *fmt, ...)
{
	char from[300];
	log_warn("smtpd", "id=%s client=%s message refused from=<%s> size=%llu reason=%s", s->qid,
		 s->client_addr,
		 s->sender && s->sender[0] ? str_quote(from, sizeof(from), s->sender) : "",
		 (unsigned long long)s->data.size, why);
	va_list ap;
	va_start(ap, fmt);
	buf_vprintf(out, fmt, ap);
	va_end(ap);
	buf_append(out, "\r\n", 2);
	transaction_reset(s);
	return SMTP_ACT_NONE;
}

enum smtp_action smtp_session_data_end(struct smtp_session *s, struct buf *out)
{
	unsigned f = s->data.flags;
	if (f & SMTP_DATA_TOO_BIG)
		return refuse_message(s, out, "too-big",
				      "552 5.3.4 Message size exceeds fixed maximum message size (%llu)",
				      (unsigned long long)s->cfg->max_message_size);
	if (f & SMTP_DATA_NUL)
		return refuse_message(s, out, "nul",
				      "554 5.6.0 Message contains NUL characters");
	if ((f & (SMTP_DATA_BARE_LF | SMTP_DATA_BARE_CR)) && !s->cfg->normalize_bare_newlines)
		return refuse_message(s, out, "bare-newline",
				      "550 5.5.2 Message contains bare CR or LF characters, which SMTP "
				      "does not allow (RFC 5321 2.3.8); send CR LF line endings");
	if (f & SMTP_DATA_LINE_TOO_LONG)
		return refuse_message(s, out, "line-too-long",
				      "550 5.6.0 Message has a line longer than 998 characters "
				      "(RFC 5322 2.1.1)");
	unsigned received;
	bool tls_required_no;
	scan_headers(s->message.data ? s->message.data : "", s->message.len, &received,
		     &tls_required_no);
	if (received > MAX_RECEIVED_HEADERS)
		return refuse_message(s, out, "loop",
				      "554 5.4.6 Too many Received: headers (%u): mail loop?",
				      received);

	struct queued_message *m = xcalloc(1, sizeof(*m));
	memcpy(m->id, s->qid, sizeof(m->id));
	m->sender = xstrdup(s->sender);
	strlist_copy(&m->rcpts, &s->rcpts);
	strlist_copy(&m->notify, &s->notify);
	strlist_copy(&m->orcpt, &s->orcpt);
	m->ret = xstrdup(s->ret ? s->ret : "");
	m->envid = xstrdup(s->envid ? s->envid : "");
	m->flags = s->flags;
	if (f & SMTP_DATA_8BIT)
		m->flags |= MSG_HAS_8BIT;
	if (s->rtls_rule && !(m->flags & MSG_REQUIRETLS)) {
		m->flags |= MSG_REQUIRETLS_RULE;
		log_info("smtpd", "id=%s client=%s requiretls=yes source=rule (%s)", s->qid,
			 s->client_addr, s->rtls_why);
	}
	/* RFC 8689 4.1: with REQUIRETLS the header is ignored (and a rule-tagged
	 * message behaves exactly like one with the parameter). */
	if (tls_required_no && !(m->flags & (MSG_REQUIRETLS | MSG_REQUIRETLS_RULE)))
		m->flags |= MSG_TLS_REQUIRED_NO;
	struct buf body;
	buf_init(&body, 0);
	build_received(s, &body);
	buf_append(&body, s->message.data ? s->message.data : "", s->message.len);
	m->body = buf_steal(&body, &m->body_len);
	m->arrival = now_unix();
	m->client_addr = xstrdup(s->client_addr);
	m->client_helo = xstrdup(s->helo ? s->helo : "");
	m->client_tls = xstrdup(s->tls ? s->tls_info : "");
	m->auth_user = xstrdup(s->auth_user);
	buf_free(&s->message);
	s->ready = m;
	session_set_state(s, SMTP_STATE_QUEUEING);
	return SMTP_ACT_ENQUEUE;
}

struct queued_message *smtp_session_take_message(struct smtp_session *s)
{
	struct queued_message *m = s->ready;
	s->ready = NULL;
	return m;
}

void smtp_session_queued(struct smtp_session *s, bool ok, struct buf *out)
{
	if (ok) {
		s->messages++;
		s->junk_commands = 0;
		reply(out, "250 2.0.0 Ok: queued as %s", s->qid);
	} else {
		reply(out, "451 4.3.0 Local error: the message could not be stored; try again later");
	}
	transaction_reset(s);
}

void smtp_session_queue_full(struct smtp_session *s, struct buf *out)
{
	reply(out, "452 4.3.1 Insufficient system storage; try again later");
	transaction_reset(s);
}

void smtp_session_tls_started(struct smtp_session *s, const char *tls_info)
{
	transaction_reset(s);
	free(s->helo);
	s->helo = NULL;
	s->esmtp = false;
	s->auth_user[0] = '\0';
	s->auth_step = SMTP_AUTH_NONE;
	auth_wipe(s);
	s->tls = true;
	snprintf(s->tls_info, sizeof(s->tls_info), "%s", tls_info);
	session_set_state(s, SMTP_STATE_CONNECTED);
}

void smtp_session_timeout(struct smtp_session *s, struct buf *out)
{
	reply(out, "421 4.4.2 %s Timeout exceeded; closing connection", s->cfg->hostname);
	session_set_state(s, SMTP_STATE_CLOSED);
}

void smtp_session_shutdown(struct smtp_session *s, struct buf *out, const char *why)
{
	reply(out, "421 4.3.2 %s %s; closing connection", s->cfg->hostname, why);
	session_set_state(s, SMTP_STATE_CLOSED);
}
