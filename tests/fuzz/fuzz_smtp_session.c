/*
 * fuzz_smtp_session - smtp/session.h, the inbound protocol engine, driven
 * the way smtp/server.c drives it: command lines split at LF (a CR before it
 * dropped, NUL turned into 0x01, lines over SMTP_MAX_COMMAND_LINE refused
 * whole), DATA octets through the data reader, and every action answered.
 *
 * Input: byte 0 settings (TLS available, client trusted, bare-newline
 * normalisation, submission, AUTH available, preflight, message rate
 * limit), byte 1 the answers to the actions (STARTTLS handshake, preflight
 * refusal, AUTH verdict, store verdict), then the client's byte stream.
 *
 * Invariants: everything written is whole reply lines ("NNN" + ' ' or '-'
 * + text + CR LF, one code per reply, no bare CR, LF or NUL, the last line
 * with ' '); REQUIRETLS and AUTH are never advertised outside TLS; DATA
 * means a 354 and the DATA state; ENQUEUE hands over a message; nothing is
 * read after CLOSE.
 */
#include <stdbool.h>
#include <strings.h>

#include "fuzz.h"
#include "queue/message.h"
#include "smtp/server.h"
#include "smtp/session.h"

static void fixed_qid(char out[QID_LEN + 1])
{
	memcpy(out, "0123456789AB", QID_LEN + 1);
}

static bool rate_ok;

static bool message_allowed(void *arg, const char *client_addr)
{
	(void)arg;
	(void)client_addr;
	return rate_ok;
}

/* out[from..] holds whole, well-formed replies. */
static void check_replies(const struct buf *out, size_t from)
{
	size_t i = from;
	while (i < out->len) {
		const char *line = out->data + i;
		const char *end = memchr(line, '\n', out->len - i);
		FUZZ_ASSERT(end != NULL && end > line && end[-1] == '\r');
		size_t n = (size_t)(end - line) - 1; /* without CR LF */
		FUZZ_ASSERT(n >= 3);
		for (size_t k = 0; k < 3; k++)
			FUZZ_ASSERT(line[k] >= '0' && line[k] <= '9');
		FUZZ_ASSERT(line[0] >= '2' && line[0] <= '5');
		FUZZ_ASSERT(n == 3 || line[3] == ' ' || line[3] == '-');
		for (size_t k = 0; k < n; k++)
			FUZZ_ASSERT(line[k] != '\r' && line[k] != '\n' && line[k] != '\0');
		bool last = n == 3 || line[3] == ' ';
		size_t next = i + n + 2;
		if (!last) {
			FUZZ_ASSERT(next < out->len);
			FUZZ_ASSERT(memcmp(out->data + next, line, 3) == 0);
		}
		i = next;
	}
}

