/*
 * config.h - the strictrelay configuration: parsing, environment overrides,
 * validation and printing. The contract is ../shared/DESIGN.md section 4.
 *
 * Format: INI-style. "[section]" lines, "key = value" lines, '#' starts a
 * comment (whole line, or after blanks at the end of a value), blank lines
 * ignored. Lists are comma separated. Durations: "30s", "5m", "2h", "5d" or
 * plain seconds; a list of them for retry_schedule. Sizes: "35M", "512K",
 * "1G" (powers of 1024) or plain bytes. Booleans: yes/no, true/false, on/off,
 * 1/0.
 *
 * Every key may be overridden from the environment as
 * STRICTRELAY_<SECTION>_<KEY> (upper case), e.g. STRICTRELAY_SERVER_HOSTNAME;
 * the environment wins over the file. A variable whose prefix names a known
 * section but no known key is an error (a typo must not be silently ignored);
 * other STRICTRELAY_* variables are left alone. [routes] entries can not be
 * named in the environment except the default route: STRICTRELAY_ROUTES_DEFAULT
 * sets the "*" route.
 *
 * Errors are reported as "FILE:LINE: reason" (or "environment VAR: reason")
 * and the caller exits 1: unknown sections and keys, bad values, duplicate
 * keys, unparsable networks or addresses.
 *
 * Routes ([routes] section):  DOMAIN = NEXTHOP [tls=LEVEL] [verify_name=NAME]
 *   DOMAIN   a domain (matches it and nothing else), ".example.com" (every
 *            subdomain of example.com, not example.com itself) or "*" (default)
 *   NEXTHOP  "[host]" or "[host]:port": that host, no MX lookup;
 *            "host" or "host:port": the MX hosts of host.
 *   LEVEL    none | may | encrypt | verify (default: may, or verify when
 *            [delivery] require_tls = yes; a route can not go below that)
 *   verify_name  the name the certificate must carry (default: the host);
 *            only with tls=verify.
 *
 * Ownership: struct config owns every string and list in it; config_free()
 * releases them. Nothing here does I/O except config_load() (reads the file)
 * and config_check_files() (opens the files the config names).
 */
#ifndef STRICTRELAY_CONFIG_H
#define STRICTRELAY_CONFIG_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "log.h"
#include "netaddr.h"
#include "util.h"

#define CONFIG_DEFAULT_PATH "/etc/strictrelay/strictrelay.conf"

enum tls_level {
	TLS_LEVEL_NONE,     /* never STARTTLS */
	TLS_LEVEL_MAY,      /* STARTTLS when offered, any certificate */
	TLS_LEVEL_ENCRYPT,  /* STARTTLS required, any certificate */
	TLS_LEVEL_VERIFY,   /* STARTTLS required, certificate verified against a name */
};
const char *tls_level_name(enum tls_level l);

enum bare_newline_policy {
	BARE_NEWLINE_REJECT,    /* bare CR or LF in DATA: message refused (550 5.5.2) */
	BARE_NEWLINE_NORMALIZE, /* bare CR or LF turned into CRLF, never end of data */
};

struct route {
	char *domain;        /* lower case: "example.com", ".example.com" or "*" */
	struct hostport next_hop; /* bracketed = no MX lookup; port 0 = [delivery] smtp_port */
	enum tls_level tls;
	bool tls_explicit;   /* tls= was written; else tls follows [delivery] require_tls */
	char *verify_name;   /* NULL = next_hop.host */
	int line;            /* where it was defined (0 = environment) */
};

struct config_server {
	char *hostname;                 /* default: gethostname() */
	struct hostport *listen;        /* default: 0.0.0.0:25, [::]:25 */
	size_t nlisten;
	char *tls_cert;                 /* "" = no STARTTLS (and so no REQUIRETLS) */
	char *tls_key;
	struct netlist relay_networks;  /* default: 127.0.0.0/8, ::1/128 */
	uint64_t max_message_size;      /* default 35M */
	unsigned max_connections;       /* default 1000 */
	unsigned max_recipients;        /* per message; default 1000 */
	int64_t command_timeout;        /* seconds; default 5m (RFC 5321 4.5.3.2.7) */
	int64_t data_timeout;           /* seconds without a byte inside DATA; default 10m */
	struct hostport *submission_listen; /* AUTH required, after STARTTLS; default none */
	size_t nsubmission_listen;
	struct hostport *submission_tls_listen; /* implicit TLS (port 465); default none */
	size_t nsubmission_tls_listen;
	struct strlist accept_domains;  /* lower case */
	struct strlist sender_domains;  /* unauthenticated relay senders; empty = any */
	char *postmaster;               /* where RCPT TO:<postmaster> goes; "" = refused */
	unsigned max_connections_per_client; /* per client IP; default 50 */
	unsigned max_messages_per_minute;    /* per client IP; 0 = no limit */
	unsigned limit_prefix_v4;       /* the two limits above count per /N; default 32 */
	unsigned limit_prefix_v6;       /* default 64 */
	char *user;                     /* "" = do not drop privileges */
	bool run_as_root;               /* allow serving as root after start; default no */
	enum bare_newline_policy bare_newline; /* default reject */
};

