/*
 * hub: the actor that owns chat order, one partition of the rooms at a
 * time (SPEC section 11). The leader of a partition (one hub among all
 * instances, by a lease in Redis) reads the partition's inbox stream in
 * batches, gives each message its room's next id, stores the batch in
 * PostgreSQL, publishes every event on the room's channel, keeps
 * presence, and only then acknowledges the entries. hub.c runs the loop
 * and the stop; lease.c the leases and the share of partitions; batch.c
 * the inbox of each led partition; door.c the operators' inbox when there
 * are several; sweep.c dead workers; rooms.c rooms and presence (ring.c each
 * room's recent history); store.c PostgreSQL; tx.c the lease-fenced Redis
 * transaction of a batch. All of a partition's keys and channels live on
 * its Redis shard (p mod shards), so its transaction is one script on one
 * server.
 */
#ifndef GC_HUB_H
#define GC_HUB_H

#include <sys/types.h>

#include <stddef.h>
#include <stdint.h>

#include "common/bus.h"
#include "common/conf.h"
#include "common/stats.h"

#define HUB_KEEP_MARKS	4	/* inbox trim marks per partition (batch.c) */

struct event_base;
struct event;
struct evbuffer;
struct conf;
struct rooms;
struct store;
struct hub_batch;
struct hub_scan;
struct tx;
struct door;

/* The inbox read a partition has out; also the kind of a batch read. */
enum batch_read {
	BATCH_READ_NONE,
	BATCH_READ_LIVE,	/* XREADGROUP ... BLOCK ... > */
	BATCH_READ_REPLAY	/* XREADGROUP ... pending_from */
};

/* How far the leader of a partition is; one not led stays at PART_STANDBY. */
enum part_phase {
	PART_STANDBY,	/* not leading: no rooms, no presence in memory */
	PART_FENCE,	/* leading: raising the epoch in PostgreSQL */
	PART_REBUILD,	/* leading: reading <p>hub:presence[:n] back */
	PART_PENDING,	/* leading: replaying entries delivered but never
			 * acknowledged (by us or an earlier hub) */
	PART_LIVE	/* leading: reading new entries */
};

/*
 * One partition of the rooms (SPEC section 11): its keys, its lease, and
 * everything its leader keeps. Losing a partition forgets only this.
 */
struct part {
	struct hub		*h;
	int			 n;		/* 0 .. partitions - 1 */
	char			 lease_key[128];
	char			 inbox_key[128];
	char			 presence_key[128];
	int			 shard;		/* n mod shards: where its
						 * keys and channels live */
	struct bus		*redis;		/* commands on that shard:
						 * lease, presence, the
						 * fenced transaction */
	struct bus		*inbox;		/* the blocking XREADGROUP of
						 * this partition only (on
						 * its shard); made when
						 * first led */
	struct rooms		*rooms;
	struct tx		*tx;		/* fenced by lease_key */
	struct event		*kick;		/* part_advance() later */
	int			 leader;	/* we hold the lease */
	int			 giving;	/* handing it over: finish the
						 * batch, then release */
	int64_t			 lease_until;	/* monotonic: ours till then,
						 * whatever we missed */
	int64_t			 takeover_sent;	/* monotonic: a takeover of a
						 * dead hub's lease sent */

	enum part_phase		 phase;
	unsigned		 epoch;		/* bumped when leading stops:
						 * older replies are stale */
	int64_t			 fence;		/* the epoch raised in
						 * PostgreSQL when leading
						 * began: stores need it */
	char			 pending_from[48]; /* replay from */
	enum batch_read		 read;		/* the XREADGROUP out */
	unsigned		 read_epoch;	/* ... sent in this epoch */
	struct hub_scan		*check;		/* its orphan check, sent
						 * behind it (batch.c) */
	int64_t			 replayed_ms;	/* last replay (monotonic) */
	int			 replay_quiet;	/* ... a periodic one */
	int			 exec_pending;	/* a batch's EXEC out */
	int			 sweep_pending;	/* a heartbeat MGET out */
	struct hub_batch	*batch;		/* in progress, or NULL */
	struct hub_batch	*next;		/* live, read while batch
						 * was in flight: it goes
						 * next, or NULL */
	char			 live_last[48];	/* last entry id of the last
						 * live read, or "-" */
	unsigned		 pass;		/* counts id assignments */
	int64_t			 trimmed_ms;	/* last XTRIM */
	uint64_t		 handled;	/* live entries committed */
	uint64_t		 mark_at;	/* ... when the next mark is */
	unsigned		 nmarks;	/* marks made (batch.c) */
	char			 marks[HUB_KEEP_MARKS][48]; /* ids, a ring */
	int64_t			 gc_ms;		/* last rooms_gc() */
	int			 read_errors;	/* in a row */
	int64_t			 oldest_ms;	/* inbox lag, or 0 */
	int64_t			 sampled_len;	/* XLEN, for /metrics */
};

struct hub {
	const struct conf	*conf;
	struct event_base	*base;
	struct bus_shards	*shards;	/* a command bus per entry
						 * of redis_url (SPEC 11) */
	int			 nshards;
	struct bus		*redis;	/* shard 0's: the hubs alive, the
					 * operators' door, heartbeats,
					 * stats */
	int64_t			 beats_from;	/* monotonic: shard 0 up
						 * since */
	struct store		*store;
	struct stats		 stats;
	struct stats_pub	*stats_pub;
	struct event		*sig_term, *sig_int, *sig_usr1, *sig_hup;
	struct event		*cron;		/* every second */
	struct event		*stop_timer;	/* bounds the last batches,
						 * then the exit */
	char			 lease_value[128];	/* instance:pid */
	char			 hubs_key[128];	/* <p>hub:hubs */
	struct part		*parts;		/* conf->partitions of them */
	int			 nparts;
	char			*led_list;	/* the stats' "partitions":
						 * "0-3,9", "" for none */
	int			 alive;		/* hubs alive, last tick */
	int			 lease_pending;	/* a lease tick out */
	unsigned		 tick;		/* ... its number */
	int			 tick_shard;	/* ... its step: -1 the hubs
						 * alive (shard 0), then each
						 * shard's leases */
	unsigned char		 step_out[BUS_SHARDS_MAX + 1];	/* a step
						 * (+ 1) unanswered */
	struct event		*tick_timer;	/* a step stalled */
	int			 releases;	/* lease releases out */
	struct door		*door;		/* partitions > 1: the
						 * operators' inbox */
	pid_t			 parent;

	int			 bad_logged;	/* bad entries logged, and */
	int			 bad_hidden;	/* ... and not logged */

	int			 stopping;	/* SIGTERM: finish, go */
	int			 finishing;	/* releasing the leases */
	int			 exiting;	/* the loop is over: callbacks
						 * only free things */
};

/* Refresh the hub's gauges (metrics): after every step of a partition. */
void	hub_gauges(struct hub *h);
/* The stop may end: called when a lease given back is answered. */
void	hub_settled(struct hub *h);
/* Entry shard of redis_url into buf (a bus_new() URL); -1 if none. */
int	hub_shard_url(const struct hub *h, int shard, char *buf, size_t len);

#endif
