/* https.c - see https.h */
#include "https.h"

#include <curl/curl.h>
#include <errno.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/opensslv.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mta/log.h"
#include "mta/netaddr.h"
#include "mta/util.h"
#include "policy/dns.h"
#include "policy/resolver.h"

#define SHUTDOWN_DETAIL "shutting down"
#define DEFAULT_USER_AGENT "strictrelay/" STRICTRELAY_VERSION
#define HEADER_VALUE_MAX 127

/*
 * Where an op is. DNS: our resolver has the name (op->dq). CURL: the easy
 * handle is in the multi. DONE: the result waits on c->done for the idle
 * handle to deliver it. An op being delivered is on no list.
 */
enum op_phase { OP_DNS, OP_CURL, OP_DONE };

struct op_list {
	struct https_op *head, *tail;
};

/* One socket curl asked us to watch. */
struct sockpoll {
	uv_poll_t poll;
	struct https_client *c;
	curl_socket_t fd;
	struct sockpoll *prev, *next;  /* c->polls: watched, not closing */
};

struct https_op {
	struct https_client *c;
	enum op_phase phase;
	struct op_list *list;            /* c->active, c->done or NULL */
	struct https_op *prev, *next;
	https_cb *cb;
	void *arg;
	bool delivering;                 /* inside its callback */

	char host[DNS_NAME_MAX + 1];     /* normalized */
	uint16_t port;
	bool post;
	char *url;
	char *body;                      /* POST: our copy */
	size_t body_len;
	size_t max_body;
	char *content_type;              /* POST */
	char *user_agent;
	uint64_t started, deadline;      /* now_ms() */

	struct dns_query *dq;            /* OP_DNS */
	CURL *easy;
	bool in_multi;
	struct curl_slist *headers, *resolve;
	char only_addr[64];              /* the address when DNS gave just one */
	char errbuf[CURL_ERROR_SIZE];
	struct buf resp;                 /* response body, capped at max_body */
	bool too_big;                    /* our write callback refused a byte */
	struct https_response res;
};

struct https_client {
	uv_loop_t *loop;
	struct resolver *resolver;
	char *ca_file;                   /* NULL: curl's built-in system store */
	CURLM *multi;
	uv_timer_t curl_timer;           /* CURLMOPT_TIMERFUNCTION */
	uv_timer_t dns_timer;            /* deadlines of ops in OP_DNS */
	uv_idle_t idle;                  /* delivers c->done */
	int open_handles;                /* the three above and the sockpolls */
	bool freeing;
	struct sockpoll *polls;
	struct op_list active;           /* OP_DNS and OP_CURL */
	struct op_list done;             /* OP_DONE, oldest first */
	size_t nops;                     /* ops not yet freed (delivering included) */
};

const char *https_error_name(enum https_error e)
{
	static const char *const names[] = {
		[HTTPS_OK] = "OK",             [HTTPS_DNS] = "DNS",
		[HTTPS_CONNECT] = "CONNECT",   [HTTPS_CERT] = "CERT",
		[HTTPS_TLS] = "TLS",           [HTTPS_TIMEOUT] = "TIMEOUT",
		[HTTPS_TOO_BIG] = "TOO_BIG",   [HTTPS_PROTOCOL] = "PROTOCOL",
		[HTTPS_SHUTDOWN] = "SHUTDOWN", [HTTPS_INVALID] = "INVALID",
		[HTTPS_INTERNAL] = "INTERNAL",
	};
	if ((size_t)e < SR_ARRAY_LEN(names) && names[e] != NULL)
		return names[e];
	return "UNKNOWN";
}

/* --- global ------------------------------------------------------------------ */

int https_global_init(char *err, size_t errlen)
{
	CURLcode rc = curl_global_init(CURL_GLOBAL_DEFAULT);
	if (rc != CURLE_OK) {
		snprintf(err, errlen, "curl_global_init: %s", curl_easy_strerror(rc));
		return -1;
	}
	return 0;
}

void https_global_cleanup(void)
{
	curl_global_cleanup();
}

/* --- op lists ------------------------------------------------------------------ */

static void list_push(struct op_list *l, struct https_op *op)
{
	op->list = l;
	op->next = NULL;
	op->prev = l->tail;
	if (l->tail != NULL)
		l->tail->next = op;
	else
		l->head = op;
	l->tail = op;
}

static void list_unlink(struct https_op *op)
{
	struct op_list *l = op->list;
	if (l == NULL)
		return;
	if (op->prev != NULL)
		op->prev->next = op->next;
	else
		l->head = op->next;
	if (op->next != NULL)
		op->next->prev = op->prev;
	else
		l->tail = op->prev;
	op->prev = op->next = NULL;
	op->list = NULL;
}

/* --- handles ------------------------------------------------------------------- */

static void handle_closed(struct https_client *c)
{
	if (--c->open_handles == 0 && c->freeing) {
		free(c->ca_file);
		free(c);
	}
}

static void on_own_handle_closed(uv_handle_t *h)
{
	handle_closed(h->data);
}

static void on_poll_closed(uv_handle_t *h)
{
	struct sockpoll *sp = h->data;
	struct https_client *c = sp->c;
	free(sp);
	handle_closed(c);
}

