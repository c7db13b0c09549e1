/*
 * dkimsign - sign a message with strictrelay's DKIM signer (tlsrpt/dkim.h),
 * or build and sign a TLS report mail (tlsrpt/mail.h), for the integration
 * tests (an independent verifier checks the result) and for people setting
 * up DKIM for TLS reports.
 *
 *   dkimsign [--time N] [--headers A,B,C] KEYFILE DOMAIN SELECTOR < message > signed
 *   dkimsign --public-txt [--service LIST] KEYFILE
 *   dkimsign --tlsrpt-mail [--time N] [--seed S] KEYFILE DOMAIN SELECTOR FROM TO
 *            POLICY-DOMAIN SUBMITTER REPORT-ID FILENAME < report.json.gz > signed
 *
 * Signing: the message is read from stdin; LF line ends not preceded by CR
 * are made CR LF first (so a text file works), and the DKIM-Signature
 * header field followed by the message as signed is written to stdout.
 * --headers: the field names to sign (default: the TLS report list,
 * tlsrpt_mail_sign_headers). --time: the t= value (default: now).
 * --public-txt: prints the TXT record value to publish, one line; with
 * s=email:tlsrpt, or s=LIST with --service LIST (--service "" leaves s= out).
 * --tlsrpt-mail: reads the gzipped report from stdin and writes the signed
 * report mail (KEYFILE "-" builds it unsigned); the summary part is a
 * fixed text.
 * Warnings about the key (a short RSA key) go to stderr.
 *
 * Exit: 0 done, 1 signing or building failed, 2 usage, 3 the key could not
 * be loaded.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mta/util.h"
#include "tlsrpt/dkim.h"
#include "tlsrpt/mail.h"

#define INPUT_MAX (64u << 20)

static void usage(void)
{
	fprintf(stderr,
		"usage: dkimsign [--time N] [--headers A,B,C] KEYFILE DOMAIN SELECTOR < msg\n"
		"       dkimsign --public-txt [--service LIST] KEYFILE\n"
		"       dkimsign --tlsrpt-mail [--time N] [--seed S] KEYFILE DOMAIN SELECTOR FROM TO\n"
		"                POLICY-DOMAIN SUBMITTER REPORT-ID FILENAME < report.json.gz\n");
	exit(2);
}

static int read_stdin(struct buf *b)
{
	char tmp[65536];
	size_t n;
	while ((n = fread(tmp, 1, sizeof(tmp), stdin)) > 0)
		if (buf_append(b, tmp, n) < 0)
			return -1;
	if (ferror(stdin))
		return -1;
	return buf_append(b, "", 0);
}

/* LF not preceded by CR -> CR LF */
static void to_crlf(const struct buf *in, struct buf *out)
{
	for (size_t i = 0; i < in->len; i++) {
		if (in->data[i] == '\n' && (i == 0 || in->data[i - 1] != '\r'))
			buf_putc(out, '\r');
		buf_putc(out, in->data[i]);
	}
	buf_append(out, "", 0);
}

static struct dkim_key *load_key(const char *path)
{
	struct dkim_key *k = NULL;
	char err[600];
	if (dkim_key_load(path, &k, err, sizeof(err)) < 0) {
		fprintf(stderr, "dkimsign: %s\n", err);
		exit(3);
	}
	if (err[0] != '\0')
		fprintf(stderr, "dkimsign: warning: %s\n", err);
	return k;
}

static int write_out(const struct buf *b)
{
	if (fwrite(b->data, 1, b->len, stdout) != b->len || fflush(stdout) != 0) {
		fprintf(stderr, "dkimsign: write: %s\n", strerror(errno));
		return 1;
	}
	return 0;
}

int main(int argc, char **argv)
{
	int64_t now = now_unix();
	const char *headers = NULL, *seed = "dkimsign", *service = DKIM_SERVICE_DEFAULT;
	bool public_txt = false, report_mail = false;
	int i = 1;
	for (; i < argc && strncmp(argv[i], "--", 2) == 0; i++) {
		if (strcmp(argv[i], "--public-txt") == 0) {
			public_txt = true;
		} else if (strcmp(argv[i], "--tlsrpt-mail") == 0) {
			report_mail = true;
		} else if (strcmp(argv[i], "--time") == 0 && i + 1 < argc) {
			char *end;
			now = strtoll(argv[++i], &end, 10);
			if (*end != '\0' || now < 0)
				usage();
		} else if (strcmp(argv[i], "--headers") == 0 && i + 1 < argc) {
			headers = argv[++i];
		} else if (strcmp(argv[i], "--service") == 0 && i + 1 < argc) {
			service = argv[++i];
		} else if (strcmp(argv[i], "--seed") == 0 && i + 1 < argc) {
			seed = argv[++i];
		} else {
			usage();
		}
	}
	argc -= i;
	argv += i;

	if (public_txt) {
		if (argc != 1)
			usage();
		struct dkim_key *k = load_key(argv[0]);
		struct buf b;
		buf_init(&b, 0);
		if (dkim_public_txt_service(k, service, &b) < 0) {
			fprintf(stderr, "dkimsign: invalid service list or cannot encode the key\n");
			return 1;
		}
		buf_putc(&b, '\n');
		int rc = write_out(&b);
		buf_free(&b);
		dkim_key_free(k);
		return rc;
	}

	if (argc != (report_mail ? 9 : 3))
		usage();
	struct dkim_key *k = NULL;
	if (!report_mail || strcmp(argv[0], "-") != 0)
		k = load_key(argv[0]);
	struct buf in, out;
	buf_init(&in, INPUT_MAX);
	buf_init(&out, 0);
	if (read_stdin(&in) < 0) {
		fprintf(stderr, "dkimsign: cannot read stdin (or more than %u octets)\n", INPUT_MAX);
		return 1;
	}
	char err[600];
	int rc = 1;
	if (report_mail) {
		struct tlsrpt_mail_params p = {
			.from = argv[3],
			.to = argv[4],
			.policy_domain = argv[5],
			.submitter = argv[6],
			.report_id = argv[7],
			.report = (const unsigned char *)in.data,
			.report_len = in.len,
			.filename = argv[8],
			.summary = "This is an SMTP TLS report (RFC 8460) made by dkimsign.\n"
				   "The report is attached, gzipped.\n",
			.now = now,
			.seed = seed,
		};
		if (tlsrpt_mail_sign(&p, k, argv[1], argv[2], &out, err, sizeof(err)) < 0) {
			fprintf(stderr, "dkimsign: %s\n", err);
			goto done;
		}
	} else {
		struct strlist names = { 0 };
		const char **list = NULL;
		if (headers != NULL) {
			strlist_split(&names, headers, false);
			list = xcalloc(names.n + 1, sizeof(*list));
			for (size_t j = 0; j < names.n; j++)
				list[j] = names.v[j];
		}
		struct buf msg;
		buf_init(&msg, 0);
		to_crlf(&in, &msg);
		int r = dkim_sign(k, argv[1], argv[2],
				  list != NULL ? list : tlsrpt_mail_sign_headers, msg.data, msg.len,
				  now, &out, err, sizeof(err));
		if (r == 0)
			buf_append(&out, msg.data, msg.len);
		buf_free(&msg);
		free(list);
		strlist_free(&names);
		if (r < 0) {
			fprintf(stderr, "dkimsign: %s\n", err);
			goto done;
		}
	}
	rc = write_out(&out);
done:
	buf_free(&in);
	buf_free(&out);
	dkim_key_free(k);
	return rc;
}
