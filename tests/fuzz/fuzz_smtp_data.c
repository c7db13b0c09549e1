/*
 * fuzz_smtp_data - smtp/data.h, the DATA reader and smtp_data_stuff().
 *
 * Input: byte 0 picks the settings (bit 0: normalize bare CR/LF; bit 1: a
 * 64-octet size limit instead of 1 MiB), bytes 1-4 seed the chunk sizes;
 * the rest is the stream after "DATA" CR LF.
 *
 * The stream is read twice: in one call, and in chunks of random sizes.
 * Invariants: both readings agree (consumed bytes, done, flags, size, and
 * the output unless the size limit was passed); each call consumes at
 * most what it was given, and nothing once done; the output has only
 * CR LF line ends (no bare CR or LF) and no NUL; without TOO_BIG the
 * output is exactly size octets, at most the limit. Round trip: a
 * complete message, stuffed with smtp_data_stuff() and read again, gives
 * the same output and ends exactly at the end of the stuffed data.
 */
#include <stdbool.h>

#include "fuzz.h"
#include "smtp/data.h"

static void check_output(const struct buf *out)
{
	for (size_t i = 0; i < out->len; i++) {
		char c = out->data[i];
		FUZZ_ASSERT(c != '\0');
		if (c == '\r')
			FUZZ_ASSERT(i + 1 < out->len && out->data[i + 1] == '\n');
		if (c == '\n')
			FUZZ_ASSERT(i > 0 && out->data[i - 1] == '\r');
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 5)
		return 0;
	bool normalize = data[0] & 1;
	uint64_t max = (data[0] & 2) ? 64 : 1024 * 1024;
	uint32_t seed = (uint32_t)data[1] | (uint32_t)data[2] << 8 | (uint32_t)data[3] << 16 |
			(uint32_t)data[4] << 24;
	const char *in = (const char *)data + 5;
	size_t len = size - 5;

	/* one call */
	struct smtp_data_reader a;
	struct buf oa;
	buf_init(&oa, 0);
	smtp_data_init(&a, max, normalize);
	size_t used_a = smtp_data_feed(&a, in, len, &oa);
	FUZZ_ASSERT(used_a <= len);
	FUZZ_ASSERT(a.done || used_a == len);
	if (a.done)
		FUZZ_ASSERT(smtp_data_feed(&a, in + used_a, len - used_a, &oa) == 0);

	/* random chunks (including empty ones) */
	struct smtp_data_reader b;
	struct buf ob;
	buf_init(&ob, 0);
	smtp_data_init(&b, max, normalize);
	size_t off = 0;
	while (off < len) {
		size_t n = fuzz_next(&seed) % 17;
		if (n > len - off)
			n = len - off;
		size_t used = smtp_data_feed(&b, in + off, n, &ob);
		FUZZ_ASSERT(used <= n);
		if (b.done) {
			off += used;
			FUZZ_ASSERT(smtp_data_feed(&b, in + off, len - off, &ob) == 0);
			break;
		}
		FUZZ_ASSERT(used == n);
		off += used;
	}
	FUZZ_ASSERT(a.done == b.done);
	FUZZ_ASSERT(off == used_a);
	FUZZ_ASSERT(a.flags == b.flags && a.size == b.size);
	/* Past the limit what was stored depends on the pieces (a piece that
	 * crosses it is dropped whole); the message is refused then anyway. */
	if (!(a.flags & SMTP_DATA_TOO_BIG))
		FUZZ_ASSERT(oa.len == ob.len &&
			    (oa.len == 0 || memcmp(oa.data, ob.data, oa.len) == 0));
	check_output(&ob);

	check_output(&oa);
	if (!(a.flags & SMTP_DATA_TOO_BIG))
		FUZZ_ASSERT(oa.len == a.size && a.size <= max);

	/* stuffing a complete message and reading it back */
	if (a.done && !(a.flags & SMTP_DATA_TOO_BIG)) {
		struct buf wire, back;
		buf_init(&wire, 0);
		buf_init(&back, 0);
		smtp_data_stuff(oa.data ? oa.data : "", oa.len, &wire);
		struct smtp_data_reader c;
		smtp_data_init(&c, max, false);
		size_t used = smtp_data_feed(&c, wire.data, wire.len, &back);
		FUZZ_ASSERT(c.done && used == wire.len);
		FUZZ_ASSERT(!(c.flags & (SMTP_DATA_BARE_CR | SMTP_DATA_BARE_LF | SMTP_DATA_NUL)));
		FUZZ_ASSERT(back.len == oa.len &&
			    (oa.len == 0 || memcmp(back.data, oa.data, oa.len) == 0));
		buf_free(&wire);
		buf_free(&back);
	}
	buf_free(&oa);
	buf_free(&ob);
	return 0;
}