/* Unlinked at once: curl may open a new socket with the same number before
 * the close completes (uv_close stops the watcher synchronously, so a new
 * uv_poll_t on that fd is fine). */
static void sockpoll_close(struct sockpoll *sp)
{
	struct https_client *c = sp->c;
	if (sp->prev != NULL)
		sp->prev->next = sp->next;
	else
		c->polls = sp->next;
	if (sp->next != NULL)
		sp->next->prev = sp->prev;
	uv_close((uv_handle_t *)&sp->poll, on_poll_closed);
}

/* --- results -------------------------------------------------------------------- */

static void op_release_curl(struct https_op *op)
{
	if (op->easy != NULL) {
		if (op->in_multi) {
			CURLMcode mc = curl_multi_remove_handle(op->c->multi, op->easy);
			if (mc != CURLM_OK)
				log_error("https", "curl_multi_remove_handle: %s", curl_multi_strerror(mc));
			op->in_multi = false;
		}
		curl_easy_cleanup(op->easy);
		op->easy = NULL;
	}
	curl_slist_free_all(op->headers);
	op->headers = NULL;
	curl_slist_free_all(op->resolve);
	op->resolve = NULL;
}

static void op_free(struct https_op *op)
{
	op->c->nops--;
	op_release_curl(op);
	buf_free(&op->resp);
	free(op->url);
	free(op->body);
	free(op->content_type);
	free(op->user_agent);
	free(op);
}

static void on_idle(uv_idle_t *h);
static void on_dns_timer(uv_timer_t *t);

/*
 * The op has its result: onto the done list, delivered from the idle handle.
 * Never calls the callback itself: whoever called us (https_request, curl's
 * info loop, the resolver, a timer) must not see user code run inside it.
 */
static void op_finish(struct https_op *op, enum https_error e, const char *fmt, ...)
	SR_PRINTF(3, 4);
static void op_finish(struct https_op *op, enum https_error e, const char *fmt, ...)
{
	struct https_client *c = op->c;
	op->res.error = e;
	if (fmt != NULL) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(op->res.detail, sizeof(op->res.detail), fmt, ap);
		va_end(ap);
	}
	if (e != HTTPS_CERT)
		op->res.verify_result = 0;
	op->res.elapsed_ms = (unsigned)(now_ms() - op->started);
	list_unlink(op);
	op->phase = OP_DONE;
	list_push(&c->done, op);
	if (!c->freeing) {
		int rc = uv_idle_start(&c->idle, on_idle);
		if (rc < 0)
			panic("https: uv_idle_start: %s", uv_strerror(rc));
	}
}

static void deliver(struct https_op *op)
{
	struct https_response *res = &op->res;
	if (res->error == HTTPS_OK && op->resp.data != NULL) {
		res->body = op->resp.data;
		res->body_len = op->resp.len;
	} else {
		res->body = "";
		res->body_len = 0;
	}
	if (log_debug_enabled()) {
		char detail[300];
		log_debug("https", "done host=%s port=%u status=%d error=%s ip=%s body_len=%zu "
			  "elapsed_ms=%u detail=%s", op->host, op->port, res->status,
			  https_error_name(res->error), res->ip[0] ? res->ip : "-", res->body_len,
			  res->elapsed_ms, str_quote(detail, sizeof(detail), res->detail));
	}
	op->delivering = true;
	op->cb(op->arg, res);
	op_free(op);
}

/*
 * Delivers the done list in order. A callback may add to it (a request
 * refused at once, or anything during https_client_free), cancel entries
 * (they leave the list) or free the client (which delivers the rest itself:
 * the list is then empty and c stays allocated until its handles close).
 */
static void deliver_all(struct https_client *c)
{
	struct https_op *op;
	while ((op = c->done.head) != NULL) {
		list_unlink(op);
		deliver(op);
	}
}

static void on_idle(uv_idle_t *h)
{
	struct https_client *c = h->data;
	deliver_all(c);
	if (!c->freeing && c->done.head == NULL)
		uv_idle_stop(h);
}

/* --- curl results ------------------------------------------------------------------ */

/* See the table in https.h. */
static enum https_error map_curl_error(CURLcode rc, bool too_big)
{
	switch (rc) {
	case CURLE_OK:
		return HTTPS_OK;
	case CURLE_COULDNT_RESOLVE_HOST:
		return HTTPS_DNS;
	case CURLE_COULDNT_CONNECT:
	case CURLE_SEND_ERROR:
	case CURLE_RECV_ERROR:
		return HTTPS_CONNECT;
	case CURLE_PEER_FAILED_VERIFICATION:
		return HTTPS_CERT;
	case CURLE_SSL_CONNECT_ERROR:
	case CURLE_SSL_CIPHER:
	case CURLE_SSL_CERTPROBLEM:
	case CURLE_SSL_ENGINE_NOTFOUND:
	case CURLE_SSL_ENGINE_SETFAILED:
	case CURLE_SSL_ENGINE_INITFAILED:
	case CURLE_SSL_SHUTDOWN_FAILED:
	case CURLE_SSL_CRL_BADFILE:
	case CURLE_SSL_ISSUER_ERROR:
	case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
	case CURLE_SSL_INVALIDCERTSTATUS:
	case CURLE_SSL_CLIENTCERT:
	case CURLE_USE_SSL_FAILED:
		return HTTPS_TLS;
	case CURLE_OPERATION_TIMEDOUT:
		return HTTPS_TIMEOUT;
	case CURLE_FILESIZE_EXCEEDED:
		return HTTPS_TOO_BIG;
	case CURLE_WRITE_ERROR:
		/* Our write callback refuses only bytes over the cap. */
		return too_big ? HTTPS_TOO_BIG : HTTPS_INTERNAL;
	case CURLE_OUT_OF_MEMORY:
	case CURLE_SSL_CACERT_BADFILE:
	case CURLE_FAILED_INIT:
	case CURLE_NOT_BUILT_IN:
	case CURLE_BAD_FUNCTION_ARGUMENT:
	case CURLE_SETOPT_OPTION_SYNTAX:
	case CURLE_ABORTED_BY_CALLBACK:   /* our socket callback failed */
		return HTTPS_INTERNAL;
	default:
		/* CURLE_GOT_NOTHING, CURLE_WEIRD_SERVER_REPLY, CURLE_PARTIAL_FILE,
		 * CURLE_UNSUPPORTED_PROTOCOL (an HTTP/0.9 reply), HTTP/2 errors... */
		return HTTPS_PROTOCOL;
	}
}

