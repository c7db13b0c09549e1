/*
 * sasl.h - the pure parts of SMTP AUTH (RFC 4954) with the PLAIN (RFC 4616)
 * and LOGIN mechanisms: strict base64 and decoding the client's responses
 * into a user name and a password. No I/O; the session engine
 * (smtp/session.c) drives the exchange and the server checks the password.
 *
 * Limits: user names and passwords are at most SASL_MAX_FIELD octets, contain
 * no NUL and no control characters in the user name. PLAIN's authorization
 * identity must be empty or equal to the authentication identity (this relay
 * does not let one user act for another).
 */
#ifndef STRICTRELAY_SMTP_SASL_H
#define STRICTRELAY_SMTP_SASL_H

#include <stdbool.h>
#include <stddef.h>

#define SASL_MAX_FIELD 255

enum sasl_status {
	SASL_OK,
	SASL_BAD_BASE64, /* 501 5.5.2 */
	SASL_BAD_FORMAT, /* 501 5.5.2: wrong number of fields, NUL, too long */
	SASL_AUTHZID,    /* 535 5.7.8: authorization identity differs */
};

/*
 * Strict RFC 4648 base64 (padding required, no white space). Writes at most
 * outlen octets; returns the decoded length, or -1 for invalid input or an
 * output that would not fit.
 */
long sasl_base64_decode(const char *in, unsigned char *out, size_t outlen);

/* A user name we can store and check: 1 to SASL_MAX_FIELD octets, no
 * control characters and no ':' (it ends the name in the users file). */
bool sasl_valid_user(const char *u, size_t n);

/* PLAIN: base64 of [authzid] NUL authcid NUL passwd. */
enum sasl_status sasl_plain_decode(const char *b64, char user[SASL_MAX_FIELD + 1],
				   char pass[SASL_MAX_FIELD + 1]);

/* LOGIN: one base64 field (the user name or the password). */
enum sasl_status sasl_login_decode(const char *b64, char out[SASL_MAX_FIELD + 1],
				   int is_user);

#endif
