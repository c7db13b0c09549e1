/* Unit tests for smtp/dsn.c: structure (DSN-11/12), headers-only returns
 * (REQUIRETLS, RET=HDRS, big messages), SMTPUTF8 types (UTF8-04),
 * TLS-Required (RTLS-23), the boundary, line rules, refusals; and a check
 * with Python's email package as an independent parser. */
#include <stdint.h>
#include <unistd.h>

#include "mta/util.h"
#include "queue/message.h"
#include "smtp/dsn.h"
#include "test.h"

static const char ORIG[] = "Received: from client.example (client.example [192.0.2.1])\r\n"
			   "\tby relay.example.internal with ESMTPS id 0123456789AB\r\n"
			   "From: Alice <alice@example.org>\r\n"
			   "To: bob@example.net\r\n"
			   "Subject: Quarterly numbers\r\n"
			   "Message-ID: <m1@example.org>\r\n"
			   "\r\n"
			   "SECRET BODY LINE\r\n"
			   ".dot line\r\n";

#define NOW 1795426200     /* 2026-11-23 09:30:00 UTC */
#define ARRIVAL (NOW - 3600)

static struct dsn_recipient RCPTS[2];

static struct dsn_params defaults(void)
{
	RCPTS[0] = (struct dsn_recipient){
		.address = "bob@example.net",
		.action = "failed",
		.status = "5.1.1",
		.diagnostic = "550 5.1.1 <bob@example.net>: Recipient address rejected: "
			      "User unknown",
		.remote_mta = "mx1.example.net",
		.last_attempt = NOW - 10,
	};
	RCPTS[1] = (struct dsn_recipient){
		.address = "carol@example.net",
		.action = "failed",
		.status = "5.7.30",
		.diagnostic = "550 5.7.30 REQUIRETLS support required",
		.remote_mta = "mx2.example.net",
		.last_attempt = NOW - 5,
	};
	return (struct dsn_params){
		.reporting_mta = "relay.example.internal",
		.from_address = "MAILER-DAEMON@relay.example.internal",
		.original_sender = "alice@example.org",
		.original_id = "0123456789AB",
		.arrival = ARRIVAL,
		.message = ORIG,
		.message_len = sizeof(ORIG) - 1,
		.rcpts = RCPTS,
		.nrcpts = 2,
		.now = NOW,
		.seed = "0123456789XY",
	};
}

/* --- a small MIME splitter for the checks --------------------------------- */

struct view {
	char *headers;       /* top-level header section (with its final CR LF) */
	char boundary[128];
	int nparts;
	char *part_headers[4];
	char *part_body[4];
	bool closed;         /* the close delimiter was found */
};

static void view_free(struct view *v)
{
	free(v->headers);
	for (int i = 0; i < v->nparts; i++) {
		free(v->part_headers[i]);
		free(v->part_body[i]);
	}
	memset(v, 0, sizeof(*v));
}

static bool split(const char *msg, struct view *v)
{
	memset(v, 0, sizeof(*v));
	const char *eoh = strstr(msg, "\r\n\r\n");
	if (eoh == NULL)
		return false;
	v->headers = xstrndup(msg, (size_t)(eoh - msg) + 2);
	const char *b = strstr(v->headers, "boundary=\"");
	if (b == NULL)
		return false;
	b += strlen("boundary=\"");
	const char *e = strchr(b, '"');
	if (e == NULL || (size_t)(e - b) >= sizeof(v->boundary))
		return false;
	memcpy(v->boundary, b, (size_t)(e - b));
	v->boundary[e - b] = '\0';
	char delim[140];
	snprintf(delim, sizeof(delim), "\r\n--%s", v->boundary);
	const char *p = strstr(eoh + 2, delim); /* the body starts with CR LF */
	while (p != NULL) {
		p += strlen(delim);
		if (strncmp(p, "--\r\n", 4) == 0) {
			v->closed = p[4] == '\0';
			return true;
		}
		if (strncmp(p, "\r\n", 2) != 0 || v->nparts == 4)
			return false;
		p += 2;
		const char *next = strstr(p, delim);
		if (next == NULL)
			return false;
		const char *ph = strstr(p, "\r\n\r\n");
		if (ph == NULL || ph > next) {
			/* a part without headers starts with its blank line */
			if (strncmp(p, "\r\n", 2) != 0)
				return false;
			ph = p - 2;
		}
		if (ph + 4 > next)
			return false;
		v->part_headers[v->nparts] = xstrndup(p, (size_t)(ph - p) + 2);
		v->part_body[v->nparts] = xstrndup(ph + 4, (size_t)(next - ph - 4));
		v->nparts++;
		p = next;
	}
	return false;
}

/* Every line ends in CR LF, no bare CR or LF, none above 998 octets. */
static bool lines_ok(const char *s, size_t len)
{
	size_t col = 0;
	for (size_t i = 0; i < len; i++) {
		if (s[i] == '\r') {
			if (i + 1 >= len || s[i + 1] != '\n')
				return false;
			i++;
			col = 0;
		} else if (s[i] == '\n') {
			return false;
		} else if (++col > 998) {
			return false;
		}
	}
	return col == 0;
}

