/* tls_result.c - see tls_result.h */
#include "tls_result.h"

const char *tls_cert_result_name(enum tls_cert_result r)
{
	switch (r) {
	case TLS_CERT_OK:
		return "ok";
	case TLS_CERT_NONE:
		return "no-certificate";
	case TLS_CERT_EXPIRED:
		return "certificate-expired";
	case TLS_CERT_NAME_MISMATCH:
		return "certificate-host-mismatch";
	case TLS_CERT_UNTRUSTED:
		return "certificate-not-trusted";
	case TLS_CERT_OTHER:
		return "validation-failure";
	}
	return "validation-failure";
}
