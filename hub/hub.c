/*
 * hub: entry point of the hub process, its loop and the inbox (the leader
 * lease is lease.c's). Only the holder of the lease <p>hub:leader acts: it
 * reads <p>hub:inbox with the consumer group "hub" in batches, has each
 * batch's rooms loaded and its messages stored (store.c), then publishes
 * every event, writes presence (rooms.c) and acknowledges the entries in
 * one Redis transaction (tx.c); dead workers' connections leave (sweep.c).
 * Other hubs stand by and take over within LEASE_MS (at once, when the
 * holder was this instance's hub and is dead).
 */
#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>
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
#include "hub/hub.h"
#include "hub/lease.h"
#include "hub/rooms.h"
#include "hub/store.h"
#include "hub/sweep.h"
#include "hub/tx.h"

#define HUB_GROUP		"hub"	/* consumer group, and its only
					 * consumer: a new leader finds the
					 * entries its predecessor left */
#define HUB_BATCH		256	/* entries per XREADGROUP */
#define HUB_BLOCK_MS		1000	/* a live read waits at most */
#define HUB_RETRY_MS		500	/* PostgreSQL away: try again */
#define HUB_SQL_RETRY_MS	100	/* a refused batch: reload, retry */
#define HUB_READ_RETRY_MS	500	/* an XREADGROUP error */
#define HUB_STOP_MS		1000	/* SIGTERM: time for the batch in
					 * flight, then for the lease release */
#define HUB_TRIM_MS		1000	/* at most one XTRIM per */
#define HUB_INBOX_KEEP_MS	600000	/* acknowledged entries kept, for
					 * operators (XRANGE) */
#define HUB_ROOM_IDLE_MS	600000	/* an empty room is forgotten */
#define HUB_GC_MS		10000
#define HUB_REPLAY_MS		5000	/* a live leader replays pending
					 * entries again this often */
#define HUB_BAD_LOG_MAX		20	/* bad entries logged a second */
#define HUB_SCAN_COUNT		"1000"
#define HUB_FIELDS_MAX		32	/* fields + values of an entry */
#define HUB_WID_MAX		128	/* bytes of a worker id */

/* One inbox entry of a batch; the strings live in buf. */
struct hub_entry {
	char		 id[48];	/* the stream entry id */
	int		 bad;		/* acknowledged, nothing else */
	enum msg_op	 op;
	struct room	*room;		/* register, broadcast */
	char		*buf;
	const char	*room_id;
	const char	*worker;	/* NULL for an operator's broadcast */
	const char	*username;
	const char	*content;
	size_t		 content_len;
	uint64_t	 conn;
	int64_t		 user;
	int		 msg;		/* index in msgs, or -1 */
	int64_t		 below;		/* register: history below it */
	int		 history;	/* register: messages it gets */
	int		 rejoin;	/* register: presence only */
	const char	*cid;		/* broadcast: client id, or NULL */
	int64_t		 target;	/* edit, delete */
};

/*
 * The entries of one XREADGROUP, from the read until their EXEC is sent.
 * A batch whose store call is in flight when leading stops is abandoned:
 * the call's callback frees it, touching nothing else.
 */
struct hub_batch {
	struct hub	*h;
	struct hub_entry *e;
	size_t		 n;
	struct store_msg *msgs;		/* the broadcasts, in order */
	size_t		 nmsgs;
	struct room	**load;		/* rooms asked for */
	size_t		 nload;
	int		 busy;		/* a store call in flight */
	int		 abandoned;
	int		 sql_errors;	/* refusals; from 2: isolate */
	int		 live;		/* read as new: may trim */
	int		 replay;	/* read as pending entries */
	int		 built;		/* msgs are filled in */
	int		 found;		/* replay: stored ones are known */
	int		 stored;	/* stored: its commit waits for the
					 * previous batch's EXEC */
	int64_t		 retry_at;	/* monotonic ms, if waiting */
	char		 after[48];	/* live: the last live read's last
					 * id ("-": none), for orphans */
	int64_t		 oldest_ms;	/* the first entry's id: ms
					 * (the inbox lag) */
};

/* The context of a reply that may come after leading stopped. */
struct hub_scan {
	struct hub	*h;
	unsigned	 epoch;
	struct hub_batch *b;	/* hub_orphans(): the batch checked */
};


static void	hub_signal_cb(evutil_socket_t, short, void *);
static void	hub_cron_cb(evutil_socket_t, short, void *);
static void	hub_kick_cb(evutil_socket_t, short, void *);
static void	hub_stop_cb(evutil_socket_t, short, void *);
static void	hub_kick(struct hub *, int);
static void	hub_gauges(struct hub *);
static void	hub_on_connect(struct bus *, void *);
static void	hub_on_disconnect(struct bus *, void *);
static void	hub_on_inbox_connect(struct bus *, void *);
static void	hub_group_create(struct hub *);
static void	hub_group_cb(struct bus *, struct bus_reply *, void *);
static void	hub_lead(struct hub *);
static void	hub_fenced_cb(enum store_status, int64_t, void *);
static struct hub_scan *hub_scan_new(struct hub *, struct hub_batch *);
static int	hub_scan(struct hub *, const char *);
static void	hub_presence_cb(struct bus *, struct bus_reply *, void *);
static void	hub_drop(struct hub *);
static void	hub_replay(struct hub *);
static void	hub_read(struct hub *);
static void	hub_read_cb(struct bus *, struct bus_reply *, void *);
static int	hub_orphans(struct hub *, struct hub_batch *);
static void	hub_orphans_cb(struct bus *, struct bus_reply *, void *);
static void	hub_bad(struct hub *, struct hub_entry *, const char *, ...)
		    GC_PRINTF(3, 4);
static int	hub_entry_parse(struct hub *, struct hub_entry *,
		    struct bus_reply *);
static struct hub_batch *hub_batch_new(struct hub *, struct bus_reply *);
static void	hub_batch_free(struct hub_batch *);
static void	hub_batch_run(struct hub *);
static void	hub_batch_retry(struct hub *, int);
static void	hub_loaded_cb(enum store_status, const struct store_row *,
		    size_t, void *);
static void	hub_batch_mark(struct hub_batch *);
static void	hub_batch_store(struct hub *);
static void	hub_found_cb(enum store_status, void *);
static void	hub_stored_cb(enum store_status, void *);
static void	hub_batch_commit(struct hub *);
static void	hub_on_broadcast(struct hub *, struct hub_entry *,
		    const struct store_msg *);
