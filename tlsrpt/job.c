/* job.c - see job.h */
#include "job.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mta/https.h"
#include "mta/log.h"
#include "policy/resolver.h"
#include "queue/message.h"
#include "queue/store.h"
#include "tlsrpt/dkim.h"
#include "tlsrpt/mail.h"
#include "tlsrpt/record.h"
#include "tlsrpt/report.h"

#define HTTPS_TIMEOUT_MS 60000
/* Often enough for the first HTTPS retry (10 min); the check is cheap. */
#define CHECK_INTERVAL_MS (600 * 1000)
#define FIRST_CHECK_MS 5000

/* HTTPS retries: after 10 min, 30 min, 1 h, 2 h, 4 h, 8 h (RPT-28). */
static const int64_t retry_delays[] = { 600, 1800, 3600, 7200, 14400, 28800 };

int64_t tlsrpt_day_start(int64_t t)
{
	return t - ((t % 86400) + 86400) % 86400;
}

static void day_text(int64_t day, char *dst, size_t dstlen)
{
	char iso[40];
	fmt_time_iso(iso, sizeof(iso), day);
	snprintf(dst, dstlen, "%.10s", iso);
}

/* --- one run: the sessions of one day ------------------------------------- */

struct row {
	char *policy_domain, *policy_type, *mx_host, *mx_ip, *mx_helo, *sending_ip;
	char *result_type, *detail, *policy_strings, *policy_mx;
	int64_t time;
	bool starttls_offered, tls;
};

/* One delivery of one report, to one rua. */
struct delivery {
	int64_t rowid;           /* tlsrpt_deliveries.id, once saved */
	char *rua;
	bool https;
	char *mail_to;           /* the decoded mailto address */
	char queue_id[QID_LEN + 1];
	const char *state;       /* "pending", "sent", "queued", "failed" */
	char result[300];
};

struct run {
	struct tlsrpt_env env;
	struct tlsrpt_opts opts;
	char *out_dir;
	int64_t day;
	char day_text[16];
	tlsrpt_done_cb *done;
	void *arg;
	struct tlsrpt_summary sum;
	sqlite3 *db;
	struct store_tx *tx;
	struct row *rows;
	size_t nrows;
	size_t next;             /* first row of the next domain */
	/* the domain being reported */
	size_t first, count;
	char domain[256];
	struct dns_query *txtq;
	struct https_op *op;
	struct tlsrpt_record rec;
	bool have_rec;
	char *report_id;
	char *filename;
	struct buf gz;
	char *json_pretty;
	int64_t report_rowid;
	struct delivery *dv;
	size_t ndv;
	size_t posting;          /* index of the HTTPS delivery in flight */
	bool saving;             /* a store write refers to this run */
	bool aborted;            /* stop: finish as soon as nothing refers to us */
	struct run **owner;      /* the daemon's pointer to this run, cleared at the end */
};

static void next_domain(struct run *r);

static void rows_free(struct run *r)
{
	for (size_t i = 0; i < r->nrows; i++) {
		struct row *w = &r->rows[i];
		free(w->policy_domain);
		free(w->policy_type);
		free(w->mx_host);
		free(w->mx_ip);
		free(w->mx_helo);
		free(w->sending_ip);
		free(w->result_type);
		free(w->detail);
		free(w->policy_strings);
		free(w->policy_mx);
	}
	free(r->rows);
	r->rows = NULL;
	r->nrows = 0;
}

static void domain_reset(struct run *r)
{
	if (r->have_rec)
		tlsrpt_record_free(&r->rec);
	r->have_rec = false;
	free(r->report_id);
	free(r->filename);
	free(r->json_pretty);
	r->report_id = r->filename = r->json_pretty = NULL;
	buf_free(&r->gz);
	for (size_t i = 0; i < r->ndv; i++) {
		free(r->dv[i].rua);
		free(r->dv[i].mail_to);
	}
	free(r->dv);
	r->dv = NULL;
	r->ndv = 0;
	r->report_rowid = 0;
}

static void run_finish(struct run *r)
{
	if (r->owner != NULL)
		*r->owner = NULL;
	domain_reset(r);
	rows_free(r);
	store_tx_free(r->tx);
	sqlite3_close(r->db);
	char d[16];
	snprintf(d, sizeof(d), "%s", r->day_text);
	log_info("tlsrpt", "day=%s done domains=%u reports=%u delivered=%u pending=%u no_rua=%u skipped=%u errors=%u",
		 d, r->sum.domains, r->sum.reports, r->sum.delivered, r->sum.pending, r->sum.no_rua,
		 r->sum.skipped, r->sum.errors);
	tlsrpt_done_cb *done = r->done;
	void *arg = r->arg;
	struct tlsrpt_summary sum = r->sum;
	free(r->out_dir);
	free(r);
	if (done != NULL)
		done(arg, &sum);
}

static char *col(sqlite3_stmt *st, int i)
{
	const unsigned char *t = sqlite3_column_text(st, i);
	return xstrdup(t ? (const char *)t : "");
}

