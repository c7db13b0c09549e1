/*
 * config.c - see config.h.
 *
 * One static table (keys[] below) describes every key: its section, name,
 * type, where it lives in struct config, its default as text and its limits.
 * Defaults, the file parser, environment overrides, origin tracking and the
 * printer all walk that table, so a key added there is parsed, overridable,
 * printed and round-trips without touching anything else. Defaults are stored
 * as text and go through the same setter as the file, so a default can not
 * be a value the parser would refuse.
 *
 * [routes] has dynamic keys (domains) and its own small parser.
 *
 * Error messages are built in two parts: a setter writes the reason alone
 * ("\"abc\" is not a number"), and the caller prefixes where it happened
 * ("FILE:LINE: max_connections: " or "environment VAR: ").
 */
#include "config.h"
#include "mta/log.h"
#include "policy/requiretls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* A config file is a few kilobytes; anything near this is a mistake. */
#define CONFIG_MAX_FILE_SIZE (1024 * 1024)
#define ENV_PREFIX "STRICTRELAY_"
#define ROUTES_ENV_KEY "DEFAULT"
#define REASON_MAX 512

enum section {
	SEC_SERVER,
	SEC_QUEUE,
	SEC_DELIVERY,
	SEC_AUTH,
	SEC_ROUTES,
	SEC_REQUIRETLS,
	SEC_MTA_STS,
	SEC_TLSRPT,
	SEC_METRICS,
	SEC_LOG,
	SEC_COUNT,
};

/* Print order follows DESIGN.md section 4. */
static const char *const section_names[SEC_COUNT] = {
	[SEC_SERVER] = "server",     [SEC_QUEUE] = "queue",     [SEC_DELIVERY] = "delivery",
	[SEC_AUTH] = "auth",         [SEC_ROUTES] = "routes",   [SEC_REQUIRETLS] = "requiretls",
	[SEC_MTA_STS] = "mta_sts",   [SEC_TLSRPT] = "tlsrpt",   [SEC_METRICS] = "metrics",
	[SEC_LOG] = "log",
};

enum key_type {
	KT_STRING,        /* char * */
	KT_PATH,          /* char *, a file or directory name */
	KT_BOOL,          /* bool */
	KT_UINT,          /* unsigned, range min..max */
	KT_PORT,          /* uint16_t, range min..max */
	KT_SIZE,          /* uint64_t bytes, range min..max */
	KT_DURATION,      /* int64_t seconds, range min..max */
	KT_DURATION_LIST, /* int64_t * + size_t count; each item in min..max */
	KT_STRLIST,       /* struct strlist */
	KT_NETLIST,       /* struct netlist */
	KT_HOSTPORT_LIST, /* struct hostport * + size_t count */
	KT_HOSTPORT,      /* struct hostport; empty = disabled (host NULL) */
	KT_ENUM,          /* an enum stored as int; names[] index = value */
};

/* Flags refining a type. */
#define KF_IP_ONLY 0x1 /* hostport: the host must be an IP literal (we bind or query it) */
#define KF_DOMAINS 0x2 /* strlist: lower-cased, each item a domain name */

struct key_def {
	enum section section;
	const char *name;
	enum key_type type;
	size_t off;               /* offsetof(struct config, ...) of the value */
	size_t count_off;         /* offsetof the element count, for arrays */
	const char *def;          /* default in file syntax; NULL = computed (hostname) */
	uint64_t min, max;        /* numeric range, inclusive */
	uint16_t port;            /* hostport types: port when none is written */
	unsigned flags;
	const char *const *names; /* KT_ENUM: NULL-terminated value names */
};

static const char *const bare_newline_names[] = { "reject", "normalize", NULL };
static const char *const log_format_names[] = { "text", "json", NULL };

_Static_assert(BARE_NEWLINE_REJECT == 0 && BARE_NEWLINE_NORMALIZE == 1, "names follow the enum");
_Static_assert(LOG_FORMAT_TEXT == 0 && LOG_FORMAT_JSON == 1, "names follow the enum");
_Static_assert(sizeof(enum bare_newline_policy) == sizeof(int), "KT_ENUM stores an int");
_Static_assert(sizeof(enum log_format) == sizeof(int), "KT_ENUM stores an int");

#define OFF(m) offsetof(struct config, m)
#define DAYS(n) ((uint64_t)(n) * 86400u)
/* Timeouts and retry steps: at least a second, at most a year (we turn them
 * into milliseconds for libuv timers, so they must stay far from overflow). */
#define DUR_RANGE .min = 1, .max = DAYS(365)