static void	hub_on_register(struct hub *, struct hub_entry *, int64_t);
static int	hub_entry_stored(const struct hub_entry *);
static void	hub_on_unregister(struct hub *, struct hub_entry *, int64_t);
static void	hub_exec_cb(struct bus *, struct bus_reply *, void *);
static void	hub_stop(struct hub *);
static void	hub_finish(struct hub *);
static void	hub_released_cb(struct bus *, struct bus_reply *, void *);

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
	(void)msg_key_name(h.lease_key, sizeof(h.lease_key), p, MSG_LEADER);
	snprintf(h.lease_value, sizeof(h.lease_value), "%s:%ld",
	    h.conf->instance, (long)getpid());
	(void)msg_key_name(h.inbox_key, sizeof(h.inbox_key), p, MSG_INBOX);
	(void)msg_key_name(h.presence_key, sizeof(h.presence_key), p,
	    MSG_PRESENCE);
	snprintf(h.pending_from, sizeof(h.pending_from), "0-0");
	snprintf(h.live_last, sizeof(h.live_last), "-");

	if ((h.base = event_base_new()) == NULL)
		fatalx("event_base_new() failed");
	if (hash_init() == -1)
		fatalx("no random bytes for the room tables' hash key");
	if ((h.redis = bus_new(h.base, h.conf->redis_url,
	    h.conf->redis_password, "redis",
	    hub_on_connect, hub_on_disconnect, &h)) == NULL ||
	    (h.inbox = bus_new(h.base, h.conf->redis_url,
	    h.conf->redis_password, "redis inbox",
	    hub_on_inbox_connect, NULL, &h)) == NULL)
		fatalx("redis_url: cannot use '%s'",
		    bus_url_redact(h.conf->redis_url, shown, sizeof(shown)));
	if ((h.store = store_new(h.base, h.conf)) == NULL)
		fatalx("database_url: cannot use it");
	if ((h.tx = tx_new(h.redis, h.lease_key, h.lease_value)) == NULL ||
	    (h.rooms = rooms_new(h.conf, h.tx, h.presence_key)) == NULL)
		fatalx("out of memory");
	if ((h.stats_pub = stats_pub_new(h.base, h.redis, h.conf,
	    &h.stats)) == NULL)
		fatalx("cannot set up stats");
	h.sig_term = evsignal_new(h.base, SIGTERM, hub_signal_cb, &h);
	h.sig_int = evsignal_new(h.base, SIGINT, hub_signal_cb, &h);
	h.sig_usr1 = evsignal_new(h.base, SIGUSR1, hub_signal_cb, &h);
	h.sig_hup = evsignal_new(h.base, SIGHUP, hub_signal_cb, &h);
	h.cron = event_new(h.base, -1, EV_PERSIST, hub_cron_cb, &h);
	h.kick = evtimer_new(h.base, hub_kick_cb, &h);
	h.stop_timer = evtimer_new(h.base, hub_stop_cb, &h);
	if (h.sig_term == NULL || h.sig_int == NULL || h.sig_usr1 == NULL ||
	    h.sig_hup == NULL || h.cron == NULL || h.kick == NULL ||
	    h.stop_timer == NULL ||
	    evsignal_add(h.sig_term, NULL) == -1 ||
	    evsignal_add(h.sig_int, NULL) == -1 ||
	    evsignal_add(h.sig_usr1, NULL) == -1 ||
	    evsignal_add(h.sig_hup, NULL) == -1 ||
	    event_add(h.cron, &one) == -1)
		fatalx("cannot set up signal and timer events");

	log_info("started; waiting for the leader lease %s", h.lease_key);
	event_base_dispatch(h.base);
	log_info("exiting");

	/* Callbacks run from here on (with NULL) only free what they own. */
	h.exiting = 1;
	stats_pub_free(h.stats_pub);
	store_free(h.store);
	if (h.batch != NULL)
		hub_batch_free(h.batch);
	if (h.next != NULL)
		hub_batch_free(h.next);
	h.batch = h.next = NULL;
	bus_free(h.inbox);
	bus_free(h.redis);
	rooms_free(h.rooms);
	tx_free(h.tx);
	event_free(h.sig_term);
	event_free(h.sig_int);
	event_free(h.sig_usr1);
	event_free(h.sig_hup);
	event_free(h.cron);
	event_free(h.kick);
	event_free(h.stop_timer);
	event_base_free(h.base);
	metrics_detach();
	return GC_EXIT_OK;
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
	if (h->stopping)
		return;
	lease_renew(h);
	sweep_run(h);
	if (h->batch == NULL && h->next == NULL &&
	    now - h->gc_ms >= HUB_GC_MS) {
		rooms_gc(h->rooms, now, HUB_ROOM_IDLE_MS);
		h->gc_ms = now;
	}
	/*
	 * A hub that lost the lease while its blocking read was out may
	 * still be handed entries (the group and consumer are shared): they
	 * stay pending, unseen by a leader that replayed before. Replay
	 * again now and then; with nothing in flight, whatever is pending
	 * is such an orphan.
	 */
	if (lease_leading(h) && h->phase == HUB_LIVE &&
	    now - h->replayed_ms >= HUB_REPLAY_MS) {
		h->phase = HUB_PENDING;
		h->replay_quiet = 1;
		snprintf(h->pending_from, sizeof(h->pending_from), "0-0");
	}
	hub_gauges(h);
	hub_advance(h);
}

static void
hub_kick_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	hub_advance(arg);
}

/* The hub's gauges in its metrics slot (the counters go as they move). */
static void
hub_gauges(struct hub *h)
{
	metrics_set(MG_ROOMS, (int64_t)rooms_active(h->rooms));
	metrics_set(MG_LEADER, h->leader);
	metrics_set(MG_INBOX_OLDEST_MS, h->batch != NULL ?
	    h->batch->oldest_ms : 0);
}

/* Call hub_advance() in ms (a retry), not sooner than asked before. */
static void
hub_kick(struct hub *h, int ms)
{
	struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };

	evtimer_add(h->kick, &tv);
}

/*
 * Do the next thing the leader has to do, if nothing is under way: start
 * leading, retry the batch, or read the next one. Called after every step
 * and by the cron, so a lost wake-up costs a second at most.
 */
void
hub_advance(struct hub *h)
{
	if (!h->exiting)
		hub_gauges(h);
	if (h->exiting || h->stopping || !lease_leading(h))
		return;
	switch (h->phase) {
	case HUB_STANDBY:
		hub_lead(h);
		break;
	case HUB_FENCE:
	case HUB_REBUILD:
		break;
	case HUB_PENDING:
	case HUB_LIVE:
		if (h->batch == NULL && h->next != NULL && !h->next->busy) {
			h->batch = h->next;
			h->next = NULL;
		}
		if (h->batch != NULL) {
			if (!h->batch->busy &&
			    util_mono_ms() >= h->batch->retry_at)
				hub_batch_run(h);
			/*
			 * The pipeline: while a live batch is in flight,
			 * read the next one (">" never hands out the same
			 * entries twice); its ids and store wait for this
			 * one's (hub_batch_commit()).
			 */
			else if (h->batch->busy && h->batch->live &&
			    h->phase == HUB_LIVE && h->next == NULL)
				hub_read(h);
		} else if (h->next == NULL && (!h->exec_pending ||
		    h->phase == HUB_LIVE))
			hub_read(h);
		break;
	}
}

