/*
 * qcli.h - `strictrelay queue ...`: reads (and, for the management commands,
 * writes) the queue database directly with its own connection, so it works
 * while `serve` runs (WAL: readers never block the daemon's writer).
 */
#ifndef STRICTRELAY_QUEUE_QCLI_H
#define STRICTRELAY_QUEUE_QCLI_H

#include "mta/config.h"

/* argv[0] is "queue". Returns the exit code. */
int qcli_main(const struct config *cfg, int argc, char **argv);

#endif