static void copy_str(char *dst, size_t dstlen, const char *src)
{
	snprintf(dst, dstlen, "%s", src != NULL ? src : "");
}

/* A transfer ended (CURLMSG_DONE): collect what curl knows, then drop the
 * easy handle (the CURLMsg dies with it). */
static void op_complete(struct https_op *op, CURLcode rc)
{
	struct https_response *res = &op->res;
	long code = 0, verify = 0;
	char *ct = NULL, *ip = NULL;
	CURLcode g = curl_easy_getinfo(op->easy, CURLINFO_RESPONSE_CODE, &code);
	if (g == CURLE_OK)
		res->status = (int)code;
	g = curl_easy_getinfo(op->easy, CURLINFO_CONTENT_TYPE, &ct);
	if (g == CURLE_OK)
		copy_str(res->content_type, sizeof(res->content_type), ct);
	g = curl_easy_getinfo(op->easy, CURLINFO_PRIMARY_IP, &ip);
	if (g == CURLE_OK)
		copy_str(res->ip, sizeof(res->ip), ip);
	g = curl_easy_getinfo(op->easy, CURLINFO_SSL_VERIFYRESULT, &verify);
	if (g == CURLE_OK)
		res->verify_result = verify;
	op_release_curl(op);
	/* curl names no address when every connect failed; with one address
	 * there is no doubt which one it was (TLSRPT wants it). */
	if (res->ip[0] == '\0')
		copy_str(res->ip, sizeof(res->ip), op->only_addr);

	enum https_error e = map_curl_error(rc, op->too_big);
	if (e == HTTPS_OK) {
		op_finish(op, e, NULL);
	} else if (e == HTTPS_TOO_BIG) {
		op_finish(op, e, "response body exceeds %zu bytes", op->max_body);
	} else {
		size_t n = strlen(op->errbuf);
		while (n > 0 && (op->errbuf[n - 1] == ' ' || op->errbuf[n - 1] == '\n'))
			op->errbuf[--n] = '\0';
		op_finish(op, e, "%s (curl %d)", n > 0 ? op->errbuf : curl_easy_strerror(rc), (int)rc);
	}
}

/* Drained after every curl_multi_socket_action (multi-uv.c's check_multi_info). */
static void drain_info(struct https_client *c)
{
	CURLMsg *m;
	int left;
	while ((m = curl_multi_info_read(c->multi, &left)) != NULL) {
		if (m->msg != CURLMSG_DONE)
			continue;
		CURL *easy = m->easy_handle;
		CURLcode rc = m->data.result;
		void *priv = NULL;
		CURLcode g = curl_easy_getinfo(easy, CURLINFO_PRIVATE, &priv);
		if (g != CURLE_OK || priv == NULL)
			panic("https: a finished transfer without its op (%s)", curl_easy_strerror(g));
		op_complete(priv, rc);
	}
}

static void socket_action(struct https_client *c, curl_socket_t fd, int flags)
{
	int running;
	CURLMcode mc = curl_multi_socket_action(c->multi, fd, flags, &running);
	if (mc != CURLM_OK)
		log_error("https", "curl_multi_socket_action: %s", curl_multi_strerror(mc));
	drain_info(c);
	/* curl leaves OpenSSL errors of failed handshakes in this thread's
	 * queue; our SMTP sessions share the thread (smtp/tls.c clears too). */
	ERR_clear_error();
}

/* --- curl's socket and timer callbacks ---------------------------------------------- */

static void on_poll(uv_poll_t *h, int status, int events)
{
	struct sockpoll *sp = h->data;
	int flags = 0;
	if (status < 0) {
		/* libuv stopped watching; let curl find out what is wrong
		 * with the socket and fail or move on. */
		flags = CURL_CSELECT_ERR;
	} else {
		if (events & UV_READABLE)
			flags |= CURL_CSELECT_IN;
		if (events & UV_WRITABLE)
			flags |= CURL_CSELECT_OUT;
	}
	/* sp stays allocated through this call even if curl asks us to stop
	 * watching the socket: it is freed in its close callback. */
	socket_action(sp->c, sp->fd, flags);
}

