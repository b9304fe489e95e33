/*
 * metrics: the counters and gauges of every process of an instance, in one
 * anonymous shared mapping that the master creates before it forks. Each
 * worker and the hub claims a slot of its own and is the only writer of
 * it; GET /metrics (any worker) and the stats hash read it: no Redis round
 * trip, nothing to aggregate later, exact at the moment of the read.
 *
 * Counters never go backwards while the instance runs: the slot of a
 * process that is gone keeps its counters until a new process claims the
 * slot, which first folds them into a per-role "retired" total. Gauges
 * count only for processes that are alive.
 */
#ifndef GC_METRICS_H
#define GC_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "common/attr.h"

#define METRICS_ROUTES		48	/* route indexes a worker counts
					 * under (workers/api.c's table) */
#define METRICS_CLASSES		5	/* 1xx .. 5xx */
#define METRICS_BUCKETS		14	/* latency buckets, +Inf last */
#define METRICS_SHARDS		16	/* Redis shards (BUS_SHARDS_MAX) */
/*
 * Slots to map: a reload may raise workers to conf's maximum (256) while
 * the old generation still finishes its requests, so room for both plus
 * the hubs. Pages no process claims are never touched.
 */
#define METRICS_SLOTS		(2 * (256 + 1) + 2)

enum metrics_role {
	METRICS_WORKER,
	METRICS_HUB,
	METRICS_NROLES
};

/*
 * Counters: monotonic. The meaning of the messages ones depends on the
 * role (as in the stats hash): a worker counts frames from and to its
 * clients, the hub messages sequenced and events published.
 */
enum metrics_counter {
	MC_MSGS_IN,		/* worker: chat messages received;
				 * hub: messages given an id and stored */
	MC_MSGS_OUT,		/* worker: frames delivered to clients;
				 * hub: events published */
	MC_INBOX_ENTRIES,	/* hub: inbox entries read */
	MC_DB_QUERIES,		/* db_query() calls answered or refused */
	MC_DB_UNAVAILABLE,	/* ... that could not run (res == NULL) */
	MC_DB_SQL_ERRORS,	/* ... that PostgreSQL refused */
	MC_DB_USEC,		/* sum of their latencies, microseconds */
	MC_REDIS_COMMANDS,	/* commands sent, or refused while away */
	MC_REDIS_UNAVAILABLE,	/* ... not sent, or no reply (connection
				 * lost) */
	MC_REDIS_ERROR_REPLIES,	/* ... answered with an error */
	MC_REDIS_USEC,		/* sum of their latencies, microseconds */
	MC_DB_BUCKET0,		/* METRICS_BUCKETS latency counts */
	MC_REDIS_BUCKET0 = MC_DB_BUCKET0 + METRICS_BUCKETS,
	MC_HTTP0 = MC_REDIS_BUCKET0 + METRICS_BUCKETS, /* route x class */
	/* Per Redis shard: +switch-master seen for its master. */
	MC_REDIS_FAILOVERS0 = MC_HTTP0 + METRICS_ROUTES * METRICS_CLASSES,
	MC__N = MC_REDIS_FAILOVERS0 + METRICS_SHARDS
};
/* The counter of responses of route (0 .. METRICS_ROUTES-1) and class
 * (0 for 1xx .. 4 for 5xx). */
#define METRICS_HTTP(route, cls) \
	(MC_HTTP0 + (route) * METRICS_CLASSES + (cls))

/* Gauges: what a live process has now. */
enum metrics_gauge {
	MG_CONNECTIONS,		/* worker: open client connections */
	MG_WEBSOCKETS,		/* worker: ... of which WebSockets */
	MG_ROOMS,		/* worker: rooms with a member here;
				 * hub: active rooms in memory */
	MG_LEADER,		/* hub: partitions whose lease it holds */
	MG_INBOX_OLDEST_MS,	/* hub: wall-clock ms of the oldest inbox
				 * entry in the batch in hand, 0: none */
	/* Per Redis shard, 1 in one of them: its command connection is up
	 * (for a Sentinel entry: ROLE said master), or not. */
	MG_REDIS_SHARD_UP0,
	MG_REDIS_SHARD_DOWN0 = MG_REDIS_SHARD_UP0 + METRICS_SHARDS,
	MG_PARTS0 = MG_REDIS_SHARD_DOWN0 + METRICS_SHARDS,
				/* hub: METRICS_PART_WORDS words, bit n of
				 * the set of partitions it leads (the
				 * snapshot ORs them, not sums) */
	MG__N = MG_PARTS0 + 16
};
#define METRICS_PART_WORDS	16	/* 1024 partitions, 64 a word */
#define METRICS_PARTS		(64 * METRICS_PART_WORDS)

/* Upper bounds of the latency buckets, in microseconds (last: +Inf). */
extern const int64_t metrics_bucket_us[METRICS_BUCKETS];

/*
 * In the master, once, before the first fork: map the region for nslots
 * processes. 0, or -1 with errno set (then exit GC_EXIT_FATAL).
 */
int	metrics_init(int nslots) GC_MUSTCHECK;
/*
 * In a worker or the hub, first thing after fork: claim a free slot (or
 * the slot of a process that is gone). -1 when the region is full or was
 * never mapped: the process then counts into a private slot, which its
 * stats hash still shows, but /metrics does not.
 */
int	metrics_attach(enum metrics_role role, int id)
	    GC_MUSTCHECK;
/* Orderly exit: fold this process's counters into the retired total and
 * free the slot. Later counts go to a private slot. */
void	metrics_detach(void);
/* Once a second (stats.c): a slot whose owner stops beating for
 * METRICS_STALE_MS no longer counts in the gauges (pid reuse). */
void	metrics_beat(void);

/* --- the writer's side: this process's own slot ------------------------- */

void	metrics_count(enum metrics_counter c, uint64_t n);
void	metrics_set(enum metrics_gauge g, int64_t v);
/* The hub: partition n (0 .. 1023) is led by it (led 1) or not. */
void	metrics_part(int n, int led);
/*
 * The hub: the length and pending entries of partition n's inbox, as it
 * last sampled them (one set per instance: the instance's hub writes
 * them for the partitions it leads). get: 0, or -1 if never sampled.
 */
void	metrics_inbox_set(int n, int64_t length, int64_t pending);
int	metrics_inbox_get(int n, int64_t *length, int64_t *pending);
/* One response of route (see workers/api.h) with status 100..599. */
void	metrics_http(int route, int status);
/* The latency of one PostgreSQL query or Redis command, microseconds, into
 * its histogram and sum (the caller counts the query and its errors). */
void	metrics_db_observe(int64_t usec);
void	metrics_redis_observe(int64_t usec);

/* What this process has counted (the stats hash). */
uint64_t metrics_own_counter(enum metrics_counter c);
int64_t	metrics_own_gauge(enum metrics_gauge g);
/* Responses of class cls (0 for 1xx .. 4 for 5xx), all routes. */
uint64_t metrics_own_http_class(int cls);

/* --- the reader's side: the whole instance ------------------------------ */

struct metrics_proc {
	long		 pid;
	enum metrics_role role;
	int		 id;		/* worker number; hub: 0 */
	int64_t		 started_ms;	/* wall clock */
};

struct metrics_snapshot {
	int64_t		 now_ms;	/* wall clock, at the read */
	int64_t		 started_ms;	/* metrics_init() in the master */
	/* Live processes' slots plus retired ones, by role. */
	uint64_t	 counter[METRICS_NROLES][MC__N];
	/* Live processes only; MG_INBOX_OLDEST_MS is the smallest non-0. */
	int64_t		 gauge[METRICS_NROLES][MG__N];
	size_t		 nprocs;
	struct metrics_proc procs[];	/* the live processes */
};

/*
 * Everything, summed, consistent with respect to slots changing owner.
 * The caller frees the result with free(); NULL if out of memory.
 */
struct metrics_snapshot *metrics_snapshot(void);

#endif
