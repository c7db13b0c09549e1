/* privdrop.c - see privdrop.h */
#include "privdrop.h"

#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mta/log.h"
#include "queue/store.h"

static int lookup(const char *user, uid_t *uid, gid_t *gid, char *err, size_t errlen)
{
	errno = 0;
	struct passwd *pw = getpwnam(user);
	if (pw == NULL) {
		snprintf(err, errlen, "[server] user \"%s\": %s", user,
			 errno ? strerror(errno) : "no such user");
		return -1;
	}
	if (pw->pw_uid == 0) {
		snprintf(err, errlen, "[server] user \"%s\" is root: name an unprivileged account", user);
		return -1;
	}
	*uid = pw->pw_uid;
	*gid = pw->pw_gid;
	return 0;
}

static int give(const char *path, uid_t uid, gid_t gid, char *err, size_t errlen)
{
	struct stat sb;
	if (lstat(path, &sb) < 0) {
		if (errno == ENOENT)
			return 0;
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return -1;
	}
	if (sb.st_uid != 0 || S_ISLNK(sb.st_mode))
		return 0;
	if (chown(path, uid, gid) < 0) {
		snprintf(err, errlen, "chown %s: %s", path, strerror(errno));
		return -1;
	}
	log_info("main", "gave %s to uid %u (it belonged to root)", path, (unsigned)uid);
	return 0;
}

int privdrop_prepare_dir(const char *dir, const char *user, char *err, size_t errlen)
{
	uid_t uid;
	gid_t gid;
	if (lookup(user, &uid, &gid, err, errlen) < 0)
		return -1;
	if (mkdir(dir, 0750) < 0 && errno != EEXIST) {
		snprintf(err, errlen, "[queue] state_dir %s: %s", dir, strerror(errno));
		return -1;
	}
	static const char *const files[] = { "", "/" STORE_DB_NAME, "/" STORE_DB_NAME "-wal",
					     "/" STORE_DB_NAME "-shm", "/" STORE_DB_NAME "-journal" };
	for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
		char path[4096];
		snprintf(path, sizeof(path), "%s%s", dir, files[i]);
		if (give(path, uid, gid, err, errlen) < 0)
			return -1;
	}
	return 0;
}

int privdrop_switch(const char *user, char *err, size_t errlen)
{
	uid_t uid;
	gid_t gid;
	if (lookup(user, &uid, &gid, err, errlen) < 0)
		return -1;
	if (initgroups(user, gid) < 0 || setgid(gid) < 0 || setuid(uid) < 0) {
		snprintf(err, errlen, "cannot switch to user %s: %s", user, strerror(errno));
		return -1;
	}
	/* The switch must be permanent. */
	if (setuid(0) == 0 || geteuid() == 0) {
		snprintf(err, errlen, "switched to user %s but could get root back", user);
		return -1;
	}
	return 0;
}
