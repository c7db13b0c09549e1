/*
 * sendcli.c - `strictrelay send`: a small swaks-like SMTP client that can say
 * what swaks cannot (REQUIRETLS and other MAIL FROM parameters), printing
 * the whole transcript the way swaks does:
 *   "=== " notes, " -> " / "<-  " plaintext, " ~> " / "<~  " inside TLS.
 *
 * A command-line tool, not part of the daemon: plain blocking sockets with
 * timeouts are the simple and right thing here. Replies are read with the
 * same parser the relay's client uses (smtp/reply.h); the message is
 * dot-stuffed with smtp_data_stuff().
 */
#include "sendcli.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "mta/cli.h"
#include "mta/netaddr.h"
#include "smtp/data.h"
#include "smtp/reply.h"

#define SEND_EXIT_REFUSED 1   /* the server refused something */
#define SEND_EXIT_CONNECT 3   /* no connection, TLS failure, timeout */

const char sendcli_help[] =
	"NAME\n"
	"    strictrelay send - send one test message and print the SMTP transcript\n"
	"\n"
	"SYNOPSIS\n"
	"    strictrelay send --server HOST[:PORT] --from ADDR --to ADDR[,ADDR...]\n"
	"                     [--starttls] [--requiretls] [--header 'Name: value']...\n"
	"                     [--body FILE|-] [--mail-param PARAM]... [--ehlo NAME]\n"
	"                     [--ca-file FILE] [--verify] [--tls-name NAME] [--timeout SECONDS]\n"
	"\n"
	"DESCRIPTION\n"
	"    Like swaks, but it can put REQUIRETLS (RFC 8689) and other parameters on\n"
	"    MAIL FROM. The message has Date, From, To, Subject, Message-Id and\n"
	"    X-Mailer headers (a --header with the same name replaces one) and the\n"
	"    body from --body, or a short test text.\n"
	"\n"
	"OPTIONS\n"
	"    --server HOST[:PORT]  where to connect (default localhost:25; [v6addr]:port)\n"
	"    --from ADDR           envelope sender and From: (\"\" for the null sender)\n"
	"    --to ADDR             recipient; repeat or separate with commas\n"
	"    --starttls            STARTTLS is required: stop if the server lacks it\n"
	"    --requiretls          add REQUIRETLS to MAIL FROM (implies --starttls)\n"
	"    --header 'N: v'       add or replace a header, e.g. 'TLS-Required: No'\n"
	"    --body FILE           the body (\"-\" reads standard input)\n"
	"    --mail-param P        another MAIL FROM parameter, e.g. BODY=8BITMIME\n"
	"    --ehlo NAME           EHLO name (default: this host's name)\n"
	"    --ca-file FILE        trust anchors for --verify (default: system store)\n"
	"    --verify              check the server certificate (chain and name)\n"
	"    --tls-name NAME       the name to check and send as SNI (default: HOST)\n"
	"    --timeout SECONDS     per network operation (default 30)\n"
	"\n"
	"EXIT STATUS\n"
	"    0 the message was accepted, 1 the server refused it (or a command),\n"
	"    2 usage error, 3 connection, TLS or timeout failure.\n"
	"\n"
	"EXAMPLES\n"
	"    strictrelay send --server 127.0.0.1:2525 --from a@example.org \\\n"
	"        --to b@example.net --requiretls\n"
	"    strictrelay send --server relay:25 --from a@example.org --to b@example.net \\\n"
	"        --starttls --header 'TLS-Required: No'\n";

struct conn {
	int fd;
	SSL_CTX *ctx;
	SSL *ssl;
	int timeout_ms;
	struct smtp_reply_parser rp;
	struct buf in;
};

static void note(const char *fmt, ...) SR_PRINTF(1, 2);
static void note(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fputs("=== ", stdout);
	vprintf(fmt, ap);
	fputc('\n', stdout);
	va_end(ap);
	fflush(stdout);
}

static int wait_fd(struct conn *c, short events)
{
	struct pollfd p = { .fd = c->fd, .events = events };
	int r = poll(&p, 1, c->timeout_ms);
	if (r == 0) {
		note("timeout after %d ms", c->timeout_ms);
		return -1;
	}
	return r < 0 ? -1 : 0;
}

