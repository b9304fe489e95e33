/*
 * hub: the single actor that owns chat order. The leader (one hub among
 * all instances, by a lease in Redis) reads the inbox stream in batches,
 * gives each message its room's next id, stores the batch in PostgreSQL,
 * publishes every event on the room's channel, keeps presence, and only
 * then acknowledges the entries. hub.c runs the loop, the lease and the
 * inbox; rooms.c keeps rooms and presence; store.c talks to PostgreSQL.
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
	unsigned		 pass;		/* counts id assignments */
	int64_t			 trimmed_ms;	/* last XTRIM */
	int64_t			 gc_ms;		/* last rooms_gc() */

	int			 tx_open;	/* hub_tx_begin() called */
	int			 tx_failed;	/* a command was not queued */
	size_t			 tx_count;	/* commands queued */
	struct evbuffer		*tx_args;	/* their arguments, end to
						 * end: "<argc>", argv... */
	size_t			*tx_lens;	/* each argument's length */
	size_t			 tx_nargs, tx_cap;

	int			 bad_logged;	/* bad entries logged, and */
	int			 bad_hidden;	/* ... and not logged */
	int			 read_errors;	/* in a row */

	int			 stopping;	/* SIGTERM: finish, go */
	int			 finishing;	/* releasing the lease */
	int			 exiting;	/* the loop is over: callbacks
						 * only free things */
};

/*
 * The hub's Redis transaction: everything one batch (or one heartbeat
 * check) changes is queued here and sent as one script, which Redis runs
 * atomically: a hub killed half way leaves no event published without its
 * acknowledgement, and no presence half written. The script first checks
 * that the leader lease is still this hub's, and changes nothing if it is
 * not (fencing: a hub that lost its lease, whatever its clock says, can
 * neither publish nor acknowledge). hub_tx_publish() counts one event out.
 */
void	hub_tx_begin(struct hub *h);
void	hub_tx_command(struct hub *h, int argc, const char **argv,
	    const size_t *lens);
void	hub_tx_publish(struct hub *h, const char *channel,
	    struct evbuffer *payload);
/*
 * Send it: 0 when sent, and cb will get the reply (an array of each
 * command's reply, like EXEC's; an error "LEASE ..." if the lease was not
 * ours, then nothing was applied; NULL if the connection went). 1 when the
 * transaction was empty: nothing was sent and cb will not be called. -1
 * when a command could not be queued or the script not sent: nothing is
 * applied, cb will not be called, and what the caller changed in memory
 * for it must be forgotten.
 */
int	hub_tx_commit(struct hub *h, bus_cb *cb, void *arg)
	    __attribute__((warn_unused_result));

#endif
