/* dsn.c - see dsn.h */
#include "dsn.h"

#include <stdio.h>
#include <string.h>

#include "queue/message.h"
#include "smtp/reply.h"

#define MAX_LINE 998        /* RFC 5322 2.1.1, CR LF excluded */
#define WRAP 76             /* preferred width of text and folded fields */
#define MAX_BOUNDARY 70     /* RFC 2046 5.1.1 */
#define BOUNDARY_TRIES 100

static void truncate_to(struct buf *b, size_t len)
{
	if (b->data != NULL && len <= b->len) {
		b->len = len;
		b->data[len] = '\0';
	}
}

static bool has_ctl(const char *s)
{
	for (; *s != '\0'; s++)
		if ((unsigned char)*s < 0x20 || *s == 0x7f)
			return true;
	return false;
}

static bool is_ascii(const char *s)
{
	return s == NULL || str_is_ascii(s, strlen(s));
}

static bool empty(const char *s)
{
	return s == NULL || *s == '\0';
}

const char *dsn_status_from_reply(int code, const char *enhanced)
{
	if (!empty(enhanced)) {
		size_t n = strlen(enhanced);
		if (smtp_enhanced_scan(enhanced, n, code) == n)
			return enhanced;
	}
	return smtp_status_generic(code);
}

/* A valid "class.subject.detail" with class 2, 4 or 5 and nothing else. */
static bool status_valid(const char *s)
{
	if (empty(s) || (s[0] != '2' && s[0] != '4' && s[0] != '5'))
		return false;
	size_t n = strlen(s);
	return smtp_enhanced_scan(s, n, (s[0] - '0') * 100) == n;
}

static const char *const actions[] = { "failed", "delayed", "delivered", "relayed", "expanded" };

static bool action_valid(const char *a)
{
	if (empty(a))
		return false;
	for (size_t i = 0; i < SR_ARRAY_LEN(actions); i++)
		if (strcmp(a, actions[i]) == 0)
			return true;
	return false;
}

static const char *rcpt_status(const struct dsn_recipient *r)
{
	if (status_valid(r->status))
		return r->status;
	if (strcmp(r->action, "failed") == 0)
		return "5.0.0";
	if (strcmp(r->action, "delayed") == 0)
		return "4.0.0";
	return "2.0.0";
}

/*
 * Makes text from elsewhere one line of printable ASCII: control and 8-bit
 * octets become \xNN, blank runs become one space, ends are trimmed; cut
 * at max octets with "..." (never inside an escape). '\' is left alone, as
 * smtp_reply_render() does, so a rendered reply comes through unchanged.
 */
static void sanitize(char *dst, size_t max, const char *src)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t o = 0;
	bool space = false, cut = false;
	if (src == NULL)
		src = "";
	for (const unsigned char *s = (const unsigned char *)src; *s != '\0'; s++) {
		char u[4];
		size_t n;
		if (*s == ' ' || *s == '\t' || *s == '\r' || *s == '\n') {
			space = o > 0;
			continue;
		}
		if (*s < 0x20 || *s >= 0x7f) {
			u[0] = '\\';
			u[1] = 'x';
			u[2] = hex[*s >> 4];
			u[3] = hex[*s & 15];
			n = 4;
		} else {
			u[0] = (char)*s;
			n = 1;
		}
		if (o + (space ? 1 : 0) + n + 3 > max) {
			cut = true;
			break;
		}
		if (space)
			dst[o++] = ' ';
		space = false;
		memcpy(dst + o, u, n);
		o += n;
	}
	if (cut) {
		memcpy(dst + o, "...", 3);
		o += 3;
	}
	dst[o] = '\0';
}

/* Does s (sanitized) start like an SMTP reply: "ddd" then " ", "-" or
 * the end? ("550-5.1.1 ..." is a multi-line reply passed on raw.) */
static bool looks_like_reply(const char *s)
{
	return s[0] >= '2' && s[0] <= '5' && s[1] >= '0' && s[1] <= '9' && s[2] >= '0' &&
	       s[2] <= '9' && (s[3] == ' ' || s[3] == '-' || s[3] == '\0');
}

/* Appends one word, split into pieces that keep lines within MAX_LINE;
 * *col is the current column; cont is what starts a continuation line. */