/*
 * CURLMOPT_SOCKETFUNCTION: watch s for what curl wants, or stop. Returning
 * -1 makes curl fail every transfer in progress (CURLE_ABORTED_BY_CALLBACK,
 * HTTPS_INTERNAL): better than a transfer that silently never progresses.
 */
static int on_curl_socket(CURL *easy, curl_socket_t s, int what, void *userp, void *socketp)
{
	struct https_client *c = userp;
	struct sockpoll *sp = socketp;
	(void)easy;
	if (what == CURL_POLL_REMOVE) {
		/* curl forgets its socketp for s right after this call. */
		if (sp != NULL)
			sockpoll_close(sp);
		return 0;
	}
	if (c->freeing)
		return 0;  /* nothing will drive curl any more */
	if (sp == NULL) {
		sp = xcalloc(1, sizeof(*sp));
		int e = uv_poll_init_socket(c->loop, &sp->poll, s);
		if (e < 0) {
			log_error("https", "cannot watch socket fd=%d: %s", (int)s, uv_strerror(e));
			free(sp);
			return -1;
		}
		sp->c = c;
		sp->fd = s;
		sp->poll.data = sp;
		sp->next = c->polls;
		if (c->polls != NULL)
			c->polls->prev = sp;
		c->polls = sp;
		c->open_handles++;
		CURLMcode mc = curl_multi_assign(c->multi, s, sp);
		if (mc != CURLM_OK) {
			log_error("https", "curl_multi_assign: %s", curl_multi_strerror(mc));
			sockpoll_close(sp);
			return -1;
		}
	}
	int events = 0;
	if (what & CURL_POLL_IN)
		events |= UV_READABLE;
	if (what & CURL_POLL_OUT)
		events |= UV_WRITABLE;
	int e = uv_poll_start(&sp->poll, events, on_poll);
	if (e < 0) {
		log_error("https", "cannot watch socket fd=%d: %s", (int)s, uv_strerror(e));
		return -1;
	}
	return 0;
}

static void on_curl_timeout(uv_timer_t *t)
{
	socket_action(t->data, CURL_SOCKET_TIMEOUT, 0);
}

/* CURLMOPT_TIMERFUNCTION: one timer for the whole multi handle. */
static int on_curl_timer(CURLM *multi, long timeout_ms, void *userp)
{
	struct https_client *c = userp;
	(void)multi;
	if (c->freeing)
		return 0;
	if (timeout_ms < 0) {
		uv_timer_stop(&c->curl_timer);
		return 0;
	}
	/* 0 means "act now", but we are inside a curl call and must not
	 * call curl_multi_socket_action from here: in 1 ms, from the loop. */
	uint64_t ms = timeout_ms == 0 ? 1 : (uint64_t)timeout_ms;
	int e = uv_timer_start(&c->curl_timer, on_curl_timeout, ms, 0);
	if (e < 0) {
		log_error("https", "uv_timer_start: %s", uv_strerror(e));
		return -1;
	}
	return 0;
}

/* --- per-transfer curl callbacks ------------------------------------------------ */

/* CURLOPT_WRITEFUNCTION: keep the body, up to the cap and not a byte more. */
static size_t on_body(char *ptr, size_t size, size_t nmemb, void *userdata)
{
	struct https_op *op = userdata;
	size_t n = size * nmemb;  /* size is always 1 */
	if (buf_append(&op->resp, ptr, n) < 0) {
		op->too_big = true;
		return CURL_WRITEFUNC_ERROR;
	}
	return n;
}

/*
 * CURLOPT_SSL_CTX_FUNCTION, called for each new connection before curl
 * creates the SSL from this SSL_CTX (which then inherits the parameters).
 * curl's own host name check falls back to the subject CN when the
 * certificate has no subjectAltName (and so does OpenSSL's by default): a
 * CN-only certificate would pass. RFC 8461 3.3 / NAME-01 want a SAN dNSName
 * only, so OpenSSL checks the name itself during the chain verification,
 * with the CN never consulted and no partial wildcards (NAME-03); a mismatch
 * fails the handshake with X509_V_ERR_HOSTNAME_MISMATCH before curl looks.
 */
