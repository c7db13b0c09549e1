/*
 * fuzz_config - mta/config.h config_parse() on arbitrary text, then
 * config_validate() when it parsed, then config_free(). The parser must
 * never crash, leak or read past len (the input is not NUL-terminated);
 * a failure must come with a message.
 */
#include "fuzz.h"
#include "mta/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct config cfg;
	char err[256];
	/* exactly size bytes, with nothing readable after them */
	char *text = xmalloc(size);
	memcpy(text, data, size);

	config_init(&cfg);
	memset(err, 'x', sizeof(err));
	int rc = config_parse(&cfg, text, size, "fuzz.conf", err, sizeof(err));
	FUZZ_ASSERT(rc == 0 || rc == -1);
	if (rc < 0) {
		FUZZ_ASSERT(fuzz_terminated(err, sizeof(err)));
		FUZZ_ASSERT(err[0] != '\0');
	} else {
		err[0] = '\0';
		if (config_validate(&cfg, err, sizeof(err)) < 0)
			FUZZ_ASSERT(err[0] != '\0');
	}
	config_free(&cfg);
	free(text);
	return 0;
}