static int load_rows(struct run *r, char *err, size_t errlen)
{
	/* Sessions under TLS-Required: No (report mail among them) are never
	 * counted (RPT-13, RPT-27). */
	static const char sql[] =
		"SELECT time, policy_domain, policy_type, mx_host, mx_ip, mx_helo, sending_ip,"
		" starttls_offered, tls, result_type, detail, policy_strings, policy_mx"
		" FROM tls_sessions WHERE time >= ?1 AND time < ?2 AND tls_required_no = 0"
		" AND policy_domain != '' ORDER BY policy_domain, id";
	sqlite3_stmt *st = store_tx_stmt(r->tx, sql);
	if (st == NULL) {
		snprintf(err, errlen, "reading TLS results: %s", sqlite3_errmsg(r->db));
		return -1;
	}
	sqlite3_bind_int64(st, 1, r->day);
	sqlite3_bind_int64(st, 2, r->day + 86400);
	size_t cap = 0;
	while (sqlite3_step(st) == SQLITE_ROW) {
		if (r->nrows == cap) {
			cap = cap ? cap * 2 : 64;
			r->rows = xrealloc(r->rows, cap * sizeof(*r->rows));
		}
		struct row *w = &r->rows[r->nrows++];
		w->time = sqlite3_column_int64(st, 0);
		w->policy_domain = col(st, 1);
		str_lower(w->policy_domain);
		w->policy_type = col(st, 2);
		w->mx_host = col(st, 3);
		w->mx_ip = col(st, 4);
		w->mx_helo = col(st, 5);
		w->sending_ip = col(st, 6);
		w->starttls_offered = sqlite3_column_int(st, 7) != 0;
		w->tls = sqlite3_column_int(st, 8) != 0;
		w->result_type = col(st, 9);
		w->detail = col(st, 10);
		w->policy_strings = col(st, 11);
		w->policy_mx = col(st, 12);
	}
	sqlite3_reset(st);
	return 0;
}

static bool already_reported(struct run *r)
{
	static const char sql[] =
		"SELECT count(*) FROM tlsrpt_reports WHERE day = ? AND policy_domain = ?";
	sqlite3_stmt *st = store_tx_stmt(r->tx, sql);
	if (st == NULL)
		return false;
	sqlite3_bind_int64(st, 1, r->day);
	sqlite3_bind_text(st, 2, r->domain, -1, SQLITE_STATIC);
	bool done = sqlite3_step(st) == SQLITE_ROW && sqlite3_column_int(st, 0) > 0;
	sqlite3_reset(st);
	return done;
}

/* --- saving and updating (store writer) ------------------------------------- */

struct save_op {
	struct run *r;
	/* copies, so the writer thread never reads the run */
	int64_t day;
	char *domain, *report_id, *filename, *state, *detail;
	char *report;
	size_t report_len;
	size_t ndv;
	char **rua;
	bool *https;
	struct queued_message **mail; /* per delivery: the mail to queue, or NULL */
	int64_t *rowids;              /* out: tlsrpt_deliveries ids */
	int64_t report_rowid;         /* out */
};

static const char sql_ins_report[] =
	"INSERT INTO tlsrpt_reports (day, policy_domain, report_id, filename, created, report, state,"
	" detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?)";
static const char sql_ins_delivery[] =
	"INSERT INTO tlsrpt_deliveries (report, rua, kind, state, next_attempt, queue_id)"
	" VALUES (?, ?, ?, ?, ?, ?)";

static int save_exec(struct store_tx *tx, void *data, char *err, size_t errlen)
{
	struct save_op *op = data;
	int64_t now = now_unix();
	sqlite3_stmt *st = store_tx_stmt(tx, sql_ins_report);
	if (st != NULL) {
		sqlite3_bind_int64(st, 1, op->day);
		sqlite3_bind_text(st, 2, op->domain, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 3, op->report_id, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 4, op->filename, -1, SQLITE_STATIC);
		sqlite3_bind_int64(st, 5, now);
		sqlite3_bind_blob64(st, 6, op->report, op->report_len, SQLITE_STATIC);
		sqlite3_bind_text(st, 7, op->state, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 8, op->detail, -1, SQLITE_STATIC);
	}
	if (store_tx_step_done(tx, st, err, errlen) < 0)
		return -1;
	op->report_rowid = sqlite3_last_insert_rowid(store_tx_db(tx));
	for (size_t i = 0; i < op->ndv; i++) {
		/* A report mail is queued in the same transaction as its record. */
		if (op->mail[i] != NULL && store_exec_enqueue(tx, op->mail[i], err, errlen) < 0)
			return -1;
		st = store_tx_stmt(tx, sql_ins_delivery);
		if (st != NULL) {
			sqlite3_bind_int64(st, 1, op->report_rowid);
			sqlite3_bind_text(st, 2, op->rua[i], -1, SQLITE_STATIC);
			sqlite3_bind_text(st, 3, op->https[i] ? "https" : "mailto", -1, SQLITE_STATIC);
			sqlite3_bind_text(st, 4,
					  op->https[i] ? "pending" : op->mail[i] ? "queued" : "failed", -1,
					  SQLITE_STATIC);
			sqlite3_bind_int64(st, 5, now);
			sqlite3_bind_text(st, 6, op->mail[i] ? op->mail[i]->id : "", -1, SQLITE_STATIC);
		}
		if (store_tx_step_done(tx, st, err, errlen) < 0)
			return -1;
		op->rowids[i] = sqlite3_last_insert_rowid(store_tx_db(tx));
	}
	return 0;
}