static int send_all(struct conn *c, const char *data, size_t len)
{
	size_t off = 0;
	while (off < len) {
		if (c->ssl != NULL) {
			int w = SSL_write(c->ssl, data + off, (int)(len - off));
			if (w <= 0) {
				int e = SSL_get_error(c->ssl, w);
				if ((e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ) &&
				    wait_fd(c, e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT) == 0)
					continue;
				note("TLS write failed");
				return -1;
			}
			off += (size_t)w;
		} else {
			if (wait_fd(c, POLLOUT) < 0)
				return -1;
			ssize_t w = send(c->fd, data + off, len - off, MSG_NOSIGNAL);
			if (w < 0) {
				if (errno == EINTR || errno == EAGAIN)
					continue;
				note("write failed: %s", strerror(errno));
				return -1;
			}
			off += (size_t)w;
		}
	}
	return 0;
}

/* Reads more bytes into c->in. */
static int fill(struct conn *c)
{
	char tmp[8192];
	for (;;) {
		ssize_t n;
		if (c->ssl != NULL) {
			if (SSL_pending(c->ssl) == 0 && wait_fd(c, POLLIN) < 0)
				return -1;
			int r = SSL_read(c->ssl, tmp, sizeof(tmp));
			if (r <= 0) {
				int e = SSL_get_error(c->ssl, r);
				if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
					continue;
				note("connection closed by the server");
				return -1;
			}
			n = r;
		} else {
			if (wait_fd(c, POLLIN) < 0)
				return -1;
			n = recv(c->fd, tmp, sizeof(tmp), 0);
			if (n < 0 && (errno == EINTR || errno == EAGAIN))
				continue;
			if (n <= 0) {
				note("connection closed by the server");
				return -1;
			}
		}
		buf_append(&c->in, tmp, (size_t)n);
		return 0;
	}
}

/* Reads one reply and prints its lines; returns the code or -1. */
static int read_reply(struct conn *c)
{
	const char *prefix = c->ssl != NULL ? "<~  " : "<-  ";
	for (;;) {
		if (c->in.len > 0) {
			size_t used = 0;
			enum smtp_reply_status st = smtp_reply_feed(&c->rp, c->in.data, c->in.len, &used);
			buf_consume(&c->in, used);
			if (st == REPLY_ERROR) {
				note("unparsable reply: %s", smtp_reply_error(&c->rp));
				return -1;
			}
			if (st == REPLY_DONE) {
				const struct smtp_reply *r = smtp_reply_get(&c->rp);
				for (size_t i = 0; i < r->nlines; i++)
					printf("%s%d%c%s\n", prefix, r->code,
					       i + 1 < r->nlines ? '-' : ' ', smtp_reply_line(r, i));
				fflush(stdout);
				int code = r->code;
				smtp_reply_init(&c->rp);
				return code;
			}
		}
		if (fill(c) < 0)
			return -1;
	}
}

static int command(struct conn *c, const char *fmt, ...) SR_PRINTF(2, 3);
static int command(struct conn *c, const char *fmt, ...)
{
	struct buf b;
	buf_init(&b, 0);
	va_list ap;
	va_start(ap, fmt);
	buf_vprintf(&b, fmt, ap);
	va_end(ap);
	printf("%s%s\n", c->ssl != NULL ? " ~> " : " -> ", b.data);
	fflush(stdout);
	buf_append(&b, "\r\n", 2);
	int rc = send_all(c, b.data, b.len);
	buf_free(&b);
	return rc < 0 ? -1 : read_reply(c);
}