/* ---- Redis connections -------------------------------------------------- */

/*
 * The command connection is (back) up. Redis may have restarted empty, so
 * the group is made again: from the stream's start ("0"), not "$", since
 * workers may have added entries since the restart, before us.
 */
static void
hub_on_connect(struct bus *bus, void *arg)
{
	struct hub *h = arg;

	bus_aof_check(bus, NULL);
	hub_group_create(h);
	lease_renew(h);
}

/*
 * Without Redis we cannot renew; another hub may take over once the lease
 * expires, so stop acting as leader now rather than risk two leaders.
 */
static void
hub_on_disconnect(struct bus *bus, void *arg)
{
	struct hub *h = arg;

	(void)bus;
	if (h->leader)
		log_warnx("Redis connection lost: standing by until it is "
		    "back");
	h->leader = 0;
	h->lease_pending = 0;
	h->exec_pending = 0;
	h->sweep_pending = 0;
	hub_reset(h);
}

/* A read reply lost with a connection may have delivered entries we never
 * saw: they are pending now, so read those first. */
static void
hub_on_inbox_connect(struct bus *bus, void *arg)
{
	struct hub *h = arg;

	(void)bus;
	if (h->phase == HUB_LIVE || h->phase == HUB_PENDING) {
		h->phase = HUB_PENDING;
		h->replay_quiet = 0;
		snprintf(h->pending_from, sizeof(h->pending_from), "0-0");
	}
	hub_advance(h);
}

static void
hub_group_create(struct hub *h)
{
	(void)!bus_command(h->redis, hub_group_cb, h,
	    "XGROUP CREATE %s " HUB_GROUP " 0 MKSTREAM", h->inbox_key);
}

static void
hub_group_cb(struct bus *bus, struct bus_reply *reply, void *arg)
{
	struct hub *h = arg;
	const char *err;

	(void)bus;
	if (h->exiting || reply == NULL)
		return;
	if (bus_reply_type(reply) == BUS_ERROR &&
	    (err = bus_reply_str(reply, NULL)) != NULL &&
	    strncmp(err, "BUSYGROUP", 9) != 0)
		log_warnx("XGROUP CREATE %s: %s", h->inbox_key, err);
}

/* ---- leading ------------------------------------------------------------- */

/*
 * The lease is ours: raise the epoch in PostgreSQL (from then on no hub
 * that led before can store anything), rebuild presence, replay, read.
 */
static void
hub_lead(struct hub *h)
{
	struct hub_scan *sc;

	if (!bus_connected(h->redis) || (sc = hub_scan_new(h, NULL)) == NULL)
		return;		/* the cron tries again */
	if (store_fence(h->store, 0, h->lease_value, hub_fenced_cb, sc) ==
	    -1) {
		free(sc);
		return;
	}
	h->phase = HUB_FENCE;
}

static void
hub_fenced_cb(enum store_status st, int64_t fence, void *arg)
{
	struct hub_scan *sc = arg;
	struct hub *h = sc->h;
	unsigned epoch = sc->epoch;

	free(sc);
	if (h->exiting || epoch != h->epoch || h->phase != HUB_FENCE)
		return;
	if (st != STORE_OK) {
		h->phase = HUB_STANDBY;
		hub_kick(h, HUB_RETRY_MS);
		return;
	}
	h->fence = fence;
	rooms_reset(h->rooms);
	if (hub_scan(h, "0") == -1) {
		h->phase = HUB_STANDBY;
		return;		/* the cron tries again */
	}
	h->phase = HUB_REBUILD;
	log_info("leading with epoch %lld: rebuilding presence from %s",
	    (long long)fence, h->presence_key);
}

static struct hub_scan *
hub_scan_new(struct hub *h, struct hub_batch *b)
{
	struct hub_scan *sc;

	if ((sc = malloc(sizeof(*sc))) == NULL)
		return NULL;
	sc->h = h;
	sc->epoch = h->epoch;
	sc->b = b;
	return sc;
}

static int
hub_scan(struct hub *h, const char *cursor)
{
	struct hub_scan *sc;

	if ((sc = hub_scan_new(h, NULL)) == NULL)
		return -1;
	if (bus_command(h->redis, hub_presence_cb, sc,
	    "HSCAN %s %s COUNT " HUB_SCAN_COUNT, h->presence_key, cursor) ==
	    -1) {
		free(sc);
		return -1;
	}
	return 0;
}

static void
hub_presence_cb(struct bus *bus, struct bus_reply *reply, void *arg)
{
	struct hub_scan *sc = arg;
	struct hub *h = sc->h;
	unsigned epoch = sc->epoch;
	struct bus_reply *kv;
	const char *cursor, *field, *value;
	size_t n;
	int bad = 0;

	(void)bus;
	free(sc);
	if (h->exiting || reply == NULL || epoch != h->epoch ||
	    h->phase != HUB_REBUILD)
		return;
	if (bus_reply_type(reply) != BUS_ARRAY ||
	    bus_reply_elements(reply) != 2 ||
	    (cursor = bus_reply_str(bus_reply_element(reply, 0), NULL)) ==
	    NULL) {
		log_warnx("HSCAN %s: unexpected reply%s%s", h->presence_key,
		    bus_reply_type(reply) == BUS_ERROR ? ": " : "",
		    bus_reply_type(reply) == BUS_ERROR ?
		    bus_reply_str(reply, NULL) : "");
		hub_reset(h);
		return;
	}
	kv = bus_reply_element(reply, 1);
	n = bus_reply_elements(kv);
	for (size_t i = 0; i + 1 < n; i += 2) {
		field = bus_reply_str(bus_reply_element(kv, i), NULL);
		value = bus_reply_str(bus_reply_element(kv, i + 1), NULL);
		if (field == NULL || value == NULL ||
		    rooms_restore(h->rooms, field, value) == -1)
			bad++;
	}
	if (bad > 0)
		log_warnx("%s: %d unreadable fields ignored", h->presence_key,
		    bad);
	if (strcmp(cursor, "0") != 0) {
		if (hub_scan(h, cursor) == -1)
			hub_reset(h);
		return;
	}
	log_info("presence rebuilt: %zu connections in %zu rooms; replaying "
	    "unacknowledged entries", rooms_connections(h->rooms),
	    rooms_active(h->rooms));
	h->phase = HUB_PENDING;
	h->replay_quiet = 0;
	snprintf(h->pending_from, sizeof(h->pending_from), "0-0");
	hub_advance(h);
}

