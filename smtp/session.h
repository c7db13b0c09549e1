/*
 * session.h - the inbound ESMTP protocol engine (RFC 5321, 3207, 1870, 6152,
 * 6531, 2920, 8689). Pure: it takes command lines and DATA results, appends
 * replies to an output buffer and tells the I/O layer (smtp/server.c) what
 * to do next. It never touches a socket, TLS or the queue, so every reply
 * can be unit tested.
 *
 * Check/proceed split (OpenSMTPD): smtp_session_command() checks a command
 * against the state and replies; the side effects it cannot do itself are
 * returned as an action:
 *   SMTP_ACT_STARTTLS  the 220 is in out; flush it, DISCARD any input already
 *                      buffered (plaintext injection, CVE-2011-0411), run the
 *                      handshake, then call smtp_session_tls_started().
 *   SMTP_ACT_DATA      the 354 is in out; feed message octets to
 *                      smtp_data_feed(&s->data, ...) until it is done, then
 *                      call smtp_session_data_end().
 *   SMTP_ACT_ENQUEUE   (from smtp_session_data_end) the message is ready:
 *                      take it with smtp_session_take_message(), store it
 *                      durably, then call smtp_session_queued() which writes
 *                      the 250 (or a 451). Read no further commands until then.
 *   SMTP_ACT_RCPT_CHECK (RCPT of a REQUIRETLS transaction, preflight on)
 *                      no reply yet: find out whether the domain
 *                      smtp_session_pending_domain() can take REQUIRETLS
 *                      mail, then call smtp_session_rcpt_checked(), which
 *                      writes the 250 or the 550 5.7.30. Read no further
 *                      commands until then.
 *   SMTP_ACT_AUTH_CHECK (AUTH, RFC 4954) no reply yet: check the password of
 *                      smtp_session_auth_user() (off the event loop: it is
 *                      a deliberately slow KDF), then call
 *                      smtp_session_auth_checked(), which writes the 235 or
 *                      the 535 and wipes the password. Read no further
 *                      commands until then.
 *   SMTP_ACT_CLOSE     flush out and close the connection.
 *
 * State only changes in session_set_state() (logged at debug level).
 */
#ifndef STRICTRELAY_SMTP_SESSION_H
#define STRICTRELAY_SMTP_SESSION_H

#include <stdbool.h>
#include <stdint.h>

#include "policy/requiretls.h"
#include "queue/message.h"
#include "smtp/data.h"
#include "smtp/sasl.h"
#include "mta/util.h"

/* Settings shared by every session of a listener; borrowed, must outlive it. */
struct smtp_session_config {
	const char *hostname;
	uint64_t max_message_size;
	unsigned max_recipients;
	unsigned max_errors;                  /* then 421 and close; 0 = 20 */
	bool tls_available;                   /* a certificate is loaded: offer STARTTLS */
	bool normalize_bare_newlines;         /* else bare CR/LF refuses the message */
	const struct strlist *accept_domains; /* may be NULL */
	const struct rtls_rules *requiretls_rules; /* may be NULL */
	bool requiretls_preflight;            /* RCPT checks for REQUIRETLS transactions */
	/* Submission listeners: MAIL needs a successful AUTH first. */
	bool submission;
	/* A users file is loaded: offer AUTH PLAIN LOGIN inside TLS. */
	bool auth_available;
	/* Where "RCPT TO:<postmaster>" (no domain) goes; NULL or "": refused. */
	const char *postmaster;
	/* Unauthenticated relay clients may only use these sender domains
	 * (NULL or empty: any). */
	const struct strlist *sender_domains;
	/* Per-client message rate ([server] max_messages_per_minute): called at
	 * each MAIL; false = refuse it with a 450. NULL = no limit. */
	bool (*message_allowed)(void *arg, const char *client_addr);
	/* Free space for the queue ([queue] min_free_space): called at each
	 * MAIL with the client's SIZE (0 when not given); false = refuse it
	 * with 452 4.3.1. NULL = no check. */
	bool (*space_available)(void *arg, uint64_t size);
	void *hook_arg;
	/* Queue id source; NULL = qid_generate (tests pass a fixed one). */
	void (*new_qid)(char out[QID_LEN + 1]);
};

enum smtp_state {
	SMTP_STATE_CONNECTED, /* greeting sent, no HELO/EHLO yet */
	SMTP_STATE_READY,     /* HELO/EHLO done, no transaction */
	SMTP_STATE_MAIL,      /* MAIL accepted */
	SMTP_STATE_RCPT,      /* at least one RCPT accepted */
	SMTP_STATE_DATA,      /* reading message data */
	SMTP_STATE_QUEUEING,  /* waiting for the store */
	SMTP_STATE_CLOSED,    /* QUIT or fatal error: nothing more is read */
};

enum smtp_action {
	SMTP_ACT_NONE,
	SMTP_ACT_STARTTLS,
	SMTP_ACT_DATA,
	SMTP_ACT_ENQUEUE,
	SMTP_ACT_RCPT_CHECK,
	SMTP_ACT_AUTH_CHECK,
	SMTP_ACT_CLOSE,
};