static CURLcode on_ssl_ctx(CURL *easy, void *sslctx, void *parm)
{
	struct https_op *op = parm;
	SSL_CTX *ctx = sslctx;
	(void)easy;
	X509_VERIFY_PARAM *p = SSL_CTX_get0_param(ctx);
	X509_VERIFY_PARAM_set_hostflags(p, X509_CHECK_FLAG_NEVER_CHECK_SUBJECT |
					   X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
	if (X509_VERIFY_PARAM_set1_host(p, op->host, 0) != 1 ||
	    X509_VERIFY_PARAM_set_purpose(p, X509_PURPOSE_SSL_SERVER) != 1 ||
	    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1) {
		snprintf(op->errbuf, sizeof(op->errbuf), "cannot set up the certificate check");
		return CURLE_SSL_CONNECT_ERROR;
	}
	return CURLE_OK;
}

/* --- easy handle set-up ------------------------------------------------------------- */

#define SETOPT(easy, opt, val)                                                              \
	do {                                                                                \
		CURLcode rc_ = curl_easy_setopt(easy, opt, val);                            \
		if (rc_ != CURLE_OK) {                                                      \
			snprintf(err, errlen, "curl_easy_setopt(%s): %s", #opt,             \
				 curl_easy_strerror(rc_));                                   \
			return -1;                                                          \
		}                                                                           \
	} while (0)

/*
 * Everything but CURLOPT_RESOLVE and CURLOPT_TIMEOUT_MS, which wait for the
 * DNS answer. Each option is a rule of https.h, not a preference.
 */
static int easy_setup(struct https_op *op, const char *ca_file, char *err, size_t errlen)
{
	CURL *e = op->easy;
	SETOPT(e, CURLOPT_URL, op->url);
	SETOPT(e, CURLOPT_PRIVATE, (void *)op);
	SETOPT(e, CURLOPT_ERRORBUFFER, op->errbuf);
	SETOPT(e, CURLOPT_NOSIGNAL, 1L);
	SETOPT(e, CURLOPT_PROTOCOLS_STR, "https");
	SETOPT(e, CURLOPT_REDIR_PROTOCOLS_STR, "https");
	SETOPT(e, CURLOPT_FOLLOWLOCATION, 0L);
	SETOPT(e, CURLOPT_MAXREDIRS, 0L);
	/* "" disables proxies, also those named in the environment. */
	SETOPT(e, CURLOPT_PROXY, "");
	SETOPT(e, CURLOPT_NOPROXY, "*");
	SETOPT(e, CURLOPT_NETRC, (long)CURL_NETRC_IGNORED);
	/* No Accept-Encoding: max_body counts the bytes as sent, and nothing
	 * small on the wire can inflate past the cap. */
	SETOPT(e, CURLOPT_ACCEPT_ENCODING, (char *)NULL);
	SETOPT(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
	SETOPT(e, CURLOPT_SSLVERSION, (long)CURL_SSLVERSION_TLSv1_2);
	SETOPT(e, CURLOPT_SSL_VERIFYPEER, 1L);
	SETOPT(e, CURLOPT_SSL_VERIFYHOST, 2L);
	/* Trust exactly ca_file, or else the system bundle. No CA directory:
	 * Debian's curl would also consult /etc/ssl/certs next to ca_file,
	 * and with a CA directory curl 7.88 does not cache the X509_STORE, so
	 * every connection would parse the whole bundle on the loop thread. */
	if (ca_file != NULL)
		SETOPT(e, CURLOPT_CAINFO, ca_file);
	SETOPT(e, CURLOPT_CAPATH, (char *)NULL);
	SETOPT(e, CURLOPT_SSL_CTX_FUNCTION, on_ssl_ctx);
	SETOPT(e, CURLOPT_SSL_CTX_DATA, (void *)op);
	/* A full handshake on a new connection every time (https.h). */
	SETOPT(e, CURLOPT_SSL_SESSIONID_CACHE, 0L);
	SETOPT(e, CURLOPT_FRESH_CONNECT, 1L);
	SETOPT(e, CURLOPT_FORBID_REUSE, 1L);
	SETOPT(e, CURLOPT_WRITEFUNCTION, on_body);
	SETOPT(e, CURLOPT_WRITEDATA, (void *)op);
	/* An announced Content-Length over the cap fails before the body;
	 * on_body catches chunked and close-delimited bodies. */
	SETOPT(e, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)op->max_body);
	SETOPT(e, CURLOPT_USERAGENT, op->user_agent);
	if (op->post) {
		char *h = xasprintf("Content-Type: %s", op->content_type);
		struct curl_slist *l = curl_slist_append(op->headers, h);
		free(h);
		if (l != NULL) {
			op->headers = l;
			/* No "Expect: 100-continue" round trip for big reports. */
			l = curl_slist_append(op->headers, "Expect:");
		}
		if (l == NULL) {
			snprintf(err, errlen, "curl_slist_append: out of memory");
			return -1;
		}
		op->headers = l;
		SETOPT(e, CURLOPT_HTTPHEADER, op->headers);
		SETOPT(e, CURLOPT_POST, 1L);
		SETOPT(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)op->body_len);
		SETOPT(e, CURLOPT_POSTFIELDS, op->body);
	} else {
		SETOPT(e, CURLOPT_HTTPGET, 1L);
	}
	return 0;
}

/* --- DNS phase --------------------------------------------------------------------- */

/* Follows the earliest deadline of the ops still resolving. */
static void dns_timer_arm(struct https_client *c)
{
	if (c->freeing)
		return;
	uint64_t first = UINT64_MAX;
	for (struct https_op *op = c->active.head; op != NULL; op = op->next) {
		if (op->phase == OP_DNS && op->deadline < first)
			first = op->deadline;
	}
	if (first == UINT64_MAX) {
		uv_timer_stop(&c->dns_timer);
		return;
	}
	uint64_t now = now_ms();
	int e = uv_timer_start(&c->dns_timer, on_dns_timer, first > now ? first - now : 0, 0);
	if (e < 0)
		panic("https: uv_timer_start: %s", uv_strerror(e));
}