static bool has_line(const char *text, const char *line)
{
	size_t n = strlen(line);
	const char *p = strstr(text, line);
	while (p != NULL) {
		if ((p == text || p[-1] == '\n') && strncmp(p + n, "\r\n", 2) == 0)
			return true;
		p = strstr(p + 1, line);
	}
	return false;
}

static bool has_prefix_line(const char *text, const char *prefix)
{
	const char *p = strstr(text, prefix);
	while (p != NULL) {
		if (p == text || p[-1] == '\n')
			return true;
		p = strstr(p + 1, prefix);
	}
	return false;
}

static size_t count(const char *text, const char *s)
{
	size_t n = 0;
	const char *p = strstr(text, s);
	while (p != NULL) {
		n++;
		p = strstr(p + strlen(s), s);
	}
	return n;
}

/* Part 1 text with its line breaks (and indents) turned into single
 * spaces, so checks do not depend on where lines were wrapped. Static. */
static const char *flat(const char *text)
{
	static char out[1 << 16];
	size_t o = 0;
	for (const char *p = text; *p != '\0' && o + 1 < sizeof(out); p++) {
		char c = *p == '\r' || *p == '\n' ? ' ' : *p;
		if (c == ' ' && o > 0 && out[o - 1] == ' ')
			continue;
		out[o++] = c;
	}
	out[o] = '\0';
	return out;
}

/* Builds, checks the general rules, and splits. */
static bool build(const struct dsn_params *p, struct buf *out, struct view *v)
{
	buf_init(out, 0);
	if (dsn_build(p, out) != 0) {
		CHECK(!"dsn_build failed");
		return false;
	}
	CHECK(lines_ok(out->data, out->len));
	if (!split(out->data, v)) {
		CHECK(!"cannot split the DSN");
		return false;
	}
	CHECK(v->closed);
	CHECK_INT(v->nparts, 3);
	return v->nparts == 3;
}

static void test_structure(void)
{
	struct dsn_params p = defaults();
	struct buf out;
	struct view v;
	REQUIRE(build(&p, &out, &v));
	CHECK(str_is_ascii(out.data, out.len));

	/* top-level headers */
	const char *h = v.headers;
	CHECK(has_line(h, "From: Mail Delivery System <MAILER-DAEMON@relay.example.internal>"));
	CHECK(has_line(h, "To: <alice@example.org>"));
	CHECK(has_line(h, "Subject: Undelivered Mail Returned to Sender"));
	CHECK(has_line(h, "Date: Mon, 23 Nov 2026 09:30:00 +0000"));
	CHECK(has_prefix_line(h, "Message-ID: <"));
	CHECK(strstr(h, "@relay.example.internal>\r\n") != NULL);
	CHECK(has_line(h, "Auto-Submitted: auto-replied"));
	CHECK(has_line(h, "MIME-Version: 1.0"));
	CHECK(has_prefix_line(h, "Content-Type: multipart/report; report-type=delivery-status;"));
	CHECK(strstr(h, "TLS-Required") == NULL);
	CHECK(strstr(h, "Content-Transfer-Encoding") == NULL);
	CHECK(strncmp(out.data, "From: ", 6) == 0);

	/* part 1: for humans */
	CHECK(has_line(v.part_headers[0], "Content-Type: text/plain; charset=us-ascii"));
	const char *t = v.part_body[0];
	CHECK(strstr(t, "relay.example.internal") != NULL);
	CHECK(strstr(t, "<bob@example.net>: could not be delivered (5.1.1).") != NULL);
	CHECK(strstr(t, "The mail server mx1.example.net said:") != NULL);
	CHECK(strstr(t, "550 5.1.1 <bob@example.net>: Recipient address") != NULL);
	CHECK(strstr(t, "<carol@example.net>") != NULL);
	CHECK(strstr(t, "RFC 8689") == NULL); /* not a REQUIRETLS message */
	CHECK(strstr(t, "could not be met") == NULL);
	CHECK(strstr(flat(t), "It is attached below, after the details.") != NULL);

	/* part 2: DSN-12 per-message block, blank line, per-recipient blocks */
	CHECK(has_line(v.part_headers[1], "Content-Type: message/delivery-status"));
	const char *s = v.part_body[1];
	CHECK(strncmp(s, "Reporting-MTA: dns; relay.example.internal\r\n", 44) == 0);
	CHECK(has_line(s, "X-Strictrelay-Queue-ID: 0123456789AB"));
	CHECK(has_line(s, "Arrival-Date: Mon, 23 Nov 2026 08:30:00 +0000"));
	CHECK_INT(count(s, "\r\n\r\n"), 2); /* three blocks */
	CHECK(has_line(s, "Final-Recipient: rfc822; bob@example.net"));
	CHECK(has_line(s, "Final-Recipient: rfc822; carol@example.net"));
	CHECK_INT(count(s, "Action: failed\r\n"), 2);
	CHECK(has_line(s, "Status: 5.1.1"));
	CHECK(has_line(s, "Status: 5.7.30"));
	CHECK(has_line(s, "Remote-MTA: dns; mx1.example.net"));
	CHECK(has_line(s, "Diagnostic-Code: smtp; 550 5.7.30 REQUIRETLS support required"));
	CHECK(has_prefix_line(s, "Diagnostic-Code: smtp; 550 5.1.1 <bob@example.net>:"));
	CHECK(has_line(s, "Last-Attempt-Date: Mon, 23 Nov 2026 09:29:50 +0000"));
	CHECK(strstr(s, "Will-Retry-Until") == NULL);
	/* the first block is the per-message one */
	const char *first_blank = strstr(s, "\r\n\r\n");
	REQUIRE(first_blank != NULL);
	CHECK(strncmp(first_blank + 4, "Final-Recipient: ", 17) == 0);
	CHECK(strstr(s, "Final-Recipient") > first_blank);

	/* part 3: the whole original, byte for byte */
	CHECK(has_line(v.part_headers[2], "Content-Type: message/rfc822"));
	CHECK_STR(v.part_body[2], ORIG);

	/* deterministic */
	struct buf again;
	buf_init(&again, 0);
	CHECK_INT(dsn_build(&p, &again), 0);
	CHECK(again.len == out.len && memcmp(again.data, out.data, out.len) == 0);
	buf_free(&again);
	/* appends to what out already holds */
	struct buf pre;
	buf_init(&pre, 0);
	buf_puts(&pre, "X");
	CHECK_INT(dsn_build(&p, &pre), 0);
	CHECK(pre.len == out.len + 1 && memcmp(pre.data + 1, out.data, out.len) == 0);
	buf_free(&pre);

	view_free(&v);
	buf_free(&out);
}