static void save_op_free(struct save_op *op)
{
	free(op->domain);
	free(op->report_id);
	free(op->filename);
	free(op->state);
	free(op->detail);
	free(op->report);
	for (size_t i = 0; i < op->ndv; i++) {
		free(op->rua[i]);
		if (op->mail[i] != NULL) {
			queued_message_free(op->mail[i]);
			free(op->mail[i]);
		}
	}
	free(op->rua);
	free(op->https);
	free(op->mail);
	free(op->rowids);
	free(op);
}

/* Updates one delivery and its report's state after an HTTPS attempt. */
struct update_op {
	int64_t delivery, report;
	char *state;
	char *result;
	int64_t next_attempt;
	struct run *run; /* a run waiting for the commit, or NULL (retries) */
};

static int update_exec(struct store_tx *tx, void *data, char *err, size_t errlen)
{
	struct update_op *op = data;
	static const char sql_dv[] =
		"UPDATE tlsrpt_deliveries SET state = ?2, attempts = attempts + 1, last_result = ?3,"
		" next_attempt = ?4 WHERE id = ?1";
	/* RPT-03: delivered once any endpoint took it; failed once all gave up */
	static const char sql_rep[] =
		"UPDATE tlsrpt_reports SET state = CASE"
		" WHEN EXISTS (SELECT 1 FROM tlsrpt_deliveries WHERE report = ?1 AND state IN ('sent', 'queued')) THEN 'sent'"
		" WHEN EXISTS (SELECT 1 FROM tlsrpt_deliveries WHERE report = ?1 AND state = 'pending') THEN 'pending'"
		" ELSE 'failed' END WHERE id = ?1";
	sqlite3_stmt *st = store_tx_stmt(tx, sql_dv);
	if (st != NULL) {
		sqlite3_bind_int64(st, 1, op->delivery);
		sqlite3_bind_text(st, 2, op->state, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 3, op->result, -1, SQLITE_STATIC);
		sqlite3_bind_int64(st, 4, op->next_attempt);
	}
	if (store_tx_step_done(tx, st, err, errlen) < 0)
		return -1;
	st = store_tx_stmt(tx, sql_rep);
	if (st != NULL)
		sqlite3_bind_int64(st, 1, op->report);
	return store_tx_step_done(tx, st, err, errlen);
}

static void post_next(struct run *r);

static void update_done(void *arg, int status, const char *error)
{
	struct update_op *op = arg;
	struct run *r = op->run;
	if (status != 0)
		log_error("tlsrpt", "cannot record a report delivery: %s", error ? error : "?");
	free(op->state);
	free(op->result);
	free(op);
	if (r == NULL)
		return;
	/* The run goes on only once the outcome is on disk, so its "done" line
	 * describes committed state. */
	r->saving = false;
	if (r->aborted)
		run_finish(r);
	else
		post_next(r);
}

/* Records an HTTPS attempt; with run set, the run continues (post_next)
 * once it is committed. */
static void record_attempt(struct store *st, struct run *run, int64_t delivery, int64_t report,
			   const char *state, const char *result, int64_t next_attempt)
{
	struct update_op *op = xcalloc(1, sizeof(*op));
	op->run = run;
	if (run != NULL)
		run->saving = true;
	op->delivery = delivery;
	op->report = report;
	op->state = xstrdup(state);
	op->result = xstrdup(result);
	op->next_attempt = next_attempt;
	store_submit(st, update_exec, op, update_done, op);
}

/* The state after an HTTPS answer: 2xx is delivered (RPT-22), anything else
 * is retried with back-off until the window closes. */
static const char *https_outcome(const struct https_response *res, int attempts, int64_t created,
				 int64_t now, int64_t *next, char *result, size_t resultlen)
{
	if (res->error == HTTPS_OK)
		snprintf(result, resultlen, "HTTP %d", res->status);
	else
		snprintf(result, resultlen, "%s: %s", https_error_name(res->error), res->detail);
	if (res->error == HTTPS_OK && res->status >= 200 && res->status < 300) {
		*next = now;
		return "sent";
	}
	size_t i = (size_t)attempts < SR_ARRAY_LEN(retry_delays) ? (size_t)attempts
								 : SR_ARRAY_LEN(retry_delays) - 1;
	*next = now + retry_delays[i];
	return *next > created + TLSRPT_RETRY_WINDOW ? "failed" : "pending";
}

/* Splits "https://host[:port]/path" for the HTTPS client. */
static int split_https(const char *uri, char *host, size_t hostlen, uint16_t *port, char *path,
		       size_t pathlen)
{
	if (!str_iprefix(uri, "https://"))
		return -1;
	const char *h = uri + 8;
	const char *slash = strchr(h, '/');
	size_t hl = slash ? (size_t)(slash - h) : strlen(h);
	char hp[300];
	if (hl == 0 || hl >= sizeof(hp))
		return -1;
	memcpy(hp, h, hl);
	hp[hl] = '\0';
	*port = 443;
	char *colon = strrchr(hp, ':');
	if (colon != NULL && strchr(hp, ']') == NULL) {
		long p = strtol(colon + 1, NULL, 10);
		if (p <= 0 || p > 65535)
			return -1;
		*port = (uint16_t)p;
		*colon = '\0';
	}
	snprintf(host, hostlen, "%s", hp);
	snprintf(path, pathlen, "%s", slash ? slash : "/");
	return 0;
}

