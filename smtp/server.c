/* server.c - see server.h */
#include "server.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>

#include <openssl/crypto.h>

#include "mta/log.h"
#include "mta/metrics.h"
#include "mta/netaddr.h"
#include "policy/preflight.h"
#include "policy/requiretls.h"
#include "smtp/clients.h"
#include "smtp/session.h"
#include "smtp/tls.h"
#include "smtp/userdb.h"

#define READ_BUFFER_SIZE 65536
/* Stop reading from a client whose unread replies or unprocessed input
 * pile up beyond these (a pipelining client that never reads). */
#define MAX_PENDING_OUTPUT (256 * 1024)
#define MAX_PENDING_INPUT (256 * 1024)
/* How often forgotten clients are swept from the per-client table. */
#define SWEEP_INTERVAL_MS 60000
#define SPACE_LOG_INTERVAL_MS 10000 /* one "MAIL refused" line per this, with a count */

enum listener_kind {
	LK_SMTP,        /* [server] listen: relay_networks and accept_domains */
	LK_SUBMISSION,  /* [server] submission_listen: AUTH after STARTTLS */
	LK_SUBMISSIONS, /* [server] submission_tls_listen: TLS from the start */
	LK_COUNT,
};

static const char *const kind_names[LK_COUNT] = { "smtp", "submission", "submissions" };

struct listener {
	uv_tcp_t tcp;
	struct smtp_server *srv;
	enum listener_kind kind;
	char name[80];
};

/* A password check on libuv's thread pool. */
struct auth_work {
	uv_work_t req;
	struct conn *c;
	struct smtp_server *srv;
	char hash[USERDB_HASH_MAX];
	char pass[SASL_MAX_FIELD + 1];
	bool known;
	int result; /* userdb_check() */
};

struct conn {
	struct smtp_server *srv;
	struct conn *prev, *next;
	uv_tcp_t tcp;
	uv_timer_t timer;
	int open_handles;
	unsigned long long id;
	char peer[64];
	uint16_t port;

	struct smtp_session sess;
	struct tls_conn tls;
	bool tls_active;      /* bytes on the wire are TLS records */
	struct buf in;        /* plaintext not yet processed */
	struct buf out;       /* replies not yet written */
	size_t write_pending; /* bytes handed to uv_write, not yet completed */
	bool in_data;         /* reading message content */
	bool discard_line;    /* skipping the rest of an over-long command line */
	bool store_pending;   /* a message is being committed */
	struct preflight_check *check; /* a RCPT waiting for the REQUIRETLS preflight */
	struct auth_work *auth; /* a password being checked */
	enum listener_kind kind;
	bool implicit_tls;    /* submissions: greet once the handshake is done */
	bool counted;         /* counted in the per-client table under limit_key */
	char limit_key[CLIENTS_KEY_MAX]; /* the client's network for the limits */
	bool reading;
	bool close_after_flush;
	bool closing;         /* uv_close called */
	bool rejected;        /* over max_connections: only a 421 is sent */
	unsigned commands;
	uint64_t started_ms;
};

struct smtp_server {
	uv_loop_t *loop;
	const struct config *cfg;
	SSL_CTX *tls_ctx;
	struct store *store;
	struct preflight *preflight;
	struct rtls_rules rtls_rules;
	struct userdb *users;       /* NULL = no AUTH */
	struct clients clients;     /* per client IP: connections, rate, AUTH failures */
	/* MAILs refused for want of disk space, and when that was last logged */
	unsigned long space_refusals;
	uint64_t space_logged_ms;
	uint64_t last_sweep_ms;
	void (*queued)(void *arg);
	void *queued_arg;
	struct smtp_session_config sess_cfg[LK_COUNT];
	struct listener *listeners;
	size_t nlisteners;
	size_t open_listeners;
	struct conn *conns;
	unsigned nconns;
	unsigned long long next_id;
	bool draining;
	void (*drained)(void *arg);
	void *drained_arg;
	char read_buffer[READ_BUFFER_SIZE]; /* shared: reads are processed at once */
};

struct write_req {
	uv_write_t req;
	struct conn *c;
	size_t len;
	char data[];
};

static void conn_close(struct conn *c);
static void conn_process(struct conn *c);
static void conn_flush(struct conn *c);

/* --- lifetime ------------------------------------------------------------ */

static void server_maybe_done(struct smtp_server *srv)
{
	if (!srv->draining || srv->nconns > 0 || srv->open_listeners > 0)
		return;
	void (*done)(void *) = srv->drained;
	void *arg = srv->drained_arg;
	if (srv->tls_ctx != NULL)
		SSL_CTX_free(srv->tls_ctx);
	rtls_rules_free(&srv->rtls_rules);
	userdb_destroy(srv->users);
	clients_free(&srv->clients);
	free(srv->listeners);
	free(srv);
	if (done != NULL)
		done(arg);
}

