/*
 * limit: the abuse limits of SPEC section 8. Counters that every worker
 * and every instance must share are fixed windows in Redis, one key family:
 *	<prefix>limit:<what>:<subject>	attempts in the window; its TTL is
 *					what is left of the window
 * (what = register, subject = client address; what = rooms, subject = user
 * id). The chat limit is per connection, so it is a token bucket in the
 * member's memory, with no Redis round trip per message.
 */
#ifndef GC_LIMIT_H
#define GC_LIMIT_H

#include <stddef.h>
#include <stdint.h>

struct conn;
struct worker;

#define LIMIT_KEY_MAX	192	/* longest counter key */

/* --- windows in Redis ---------------------------------------------------- */

/* The counter key of what (a literal: "register", "rooms") for subject. */
void	limit_key(const struct worker *w, const char *what, const char *subject,
	    char *key, size_t keylen);

/*
 * The answer of limit_take(): 0 the attempt is counted and may go on; > 0
 * refused, the seconds until the window ends; -1 Redis is away (answer 503).
 */
typedef void limit_cb(long long retry_after, void *arg);

/*
 * Count one attempt on key, at most max per window seconds (the window
 * starts with its first attempt), checked and counted in one step so that
 * concurrent attempts cannot all pass. cb runs later on the loop, also when
 * the command fails; -1 (and no callback) when it cannot be sent.
 */
int	limit_take(struct worker *w, const char *key, int max, int window,
	    limit_cb *cb, void *arg) __attribute__((warn_unused_result));
/* An attempt that turned out not to count (e.g. a 409) is given back; best
 * effort, never below zero. */
void	limit_give_back(struct worker *w, const char *key);
/* Answer 429 with Retry-After: "too many <what>; try again in N seconds". */
void	limit_refuse(struct conn *c, long long retry_after, const char *what);

/* --- token buckets ------------------------------------------------------- */

/* rate tokens a second, at most burst of them; kept in thousandths. */
struct limit_bucket {
	int64_t		 millis;	/* tokens x 1000 */
	int64_t		 at_ms;		/* monotonic time of millis */
};

/* A full bucket at now_ms. */
void	limit_bucket_init(struct limit_bucket *b, int burst, int64_t now_ms);
/*
 * Take one token at now_ms: 0 when there was one; otherwise none is taken
 * and the result is the milliseconds until one will be there (>= 1), what
 * a client is told to wait (a §5 socket is closed instead).
 */
int64_t	limit_bucket_take(struct limit_bucket *b, int rate, int burst,
	    int64_t now_ms);

#endif