/*
 * Leading stopped (or what we hold in memory can no longer be trusted):
 * forget rooms and presence; replies of before are recognised as stale by
 * the epoch. The entries in flight stay pending in Redis for whoever leads
 * next, this hub included.
 */
void
hub_reset(struct hub *h)
{
	h->epoch++;
	h->phase = HUB_STANDBY;
	hub_drop(h);
	rooms_reset(h->rooms);
	evtimer_del(h->kick);
	hub_gauges(h);
}

/* ---- the inbox ----------------------------------------------------------- */

static void
hub_read(struct hub *h)
{
	int rc;

	if (h->reading || !bus_connected(h->inbox))
		return;
	h->read_replay = h->phase == HUB_PENDING;
	if (h->read_replay)
		rc = bus_command(h->inbox, hub_read_cb, h,
		    "XREADGROUP GROUP " HUB_GROUP " " HUB_GROUP " COUNT %d "
		    "STREAMS %s %s", HUB_BATCH, h->inbox_key, h->pending_from);
	else
		rc = bus_command(h->inbox, hub_read_cb, h,
		    "XREADGROUP GROUP " HUB_GROUP " " HUB_GROUP " COUNT %d "
		    "BLOCK %d STREAMS %s >", HUB_BATCH, HUB_BLOCK_MS,
		    h->inbox_key);
	if (rc == 0) {
		h->reading = 1;
		h->read_epoch = h->epoch;
	}
}

/*
 * A batch, or nothing (nil: BLOCK timed out). A reply that comes after
 * leading stopped is dropped: its entries are pending, and the next leader
 * replays them.
 */
static void
hub_read_cb(struct bus *bus, struct bus_reply *reply, void *arg)
{
	struct hub *h = arg;
	struct hub_batch *b;
	const char *err;

	(void)bus;
	h->reading = 0;
	if (h->exiting || reply == NULL)
		return;		/* hub_on_inbox_connect() goes on */
	if (h->read_epoch != h->epoch || h->stopping || !lease_leading(h) ||
	    (h->phase != HUB_PENDING && h->phase != HUB_LIVE)) {
		hub_advance(h);
		return;
	}
	if (bus_reply_type(reply) == BUS_ERROR) {
		err = bus_reply_str(reply, NULL);
		if (h->read_errors++ == 0)
			log_warnx("XREADGROUP %s: %s", h->inbox_key, err);
		if (strncmp(err, "NOGROUP", 7) == 0)
			hub_group_create(h);
		hub_kick(h, HUB_READ_RETRY_MS);
		return;
	}
	h->read_errors = 0;
	if (bus_reply_type(reply) != BUS_ARRAY) {
		hub_advance(h);
		return;
	}
	if ((b = hub_batch_new(h, reply)) == NULL) {
		log_warnx("inbox: out of memory for a batch; reading it again");
		h->phase = HUB_PENDING;
		snprintf(h->pending_from, sizeof(h->pending_from), "0-0");
		hub_kick(h, HUB_READ_RETRY_MS);
		return;
	}
	if (b->n == 0) {
		hub_batch_free(b);
		if (h->read_replay && h->phase == HUB_PENDING) {
			if (!h->replay_quiet)
				log_info("inbox: no entry left to replay; "
				    "reading new ones");
			h->phase = HUB_LIVE;
			h->replay_quiet = 0;
			h->replayed_ms = util_mono_ms();
		}
		hub_advance(h);
		return;
	}
	/* A live read answered after the cron asked for a replay is a live
	 * batch all the same: the replay reads next. */
	if (h->read_replay) {
		log_info("inbox: replaying %zu unacknowledged entries from %s",
		    b->n, b->e[0].id);
		snprintf(h->pending_from, sizeof(h->pending_from), "%s",
		    b->e[b->n - 1].id);
	}
	b->live = !h->read_replay;
	b->replay = h->read_replay;
	metrics_count(MC_INBOX_ENTRIES, b->n);
	if (b->live) {
		/* Orphans can only lie between the last live read and this
		 * one: ">" hands out runs of the stream, in order. */
		snprintf(b->after, sizeof(b->after), "%s", h->live_last);
		snprintf(h->live_last, sizeof(h->live_last), "%s",
		    b->e[b->n - 1].id);
	} else
		snprintf(h->live_last, sizeof(h->live_last), "-");
	if (h->batch != NULL) {
		/* Read ahead: checked now, run once the batch before it
		 * has committed. */
		h->next = b;
		if (hub_orphans(h, b) == -1) {
			h->next = NULL;
			hub_batch_free(b);
			hub_replay(h);
		}
		return;
	}
	h->batch = b;
	hub_gauges(h);
	if (b->live && hub_orphans(h, b) == 0)
		return;		/* hub_orphans_cb() goes on */
	hub_batch_run(h);
}

/*
 * Forget the batches in flight: a busy one is abandoned (the reply it
 * waits for frees it). Their entries stay pending.
 */
static void
hub_drop(struct hub *h)
{
	struct hub_batch *bs[2] = { h->batch, h->next };

	h->batch = h->next = NULL;
	snprintf(h->live_last, sizeof(h->live_last), "-");
	for (int i = 0; i < 2; i++) {
		if (bs[i] == NULL)
			continue;
		if (bs[i]->busy)
			bs[i]->abandoned = 1;
		else
			hub_batch_free(bs[i]);
	}
}

/* Replay every pending entry, in id order, once the batches in flight
 * are done (hub_advance() reads pending entries only then). */
static void
hub_replay(struct hub *h)
{
	h->phase = HUB_PENDING;
	snprintf(h->pending_from, sizeof(h->pending_from), "0-0");
	snprintf(h->live_last, sizeof(h->live_last), "-");
	hub_kick(h, 0);
}

/*
 * Every hub reads as the same consumer, so a hub deposed while its
 * blocking XREADGROUP was out may have been handed entries since our
 * replay: they are pending, older than this live batch, and some may be
 * from the same senders. Publishing this batch first would reorder them.
 * Ask Redis for the oldest pending entry up to the batch's first: if it
 * is not that one, drop the batch (its entries stay pending) and replay
 * everything pending, in id order. 0: asked (b is busy until the reply).
 */
static int
hub_orphans(struct hub *h, struct hub_batch *b)
{
	struct hub_scan *c;

	if ((c = hub_scan_new(h, b)) == NULL)
		return -1;
	if (bus_command(h->redis, hub_orphans_cb, c,
	    "XPENDING %s " HUB_GROUP " %s%s %s 1", h->inbox_key,
	    strcmp(b->after, "-") == 0 ? "" : "(", b->after, b->e[0].id) ==
	    -1) {
		free(c);
		return -1;
	}
	b->busy = 1;
	return 0;
}