static const struct key_def keys[] = {
	/* [server] */
	{ SEC_SERVER, "hostname", KT_STRING, OFF(server.hostname), .def = NULL },
	{ SEC_SERVER, "listen", KT_HOSTPORT_LIST, OFF(server.listen), OFF(server.nlisten),
	  "0.0.0.0:25, [::]:25", .port = 25, .flags = KF_IP_ONLY },
	{ SEC_SERVER, "tls_cert", KT_PATH, OFF(server.tls_cert), .def = "" },
	{ SEC_SERVER, "tls_key", KT_PATH, OFF(server.tls_key), .def = "" },
	{ SEC_SERVER, "relay_networks", KT_NETLIST, OFF(server.relay_networks),
	  .def = "127.0.0.0/8, ::1/128" },
	{ SEC_SERVER, "max_message_size", KT_SIZE, OFF(server.max_message_size), .def = "35M",
	  .min = 1, .max = (uint64_t)1 << 40 },
	{ SEC_SERVER, "max_connections", KT_UINT, OFF(server.max_connections), .def = "1000",
	  .min = 1, .max = 1000000 },
	{ SEC_SERVER, "max_recipients", KT_UINT, OFF(server.max_recipients), .def = "1000",
	  .min = 1, .max = 100000 },
	{ SEC_SERVER, "command_timeout", KT_DURATION, OFF(server.command_timeout), .def = "5m",
	  DUR_RANGE },
	{ SEC_SERVER, "data_timeout", KT_DURATION, OFF(server.data_timeout), .def = "10m",
	  DUR_RANGE },
	{ SEC_SERVER, "submission_listen", KT_HOSTPORT_LIST, OFF(server.submission_listen),
	  OFF(server.nsubmission_listen), "", .port = 587, .flags = KF_IP_ONLY },
	{ SEC_SERVER, "submission_tls_listen", KT_HOSTPORT_LIST, OFF(server.submission_tls_listen),
	  OFF(server.nsubmission_tls_listen), "", .port = 465, .flags = KF_IP_ONLY },
	{ SEC_SERVER, "accept_domains", KT_STRLIST, OFF(server.accept_domains), .def = "",
	  .flags = KF_DOMAINS },
	{ SEC_SERVER, "sender_domains", KT_STRLIST, OFF(server.sender_domains), .def = "",
	  .flags = KF_DOMAINS },
	{ SEC_SERVER, "postmaster", KT_STRING, OFF(server.postmaster), .def = "" },
	{ SEC_SERVER, "max_connections_per_client", KT_UINT,
	  OFF(server.max_connections_per_client), .def = "50", .min = 1, .max = 1000000 },
	{ SEC_SERVER, "max_messages_per_minute", KT_UINT, OFF(server.max_messages_per_minute),
	  .def = "0", .min = 0, .max = 10000000 },
	{ SEC_SERVER, "limit_prefix_v4", KT_UINT, OFF(server.limit_prefix_v4), .def = "32",
	  .min = 8, .max = 32 },
	{ SEC_SERVER, "limit_prefix_v6", KT_UINT, OFF(server.limit_prefix_v6), .def = "64",
	  .min = 16, .max = 128 },
	{ SEC_SERVER, "user", KT_STRING, OFF(server.user), .def = "" },
	{ SEC_SERVER, "run_as_root", KT_BOOL, OFF(server.run_as_root), .def = "no" },
	{ SEC_SERVER, "bare_newline", KT_ENUM, OFF(server.bare_newline), .def = "reject",
	  .names = bare_newline_names },
	/* [queue] */
	{ SEC_QUEUE, "state_dir", KT_PATH, OFF(queue.state_dir), .def = "/var/lib/strictrelay" },
	{ SEC_QUEUE, "retry_schedule", KT_DURATION_LIST, OFF(queue.retry_schedule),
	  OFF(queue.nretry_schedule), "1m, 5m, 15m, 30m, 1h, 2h, 4h", DUR_RANGE },
	{ SEC_QUEUE, "max_lifetime", KT_DURATION, OFF(queue.max_lifetime), .def = "5d",
	  DUR_RANGE },
	{ SEC_QUEUE, "min_free_space", KT_SIZE, OFF(queue.min_free_space), .def = "100M",
	  .min = 0, .max = (uint64_t)1 << 50 },
	/* [delivery] */
	{ SEC_DELIVERY, "dns_servers", KT_HOSTPORT_LIST, OFF(delivery.dns_servers),
	  OFF(delivery.ndns_servers), "", .port = 53, .flags = KF_IP_ONLY },
	{ SEC_DELIVERY, "ca_file", KT_PATH, OFF(delivery.ca_file), .def = "" },
	{ SEC_DELIVERY, "smtp_port", KT_PORT, OFF(delivery.smtp_port), .def = "25", .min = 1,
	  .max = 65535 },
	{ SEC_DELIVERY, "connect_timeout", KT_DURATION, OFF(delivery.connect_timeout),
	  .def = "30s", DUR_RANGE },
	{ SEC_DELIVERY, "dns_timeout", KT_DURATION, OFF(delivery.dns_timeout), .def = "5s",
	  .min = 1, .max = 60 },
	{ SEC_DELIVERY, "max_per_domain", KT_UINT, OFF(delivery.max_per_domain), .def = "10",
	  .min = 1, .max = 10000 },
	{ SEC_DELIVERY, "max_connections", KT_UINT, OFF(delivery.max_connections), .def = "100",
	  .min = 1, .max = 100000 },
	{ SEC_DELIVERY, "connection_cache_time", KT_DURATION, OFF(delivery.connection_cache_time),
	  .def = "2s", .min = 0, .max = 300 },
	{ SEC_DELIVERY, "require_tls", KT_BOOL, OFF(delivery.require_tls), .def = "no" },
	/* [auth] */
	{ SEC_AUTH, "users_file", KT_PATH, OFF(auth.users_file), .def = "" },
	{ SEC_AUTH, "max_failures", KT_UINT, OFF(auth.max_failures), .def = "5", .min = 1,
	  .max = 1000 },
	{ SEC_AUTH, "failure_window", KT_DURATION, OFF(auth.failure_window), .def = "10m",
	  DUR_RANGE },
	/* [requiretls] */
	{ SEC_REQUIRETLS, "preflight", KT_BOOL, OFF(requiretls.preflight), .def = "yes" },
	{ SEC_REQUIRETLS, "require_for", KT_STRLIST, OFF(requiretls.require_for), .def = "" },
	{ SEC_REQUIRETLS, "preflight_timeout", KT_DURATION, OFF(requiretls.preflight_timeout),
	  .def = "5s", .min = 1, .max = 60 },
	/* [mta_sts] */
	{ SEC_MTA_STS, "enabled", KT_BOOL, OFF(mta_sts.enabled), .def = "yes" },
	{ SEC_MTA_STS, "https_port", KT_PORT, OFF(mta_sts.https_port), .def = "443", .min = 1,
	  .max = 65535 },
	{ SEC_MTA_STS, "fetch_timeout", KT_DURATION, OFF(mta_sts.fetch_timeout), .def = "30s",
	  DUR_RANGE },
	/* [tlsrpt] */
	{ SEC_TLSRPT, "enabled", KT_BOOL, OFF(tlsrpt.enabled), .def = "yes" },
	{ SEC_TLSRPT, "organization_name", KT_STRING, OFF(tlsrpt.organization_name), .def = "" },
	{ SEC_TLSRPT, "contact_info", KT_STRING, OFF(tlsrpt.contact_info), .def = "" },
	{ SEC_TLSRPT, "report_from", KT_STRING, OFF(tlsrpt.report_from), .def = "" },
	{ SEC_TLSRPT, "dkim_domain", KT_STRING, OFF(tlsrpt.dkim_domain), .def = "" },
	{ SEC_TLSRPT, "dkim_selector", KT_STRING, OFF(tlsrpt.dkim_selector), .def = "" },
	{ SEC_TLSRPT, "max_delay", KT_DURATION, OFF(tlsrpt.max_delay), .def = "4h", .min = 0,
	  .max = 86400 },
	{ SEC_TLSRPT, "retention", KT_DURATION, OFF(tlsrpt.retention), .def = "30d", .min = 86400 * 2,
	  .max = 86400 * 365 },
	{ SEC_TLSRPT, "dkim_key", KT_PATH, OFF(tlsrpt.dkim_key), .def = "" },
	/* [metrics] */
	{ SEC_METRICS, "listen", KT_HOSTPORT, OFF(metrics.listen), .def = "", .port = 9325,
	  .flags = KF_IP_ONLY },
	/* [log] */
	{ SEC_LOG, "format", KT_ENUM, OFF(log.format), .def = "text", .names = log_format_names },
	{ SEC_LOG, "syslog", KT_BOOL, OFF(log.syslog), .def = "no" },
};

#define NKEYS SR_ARRAY_LEN(keys)

/* --- small helpers ------------------------------------------------------ */

static void seterr(char *err, size_t errlen, const char *fmt, ...) SR_PRINTF(3, 4);

static void seterr(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;
	if (err == NULL || errlen == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

static void *field(struct config *cfg, size_t off)
{
	return (char *)cfg + off;
}

static const void *cfield(const struct config *cfg, size_t off)
{
	return (const char *)cfg + off;
}

static bool is_blank(char c)
{
	return c == ' ' || c == '\t';
}

static bool is_digit(char c)
{
	return c >= '0' && c <= '9';
}

static char lower(char c)
{
	return (c >= 'A' && c <= 'Z') ? (char)(c + ('a' - 'A')) : c;
}

/* true when a and b (n bytes) are equal ignoring ASCII case */
static bool mem_ieq(const char *a, const char *b, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (lower(a[i]) != lower(b[i]))
			return false;
	return true;
}

/* An environment name part (n bytes) names key; case is not significant. */
static bool env_name_eq(const char *name, size_t n, const char *key)
{
	return strlen(key) == n && mem_ieq(name, key, n);
}

static bool has_control(const char *s)
{
	for (; *s != '\0'; s++)
		if ((unsigned char)*s < 0x20 && *s != '\t')
			return true;
		else if (*s == 0x7f)
			return true;
	return false;
}

static bool is_ip_literal(const char *s)
{
	unsigned char a[16];
	return inet_pton(AF_INET, s, a) == 1 || inet_pton(AF_INET6, s, a) == 1;
}

/*
 * A host name as RFC 1123 allows it: dot-separated labels of letters, digits
 * and hyphens, 1..63 bytes each, no hyphen at either end, 253 bytes in all.
 * No trailing dot: every name here is written by an operator, absolute.
 */
static bool is_domain(const char *s)
{
	size_t total = strlen(s), label = 0;
	if (total == 0 || total > 253)
		return false;
	for (size_t i = 0; i <= total; i++) {
		char c = s[i];
		if (c == '.' || c == '\0') {
			if (label == 0 || label > 63 || s[i - 1] == '-')
				return false;
			label = 0;
			continue;
		}
		if (c == '-' && label == 0)
			return false;
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || is_digit(c) || c == '-'))
			return false;
		label++;
	}
	return true;
}

/* Decimal digits only (no sign, no blanks), overflow checked. */
static int parse_u64(const char *s, size_t n, uint64_t *out)
{
	uint64_t v = 0;
	if (n == 0)
		return -1;
	for (size_t i = 0; i < n; i++) {
		if (!is_digit(s[i]))
			return -1;
		unsigned d = (unsigned)(s[i] - '0');
		if (v > (UINT64_MAX - d) / 10)
			return -1;
		v = v * 10 + d;
	}
	*out = v;
	return 0;
}

/* --- public value parsers ----------------------------------------------- */