static void put_long_word(struct part *p, const char *w, size_t n, size_t *col, const char *cont)
{
	while (*col + n > MAX_LINE) {
		size_t k = MAX_LINE - *col;
		part_put(p, w, k);
		part_puts(p, "\r\n");
		part_puts(p, cont);
		*col = strlen(cont);
		w += k;
		n -= k;
	}
	part_put(p, w, n);
	*col += n;
}

/*
 * Appends text (words separated by single spaces) starting at column col,
 * breaking lines before WRAP where a space allows; continuation lines begin
 * with cont (an indent for body text, " " to fold a header field). Ends
 * with CR LF.
 */
static void wrap(struct part *p, const char *text, size_t col, const char *cont)
{
	size_t contlen = strlen(cont);
	bool first = true;
	const char *s = text;
	while (*s != '\0') {
		const char *e = strchr(s, ' ');
		size_t n = e != NULL ? (size_t)(e - s) : strlen(s);
		if (n > 0) {
			if (!first && col + 1 + n > WRAP && col > contlen) {
				part_puts(p, "\r\n");
				part_puts(p, cont);
				col = contlen;
			} else if (!first) {
				part_puts(p, " ");
				col++;
			}
			put_long_word(p, s, n, &col, cont);
			first = false;
		}
		s += n;
		if (*s == ' ')
			s++;
	}
	part_puts(p, "\r\n");
}

static void put_date(struct part *p, const char *field, int64_t t)
{
	char d[64];
	fmt_time_rfc5322(d, sizeof(d), t);
	part_printf(p, "%s: %s\r\n", field, d);
}

/* --- part 1: for humans ---------------------------------------------------- */

static bool requiretls_failure(const char *status)
{
	/* X.7.10 (TLS could not be set up or verified), X.7.30 (no REQUIRETLS) */
	return status[0] != '\0' && (strcmp(status + 1, ".7.10") == 0 ||
				     strcmp(status + 1, ".7.30") == 0);
}

static const char *action_phrase(const char *action)
{
	if (strcmp(action, "failed") == 0)
		return "could not be delivered";
	if (strcmp(action, "delayed") == 0)
		return "not delivered yet, still trying";
	if (strcmp(action, "delivered") == 0)
		return "delivered";
	if (strcmp(action, "relayed") == 0)
		return "relayed to a system that sends no delivery reports";
	return "delivered to a list or alias, which may pass it on";
}

static void build_text(struct part *p, const struct dsn_params *prm, bool any_failed,
		       bool any_delayed, bool requiretls, bool full)
{
	char line[1200];
	part_printf(p, "This is the mail system at host %s.\r\n\r\n", prm->reporting_mta);
	snprintf(line, sizeof(line), "%s %s",
		 any_failed ? "Your message could not be delivered to one or more recipients."
		 : any_delayed
			 ? "Your message has not been delivered to one or more recipients yet. "
			   "The mail system keeps trying; you do not need to send it again."
			 : "This is a report on the delivery of your message.",
		 full ? "It is attached below, after the details."
		      : "The details are below, followed by the header section of your message.");
	wrap(p, line, 0, "");
	if (requiretls) {
		bool unmet = false;
		for (size_t i = 0; i < prm->nrcpts; i++)
			unmet |= requiretls_failure(rcpt_status(&prm->rcpts[i]));
		part_puts(p, "\r\n");
		wrap(p, "Your message was sent with REQUIRETLS (RFC 8689): it may only travel over "
			"TLS connections with verified certificates, to servers that support "
			"REQUIRETLS.",
		     0, "");
		if (unmet)
			wrap(p, "That requirement could not be met for the recipients marked "
				"below, so the message was not sent to them.",
			     0, "");
		wrap(p, "To protect its confidentiality only its header section is returned, and "
			"this report is not itself sent with REQUIRETLS.",
		     0, "");
	}
	char id[64];
	sanitize(id, sizeof(id) - 1, prm->original_id);
	if (id[0] != '\0')
		part_printf(p, "\r\nMessage queue id: %s\r\n", id);
	for (size_t i = 0; i < prm->nrcpts && i < DSN_MAX_LISTED; i++) {
		const struct dsn_recipient *r = &prm->rcpts[i];
		const char *status = rcpt_status(r);
		part_puts(p, "\r\n");
		snprintf(line, sizeof(line), "<%s>: %s (%s).", r->address, action_phrase(r->action),
			 status);
		wrap(p, line, 0, "    ");
		if (requiretls && requiretls_failure(status))
			part_puts(p, "    The REQUIRETLS requirement could not be met.\r\n");
		if (!empty(r->diagnostic)) {
			char diag[DSN_MAX_DIAGNOSTIC + 1];
			char host[300];
			sanitize(diag, DSN_MAX_DIAGNOSTIC, r->diagnostic);
			if (!empty(r->remote_mta) && looks_like_reply(diag)) {
				sanitize(host, sizeof(host) - 1, r->remote_mta);
				part_printf(p, "    The mail server %s said:\r\n", host);
			} else {
				part_puts(p, "    Reason:\r\n");
			}
			part_puts(p, "    ");
			wrap(p, diag, 4, "    ");
		}
		if (strcmp(r->action, "delayed") == 0 && r->will_retry_until != 0) {
			char d[64];
			fmt_time_rfc5322(d, sizeof(d), r->will_retry_until);
			part_printf(p, "    Retrying until %s.\r\n", d);
		}
	}
	if (prm->nrcpts > DSN_MAX_LISTED)
		part_printf(p, "\r\n... and %zu more recipient(s): see the delivery report.\r\n",
			prm->nrcpts - DSN_MAX_LISTED);
}