static void conn_free(struct conn *c)
{
	struct smtp_server *srv = c->srv;
	if (c->prev != NULL)
		c->prev->next = c->next;
	else
		srv->conns = c->next;
	if (c->next != NULL)
		c->next->prev = c->prev;
	srv->nconns--;
	if (c->counted)
		clients_disconnect(&srv->clients, c->limit_key, now_ms());
	smtp_session_free(&c->sess);
	tls_conn_free(&c->tls);
	buf_free(&c->in);
	buf_free(&c->out);
	free(c);
	server_maybe_done(srv);
}

/* A closing connection is freed once both handles are closed and neither
 * the store nor a password check still refers to it; each of those calls
 * this as it lets go. */
static void conn_release(struct conn *c)
{
	if (c->open_handles == 0 && !c->store_pending && c->auth == NULL)
		conn_free(c);
}

static void on_handle_closed(uv_handle_t *h)
{
	struct conn *c = h->data;
	c->open_handles--;
	conn_release(c);
}

static void conn_close(struct conn *c)
{
	if (c->closing)
		return;
	c->closing = true;
	if (c->check != NULL) {
		preflight_cancel(c->check);
		c->check = NULL;
	}
	if (!c->rejected) {
		log_info("smtpd", "disconnect client=%s conn=%llu commands=%u messages=%u duration_ms=%llu",
			 c->peer, c->id, c->commands, c->sess.messages,
			 (unsigned long long)(now_ms() - c->started_ms));
	}
	uv_close((uv_handle_t *)&c->tcp, on_handle_closed);
	uv_close((uv_handle_t *)&c->timer, on_handle_closed);
}

/* --- timers -------------------------------------------------------------- */

static void on_timeout(uv_timer_t *t)
{
	struct conn *c = t->data;
	if (c->store_pending || c->check != NULL || c->auth != NULL || c->closing)
		return;
	log_warn("smtpd", "client=%s conn=%llu timeout in state %s", c->peer, c->id,
		 smtp_state_name(c->sess.state));
	smtp_session_timeout(&c->sess, &c->out);
	c->close_after_flush = true;
	conn_flush(c);
}

static void arm_timer(struct conn *c)
{
	if (c->closing)
		return;
	int64_t secs = c->in_data ? c->srv->cfg->server.data_timeout
				  : c->srv->cfg->server.command_timeout;
	uv_timer_start(&c->timer, on_timeout, (uint64_t)secs * 1000u, 0);
}

/* --- writing ------------------------------------------------------------- */

static void on_write(uv_write_t *req, int status)
{
	struct write_req *w = (struct write_req *)req;
	struct conn *c = w->c;
	c->write_pending -= w->len;
	free(w);
	if (status < 0) {
		if (!c->closing)
			log_info("smtpd", "client=%s conn=%llu write failed: %s", c->peer, c->id,
				 uv_strerror(status));
		conn_close(c);
		return;
	}
	if (c->closing)
		return;
	if (c->close_after_flush && c->write_pending == 0) {
		conn_close(c);
		return;
	}
	/* Output drained below the cap: a paused client may go on. */
	if (!c->reading && c->write_pending < MAX_PENDING_OUTPUT / 2 && !c->store_pending &&
	    c->check == NULL && c->auth == NULL) {
		conn_process(c);
	}
}

static void send_raw(struct conn *c, const char *data, size_t len)
{
	if (len == 0 || c->closing)
		return;
	struct write_req *w = xmalloc(sizeof(*w) + len);
	w->c = c;
	w->len = len;
	memcpy(w->data, data, len);
	uv_buf_t b = uv_buf_init(w->data, (unsigned int)len);
	int r = uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, on_write);
	if (r < 0) {
		free(w);
		log_info("smtpd", "client=%s conn=%llu write failed: %s", c->peer, c->id,
			 uv_strerror(r));
		conn_close(c);
		return;
	}
	c->write_pending += len;
}

/* Sends pending ciphertext produced by the TLS engine. */
static void flush_tls_output(struct conn *c)
{
	struct buf cipher;
	buf_init(&cipher, 0);
	tls_take_output(&c->tls, &cipher);
	send_raw(c, cipher.data, cipher.len);
	buf_free(&cipher);
}

