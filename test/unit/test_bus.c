/*
 * Unit tests of common/bus.c's command formatter: the bytes bus_commandv()
 * sends must be the RESP hiredis would have made.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/hiredis.h>

#include "common/bus.h"
#include "test/unit/tap.h"

int
main(void)
{
	static const char bin[] = { 'a', '\0', '\r', '\n', 'b' };
	const char *argv[1200];
	size_t lens[1200];
	char *mine, *theirs, num[1200][16];
	size_t i;
	int n1, n2, argc, same = 1;

	argv[0] = "XADD";
	argv[1] = "";
	argv[2] = bin;
	lens[0] = 4;
	lens[1] = 0;
	lens[2] = sizeof(bin);
	n1 = bus_format_argv(&mine, 3, argv, lens);
	ok(n1 == 31 && memcmp(mine, "*3\r\n$4\r\nXADD\r\n$0\r\n\r\n"
	    "$5\r\na\0\r\nb\r\n", 31) == 0 && mine[31] == '\0',
	    "an empty and a binary argument, as RESP");
	free(mine);
	n1 = bus_format_argv(&mine, 0, argv, lens);
	ok(n1 == 4 && strcmp(mine, "*0\r\n") == 0, "no argument");
	free(mine);
	/* argument counts and lengths of 1 to 4 digits, and argvlen
	 * NULL (strlen) */
	for (argc = 1; argc <= 1200; argc += 199) {
		for (i = 0; i < (size_t)argc; i++) {
			snprintf(num[i], sizeof(num[i]), "%zu", i * 37);
			argv[i] = num[i];
			lens[i] = strlen(num[i]);
		}
		for (int k = 0; k < 2; k++) {
			const size_t *l = k == 0 ? lens : NULL;

			n1 = bus_format_argv(&mine, argc, argv, l);
			n2 = redisFormatCommandArgv(&theirs, argc, argv, l);
			same = same && n1 == n2 && memcmp(mine, theirs,
			    (size_t)n1) == 0;
			free(mine);
			redisFreeCommand(theirs);
		}
	}
	ok(same, "1 to 1,200 arguments: hiredis' bytes");
	n1 = bus_format_argv(&mine, -1, argv, lens);
	ok(n1 == -1 && mine == NULL, "a negative count is refused");
	return tap_done();
}