int config_parse_duration(const char *s, int64_t *out)
{
	size_t n = strlen(s);
	uint64_t mult = 1, v;
	if (n == 0)
		return -1;
	switch (s[n - 1]) {
	case 's':
		n--;
		break;
	case 'm':
		mult = 60;
		n--;
		break;
	case 'h':
		mult = 3600;
		n--;
		break;
	case 'd':
		mult = 86400;
		n--;
		break;
	default:
		break;
	}
	if (parse_u64(s, n, &v) < 0 || v > (uint64_t)INT64_MAX / mult)
		return -1;
	*out = (int64_t)(v * mult);
	return 0;
}

int config_parse_size(const char *s, uint64_t *out)
{
	size_t n = strlen(s);
	uint64_t mult = 1, v;
	if (n == 0)
		return -1;
	switch (lower(s[n - 1])) {
	case 'k':
		mult = 1024;
		n--;
		break;
	case 'm':
		mult = 1024 * 1024;
		n--;
		break;
	case 'g':
		mult = 1024 * 1024 * 1024;
		n--;
		break;
	default:
		break;
	}
	if (parse_u64(s, n, &v) < 0 || v > UINT64_MAX / mult)
		return -1;
	*out = v * mult;
	return 0;
}

int config_parse_bool(const char *s, bool *out)
{
	static const char *const yes[] = { "yes", "true", "on", "1" };
	static const char *const no[] = { "no", "false", "off", "0" };
	for (size_t i = 0; i < SR_ARRAY_LEN(yes); i++) {
		if (str_ieq(s, yes[i])) {
			*out = true;
			return 0;
		}
		if (str_ieq(s, no[i])) {
			*out = false;
			return 0;
		}
	}
	return -1;
}

const char *tls_level_name(enum tls_level l)
{
	switch (l) {
	case TLS_LEVEL_NONE:
		return "none";
	case TLS_LEVEL_MAY:
		return "may";
	case TLS_LEVEL_ENCRYPT:
		return "encrypt";
	case TLS_LEVEL_VERIFY:
		return "verify";
	}
	return "?";
}

static int tls_level_parse(const char *s, enum tls_level *out)
{
	static const enum tls_level all[] = { TLS_LEVEL_NONE, TLS_LEVEL_MAY, TLS_LEVEL_ENCRYPT,
					      TLS_LEVEL_VERIFY };
	for (size_t i = 0; i < SR_ARRAY_LEN(all); i++) {
		if (str_ieq(s, tls_level_name(all[i]))) {
			*out = all[i];
			return 0;
		}
	}
	return -1;
}

/* --- formatting values back into file syntax ---------------------------- */

/* The largest unit that represents secs exactly, so "90s" stays "90s". */
static void format_duration(struct buf *out, int64_t secs)
{
	if (secs > 0 && secs % 86400 == 0)
		buf_printf(out, "%lldd", (long long)(secs / 86400));
	else if (secs > 0 && secs % 3600 == 0)
		buf_printf(out, "%lldh", (long long)(secs / 3600));
	else if (secs > 0 && secs % 60 == 0)
		buf_printf(out, "%lldm", (long long)(secs / 60));
	else
		buf_printf(out, "%llds", (long long)secs);
}

static void format_size(struct buf *out, uint64_t n)
{
	static const char units[] = { 'G', 'M', 'K' };
	for (size_t i = 0; i < SR_ARRAY_LEN(units); i++) {
		uint64_t u = (uint64_t)1 << (10 * (3 - i));
		if (n > 0 && n % u == 0) {
			buf_printf(out, "%llu%c", (unsigned long long)(n / u), units[i]);
			return;
		}
	}
	buf_printf(out, "%llu", (unsigned long long)n);
}

/*
 * A string is written bare unless the parser would change it: blanks at
 * either end, a leading quote, or a '#' that would start a comment. Then it
 * is quoted. (A value needing quotes that also contains '"' can only come
 * from the environment and can not be written back exactly; it is written
 * quoted anyway, the closest we can do without an escape syntax.)
 */
static void format_string(struct buf *out, const char *s)
{
	size_t n = strlen(s);
	bool quote = n > 0 && (is_blank(s[0]) || is_blank(s[n - 1]) || s[0] == '"');
	for (size_t i = 0; i < n && !quote; i++)
		if (s[i] == '#' && (i == 0 || is_blank(s[i - 1])))
			quote = true;
	if (quote)
		buf_printf(out, "\"%s\"", s);
	else
		buf_puts(out, s);
}

/* "[host]" / "host", with ":port" unless port is 0 (route: use smtp_port). */
static void format_hostport(struct buf *out, const struct hostport *hp)
{
	if (hp->bracketed || strchr(hp->host, ':') != NULL)
		buf_printf(out, "[%s]", hp->host);
	else
		buf_puts(out, hp->host);
	if (hp->port != 0)
		buf_printf(out, ":%u", hp->port);
}

static void format_value(const struct config *cfg, const struct key_def *k, struct buf *out)
{
	const void *p = cfield(cfg, k->off);
	switch (k->type) {
	case KT_STRING:
	case KT_PATH: {
		const char *s = *(char *const *)p;
		format_string(out, s ? s : "");
		break;
	}
	case KT_BOOL:
		buf_puts(out, *(const bool *)p ? "yes" : "no");
		break;
	case KT_UINT:
		buf_printf(out, "%u", *(const unsigned *)p);
		break;
	case KT_PORT:
		buf_printf(out, "%u", *(const uint16_t *)p);
		break;
	case KT_SIZE:
		format_size(out, *(const uint64_t *)p);
		break;
	case KT_DURATION:
		format_duration(out, *(const int64_t *)p);
		break;
	case KT_DURATION_LIST: {
		const int64_t *v = *(int64_t *const *)p;
		size_t n = *(const size_t *)cfield(cfg, k->count_off);
		for (size_t i = 0; i < n; i++) {
			if (i > 0)
				buf_puts(out, ", ");
			format_duration(out, v[i]);
		}
		break;
	}
	case KT_STRLIST: {
		const struct strlist *l = p;
		for (size_t i = 0; i < l->n; i++)
			buf_printf(out, "%s%s", i > 0 ? ", " : "", l->v[i]);
		break;
	}
	case KT_NETLIST: {
		const struct netlist *l = p;
		for (size_t i = 0; i < l->n; i++) {
			char m[INET6_ADDRSTRLEN + 8];
			netmask_format(&l->v[i], m, sizeof(m));
			buf_printf(out, "%s%s", i > 0 ? ", " : "", m);
		}
		break;
	}
	case KT_HOSTPORT_LIST: {
		const struct hostport *v = *(struct hostport *const *)p;
		size_t n = *(const size_t *)cfield(cfg, k->count_off);
		for (size_t i = 0; i < n; i++) {
			if (i > 0)
				buf_puts(out, ", ");
			format_hostport(out, &v[i]);
		}
		break;
	}
	case KT_HOSTPORT: {
		const struct hostport *hp = p;
		if (hp->host != NULL)
			format_hostport(out, hp);
		break;
	}
	case KT_ENUM: {
		/* Bounded: callers may have set the struct field directly. */
		int v = *(const int *)p, n = 0;
		while (k->names[n] != NULL)
			n++;
		buf_puts(out, v >= 0 && v < n ? k->names[v] : "?");
		break;
	}
	}
}

/* --- setting values ----------------------------------------------------- */

static void free_hostports(struct hostport *v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		hostport_free(&v[i]);
	free(v);
}

/* Releases whatever the key owns and leaves it empty. */
static void key_clear(struct config *cfg, const struct key_def *k)
{
	void *p = field(cfg, k->off);
	switch (k->type) {
	case KT_STRING:
	case KT_PATH:
		free(*(char **)p);
		*(char **)p = NULL;
		break;
	case KT_DURATION_LIST:
		free(*(int64_t **)p);
		*(int64_t **)p = NULL;
		*(size_t *)field(cfg, k->count_off) = 0;
		break;
	case KT_STRLIST:
		strlist_free(p);
		break;
	case KT_NETLIST:
		netlist_free(p);
		break;
	case KT_HOSTPORT_LIST:
		free_hostports(*(struct hostport **)p, *(size_t *)field(cfg, k->count_off));
		*(struct hostport **)p = NULL;
		*(size_t *)field(cfg, k->count_off) = 0;
		break;
	case KT_HOSTPORT:
		hostport_free(p);
		break;
	case KT_BOOL:
	case KT_UINT:
	case KT_PORT:
	case KT_SIZE:
	case KT_DURATION:
	case KT_ENUM:
		break;
	}
}

