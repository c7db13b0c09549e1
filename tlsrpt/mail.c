/* mail.c - see mail.h */
#include "mail.h"

#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include <openssl/evp.h>

#define MAX_LINE 998        /* RFC 5322 2.1.1, CR LF excluded */
#define WRAP 78             /* RFC 5322 2.1.1 SHOULD */
#define B64_IN_LINE 57      /* octets per base64 line: 76 characters */
#define MAX_BOUNDARY 70     /* RFC 2046 5.1.1 */
#define BOUNDARY_TRIES 100
#define MAX_SEED 32

const char *const tlsrpt_mail_sign_headers[] = {
	"From",       "To",           "Subject",           "Date",
	"Message-ID", "MIME-Version", "Content-Type",      "TLS-Report-Domain",
	"TLS-Report-Submitter", NULL,
};

/* --- checks --------------------------------------------------------------- */

static bool is_alnum(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

/* atext (RFC 5322 3.2.3) */
static bool is_atext(char c)
{
	return is_alnum(c) || (c != '\0' && strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL);
}

static bool domain_ok(const char *s, size_t n)
{
	if (n == 0 || n > 253)
		return false;
	size_t label = 0;
	for (size_t i = 0; i < n; i++) {
		if (s[i] == '.') {
			if (label == 0)
				return false;
			label = 0;
		} else if (is_alnum(s[i]) || s[i] == '-' || s[i] == '_') {
			if (++label > 63)
				return false;
		} else {
			return false;
		}
	}
	return label > 0;
}

/* atext and dots, no dot at either end, no two dots in a row */
static bool dot_atom_ok(const char *s, size_t n)
{
	if (n == 0 || s[0] == '.' || s[n - 1] == '.')
		return false;
	for (size_t i = 0; i < n; i++) {
		if (s[i] == '.' ? i > 0 && s[i - 1] == '.' : !is_atext(s[i]))
			return false;
	}
	return true;
}

/* local@domain: a dot-atom or quoted local part, a domain name */
static bool address_ok(const char *s)
{
	if (s == NULL)
		return false;
	size_t n = strlen(s);
	const char *at = strrchr(s, '@');
	if (n > TLSRPT_MAIL_MAX_ADDRESS || at == NULL)
		return false;
	size_t ln = (size_t)(at - s);
	if (!domain_ok(at + 1, n - ln - 1))
		return false;
	if (ln >= 2 && s[0] == '"' && s[ln - 1] == '"') {
		for (size_t i = 1; i + 1 < ln; i++) {
			unsigned char c = (unsigned char)s[i];
			if (c < 0x20 || c > 0x7e)
				return false;
			if (c == '\\' || c == '"') {
				/* quoted-pair: a backslash and one character */
				if (c == '"' || i + 2 >= ln || (unsigned char)s[i + 1] < 0x20 ||
				    (unsigned char)s[i + 1] > 0x7e)
					return false;
				i++;
			}
		}
		return true;
	}
	return dot_atom_ok(s, ln);
}

static bool report_id_ok(const char *s)
{
	if (s == NULL)
		return false;
	size_t n = strlen(s);
	const char *at = strchr(s, '@');
	if (n > TLSRPT_MAIL_MAX_ID || at == NULL || strchr(at + 1, '@') != NULL)
		return false;
	size_t ln = (size_t)(at - s);
	return dot_atom_ok(s, ln) && dot_atom_ok(at + 1, n - ln - 1);
}

static bool filename_ok(const char *s)
{
	static const char ext[] = ".json.gz";
	if (s == NULL)
		return false;
	size_t n = strlen(s);
	if (n <= strlen(ext) || n > TLSRPT_MAIL_MAX_FILENAME || strcmp(s + n - strlen(ext), ext))
		return false;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c <= 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '/')
			return false;
	}
	return true;
}

static bool summary_ok(const char *s)
{
	if (s == NULL || strlen(s) > TLSRPT_MAIL_MAX_SUMMARY)
		return false;
	for (; *s != '\0'; s++) {
		unsigned char c = (unsigned char)*s;
		if (c >= 0x7f || (c < 0x20 && c != '\t' && c != '\r' && c != '\n'))
			return false;
	}
	return true;
}

