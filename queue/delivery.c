/* delivery.c - see delivery.h */
#include "delivery.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mta/log.h"
#include "mta/metrics.h"
#include "queue/retry.h"
#include "smtp/dsn.h"

void job_set_pending(struct delivery_job *job, enum rcpt_outcome o, const char *status,
		     const char *reply)
{
	for (size_t i = 0; i < job->nrcpts; i++) {
		struct job_rcpt *r = &job->rcpts[i];
		if (r->outcome != RCPT_PENDING)
			continue;
		r->outcome = o;
		snprintf(r->status, sizeof(r->status), "%s", status);
		snprintf(r->reply, sizeof(r->reply), "%s", reply);
	}
}

const char *requiretls_log(const struct msg_body *m)
{
	if (m->sender[0] == '\0')
		return "no";
	if (m->flags & MSG_REQUIRETLS)
		return "yes source=param";
	if (m->flags & MSG_REQUIRETLS_RULE)
		return "yes source=rule";
	return "no";
}

void msg_body_unref(struct msg_body *b)
{
	if (b == NULL || --b->refs > 0)
		return;
	free(b->sender);
	free(b->ret);
	free(b->envid);
	free(b->data);
	free(b);
}

void job_free(struct delivery_job *job)
{
	if (job == NULL)
		return;
	for (size_t i = 0; i < job->nrcpts; i++) {
		free(job->rcpts[i].address);
		free(job->rcpts[i].notify);
		free(job->rcpts[i].orcpt);
	}
	free(job->rcpts);
	free(job->domain);
	msg_body_unref(job->msg);
	free(job);
}

/* --- recording outcomes (runs on the store's writer thread) -------------- */

struct record_rcpt {
	int64_t rowid;
	char *address;
	char *notify;
	char *orcpt;
	bool relayed;
	unsigned attempts;
	enum rcpt_outcome outcome;
	char status[16];
	char reply[512];
};

struct record_op {
	char id[QID_LEN + 1];
	char *sender;
	uint32_t flags;
	int64_t arrival;
	char *ret;
	char *envid;
	int64_t now;
	char *via;
	char *remote_mta;
	struct record_rcpt *rcpts;
	size_t nrcpts;
	/* what the writer needs from the configuration */
	int64_t *schedule;
	size_t nschedule;
	int64_t max_lifetime;
	char *hostname;
	/* the message itself, only when a bounce may have to quote it */
	char *body;
	size_t body_len;
	store_done_fn done;
	void *arg;
};

static const char sql_sent[] =
	"UPDATE recipients SET state = 'sent', attempts = attempts + 1, last_attempt = ?2,"
	" last_reply = ?3, route = ?4 WHERE id = ?1";
static const char sql_deferred[] =
	"UPDATE recipients SET attempts = attempts + 1, last_attempt = ?2, last_reply = ?3,"
	" route = ?4, next_attempt = ?5 WHERE id = ?1";
static const char sql_bounced[] =
	"UPDATE recipients SET state = 'bounced', attempts = attempts + 1, last_attempt = ?2,"
	" last_reply = ?3, route = ?4 WHERE id = ?1";
static const char sql_event[] =
	"INSERT INTO events (message_id, time, kind, recipient, detail) VALUES (?, ?, ?, ?, ?)";
static const char sql_remaining[] =
	"SELECT count(*) FROM recipients WHERE message_id = ? AND state = 'queued'";
static const char sql_delete_message[] = "DELETE FROM messages WHERE id = ?";

static int step(struct store_tx *tx, sqlite3_stmt *st, char *err, size_t errlen)
{
	if (st == NULL) {
		snprintf(err, errlen, "prepare failed: %s", sqlite3_errmsg(store_tx_db(tx)));
		return -1;
	}
	int rc = sqlite3_step(st);
	if (rc != SQLITE_DONE && rc != SQLITE_ROW) {
		snprintf(err, errlen, "%s", sqlite3_errmsg(store_tx_db(tx)));
		sqlite3_reset(st);
		return -1;
	}
	return rc;
}

static int add_event(struct store_tx *tx, const char *id, int64_t now, const char *kind,
		     const char *rcpt, const char *detail, char *err, size_t errlen)
{
	sqlite3_stmt *st = store_tx_stmt(tx, sql_event);
	if (st != NULL) {
		sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
		sqlite3_bind_int64(st, 2, now);
		sqlite3_bind_text(st, 3, kind, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 4, rcpt, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 5, detail, -1, SQLITE_STATIC);
	}
	return step(tx, st, err, errlen) < 0 ? -1 : 0;
}