/* What an empty value should have been, for the error message. */
static const char *type_expectation(const struct key_def *k)
{
	switch (k->type) {
	case KT_BOOL:
		return "yes or no";
	case KT_UINT:
	case KT_PORT:
		return "a number";
	case KT_SIZE:
		return "a size";
	case KT_DURATION:
		return "a duration";
	case KT_ENUM:
		return "a name";
	default:
		return "a value";
	}
}

static void format_range(struct buf *out, const struct key_def *k, uint64_t v)
{
	if (k->type == KT_SIZE)
		format_size(out, v);
	else if (k->type == KT_DURATION || k->type == KT_DURATION_LIST)
		format_duration(out, (int64_t)v);
	else
		buf_printf(out, "%llu", (unsigned long long)v);
}

static int check_range(const struct key_def *k, const char *text, uint64_t v, char *why,
		       size_t whylen)
{
	if (v >= k->min && v <= k->max)
		return 0;
	struct buf r;
	buf_init(&r, 0);
	format_range(&r, k, k->min);
	buf_puts(&r, "..");
	format_range(&r, k, k->max);
	seterr(why, whylen, "\"%s\" is out of range (%s)", text, r.data);
	buf_free(&r);
	return -1;
}

static int parse_duration_in_range(const struct key_def *k, const char *s, int64_t *out,
				   char *why, size_t whylen)
{
	if (config_parse_duration(s, out) < 0) {
		seterr(why, whylen, "\"%s\" is not a duration (e.g. 30s, 5m, 2h, 5d or seconds)",
		       s);
		return -1;
	}
	return check_range(k, s, (uint64_t)*out, why, whylen);
}

static int set_duration_list(struct config *cfg, const struct key_def *k, const char *v,
			     char *why, size_t whylen)
{
	struct strlist items = { 0 };
	int64_t *vals = NULL;
	strlist_split(&items, v, true);
	if (items.n > 0)
		vals = xcalloc(items.n, sizeof(*vals));
	for (size_t i = 0; i < items.n; i++) {
		if (parse_duration_in_range(k, items.v[i], &vals[i], why, whylen) < 0) {
			free(vals);
			strlist_free(&items);
			return -1;
		}
	}
	key_clear(cfg, k);
	*(int64_t **)field(cfg, k->off) = vals;
	*(size_t *)field(cfg, k->count_off) = items.n;
	strlist_free(&items);
	return 0;
}

static int set_strlist(struct config *cfg, const struct key_def *k, const char *v, char *why,
		       size_t whylen)
{
	struct strlist items = { 0 };
	strlist_split(&items, v, true);
	for (size_t i = 0; i < items.n; i++) {
		if (has_control(items.v[i])) {
			seterr(why, whylen, "\"%s\" contains a control character", items.v[i]);
			strlist_free(&items);
			return -1;
		}
		if (!(k->flags & KF_DOMAINS))
			continue;
		str_lower(items.v[i]);
		if (!is_domain(items.v[i])) {
			seterr(why, whylen, "\"%s\" is not a domain name", items.v[i]);
			strlist_free(&items);
			return -1;
		}
	}
	key_clear(cfg, k);
	*(struct strlist *)field(cfg, k->off) = items;
	return 0;
}

static int set_netlist(struct config *cfg, const struct key_def *k, const char *v, char *why,
		       size_t whylen)
{
	struct netlist l = { 0 };
	if (netlist_parse(&l, v, why, whylen) < 0) {
		netlist_free(&l);
		return -1;
	}
	key_clear(cfg, k);
	*(struct netlist *)field(cfg, k->off) = l;
	return 0;
}

/* One host:port item of a hostport key. */
static int parse_hostport_item(const struct key_def *k, const char *item, struct hostport *hp,
			       char *why, size_t whylen)
{
	if (hostport_parse(hp, item, k->port, why, whylen) < 0)
		return -1;
	if ((k->flags & KF_IP_ONLY) && !is_ip_literal(hp->host)) {
		seterr(why, whylen, "bad address \"%s\": \"%s\" is not an IP address", item,
		       hp->host);
		hostport_free(hp);
		return -1;
	}
	return 0;
}

static int set_hostport_list(struct config *cfg, const struct key_def *k, const char *v,
			     char *why, size_t whylen)
{
	struct strlist items = { 0 };
	struct hostport *hps = NULL;
	strlist_split(&items, v, true);
	if (items.n > 0)
		hps = xcalloc(items.n, sizeof(*hps));
	for (size_t i = 0; i < items.n; i++) {
		if (parse_hostport_item(k, items.v[i], &hps[i], why, whylen) < 0) {
			free_hostports(hps, i);
			strlist_free(&items);
			return -1;
		}
	}
	key_clear(cfg, k);
	*(struct hostport **)field(cfg, k->off) = hps;
	*(size_t *)field(cfg, k->count_off) = items.n;
	strlist_free(&items);
	return 0;
}

static int set_hostport(struct config *cfg, const struct key_def *k, const char *v, char *why,
			size_t whylen)
{
	struct hostport hp = { 0 };
	if (strchr(v, ',') != NULL) {
		seterr(why, whylen, "\"%s\": one address only", v);
		return -1;
	}
	if (*v != '\0' && parse_hostport_item(k, v, &hp, why, whylen) < 0)
		return -1;
	key_clear(cfg, k);
	*(struct hostport *)field(cfg, k->off) = hp;
	return 0;
}

static int set_enum(struct config *cfg, const struct key_def *k, const char *v, char *why,
		    size_t whylen)
{
	for (int i = 0; k->names[i] != NULL; i++) {
		if (str_ieq(v, k->names[i])) {
			*(int *)field(cfg, k->off) = i;
			return 0;
		}
	}
	struct buf all;
	buf_init(&all, 0);
	for (int i = 0; k->names[i] != NULL; i++)
		buf_printf(&all, "%s%s", i > 0 ? ", " : "", k->names[i]);
	seterr(why, whylen, "\"%s\" is not one of: %s", v, all.data);
	buf_free(&all);
	return -1;
}

static int set_number(struct config *cfg, const struct key_def *k, const char *v, char *why,
		      size_t whylen)
{
	uint64_t u;
	int64_t d;
	switch (k->type) {
	case KT_UINT:
	case KT_PORT:
		if (parse_u64(v, strlen(v), &u) < 0) {
			seterr(why, whylen, "\"%s\" is not a number", v);
			return -1;
		}
		if (check_range(k, v, u, why, whylen) < 0)
			return -1;
		if (k->type == KT_UINT)
			*(unsigned *)field(cfg, k->off) = (unsigned)u;
		else
			*(uint16_t *)field(cfg, k->off) = (uint16_t)u;
		return 0;
	case KT_SIZE:
		if (config_parse_size(v, &u) < 0) {
			seterr(why, whylen, "\"%s\" is not a size (e.g. 35M, 512K, 1G or bytes)", v);
			return -1;
		}
		if (check_range(k, v, u, why, whylen) < 0)
			return -1;
		*(uint64_t *)field(cfg, k->off) = u;
		return 0;
	case KT_DURATION:
		if (parse_duration_in_range(k, v, &d, why, whylen) < 0)
			return -1;
		*(int64_t *)field(cfg, k->off) = d;
		return 0;
	default:
		panic("config: set_number on key %s", k->name);
	}
}

/*
 * Parses v for key k and, only if it is valid, replaces the current value:
 * a bad value leaves the previous one (default or earlier source) intact.
 * 0, or -1 with the reason (without location) in why.
 */