static void test_requiretls(void)
{
	/* RTLS-20/21, D7: headers only, whatever else; TLS-Required not copied */
	static const uint32_t flag_sets[] = {
		MSG_REQUIRETLS,
		MSG_REQUIRETLS_RULE,
		MSG_REQUIRETLS | MSG_TLS_REQUIRED_NO,
	};
	for (size_t i = 0; i < SR_ARRAY_LEN(flag_sets); i++) {
		struct dsn_params p = defaults();
		p.flags = flag_sets[i];
		struct buf out;
		struct view v;
		REQUIRE(build(&p, &out, &v));
		CHECK(strstr(out.data, "SECRET BODY") == NULL);
		CHECK(strstr(out.data, ".dot line") == NULL);
		CHECK(has_line(v.part_headers[2], "Content-Type: text/rfc822-headers"));
		CHECK(has_line(v.part_body[2], "Subject: Quarterly numbers"));
		CHECK(has_line(v.part_body[2],
			       "\tby relay.example.internal with ESMTPS id 0123456789AB"));
		CHECK(strncmp(v.part_body[2], ORIG, strlen(v.part_body[2])) == 0);
		CHECK(strstr(v.headers, "TLS-Required") == NULL);
		CHECK(strstr(v.headers, "REQUIRETLS") == NULL);
		const char *t = v.part_body[0];
		CHECK(strstr(t, "REQUIRETLS (RFC 8689)") != NULL);
		CHECK(strstr(t, "<carol@example.net>: could not be delivered (5.7.30).\r\n"
				"    The REQUIRETLS requirement could not be met.\r\n") != NULL);
		CHECK(count(t, "The REQUIRETLS requirement could not be met.") == 1);
		CHECK(strstr(t, "<bob@example.net>: could not be delivered (5.1.1).\r\n") != NULL);
		CHECK(strstr(flat(t), "only its header section is returned") != NULL);
		CHECK(strstr(flat(t), "That requirement could not be met") != NULL);
		CHECK(strstr(flat(t), "followed by the header section of your message.") != NULL);
		view_free(&v);
		buf_free(&out);
	}
	/* a REQUIRETLS message that failed for another reason: no claim that
	 * the requirement was not met */
	struct dsn_params p = defaults();
	p.flags = MSG_REQUIRETLS;
	p.nrcpts = 1;
	struct buf out;
	struct view v;
	REQUIRE(build(&p, &out, &v));
	CHECK(strstr(v.part_body[0], "REQUIRETLS (RFC 8689)") != NULL);
	CHECK(strstr(v.part_body[0], "could not be met") == NULL);
	CHECK(has_line(v.part_headers[2], "Content-Type: text/rfc822-headers"));
	view_free(&v);
	buf_free(&out);
}

static char *big_message(size_t size, size_t *len)
{
	char *m = xmalloc(size + 1);
	static const char head[] = "From: a@example.org\r\nSubject: big\r\n\r\n";
	memcpy(m, head, sizeof(head) - 1);
	size_t o = sizeof(head) - 1;
	while (o < size) {
		size_t n = size - o < 78 ? size - o : 78;
		if (n < 3)
			break; /* not reached for the sizes used */
		memset(m + o, 'b', n - 2);
		memcpy(m + o + n - 2, "\r\n", 2);
		o += n;
	}
	m[o] = '\0';
	*len = o;
	return m;
}

