/*
 * lease: the leader lease of each partition (<p>hub:leader, or
 * <p>hub:leader:<n> with partitions > 1) and the share of them this hub
 * leads (SPEC section 11). Every second a script on shard 0 says the hub
 * is alive (<p>hub:hubs, a sorted set scored by Redis' clock), then one
 * on each Redis shard renews the leases it holds there (partition p's
 * lease lives on shard p mod shards, with the rest of the partition) and
 * takes free ones, up to ceil(partitions / hubs alive) in all; one held
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

#include <event2/event.h>

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
#define LEASE_STEP_MS		500	/* a shard that has not answered a
					 * step of the tick for this long is
					 * stalled: the tick goes on */

/* One step of the tick out: its reply may come after the tick went on. */
struct lease_step {
	struct hub	*h;
	unsigned	 tick;
	int		 step;		/* -1 the hubs alive, else a shard */
	int64_t		 sent;		/* monotonic */
};

/*
 * The tick, in steps (SPEC section 11: the hubs alive on shard 0, each
 * partition's lease on its shard). First, on shard 0: KEYS[1] the hubs
 * alive; ARGV[1] us, ARGV[2] the hubs' ms, ARGV[3] "1" to be counted
 * ("0": stopping). Answers how many hubs are alive.
 */
static const char lease_alive_lua[] =
    "redis.replicate_commands() "
    "local t = redis.call('time') "
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) "
    "if ARGV[3] == '1' then redis.call('zadd', KEYS[1], now, ARGV[1]) "
    "else redis.call('zrem', KEYS[1], ARGV[1]) end "
    "redis.call('zremrangebyscore', KEYS[1], '-inf', now - tonumber(ARGV[2])) "
    "redis.call('pexpire', KEYS[1], ARGV[2]) "
    "return math.max(1, redis.call('zcard', KEYS[1]))";
/*
 * Then on each shard: KEYS the leases of its partitions; ARGV[1] us,
 * ARGV[2] the lease's ms, ARGV[3] how many of them we may hold (our share
 * less what we hold on the other shards; "0" when stopping). Renews ours,
 * takes free ones up to that. Answers per lease: 1 ours (renewed or just
 * taken), 0 free, or its holder.
 */
static const char lease_tick_lua[] =
    "local out, mine, quota = {}, 0, tonumber(ARGV[3]) "
    "for i = 1, #KEYS do "
    "local v = redis.call('get', KEYS[i]) "
    "if v == ARGV[1] then redis.call('pexpire', KEYS[i], ARGV[2]) "
    "mine = mine + 1 out[i] = 1 "
    "elseif v then out[i] = v else out[i] = 0 end end "
    "for i = 1, #KEYS do "
    "if mine >= quota then break end "
    "if out[i] == 0 then "
    "redis.call('set', KEYS[i], ARGV[1], 'px', ARGV[2]) "
    "mine = mine + 1 out[i] = 1 end end "
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
static int	lease_send(struct hub *, int);
static void	lease_step(struct hub *);
static void	lease_stalled_cb(evutil_socket_t, short, void *);
static void	lease_cb(struct bus *, struct bus_reply *, void *);
static void	lease_alive(struct hub *, struct bus_reply *);
static void	lease_shard(struct hub *, int, int64_t, struct bus_reply *);
static int	lease_share_of(const struct hub *);
static int	lease_held(const struct hub *, int);
static void	lease_share(struct hub *, int);
static void	lease_takeover(struct part *, const char *);
static void	lease_takeover_cb(struct bus *, struct bus_reply *, void *);
static void	lease_released_cb(struct bus *, struct bus_reply *, void *);

/*
 * Every second, and when a shard connects: the hubs alive on shard 0,
 * then each shard's leases, one step after the other (so the share is
 * counted over every shard). A shard that is away is skipped: its
 * partitions are not renewed, the others are. So is one that has not
 * answered a step for LEASE_STEP_MS (stalled): the tick goes on without
 * it, and its late answer still counts for its own leases.
 */
void
lease_tick(struct hub *h)
{
	if (h->lease_pending || h->exiting)
		return;
	if (h->tick_timer == NULL &&
	    (h->tick_timer = evtimer_new(h->base, lease_stalled_cb, h)) ==
	    NULL)
		return;
	h->lease_pending = 1;
	h->tick++;
	h->tick_shard = -1;
	lease_step(h);
}

/*
 * Send step `step` of the tick: -1 the hubs alive (on shard 0), else the
 * leases of shard `step`. 0 sent (lease_cb() answers), -1 skipped.
 */
static int
lease_send(struct hub *h, int step)
{
	struct lease_step *st;
	struct bus *bus = bus_shards_at(h->shards, step < 0 ? 0 : step);
	const char **argv = NULL;
	char ttl[16], nkeys[16], quota[16];
	int k = 0, rc = -1;

	if (h->step_out[step + 1] || !bus_connected(bus) || step >= h->nparts ||
	    (st = calloc(1, sizeof(*st))) == NULL)
		return -1;
	st->h = h;
	st->tick = h->tick;
	st->step = step;
	st->sent = util_mono_ms();
	if (step < 0) {
		snprintf(ttl, sizeof(ttl), "%d", LEASE_ALIVE_MS);
		rc = bus_command(bus, lease_cb, st, "EVAL %s 1 %s %s %s %s",
		    lease_alive_lua, h->hubs_key, h->lease_value, ttl,
		    h->stopping ? "0" : "1");
	} else if ((argv = calloc((size_t)h->nparts + 8, sizeof(*argv))) !=
	    NULL) {
		snprintf(ttl, sizeof(ttl), "%d", LEASE_MS);
		snprintf(quota, sizeof(quota), "%d", h->stopping ? 0 :
		    lease_share_of(h) - lease_held(h, step));
		argv[k++] = "EVAL";
		argv[k++] = lease_tick_lua;
		argv[k++] = nkeys;
		for (int i = step; i < h->nparts; i += h->nshards)
			argv[k++] = h->parts[i].lease_key;
		snprintf(nkeys, sizeof(nkeys), "%d", k - 3);
		argv[k++] = h->lease_value;
		argv[k++] = ttl;
		argv[k++] = quota;
		rc = bus_commandv(bus, lease_cb, st, k, argv, NULL);
		free(argv);
	}
	if (rc == -1) {
		free(st);
		return -1;
	}
	h->step_out[step + 1] = 1;
	return 0;
}