static int key_set(struct config *cfg, const struct key_def *k, const char *v, char *why,
		   size_t whylen)
{
	bool b;
	if (*v == '\0' && (k->type == KT_BOOL || k->type == KT_UINT || k->type == KT_PORT ||
			   k->type == KT_SIZE || k->type == KT_DURATION || k->type == KT_ENUM)) {
		seterr(why, whylen, "empty value (expected %s)", type_expectation(k));
		return -1;
	}
	switch (k->type) {
	case KT_STRING:
	case KT_PATH:
		if (has_control(v)) {
			seterr(why, whylen, "value contains a control character");
			return -1;
		}
		key_clear(cfg, k);
		*(char **)field(cfg, k->off) = xstrdup(v);
		return 0;
	case KT_BOOL:
		if (config_parse_bool(v, &b) < 0) {
			seterr(why, whylen,
			       "\"%s\" is not a boolean (yes/no, true/false, on/off, 1/0)", v);
			return -1;
		}
		*(bool *)field(cfg, k->off) = b;
		return 0;
	case KT_UINT:
	case KT_PORT:
	case KT_SIZE:
	case KT_DURATION:
		return set_number(cfg, k, v, why, whylen);
	case KT_DURATION_LIST:
		return set_duration_list(cfg, k, v, why, whylen);
	case KT_STRLIST:
		return set_strlist(cfg, k, v, why, whylen);
	case KT_NETLIST:
		return set_netlist(cfg, k, v, why, whylen);
	case KT_HOSTPORT_LIST:
		return set_hostport_list(cfg, k, v, why, whylen);
	case KT_HOSTPORT:
		return set_hostport(cfg, k, v, why, whylen);
	case KT_ENUM:
		return set_enum(cfg, k, v, why, whylen);
	}
	return -1;
}

static const struct key_def *key_find(enum section sec, const char *name)
{
	for (size_t i = 0; i < NKEYS; i++)
		if (keys[i].section == sec && str_ieq(keys[i].name, name))
			return &keys[i];
	return NULL;
}

/* --- origins ------------------------------------------------------------ */

/* Records where section.key got its value; takes ownership of where. */
static void origin_set(struct config *cfg, const char *section, const char *key, char *where)
{
	for (size_t i = 0; i < cfg->norigins; i++) {
		struct config_origin *o = &cfg->origins[i];
		if (strcmp(o->section, section) == 0 && strcmp(o->key, key) == 0) {
			free(o->where);
			o->where = where;
			return;
		}
	}
	cfg->origins = xrealloc(cfg->origins, (cfg->norigins + 1) * sizeof(*cfg->origins));
	cfg->origins[cfg->norigins++] = (struct config_origin){
		.section = xstrdup(section),
		.key = xstrdup(key),
		.where = where,
	};
}

const char *config_origin(const struct config *cfg, const char *section, const char *key)
{
	for (size_t i = 0; i < cfg->norigins; i++) {
		const struct config_origin *o = &cfg->origins[i];
		if (strcmp(o->section, section) == 0 && strcmp(o->key, key) == 0)
			return o->where;
	}
	return "default";
}

/* --- routes ------------------------------------------------------------- */

static void route_free(struct route *r)
{
	free(r->domain);
	hostport_free(&r->next_hop);
	free(r->verify_name);
	memset(r, 0, sizeof(*r));
}

/* "FILE:LINE" or "environment STRICTRELAY_ROUTES_DEFAULT" into dst. */
static const char *route_where(const struct config *cfg, const struct route *r, char *dst,
			       size_t dstlen)
{
	if (r->line == 0)
		snprintf(dst, dstlen, "environment " ENV_PREFIX "ROUTES_" ROUTES_ENV_KEY);
	else
		snprintf(dst, dstlen, "%s:%d", cfg->path ? cfg->path : "(config)", r->line);
	return dst;
}

static bool route_domain_ok(const char *d)
{
	if (strcmp(d, "*") == 0)
		return true;
	return is_domain(d[0] == '.' ? d + 1 : d);
}

/* Did the operator write a port? hostport_parse can not tell us: it fills in a default. */
static bool has_explicit_port(const char *text)
{
	if (text[0] == '[') {
		const char *close = strchr(text, ']');
		return close != NULL && close[1] == ':';
	}
	return strchr(text, ':') != NULL;
}

static int route_parse_next_hop(struct route *r, const char *text, char *why, size_t whylen)
{
	/* Any non-zero default: we only need to know if a port was written. */
	if (hostport_parse(&r->next_hop, text, 25, why, whylen) < 0)
		return -1;
	if (!has_explicit_port(text))
		r->next_hop.port = 0;
	const char *host = r->next_hop.host;
	if (r->next_hop.bracketed) {
		if (!is_ip_literal(host) && !is_domain(host)) {
			seterr(why, whylen, "bad next hop \"%s\": not a host name or address", text);
			return -1;
		}
	} else if (is_ip_literal(host)) {
		/* An address has no MX records; the operator meant "no MX lookup". */
		seterr(why, whylen, "bad next hop \"%s\": write an address in brackets, e.g. [%s]",
		       text, host);
		return -1;
	} else if (!is_domain(host)) {
		seterr(why, whylen, "bad next hop \"%s\": not a host name", text);
		return -1;
	}
	return 0;
}

static int route_parse_option(struct route *r, const char *opt, char *why, size_t whylen)
{
	if (str_iprefix(opt, "tls=")) {
		if (r->tls_explicit) {
			seterr(why, whylen, "tls= given twice");
			return -1;
		}
		if (tls_level_parse(opt + 4, &r->tls) < 0) {
			seterr(why, whylen,
			       "bad tls level \"%s\" (expected none, may, encrypt or verify)",
			       opt + 4);
			return -1;
		}
		r->tls_explicit = true;
		return 0;
	}
	if (str_iprefix(opt, "verify_name=")) {
		const char *name = opt + strlen("verify_name=");
		if (r->verify_name != NULL) {
			seterr(why, whylen, "verify_name= given twice");
			return -1;
		}
		if (!is_domain(name)) {
			seterr(why, whylen, "verify_name \"%s\" is not a domain name", name);
			return -1;
		}
		r->verify_name = xstrdup(name);
		str_lower(r->verify_name);
		return 0;
	}
	seterr(why, whylen, "unknown option \"%s\" (expected tls=LEVEL or verify_name=NAME)", opt);
	return -1;
}

/* "DOMAIN = NEXTHOP [tls=LEVEL] [verify_name=NAME]" into r (zeroed by the caller). */
static int route_parse(struct route *r, const char *domain, const char *value, char *why,
		       size_t whylen)
{
	struct strlist tok = { 0 };
	int rc = -1;
	r->domain = xstrdup(domain);
	str_lower(r->domain);
	r->tls = TLS_LEVEL_MAY;
	if (!route_domain_ok(r->domain)) {
		seterr(why, whylen, "bad domain (expected a domain, \".domain\" or \"*\")");
		goto out;
	}
	strlist_split(&tok, value, true);
	for (size_t i = 0; i < tok.n; i++) {
		if (has_control(tok.v[i])) {
			seterr(why, whylen, "value contains a control character");
			goto out;
		}
	}
	if (tok.n == 0) {
		seterr(why, whylen, "next hop missing (DOMAIN = [host]:port tls=LEVEL)");
		goto out;
	}
	if (strchr(tok.v[0], '=') != NULL) {
		seterr(why, whylen, "next hop missing before \"%s\"", tok.v[0]);
		goto out;
	}
	if (route_parse_next_hop(r, tok.v[0], why, whylen) < 0)
		goto out;
	for (size_t i = 1; i < tok.n; i++)
		if (route_parse_option(r, tok.v[i], why, whylen) < 0)
			goto out;
	rc = 0;
out:
	strlist_free(&tok);
	return rc;
}

static void route_add(struct config *cfg, struct route *r)
{
	cfg->routes = xrealloc(cfg->routes, (cfg->nroutes + 1) * sizeof(*cfg->routes));
	cfg->routes[cfg->nroutes++] = *r;
}

static void route_remove(struct config *cfg, size_t i)
{
	route_free(&cfg->routes[i]);
	memmove(&cfg->routes[i], &cfg->routes[i + 1],
		(cfg->nroutes - i - 1) * sizeof(*cfg->routes));
	cfg->nroutes--;
}

/*
 * Routes without tls= follow require_tls, which may be set after them (later
 * in the file, or from the environment): so this runs after every source.
 */
