/* main.c - placeholder until the CLI lands */
#include <stdio.h>
int main(void)
{
	puts("strictrelay " STRICTRELAY_VERSION);
	return 0;
}
