/*
 * lease: the leader lease of each partition (<p>hub:leader, or
 * <p>hub:leader:<n> with partitions > 1) and the share of them this hub
 * leads (SPEC section 11). Every second one script says the hub is alive
 * (<p>hub:hubs, a sorted set scored by Redis' clock), renews the leases it
 * holds, and takes free ones up to ceil(partitions / hubs alive); one held
 * beyond the share is handed over (batch.c finishes its batch, then
 * lease_give()). A hub acts for a partition only while its own clock says
 * the lease is surely still its (lease_leading()). The epoch that fences
 * PostgreSQL is raised by batch.c once a lease is taken.
 */
#include "config.h"

#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/bus.h"
#include "common/conf.h"
#include "common/log.h"
#include "common/util.h"
#include "hub/batch.h"
#include "hub/hub.h"
#include "hub/lease.h"

#define LEASE_MS		3000	/* a silent leader loses a lease
					 * after */
#define LEASE_MARGIN_MS		500	/* stop acting this long before the
					 * lease may have expired */
#define LEASE_ALIVE_MS		3000	/* a hub that did not tick for this
					 * long is no longer counted */

/*
 * The tick. KEYS[1] the hubs alive, KEYS[2..] the leases; ARGV[1] us,
 * ARGV[2] the lease's ms, ARGV[3] the hubs' ms, ARGV[4] "1" to take free
 * leases ("0": stopping, no longer counted among the hubs alive).
 * Answers { hubs alive, then per lease: 1 ours (renewed or just taken),
 * 0 free, or its holder }.
 */
static const char lease_tick_lua[] =
    "redis.replicate_commands() "
    "local t = redis.call('time') "
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) "
    "if ARGV[4] == '1' then redis.call('zadd', KEYS[1], now, ARGV[1]) "
    "else redis.call('zrem', KEYS[1], ARGV[1]) end "
    "redis.call('zremrangebyscore', KEYS[1], '-inf', now - tonumber(ARGV[3])) "
    "redis.call('pexpire', KEYS[1], ARGV[3]) "
    "local alive = math.max(1, redis.call('zcard', KEYS[1])) "
    "local share = math.ceil((#KEYS - 1) / alive) "
    "local out, mine = { alive }, 0 "
    "for i = 2, #KEYS do "
    "local v = redis.call('get', KEYS[i]) "
    "if v == ARGV[1] then redis.call('pexpire', KEYS[i], ARGV[2]) "
    "mine = mine + 1 out[i] = 1 "
    "elseif v then out[i] = v else out[i] = 0 end end "
    "if ARGV[4] == '1' then for i = 2, #KEYS do "
    "if mine >= share then break end "
    "if out[i] == 0 then "
    "redis.call('set', KEYS[i], ARGV[1], 'px', ARGV[2]) "
    "mine = mine + 1 out[i] = 1 end end end "
    "return out";
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
static void	lease_set(struct part *, int, int64_t);
static void	lease_cb(struct bus *, struct bus_reply *, void *);
static void	lease_share(struct hub *, int);
static void	lease_takeover(struct part *, const char *);
static void	lease_takeover_cb(struct bus *, struct bus_reply *, void *);
static void	lease_released_cb(struct bus *, struct bus_reply *, void *);

void
lease_tick(struct hub *h)
{
	const char **argv;
	char ttl[16], alive[16];
	int n = h->nparts + 8;

	if (h->lease_pending || h->exiting || !bus_connected(h->redis))
		return;
	if ((argv = calloc((size_t)n, sizeof(*argv))) == NULL)
		return;
	snprintf(ttl, sizeof(ttl), "%d", LEASE_MS);
	snprintf(alive, sizeof(alive), "%d", LEASE_ALIVE_MS);
	argv[0] = "EVAL";
	argv[1] = lease_tick_lua;
	snprintf(h->tick_nkeys, sizeof(h->tick_nkeys), "%d", h->nparts + 1);
	argv[2] = h->tick_nkeys;
	argv[3] = h->hubs_key;
	for (int i = 0; i < h->nparts; i++)
		argv[4 + i] = h->parts[i].lease_key;
	argv[4 + h->nparts] = h->lease_value;
	argv[5 + h->nparts] = ttl;
	argv[6 + h->nparts] = alive;
	argv[7 + h->nparts] = h->stopping ? "0" : "1";
	if (bus_commandv(h->redis, lease_cb, h, n, argv, NULL) == 0) {
		h->lease_pending = 1;
		h->lease_sent = util_mono_ms();
	}
	free(argv);
}

/*
 * 1 if holder ("<instance>:<pid>") was a hub of this instance that is no
 * more: a hub restarted after a crash need not wait for the leases of its
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
 * held: the lease command sent at sent says we hold p's lease, so no
 * other hub can have it before sent + LEASE_MS.
 */
static void
lease_set(struct part *p, int held, int64_t sent)
{
	if (held)
		p->lease_until = sent + LEASE_MS - LEASE_MARGIN_MS;
	if (held && !p->leader) {
		log_info("partition %d: leader lease taken: this hub is active",
		    p->n);
		p->leader = 1;
		p->giving = 0;
		batch_advance(p);
	} else if (!held && p->leader) {
		log_warnx("partition %d: leader lease lost: standing by", p->n);
		p->leader = 0;
		p->giving = 0;
		batch_reset(p);
	}
}

