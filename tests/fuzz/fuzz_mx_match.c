/*
 * fuzz_mx_match - policy/decide.h sts_mx_match(), on a pattern and a host
 * taken from the input (split at the first NUL; the host ends at the next).
 *
 * Checked against a model written here from RFC 8461 4.1 and STS-51: after
 * dropping trailing dots and folding ASCII case, a pattern "*.suffix"
 * matches a host that is one non-empty label without a dot followed by
 * ".suffix"; any other pattern matches only an equal, non-empty host.
 * Also: case-insensitive, trailing dots ignored, and for patterns accepted
 * by sts_mx_pattern_valid() a wildcard never matches the bare suffix or two
 * extra labels.
 */
#include <stdbool.h>

#include "fuzz.h"
#include "policy/decide.h"
#include "policy/sts.h"

static char *norm(const char *s)
{
	char *c = xstrdup(s);
	size_t n = strlen(c);
	while (n > 0 && c[n - 1] == '.')
		c[--n] = '\0';
	str_lower(c);
	return c;
}

static bool model(const char *pattern, const char *host)
{
	char *p = norm(pattern), *h = norm(host);
	bool r;
	if (p[0] == '\0' || h[0] == '\0') {
		r = false;
	} else if (p[0] == '*' && p[1] == '.') {
		size_t pl = strlen(p + 1), hl = strlen(h);
		r = hl > pl && strcmp(h + hl - pl, p + 1) == 0 && memchr(h, '.', hl - pl) == NULL;
	} else {
		r = strcmp(p, h) == 0;
	}
	free(p);
	free(h);
	return r;
}

static char *upper_dot(const char *s)
{
	char *c = xasprintf("%s.", s);
	for (char *q = c; *q; q++)
		if (*q >= 'a' && *q <= 'z')
			*q = (char)(*q - 'a' + 'A');
	return c;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const uint8_t *nul = memchr(data, '\0', size);
	if (nul == NULL)
		return 0;
	char *pattern = xstrndup((const char *)data, (size_t)(nul - data));
	size_t rest = size - (size_t)(nul - data) - 1;
	char *host = xstrndup((const char *)nul + 1, rest); /* stops at a further NUL */

	bool m = sts_mx_match(pattern, host);
	FUZZ_ASSERT(m == model(pattern, host));
	char *up = upper_dot(host), *pup = upper_dot(pattern);
	FUZZ_ASSERT(sts_mx_match(pattern, up) == m);
	FUZZ_ASSERT(sts_mx_match(pup, host) == m);
	if (sts_mx_pattern_valid(pattern, strlen(pattern)) && pattern[0] == '*') {
		FUZZ_ASSERT(!sts_mx_match(pattern, pattern + 2));
		char *two = xasprintf("a.b.%s", pattern + 2);
		FUZZ_ASSERT(!sts_mx_match(pattern, two));
		free(two);
		char *one = xasprintf("mx.%s", pattern + 2);
		FUZZ_ASSERT(sts_mx_match(pattern, one));
		free(one);
	}
	free(up);
	free(pup);
	free(pattern);
	free(host);
	return 0;
}
