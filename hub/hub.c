/*
 * hub: entry point of the hub process: its loop, signals, one cron and
 * the stop. Every instance's hub leads a share of the partitions of the
 * rooms (SPEC section 11; lease.c decides which): for each, batch.c reads
 * the partition's inbox with the consumer group "hub" and stores,
 * publishes and acknowledges in batches; sweep.c makes dead workers'
 * connections leave; door.c forwards the operators' inbox when there are
 * several partitions. A partition whose leader is gone is led again
 * within seconds (at once, when the leader was this instance's hub).
 * With several Redis shards, partition p is led on shard p mod shards
 * (a command bus per shard); a shard away stops only its partitions.
 */
#include "config.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>

#include "common/bus.h"
#include "common/conf.h"
#include "common/hash.h"
#include "common/log.h"
#include "common/metrics.h"
#include "common/msg.h"
#include "common/proc.h"
#include "common/stats.h"
#include "common/util.h"
#include "hub/batch.h"
#include "hub/door.h"
#include "hub/hub.h"
#include "hub/lease.h"
#include "hub/rooms.h"
#include "hub/store.h"
#include "hub/sweep.h"
#include "hub/tx.h"

#define HUB_STOP_MS		1000	/* SIGTERM: time for the batches in
					 * flight, then for the releases */
#define HUB_ROOM_IDLE_MS	600000	/* an empty room is forgotten */
#define HUB_GC_MS		10000
#define HUB_REPLAY_MS		5000	/* a live leader replays pending
					 * entries again this often */

static int	hub_parts_new(struct hub *);
static void	hub_parts_free(struct hub *);
static void	hub_signal_cb(evutil_socket_t, short, void *);
static void	hub_cron_cb(evutil_socket_t, short, void *);
static void	hub_cron_part(struct part *, int64_t);
static void	hub_led_list(struct hub *);
static void	hub_sample(struct part *);
static void	hub_sample_cb(struct bus *, struct bus_reply *, void *);
static void	hub_kick_cb(evutil_socket_t, short, void *);
static void	hub_stop_cb(evutil_socket_t, short, void *);
static void	hub_on_connect(struct bus *, void *);
static void	hub_on_disconnect(struct bus *, void *);
static void	hub_stop(struct hub *);
static void	hub_finish(struct hub *);

int
hub_main(const struct proc_ctx *ctx)
{
	static struct hub h;
	struct timeval one = { 1, 0 };
	const char *p;
	char shown[CONF_STR_MAX];

	h.conf = ctx->conf;
	p = h.conf->redis_prefix;
	h.parent = getppid();
	if (metrics_attach(METRICS_HUB, 0) == -1)
		log_warnx("no metrics slot free: /metrics will miss the hub");
	h.stats.role = "hub";
	h.stats.started_ms = util_mono_ms();
	snprintf(h.lease_value, sizeof(h.lease_value), "%s:%ld",
	    h.conf->instance, (long)getpid());
	(void)msg_key_name(h.hubs_key, sizeof(h.hubs_key), p, MSG_HUBS);

	if ((h.base = event_base_new()) == NULL)
		fatalx("event_base_new() failed");
	if (hash_init() == -1)
		fatalx("no random bytes for the room tables' hash key");
	/* A command bus per shard (SPEC section 11): partition p's keys
	 * and channels on shard p mod shards, the rest on shard 0. */
	if ((h.shards = bus_shards_new(h.base, h.conf->redis_url,
	    h.conf->redis_password, "redis", hub_on_connect,
	    hub_on_disconnect, &h, 1)) == NULL)
		fatalx("redis_url: cannot use '%s'",
		    bus_url_redact(h.conf->redis_url, shown, sizeof(shown)));
	h.nshards = bus_shards_count(h.shards);
	h.redis = bus_shards_at(h.shards, 0);
	if ((h.store = store_new(h.base, h.conf)) == NULL)
		fatalx("database_url: cannot use it");
	if (hub_parts_new(&h) == -1)
		fatalx("out of memory");
	if ((h.stats_pub = stats_pub_new(h.base, h.redis, h.conf,
	    &h.stats)) == NULL)
		fatalx("cannot set up stats");
	h.sig_term = evsignal_new(h.base, SIGTERM, hub_signal_cb, &h);
	h.sig_int = evsignal_new(h.base, SIGINT, hub_signal_cb, &h);
	h.sig_usr1 = evsignal_new(h.base, SIGUSR1, hub_signal_cb, &h);
	h.sig_hup = evsignal_new(h.base, SIGHUP, hub_signal_cb, &h);
	h.cron = event_new(h.base, -1, EV_PERSIST, hub_cron_cb, &h);
	h.stop_timer = evtimer_new(h.base, hub_stop_cb, &h);
	if (h.sig_term == NULL || h.sig_int == NULL || h.sig_usr1 == NULL ||
	    h.sig_hup == NULL || h.cron == NULL ||
	    h.stop_timer == NULL ||
	    evsignal_add(h.sig_term, NULL) == -1 ||
	    evsignal_add(h.sig_int, NULL) == -1 ||
	    evsignal_add(h.sig_usr1, NULL) == -1 ||
	    evsignal_add(h.sig_hup, NULL) == -1 ||
	    event_add(h.cron, &one) == -1)
		fatalx("cannot set up signal and timer events");

	if (h.nparts == 1)
		log_info("started; waiting for the leader lease %s",
		    h.parts[0].lease_key);
	else
		log_info("started; waiting for the leader leases of %d "
		    "partitions", h.nparts);
	event_base_dispatch(h.base);
	log_info("exiting");

	/* Callbacks run from here on (with NULL) only free what they own. */
	h.exiting = 1;
	stats_pub_free(h.stats_pub);
	store_free(h.store);
	door_free(h.door);
	hub_parts_free(&h);
	free(h.led_list);
	bus_shards_free(h.shards);
	event_free(h.sig_term);
	event_free(h.sig_int);
	event_free(h.sig_usr1);
	event_free(h.sig_hup);
	event_free(h.cron);
	event_free(h.stop_timer);
	if (h.tick_timer != NULL)
		event_free(h.tick_timer);
	event_base_free(h.base);
	metrics_detach();
	return GC_EXIT_OK;
}

