/* passwdcli.h - `strictrelay passwd USER`: a users_file line for SMTP AUTH. */
#ifndef STRICTRELAY_SMTP_PASSWDCLI_H
#define STRICTRELAY_SMTP_PASSWDCLI_H

extern const char passwdcli_help[];

int passwdcli_main(int argc, char **argv);

#endif