static void conn_flush(struct conn *c)
{
	if (c->closing)
		return;
	if (c->out.len > 0) {
		if (c->tls_active) {
			if (tls_write(&c->tls, c->out.data, c->out.len) == TLS_ERROR) {
				log_info("smtpd", "client=%s conn=%llu %s", c->peer, c->id,
					 tls_last_error(&c->tls));
				conn_close(c);
				return;
			}
			flush_tls_output(c);
		} else {
			send_raw(c, c->out.data, c->out.len);
		}
		buf_reset(&c->out);
	}
	if (c->closing)
		return;
	if (c->close_after_flush && c->write_pending == 0)
		conn_close(c);
}

/* --- reading ------------------------------------------------------------- */

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
	struct conn *c = h->data;
	b->base = c->srv->read_buffer;
	b->len = sizeof(c->srv->read_buffer);
}

static void start_reading(struct conn *c);

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *b)
{
	struct conn *c = stream->data;
	if (nread == 0)
		return;
	if (nread < 0) {
		if (nread != UV_EOF)
			log_info("smtpd", "client=%s conn=%llu read error: %s", c->peer, c->id,
				 uv_strerror((int)nread));
		else if (c->sess.state != SMTP_STATE_CLOSED)
			log_info("smtpd", "client=%s conn=%llu lost connection in state %s", c->peer,
				 c->id, smtp_state_name(c->sess.state));
		conn_close(c);
		return;
	}
	if (c->rejected || c->sess.state == SMTP_STATE_CLOSED)
		return; /* nothing more is read after QUIT or a fatal error */
	/* No arm_timer() here: the time-out runs from the last complete line
	 * (or TLS handshake), so a client that trickles bytes is cut off. */
	if (!c->tls_active) {
		buf_append(&c->in, b->base, (size_t)nread);
	} else {
		tls_feed(&c->tls, b->base, (size_t)nread);
		if (!c->tls.done) {
			enum tls_status st = tls_handshake(&c->tls);
			flush_tls_output(c);
			if (st == TLS_ERROR || st == TLS_CLOSED) {
				log_warn("smtpd", "client=%s conn=%llu TLS handshake failed: %s",
					 c->peer, c->id, tls_last_error(&c->tls));
				conn_close(c);
				return;
			}
			if (st == TLS_WANT)
				return;
			char info[160];
			tls_describe(&c->tls, info, sizeof(info));
			log_info("smtpd", "client=%s conn=%llu %s %s", c->peer, c->id,
				 c->implicit_tls ? "tls" : "starttls", info);
			smtp_session_tls_started(&c->sess, info);
			arm_timer(c);
			if (c->implicit_tls) {
				smtp_session_greeting(&c->sess, &c->out);
				conn_flush(c);
			}
		}
		enum tls_status st = tls_read(&c->tls, &c->in);
		flush_tls_output(c);
		if (st == TLS_ERROR) {
			log_info("smtpd", "client=%s conn=%llu %s", c->peer, c->id,
				 tls_last_error(&c->tls));
			conn_close(c);
			return;
		}
		if (st == TLS_CLOSED) {
			conn_process(c);
			conn_close(c);
			return;
		}
	}
	conn_process(c);
}

static void start_reading(struct conn *c)
{
	if (c->reading || c->closing)
		return;
	if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) == 0)
		c->reading = true;
}

static void stop_reading(struct conn *c)
{
	if (!c->reading)
		return;
	uv_read_stop((uv_stream_t *)&c->tcp);
	c->reading = false;
}

/* --- the message store --------------------------------------------------- */

static void on_stored(void *arg, int status, const char *error)
{
	struct conn *c = arg;
	c->store_pending = false;
	const char *qid = c->sess.qid;
	if (status == 0)
		metrics_count(METRICS_ACCEPTED);
	if (status == 0 && c->srv->queued != NULL)
		c->srv->queued(c->srv->queued_arg);
	if (c->closing) {
		/* The client went away before it got our answer. */
		if (status == 0)
			log_warn("smtpd", "id=%s client=%s stored, but the client disconnected before the 250: it may send the message again",
				 qid, c->peer);
		conn_release(c);
		return;
	}
	if (status != 0)
		log_error("smtpd", "id=%s client=%s cannot store the message: %s", qid, c->peer,
			  error ? error : "unknown error");
	if (status == STORE_FULL)
		smtp_session_queue_full(&c->sess, &c->out);
	else
		smtp_session_queued(&c->sess, status == 0, &c->out);
	if (c->srv->draining) {
		smtp_session_shutdown(&c->sess, &c->out, "Service shutting down");
		c->close_after_flush = true;
	}
	conn_flush(c);
	arm_timer(c);
	conn_process(c); /* commands pipelined after the message */
}

