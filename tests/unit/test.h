/*
 * test.h - a minimal unit-test harness. Each tests/unit/test_*.c is its own
 * executable and meson test; main() calls RUN(fn) for each test function.
 * CHECK() records a failure and goes on; REQUIRE() stops the current test.
 * The process exits 1 if any check failed.
 */
#ifndef STRICTRELAY_TEST_H
#define STRICTRELAY_TEST_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int test_failures __attribute__((unused));
static const char *test_current __attribute__((unused));

#define CHECK(cond)                                                                      \
	do {                                                                             \
		if (!(cond)) {                                                           \
			fprintf(stderr, "%s:%d: %s: CHECK(%s) failed\n", __FILE__, __LINE__, \
				test_current, #cond);                                    \
			test_failures++;                                                 \
		}                                                                        \
	} while (0)

#define REQUIRE(cond)                                                                      \
	do {                                                                               \
		if (!(cond)) {                                                             \
			fprintf(stderr, "%s:%d: %s: REQUIRE(%s) failed\n", __FILE__, __LINE__, \
				test_current, #cond);                                      \
			test_failures++;                                                   \
			return;                                                            \
		}                                                                          \
	} while (0)

#define CHECK_STR(a, b)                                                                   \
	do {                                                                              \
		const char *a_ = (a), *b_ = (b);                                          \
		if (a_ == NULL || b_ == NULL || strcmp(a_, b_) != 0) {                    \
			fprintf(stderr, "%s:%d: %s: \"%s\" != \"%s\"\n", __FILE__, __LINE__,  \
				test_current, a_ ? a_ : "(null)", b_ ? b_ : "(null)");    \
			test_failures++;                                                  \
		}                                                                         \
	} while (0)

#define CHECK_INT(a, b)                                                                  \
	do {                                                                             \
		long long a_ = (long long)(a), b_ = (long long)(b);                      \
		if (a_ != b_) {                                                          \
			fprintf(stderr, "%s:%d: %s: %s == %lld, expected %lld\n", __FILE__, \
				__LINE__, test_current, #a, a_, b_);                     \
			test_failures++;                                                 \
		}                                                                        \
	} while (0)

#define RUN(fn)                              \
	do {                                 \
		test_current = #fn;          \
		fn();                        \
	} while (0)

#define TEST_EXIT()                                                               \
	do {                                                                      \
		if (test_failures)                                                \
			fprintf(stderr, "%d check(s) failed\n", test_failures);   \
		return test_failures ? 1 : 0;                                     \
	} while (0)

#endif
