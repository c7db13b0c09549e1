/*
 * fuzz_smtp_command - smtp/parse.h smtp_parse_command() on a NUL-terminated
 * copy of the input (the server hands it one line without CR LF; a NUL in
 * the input ends the copy early, as a C string would). Also
 * smtp_valid_domain() on the same bytes.
 * Invariants: every pointer in the result points into the line buffer; at
 * most SMTP_MAX_PARAMS parameters; MAIL/RCPT paths within the RFC 5321
 * limits; an error always comes with a detail.
 */
#include <stdbool.h>

#include "fuzz.h"
#include "smtp/parse.h"

static bool inside(const char *p, const char *buf, size_t len)
{
	return p != NULL && p >= buf && p <= buf + len;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *line = xmalloc(size + 1);
	memcpy(line, data, size);
	line[size] = '\0';
	size_t len = strlen(line);

	struct smtp_cmd cmd;
	enum smtp_parse_status st = smtp_parse_command(line, &cmd);
	FUZZ_ASSERT(smtp_verb_name(cmd.verb) != NULL);
	if (st == SMTP_PARSE_OK) {
		FUZZ_ASSERT(cmd.verb != SMTP_VERB_UNKNOWN);
		FUZZ_ASSERT(inside(cmd.arg, line, len));
		FUZZ_ASSERT(cmd.nparams <= SMTP_MAX_PARAMS);
		for (size_t i = 0; i < cmd.nparams; i++) {
			FUZZ_ASSERT(inside(cmd.params[i].key, line, len));
			FUZZ_ASSERT(cmd.params[i].key[0] != '\0');
			if (cmd.params[i].value != NULL) {
				FUZZ_ASSERT(inside(cmd.params[i].value, line, len));
				FUZZ_ASSERT(cmd.params[i].value[0] != '\0');
			}
		}
		if (cmd.verb == SMTP_VERB_MAIL || cmd.verb == SMTP_VERB_RCPT) {
			FUZZ_ASSERT(inside(cmd.path.addr, line, len));
			size_t al = strlen(cmd.path.addr);
			FUZZ_ASSERT(al + 2 <= SMTP_MAX_PATH);
			FUZZ_ASSERT(cmd.path.domain >= cmd.path.addr &&
				    cmd.path.domain <= cmd.path.addr + al);
			FUZZ_ASSERT(strlen(cmd.path.domain) <= SMTP_MAX_DOMAIN);
			for (const char *c = cmd.path.addr; *c; c++)
				FUZZ_ASSERT((unsigned char)*c >= 32 && *c != 127);
			if (cmd.verb == SMTP_VERB_MAIL && al == 0)
				FUZZ_ASSERT(cmd.path.domain[0] == '\0');
		}
	} else {
		FUZZ_ASSERT(cmd.detail != NULL && cmd.detail[0] != '\0');
	}
	free(line);

	/* the domain checker on the same bytes */
	line = xmalloc(size + 1);
	memcpy(line, data, size);
	line[size] = '\0';
	bool ascii = smtp_valid_domain(line, false);
	bool utf8 = smtp_valid_domain(line, true);
	FUZZ_ASSERT(!ascii || utf8);
	if (ascii && line[0] != '[')
		for (const char *c = line; *c; c++)
			FUZZ_ASSERT((unsigned char)*c < 0x80);
	free(line);
	return 0;
}