static void enqueue(struct conn *c)
{
	struct queued_message *m = smtp_session_take_message(&c->sess);
	char from[300], flags[128];
	msg_flags_format(m->flags, flags, sizeof(flags));
	log_info("smtpd", "id=%s client=%s from=<%s> nrcpt=%zu size=%zu tls=%s requiretls=%s flags=%s status=queued",
		 m->id, c->peer, m->sender[0] ? str_quote(from, sizeof(from), m->sender) : "",
		 m->rcpts.n, m->body_len,
		 c->sess.tls ? "yes" : "no",
		 m->sender[0] == '\0' ? "no"
		 : (m->flags & MSG_REQUIRETLS) ? "yes source=param"
		 : (m->flags & MSG_REQUIRETLS_RULE) ? "yes source=rule" : "no",
		 flags);
	c->store_pending = true;
	uv_timer_stop(&c->timer);
	store_enqueue(c->srv->store, m, on_stored, c);
}

/* --- the command loop ---------------------------------------------------- */

static void begin_starttls(struct conn *c)
{
	/* The 220 goes out in plaintext, then nothing else does. */
	conn_flush(c);
	if (c->in.len > 0) {
		/* CVE-2011-0411: bytes pipelined after STARTTLS must not be
		 * executed inside the TLS session. */
		log_warn("smtpd", "client=%s conn=%llu discarded %zu bytes sent after STARTTLS (command injection attempt?)",
			 c->peer, c->id, c->in.len);
		buf_reset(&c->in);
	}
	if (tls_conn_init_server(&c->tls, c->srv->tls_ctx) < 0) {
		log_error("smtpd", "client=%s conn=%llu cannot start TLS: %s", c->peer, c->id,
			  tls_last_error(&c->tls));
		conn_close(c);
		return;
	}
	c->tls_active = true;
}

static void on_rcpt_checked(void *arg, bool refuse, const char *reason)
{
	struct conn *c = arg;
	c->check = NULL;
	smtp_session_rcpt_checked(&c->sess, refuse, reason, &c->out);
	arm_timer(c);
	conn_process(c); /* flushes the reply, then pipelined commands */
}

static void auth_work_run(uv_work_t *req)
{
	struct auth_work *w = req->data;
	w->result = userdb_check(w->hash, w->pass);
}

static void auth_work_done(uv_work_t *req, int status)
{
	struct auth_work *w = req->data;
	struct conn *c = w->c;
	struct smtp_server *srv = w->srv;
	int result = status == 0 ? w->result : -1;
	bool known = w->known;
	OPENSSL_cleanse(w, sizeof(*w));
	free(w);
	c->auth = NULL;
	if (c->closing) {
		conn_release(c);
		return;
	}
	enum smtp_auth_result r;
	if (result == 1 && known) {
		clients_auth_succeeded(&srv->clients, c->peer, now_ms());
		r = SMTP_AUTH_OK;
	} else if (result < 0) {
		r = SMTP_AUTH_TEMPFAIL;
	} else {
		unsigned n = clients_auth_failed(&srv->clients, c->peer,
						 (uint64_t)srv->cfg->auth.failure_window * 1000, now_ms());
		r = SMTP_AUTH_FAILED;
		if (n >= srv->cfg->auth.max_failures) {
			log_warn("smtpd", "client=%s conn=%llu %u failed AUTH attempts: refusing AUTH from this address for up to %llds",
				 c->peer, c->id, n, (long long)srv->cfg->auth.failure_window);
			r = SMTP_AUTH_LOCKED;
		}
	}
	smtp_session_auth_checked(&c->sess, r, &c->out);
	if (c->sess.state == SMTP_STATE_CLOSED)
		c->close_after_flush = true;
	arm_timer(c);
	conn_process(c);
}

/* SMTP_ACT_AUTH_CHECK: the KDF runs on the thread pool, never on the loop. */
static void start_auth_check(struct conn *c)
{
	struct smtp_server *srv = c->srv;
	const char *user = smtp_session_auth_user(&c->sess);
	if (srv->users == NULL) {
		smtp_session_auth_checked(&c->sess, SMTP_AUTH_TEMPFAIL, &c->out);
		return;
	}
	if (clients_auth_locked(&srv->clients, c->peer, srv->cfg->auth.max_failures,
				(uint64_t)srv->cfg->auth.failure_window * 1000, now_ms())) {
		smtp_session_auth_checked(&c->sess, SMTP_AUTH_LOCKED, &c->out);
		c->close_after_flush = true;
		return;
	}
	struct auth_work *w = xcalloc(1, sizeof(*w));
	w->req.data = w;
	w->c = c;
	w->srv = srv;
	snprintf(w->hash, sizeof(w->hash), "%s", userdb_lookup(srv->users, user, &w->known));
	snprintf(w->pass, sizeof(w->pass), "%s", smtp_session_auth_password(&c->sess));
	if (uv_queue_work(srv->loop, &w->req, auth_work_run, auth_work_done) != 0) {
		OPENSSL_cleanse(w, sizeof(*w));
		free(w);
		smtp_session_auth_checked(&c->sess, SMTP_AUTH_TEMPFAIL, &c->out);
		return;
	}
	c->auth = w;
	uv_timer_stop(&c->timer);
}

