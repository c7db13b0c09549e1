/* qid.c - queue ids and queued_message helpers; see message.h */
#include "message.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

static const char alphabet[] = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/*
 * 40 bits of milliseconds (wraps every ~35 years) + 20 low bits. The low bits
 * start random in each millisecond (so two processes rarely meet) and the
 * value is strictly increasing within the process, so ids made here never
 * collide, however many arrive in one millisecond. Called from one thread.
 */
void qid_generate(char out[QID_LEN + 1])
{
	static uint64_t last;
	struct timeval tv;
	gettimeofday(&tv, NULL);
	uint64_t ms = (uint64_t)tv.tv_sec * 1000u + (uint64_t)tv.tv_usec / 1000u;
	uint64_t v = ((ms & 0xffffffffffull) << 20) | (random_u32() & 0xfffffu);
	if (v <= last)
		v = last + 1;
	last = v;
	for (int i = QID_LEN - 1; i >= 0; i--) {
		out[i] = alphabet[v & 31u];
		v >>= 5;
	}
	out[QID_LEN] = '\0';
}

bool qid_valid(const char *s)
{
	size_t n = strlen(s);
	if (n != QID_LEN)
		return false;
	for (size_t i = 0; i < n; i++)
		if (s[i] == '\0' || strchr(alphabet, s[i]) == NULL)
			return false;
	return true;
}

void queued_message_free(struct queued_message *m)
{
	if (m == NULL)
		return;
	free(m->sender);
	strlist_free(&m->rcpts);
	strlist_free(&m->notify);
	strlist_free(&m->orcpt);
	free(m->ret);
	free(m->envid);
	free(m->body);
	free(m->client_addr);
	free(m->client_helo);
	free(m->client_tls);
	free(m->auth_user);
	memset(m, 0, sizeof(*m));
}

void msg_flags_format(uint32_t flags, char *dst, size_t dstlen)
{
	static const struct {
		uint32_t flag;
		const char *name;
	} names[] = {
		{ MSG_REQUIRETLS, "REQUIRETLS" },
		{ MSG_REQUIRETLS_RULE, "REQUIRETLS(rule)" },
		{ MSG_TLS_REQUIRED_NO, "TLS-Required:No" },
		{ MSG_BODY_8BITMIME, "8BITMIME" },
		{ MSG_SMTPUTF8, "SMTPUTF8" },
		{ MSG_HAS_8BIT, "8bit" },
		{ MSG_DSN, "DSN" },
		{ MSG_TLSRPT, "TLSRPT" },
	};
	struct buf b;
	buf_init(&b, 0);
	for (size_t i = 0; i < SR_ARRAY_LEN(names); i++) {
		if (!(flags & names[i].flag))
			continue;
		if (b.len > 0)
			buf_putc(&b, ',');
		buf_puts(&b, names[i].name);
	}
	snprintf(dst, dstlen, "%s", b.len ? b.data : "-");
	buf_free(&b);
}