static void test_sizes(void)
{
	size_t len;
	char *m = big_message(DSN_MAX_FULL, &len);
	CHECK_INT(len, DSN_MAX_FULL);
	struct dsn_params p = defaults();
	p.message = m;
	p.message_len = len;
	struct buf out;
	struct view v;
	REQUIRE(build(&p, &out, &v));
	CHECK(has_line(v.part_headers[2], "Content-Type: message/rfc822"));
	CHECK_INT(strlen(v.part_body[2]), len);
	view_free(&v);
	buf_free(&out);
	free(m);

	m = big_message(DSN_MAX_FULL + 2, &len);
	CHECK_INT(len, DSN_MAX_FULL + 2);
	p.message = m;
	p.message_len = len;
	REQUIRE(build(&p, &out, &v));
	CHECK(has_line(v.part_headers[2], "Content-Type: text/rfc822-headers"));
	CHECK_STR(v.part_body[2], "From: a@example.org\r\nSubject: big\r\n");
	CHECK(strstr(flat(v.part_body[0]), "followed by the header section") != NULL);
	view_free(&v);
	buf_free(&out);
	free(m);

	/* RET=HDRS */
	p = defaults();
	p.ret_hdrs = true;
	REQUIRE(build(&p, &out, &v));
	CHECK(has_line(v.part_headers[2], "Content-Type: text/rfc822-headers"));
	CHECK(strstr(out.data, "SECRET BODY") == NULL);
	view_free(&v);
	buf_free(&out);

	/* an empty original and one without a body */
	p = defaults();
	p.message = NULL;
	p.message_len = 0;
	REQUIRE(build(&p, &out, &v));
	CHECK_STR(v.part_body[2], "");
	view_free(&v);
	buf_free(&out);
	p.message = "Subject: only headers\r\n";
	p.message_len = strlen(p.message);
	p.ret_hdrs = true;
	REQUIRE(build(&p, &out, &v));
	CHECK_STR(v.part_body[2], "Subject: only headers\r\n");
	view_free(&v);
	buf_free(&out);
}

static void test_smtputf8(void)
{
	struct dsn_params p = defaults();
	p.flags = MSG_SMTPUTF8;
	p.original_sender = "al\xc3\xaf" "ce@example.org";
	RCPTS[0].address = "b\xc3\xb6" "b@example.net";
	struct dsn_recipient r0 = RCPTS[0];
	p.rcpts = &r0;
	p.nrcpts = 1;
	static const char orig[] = "From: al\xc3\xaf" "ce@example.org\r\n"
				   "Subject: caf\xc3\xa9\r\n\r\n"
				   "h\xc3\xa9llo\r\n";
	p.message = orig;
	p.message_len = sizeof(orig) - 1;
	struct buf out;
	struct view v;
	REQUIRE(build(&p, &out, &v));
	/* UTF8-04 */
	CHECK(has_line(v.part_headers[1], "Content-Type: message/global-delivery-status"));
	CHECK(has_line(v.part_headers[2], "Content-Type: message/global"));
	CHECK(has_line(v.part_body[1], "Final-Recipient: utf-8; b\xc3\xb6" "b@example.net"));
	CHECK(has_line(v.headers, "To: <al\xc3\xaf" "ce@example.org>"));
	CHECK(has_line(v.headers, "Content-Transfer-Encoding: 8bit"));
	CHECK(has_line(v.part_headers[2], "Content-Transfer-Encoding: 8bit"));
	CHECK(has_line(v.part_headers[0], "Content-Type: text/plain; charset=utf-8"));
	CHECK_STR(v.part_body[2], orig);
	view_free(&v);
	buf_free(&out);

	/* too big: message/global-headers */
	size_t len;
	char *m = big_message(DSN_MAX_FULL + 100, &len);
	p.message = m;
	p.message_len = len;
	REQUIRE(build(&p, &out, &v));
	CHECK(has_line(v.part_headers[2], "Content-Type: message/global-headers"));
	view_free(&v);
	buf_free(&out);
	free(m);

	/* REQUIRETLS + SMTPUTF8: global headers only */
	p.message = orig;
	p.message_len = sizeof(orig) - 1;
	p.flags = MSG_SMTPUTF8 | MSG_REQUIRETLS;
	REQUIRE(build(&p, &out, &v));
	CHECK(has_line(v.part_headers[2], "Content-Type: message/global-headers"));
	CHECK(strstr(out.data, "h\xc3\xa9llo") == NULL);
	view_free(&v);
	buf_free(&out);

	/* a non-ASCII address without the flag still makes a global DSN */
	p = defaults();
	p.original_sender = "al\xc3\xaf" "ce@example.org";
	REQUIRE(build(&p, &out, &v));
	CHECK(has_line(v.part_headers[1], "Content-Type: message/global-delivery-status"));
	CHECK(has_line(v.part_headers[2], "Content-Type: message/global"));
	view_free(&v);
	buf_free(&out);

	/* ASCII message with SMTPUTF8: global types, yet 7-bit throughout */
	p = defaults();
	p.flags = MSG_SMTPUTF8;
	REQUIRE(build(&p, &out, &v));
	CHECK(has_line(v.part_body[1], "Final-Recipient: utf-8; bob@example.net"));
	CHECK(str_is_ascii(out.data, out.len));
	CHECK(strstr(out.data, "Content-Transfer-Encoding") == NULL);
	view_free(&v);
	buf_free(&out);
}

