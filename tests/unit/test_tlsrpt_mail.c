/* Unit tests for tlsrpt/mail.c: the TLS report e-mail (RPT-23..27): header
 * fields and their consistency, the Subject keywords and folding, the MIME
 * structure, base64 lines, the boundary check, the summary's line ends,
 * refusals; Python's email package as an independent parser (base64 back to
 * the exact gzip bytes); and tlsrpt_mail_sign() with and without a key. */
#include <stdint.h>
#include <unistd.h>
#include <zlib.h>

#include <openssl/evp.h>
#include <openssl/pem.h>

#include "mta/util.h"
#include "test.h"
#include "tlsrpt/dkim.h"
#include "tlsrpt/mail.h"

#define NOW 1795426200 /* 2026-11-23 09:30:00 UTC */
#define FILENAME "sender.example!example.net!1795305600!1795391999!001.json.gz"

static unsigned char *gz;
static size_t gz_len;
static const char JSON[] =
	"{\"organization-name\":\"Sender Org\",\"date-range\":{\"start-datetime\":"
	"\"2026-11-22T00:00:00Z\",\"end-datetime\":\"2026-11-22T23:59:59Z\"},"
	"\"contact-info\":\"tlsrpt@sender.example\",\"report-id\":"
	"\"20261122.example.net.001@sender.example\",\"policies\":[]}";

