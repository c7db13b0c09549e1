/*
 * fuzz_sts_txt - policy/sts.h sts_txt_select() and sts_txt_parse(). The
 * input is split at NUL bytes into up to 8 TXT records.
 * Invariants: an OK result names a candidate record whose id is 1-32
 * alphanumerics and which parses alone to the same id; a record that
 * parses is always a candidate; reasons are terminated and set exactly on
 * failure.
 */
#include <stdbool.h>

#include "fuzz.h"
#include "policy/sts.h"

static bool id_ok(const char *id)
{
	size_t n = strlen(id);
	if (n < 1 || n > STS_ID_MAX)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = id[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')))
			return false;
	}
	return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct strlist recs = { 0 };
	fuzz_split_nul(data, size, 8, &recs);

	struct sts_txt t;
	char why[96];
	size_t candidates = 0;
	for (size_t i = 0; i < recs.n; i++) {
		bool cand = sts_txt_candidate(recs.v[i]);
		candidates += cand;
		memset(why, 'x', sizeof(why));
		int rc = sts_txt_parse(recs.v[i], &t, why, sizeof(why));
		FUZZ_ASSERT(fuzz_terminated(why, sizeof(why)));
		if (rc == 0) {
			FUZZ_ASSERT(cand);
			FUZZ_ASSERT(id_ok(t.id));
			FUZZ_ASSERT(why[0] == '\0');
		} else {
			FUZZ_ASSERT(rc == -1);
			FUZZ_ASSERT(t.id[0] == '\0');
			FUZZ_ASSERT(why[0] != '\0');
		}
	}

	memset(why, 'x', sizeof(why));
	enum sts_txt_result r = sts_txt_select(&recs, &t, why, sizeof(why));
	FUZZ_ASSERT(fuzz_terminated(why, sizeof(why)));
	switch (r) {
	case STS_TXT_OK: {
		FUZZ_ASSERT(candidates == 1);
		FUZZ_ASSERT(t.index < recs.n && sts_txt_candidate(recs.v[t.index]));
		FUZZ_ASSERT(id_ok(t.id));
		FUZZ_ASSERT(why[0] == '\0');
		struct sts_txt again;
		FUZZ_ASSERT(sts_txt_parse(recs.v[t.index], &again, NULL, 0) == 0);
		FUZZ_ASSERT(strcmp(again.id, t.id) == 0);
		break;
	}
	case STS_TXT_NONE:
		FUZZ_ASSERT(candidates == 0);
		break;
	case STS_TXT_MULTIPLE:
		FUZZ_ASSERT(candidates > 1);
		break;
	case STS_TXT_INVALID:
		FUZZ_ASSERT(candidates == 1 && why[0] != '\0');
		break;
	default:
		FUZZ_ASSERT(!"unknown result");
	}
	if (r != STS_TXT_OK)
		FUZZ_ASSERT(t.id[0] == '\0');
	strlist_free(&recs);
	return 0;
}
