/* main.c - strictrelay entry point; everything else is in cli.c */
#include "mta/cli.h"

int main(int argc, char **argv, char **envp)
{
	return cli_main(argc, argv, envp);
}