static int dial(struct conn *c, const char *host, const char *port)
{
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM };
	struct addrinfo *res;
	note("Trying %s:%s...", host, port);
	int r = getaddrinfo(host, port, &hints, &res);
	if (r != 0) {
		note("cannot resolve %s: %s", host, gai_strerror(r));
		return -1;
	}
	int rc = -1;
	for (struct addrinfo *a = res; a != NULL && rc < 0; a = a->ai_next) {
		c->fd = socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK, a->ai_protocol);
		if (c->fd < 0)
			continue;
		if (connect(c->fd, a->ai_addr, a->ai_addrlen) == 0 ||
		    (errno == EINPROGRESS && wait_fd(c, POLLOUT) == 0)) {
			int err = 0;
			socklen_t len = sizeof(err);
			getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
			if (err == 0) {
				char ip[64];
				sockaddr_format(a->ai_addr, ip, sizeof(ip), NULL);
				note("Connected to %s.", ip);
				rc = 0;
				break;
			}
			note("connect: %s", strerror(err));
		}
		close(c->fd);
		c->fd = -1;
	}
	freeaddrinfo(res);
	return rc;
}

static int start_tls(struct conn *c, const char *name, bool verify, const char *ca_file)
{
	c->ctx = SSL_CTX_new(TLS_client_method());
	if (c->ctx == NULL)
		return -1;
	SSL_CTX_set_min_proto_version(c->ctx, TLS1_2_VERSION);
	if (ca_file != NULL ? SSL_CTX_load_verify_locations(c->ctx, ca_file, NULL) != 1
			    : SSL_CTX_set_default_verify_paths(c->ctx) != 1) {
		note("cannot load trust anchors%s%s", ca_file ? " from " : "", ca_file ? ca_file : "");
		return -1;
	}
	c->ssl = SSL_new(c->ctx);
	SSL_set_fd(c->ssl, c->fd);
	unsigned char a[16];
	bool is_ip = inet_pton(AF_INET, name, a) == 1 || inet_pton(AF_INET6, name, a) == 1;
	if (!is_ip)
		SSL_set_tlsext_host_name(c->ssl, name);
	SSL_set_hostflags(c->ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS |
					  X509_CHECK_FLAG_NEVER_CHECK_SUBJECT);
	SSL_set1_host(c->ssl, name);
	SSL_set_verify(c->ssl, SSL_VERIFY_NONE, NULL);
	for (;;) {
		int r = SSL_connect(c->ssl);
		if (r == 1)
			break;
		int e = SSL_get_error(c->ssl, r);
		if ((e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) &&
		    wait_fd(c, e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT) == 0)
			continue;
		char why[256] = "handshake failed";
		unsigned long err = ERR_get_error();
		if (err != 0)
			ERR_error_string_n(err, why, sizeof(why));
		note("TLS handshake failed: %s", why);
		SSL_free(c->ssl);
		c->ssl = NULL;
		return -1;
	}
	note("TLS started with cipher %s:%s", SSL_get_version(c->ssl), SSL_get_cipher_name(c->ssl));
	X509 *cert = SSL_get1_peer_certificate(c->ssl);
	if (cert != NULL) {
		char dn[256];
		X509_NAME_oneline(X509_get_subject_name(cert), dn, sizeof(dn));
		note("TLS peer DN=\"%s\"", dn);
		X509_free(cert);
	}
	long v = SSL_get_verify_result(c->ssl);
	note("TLS certificate for %s: %s", name, v == X509_V_OK ? "verified" : X509_verify_cert_error_string(v));
	if (verify && v != X509_V_OK) {
		note("stopping: --verify and the certificate is not valid");
		return -1;
	}
	return 0;
}

static void header_set(struct strlist *h, const char *line)
{
	const char *colon = strchr(line, ':');
	size_t n = colon ? (size_t)(colon - line) : strlen(line);
	for (size_t i = 0; i < h->n; i++) {
		if (strncasecmp(h->v[i], line, n) == 0 && h->v[i][n] == ':') {
			free(h->v[i]);
			h->v[i] = xstrdup(line);
			return;
		}
	}
	strlist_add(h, line);
}

static char *read_file(const char *path)
{
	FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "r");
	if (f == NULL)
		return NULL;
	struct buf b;
	buf_init(&b, 0);
	char tmp[8192];
	size_t n;
	while ((n = fread(tmp, 1, sizeof(tmp), f)) > 0)
		buf_append(&b, tmp, n);
	if (f != stdin)
		fclose(f);
	return buf_steal(&b, NULL);
}

