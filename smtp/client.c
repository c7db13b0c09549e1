/* client.c - see client.h */
#include "client.h"

#include <arpa/inet.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mta/log.h"
#include "mta/netaddr.h"
#include "policy/mtasts.h"
#include "policy/nexthop.h"
#include "policy/sts.h"
#include "smtp/data.h"
#include "smtp/reply.h"
#include "smtp/tls.h"

/* RFC 5321 4.5.3.2 client timeouts, in seconds */
#define T_GREETING 300
#define T_EHLO 300
#define T_MAIL 300
#define T_RCPT 300
#define T_DATA 120
#define T_BLOCK 180
#define T_DOT 600
#define T_QUIT 30
#define MAX_ATTEMPTS 10 /* connections per session before giving up */

enum cstate {
	CS_POLICY,   /* looking up the MTA-STS policy */
	CS_RESOLVING,
	CS_CONNECTING,
	CS_GREETING,
	CS_EHLO,
	CS_HELO,
	CS_STARTTLS,
	CS_HANDSHAKE,
	CS_EHLO_TLS,
	CS_READY,
	CS_TXN,      /* MAIL, RCPT and DATA replies */
	CS_DOT_ONLY, /* a lone "." after a 354 with no recipient accepted */
	CS_BODY,     /* message sent, waiting for the final reply */
	CS_RSET,
	CS_IDLE,     /* after RSET, waiting for the scheduler's next job */
	CS_QUIT,
	CS_CLOSING,  /* the TCP handle is being closed */
	CS_DONE,
};

static const char *const cstate_names[] = {
	"policy", "resolving", "connecting", "greeting", "ehlo", "helo", "starttls", "handshake",
	"ehlo-tls", "ready", "transaction", "dot", "body", "rset", "idle", "quit", "closing", "done",
};

struct mx_host {
	char *name;
	struct sockaddr_storage *addrs;
	size_t naddrs;
};

struct smtp_client {
	struct smtp_client_params p;
	enum cstate state;
	/* the destination's requirements plus the MTA-STS policy found now */
	struct delivery_req req;
	struct strlist sts_mx;
	struct strlist sts_lines;
	struct mtasts_query *stsq;
	bool policy_done;      /* the MTA-STS lookup answered */
	struct nexthop_query *nhq;
	struct mx_host *hosts;
	size_t nhosts;
	size_t host_i, addr_i;
	bool host_checked;     /* decide_mx done for hosts[host_i] */
	bool mx_matches;       /* hosts[host_i] matches the MTA-STS policy (if any) */
	unsigned attempts;
	bool plain_retry;      /* reconnect to the same address without STARTTLS */

	/* the connection */
	uv_tcp_t tcp;
	uv_timer_t timer;
	uv_connect_t connect_req;
	bool tcp_open;
	struct tls_conn tls;
	bool tls_active;
	struct smtp_reply_parser rp;
	struct buf in;
	bool greeted;          /* the peer answered EHLO/HELO: a TLS session to report */

	/* facts about the current MX */
	char mx_host[256];
	char mx_ip[64];
	char local_ip[64];
	struct mx_needs needs;
	struct smtp_caps caps;
	bool starttls_offered;
	bool starttls_refused;   /* offered, then answered with something else than 220 */
	bool handshake_failed;
	char handshake_error[256];
	struct tls_verify_info cert;
	char tls_desc[160];
	struct verdict fail;   /* why this MX is being left (result != OK) */

	struct verdict *verdicts; /* one per MX tried and failed */
	size_t nverdicts;

	/* the transaction */
	struct delivery_job *job;
	size_t ncmds, nsent, nreplied;
	bool mail_ok;
	size_t naccepted;
	bool *accepted;
	bool body_sent;
	bool job_local;        /* job failed before anything was sent */
	bool resumed;          /* the job went out on a connection that had been idle */

	bool used;             /* the connection reached READY: it ends the session */
	bool aborted;
	bool closing_session;
	int open_handles;
};

static void next_address(struct smtp_client *c);
static void close_connection(struct smtp_client *c);
static void session_end(struct smtp_client *c);
static void on_reply(struct smtp_client *c, const struct smtp_reply *r);
static void give_back_job(struct smtp_client *c);

static void set_state(struct smtp_client *c, enum cstate st)
{
	if (c->state != st)
		log_debug("delivery", "dest=%s mx=%s state %s -> %s", c->p.dest->label, c->mx_host,
			  cstate_names[c->state], cstate_names[st]);
	c->state = st;
}


/* --- writing ------------------------------------------------------------- */

struct wreq {
	uv_write_t req;
	size_t len;
	char data[];
};

static void on_written(uv_write_t *req, int status)
{
	(void)status; /* a failed write shows up as a read error or timeout */
	free(req);
}

static void send_raw(struct smtp_client *c, const char *data, size_t len)
{
	if (len == 0 || !c->tcp_open || uv_is_closing((uv_handle_t *)&c->tcp))
		return;
	struct wreq *w = xmalloc(sizeof(*w) + len);
	w->len = len;
	memcpy(w->data, data, len);
	uv_buf_t b = uv_buf_init(w->data, (unsigned int)len);
	if (uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, on_written) < 0)
		free(w);
}

static void flush_tls(struct smtp_client *c)
{
	struct buf out;
	buf_init(&out, 0);
	tls_take_output(&c->tls, &out);
	send_raw(c, out.data, out.len);
	buf_free(&out);
}

static void send_bytes(struct smtp_client *c, const char *data, size_t len)
{
	if (c->tls_active) {
		if (tls_write(&c->tls, data, len) == TLS_ERROR)
			log_warn("delivery", "mx=%s TLS write failed: %s", c->mx_host,
				 tls_last_error(&c->tls));
		flush_tls(c);
	} else {
		send_raw(c, data, len);
	}
}

static void send_cmd(struct smtp_client *c, const char *fmt, ...) SR_PRINTF(2, 3);
static void send_cmd(struct smtp_client *c, const char *fmt, ...)
{
	struct buf b;
	buf_init(&b, 0);
	va_list ap;
	va_start(ap, fmt);
	buf_vprintf(&b, fmt, ap);
	va_end(ap);
	log_debug("delivery", "mx=%s > %s", c->mx_host, b.data);
	buf_append(&b, "\r\n", 2);
	send_bytes(c, b.data, b.len);
	buf_free(&b);
}

static void arm(struct smtp_client *c, unsigned secs);

/* --- logging and records ---------------------------------------------------- */

static const char *tls_result_type(const struct smtp_client *c)
{
	/* Not offered, or offered and then refused (454): either way the
	 * MX does not support STARTTLS for us (RFC 8460 4.3.1). */
	if (!c->starttls_offered || c->starttls_refused)
		return "starttls-not-supported";
	if (c->handshake_failed)
		return "validation-failure";
	if (c->tls.done && c->cert.result != TLS_CERT_OK)
		return tls_cert_result_name(c->cert.result);
	if (c->tls.done)
		return "success";
	return "validation-failure";
}