/* --- posting ---------------------------------------------------------------- */

static void on_posted(void *arg, const struct https_response *res)
{
	struct run *r = arg;
	r->op = NULL;
	struct delivery *d = &r->dv[r->posting];
	int64_t now = now_unix(), next;
	d->state = https_outcome(res, 0, now, now, &next, d->result, sizeof(d->result));
	log_info("tlsrpt", "day=%s domain=%s report_id=%s rua=%s status=%s result=\"%s\"", r->day_text,
		 r->domain, r->report_id, d->rua, d->state, d->result);
	r->posting++;
	record_attempt(r->env.store, r, d->rowid, r->report_rowid, d->state, d->result, next);
}

static void post_next(struct run *r)
{
	while (r->posting < r->ndv && !r->dv[r->posting].https)
		r->posting++;
	if (r->posting >= r->ndv) {
		if (r->ndv == 0) { /* no usable record: nothing to deliver */
			next_domain(r);
			return;
		}
		bool ok = false, pending = false;
		for (size_t i = 0; i < r->ndv; i++) {
			ok |= strcmp(r->dv[i].state, "sent") == 0 || strcmp(r->dv[i].state, "queued") == 0;
			pending |= strcmp(r->dv[i].state, "pending") == 0;
		}
		if (ok)
			r->sum.delivered++;
		else if (pending)
			r->sum.pending++;
		else
			r->sum.errors++;
		next_domain(r);
		return;
	}
	struct delivery *d = &r->dv[r->posting];
	char host[256], path[1024];
	uint16_t port;
	if (split_https(d->rua, host, sizeof(host), &port, path, sizeof(path)) < 0) {
		d->state = "failed";
		snprintf(d->result, sizeof(d->result), "not an https URI");
		r->posting++;
		record_attempt(r->env.store, r, d->rowid, r->report_rowid, d->state, d->result,
			       now_unix());
		return;
	}
	struct https_request req = {
		.method = "POST",
		.host = host,
		.port = port,
		.path = path,
		.content_type = "application/tlsrpt+gzip",
		.body = r->gz.data,
		.body_len = r->gz.len,
		.max_body = 65536,
		.timeout_ms = HTTPS_TIMEOUT_MS,
		.user_agent = "strictrelay/" STRICTRELAY_VERSION,
	};
	r->op = https_request(r->env.https, &req, on_posted, r);
}

static void on_saved(void *arg, int status, const char *error)
{
	struct save_op *op = arg;
	struct run *r = op->r;
	r->saving = false;
	if (r->aborted) {
		/* HTTPS deliveries stay pending and are retried after a restart */
		save_op_free(op);
		run_finish(r);
		return;
	}
	if (status != 0) {
		log_error("tlsrpt", "day=%s domain=%s cannot record the report: %s", r->day_text,
			  r->domain, error ? error : "?");
		r->sum.errors++;
		save_op_free(op);
		next_domain(r);
		return;
	}
	r->report_rowid = op->report_rowid;
	bool queued = false;
	for (size_t i = 0; i < r->ndv; i++) {
		r->dv[i].rowid = op->rowids[i];
		if (!r->dv[i].https) {
			queued = true;
			log_info("tlsrpt", "day=%s domain=%s report_id=%s rua=%s status=queued id=%s",
				 r->day_text, r->domain, r->report_id, r->dv[i].rua, r->dv[i].queue_id);
		}
	}
	save_op_free(op);
	if (queued && r->env.queued != NULL)
		r->env.queued(r->env.queued_arg);
	r->posting = 0;
	post_next(r);
}

/* --- building --------------------------------------------------------------- */

static struct queued_message *report_mail(struct run *r, const char *to, const char *submitter,
					  char *err, size_t errlen)
{
	const struct config *cfg = r->env.cfg;
	char from[300];
	if (cfg->tlsrpt.report_from[0] != '\0')
		snprintf(from, sizeof(from), "%s", cfg->tlsrpt.report_from);
	else
		snprintf(from, sizeof(from), "tlsrpt-noreply@%s", cfg->server.hostname);
	struct queued_message *m = xcalloc(1, sizeof(*m));
	qid_generate(m->id);
	char summary[600];
	snprintf(summary, sizeof(summary),
		 "This is an aggregate TLS report (RFC 8460) from %s for the policy domain %s,\r\n"
		 "covering %s (UTC). The report is attached as %s.\r\n",
		 submitter, r->domain, r->day_text, r->filename);
	struct tlsrpt_mail_params p = {
		.from = from,
		.to = to,
		.policy_domain = r->domain,
		.submitter = submitter,
		.report_id = r->report_id,
		.report = (const unsigned char *)r->gz.data,
		.report_len = r->gz.len,
		.filename = r->filename,
		.summary = summary,
		.now = now_unix(),
		.seed = m->id,
	};
	struct buf out;
	buf_init(&out, 0);
	int rc = r->env.dkim != NULL
			 ? tlsrpt_mail_sign(&p, r->env.dkim, cfg->tlsrpt.dkim_domain,
					    cfg->tlsrpt.dkim_selector, &out, err, errlen)
			 : tlsrpt_mail_build(&p, &out, err, errlen);
	if (rc < 0) {
		buf_free(&out);
		free(m);
		return NULL;
	}
	m->sender = xstrdup(from);
	strlist_add(&m->rcpts, to);
	/* RPT-27: reports go out even when TLS fails, never with REQUIRETLS, and
	 * their sessions are not counted in the next report. */
	m->flags = MSG_TLSRPT | MSG_TLS_REQUIRED_NO;
	m->body = buf_steal(&out, &m->body_len);
	m->arrival = now_unix();
	m->client_addr = xstrdup("");
	m->client_helo = xstrdup("");
	m->client_tls = xstrdup("");
	m->auth_user = xstrdup("");
	m->ret = xstrdup("");
	m->envid = xstrdup("");
	return m;
}