int sendcli_main(int argc, char **argv)
{
	const char *server = "localhost:25", *from = NULL, *body_file = NULL, *ca_file = NULL;
	const char *tls_name = NULL;
	char host_name[256] = "localhost";
	gethostname(host_name, sizeof(host_name));
	const char *ehlo = host_name;
	bool starttls = false, requiretls = false, verify = false;
	long timeout = 30;
	struct strlist to = { 0 }, extra = { 0 }, params = { 0 }, headers = { 0 };
	struct hostport hp = { 0 };
	struct buf msg, wire;
	buf_init(&msg, 0);
	buf_init(&wire, 0);
	char *body = NULL;
	struct conn c = { .fd = -1 };
	buf_init(&c.in, 0);
	int rc = EXIT_USAGE;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		bool has_value = i + 1 < argc;
		if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
			fputs(sendcli_help, stdout);
			rc = EXIT_OK;
			goto out;
		} else if (strcmp(a, "--starttls") == 0 || strcmp(a, "--tls") == 0) {
			starttls = true;
		} else if (strcmp(a, "--requiretls") == 0) {
			requiretls = starttls = true;
		} else if (strcmp(a, "--verify") == 0) {
			verify = true;
		} else if (!has_value) {
			rc = cli_usage_error("send", "%s needs a value (or is unknown)", a);
			goto out;
		} else if (strcmp(a, "--server") == 0 || strcmp(a, "-s") == 0) {
			server = argv[++i];
		} else if (strcmp(a, "--from") == 0 || strcmp(a, "-f") == 0) {
			from = argv[++i];
		} else if (strcmp(a, "--to") == 0 || strcmp(a, "-t") == 0) {
			strlist_split(&to, argv[++i], false);
		} else if (strcmp(a, "--header") == 0) {
			strlist_add(&extra, argv[++i]);
		} else if (strcmp(a, "--body") == 0) {
			body_file = argv[++i];
		} else if (strcmp(a, "--mail-param") == 0) {
			strlist_add(&params, argv[++i]);
		} else if (strcmp(a, "--ehlo") == 0) {
			ehlo = argv[++i];
		} else if (strcmp(a, "--ca-file") == 0) {
			ca_file = argv[++i];
		} else if (strcmp(a, "--tls-name") == 0) {
			tls_name = argv[++i];
		} else if (strcmp(a, "--timeout") == 0) {
			timeout = strtol(argv[++i], NULL, 10);
			if (timeout <= 0 || timeout > 3600) {
				rc = cli_usage_error("send", "--timeout must be 1..3600 seconds");
				goto out;
			}
		} else {
			rc = cli_usage_error("send", "unknown option \"%s\"", a);
			goto out;
		}
	}
	if (from == NULL || to.n == 0) {
		rc = cli_usage_error("send", "--from and --to are required");
		goto out;
	}
	char err[256];
	if (hostport_parse(&hp, server, 25, err, sizeof(err)) < 0) {
		rc = cli_usage_error("send", "--server: %s", err);
		goto out;
	}
	char port[8];
	snprintf(port, sizeof(port), "%u", hp.port);

	/* the message */
	char date[64], msgid[128];
	fmt_time_rfc5322(date, sizeof(date), now_unix());
	snprintf(msgid, sizeof(msgid), "<%lld.%u@%s>", (long long)now_unix(), random_u32(), ehlo);
	char line[1024];
	snprintf(line, sizeof(line), "Date: %s", date);
	strlist_add(&headers, line);
	snprintf(line, sizeof(line), "To: %s", to.v[0]);
	strlist_add(&headers, line);
	snprintf(line, sizeof(line), "From: %s", from[0] ? from : "<>");
	strlist_add(&headers, line);
	snprintf(line, sizeof(line), "Subject: test %s", date);
	strlist_add(&headers, line);
	snprintf(line, sizeof(line), "Message-Id: %s", msgid);
	strlist_add(&headers, line);
	strlist_add(&headers, "X-Mailer: strictrelay send " STRICTRELAY_VERSION);
	for (size_t i = 0; i < extra.n; i++)
		header_set(&headers, extra.v[i]);
	body = body_file ? read_file(body_file) : xstrdup("This is a test mailing\n");
	if (body == NULL) {
		fprintf(stderr, "strictrelay: send: --body %s: %s\n", body_file, strerror(errno));
		rc = EXIT_RUNTIME;
		goto out;
	}
	for (size_t i = 0; i < headers.n; i++)
		buf_printf(&msg, "%s\r\n", headers.v[i]);
	buf_puts(&msg, "\r\n");
	buf_puts(&msg, body);
	smtp_data_stuff(msg.data, msg.len, &wire);

	c.timeout_ms = (int)timeout * 1000;
	smtp_reply_init(&c.rp);
	rc = SEND_EXIT_CONNECT;
	int code;
	if (dial(&c, hp.host, port) < 0)
		goto out;
	if ((code = read_reply(&c)) < 0)
		goto out;
	rc = SEND_EXIT_REFUSED;
	if (code / 100 != 2)
		goto quit;
	if ((code = command(&c, "EHLO %s", ehlo)) < 0)
		goto fail_io;
	if (code / 100 != 2)
		goto quit;
	if (starttls) {
		if ((code = command(&c, "STARTTLS")) < 0)
			goto fail_io;
		if (code != 220)
			goto quit;
		if (c.in.len > 0)
			note("%zu unexpected bytes after the STARTTLS reply: discarded", c.in.len);
		buf_reset(&c.in);
		if (start_tls(&c, tls_name ? tls_name : hp.host, verify, ca_file) < 0) {
			rc = SEND_EXIT_CONNECT;
			goto out;
		}
		if ((code = command(&c, "EHLO %s", ehlo)) < 0)
			goto fail_io;
		if (code / 100 != 2)
			goto quit;
	}
	struct buf mail;
	buf_init(&mail, 0);
	buf_printf(&mail, "MAIL FROM:<%s>", from);
	if (requiretls)
		buf_puts(&mail, " REQUIRETLS");
	for (size_t i = 0; i < params.n; i++)
		buf_printf(&mail, " %s", params.v[i]);
	code = command(&c, "%s", mail.data);
	buf_free(&mail);
	if (code < 0)
		goto fail_io;
	if (code / 100 != 2)
		goto quit;
	size_t accepted = 0;
	for (size_t i = 0; i < to.n; i++) {
		if ((code = command(&c, "RCPT TO:<%s>", to.v[i])) < 0)
			goto fail_io;
		if (code / 100 == 2)
			accepted++;
	}
	if (accepted == 0)
		goto quit;
	if ((code = command(&c, "DATA")) < 0)
		goto fail_io;
	if (code != 354)
		goto quit;
	/* print the message as sent, one line each */
	for (size_t i = 0; i < wire.len;) {
		const char *eol = memchr(wire.data + i, '\n', wire.len - i);
		size_t n = eol ? (size_t)(eol - (wire.data + i)) : wire.len - i;
		size_t shown = n > 0 && wire.data[i + n - 1] == '\r' ? n - 1 : n;
		printf("%s%.*s\n", c.ssl ? " ~> " : " -> ", (int)shown, wire.data + i);
		i += n + 1;
	}
	if (send_all(&c, wire.data, wire.len) < 0)
		goto fail_io;
	if ((code = read_reply(&c)) < 0)
		goto fail_io;
	if (code / 100 == 2 && accepted == to.n)
		rc = EXIT_OK;
quit:
	command(&c, "QUIT");
	note("Connection closed with remote host.");
	goto out;
fail_io:
	rc = SEND_EXIT_CONNECT;
out:
	if (c.ssl != NULL) {
		SSL_shutdown(c.ssl);
		SSL_free(c.ssl);
	}
	if (c.ctx != NULL)
		SSL_CTX_free(c.ctx);
	if (c.fd >= 0)
		close(c.fd);
	buf_free(&c.in);
	buf_free(&msg);
	buf_free(&wire);
	free(body);
	hostport_free(&hp);
	strlist_free(&headers);
	strlist_free(&to);
	strlist_free(&extra);
	strlist_free(&params);
	return rc;
}