static void join_lines(const struct strlist *l, char *dst, size_t dstlen)
{
	struct buf b;
	buf_init(&b, 0);
	for (size_t i = 0; i < l->n; i++) {
		if (i > 0)
			buf_putc(&b, '\n');
		buf_puts(&b, l->v[i]);
	}
	snprintf(dst, dstlen, "%s", b.data ? b.data : "");
	buf_free(&b);
}

/* MTA-STS testing mode (STS-55): deliver as without a policy, but say what
 * enforce mode would have done. */
static void log_testing_verdict(const struct smtp_client *c)
{
	if (c->req.sts != STS_MODE_TESTING || c->req.tls_required_no)
		return;
	const char *why = NULL;
	if (!c->mx_matches)
		why = "the MX does not match the policy";
	else if (!c->starttls_offered || c->starttls_refused)
		why = "the MX does not support STARTTLS";
	else if (c->handshake_failed)
		why = "the TLS handshake failed";
	else if (c->tls.done && c->cert.result != TLS_CERT_OK)
		why = tls_cert_result_name(c->cert.result);
	if (why != NULL)
		log_info("delivery", "dest=%s mx=%s ip=%s sts=testing enforce mode would refuse this MX: %s",
			 c->p.dest->label, c->mx_host, c->mx_ip, why);
}

/* One record per connection that reached the greeting (RFC 8460 counts
 * sessions; connection failures are not TLS failures, RPT-12). */
static void record_tls(struct smtp_client *c)
{
	if (!c->greeted)
		return;
	log_testing_verdict(c);
	if (c->p.store == NULL)
		return; /* a probe (strictrelay policy --probe) records nothing */
	struct tls_session_record r;
	memset(&r, 0, sizeof(r));
	r.time = now_unix();
	snprintf(r.policy_domain, sizeof(r.policy_domain), "%s", c->p.dest->policy_domain);
	/* mode none counts as no policy (STS-56) */
	snprintf(r.policy_type, sizeof(r.policy_type), "%s",
		 c->req.sts == STS_MODE_NONE ? "no-policy-found" : "sts");
	join_lines(&c->sts_lines, r.policy_strings, sizeof(r.policy_strings));
	join_lines(&c->sts_mx, r.policy_mx, sizeof(r.policy_mx));
	snprintf(r.mx_host, sizeof(r.mx_host), "%s", c->mx_host);
	snprintf(r.mx_ip, sizeof(r.mx_ip), "%s", c->mx_ip);
	snprintf(r.mx_helo, sizeof(r.mx_helo), "%s", c->caps.name);
	snprintf(r.sending_ip, sizeof(r.sending_ip), "%s", c->local_ip);
	r.starttls_offered = c->starttls_offered;
	r.tls = c->tls.done;
	r.verified = c->tls.done && c->cert.result == TLS_CERT_OK;
	snprintf(r.result_type, sizeof(r.result_type), "%s", tls_result_type(c));
	if (c->req.sts != STS_MODE_NONE && !c->mx_matches) {
		/* RFC 8460 has no type for an MX outside the policy (D8) */
		snprintf(r.result_type, sizeof(r.result_type), "validation-failure");
		snprintf(r.detail, sizeof(r.detail), "mx-not-in-policy");
	}
	if (c->tls.done) {
		char version[32] = "", cipher[96] = "";
		sscanf(c->tls_desc, "%31s %95s", version, cipher);
		snprintf(r.tls_version, sizeof(r.tls_version), "%s", version);
		snprintf(r.cipher, sizeof(r.cipher), "%s", cipher);
	}
	if (r.detail[0] != '\0')
		; /* mx-not-in-policy */
	else if (c->handshake_failed)
		snprintf(r.detail, sizeof(r.detail), "%s", c->handshake_error);
	else if (c->tls.done && c->cert.result != TLS_CERT_OK)
		snprintf(r.detail, sizeof(r.detail), "%s", c->cert.detail);
	r.tls_required_no = c->req.tls_required_no;
	tls_session_record(c->p.store, &r);
	char helo[300], detail[300];
	log_info("delivery", "dest=%s mx=%s ip=%s helo=%s starttls=%s tls=%s verified=%s verify_name=%s result=%s%s%s",
		 c->p.dest->label, c->mx_host, c->mx_ip, str_quote(helo, sizeof(helo), c->caps.name),
		 c->starttls_offered ? "offered" : "no", c->tls.done ? "yes" : "no",
		 r.verified ? "yes" : "no", c->needs.verify_name ? c->needs.verify_name : c->mx_host,
		 r.result_type, r.detail[0] ? " detail=" : "",
		 r.detail[0] ? str_quote(detail, sizeof(detail), r.detail) : "");
}

static void log_outcomes(struct smtp_client *c, const struct delivery_job *job)
{
	char tls[600];
	if (c->tls.done) {
		char desc[160];
		snprintf(desc, sizeof(desc), "%s", c->tls_desc);
		char *sp = strchr(desc, ' ');
		if (sp != NULL)
			*sp = '/'; /* "TLSv1.3/TLS_AES_256_GCM_SHA384" keeps it one value */
		snprintf(tls, sizeof(tls), "tls=%s verified=%s verify_name=%s", desc,
			 c->cert.result == TLS_CERT_OK ? "yes" : "no",
			 c->needs.verify_name ? c->needs.verify_name : c->mx_host);
	} else {
		snprintf(tls, sizeof(tls), "tls=none");
	}
	double delay = (double)(now_ms() - job->started_ms) / 1000.0;
	for (size_t i = 0; i < job->nrcpts; i++) {
		const struct job_rcpt *r = &job->rcpts[i];
		if (r->outcome == RCPT_PENDING)
			continue;
		const char *status = r->outcome == RCPT_SENT       ? "sent"
				     : r->outcome == RCPT_DEFERRED ? "deferred"
								   : "bounced";
		char to[300], reply[600];
		log_info("delivery", "id=%s to=<%s> dest=%s mx=%s ip=%s %s sts=%s requiretls=%s attempts=%u delay=%.2fs status=%s dsn=%s reply=%s",
			 job->msg->id, str_quote(to, sizeof(to), r->address), c->p.dest->label,
			 c->mx_host, c->mx_ip, tls,
			 sts_mode_name(c->req.sts),
			 requiretls_log(job->msg), r->attempts + 1, delay, status,
			 r->status, str_quote(reply, sizeof(reply), r->reply));
	}
}

/* --- jobs ------------------------------------------------------------------- */

static void outcome(struct job_rcpt *r, const struct smtp_reply *reply, int code)
{
	if (code / 100 == 2)
		r->outcome = RCPT_SENT;
	else if (code / 100 == 5)
		r->outcome = RCPT_BOUNCED;
	else
		r->outcome = RCPT_DEFERRED;
	snprintf(r->status, sizeof(r->status), "%s", smtp_reply_status(reply));
	smtp_reply_render(reply, r->reply, sizeof(r->reply));
}

static void finish_job(struct smtp_client *c)
{
	struct delivery_job *job = c->job;
	if (job == NULL)
		return;
	c->job = NULL;
	snprintf(job->via, sizeof(job->via), "%s[%s]:%u", c->mx_host, c->mx_ip, c->p.dest->port);
	snprintf(job->remote_mta, sizeof(job->remote_mta), "%s", c->mx_host);
	log_outcomes(c, job);
	free(c->accepted);
	c->accepted = NULL;
	c->p.ops.job_done(c->p.arg, job);
}