static void on_dns_timer(uv_timer_t *t)
{
	struct https_client *c = t->data;
	uint64_t now = now_ms();
	struct https_op *op = c->active.head;
	while (op != NULL) {
		struct https_op *next = op->next;  /* op_finish moves op to c->done */
		if (op->phase == OP_DNS && op->deadline <= now) {
			dns_query_cancel(op->dq);
			op->dq = NULL;
			op_finish(op, HTTPS_TIMEOUT, "timed out after %u ms resolving %s",
				  (unsigned)(now - op->started), op->host);
		}
		op = next;
	}
	dns_timer_arm(c);
}

/* "[2001:db8::1]" for CURLOPT_RESOLVE, "192.0.2.1" as it is. */
static void resolve_addr(struct buf *b, const struct sockaddr_storage *ss)
{
	char ip[64];
	sockaddr_format((const struct sockaddr *)ss, ip, sizeof(ip), NULL);
	if (ss->ss_family == AF_INET6)
		buf_printf(b, "[%s]", ip);
	else
		buf_puts(b, ip);
}

/* Our resolver answered: hand curl the addresses and start the transfer. */
static void on_dns(void *arg, const struct dns_result *res)
{
	struct https_op *op = arg;
	struct https_client *c = op->c;
	op->dq = NULL;
	if (res->status != DNS_OK || res->naddrs == 0) {
		op_finish(op, HTTPS_DNS, "%s %s%s%s", op->host, dns_status_name(res->status),
			  res->detail[0] ? ": " : "", res->detail);
		return;
	}
	uint64_t now = now_ms();
	if (now >= op->deadline) {
		op_finish(op, HTTPS_TIMEOUT, "timed out after %u ms resolving %s",
			  (unsigned)(now - op->started), op->host);
		return;
	}
	/* "host:port:ip1,ip2,...": curl takes the name as resolved and tries
	 * the addresses in order (IPv4 first, dns_addrs_order). */
	struct buf b;
	buf_init(&b, 0);
	buf_printf(&b, "%s:%u:", op->host, op->port);
	for (size_t i = 0; i < res->naddrs && i < HTTPS_MAX_ADDRS; i++) {
		if (i > 0)
			buf_putc(&b, ',');
		resolve_addr(&b, &res->addrs[i]);
	}
	if (res->naddrs == 1)
		sockaddr_format((const struct sockaddr *)&res->addrs[0], op->only_addr,
				sizeof(op->only_addr), NULL);
	op->resolve = curl_slist_append(NULL, b.data);
	buf_free(&b);
	if (op->resolve == NULL) {
		op_finish(op, HTTPS_INTERNAL, "curl_slist_append: out of memory");
		return;
	}
	CURLcode rc = curl_easy_setopt(op->easy, CURLOPT_RESOLVE, op->resolve);
	if (rc == CURLE_OK)
		rc = curl_easy_setopt(op->easy, CURLOPT_TIMEOUT_MS, (long)(op->deadline - now));
	if (rc != CURLE_OK) {
		op_finish(op, HTTPS_INTERNAL, "curl_easy_setopt: %s", curl_easy_strerror(rc));
		return;
	}
	CURLMcode mc = curl_multi_add_handle(c->multi, op->easy);
	if (mc != CURLM_OK) {
		op_finish(op, HTTPS_INTERNAL, "curl_multi_add_handle: %s", curl_multi_strerror(mc));
		return;
	}
	op->in_multi = true;
	op->phase = OP_CURL;
	dns_timer_arm(c);  /* curl's timeout takes over from ours */
}

/* --- requests ------------------------------------------------------------------------ */

/* Printable ASCII, no CR/LF: safe inside a request line or header. */
static bool header_safe(const char *s, size_t max, bool allow_space)
{
	size_t n = 0;
	for (const unsigned char *p = (const unsigned char *)s; *p != '\0'; p++, n++) {
		if (n >= max || *p > 0x7e || *p < 0x20 || (*p == ' ' && !allow_space))
			return false;
	}
	return true;
}

