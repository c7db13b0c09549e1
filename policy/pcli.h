/*
 * pcli.h - `strictrelay policy DOMAIN [--refresh] [--probe] [--json]`: what
 * delivery to DOMAIN would do right now. Runs its own event loop with the
 * same resolver, HTTPS client and MTA-STS cache as the daemon (so a fetch
 * here updates the daemon's cache), and with --probe connects to each MX
 * (EHLO, STARTTLS, certificate check, QUIT) without sending mail.
 */
#ifndef STRICTRELAY_POLICY_PCLI_H
#define STRICTRELAY_POLICY_PCLI_H

#include "mta/config.h"

/* argv[0] is "policy". Returns the exit code. */
int pcli_main(const struct config *cfg, int argc, char **argv);

#endif
