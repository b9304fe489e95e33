/*
 * sweep: the check for dead workers, per led partition. Every second, one
 * MGET of the heartbeat keys (on shard 0) of the workers with connections
 * in the partition's rooms; a worker whose
 * key is gone (or never came within SWEEP_GRACE_MS) has crashed, and its
 * connections leave, through the partition's transaction (on its shard).
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "common/bus.h"
#include "common/conf.h"
#include "common/log.h"
#include "common/msg.h"
#include "common/util.h"
#include "hub/batch.h"
#include "hub/hub.h"
#include "hub/lease.h"
#include "hub/rooms.h"
#include "hub/sweep.h"
#include "hub/tx.h"

#define SWEEP_GRACE_MS		2000	/* a worker never seen alive has
					 * this long to set its heartbeat */

/* A heartbeat check: the workers asked about, in MGET's order. */
struct sweep {
	struct part	*p;
	unsigned	 epoch;
	size_t		 n, cap;
	char		**wids;
	int64_t		*added;
	int		*alive;
};

static void	sweep_add(const char *, int64_t, int, void *);
static void	sweep_free(struct sweep *);
static void	sweep_alive_cb(struct bus *, struct bus_reply *, void *);
static void	sweep_exec_cb(struct bus *, struct bus_reply *, void *);

/*
 * Every second: is the heartbeat key of each worker with connections
 * still there? One MGET for all. A worker whose key is gone (or never came
 * within SWEEP_GRACE_MS) has crashed: its connections leave.
 */
void
sweep_run(struct part *p)
{
	struct hub *h = p->h;
	struct sweep *sw;
	const char **argv = NULL;
	char **keys = NULL;
	size_t n;

	/* Shard 0 just (re)connected, maybe restarted empty: the workers'
	 * heartbeats come back within a second, nobody is dead meanwhile. */
	if (!lease_leading(p) || (p->phase != PART_PENDING &&
	    p->phase != PART_LIVE) || p->sweep_pending ||
	    !bus_connected(h->redis) || !bus_connected(p->redis) ||
	    util_mono_ms() - h->beats_from < SWEEP_GRACE_MS)
		return;
	if ((sw = calloc(1, sizeof(*sw))) == NULL)
		return;
	sw->p = p;
	sw->epoch = p->epoch;
	rooms_workers(p->rooms, sweep_add, sw);
	if ((n = sw->n) == 0)
		goto done;
	if ((argv = calloc(n + 1, sizeof(*argv))) == NULL ||
	    (keys = calloc(n, sizeof(*keys))) == NULL)
		goto done;
	argv[0] = "MGET";
	for (size_t i = 0; i < n; i++) {
		if ((keys[i] = malloc(MSG_KEY_MAX)) == NULL)
			goto done;
		(void)msg_key_worker_alive(keys[i], MSG_KEY_MAX,
		    h->conf->redis_prefix, sw->wids[i]);
		argv[i + 1] = keys[i];
	}
	if (bus_commandv(h->redis, sweep_alive_cb, sw, (int)n + 1, argv, NULL) ==
	    0) {
		p->sweep_pending = 1;
		sw = NULL;
	}
done:
	for (size_t i = 0; keys != NULL && i < n; i++)
		free(keys[i]);
	free(keys);
	free(argv);
	sweep_free(sw);
}

static void
sweep_add(const char *wid, int64_t added, int alive, void *arg)
{
	struct sweep *sw = arg;
	size_t cap;
	void *p;

	if (sw->n == sw->cap) {
		cap = sw->cap > 0 ? sw->cap * 2 : 16;
		if ((p = realloc(sw->wids, cap * sizeof(*sw->wids))) == NULL)
			return;
		sw->wids = p;
		if ((p = realloc(sw->added, cap * sizeof(*sw->added))) == NULL)
			return;
		sw->added = p;
		if ((p = realloc(sw->alive, cap * sizeof(*sw->alive))) == NULL)
			return;
		sw->alive = p;
		sw->cap = cap;
	}
	if ((sw->wids[sw->n] = strdup(wid)) == NULL)
		return;
	sw->added[sw->n] = added;
	sw->alive[sw->n] = alive;
	sw->n++;
}

static void
sweep_free(struct sweep *sw)
{
	if (sw == NULL)
		return;
	for (size_t i = 0; i < sw->n; i++)
		free(sw->wids[i]);
	free(sw->wids);
	free(sw->added);
	free(sw->alive);
	free(sw);
}

static void
sweep_alive_cb(struct bus *bus, struct bus_reply *reply, void *arg)
{
	struct sweep *sw = arg;
	struct part *p = sw->p;
	struct hub *h = p->h;
	int64_t mono = util_mono_ms(), now = util_now_ms();
	size_t gone;
	int rc;

	(void)bus;
	p->sweep_pending = 0;
	if (h->exiting || reply == NULL || sw->epoch != p->epoch ||
	    h->stopping || !lease_leading(p) ||
	    bus_reply_type(reply) != BUS_ARRAY ||
	    bus_reply_elements(reply) != sw->n)
		goto done;
	tx_begin(p->tx);
	for (size_t i = 0; i < sw->n; i++) {
		if (bus_reply_type(bus_reply_element(reply, i)) != BUS_NIL) {
			rooms_worker_alive(p->rooms, sw->wids[i]);
			continue;
		}
		if (!sw->alive[i] && mono - sw->added[i] < SWEEP_GRACE_MS)
			continue;
		gone = rooms_worker_gone(p->rooms, sw->wids[i], now);
		if (gone > 0)
			log_warnx("worker %s: no heartbeat %s; its %zu "
			    "connections in partition %d leave", sw->wids[i],
			    sw->alive[i] ? "any more" : "ever", gone, p->n);
	}
	if ((rc = tx_commit(p->tx, sweep_exec_cb, p)) == -1) {
		log_warnx("cannot send the leaves of dead workers to Redis; "
		    "starting over");
		batch_reset(p);
	}
done:
	sweep_free(sw);
}

static void
sweep_exec_cb(struct bus *bus, struct bus_reply *reply, void *arg)
{
	struct part *p = arg;

	(void)bus;
	if (p->h->exiting || reply == NULL)
		return;
	if (batch_exec_check(p, reply, "dead workers") == -1)
		batch_reset(p);
}