static void test_eight_bit_original(void)
{
	/* 8-bit body without SMTPUTF8: classic types, 8bit declared */
	static const char orig[] = "Subject: x\r\nContent-Type: text/plain; charset=latin1\r\n\r\n"
				   "caf\xe9\r\n";
	struct dsn_params p = defaults();
	p.flags = MSG_BODY_8BITMIME | MSG_HAS_8BIT;
	p.message = orig;
	p.message_len = sizeof(orig) - 1;
	struct buf out;
	struct view v;
	REQUIRE(build(&p, &out, &v));
	CHECK(has_line(v.part_headers[2], "Content-Type: message/rfc822"));
	CHECK(has_line(v.part_headers[2], "Content-Transfer-Encoding: 8bit"));
	CHECK(has_line(v.headers, "Content-Transfer-Encoding: 8bit"));
	CHECK(strstr(v.part_headers[0], "Content-Transfer-Encoding") == NULL);
	CHECK(strstr(v.part_headers[1], "Content-Transfer-Encoding") == NULL);
	view_free(&v);
	buf_free(&out);
	/* headers only: the 7-bit header section makes a 7-bit DSN */
	p.ret_hdrs = true;
	REQUIRE(build(&p, &out, &v));
	CHECK(str_is_ascii(out.data, out.len));
	view_free(&v);
	buf_free(&out);
}

static void test_tls_required_no(void)
{
	struct dsn_params p = defaults();
	p.flags = MSG_TLS_REQUIRED_NO;
	struct buf out;
	struct view v;
	REQUIRE(build(&p, &out, &v));
	CHECK(has_line(v.headers, "TLS-Required: No"));
	CHECK_INT(count(v.headers, "TLS-Required"), 1);
	/* a full return is fine: this is no REQUIRETLS message */
	CHECK(has_line(v.part_headers[2], "Content-Type: message/rfc822"));
	view_free(&v);
	buf_free(&out);
}

static void test_delayed(void)
{
	struct dsn_recipient r = {
		.address = "dave@example.com",
		.action = "delayed",
		.status = "4.4.1",
		.diagnostic = "connect to mx.example.com[192.0.2.25]:25: Connection timed out",
		.remote_mta = NULL,
		.last_attempt = NOW - 60,
		.will_retry_until = NOW + 4 * 86400,
	};
	struct dsn_params p = defaults();
	p.rcpts = &r;
	p.nrcpts = 1;
	struct buf out;
	struct view v;
	REQUIRE(build(&p, &out, &v));
	CHECK(has_line(v.headers, "Subject: Delayed Mail (still being retried)"));
	const char *s = v.part_body[1];
	CHECK(has_line(s, "Action: delayed"));
	CHECK(has_line(s, "Status: 4.4.1"));
	CHECK(has_line(s, "Will-Retry-Until: Fri, 27 Nov 2026 09:30:00 +0000"));
	CHECK(strstr(s, "Remote-MTA") == NULL);
	/* a local reason is not an SMTP reply */
	CHECK(has_prefix_line(s, "Diagnostic-Code: x-strictrelay; connect to mx.example.com"));
	CHECK(has_line(v.part_headers[2], "Content-Type: text/rfc822-headers"));
	CHECK(strstr(out.data, "SECRET BODY") == NULL);
	CHECK(strstr(flat(v.part_body[0]), "not delivered yet, still trying (4.4.1).") != NULL);
	CHECK(strstr(v.part_body[0], "Retrying until Fri, 27 Nov 2026 09:30:00 +0000.") != NULL);
	view_free(&v);
	buf_free(&out);

	/* failed and delayed together: it is a bounce */
	struct dsn_recipient two[2] = { r, RCPTS[0] };
	defaults();
	two[1] = RCPTS[0];
	p.rcpts = two;
	p.nrcpts = 2;
	REQUIRE(build(&p, &out, &v));
	CHECK(has_line(v.headers, "Subject: Undelivered Mail Returned to Sender"));
	CHECK(has_line(v.part_headers[2], "Content-Type: message/rfc822"));
	CHECK_INT(count(v.part_body[1], "Will-Retry-Until"), 1);
	view_free(&v);
	buf_free(&out);

	/* a relayed notice: neither bounce nor delay */
	struct dsn_recipient rel = { .address = "erin@example.com", .action = "relayed",
				     .status = "2.0.0" };
	p.rcpts = &rel;
	p.nrcpts = 1;
	REQUIRE(build(&p, &out, &v));
	CHECK(has_line(v.headers, "Subject: Successful Mail Delivery Report"));
	CHECK(has_line(v.part_body[1], "Action: relayed"));
	CHECK(strstr(v.part_body[1], "Diagnostic-Code") == NULL);
	CHECK(strstr(v.part_body[1], "Last-Attempt-Date") == NULL);
	view_free(&v);
	buf_free(&out);
}