static void routes_apply_default_tls(struct config *cfg)
{
	for (size_t i = 0; i < cfg->nroutes; i++)
		if (!cfg->routes[i].tls_explicit)
			cfg->routes[i].tls = cfg->delivery.require_tls ? TLS_LEVEL_VERIFY
								       : TLS_LEVEL_MAY;
}

const struct route *config_find_route(const struct config *cfg, const char *domain)
{
	size_t dlen = strlen(domain);
	const struct route *suffix = NULL, *star = NULL;
	size_t suffix_len = 0;
	/* "example.com." is the same domain as "example.com". */
	if (dlen > 0 && domain[dlen - 1] == '.')
		dlen--;
	for (size_t i = 0; i < cfg->nroutes; i++) {
		const struct route *r = &cfg->routes[i];
		size_t rlen = strlen(r->domain);
		if (strcmp(r->domain, "*") == 0) {
			if (star == NULL)
				star = r;
		} else if (r->domain[0] == '.') {
			/* rlen < dlen: ".example.com" never matches example.com itself. */
			if (rlen < dlen && rlen > suffix_len &&
			    mem_ieq(domain + dlen - rlen, r->domain, rlen)) {
				suffix = r;
				suffix_len = rlen;
			}
		} else if (rlen == dlen && mem_ieq(domain, r->domain, rlen)) {
			return r;
		}
	}
	return suffix != NULL ? suffix : star;
}

/* --- init / free -------------------------------------------------------- */

static char *default_hostname(void)
{
	char name[256];
	if (gethostname(name, sizeof(name)) < 0 || name[0] == '\0')
		return xstrdup("localhost");
	name[sizeof(name) - 1] = '\0';
	return xstrdup(name);
}

void config_init(struct config *cfg)
{
	char why[REASON_MAX];
	memset(cfg, 0, sizeof(*cfg));
	for (size_t i = 0; i < NKEYS; i++) {
		const struct key_def *k = &keys[i];
		if (k->def == NULL)
			continue;
		/* The defaults are ours: one the parser refuses is a bug. */
		if (key_set(cfg, k, k->def, why, sizeof(why)) < 0)
			panic("config: default of [%s] %s: %s", section_names[k->section], k->name,
			      why);
	}
	cfg->server.hostname = default_hostname();
}

void config_free(struct config *cfg)
{
	for (size_t i = 0; i < NKEYS; i++)
		key_clear(cfg, &keys[i]);
	for (size_t i = 0; i < cfg->nroutes; i++)
		route_free(&cfg->routes[i]);
	free(cfg->routes);
	for (size_t i = 0; i < cfg->norigins; i++) {
		free(cfg->origins[i].section);
		free(cfg->origins[i].key);
		free(cfg->origins[i].where);
	}
	free(cfg->origins);
	free(cfg->path);
	/* Zeroed, so a second config_free() is harmless. */
	memset(cfg, 0, sizeof(*cfg));
}

/* --- the file parser ---------------------------------------------------- */

struct parse_state {
	struct config *cfg;
	const char *file;
	int section;          /* enum section, or -1 before the first header */
	int seen[NKEYS];      /* line where each key was set in this text; 0 = not yet */
	char *err;
	size_t errlen;
};

static int perr(struct parse_state *st, int line, const char *fmt, ...) SR_PRINTF(3, 4);

/* "FILE:LINE: " + the message; always returns -1. */
static int perr(struct parse_state *st, int line, const char *fmt, ...)
{
	char msg[REASON_MAX + 128];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	seterr(st->err, st->errlen, "%s:%d: %s", st->file, line, msg);
	return -1;
}

/*
 * Strips the comment and the optional double quotes from a raw value.
 * Unquoted: a '#' at the start or after a blank starts a comment. Quoted:
 * everything up to the next '"' is the value ('#' included), and only blanks
 * or a comment may follow. Returns the value (inside raw) or NULL.
 */
static char *value_clean(char *raw, const char **why)
{
	char *v = str_trim(raw);
	if (*v == '"') {
		char *close = strchr(v + 1, '"');
		if (close == NULL) {
			*why = "unterminated quoted value";
			return NULL;
		}
		char *rest = close + 1;
		while (is_blank(*rest))
			rest++;
		if (*rest != '\0' && *rest != '#') {
			*why = "text after the closing quote";
			return NULL;
		}
		*close = '\0';
		return v + 1;
	}
	for (size_t i = 0; v[i] != '\0'; i++) {
		if (v[i] == '#' && (i == 0 || is_blank(v[i - 1]))) {
			v[i] = '\0';
			break;
		}
	}
	return str_trim(v);
}

static int parse_section(struct parse_state *st, char *s, int line)
{
	char *close = strchr(s, ']');
	if (close == NULL)
		return perr(st, line, "expected \"[section]\"");
	char *rest = close + 1;
	while (is_blank(*rest))
		rest++;
	if (*rest != '\0' && *rest != '#')
		return perr(st, line, "expected \"[section]\"");
	*close = '\0';
	char *name = str_trim(s + 1);
	for (int i = 0; i < SEC_COUNT; i++) {
		if (str_ieq(name, section_names[i])) {
			st->section = i;
			return 0;
		}
	}
	return perr(st, line, "unknown section [%s]", name);
}

static int parse_route_line(struct parse_state *st, const char *domain, const char *value,
			    int line)
{
	struct route r = { 0 };
	char why[REASON_MAX];
	if (route_parse(&r, domain, value, why, sizeof(why)) < 0) {
		int rc = perr(st, line, "route \"%s\": %s", domain, why);
		route_free(&r);
		return rc;
	}
	r.line = line;
	route_add(st->cfg, &r);
	origin_set(st->cfg, section_names[SEC_ROUTES], r.domain,
		   xasprintf("%s:%d", st->file, line));
	return 0;
}

static int parse_key_line(struct parse_state *st, char *s, int line)
{
	char *eq = strchr(s, '=');
	if (eq == NULL)
		return perr(st, line, "expected \"key = value\"");
	*eq = '\0';
	char *key = str_trim(s);
	if (*key == '\0')
		return perr(st, line, "expected \"key = value\"");
	if (st->section < 0)
		return perr(st, line, "key outside any section");
	const char *qwhy = NULL;
	const char *value = value_clean(eq + 1, &qwhy);
	if (value == NULL)
		return perr(st, line, "%s: %s", key, qwhy);
	if (st->section == SEC_ROUTES)
		return parse_route_line(st, key, value, line);

	const struct key_def *k = key_find((enum section)st->section, key);
	if (k == NULL)
		return perr(st, line, "unknown key \"%s\" in [%s]", key,
			    section_names[st->section]);
	size_t idx = (size_t)(k - keys);
	if (st->seen[idx] != 0)
		return perr(st, line, "duplicate key \"%s\" (first set at line %d)", k->name,
			    st->seen[idx]);
	char why[REASON_MAX];
	if (key_set(st->cfg, k, value, why, sizeof(why)) < 0)
		return perr(st, line, "%s: %s", k->name, why);
	st->seen[idx] = line;
	origin_set(st->cfg, section_names[k->section], k->name,
		   xasprintf("%s:%d", st->file, line));
	return 0;
}

static int parse_line(struct parse_state *st, char *text, int line)
{
	/* A UTF-8 byte order mark some editors write at the start of a file. */
	if (line == 1 && strncmp(text, "\xef\xbb\xbf", 3) == 0)
		text += 3;
	char *s = str_trim(text);
	if (*s == '\0' || *s == '#')
		return 0;
	if (*s == '[')
		return parse_section(st, s, line);
	return parse_key_line(st, s, line);
}

int config_parse(struct config *cfg, const char *text, size_t len, const char *filename,
		 char *err, size_t errlen)
{
	struct parse_state st = {
		.cfg = cfg,
		.file = filename,
		.section = -1,
		.err = err,
		.errlen = errlen,
	};
	size_t pos = 0;
	int line = 0, rc = 0;
	/* Routes print their origin as cfg->path:line. */
	if (cfg->path == NULL)
		cfg->path = xstrdup(filename);
	while (pos < len && rc == 0) {
		const char *nl = memchr(text + pos, '\n', len - pos);
		size_t end = nl != NULL ? (size_t)(nl - text) : len;
		line++;
		if (memchr(text + pos, '\0', end - pos) != NULL) {
			rc = perr(&st, line, "NUL byte in line");
			break;
		}
		char *copy = xstrndup(text + pos, end - pos);
		rc = parse_line(&st, copy, line);
		free(copy);
		pos = end + 1;
	}
	routes_apply_default_tls(cfg);
	return rc;
}