enum smtp_auth_step {
	SMTP_AUTH_NONE,
	SMTP_AUTH_PLAIN,      /* "334 " sent, waiting for the PLAIN response */
	SMTP_AUTH_LOGIN_USER, /* "334 VXNlcm5hbWU6" sent */
	SMTP_AUTH_LOGIN_PASS, /* "334 UGFzc3dvcmQ6" sent */
	SMTP_AUTH_CHECKING,   /* SMTP_ACT_AUTH_CHECK returned */
};

enum smtp_auth_result {
	SMTP_AUTH_OK,
	SMTP_AUTH_FAILED,     /* wrong user or password: 535 5.7.8 */
	SMTP_AUTH_LOCKED,     /* too many failures from this client: 421 4.7.0 */
	SMTP_AUTH_TEMPFAIL,   /* could not check: 454 4.7.0 */
};

struct smtp_session {
	const struct smtp_session_config *cfg;
	char client_addr[64];
	bool client_trusted;     /* in relay_networks: may relay anywhere */
	enum smtp_state state;
	bool esmtp;
	bool tls;                /* TLS is up */
	char tls_info[160];      /* "TLSv1.3 TLS_AES_256_GCM_SHA384" */
	char *helo;              /* sanitised HELO/EHLO argument */
	unsigned errors;
	unsigned excess_rcpts;   /* RCPTs refused with 452 4.5.3 */
	unsigned junk_commands;  /* NOOP/RSET/VRFY/HELP since the last accepted message */
	/* SMTP AUTH */
	char auth_user[SASL_MAX_FIELD + 1];   /* "" = not authenticated */
	enum smtp_auth_step auth_step;
	char auth_name[SASL_MAX_FIELD + 1];   /* the user being checked */
	char auth_pass[SASL_MAX_FIELD + 1];   /* wiped after the check */
	/* the transaction */
	char qid[QID_LEN + 1];
	char *sender;
	uint32_t flags;          /* enum msg_flags from MAIL parameters */
	struct strlist rcpts;
	struct strlist notify;   /* DSN NOTIFY per recipient ("" = not given) */
	struct strlist orcpt;    /* DSN ORCPT per recipient */
	char *ret;               /* DSN RET */
	char *envid;             /* DSN ENVID */
	char pending_notify[40]; /* the parameters of pending_rcpt */
	char *pending_orcpt;
	bool rtls_rule;          /* a require_for rule tags this transaction REQUIRETLS */
	char rtls_why[160];      /* which rule */
	char *pending_rcpt;      /* RCPT waiting for the preflight check */
	struct smtp_data_reader data;
	struct buf message;      /* DATA octets as read (capped by the reader) */
	struct queued_message *ready; /* built by data_end, taken by take_message */
	/* counters for the log */
	unsigned messages;
};

void smtp_session_init(struct smtp_session *s, const struct smtp_session_config *cfg,
		       const char *client_addr, bool client_trusted);
void smtp_session_free(struct smtp_session *s);

/* "220 host ESMTP strictrelay" */
void smtp_session_greeting(struct smtp_session *s, struct buf *out);

/* One command line without its CR LF (the buffer is modified). */
enum smtp_action smtp_session_command(struct smtp_session *s, char *line, struct buf *out);

/* A command line longer than the limit was discarded. */
enum smtp_action smtp_session_line_too_long(struct smtp_session *s, struct buf *out);

/* The data reader reached end of data; checks and builds the message. */
enum smtp_action smtp_session_data_end(struct smtp_session *s, struct buf *out);

/* Ownership passes to the caller (queued_message_free + free). */
struct queued_message *smtp_session_take_message(struct smtp_session *s);

/* The domain an SMTP_ACT_RCPT_CHECK asks about. */
const char *smtp_session_pending_domain(const struct smtp_session *s);

/* The preflight's answer: refuse = the domain provably cannot take REQUIRETLS
 * mail now (reason says why). */
void smtp_session_rcpt_checked(struct smtp_session *s, bool refuse, const char *reason,
			       struct buf *out);

/* SMTP_ACT_AUTH_CHECK: the credentials to check. */
const char *smtp_session_auth_user(const struct smtp_session *s);
const char *smtp_session_auth_password(const struct smtp_session *s);

/* The password check's verdict (wipes the password). */
void smtp_session_auth_checked(struct smtp_session *s, enum smtp_auth_result result,
			       struct buf *out);

/* The store's verdict on the message taken above. */
void smtp_session_queued(struct smtp_session *s, bool ok, struct buf *out);

/* The store could not take it for lack of disk space: 452 4.3.1 (RFC 3463
 * "mail system full"), a temporary failure the client retries later. */
void smtp_session_queue_full(struct smtp_session *s, struct buf *out);

/* TLS is up: forget everything learnt before it (RFC 3207 4.2). */
void smtp_session_tls_started(struct smtp_session *s, const char *tls_info);

/* Time-out while waiting for a command or data: 421 and close. */
void smtp_session_timeout(struct smtp_session *s, struct buf *out);

/* Server shutting down or overloaded: 421 and close. */
void smtp_session_shutdown(struct smtp_session *s, struct buf *out, const char *why);

const char *smtp_state_name(enum smtp_state st);

#endif
