/*
 * worker: one event loop serving HTTP and WebSocket connections. Owns the
 * listener, the connection list, the PostgreSQL pool and the Redis bus of
 * this process.
 */
#ifndef GC_WORKER_H
#define GC_WORKER_H

#include <sys/queue.h>

#include "common/stats.h"

struct event_base;
struct event;
struct conf;
struct db_pool;
struct bus;
struct stats_pub;
struct conn;
struct static_files;
struct proc_ctx;
struct passwd_pool;
struct chat;

TAILQ_HEAD(conn_list, conn);

/*
 * The event loop's priorities. Liveness (the cron that refreshes the
 * heartbeat, and the heartbeat's Redis connection) runs before anything
 * else; everything else has the default, and a pass runs at most
 * WORKER_SLICE of its callbacks before the loop looks for liveness events
 * again: a burst of thousands of closes cannot starve the heartbeat.
 */
#define WORKER_PRI_LIVE		0
#define WORKER_NPRI		2	/* the default is WORKER_NPRI / 2 */
#define WORKER_SLICE		256

struct worker {
	int			 id;
	const struct conf	*conf;
	struct event_base	*base;
	struct event		*accept_ev;	/* the shared listening socket */
	struct conn_list	 conns;
	struct conn_list	 pending;	/* WebSockets with output to
						 * write this pass (pend_entry) */
	struct event		*flush;		/* activated once per pass
						 * while pending is not empty */
	uint64_t		 next_conn_id;
	struct db_pool		*db;
	struct bus_shards	*shards;	/* commands: a bus per Redis
						 * shard (SPEC section 11) */
	struct bus		*redis;		/* shard 0's: control channel,
						 * stats, what has no key */
	struct passwd_pool	*passwd;	/* scrypt threads */
	struct chat		*chat;		/* WebSocket members */
	struct stats		 stats;
	struct stats_pub	*stats_pub;
	struct static_files	*web;
	struct event		*sig_term, *sig_int, *sig_usr1, *sig_hup;
	struct event		*cron;		/* once a second */
	struct event		*gate;		/* until ready to accept */
	int64_t			 gate_deadline;	/* accept anyway after this */
	int			 ready;		/* accepting */
	const struct proc_ctx	*ctx;
	int			 stopping;	/* SIGTERM: finish and exit */
	int64_t			 stop_deadline;	/* monotonic ms */
	pid_t			 parent;	/* the master */
};

/* Called by conn.c when a connection is gone, so a stopping worker can
 * exit as soon as its last one is. */
void	worker_conn_closed(struct worker *w);

#endif
