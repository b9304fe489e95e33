/*
 * stats: the counters of one process, published every second as the Redis
 * hash <prefix>stats:<host>:<pid> (with a short TTL, so a dead process's
 * hash disappears by itself). The owner bumps the fields directly.
 */
#ifndef GC_STATS_H
#define GC_STATS_H

#include <stdint.h>

struct event_base;
struct bus;
struct conf;

struct stats {
	const char	*role;		/* "worker", "hub" */
	int		 id;		/* worker number, 0 for the hub */
	int64_t		 started_ms;	/* monotonic */
	uint64_t	 connections;	/* open client connections now */
	uint64_t	 websockets;	/* of which WebSockets */
	uint64_t	 rooms;		/* rooms with a local member now */
	uint64_t	 msgs_in;	/* chat messages received */
	uint64_t	 msgs_out;	/* chat frames delivered */
	uint64_t	 http[6];	/* responses by status class; [0] unused */
};

struct stats_pub;

/* Publish s through bus every second; s must outlive the publisher. */
struct stats_pub *stats_pub_new(struct event_base *base, struct bus *bus,
	    const struct conf *conf, struct stats *s);
void	stats_pub_free(struct stats_pub *p);
/* Delete the hash now (orderly exit). */
void	stats_pub_remove(struct stats_pub *p);

#endif