static void handle_action(struct conn *c, enum smtp_action act)
{
	switch (act) {
	case SMTP_ACT_NONE:
		break;
	case SMTP_ACT_STARTTLS:
		begin_starttls(c);
		break;
	case SMTP_ACT_DATA:
		c->in_data = true;
		arm_timer(c);
		break;
	case SMTP_ACT_ENQUEUE:
		enqueue(c);
		break;
	case SMTP_ACT_RCPT_CHECK:
		c->check = preflight_start(c->srv->preflight, smtp_session_pending_domain(&c->sess),
					   on_rcpt_checked, c);
		break;
	case SMTP_ACT_AUTH_CHECK:
		start_auth_check(c);
		break;
	case SMTP_ACT_CLOSE:
		c->close_after_flush = true;
		break;
	}
}

/* Handles one command line, or an over-long one. false = stop processing. */
static bool process_line(struct conn *c)
{
	char *lf = memchr(c->in.data, '\n', c->in.len);
	if (lf == NULL) {
		if (c->in.len > SMTP_MAX_COMMAND_LINE) {
			/* Keep skipping until the line ends. */
			c->discard_line = true;
			buf_reset(&c->in);
		}
		return false;
	}
	size_t linelen = (size_t)(lf - c->in.data);
	arm_timer(c);
	if (c->discard_line || linelen > SMTP_MAX_COMMAND_LINE) {
		c->discard_line = false;
		buf_consume(&c->in, linelen + 1);
		log_warn("smtpd", "client=%s conn=%llu command line too long", c->peer, c->id);
		handle_action(c, smtp_session_line_too_long(&c->sess, &c->out));
		return true;
	}
	char line[SMTP_MAX_COMMAND_LINE + 1];
	size_t n = linelen;
	if (n > 0 && c->in.data[n - 1] == '\r')
		n--;
	memcpy(line, c->in.data, n);
	line[n] = '\0';
	/* A NUL would end the string early and hide the rest of the line from
	 * the parser ("RCPT TO:<a@b>\0junk" must not pass as "RCPT TO:<a@b>"):
	 * turn it into a control character, which the parser refuses. */
	for (size_t i = 0; i < n; i++)
		if (line[i] == '\0')
			line[i] = '\x01';
	buf_consume(&c->in, linelen + 1);
	c->commands++;
	handle_action(c, smtp_session_command(&c->sess, line, &c->out));
	return true;
}

static void conn_process(struct conn *c)
{
	while (!c->closing && !c->store_pending && c->check == NULL && c->auth == NULL &&
	       !c->close_after_flush) {
		if (c->in.len == 0)
			break;
		if (c->in_data) {
			size_t used = smtp_data_feed(&c->sess.data, c->in.data, c->in.len,
						     &c->sess.message);
			if (memchr(c->in.data, '\n', used) != NULL)
				arm_timer(c);
			buf_consume(&c->in, used);
			if (!c->sess.data.done)
				break;
			c->in_data = false;
			handle_action(c, smtp_session_data_end(&c->sess, &c->out));
			continue;
		}
		bool was_tls = c->tls_active;
		if (!process_line(c))
			break;
		if (c->tls_active != was_tls)
			break; /* STARTTLS: input was discarded, handshake next */
	}
	conn_flush(c);
	if (c->closing)
		return;
	/* Back-pressure: pause a client that does not read our replies or
	 * whose input we cannot take now. */
	bool pause = c->write_pending > MAX_PENDING_OUTPUT || c->in.len > MAX_PENDING_INPUT;
	if (pause)
		stop_reading(c);
	else
		start_reading(c);
}

/* --- accepting ----------------------------------------------------------- */