static void test_boundary(void)
{
	struct dsn_params p = defaults();
	struct buf out;
	struct view v;
	REQUIRE(build(&p, &out, &v));
	char b0[128];
	snprintf(b0, sizeof(b0), "%s", v.boundary);
	CHECK(strlen(b0) > 0 && strlen(b0) <= 70);
	CHECK(strstr(b0, "0123456789XY") != NULL);
	view_free(&v);
	buf_free(&out);

	/* The original holds the boundary the seed gives, and the first
	 * fallbacks too: a different one is chosen, found nowhere inside. */
	char orig[1024];
	snprintf(orig, sizeof(orig), "Subject: trap\r\n\r\n--%s\r\n--%s.1\r\nx %s.2 y\r\n", b0, b0,
		 b0);
	p.message = orig;
	p.message_len = strlen(orig);
	REQUIRE(build(&p, &out, &v));
	CHECK(strcmp(v.boundary, b0) != 0);
	char want[140];
	snprintf(want, sizeof(want), "%s.3", b0);
	CHECK_STR(v.boundary, want);
	for (int i = 0; i < v.nparts; i++)
		CHECK(strstr(v.part_body[i], v.boundary) == NULL);
	CHECK_STR(v.part_body[2], orig);
	view_free(&v);
	buf_free(&out);

	/* in a diagnostic (part 2 and part 1) too */
	p = defaults();
	char diag[256];
	snprintf(diag, sizeof(diag), "550 5.1.1 %s", b0);
	RCPTS[0].diagnostic = diag;
	REQUIRE(build(&p, &out, &v));
	CHECK(strcmp(v.boundary, b0) != 0);
	view_free(&v);
	buf_free(&out);

	/* a different seed, a different boundary */
	p = defaults();
	p.seed = "ZZZZZZZZZZZZ";
	REQUIRE(build(&p, &out, &v));
	CHECK(strcmp(v.boundary, b0) != 0);
	view_free(&v);
	buf_free(&out);
}

static void test_refusals(void)
{
	struct dsn_params p;
	struct buf out;
	buf_init(&out, 0);
	buf_puts(&out, "keep");
#define REFUSED(stmt)                                   \
	do {                                            \
		p = defaults();                         \
		stmt;                                   \
		CHECK_INT(dsn_build(&p, &out), -1);     \
		CHECK_STR(out.data, "keep");            \
		CHECK_INT(out.len, 4);                  \
	} while (0)
	/* SMTP-10: never a bounce to the null sender */
	REFUSED(p.original_sender = "");
	REFUSED(p.original_sender = NULL);
	REFUSED(p.nrcpts = 0);
	REFUSED(p.rcpts = NULL);
	REFUSED(p.reporting_mta = "");
	REFUSED(p.reporting_mta = "relay\r\nBcc: x@evil.example");
	REFUSED(p.from_address = NULL);
	REFUSED(p.original_sender = "a@b\r\nBcc: victim@example.org");
	REFUSED(RCPTS[1].address = "");
	REFUSED(RCPTS[1].address = "x@y\nz");
	REFUSED(RCPTS[1].action = "bounced");
	REFUSED(RCPTS[1].action = NULL);
	REFUSED(RCPTS[1].orcpt = "rfc822;a\r\nb");
	REFUSED(p.message = NULL);
	char longaddr[DSN_MAX_ADDRESS + 10];
	memset(longaddr, 'a', sizeof(longaddr) - 1);
	longaddr[sizeof(longaddr) - 1] = '\0';
	REFUSED(p.original_sender = longaddr);
	REFUSED(RCPTS[0].address = longaddr);
	buf_free(&out);

	/* the caller's cap is respected, and out left as it was */
	p = defaults();
	buf_init(&out, 500);
	CHECK_INT(dsn_build(&p, &out), -1);
	CHECK_INT(out.len, 0);
	buf_free(&out);

	/* an invalid status becomes X.0.0 for the action */
	p = defaults();
	RCPTS[0].status = "550";
	RCPTS[1].status = NULL;
	struct view v;
	REQUIRE(build(&p, &out, &v));
	CHECK_INT(count(v.part_body[1], "Status: 5.0.0\r\n"), 2);
	view_free(&v);
	buf_free(&out);
}

static void test_long_lines(void)
{
	/* an original with over-long lines and bare line ends */
	struct buf o;
	buf_init(&o, 0);
	buf_puts(&o, "Subject: ");
	for (int i = 0; i < 3000; i++)
		buf_putc(&o, (char)('a' + i % 26));
	buf_puts(&o, "\r\nX-Bare: lf\nX-Bare: cr\rFrom: x@example.org\r\n\r\n");
	for (int i = 0; i < 2500; i++)
		buf_putc(&o, 'z');
	buf_puts(&o, "\nlast line without end");

	/* a long diagnostic with controls, 8-bit octets and one huge word */
	struct buf d;
	buf_init(&d, 0);
	buf_puts(&d, "550-5.7.1 ");
	for (int i = 0; i < 150; i++)
		buf_puts(&d, "word\x01\xff ");
	for (int i = 0; i < 1200; i++)
		buf_putc(&d, 'W');

	struct dsn_params p = defaults();
	p.message = o.data;
	p.message_len = o.len;
	RCPTS[0].diagnostic = d.data;
	struct buf out;
	struct view v;
	REQUIRE(build(&p, &out, &v)); /* lines_ok() checked: CR LF, <= 998 */
	CHECK(str_is_ascii(out.data, out.len));
	const char *s = v.part_body[1];
	const char *dc = strstr(s, "Diagnostic-Code: smtp; 550-5.7.1 word\\x01\\xFF word");
	CHECK(dc != NULL);
	/* folded: continuation lines start with a space, short where possible */
	if (dc != NULL) {
		const char *eol = strstr(dc, "\r\n");
		CHECK(eol != NULL && eol - dc <= 76);
		CHECK(eol != NULL && eol[2] == ' ');
	}
	CHECK(strstr(s, "...") != NULL); /* cut at DSN_MAX_DIAGNOSTIC */
	/* the whole Diagnostic-Code field, unfolded, is within the cap */
	size_t field = 0;
	for (const char *q = dc; q != NULL && *q != '\0'; q++) {
		if (q[0] == '\r' && q[1] == '\n') {
			if (q[2] != ' ')
				break;
			q++;
			continue;
		}
		field++;
	}
	CHECK(field <= strlen("Diagnostic-Code: smtp; ") + DSN_MAX_DIAGNOSTIC);
	/* part 1 quotes it too, within the line rules */
	CHECK(strstr(v.part_body[0], "    550-5.7.1 word\\x01\\xFF") != NULL);
	/* the original: bare ends made CR LF, long lines split */
	const char *b = v.part_body[2];
	CHECK(has_line(b, "X-Bare: lf"));
	CHECK(has_line(b, "X-Bare: cr"));
	CHECK(has_line(b, "last line without end"));
	CHECK(strstr(b, "\r\n zab") != NULL || strstr(b, "\r\n ") != NULL); /* folded header */
	view_free(&v);
	buf_free(&out);

	/* headers only: same rules */
	p.ret_hdrs = true;
	REQUIRE(build(&p, &out, &v));
	CHECK(has_line(v.part_body[2], "From: x@example.org"));
	CHECK(strstr(v.part_body[2], "zzz") == NULL);
	view_free(&v);
	buf_free(&out);
	buf_free(&o);
	buf_free(&d);
}

