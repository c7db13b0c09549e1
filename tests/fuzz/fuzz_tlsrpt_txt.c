/*
 * fuzz_tlsrpt_txt - tlsrpt/record.h tlsrpt_txt_select() and
 * tlsrpt_record_parse(). The input is split at NUL bytes into up to 8 TXT
 * records.
 * Invariants: OK means exactly one candidate and 1..TLSRPT_RUA_MAX
 * endpoints; every uri is at most TLSRPT_URI_MAX octets without raw "!",
 * ",", ";" or blanks; mailto endpoints carry a printable ASCII address
 * with one "@" part and a domain, https ones carry none and start with
 * "https://"; a failure leaves the record empty with a reason.
 */
#include <stdbool.h>
#include <strings.h>

#include "fuzz.h"
#include "tlsrpt/record.h"

static void check_record(const struct tlsrpt_record *r)
{
	FUZZ_ASSERT(r->nrua >= 1 && r->nrua <= TLSRPT_RUA_MAX);
	for (size_t i = 0; i < r->nrua; i++) {
		const struct tlsrpt_rua *u = &r->rua[i];
		FUZZ_ASSERT(u->uri != NULL);
		size_t n = strlen(u->uri);
		FUZZ_ASSERT(n > 0 && n <= TLSRPT_URI_MAX);
		FUZZ_ASSERT(strpbrk(u->uri, "!,; \t") == NULL);
		if (u->kind == TLSRPT_RUA_MAILTO) {
			FUZZ_ASSERT(strncasecmp(u->uri, "mailto:", 7) == 0);
			FUZZ_ASSERT(u->addr != NULL);
			const char *at = strrchr(u->addr, '@');
			FUZZ_ASSERT(at != NULL && at != u->addr && at[1] != '\0' && at[1] != '[');
			for (const char *c = u->addr; *c; c++)
				FUZZ_ASSERT(*c > 0x20 && *c < 0x7f && *c != ',');
		} else {
			FUZZ_ASSERT(u->kind == TLSRPT_RUA_HTTPS);
			FUZZ_ASSERT(strncasecmp(u->uri, "https://", 8) == 0 && n > 8);
			FUZZ_ASSERT(u->addr == NULL);
		}
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct strlist recs = { 0 };
	fuzz_split_nul(data, size, 8, &recs);

	struct tlsrpt_record r;
	char why[128];
	size_t candidates = 0;
	for (size_t i = 0; i < recs.n; i++) {
		bool cand = tlsrpt_txt_candidate(recs.v[i]);
		candidates += cand;
		memset(why, 'x', sizeof(why));
		int rc = tlsrpt_record_parse(recs.v[i], &r, why, sizeof(why));
		FUZZ_ASSERT(fuzz_terminated(why, sizeof(why)));
		if (rc == 0) {
			FUZZ_ASSERT(cand && why[0] == '\0');
			check_record(&r);
		} else {
			FUZZ_ASSERT(rc == -1 && why[0] != '\0');
			FUZZ_ASSERT(r.nrua == 0 && r.rua == NULL);
		}
		tlsrpt_record_free(&r);
	}

	memset(why, 'x', sizeof(why));
	enum tlsrpt_txt_result res = tlsrpt_txt_select(&recs, &r, why, sizeof(why));
	FUZZ_ASSERT(fuzz_terminated(why, sizeof(why)));
	switch (res) {
	case TLSRPT_TXT_OK:
		FUZZ_ASSERT(candidates == 1 && why[0] == '\0');
		FUZZ_ASSERT(r.index < recs.n && tlsrpt_txt_candidate(recs.v[r.index]));
		check_record(&r);
		break;
	case TLSRPT_TXT_NONE:
		FUZZ_ASSERT(candidates == 0);
		break;
	case TLSRPT_TXT_MULTIPLE:
		FUZZ_ASSERT(candidates > 1);
		break;
	case TLSRPT_TXT_INVALID:
		FUZZ_ASSERT(candidates == 1 && why[0] != '\0');
		break;
	default:
		FUZZ_ASSERT(!"unknown result");
	}
	if (res != TLSRPT_TXT_OK)
		FUZZ_ASSERT(r.nrua == 0 && r.rua == NULL);
	tlsrpt_record_free(&r);
	strlist_free(&recs);
	return 0;
}