static void on_connection(uv_stream_t *ls, int status)
{
	struct listener *l = ls->data;
	struct smtp_server *srv = l->srv;
	if (status < 0) {
		log_warn("smtpd", "listener %s: accept error: %s", l->name, uv_strerror(status));
		return;
	}
	struct conn *c = xcalloc(1, sizeof(*c));
	c->srv = srv;
	c->id = ++srv->next_id;
	c->started_ms = now_ms();
	buf_init(&c->in, 0);
	buf_init(&c->out, 0);
	uv_tcp_init(srv->loop, &c->tcp);
	uv_timer_init(srv->loop, &c->timer);
	c->tcp.data = c;
	c->timer.data = c;
	c->open_handles = 2;
	c->next = srv->conns;
	if (srv->conns != NULL)
		srv->conns->prev = c;
	srv->conns = c;
	srv->nconns++;
	if (uv_accept(ls, (uv_stream_t *)&c->tcp) < 0) {
		c->rejected = true;
		conn_close(c);
		return;
	}
	struct sockaddr_storage ss;
	int sslen = sizeof(ss);
	bool trusted = false;
	if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &sslen) == 0) {
		sockaddr_format((struct sockaddr *)&ss, c->peer, sizeof(c->peer), &c->port);
		trusted = netlist_match(&srv->cfg->server.relay_networks, (struct sockaddr *)&ss);
	} else {
		snprintf(c->peer, sizeof(c->peer), "unknown");
	}
	uv_tcp_nodelay(&c->tcp, 1);
	c->kind = l->kind;
	smtp_session_init(&c->sess, &srv->sess_cfg[l->kind], c->peer, trusted);

	clients_limit_key(c->peer, srv->cfg->server.limit_prefix_v4,
			  srv->cfg->server.limit_prefix_v6, c->limit_key);
	uint64_t now = now_ms();
	if (now - srv->last_sweep_ms > SWEEP_INTERVAL_MS) {
		uint64_t keep = (uint64_t)srv->cfg->auth.failure_window * 1000;
		clients_sweep(&srv->clients, keep > 60000 ? keep : 60000, now);
		srv->last_sweep_ms = now;
	}
	const char *why = NULL, *reply = NULL;
	if (srv->draining) {
		why = "shutting down";
		reply = "Service shutting down";
	} else if (srv->nconns > srv->cfg->server.max_connections) {
		why = "too many connections";
		reply = "Too many connections";
	} else if (!clients_connect(&srv->clients, c->limit_key,
				    srv->cfg->server.max_connections_per_client, now)) {
		why = "too many connections from this client";
		reply = "Too many connections from your address";
	} else {
		c->counted = true;
	}
	if (why != NULL) {
		c->rejected = true;
		log_warn("smtpd", "client=%s refused: %s (%u connections, %u from %s)", c->peer, why,
			 srv->nconns - 1, clients_connections(&srv->clients, c->limit_key),
			 c->limit_key);
		smtp_session_shutdown(&c->sess, &c->out, reply);
		c->close_after_flush = true;
		conn_flush(c);
		return;
	}
	log_info("smtpd", "connect client=%s port=%u conn=%llu trusted=%s listener=%s", c->peer,
		 c->port, c->id, trusted ? "yes" : "no", l->name);
	if (l->kind == LK_SUBMISSIONS) {
		/* Implicit TLS (RFC 8314): the greeting comes inside TLS. */
		if (tls_conn_init_server(&c->tls, srv->tls_ctx) < 0) {
			log_error("smtpd", "client=%s conn=%llu cannot start TLS: %s", c->peer, c->id,
				  tls_last_error(&c->tls));
			conn_close(c);
			return;
		}
		c->tls_active = true;
		c->implicit_tls = true;
	} else {
		smtp_session_greeting(&c->sess, &c->out);
		conn_flush(c);
	}
	arm_timer(c);
	start_reading(c);
}

/* --- listeners ----------------------------------------------------------- */

static void on_listener_closed(uv_handle_t *h)
{
	struct listener *l = h->data;
	l->srv->open_listeners--;
	server_maybe_done(l->srv);
}

static bool message_allowed(void *arg, const char *client_addr)
{
	struct smtp_server *srv = arg;
	char key[CLIENTS_KEY_MAX];
	clients_limit_key(client_addr, srv->cfg->server.limit_prefix_v4,
			  srv->cfg->server.limit_prefix_v6, key);
	return clients_message(&srv->clients, key, srv->cfg->server.max_messages_per_minute,
			       now_ms());
}

/* [queue] min_free_space: statvfs() of state_dir at each MAIL (a local
 * file system answers in microseconds). A failing statvfs() accepts: the
 * store's own disk-full handling (452 at the end of DATA) is still there. */