static void
hub_orphans_cb(struct bus *bus, struct bus_reply *reply, void *arg)
{
	struct hub_scan *c = arg;
	struct hub *h = c->h;
	struct hub_batch *b = c->b;
	struct bus_reply *oldest;
	const char *id = NULL;

	(void)bus;
	free(c);
	if (h->exiting)
		return;		/* hub_main() frees the batch */
	b->busy = 0;
	if (b->abandoned) {
		hub_batch_free(b);
		return;
	}
	if (reply != NULL && bus_reply_type(reply) == BUS_ARRAY) {
		if (bus_reply_elements(reply) == 0)
			id = b->e[0].id;	/* acknowledged meanwhile? */
		else if ((oldest = bus_reply_element(reply, 0)) != NULL &&
		    bus_reply_type(oldest) == BUS_ARRAY &&
		    bus_reply_elements(oldest) >= 1)
			id = bus_reply_str(bus_reply_element(oldest, 0), NULL);
	}
	if (id == NULL || strcmp(id, b->e[0].id) != 0) {
		if (id != NULL)
			log_warnx("inbox: entry %s, handed to a deposed hub, "
			    "precedes %s: replaying pending entries first",
			    id, b->e[0].id);
		/* The batch read after it (if any) goes too: newer. */
		if (h->next == b)
			h->next = NULL;
		else {
			h->batch = NULL;
			if (h->next != NULL && h->next->busy)
				h->next->abandoned = 1;
			else if (h->next != NULL)
				hub_batch_free(h->next);
			h->next = NULL;
		}
		hub_batch_free(b);
		h->replay_quiet = id == NULL;
		hub_replay(h);
		return;
	}
	hub_advance(h);
}

/* Rate-limited: hostile entries must not flood the log. */
static void
hub_bad(struct hub *h, struct hub_entry *e, const char *fmt, ...)
{
	char why[256];
	va_list ap;

	e->bad = 1;
	if (h->bad_logged >= HUB_BAD_LOG_MAX) {
		h->bad_hidden++;
		return;
	}
	h->bad_logged++;
	va_start(ap, fmt);
	(void)vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	log_warnx("inbox entry %s: %s; acknowledged and dropped", e->id, why);
}

/*
 * fields: the entry's [field, value, ...], or nil for an entry deleted
 * while pending. What the hub keeps is copied: the reply goes when the
 * callback returns.
 */
static int
hub_entry_parse(struct hub *h, struct hub_entry *e, struct bus_reply *fields)
{
	const char *argv[HUB_FIELDS_MAX];
	size_t lens[HUB_FIELDS_MAX], n, wlen = 0, rlen, ulen, need;
	struct msg_entry me;
	char err[128], *p;

	if (bus_reply_type(fields) != BUS_ARRAY) {
		hub_bad(h, e, "deleted from the stream");
		return 0;
	}
	if ((n = bus_reply_elements(fields)) > HUB_FIELDS_MAX) {
		hub_bad(h, e, "%zu fields, more than %d", n, HUB_FIELDS_MAX);
		return 0;
	}
	for (size_t i = 0; i < n; i++)
		if ((argv[i] = bus_reply_str(bus_reply_element(fields, i),
		    &lens[i])) == NULL) {
			hub_bad(h, e, "a field is not a string");
			return 0;
		}
	if (msg_entry_parse(&me, argv, lens, n,
	    (size_t)h->conf->max_ws_message, err, sizeof(err)) == -1) {
		hub_bad(h, e, "%s", err);
		return 0;
	}
	/* PostgreSQL text cannot hold NUL; a worker id goes into keys. */
	if (me.content != NULL &&
	    memchr(me.content, '\0', me.content_len) != NULL) {
		hub_bad(h, e, "content contains a NUL character");
		return 0;
	}
	if (me.worker != NULL) {
		wlen = strlen(me.worker);
		if (wlen == 0 || wlen > HUB_WID_MAX ||
		    strpbrk(me.worker, " \t\r\n") != NULL) {
			hub_bad(h, e, "invalid worker id");
			return 0;
		}
	}
	rlen = strlen(me.room);
	ulen = strlen(me.username);
	need = rlen + 1 + ulen + 1 + (me.worker != NULL ? wlen + 1 : 0) +
	    (me.content != NULL ? me.content_len + 1 : 1) +
	    (me.cid != NULL ? strlen(me.cid) + 1 : 0);
	if ((e->buf = p = malloc(need)) == NULL)
		return -1;
	e->op = me.op;
	e->history = me.history >= 0 ? me.history : h->conf->history_on_join;
	e->rejoin = me.rejoin;
	e->conn = me.conn;
	e->user = me.user;
	e->room_id = memcpy(p, me.room, rlen + 1);
	p += rlen + 1;
	e->username = memcpy(p, me.username, ulen + 1);
	p += ulen + 1;
	if (me.worker != NULL) {
		e->worker = memcpy(p, me.worker, wlen + 1);
		p += wlen + 1;
	}
	/* A delete's content is "" (stored so). */
	if (me.content != NULL)
		memcpy(p, me.content, me.content_len);
	p[me.content_len] = '\0';
	e->content = p;
	e->content_len = me.content_len;
	p += me.content_len + 1;
	if (me.cid != NULL)
		e->cid = strcpy(p, me.cid);
	e->target = me.target;
	return 0;
}

/* reply: [[stream, [[id, fields], ...]]]; NULL if out of memory. */
static struct hub_batch *
hub_batch_new(struct hub *h, struct bus_reply *reply)
{
	struct bus_reply *stream, *entries, *ent;
	struct hub_batch *b;
	const char *id;
	size_t n = 0, k = 0, idlen;

	for (size_t s = 0; s < bus_reply_elements(reply); s++)
		n += bus_reply_elements(bus_reply_element(
		    bus_reply_element(reply, s), 1));
	if ((b = calloc(1, sizeof(*b))) == NULL)
		return NULL;
	b->h = h;
	if (n > 0 && ((b->e = calloc(n, sizeof(*b->e))) == NULL ||
	    (b->msgs = calloc(n, sizeof(*b->msgs))) == NULL ||
	    (b->load = calloc(n, sizeof(*b->load))) == NULL))
		goto fail;
	for (size_t s = 0; s < bus_reply_elements(reply); s++) {
		stream = bus_reply_element(reply, s);
		entries = bus_reply_element(stream, 1);
		for (size_t i = 0; i < bus_reply_elements(entries); i++) {
			struct hub_entry *e = &b->e[k];

			ent = bus_reply_element(entries, i);
			id = bus_reply_str(bus_reply_element(ent, 0), &idlen);
			/* An id not from Redis could not be acknowledged. */
			if (id == NULL || idlen == 0 ||
			    idlen >= sizeof(e->id) ||
			    strspn(id, "0123456789-") != idlen)
				continue;
			memcpy(e->id, id, idlen + 1);
			e->msg = -1;
			k++;
			if (hub_entry_parse(h, e, bus_reply_element(ent, 1)) ==
			    -1)
				goto fail;
		}
	}
	b->n = k;
	/* Redis' ids are <ms>-<seq>: the first is the oldest. */
	if (k > 0 && sscanf(b->e[0].id, "%" SCNd64, &b->oldest_ms) != 1)
		b->oldest_ms = 0;
	return b;
fail:
	b->n = k;
	hub_batch_free(b);
	return NULL;
}

