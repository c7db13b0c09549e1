/* report.c - see report.h */
#include "report.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ZLIB_CONST
#include <zlib.h>

#include "mta/json.h"
#include "smtp/parse.h"

#define POLICY_NONE "no-policy-found"
#define IP_TEXT_MAX 64

static void set_why(char *why, size_t whylen, const char *fmt, ...) SR_PRINTF(3, 4);
static void set_why(char *why, size_t whylen, const char *fmt, ...)
{
	if (why == NULL || whylen == 0)
		return;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(why, whylen, fmt, ap);
	va_end(ap);
}

static const char *nz(const char *s)
{
	return s ? s : "";
}

/* An A-label domain name: LDH labels, no address literal, no trailing dot. */
static bool is_domain(const char *d)
{
	return d != NULL && d[0] != '[' && smtp_valid_domain(d, false);
}

static bool is_alnum(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

static char *lower_dup(const char *s)
{
	char *d = xstrdup(s);
	str_lower(d);
	return d;
}

/* Length of s cut to at most max octets without splitting a UTF-8
 * sequence (the cut backs up over continuation octets). */
static size_t cut_utf8(const char *s, size_t max)
{
	size_t n = strlen(s);
	if (n <= max)
		return n;
	n = max;
	while (n > 0 && ((unsigned char)s[n] & 0xc0) == 0x80)
		n--;
	return n;
}

/* Byte order of (a, an) and (b, bn); a shorter prefix sorts first. */
static int cmp_n(const char *a, size_t an, const char *b, size_t bn)
{
	int c = memcmp(a, b, an < bn ? an : bn);
	if (c != 0)
		return c;
	return an < bn ? -1 : an > bn ? 1 : 0;
}

/* --- "\n"-joined lines ---------------------------------------------------- */

/* The next non-empty line at *p (a trailing CR dropped); false at the end. */
static bool next_line(const char **p, const char **line, size_t *len)
{
	const char *s = *p;
	for (;;) {
		if (*s == '\0') {
			*p = s;
			return false;
		}
		const char *nl = strchr(s, '\n');
		size_t n = nl ? (size_t)(nl - s) : strlen(s);
		const char *next = nl ? nl + 1 : s + n;
		if (n > 0 && s[n - 1] == '\r')
			n--;
		if (n > 0) {
			*line = s;
			*len = n;
			*p = next;
			return true;
		}
		s = next;
	}
}

/* Compares two "\n"-joined texts as their sequences of non-empty lines. */
static int cmp_lines(const char *a, const char *b)
{
	for (;;) {
		const char *la, *lb;
		size_t na, nb;
		bool ha = next_line(&a, &la, &na);
		bool hb = next_line(&b, &lb, &nb);
		if (!ha || !hb)
			return ha ? 1 : hb ? -1 : 0;
		int c = cmp_n(la, na, lb, nb);
		if (c != 0)
			return c;
	}
}

static void split_lines(struct strlist *l, const char *s)
{
	const char *line;
	size_t n;
	while (next_line(&s, &line, &n))
		strlist_add_owned(l, xstrndup(line, n));
}

/* --- addresses -------------------------------------------------------------- */

bool tlsrpt_normalize_ip(const char *s, char *dst, size_t dstlen)
{
	struct in6_addr a6;
	struct in_addr a4;
	const char *ok = NULL;
	if (dstlen == 0)
		return false;
	s = nz(s);
	if (inet_pton(AF_INET6, s, &a6) == 1) {
		if (IN6_IS_ADDR_V4MAPPED(&a6))
			ok = inet_ntop(AF_INET, &a6.s6_addr[12], dst, (socklen_t)dstlen);
		else
			ok = inet_ntop(AF_INET6, &a6, dst, (socklen_t)dstlen);
	} else if (inet_pton(AF_INET, s, &a4) == 1) {
		ok = inet_ntop(AF_INET, &a4, dst, (socklen_t)dstlen);
	}
	if (ok != NULL)
		return true;
	snprintf(dst, dstlen, "%s", s);
	return false;
}

/* --- aggregation ----------------------------------------------------------- */

/* One row, classified and normalised. Strings borrowed from the row,
 * except mx_host. */
struct fact {
	const char *type;
	const char *strings;       /* "" for no-policy-found: not part of the key */
	const char *mx;
	bool success;
	const char *result_type;   /* failures only */
	char sending_ip[IP_TEXT_MAX];
	char mx_ip[IP_TEXT_MAX];
	char *mx_host;             /* owned: lower case, no trailing dot */
	const char *helo;
	size_t helo_len;
	const char *detail;
	size_t detail_len;
};

static int cmp_policy(const struct fact *a, const struct fact *b)
{
	int c = strcmp(a->type, b->type);
	if (c == 0)
		c = cmp_lines(a->strings, b->strings);
	if (c == 0)
		c = cmp_lines(a->mx, b->mx);
	return c;
}

/* The failure-details key; successes sort first. */
static int cmp_failure(const struct fact *a, const struct fact *b)
{
	if (a->success != b->success)
		return a->success ? -1 : 1;
	if (a->success)
		return 0;
	int c = strcmp(a->result_type, b->result_type);
	if (c == 0)
		c = strcmp(a->sending_ip, b->sending_ip);
	if (c == 0)
		c = strcmp(a->mx_host, b->mx_host);
	if (c == 0)
		c = cmp_n(a->helo, a->helo_len, b->helo, b->helo_len);
	if (c == 0)
		c = strcmp(a->mx_ip, b->mx_ip);
	return c;
}

static int cmp_fact(const void *pa, const void *pb)
{
	const struct fact *a = pa, *b = pb;
	int c = cmp_policy(a, b);
	if (c == 0)
		c = cmp_failure(a, b);
	if (c == 0)
		c = cmp_n(a->detail, a->detail_len, b->detail, b->detail_len);
	return c;
}

static bool valid_policy_type(const char *t)
{
	return strcmp(t, "sts") == 0 || strcmp(t, "tlsa") == 0 || strcmp(t, POLICY_NONE) == 0;
}

/* Fills f from row (rules in report.h). -1 + why for a row that breaks the
 * caller's contract. */
static int classify(const struct tlsrpt_report_params *p, const struct tlsrpt_session *row,
		    size_t i, struct fact *f, char *why, size_t whylen)
{
	char q[80];
	const char *type = nz(row->policy_type);
	if (!str_ieq(nz(row->policy_domain), p->policy_domain)) {
		set_why(why, whylen, "row %zu is for policy domain %s", i,
			str_quote(q, sizeof(q), nz(row->policy_domain)));
		return -1;
	}
	if (row->time < p->start || row->time >= p->end) {
		set_why(why, whylen, "row %zu: time %lld is outside the date range", i,
			(long long)row->time);
		return -1;
	}
	if (!valid_policy_type(type)) {
		set_why(why, whylen, "row %zu: unknown policy type %s", i,
			str_quote(q, sizeof(q), type));
		return -1;
	}
	bool none = strcmp(type, POLICY_NONE) == 0;
	const char *mx_host = nz(row->mx_host);
	const char *result = nz(row->result_type);

	memset(f, 0, sizeof(*f));
	f->type = type;
	f->strings = none ? "" : nz(row->policy_strings);
	f->mx = none ? "" : nz(row->policy_mx);
	if (mx_host[0] == '\0') {
		/* a policy fetch failure: no session with an MX */
		f->success = false;
		f->result_type = result;
	} else if (none) {
		f->success = row->tls;
		f->result_type = row->starttls_offered ? "validation-failure" :
							 "starttls-not-supported";
	} else {
		f->success = strcmp(result, "success") == 0;
		f->result_type = result;
	}
	if (f->success) {
		f->result_type = "";
		f->helo = f->detail = "";
		return 0;
	}
	if (f->result_type[0] == '\0' || strcmp(f->result_type, "success") == 0)
		f->result_type = "validation-failure";
	tlsrpt_normalize_ip(nz(row->sending_ip), f->sending_ip, sizeof(f->sending_ip));
	tlsrpt_normalize_ip(nz(row->mx_ip), f->mx_ip, sizeof(f->mx_ip));
	f->mx_host = lower_dup(mx_host);
	size_t n = strlen(f->mx_host);
	if (n > 0 && f->mx_host[n - 1] == '.')
		f->mx_host[n - 1] = '\0';
	f->helo = nz(row->mx_helo);
	f->helo_len = cut_utf8(f->helo, TLSRPT_HELO_MAX);
	f->detail = nz(row->detail);
	f->detail_len = cut_utf8(f->detail, TLSRPT_REASON_MAX);
	return 0;
}

/* The most frequent non-empty detail of facts[from..to) (sorted by detail
 * within the group); ties go to the first, the smallest. */
static char *pick_reason(const struct fact *facts, size_t from, size_t to)
{
	size_t best = to, best_n = 0;
	for (size_t i = from; i < to;) {
		size_t j = i + 1;
		while (j < to && cmp_n(facts[i].detail, facts[i].detail_len, facts[j].detail,
				       facts[j].detail_len) == 0)
			j++;
		if (facts[i].detail_len > 0 && j - i > best_n) {
			best = i;
			best_n = j - i;
		}
		i = j;
	}
	if (best == to)
		return xstrdup("");
	return xstrndup(facts[best].detail, facts[best].detail_len);
}

/* Builds one policy from facts[from..to), all with the same policy key. */
static void build_policy(struct tlsrpt_policy *pol, const struct fact *facts, size_t from,
			 size_t to)
{
	memset(pol, 0, sizeof(*pol));
	pol->type = xstrdup(facts[from].type);
	split_lines(&pol->strings, facts[from].strings);
	split_lines(&pol->mx, facts[from].mx);
	size_t i = from;
	while (i < to && facts[i].success) {
		pol->successes++;
		i++;
	}
	size_t cap = 0;
	while (i < to) {
		size_t j = i + 1;
		while (j < to && cmp_failure(&facts[i], &facts[j]) == 0)
			j++;
		if (pol->nfail == cap) {
			cap = cap ? 2 * cap : 4;
			pol->fail = xrealloc(pol->fail, cap * sizeof(*pol->fail));
		}
		struct tlsrpt_failure *fl = &pol->fail[pol->nfail++];
		const struct fact *f = &facts[i];
		fl->result_type = xstrdup(f->result_type);
		fl->sending_ip = xstrdup(f->sending_ip);
		fl->mx_host = xstrdup(f->mx_host);
		fl->mx_helo = xstrndup(f->helo, f->helo_len);
		fl->mx_ip = xstrdup(f->mx_ip);
		fl->reason = pick_reason(facts, i, j);
		fl->count = j - i;
		pol->failures += j - i;
		i = j;
	}
}

static bool valid_report_id(const char *s)
{
	size_t n = strlen(s);
	if (n == 0 || n > TLSRPT_REPORT_ID_MAX)
		return false;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c < 0x21 || c > 0x7e || c == '<' || c == '>')
			return false;
	}
	return true;
}