static bool space_available(void *arg, uint64_t size)
{
	struct smtp_server *srv = arg;
	const struct config *cfg = srv->cfg;
	struct statvfs vfs;
	if (statvfs(cfg->queue.state_dir, &vfs) < 0)
		return true;
	uint64_t avail = (uint64_t)vfs.f_bavail * (uint64_t)vfs.f_frsize;
	uint64_t need = cfg->queue.min_free_space + size;
	if (avail >= need) /* size <= max_message_size here: no overflow */
		return true;
	srv->space_refusals++;
	uint64_t now = now_ms();
	if (srv->space_logged_ms == 0 || now - srv->space_logged_ms >= SPACE_LOG_INTERVAL_MS) {
		log_warn("smtpd", "MAIL refused with 452 4.3.1: %s has %llu KiB free, less than [queue] min_free_space %llu KiB + SIZE %llu KiB (refusals=%lu)",
			 cfg->queue.state_dir, (unsigned long long)(avail / 1024),
			 (unsigned long long)(cfg->queue.min_free_space / 1024),
			 (unsigned long long)(size / 1024), srv->space_refusals);
		srv->space_logged_ms = now;
	}
	return false;
}

/* The per-listener session settings, from the current configuration. */
static void build_session_configs(struct smtp_server *srv)
{
	const struct config *cfg = srv->cfg;
	for (int k = 0; k < LK_COUNT; k++) {
		srv->sess_cfg[k] = (struct smtp_session_config){
			.hostname = cfg->server.hostname,
			.max_message_size = cfg->server.max_message_size,
			.max_recipients = cfg->server.max_recipients,
			.tls_available = srv->tls_ctx != NULL,
			.normalize_bare_newlines = cfg->server.bare_newline == BARE_NEWLINE_NORMALIZE,
			.accept_domains = &cfg->server.accept_domains,
			.requiretls_rules = &srv->rtls_rules,
			.requiretls_preflight = cfg->requiretls.preflight && srv->preflight != NULL,
			.submission = k != LK_SMTP,
			.auth_available = k != LK_SMTP && srv->users != NULL,
			.sender_domains = &cfg->server.sender_domains,
			.postmaster = cfg->server.postmaster,
			.message_allowed = cfg->server.max_messages_per_minute ? message_allowed : NULL,
			.space_available = cfg->queue.min_free_space ? space_available : NULL,
			.hook_arg = srv,
		};
	}
}

static void parse_rtls_rules(struct smtp_server *srv)
{
	/* config_validate parsed these once already; they cannot fail here */
	char rerr[256];
	if (rtls_rules_parse(&srv->rtls_rules, &srv->cfg->requiretls.require_for, rerr,
			     sizeof(rerr)) < 0)
		panic("require_for passed validation but does not parse: %s", rerr);
	if (srv->rtls_rules.users.n > 0 && srv->cfg->auth.users_file[0] == '\0')
		log_warn("smtpd", "[requiretls] require_for has user: items, which match only SMTP AUTH users, but [auth] users_file is not set");
}

static int bind_one(struct smtp_server *srv, const struct hostport *hp, enum listener_kind kind,
		    char *err, size_t errlen)
{
	struct listener *l = &srv->listeners[srv->nlisteners];
	l->srv = srv;
	l->kind = kind;
	hostport_format(hp, l->name, sizeof(l->name));
	struct sockaddr_storage ss;
	char why[256];
	if (hostport_sockaddr(hp, &ss, why, sizeof(why)) < 0) {
		snprintf(err, errlen, "listen %s (%s): %s", l->name, kind_names[kind], why);
		return -1;
	}
	uv_tcp_init(srv->loop, &l->tcp);
	l->tcp.data = l;
	srv->nlisteners++;
	srv->open_listeners++;
	/* IPV6ONLY so that 0.0.0.0:25 and [::]:25 can both be bound. */
	unsigned flags = ss.ss_family == AF_INET6 ? UV_TCP_IPV6ONLY : 0;
	int r = uv_tcp_bind(&l->tcp, (struct sockaddr *)&ss, flags);
	if (r < 0) {
		snprintf(err, errlen, "listen %s (%s): %s", l->name, kind_names[kind], uv_strerror(r));
		return -1;
	}
	return 0;
}

