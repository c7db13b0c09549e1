/*
 * fuzz_sts_policy - policy/sts.h sts_policy_parse() on arbitrary bytes.
 * Invariants of a parsed policy: mode none, testing or enforce; testing and
 * enforce have at least one mx; 0 <= max_age <= STS_MAX_AGE_MAX; every mx
 * is a valid lower-case pattern; lines hold at least version, mode and
 * max_age. Two round trips must give the same policy: its own lines joined
 * with LF, and (for input without CR) the input with every LF as CR LF.
 * A failure leaves the struct empty with a reason.
 */
#include <stdbool.h>

#include "fuzz.h"
#include "policy/sts.h"

static void check_same(const struct sts_policy *a, const struct sts_policy *b)
{
	FUZZ_ASSERT(a->mode == b->mode);
	FUZZ_ASSERT(a->max_age == b->max_age);
	FUZZ_ASSERT(a->mx.n == b->mx.n);
	for (size_t i = 0; i < a->mx.n; i++)
		FUZZ_ASSERT(strcmp(a->mx.v[i], b->mx.v[i]) == 0);
	FUZZ_ASSERT(a->lines.n == b->lines.n);
	for (size_t i = 0; i < a->lines.n; i++)
		FUZZ_ASSERT(strcmp(a->lines.v[i], b->lines.v[i]) == 0);
}

static void check_policy(const struct sts_policy *p)
{
	FUZZ_ASSERT(p->mode == STS_MODE_NONE || p->mode == STS_MODE_TESTING ||
		    p->mode == STS_MODE_ENFORCE);
	if (p->mode != STS_MODE_NONE)
		FUZZ_ASSERT(p->mx.n >= 1);
	FUZZ_ASSERT(p->max_age >= 0 && p->max_age <= STS_MAX_AGE_MAX);
	for (size_t i = 0; i < p->mx.n; i++) {
		const char *m = p->mx.v[i];
		FUZZ_ASSERT(sts_mx_pattern_valid(m, strlen(m)));
		for (const char *c = m; *c; c++)
			FUZZ_ASSERT(!(*c >= 'A' && *c <= 'Z'));
	}
	FUZZ_ASSERT(p->lines.n >= 3);
	for (size_t i = 0; i < p->lines.n; i++) {
		const char *l = p->lines.v[i];
		FUZZ_ASSERT(strchr(l, ':') != NULL);
		FUZZ_ASSERT(strchr(l, '\n') == NULL && strchr(l, '\r') == NULL);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct sts_policy p, q;
	char why[160];
	memset(why, 'x', sizeof(why));
	int rc = sts_policy_parse((const char *)data, size, &p, why, sizeof(why));
	FUZZ_ASSERT(fuzz_terminated(why, sizeof(why)));
	if (rc != 0) {
		FUZZ_ASSERT(rc == -1 && why[0] != '\0');
		FUZZ_ASSERT(p.mx.n == 0 && p.mx.v == NULL && p.lines.n == 0 && p.lines.v == NULL);
	} else {
		FUZZ_ASSERT(why[0] == '\0');
		check_policy(&p);

		/* the lines are a policy file meaning the same */
		struct buf b;
		buf_init(&b, 0);
		for (size_t i = 0; i < p.lines.n; i++)
			buf_printf(&b, "%s\n", p.lines.v[i]);
		/* ("k:v" comes back as "k: v": it may no longer fit the cap) */
		if (b.len <= STS_POLICY_MAX) {
			FUZZ_ASSERT(sts_policy_parse(b.data, b.len, &q, why, sizeof(why)) == 0);
			check_same(&p, &q);
			sts_policy_free(&q);
		}
		buf_free(&b);
	}

	/* LF and CR LF mean the same (STS-30) */
	if (memchr(data, '\r', size) == NULL) {
		struct buf b;
		buf_init(&b, 0);
		for (size_t i = 0; i < size; i++) {
			if (data[i] == '\n')
				buf_putc(&b, '\r');
			buf_putc(&b, (char)data[i]);
		}
		if (b.len <= STS_POLICY_MAX) {
			int rc2 = sts_policy_parse(b.data ? b.data : "", b.len, &q, NULL, 0);
			FUZZ_ASSERT(rc2 == rc);
			if (rc == 0)
				check_same(&p, &q);
			sts_policy_free(&q);
		}
		buf_free(&b);
	}
	sts_policy_free(&p);
	return 0;
}
