/*
 * fuzz.h - helpers shared by the libFuzzer targets in this directory.
 *
 * FUZZ_ASSERT() aborts with the failed condition: libFuzzer then saves the
 * input as a crash artifact. Unlike assert() it is never compiled out.
 */
#ifndef STRICTRELAY_FUZZ_H
#define STRICTRELAY_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mta/util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_ASSERT(cond)                                                            \
	do {                                                                         \
		if (!(cond)) {                                                       \
			fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__,   \
				__LINE__, #cond);                                    \
			abort();                                                     \
		}                                                                    \
	} while (0)

/* A small deterministic generator, seeded from the input, for chunk sizes. */
static inline uint32_t fuzz_next(uint32_t *s)
{
	uint32_t x = *s ? *s : 0x9e3779b9u;
	x ^= x << 13;
	x ^= x >> 17;
	x ^= x << 5;
	*s = x;
	return x;
}

/* Splits data at NUL bytes into at most max NUL-terminated strings (the
 * way TXT records reach the parsers: one string per record). */
static inline void fuzz_split_nul(const uint8_t *data, size_t size, size_t max, struct strlist *out)
{
	size_t start = 0;
	for (size_t i = 0; i <= size && out->n < max; i++) {
		if (i == size || data[i] == '\0') {
			strlist_add_owned(out, xstrndup((const char *)data + start, i - start));
			start = i + 1;
		}
	}
}

/* why buffers must come back NUL-terminated inside their size. */
static inline int fuzz_terminated(const char *s, size_t n)
{
	return memchr(s, '\0', n) != NULL;
}

#endif
