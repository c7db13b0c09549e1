/* retry.c - see retry.h */
#include "retry.h"

int64_t retry_delay(const int64_t *schedule, size_t n, unsigned attempts)
{
	if (n == 0)
		return 300; /* config_validate refuses an empty schedule; be safe */
	size_t i = attempts == 0 ? 0 : attempts - 1;
	if (i >= n)
		i = n - 1;
	return schedule[i];
}

bool retry_expired(int64_t arrival, int64_t now, int64_t max_lifetime)
{
	return now - arrival >= max_lifetime;
}