/* The job in hand cannot be finished on this connection. */
static void defer_job(struct smtp_client *c, const char *status, const char *fmt, ...)
	SR_PRINTF(3, 4);
static void defer_job(struct smtp_client *c, const char *status, const char *fmt, ...)
{
	if (c->job == NULL)
		return;
	char reason[300];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(reason, sizeof(reason), fmt, ap);
	va_end(ap);
	job_set_pending(c->job, RCPT_DEFERRED, status, reason);
	finish_job(c);
}

static void local_bounce(struct smtp_client *c, const char *status, const char *fmt, ...)
	SR_PRINTF(3, 4);
static void local_bounce(struct smtp_client *c, const char *status, const char *fmt, ...)
{
	char reason[300];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(reason, sizeof(reason), fmt, ap);
	va_end(ap);
	job_set_pending(c->job, RCPT_BOUNCED, status, reason);
	finish_job(c);
}

static void take_job(struct smtp_client *c);

static void send_txn_command(struct smtp_client *c, size_t i)
{
	struct delivery_job *job = c->job;
	const struct msg_body *m = job->msg;
	if (i == 0) {
		struct buf line;
		buf_init(&line, 0);
		buf_printf(&line, "MAIL FROM:<%s>", m->sender);
		if (c->caps.size)
			buf_printf(&line, " SIZE=%zu", m->len);
		if (c->caps.eightbitmime && (m->flags & (MSG_BODY_8BITMIME | MSG_HAS_8BIT)))
			buf_puts(&line, " BODY=8BITMIME");
		/* Passed on as declared where the peer knows it; a message whose
		 * envelope and header are ASCII does not need it (RFC 6531 3.4). */
		if ((m->flags & MSG_SMTPUTF8) && c->caps.smtputf8)
			buf_puts(&line, " SMTPUTF8");
		if (c->req.requiretls)
			buf_puts(&line, " REQUIRETLS");
		/* DSN parameters go on unchanged to a peer that knows them
		 * (RFC 3461 4.1). */
		if (c->caps.dsn && m->ret[0] != '\0')
			buf_printf(&line, " RET=%s", m->ret);
		if (c->caps.dsn && m->envid[0] != '\0')
			buf_printf(&line, " ENVID=%s", m->envid);
		send_cmd(c, "%s", line.data);
		buf_free(&line);
	} else if (i <= job->nrcpts) {
		const struct job_rcpt *r = &job->rcpts[i - 1];
		struct buf line;
		buf_init(&line, 0);
		buf_printf(&line, "RCPT TO:<%s>", r->address);
		if (c->caps.dsn && r->notify[0] != '\0')
			buf_printf(&line, " NOTIFY=%s", r->notify);
		if (c->caps.dsn && r->orcpt[0] != '\0')
			buf_printf(&line, " ORCPT=%s", r->orcpt);
		send_cmd(c, "%s", line.data);
		buf_free(&line);
	} else {
		send_cmd(c, "DATA");
	}
	c->nsent = i + 1;
}

/* Whether the message really needs SMTPUTF8: a non-ASCII address in the
 * envelope or non-ASCII octets in the header section (UTF8-03). */
static bool needs_smtputf8(const struct delivery_job *job)
{
	const struct msg_body *m = job->msg;
	if (!(m->flags & MSG_SMTPUTF8))
		return false;
	if (!str_is_ascii(m->sender, strlen(m->sender)))
		return true;
	for (size_t i = 0; i < job->nrcpts; i++)
		if (!str_is_ascii(job->rcpts[i].address, strlen(job->rcpts[i].address)))
			return true;
	const char *end = strstr(m->data, "\r\n\r\n");
	size_t hlen = end ? (size_t)(end - m->data) : m->len;
	return !str_is_ascii(m->data, hlen);
}

static void start_txn(struct smtp_client *c)
{
	struct delivery_job *job = c->job;
	const struct msg_body *m = job->msg;
	job->started_ms = now_ms();
	/* What this next hop can not take, no other attempt will fix. */
	if (c->caps.size && c->caps.size_limit > 0 && m->len > c->caps.size_limit) {
		local_bounce(c, "5.3.4", "message size %zu exceeds the limit of %s (%llu)", m->len,
			     c->mx_host, (unsigned long long)c->caps.size_limit);
		take_job(c);
		return;
	}
	if ((m->flags & MSG_HAS_8BIT) && !c->caps.eightbitmime) {
		local_bounce(c, "5.6.3",
			     "the message has 8-bit content and %s does not support 8BITMIME",
			     c->mx_host);
		take_job(c);
		return;
	}
	if (needs_smtputf8(job) && !c->caps.smtputf8) {
		local_bounce(c, "5.6.7", "the message needs SMTPUTF8 and %s does not support it",
			     c->mx_host);
		take_job(c);
		return;
	}
	/* RTLS-16: re-check the invariant where the MAIL command is built. */
	if (c->req.requiretls &&
	    !(c->tls.done && c->cert.result == TLS_CERT_OK && c->caps.requiretls)) {
		log_error("delivery", "id=%s BUG: REQUIRETLS message about to go to %s without verified TLS and REQUIRETLS; refused",
			  m->id, c->mx_host);
		defer_job(c, "4.7.10", "internal error: REQUIRETLS requirements not met");
		take_job(c);
		return;
	}
	c->ncmds = job->nrcpts + 2;
	c->nsent = 0;
	c->nreplied = 0;
	c->mail_ok = false;
	c->naccepted = 0;
	c->body_sent = false;
	c->accepted = xcalloc(job->nrcpts, sizeof(bool));
	set_state(c, CS_TXN);
	arm(c, T_MAIL);
	if (c->caps.pipelining) {
		/* RFC 2920: MAIL, every RCPT and DATA in one write. */
		for (size_t i = 0; i < c->ncmds; i++)
			send_txn_command(c, i);
	} else {
		send_txn_command(c, 0);
	}
}

static void take_job(struct smtp_client *c)
{
	if (c->aborted) {
		set_state(c, CS_QUIT);
		send_cmd(c, "QUIT");
		arm(c, T_QUIT);
		return;
	}
	c->job = c->p.ops.next_job(c->p.arg);
	if (c->job != NULL) {
		start_txn(c);
		return;
	}
	/* Nothing for now: wait a little for the next job on this connection
	 * (smtp_client_resume), when the scheduler wants that. */
	int64_t idle = c->p.cfg->delivery.connection_cache_time;
	if (idle > 0 && c->p.ops.park != NULL && c->p.ops.park(c->p.arg)) {
		set_state(c, CS_IDLE);
		arm(c, (unsigned)idle);
		return;
	}
	set_state(c, CS_QUIT);
	send_cmd(c, "QUIT");
	arm(c, T_QUIT);
}

bool smtp_client_resume(struct smtp_client *c)
{
	if (c->state != CS_IDLE || c->aborted)
		return false;
	uv_timer_stop(&c->timer);
	c->resumed = true;
	take_job(c);
	return true;
}

