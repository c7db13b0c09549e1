/*
 * dkim.h - a DKIM signer (RFC 6376) for the mail we originate: TLS reports
 * (RFC 8460 section 5.3, checklist RPT-26). OpenSSL does the cryptography;
 * everything else (canonicalization, tags, folding) is here. Pure apart from
 * dkim_key_load(), which reads one file; no clock (the caller passes "now"),
 * no globals; memory only through xmalloc() and friends.
 *
 * API
 *   dkim_key_load()    PEM private key file -> key (RSA or Ed25519)
 *   dkim_key_free()
 *   dkim_key_alg()     "rsa-sha256" / "ed25519-sha256"
 *   dkim_key_bits()    RSA modulus bits; 256 for Ed25519
 *   dkim_public_txt()  the TXT record value to publish at SELECTOR._domainkey.DOMAIN
 *   dkim_public_txt_service()  the same with another s= service type
 *   dkim_sign()        message -> one complete "DKIM-Signature: ..." header field
 *   dkim_canon_header(), dkim_canon_body(), dkim_body_hash(): the relaxed
 *                      canonicalization, exposed for tests
 *
 * What is signed (fixed; decisions in brackets):
 *   - a=rsa-sha256 (RSASSA-PKCS1-v1_5 over SHA-256) for RSA keys of at
 *     least DKIM_RSA_MIN_BITS bits [keys under DKIM_RSA_WARN_BITS are
 *     accepted with a warning, RFC 8301 3.2; so are keys above 4096 bits,
 *     which some verifiers refuse]; a=ed25519-sha256 for Ed25519 keys: the
 *     SHA-256 hash of the data is signed with PureEd25519 (RFC 8463 3).
 *     Any other key type (RSA-PSS, EC, Ed448, DSA, ...) is an error.
 *   - c=relaxed/relaxed. Tags, in this order: v=1; a; c; d; s; t=now; h;
 *     bh; b. No l= ever (RPT-26 MUST NOT), no x=, no i=, no z=, q= left at
 *     its default (dns/txt).
 *   - h= lists, for each name of sign_headers that occurs in the header
 *     section (names compared without regard to case; a name listed twice
 *     counts once), the name once per occurrence. Occurrences of one name
 *     are signed bottom-up (RFC 6376 5.4.2), which is the order in which a
 *     verifier picks them for repeated names in h=. Names in h= are written
 *     as given in sign_headers. [Names of absent fields are not listed: no
 *     "oversigning".]
 *   - "From" must be in sign_headers and the message must have exactly one
 *     From field (RFC 6376 5.4: From MUST be signed; RFC 5322 3.6: exactly
 *     one). Otherwise dkim_sign() fails.
 *   - b= is computed over the canonicalized signed fields, then the
 *     DKIM-Signature field itself, relaxed-canonicalized, with an empty b=
 *     and without its final CR LF (RFC 6376 3.7).
 *
 * Input message: RFC 5322 with CR LF line ends; a bare CR or LF anywhere is
 * an error [strict: what a verifier makes of them is not defined, and our
 * own messages never have them]. The header section ends at the first empty
 * line; without one the whole message is header fields and the body is
 * empty. Each header line is a field ("name:" with the name made of
 * printable ASCII other than ":", optionally followed by blanks before the
 * colon) or a continuation (starting with SP or HTAB); anything else is an
 * error. 8-bit octets in values and the body are hashed as they are.
 *
 * Relaxed canonicalization (RFC 6376 3.4.2 / 3.4.4):
 *   header field: name lower-cased, blanks before the colon removed; value
 *     unfolded (CR LF removed), every run of SP/HTAB made one SP, blanks at
 *     both ends removed; the result is "name:value" CR LF.
 *   body: per line, trailing SP/HTAB removed and runs of SP/HTAB made one
 *     SP; all empty lines at the end removed; a final line without CR LF
 *     gets one (its trailing blanks removed too). An empty body, or one of
 *     only empty (or blank) lines, canonicalizes to the EMPTY string, whose
 *     SHA-256 is "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=": RFC 6376
 *     3.4.4 adds a CR LF only to a non-empty body (the CR LF for an empty
 *     body is the "simple" rule of 3.4.3). dkimpy does the same.
 *
 * Output of dkim_sign(): "DKIM-Signature: v=1; a=...; ... b=...\r\n", no
 * line above DKIM_FOLD_WIDTH characters (CR LF excluded) unless d= or s=
 * alone is longer (a domain cannot be folded), continuation lines starting
 * with one SP. Folding happens between tags (after "; "),
 * between names of h= (after ":") and inside the base64 of bh= and b=;
 * at least DKIM_B_MIN_CHARS characters of b= stay on the line of "b=".
 *
 * Errors: -1 with a one-line English message in err (err may be NULL when
 * errlen is 0); outputs are then left as they were. OpenSSL errors are
 * cleared from its queue and their text appended to err.
 */
#ifndef STRICTRELAY_TLSRPT_DKIM_H
#define STRICTRELAY_TLSRPT_DKIM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mta/util.h"

#define DKIM_RSA_MIN_BITS 1024    /* refused below (RFC 8301 3.2) */
#define DKIM_RSA_WARN_BITS 2048   /* warned below */
#define DKIM_RSA_MAX_BITS 8192    /* refused above */
#define DKIM_FOLD_WIDTH 78        /* RFC 5322 2.1.1 SHOULD */
#define DKIM_B_MIN_CHARS 8        /* base64 characters kept on the "b=" line */
#define DKIM_MAX_SIGN_HEADERS 64  /* names in sign_headers */
#define DKIM_MAX_FIELD_NAME 64    /* octets of one name in sign_headers */
#define DKIM_MAX_H_ENTRIES 256    /* names in h= (occurrences) */
#define DKIM_MAX_NAME 253         /* octets of d= and s= */

