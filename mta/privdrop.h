/*
 * privdrop.h - giving up root after start-up ([server] user).
 *
 * The daemon binds its ports and reads its keys as root, makes sure the
 * state directory belongs to the unprivileged user, then switches to that
 * user for good (supplementary groups, gid, uid; checked by trying to get
 * root back). CLI commands that write the queue use the same switch, so
 * files they create belong to the daemon's user too.
 */
#ifndef STRICTRELAY_MTA_PRIVDROP_H
#define STRICTRELAY_MTA_PRIVDROP_H

#include <stddef.h>

/* Creates dir (0750) if missing and gives it, and the queue database files
 * in it, to user when they belong to root. Call as root. 0 or -1 + err. */
int privdrop_prepare_dir(const char *dir, const char *user, char *err, size_t errlen);

/* Switches to user permanently. 0 or -1 + err. */
int privdrop_switch(const char *user, char *err, size_t errlen);

#endif