/* The next step from h->tick_shard on, or the end of the tick. */
static void
lease_step(struct hub *h)
{
	struct timeval tv = { 0, LEASE_STEP_MS * 1000 };

	for (; h->tick_shard < h->nshards; h->tick_shard++)
		if (lease_send(h, h->tick_shard) == 0) {
			evtimer_add(h->tick_timer, &tv);
			return;		/* lease_cb() goes on */
		}
	evtimer_del(h->tick_timer);
	h->lease_pending = 0;
	lease_share(h, lease_held(h, -1) - lease_share_of(h));
}

/* A step unanswered for LEASE_STEP_MS: go on without that shard. */
static void
lease_stalled_cb(evutil_socket_t fd, short what, void *arg)
{
	struct hub *h = arg;

	(void)fd;
	(void)what;
	if (!h->lease_pending || h->exiting)
		return;
	log_warnx("lease tick: Redis shard %d has not answered for %d ms; "
	    "going on without it", h->tick_shard < 0 ? 0 : h->tick_shard,
	    LEASE_STEP_MS);
	h->tick_shard++;
	lease_step(h);
}

/*
 * A step's reply (NULL: its shard went, hub_on_disconnect() decides).
 * A late one (the tick went on without it) still counts for its leases.
 */
static void
lease_cb(struct bus *bus, struct bus_reply *reply, void *arg)
{
	struct lease_step *st = arg;
	struct hub *h = st->h;
	int step = st->step, current;

	(void)bus;
	current = st->tick == h->tick && step == h->tick_shard &&
	    h->lease_pending;
	if (!h->exiting) {
		h->step_out[step + 1] = 0;
		if (reply != NULL && step < 0)
			lease_alive(h, reply);
		else if (reply != NULL)
			lease_shard(h, step, st->sent, reply);
	}
	free(st);
	if (current && !h->exiting) {
		h->tick_shard++;
		lease_step(h);
	}
}

/* The hubs alive: a count. */
static void
lease_alive(struct hub *h, struct bus_reply *reply)
{
	if (bus_reply_type(reply) == BUS_INTEGER &&
	    bus_reply_integer(reply) >= 1)
		h->alive = (int)bus_reply_integer(reply);
	else
		log_warnx("lease tick: unexpected reply%s%s",
		    bus_reply_type(reply) == BUS_ERROR ? ": " : "",
		    bus_reply_type(reply) == BUS_ERROR ?
		    bus_reply_str(reply, NULL) : "");
}

/* The most partitions a hub leads: ceil(partitions / hubs alive). */
static int
lease_share_of(const struct hub *h)
{
	int alive = h->alive > 0 ? h->alive : 1;

	return (h->nparts + alive - 1) / alive;
}

/* How many partitions we lead, those of shard `but` left out (-1: none). */
static int
lease_held(const struct hub *h, int but)
{
	int held = 0;

	for (int i = 0; i < h->nparts; i++)
		held += h->parts[i].leader && h->parts[i].shard != but;
	return held;
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

/*
 * Shard s's leases, asked at sent: { per lease: 1 ours, 0 free, or its
 * holder }.
 */
static void
lease_shard(struct hub *h, int s, int64_t sent, struct bus_reply *reply)
{
	struct bus_reply *r;
	const char *holder;
	int k, share, held;
	size_t want = 0;

	for (int i = s; i < h->nparts; i += h->nshards)
		want++;
	if (bus_reply_type(reply) != BUS_ARRAY ||
	    bus_reply_elements(reply) != want) {
		log_warnx("lease tick (shard %d): unexpected reply%s%s", s,
		    bus_reply_type(reply) == BUS_ERROR ? ": " : "",
		    bus_reply_type(reply) == BUS_ERROR ?
		    bus_reply_str(reply, NULL) : "");
		return;
	}
	k = 0;
	for (int i = s; i < h->nparts; i += h->nshards, k++) {
		r = bus_reply_element(reply, (size_t)k);
		lease_set(&h->parts[i], bus_reply_type(r) == BUS_INTEGER &&
		    bus_reply_integer(r) == 1, sent);
	}
	/* Leases of a dead hub of this instance: taken over at once, up
	 * to the share. */
	share = lease_share_of(h);
	held = lease_held(h, -1);
	k = 0;
	for (int i = s; i < h->nparts && !h->stopping; i += h->nshards,
	    k++) {
		r = bus_reply_element(reply, (size_t)k);
		if (held < share && bus_reply_type(r) == BUS_STRING &&
		    (holder = bus_reply_str(r, NULL)) != NULL &&
		    lease_holder_gone(h, holder)) {
			lease_takeover(&h->parts[i], holder);
			held++;
		}
	}
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
	(void)!bus_command(p->redis, lease_takeover_cb, p,
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
	if (bus_command(p->redis, lease_released_cb, p, "EVAL %s 1 %s %s",
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