/* --- part 2: message/delivery-status ------------------------------------- */

static void build_status(struct part *p, const struct dsn_params *prm, bool global)
{
	char tmp[600];
	part_printf(p, "Reporting-MTA: dns; %s\r\n", prm->reporting_mta);
	sanitize(tmp, sizeof(tmp) - 1, prm->original_id);
	if (tmp[0] != '\0')
		part_printf(p, "X-Strictrelay-Queue-ID: %s\r\n", tmp);
	if (!empty(prm->envid)) {
		sanitize(tmp, sizeof(tmp) - 1, prm->envid);
		part_printf(p, "Original-Envelope-Id: %s\r\n", tmp);
	}
	if (prm->arrival != 0)
		put_date(p, "Arrival-Date", prm->arrival);
	for (size_t i = 0; i < prm->nrcpts; i++) {
		const struct dsn_recipient *r = &prm->rcpts[i];
		part_puts(p, "\r\n");
		part_printf(p, "Final-Recipient: %s; %s\r\n", global ? "utf-8" : "rfc822", r->address);
		if (!empty(r->orcpt)) {
			if (global && !is_ascii(r->orcpt))
				/* checked: no controls, at most 512 octets */
				snprintf(tmp, sizeof(tmp), "%s", r->orcpt);
			else
				sanitize(tmp, sizeof(tmp) - 1, r->orcpt);
			part_printf(p, "Original-Recipient: %s\r\n", tmp);
		}
		part_printf(p, "Action: %s\r\n", r->action);
		part_printf(p, "Status: %s\r\n", rcpt_status(r));
		if (!empty(r->remote_mta)) {
			sanitize(tmp, sizeof(tmp) - 1, r->remote_mta);
			part_printf(p, "Remote-MTA: dns; %s\r\n", tmp);
		}
		if (!empty(r->diagnostic)) {
			char diag[DSN_MAX_DIAGNOSTIC + 1];
			sanitize(diag, DSN_MAX_DIAGNOSTIC, r->diagnostic);
			const char *type = looks_like_reply(diag) ? "smtp" : "x-strictrelay";
			part_printf(p, "Diagnostic-Code: %s; ", type);
			wrap(p, diag, strlen("Diagnostic-Code: ; ") + strlen(type), " ");
		}
		if (r->last_attempt != 0)
			put_date(p, "Last-Attempt-Date", r->last_attempt);
		if (strcmp(r->action, "delayed") == 0 && r->will_retry_until != 0)
			put_date(p, "Will-Retry-Until", r->will_retry_until);
	}
}

/* --- part 3: the original --------------------------------------------------- */

/* The next line of msg[*pos..len): any of CR LF, LF or CR ends it. */
static bool next_line(const char *msg, size_t len, size_t *pos, const char **line, size_t *n)
{
	size_t i = *pos;
	if (i >= len)
		return false;
	size_t j = i;
	while (j < len && msg[j] != '\r' && msg[j] != '\n')
		j++;
	*line = msg + i;
	*n = j - i;
	if (j < len && msg[j] == '\r' && j + 1 < len && msg[j + 1] == '\n')
		j++;
	*pos = j < len ? j + 1 : j;
	return true;
}

/* A line of the original with CR LF, split when above MAX_LINE octets:
 * header lines are folded (CR LF SP), body lines simply broken. */
