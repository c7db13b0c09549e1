/*
 * cli.h - the command line: global options, command dispatch, help texts.
 * Exit codes (DESIGN.md 3): 0 success, 1 runtime error, 2 usage error.
 */
#ifndef STRICTRELAY_CLI_H
#define STRICTRELAY_CLI_H

#include <stdio.h>

#define EXIT_OK 0
#define EXIT_RUNTIME 1
#define EXIT_USAGE 2

int cli_main(int argc, char **argv, char **envp);

/* For commands: prints "strictrelay: CMD: message" and returns EXIT_USAGE. */
int cli_usage_error(const char *cmd, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

#endif
