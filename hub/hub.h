/*
 * hub: the single actor that owns chat order. This stage holds the leader
 * lease and publishes its stats; chat handling arrives with the rooms.
 */
#ifndef GC_HUB_H
#define GC_HUB_H

#include "common/stats.h"

struct event_base;
struct event;
struct bus;
struct conf;

struct hub {
	const struct conf	*conf;
	struct event_base	*base;
	struct bus		*redis;
	struct stats		 stats;
	struct stats_pub	*stats_pub;
	struct event		*sig_term, *sig_int, *sig_usr1, *sig_hup;
	struct event		*cron;		/* lease, parent check */
	char			 lease_key[128];
	char			 lease_value[128];	/* instance:pid */
	int			 leader;	/* we hold the lease */
	int			 lease_pending;	/* a lease command in flight */
	pid_t			 parent;
};

#endif
