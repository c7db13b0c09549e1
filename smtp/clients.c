/* clients.c - see clients.h */
#include "clients.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mta/util.h"

static size_t bucket_of(const char *addr)
{
	/* FNV-1a */
	uint32_t h = 2166136261u;
	for (const unsigned char *p = (const unsigned char *)addr; *p != '\0'; p++) {
		h ^= *p;
		h *= 16777619u;
	}
	return h % CLIENTS_BUCKETS;
}

void clients_limit_key(const char *addr, unsigned v4_prefix, unsigned v6_prefix,
		       char out[CLIENTS_KEY_MAX])
{
	unsigned char a[16];
	int family = AF_INET;
	unsigned bits = 32, prefix = v4_prefix;
	if (inet_pton(AF_INET, addr, a) != 1) {
		family = AF_INET6;
		bits = 128;
		prefix = v6_prefix;
		if (inet_pton(AF_INET6, addr, a) != 1)
			prefix = bits = 0; /* not an IP: count it as it is */
	}
	if (prefix >= bits) {
		snprintf(out, CLIENTS_KEY_MAX, "%s", addr);
		return;
	}
	for (unsigned i = 0; i < bits / 8; i++) {
		unsigned keep = prefix > i * 8 ? prefix - i * 8 : 0;
		if (keep < 8)
			a[i] &= (unsigned char)(0xff00u >> keep);
	}
	char text[INET6_ADDRSTRLEN];
	inet_ntop(family, a, text, sizeof(text));
	snprintf(out, CLIENTS_KEY_MAX, "%s/%u", text, prefix);
}

void clients_init(struct clients *t)
{
	memset(t, 0, sizeof(*t));
}

void clients_free(struct clients *t)
{
	for (size_t i = 0; i < CLIENTS_BUCKETS; i++) {
		struct client_entry *e = t->buckets[i];
		while (e != NULL) {
			struct client_entry *next = e->next;
			free(e);
			e = next;
		}
		t->buckets[i] = NULL;
	}
	t->n = 0;
}

static struct client_entry *find(const struct clients *t, const char *addr)
{
	for (struct client_entry *e = t->buckets[bucket_of(addr)]; e != NULL; e = e->next)
		if (strcmp(e->addr, addr) == 0)
			return e;
	return NULL;
}

static struct client_entry *get(struct clients *t, const char *addr, uint64_t now_ms)
{
	struct client_entry *e = find(t, addr);
	if (e == NULL) {
		size_t b = bucket_of(addr);
		e = xcalloc(1, sizeof(*e));
		snprintf(e->addr, sizeof(e->addr), "%s", addr);
		e->tokens = -1; /* not yet filled: the first message fills the bucket */
		e->next = t->buckets[b];
		t->buckets[b] = e;
		t->n++;
	}
	e->last_ms = now_ms;
	return e;
}

bool clients_connect(struct clients *t, const char *addr, unsigned max_conns, uint64_t now_ms)
{
	struct client_entry *e = get(t, addr, now_ms);
	if (max_conns > 0 && e->conns >= max_conns)
		return false;
	e->conns++;
	return true;
}

void clients_disconnect(struct clients *t, const char *addr, uint64_t now_ms)
{
	struct client_entry *e = find(t, addr);
	if (e != NULL && e->conns > 0) {
		e->conns--;
		e->last_ms = now_ms;
	}
}

unsigned clients_connections(const struct clients *t, const char *addr)
{
	const struct client_entry *e = find(t, addr);
	return e ? e->conns : 0;
}

bool clients_message(struct clients *t, const char *addr, unsigned per_minute, uint64_t now_ms)
{
	if (per_minute == 0)
		return true;
	struct client_entry *e = get(t, addr, now_ms);
	/* A token bucket of per_minute tokens refilled at per_minute a minute:
	 * bursts up to the limit, then the steady rate. */
	if (e->tokens < 0) {
		e->tokens = per_minute;
	} else {
		double add = (double)(now_ms - e->tokens_ms) * per_minute / 60000.0;
		e->tokens += add;
		if (e->tokens > per_minute)
			e->tokens = per_minute;
	}
	e->tokens_ms = now_ms;
	if (e->tokens < 1.0)
		return false;
	e->tokens -= 1.0;
	return true;
}

static void expire_failures(struct client_entry *e, uint64_t window_ms, uint64_t now_ms)
{
	if (e->auth_failures > 0 && now_ms - e->auth_window_ms >= window_ms)
		e->auth_failures = 0;
}

bool clients_auth_locked(struct clients *t, const char *addr, unsigned max_failures,
			 uint64_t window_ms, uint64_t now_ms)
{
	struct client_entry *e = find(t, addr);
	if (e == NULL)
		return false;
	expire_failures(e, window_ms, now_ms);
	return e->auth_failures >= max_failures;
}

unsigned clients_auth_failed(struct clients *t, const char *addr, uint64_t window_ms,
			     uint64_t now_ms)
{
	struct client_entry *e = get(t, addr, now_ms);
	expire_failures(e, window_ms, now_ms);
	if (e->auth_failures == 0)
		e->auth_window_ms = now_ms;
	return ++e->auth_failures;
}

void clients_auth_succeeded(struct clients *t, const char *addr, uint64_t now_ms)
{
	struct client_entry *e = find(t, addr);
	if (e != NULL) {
		e->auth_failures = 0;
		e->last_ms = now_ms;
	}
}

void clients_sweep(struct clients *t, uint64_t keep_ms, uint64_t now_ms)
{
	for (size_t i = 0; i < CLIENTS_BUCKETS; i++) {
		struct client_entry **pp = &t->buckets[i];
		while (*pp != NULL) {
			struct client_entry *e = *pp;
			if (e->conns == 0 && now_ms - e->last_ms > keep_ms) {
				*pp = e->next;
				free(e);
				t->n--;
			} else {
				pp = &e->next;
			}
		}
	}
}
