/*
 * retry.h - when to try a deferred recipient again, and when to give up.
 * Pure. attempts = how many delivery attempts were made so far (>= 1).
 * The schedule is [queue] retry_schedule: the n-th failure waits
 * schedule[n-1]; beyond its end the last step repeats.
 */
#ifndef STRICTRELAY_QUEUE_RETRY_H
#define STRICTRELAY_QUEUE_RETRY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

int64_t retry_delay(const int64_t *schedule, size_t n, unsigned attempts);

/* A message that has been in the queue for max_lifetime or longer bounces
 * instead of being deferred again. */
bool retry_expired(int64_t arrival, int64_t now, int64_t max_lifetime);

#endif