struct dkim_key;

enum dkim_alg {
	DKIM_ALG_RSA_SHA256,
	DKIM_ALG_ED25519_SHA256,
};

/*
 * Reads a PEM private key (PKCS#8 "PRIVATE KEY" or traditional "RSA
 * PRIVATE KEY"; not encrypted) from pem_path. 0 with *out set (free with
 * dkim_key_free()), and err set to "" or to a warning the caller should log
 * (an RSA key under DKIM_RSA_WARN_BITS or above 4096 bits); or -1 with
 * *out = NULL and err naming the file: unreadable, not a PEM private key,
 * encrypted, RSA under DKIM_RSA_MIN_BITS or above DKIM_RSA_MAX_BITS, or a
 * key type other than RSA and Ed25519.
 */
int dkim_key_load(const char *pem_path, struct dkim_key **out, char *err, size_t errlen);

/* NULL is fine. */
void dkim_key_free(struct dkim_key *k);

enum dkim_alg dkim_key_type(const struct dkim_key *k);
/* "rsa-sha256" or "ed25519-sha256": the a= value. Static text. */
const char *dkim_key_alg(const struct dkim_key *k);
int dkim_key_bits(const struct dkim_key *k);

/*
 * Appends the value of the key's DNS TXT record (at SELECTOR._domainkey.
 * DOMAIN) to out, on one line, without quotes or character-string
 * splitting: "v=DKIM1; k=rsa; s=tlsrpt; p=BASE64". s=tlsrpt (RFC 8460 3
 * SHOULD, DKIM_SERVICE_DEFAULT): [tlsrpt] has a key of its own that signs
 * TLS reports only. p= is the DER SubjectPublicKeyInfo for RSA (what
 * "openssl rsa -pubout" gives), the raw 32-octet public key for Ed25519
 * (RFC 8463 4). 0, or -1 when out's cap is reached or OpenSSL fails (out
 * left as it was).
 *
 * Interoperability: dkimpy (at least 1.1.4, Debian 12) accepts only a
 * single service type ("*", "email" or "tlsrpt") and rejects the key
 * altogether for a list such as "email:tlsrpt", although RFC 6376 3.6.1
 * allows lists: that is why a shared key's "email:tlsrpt" (RPT-26 [I]) is
 * not the default; dkim_public_txt_service() makes it.
 */
#define DKIM_SERVICE_DEFAULT "tlsrpt"
int dkim_public_txt(const struct dkim_key *k, struct buf *out);

/*
 * The same with another service type list: service is one or more names
 * of lower-case letters and digits separated by ":" ("tlsrpt",
 * "email:tlsrpt"), or "*", or NULL / "" for no s= tag (RFC 6376 default:
 * all services). -1 also for an invalid service.
 */
int dkim_public_txt_service(const struct dkim_key *k, const char *service, struct buf *out);

/*
 * Signs msg[0..len) for d=domain, s=selector, t=now. sign_headers is a
 * NULL-terminated list of field names (at most DKIM_MAX_SIGN_HEADERS, each
 * 1..DKIM_MAX_FIELD_NAME octets of letters, digits, "-", "_" and "." -
 * stricter than RFC 5322's ftext, whose ";" and "=" could forge tags in
 * h=); it must contain "From". domain and
 * selector are DNS names: dot-separated labels of letters, digits, "-" and
 * "_", 1..63 octets each, DKIM_MAX_NAME octets at most, no trailing dot.
 * now must be >= 0.
 * Appends the complete header field, CR LF included, to header_out (which
 * the caller initialised; its cap is respected), to be put in front of the
 * message unchanged. Returns 0, or -1 with err (header_out unchanged):
 * invalid arguments, a malformed message (see above), no or several From
 * fields, more than DKIM_MAX_H_ENTRIES fields to sign, header_out's cap,
 * or an OpenSSL failure.
 */
int dkim_sign(const struct dkim_key *k, const char *domain, const char *selector,
	      const char *const *sign_headers, const char *msg, size_t len, int64_t now,
	      struct buf *header_out, char *err, size_t errlen);

/*
 * Relaxed canonicalization of one header field as it appears in the message:
 * field[0..len) is "Name: value" including any folding CR LF + WSP, without
 * its final CR LF. Appends "name:value\r\n" to out. 0, or -1 when the field
 * has no colon, an empty or invalid name, or out's cap is reached (out is
 * then left as it was).
 */
int dkim_canon_header(const char *field, size_t len, struct buf *out);

/*
 * Relaxed canonicalization of a body (CR LF line ends; a bare CR or LF is
 * kept as an ordinary octet here). Appends the canonical body to out. 0, or
 * -1 when out's cap is reached (out left as it was).
 */
int dkim_canon_body(const char *body, size_t len, struct buf *out);

/*
 * The bh= value for a whole message: base64 of the SHA-256 of the relaxed
 * canonical body (the part after the first empty line; empty without one).
 * b64 receives 44 characters and a NUL. 0, or -1 with err for a malformed
 * message (bare CR or LF, bad header line) or an OpenSSL failure.
 */
int dkim_body_hash(const char *msg, size_t len, char b64[45], char *err, size_t errlen);

#endif
