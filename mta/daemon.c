/* mta/daemon.c: placeholder, being written */
typedef int placeholder_daemon;