/* ---- partitions ---------------------------------------------------------- */

/* Every partition, not led yet; the door if there are several. */
static int
hub_parts_new(struct hub *h)
{
	const char *pre = h->conf->redis_prefix;
	struct part *p;

	h->nparts = h->conf->partitions > 0 ? h->conf->partitions : 1;
	if ((h->parts = calloc((size_t)h->nparts, sizeof(*h->parts))) == NULL)
		return -1;
	for (int i = 0; i < h->nparts; i++) {
		p = &h->parts[i];
		p->h = h;
		p->n = i;
		p->shard = i % h->nshards;
		p->redis = bus_shards_partition(h->shards, i);
		(void)msg_key_part(p->lease_key, sizeof(p->lease_key), pre,
		    MSG_LEADER, i, h->nparts);
		(void)msg_key_part(p->inbox_key, sizeof(p->inbox_key), pre,
		    MSG_INBOX, i, h->nparts);
		(void)msg_key_part(p->presence_key, sizeof(p->presence_key),
		    pre, MSG_PRESENCE, i, h->nparts);
		snprintf(p->pending_from, sizeof(p->pending_from), "0-0");
		snprintf(p->live_last, sizeof(p->live_last), "-");
		if ((p->tx = tx_new(p->redis, p->lease_key,
		    h->lease_value)) == NULL ||
		    (p->rooms = rooms_new(h->conf, p->tx, p->presence_key,
		    i)) == NULL ||
		    (p->kick = evtimer_new(h->base, hub_kick_cb, p)) == NULL)
			return -1;
	}
	if (h->nparts > 1 && (h->door = door_new(h)) == NULL)
		return -1;
	/* "n-m," at most 10 bytes a partition */
	if ((h->led_list = calloc((size_t)h->nparts, 10)) == NULL)
		return -1;
	h->stats.partitions = h->led_list;
	return 0;
}

/* At exit: the batches still in flight too (their replies, if any come,
 * only free what they own). */
static void
hub_parts_free(struct hub *h)
{
	struct part *p;

	for (int i = 0; h->parts != NULL && i < h->nparts; i++) {
		p = &h->parts[i];
		batch_free(p->batch);
		batch_free(p->next);
		p->batch = p->next = NULL;
		bus_free(p->inbox);
		rooms_free(p->rooms);
		tx_free(p->tx);
		if (p->kick != NULL)
			event_free(p->kick);
	}
	free(h->parts);
	h->parts = NULL;
}

/* ---- the loop ------------------------------------------------------------ */

