/* main.c - strictrelay entry point; everything else is in cli.c */
#include "mta/cli.h"
#include "queue/sendmail.h"

int main(int argc, char **argv, char **envp)
{
	/* "sendmail ..." (a link) and "strictrelay sendmail ...": sendmail's
	 * own flags (-t -i -f -F -oi -v ...), which strictrelay's must not eat */
	if (sendmail_invoked(argc, argv))
		return sendmail_main(argc, argv, envp);
	return cli_main(argc, argv, envp);
}