static void put_orig_line(struct part *p, const char *s, size_t n, bool header)
{
	size_t max = MAX_LINE;
	while (n > max) {
		part_put(p, s, max);
		part_puts(p, header ? "\r\n " : "\r\n");
		s += max;
		n -= max;
		max = header ? MAX_LINE - 1 : MAX_LINE;
	}
	part_put(p, s, n);
	part_puts(p, "\r\n");
}

static void build_original(struct part *p, const struct dsn_params *prm, bool full)
{
	const char *msg = prm->message != NULL ? prm->message : "";
	size_t len = prm->message != NULL ? prm->message_len : 0;
	size_t pos = 0, n;
	const char *line;
	bool header = true;
	size_t field_start = p->b.len;
	while (next_line(msg, len, &pos, &line, &n)) {
		if (header && n == 0) {
			header = false;
			if (!full)
				break;
		}
		if (header && !full) {
			bool cont = line[0] == ' ' || line[0] == '\t';
			if (!cont)
				field_start = p->b.len;
			/* Cut at a field boundary: never half a folded field. */
			if (p->b.len + n + 2 + n / MAX_LINE * 3 > DSN_MAX_HEADERS) {
				if (cont)
					truncate_to(&p->b, field_start);
				break;
			}
		}
		put_orig_line(p, line, n, header);
	}
}

/* --- assembly ------------------------------------------------------------- */

/* Keeps the octets of s allowed in set (others dropped), at most max. */
static void keep_chars(char *dst, size_t max, const char *s, const char *set)
{
	size_t o = 0;
	for (; s != NULL && *s != '\0' && o < max; s++) {
		unsigned char c = (unsigned char)*s;
		if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		    (c != '\0' && strchr(set, c) != NULL))
			dst[o++] = (char)c;
	}
	dst[o] = '\0';
}

static int choose_boundary(char *dst, size_t dstlen, const struct dsn_params *prm,
			   struct part *parts, size_t nparts)
{
	char seed[40], host[40], base[MAX_BOUNDARY + 1];
	keep_chars(seed, sizeof(seed) - 1, prm->seed, "-_.");
	keep_chars(host, sizeof(host) - 1, prm->reporting_mta, "-_.");
	snprintf(base, 56, "=_%s.%lld/%s", seed, (long long)prm->now, host);
	for (int t = 0; t < BOUNDARY_TRIES; t++) {
		if (t == 0)
			snprintf(dst, dstlen, "%s", base);
		else
			snprintf(dst, dstlen, "%s.%d", base, t);
		bool clash = false;
		for (size_t i = 0; i < nparts && !clash; i++)
			clash = buf_contains(&parts[i].b, dst);
		if (!clash)
			return 0;
	}
	return -1;
}

static void put_part_header(struct part *out, const char *boundary, const char *desc,
			    const char *type, const struct part *body)
{
	part_printf(out, "\r\n--%s\r\n", boundary);
	part_printf(out, "Content-Description: %s\r\n", desc);
	part_printf(out, "Content-Type: %s\r\n", type);
	if (!str_is_ascii(body->b.data, body->b.len))
		part_puts(out, "Content-Transfer-Encoding: 8bit\r\n");
	part_puts(out, "\r\n");
	part_put(out, body->b.data, body->b.len);
}

/* Non-empty, no control characters, at most max octets (which keeps every
 * line that shows it within 998 octets). */
static bool ok_string(const char *s, size_t max)
{
	return !empty(s) && !has_ctl(s) && strlen(s) <= max;
}

static bool check_params(const struct dsn_params *p)
{
	if (!ok_string(p->original_sender, DSN_MAX_ADDRESS) ||
	    !ok_string(p->reporting_mta, DSN_MAX_HOST) ||
	    !ok_string(p->from_address, DSN_MAX_ADDRESS) || p->rcpts == NULL || p->nrcpts == 0 ||
	    (p->message == NULL && p->message_len != 0))
		return false;
	for (size_t i = 0; i < p->nrcpts; i++) {
		const struct dsn_recipient *r = &p->rcpts[i];
		if (!ok_string(r->address, DSN_MAX_ADDRESS) || !action_valid(r->action))
			return false;
		if (!empty(r->orcpt) && !ok_string(r->orcpt, DSN_MAX_ADDRESS))
			return false;
	}
	return true;
}

