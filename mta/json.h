/*
 * json.h - a small streaming JSON writer (RFC 8259, I-JSON RFC 7493 rules):
 * strings are escaped correctly ('"', '\\', control characters as \uXXXX or
 * the short escapes), invalid UTF-8 is replaced by U+FFFD so the output is
 * always valid UTF-8, integers are written as numbers. Commas are placed
 * by the writer. Pure: appends to a struct buf.
 *
 *	struct json j;
 *	json_init(&j, &out, true);     pretty-printed with two-space indents
 *	json_obj(&j);
 *	json_key(&j, "policy-type"); json_str(&j, "sts");
 *	json_end(&j);
 *
 * Nesting deeper than JSON_MAX_DEPTH is a programming error (panic).
 */
#ifndef STRICTRELAY_JSON_H
#define STRICTRELAY_JSON_H

#include <stdbool.h>
#include <stdint.h>

#include "mta/util.h"

#define JSON_MAX_DEPTH 32

struct json {
	struct buf *out;
	bool pretty;
	int depth;
	bool first[JSON_MAX_DEPTH]; /* no member written yet at this level */
	bool after_key;             /* a value follows a key: no comma */
	char closer[JSON_MAX_DEPTH];
};

void json_init(struct json *j, struct buf *out, bool pretty);
void json_obj(struct json *j);
void json_arr(struct json *j);
void json_end(struct json *j);
void json_key(struct json *j, const char *key);
void json_str(struct json *j, const char *s);
void json_strn(struct json *j, const char *s, size_t n);
void json_int(struct json *j, int64_t v);
void json_bool(struct json *j, bool v);
void json_null(struct json *j);

/* key + value in one call */
void json_kstr(struct json *j, const char *key, const char *s);
void json_kint(struct json *j, const char *key, int64_t v);
void json_kbool(struct json *j, const char *key, bool v);

/* Appends s as a JSON string literal (with quotes) to out. */
void json_escape(struct buf *out, const char *s, size_t n);

#endif
