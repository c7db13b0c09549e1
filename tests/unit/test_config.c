/*
 * Unit tests for mta/config.c (parsing, env overrides, validation, printing,
 * routes) and mta/config_check.c (file checks against certificates made here
 * with OpenSSL in a temporary directory).
 *
 * config_check.c belongs to the I/O library, which this test does not link
 * (tests/unit/meson.build links the core only), so it is compiled in here.
 */
#include "mta/config.h"
#include "test.h"

#include "mta/config_check.c"

#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#define ERRLEN 1024

/* --- helpers ------------------------------------------------------------ */

/* config_init + config_parse of text as "t.conf". */
static int parse_text(struct config *c, const char *text, char *err)
{
	config_init(c);
	err[0] = '\0';
	return config_parse(c, text, strlen(text), "t.conf", err, ERRLEN);
}

static void expect_parse_error(const char *text, const char *msg)
{
	struct config c;
	char err[ERRLEN];
	CHECK_INT(parse_text(&c, text, err), -1);
	CHECK_STR(err, msg);
	config_free(&c);
}

/* Parses text (must succeed), applies env (may be NULL), then validates. */
static int validate_text(const char *text, char *const *env, char *err)
{
	struct config c;
	int rc = parse_text(&c, text, err);
	if (rc == 0)
		rc = config_apply_env(&c, env, err, ERRLEN);
	if (rc == 0)
		rc = config_validate(&c, err, ERRLEN);
	config_free(&c);
	return rc;
}

static void expect_validate_error(const char *text, char *const *env, const char *msg)
{
	char err[ERRLEN];
	CHECK_INT(validate_text(text, env, err), -1);
	CHECK_STR(err, msg);
}

static void expect_env_error(char *const *env, const char *msg)
{
	struct config c;
	char err[ERRLEN] = "";
	config_init(&c);
	CHECK_INT(config_apply_env(&c, env, err, ERRLEN), -1);
	CHECK_STR(err, msg);
	config_free(&c);
}

static char *print_to_string(const struct config *c)
{
	char *text = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);
	if (f == NULL)
		return xstrdup("");
	config_print(c, f);
	fclose(f);
	return text;
}

/*
 * The printed config without the origin comments (the last " # " of each
 * line and what follows) and without comment lines: the effective values.
 */
static char *strip_origins(const char *printed)
{
	struct buf out;
	buf_init(&out, 0);
	const char *p = printed;
	while (*p != '\0') {
		const char *nl = strchr(p, '\n');
		size_t n = nl ? (size_t)(nl - p) : strlen(p);
		char *line = xstrndup(p, n);
		if (line[0] != '#') {
			char *last = NULL;
			for (char *q = strstr(line, " # "); q != NULL; q = strstr(q + 1, " # "))
				last = q;
			if (last != NULL)
				*last = '\0';
			buf_printf(&out, "%s\n", str_trim(line));
		}
		free(line);
		p += n + (nl ? 1 : 0);
	}
	return buf_steal(&out, NULL);
}

/* --- value parsers ------------------------------------------------------ */

static void test_parse_duration(void)
{
	static const struct {
		const char *in;
		int64_t out;
	} ok[] = {
		{ "0", 0 },        { "30", 30 },        { "30s", 30 },     { "5m", 300 },
		{ "2h", 7200 },    { "5d", 432000 },    { "007s", 7 },     { "90s", 90 },
		{ "9223372036854775807", INT64_MAX }, { "106751991167300d", 106751991167300LL * 86400 },
	};
	static const char *const bad[] = {
		"", "s", "-5s", "+5s", "5w", "1w", "5 m", " 5m", "5m ", "5M", "1h30m", "1.5h",
		"5ms", "m5", "9223372036854775808", "106751991167301d", "99999999999999999999",
		"0x10",
	};
	for (size_t i = 0; i < SR_ARRAY_LEN(ok); i++) {
		int64_t v = -1;
		CHECK_INT(config_parse_duration(ok[i].in, &v), 0);
		CHECK_INT(v, ok[i].out);
	}
	for (size_t i = 0; i < SR_ARRAY_LEN(bad); i++) {
		int64_t v = 42;
		if (config_parse_duration(bad[i], &v) != -1)
			fprintf(stderr, "duration \"%s\" accepted\n", bad[i]);
		CHECK_INT(config_parse_duration(bad[i], &v), -1);
		CHECK_INT(v, 42);
	}
}

static void test_parse_size(void)
{
	static const struct {
		const char *in;
		uint64_t out;
	} ok[] = {
		{ "0", 0 },
		{ "1", 1 },
		{ "512K", 512 * 1024 },
		{ "512k", 512 * 1024 },
		{ "35M", 35 * 1024 * 1024 },
		{ "35m", 35 * 1024 * 1024 },
		{ "1G", 1024 * 1024 * 1024 },
		{ "2g", 2ULL * 1024 * 1024 * 1024 },
		{ "18446744073709551615", UINT64_MAX },
		{ "17179869183G", 17179869183ULL << 30 },
	};
	static const char *const bad[] = {
		"", "K", "-1", "+1", "1T", "1KB", "1 K", "1.5M", "18446744073709551616",
		"17179869184G", "M35",
	};
	for (size_t i = 0; i < SR_ARRAY_LEN(ok); i++) {
		uint64_t v = 7;
		CHECK_INT(config_parse_size(ok[i].in, &v), 0);
		CHECK(v == ok[i].out);
	}
	for (size_t i = 0; i < SR_ARRAY_LEN(bad); i++) {
		uint64_t v = 7;
		CHECK_INT(config_parse_size(bad[i], &v), -1);
		CHECK(v == 7);
	}
}

static void test_parse_bool(void)
{
	static const char *const yes[] = { "yes", "YES", "Yes", "true", "TRUE", "on", "On", "1" };
	static const char *const no[] = { "no", "NO", "false", "False", "off", "OFF", "0" };
	static const char *const bad[] = { "", "y", "n", "2", "yess", "enable", " yes", "nope" };
	for (size_t i = 0; i < SR_ARRAY_LEN(yes); i++) {
		bool b = false;
		CHECK_INT(config_parse_bool(yes[i], &b), 0);
		CHECK(b);
	}
	for (size_t i = 0; i < SR_ARRAY_LEN(no); i++) {
		bool b = true;
		CHECK_INT(config_parse_bool(no[i], &b), 0);
		CHECK(!b);
	}
	for (size_t i = 0; i < SR_ARRAY_LEN(bad); i++) {
		bool b = true;
		CHECK_INT(config_parse_bool(bad[i], &b), -1);
		CHECK(b);
	}
}

static void test_tls_level_name(void)
{
	CHECK_STR(tls_level_name(TLS_LEVEL_NONE), "none");
	CHECK_STR(tls_level_name(TLS_LEVEL_MAY), "may");
	CHECK_STR(tls_level_name(TLS_LEVEL_ENCRYPT), "encrypt");
	CHECK_STR(tls_level_name(TLS_LEVEL_VERIFY), "verify");
}

/* --- defaults ----------------------------------------------------------- */

static void test_defaults(void)
{
	struct config c;
	config_init(&c);
	REQUIRE(c.server.hostname != NULL);
	CHECK(c.server.hostname[0] != '\0');
	REQUIRE(c.server.nlisten == 2);
	CHECK_STR(c.server.listen[0].host, "0.0.0.0");
	CHECK_INT(c.server.listen[0].port, 25);
	CHECK_STR(c.server.listen[1].host, "::");
	CHECK_INT(c.server.listen[1].port, 25);
	CHECK_STR(c.server.tls_cert, "");
	CHECK_STR(c.server.tls_key, "");
	CHECK_INT(c.server.relay_networks.n, 2);
	CHECK(netlist_match_str(&c.server.relay_networks, "127.1.2.3"));
	CHECK(netlist_match_str(&c.server.relay_networks, "::1"));
	CHECK(!netlist_match_str(&c.server.relay_networks, "10.0.0.1"));
	CHECK(c.server.max_message_size == 35u * 1024 * 1024);
	CHECK_INT(c.server.max_connections, 1000);
	CHECK_INT(c.server.max_recipients, 1000);
	CHECK_INT(c.server.command_timeout, 300);
	CHECK_INT(c.server.data_timeout, 600);
	CHECK_INT(c.server.nsubmission_listen, 0);
	CHECK(c.server.submission_listen == NULL);
	CHECK_INT(c.server.accept_domains.n, 0);
	CHECK_STR(c.server.user, "");
	CHECK_INT(c.server.bare_newline, BARE_NEWLINE_REJECT);

	CHECK_STR(c.queue.state_dir, "/var/lib/strictrelay");
	REQUIRE(c.queue.nretry_schedule == 7);
	static const int64_t sched[] = { 60, 300, 900, 1800, 3600, 7200, 14400 };
	for (size_t i = 0; i < 7; i++)
		CHECK_INT(c.queue.retry_schedule[i], sched[i]);
	CHECK_INT(c.queue.max_lifetime, 5 * 86400);

	CHECK_INT(c.delivery.ndns_servers, 0);
	CHECK_STR(c.delivery.ca_file, "");
	CHECK_INT(c.delivery.smtp_port, 25);
	CHECK_INT(c.delivery.connect_timeout, 30);
	CHECK_INT(c.delivery.max_per_domain, 10);
	CHECK_INT(c.delivery.max_connections, 100);
	CHECK(!c.delivery.require_tls);

	CHECK_STR(c.auth.users_file, "");
	CHECK_INT(c.nroutes, 0);
	CHECK(c.requiretls.preflight);
	CHECK_INT(c.requiretls.require_for.n, 0);
	CHECK(c.mta_sts.enabled);
	CHECK_INT(c.mta_sts.https_port, 443);
	CHECK_INT(c.mta_sts.fetch_timeout, 30);
	CHECK(c.tlsrpt.enabled);
	CHECK_STR(c.tlsrpt.organization_name, "");
	CHECK_STR(c.tlsrpt.contact_info, "");
	CHECK_STR(c.tlsrpt.report_from, "");
	CHECK_STR(c.tlsrpt.dkim_domain, "");
	CHECK_STR(c.tlsrpt.dkim_selector, "");
	CHECK_STR(c.tlsrpt.dkim_key, "");
	CHECK(c.metrics.listen.host == NULL);
	CHECK_INT(c.log.format, LOG_FORMAT_TEXT);

	CHECK_STR(config_origin(&c, "server", "hostname"), "default");
	CHECK_STR(config_origin(&c, "queue", "retry_schedule"), "default");
	CHECK_STR(config_origin(&c, "nonsense", "x"), "default");
	CHECK(config_find_route(&c, "example.com") == NULL);
	config_free(&c);
	/* config_free leaves a zeroed struct; freeing twice is harmless. */
	config_free(&c);
}

