/* json.c - see json.h */
#include "json.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "mta/log.h"

void json_init(struct json *j, struct buf *out, bool pretty)
{
	memset(j, 0, sizeof(*j));
	j->out = out;
	j->pretty = pretty;
	j->first[0] = true;
}

static void newline(struct json *j)
{
	if (!j->pretty)
		return;
	buf_putc(j->out, '\n');
	for (int i = 0; i < j->depth; i++)
		buf_puts(j->out, "  ");
}

/* Comma and indentation before a value or a key. */
static void before_item(struct json *j)
{
	if (j->after_key) {
		j->after_key = false;
		return;
	}
	if (!j->first[j->depth])
		buf_putc(j->out, ',');
	j->first[j->depth] = false;
	if (j->depth > 0)
		newline(j);
}

static void open(struct json *j, char o, char c)
{
	before_item(j);
	buf_putc(j->out, o);
	if (j->depth + 1 >= JSON_MAX_DEPTH)
		panic("json: nesting deeper than %d", JSON_MAX_DEPTH);
	j->depth++;
	j->first[j->depth] = true;
	j->closer[j->depth] = c;
}

void json_obj(struct json *j)
{
	open(j, '{', '}');
}

void json_arr(struct json *j)
{
	open(j, '[', ']');
}

void json_end(struct json *j)
{
	if (j->depth == 0)
		panic("json: json_end without an open object or array");
	bool empty = j->first[j->depth];
	char c = j->closer[j->depth];
	j->depth--;
	if (!empty)
		newline(j);
	buf_putc(j->out, c);
	if (j->depth == 0 && j->pretty)
		buf_putc(j->out, '\n');
}

void json_escape(struct buf *out, const char *s, size_t n)
{
	const unsigned char *p = (const unsigned char *)s;
	buf_putc(out, '"');
	size_t i = 0;
	while (i < n) {
		unsigned char c = p[i];
		if (c == '"' || c == '\\') {
			buf_putc(out, '\\');
			buf_putc(out, (char)c);
			i++;
		} else if (c < 0x20) {
			switch (c) {
			case '\n':
				buf_puts(out, "\\n");
				break;
			case '\r':
				buf_puts(out, "\\r");
				break;
			case '\t':
				buf_puts(out, "\\t");
				break;
			default:
				buf_printf(out, "\\u%04x", c);
				break;
			}
			i++;
		} else if (c < 0x80) {
			buf_putc(out, (char)c);
			i++;
		} else {
			size_t len = utf8_seq_len(p + i, n - i);
			if (len == 0) {
				buf_puts(out, "\\ufffd");
				i++;
			} else {
				buf_append(out, p + i, len);
				i += len;
			}
		}
	}
	buf_putc(out, '"');
}

void json_key(struct json *j, const char *key)
{
	before_item(j);
	json_escape(j->out, key, strlen(key));
	buf_puts(j->out, j->pretty ? ": " : ":");
	j->after_key = true;
}

void json_strn(struct json *j, const char *s, size_t n)
{
	before_item(j);
	json_escape(j->out, s, n);
}

void json_str(struct json *j, const char *s)
{
	json_strn(j, s, strlen(s));
}

void json_int(struct json *j, int64_t v)
{
	before_item(j);
	buf_printf(j->out, "%" PRId64, v);
}

void json_bool(struct json *j, bool v)
{
	before_item(j);
	buf_puts(j->out, v ? "true" : "false");
}

void json_null(struct json *j)
{
	before_item(j);
	buf_puts(j->out, "null");
}

void json_kstr(struct json *j, const char *key, const char *s)
{
	json_key(j, key);
	json_str(j, s);
}

void json_kint(struct json *j, const char *key, int64_t v)
{
	json_key(j, key);
	json_int(j, v);
}

void json_kbool(struct json *j, const char *key, bool v)
{
	json_key(j, key);
	json_bool(j, v);
}
