/*
 * tcli.h - `strictrelay tlsrpt run [--date D] [--out DIR] [--no-send] [--force]`
 * and `strictrelay tlsrpt dkim-record`.
 */
#ifndef STRICTRELAY_TLSRPT_TCLI_H
#define STRICTRELAY_TLSRPT_TCLI_H

#include "mta/config.h"

extern const char tcli_help[];

/* argv[0] is "tlsrpt". Returns the exit code. */
int tcli_main(const struct config *cfg, int argc, char **argv);

#endif