static void test_defaults_validate(void)
{
	struct config c;
	char err[ERRLEN] = "";
	config_init(&c);
	/* The box's own host name may not be a valid domain name. */
	free(c.server.hostname);
	c.server.hostname = xstrdup("relay.example.internal");
	CHECK_INT(config_validate(&c, err, sizeof(err)), 0);
	CHECK_STR(err, "");
	config_free(&c);
}

/* --- every type --------------------------------------------------------- */

static const char full_config[] =
	"[server]\n"
	"hostname = relay.example.internal\n"
	"listen = 127.0.0.1:2525, [::1]:2526, 10.0.0.1\n"
	"tls_cert = /etc/strictrelay/tls/cert.pem\n"
	"tls_key  = /etc/strictrelay/tls/key.pem\n"
	"relay_networks = 10.0.0.0/8 192.168.1.0/24, 2001:db8::/32, 172.16.0.1\n"
	"max_message_size = 512K\n"
	"max_connections = 50\n"
	"max_recipients = 100000\n"
	"command_timeout = 90\n"
	"data_timeout = 2h\n"
	"submission_listen = 0.0.0.0:587, [::]\n"
	"accept_domains = Example.COM, mail.example.org\n"
	"user = strictrelay\n"
	"bare_newline = normalize\n"
	"[queue]\n"
	"state_dir = ./var\n"
	"retry_schedule = 30s, 2m 1h, 1d\n"
	"max_lifetime = 3d\n"
	"[delivery]\n"
	"dns_servers = 127.0.0.1:5353, [::1], 192.0.2.53\n"
	"ca_file = /tmp/ca.pem\n"
	"smtp_port = 2525\n"
	"connect_timeout = 10s\n"
	"max_per_domain = 3\n"
	"max_connections = 7\n"
	"require_tls = yes\n"
	"[auth]\n"
	"users_file = /etc/strictrelay/users\n"
	"[routes]\n"
	"example.internal = [10.0.0.5]:25 tls=verify verify_name=mx.example.internal\n"
	"* = [smarthost.isp.test]:587 tls=verify\n"
	"[requiretls]\n"
	"preflight = off\n"
	"require_for = 10.1.0.0/16, alice@example.com, example.net\n"
	"[mta_sts]\n"
	"enabled = false\n"
	"https_port = 8443\n"
	"fetch_timeout = 1m\n"
	"[tlsrpt]\n"
	"enabled = 0\n"
	"organization_name = Example Org\n"
	"contact_info = mailto:postmaster@example.org\n"
	"report_from = tlsrpt-noreply@example.org\n"
	"dkim_domain = example.org\n"
	"dkim_selector = tlsrpt2026\n"
	"dkim_key = /etc/strictrelay/dkim.pem\n"
	"[metrics]\n"
	"listen = 127.0.0.1\n"
	"[log]\n"
	"format = json\n";

static void test_every_type(void)
{
	struct config c;
	char err[ERRLEN];
	REQUIRE(parse_text(&c, full_config, err) == 0);
	CHECK_STR(err, "");
	CHECK_STR(c.server.hostname, "relay.example.internal");
	REQUIRE(c.server.nlisten == 3);
	CHECK_STR(c.server.listen[0].host, "127.0.0.1");
	CHECK_INT(c.server.listen[0].port, 2525);
	CHECK_STR(c.server.listen[1].host, "::1");
	CHECK_INT(c.server.listen[1].port, 2526);
	CHECK_STR(c.server.listen[2].host, "10.0.0.1");
	CHECK_INT(c.server.listen[2].port, 25);
	CHECK_STR(c.server.tls_cert, "/etc/strictrelay/tls/cert.pem");
	CHECK_STR(c.server.tls_key, "/etc/strictrelay/tls/key.pem");
	CHECK_INT(c.server.relay_networks.n, 4);
	CHECK(netlist_match_str(&c.server.relay_networks, "10.9.8.7"));
	CHECK(netlist_match_str(&c.server.relay_networks, "192.168.1.200"));
	CHECK(!netlist_match_str(&c.server.relay_networks, "192.168.2.1"));
	CHECK(netlist_match_str(&c.server.relay_networks, "2001:db8:1::1"));
	CHECK(netlist_match_str(&c.server.relay_networks, "172.16.0.1"));
	CHECK(!netlist_match_str(&c.server.relay_networks, "172.16.0.2"));
	/* the default networks were replaced, not appended to */
	CHECK(!netlist_match_str(&c.server.relay_networks, "127.0.0.1"));
	CHECK(c.server.max_message_size == 512 * 1024);
	CHECK_INT(c.server.max_connections, 50);
	CHECK_INT(c.server.max_recipients, 100000);
	CHECK_INT(c.server.command_timeout, 90);
	CHECK_INT(c.server.data_timeout, 7200);
	REQUIRE(c.server.nsubmission_listen == 2);
	CHECK_STR(c.server.submission_listen[0].host, "0.0.0.0");
	CHECK_INT(c.server.submission_listen[0].port, 587);
	CHECK_STR(c.server.submission_listen[1].host, "::");
	CHECK_INT(c.server.submission_listen[1].port, 587);
	REQUIRE(c.server.accept_domains.n == 2);
	CHECK_STR(c.server.accept_domains.v[0], "example.com");
	CHECK_STR(c.server.accept_domains.v[1], "mail.example.org");
	CHECK_STR(c.server.user, "strictrelay");
	CHECK_INT(c.server.bare_newline, BARE_NEWLINE_NORMALIZE);

	CHECK_STR(c.queue.state_dir, "./var");
	REQUIRE(c.queue.nretry_schedule == 4);
	CHECK_INT(c.queue.retry_schedule[0], 30);
	CHECK_INT(c.queue.retry_schedule[1], 120);
	CHECK_INT(c.queue.retry_schedule[2], 3600);
	CHECK_INT(c.queue.retry_schedule[3], 86400);
	CHECK_INT(c.queue.max_lifetime, 3 * 86400);

	REQUIRE(c.delivery.ndns_servers == 3);
	CHECK_STR(c.delivery.dns_servers[0].host, "127.0.0.1");
	CHECK_INT(c.delivery.dns_servers[0].port, 5353);
	CHECK_STR(c.delivery.dns_servers[1].host, "::1");
	CHECK_INT(c.delivery.dns_servers[1].port, 53);
	CHECK_INT(c.delivery.dns_servers[2].port, 53);
	CHECK_STR(c.delivery.ca_file, "/tmp/ca.pem");
	CHECK_INT(c.delivery.smtp_port, 2525);
	CHECK_INT(c.delivery.connect_timeout, 10);
	CHECK_INT(c.delivery.max_per_domain, 3);
	CHECK_INT(c.delivery.max_connections, 7);
	CHECK(c.delivery.require_tls);
	CHECK_STR(c.auth.users_file, "/etc/strictrelay/users");
	CHECK_INT(c.nroutes, 2);
	CHECK(!c.requiretls.preflight);
	REQUIRE(c.requiretls.require_for.n == 3);
	CHECK_STR(c.requiretls.require_for.v[1], "alice@example.com");
	CHECK(!c.mta_sts.enabled);
	CHECK_INT(c.mta_sts.https_port, 8443);
	CHECK_INT(c.mta_sts.fetch_timeout, 60);
	CHECK(!c.tlsrpt.enabled);
	CHECK_STR(c.tlsrpt.organization_name, "Example Org");
	CHECK_STR(c.tlsrpt.contact_info, "mailto:postmaster@example.org");
	CHECK_STR(c.tlsrpt.report_from, "tlsrpt-noreply@example.org");
	CHECK_STR(c.tlsrpt.dkim_domain, "example.org");
	CHECK_STR(c.tlsrpt.dkim_selector, "tlsrpt2026");
	CHECK_STR(c.tlsrpt.dkim_key, "/etc/strictrelay/dkim.pem");
	CHECK_STR(c.metrics.listen.host, "127.0.0.1");
	CHECK_INT(c.metrics.listen.port, 9325);
	CHECK_INT(c.log.format, LOG_FORMAT_JSON);

	CHECK_STR(config_origin(&c, "server", "hostname"), "t.conf:2");
	CHECK_STR(config_origin(&c, "server", "bare_newline"), "t.conf:15");
	CHECK_STR(config_origin(&c, "delivery", "max_connections"), "t.conf:26");
	CHECK_STR(config_origin(&c, "log", "format"), "t.conf:51");
	CHECK_STR(config_origin(&c, "routes", "*"), "t.conf:32");
	CHECK_STR(c.path, "t.conf");
	CHECK_INT(config_validate(&c, err, sizeof(err)), 0);
	CHECK_STR(err, "");
	config_free(&c);
}

