/*
 * stats: the counters of one process, published every second as the Redis
 * hash <prefix>stats:<host>:<pid> (with a short TTL, so a dead process's
 * hash disappears by itself). The figures are those of the process's
 * metrics slot (common/metrics.h), the ones GET /metrics sums, so
 * redis-cli and /metrics agree.
 */
#ifndef GC_STATS_H
#define GC_STATS_H

#include <stdint.h>

struct event_base;
struct bus;
struct conf;

/* Who the process is; what it counted lives in its metrics slot. */
struct stats {
	const char	*role;		/* "worker", "hub" */
	int		 id;		/* worker number, 0 for the hub */
	int64_t		 started_ms;	/* monotonic */
	uint64_t	 connections;	/* open, counted by conn.c;
					 * worker.c copies it to the slot */
	const char	*partitions;	/* the hub: the partitions it leads
					 * ("0-3,9"), or NULL: no field */
};

struct stats_pub;

/*
 * Publish s through bus every second; s must outlive the publisher. With
 * base NULL it has no timer of its own: the owner's cron calls
 * stats_pub_tick() once a second (one cron per process).
 */
struct stats_pub *stats_pub_new(struct event_base *base, struct bus *bus,
	    const struct conf *conf, struct stats *s);
void	stats_pub_tick(struct stats_pub *p);
void	stats_pub_free(struct stats_pub *p);
/* Delete the hash now (orderly exit). */
void	stats_pub_remove(struct stats_pub *p);

#endif
