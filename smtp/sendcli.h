/*
 * sendcli.h - `strictrelay send`: a test client that speaks REQUIRETLS.
 * Needs no configuration file.
 */
#ifndef STRICTRELAY_SMTP_SENDCLI_H
#define STRICTRELAY_SMTP_SENDCLI_H

/* argv[0] is "send". Returns the exit code (0 accepted, 1 refused, 2 usage,
 * 3 connection/TLS/timeout). */
int sendcli_main(int argc, char **argv);

extern const char sendcli_help[];

#endif