static void test_ranges(void)
{
	struct config c;
	char err[ERRLEN];
	REQUIRE(parse_text(&c,
			   "[server]\nmax_connections = 1\nmax_recipients=1\n"
			   "max_message_size = 1024G\ncommand_timeout = 365d\n"
			   "[delivery]\nsmtp_port = 65535\nmax_per_domain = 10000\n"
			   "max_connections = 100000\n[mta_sts]\nhttps_port = 1\n",
			   err) == 0);
	CHECK_INT(c.server.max_connections, 1);
	CHECK(c.server.max_message_size == (uint64_t)1 << 40);
	CHECK_INT(c.server.command_timeout, 365 * 86400);
	CHECK_INT(c.delivery.smtp_port, 65535);
	CHECK_INT(c.mta_sts.https_port, 1);
	config_free(&c);

	expect_parse_error("[server]\nmax_connections = 0\n",
			   "t.conf:2: max_connections: \"0\" is out of range (1..1000000)");
	expect_parse_error("[server]\nmax_connections = 1000001\n",
			   "t.conf:2: max_connections: \"1000001\" is out of range (1..1000000)");
	expect_parse_error("[server]\nmax_recipients = 100001\n",
			   "t.conf:2: max_recipients: \"100001\" is out of range (1..100000)");
	expect_parse_error("[server]\nmax_connections = 99999999999999999999999\n",
			   "t.conf:2: max_connections: \"99999999999999999999999\" is not a number");
	expect_parse_error("[server]\nmax_connections = -1\n",
			   "t.conf:2: max_connections: \"-1\" is not a number");
	expect_parse_error("[server]\nmax_connections = 10k\n",
			   "t.conf:2: max_connections: \"10k\" is not a number");
	expect_parse_error("[delivery]\nsmtp_port = 0\n",
			   "t.conf:2: smtp_port: \"0\" is out of range (1..65535)");
	expect_parse_error("[delivery]\nsmtp_port = 65536\n",
			   "t.conf:2: smtp_port: \"65536\" is out of range (1..65535)");
	expect_parse_error("[delivery]\nmax_per_domain = 10001\n",
			   "t.conf:2: max_per_domain: \"10001\" is out of range (1..10000)");
	expect_parse_error("[delivery]\nmax_connections = 0\n",
			   "t.conf:2: max_connections: \"0\" is out of range (1..100000)");
	expect_parse_error("[server]\nmax_message_size = 0\n",
			   "t.conf:2: max_message_size: \"0\" is out of range (1..1024G)");
	expect_parse_error("[server]\nmax_message_size = 1025G\n",
			   "t.conf:2: max_message_size: \"1025G\" is out of range (1..1024G)");
	expect_parse_error("[server]\nmax_message_size = 35MB\n",
			   "t.conf:2: max_message_size: \"35MB\" is not a size (e.g. 35M, 512K, 1G "
			   "or bytes)");
	expect_parse_error("[server]\ncommand_timeout = 0\n",
			   "t.conf:2: command_timeout: \"0\" is out of range (1s..365d)");
	expect_parse_error("[queue]\nmax_lifetime = 366d\n",
			   "t.conf:2: max_lifetime: \"366d\" is out of range (1s..365d)");
	expect_parse_error("[queue]\nmax_lifetime = 1w\n",
			   "t.conf:2: max_lifetime: \"1w\" is not a duration (e.g. 30s, 5m, 2h, 5d "
			   "or seconds)");
	expect_parse_error("[queue]\nmax_lifetime = -5d\n",
			   "t.conf:2: max_lifetime: \"-5d\" is not a duration (e.g. 30s, 5m, 2h, 5d "
			   "or seconds)");
	expect_parse_error("[queue]\nretry_schedule = 1m, 5x, 1h\n",
			   "t.conf:2: retry_schedule: \"5x\" is not a duration (e.g. 30s, 5m, 2h, 5d "
			   "or seconds)");
	expect_parse_error("[queue]\nretry_schedule = 1m, 0s\n",
			   "t.conf:2: retry_schedule: \"0s\" is out of range (1s..365d)");
	expect_parse_error("[delivery]\nrequire_tls = maybe\n",
			   "t.conf:2: require_tls: \"maybe\" is not a boolean (yes/no, true/false, "
			   "on/off, 1/0)");
	expect_parse_error("[log]\nformat = xml\n",
			   "t.conf:2: format: \"xml\" is not one of: text, json");
	expect_parse_error("[server]\nbare_newline = accept\n",
			   "t.conf:2: bare_newline: \"accept\" is not one of: reject, normalize");
}

static void test_addresses(void)
{
	expect_parse_error("[server]\nrelay_networks = 127.0.0.0/8, 10.0.0.1/8\n",
			   "t.conf:2: relay_networks: bad network \"10.0.0.1/8\": address has bits "
			   "set beyond the /8 prefix");
	expect_parse_error("[server]\nrelay_networks = 10.0.0.0/33\n",
			   "t.conf:2: relay_networks: bad network \"10.0.0.0/33\": prefix length "
			   "must be 0..32");
	expect_parse_error("[server]\nrelay_networks = example.com\n",
			   "t.conf:2: relay_networks: bad network \"example.com\": \"example.com\" "
			   "is not an IP address");
	expect_parse_error("[server]\nlisten = localhost:25\n",
			   "t.conf:2: listen: bad address \"localhost:25\": \"localhost\" is not an "
			   "IP address");
	expect_parse_error("[server]\nlisten = ::1:25\n",
			   "t.conf:2: listen: bad address \"::1:25\": write IPv6 addresses in "
			   "brackets, e.g. [::1]:25");
	expect_parse_error("[server]\nlisten = 127.0.0.1:0\n",
			   "t.conf:2: listen: bad address \"127.0.0.1:0\": port must be 1..65535");
	expect_parse_error("[server]\nlisten = 127.0.0.1:\n",
			   "t.conf:2: listen: bad address \"127.0.0.1:\": port must be 1..65535");
	expect_parse_error("[server]\nsubmission_listen = [::1\n",
			   "t.conf:2: submission_listen: bad address \"[::1\": missing ']'");
	expect_parse_error("[delivery]\ndns_servers = ns.example.com\n",
			   "t.conf:2: dns_servers: bad address \"ns.example.com\": "
			   "\"ns.example.com\" is not an IP address");
	expect_parse_error("[metrics]\nlisten = 127.0.0.1:9325, 127.0.0.1:9326\n",
			   "t.conf:2: listen: \"127.0.0.1:9325, 127.0.0.1:9326\": one address only");
	expect_parse_error("[server]\naccept_domains = example.com, bad_domain.org\n",
			   "t.conf:2: accept_domains: \"bad_domain.org\" is not a domain name");
}

/* --- syntax: comments, quotes, blanks ----------------------------------- */

static void test_syntax(void)
{
	struct config c;
	char err[ERRLEN];
	const char *text =
		"\xef\xbb\xbf# a comment line\n"
		"\n"
		"   # indented comment\n"
		"  [ server ]   # section comment\n"
		"hostname=relay.example.org#not-a-comment\n"
		"\tuser\t=\tmail   # trailing comment\r\n"
		"[tlsrpt]\n"
		"organization_name = \"  Example # Org  \"   # quoted keeps '#' and blanks\n"
		"contact_info = \"mailto:a@b.example\"\n"
		"report_from = \"\"\n"
		"dkim_selector = sel#1\n"
		"[SERVER]\n"
		"Max_Connections = 5\n"
		"[mta_sts]\n"
		"enabled = no #\n";
	REQUIRE(parse_text(&c, text, err) == 0);
	CHECK_STR(err, "");
	CHECK_STR(c.server.hostname, "relay.example.org#not-a-comment");
	CHECK_STR(c.server.user, "mail");
	CHECK_STR(c.tlsrpt.organization_name, "  Example # Org  ");
	CHECK_STR(c.tlsrpt.contact_info, "mailto:a@b.example");
	CHECK_STR(c.tlsrpt.report_from, "");
	CHECK_STR(c.tlsrpt.dkim_selector, "sel#1");
	CHECK_INT(c.server.max_connections, 5);
	CHECK(!c.mta_sts.enabled);
	CHECK_STR(config_origin(&c, "server", "max_connections"), "t.conf:13");
	config_free(&c);

	/* No trailing newline, and an empty text. */
	REQUIRE(parse_text(&c, "[server]\nuser = x", err) == 0);
	CHECK_STR(c.server.user, "x");
	config_free(&c);
	REQUIRE(parse_text(&c, "", err) == 0);
	config_free(&c);

	/* Not NUL-terminated: len bounds the text. */
	config_init(&c);
	const char partial[] = "[server]\nuser = abcdef";
	CHECK_INT(config_parse(&c, partial, sizeof(partial) - 4, "t.conf", err, ERRLEN), 0);
	CHECK_STR(c.server.user, "abc");
	config_free(&c);

	expect_parse_error("[tlsrpt]\norganization_name = \"Example\n",
			   "t.conf:2: organization_name: unterminated quoted value");
	expect_parse_error("[tlsrpt]\norganization_name = \"Example\" Org\n",
			   "t.conf:2: organization_name: text after the closing quote");
	expect_parse_error("[server\n", "t.conf:1: expected \"[section]\"");
	expect_parse_error("[server] x\n", "t.conf:1: expected \"[section]\"");
	expect_parse_error("[server]\nuser = a\x01b\n",
			   "t.conf:2: user: value contains a control character");
	config_init(&c);
	const char nul[] = "[server]\nuser = a\0b\n";
	CHECK_INT(config_parse(&c, nul, sizeof(nul) - 1, "t.conf", err, ERRLEN), -1);
	CHECK_STR(err, "t.conf:2: NUL byte in line");
	config_free(&c);
}