static int check_params(const struct tlsrpt_report_params *p, char *why, size_t whylen)
{
	char q[80];
	const char *org = nz(p->organization_name);
	if (org[0] == '\0' || strlen(org) > TLSRPT_ORG_MAX) {
		set_why(why, whylen, "organization-name is empty or longer than %d octets",
			TLSRPT_ORG_MAX);
		return -1;
	}
	char *submitter = tlsrpt_contact_domain(nz(p->contact_info));
	if (submitter == NULL) {
		set_why(why, whylen, "contact-info %s is not a mailbox with a domain name",
			str_quote(q, sizeof(q), nz(p->contact_info)));
		return -1;
	}
	free(submitter);
	if (!valid_report_id(nz(p->report_id))) {
		set_why(why, whylen, "bad report-id %s", str_quote(q, sizeof(q), nz(p->report_id)));
		return -1;
	}
	if (!is_domain(p->policy_domain)) {
		set_why(why, whylen, "bad policy domain %s",
			str_quote(q, sizeof(q), nz(p->policy_domain)));
		return -1;
	}
	if (p->start < 0 || p->end <= p->start || p->end > TLSRPT_TIME_MAX) {
		set_why(why, whylen, "bad date range %lld..%lld", (long long)p->start,
			(long long)p->end);
		return -1;
	}
	return 0;
}