/* 0, or -1 with the reason in err. Fills op's copies. */
static int request_check(struct https_op *op, const struct https_request *req, char *err,
			 size_t errlen)
{
	if (req->method == NULL || (strcmp(req->method, "GET") != 0 &&
				    strcmp(req->method, "POST") != 0)) {
		snprintf(err, errlen, "method must be GET or POST");
		return -1;
	}
	op->post = strcmp(req->method, "POST") == 0;
	char why[200];
	if (req->host == NULL || dns_name_normalize(req->host, op->host, why, sizeof(why)) < 0) {
		snprintf(err, errlen, "bad host: %s", req->host == NULL ? "none" : why);
		return -1;
	}
	struct sockaddr_storage ss;
	if (dns_parse_ip(op->host, &ss) == 0) {
		snprintf(err, errlen, "bad host: an IP address, not a name");
		return -1;
	}
	op->port = req->port != 0 ? req->port : 443;
	if (req->path == NULL || req->path[0] != '/' || strchr(req->path, '#') != NULL ||
	    !header_safe(req->path, HTTPS_PATH_MAX, false)) {
		snprintf(err, errlen, "bad path: must start with '/', printable ASCII without "
				      "spaces or '#', at most %d characters", HTTPS_PATH_MAX);
		return -1;
	}
	op->max_body = req->max_body != 0 ? req->max_body : HTTPS_DEFAULT_MAX_BODY;
	if (op->max_body > HTTPS_MAX_BODY_LIMIT) {
		snprintf(err, errlen, "max_body over %u", HTTPS_MAX_BODY_LIMIT);
		return -1;
	}
	unsigned timeout = req->timeout_ms != 0 ? req->timeout_ms : HTTPS_DEFAULT_TIMEOUT_MS;
	if (timeout > HTTPS_MAX_TIMEOUT_MS) {
		snprintf(err, errlen, "timeout over %u ms", HTTPS_MAX_TIMEOUT_MS);
		return -1;
	}
	op->deadline = op->started + timeout;
	const char *ua = req->user_agent != NULL && req->user_agent[0] != '\0' ? req->user_agent
									      : DEFAULT_USER_AGENT;
	if (!header_safe(ua, HEADER_VALUE_MAX, true)) {
		snprintf(err, errlen, "bad user agent");
		return -1;
	}
	if (op->post) {
		if (req->content_type == NULL || req->content_type[0] == '\0' ||
		    !header_safe(req->content_type, HEADER_VALUE_MAX, true)) {
			snprintf(err, errlen, "POST needs a content type (printable ASCII, at most "
					      "%d characters)", HEADER_VALUE_MAX);
			return -1;
		}
		if (req->body_len > HTTPS_MAX_POST || (req->body == NULL && req->body_len > 0)) {
			snprintf(err, errlen, "bad POST body (at most %u bytes)", HTTPS_MAX_POST);
			return -1;
		}
	} else if (req->body_len > 0 || req->content_type != NULL) {
		snprintf(err, errlen, "GET takes no body");
		return -1;
	}

	op->url = xasprintf("https://%s:%u%s", op->host, op->port, req->path);
	op->user_agent = xstrdup(ua);
	if (op->post) {
		op->content_type = xstrdup(req->content_type);
		/* Never NULL: curl would otherwise read the body with strlen. */
		op->body = xmalloc(req->body_len + 1);
		if (req->body_len > 0)
			memcpy(op->body, req->body, req->body_len);
		op->body[req->body_len] = '\0';
		op->body_len = req->body_len;
	}
	return 0;
}

struct https_op *https_request(struct https_client *c, const struct https_request *req,
			       https_cb *cb, void *arg)
{
	struct https_op *op = xcalloc(1, sizeof(*op));
	op->c = c;
	op->cb = cb;
	op->arg = arg;
	op->started = now_ms();
	buf_init(&op->resp, 0);
	c->nops++;
	if (c->freeing) {
		op_finish(op, HTTPS_SHUTDOWN, SHUTDOWN_DETAIL);
		return op;
	}
	char err[HTTPS_DETAIL_MAX];
	if (request_check(op, req, err, sizeof(err)) < 0) {
		op_finish(op, HTTPS_INVALID, "%s", err);
		return op;
	}
	buf_init(&op->resp, op->max_body);
	op->easy = curl_easy_init();
	if (op->easy == NULL) {
		op_finish(op, HTTPS_INTERNAL, "curl_easy_init failed");
		return op;
	}
	if (easy_setup(op, c->ca_file, err, sizeof(err)) < 0) {
		op_release_curl(op);
		op_finish(op, HTTPS_INTERNAL, "%s", err);
		return op;
	}
	op->phase = OP_DNS;
	list_push(&c->active, op);
	op->dq = resolver_query_addrs(c->resolver, op->host, on_dns, op);
	dns_timer_arm(c);
	return op;
}

void https_cancel(struct https_op *op)
{
	if (op == NULL || op->delivering)
		return;
	struct https_client *c = op->c;
	bool resolving = op->phase == OP_DNS;
	if (resolving) {
		dns_query_cancel(op->dq);
		op->dq = NULL;
	}
	/* Outside any curl callback here (user code never runs inside one),
	 * so removing the easy handle from the multi is allowed. */
	op_release_curl(op);
	list_unlink(op);
	op_free(op);
	if (resolving)
		dns_timer_arm(c);  /* or an idle loop waits for a stale deadline */
}

size_t https_client_pending(const struct https_client *c)
{
	return c->nops;
}

/* --- the client ---------------------------------------------------------------------- */

/* The things we cannot work without, checked once instead of failing every
 * request: OpenSSL 3 behind curl (on_ssl_ctx casts to SSL_CTX *) and every
 * option easy_setup() sets, on a throw-away handle. */