static void test_empty_values(void)
{
	struct config c;
	char err[ERRLEN];
	REQUIRE(parse_text(&c,
			   "[server]\nsubmission_listen =\naccept_domains =\nuser =   # none\n"
			   "relay_networks =\nlisten =\ntls_cert = \"\"\n"
			   "[queue]\nretry_schedule =\n[metrics]\nlisten =\n"
			   "[requiretls]\nrequire_for=\n",
			   err) == 0);
	CHECK_INT(c.server.nsubmission_listen, 0);
	CHECK_INT(c.server.accept_domains.n, 0);
	CHECK_STR(c.server.user, "");
	CHECK_INT(c.server.relay_networks.n, 0);
	CHECK_INT(c.server.nlisten, 0);
	CHECK(c.server.listen == NULL);
	CHECK_INT(c.queue.nretry_schedule, 0);
	CHECK(c.metrics.listen.host == NULL);
	config_free(&c);

	expect_parse_error("[server]\nmax_connections =\n",
			   "t.conf:2: max_connections: empty value (expected a number)");
	expect_parse_error("[server]\nmax_message_size =   # none\n",
			   "t.conf:2: max_message_size: empty value (expected a size)");
	expect_parse_error("[server]\ncommand_timeout = \"\"\n",
			   "t.conf:2: command_timeout: empty value (expected a duration)");
	expect_parse_error("[delivery]\nrequire_tls =\n",
			   "t.conf:2: require_tls: empty value (expected yes or no)");
	expect_parse_error("[log]\nformat =\n", "t.conf:2: format: empty value (expected a name)");
}

static void test_structure_errors(void)
{
	expect_parse_error("[server]\nhostname = a.example\nfoo = 1\n",
			   "t.conf:3: unknown key \"foo\" in [server]");
	expect_parse_error("# x\n[bogus]\n", "t.conf:2: unknown section [bogus]");
	expect_parse_error("[server]\nmax_connections = abc\n",
			   "t.conf:2: max_connections: \"abc\" is not a number");
	expect_parse_error("[server]\n\nhostname = a.example\nuser = x\nhostname = b.example\n",
			   "t.conf:5: duplicate key \"hostname\" (first set at line 3)");
	/* The same key under a repeated section header is still a duplicate. */
	expect_parse_error("[server]\nuser = a\n[queue]\n[server]\nUSER = b\n",
			   "t.conf:5: duplicate key \"user\" (first set at line 2)");
	expect_parse_error("hostname = a.example\n", "t.conf:1: key outside any section");
	expect_parse_error("[server]\nhostname\n", "t.conf:2: expected \"key = value\"");
	expect_parse_error("[server]\n= value\n", "t.conf:2: expected \"key = value\"");
	/* Same key name in two sections is not a duplicate. */
	struct config c;
	char err[ERRLEN];
	REQUIRE(parse_text(&c,
			   "[server]\nmax_connections = 5\nlisten = 127.0.0.1\n"
			   "[delivery]\nmax_connections = 6\n[metrics]\nlisten = 127.0.0.1:1\n"
			   "[mta_sts]\nenabled = no\n[tlsrpt]\nenabled = no\n",
			   err) == 0);
	CHECK_INT(c.server.max_connections, 5);
	CHECK_INT(c.delivery.max_connections, 6);
	config_free(&c);
	/* A bad value leaves the previous one in place. */
	config_init(&c);
	const char bad[] = "[server]\nmax_connections = x\nlisten = nope\n";
	CHECK_INT(config_parse(&c, bad, strlen(bad), "t.conf", err, ERRLEN), -1);
	CHECK_INT(c.server.max_connections, 1000);
	CHECK_INT(c.server.nlisten, 2);
	config_free(&c);
}

/* --- environment -------------------------------------------------------- */

static void test_env(void)
{
	struct config c;
	char err[ERRLEN] = "";
	char *env[] = {
		"PATH=/usr/bin",
		"STRICTRELAY_CONFIG=/etc/other.conf",
		"STRICTRELAY_SERVER_HOSTNAME=env.example.org",
		"STRICTRELAY_SERVER_MAX_CONNECTIONS= 42 ",
		"STRICTRELAY_MTA_STS_HTTPS_PORT=8443",
		"STRICTRELAY_MTA_STS_ENABLED=off",
		"STRICTRELAY_TLSRPT_ORGANIZATION_NAME=\"Org # 1\"",
		"STRICTRELAY_SERVER_ACCEPT_DOMAINS=",
		"STRICTRELAY_QUEUE_RETRY_SCHEDULE=10s,20s",
		"STRICTRELAY_LOG_FORMAT=json",
		"STRICTRELAY_DELIVERY_DNS_SERVERS=127.0.0.1:5353",
		"STRICTRELAY_METRICS_LISTEN=127.0.0.1:9100",
		"STRICTRELAY_NOSUCHSECTION_X=1",
		"STRICTRELAY_=x",
		"STRICTRELAY_SERVER",
		"strictrelay_server_user=ignored-not-our-prefix",
		NULL,
	};
	REQUIRE(parse_text(&c,
			   "[server]\nhostname = file.example.org\naccept_domains = a.example\n"
			   "user = fileuser\n",
			   err) == 0);
	CHECK_INT(config_apply_env(&c, env, err, sizeof(err)), 0);
	CHECK_STR(err, "");
	CHECK_STR(c.server.hostname, "env.example.org");
	CHECK_INT(c.server.max_connections, 42);
	CHECK_INT(c.mta_sts.https_port, 8443);
	CHECK(!c.mta_sts.enabled);
	CHECK_STR(c.tlsrpt.organization_name, "Org # 1");
	CHECK_INT(c.server.accept_domains.n, 0);
	CHECK_STR(c.server.user, "fileuser");
	REQUIRE(c.queue.nretry_schedule == 2);
	CHECK_INT(c.queue.retry_schedule[1], 20);
	CHECK_INT(c.log.format, LOG_FORMAT_JSON);
	CHECK_INT(c.delivery.dns_servers[0].port, 5353);
	CHECK_INT(c.metrics.listen.port, 9100);
	CHECK_STR(config_origin(&c, "server", "hostname"),
		  "environment STRICTRELAY_SERVER_HOSTNAME");
	CHECK_STR(config_origin(&c, "mta_sts", "https_port"),
		  "environment STRICTRELAY_MTA_STS_HTTPS_PORT");
	CHECK_STR(config_origin(&c, "server", "user"), "t.conf:4");
	CHECK_STR(config_origin(&c, "server", "tls_cert"), "default");
	config_free(&c);

	/* NULL and empty environments are fine. */
	config_init(&c);
	CHECK_INT(config_apply_env(&c, NULL, err, sizeof(err)), 0);
	char *none[] = { NULL };
	CHECK_INT(config_apply_env(&c, none, err, sizeof(err)), 0);
	config_free(&c);

	char *e1[] = { "STRICTRELAY_SERVER_MAX_CONNECTIONS=abc", NULL };
	expect_env_error(e1, "environment STRICTRELAY_SERVER_MAX_CONNECTIONS: \"abc\" is not a "
			     "number");
	char *e2[] = { "STRICTRELAY_SERVER_MAX_CONECTIONS=5", NULL };
	expect_env_error(e2, "environment STRICTRELAY_SERVER_MAX_CONECTIONS: unknown key in "
			     "[server]");
	char *e3[] = { "STRICTRELAY_MTA_STS_ENABLE=yes", NULL };
	expect_env_error(e3, "environment STRICTRELAY_MTA_STS_ENABLE: unknown key in [mta_sts]");
	char *e4[] = { "STRICTRELAY_SERVER_=x", NULL };
	expect_env_error(e4, "environment STRICTRELAY_SERVER_: unknown key in [server]");
	char *e5[] = { "STRICTRELAY_SERVER_RELAY_NETWORKS=10.0.0.1/8", NULL };
	expect_env_error(e5, "environment STRICTRELAY_SERVER_RELAY_NETWORKS: bad network "
			     "\"10.0.0.1/8\": address has bits set beyond the /8 prefix");
	char *e6[] = { "STRICTRELAY_ROUTES_EXAMPLE_COM=[mx.example.com]", NULL };
	expect_env_error(e6, "environment STRICTRELAY_ROUTES_EXAMPLE_COM: only "
			     "STRICTRELAY_ROUTES_DEFAULT can set a route");
	char *e7[] = { "STRICTRELAY_ROUTES_DEFAULT=[smarthost.test] tls=bogus", NULL };
	expect_env_error(e7, "environment STRICTRELAY_ROUTES_DEFAULT: route \"*\": bad tls level "
			     "\"bogus\" (expected none, may, encrypt or verify)");
	char *e8[] = { "STRICTRELAY_DELIVERY_REQUIRE_TLS=", NULL };
	expect_env_error(e8, "environment STRICTRELAY_DELIVERY_REQUIRE_TLS: empty value "
			     "(expected yes or no)");
	char *e9[] = { "STRICTRELAY_SERVER_USER=a\nb", NULL };
	expect_env_error(e9, "environment STRICTRELAY_SERVER_USER: value contains a control "
			     "character");
	/* The first bad variable stops processing; later ones are not applied. */
	config_init(&c);
	char *e10[] = { "STRICTRELAY_SERVER_USER=a", "STRICTRELAY_LOG_FORMAT=x",
			"STRICTRELAY_SERVER_MAX_RECIPIENTS=5", NULL };
	CHECK_INT(config_apply_env(&c, e10, err, sizeof(err)), -1);
	CHECK_STR(c.server.user, "a");
	CHECK_INT(c.server.max_recipients, 1000);
	config_free(&c);
}

static void test_env_routes(void)
{
	struct config c;
	char err[ERRLEN] = "";
	REQUIRE(parse_text(&c,
			   "[routes]\n* = [old.example]:25 tls=none\n"
			   "example.com = [mx.example.com]\n",
			   err) == 0);
	char *env[] = { "STRICTRELAY_ROUTES_DEFAULT=[smarthost.isp.test]:587 tls=encrypt", NULL };
	CHECK_INT(config_apply_env(&c, env, err, sizeof(err)), 0);
	REQUIRE(c.nroutes == 2);
	const struct route *r = config_find_route(&c, "other.org");
	REQUIRE(r != NULL);
	CHECK_STR(r->next_hop.host, "smarthost.isp.test");
	CHECK_INT(r->next_hop.port, 587);
	CHECK_INT(r->tls, TLS_LEVEL_ENCRYPT);
	CHECK_INT(r->line, 0);
	CHECK_STR(config_origin(&c, "routes", "*"), "environment STRICTRELAY_ROUTES_DEFAULT");
	CHECK_INT(config_validate(&c, err, sizeof(err)), 0);
	config_free(&c);

	/* Empty removes the default route. */
	REQUIRE(parse_text(&c, "[routes]\n* = [old.example]:25\n", err) == 0);
	char *env2[] = { "STRICTRELAY_ROUTES_DEFAULT=", NULL };
	CHECK_INT(config_apply_env(&c, env2, err, sizeof(err)), 0);
	CHECK_INT(c.nroutes, 0);
	CHECK(config_find_route(&c, "x.org") == NULL);
	config_free(&c);

	/* require_tls from the environment moves routes without tls= to verify. */
	REQUIRE(parse_text(&c, "[routes]\nexample.com = [mx.example.com]\n", err) == 0);
	CHECK_INT(c.routes[0].tls, TLS_LEVEL_MAY);
	char *env3[] = { "STRICTRELAY_DELIVERY_REQUIRE_TLS=yes", NULL };
	CHECK_INT(config_apply_env(&c, env3, err, sizeof(err)), 0);
	CHECK_INT(c.routes[0].tls, TLS_LEVEL_VERIFY);
	CHECK_INT(config_validate(&c, err, sizeof(err)), 0);
	config_free(&c);
}