static void send_body(struct smtp_client *c)
{
	const struct msg_body *m = c->job->msg;
	struct buf wire;
	buf_init(&wire, 0);
	/* Dot-stuffing and CR LF only (SMUG-02): nothing a lenient receiver
	 * could read as an end of data before the real one. */
	smtp_data_stuff(m->data, m->len, &wire);
	send_bytes(c, wire.data, wire.len);
	buf_free(&wire);
	c->body_sent = true;
	set_state(c, CS_BODY);
	arm(c, T_DOT);
}

static void after_job(struct smtp_client *c)
{
	finish_job(c);
	c->resumed = false; /* the connection is alive: the next job is an ordinary one */
	/* RSET between transactions on a reused connection (SMTP-16). */
	set_state(c, CS_RSET);
	send_cmd(c, "RSET");
	arm(c, T_MAIL);
}

static void txn_reply(struct smtp_client *c, const struct smtp_reply *r)
{
	struct delivery_job *job = c->job;
	size_t i = c->nreplied++;
	int code = r->code;
	if (i == 0) {
		c->mail_ok = code / 100 == 2;
		if (!c->mail_ok) {
			for (size_t k = 0; k < job->nrcpts; k++)
				outcome(&job->rcpts[k], r, code);
		}
	} else if (i <= job->nrcpts) {
		if (c->mail_ok) {
			if (code / 100 == 2) {
				c->accepted[i - 1] = true;
				c->naccepted++;
			} else {
				outcome(&job->rcpts[i - 1], r, code);
			}
		}
	} else {
		/* the reply to DATA */
		if (code == 354 && c->mail_ok && c->naccepted > 0) {
			send_body(c);
			return;
		}
		if (code == 354) {
			/* PIPE-02: a broken server said 354 with nobody to deliver to */
			set_state(c, CS_DOT_ONLY);
			send_cmd(c, ".");
			arm(c, T_DOT);
			return;
		}
		for (size_t k = 0; k < job->nrcpts; k++)
			if (c->accepted[k])
				outcome(&job->rcpts[k], r, code);
		after_job(c);
		return;
	}
	if (c->caps.pipelining)
		return; /* every command was sent; wait for the next reply */
	/* One command at a time: stop early when nothing can come of it. */
	if (!c->mail_ok || (c->nsent == c->ncmds - 1 && c->naccepted == 0)) {
		after_job(c);
		return;
	}
	send_txn_command(c, c->nsent);
	arm(c, c->nsent == c->ncmds ? T_DATA : T_RCPT);
}

static void body_reply(struct smtp_client *c, const struct smtp_reply *r)
{
	struct delivery_job *job = c->job;
	for (size_t k = 0; k < job->nrcpts; k++) {
		if (!c->accepted[k])
			continue;
		outcome(&job->rcpts[k], r, r->code);
		/* A peer without DSN will never tell the sender; we do. */
		if (r->code / 100 == 2 && !c->caps.dsn && strstr(job->rcpts[k].notify, "SUCCESS"))
			job->rcpts[k].relayed = true;
	}
	after_job(c);
}

/* --- leaving an MX ------------------------------------------------------------ */

/* This MX can not be used: remember why, QUIT politely and try the next. */
static void fail_mx(struct smtp_client *c, const struct verdict *v)
{
	c->fail = *v;
	log_info("delivery", "dest=%s mx=%s ip=%s not used: %s (%s)", c->p.dest->label, c->mx_host,
		 c->mx_ip[0] ? c->mx_ip : "-", v->reason, v->status);
	/* QUIT where the protocol allows it (inside TLS once it is up). */
	if (c->state >= CS_GREETING && c->tcp_open && (c->state != CS_HANDSHAKE || c->tls.done)) {
		set_state(c, CS_QUIT);
		send_cmd(c, "QUIT");
		arm(c, T_QUIT);
		return;
	}
	close_connection(c);
}

static void fail_mx_reply(struct smtp_client *c, const char *stage, const struct smtp_reply *r)
{
	char text[400];
	smtp_reply_render(r, text, sizeof(text));
	struct verdict v;
	verdict_set(&v, DECIDE_NEXT_MX, false, r->code / 100 == 5 ? "4.4.0" : smtp_reply_status(r),
		    "%s refused by %s: %s", stage, c->mx_host, text);
	if (v.status[0] != '4')
		v.status[0] = '4'; /* one MX saying no is no reason to bounce */
	fail_mx(c, &v);
}

/* --- the protocol --------------------------------------------------------- */

static void send_ehlo(struct smtp_client *c, enum cstate st)
{
	set_state(c, st);
	send_cmd(c, "EHLO %s", c->p.cfg->server.hostname);
	arm(c, T_EHLO);
}

static void ready(struct smtp_client *c)
{
	c->used = true;
	set_state(c, CS_READY);
	take_job(c);
}

static void start_tls(struct smtp_client *c)
{
	/* TLS-04: nothing may follow the 220 in the same read. */
	if (c->in.len > 0) {
		struct verdict v;
		verdict_set(&v, DECIDE_NEXT_MX, false, "4.7.0",
			    "%s sent %zu unexpected bytes after its STARTTLS reply (injection?)",
			    c->mx_host, c->in.len);
		buf_reset(&c->in);
		fail_mx(c, &v);
		return;
	}
	/* SNI carries a host name, never an address (RFC 6066 3). */
	unsigned char addr[16];
	bool ip = inet_pton(AF_INET, c->mx_host, addr) == 1 || inet_pton(AF_INET6, c->mx_host, addr) == 1;
	if (tls_conn_init_client(&c->tls, c->p.tls_ctx, ip ? NULL : c->mx_host,
				 c->needs.verify_name) < 0) {
		struct verdict v;
		verdict_set(&v, DECIDE_NEXT_MX, false, "4.7.5", "cannot start TLS: %s", tls_last_error(&c->tls));
		fail_mx(c, &v);
		return;
	}
	c->tls_active = true;
	set_state(c, CS_HANDSHAKE);
	arm(c, T_EHLO);
	enum tls_status st = tls_handshake(&c->tls);
	flush_tls(c);
	if (st == TLS_ERROR) {
		c->handshake_failed = true;
		snprintf(c->handshake_error, sizeof(c->handshake_error), "%s", tls_last_error(&c->tls));
	}
}

static void handshake_finished(struct smtp_client *c)
{
	struct verdict v;
	if (c->handshake_failed) {
		decide_tls(&c->needs, false, c->handshake_error, NULL, &v);
		c->fail = v;
		if (v.result == DECIDE_RETRY_PLAIN) {
			log_info("delivery", "dest=%s mx=%s ip=%s TLS handshake failed (%s): retrying without TLS (opportunistic)",
				 c->p.dest->label, c->mx_host, c->mx_ip, c->handshake_error);
			c->plain_retry = true;
		}
		close_connection(c);
		return;
	}
	tls_describe(&c->tls, c->tls_desc, sizeof(c->tls_desc));
	tls_client_verify(&c->tls, &c->cert);
	decide_tls(&c->needs, true, NULL, &c->cert, &v);
	if (v.result != DECIDE_OK) {
		fail_mx(c, &v);
		return;
	}
	/* TLS-02: forget what was learnt before TLS and ask again. */
	memset(&c->caps, 0, sizeof(c->caps));
	send_ehlo(c, CS_EHLO_TLS);
}

