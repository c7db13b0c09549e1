/*
 * daemon.h - `strictrelay serve`: one libuv loop running the SMTP listener,
 * the store's writer, and (later) delivery and reports.
 *
 * Signals: SIGTERM and SIGINT stop accepting, let sessions in the middle of a
 * transaction finish (up to SHUTDOWN_GRACE seconds), commit what was
 * acknowledged and exit 0. SIGPIPE is ignored.
 */
#ifndef STRICTRELAY_DAEMON_H
#define STRICTRELAY_DAEMON_H

#include "mta/config.h"

#define SHUTDOWN_GRACE_SECONDS 10

/* Runs until a stop signal; returns the process exit code. */
int daemon_serve(const struct config *cfg);

#endif