static int check_params(const struct tlsrpt_mail_params *p, char *err, size_t errlen)
{
	const char *what = NULL;
	if (!address_ok(p->from))
		what = "from address";
	else if (!address_ok(p->to))
		what = "to address";
	else if (p->policy_domain == NULL || !domain_ok(p->policy_domain, strlen(p->policy_domain)))
		what = "policy domain";
	else if (p->submitter == NULL || !domain_ok(p->submitter, strlen(p->submitter)))
		what = "submitter domain";
	else if (!report_id_ok(p->report_id))
		what = "report-id (want id-left@id-right)";
	else if (!filename_ok(p->filename))
		what = "report file name (want printable ASCII ending in .json.gz)";
	else if (!summary_ok(p->summary))
		what = "summary (want ASCII text)";
	else if (p->now < 0)
		what = "time";
	if (what != NULL) {
		errf(err, errlen, "TLS report mail: invalid %s", what);
		return -1;
	}
	if (p->report == NULL || p->report_len < 2 || p->report[0] != 0x1f ||
	    p->report[1] != 0x8b) {
		errf(err, errlen, "TLS report mail: the report is not gzip data (RPT-21)");
		return -1;
	}
	if (p->report_len > TLSRPT_MAIL_MAX_REPORT) {
		errf(err, errlen, "TLS report mail: report larger than %u octets",
			TLSRPT_MAIL_MAX_REPORT);
		return -1;
	}
	return 0;
}

/* --- parts ---------------------------------------------------------------- */

/* The summary with CR LF line ends, a final one, no line above MAX_LINE. */
static void build_text(struct part *p, const char *s)
{
	size_t col = 0;
	for (; *s != '\0'; s++) {
		if (*s == '\r' || *s == '\n') {
			if (*s == '\r' && s[1] == '\n')
				s++;
			part_puts(p, "\r\n");
			col = 0;
			continue;
		}
		if (col == MAX_LINE) {
			part_puts(p, "\r\n");
			col = 0;
		}
		part_put(p, s, 1);
		col++;
	}
	if (col > 0 || p->b.len == 0)
		part_puts(p, "\r\n");
}

static void build_base64(struct part *p, const unsigned char *d, size_t n)
{
	char line[B64_IN_LINE / 3 * 4 + 1];
	while (n > 0 && !p->err) {
		size_t k = n < B64_IN_LINE ? n : B64_IN_LINE;
		int r = EVP_EncodeBlock((unsigned char *)line, d, (int)k);
		if (r != (int)(4 * ((k + 2) / 3))) {
			p->err = true;
			break;
		}
		part_put(p, line, (size_t)r);
		part_puts(p, "\r\n");
		d += k;
		n -= k;
	}
}

static void clean_seed(char *dst, const char *seed)
{
	size_t o = 0;
	for (; seed != NULL && *seed != '\0' && o < MAX_SEED; seed++)
		if (is_alnum(*seed) || *seed == '-' || *seed == '_' || *seed == '.')
			dst[o++] = *seed;
	if (o == 0)
		dst[o++] = '0';
	dst[o] = '\0';
}

static int choose_boundary(char *dst, size_t dstlen, const char *seed, int64_t now,
			   const struct part *parts, size_t nparts)
{
	for (int t = 0; t < BOUNDARY_TRIES; t++) {
		if (t == 0)
			snprintf(dst, dstlen, "=_tlsrpt.%s.%lld", seed, (long long)now);
		else
			snprintf(dst, dstlen, "=_tlsrpt.%s.%lld.%d", seed, (long long)now, t);
		bool clash = false;
		for (size_t i = 0; i < nparts && !clash; i++)
			clash = buf_contains(&parts[i].b, dst);
		if (!clash)
			return 0;
	}
	return -1;
}

/* Subject (RPT-25): three keyword pieces, folded between them when long. */
static void put_subject(struct part *m, const struct tlsrpt_mail_params *p)
{
	char *pieces[3];
	pieces[0] = xasprintf("Report Domain: %s", p->policy_domain);
	pieces[1] = xasprintf("Submitter: %s", p->submitter);
	pieces[2] = xasprintf("Report-ID: <%s>", p->report_id);
	size_t col = strlen("Subject:");
	part_puts(m, "Subject:");
	for (size_t i = 0; i < 3; i++) {
		size_t n = strlen(pieces[i]);
		if (i > 0 && col + 1 + n > WRAP) {
			part_puts(m, "\r\n");
			col = 0;
		}
		part_puts(m, " ");
		part_puts(m, pieces[i]);
		col += 1 + n;
		free(pieces[i]);
	}
	part_puts(m, "\r\n");
}

