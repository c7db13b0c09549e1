/*
 * delivery.h - delivery jobs and how their outcomes are written back.
 *
 * A job is one message to one destination: the recipients of that message
 * whose domain goes the same way. The scheduler builds jobs from due
 * recipients, the SMTP client fills in each recipient's outcome, and
 * delivery_record() persists the outcomes in one store operation: sent,
 * deferred (next attempt from the retry schedule) or bounced, a bounce
 * (DSN) to the sender queued in the same transaction, the message deleted
 * once no recipient is left. Deferring a recipient past max_lifetime bounces
 * it instead.
 *
 * struct msg_body is shared (reference counted) by the jobs of one message.
 */
#ifndef STRICTRELAY_QUEUE_DELIVERY_H
#define STRICTRELAY_QUEUE_DELIVERY_H

#include <stdbool.h>
#include <stdint.h>

#include "mta/config.h"
#include "queue/message.h"
#include "queue/store.h"

struct msg_body {
	int refs;
	char id[QID_LEN + 1];
	char *sender;
	uint32_t flags;
	int64_t arrival;
	char *ret;        /* DSN RET: "FULL", "HDRS" or "" */
	char *envid;      /* DSN ENVID or "" */
	char *data;
	size_t len;
};

enum rcpt_outcome {
	RCPT_PENDING,
	RCPT_SENT,
	RCPT_DEFERRED,
	RCPT_BOUNCED,
};

struct job_rcpt {
	int64_t rowid;
	char *address;
	unsigned attempts;          /* before this attempt */
	char *notify;               /* DSN NOTIFY or "" */
	char *orcpt;                /* DSN ORCPT or "" */
	bool relayed;               /* delivered to a peer without DSN while NOTIFY asked
	                             * for SUCCESS: we owe a "relayed" notice (RFC 3461 6.2) */
	enum rcpt_outcome outcome;
	char status[16];            /* enhanced status code */
	char reply[512];            /* remote reply or local reason, one line */
};

struct delivery_job {
	struct delivery_job *next;
	struct msg_body *msg;
	char *domain;               /* the recipients' domain (lower case) */
	struct job_rcpt *rcpts;
	size_t nrcpts;
	char remote_mta[256];       /* MX that answered last, for DSNs and listings */
	char via[300];              /* "mx1.example.test[127.1.1.10]:25" */
	uint64_t started_ms;
};

/* Sets every pending recipient's outcome (used when a whole job fails). */
void job_set_pending(struct delivery_job *job, enum rcpt_outcome o, const char *status,
		     const char *reply);

void job_free(struct delivery_job *job);

/* For log lines: "yes source=param", "yes source=rule" or "no" (a null
 * sender's REQUIRETLS is not enforced, RFC 8689 4.2.1). */
const char *requiretls_log(const struct msg_body *m);
void msg_body_unref(struct msg_body *b);

/*
 * Persists the outcomes of job (the job stays the caller's; the data needed
 * is copied). now is the attempt time. done may be NULL.
 */
void delivery_record(struct store *st, const struct config *cfg, const struct delivery_job *job,
		     int64_t now, store_done_fn done, void *arg);

/* One outbound session's TLS facts, for TLS reporting (RFC 8460). */
struct tls_session_record {
	int64_t time;
	char policy_domain[256];
	char policy_type[32];     /* "sts", "no-policy-found" */
	char mx_host[256];
	char mx_ip[64];
	char mx_helo[256];
	char sending_ip[64];
	bool starttls_offered;
	bool tls;                 /* a TLS session was established */
	bool verified;            /* chain and name verified */
	char result_type[48];     /* "success" or an RFC 8460 result-type */
	char tls_version[32];
	char cipher[96];
	char detail[256];         /* failure-reason-code / free text */
	char policy_strings[4096];/* the MTA-STS policy lines, "\n"-separated */
	char policy_mx[1024];     /* its mx patterns, "\n"-separated */
	bool tls_required_no;     /* the message asked to skip policies (not reported) */
};

void tls_session_record(struct store *st, const struct tls_session_record *rec);

#endif