/* --- routes ------------------------------------------------------------- */

static void test_routes(void)
{
	struct config c;
	char err[ERRLEN];
	REQUIRE(parse_text(&c,
			   "[routes]\n"
			   "Example.COM = [10.0.0.5]:25 tls=verify verify_name=MX.example.com\n"
			   ".example.com = mx.example.net\n"
			   ".sub.example.com = [relay.example.net]:2525 tls=encrypt\n"
			   "v6.example = [2001:db8::1] tls=none\n"
			   "mx.example = relay.example:26 TLS=May\n"
			   "* = [smarthost.isp.test]:587 tls=encrypt\n",
			   err) == 0);
	CHECK_STR(err, "");
	REQUIRE(c.nroutes == 6);
	const struct route *r = &c.routes[0];
	CHECK_STR(r->domain, "example.com");
	CHECK_STR(r->next_hop.host, "10.0.0.5");
	CHECK_INT(r->next_hop.port, 25);
	CHECK(r->next_hop.bracketed);
	CHECK_INT(r->tls, TLS_LEVEL_VERIFY);
	CHECK(r->tls_explicit);
	CHECK_STR(r->verify_name, "mx.example.com");
	CHECK_INT(r->line, 2);
	r = &c.routes[1];
	CHECK_STR(r->domain, ".example.com");
	CHECK_STR(r->next_hop.host, "mx.example.net");
	CHECK_INT(r->next_hop.port, 0);
	CHECK(!r->next_hop.bracketed);
	CHECK_INT(r->tls, TLS_LEVEL_MAY);
	CHECK(!r->tls_explicit);
	CHECK(r->verify_name == NULL);
	r = &c.routes[2];
	CHECK_INT(r->next_hop.port, 2525);
	CHECK_INT(r->tls, TLS_LEVEL_ENCRYPT);
	r = &c.routes[3];
	CHECK_STR(r->next_hop.host, "2001:db8::1");
	CHECK_INT(r->next_hop.port, 0);
	CHECK(r->next_hop.bracketed);
	CHECK_INT(r->tls, TLS_LEVEL_NONE);
	r = &c.routes[4];
	CHECK_INT(r->next_hop.port, 26);
	CHECK(!r->next_hop.bracketed);
	CHECK_INT(r->tls, TLS_LEVEL_MAY);
	CHECK(r->tls_explicit);
	CHECK_STR(config_origin(&c, "routes", "example.com"), "t.conf:2");
	CHECK_INT(config_validate(&c, err, sizeof(err)), 0);

	/* Precedence: exact, then the longest suffix, then "*". */
	CHECK(config_find_route(&c, "example.com") == &c.routes[0]);
	CHECK(config_find_route(&c, "EXAMPLE.com") == &c.routes[0]);
	CHECK(config_find_route(&c, "example.com.") == &c.routes[0]);
	CHECK(config_find_route(&c, "a.example.com") == &c.routes[1]);
	CHECK(config_find_route(&c, "a.b.example.com") == &c.routes[1]);
	CHECK(config_find_route(&c, "sub.example.com") == &c.routes[1]);
	CHECK(config_find_route(&c, "x.sub.example.com") == &c.routes[2]);
	CHECK(config_find_route(&c, "X.SUB.Example.Com") == &c.routes[2]);
	CHECK(config_find_route(&c, "notexample.com") == &c.routes[5]);
	CHECK(config_find_route(&c, "xexample.com") == &c.routes[5]);
	CHECK(config_find_route(&c, "com") == &c.routes[5]);
	CHECK(config_find_route(&c, "v6.example") == &c.routes[3]);
	CHECK(config_find_route(&c, "a.v6.example") == &c.routes[5]);
	CHECK(config_find_route(&c, "") == &c.routes[5]);
	config_free(&c);

	/* No "*": unmatched domains have no route. */
	REQUIRE(parse_text(&c, "[routes]\n.example.com = mx.example.net\n", err) == 0);
	CHECK(config_find_route(&c, "example.com") == NULL);
	CHECK(config_find_route(&c, "a.example.com") == &c.routes[0]);
	config_free(&c);

	/* require_tls = yes later in the file still sets the default to verify. */
	REQUIRE(parse_text(&c,
			   "[routes]\nexample.com = [mx.example.com]\n"
			   "[delivery]\nrequire_tls = yes\n",
			   err) == 0);
	CHECK_INT(c.routes[0].tls, TLS_LEVEL_VERIFY);
	CHECK(!c.routes[0].tls_explicit);
	config_free(&c);
}

static void test_route_errors(void)
{
	expect_parse_error("[routes]\nexample.com =\n",
			   "t.conf:2: route \"example.com\": next hop missing (DOMAIN = "
			   "[host]:port tls=LEVEL)");
	expect_parse_error("[routes]\nexample.com = tls=verify\n",
			   "t.conf:2: route \"example.com\": next hop missing before "
			   "\"tls=verify\"");
	expect_parse_error("[routes]\nexa_mple.com = [mx.example.com]\n",
			   "t.conf:2: route \"exa_mple.com\": bad domain (expected a domain, "
			   "\".domain\" or \"*\")");
	expect_parse_error("[routes]\n*.example.com = [mx.example.com]\n",
			   "t.conf:2: route \"*.example.com\": bad domain (expected a domain, "
			   "\".domain\" or \"*\")");
	expect_parse_error("[routes]\n.. = [mx.example.com]\n",
			   "t.conf:2: route \"..\": bad domain (expected a domain, \".domain\" or "
			   "\"*\")");
	expect_parse_error("[routes]\nexample.com = [mx.example.com]:0\n",
			   "t.conf:2: route \"example.com\": bad address \"[mx.example.com]:0\": port "
			   "must be 1..65535");
	expect_parse_error("[routes]\nexample.com = [mx.example.com\n",
			   "t.conf:2: route \"example.com\": bad address \"[mx.example.com\": "
			   "missing ']'");
	expect_parse_error("[routes]\nexample.com = 10.0.0.5:25\n",
			   "t.conf:2: route \"example.com\": bad next hop \"10.0.0.5:25\": write an "
			   "address in brackets, e.g. [10.0.0.5]");
	expect_parse_error("[routes]\nexample.com = [bad_host]\n",
			   "t.conf:2: route \"example.com\": bad next hop \"[bad_host]\": not a host "
			   "name or address");
	expect_parse_error("[routes]\nexample.com = bad_host:25\n",
			   "t.conf:2: route \"example.com\": bad next hop \"bad_host:25\": not a "
			   "host name");
	expect_parse_error("[routes]\nexample.com = [mx.example.com] tls=strict\n",
			   "t.conf:2: route \"example.com\": bad tls level \"strict\" (expected none, "
			   "may, encrypt or verify)");
	expect_parse_error("[routes]\nexample.com = [mx.example.com] tls=may tls=verify\n",
			   "t.conf:2: route \"example.com\": tls= given twice");
	expect_parse_error("[routes]\nexample.com = [mx.example.com] tls=verify verify_name=a.b "
			   "verify_name=c.d\n",
			   "t.conf:2: route \"example.com\": verify_name= given twice");
	expect_parse_error("[routes]\nexample.com = [mx.example.com] verify_name=*.example.com\n",
			   "t.conf:2: route \"example.com\": verify_name \"*.example.com\" is not a "
			   "domain name");
	expect_parse_error("[routes]\nexample.com = [mx.example.com] port=25\n",
			   "t.conf:2: route \"example.com\": unknown option \"port=25\" (expected "
			   "tls=LEVEL or verify_name=NAME)");
	expect_parse_error("[routes]\nexample.com = [mx.example.com] [mx2.example.com]\n",
			   "t.conf:2: route \"example.com\": unknown option \"[mx2.example.com]\" "
			   "(expected tls=LEVEL or verify_name=NAME)");
}

/* --- validation --------------------------------------------------------- */