/* Which recipients a report is about: failures the sender did not opt out
 * of (RFC 3461 4.1: NOTIFY without FAILURE, or NEVER, means no bounce), or
 * "relayed" notices owed for NOTIFY=SUCCESS. */
static bool reported(const struct record_rcpt *r, bool relayed)
{
	if (relayed)
		return r->relayed && r->outcome == RCPT_SENT;
	if (r->outcome != RCPT_BOUNCED)
		return false;
	return r->notify[0] == '\0' || strstr(r->notify, "FAILURE") != NULL;
}

/* Queues a bounce (or, relayed = true, a "relayed" notice) to the sender
 * about the recipients it concerns; never for a null sender, never about a
 * bounce (RFC 5321 6.1, SMTP-10). */
static int queue_dsn(struct store_tx *tx, struct record_op *op, bool relayed, char *err,
		     size_t errlen)
{
	size_t nb = 0, nfailed = 0;
	for (size_t i = 0; i < op->nrcpts; i++) {
		if (reported(&op->rcpts[i], relayed))
			nb++;
		if (!relayed && op->rcpts[i].outcome == RCPT_BOUNCED)
			nfailed++;
	}
	if (nb == 0) {
		if (nfailed > 0)
			log_info("delivery", "id=%s no bounce sent: NOTIFY asked for none", op->id);
		return 0;
	}
	if (op->sender[0] == '\0' || (op->flags & MSG_DSN)) {
		log_info("delivery", "id=%s no %s sent: the message has a null sender", op->id,
			 relayed ? "relayed notice" : "bounce");
		return 0;
	}
	struct dsn_recipient *dr = xcalloc(nb, sizeof(*dr));
	size_t k = 0;
	for (size_t i = 0; i < op->nrcpts; i++) {
		struct record_rcpt *r = &op->rcpts[i];
		if (!reported(r, relayed))
			continue;
		dr[k].address = r->address;
		dr[k].orcpt = r->orcpt[0] ? r->orcpt : NULL;
		dr[k].action = relayed ? "relayed" : "failed";
		dr[k].status = r->status;
		dr[k].diagnostic = r->reply;
		dr[k].remote_mta = op->remote_mta[0] ? op->remote_mta : NULL;
		dr[k].last_attempt = op->now;
		k++;
	}
	struct queued_message *m = xcalloc(1, sizeof(*m));
	qid_generate(m->id);
	char from[300];
	snprintf(from, sizeof(from), "MAILER-DAEMON@%s", op->hostname);
	struct dsn_params p = {
		.reporting_mta = op->hostname,
		.from_address = from,
		.original_sender = op->sender,
		.original_id = op->id,
		.envid = op->envid[0] ? op->envid : NULL,
		.ret_hdrs = strcmp(op->ret, "HDRS") == 0,
		.arrival = op->arrival,
		.message = op->body,
		.message_len = op->body_len,
		.flags = op->flags,
		.rcpts = dr,
		.nrcpts = nb,
		.now = op->now,
		.seed = m->id,
	};
	struct buf out;
	buf_init(&out, 0);
	int rc = dsn_build(&p, &out);
	free(dr);
	if (rc < 0) {
		buf_free(&out);
		free(m);
		snprintf(err, errlen, "cannot build the bounce message");
		return -1;
	}
	m->sender = xstrdup("");
	strlist_add(&m->rcpts, op->sender);
	/* A bounce about a REQUIRETLS message is redacted (headers only) and
	 * so sent without REQUIRETLS (decision D7); it keeps SMTPUTF8. */
	m->flags = MSG_DSN | (op->flags & MSG_SMTPUTF8);
	if (op->flags & MSG_TLS_REQUIRED_NO)
		m->flags |= MSG_TLS_REQUIRED_NO;
	m->body = buf_steal(&out, &m->body_len);
	if (!str_is_ascii(m->body, m->body_len))
		m->flags |= MSG_HAS_8BIT;
	m->arrival = op->now;
	m->client_addr = xstrdup("");
	m->client_helo = xstrdup("");
	m->client_tls = xstrdup("");
	m->auth_user = xstrdup("");
	rc = store_exec_enqueue(tx, m, err, errlen);
	if (rc == 0) {
		char detail[128];
		snprintf(detail, sizeof(detail), "%s queued as %s",
			 relayed ? "relayed notice" : "bounce", m->id);
		rc = add_event(tx, op->id, op->now, "dsn", "", detail, err, errlen);
		log_info("delivery", "id=%s %s to <%s> queued as %s", op->id,
			 relayed ? "relayed notice" : "bounce", op->sender, m->id);
	}
	queued_message_free(m);
	free(m);
	return rc;
}