int tlsrpt_report_build(const struct tlsrpt_report_params *p, const struct tlsrpt_session *rows,
			size_t nrows, struct tlsrpt_report *out, char *why, size_t whylen)
{
	memset(out, 0, sizeof(*out));
	set_why(why, whylen, "%s", "");
	if (check_params(p, why, whylen) < 0)
		return -1;
	if (nrows == 0 || rows == NULL) {
		set_why(why, whylen, "no sessions to report");
		return -1;
	}
	struct fact *facts = xcalloc(nrows, sizeof(*facts));
	size_t nfacts = 0;
	int rc = -1;
	for (size_t i = 0; i < nrows; i++) {
		if (classify(p, &rows[i], i, &facts[i], why, whylen) < 0)
			goto done;
		nfacts++;
	}
	qsort(facts, nfacts, sizeof(*facts), cmp_fact);

	out->organization_name = xstrdup(p->organization_name);
	out->contact_info = xstrdup(p->contact_info);
	out->report_id = xstrdup(p->report_id);
	out->policy_domain = lower_dup(p->policy_domain);
	out->start = p->start;
	out->end = p->end;
	size_t cap = 0;
	for (size_t i = 0; i < nfacts;) {
		size_t j = i + 1;
		while (j < nfacts && cmp_policy(&facts[i], &facts[j]) == 0)
			j++;
		if (out->npolicies == cap) {
			cap = cap ? 2 * cap : 2;
			out->policies = xrealloc(out->policies, cap * sizeof(*out->policies));
		}
		build_policy(&out->policies[out->npolicies++], facts, i, j);
		i = j;
	}
	rc = 0;
done:
	for (size_t i = 0; i < nfacts; i++)
		free(facts[i].mx_host);
	free(facts);
	return rc;
}