int dsn_build(const struct dsn_params *prm, struct buf *out)
{
	if (!check_params(prm))
		return -1;

	bool requiretls = (prm->flags & (MSG_REQUIRETLS | MSG_REQUIRETLS_RULE)) != 0;
	bool global = (prm->flags & MSG_SMTPUTF8) != 0 || !is_ascii(prm->original_sender);
	bool any_failed = false, any_delayed = false;
	for (size_t i = 0; i < prm->nrcpts; i++) {
		const struct dsn_recipient *r = &prm->rcpts[i];
		global |= !is_ascii(r->address) || !is_ascii(r->orcpt);
		any_failed |= strcmp(r->action, "failed") == 0;
		any_delayed |= strcmp(r->action, "delayed") == 0;
	}
	bool full = any_failed && !requiretls && !prm->ret_hdrs && prm->message_len <= DSN_MAX_FULL;

	struct part parts[3];
	part_init(&parts[0], DSN_MAX_REPORT);
	part_init(&parts[1], DSN_MAX_REPORT);
	/* normalising bare CR or LF to CR LF at most doubles the size */
	part_init(&parts[2], full ? 2 * DSN_MAX_FULL + 4096 : DSN_MAX_HEADERS + 4096);
	build_text(&parts[0], prm, any_failed, any_delayed, requiretls, full);
	build_status(&parts[1], prm, global);
	build_original(&parts[2], prm, full);

	int rc = -1;
	char boundary[MAX_BOUNDARY + 1];
	struct part msg = { .b = *out, .err = false };
	size_t start = out->len;
	if (parts[0].err || parts[1].err || parts[2].err ||
	    choose_boundary(boundary, sizeof(boundary), prm, parts, 3) < 0)
		goto done;

	bool eight = false;
	for (size_t i = 0; i < 3; i++)
		eight |= !str_is_ascii(parts[i].b.data, parts[i].b.len);

	char date[64], seed[64], host[256];
	fmt_time_rfc5322(date, sizeof(date), prm->now);
	keep_chars(seed, sizeof(seed) - 1, prm->seed, "-_.");
	keep_chars(host, sizeof(host) - 1, prm->reporting_mta, "-_.[]:");
	part_printf(&msg, "From: Mail Delivery System <%s>\r\n", prm->from_address);
	part_printf(&msg, "To: <%s>\r\n", prm->original_sender);
	part_printf(&msg, "Subject: %s\r\n",
		any_failed    ? "Undelivered Mail Returned to Sender"
		: any_delayed ? "Delayed Mail (still being retried)"
			      : "Successful Mail Delivery Report");
	part_printf(&msg, "Date: %s\r\n", date);
	part_printf(&msg, "Message-ID: <%lld.%s@%s>\r\n", (long long)prm->now, seed[0] ? seed : "dsn",
		host[0] ? host : "localhost");
	part_puts(&msg, "Auto-Submitted: auto-replied\r\n");
	if ((prm->flags & MSG_TLS_REQUIRED_NO) && !requiretls)
		part_puts(&msg, "TLS-Required: No\r\n");
	part_puts(&msg, "MIME-Version: 1.0\r\n");
	part_printf(&msg, "Content-Type: multipart/report; report-type=delivery-status;\r\n"
		      "\tboundary=\"%s\"\r\n", boundary);
	if (eight)
		part_puts(&msg, "Content-Transfer-Encoding: 8bit\r\n");
	part_puts(&msg, "\r\nThis is a MIME-encapsulated message.\r\n");

	bool text8 = !str_is_ascii(parts[0].b.data, parts[0].b.len);
	put_part_header(&msg, boundary, "Notification",
			text8 ? "text/plain; charset=utf-8" : "text/plain; charset=us-ascii",
			&parts[0]);
	put_part_header(&msg, boundary, "Delivery report",
			global ? "message/global-delivery-status" : "message/delivery-status",
			&parts[1]);
	const char *type = full ? (global ? "message/global" : "message/rfc822")
				: (global ? "message/global-headers" : "text/rfc822-headers");
	put_part_header(&msg, boundary,
			full ? "Undelivered Message" : any_failed ? "Undelivered Message Headers"
								  : "Message Headers",
			type, &parts[2]);
	part_printf(&msg, "\r\n--%s--\r\n", boundary);
	if (!msg.err)
		rc = 0;
done:
	if (rc < 0)
		truncate_to(&msg.b, start);
	*out = msg.b;
	for (size_t i = 0; i < 3; i++)
		buf_free(&parts[i].b);
	return rc;
}
