/*
 * tls_result.h - the verdict on a peer certificate, as plain data, so pure
 * modules (the delivery decision, TLS reporting) can use it without OpenSSL.
 */
#ifndef STRICTRELAY_SMTP_TLS_RESULT_H
#define STRICTRELAY_SMTP_TLS_RESULT_H

/* The verdict on the peer certificate after a client handshake. */
enum tls_cert_result {
	TLS_CERT_OK,
	TLS_CERT_NONE,          /* no certificate presented */
	TLS_CERT_EXPIRED,       /* certificate-expired */
	TLS_CERT_NAME_MISMATCH, /* certificate-host-mismatch */
	TLS_CERT_UNTRUSTED,     /* certificate-not-trusted (incl. self-signed) */
	TLS_CERT_OTHER,         /* validation-failure */
};
struct tls_verify_info {
	enum tls_cert_result result;
	long x509_error;        /* X509_V_ERR_* */
	char detail[160];       /* e.g. "X509_V_ERR_HOSTNAME_MISMATCH: hostname mismatch" */
	char subject[160];      /* first SAN / subject, for logs */
};

/* RFC 8460 result-type names: "certificate-expired", ... ("ok" for OK). */
const char *tls_cert_result_name(enum tls_cert_result r);

#endif