void tlsrpt_report_free(struct tlsrpt_report *r)
{
	for (size_t i = 0; i < r->npolicies; i++) {
		struct tlsrpt_policy *pol = &r->policies[i];
		for (size_t k = 0; k < pol->nfail; k++) {
			struct tlsrpt_failure *fl = &pol->fail[k];
			free(fl->result_type);
			free(fl->sending_ip);
			free(fl->mx_host);
			free(fl->mx_helo);
			free(fl->mx_ip);
			free(fl->reason);
		}
		free(pol->fail);
		free(pol->type);
		strlist_free(&pol->strings);
		strlist_free(&pol->mx);
	}
	free(r->policies);
	free(r->organization_name);
	free(r->contact_info);
	free(r->report_id);
	free(r->policy_domain);
	memset(r, 0, sizeof(*r));
}

/* --- JSON ------------------------------------------------------------------ */

static void json_kopt(struct json *j, const char *key, const char *s)
{
	if (s != NULL && s[0] != '\0')
		json_kstr(j, key, s);
}

static void json_kstrlist(struct json *j, const char *key, const struct strlist *l)
{
	json_key(j, key);
	json_arr(j);
	for (size_t i = 0; i < l->n; i++)
		json_str(j, l->v[i]);
	json_end(j);
}

static void write_failure(struct json *j, const struct tlsrpt_failure *fl)
{
	json_obj(j);
	json_kstr(j, "result-type", fl->result_type);
	json_kopt(j, "sending-mta-ip", fl->sending_ip);
	json_kopt(j, "receiving-mx-hostname", fl->mx_host);
	json_kopt(j, "receiving-mx-helo", fl->mx_helo);
	json_kopt(j, "receiving-ip", fl->mx_ip);
	json_kint(j, "failed-session-count", (int64_t)fl->count);
	json_kopt(j, "failure-reason-code", fl->reason);
	json_end(j);
}