/* --- environment -------------------------------------------------------- */

/* The value as the environment gives it: trimmed, surrounding quotes removed
 * (env files and compose files often keep them), no comment syntax. */
static char *env_value(const char *raw)
{
	char *copy = xstrdup(raw);
	char *v = str_trim(copy);
	size_t n = strlen(v);
	if (n >= 2 && v[0] == '"' && v[n - 1] == '"') {
		v[n - 1] = '\0';
		v++;
	}
	char *out = xstrdup(v);
	free(copy);
	return out;
}

/* STRICTRELAY_ROUTES_DEFAULT: replaces the "*" route; empty removes it. */
static int env_set_default_route(struct config *cfg, const char *var, const char *value,
				 char *err, size_t errlen)
{
	struct route r = { 0 };
	char why[REASON_MAX];
	for (size_t i = 0; i < cfg->nroutes; i++) {
		if (strcmp(cfg->routes[i].domain, "*") == 0) {
			route_remove(cfg, i);
			i--;
		}
	}
	if (*value == '\0') {
		origin_set(cfg, section_names[SEC_ROUTES], "*", xasprintf("environment %s", var));
		return 0;
	}
	if (route_parse(&r, "*", value, why, sizeof(why)) < 0) {
		seterr(err, errlen, "environment %s: route \"*\": %s", var, why);
		route_free(&r);
		return -1;
	}
	route_add(cfg, &r);
	origin_set(cfg, section_names[SEC_ROUTES], "*", xasprintf("environment %s", var));
	return 0;
}

/*
 * name is the part after "STRICTRELAY_", n bytes. Section names contain
 * underscores (MTA_STS), so the section is found by matching each known
 * section as a prefix, never by splitting at the first '_'.
 */
static int env_apply_one(struct config *cfg, const char *var, const char *name, size_t n,
			 const char *raw, char *err, size_t errlen)
{
	int sec = -1;
	size_t slen = 0;
	for (int i = 0; i < SEC_COUNT; i++) {
		size_t l = strlen(section_names[i]);
		if (l < n && l > slen && name[l] == '_' && mem_ieq(name, section_names[i], l)) {
			sec = i;
			slen = l;
		}
	}
	if (sec < 0)
		return 0; /* not ours to judge: STRICTRELAY_CONFIG and the like */
	const char *kname = name + slen + 1;
	size_t klen = n - slen - 1;
	char *value = env_value(raw);
	int rc = 0;
	if (sec == SEC_ROUTES) {
		if (env_name_eq(kname, klen, ROUTES_ENV_KEY)) {
			rc = env_set_default_route(cfg, var, value, err, errlen);
		} else {
			seterr(err, errlen, "environment %s: only %sROUTES_%s can set a route", var,
			       ENV_PREFIX, ROUTES_ENV_KEY);
			rc = -1;
		}
		free(value);
		return rc;
	}
	const struct key_def *k = NULL;
	for (size_t i = 0; i < NKEYS && k == NULL; i++)
		if ((int)keys[i].section == sec && env_name_eq(kname, klen, keys[i].name))
			k = &keys[i];
	if (k == NULL) {
		seterr(err, errlen, "environment %s: unknown key in [%s]", var, section_names[sec]);
		free(value);
		return -1;
	}
	char why[REASON_MAX];
	if (key_set(cfg, k, value, why, sizeof(why)) < 0) {
		seterr(err, errlen, "environment %s: %s", var, why);
		rc = -1;
	} else {
		origin_set(cfg, section_names[k->section], k->name,
			   xasprintf("environment %s", var));
	}
	free(value);
	return rc;
}

int config_apply_env(struct config *cfg, char *const *envp, char *err, size_t errlen)
{
	const size_t plen = strlen(ENV_PREFIX);
	int rc = 0;
	for (size_t i = 0; envp != NULL && envp[i] != NULL && rc == 0; i++) {
		const char *e = envp[i];
		const char *eq = strchr(e, '=');
		if (eq == NULL || strncmp(e, ENV_PREFIX, plen) != 0)
			continue;
		char *var = xstrndup(e, (size_t)(eq - e));
		rc = env_apply_one(cfg, var, var + plen, strlen(var) - plen, eq + 1, err, errlen);
		free(var);
	}
	routes_apply_default_tls(cfg);
	return rc;
}

/* --- validation --------------------------------------------------------- */

static int verr(const struct config *cfg, char *err, size_t errlen, const char *section,
		const char *key, const char *fmt, ...) SR_PRINTF(6, 7);

/* "ORIGIN-OF-section.key: " + the message; always returns -1. */
static int verr(const struct config *cfg, char *err, size_t errlen, const char *section,
		const char *key, const char *fmt, ...)
{
	char msg[REASON_MAX + 128];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	seterr(err, errlen, "%s: %s", config_origin(cfg, section, key), msg);
	return -1;
}

static bool str_set(const char *s)
{
	return s != NULL && *s != '\0';
}

static int validate_server(const struct config *cfg, char *err, size_t errlen)
{
	const struct config_server *s = &cfg->server;
	if (!is_domain(s->hostname ? s->hostname : ""))
		return verr(cfg, err, errlen, "server", "hostname",
			    "hostname \"%s\" is not a valid domain name", s->hostname);
	if (s->nlisten == 0)
		return verr(cfg, err, errlen, "server", "listen",
			    "listen is empty: the relay would accept no mail");
	if (str_set(s->tls_cert) && !str_set(s->tls_key))
		return verr(cfg, err, errlen, "server", "tls_cert",
			    "tls_cert is set but tls_key is not");
	if (str_set(s->tls_key) && !str_set(s->tls_cert))
		return verr(cfg, err, errlen, "server", "tls_key",
			    "tls_key is set but tls_cert is not");
	/* AUTH only ever happens inside TLS, against the users file. */
	const char *sub = s->nsubmission_listen ? "submission_listen"
			  : s->nsubmission_tls_listen ? "submission_tls_listen" : NULL;
	if (sub != NULL && !str_set(s->tls_cert))
		return verr(cfg, err, errlen, "server", sub,
			    "%s needs tls_cert and tls_key (AUTH is offered only inside TLS)", sub);
	if (sub != NULL && !str_set(cfg->auth.users_file))
		return verr(cfg, err, errlen, "server", sub,
			    "%s needs [auth] users_file (clients there must authenticate)", sub);
	if (str_set(s->postmaster)) {
		/* local@domain: one '@', a plain dot-atom-ish local part, a domain */
		const char *at = strchr(s->postmaster, '@');
		/* RFC 5321 4.5.3.1: local part 64, path 256 octets with the <> */
		bool ok = at != NULL && at != s->postmaster && strchr(at + 1, '@') == NULL &&
			  (size_t)(at - s->postmaster) <= 64 && strlen(s->postmaster) <= 254 &&
			  is_domain(at + 1);
		for (const char *p = s->postmaster; ok && p < at; p++)
			ok = (unsigned char)*p > ' ' && (unsigned char)*p < 0x7f &&
			     strchr("<>()[]\\,;:\"", *p) == NULL;
		if (!ok)
			return verr(cfg, err, errlen, "server", "postmaster",
				    "postmaster \"%s\" is not an address (local@domain)", s->postmaster);
	}
	if (s->user != NULL && strchr(s->user, ':') != NULL)
		return verr(cfg, err, errlen, "server", "user", "user \"%s\" is not a user name",
			    s->user);
	return 0;
}