static void on_reply(struct smtp_client *c, const struct smtp_reply *r)
{
	int code = r->code;
	if (code == 421 && c->state != CS_QUIT) {
		/* Service closing: temporary, whatever we were doing. */
		char text[400];
		smtp_reply_render(r, text, sizeof(text));
		if (c->job != NULL && c->resumed && c->nreplied == 0 && !c->body_sent) {
			/* a cached connection the MX is closing: not tried */
			log_info("delivery", "id=%s dest=%s mx=%s ip=%s the cached connection was closed (%s): sending on a new one",
				 c->job->msg->id, c->p.dest->label, c->mx_host, c->mx_ip, text);
			give_back_job(c);
			close_connection(c);
			return;
		}
		if (c->job != NULL) {
			defer_job(c, smtp_reply_status(r), "%s", text);
			close_connection(c);
			return;
		}
		struct verdict v;
		verdict_set(&v, DECIDE_NEXT_MX, false, "4.4.2", "%s closed the session: %s", c->mx_host, text);
		c->fail = v;
		close_connection(c);
		return;
	}
	struct verdict v;
	switch (c->state) {
	case CS_GREETING:
		if (code / 100 != 2) {
			fail_mx_reply(c, "greeting", r);
			return;
		}
		smtp_caps_name_from_greeting(r, &c->caps);
		send_ehlo(c, CS_EHLO);
		return;
	case CS_EHLO:
		if (code / 100 == 5) {
			/* An old server: HELO, and so no STARTTLS. */
			set_state(c, CS_HELO);
			send_cmd(c, "HELO %s", c->p.cfg->server.hostname);
			arm(c, T_EHLO);
			return;
		}
		if (code / 100 != 2) {
			fail_mx_reply(c, "EHLO", r);
			return;
		}
		smtp_caps_parse(r, &c->caps);
		c->greeted = true;
		c->starttls_offered = c->caps.starttls;
		decide_ehlo(&c->needs, c->caps.starttls, &v);
		if (v.result != DECIDE_OK) {
			fail_mx(c, &v);
			return;
		}
		if (c->caps.starttls && c->needs.try_starttls && !c->plain_retry) {
			set_state(c, CS_STARTTLS);
			send_cmd(c, "STARTTLS");
			arm(c, T_EHLO);
			return;
		}
		ready(c);
		return;
	case CS_HELO:
		if (code / 100 != 2) {
			fail_mx_reply(c, "HELO", r);
			return;
		}
		/* caps still hold only the name from the greeting: no extensions */
		c->greeted = true;
		decide_ehlo(&c->needs, false, &v);
		if (v.result != DECIDE_OK) {
			fail_mx(c, &v);
			return;
		}
		ready(c);
		return;
	case CS_STARTTLS:
		if (code == 220) {
			start_tls(c);
			return;
		}
		c->starttls_refused = true;
		if (c->needs.starttls) {
			char text[400];
			smtp_reply_render(r, text, sizeof(text));
			verdict_set(&v, DECIDE_NEXT_MX, c->needs.requiretls, c->needs.requiretls ? "5.7.10" : "4.7.10",
				    "%s refused STARTTLS: %s", c->mx_host, text);
			c->handshake_failed = true;
			snprintf(c->handshake_error, sizeof(c->handshake_error), "STARTTLS refused: %s",
				 text);
			fail_mx(c, &v);
			return;
		}
		ready(c); /* opportunistic: go on in plaintext */
		return;
	case CS_EHLO_TLS:
		if (code / 100 != 2) {
			fail_mx_reply(c, "EHLO after STARTTLS", r);
			return;
		}
		smtp_caps_parse(r, &c->caps);
		decide_tls_ehlo(&c->needs, c->caps.requiretls, &v);
		if (v.result != DECIDE_OK) {
			fail_mx(c, &v);
			return;
		}
		ready(c);
		return;
	case CS_TXN:
		txn_reply(c, r);
		return;
	case CS_DOT_ONLY:
		after_job(c);
		return;
	case CS_BODY:
		body_reply(c, r);
		return;
	case CS_RSET:
		if (code / 100 != 2) {
			set_state(c, CS_QUIT);
			send_cmd(c, "QUIT");
			arm(c, T_QUIT);
			return;
		}
		take_job(c);
		return;
	case CS_QUIT:
		close_connection(c);
		return;
	default:
		return; /* a reply nobody asked for: ignored */
	}
}

/* The job in hand goes back to the scheduler with every recipient still
 * pending: it was not tried. */
static void give_back_job(struct smtp_client *c)
{
	struct delivery_job *job = c->job;
	c->job = NULL;
	for (size_t i = 0; i < job->nrcpts; i++)
		job->rcpts[i].outcome = RCPT_PENDING;
	c->p.ops.job_done(c->p.arg, job);
}

/* A protocol or I/O failure on the connection. */
static void connection_failed(struct smtp_client *c, const char *status, const char *fmt, ...)
	SR_PRINTF(3, 4);
static void connection_failed(struct smtp_client *c, const char *status, const char *fmt, ...)
{
	char reason[300];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(reason, sizeof(reason), fmt, ap);
	va_end(ap);
	if (c->state == CS_QUIT) {
		close_connection(c);
		return;
	}
	if (c->job != NULL && c->resumed && c->nreplied == 0 && !c->body_sent) {
		/* The cached connection was gone before the MX saw the job (it
		 * timed out idle sessions, say): nothing was tried, so the job
		 * goes back untouched and leaves again on a new connection. */
		log_info("delivery", "id=%s dest=%s mx=%s ip=%s the cached connection was gone (%s): sending on a new one",
			 c->job->msg->id, c->p.dest->label, c->mx_host, c->mx_ip, reason);
		give_back_job(c);
	} else if (c->job != NULL) {
		defer_job(c, status, "%s (%s)", reason, c->mx_host);
	} else if (c->state < CS_READY) {
		verdict_set(&c->fail, DECIDE_NEXT_MX, false, status, "%s: %s", c->mx_host, reason);
		log_info("delivery", "dest=%s mx=%s ip=%s not used: %s", c->p.dest->label, c->mx_host,
			 c->mx_ip[0] ? c->mx_ip : "-", reason);
	}
	close_connection(c);
}

static void process_input(struct smtp_client *c)
{
	while (c->in.len > 0 && c->state != CS_CLOSING && c->state != CS_DONE) {
		size_t used = 0;
		enum smtp_reply_status st = smtp_reply_feed(&c->rp, c->in.data, c->in.len, &used);
		buf_consume(&c->in, used);
		if (st == REPLY_NEED_MORE)
			return;
		if (st == REPLY_ERROR) {
			connection_failed(c, "4.5.0", "protocol error: %s", smtp_reply_error(&c->rp));
			return;
		}
		const struct smtp_reply *r = smtp_reply_get(&c->rp);
		if (log_debug_enabled()) {
			char text[600];
			smtp_reply_render(r, text, sizeof(text));
			log_debug("delivery", "mx=%s < %s", c->mx_host, text);
		}
		bool was_starttls = c->state == CS_STARTTLS;
		on_reply(c, r);
		if (was_starttls)
			return; /* start_tls() judged what followed the 220 */
	}
}