static void write_policy(struct json *j, const struct tlsrpt_report *r,
			 const struct tlsrpt_policy *pol)
{
	bool none = strcmp(pol->type, POLICY_NONE) == 0;
	json_obj(j);
	json_key(j, "policy");
	json_obj(j);
	json_kstr(j, "policy-type", pol->type);
	if (!none)
		json_kstrlist(j, "policy-string", &pol->strings);
	json_kstr(j, "policy-domain", r->policy_domain);
	if (!none)
		json_kstrlist(j, "mx-host", &pol->mx);
	json_end(j);
	json_key(j, "summary");
	json_obj(j);
	json_kint(j, "total-successful-session-count", (int64_t)pol->successes);
	json_kint(j, "total-failure-session-count", (int64_t)pol->failures);
	json_end(j);
	json_key(j, "failure-details");
	json_arr(j);
	for (size_t k = 0; k < pol->nfail; k++)
		write_failure(j, &pol->fail[k]);
	json_end(j);
	json_end(j);
}

void tlsrpt_report_json(const struct tlsrpt_report *r, struct buf *out, bool pretty)
{
	char start[32], end[32];
	struct json j;
	fmt_time_iso(start, sizeof(start), r->start);
	fmt_time_iso(end, sizeof(end), r->end);
	json_init(&j, out, pretty);
	json_obj(&j);
	json_kstr(&j, "organization-name", r->organization_name);
	json_key(&j, "date-range");
	json_obj(&j);
	json_kstr(&j, "start-datetime", start);
	json_kstr(&j, "end-datetime", end);
	json_end(&j);
	json_kstr(&j, "contact-info", r->contact_info);
	json_kstr(&j, "report-id", r->report_id);
	json_key(&j, "policies");
	json_arr(&j);
	for (size_t i = 0; i < r->npolicies; i++)
		write_policy(&j, r, &r->policies[i]);
	json_end(&j);
	json_end(&j);
}

/* --- names ----------------------------------------------------------------- */

char *tlsrpt_contact_domain(const char *contact_info)
{
	const char *s = nz(contact_info);
	size_t n = strlen(s);
	if (n == 0 || !str_is_ascii(s, n))
		return NULL;
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)s[i] <= 0x20 || s[i] == 0x7f)
			return NULL;
	/* "<" addr ">": the form smtp_parse_path() checks */
	char *path = xasprintf("<%s>", s);
	char *p = path;
	struct smtp_path sp;
	const char *detail = NULL;
	char *domain = NULL;
	if (smtp_parse_path(&p, &sp, &detail) == SMTP_PARSE_OK && *p == '\0' &&
	    sp.addr == path + 1 && is_domain(sp.domain))
		domain = lower_dup(sp.domain);
	free(path);
	return domain;
}

char *tlsrpt_report_id(int64_t start, const char *policy_domain, const char *submitter,
		       const unsigned char rnd[TLSRPT_ID_RANDOM])
{
	if (!is_domain(policy_domain) || !is_domain(submitter) || start < 0 ||
	    start > TLSRPT_TIME_MAX)
		return NULL;
	char day[32], hex[2 * TLSRPT_ID_RANDOM + 1];
	fmt_time_iso(day, sizeof(day), start);
	day[10] = '\0'; /* "YYYY-MM-DD" */
	for (size_t i = 0; i < TLSRPT_ID_RANDOM; i++)
		snprintf(hex + 2 * i, 3, "%02x", rnd[i]);
	char *id = xasprintf("%s.%s.%s@%s", day, policy_domain, hex, submitter);
	str_lower(id);
	if (strlen(id) > TLSRPT_REPORT_ID_MAX) {
		free(id);
		return NULL;
	}
	return id;
}

