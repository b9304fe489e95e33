/*
 * hub: the single actor that owns chat order. The leader (one hub among
 * all instances, by a lease in Redis) reads the inbox stream in batches,
 * gives each message its room's next id, stores the batch in PostgreSQL,
 * publishes every event on the room's channel, keeps presence, and only
 * then acknowledges the entries. hub.c runs the loop, the lease and the
 * inbox; rooms.c keeps rooms and presence (ring.c each room's recent
 * history); store.c talks to PostgreSQL;
 * tx.c is the lease-fenced Redis transaction each batch's changes go in.
 */
#ifndef GC_HUB_H
#define GC_HUB_H

#include <sys/types.h>

#include <stddef.h>
#include <stdint.h>

#include "common/bus.h"
#include "common/stats.h"

struct event_base;
struct event;
struct evbuffer;
struct conf;
struct rooms;
struct store;
struct hub_batch;
struct tx;

/* How far the leader is; a standby hub stays at HUB_STANDBY. */
enum hub_phase {
	HUB_STANDBY,	/* not leading: no rooms, no presence in memory */
	HUB_FENCE,	/* leading: raising the epoch in PostgreSQL */
	HUB_REBUILD,	/* leading: reading <p>hub:presence back */
	HUB_PENDING,	/* leading: replaying entries delivered but never
			 * acknowledged (by us or an earlier hub) */
	HUB_LIVE	/* leading: reading new entries */
};

struct hub {
	const struct conf	*conf;
	struct event_base	*base;
	struct bus		*redis;	/* commands: lease, PUBLISH, XACK,
					 * presence, heartbeats */
	struct bus		*inbox;	/* the blocking XREADGROUP only */
	struct store		*store;
	struct rooms		*rooms;
	struct stats		 stats;
	struct stats_pub	*stats_pub;
	struct event		*sig_term, *sig_int, *sig_usr1, *sig_hup;
	struct event		*cron;		/* every second */
	struct event		*kick;		/* hub_advance() later */
	struct event		*stop_timer;	/* bounds the last batch,
						 * then the exit */
	char			 lease_key[128];
	char			 lease_value[128];	/* instance:pid */
	char			 inbox_key[128];	/* <p>hub:inbox */
	char			 presence_key[128]; /* <p>hub:presence */
	int			 leader;	/* we hold the lease */
	int			 lease_pending;	/* a lease command out */
	int64_t			 lease_sent;	/* monotonic: ... sent */
	int64_t			 lease_until;	/* monotonic: ours till then,
						 * whatever we missed */
	pid_t			 parent;

	enum hub_phase		 phase;
	unsigned		 epoch;		/* bumped when leading stops:
						 * older replies are stale */
	int64_t			 fence;		/* the epoch raised in
						 * PostgreSQL when leading
						 * began: stores need it */
	char			 pending_from[48]; /* replay from */
	int			 reading;	/* an XREADGROUP out */
	int			 read_replay;	/* ... for pending entries */
	unsigned		 read_epoch;	/* ... sent in this epoch */
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
	int64_t			 gc_ms;		/* last rooms_gc() */

	struct tx		*tx;		/* the Redis transaction */

	int			 bad_logged;	/* bad entries logged, and */
	int			 bad_hidden;	/* ... and not logged */
	int			 read_errors;	/* in a row */

	int			 stopping;	/* SIGTERM: finish, go */
	int			 finishing;	/* releasing the lease */
	int			 exiting;	/* the loop is over: callbacks
						 * only free things */
};

/*
 * Used across hub/: do the next thing the leader has to do; forget rooms,
 * presence and batches in flight (leading stopped, or memory can no longer
 * be trusted); and the verdict on a transaction's reply: -1 if it was not
 * applied (then memory is ahead of Redis and must be rebuilt; if the lease
 * was lost, this hub stops leading).
 */
void	hub_advance(struct hub *h);
void	hub_reset(struct hub *h);
int	hub_exec_check(struct hub *h, struct bus_reply *reply,
	    const char *what);

#endif