static void
hub_batch_free(struct hub_batch *b)
{
	if (b == NULL)
		return;
	for (size_t i = 0; i < b->n; i++)
		free(b->e[i].buf);
	free(b->e);
	free(b->msgs);
	free(b->load);
	free(b);
}

/* ---- a batch: load, store, commit ---------------------------------------- */

/*
 * From the start, every time (a retry too): ask PostgreSQL for the rooms
 * this batch needs that are not in memory. Unregistering needs no room:
 * only the presence it undoes.
 */
static void
hub_batch_run(struct hub *h)
{
	struct hub_batch *b = h->batch;
	struct hub_entry *e;
	const char **ids;
	int rc;

	if (b->stored) {
		hub_batch_commit(h);
		return;
	}
	b->retry_at = 0;
	b->nload = 0;
	for (size_t i = 0; i < b->n; i++) {
		e = &b->e[i];
		if (e->bad || e->op == MSG_UNREGISTER)
			continue;
		if (e->room == NULL &&
		    (e->room = rooms_get(h->rooms, e->room_id, 1)) == NULL) {
			hub_batch_retry(h, HUB_RETRY_MS);
			return;
		}
		/* A joiner from an instance that wants a longer history
		 * than the ring keeps: load the room again, keeping more. */
		if (e->op == MSG_REGISTER && e->history > e->room->keep) {
			e->room->keep = e->history;
			if (e->room->state == ROOM_LOADED)
				e->room->state = ROOM_UNKNOWN;
		}
		if (e->room->state == ROOM_LOADED ||
		    e->room->state == ROOM_LOADING)
			continue;
		e->room->state = ROOM_LOADING;
		b->load[b->nload++] = e->room;
	}
	if (b->nload == 0) {
		hub_batch_store(h);
		return;
	}
	if ((ids = calloc(b->nload, sizeof(*ids))) == NULL)
		rc = -1;
	else {
		int keep = 0;

		for (size_t i = 0; i < b->nload; i++) {
			ids[i] = b->load[i]->id;
			if (b->load[i]->keep > keep)
				keep = b->load[i]->keep;
		}
		rc = store_load(h->store, ids, b->nload, keep, hub_loaded_cb,
		    b);
		free(ids);
	}
	if (rc == -1) {
		for (size_t i = 0; i < b->nload; i++)
			b->load[i]->state = ROOM_UNKNOWN;
		hub_batch_retry(h, HUB_RETRY_MS);
		return;
	}
	b->busy = 1;
}

/*
 * PostgreSQL is away (or refused): nothing of the batch was applied, and
 * nothing is acknowledged; it runs again in ms. Its entries wait in the
 * stream meanwhile, and so do those behind them: order is kept, nothing is
 * lost. Stopping, the batch is left to the next hub.
 */
static void
hub_batch_retry(struct hub *h, int ms)
{
	if (h->stopping) {
		hub_finish(h);
		return;
	}
	h->batch->retry_at = util_mono_ms() + ms;
	hub_kick(h, ms);
}

static void
hub_loaded_cb(enum store_status st, const struct store_row *rows, size_t n,
    void *arg)
{
	struct hub_batch *b = arg;
	struct hub *h = b->h;
	struct room *r;

	b->busy = 0;
	if (b->abandoned || h->exiting) {
		if (h->batch == b)
			h->batch = NULL;
		hub_batch_free(b);
		return;
	}
	if (st != STORE_OK) {
		for (size_t i = 0; i < b->nload; i++)
			b->load[i]->state = ROOM_UNKNOWN;
		hub_batch_retry(h, st == STORE_AWAY ? HUB_RETRY_MS :
		    HUB_RETRY_MS * 2);
		return;
	}
	for (size_t i = 0; i < n; i++) {
		if ((r = rooms_get(h->rooms, rows[i].room, 0)) == NULL)
			continue;
		if (r->state == ROOM_LOADING)
			rooms_loaded(h->rooms, r, rows[i].last_id);
		if (rows[i].id > 0 && r->state == ROOM_LOADED)
			rooms_history_add(h->rooms, r, rows[i].id,
			    rows[i].user, rows[i].username, rows[i].content,
			    rows[i].content_len, rows[i].ts_ms,
			    rows[i].edited_ms);
	}
	for (size_t i = 0; i < b->nload; i++)
		if (b->load[i]->state == ROOM_LOADING)
			b->load[i]->state = ROOM_MISSING;
	hub_batch_store(h);
}

/*
 * Give each broadcast not stored yet its room's next id, in entry order,
 * and store them all in one statement. An entry for a room that does not
 * exist is dropped: an operator's typo must not block the stream. Replayed
 * entries are first looked up: those an earlier hub stored keep the id it
 * gave them, and the others get the ids that follow, without a gap.
 */
static void
hub_batch_store(struct hub *h)
{
	struct hub_batch *b = h->batch;
	struct hub_entry *e;
	struct store_msg *m;
	int64_t now = util_now_ms();
	size_t npending = 0;

	if (!b->built) {
		for (size_t i = 0; i < b->n; i++) {
			e = &b->e[i];
			if (e->bad || !hub_entry_stored(e) ||
			    e->room->state != ROOM_LOADED)
				continue;
			e->msg = (int)b->nmsgs;
			m = &b->msgs[b->nmsgs++];
			m->inbox_id = e->id;
			m->room = e->room_id;
			m->username = e->username;
			m->content = e->content;
			m->content_len = e->content_len;
			m->user = e->user;
			m->kind = e->op == MSG_EDIT ? STORE_EDIT :
			    e->op == MSG_DELETE ? STORE_DELETE : STORE_MESSAGE;
			m->target = e->target;
			m->cid = e->worker != NULL ? e->cid : NULL;
			m->result = STORE_PENDING;
		}
		b->built = 1;
	}
	if (b->replay && !b->found && b->nmsgs > 0) {
		if (store_find(h->store, b->msgs, b->nmsgs, hub_found_cb, b) ==
		    -1)
			hub_batch_retry(h, HUB_RETRY_MS);
		else
			b->busy = 1;
		return;
	}
	h->pass++;
	for (size_t i = 0; i < b->n; i++) {
		e = &b->e[i];
		if (e->bad || e->op == MSG_UNREGISTER)
			continue;
		m = e->msg >= 0 ? &b->msgs[e->msg] : NULL;
		if (e->room->state != ROOM_LOADED) {
			hub_bad(h, e, "no room '%s'", e->room_id);
			if (m != NULL)
				m->result = STORE_BAD;
			continue;
		}
		if (m == NULL || m->result == STORE_DUP ||
		    m->result == STORE_CID || m->result == STORE_BAD)
			continue;
		if (e->room->mark != h->pass) {
			e->room->mark = h->pass;
			e->room->next_id = e->room->last_id + 1;
		}
		m->id = e->room->next_id++;
		m->ts_ms = now;
		m->result = STORE_PENDING;
		npending++;
	}
	if (npending == 0) {
		hub_batch_commit(h);
		return;
	}
	if (store_write(h->store, 0, h->fence, b->msgs, b->nmsgs,
	    b->sql_errors >= 2, hub_stored_cb, b) == -1) {
		hub_batch_retry(h, HUB_RETRY_MS);
		return;
	}
	b->busy = 1;
}