char *tlsrpt_report_filename(const char *sender, const char *policy_domain, int64_t begin,
			     int64_t end, const char *unique_id, bool gzipped, char *why,
			     size_t whylen)
{
	char q[80];
	set_why(why, whylen, "%s", "");
	if (!is_domain(sender)) {
		set_why(why, whylen, "bad sender domain %s", str_quote(q, sizeof(q), nz(sender)));
		return NULL;
	}
	if (!is_domain(policy_domain)) {
		set_why(why, whylen, "bad policy domain %s",
			str_quote(q, sizeof(q), nz(policy_domain)));
		return NULL;
	}
	if (begin < 0 || end <= begin || end > TLSRPT_TIME_MAX) {
		set_why(why, whylen, "bad time range %lld..%lld", (long long)begin, (long long)end);
		return NULL;
	}
	if (unique_id != NULL) {
		size_t n = strlen(unique_id);
		bool ok = n > 0 && n <= TLSRPT_UNIQUE_ID_MAX;
		for (size_t i = 0; ok && i < n; i++)
			ok = is_alnum((unsigned char)unique_id[i]);
		if (!ok) {
			set_why(why, whylen, "bad unique-id %s",
				str_quote(q, sizeof(q), unique_id));
			return NULL;
		}
	}
	char *name = xasprintf("%s!%s!%lld!%lld%s%s.%s", sender, policy_domain, (long long)begin,
			       (long long)end, unique_id ? "!" : "", unique_id ? unique_id : "",
			       gzipped ? "json.gz" : "json");
	/* lower-case the two domains only: the unique-id keeps its case */
	size_t dn = strlen(sender) + 1 + strlen(policy_domain);
	for (size_t i = 0; i < dn; i++)
		if (name[i] >= 'A' && name[i] <= 'Z')
			name[i] = (char)(name[i] - 'A' + 'a');
	return name;
}

/* --- gzip ------------------------------------------------------------------ */

static voidpf z_alloc(voidpf opaque, uInt items, uInt size)
{
	(void)opaque;
	return xcalloc(items, size);
}

static void z_free(voidpf opaque, voidpf p)
{
	(void)opaque;
	free(p);
}

#define Z_CHUNK 16384
#define Z_FEED (1u << 30) /* input octets handed to zlib at a time (avail_in is a uInt) */

int tlsrpt_gzip(const void *in, size_t len, struct buf *out)
{
	z_stream z;
	memset(&z, 0, sizeof(z));
	z.zalloc = z_alloc;
	z.zfree = z_free;
	if (deflateInit2(&z, 9, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK)
		return -1;
	const unsigned char *p = in;
	size_t left = len;
	unsigned char chunk[Z_CHUNK];
	int rc = -1, zr;
	do {
		if (z.avail_in == 0 && left > 0) {
			uInt n = left > Z_FEED ? Z_FEED : (uInt)left;
			z.next_in = p;
			z.avail_in = n;
			p += n;
			left -= n;
		}
		z.next_out = chunk;
		z.avail_out = sizeof(chunk);
		zr = deflate(&z, left == 0 ? Z_FINISH : Z_NO_FLUSH);
		if (zr == Z_STREAM_ERROR)
			goto done;
		size_t have = sizeof(chunk) - z.avail_out;
		if (have > 0 && buf_append(out, chunk, have) < 0)
			goto done;
	} while (zr != Z_STREAM_END);
	rc = 0;
done:
	deflateEnd(&z);
	return rc;
}

int tlsrpt_gunzip(const void *in, size_t len, struct buf *out, size_t max)
{
	z_stream z;
	memset(&z, 0, sizeof(z));
	z.zalloc = z_alloc;
	z.zfree = z_free;
	if (inflateInit2(&z, 15 + 16) != Z_OK)
		return -1;
	const unsigned char *p = in;
	size_t left = len, total = 0;
	unsigned char chunk[Z_CHUNK];
	int rc = -1, zr;
	do {
		if (z.avail_in == 0 && left > 0) {
			uInt n = left > Z_FEED ? Z_FEED : (uInt)left;
			z.next_in = p;
			z.avail_in = n;
			p += n;
			left -= n;
		}
		z.next_out = chunk;
		z.avail_out = sizeof(chunk);
		zr = inflate(&z, Z_NO_FLUSH);
		if (zr != Z_OK && zr != Z_STREAM_END && zr != Z_BUF_ERROR)
			goto done; /* data, dictionary, memory or stream error */
		size_t have = sizeof(chunk) - z.avail_out;
		if (zr == Z_BUF_ERROR && have == 0 && z.avail_in == 0 && left == 0)
			goto done; /* truncated */
		total += have;
		if (max > 0 && total > max)
			goto done;
		if (have > 0 && buf_append(out, chunk, have) < 0)
			goto done;
	} while (zr != Z_STREAM_END);
	if (z.avail_in == 0 && left == 0)
		rc = 0; /* else octets after the member */
done:
	inflateEnd(&z);
	return rc;
}
