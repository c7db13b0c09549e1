/*
 * sendmail.h - `strictrelay sendmail` and a binary named "sendmail": the
 * local injector. Reads one message on standard input, decides its
 * envelope, and writes it into the queue database directly (one IMMEDIATE
 * transaction through store_exec_enqueue), so it works whether or not
 * `serve` runs: a running relay's scheduler picks the new rows up on its
 * next tick (every second); otherwise the mail waits on disk for the next
 * start. The pure parts are in inject.h.
 *
 * Nothing is written to the daemon's log. Errors go to stderr as
 * "strictrelay: sendmail: ..." naming the input at fault; the exit status
 * follows sendmail's <sysexits.h> convention, which mail programs (mutt,
 * cron, PHP) understand: 0 queued, 64 usage, 65 bad address or message,
 * 74 unreadable input, 75 temporary (database busy), 77 the queue is not
 * writable for this user, 78 configuration.
 *
 * net: and user: items of [requiretls] require_for never match (there is
 * no client address and no SMTP AUTH); from: and to: items tag the message
 * as on the SMTP path. The REQUIRETLS preflight (RCPT-time refusal) does
 * not run: such a message bounces later if it cannot be delivered.
 */
#ifndef STRICTRELAY_QUEUE_SENDMAIL_H
#define STRICTRELAY_QUEUE_SENDMAIL_H

#include <stdbool.h>

#include "mta/config.h"

extern const char sendmail_help[];

/*
 * Whether argv asks for the injector: argv[0]'s last component is
 * "sendmail", or the command word after strictrelay's -c FILE, --config
 * FILE, --config=FILE, -d and --debug is "sendmail".
 */
bool sendmail_invoked(int argc, char **argv);

/* The whole command for such an argv (main.c, before cli_main, which only
 * shows its help); returns the exit status. */
int sendmail_main(int argc, char **argv, char **envp);

#endif
