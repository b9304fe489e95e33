/* Unit tests of the chat token bucket of workers/limit.c. */
#include "config.h"

#include <stdint.h>

#include "workers/limit.h"
#include "test/unit/tap.h"

int
main(void)
{
	struct limit_bucket b;
	int64_t t = 1000000, wait;
	int i, n;

	/* rate 10/s, burst 30: a full bucket gives 30 at once, then none. */
	limit_bucket_init(&b, 30, t);
	for (n = 0; n < 100 && limit_bucket_take(&b, 10, 30, t) == 0; n++)
		;
	ok(n == 30, "a full bucket gives the burst at once: %d", n);
	wait = limit_bucket_take(&b, 10, 30, t);
	ok(wait == 100, "an empty bucket says when the next token comes: "
	    "%lld ms", (long long)wait);
	ok(limit_bucket_take(&b, 10, 30, t + 99) > 0, "not before");
	ok(limit_bucket_take(&b, 10, 30, t + 100) == 0, "then one token");

	/* Steady at the rate: never refused. */
	t += 100;
	for (n = 0, i = 1; i <= 1000; i++)
		n += limit_bucket_take(&b, 10, 30, t + 100 * i) != 0;
	ok(n == 0, "a client at exactly the rate is never refused (%d)", n);

	/* A long pause refills to the burst, not beyond. */
	t += 100 * 1000 + 3600 * 1000;
	for (n = 0; n < 100 && limit_bucket_take(&b, 10, 30, t) == 0; n++)
		;
	ok(n == 30, "an hour idle refills to the burst only: %d", n);

	/* A clock that goes back refills nothing. */
	ok(limit_bucket_take(&b, 10, 30, t - 5000) > 0,
	    "time going back gives no token");

	/* A rate above 1000/s: tokens come in under a millisecond. */
	limit_bucket_init(&b, 1, 0);
	ok(limit_bucket_take(&b, 5000, 1, 0) == 0, "burst of 1");
	ok(limit_bucket_take(&b, 5000, 1, 0) == 1, "the wait is at least "
	    "1 ms");
	ok(limit_bucket_take(&b, 5000, 1, 1) == 0, "5 tokens a ms: one");
	return tap_done();
}