static void test_rendered_reply(void)
{
	/* what the client stores: smtp_reply_render() output, escapes and all,
	 * comes through unchanged (not escaped twice) */
	struct dsn_params p = defaults();
	RCPTS[0].diagnostic = "550 5.1.1 caf\\xC3\\xA9 a\\b <bob@example.net>";
	struct buf out;
	struct view v;
	REQUIRE(build(&p, &out, &v));
	CHECK(has_line(v.part_body[1],
		       "Diagnostic-Code: smtp; 550 5.1.1 caf\\xC3\\xA9 a\\b <bob@example.net>"));
	CHECK(strstr(v.part_body[0], "    550 5.1.1 caf\\xC3\\xA9 a\\b <bob@example.net>\r\n") !=
	      NULL);
	view_free(&v);
	buf_free(&out);
}

static void test_huge_headers(void)
{
	/* 400 KB of header section: cut at a field boundary under the cap */
	struct buf o;
	buf_init(&o, 0);
	for (int i = 0; o.len < 400 * 1024; i++) {
		buf_printf(&o, "X-Filler-%d: ", i);
		for (int k = 0; k < 60; k++)
			buf_putc(&o, 'f');
		buf_puts(&o, "\r\n\tcontinued ");
		for (int k = 0; k < 60; k++)
			buf_putc(&o, 'c');
		buf_puts(&o, "\r\n");
	}
	buf_puts(&o, "\r\nbody\r\n");
	struct dsn_params p = defaults();
	p.message = o.data;
	p.message_len = o.len;
	struct buf out;
	struct view v;
	REQUIRE(build(&p, &out, &v));
	const char *h = v.part_body[2];
	size_t n = strlen(h);
	CHECK(n <= DSN_MAX_HEADERS);
	CHECK(n > DSN_MAX_HEADERS - 200);
	CHECK(strncmp(h, o.data, n) == 0);
	CHECK(o.data[n] == 'X'); /* the next field starts right after the cut */
	CHECK(strstr(out.data, "body") == NULL);
	view_free(&v);
	buf_free(&out);
	buf_free(&o);
}

static void test_many_recipients(void)
{
	enum { N = 120 };
	struct dsn_recipient r[N];
	char addr[N][32];
	for (int i = 0; i < N; i++) {
		snprintf(addr[i], sizeof(addr[i]), "user%d@example.net", i);
		r[i] = (struct dsn_recipient){ .address = addr[i], .action = "failed",
					       .status = "5.1.1",
					       .diagnostic = "550 5.1.1 unknown" };
	}
	struct dsn_params p = defaults();
	p.rcpts = r;
	p.nrcpts = N;
	struct buf out;
	struct view v;
	REQUIRE(build(&p, &out, &v));
	CHECK_INT(count(v.part_body[1], "Final-Recipient: "), N);
	CHECK_INT(count(v.part_body[1], "\r\n\r\n"), N);
	CHECK(strstr(v.part_body[0], "<user49@example.net>") != NULL);
	CHECK(strstr(v.part_body[0], "<user50@example.net>") == NULL);
	CHECK(strstr(v.part_body[0], "... and 70 more recipient(s)") != NULL);
	view_free(&v);
	buf_free(&out);
}

static void test_status_from_reply(void)
{
	CHECK_STR(dsn_status_from_reply(550, "5.1.1"), "5.1.1");
	CHECK_STR(dsn_status_from_reply(550, "5.7.30"), "5.7.30");
	CHECK_STR(dsn_status_from_reply(451, "4.7.1"), "4.7.1");
	CHECK_STR(dsn_status_from_reply(550, NULL), "5.0.0");
	CHECK_STR(dsn_status_from_reply(550, ""), "5.0.0");
	CHECK_STR(dsn_status_from_reply(450, NULL), "4.0.0");
	CHECK_STR(dsn_status_from_reply(250, ""), "2.0.0");
	/* inconsistent or malformed: derived from the basic code */
	CHECK_STR(dsn_status_from_reply(550, "4.1.1"), "5.0.0");
	CHECK_STR(dsn_status_from_reply(421, "5.0.0"), "4.0.0");
	CHECK_STR(dsn_status_from_reply(550, "5.1"), "5.0.0");
	CHECK_STR(dsn_status_from_reply(550, "5.1.1 text"), "5.0.0");
	CHECK_STR(dsn_status_from_reply(550, "x.1.1"), "5.0.0");
	CHECK_STR(dsn_status_from_reply(354, "3.0.0"), "4.0.0");
}