static int check_curl(const char *ca_file, char *err, size_t errlen)
{
	const curl_version_info_data *vi = curl_version_info(CURLVERSION_NOW);
	if (vi == NULL || vi->version_num < 0x075500) {
		snprintf(err, errlen, "libcurl %s is too old (7.85 or newer needed)",
			 vi != NULL ? vi->version : "?");
		return -1;
	}
	char want[32];
	snprintf(want, sizeof(want), "OpenSSL/%d.", OPENSSL_VERSION_MAJOR);
	if (!(vi->features & CURL_VERSION_SSL) || vi->ssl_version == NULL ||
	    strncmp(vi->ssl_version, want, strlen(want)) != 0) {
		snprintf(err, errlen, "libcurl must use %s* as its TLS library, not %s", want,
			 vi->ssl_version != NULL ? vi->ssl_version : "none");
		return -1;
	}
	struct https_op probe = { 0 };
	probe.url = "https://probe.invalid/";
	probe.user_agent = DEFAULT_USER_AGENT;
	probe.content_type = "application/octet-stream";
	static char empty[1];
	probe.body = empty;
	probe.max_body = HTTPS_DEFAULT_MAX_BODY;
	int rc = 0;
	for (int post = 0; post <= 1 && rc == 0; post++) {
		probe.post = post;
		probe.easy = curl_easy_init();
		if (probe.easy == NULL) {
			snprintf(err, errlen, "curl_easy_init failed");
			return -1;
		}
		rc = easy_setup(&probe, ca_file, err, errlen);
		if (rc == 0) {
			CURLcode ec = curl_easy_setopt(probe.easy, CURLOPT_TIMEOUT_MS, 1000L);
			if (ec == CURLE_OK)
				ec = curl_easy_setopt(probe.easy, CURLOPT_RESOLVE, NULL);
			if (ec != CURLE_OK) {
				snprintf(err, errlen, "curl_easy_setopt: %s", curl_easy_strerror(ec));
				rc = -1;
			}
		}
		curl_easy_cleanup(probe.easy);
		curl_slist_free_all(probe.headers);
		probe.headers = NULL;
	}
	return rc;
}

int https_client_new(struct https_client **out, uv_loop_t *loop, struct resolver *resolver,
		     const char *ca_file, char *err, size_t errlen)
{
	*out = NULL;
	if (ca_file != NULL && ca_file[0] == '\0')
		ca_file = NULL;
	if (ca_file != NULL) {
		/* Blocking, but once at start-up: the file must exist and hold
		 * at least one certificate OpenSSL can load. */
		FILE *f = fopen(ca_file, "r");
		if (f == NULL) {
			snprintf(err, errlen, "CA file %s: %s", ca_file, strerror(errno));
			return -1;
		}
		fclose(f);
		X509_STORE *st = X509_STORE_new();
		if (st == NULL)
			panic("https: X509_STORE_new failed");
		int ok = X509_STORE_load_file(st, ca_file);
		X509_STORE_free(st);
		ERR_clear_error();
		if (ok != 1) {
			snprintf(err, errlen, "CA file %s: no certificate OpenSSL can load", ca_file);
			return -1;
		}
	}
	if (check_curl(ca_file, err, errlen) < 0)
		return -1;
	CURLM *multi = curl_multi_init();
	if (multi == NULL) {
		snprintf(err, errlen, "curl_multi_init failed");
		return -1;
	}
	struct https_client *c = xcalloc(1, sizeof(*c));
	CURLMcode mc = curl_multi_setopt(multi, CURLMOPT_SOCKETFUNCTION, on_curl_socket);
	if (mc == CURLM_OK)
		mc = curl_multi_setopt(multi, CURLMOPT_SOCKETDATA, (void *)c);
	if (mc == CURLM_OK)
		mc = curl_multi_setopt(multi, CURLMOPT_TIMERFUNCTION, on_curl_timer);
	if (mc == CURLM_OK)
		mc = curl_multi_setopt(multi, CURLMOPT_TIMERDATA, (void *)c);
	if (mc != CURLM_OK) {
		snprintf(err, errlen, "curl_multi_setopt: %s", curl_multi_strerror(mc));
		curl_multi_cleanup(multi);
		free(c);
		return -1;
	}
	c->loop = loop;
	c->resolver = resolver;
	c->ca_file = ca_file != NULL ? xstrdup(ca_file) : NULL;
	c->multi = multi;
	/* These cannot fail in libuv 1.44 (they only initialize memory). */
	if (uv_timer_init(loop, &c->curl_timer) < 0 || uv_timer_init(loop, &c->dns_timer) < 0 ||
	    uv_idle_init(loop, &c->idle) < 0)
		panic("https: cannot initialize libuv handles");
	c->curl_timer.data = c;
	c->dns_timer.data = c;
	c->idle.data = c;
	c->open_handles = 3;
	*out = c;
	return 0;
}

void https_client_free(struct https_client *c)
{
	if (c == NULL || c->freeing)
		return;
	c->freeing = true;
	uv_timer_stop(&c->curl_timer);
	uv_timer_stop(&c->dns_timer);
	struct https_op *op;
	while ((op = c->active.head) != NULL) {
		if (op->phase == OP_DNS) {
			dns_query_cancel(op->dq);
			op->dq = NULL;
		}
		op_release_curl(op);
		op_finish(op, HTTPS_SHUTDOWN, SHUTDOWN_DETAIL);
	}
	/* Results already in, then the shutdowns; anything requested from
	 * these callbacks lands on the list as a shutdown too. */
	deliver_all(c);
	/* No easy handle is left: closing the multi closes no transfer, and
	 * any socket curl still reports gone is closed below. */
	CURLMcode mc = curl_multi_cleanup(c->multi);
	if (mc != CURLM_OK)
		log_error("https", "curl_multi_cleanup: %s", curl_multi_strerror(mc));
	c->multi = NULL;
	while (c->polls != NULL)
		sockpoll_close(c->polls);
	uv_close((uv_handle_t *)&c->curl_timer, on_own_handle_closed);
	uv_close((uv_handle_t *)&c->dns_timer, on_own_handle_closed);
	uv_close((uv_handle_t *)&c->idle, on_own_handle_closed);
}