/* --- libuv plumbing ---------------------------------------------------- */

static void on_timeout(uv_timer_t *t)
{
	struct smtp_client *c = t->data;
	switch (c->state) {
	case CS_CONNECTING:
		/* the connect request is cancelled by closing the handle */
		verdict_set(&c->fail, DECIDE_NEXT_MX, false, "4.4.1", "connection to %s[%s] timed out", c->mx_host,
			    c->mx_ip);
		log_info("delivery", "dest=%s mx=%s ip=%s not used: connection timed out",
			 c->p.dest->label, c->mx_host, c->mx_ip);
		close_connection(c);
		return;
	case CS_HANDSHAKE:
		c->handshake_failed = true;
		snprintf(c->handshake_error, sizeof(c->handshake_error), "TLS handshake timed out");
		handshake_finished(c);
		return;
	case CS_IDLE:
		/* no next job came: the scheduler is told through ops.closed */
		set_state(c, CS_QUIT);
		send_cmd(c, "QUIT");
		arm(c, T_QUIT);
		return;
	default:
		connection_failed(c, "4.4.2", "timeout in state %s", cstate_names[c->state]);
		return;
	}
}

static void arm(struct smtp_client *c, unsigned secs)
{
	uv_timer_start(&c->timer, on_timeout, (uint64_t)secs * 1000u, 0);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
	(void)h;
	b->base = xmalloc(suggested);
	b->len = suggested;
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *b)
{
	struct smtp_client *c = s->data;
	if (nread < 0) {
		free(b->base);
		if (c->state == CS_HANDSHAKE) {
			/* A peer that drops the handshake (or only speaks an old
			 * protocol) is a handshake failure: opportunistic TLS
			 * retries in plaintext, required TLS tries the next MX. */
			c->handshake_failed = true;
			snprintf(c->handshake_error, sizeof(c->handshake_error),
				 "connection closed during the TLS handshake: %s",
				 uv_strerror((int)nread));
			handshake_finished(c);
			return;
		}
		connection_failed(c, "4.4.2", "lost connection in state %s: %s",
				  cstate_names[c->state], uv_strerror((int)nread));
		return;
	}
	if (c->state == CS_CLOSING || c->state == CS_DONE) {
		free(b->base);
		return;
	}
	if (!c->tls_active) {
		buf_append(&c->in, b->base, (size_t)nread);
		free(b->base);
		process_input(c);
		return;
	}
	tls_feed(&c->tls, b->base, (size_t)nread);
	free(b->base);
	if (c->state == CS_HANDSHAKE) {
		enum tls_status st = tls_handshake(&c->tls);
		flush_tls(c);
		if (st == TLS_WANT)
			return;
		if (st != TLS_OK) {
			c->handshake_failed = true;
			snprintf(c->handshake_error, sizeof(c->handshake_error), "%s",
				 tls_last_error(&c->tls));
		}
		handshake_finished(c);
		if (c->state != CS_EHLO_TLS)
			return;
	}
	enum tls_status st = tls_read(&c->tls, &c->in);
	flush_tls(c);
	process_input(c);
	if (st == TLS_ERROR || st == TLS_CLOSED)
		connection_failed(c, "4.4.2", "TLS session ended in state %s",
				  cstate_names[c->state]);
}

static void on_connect(uv_connect_t *req, int status)
{
	struct smtp_client *c = req->data;
	if (c->state != CS_CONNECTING)
		return; /* timed out or aborted; the handle is closing */
	if (status < 0) {
		verdict_set(&c->fail, DECIDE_NEXT_MX, false, "4.4.1", "connection to %s[%s] failed: %s", c->mx_host,
			    c->mx_ip, uv_strerror(status));
		log_info("delivery", "dest=%s mx=%s ip=%s not used: connect: %s", c->p.dest->label,
			 c->mx_host, c->mx_ip, uv_strerror(status));
		close_connection(c);
		return;
	}
	struct sockaddr_storage ss;
	int len = sizeof(ss);
	if (uv_tcp_getsockname(&c->tcp, (struct sockaddr *)&ss, &len) == 0)
		sockaddr_format((struct sockaddr *)&ss, c->local_ip, sizeof(c->local_ip), NULL);
	set_state(c, CS_GREETING);
	arm(c, T_GREETING);
	uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}

static void reset_connection_facts(struct smtp_client *c)
{
	tls_conn_free(&c->tls);
	c->tls_active = false;
	buf_reset(&c->in);
	smtp_reply_init(&c->rp);
	memset(&c->caps, 0, sizeof(c->caps));
	memset(&c->cert, 0, sizeof(c->cert));
	memset(&c->fail, 0, sizeof(c->fail));
	c->starttls_offered = false;
	c->starttls_refused = false;
	c->handshake_failed = false;
	c->handshake_error[0] = '\0';
	c->tls_desc[0] = '\0';
	c->greeted = false;
	c->used = false;
}

static void connect_to(struct smtp_client *c, const struct sockaddr_storage *addr)
{
	reset_connection_facts(c);
	struct sockaddr_storage sa = *addr;
	if (sa.ss_family == AF_INET)
		((struct sockaddr_in *)&sa)->sin_port = htons(c->p.dest->port);
	else
		((struct sockaddr_in6 *)&sa)->sin6_port = htons(c->p.dest->port);
	sockaddr_format((struct sockaddr *)&sa, c->mx_ip, sizeof(c->mx_ip), NULL);
	c->attempts++;
	uv_tcp_init(c->p.loop, &c->tcp);
	c->tcp.data = c;
	c->tcp_open = true;
	c->open_handles++;
	set_state(c, CS_CONNECTING);
	c->connect_req.data = c;
	int r = uv_tcp_connect(&c->connect_req, &c->tcp, (struct sockaddr *)&sa, on_connect);
	if (r < 0) {
		verdict_set(&c->fail, DECIDE_NEXT_MX, false, "4.4.1", "connection to %s[%s] failed: %s", c->mx_host,
			    c->mx_ip, uv_strerror(r));
		log_info("delivery", "dest=%s mx=%s ip=%s not used: connect: %s", c->p.dest->label,
			 c->mx_host, c->mx_ip, uv_strerror(r));
		close_connection(c);
		return;
	}
	arm(c, (unsigned)c->p.cfg->delivery.connect_timeout);
}

static void on_tcp_closed(uv_handle_t *h)
{
	struct smtp_client *c = h->data;
	c->open_handles--;
	c->tcp_open = false;
	if (c->closing_session) {
		session_end(c);
		return;
	}
	next_address(c);
}