static void
hub_found_cb(enum store_status st, void *arg)
{
	struct hub_batch *b = arg;
	struct hub *h = b->h;

	b->busy = 0;
	if (b->abandoned || h->exiting) {
		if (h->batch == b)
			h->batch = NULL;
		hub_batch_free(b);
		return;
	}
	if (st != STORE_OK) {
		hub_batch_retry(h, HUB_RETRY_MS);
		return;
	}
	b->found = 1;
	hub_batch_mark(b);
	hub_batch_store(h);
}

/*
 * Mark the entries the store refused as bad (they are acknowledged, not
 * published), and say how many an earlier hub had stored already.
 */
static void
hub_batch_mark(struct hub_batch *b)
{
	size_t dups = 0;

	for (size_t i = 0; i < b->n; i++) {
		struct hub_entry *e = &b->e[i];

		if (e->msg < 0)
			continue;
		if (b->msgs[e->msg].result == STORE_BAD)
			e->bad = 1;
		else if (b->msgs[e->msg].result == STORE_DUP)
			dups++;
	}
	if (dups > 0)
		log_info("inbox: %zu messages were stored by an earlier hub: "
		    "published with the ids they were given then", dups);
}

static void
hub_stored_cb(enum store_status st, void *arg)
{
	struct hub_batch *b = arg;
	struct hub *h = b->h;

	b->busy = 0;
	if (b->abandoned || h->exiting) {
		if (h->batch == b)
			h->batch = NULL;
		hub_batch_free(b);
		return;
	}
	switch (st) {
	case STORE_AWAY:
		hub_batch_retry(h, HUB_RETRY_MS);
		return;
	case STORE_FENCED:
		/*
		 * Another hub raised the epoch: it leads, whatever our
		 * clock says. Nothing was stored; the entries stay pending
		 * for it. Lead again only if Redis gives us the lease.
		 */
		log_warnx("inbox: another hub raised the epoch above %lld: "
		    "batch of %zu messages not stored; standing by",
		    (long long)h->fence, b->nmsgs);
		h->leader = 0;
		hub_reset(h);
		return;
	case STORE_ERROR:
		/*
		 * Most likely our last id of a room is behind (another hub
		 * wrote meanwhile) or a room was deleted: load the rooms
		 * again. Refused twice, the messages go one by one, so that
		 * only the one PostgreSQL cannot take is dropped.
		 */
		b->sql_errors++;
		log_warnx("inbox: batch of %zu messages refused (%d); %s",
		    b->nmsgs, b->sql_errors, b->sql_errors >= 2 ?
		    "storing them one by one" : "reloading its rooms");
		for (size_t i = 0; i < b->n; i++)
			if (b->e[i].msg >= 0)
				rooms_unload(h->rooms, b->e[i].room);
		hub_batch_retry(h, HUB_SQL_RETRY_MS);
		return;
	case STORE_OK:
		break;
	}
	hub_batch_mark(b);
	hub_batch_commit(h);
}

/*
 * Everything the batch changes, in entry order, then its acknowledgement,
 * in one fenced transaction (tx_commit()): Redis applies all of it,
 * or nothing if the lease is no longer ours. The next read waits for its
 * reply, so it never sees these entries again.
 */
static void
hub_batch_commit(struct hub *h)
{
	struct hub_batch *b = h->batch;
	int64_t now = util_now_ms(), mono = util_mono_ms();
	const char **argv;
	char minid[32];
	long long ms;
	int rc;

	if (!lease_leading(h))
		return;		/* hub_reset() took the batch */
	/*
	 * One EXEC at a time: were the one before to fail, this batch must
	 * not be published before its entries are (it was stored after them
	 * and is published again with the same ids, in order).
	 */
	b->stored = 1;
	if (h->exec_pending)
		return;		/* hub_exec_cb() commits it */
	h->batch = NULL;
	/*
	 * A joiner's history stops below the messages that an earlier hub
	 * stored and that this batch publishes after its register: they
	 * come live, above its upto, so the worker delivers them to the
	 * room's other members too.
	 */
	for (size_t i = 0; i < b->n; i++)
		if (!b->e[i].bad && b->e[i].op != MSG_UNREGISTER)
			b->e[i].room->hold = INT64_MAX;
	for (size_t i = b->n; i-- > 0;) {
		struct hub_entry *e = &b->e[i];

		if (e->bad || e->op == MSG_UNREGISTER)
			continue;
		if (e->op == MSG_REGISTER)
			e->below = e->room->hold;
		else if (e->msg >= 0 && b->msgs[e->msg].result == STORE_DUP &&
		    b->msgs[e->msg].id < e->room->hold)
			e->room->hold = b->msgs[e->msg].id;
	}
	tx_begin(h->tx);
	for (size_t i = 0; i < b->n; i++) {
		struct hub_entry *e = &b->e[i];

		if (e->bad)
			continue;
		switch (e->op) {
		case MSG_BROADCAST:
		case MSG_EDIT:
		case MSG_DELETE:
			if (e->msg >= 0)
				hub_on_broadcast(h, e, &b->msgs[e->msg]);
			break;
		case MSG_REGISTER:
			hub_on_register(h, e, now);
			break;
		case MSG_UNREGISTER:
			hub_on_unregister(h, e, now);
			break;
		}
	}
	if ((argv = calloc(b->n + 3, sizeof(*argv))) == NULL)
		tx_fail(h->tx);
	else {
		argv[0] = "XACK";
		argv[1] = h->inbox_key;
		argv[2] = HUB_GROUP;
		for (size_t i = 0; i < b->n; i++)
			argv[3 + i] = b->e[i].id;
		tx_command(h->tx, (int)b->n + 3, argv, NULL);
		free(argv);
	}
	/* Entries before those are all acknowledged (replay is over). */
	if (b->live && mono - h->trimmed_ms >= HUB_TRIM_MS &&
	    sscanf(b->e[b->n - 1].id, "%lld", &ms) == 1 &&
	    ms > HUB_INBOX_KEEP_MS) {
		const char *targv[5] = { "XTRIM", h->inbox_key, "MINID", "~",
		    minid };

		snprintf(minid, sizeof(minid), "%lld", ms - HUB_INBOX_KEEP_MS);
		tx_command(h->tx, 5, targv, NULL);
		h->trimmed_ms = mono;
	}
	rc = tx_commit(h->tx, hub_exec_cb, h);
	hub_batch_free(b);
	if (rc == -1) {
		log_warnx("inbox: cannot send a batch's transaction to Redis; "
		    "starting over");
		hub_reset(h);
		return;
	}
	h->exec_pending = rc == 0;
	if (h->stopping) {
		hub_finish(h);
		return;
	}
	hub_advance(h);
}