static int write_file(struct run *r)
{
	if (r->out_dir == NULL)
		return 0;
	char path[4096];
	snprintf(path, sizeof(path), "%s/%s", r->out_dir, r->filename);
	FILE *f = fopen(path, "wb");
	if (f == NULL || fwrite(r->gz.data, 1, r->gz.len, f) != r->gz.len) {
		log_error("tlsrpt", "cannot write %s: %s", path, strerror(errno));
		if (f != NULL)
			fclose(f);
		return -1;
	}
	fclose(f);
	log_info("tlsrpt", "day=%s domain=%s wrote %s", r->day_text, r->domain, path);
	return 0;
}

static void build_and_send(struct run *r)
{
	const struct config *cfg = r->env.cfg;
	const char *contact = cfg->tlsrpt.contact_info;
	if (str_iprefix(contact, "mailto:"))
		contact += 7; /* contact-info is an addr-spec (RFC 8460 4.4) */
	char *submitter = tlsrpt_contact_domain(contact);
	if (submitter == NULL) {
		log_error("tlsrpt", "[tlsrpt] contact_info \"%s\" is not a mailbox: no reports", contact);
		r->sum.errors++;
		next_domain(r);
		return;
	}
	unsigned char rnd[TLSRPT_ID_RANDOM];
	random_bytes(rnd, sizeof(rnd));
	r->report_id = tlsrpt_report_id(r->day, r->domain, submitter, rnd);
	struct tlsrpt_session *s = xcalloc(r->count, sizeof(*s));
	for (size_t i = 0; i < r->count; i++) {
		const struct row *w = &r->rows[r->first + i];
		s[i] = (struct tlsrpt_session){
			.time = w->time,
			.policy_domain = w->policy_domain,
			.policy_type = w->policy_type,
			.mx_host = w->mx_host,
			.mx_ip = w->mx_ip,
			.mx_helo = w->mx_helo,
			.sending_ip = w->sending_ip,
			.starttls_offered = w->starttls_offered,
			.tls = w->tls,
			.result_type = w->result_type,
			.detail = w->detail,
			.policy_strings = w->policy_strings,
			.policy_mx = w->policy_mx,
		};
	}
	struct tlsrpt_report_params p = {
		.organization_name = cfg->tlsrpt.organization_name[0] ? cfg->tlsrpt.organization_name
								     : cfg->server.hostname,
		.contact_info = contact,
		.report_id = r->report_id,
		.policy_domain = r->domain,
		.start = r->day,
		.end = r->day + 86400,
	};
	struct tlsrpt_report rep;
	char why[300];
	int rc = tlsrpt_report_build(&p, s, r->count, &rep, why, sizeof(why));
	free(s);
	if (rc < 0) {
		log_error("tlsrpt", "day=%s domain=%s cannot build the report: %s", r->day_text,
			  r->domain, why);
		free(submitter);
		r->sum.errors++;
		next_domain(r);
		return;
	}
	struct buf json;
	buf_init(&json, 0);
	tlsrpt_report_json(&rep, &json, false);
	buf_init(&r->gz, 0);
	tlsrpt_gzip(json.data, json.len, &r->gz);
	buf_free(&json);
	tlsrpt_report_free(&rep);
	/* the file name's unique-id: the random part of the report-id */
	char uid[2 * TLSRPT_ID_RANDOM + 1];
	for (size_t i = 0; i < TLSRPT_ID_RANDOM; i++)
		snprintf(uid + 2 * i, 3, "%02x", rnd[i]);
	r->filename = tlsrpt_report_filename(submitter, r->domain, r->day, r->day + 86400, uid, true,
					     why, sizeof(why));
	if (r->filename == NULL) {
		log_error("tlsrpt", "day=%s domain=%s bad file name: %s", r->day_text, r->domain, why);
		free(submitter);
		r->sum.errors++;
		next_domain(r);
		return;
	}
	r->sum.reports++;
	write_file(r);
	if (!r->opts.send || !r->have_rec) {
		if (!r->have_rec && r->opts.send) {
			/* no usable record: remember the day is done for it */
			r->sum.no_rua++;
		}
		if (!r->opts.send) {
			free(submitter);
			next_domain(r);
			return;
		}
	}

	/* Record the report and its deliveries; queue the mail ones. */
	struct save_op *op = xcalloc(1, sizeof(*op));
	op->r = r;
	op->day = r->day;
	op->domain = xstrdup(r->domain);
	op->report_id = xstrdup(r->report_id);
	op->filename = xstrdup(r->filename);
	op->report = xmalloc(r->gz.len);
	memcpy(op->report, r->gz.data, r->gz.len);
	op->report_len = r->gz.len;
	op->detail = xstrdup("");
	if (r->have_rec) {
		r->ndv = r->rec.nrua;
		r->dv = xcalloc(r->ndv ? r->ndv : 1, sizeof(*r->dv));
		op->ndv = r->ndv;
		op->rua = xcalloc(r->ndv ? r->ndv : 1, sizeof(*op->rua));
		op->https = xcalloc(r->ndv ? r->ndv : 1, sizeof(*op->https));
		op->mail = xcalloc(r->ndv ? r->ndv : 1, sizeof(*op->mail));
		op->rowids = xcalloc(r->ndv ? r->ndv : 1, sizeof(*op->rowids));
		for (size_t i = 0; i < r->ndv; i++) {
			const struct tlsrpt_rua *u = &r->rec.rua[i];
			struct delivery *d = &r->dv[i];
			d->rua = xstrdup(u->uri);
			d->https = u->kind == TLSRPT_RUA_HTTPS;
			d->state = d->https ? "pending" : "queued";
			op->rua[i] = xstrdup(u->uri);
			op->https[i] = d->https;
			if (!d->https) {
				char err[300];
				d->mail_to = xstrdup(u->addr);
				op->mail[i] = report_mail(r, u->addr, submitter, err, sizeof(err));
				if (op->mail[i] == NULL) {
					log_error("tlsrpt", "day=%s domain=%s rua=%s cannot build the mail: %s",
						  r->day_text, r->domain, u->uri, err);
					d->state = "failed";
				} else {
					snprintf(d->queue_id, sizeof(d->queue_id), "%s", op->mail[i]->id);
				}
			}
		}
	} else {
		op->rowids = xcalloc(1, sizeof(*op->rowids));
		op->rua = xcalloc(1, sizeof(*op->rua));
		op->https = xcalloc(1, sizeof(*op->https));
		op->mail = xcalloc(1, sizeof(*op->mail));
	}
	/* A mail handed to the queue counts as delivered (RPT-03); HTTPS
	 * attempts update the state as they finish. */
	bool queued = false;
	for (size_t i = 0; i < op->ndv; i++)
		queued |= op->mail[i] != NULL;
	op->state = xstrdup(!r->have_rec ? "no-rua" : queued ? "sent" : "pending");
	free(submitter);
	r->saving = true;
	store_submit(r->env.store, save_exec, op, on_saved, op);
}