static int build(const struct tlsrpt_mail_params *p, struct part *m, char *err, size_t errlen)
{
	if (check_params(p, err, errlen) < 0)
		return -1;
	struct part parts[2];
	part_init(&parts[0], 0);
	part_init(&parts[1], 0);
	build_text(&parts[0], p->summary);
	build_base64(&parts[1], p->report, p->report_len);

	int rc = -1;
	char seed[MAX_SEED + 1], boundary[MAX_BOUNDARY + 1], date[64];
	clean_seed(seed, p->seed);
	if (parts[0].err || parts[1].err) {
		errf(err, errlen, "TLS report mail: out of room");
		goto done;
	}
	if (choose_boundary(boundary, sizeof(boundary), seed, p->now, parts, 2) < 0) {
		errf(err, errlen, "TLS report mail: no boundary found");
		goto done;
	}
	fmt_time_rfc5322(date, sizeof(date), p->now);
	part_printf(m, "From: %s\r\n", p->from);
	part_printf(m, "To: %s\r\n", p->to);
	part_printf(m, "Date: %s\r\n", date);
	part_printf(m, "Message-ID: <tlsrpt.%lld.%s@%s>\r\n", (long long)p->now, seed,
		strrchr(p->from, '@') + 1);
	put_subject(m, p);
	part_printf(m, "TLS-Report-Domain: %s\r\n", p->policy_domain);
	part_printf(m, "TLS-Report-Submitter: %s\r\n", p->submitter);
	part_puts(m, "Auto-Submitted: auto-generated\r\n");
	part_puts(m, "TLS-Required: No\r\n");
	part_puts(m, "MIME-Version: 1.0\r\n");
	part_printf(m, "Content-Type: multipart/report; report-type=\"tlsrpt\";\r\n"
		   " boundary=\"%s\"\r\n", boundary);
	part_puts(m, "\r\nThis is a MIME-encapsulated message: an SMTP TLS report (RFC 8460).\r\n");
	part_printf(m, "\r\n--%s\r\n", boundary);
	part_puts(m, "Content-Type: text/plain; charset=us-ascii\r\n"
		 "Content-Transfer-Encoding: 7bit\r\n\r\n");
	part_put(m, parts[0].b.data, parts[0].b.len);
	part_printf(m, "\r\n--%s\r\n", boundary);
	part_puts(m, "Content-Type: application/tlsrpt+gzip\r\n"
		 "Content-Transfer-Encoding: base64\r\n");
	part_printf(m, "Content-Disposition: attachment;\r\n filename=\"%s\"\r\n\r\n", p->filename);
	part_put(m, parts[1].b.data, parts[1].b.len);
	part_printf(m, "\r\n--%s--\r\n", boundary);
	if (m->err) {
		errf(err, errlen, "TLS report mail: output buffer full");
		goto done;
	}
	rc = 0;
done:
	buf_free(&parts[0].b);
	buf_free(&parts[1].b);
	return rc;
}

int tlsrpt_mail_build(const struct tlsrpt_mail_params *p, struct buf *out, char *err,
		      size_t errlen)
{
	struct part m = { .b = *out, .err = false };
	size_t start = out->len;
	int rc = build(p, &m, err, errlen);
	if (rc < 0 && m.b.data != NULL && start <= m.b.len) {
		m.b.len = start;
		m.b.data[start] = '\0';
	}
	*out = m.b;
	return rc;
}

int tlsrpt_mail_sign(const struct tlsrpt_mail_params *p, const struct dkim_key *key,
		     const char *dkim_domain, const char *dkim_selector, struct buf *out,
		     char *err, size_t errlen)
{
	struct buf msg, sig;
	buf_init(&msg, 0);
	buf_init(&sig, 0);
	int rc = -1;
	if (tlsrpt_mail_build(p, &msg, err, errlen) < 0)
		goto done;
	if (key != NULL && dkim_sign(key, dkim_domain, dkim_selector, tlsrpt_mail_sign_headers,
				     msg.data, msg.len, p->now, &sig, err, errlen) < 0)
		goto done;
	size_t start = out->len;
	if (buf_append(out, sig.data != NULL ? sig.data : "", sig.len) < 0 ||
	    buf_append(out, msg.data, msg.len) < 0) {
		if (out->data != NULL && start <= out->len) {
			out->len = start;
			out->data[start] = '\0';
		}
		errf(err, errlen, "TLS report mail: output buffer full");
		goto done;
	}
	rc = 0;
done:
	buf_free(&msg);
	buf_free(&sig);
	return rc;
}
