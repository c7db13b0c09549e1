/* cli.c - see cli.h */
#include "cli.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "mta/config.h"
#include "mta/daemon.h"
#include "mta/log.h"
#include "policy/pcli.h"
#include "queue/qcli.h"
#include "queue/sendmail.h"
#include "smtp/passwdcli.h"
#include "smtp/sendcli.h"
#include "tlsrpt/tcli.h"

static const char main_help[] =
	"NAME\n"
	"    strictrelay - an outbound SMTP relay that enforces transport security\n"
	"\n"
	"SYNOPSIS\n"
	"    strictrelay [-c FILE] [-d] COMMAND [ARGS]\n"
	"    strictrelay --version | --help | COMMAND --help\n"
	"\n"
	"DESCRIPTION\n"
	"    strictrelay accepts mail over SMTP from internal hosts, applications and\n"
	"    containers, queues it durably in SQLite (the 250 reply is sent only after\n"
	"    the message is on disk) and delivers it to the recipient domains' MX\n"
	"    hosts. It offers STARTTLS and, inside TLS, REQUIRETLS (RFC 8689).\n"
	"\n"
	"COMMANDS\n"
	"    serve           run the relay in the foreground, logging to stderr\n"
	"    check-config    validate the configuration and print the effective settings\n"
	"    queue list      list queued messages: id, age, size, sender, recipients,\n"
	"                    state and last error\n"
	"    queue show ID   show one message: envelope, flags, client, recipients,\n"
	"                    history and headers (--body for the whole message)\n"
	"    queue flush [ID] | hold ID | release ID | delete ID\n"
	"                    deliver now, keep, let go, or remove queued mail\n"
	"    policy DOMAIN   what delivery to DOMAIN would do: MX hosts, MTA-STS record\n"
	"                    and policy (cached or fetched), TLSRPT record, and for each\n"
	"                    MX whether it matches and (--probe) what STARTTLS found\n"
	"    tlsrpt run [--date YYYY-MM-DD] [--out DIR] [--no-send]\n"
	"                    build and send the TLS reports (RFC 8460) for one UTC day\n"
	"                    (default yesterday); serve does this daily by itself\n"
	"    send            send one test message and print the transcript (like swaks,\n"
	"                    but it can add REQUIRETLS to MAIL FROM)\n"
	"    passwd USER     read a password and print a users_file line for SMTP AUTH\n"
	"    sendmail [-t] [-i] [-f SENDER] [RECIPIENT...]\n"
	"                    queue a message from standard input (sendmail compatible;\n"
	"                    also as a link named sendmail)\n"
	"    version         print the version\n"
	"\n"
	"    Run `strictrelay COMMAND --help` for a command's own options.\n"
	"\n"
	"OPTIONS\n"
	"    -c, --config FILE\n"
	"        The configuration file (default " CONFIG_DEFAULT_PATH ").\n"
	"    -d, --debug\n"
	"        Log debug messages (protocol state changes).\n"
	"    -h, --help\n"
	"        Print this help.\n"
	"    -V, --version\n"
	"        Print the version.\n"
	"\n"
	"ENVIRONMENT\n"
	"    STRICTRELAY_<SECTION>_<KEY>\n"
	"        Overrides a configuration key, e.g. STRICTRELAY_SERVER_HOSTNAME or\n"
	"        STRICTRELAY_DELIVERY_REQUIRE_TLS=yes. Wins over the file.\n"
	"        STRICTRELAY_ROUTES_DEFAULT sets the default route (\"*\").\n"
	"\n"
	"FILES\n"
	"    " CONFIG_DEFAULT_PATH "\n"
	"        The configuration; every key is explained in the installed example\n"
	"        (strictrelay.conf.example next to it) and in strictrelay(8).\n"
	"    STATE_DIR/queue.db\n"
	"        The queue (SQLite, WAL). Back up with `sqlite3 queue.db .backup`.\n"
	"\n"
	"EXIT STATUS\n"
	"    0 success, 1 runtime or configuration error, 2 usage error.\n"
	"\n"
	"EXAMPLES\n"
	"    strictrelay -c /etc/strictrelay/strictrelay.conf check-config\n"
	"    strictrelay serve\n"
	"    strictrelay queue list\n"
	"    strictrelay queue flush\n";