static void report_facts(struct smtp_client *c)
{
	if (c->p.ops.conn_done == NULL)
		return;
	struct client_facts f = {
		.mx_host = c->mx_host,
		.mx_ip = c->mx_ip,
		.connected = c->state > CS_CONNECTING,
		.greeted = c->greeted,
		.helo = c->caps.name,
		.starttls_offered = c->starttls_offered,
		.starttls_refused = c->starttls_refused,
		.tls = c->tls.done,
		.tls_desc = c->tls_desc,
		.handshake_error = c->handshake_error,
		.cert = &c->cert,
		.verify_name = c->needs.verify_name ? c->needs.verify_name : c->mx_host,
		.requiretls_offered = c->tls.done && c->caps.requiretls,
		.error = c->fail.result != DECIDE_OK ? c->fail.reason : "",
	};
	c->p.ops.conn_done(c->p.arg, &f);
}

static void close_connection(struct smtp_client *c)
{
	if (c->state == CS_CLOSING || c->state == CS_DONE)
		return;
	uv_timer_stop(&c->timer);
	record_tls(c);
	report_facts(c);
	c->greeted = false;
	if (c->job != NULL) {
		/* connection gone with a job in hand */
		defer_job(c, "4.4.2", "connection to %s lost", c->mx_host);
	}
	/* Remember why this MX failed, unless it delivered and just ended. */
	if (c->fail.result != DECIDE_OK && !c->plain_retry) {
		c->verdicts = xrealloc(c->verdicts, (c->nverdicts + 1) * sizeof(*c->verdicts));
		c->verdicts[c->nverdicts++] = c->fail;
	}
	set_state(c, CS_CLOSING);
	if (c->used || c->aborted)
		c->closing_session = true; /* a used connection ends the session */
	if (c->tcp_open && !uv_is_closing((uv_handle_t *)&c->tcp)) {
		uv_close((uv_handle_t *)&c->tcp, on_tcp_closed);
	} else if (c->closing_session) {
		session_end(c);
	} else {
		next_address(c);
	}
}

static bool sts_matches_any(const struct strlist *patterns, const char *host)
{
	for (size_t i = 0; i < patterns->n; i++)
		if (sts_mx_match(patterns->v[i], host))
			return true;
	return false;
}

/* Enforce mode skips an MX outside the policy without connecting; TLS
 * reporting still counts it as a failed session (decision D8). */
static void record_mx_not_in_policy(struct smtp_client *c, const char *host)
{
	if (c->p.store == NULL)
		return;
	struct tls_session_record r;
	memset(&r, 0, sizeof(r));
	r.time = now_unix();
	snprintf(r.policy_domain, sizeof(r.policy_domain), "%s", c->p.dest->policy_domain);
	snprintf(r.policy_type, sizeof(r.policy_type), "sts");
	join_lines(&c->sts_lines, r.policy_strings, sizeof(r.policy_strings));
	join_lines(&c->sts_mx, r.policy_mx, sizeof(r.policy_mx));
	snprintf(r.mx_host, sizeof(r.mx_host), "%s", host);
	snprintf(r.result_type, sizeof(r.result_type), "validation-failure");
	snprintf(r.detail, sizeof(r.detail), "mx-not-in-policy");
	r.tls_required_no = c->req.tls_required_no;
	tls_session_record(c->p.store, &r);
}

/* Picks the next address to try: the same one again for a plaintext retry,
 * else the next address of this MX, else the next MX. */
static void next_address(struct smtp_client *c)
{
	if (c->aborted) {
		c->closing_session = true;
		session_end(c);
		return;
	}
	if (c->plain_retry && c->state == CS_CLOSING && c->fail.result == DECIDE_RETRY_PLAIN) {
		memset(&c->fail, 0, sizeof(c->fail));
		connect_to(c, &c->hosts[c->host_i].addrs[c->addr_i]);
		return;
	}
	c->plain_retry = false;
	if (c->state == CS_CLOSING) {
		c->addr_i++;
		if (c->host_i < c->nhosts && c->addr_i >= c->hosts[c->host_i].naddrs) {
			c->host_i++;
			c->addr_i = 0;
			c->host_checked = false;
		}
	}
	while (c->host_i < c->nhosts && c->attempts < MAX_ATTEMPTS) {
		struct mx_host *h = &c->hosts[c->host_i];
		snprintf(c->mx_host, sizeof(c->mx_host), "%s", h->name);
		c->mx_ip[0] = '\0';
		if (!c->host_checked) {
			c->host_checked = true;
			struct verdict v;
			c->mx_matches = sts_matches_any(&c->sts_mx, h->name);
			decide_mx(&c->req, h->name, &v);
			if (v.result != DECIDE_OK) {
				record_mx_not_in_policy(c, h->name);
				log_info("delivery", "dest=%s mx=%s not used: %s", c->p.dest->label,
					 h->name, v.reason);
				c->verdicts = xrealloc(c->verdicts, (c->nverdicts + 1) * sizeof(*c->verdicts));
				c->verdicts[c->nverdicts++] = v;
				c->host_i++;
				c->addr_i = 0;
				c->host_checked = false;
				continue;
			}
			decide_needs(&c->req, h->name, &c->needs);
		}
		if (c->addr_i >= h->naddrs) {
			c->host_i++;
			c->addr_i = 0;
			c->host_checked = false;
			continue;
		}
		connect_to(c, &h->addrs[c->addr_i]);
		return;
	}
	/* Every MX was tried (or none was usable). */
	set_state(c, CS_DONE);
	if (!c->closing_session) {
		struct verdict v;
		decide_exhausted(&c->req, c->verdicts, c->nverdicts, &v);
		c->p.ops.failed(c->p.arg, &v, c->req.sts);
	}
	c->closing_session = true;
	session_end(c);
}

static void on_timer_closed(uv_handle_t *h)
{
	struct smtp_client *c = h->data;
	c->p.ops.closed(c->p.arg);
	for (size_t i = 0; i < c->nhosts; i++) {
		free(c->hosts[i].name);
		free(c->hosts[i].addrs);
	}
	free(c->hosts);
	free(c->verdicts);
	free(c->accepted);
	strlist_free(&c->sts_mx);
	strlist_free(&c->sts_lines);
	buf_free(&c->in);
	tls_conn_free(&c->tls);
	free(c);
}

static void session_end(struct smtp_client *c)
{
	if (c->open_handles > 0 || uv_is_closing((uv_handle_t *)&c->timer))
		return;
	set_state(c, CS_DONE);
	uv_timer_stop(&c->timer);
	uv_close((uv_handle_t *)&c->timer, on_timer_closed);
}

/* Ends a session that cannot start: every job of the destination fails
 * with v (through the scheduler). */
static void fail_destination(struct smtp_client *c, const struct verdict *v)
{
	log_info("delivery", "dest=%s requiretls=%s not delivered: %s (%s)", c->p.dest->label,
		 c->req.requiretls ? "yes" : "no", v->reason, v->status);
	set_state(c, CS_DONE);
	c->p.ops.failed(c->p.arg, v, c->req.sts);
	c->closing_session = true;
	session_end(c);
}

/*
 * RFC 8689 4.2.1 step 2: without DNSSEC (not supported yet), the MX hosts of
 * a REQUIRETLS message must be validated by MTA-STS; only a policy in
 * enforce mode counts (decision D4, RTLS-13). A domain without one can
 * never take the message (bounce 5.7.30); a lookup that failed for now is
 * tried again later.
 */
