/* sasl.c - see sasl.h */
#include "sasl.h"

#include <stdbool.h>
#include <string.h>

static int b64_value(char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == '/')
		return 63;
	return -1;
}

long sasl_base64_decode(const char *in, unsigned char *out, size_t outlen)
{
	size_t n = strlen(in);
	if (n % 4 != 0)
		return -1;
	size_t o = 0;
	for (size_t i = 0; i < n; i += 4) {
		bool last = i + 4 == n;
		int v[4];
		int pad = 0;
		for (int k = 0; k < 4; k++) {
			char c = in[i + k];
			if (c == '=' && last && k >= 2) {
				v[k] = 0;
				pad++;
				continue;
			}
			if (pad > 0) /* data after padding */
				return -1;
			v[k] = b64_value(c);
			if (v[k] < 0)
				return -1;
		}
		unsigned long triple = ((unsigned long)v[0] << 18) | ((unsigned long)v[1] << 12) |
				       ((unsigned long)v[2] << 6) | (unsigned long)v[3];
		/* Canonical encoding: the bits padding hides must be zero. */
		if ((pad == 1 && (triple & 0xff) != 0) || (pad == 2 && (triple & 0xffff) != 0))
			return -1;
		size_t produce = 3 - (size_t)pad;
		if (o + produce > outlen)
			return -1;
		out[o++] = (unsigned char)(triple >> 16);
		if (produce > 1)
			out[o++] = (unsigned char)(triple >> 8);
		if (produce > 2)
			out[o++] = (unsigned char)triple;
	}
	return (long)o;
}

bool sasl_valid_user(const char *u, size_t n)
{
	if (n == 0 || n > SASL_MAX_FIELD)
		return false;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)u[i];
		/* ':' separates user and hash in the users file */
		if (c < 0x20 || c == 0x7f || c == ':')
			return false;
	}
	return true;
}

enum sasl_status sasl_plain_decode(const char *b64, char user[SASL_MAX_FIELD + 1],
				   char pass[SASL_MAX_FIELD + 1])
{
	unsigned char raw[3 * SASL_MAX_FIELD + 3];
	long n = sasl_base64_decode(b64, raw, sizeof(raw));
	if (n < 0)
		return SASL_BAD_BASE64;
	const unsigned char *end = raw + n;
	const unsigned char *z1 = memchr(raw, '\0', (size_t)n);
	if (z1 == NULL)
		return SASL_BAD_FORMAT;
	const unsigned char *authcid = z1 + 1;
	const unsigned char *z2 = memchr(authcid, '\0', (size_t)(end - authcid));
	if (z2 == NULL)
		return SASL_BAD_FORMAT;
	const unsigned char *pw = z2 + 1;
	size_t zlen = (size_t)(z1 - raw), ulen = (size_t)(z2 - authcid), plen = (size_t)(end - pw);
	if (memchr(pw, '\0', plen) != NULL || plen == 0 || plen > SASL_MAX_FIELD ||
	    !sasl_valid_user((const char *)authcid, ulen))
		return SASL_BAD_FORMAT;
	if (zlen > 0 && (zlen != ulen || memcmp(raw, authcid, ulen) != 0))
		return SASL_AUTHZID;
	memcpy(user, authcid, ulen);
	user[ulen] = '\0';
	memcpy(pass, pw, plen);
	pass[plen] = '\0';
	return SASL_OK;
}

enum sasl_status sasl_login_decode(const char *b64, char out[SASL_MAX_FIELD + 1], int is_user)
{
	unsigned char raw[SASL_MAX_FIELD + 3];
	long n = sasl_base64_decode(b64, raw, sizeof(raw));
	if (n < 0)
		return SASL_BAD_BASE64;
	size_t len = (size_t)n;
	if (len == 0 || len > SASL_MAX_FIELD || memchr(raw, '\0', len) != NULL)
		return SASL_BAD_FORMAT;
	if (is_user && !sasl_valid_user((const char *)raw, len))
		return SASL_BAD_FORMAT;
	memcpy(out, raw, len);
	out[len] = '\0';
	return SASL_OK;
}
