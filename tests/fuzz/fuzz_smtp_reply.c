/*
 * fuzz_smtp_reply - smtp/reply.h: the reply parser, rendering and the EHLO
 * capability parser.
 *
 * Input: bytes 0-3 seed the chunk sizes; the rest is what a server sent,
 * any number of (pipelined) replies. It is read twice, as one buffer and
 * in random chunks, reply after reply until an error or the end.
 * Invariants: both readings see the same replies and the same error;
 * consumed never exceeds what was offered; every complete reply has a
 * code 100..599, 1..SMTP_REPLY_MAX_LINES lines and a status whose class
 * matches the code; renderings are printable ASCII and fit their buffer;
 * an error is sticky.
 */
#include <stdbool.h>

#include "fuzz.h"
#include "smtp/reply.h"

/* The parsers hold 64 KiB each: keep them off the stack. */
static struct smtp_reply_parser pa, pb;

static uint64_t mix(uint64_t h, const void *p, size_t n)
{
	const unsigned char *c = p;
	for (size_t i = 0; i < n; i++)
		h = (h ^ c[i]) * 0x100000001b3ull;
	return h;
}

static void check_printable(const char *s, size_t dstlen)
{
	size_t n = strlen(s);
	FUZZ_ASSERT(n < dstlen);
	for (size_t i = 0; i < n; i++)
		FUZZ_ASSERT(s[i] >= 0x20 && s[i] < 0x7f);
}

/* Checks one reply; returns a digest of it. */
static uint64_t check_reply(const struct smtp_reply *r)
{
	FUZZ_ASSERT(r->code >= 100 && r->code <= 599);
	FUZZ_ASSERT(r->nlines >= 1 && r->nlines <= SMTP_REPLY_MAX_LINES);
	const char *st = smtp_reply_status(r);
	FUZZ_ASSERT(st[0] >= '2' && st[0] <= '5' && st[1] == '.');
	if (r->enhanced[0] != '\0')
		FUZZ_ASSERT(r->enhanced[0] - '0' == r->code / 100);
	uint64_t h = mix(0xcbf29ce484222325ull, &r->code, sizeof(r->code));
	for (size_t i = 0; i < r->nlines; i++) {
		const char *l = smtp_reply_line(r, i);
		FUZZ_ASSERT(strlen(l) <= SMTP_REPLY_MAX_LINE);
		h = mix(h, l, strlen(l) + 1);
	}
	FUZZ_ASSERT(smtp_reply_line(r, r->nlines)[0] == '\0');

	static char big[SMTP_REPLY_MAX_SIZE * 4 + 64];
	char small[40], tiny[4];
	check_printable(smtp_reply_render(r, big, sizeof(big)), sizeof(big));
	check_printable(smtp_reply_render(r, small, sizeof(small)), sizeof(small));
	check_printable(smtp_reply_render(r, tiny, sizeof(tiny)), sizeof(tiny));
	check_printable(smtp_reply_text(r, small, sizeof(small)), sizeof(small));
	h = mix(h, big, strlen(big));

	struct smtp_caps caps;
	memset(&caps, 0, sizeof(caps));
	int rc = smtp_caps_parse(r, &caps);
	FUZZ_ASSERT(rc == (r->code / 100 == 2 ? 0 : -1));
	FUZZ_ASSERT(memchr(caps.name, '\0', sizeof(caps.name)) != NULL);
	FUZZ_ASSERT(memchr(caps.auth_mechs, '\0', sizeof(caps.auth_mechs)) != NULL);
	for (const char *c = caps.name; *c; c++)
		FUZZ_ASSERT(*c > 0x20 && *c < 0x7f);
	smtp_caps_name_from_greeting(r, &caps);
	return h;
}

/* Reads all replies of in; chunk == 0: random chunk sizes from seed. */
static uint64_t read_all(struct smtp_reply_parser *p, const char *in, size_t len, bool chunked,
			 uint32_t seed, const char **error, size_t *nreplies)
{
	uint64_t h = 0;
	size_t off = 0;
	*error = NULL;
	*nreplies = 0;
	smtp_reply_init(p);
	while (off < len) {
		size_t n = len - off;
		if (chunked) {
			size_t c = fuzz_next(&seed) % 23;
			if (c < n)
				n = c;
		}
		size_t used = 0;
		enum smtp_reply_status st = smtp_reply_feed(p, in + off, n, &used);
		FUZZ_ASSERT(used <= n);
		off += used;
		if (st == REPLY_ERROR) {
			*error = smtp_reply_error(p);
			FUZZ_ASSERT(**error != '\0');
			FUZZ_ASSERT(smtp_reply_get(p) == NULL);
			size_t again;
			FUZZ_ASSERT(smtp_reply_feed(p, "220 x\r\n", 7, &again) == REPLY_ERROR);
			FUZZ_ASSERT(again == 0 && smtp_reply_error(p) == *error);
			break;
		}
		FUZZ_ASSERT(smtp_reply_error(p)[0] == '\0');
		if (st == REPLY_DONE) {
			const struct smtp_reply *r = smtp_reply_get(p);
			FUZZ_ASSERT(r != NULL && used >= 1 && in[off - 1] == '\n');
			h = mix(h, &h, sizeof(h)) ^ check_reply(r);
			(*nreplies)++;
		} else {
			FUZZ_ASSERT(st == REPLY_NEED_MORE && used == n);
			FUZZ_ASSERT(smtp_reply_get(p) == NULL);
		}
	}
	return h;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 4)
		return 0;
	uint32_t seed = (uint32_t)data[0] | (uint32_t)data[1] << 8 | (uint32_t)data[2] << 16 |
			(uint32_t)data[3] << 24;
	const char *in = (const char *)data + 4;
	size_t len = size - 4;
	const char *ea, *eb;
	size_t na, nb;
	uint64_t ha = read_all(&pa, in, len, false, 0, &ea, &na);
	uint64_t hb = read_all(&pb, in, len, true, seed, &eb, &nb);
	FUZZ_ASSERT(ha == hb && na == nb && ea == eb);
	return 0;
}