struct config_queue {
	char *state_dir;                /* default /var/lib/strictrelay */
	int64_t *retry_schedule;        /* seconds; default 1m,5m,15m,30m,1h,2h,4h */
	size_t nretry_schedule;
	int64_t max_lifetime;           /* seconds; default 5d */
	uint64_t min_free_space;        /* bytes kept free in state_dir's file system; default 100M */
};

struct config_delivery {
	struct hostport *dns_servers;   /* empty = /etc/resolv.conf; default port 53 */
	size_t ndns_servers;
	char *ca_file;                  /* "" = system trust store */
	uint16_t smtp_port;             /* default 25 */
	int64_t connect_timeout;        /* seconds; default 30s */
	int64_t dns_timeout;            /* seconds per DNS try (2 tries); default 5s */
	unsigned max_per_domain;        /* default 10 */
	unsigned max_connections;       /* outbound sessions in total; default 100 */
	int64_t connection_cache_time;  /* seconds an idle session waits for the next job; default 2s */
	bool require_tls;               /* default no */
};

struct config_auth {
	char *users_file;               /* user:hash lines; "" = no AUTH */
	unsigned max_failures;          /* per client IP within failure_window; default 5 */
	int64_t failure_window;         /* seconds; default 10m */
};

struct config_requiretls {
	bool preflight;                 /* refuse 550 5.7.30 at RCPT when provable; default yes */
	int64_t preflight_timeout;      /* seconds to find out at RCPT; default 5s */
	struct strlist require_for;     /* rules tagging mail REQUIRETLS (policy/requiretls.h) */
};

struct config_mta_sts {
	bool enabled;                   /* default yes */
	uint16_t https_port;            /* default 443 */
	int64_t fetch_timeout;          /* seconds; default 30s */
};

struct config_tlsrpt {
	bool enabled;                   /* default yes */
	char *organization_name;
	char *contact_info;
	char *report_from;
	char *dkim_domain;
	char *dkim_selector;
	char *dkim_key;
	int64_t retention;              /* seconds TLS results and history are kept; default 30d */
	int64_t max_delay;              /* reports go out up to this long after midnight; default 4h */
};

struct config_metrics {
	struct hostport listen;         /* host NULL = disabled */
};

struct config_log {
	enum log_format format;         /* text | json */
	bool syslog;                    /* also send log lines to syslog (mail facility) */
};

/* Where a key got its value: "FILE:LINE", "environment VAR" or "default". */
struct config_origin {
	char *section;
	char *key;
	char *where;
};

struct config {
	char *path;                     /* the file read */
	struct config_server server;
	struct config_queue queue;
	struct config_delivery delivery;
	struct config_auth auth;
	struct route *routes;
	size_t nroutes;
	struct config_requiretls requiretls;
	struct config_mta_sts mta_sts;
	struct config_tlsrpt tlsrpt;
	struct config_metrics metrics;
	struct config_log log;
	struct config_origin *origins;
	size_t norigins;
};

/* Fills cfg with the defaults above. */
void config_init(struct config *cfg);
void config_free(struct config *cfg);

/*
 * Parses text (len bytes, not necessarily NUL-terminated) on top of the
 * values already in cfg. filename is used in error messages only.
 * 0 on success; -1 with "FILE:LINE: reason" in err.
 */
int config_parse(struct config *cfg, const char *text, size_t len, const char *filename,
		 char *err, size_t errlen);

/* Applies STRICTRELAY_* variables from envp (NULL-terminated). 0 / -1 + err. */
int config_apply_env(struct config *cfg, char *const *envp, char *err, size_t errlen);

/*
 * Checks rules that span keys (tls_cert without tls_key, verify_name without
 * tls=verify, duplicate routes, ...). 0 / -1 + err naming where the key was set.
 */
int config_validate(const struct config *cfg, char *err, size_t errlen);

/* config_init + read path + config_parse + config_apply_env + config_validate. */
int config_load(struct config *cfg, const char *path, char *const *envp, char *err,
		size_t errlen);

/*
 * I/O checks (config_check.c): tls_cert/tls_key readable, parse as PEM and
 * belong together; ca_file, dkim_key, users_file readable when set. The
 * message names the key's origin ("FILE:LINE: tls_cert /x.pem: No such file").
 */
int config_check_files(const struct config *cfg, char *err, size_t errlen);

/* Prints the effective configuration in the file format, with origins as comments. */
void config_print(const struct config *cfg, FILE *out);

#define CONFIG_KEY_NAME_MAX 64

/* The keys ("server.listen", ...; "routes" for the whole [routes] section)
 * whose effective values differ between a and b, into names (at most max);
 * returns how many were stored. */
size_t config_changed_keys(const struct config *a, const struct config *b,
			   char names[][CONFIG_KEY_NAME_MAX], size_t max);

/* "FILE:LINE", "environment VAR" or "default" for section.key. */
const char *config_origin(const struct config *cfg, const char *section, const char *key);

/* The route for a recipient domain (exact, then longest ".suffix", then "*"), or NULL. */
const struct route *config_find_route(const struct config *cfg, const char *domain);

/* Parsers shared with other modules; 0 / -1. */
int config_parse_duration(const char *s, int64_t *out);
int config_parse_size(const char *s, uint64_t *out);
int config_parse_bool(const char *s, bool *out);

#endif