static bool advertises(const struct buf *out, size_t from, const char *kw)
{
	size_t kl = strlen(kw);
	for (size_t i = from; i + 4 + kl <= out->len; i++) {
		if ((i == from || out->data[i - 1] == '\n') && memcmp(out->data + i, "250", 3) == 0 &&
		    (out->data[i + 3] == '-' || out->data[i + 3] == ' ') &&
		    strncasecmp(out->data + i + 4, kw, kl) == 0)
			return true;
	}
	return false;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 2)
		return 0;
	uint8_t set = data[0], ans = data[1];
	const char *in = (const char *)data + 2;
	size_t len = size - 2;

	struct strlist accept = { 0 };
	strlist_add(&accept, "example.com");
	struct smtp_session_config cfg = {
		.hostname = "relay.test",
		.max_message_size = 4096,
		.max_recipients = 5,
		.max_errors = 10,
		.tls_available = set & 1,
		.normalize_bare_newlines = set & 4,
		.accept_domains = &accept,
		.requiretls_preflight = set & 32,
		.submission = set & 8,
		.auth_available = set & 16,
		.message_allowed = (set & 64) ? message_allowed : NULL,
		.new_qid = fixed_qid,
	};
	rate_ok = ans & 64;
	struct smtp_session s;
	struct buf out;
	buf_init(&out, 0);
	smtp_session_init(&s, &cfg, "192.0.2.7", set & 2);
	smtp_session_greeting(&s, &out);
	check_replies(&out, 0);

	bool in_data = false, closed = false;
	size_t pos = 0;
	while (pos < len && !closed) {
		size_t mark = out.len;
		enum smtp_action act;
		if (in_data) {
			pos += smtp_data_feed(&s.data, in + pos, len - pos, &s.message);
			if (!s.data.done)
				break;
			in_data = false;
			act = smtp_session_data_end(&s, &out);
		} else {
			const char *lf = memchr(in + pos, '\n', len - pos);
			size_t linelen = lf ? (size_t)(lf - (in + pos)) : len - pos;
			if (linelen > SMTP_MAX_COMMAND_LINE) {
				act = smtp_session_line_too_long(&s, &out);
			} else if (lf == NULL) {
				break; /* an unfinished line is never processed */
			} else {
				char line[SMTP_MAX_COMMAND_LINE + 1];
				size_t n = linelen;
				if (n > 0 && in[pos + n - 1] == '\r')
					n--;
				memcpy(line, in + pos, n);
				line[n] = '\0';
				for (size_t i = 0; i < n; i++)
					if (line[i] == '\0')
						line[i] = '\x01';
				bool was_tls = s.tls;
				act = smtp_session_command(&s, line, &out);
				if (!was_tls && (advertises(&out, mark, "REQUIRETLS") ||
						 advertises(&out, mark, "AUTH")))
					FUZZ_ASSERT(!"REQUIRETLS or AUTH offered outside TLS");
			}
			pos += lf ? linelen + 1 : len - pos;
		}
		check_replies(&out, mark);

		size_t mark2 = out.len;
		switch (act) {
		case SMTP_ACT_NONE:
			break;
		case SMTP_ACT_STARTTLS:
			FUZZ_ASSERT(cfg.tls_available && !s.tls);
			FUZZ_ASSERT(out.len > mark && out.data[mark] == '2');
			if (ans & 1) {
				pos = len; /* the pipelined rest is discarded; handshake fails */
				closed = true;
			} else {
				smtp_session_tls_started(&s, "TLSv1.3 TLS_AES_256_GCM_SHA384");
				FUZZ_ASSERT(s.tls);
			}
			break;
		case SMTP_ACT_DATA:
			FUZZ_ASSERT(s.state == SMTP_STATE_DATA);
			FUZZ_ASSERT(out.len >= mark + 4 && memcmp(out.data + mark, "354 ", 4) == 0);
			in_data = true;
			break;
		case SMTP_ACT_ENQUEUE: {
			struct queued_message *m = smtp_session_take_message(&s);
			FUZZ_ASSERT(m != NULL);
			queued_message_free(m);
			free(m);
			if (ans & 8)
				smtp_session_queue_full(&s, &out);
			else
				smtp_session_queued(&s, !(ans & 2), &out);
			break;
		}
		case SMTP_ACT_RCPT_CHECK:
			FUZZ_ASSERT(smtp_session_pending_domain(&s) != NULL);
			smtp_session_rcpt_checked(&s, ans & 4, "no MTA-STS policy in enforce mode", &out);
			break;
		case SMTP_ACT_AUTH_CHECK:
			FUZZ_ASSERT(s.tls);
			FUZZ_ASSERT(smtp_session_auth_user(&s) != NULL);
			FUZZ_ASSERT(smtp_session_auth_password(&s) != NULL);
			smtp_session_auth_checked(&s, (enum smtp_auth_result)((ans >> 4) & 3), &out);
			break;
		case SMTP_ACT_CLOSE:
			closed = true;
			break;
		}
		check_replies(&out, mark2);
		if (s.state == SMTP_STATE_CLOSED)
			closed = true;
		/* like the server: replies go out, the buffer is emptied */
		if (out.len > 65536)
			buf_reset(&out);
	}
	if (!closed && (set & 128)) {
		size_t mark = out.len;
		smtp_session_timeout(&s, &out);
		check_replies(&out, mark);
	}
	smtp_session_free(&s);
	buf_free(&out);
	strlist_free(&accept);
	return 0;
}