static int validate_other(const struct config *cfg, char *err, size_t errlen)
{
	const struct config_tlsrpt *t = &cfg->tlsrpt;
	if (!str_set(cfg->queue.state_dir))
		return verr(cfg, err, errlen, "queue", "state_dir", "state_dir is empty");
	if (cfg->queue.nretry_schedule == 0)
		return verr(cfg, err, errlen, "queue", "retry_schedule",
			    "retry_schedule is empty");
	/* Signing needs all three; a partial set is a half-finished edit. */
	const char *dkim[3][2] = {
		{ "dkim_domain", t->dkim_domain },
		{ "dkim_selector", t->dkim_selector },
		{ "dkim_key", t->dkim_key },
	};
	const char *set = NULL, *missing = NULL;
	for (size_t i = 0; i < 3; i++) {
		if (str_set(dkim[i][1]) && set == NULL)
			set = dkim[i][0];
		if (!str_set(dkim[i][1]) && missing == NULL)
			missing = dkim[i][0];
	}
	if (set != NULL && missing != NULL)
		return verr(cfg, err, errlen, "tlsrpt", set,
			    "%s is set but %s is not (DKIM signing needs dkim_domain, "
			    "dkim_selector and dkim_key)",
			    set, missing);
	struct rtls_rules rules = { 0 };
	char why[REASON_MAX];
	int bad = rtls_rules_parse(&rules, &cfg->requiretls.require_for, why, sizeof(why));
	rtls_rules_free(&rules);
	if (bad < 0)
		return verr(cfg, err, errlen, "requiretls", "require_for", "%s", why);
	return 0;
}

static int validate_routes(const struct config *cfg, char *err, size_t errlen)
{
	char w1[512], w2[512];
	for (size_t i = 0; i < cfg->nroutes; i++) {
		const struct route *r = &cfg->routes[i];
		for (size_t j = 0; j < i; j++) {
			if (strcmp(cfg->routes[j].domain, r->domain) == 0) {
				seterr(err, errlen, "%s: duplicate route \"%s\" (first at %s)",
				       route_where(cfg, r, w1, sizeof(w1)), r->domain,
				       route_where(cfg, &cfg->routes[j], w2, sizeof(w2)));
				return -1;
			}
		}
		if (r->verify_name != NULL && r->tls != TLS_LEVEL_VERIFY) {
			seterr(err, errlen, "%s: route \"%s\": verify_name needs tls=verify",
			       route_where(cfg, r, w1, sizeof(w1)), r->domain);
			return -1;
		}
		if (cfg->delivery.require_tls && r->tls != TLS_LEVEL_VERIFY) {
			seterr(err, errlen,
			       "%s: route \"%s\": tls=%s is below the require_tls floor "
			       "(require_tls = yes at %s)",
			       route_where(cfg, r, w1, sizeof(w1)), r->domain, tls_level_name(r->tls),
			       config_origin(cfg, "delivery", "require_tls"));
			return -1;
		}
	}
	return 0;
}

int config_validate(const struct config *cfg, char *err, size_t errlen)
{
	if (validate_server(cfg, err, errlen) < 0 || validate_other(cfg, err, errlen) < 0 ||
	    validate_routes(cfg, err, errlen) < 0)
		return -1;
	return 0;
}

/* --- load --------------------------------------------------------------- */

static int read_file(const char *path, struct buf *out, char *err, size_t errlen)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	struct stat st;
	if (fd < 0) {
		seterr(err, errlen, "%s: %s", path, strerror(errno));
		return -1;
	}
	if (fstat(fd, &st) < 0) {
		seterr(err, errlen, "%s: %s", path, strerror(errno));
		close(fd);
		return -1;
	}
	if (S_ISDIR(st.st_mode)) {
		seterr(err, errlen, "%s: is a directory", path);
		close(fd);
		return -1;
	}
	for (;;) {
		char chunk[8192];
		ssize_t n = read(fd, chunk, sizeof(chunk));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			seterr(err, errlen, "%s: %s", path, strerror(errno));
			close(fd);
			return -1;
		}
		if (n == 0)
			break;
		if (buf_append(out, chunk, (size_t)n) < 0) {
			seterr(err, errlen, "%s: larger than %d bytes, not a config file", path,
			       CONFIG_MAX_FILE_SIZE);
			close(fd);
			return -1;
		}
	}
	close(fd);
	return 0;
}

int config_load(struct config *cfg, const char *path, char *const *envp, char *err,
		size_t errlen)
{
	struct buf text;
	int rc;
	if (path == NULL)
		path = CONFIG_DEFAULT_PATH;
	config_init(cfg);
	cfg->path = xstrdup(path);
	buf_init(&text, CONFIG_MAX_FILE_SIZE);
	rc = read_file(path, &text, err, errlen);
	if (rc == 0)
		rc = config_parse(cfg, text.data ? text.data : "", text.len, path, err, errlen);
	buf_free(&text);
	if (rc == 0)
		rc = config_apply_env(cfg, envp, err, errlen);
	if (rc == 0)
		rc = config_validate(cfg, err, errlen);
	return rc;
}

/* --- print -------------------------------------------------------------- */

/* "# from FILE:LINE", "# from environment VAR" or "# default". */
static void print_line(FILE *out, const char *text, const char *where)
{
	if (where == NULL)
		fprintf(out, "%s\n", text);
	else if (strcmp(where, "default") == 0)
		fprintf(out, "%-39s # default\n", text);
	else
		fprintf(out, "%-39s # from %s\n", text, where);
}

static void print_routes(const struct config *cfg, FILE *out, bool origins)
{
	struct buf line;
	char where[512];
	buf_init(&line, 0);
	for (size_t i = 0; i < cfg->nroutes; i++) {
		const struct route *r = &cfg->routes[i];
		buf_reset(&line);
		buf_printf(&line, "%s = ", r->domain);
		format_hostport(&line, &r->next_hop);
		buf_printf(&line, " tls=%s", tls_level_name(r->tls));
		if (r->verify_name != NULL)
			buf_printf(&line, " verify_name=%s", r->verify_name);
		print_line(out, line.data,
			   origins ? route_where(cfg, r, where, sizeof(where)) : NULL);
	}
	buf_free(&line);
}

/* One section's "key = value" lines, with "# from FILE:LINE" when origins. */
static void print_section(const struct config *cfg, int s, FILE *out, bool origins)
{
	if (s == SEC_ROUTES) {
		print_routes(cfg, out, origins);
		return;
	}
	struct buf line;
	buf_init(&line, 0);
	for (size_t i = 0; i < NKEYS; i++) {
		const struct key_def *k = &keys[i];
		if ((int)k->section != s)
			continue;
		buf_reset(&line);
		buf_printf(&line, "%s = ", k->name);
		format_value(cfg, k, &line);
		print_line(out, line.data,
			   origins ? config_origin(cfg, section_names[s], k->name) : NULL);
	}
	buf_free(&line);
}

void config_print(const struct config *cfg, FILE *out)
{
	fprintf(out, "# strictrelay effective configuration%s%s\n", cfg->path ? ": " : "",
		cfg->path ? cfg->path : "");
	for (int s = 0; s < SEC_COUNT; s++) {
		fprintf(out, "%s[%s]\n", s > 0 ? "\n" : "", section_names[s]);
		print_section(cfg, s, out, true);
	}
}

static char *routes_text(const struct config *cfg)
{
	char *t = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&t, &len);
	if (f == NULL)
		panic("out of memory");
	print_routes(cfg, f, false);
	fclose(f);
	return t;
}

size_t config_changed_keys(const struct config *a, const struct config *b,
			   char names[][CONFIG_KEY_NAME_MAX], size_t max)
{
	size_t n = 0;
	struct buf va, vb;
	buf_init(&va, 0);
	buf_init(&vb, 0);
	for (size_t i = 0; i < NKEYS; i++) {
		const struct key_def *k = &keys[i];
		buf_reset(&va);
		buf_reset(&vb);
		format_value(a, k, &va);
		format_value(b, k, &vb);
		if (va.len != vb.len || (va.len > 0 && memcmp(va.data, vb.data, va.len) != 0)) {
			if (n < max)
				snprintf(names[n], CONFIG_KEY_NAME_MAX, "%s.%s",
					 section_names[k->section], k->name);
			n++;
		}
	}
	buf_free(&va);
	buf_free(&vb);
	char *ra = routes_text(a), *rb = routes_text(b);
	if (strcmp(ra, rb) != 0) {
		if (n < max)
			snprintf(names[n], CONFIG_KEY_NAME_MAX, "routes");
		n++;
	}
	free(ra);
	free(rb);
	return n < max ? n : max;
}
