/* Unit tests of common/util.c: time stamps, tokens, integer parsing. */
#include "config.h"

#include <string.h>

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
	/* The same second again, then the next: the kept second is reused
	 * only for itself. */
	util_rfc3339(1795623601999LL, buf, sizeof(buf));
	ok(strcmp(buf, "2026-11-25T16:20:01.999Z") == 0, "again: %s", buf);
	util_rfc3339(1795623601007LL, buf, sizeof(buf));
	ok(strcmp(buf, "2026-11-25T16:20:01.007Z") == 0, "again: %s", buf);
	util_rfc3339(1795623602000LL, buf, sizeof(buf));
	ok(strcmp(buf, "2026-11-25T16:20:02.000Z") == 0, "next second: %s",
	    buf);
	util_rfc3339(1796083199999LL, buf, sizeof(buf));
	ok(strcmp(buf, "2026-11-30T23:59:59.999Z") == 0, "a month's end: %s",
	    buf);
	util_rfc3339(1796083200000LL, buf, sizeof(buf));
	ok(strcmp(buf, "2026-12-01T00:00:00.000Z") == 0, "the next month: %s",
	    buf);
	util_rfc3339(253402300800000LL, buf, sizeof(buf));
	ok(strcmp(buf, "10000-01-01T00:00:00.000Z") == 0, "year 10000: %s",
	    buf);
	util_rfc3339(1795623602000LL, buf, sizeof(buf));
	ok(strcmp(buf, "2026-11-25T16:20:02.000Z") == 0, "and back: %s", buf);

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
	return tap_done();
}