int
lease_leading(struct part *p)
{
	if (p->leader && util_mono_ms() >= p->lease_until) {
		log_warnx("partition %d: leader lease not renewed in time: "
		    "standing by", p->n);
		p->leader = 0;
		p->giving = 0;
		batch_reset(p);
	}
	return p->leader;
}

static void
lease_cb(struct bus *bus, struct bus_reply *reply, void *arg)
{
	struct hub *h = arg;
	struct bus_reply *r;
	const char *holder;
	int64_t sent = h->lease_sent;
	int held = 0, share;

	(void)bus;
	h->lease_pending = 0;
	if (h->exiting || reply == NULL)
		return;	/* disconnected: hub_on_disconnect() decides */
	if (bus_reply_type(reply) != BUS_ARRAY ||
	    bus_reply_elements(reply) != (size_t)h->nparts + 1 ||
	    bus_reply_integer(bus_reply_element(reply, 0)) < 1) {
		log_warnx("lease tick: unexpected reply%s%s",
		    bus_reply_type(reply) == BUS_ERROR ? ": " : "",
		    bus_reply_type(reply) == BUS_ERROR ?
		    bus_reply_str(reply, NULL) : "");
		return;
	}
	h->alive = (int)bus_reply_integer(bus_reply_element(reply, 0));
	share = (h->nparts + h->alive - 1) / h->alive;
	for (int i = 0; i < h->nparts; i++) {
		r = bus_reply_element(reply, (size_t)i + 1);
		if (bus_reply_type(r) == BUS_INTEGER &&
		    bus_reply_integer(r) == 1) {
			held++;
			lease_set(&h->parts[i], 1, sent);
		} else
			lease_set(&h->parts[i], 0, sent);
	}
	/* Leases of a dead hub of this instance: taken over at once, up to
	 * the share. */
	for (int i = 0; i < h->nparts && held < share && !h->stopping; i++) {
		r = bus_reply_element(reply, (size_t)i + 1);
		if (bus_reply_type(r) == BUS_STRING &&
		    (holder = bus_reply_str(r, NULL)) != NULL &&
		    lease_holder_gone(h, holder)) {
			lease_takeover(&h->parts[i], holder);
			held++;
		}
	}
	lease_share(h, held - share);
}

/*
 * We hold excess leases more than our share (a hub joined): hand over
 * that many, the last ones, each once its batch in flight is done.
 */
static void
lease_share(struct hub *h, int excess)
{
	struct part *p;

	for (int i = 0; i < h->nparts; i++)
		if (h->parts[i].leader && h->parts[i].giving)
			excess--;
	for (int i = h->nparts - 1; i >= 0 && excess > 0 && !h->stopping;
	    i--) {
		p = &h->parts[i];
		if (!p->leader || p->giving)
			continue;
		log_info("partition %d: %d hubs alive, handing it over",
		    p->n, h->alive);
		p->giving = 1;
		excess--;
		batch_advance(p);
	}
}

static void
lease_takeover(struct part *p, const char *holder)
{
	struct hub *h = p->h;
	char ttl[16];

	log_info("partition %d: the lease holder %s was a hub of this "
	    "instance and is gone: taking over", p->n, holder);
	snprintf(ttl, sizeof(ttl), "%d", LEASE_MS);
	p->takeover_sent = util_mono_ms();
	(void)!bus_command(h->redis, lease_takeover_cb, p,
	    "EVAL %s 1 %s %s %s %s", lease_takeover_lua, p->lease_key,
	    holder, h->lease_value, ttl);
}

static void
lease_takeover_cb(struct bus *bus, struct bus_reply *reply, void *arg)
{
	struct part *p = arg;

	(void)bus;
	if (p->h->exiting || p->h->stopping || reply == NULL)
		return;
	if (bus_reply_type(reply) == BUS_INTEGER &&
	    bus_reply_integer(reply) == 1)
		lease_set(p, 1, p->takeover_sent);
}

void
lease_give(struct part *p)
{
	struct hub *h = p->h;

	if (!p->leader)
		return;
	p->leader = 0;
	p->giving = 0;
	batch_reset(p);
	if (bus_command(h->redis, lease_released_cb, p, "EVAL %s 1 %s %s",
	    lease_release_lua, p->lease_key, h->lease_value) == 0)
		h->releases++;
}

static void
lease_released_cb(struct bus *bus, struct bus_reply *reply, void *arg)
{
	struct part *p = arg;
	struct hub *h = p->h;

	(void)bus;
	h->releases--;
	if (h->exiting)
		return;
	if (reply != NULL && bus_reply_type(reply) == BUS_INTEGER &&
	    bus_reply_integer(reply) == 1)
		log_info("partition %d: leader lease released", p->n);
	hub_settled(h);
}

void
lease_leave(struct hub *h)
{
	(void)!bus_command(h->redis, NULL, NULL, "ZREM %s %s", h->hubs_key,
	    h->lease_value);
}