/*
 * A stored room event goes out: a message (unless it is a resend of one
 * stored already: STORE_CID), an edit or a delete; then a gochat.v2
 * sender's ack, on its worker's channel.
 */
static void
hub_on_broadcast(struct hub *h, struct hub_entry *e, const struct store_msg *m)
{
	if (m->result != STORE_CID) {
		if (e->op == MSG_BROADCAST)
			rooms_message(h->rooms, e->room, m->id, e->user,
			    e->username, e->content, e->content_len,
			    m->ts_ms);
		else
			rooms_change(h->rooms, e->room, m->id, e->target,
			    e->op == MSG_EDIT ? e->content : NULL,
			    e->content_len, m->ts_ms);
		metrics_count(MC_MSGS_IN, 1);
	}
	if (e->cid != NULL && e->worker != NULL)
		rooms_ack(h->rooms, e->room, e->worker, e->conn, e->cid, m->id,
		    m->ts_ms);
}

/* Entries that become rows of messages, with an id of their room's. */
static int
hub_entry_stored(const struct hub_entry *e)
{
	return e->op == MSG_BROADCAST || e->op == MSG_EDIT ||
	    e->op == MSG_DELETE;
}

static void
hub_on_register(struct hub *h, struct hub_entry *e, int64_t now)
{
	switch (rooms_register(h->rooms, e->room, e->worker, e->conn, e->user,
	    e->username, now, e->below, e->history, e->rejoin)) {
	case -1:
		tx_fail(h->tx);	/* out of memory: start over */
		break;
	case 1:
		log_debug("inbox entry %s: connection %s %llu is in room %s "
		    "already", e->id, e->worker, (unsigned long long)e->conn,
		    e->room_id);
		break;
	default:
		break;
	}
}

static void
hub_on_unregister(struct hub *h, struct hub_entry *e, int64_t now)
{
	if (rooms_unregister(h->rooms, e->room_id, e->worker, e->conn, now) ==
	    1)
		log_debug("inbox entry %s: connection %s %llu is not in room "
		    "%s", e->id, e->worker, (unsigned long long)e->conn,
		    e->room_id);
}

/*
 * The transaction's reply: -1 if it was not applied (then memory is
 * ahead of Redis, and must be rebuilt; if the lease was lost, this hub
 * stops leading). A command refused inside it (say WRONGTYPE, a key an
 * operator overwrote) does not undo the others.
 */
int
hub_exec_check(struct hub *h, struct bus_reply *reply, const char *what)
{
	struct bus_reply *r;
	const char *first = NULL;
	size_t bad = 0;

	if (bus_reply_type(reply) == BUS_ERROR &&
	    (first = bus_reply_str(reply, NULL)) != NULL &&
	    strncmp(first, "LEASE", 5) == 0) {
		/* Taken meanwhile (a pause, a failover): nothing applied. */
		log_warnx("%s: not applied, the leader lease is no longer "
		    "ours: standing by", what);
		h->leader = 0;
		return -1;
	}
	if (bus_reply_type(reply) != BUS_ARRAY) {
		log_error("%s: transaction failed: %s", what,
		    bus_reply_type(reply) == BUS_ERROR ?
		    bus_reply_str(reply, NULL) : "unexpected reply");
		return -1;
	}
	first = NULL;
	for (size_t i = 0; i < bus_reply_elements(reply); i++) {
		r = bus_reply_element(reply, i);
		if (bus_reply_type(r) != BUS_ERROR)
			continue;
		if (bad++ == 0)
			first = bus_reply_str(r, NULL);
	}
	if (bad > 0)
		log_warnx("%s: Redis refused %zu commands: %s", what, bad,
		    first != NULL ? first : "?");
	return 0;
}

static void
hub_exec_cb(struct bus *bus, struct bus_reply *reply, void *arg)
{
	struct hub *h = arg;

	(void)bus;
	h->exec_pending = 0;
	if (h->exiting || reply == NULL)
		return;
	if (hub_exec_check(h, reply, "inbox batch") == -1) {
		hub_reset(h);
		return;
	}
	/* The next batch, stored meanwhile, goes now, even when stopping. */
	if (h->batch != NULL && h->batch->stored && !h->batch->busy &&
	    h->leader) {
		hub_batch_commit(h);
		return;
	}
	hub_advance(h);
}

/* ---- stopping ------------------------------------------------------------ */

/*
 * SIGTERM: read nothing more; let the batch in flight finish if it does
 * within HUB_STOP_MS (else its entries stay pending for the next hub),
 * give the lease back, exit.
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
	evtimer_del(h->kick);
	if (h->batch != NULL && h->leader) {
		evtimer_add(h->stop_timer, &tv);
		return;
	}
	hub_finish(h);
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

/* Give the lease back and exit once Redis has answered (or after
 * HUB_STOP_MS): the release follows our last EXEC on that connection. */
static void
hub_finish(struct hub *h)
{
	struct timeval tv = { HUB_STOP_MS / 1000, (HUB_STOP_MS % 1000) * 1000 };
	struct timeval quick = { 0, 200000 };
	if (h->finishing)
		return;
	h->finishing = 1;
	if (h->batch != NULL || h->next != NULL)
		log_info("stopping with %zu entries unfinished: they stay "
		    "pending for the next hub", (h->batch != NULL ?
		    h->batch->n : 0) + (h->next != NULL ? h->next->n : 0));
	hub_drop(h);
	evtimer_del(h->stop_timer);
	if (h->leader && bus_connected(h->redis) && lease_release(h, hub_released_cb) == 0)
		evtimer_add(h->stop_timer, &tv);
	else	/* let the stats DEL reach Redis */
		evtimer_add(h->stop_timer, &quick);
	h->leader = 0;
}

static void
hub_released_cb(struct bus *bus, struct bus_reply *reply, void *arg)
{
	struct hub *h = arg;

	(void)bus;
	if (h->exiting)
		return;
	if (reply != NULL)
		log_info("leader lease released");
	event_base_loopbreak(h->base);
}
