/*
 * limit: abuse limits. Fixed-window counters in Redis for what must be
 * counted across workers and instances (registrations per address, rooms
 * per user), and the per-connection token bucket of chat messages.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>

#include "common/bus.h"
#include "common/conf.h"
#include "common/log.h"
#include "common/msg.h"
#include "workers/conn.h"
#include "workers/limit.h"
#include "workers/worker.h"

/* One limit_take() in flight. */
struct limit_op {
	limit_cb	*cb;
	void		*arg;
};

/*
 * KEYS[1] the counter, ARGV[1] the most allowed, ARGV[2] the window. At
 * the limit: the seconds left of the window (at least 1). Else counted (a
 * new window gets its TTL; so does a key that somehow lost it) and 0.
 */
static const char limit_take_lua[] =
    "local n = tonumber(redis.call('get', KEYS[1]) or '0') "
    "if n >= tonumber(ARGV[1]) then "
    "  local t = redis.call('ttl', KEYS[1]) "
    "  if t < 1 then t = 1 end return t end "
    "if redis.call('incr', KEYS[1]) == 1 or "
    "    redis.call('ttl', KEYS[1]) < 0 then "
    "  redis.call('expire', KEYS[1], ARGV[2]) end "
    "return 0";
static const char limit_give_back_lua[] =
    "local n = tonumber(redis.call('get', KEYS[1]) or '0') "
    "if n > 0 then redis.call('decr', KEYS[1]) end return 1";

static void	limit_taken_cb(struct bus *, struct bus_reply *, void *);

/* --- windows in Redis ---------------------------------------------------- */

void
limit_key(const struct worker *w, const char *what, const char *subject,
    char *key, size_t keylen)
{
	(void)msg_key_limit(key, keylen, w->conf->redis_prefix, what, subject);
}

int
limit_take(struct worker *w, const char *key, int max, int window,
    limit_cb *cb, void *arg)
{
	struct limit_op *op;

	if ((op = malloc(sizeof(*op))) == NULL)
		return -1;
	op->cb = cb;
	op->arg = arg;
	if (bus_command(bus_shards_key(w->shards, key), limit_taken_cb, op,
	    "EVAL %s 1 %s %d %d",
	    limit_take_lua, key, max, window) == -1) {
		free(op);
		return -1;
	}
	return 0;
}

static void
limit_taken_cb(struct bus *bus, struct bus_reply *reply, void *arg)
{
	struct limit_op *op = arg;
	long long retry = -1;

	(void)bus;
	if (reply != NULL && bus_reply_type(reply) == BUS_INTEGER)
		retry = bus_reply_integer(reply);
	else if (reply != NULL && bus_reply_type(reply) == BUS_ERROR)
		log_warnx("limit script failed: %s", bus_reply_str(reply,
		    NULL));
	op->cb(retry, op->arg);
	free(op);
}

void
limit_give_back(struct worker *w, const char *key)
{
	if (bus_command(bus_shards_key(w->shards, key), NULL, NULL,
	    "EVAL %s 1 %s",
	    limit_give_back_lua, key) == -1)
		log_warnx("Redis is away: %s keeps an attempt that did not "
		    "count until its window ends", key);
}

void
limit_refuse(struct conn *c, long long retry_after, const char *what)
{
	char retry[48];

	snprintf(retry, sizeof(retry), "Retry-After: %lld\r\n", retry_after);
	conn_error_hdr(c, 429, retry, "too many %s; try again in %lld "
	    "seconds", what, retry_after);
}

/* --- token buckets ------------------------------------------------------- */

void
limit_bucket_init(struct limit_bucket *b, int burst, int64_t now_ms)
{
	b->millis = (int64_t)burst * 1000;
	b->at_ms = now_ms;
}

int64_t
limit_bucket_take(struct limit_bucket *b, int rate, int burst, int64_t now_ms)
{
	int64_t full = (int64_t)burst * 1000;

	/* rate tokens a second are rate thousandths a millisecond. A clock
	 * that went back refills nothing. */
	if (now_ms > b->at_ms) {
		int64_t elapsed = now_ms - b->at_ms;

		b->millis = elapsed >= full / rate + 1 ? full :
		    b->millis + elapsed * rate;
		if (b->millis > full)
			b->millis = full;
		b->at_ms = now_ms;
	}
	if (b->millis >= 1000) {
		b->millis -= 1000;
		return 0;
	}
	return (1000 - b->millis + rate - 1) / rate;
}