static void on_rua_txt(void *arg, const struct dns_result *res)
{
	struct run *r = arg;
	r->txtq = NULL;
	char why[300] = "";
	if (res->status == DNS_OK &&
	    tlsrpt_txt_select(&res->txt, &r->rec, why, sizeof(why)) == TLSRPT_TXT_OK) {
		r->have_rec = true;
	} else if (res->status == DNS_TEMPFAIL) {
		/* Try again on the next check rather than record "no rua". */
		log_warn("tlsrpt", "day=%s domain=%s _smtp._tls lookup failed: %s; will try again",
			 r->day_text, r->domain, res->detail);
		r->sum.errors++;
		next_domain(r);
		return;
	} else {
		log_info("tlsrpt", "day=%s domain=%s no report: %s", r->day_text, r->domain,
			 res->status == DNS_OK ? (why[0] ? why : "no v=TLSRPTv1 record")
					       : "no _smtp._tls record");
	}
	build_and_send(r);
}

/* Moves to the next policy domain of the day, or finishes. */
static void next_domain(struct run *r)
{
	domain_reset(r);
	while (r->next < r->nrows) {
		r->first = r->next;
		const char *d = r->rows[r->first].policy_domain;
		size_t k = r->first;
		while (k < r->nrows && strcmp(r->rows[k].policy_domain, d) == 0)
			k++;
		r->count = k - r->first;
		r->next = k;
		snprintf(r->domain, sizeof(r->domain), "%s", d);
		r->sum.domains++;
		if (r->opts.send && !r->opts.force && already_reported(r)) {
			r->sum.skipped++;
			continue;
		}
		char name[300];
		snprintf(name, sizeof(name), "_smtp._tls.%s", r->domain);
		r->txtq = resolver_query_txt(r->env.resolver, name, on_rua_txt, r);
		return;
	}
	run_finish(r);
}

/* Stops a run now: DNS and HTTPS are cancelled; a store write in flight is
 * waited for (its callback finishes the run). */
static void run_abort(struct run *r)
{
	r->aborted = true;
	if (r->txtq != NULL)
		dns_query_cancel(r->txtq);
	if (r->op != NULL)
		https_cancel(r->op);
	r->txtq = NULL;
	r->op = NULL;
	if (!r->saving)
		run_finish(r);
}

/* Starts a run; *owner (may be NULL) points at it until it finishes,
 * which can happen before this returns (a day without sessions). */
static int run_start(const struct tlsrpt_env *env, int64_t day, const struct tlsrpt_opts *opts,
		     tlsrpt_done_cb *done, void *arg, struct run **owner, char *err,
		     size_t errlen);