static void
hub_signal_cb(evutil_socket_t sig, short what, void *arg)
{
	struct hub *h = arg;

	(void)what;
	switch (sig) {
	case SIGTERM:
	case SIGINT:
		hub_stop(h);
		break;
	case SIGUSR1:
		log_reopen();
		log_info("log file reopened");
		break;
	default:
		break;
	}
}

static void
hub_cron_cb(evutil_socket_t fd, short what, void *arg)
{
	struct hub *h = arg;
	int64_t now = util_mono_ms();

	(void)fd;
	(void)what;
	if (getppid() != h->parent) {
		log_warnx("the master is gone; exiting");
		hub_stop(h);
		return;
	}
	if (h->bad_hidden > 0)
		log_warnx("inbox: %d more bad entries acknowledged and dropped",
		    h->bad_hidden);
	h->bad_logged = h->bad_hidden = 0;
	lease_tick(h);		/* stopping too: renews what we finish */
	if (!h->stopping) {
		for (int i = 0; i < h->nparts; i++)
			hub_cron_part(&h->parts[i], now);
		door_advance(h->door);
	}
	hub_gauges(h);
	hub_led_list(h);
}

/* The stats hash's "partitions": the ones we lead, runs as "n-m". */
static void
hub_led_list(struct hub *h)
{
	char *s = h->led_list;
	int i = 0, j;

	*s = '\0';
	while (i < h->nparts) {
		if (!h->parts[i].leader) {
			i++;
			continue;
		}
		for (j = i; j + 1 < h->nparts && h->parts[j + 1].leader; j++)
			;
		s += sprintf(s, "%s%d", s == h->led_list ? "" : ",", i);
		if (j > i)
			s += sprintf(s, "-%d", j);
		i = j + 1;
	}
}

/*
 * The inbox's length and pending entries, for /metrics (one XLEN and
 * one XPENDING summary a second per led partition).
 */
static void
hub_sample(struct part *p)
{
	if (!bus_connected(p->redis))
		return;
	(void)!bus_command(p->redis, hub_sample_cb, p, "XLEN %s",
	    p->inbox_key);
	(void)!bus_command(p->redis, hub_sample_cb, p, "XPENDING %s hub",
	    p->inbox_key);
}

/* XLEN's reply (an integer) comes first, then XPENDING's (an array). */
static void
hub_sample_cb(struct bus *bus, struct bus_reply *reply, void *arg)
{
	struct part *p = arg;
	struct bus_reply *count;

	(void)bus;
	if (p->h->exiting || reply == NULL)
		return;
	if (bus_reply_type(reply) == BUS_INTEGER)
		p->sampled_len = bus_reply_integer(reply);
	else if (bus_reply_type(reply) == BUS_ARRAY &&
	    bus_reply_elements(reply) >= 1 &&
	    bus_reply_type(count = bus_reply_element(reply, 0)) ==
	    BUS_INTEGER)
		metrics_inbox_set(p->n, p->sampled_len,
		    bus_reply_integer(count));
}

static void
hub_cron_part(struct part *p, int64_t now)
{
	if (!lease_leading(p))
		return;
	hub_sample(p);
	sweep_run(p);
	if (p->batch == NULL && p->next == NULL &&
	    now - p->gc_ms >= HUB_GC_MS) {
		rooms_gc(p->rooms, now, HUB_ROOM_IDLE_MS);
		p->gc_ms = now;
	}
	/*
	 * A hub that lost the lease while its blocking read was out may
	 * still be handed entries (the group and consumer are shared): they
	 * stay pending, unseen by a leader that replayed before. Replay
	 * again now and then; with nothing in flight, whatever is pending
	 * is such an orphan.
	 */
	if (p->phase == PART_LIVE && !p->giving &&
	    now - p->replayed_ms >= HUB_REPLAY_MS) {
		p->phase = PART_PENDING;
		p->replay_quiet = 1;
		snprintf(p->pending_from, sizeof(p->pending_from), "0-0");
	}
	batch_advance(p);
}

static void
hub_kick_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	batch_advance(arg);
}