static int record_exec(struct store_tx *tx, void *data, char *err, size_t errlen)
{
	struct record_op *op = data;
	for (size_t i = 0; i < op->nrcpts; i++) {
		struct record_rcpt *r = &op->rcpts[i];
		if (r->outcome == RCPT_PENDING)
			continue;
		/* Deferred for the last time: the message has been here too long. */
		if (r->outcome == RCPT_DEFERRED &&
		    retry_expired(op->arrival, op->now, op->max_lifetime)) {
			char reply[512];
			snprintf(reply, sizeof(reply), "message expired in the queue; last error: %s",
				 r->reply);
			snprintf(r->reply, sizeof(r->reply), "%s", reply);
			snprintf(r->status, sizeof(r->status), "5.4.7");
			r->outcome = RCPT_BOUNCED;
			log_info("delivery", "id=%s to=<%s> status=bounced dsn=5.4.7 reason=expired", op->id,
				 r->address);
		}
		const char *sql = r->outcome == RCPT_SENT       ? sql_sent
				  : r->outcome == RCPT_DEFERRED ? sql_deferred
								: sql_bounced;
		sqlite3_stmt *st = store_tx_stmt(tx, sql);
		if (st != NULL) {
			char reply[600];
			snprintf(reply, sizeof(reply), "%s%s%s", r->status, r->status[0] ? " " : "",
				 r->reply);
			sqlite3_bind_int64(st, 1, r->rowid);
			sqlite3_bind_int64(st, 2, op->now);
			sqlite3_bind_text(st, 3, reply, -1, SQLITE_TRANSIENT);
			sqlite3_bind_text(st, 4, op->via, -1, SQLITE_STATIC);
			if (r->outcome == RCPT_DEFERRED)
				sqlite3_bind_int64(st, 5,
						   op->now + retry_delay(op->schedule, op->nschedule,
									 r->attempts + 1));
		}
		if (step(tx, st, err, errlen) < 0)
			return -1;
		const char *kind = r->outcome == RCPT_SENT       ? "sent"
				   : r->outcome == RCPT_DEFERRED ? "deferred"
								 : "bounced";
		char detail[700];
		snprintf(detail, sizeof(detail), "via=%s status=%s reply=%s", op->via, r->status,
			 r->reply);
		if (add_event(tx, op->id, op->now, kind, r->address, detail, err, errlen) < 0)
			return -1;
	}
	if (queue_dsn(tx, op, false, err, errlen) < 0 || queue_dsn(tx, op, true, err, errlen) < 0)
		return -1;
	sqlite3_stmt *st = store_tx_stmt(tx, sql_remaining);
	if (st != NULL)
		sqlite3_bind_text(st, 1, op->id, -1, SQLITE_STATIC);
	if (step(tx, st, err, errlen) != SQLITE_ROW)
		return -1;
	long long remaining = sqlite3_column_int64(st, 0);
	sqlite3_reset(st);
	if (remaining == 0) {
		/* Every recipient is final: the message leaves the queue (its
		 * history stays in events for `queue show`). */
		st = store_tx_stmt(tx, sql_delete_message);
		if (st != NULL)
			sqlite3_bind_text(st, 1, op->id, -1, SQLITE_STATIC);
		if (step(tx, st, err, errlen) < 0)
			return -1;
		if (add_event(tx, op->id, op->now, "removed", "", "all recipients done", err,
			      errlen) < 0)
			return -1;
	}
	return 0;
}

static void record_free(struct record_op *op)
{
	for (size_t i = 0; i < op->nrcpts; i++) {
		free(op->rcpts[i].address);
		free(op->rcpts[i].notify);
		free(op->rcpts[i].orcpt);
	}
	free(op->rcpts);
	free(op->sender);
	free(op->ret);
	free(op->envid);
	free(op->via);
	free(op->remote_mta);
	free(op->schedule);
	free(op->hostname);
	free(op->body);
	free(op);
}

static void record_done(void *arg, int status, const char *error)
{
	struct record_op *op = arg;
	if (status != 0)
		log_error("delivery", "id=%s cannot record the delivery outcome: %s (the message stays queued and will be tried again)",
			  op->id, error ? error : "?");
	for (size_t i = 0; status == 0 && i < op->nrcpts; i++)
		metrics_count_outcome(op->rcpts[i].outcome, op->rcpts[i].status,
				      op->sender[0] != '\0' && (op->flags & (MSG_REQUIRETLS | MSG_REQUIRETLS_RULE)));
	if (op->done != NULL)
		op->done(op->arg, status, error);
	record_free(op);
}