int tlsrpt_run_day(const struct tlsrpt_env *env, int64_t day, const struct tlsrpt_opts *opts,
		   tlsrpt_done_cb *done, void *arg, char *err, size_t errlen)
{
	return run_start(env, day, opts, done, arg, NULL, err, errlen);
}

static int run_start(const struct tlsrpt_env *env, int64_t day, const struct tlsrpt_opts *opts,
		     tlsrpt_done_cb *done, void *arg, struct run **owner, char *err,
		     size_t errlen)
{
	struct run *r = xcalloc(1, sizeof(*r));
	r->env = *env;
	r->opts = *opts;
	r->out_dir = opts->out_dir ? xstrdup(opts->out_dir) : NULL;
	r->opts.out_dir = r->out_dir;
	r->day = tlsrpt_day_start(day);
	day_text(r->day, r->day_text, sizeof(r->day_text));
	r->done = done;
	r->arg = arg;
	buf_init(&r->gz, 0);
	if (store_db_open(&r->db, env->cfg->queue.state_dir, err, errlen) < 0) {
		free(r->out_dir);
		free(r);
		return -1;
	}
	r->tx = store_tx_new(r->db);
	if (load_rows(r, err, errlen) < 0) {
		store_tx_free(r->tx);
		sqlite3_close(r->db);
		free(r->out_dir);
		free(r);
		return -1;
	}
	log_info("tlsrpt", "day=%s reporting: %zu sessions", r->day_text, r->nrows);
	r->owner = owner;
	if (owner != NULL)
		*owner = r;
	/* The first TXT lookup answers from the loop; a day without sessions
	 * finishes right here. */
	next_domain(r);
	return 0;
}

/* --- the daemon's timer ------------------------------------------------------- */

struct retry {
	struct retry *next;
	struct tlsrpt_daemon *d;
	int64_t delivery, report, created;
	int attempts;
	char *rua;
	char *report_blob;
	size_t report_len;
	struct https_op *op;
};

struct tlsrpt_daemon {
	struct tlsrpt_env env;
	uv_timer_t timer;
	bool running;       /* a day's run is in progress */
	struct run *cur;    /* that run (cleared by run_finish) */
	struct retry *retries_list;
	int retries;        /* HTTPS retries in flight */
	bool stopping;
	void (*stopped)(void *arg);
	void *stopped_arg;
	int64_t days[TLSRPT_LOOKBACK_DAYS];
	size_t ndays, dayi;
};

static void check(struct tlsrpt_daemon *d);

/* A per-host, per-day delay after midnight in [0, max_delay]: reporters
 * spread out (RFC 8460 4.1) and a restart does not move the time. */
static int64_t day_delay(const struct tlsrpt_daemon *d, int64_t day)
{
	int64_t max = d->env.cfg->tlsrpt.max_delay;
	if (max <= 0)
		return 0;
	uint64_t h = 1469598103934665603ull;
	for (const char *p = d->env.cfg->server.hostname; *p != '\0'; p++)
		h = (h ^ (unsigned char)*p) * 1099511628211ull;
	h = (h ^ (uint64_t)day) * 1099511628211ull;
	return (int64_t)(h % (uint64_t)(max + 1));
}

static void maybe_stopped(struct tlsrpt_daemon *d);

static void run_days(struct tlsrpt_daemon *d);

static void on_day_done(void *arg, const struct tlsrpt_summary *s)
{
	(void)s;
	struct tlsrpt_daemon *d = arg;
	d->running = false;
	d->dayi++;
	run_days(d);
}

static void run_days(struct tlsrpt_daemon *d)
{
	if (d->stopping) {
		maybe_stopped(d);
		return;
	}
	while (d->dayi < d->ndays) {
		struct tlsrpt_opts o = { .send = true };
		char err[300];
		d->running = true;
		if (run_start(&d->env, d->days[d->dayi], &o, on_day_done, d, &d->cur, err,
			      sizeof(err)) == 0)
			return;
		d->running = false;
		log_error("tlsrpt", "cannot run the report job: %s", err);
		d->dayi++;
	}
}

static void retry_unlink(struct retry *t)
{
	struct retry **pp = &t->d->retries_list;
	while (*pp != NULL && *pp != t)
		pp = &(*pp)->next;
	if (*pp == t)
		*pp = t->next;
}

static void retry_free(struct retry *t)
{
	free(t->rua);
	free(t->report_blob);
	free(t);
}

static void on_retried(void *arg, const struct https_response *res)
{
	struct retry *t = arg;
	struct tlsrpt_daemon *d = t->d;
	int64_t next;
	char result[300];
	const char *state = https_outcome(res, t->attempts, t->created, now_unix(), &next, result,
					  sizeof(result));
	log_info("tlsrpt", "retry rua=%s attempt=%d status=%s result=\"%s\"", t->rua, t->attempts + 1,
		 state, result);
	record_attempt(d->env.store, NULL, t->delivery, t->report, state, result, next);
	retry_unlink(t);
	retry_free(t);
	d->retries--;
	maybe_stopped(d);
}