/* --- an independent parser: Python's email package ---------------------- */

static const char PY_CHECK[] =
	"import sys, email\n"
	"data = open(sys.argv[1], 'rb').read()\n"
	"want2, want3, nrcpt = sys.argv[2], sys.argv[3], int(sys.argv[4])\n"
	"m = email.message_from_bytes(data)\n"
	"assert m.get_content_type() == 'multipart/report', m.get_content_type()\n"
	"assert m.get_param('report-type') == 'delivery-status'\n"
	"assert m['Auto-Submitted'] == 'auto-replied'\n"
	"assert m['From'] and m['To'] and m['Date'] and m['Message-ID']\n"
	"parts = m.get_payload()\n"
	"assert len(parts) == 3, len(parts)\n"
	"types = [p.get_content_type() for p in parts]\n"
	"assert types == ['text/plain', want2, want3], types\n"
	"if want2 == 'message/delivery-status':\n"
	"    blocks = parts[1].get_payload()\n"
	"    assert len(blocks) == 1 + nrcpt, len(blocks)\n"
	"    assert blocks[0]['Reporting-MTA'].startswith('dns; '), blocks[0].items()\n"
	"    assert blocks[0]['Arrival-Date']\n"
	"    for b in blocks[1:]:\n"
	"        for f in ('Final-Recipient', 'Action', 'Status'):\n"
	"            assert b[f], (f, b.items())\n"
	"        assert b['Action'] in ('failed', 'delayed'), b['Action']\n"
	"if want3 == 'message/rfc822':\n"
	"    inner = parts[2].get_payload()[0]\n"
	"    assert inner['Subject'] == 'Quarterly numbers', inner['Subject']\n"
	"    assert 'SECRET BODY' in inner.get_payload()\n"
	"if want3 == 'text/rfc822-headers':\n"
	"    text = parts[2].get_payload()\n"
	"    assert 'Subject: Quarterly numbers' in text and 'SECRET' not in text\n"
	"for p in m.walk():\n"
	"    assert not p.defects, (p.get_content_type(), p.defects)\n"
	"print('python email: ok', types)\n";

static void python_check(const struct dsn_params *p, const char *want2, const char *want3)
{
	char dir[] = "/tmp/test_dsn.XXXXXX";
	REQUIRE(mkdtemp(dir) != NULL);
	char file[64], script[64];
	snprintf(file, sizeof(file), "%s/dsn.eml", dir);
	snprintf(script, sizeof(script), "%s/check.py", dir);
	struct buf out;
	buf_init(&out, 0);
	REQUIRE(dsn_build(p, &out) == 0);
	FILE *f = fopen(file, "wb");
	REQUIRE(f != NULL);
	fwrite(out.data, 1, out.len, f);
	fclose(f);
	f = fopen(script, "w");
	REQUIRE(f != NULL);
	fputs(PY_CHECK, f);
	fclose(f);
	char cmd[512];
	snprintf(cmd, sizeof(cmd), "/usr/bin/python3 %s %s %s %s %zu", script, file, want2, want3,
		 p->nrcpts);
	int rc = system(cmd);
	CHECK_INT(rc, 0);
	unlink(file);
	unlink(script);
	rmdir(dir);
	buf_free(&out);
}

static void test_python(void)
{
	if (access("/usr/bin/python3", X_OK) != 0) {
		fprintf(stderr, "test_python: /usr/bin/python3 not found, skipped\n");
		return;
	}
	struct dsn_params p = defaults();
	python_check(&p, "message/delivery-status", "message/rfc822");
	p = defaults();
	p.flags = MSG_REQUIRETLS;
	python_check(&p, "message/delivery-status", "text/rfc822-headers");
	p = defaults();
	p.flags = MSG_TLS_REQUIRED_NO;
	p.rcpts = RCPTS + 1;
	p.nrcpts = 1;
	RCPTS[1].action = "delayed";
	RCPTS[1].status = "4.7.30";
	RCPTS[1].will_retry_until = NOW + 86400;
	python_check(&p, "message/delivery-status", "text/rfc822-headers");
	p = defaults();
	p.flags = MSG_SMTPUTF8;
	python_check(&p, "message/global-delivery-status", "message/global");
}

int main(void)
{
	RUN(test_structure);
	RUN(test_requiretls);
	RUN(test_sizes);
	RUN(test_smtputf8);
	RUN(test_eight_bit_original);
	RUN(test_tls_required_no);
	RUN(test_delayed);
	RUN(test_boundary);
	RUN(test_refusals);
	RUN(test_long_lines);
	RUN(test_rendered_reply);
	RUN(test_huge_headers);
	RUN(test_many_recipients);
	RUN(test_status_from_reply);
	RUN(test_python);
	TEST_EXIT();
}