static const char serve_help[] =
	"NAME\n"
	"    strictrelay serve - run the relay\n"
	"\n"
	"SYNOPSIS\n"
	"    strictrelay [-c FILE] [-d] serve\n"
	"\n"
	"DESCRIPTION\n"
	"    Listens on every [server] listen address, accepts mail from relay_networks\n"
	"    (and for accept_domains from anyone), queues it in [queue] state_dir and\n"
	"    delivers it: to the route configured for the recipient domain ([routes]),\n"
	"    else to the domain's MX hosts, STARTTLS whenever offered (or required by\n"
	"    a route's tls level or require_tls), retrying on the retry_schedule and\n"
	"    bouncing (RFC 3464) after max_lifetime or on a permanent error.\n"
	"    Runs in the foreground and logs one key=value line per event to stderr\n"
	"    ([log] format = json for JSON lines): every delivery attempt says the\n"
	"    MX, its address, TLS version and cipher, whether the certificate was\n"
	"    verified and for which name, and status=sent|deferred|bounced.\n"
	"\n"
	"    submission_listen (STARTTLS) and submission_tls_listen (implicit TLS)\n"
	"    add listeners where clients must authenticate (AUTH PLAIN or LOGIN,\n"
	"    inside TLS only, against [auth] users_file) and may then relay from\n"
	"    anywhere. Failed attempts per client address are limited ([auth]\n"
	"    max_failures within failure_window, then 421 4.7.0).\n"
	"\n"
	"PRIVILEGES\n"
	"    Started as root, the relay reads its certificate, key and users file and\n"
	"    binds its ports, then becomes [server] user (state_dir is created for\n"
	"    and given to that user if needed). Without user it refuses to keep\n"
	"    running as root unless run_as_root = yes.\n"
	"\n"
	"SIGNALS\n"
	"    SIGTERM, SIGINT  stop accepting, let open transactions finish (at most\n"
	"                     10 s), then exit 0. A second signal closes at once.\n"
	"                     Acknowledged mail is never lost: it is on disk before\n"
	"                     the 250 reply.\n"
	"    SIGHUP           read the configuration again, reload the certificate\n"
	"                     and the users file; new connections, commands and\n"
	"                     deliveries use them, open ones are not interrupted.\n"
	"                     An invalid file changes nothing (the log says why).\n"
	"                     Listen addresses, user, state_dir, DNS servers,\n"
	"                     ca_file, [mta_sts] enabled, [tlsrpt] and [metrics]\n"
	"                     need a restart (the log lists such changes).\n";

static const char check_help[] =
	"NAME\n"
	"    strictrelay check-config - validate the configuration\n"
	"\n"
	"SYNOPSIS\n"
	"    strictrelay [-c FILE] check-config\n"
	"\n"
	"DESCRIPTION\n"
	"    Reads the configuration file and the STRICTRELAY_* environment, checks\n"
	"    every value and the files it names (certificate and key, CA file), and\n"
	"    prints the effective configuration with the origin of each value.\n"
	"    On error prints FILE:LINE: reason and exits 1.\n";

static const char queue_help[] =
	"NAME\n"
	"    strictrelay queue - inspect and manage the queue\n"
	"\n"
	"SYNOPSIS\n"
	"    strictrelay [-c FILE] queue list\n"
	"    strictrelay [-c FILE] queue show ID [--body]\n"
	"    strictrelay [-c FILE] queue flush [ID]\n"
	"    strictrelay [-c FILE] queue hold ID\n"
	"    strictrelay [-c FILE] queue release ID\n"
	"    strictrelay [-c FILE] queue delete ID\n"
	"\n"
	"DESCRIPTION\n"
	"    list     one line per message (id, age, size, recipients, state, sender\n"
	"             and flags) and one indented line per recipient with its state,\n"
	"             attempts, next attempt, route and last reply.\n"
	"    show     everything known about one message: envelope, flags, client and\n"
	"             TLS, recipients, history, headers (--body: the whole message).\n"
	"             Works for delivered messages too, while their history is kept.\n"
	"    flush    make the message's queued recipients (all, without ID) due now.\n"
	"    hold     keep the message in the queue without delivering it.\n"
	"    release  undo hold.\n"
	"    delete   remove the message from the queue; no bounce is sent.\n"
	"\n"
	"    All of them work on the database directly while `serve` runs; the relay\n"
	"    sees changes within a second. Deliveries already under way finish.\n";

static const char policy_help[] =
	"NAME\n"
	"    strictrelay policy - what delivery to a domain would do right now\n"
	"\n"
	"SYNOPSIS\n"
	"    strictrelay [-c FILE] policy DOMAIN [--refresh] [--probe] [--json]\n"
	"\n"
	"DESCRIPTION\n"
	"    Resolves DOMAIN with the relay's own resolver and prints: the MX hosts\n"
	"    and their addresses (or the route that applies), the _mta-sts TXT record\n"
	"    and the MTA-STS policy that applies (fetched or from the cache, with its\n"
	"    age and expiry), the _smtp._tls (TLSRPT) record, for each MX whether it\n"
	"    matches the policy, and whether a REQUIRETLS message could be delivered.\n"
	"    A fetched policy is stored in the cache the daemon uses.\n"
	"\n"
	"OPTIONS\n"
	"    --refresh  fetch the policy even when the cached one is current\n"
	"    --probe    connect to every MX (EHLO, STARTTLS, certificate check against\n"
	"               the MX name, REQUIRETLS advertised?) and QUIT; no mail is sent\n"
	"    --json     one JSON object instead of text\n"
	"\n"
	"EXAMPLES\n"
	"    strictrelay policy example.com --probe\n"
	"    strictrelay policy example.com --refresh --json | jq .mta_sts.policy\n";

struct command {
	const char *name;
	const char *help;
	bool needs_config;
	/* NULL: run from main.c before cli_main (sendmail); listed for help */
	int (*run)(const struct config *cfg, int argc, char **argv);
};