static void retry_due(struct tlsrpt_daemon *d, sqlite3 *db)
{
	static const char sql[] =
		"SELECT dv.id, dv.report, dv.rua, dv.attempts, rp.created, rp.report"
		" FROM tlsrpt_deliveries dv JOIN tlsrpt_reports rp ON rp.id = dv.report"
		" WHERE dv.state = 'pending' AND dv.kind = 'https' AND dv.next_attempt <= ?";
	sqlite3_stmt *st;
	if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK)
		return;
	sqlite3_bind_int64(st, 1, now_unix());
	while (sqlite3_step(st) == SQLITE_ROW) {
		struct retry *t = xcalloc(1, sizeof(*t));
		t->d = d;
		t->delivery = sqlite3_column_int64(st, 0);
		t->report = sqlite3_column_int64(st, 1);
		t->rua = xstrdup((const char *)sqlite3_column_text(st, 2));
		t->attempts = sqlite3_column_int(st, 3);
		t->created = sqlite3_column_int64(st, 4);
		t->report_len = (size_t)sqlite3_column_bytes(st, 5);
		t->report_blob = xmalloc(t->report_len + 1);
		memcpy(t->report_blob, sqlite3_column_blob(st, 5), t->report_len);
		char host[256], path[1024];
		uint16_t port;
		if (split_https(t->rua, host, sizeof(host), &port, path, sizeof(path)) < 0) {
			record_attempt(d->env.store, NULL, t->delivery, t->report, "failed", "not an https URI",
				       now_unix());
			retry_free(t);
			continue;
		}
		struct https_request req = {
			.method = "POST",
			.host = host,
			.port = port,
			.path = path,
			.content_type = "application/tlsrpt+gzip",
			.body = t->report_blob,
			.body_len = t->report_len,
			.max_body = 65536,
			.timeout_ms = HTTPS_TIMEOUT_MS,
			.user_agent = "strictrelay/" STRICTRELAY_VERSION,
		};
		d->retries++;
		t->next = d->retries_list;
		d->retries_list = t;
		t->op = https_request(d->env.https, &req, on_retried, t);
	}
	sqlite3_finalize(st);
}

static void check(struct tlsrpt_daemon *d)
{
	if (d->running || d->stopping)
		return;
	sqlite3 *db;
	char err[300];
	if (store_db_open(&db, d->env.cfg->queue.state_dir, err, sizeof(err)) < 0) {
		log_error("tlsrpt", "%s", err);
		return;
	}
	int64_t now = now_unix(), today = tlsrpt_day_start(now);
	/* Days with results and no report yet, oldest first, once due. */
	d->ndays = 0;
	d->dayi = 0;
	for (int back = TLSRPT_LOOKBACK_DAYS; back >= 1; back--) {
		int64_t day = today - (int64_t)back * 86400;
		if (now < day + 86400 + day_delay(d, day))
			continue;
		sqlite3_stmt *st;
		static const char sql[] =
			"SELECT count(*) FROM (SELECT DISTINCT policy_domain FROM tls_sessions"
			" WHERE time >= ?1 AND time < ?2 AND tls_required_no = 0 AND policy_domain != ''"
			" AND policy_domain NOT IN (SELECT policy_domain FROM tlsrpt_reports WHERE day = ?1))";
		if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK)
			continue;
		sqlite3_bind_int64(st, 1, day);
		sqlite3_bind_int64(st, 2, day + 86400);
		if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_int(st, 0) > 0)
			d->days[d->ndays++] = day;
		sqlite3_finalize(st);
	}
	retry_due(d, db);
	sqlite3_close(db);
	run_days(d);
}

static void on_timer(uv_timer_t *t)
{
	check(t->data);
}

struct tlsrpt_daemon *tlsrpt_daemon_start(const struct tlsrpt_env *env)
{
	struct tlsrpt_daemon *d = xcalloc(1, sizeof(*d));
	d->env = *env;
	if (env->dkim == NULL)
		log_warn("tlsrpt", "[tlsrpt] dkim_domain, dkim_selector and dkim_key are not set: reports sent by mail go out unsigned, and receivers must ignore unsigned reports (RFC 8460 3); reports over HTTPS are not affected");
	uv_timer_init(env->loop, &d->timer);
	d->timer.data = d;
	uv_timer_start(&d->timer, on_timer, FIRST_CHECK_MS, CHECK_INTERVAL_MS);
	return d;
}

static void on_daemon_closed(uv_handle_t *h)
{
	struct tlsrpt_daemon *d = h->data;
	void (*done)(void *) = d->stopped;
	void *arg = d->stopped_arg;
	free(d);
	if (done != NULL)
		done(arg);
}

static void maybe_stopped(struct tlsrpt_daemon *d)
{
	if (!d->stopping || d->running || d->retries > 0 || uv_is_closing((uv_handle_t *)&d->timer))
		return;
	uv_close((uv_handle_t *)&d->timer, on_daemon_closed);
}

void tlsrpt_daemon_stop(struct tlsrpt_daemon *d, void (*done)(void *arg), void *arg)
{
	d->stopping = true;
	d->stopped = done;
	d->stopped_arg = arg;
	uv_timer_stop(&d->timer);
	/* Bounded stop: HTTPS in flight is cancelled; those deliveries stay
	 * pending and are retried after the restart. */
	while (d->retries_list != NULL) {
		struct retry *t = d->retries_list;
		d->retries_list = t->next;
		https_cancel(t->op);
		retry_free(t);
		d->retries--;
	}
	if (d->cur != NULL)
		run_abort(d->cur); /* on_day_done then sees stopping */
	maybe_stopped(d);
}
