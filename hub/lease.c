/*
 * lease: the hub's leader lease <p>hub:leader in Redis. Taken when free
 * (or when its holder was a hub of this instance that is gone), renewed
 * every second, given back on stop; a hub acts only while its own clock
 * says the lease is surely still its (lease_leading()). The epoch that
 * fences PostgreSQL is raised by hub.c once the lease is taken.
 */
#include "config.h"

#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "common/bus.h"
#include "common/conf.h"
#include "common/log.h"
#include "common/util.h"
#include "hub/hub.h"
#include "hub/lease.h"

#define LEASE_MS		5000	/* a silent leader loses the lease
					 * after */
#define LEASE_MARGIN_MS	1000	/* stop acting this long before the
					 * lease may have expired */

/* Extend the lease only if we still hold it; 1 extended, 0 lost. */
static const char lease_renew_lua[] =
    "if redis.call('get', KEYS[1]) == ARGV[1] then "
    "return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end";
/* Take the lease if free, or keep it if ours: 1; else the holder. */
static const char lease_acquire_lua[] =
    "local v = redis.call('get', KEYS[1]) "
    "if not v then redis.call('set', KEYS[1], ARGV[1], 'px', ARGV[2]) "
    "return 1 end "
    "if v == ARGV[1] then redis.call('pexpire', KEYS[1], ARGV[2]) "
    "return 1 end "
    "return v";
/* Replace a dead holder, if it still holds the lease: 1 taken, 0 not. */
static const char lease_takeover_lua[] =
    "if redis.call('get', KEYS[1]) == ARGV[1] then "
    "redis.call('set', KEYS[1], ARGV[2], 'px', ARGV[3]) return 1 "
    "else return 0 end";
/* Give the lease back only if we hold it. */
static const char lease_release_lua[] =
    "if redis.call('get', KEYS[1]) == ARGV[1] then "
    "return redis.call('del', KEYS[1]) else return 0 end";

static int	lease_holder_gone(struct hub *, const char *);
static void	lease_set(struct hub *, int);
static void	lease_cb(struct bus *, struct bus_reply *, void *);
static void	lease_takeover_cb(struct bus *, struct bus_reply *, void *);

/* Take the lease if it is free (or its holder is dead), or extend it. */
void
lease_renew(struct hub *h)
{
	char ttl[16];
	int rc;

	if (h->lease_pending || h->finishing || !bus_connected(h->redis))
		return;
	snprintf(ttl, sizeof(ttl), "%d", LEASE_MS);
	rc = bus_command(h->redis, lease_cb, h, "EVAL %s 1 %s %s %s",
	    h->leader ? lease_renew_lua : lease_acquire_lua, h->lease_key,
	    h->lease_value, ttl);
	if (rc == 0) {
		h->lease_pending = 1;
		h->lease_sent = util_mono_ms();
	}
}

/*
 * 1 if holder ("<instance>:<pid>") was a hub of this instance that is no
 * more: a hub restarted after a crash need not wait for the lease of its
 * dead predecessor to expire. (Instance names must differ between hosts,
 * as they must for the stats keys.)
 */
static int
lease_holder_gone(struct hub *h, const char *holder)
{
	const char *colon = strrchr(holder, ':');
	size_t ilen = strlen(h->conf->instance);
	long long pid;

	if (colon == NULL || (size_t)(colon - holder) != ilen ||
	    strncmp(holder, h->conf->instance, ilen) != 0 ||
	    util_parse_int(colon + 1, 1, INT_MAX, &pid) == -1 ||
	    pid == (long long)getpid())
		return 0;
	return kill((pid_t)pid, 0) == -1 && errno == ESRCH;
}

/*
 * held: the lease command sent at lease_sent says we hold the lease, so
 * no other hub can have it before lease_sent + LEASE_MS.
 */
static void
lease_set(struct hub *h, int held)
{
	if (held)
		h->lease_until = h->lease_sent + LEASE_MS -
		    LEASE_MARGIN_MS;
	if (held && !h->leader) {
		log_info("leader lease taken: this hub is active");
		h->leader = 1;
		hub_advance(h);
	} else if (!held && h->leader) {
		log_warnx("leader lease lost: standing by");
		h->leader = 0;
		hub_reset(h);
	}
}

/*
 * Whether to act as leader now. A hub that was frozen (SIGSTOP, a stalled
 * machine) may wake up with replies queued before the one that says its
 * lease is gone: by our own clock, the lease may have expired, and another
 * hub may lead; so stop before publishing anything.
 */
int
lease_leading(struct hub *h)
{
	if (h->leader && util_mono_ms() >= h->lease_until) {
		log_warnx("leader lease not renewed in time: standing by");
		h->leader = 0;
		hub_reset(h);
	}
	return h->leader;
}

static void
lease_cb(struct bus *bus, struct bus_reply *reply, void *arg)
{
	struct hub *h = arg;
	const char *holder;
	char ttl[16];

	(void)bus;
	h->lease_pending = 0;
	if (h->exiting || h->finishing || reply == NULL)
		return;	/* disconnected: hub_on_disconnect() decides */
	if (!h->leader && bus_reply_type(reply) == BUS_STRING &&
	    (holder = bus_reply_str(reply, NULL)) != NULL &&
	    lease_holder_gone(h, holder)) {
		log_info("the lease holder %s was a hub of this instance and "
		    "is gone: taking over", holder);
		snprintf(ttl, sizeof(ttl), "%d", LEASE_MS);
		if (bus_command(h->redis, lease_takeover_cb, h,
		    "EVAL %s 1 %s %s %s %s", lease_takeover_lua, h->lease_key,
		    holder, h->lease_value, ttl) == 0) {
			h->lease_pending = 1;
			h->lease_sent = util_mono_ms();
		}
		return;
	}
	lease_set(h, bus_reply_type(reply) == BUS_INTEGER &&
	    bus_reply_integer(reply) == 1);
}

static void
lease_takeover_cb(struct bus *bus, struct bus_reply *reply, void *arg)
{
	struct hub *h = arg;

	(void)bus;
	h->lease_pending = 0;
	if (h->exiting || h->finishing || reply == NULL)
		return;
	lease_set(h, bus_reply_type(reply) == BUS_INTEGER &&
	    bus_reply_integer(reply) == 1);
}

/* Give the lease back if we hold it; cb gets the reply. */
int
lease_release(struct hub *h, bus_cb *cb)
{
	return bus_command(h->redis, cb, h, "EVAL %s 1 %s %s",
	    lease_release_lua, h->lease_key, h->lease_value);
}