/* gzip of JSON followed by incompressible bytes, so part 2 has many lines */
static void make_gzip(void)
{
	size_t in_len = sizeof(JSON) - 1 + 3000;
	unsigned char *in = xmalloc(in_len);
	memcpy(in, JSON, sizeof(JSON) - 1);
	random_bytes(in + sizeof(JSON) - 1, 3000);
	z_stream z;
	memset(&z, 0, sizeof(z));
	if (deflateInit2(&z, 9, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK)
		abort();
	gz = xmalloc(in_len + 1024);
	z.next_in = in;
	z.avail_in = (uInt)in_len;
	z.next_out = gz;
	z.avail_out = (uInt)(in_len + 1024);
	if (deflate(&z, Z_FINISH) != Z_STREAM_END)
		abort();
	gz_len = z.total_out;
	deflateEnd(&z);
	free(in);
}

static struct tlsrpt_mail_params defaults(void)
{
	return (struct tlsrpt_mail_params){
		.from = "tlsrpt-noreply@mx.sender.example",
		.to = "tls-reports@example.net",
		.policy_domain = "example.net",
		.submitter = "sender.example",
		.report_id = "20261122.example.net.001@sender.example",
		.report = gz,
		.report_len = gz_len,
		.filename = FILENAME,
		.summary = "TLS report for example.net, 2026-11-22 (UTC).\n"
			   "Successful sessions: 12\nFailed sessions: 1\n",
		.now = NOW,
		.seed = "Q2X7AB01",
	};
}

static char *build(const struct tlsrpt_mail_params *p)
{
	struct buf b;
	char err[256];
	buf_init(&b, 0);
	if (tlsrpt_mail_build(p, &b, err, sizeof(err)) < 0) {
		fprintf(stderr, "build: %s\n", err);
		buf_free(&b);
		return NULL;
	}
	return buf_steal(&b, NULL);
}

/* The header section (up to the empty line), unfolded, as a copy. */
static char *header_section(const char *m)
{
	const char *e = strstr(m, "\r\n\r\n");
	if (e == NULL)
		return NULL;
	char *h = xstrndup(m, (size_t)(e - m) + 2);
	size_t j = 0;
	for (size_t i = 0; h[i] != '\0'; i++) {
		if (h[i] == '\r' && h[i + 1] == '\n' && (h[i + 2] == ' ' || h[i + 2] == '\t'))
			i++; /* unfold: drop CR LF, keep the blank */
		else
			h[j++] = h[i];
	}
	h[j] = '\0';
	return h;
}

/* Lines: CR LF only, none above max (header lines: 78 unless unbreakable). */
static void check_lines(const char *m, size_t header_max)
{
	bool header = true;
	for (const char *s = m; *s != '\0';) {
		const char *e = strstr(s, "\r\n");
		REQUIRE(e != NULL);
		REQUIRE(memchr(s, '\n', (size_t)(e - s)) == NULL);
		REQUIRE(memchr(s, '\r', (size_t)(e - s)) == NULL);
		size_t n = (size_t)(e - s);
		CHECK(n <= 998);
		if (header)
			CHECK(n <= header_max);
		if (n == 0)
			header = false;
		s = e + 2;
	}
}

static void test_structure(void)
{
	struct tlsrpt_mail_params p = defaults();
	char *m = build(&p);
	REQUIRE(m != NULL);
	check_lines(m, 78);
	char *h = header_section(m);
	REQUIRE(h != NULL);
	CHECK(strncmp(h, "From: tlsrpt-noreply@mx.sender.example\r\n", 40) == 0);
	CHECK(strstr(h, "\r\nTo: tls-reports@example.net\r\n") != NULL);
	CHECK(strstr(h, "\r\nDate: Mon, 23 Nov 2026 09:30:00 +0000\r\n") != NULL);
	CHECK(strstr(h, "\r\nMessage-ID: <tlsrpt.1795426200.Q2X7AB01@mx.sender.example>\r\n") !=
	      NULL);
	CHECK(strstr(h, "\r\nSubject: Report Domain: example.net Submitter: sender.example "
			"Report-ID: <20261122.example.net.001@sender.example>\r\n") != NULL);
	CHECK(strstr(h, "\r\nTLS-Report-Domain: example.net\r\n") != NULL);
	CHECK(strstr(h, "\r\nTLS-Report-Submitter: sender.example\r\n") != NULL);
	CHECK(strstr(h, "\r\nAuto-Submitted: auto-generated\r\n") != NULL);
	CHECK(strstr(h, "\r\nTLS-Required: No\r\n") != NULL);
	CHECK(strstr(h, "\r\nMIME-Version: 1.0\r\n") != NULL);
	CHECK(strstr(h, "\r\nContent-Type: multipart/report; report-type=\"tlsrpt\"; "
			"boundary=\"=_tlsrpt.Q2X7AB01.1795426200\"\r\n") != NULL);
	free(h);

	const char *b = "--=_tlsrpt.Q2X7AB01.1795426200\r\n";
	const char *p1 = strstr(m, b);
	REQUIRE(p1 != NULL);
	CHECK(strncmp(p1 + strlen(b),
		      "Content-Type: text/plain; charset=us-ascii\r\n"
		      "Content-Transfer-Encoding: 7bit\r\n\r\n"
		      "TLS report for example.net, 2026-11-22 (UTC).\r\n"
		      "Successful sessions: 12\r\nFailed sessions: 1\r\n\r\n--",
		      strlen("Content-Type: text/plain; charset=us-ascii\r\n"
			     "Content-Transfer-Encoding: 7bit\r\n\r\n"
			     "TLS report for example.net, 2026-11-22 (UTC).\r\n"
			     "Successful sessions: 12\r\nFailed sessions: 1\r\n\r\n--")) == 0);
	const char *p2 = strstr(p1 + 1, b);
	REQUIRE(p2 != NULL);
	const char *ph = "Content-Type: application/tlsrpt+gzip\r\n"
			 "Content-Transfer-Encoding: base64\r\n"
			 "Content-Disposition: attachment;\r\n filename=\"" FILENAME "\"\r\n\r\n";
	REQUIRE(strncmp(p2 + strlen(b), ph, strlen(ph)) == 0);
	/* base64 lines of 76 characters, the last one shorter or equal */
	const char *s = p2 + strlen(b) + strlen(ph);
	struct buf dec;
	buf_init(&dec, 0);
	size_t lines = 0;
	bool last = false;
	while (strncmp(s, "\r\n--", 4) != 0) {
		const char *e = strstr(s, "\r\n");
		REQUIRE(e != NULL);
		size_t n = (size_t)(e - s);
		CHECK(!last);
		if (n != 76)
			last = true;
		CHECK(n % 4 == 0 && n <= 76);
		unsigned char tmp[64];
		int k = EVP_DecodeBlock(tmp, (const unsigned char *)s, (int)n);
		REQUIRE(k >= 0);
		size_t pad = (n >= 1 && s[n - 1] == '=') + (n >= 2 && s[n - 2] == '=');
		buf_append(&dec, tmp, (size_t)k - pad);
		lines++;
		s = e + 2;
	}
	CHECK(lines > 40);
	CHECK_INT(dec.len, gz_len);
	CHECK(dec.len == gz_len && memcmp(dec.data, gz, gz_len) == 0);
	CHECK_STR(s, "\r\n--=_tlsrpt.Q2X7AB01.1795426200--\r\n");
	buf_free(&dec);

	/* deterministic */
	char *m2 = build(&p);
	CHECK(m2 != NULL && strcmp(m, m2) == 0);
	free(m2);
	free(m);
}

static void test_subject_folding(void)
{
	struct tlsrpt_mail_params p = defaults();
	p.policy_domain = "a-rather-long-policy-domain-name.subdomain.example.net";
	p.submitter = "reporting-mta.a-long-submitter-domain.sender.example";
	p.report_id = "2026-11-22T00.00.00Z.a-rather-long-policy-domain-name@"
		      "reporting-mta.a-long-submitter-domain.sender.example";
	char *m = build(&p);
	REQUIRE(m != NULL);
	check_lines(m, 998);
	/* folded before the keywords, never inside one */
	CHECK(strstr(m, "\r\nSubject: Report Domain: "
			"a-rather-long-policy-domain-name.subdomain.example.net\r\n"
			" Submitter: reporting-mta.a-long-submitter-domain.sender.example\r\n"
			" Report-ID: <") != NULL);
	char *h = header_section(m);
	REQUIRE(h != NULL);
	char want[1024];
	snprintf(want, sizeof(want), "\r\nSubject: Report Domain: %s Submitter: %s Report-ID: <%s>\r\n",
		 p.policy_domain, p.submitter, p.report_id);
	CHECK(strstr(h, want) != NULL);
	free(h);
	free(m);
}

static void test_summary(void)
{
	struct tlsrpt_mail_params p = defaults();
	p.summary = "a\nb\r\nc\rd\te";
	char *m = build(&p);
	REQUIRE(m != NULL);
	CHECK(strstr(m, "7bit\r\n\r\na\r\nb\r\nc\r\nd\te\r\n\r\n--") != NULL);
	free(m);
	p.summary = "";
	m = build(&p);
	REQUIRE(m != NULL);
	CHECK(strstr(m, "7bit\r\n\r\n\r\n\r\n--") != NULL);
	free(m);
	/* a very long line is broken at 998 */
	char *longtext = xmalloc(2501);
	memset(longtext, 'x', 2500);
	longtext[2500] = '\0';
	p.summary = longtext;
	m = build(&p);
	REQUIRE(m != NULL);
	check_lines(m, 78);
	free(m);
	free(longtext);
}

static void test_boundary(void)
{
	struct tlsrpt_mail_params p = defaults();
	p.summary = "Do not be confused by --=_tlsrpt.Q2X7AB01.1795426200 in here.\n";
	char *m = build(&p);
	REQUIRE(m != NULL);
	CHECK(strstr(m, "boundary=\"=_tlsrpt.Q2X7AB01.1795426200.1\"") != NULL);
	CHECK(strstr(m, "\r\n--=_tlsrpt.Q2X7AB01.1795426200.1--\r\n") != NULL);
	free(m);
	/* seed characters outside [A-Za-z0-9._-] are dropped; none left: "0" */
	p = defaults();
	p.seed = "<>\" ";
	m = build(&p);
	REQUIRE(m != NULL);
	CHECK(strstr(m, "boundary=\"=_tlsrpt.0.1795426200\"") != NULL);
	CHECK(strstr(m, "Message-ID: <tlsrpt.1795426200.0@mx.sender.example>") != NULL);
	free(m);
}

static void test_refusals(void)
{
	struct buf out;
	char err[256];
	buf_init(&out, 0);
	buf_puts(&out, "keep");
	unsigned char notgz[] = { 0x7b, 0x22, 0x61, 0x22, 0x7d };
	struct tlsrpt_mail_params p;
#define REFUSE(field, value)                                                        \
	do {                                                                        \
		p = defaults();                                                     \
		p.field = value;                                                    \
		err[0] = '\0';                                                      \
		CHECK_INT(tlsrpt_mail_build(&p, &out, err, sizeof(err)), -1);       \
		CHECK(err[0] != '\0');                                              \
		CHECK_STR(out.data, "keep");                                        \
	} while (0)
	REFUSE(from, NULL);
	REFUSE(from, "no-at-sign");
	REFUSE(from, "a b@sender.example");
	REFUSE(from, "a@sender.example\r\nBcc: x@y.example");
	REFUSE(from, ".a@sender.example");
	REFUSE(to, "rua@");
	REFUSE(to, "rua@[192.0.2.1]");
	REFUSE(to, "r\xc3\xbc@example.net");
	REFUSE(to, "\"unterminated@example.net");
	REFUSE(policy_domain, "example..net");
	REFUSE(policy_domain, "");
	REFUSE(policy_domain, "exa mple.net");
	REFUSE(submitter, NULL);
	REFUSE(submitter, "sender.example.");
	REFUSE(report_id, "no-at");
	REFUSE(report_id, "a@b@c");
	REFUSE(report_id, "<a@b>");
	REFUSE(report_id, "a b@c");
	REFUSE(filename, "report.json");
	REFUSE(filename, "sender!x!1!2!3.json.gz\"");
	REFUSE(filename, "a b.json.gz");
	REFUSE(filename, "../x.json.gz");
	REFUSE(filename, ".json.gz");
	REFUSE(summary, "caf\xc3\xa9");
	REFUSE(summary, "bell\a");
	REFUSE(summary, NULL);
	REFUSE(now, -1);
	REFUSE(report, notgz);
	CHECK(strstr(err, "gzip") != NULL);
	REFUSE(report, NULL);
	p = defaults();
	p.report_len = 1;
	CHECK_INT(tlsrpt_mail_build(&p, &out, err, sizeof(err)), -1);
	p = defaults();
	p.report_len = TLSRPT_MAIL_MAX_REPORT + 1;
	CHECK_INT(tlsrpt_mail_build(&p, &out, NULL, 0), -1);
	CHECK_STR(out.data, "keep");
	buf_free(&out);

	/* accepted: a quoted local part, underscores in a domain */
	p = defaults();
	p.to = "\"tls reports\"@_report.example.net";
	char *m = build(&p);
	CHECK(m != NULL);
	free(m);

	/* the output cap: -1 and the buffer as it was */
	struct buf small;
	buf_init(&small, 1000);
	buf_puts(&small, "x");
	p = defaults();
	CHECK_INT(tlsrpt_mail_build(&p, &small, err, sizeof(err)), -1);
	CHECK_STR(small.data, "x");
	buf_free(&small);
}

static const char PY_CHECK[] =
	"import sys, re, gzip, email, email.policy\n"
	"raw = open(sys.argv[1], 'rb').read()\n"
	"gzdata = open(sys.argv[2], 'rb').read()\n"
	"policy_domain, submitter, report_id, filename = sys.argv[3:7]\n"
	"assert b'\\n' not in raw.replace(b'\\r\\n', b''), 'bare LF'\n"
	"assert b'\\r' not in raw.replace(b'\\r\\n', b''), 'bare CR'\n"
	"assert all(len(l) <= 998 for l in raw.split(b'\\r\\n'))\n"
	"raw.decode('ascii')\n"
	"for pol in (email.policy.compat32, email.policy.default):\n"
	"    m = email.message_from_bytes(raw, policy=pol)\n"
	"    assert m.get_content_type() == 'multipart/report', m.get_content_type()\n"
	"    assert m.get_param('report-type') == 'tlsrpt'\n"
	"    assert m['MIME-Version'] == '1.0'\n"
	"    assert m['TLS-Report-Domain'] == policy_domain\n"
	"    assert m['TLS-Report-Submitter'] == submitter\n"
	"    assert m['Auto-Submitted'] == 'auto-generated'\n"
	"    assert m['TLS-Required'] == 'No'\n"
	"    for h in ('From', 'To', 'Date', 'Message-ID', 'Subject', 'TLS-Report-Domain',\n"
	"              'TLS-Report-Submitter', 'Content-Type'):\n"
	"        assert len(m.get_all(h)) == 1, h\n"
	"    subj = re.sub(r'\\r\\n', '', str(m['Subject']))\n"
	"    subj = re.sub(r'\\s+', ' ', subj)\n"
	"    g = re.fullmatch(r'Report Domain: (\\S+) Submitter: (\\S+) Report-ID: <([^@<>\\s]+@[^@<>\\s]+)>', subj)\n"
	"    assert g, subj\n"
	"    assert g.group(1) == m['TLS-Report-Domain'] == policy_domain\n"
	"    assert g.group(2) == m['TLS-Report-Submitter'] == submitter\n"
	"    assert g.group(3) == report_id\n"
	"    parts = m.get_payload()\n"
	"    assert len(parts) == 2, len(parts)\n"
	"    assert parts[0].get_content_type() == 'text/plain'\n"
	"    assert parts[0].get_content_charset() == 'us-ascii'\n"
	"    assert 'Successful sessions' in parts[0].get_payload(decode=True).decode('ascii')\n"
	"    assert parts[1].get_content_type() == 'application/tlsrpt+gzip'\n"
	"    assert parts[1]['Content-Transfer-Encoding'] == 'base64'\n"
	"    assert parts[1].get_content_disposition() == 'attachment'\n"
	"    assert parts[1].get_filename() == filename, parts[1].get_filename()\n"
	"    body = parts[1].get_payload(decode=True)\n"
	"    assert body == gzdata, 'attachment differs'\n"
	"    js = gzip.decompress(body)\n"
	"    assert js.startswith(b'{\"organization-name\"')\n"
	"    for p in m.walk():\n"
	"        assert not p.defects, (p.get_content_type(), p.defects)\n"
	"print('python email: ok')\n";

static void python_check(const struct tlsrpt_mail_params *p, const char *msg, size_t len)
{
	char dir[] = "/tmp/test_tlsrpt_mail.XXXXXX";
	REQUIRE(mkdtemp(dir) != NULL);
	char file[64], gzfile[64], script[64];
	snprintf(file, sizeof(file), "%s/report.eml", dir);
	snprintf(gzfile, sizeof(gzfile), "%s/report.gz", dir);
	snprintf(script, sizeof(script), "%s/check.py", dir);
	FILE *f = fopen(file, "wb");
	REQUIRE(f != NULL);
	fwrite(msg, 1, len, f);
	fclose(f);
	f = fopen(gzfile, "wb");
	REQUIRE(f != NULL);
	fwrite(p->report, 1, p->report_len, f);
	fclose(f);
	f = fopen(script, "w");
	REQUIRE(f != NULL);
	fputs(PY_CHECK, f);
	fclose(f);
	char cmd[1024];
	/* the file name holds '!': quoted for the shell */
	snprintf(cmd, sizeof(cmd), "/usr/bin/python3 %s %s %s '%s' '%s' '%s' '%s'", script, file,
		 gzfile, p->policy_domain, p->submitter, p->report_id, p->filename);
	int rc = system(cmd);
	CHECK_INT(rc, 0);
	unlink(file);
	unlink(gzfile);
	unlink(script);
	rmdir(dir);
}

static void test_python(void)
{
	if (access("/usr/bin/python3", X_OK) != 0) {
		fprintf(stderr, "test_python: /usr/bin/python3 not found, skipped\n");
		return;
	}
	struct tlsrpt_mail_params p = defaults();
	char *m = build(&p);
	REQUIRE(m != NULL);
	python_check(&p, m, strlen(m));
	free(m);
	p.policy_domain = "a-rather-long-policy-domain-name.subdomain.example.net";
	p.submitter = "reporting-mta.a-long-submitter-domain.sender.example";
	p.report_id = "2026-11-22T00.00.00Z.a-rather-long-policy-domain-name@"
		      "reporting-mta.a-long-submitter-domain.sender.example";
	m = build(&p);
	REQUIRE(m != NULL);
	python_check(&p, m, strlen(m));
	free(m);
}

static void test_sign(void)
{
	char dir[] = "/tmp/test_tlsrpt_mail.XXXXXX";
	REQUIRE(mkdtemp(dir) != NULL);
	char path[64];
	snprintf(path, sizeof(path), "%s/ed.pem", dir);
	EVP_PKEY *pk = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
	REQUIRE(pk != NULL);
	FILE *f = fopen(path, "w");
	REQUIRE(f != NULL);
	REQUIRE(PEM_write_PrivateKey(f, pk, NULL, NULL, 0, NULL, NULL) == 1);
	fclose(f);
	EVP_PKEY_free(pk);
	struct dkim_key *k = NULL;
	char err[256];
	REQUIRE(dkim_key_load(path, &k, err, sizeof(err)) == 0);
	unlink(path);
	rmdir(dir);

	struct tlsrpt_mail_params p = defaults();
	char *plain = build(&p);
	REQUIRE(plain != NULL);
	struct buf out;
	buf_init(&out, 0);
	buf_puts(&out, "prefix");
	REQUIRE(tlsrpt_mail_sign(&p, k, "sender.example", "tlsrpt", &out, err, sizeof(err)) == 0);
	const char *m = out.data + 6;
	REQUIRE(strncmp(m, "DKIM-Signature: v=1;", 20) == 0);
	const char *end = strstr(m, "\r\nFrom: ");
	REQUIRE(end != NULL);
	CHECK_STR(end + 2, plain);
	char *sig = xstrndup(m, (size_t)(end - m));
	/* unfold and look at the tags */
	size_t j = 0;
	for (size_t i = 0; sig[i] != '\0'; i++)
		if (sig[i] != '\r' && sig[i] != '\n')
			sig[j++] = sig[i];
	sig[j] = '\0';
	CHECK(strstr(sig, " a=ed25519-sha256;") != NULL);
	CHECK(strstr(sig, " d=sender.example;") != NULL);
	CHECK(strstr(sig, " s=tlsrpt;") != NULL);
	CHECK(strstr(sig, " t=1795426200;") != NULL);
	CHECK(strstr(sig, " l=") == NULL && strstr(sig, ";l=") == NULL);
	char *hs = strstr(sig, " h=");
	REQUIRE(hs != NULL);
	char *he = strchr(hs, ';');
	REQUIRE(he != NULL);
	*he = '\0';
	for (char *c = hs; *c; c++)
		if (*c == ' ')
			memmove(c, c + 1, strlen(c));
	CHECK_STR(hs, "h=From:To:Subject:Date:Message-ID:MIME-Version:Content-Type:"
		      "TLS-Report-Domain:TLS-Report-Submitter");
	free(sig);
	if (access("/usr/bin/python3", X_OK) == 0)
		python_check(&p, m, strlen(m));

	/* no key: the unsigned message */
	buf_reset(&out);
	REQUIRE(tlsrpt_mail_sign(&p, NULL, NULL, NULL, &out, err, sizeof(err)) == 0);
	CHECK_STR(out.data, plain);
	/* a bad DKIM domain: -1, out unchanged */
	buf_reset(&out);
	buf_puts(&out, "keep");
	CHECK_INT(tlsrpt_mail_sign(&p, k, "bad domain", "tlsrpt", &out, err, sizeof(err)), -1);
	CHECK_STR(out.data, "keep");
	/* a bad parameter: -1, out unchanged */
	p.filename = "x.json";
	CHECK_INT(tlsrpt_mail_sign(&p, k, "sender.example", "tlsrpt", &out, err, sizeof(err)), -1);
	CHECK_STR(out.data, "keep");
	/* the cap */
	struct buf small;
	buf_init(&small, 2000);
	p = defaults();
	CHECK_INT(tlsrpt_mail_sign(&p, k, "sender.example", "tlsrpt", &small, err, sizeof(err)),
		  -1);
	CHECK_INT(small.len, 0);
	buf_free(&small);
	buf_free(&out);
	free(plain);
	dkim_key_free(k);
}

int main(void)
{
	make_gzip();
	RUN(test_structure);
	RUN(test_subject_folding);
	RUN(test_summary);
	RUN(test_boundary);
	RUN(test_refusals);
	RUN(test_python);
	RUN(test_sign);
	free(gz);
	TEST_EXIT();
}