static void test_validate(void)
{
	char err[ERRLEN];
	const char *ok = "[server]\nhostname = relay.example.org\n";
	CHECK_INT(validate_text(ok, NULL, err), 0);

	expect_validate_error("[server]\nhostname = relay.example.org\ntls_cert = /c.pem\n", NULL,
			      "t.conf:3: tls_cert is set but tls_key is not");
	expect_validate_error("[server]\nhostname = relay.example.org\n\ntls_key = /k.pem\n", NULL,
			      "t.conf:4: tls_key is set but tls_cert is not");
	char *env_key[] = { "STRICTRELAY_SERVER_TLS_KEY=/k.pem", NULL };
	expect_validate_error("[server]\nhostname = relay.example.org\n", env_key,
			      "environment STRICTRELAY_SERVER_TLS_KEY: tls_key is set but tls_cert "
			      "is not");
	expect_validate_error("[server]\nhostname = relay_1.example.org\n", NULL,
			      "t.conf:2: hostname \"relay_1.example.org\" is not a valid domain name");
	expect_validate_error("[server]\nhostname = \n", NULL,
			      "t.conf:2: hostname \"\" is not a valid domain name");
	expect_validate_error("[server]\nhostname = -relay.example.org\n", NULL,
			      "t.conf:2: hostname \"-relay.example.org\" is not a valid domain name");
	expect_validate_error("[server]\nhostname = relay..example.org\n", NULL,
			      "t.conf:2: hostname \"relay..example.org\" is not a valid domain name");
	expect_validate_error("[server]\nhostname = relay.example.org.\n", NULL,
			      "t.conf:2: hostname \"relay.example.org.\" is not a valid domain name");
	expect_validate_error("[server]\nhostname = relay.example.org\nlisten =\n", NULL,
			      "t.conf:3: listen is empty: the relay would accept no mail");
	expect_validate_error("[server]\nhostname = relay.example.org\n[queue]\nretry_schedule =\n",
			      NULL, "t.conf:4: retry_schedule is empty");
	expect_validate_error("[server]\nhostname = relay.example.org\n[queue]\nstate_dir = \"\"\n",
			      NULL, "t.conf:4: state_dir is empty");
	expect_validate_error("[server]\nhostname = relay.example.org\n[tlsrpt]\n"
			      "dkim_selector = s1\ndkim_key = /k.pem\n",
			      NULL,
			      "t.conf:4: dkim_selector is set but dkim_domain is not (DKIM signing "
			      "needs dkim_domain, dkim_selector and dkim_key)");

	/* [server] postmaster: an address or nothing */
	CHECK_INT(validate_text("[server]\nhostname = relay.example.org\npostmaster = "
				"hostmaster+relay@example.org\n", NULL, err), 0);
	static const char *const bad_pm[] = { "postmaster", "@example.org", "a@b@example.org",
					      "a b@example.org", "<a@example.org>", "a@example..org",
					      "a@" };
	/* 64 + 1 + 190 = 255 octets: one more than a path holds */
	char longpm[400];
	snprintf(longpm, sizeof(longpm), "[server]\nhostname = relay.example.org\npostmaster = %.64s@%.63s.%.63s.%.62s\n",
		 "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
		 "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb",
		 "cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc",
		 "dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd");
	CHECK_INT(validate_text(longpm, NULL, err), -1);
	CHECK(strstr(err, "is not an address") != NULL);
	for (size_t i = 0; i < sizeof(bad_pm) / sizeof(bad_pm[0]); i++) {
		char text[200], want[200];
		snprintf(text, sizeof(text), "[server]\nhostname = relay.example.org\npostmaster = \"%s\"\n",
			 bad_pm[i]);
		snprintf(want, sizeof(want), "t.conf:3: postmaster \"%s\" is not an address (local@domain)",
			 bad_pm[i]);
		expect_validate_error(text, NULL, want);
	}

	/* A 64-byte label is too long; 63 is fine. */
	char host[200];
	snprintf(host, sizeof(host), "[server]\nhostname = %.63s.example\n",
		 "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
	CHECK_INT(validate_text(host, NULL, err), 0);
	snprintf(host, sizeof(host), "[server]\nhostname = %.64s.example\n",
		 "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
	CHECK_INT(validate_text(host, NULL, err), -1);
}

static void test_validate_routes(void)
{
	char err[ERRLEN];
	expect_validate_error("[server]\nhostname = r.example\n[routes]\n"
			      "example.com = [mx.example.com] verify_name=mx.example.com\n",
			      NULL,
			      "t.conf:4: route \"example.com\": verify_name needs tls=verify");
	expect_validate_error("[server]\nhostname = r.example\n[routes]\n"
			      "example.com = [mx.example.com] tls=encrypt verify_name=mx.example.com\n",
			      NULL,
			      "t.conf:4: route \"example.com\": verify_name needs tls=verify");
	expect_validate_error("[server]\nhostname = r.example\n[routes]\n"
			      "example.com = [a.example.com]\n.example.com = [b.example.com]\n"
			      "EXAMPLE.com = [c.example.com]\n",
			      NULL, "t.conf:6: duplicate route \"example.com\" (first at t.conf:4)");
	/* The require_tls floor: only tls=verify routes may exist. */
	static const char *const below[] = { "none", "may", "encrypt" };
	for (size_t i = 0; i < SR_ARRAY_LEN(below); i++) {
		char text[512], msg[512];
		snprintf(text, sizeof(text),
			 "[server]\nhostname = r.example\n[delivery]\nrequire_tls = yes\n"
			 "[routes]\nok.example = [mx.ok.example]\n"
			 "bad.example = [mx.bad.example] tls=%s\n",
			 below[i]);
		snprintf(msg, sizeof(msg),
			 "t.conf:7: route \"bad.example\": tls=%s is below the require_tls floor "
			 "(require_tls = yes at t.conf:4)",
			 below[i]);
		expect_validate_error(text, NULL, msg);
	}
	char *env[] = { "STRICTRELAY_DELIVERY_REQUIRE_TLS=yes", NULL };
	expect_validate_error("[server]\nhostname = r.example\n[routes]\n"
			      "* = [smarthost.example]:587 tls=encrypt\n",
			      env,
			      "t.conf:4: route \"*\": tls=encrypt is below the require_tls floor "
			      "(require_tls = yes at environment STRICTRELAY_DELIVERY_REQUIRE_TLS)");
	char *env2[] = { "STRICTRELAY_ROUTES_DEFAULT=[smarthost.example] tls=may", NULL };
	expect_validate_error("[server]\nhostname = r.example\n[delivery]\nrequire_tls = 1\n", env2,
			      "environment STRICTRELAY_ROUTES_DEFAULT: route \"*\": tls=may is below "
			      "the require_tls floor (require_tls = yes at t.conf:4)");
	CHECK_INT(validate_text("[server]\nhostname = r.example\n[delivery]\nrequire_tls = yes\n"
				"[routes]\na.example = [mx.a.example] tls=verify verify_name=x.example\n"
				"b.example = [mx.b.example]\n",
				NULL, err),
		  0);
}

/* --- print -------------------------------------------------------------- */

static void roundtrip(const char *text, char *const *env)
{
	struct config a, b;
	char err[ERRLEN] = "";
	REQUIRE(parse_text(&a, text, err) == 0);
	REQUIRE(config_apply_env(&a, env, err, sizeof(err)) == 0);
	char *pa = print_to_string(&a);
	REQUIRE(parse_text(&b, pa, err) == 0);
	CHECK_STR(err, "");
	char *pb = print_to_string(&b);
	char *sa = strip_origins(pa), *sb = strip_origins(pb);
	CHECK_STR(sa, sb);

	/* A few effective values compared directly, not through the printer. */
	CHECK_STR(a.server.hostname, b.server.hostname);
	CHECK_INT(a.server.nlisten, b.server.nlisten);
	CHECK_INT(a.server.relay_networks.n, b.server.relay_networks.n);
	CHECK(a.server.max_message_size == b.server.max_message_size);
	CHECK_INT(a.server.command_timeout, b.server.command_timeout);
	CHECK_INT(a.queue.nretry_schedule, b.queue.nretry_schedule);
	for (size_t i = 0; i < a.queue.nretry_schedule && i < b.queue.nretry_schedule; i++)
		CHECK_INT(a.queue.retry_schedule[i], b.queue.retry_schedule[i]);
	CHECK_STR(a.tlsrpt.organization_name, b.tlsrpt.organization_name);
	CHECK_INT(a.delivery.require_tls, b.delivery.require_tls);
	CHECK_INT(a.log.format, b.log.format);
	CHECK_INT(a.nroutes, b.nroutes);
	for (size_t i = 0; i < a.nroutes && i < b.nroutes; i++) {
		CHECK_STR(a.routes[i].domain, b.routes[i].domain);
		CHECK_STR(a.routes[i].next_hop.host, b.routes[i].next_hop.host);
		CHECK_INT(a.routes[i].next_hop.port, b.routes[i].next_hop.port);
		CHECK_INT(a.routes[i].next_hop.bracketed, b.routes[i].next_hop.bracketed);
		CHECK_INT(a.routes[i].tls, b.routes[i].tls);
		CHECK((a.routes[i].verify_name == NULL) == (b.routes[i].verify_name == NULL));
	}
	free(sa);
	free(sb);
	free(pa);
	free(pb);
	config_free(&a);
	config_free(&b);
}

static void test_print(void)
{
	struct config c;
	char err[ERRLEN] = "";
	REQUIRE(parse_text(&c,
			   "[server]\nhostname = relay.example.org\nmax_message_size = 1536K\n"
			   "command_timeout = 90\ndata_timeout = 7200\n"
			   "[tlsrpt]\norganization_name = \" Org # 1\"\n"
			   "[routes]\nexample.com = [mx.example.com]\n"
			   ".example.net = mx.example.net:2525 tls=verify verify_name=v.example\n",
			   err) == 0);
	char *env[] = { "STRICTRELAY_LOG_FORMAT=json", NULL };
	REQUIRE(config_apply_env(&c, env, err, sizeof(err)) == 0);
	char *p = print_to_string(&c);
	/* Every section, with the origins as comments. */
	static const char *const want[] = {
		"# strictrelay effective configuration: t.conf\n[server]\n",
		"\n[queue]\n", "\n[delivery]\n", "\n[auth]\n", "\n[routes]\n", "\n[requiretls]\n",
		"\n[mta_sts]\n", "\n[tlsrpt]\n", "\n[metrics]\n", "\n[log]\n",
		"\nhostname = relay.example.org            # from t.conf:2\n",
		"\nlisten = 0.0.0.0:25, [::]:25            # default\n",
		"\nmax_message_size = 1536K                # from t.conf:3\n",
		"\ncommand_timeout = 90s ",
		"\ndata_timeout = 2h ",
		"\nrelay_networks = 127.0.0.0/8, ::1/128 ",
		"\nretry_schedule = 1m, 5m, 15m, 30m, 1h, 2h, 4h ",
		"\nmax_lifetime = 5d ",
		"\nrequire_tls = no ",
		"\nsubmission_listen =                     # default\n",
		"\norganization_name = \" Org # 1\"",
		"\nformat = json                           # from environment "
		"STRICTRELAY_LOG_FORMAT\n",
		"\nexample.com = [mx.example.com] tls=may  # from t.conf:9\n",
		"\n.example.net = mx.example.net:2525 tls=verify verify_name=v.example # from "
		"t.conf:10\n",
		"\nbare_newline = reject ",
		"\nlisten =                                # default\n\n[log]\n",
	};
	for (size_t i = 0; i < SR_ARRAY_LEN(want); i++) {
		if (strstr(p, want[i]) == NULL)
			fprintf(stderr, "missing in print: \"%s\"\n", want[i]);
		CHECK(strstr(p, want[i]) != NULL);
	}
	free(p);
	config_free(&c);
}

static void test_print_roundtrip(void)
{
	char *env[] = {
		"STRICTRELAY_SERVER_USER= spaced user ",
		"STRICTRELAY_TLSRPT_CONTACT_INFO=\"  #hash\"",
		"STRICTRELAY_ROUTES_DEFAULT=[2001:db8::25]:2525 tls=verify verify_name=mx.example",
		NULL,
	};
	roundtrip(full_config, NULL);
	roundtrip("", NULL);
	roundtrip("[server]\nhostname = a.example\nlisten =\nrelay_networks =\n"
		  "[tlsrpt]\norganization_name = \"#1 Org\"\nreport_from = \"  x  \"\n"
		  "contact_info = a #b\n[queue]\nretry_schedule = 61, 3600, 86400, 90000\n"
		  "[server]\nmax_message_size = 1000\n[metrics]\nlisten = [::1]:1\n",
		  NULL);
	roundtrip("[routes]\na.example = [10.0.0.1]\nb.example = mx.b.example\n"
		  ".c.example = [mx.c.example]:26 tls=none\n",
		  env);
}

/* --- load --------------------------------------------------------------- */

static char *tmpdir_make(void)
{
	char tmpl[] = "/tmp/strictrelay-test-config-XXXXXX";
	if (mkdtemp(tmpl) == NULL)
		return NULL;
	return xstrdup(tmpl);
}

/* Removes every file in dir (one level) and dir itself. */
static void tmpdir_remove(char *dir)
{
	DIR *d = opendir(dir);
	if (d != NULL) {
		struct dirent *e;
		while ((e = readdir(d)) != NULL) {
			if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
				continue;
			char *p = xasprintf("%s/%s", dir, e->d_name);
			if (unlink(p) < 0)
				rmdir(p);
			free(p);
		}
		closedir(d);
	}
	rmdir(dir);
	free(dir);
}

static char *write_file(const char *dir, const char *name, const char *content)
{
	char *p = xasprintf("%s/%s", dir, name);
	FILE *f = fopen(p, "w");
	if (f != NULL) {
		fputs(content, f);
		fclose(f);
	}
	return p;
}

static void test_load(void)
{
	struct config c;
	char err[ERRLEN] = "";
	char *dir = tmpdir_make();
	REQUIRE(dir != NULL);
	char *path = write_file(dir, "s.conf",
				"[server]\nhostname = relay.example.org\nlisten = 127.0.0.1:2525\n");
	char *env[] = { "STRICTRELAY_SERVER_MAX_RECIPIENTS=7", NULL };
	CHECK_INT(config_load(&c, path, env, err, sizeof(err)), 0);
	CHECK_STR(err, "");
	CHECK_STR(c.path, path);
	CHECK_INT(c.server.listen[0].port, 2525);
	CHECK_INT(c.server.max_recipients, 7);
	char *where = xasprintf("%s:3", path);
	CHECK_STR(config_origin(&c, "server", "listen"), where);
	free(where);
	config_free(&c);

	/* Parse errors name the file; env errors come after the file parsed. */
	char *bad = write_file(dir, "bad.conf", "[server]\nhostname = a.example\nnope = 1\n");
	char *msg = xasprintf("%s:3: unknown key \"nope\" in [server]", bad);
	CHECK_INT(config_load(&c, bad, NULL, err, sizeof(err)), -1);
	CHECK_STR(err, msg);
	free(msg);
	config_free(&c);
	char *env_bad[] = { "STRICTRELAY_SERVER_NOPE=1", NULL };
	CHECK_INT(config_load(&c, path, env_bad, err, sizeof(err)), -1);
	CHECK_STR(err, "environment STRICTRELAY_SERVER_NOPE: unknown key in [server]");
	config_free(&c);

	/* Validation is part of loading. */
	char *inval = write_file(dir, "inval.conf",
				 "[server]\nhostname = relay.example.org\ntls_cert = /c.pem\n");
	msg = xasprintf("%s:3: tls_cert is set but tls_key is not", inval);
	CHECK_INT(config_load(&c, inval, NULL, err, sizeof(err)), -1);
	CHECK_STR(err, msg);
	free(msg);
	config_free(&c);

	char *missing = xasprintf("%s/missing.conf", dir);
	msg = xasprintf("%s: No such file or directory", missing);
	CHECK_INT(config_load(&c, missing, NULL, err, sizeof(err)), -1);
	CHECK_STR(err, msg);
	free(msg);
	config_free(&c);
	msg = xasprintf("%s: is a directory", dir);
	CHECK_INT(config_load(&c, dir, NULL, err, sizeof(err)), -1);
	CHECK_STR(err, msg);
	free(msg);
	config_free(&c);

	free(path);
	free(bad);
	free(inval);
	free(missing);
	tmpdir_remove(dir);
}

/*
 * The shipped example config parses, validates and round-trips. Found from
 * this file's path (meson passes sources relative to the build directory,
 * where tests run) or from the source tree when run by hand.
 */
static void test_example_config(void)
{
	static const char *const candidates[] = { "etc/strictrelay.conf",
						  "../etc/strictrelay.conf" };
	char *path = NULL;
	const char *slash = strstr(__FILE__, "tests/unit/test_config.c");
	if (slash != NULL) {
		char *p = xasprintf("%.*setc/strictrelay.conf", (int)(slash - __FILE__), __FILE__);
		if (access(p, R_OK) == 0)
			path = p;
		else
			free(p);
	}
	for (size_t i = 0; path == NULL && i < SR_ARRAY_LEN(candidates); i++)
		if (access(candidates[i], R_OK) == 0)
			path = xstrdup(candidates[i]);
	REQUIRE(path != NULL);
	struct config c;
	char err[ERRLEN] = "";
	CHECK_INT(config_load(&c, path, NULL, err, sizeof(err)), 0);
	CHECK_STR(err, "");
	REQUIRE(c.server.nlisten == 1);
	CHECK_STR(c.server.listen[0].host, "127.0.0.1");
	CHECK_INT(c.server.listen[0].port, 2525);
	CHECK_STR(c.queue.state_dir, "./var");
	CHECK_STR(c.server.tls_cert, "./var/tls/cert.pem");
	CHECK_STR(c.server.tls_key, "./var/tls/key.pem");
	CHECK(netlist_match_str(&c.server.relay_networks, "127.0.0.1"));
	CHECK(netlist_match_str(&c.server.relay_networks, "::1"));
	/* Every key is written out in the example: none is printed as a default. */
	char *printed = print_to_string(&c);
	size_t nkeys = 0;
	for (char *line = strtok(printed, "\n"); line != NULL; line = strtok(NULL, "\n")) {
		if (strstr(line, " = ") == NULL)
			continue;
		nkeys++;
		if (strstr(line, "# default") != NULL)
			fprintf(stderr, "example config lacks: %s\n", line);
		CHECK(strstr(line, "# default") == NULL);
	}
	free(printed);
	/* every key of the table: as many as a default configuration prints */
	struct config def;
	config_init(&def);
	printed = print_to_string(&def);
	size_t ntable = 0;
	for (char *line = strtok(printed, "\n"); line != NULL; line = strtok(NULL, "\n"))
		if (strstr(line, " = ") != NULL)
			ntable++;
	CHECK(ntable > 40);
	CHECK_INT(nkeys, ntable + c.nroutes);
	config_free(&def);
	free(printed);
	config_free(&c);
	free(path);
}

/* --- config_check_files ------------------------------------------------- */

static EVP_PKEY *make_key(void)
{
	return EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
}

static X509 *make_cert(EVP_PKEY *key, const char *cn)
{
	X509 *x = X509_new();
	if (x == NULL)
		return NULL;
	X509_set_version(x, 2);
	ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
	X509_gmtime_adj(X509_getm_notBefore(x), 0);
	X509_gmtime_adj(X509_getm_notAfter(x), 86400);
	X509_set_pubkey(x, key);
	X509_NAME *name = X509_get_subject_name(x);
	X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
	X509_set_issuer_name(x, name);
	if (X509_sign(x, key, EVP_sha256()) == 0) {
		X509_free(x);
		return NULL;
	}
	return x;
}

static char *write_pem(const char *dir, const char *name, X509 *cert, X509 *cert2, EVP_PKEY *key,
		       const char *pass)
{
	char *p = xasprintf("%s/%s", dir, name);
	FILE *f = fopen(p, "w");
	if (f == NULL)
		return p;
	if (key != NULL && pass != NULL)
		PEM_write_PrivateKey(f, key, EVP_aes_128_cbc(), (const unsigned char *)pass,
				     (int)strlen(pass), NULL, NULL);
	else if (key != NULL)
		PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL);
	if (cert != NULL)
		PEM_write_X509(f, cert);
	if (cert2 != NULL)
		PEM_write_X509(f, cert2);
	fclose(f);
	return p;
}

struct certdir {
	char *dir;
	char *cert, *key, *other_key, *enc_key, *chain, *combined, *garbage, *empty;
};

static int run_check(const char *body, char *const *env, char *err)
{
	struct config c;
	int rc = parse_text(&c, body, err);
	if (rc == 0)
		rc = config_apply_env(&c, env, err, ERRLEN);
	if (rc == 0)
		rc = config_check_files(&c, err, ERRLEN);
	config_free(&c);
	return rc;
}

static void expect_check_ok(const char *body, char *const *env)
{
	char err[ERRLEN] = "";
	CHECK_INT(run_check(body, env, err), 0);
	CHECK_STR(err, "");
}

static void expect_check(const char *body, char *const *env, const char *fmt, ...)
	SR_PRINTF(3, 4);

static void expect_check(const char *body, char *const *env, const char *fmt, ...)
{
	char err[ERRLEN] = "", want[ERRLEN];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(want, sizeof(want), fmt, ap);
	va_end(ap);
	CHECK_INT(run_check(body, env, err), -1);
	CHECK_STR(err, want);
}

static void check_tls_files(struct certdir *d)
{
	char *t;
	char *missing = xasprintf("%s/missing.pem", d->dir);

	t = xasprintf("[server]\ntls_cert = %s\ntls_key = %s\n", d->cert, d->key);
	expect_check_ok(t, NULL);
	free(t);
	/* A chain file: the first certificate is the server's. */
	t = xasprintf("[server]\ntls_cert = %s\ntls_key = %s\n", d->chain, d->key);
	expect_check_ok(t, NULL);
	free(t);
	/* Key and certificate in one file. */
	t = xasprintf("[server]\ntls_cert = %s\ntls_key = %s\n", d->combined, d->combined);
	expect_check_ok(t, NULL);
	free(t);

	t = xasprintf("[server]\ntls_cert = %s\ntls_key = %s\n", missing, d->key);
	expect_check(t, NULL, "t.conf:2: tls_cert \"%s\": No such file or directory", missing);
	free(t);
	t = xasprintf("[server]\ntls_cert = %s\ntls_key = %s\n", d->garbage, d->key);
	expect_check(t, NULL, "t.conf:2: tls_cert \"%s\": no PEM certificate found",
		     d->garbage);
	free(t);
	t = xasprintf("[server]\ntls_cert = %s\ntls_key = %s\n", d->key, d->key);
	expect_check(t, NULL, "t.conf:2: tls_cert \"%s\": no PEM certificate found", d->key);
	free(t);
	t = xasprintf("[server]\ntls_cert = %s\ntls_key = %s\n", d->dir, d->key);
	expect_check(t, NULL, "t.conf:2: tls_cert \"%s\": is a directory", d->dir);
	free(t);
	t = xasprintf("[server]\ntls_cert = %s\ntls_key = %s\n", d->cert, missing);
	expect_check(t, NULL, "t.conf:3: tls_key \"%s\": No such file or directory", missing);
	free(t);
	t = xasprintf("[server]\ntls_cert = %s\ntls_key = %s\n", d->cert, d->cert);
	expect_check(t, NULL,
		     "t.conf:3: tls_key \"%s\": no PEM private key (or it is encrypted: the "
		     "daemon has no passphrase)",
		     d->cert);
	free(t);
	/* Not a regular file: refused without blocking on it. */
	char *fifo = xasprintf("%s/fifo", d->dir);
	if (mkfifo(fifo, 0600) == 0) {
		t = xasprintf("[server]\ntls_cert = %s\ntls_key = %s\n", fifo, d->key);
		expect_check(t, NULL, "t.conf:2: tls_cert \"%s\": not a regular file", fifo);
		free(t);
		t = xasprintf("[auth]\nusers_file = %s\n", fifo);
		expect_check(t, NULL, "t.conf:2: users_file \"%s\": not a regular file", fifo);
		free(t);
	}
	free(fifo);
	/* Encrypted: refused, and never a prompt on the terminal. */
	t = xasprintf("[server]\ntls_cert = %s\ntls_key = %s\n", d->cert, d->enc_key);
	expect_check(t, NULL,
		     "t.conf:3: tls_key \"%s\": no PEM private key (or it is encrypted: the "
		     "daemon has no passphrase)",
		     d->enc_key);
	free(t);
	char *msg = xasprintf("t.conf:3: tls_key \"%s\": does not match tls_cert \"%s\"",
			      d->other_key, d->cert);
	t = xasprintf("[server]\ntls_cert = %s\ntls_key = %s\n", d->cert, d->other_key);
	expect_check(t, NULL, "%s", msg);
	free(t);
	free(msg);
	/* The origin follows the environment. */
	char *envvar = xasprintf("STRICTRELAY_SERVER_TLS_CERT=%s", missing);
	char *env[] = { envvar, NULL };
	t = xasprintf("[server]\ntls_cert = %s\ntls_key = %s\n", d->cert, d->key);
	expect_check(t, env,
		     "environment STRICTRELAY_SERVER_TLS_CERT: tls_cert \"%s\": No such file or "
		     "directory",
		     missing);
	free(t);
	free(envvar);
	free(missing);
}

static void check_other_files(struct certdir *d)
{
	char *t;
	char *missing = xasprintf("%s/missing", d->dir);

	t = xasprintf("[delivery]\nca_file = %s\n", d->chain);
	expect_check_ok(t, NULL);
	free(t);
	t = xasprintf("[delivery]\nca_file = %s\n", d->empty);
	expect_check(t, NULL, "t.conf:2: ca_file \"%s\": no PEM certificate found", d->empty);
	free(t);
	t = xasprintf("[delivery]\nca_file = %s\n", missing);
	expect_check(t, NULL, "t.conf:2: ca_file \"%s\": No such file or directory", missing);
	free(t);

	t = xasprintf("[tlsrpt]\ndkim_key = %s\n[auth]\nusers_file = %s\n", d->key, d->garbage);
	expect_check_ok(t, NULL);
	free(t);
	t = xasprintf("[tlsrpt]\ndkim_key = %s\n", missing);
	expect_check(t, NULL, "t.conf:2: dkim_key \"%s\": No such file or directory", missing);
	free(t);
	t = xasprintf("[auth]\n\nusers_file = %s\n", missing);
	expect_check(t, NULL, "t.conf:3: users_file \"%s\": No such file or directory",
		     missing);
	free(t);

	/* state_dir: absent is fine (the daemon creates it), a file is not. */
	t = xasprintf("[queue]\nstate_dir = %s\n", missing);
	expect_check_ok(t, NULL);
	free(t);
	t = xasprintf("[queue]\nstate_dir = %s\n", d->dir);
	expect_check_ok(t, NULL);
	free(t);
	t = xasprintf("[queue]\nstate_dir = %s\n", d->cert);
	expect_check(t, NULL, "t.conf:2: state_dir \"%s\": not a directory", d->cert);
	free(t);
	char *below = xasprintf("%s/sub", d->cert);
	t = xasprintf("[queue]\nstate_dir = %s\n", below);
	expect_check(t, NULL, "t.conf:2: state_dir \"%s\": Not a directory", below);
	free(t);
	free(below);
	/* The defaults name no file but state_dir, which may or may not exist. */
	t = xasprintf("[queue]\nstate_dir = %s\n", d->dir);
	expect_check_ok(t, NULL);
	free(t);
	free(missing);
}

static void test_check_files(void)
{
	struct certdir d = { 0 };
	d.dir = tmpdir_make();
	REQUIRE(d.dir != NULL);
	EVP_PKEY *k1 = make_key(), *k2 = make_key();
	X509 *c1 = make_cert(k1, "relay.example.org"), *c2 = make_cert(k2, "ca.example.org");
	if (k1 == NULL || k2 == NULL || c1 == NULL || c2 == NULL) {
		CHECK(!"could not make test keys and certificates");
		goto out;
	}
	d.cert = write_pem(d.dir, "cert.pem", c1, NULL, NULL, NULL);
	d.key = write_pem(d.dir, "key.pem", NULL, NULL, k1, NULL);
	d.other_key = write_pem(d.dir, "other_key.pem", NULL, NULL, k2, NULL);
	d.enc_key = write_pem(d.dir, "enc_key.pem", NULL, NULL, k1, "secret");
	d.chain = write_pem(d.dir, "chain.pem", c1, c2, NULL, NULL);
	d.combined = write_pem(d.dir, "combined.pem", c1, NULL, k1, NULL);
	free(write_file(d.dir, "garbage.pem", "this is not PEM\n"));
	d.garbage = xasprintf("%s/garbage.pem", d.dir);
	free(write_file(d.dir, "empty.pem", ""));
	d.empty = xasprintf("%s/empty.pem", d.dir);

	check_tls_files(&d);
	check_other_files(&d);

	/* Nothing set: nothing to check. */
	struct config c;
	char err[ERRLEN] = "";
	config_init(&c);
	free(c.queue.state_dir);
	c.queue.state_dir = xstrdup(d.dir);
	CHECK_INT(config_check_files(&c, err, sizeof(err)), 0);
	config_free(&c);
	/* The OpenSSL error queue is left clean for the next caller. */
	CHECK(ERR_peek_error() == 0);
out:
	free(d.cert);
	free(d.key);
	free(d.other_key);
	free(d.enc_key);
	free(d.chain);
	free(d.combined);
	free(d.garbage);
	free(d.empty);
	X509_free(c1);
	X509_free(c2);
	EVP_PKEY_free(k1);
	EVP_PKEY_free(k2);
	tmpdir_remove(d.dir);
}

int main(void)
{
	RUN(test_parse_duration);
	RUN(test_parse_size);
	RUN(test_parse_bool);
	RUN(test_tls_level_name);
	RUN(test_defaults);
	RUN(test_defaults_validate);
	RUN(test_every_type);
	RUN(test_ranges);
	RUN(test_addresses);
	RUN(test_syntax);
	RUN(test_empty_values);
	RUN(test_structure_errors);
	RUN(test_env);
	RUN(test_env_routes);
	RUN(test_routes);
	RUN(test_route_errors);
	RUN(test_validate);
	RUN(test_validate_routes);
	RUN(test_print);
	RUN(test_print_roundtrip);
	RUN(test_load);
	RUN(test_example_config);
	RUN(test_check_files);
	TEST_EXIT();
}
