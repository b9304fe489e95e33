/* Unit tests of common/util.c: time stamps, tokens, integer parsing, RESP. */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/hiredis.h>

#include "common/util.h"
#include "test/unit/tap.h"

int
main(void)
{
	char buf[64], t1[64], t2[64];
	long long v;
	size_t i;
	int url_safe = 1;

	util_rfc3339(1795623601123LL, buf, sizeof(buf));
	ok(strcmp(buf, "2026-11-25T16:20:01.123Z") == 0,
	    "RFC 3339 with milliseconds: %s", buf);
	util_rfc3339(0, buf, sizeof(buf));
	ok(strcmp(buf, "1970-01-01T00:00:00.000Z") == 0, "epoch: %s", buf);

	ok(util_token(t1, sizeof(t1), 32) == 0 && util_token(t2,
	    sizeof(t2), 32) == 0, "tokens are made");
	ok(strlen(t1) == 43, "32 random bytes give 43 characters");
	ok(strcmp(t1, t2) != 0, "two tokens differ");
	for (i = 0; t1[i]; i++)
		if (!strchr("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
		    "0123456789-_", t1[i]))
			url_safe = 0;
	ok(url_safe, "tokens are URL-safe");
	ok(util_token(t1, 10, 32) == -1, "a short buffer is refused");

	ok(util_parse_int("42", 0, 100, &v) == 0 && v == 42, "42");
	ok(util_parse_int("-5", -10, 10, &v) == 0 && v == -5, "-5");
	ok(util_parse_int("101", 0, 100, &v) == -1, "above max");
	ok(util_parse_int("", 0, 100, &v) == -1, "empty");
	ok(util_parse_int("4x", 0, 100, &v) == -1, "trailing garbage");
	ok(util_parse_int(" 4", 0, 100, &v) == -1, "leading space");
	ok(util_parse_int("+4", 0, 100, &v) == -1, "plus sign");
	ok(util_parse_int("-", -10, 10, &v) == -1, "lone minus");
	ok(util_parse_int("-1", 0, 10, &v) == -1, "negative when min is 0");
	ok(util_parse_int("99999999999999999999", 0, 1LL << 62, &v) == -1,
	    "overflow");
	ok(util_parse_int("9223372036854775807", 0, 9223372036854775807LL,
	    &v) == 0 && v == 9223372036854775807LL, "int64 max");

	/* RESP commands: byte for byte what hiredis makes */
	{
		static const char bin[] = { 'a', '\0', '\r', '\n', 'b' };
		const char *argv[1200];
		size_t lens[1200];
		char *mine, *theirs, num[1200][16];
		int n1, n2, argc, same = 1;

		argv[0] = "XADD";
		argv[1] = "";
		argv[2] = bin;
		lens[0] = 4;
		lens[1] = 0;
		lens[2] = sizeof(bin);
		n1 = util_resp_argv(&mine, 3, argv, lens);
		ok(n1 == 31 && memcmp(mine, "*3\r\n$4\r\nXADD\r\n$0\r\n\r\n"
		    "$5\r\na\0\r\nb\r\n", 31) == 0 && mine[31] == '\0',
		    "an empty and a binary argument, as RESP");
		free(mine);
		n1 = util_resp_argv(&mine, 0, argv, lens);
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

				n1 = util_resp_argv(&mine, argc, argv, l);
				n2 = redisFormatCommandArgv(&theirs, argc, argv,
				    l);
				same = same && n1 == n2 && memcmp(mine, theirs,
				    (size_t)n1) == 0;
				free(mine);
				redisFreeCommand(theirs);
			}
		}
		ok(same, "1 to 1,200 arguments: hiredis' bytes");
		n1 = util_resp_argv(&mine, -1, argv, lens);
		ok(n1 == -1 && mine == NULL, "a negative count is refused");
	}
	return tap_done();
}