void delivery_record(struct store *st, const struct config *cfg, const struct delivery_job *job,
		     int64_t now, store_done_fn done, void *arg)
{
	struct record_op *op = xcalloc(1, sizeof(*op));
	const struct msg_body *m = job->msg;
	memcpy(op->id, m->id, sizeof(op->id));
	op->sender = xstrdup(m->sender);
	op->flags = m->flags;
	op->arrival = m->arrival;
	op->ret = xstrdup(m->ret ? m->ret : "");
	op->envid = xstrdup(m->envid ? m->envid : "");
	op->now = now;
	op->via = xstrdup(job->via);
	op->remote_mta = xstrdup(job->remote_mta);
	op->rcpts = xcalloc(job->nrcpts ? job->nrcpts : 1, sizeof(*op->rcpts));
	op->nrcpts = job->nrcpts;
	bool may_bounce = false;
	for (size_t i = 0; i < job->nrcpts; i++) {
		const struct job_rcpt *r = &job->rcpts[i];
		struct record_rcpt *o = &op->rcpts[i];
		o->rowid = r->rowid;
		o->address = xstrdup(r->address);
		o->notify = xstrdup(r->notify ? r->notify : "");
		o->orcpt = xstrdup(r->orcpt ? r->orcpt : "");
		o->relayed = r->relayed;
		o->attempts = r->attempts;
		o->outcome = r->outcome;
		memcpy(o->status, r->status, sizeof(o->status));
		memcpy(o->reply, r->reply, sizeof(o->reply));
		if (r->outcome == RCPT_BOUNCED || r->outcome == RCPT_DEFERRED || r->relayed)
			may_bounce = true;
	}
	op->nschedule = cfg->queue.nretry_schedule;
	op->schedule = xcalloc(op->nschedule ? op->nschedule : 1, sizeof(*op->schedule));
	for (size_t i = 0; i < op->nschedule; i++)
		op->schedule[i] = cfg->queue.retry_schedule[i];
	op->max_lifetime = cfg->queue.max_lifetime;
	op->hostname = xstrdup(cfg->server.hostname);
	if (may_bounce && m->sender[0] != '\0') {
		op->body = xmalloc(m->len + 1);
		memcpy(op->body, m->data, m->len);
		op->body_len = m->len;
	}
	op->done = done;
	op->arg = arg;
	store_submit(st, record_exec, op, record_done, op);
}

/* --- TLS session records ------------------------------------------------- */

static const char sql_tls[] =
	"INSERT INTO tls_sessions (time, policy_domain, policy_type, mx_host, mx_ip, mx_helo,"
	" sending_ip, starttls_offered, tls, verified, result_type, tls_version, cipher, detail,"
	" tls_required_no, policy_strings, policy_mx)"
	" VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";

static int tls_exec(struct store_tx *tx, void *data, char *err, size_t errlen)
{
	const struct tls_session_record *r = data;
	sqlite3_stmt *st = store_tx_stmt(tx, sql_tls);
	if (st != NULL) {
		sqlite3_bind_int64(st, 1, r->time);
		sqlite3_bind_text(st, 2, r->policy_domain, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 3, r->policy_type, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 4, r->mx_host, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 5, r->mx_ip, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 6, r->mx_helo, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 7, r->sending_ip, -1, SQLITE_STATIC);
		sqlite3_bind_int(st, 8, r->starttls_offered);
		sqlite3_bind_int(st, 9, r->tls);
		sqlite3_bind_int(st, 10, r->verified);
		sqlite3_bind_text(st, 11, r->result_type, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 12, r->tls_version, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 13, r->cipher, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 14, r->detail, -1, SQLITE_STATIC);
		sqlite3_bind_int(st, 15, r->tls_required_no);
		sqlite3_bind_text(st, 16, r->policy_strings, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 17, r->policy_mx, -1, SQLITE_STATIC);
	}
	return step(tx, st, err, errlen) < 0 ? -1 : 0;
}

static void tls_done(void *arg, int status, const char *error)
{
	if (status != 0)
		log_error("delivery", "cannot record a TLS session result: %s", error ? error : "?");
	else
		metrics_count_tls(((const struct tls_session_record *)arg)->result_type);
	free(arg);
}

void tls_session_record(struct store *st, const struct tls_session_record *rec)
{
	struct tls_session_record *copy = xmalloc(sizeof(*copy));
	*copy = *rec;
	store_submit(st, tls_exec, copy, tls_done, copy);
}