static bool requiretls_mx_validation(struct smtp_client *c, const struct sts_result *res)
{
	if (!c->req.requiretls || c->p.dest->route)
		return true; /* routes: RTLS-15, no MX step */
	if (res != NULL && res->have_policy && res->mode == STS_MODE_ENFORCE)
		return true;
	struct verdict v;
	memset(&v, 0, sizeof(v));
	v.result = DECIDE_NEXT_MX;
	const char *d = c->p.dest->policy_domain;
	if (res != NULL && res->temporary) {
		snprintf(v.status, sizeof(v.status), "4.7.10");
		snprintf(v.reason, sizeof(v.reason),
			 "REQUIRETLS: the MTA-STS policy of %s cannot be had right now (%s%s%s): the MX hosts cannot be validated",
			 d, res->failure[0] ? res->failure : res->txt, "", "");
	} else {
		v.permanent = true;
		snprintf(v.status, sizeof(v.status), "5.7.30");
		snprintf(v.reason, sizeof(v.reason),
			 "REQUIRETLS: the MX hosts of %s cannot be validated: %s (REQUIRETLS needs an MTA-STS policy in enforce mode; DNSSEC is not supported)",
			 d,
			 res == NULL ? (c->p.dest->mx_lookup ? "MTA-STS is disabled in this relay"
							   : "an address literal has no MX to validate")
			 : !res->have_policy ? "the domain has no MTA-STS policy"
			 : res->mode == STS_MODE_TESTING ? "its MTA-STS policy is in testing mode"
							 : "its MTA-STS policy is in mode none");
	}
	fail_destination(c, &v);
	return false;
}

/* --- resolution ----------------------------------------------------------- */

static void on_nexthop(void *arg, const struct nexthop *nh)
{
	struct smtp_client *c = arg;
	c->nhq = NULL;
	/* No policy was looked up (MTA-STS off, address literal): a REQUIRETLS
	 * message has nothing to validate its MX hosts with. */
	if (!c->policy_done && !requiretls_mx_validation(c, NULL))
		return;
	if (nh->status != NH_OK) {
		struct verdict v;
		const char *name = c->p.dest->lookup_name;
		switch (nh->status) {
		case NH_NULL_MX:
			verdict_set(&v, DECIDE_NEXT_MX, true, "5.1.10",
				    "domain %s does not accept mail (null MX, RFC 7505)", name);
			break;
		case NH_NXDOMAIN:
			if (!c->p.dest->route)
				verdict_set(&v, DECIDE_NEXT_MX, true, "5.1.2", "domain %s does not exist", name);
			else /* a configured next hop that does not resolve: fix the config */
				verdict_set(&v, DECIDE_NEXT_MX, false, "4.4.3", "next hop %s does not exist in DNS", name);
			break;
		case NH_NODATA:
			/* RFC 5321 5.1: no MX and no address: it cannot receive mail */
			if (!c->p.dest->route)
				verdict_set(&v, DECIDE_NEXT_MX, true, "5.4.4", "domain %s has no MX and no address", name);
			else
				verdict_set(&v, DECIDE_NEXT_MX, false, "4.4.3", "next hop %s has no address in DNS", name);
			break;
		case NH_BADNAME:
			verdict_set(&v, DECIDE_NEXT_MX, !c->p.dest->route, !c->p.dest->route ? "5.1.2" : "4.4.3",
				    "%s is not a valid domain name: %s", name, nh->detail);
			break;
		default:
			verdict_set(&v, DECIDE_NEXT_MX, false, "4.4.3", "DNS lookup for %s failed: %s", name,
				    nh->detail);
			break;
		}
		fail_destination(c, &v);
		return;
	}
	c->hosts = xcalloc(nh->nhosts ? nh->nhosts : 1, sizeof(*c->hosts));
	for (size_t i = 0; i < nh->nhosts; i++) {
		const struct nexthop_host *h = &nh->hosts[i];
		c->hosts[i].name = xstrdup(h->name);
		c->hosts[i].naddrs = h->naddrs;
		c->hosts[i].addrs = xcalloc(h->naddrs ? h->naddrs : 1, sizeof(*h->addrs));
		memcpy(c->hosts[i].addrs, h->addrs, h->naddrs * sizeof(*h->addrs));
	}
	c->nhosts = nh->nhosts;
	next_address(c);
}

static void resolve(struct smtp_client *c)
{
	set_state(c, CS_RESOLVING);
	c->nhq = nexthop_resolve(c->p.resolver, c->p.dest->lookup_name, c->p.dest->mx_lookup,
				 on_nexthop, c);
}

static void on_policy(void *arg, const struct sts_result *res)
{
	struct smtp_client *c = arg;
	c->stsq = NULL;
	c->policy_done = true;
	if (!requiretls_mx_validation(c, res))
		return;
	c->req.sts = res->have_policy ? res->mode : STS_MODE_NONE;
	c->req.sts_stale = res->stale;
	if (c->req.sts != STS_MODE_NONE) {
		strlist_copy(&c->sts_mx, res->mx);
		strlist_copy(&c->sts_lines, res->lines);
		c->req.sts_mx = &c->sts_mx;
	}
	log_debug("delivery", "dest=%s mta-sts mode=%s id=%s source=%s", c->p.dest->label,
		  sts_mode_name(c->req.sts), res->id, res->source);
	resolve(c);
}

struct smtp_client *smtp_client_start(const struct smtp_client_params *p)
{
	struct smtp_client *c = xcalloc(1, sizeof(*c));
	c->p = *p;
	c->req = p->dest->req;
	buf_init(&c->in, 64 * 1024 + 4096);
	smtp_reply_init(&c->rp);
	uv_timer_init(p->loop, &c->timer);
	c->timer.data = c;
	/* MTA-STS applies to MX deliveries only (not routes or address
	 * literals, STS-08), and "TLS-Required: No" asks us to skip it. */
	if (p->mtasts != NULL && p->dest->mx_lookup && p->cfg->mta_sts.enabled &&
	    !c->req.tls_required_no) {
		set_state(c, CS_POLICY);
		c->stsq = mtasts_get(p->mtasts, p->dest->policy_domain, false, on_policy, c);
		return c;
	}
	/* Never called back from inside smtp_client_start: no policy lookup
	 * means resolution starts, and a REQUIRETLS message that needed one
	 * fails through the loop. */
	resolve(c);
	return c;
}

void smtp_client_abort(struct smtp_client *c)
{
	if (c->aborted)
		return;
	c->aborted = true;
	if (c->stsq != NULL || c->nhq != NULL) {
		if (c->stsq != NULL)
			mtasts_cancel(c->stsq);
		if (c->nhq != NULL)
			nexthop_cancel(c->nhq);
		c->stsq = NULL;
		c->nhq = NULL;
		c->closing_session = true;
		/* never called back from here: close through the loop */
		set_state(c, CS_DONE);
		uv_close((uv_handle_t *)&c->timer, on_timer_closed);
		return;
	}
	if (c->job != NULL && !c->body_sent)
		give_back_job(c); /* not tried yet: it goes back untouched */
	if (c->state != CS_CLOSING && c->state != CS_DONE)
		close_connection(c);
}