static int run_serve(const struct config *cfg, int argc, char **argv)
{
	if (argc > 1)
		return cli_usage_error("serve", "unexpected argument \"%s\"", argv[1]);
	return daemon_serve(cfg);
}

static int run_check(const struct config *cfg, int argc, char **argv)
{
	if (argc > 1)
		return cli_usage_error("check-config", "unexpected argument \"%s\"", argv[1]);
	config_print(cfg, stdout);
	fprintf(stderr, "strictrelay: %s: configuration OK\n", cfg->path);
	return EXIT_OK;
}

static int run_version(const struct config *cfg, int argc, char **argv)
{
	(void)cfg;
	(void)argc;
	(void)argv;
	printf("strictrelay %s\n", STRICTRELAY_VERSION);
	return EXIT_OK;
}

static int run_send(const struct config *cfg, int argc, char **argv)
{
	(void)cfg;
	return sendcli_main(argc, argv);
}

static int run_passwd(const struct config *cfg, int argc, char **argv)
{
	(void)cfg;
	return passwdcli_main(argc, argv);
}

static const struct command commands[] = {
	{ "serve", serve_help, true, run_serve },
	{ "check-config", check_help, true, run_check },
	{ "queue", queue_help, true, qcli_main },
	{ "policy", policy_help, true, pcli_main },
	{ "send", sendcli_help, false, run_send },
	{ "passwd", passwdcli_help, false, run_passwd },
	{ "sendmail", sendmail_help, false, NULL },
	{ "tlsrpt", tcli_help, true, tcli_main },
	{ "version", NULL, false, run_version },
};

int cli_usage_error(const char *cmd, const char *fmt, ...)
{
	va_list ap;
	fprintf(stderr, "strictrelay: %s: ", cmd);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\nRun `strictrelay %s --help` for usage.\n", cmd);
	return EXIT_USAGE;
}

static bool is_help(const char *a)
{
	return strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0 || strcmp(a, "help") == 0;
}

int cli_main(int argc, char **argv, char **envp)
{
	const char *config_path = NULL;
	bool debug = false;
	bool help = false;
	/* Global options may come before or after the command; everything
	 * else is kept, in order, for the command. */
	char **rest = calloc((size_t)argc + 1, sizeof(*rest));
	if (rest == NULL)
		return EXIT_RUNTIME;
	int nrest = 0;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (strcmp(a, "-c") == 0 || strcmp(a, "--config") == 0) {
			if (i + 1 >= argc) {
				free(rest);
				fprintf(stderr, "strictrelay: %s needs a file name\n", a);
				return EXIT_USAGE;
			}
			config_path = argv[++i];
		} else if (strncmp(a, "--config=", 9) == 0) {
			config_path = a + 9;
		} else if (strcmp(a, "-d") == 0 || strcmp(a, "--debug") == 0) {
			debug = true;
		} else if (strcmp(a, "-V") == 0 || strcmp(a, "--version") == 0) {
			free(rest);
			printf("strictrelay %s\n", STRICTRELAY_VERSION);
			return EXIT_OK;
		} else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
			help = true;
		} else {
			rest[nrest++] = argv[i];
		}
	}
	if (nrest == 0 || (help && nrest == 0) || (nrest == 1 && strcmp(rest[0], "help") == 0)) {
		free(rest);
		fputs(main_help, help || nrest > 0 ? stdout : stderr);
		return help || nrest > 0 ? EXIT_OK : EXIT_USAGE;
	}
	/* "help COMMAND" is "COMMAND --help" */
	if (nrest >= 2 && strcmp(rest[0], "help") == 0) {
		memmove(rest, rest + 1, (size_t)nrest * sizeof(*rest));
		nrest--;
		help = true;
	}
	const struct command *cmd = NULL;
	for (size_t i = 0; i < SR_ARRAY_LEN(commands); i++)
		if (strcmp(commands[i].name, rest[0]) == 0)
			cmd = &commands[i];
	if (cmd == NULL) {
		fprintf(stderr, "strictrelay: unknown command \"%s\"\nRun `strictrelay --help` for the list of commands.\n",
			rest[0]);
		free(rest);
		return EXIT_USAGE;
	}
	if (help || (nrest > 1 && is_help(rest[1])) || cmd->run == NULL) {
		fputs(cmd->help ? cmd->help : main_help, stdout);
		free(rest);
		return EXIT_OK;
	}
	log_setup(LOG_FORMAT_TEXT, debug);
	struct config cfg;
	config_init(&cfg);
	if (cmd->needs_config) {
		char err[1024];
		if (config_path == NULL)
			config_path = CONFIG_DEFAULT_PATH;
		config_free(&cfg);
		if (config_load(&cfg, config_path, envp, err, sizeof(err)) < 0 ||
		    config_check_files(&cfg, err, sizeof(err)) < 0) {
			fprintf(stderr, "strictrelay: %s\n", err);
			config_free(&cfg);
			free(rest);
			return EXIT_RUNTIME;
		}
		log_setup(cfg.log.format, debug);
	}
	int rc = cmd->run(&cfg, nrest, rest);
	config_free(&cfg);
	free(rest);
	return rc;
}