int smtp_server_bind(struct smtp_server **out, uv_loop_t *loop, const struct config *cfg,
		     char *err, size_t errlen)
{
	struct smtp_server *srv = xcalloc(1, sizeof(*srv));
	srv->loop = loop;
	srv->cfg = cfg;
	clients_init(&srv->clients);
	size_t n = cfg->server.nlisten + cfg->server.nsubmission_listen +
		   cfg->server.nsubmission_tls_listen;
	srv->listeners = xcalloc(n ? n : 1, sizeof(*srv->listeners));
	int rc = 0;
	for (size_t i = 0; rc == 0 && i < cfg->server.nlisten; i++)
		rc = bind_one(srv, &cfg->server.listen[i], LK_SMTP, err, errlen);
	for (size_t i = 0; rc == 0 && i < cfg->server.nsubmission_listen; i++)
		rc = bind_one(srv, &cfg->server.submission_listen[i], LK_SUBMISSION, err, errlen);
	for (size_t i = 0; rc == 0 && i < cfg->server.nsubmission_tls_listen; i++)
		rc = bind_one(srv, &cfg->server.submission_tls_listen[i], LK_SUBMISSIONS, err,
			      errlen);
	if (rc < 0) {
		smtp_server_shutdown(srv, NULL, NULL);
		*out = NULL;
		return -1;
	}
	*out = srv;
	return 0;
}

int smtp_server_start(struct smtp_server *srv, const struct smtp_server_params *params, char *err,
		      size_t errlen)
{
	const struct config *cfg = params->cfg;
	srv->cfg = cfg;
	srv->store = params->store;
	srv->preflight = params->preflight;
	srv->queued = params->queued;
	srv->queued_arg = params->queued_arg;
	srv->users = params->users;
	if (params->tls_ctx != NULL) {
		SSL_CTX_up_ref(params->tls_ctx);
		srv->tls_ctx = params->tls_ctx;
	}
	parse_rtls_rules(srv);
	build_session_configs(srv);
	for (size_t i = 0; i < srv->nlisteners; i++) {
		struct listener *l = &srv->listeners[i];
		if (l->kind != LK_SMTP && (srv->tls_ctx == NULL || srv->users == NULL)) {
			snprintf(err, errlen, "listen %s (%s): needs [server] tls_cert and [auth] users_file",
				 l->name, kind_names[l->kind]);
			return -1;
		}
		int r = uv_listen((uv_stream_t *)&l->tcp, 511, on_connection);
		if (r < 0) {
			snprintf(err, errlen, "listen %s (%s): %s", l->name, kind_names[l->kind],
				 uv_strerror(r));
			return -1;
		}
		log_info("smtpd", "listening on %s (%s) %s", l->name, kind_names[l->kind],
			 l->kind == LK_SUBMISSIONS ? "tls=implicit auth=required"
			 : l->kind == LK_SUBMISSION ? "starttls=yes auth=required"
			 : srv->tls_ctx ? "starttls=yes" : "starttls=no");
	}
	return 0;
}

void smtp_server_reload(struct smtp_server *srv, const struct config *cfg, SSL_CTX *tls_ctx,
			struct userdb *users)
{
	srv->cfg = cfg;
	if (tls_ctx != NULL) {
		SSL_CTX_up_ref(tls_ctx);
		if (srv->tls_ctx != NULL)
			SSL_CTX_free(srv->tls_ctx); /* open TLS sessions keep their reference */
		srv->tls_ctx = tls_ctx;
	}
	if (users != NULL) {
		userdb_destroy(srv->users);
		srv->users = users;
	}
	/* Sessions read these between events only, so swapping them here is
	 * safe; open sessions see the new settings from their next command. */
	rtls_rules_free(&srv->rtls_rules);
	parse_rtls_rules(srv);
	build_session_configs(srv);
}

unsigned smtp_server_connections(const struct smtp_server *srv)
{
	return srv->nconns;
}

void smtp_server_shutdown(struct smtp_server *srv, void (*done)(void *arg), void *arg)
{
	srv->draining = true;
	srv->drained = done;
	srv->drained_arg = arg;
	for (size_t i = 0; i < srv->nlisteners; i++)
		uv_close((uv_handle_t *)&srv->listeners[i].tcp, on_listener_closed);
	srv->nlisteners = 0;
	struct conn *c = srv->conns;
	while (c != NULL) {
		struct conn *next = c->next;
		/* Sessions inside a transaction finish it first (on_stored says 421). */
		if (!c->closing && !c->in_data && !c->store_pending) {
			smtp_session_shutdown(&c->sess, &c->out, "Service shutting down");
			c->close_after_flush = true;
			conn_flush(c);
		}
		c = next;
	}
	server_maybe_done(srv);
}

void smtp_server_force_close(struct smtp_server *srv)
{
	for (struct conn *c = srv->conns; c != NULL; c = c->next) {
		if (!c->closing) {
			log_warn("smtpd", "client=%s conn=%llu closed at shutdown in state %s", c->peer,
				 c->id, smtp_state_name(c->sess.state));
			conn_close(c);
		}
	}
}