/* The hub's gauges in its metrics slot (the counters go as they move). */
void
hub_gauges(struct hub *h)
{
	size_t rooms = 0;
	int64_t oldest = 0;
	int led = 0;

	for (int i = 0; i < h->nparts; i++) {
		struct part *p = &h->parts[i];

		if (!p->leader)
			continue;
		led++;
		rooms += rooms_active(p->rooms);
		if (p->batch != NULL && p->oldest_ms > 0 &&
		    (oldest == 0 || p->oldest_ms < oldest))
			oldest = p->oldest_ms;
		metrics_part(p->n, 1);
	}
	for (int i = 0; i < h->nparts; i++)
		if (!h->parts[i].leader)
			metrics_part(i, 0);
	metrics_set(MG_ROOMS, (int64_t)rooms);
	metrics_set(MG_LEADER, led);
	metrics_set(MG_INBOX_OLDEST_MS, oldest);
}

/* ---- Redis connections -------------------------------------------------- */

/*
 * A shard's command connection is (back) up: tick at once (the groups are
 * made again when each partition is led: Redis may have restarted empty).
 */
static void
hub_on_connect(struct bus *bus, void *arg)
{
	struct hub *h = arg;

	if (bus_shard(bus) == 0)
		h->beats_from = util_mono_ms();
	bus_aof_check(bus, NULL);
	lease_tick(h);
}

/*
 * Without its shard we cannot renew a partition's lease; another hub may
 * take over once it expires, so stop leading the partitions of that shard
 * now rather than risk two. The other shards' partitions go on.
 */
static void
hub_on_disconnect(struct bus *bus, void *arg)
{
	struct hub *h = arg;
	int led = 0, shard = bus_shard(bus);

	for (int i = 0; i < h->nparts; i++) {
		struct part *p = &h->parts[i];

		if (p->shard != shard)
			continue;
		led += p->leader;
		p->leader = 0;
		p->giving = 0;
		p->exec_pending = 0;
		p->sweep_pending = 0;
		batch_reset(p);
	}
	if (led > 0 && h->nshards == 1)
		log_warnx("Redis connection lost: standing by until it is "
		    "back");
	else if (led > 0)
		log_warnx("Redis shard %d lost: standing by for its %d "
		    "partitions until it is back", shard, led);
}

int
hub_shard_url(const struct hub *h, int shard, char *buf, size_t len)
{
	return bus_urls_entry(h->conf->redis_url, shard, buf, len);
}

/* ---- stopping ------------------------------------------------------------ */

/*
 * SIGTERM: read nothing more; let each batch in flight finish if it does
 * within HUB_STOP_MS (else its entries stay pending for the next hub),
 * give every lease back, exit.
 */
static void
hub_stop(struct hub *h)
{
	struct timeval tv = { HUB_STOP_MS / 1000, (HUB_STOP_MS % 1000) * 1000 };

	if (h->stopping)
		return;
	h->stopping = 1;
	log_info("stopping");
	stats_pub_remove(h->stats_pub);
	if (bus_connected(h->redis))
		lease_leave(h);
	evtimer_add(h->stop_timer, &tv);
	for (int i = 0; i < h->nparts; i++) {
		evtimer_del(h->parts[i].kick);
		batch_advance(&h->parts[i]);	/* idle ones: given back */
	}
	hub_settled(h);
}

static void
hub_stop_cb(evutil_socket_t fd, short what, void *arg)
{
	struct hub *h = arg;

	(void)fd;
	(void)what;
	if (!h->finishing)
		hub_finish(h);
	else
		event_base_loopbreak(h->base);
}

/*
 * The time is up: batches still in flight are left (their entries stay
 * pending for the next hub); give the leases back and exit once Redis has
 * answered (or after HUB_STOP_MS).
 */
static void
hub_finish(struct hub *h)
{
	struct timeval tv = { HUB_STOP_MS / 1000, (HUB_STOP_MS % 1000) * 1000 };
	size_t left = 0;

	h->finishing = 1;
	for (int i = 0; i < h->nparts; i++) {
		struct part *p = &h->parts[i];

		left += batch_entries(p);
		if (p->leader && bus_connected(p->redis))
			lease_give(p);
		else {
			p->leader = 0;
			batch_reset(p);
		}
	}
	if (left > 0)
		log_info("stopping with %zu entries unfinished: they stay "
		    "pending for the next hub", left);
	evtimer_add(h->stop_timer, &tv);
	hub_settled(h);
}

void
hub_settled(struct hub *h)
{
	struct timeval quick = { 0, 200000 };

	if (!h->stopping || h->exiting || h->releases > 0)
		return;
	for (int i = 0; i < h->nparts; i++)
		if (h->parts[i].leader)
			return;
	/* let the stats DEL and the last releases reach Redis */
	h->finishing = 1;
	evtimer_add(h->stop_timer, &quick);
}
