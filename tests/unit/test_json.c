/* Unit tests for mta/json.c: structure, commas, escaping, invalid UTF-8. */
#include "mta/json.h"
#include "test.h"

static void test_compact(void)
{
	struct buf b;
	buf_init(&b, 0);
	struct json j;
	json_init(&j, &b, false);
	json_obj(&j);
	json_kstr(&j, "organization-name", "Example \"Org\"\\");
	json_key(&j, "policies");
	json_arr(&j);
	json_obj(&j);
	json_kint(&j, "total-successful-session-count", 5326);
	json_kbool(&j, "ok", true);
	json_key(&j, "mx-host");
	json_arr(&j);
	json_str(&j, "*.example.com");
	json_str(&j, "mx.example.com");
	json_end(&j);
	json_key(&j, "empty");
	json_arr(&j);
	json_end(&j);
	json_end(&j);
	json_end(&j);
	json_key(&j, "n");
	json_null(&j);
	json_end(&j);
	CHECK_STR(b.data, "{\"organization-name\":\"Example \\\"Org\\\"\\\\\",\"policies\":[{"
			  "\"total-successful-session-count\":5326,\"ok\":true,\"mx-host\":"
			  "[\"*.example.com\",\"mx.example.com\"],\"empty\":[]}],\"n\":null}");
	buf_free(&b);
}

static void test_escapes(void)
{
	struct buf b;
	buf_init(&b, 0);
	json_escape(&b, "a\nb\tc\r\x01\x1f\x7f", 9);
	CHECK_STR(b.data, "\"a\\nb\\tc\\r\\u0001\\u001f\x7f\"");
	buf_reset(&b);
	/* valid UTF-8 passes; invalid bytes become U+FFFD */
	json_escape(&b, "caf\xc3\xa9 \xff \xc3 \xed\xa0\x80 \xf0\x9f\x98\x80", 18);
	CHECK_STR(b.data, "\"caf\xc3\xa9 \\ufffd \\ufffd \\ufffd\\ufffd\\ufffd \xf0\x9f\x98\x80\"");
	buf_free(&b);
}

static void test_pretty(void)
{
	struct buf b;
	buf_init(&b, 0);
	struct json j;
	json_init(&j, &b, true);
	json_obj(&j);
	json_kstr(&j, "a", "b");
	json_key(&j, "c");
	json_arr(&j);
	json_int(&j, 1);
	json_int(&j, -2);
	json_end(&j);
	json_end(&j);
	CHECK_STR(b.data, "{\n  \"a\": \"b\",\n  \"c\": [\n    1,\n    -2\n  ]\n}\n");
	buf_free(&b);
}

int main(void)
{
	RUN(test_compact);
	RUN(test_escapes);
	RUN(test_pretty);
	TEST_EXIT();
}
