/*
 * batch: the inbox of each partition this hub leads (SPEC section 11),
 * as a pipeline: read a batch of entries, parse them, have their rooms
 * loaded and their messages stored (store.c), then publish every event,
 * write presence (rooms.c) and acknowledge the entries in one transaction
 * fenced by the partition's lease (tx.c). Where a partition is is its
 * phase (enum part_phase) and its read out (enum batch_read); each batch
 * carries its own progress. A partition's state is its struct part: losing
 * one forgets nothing of the others.
 */
#include "config.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "common/bus.h"
#include "common/conf.h"
#include "common/log.h"
#include "common/metrics.h"
#include "common/msg.h"
#include "common/util.h"
#include "hub/batch.h"
#include "hub/door.h"
#include "hub/hub.h"
#include "hub/lease.h"
#include "hub/rooms.h"
#include "hub/store.h"
#include "hub/tx.h"

#define BATCH_GROUP		"hub"	/* consumer group, and its only
					 * consumer: a new leader finds the
					 * entries its predecessor left */
#define BATCH_MAX		256	/* entries per XREADGROUP */
#define BATCH_BLOCK_MS		1000	/* a live read waits at most */
#define BATCH_RETRY_MS		500	/* PostgreSQL away: try again */
#define BATCH_SQL_RETRY_MS	100	/* a refused batch: reload, retry */
#define BATCH_READ_RETRY_MS	500	/* an XREADGROUP error */
#define BATCH_TRIM_MS		1000	/* at most one XTRIM per */
#define BATCH_INBOX_KEEP_MS	600000	/* acknowledged entries kept, for
					 * operators (XRANGE), ten minutes' */
#define BATCH_INBOX_KEEP	100000	/* ... but not more than about */
#define BATCH_TRIM_LIMIT	"1000000" /* entries an XTRIM may remove */
#define BATCH_BAD_LOG_MAX	20	/* bad entries logged a second */
#define BATCH_SCAN_COUNT	"1000"
#define BATCH_FIELDS_MAX	32	/* fields + values of an entry */
#define BATCH_WID_MAX		128	/* bytes of a worker id */

/* One inbox entry of a batch; the strings live in buf. */
struct hub_entry {
	char		 id[48];	/* the stream entry id */
	char		 stored_as[64];	/* messages.inbox_id: the id, or
					 * "<partition>:<id>" when there are
					 * several (ids are unique per
					 * stream only) */
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
 * Where a batch is. The states whose name ends in -ING have a reply due
 * (the batch is busy: dropped meanwhile, it is abandoned, not freed). A
 * refusal or an outage sends it back to BATCH_NEW, with a retry time.
 */
enum batch_state {
	BATCH_NEW,	/* read: its rooms come next (again, on a retry) */
	BATCH_CHECKING,	/* live: asking for orphans before it (XPENDING) */
	BATCH_LOADING,	/* its rooms are being loaded (store_load()) */
	BATCH_FINDING,	/* replay: finding those stored before (store_find()) */
	BATCH_STORING,	/* its messages are being stored (store_write()) */
	BATCH_STORED	/* stored: its commit waits for the previous
			 * batch's EXEC */
};

#define BATCH_BUSY(b)	((b)->state == BATCH_CHECKING || \
			    (b)->state == BATCH_LOADING || \
			    (b)->state == BATCH_FINDING || \
			    (b)->state == BATCH_STORING)

/*
 * The entries of one XREADGROUP, from the read until their EXEC is sent.
 * A batch whose store call is in flight when leading stops is abandoned:
 * the call's callback frees it, touching nothing else.
 */
struct hub_batch {
	struct part	*p;
	struct hub_entry *e;
	size_t		 n;
	struct store_msg *msgs;		/* the broadcasts, in order */
	size_t		 nmsgs;
	struct room	**load;		/* rooms asked for */
	size_t		 nload;
	enum batch_state state;
	enum batch_read	 kind;		/* live (may trim) or replay */
	int		 abandoned;	/* dropped while a reply was due:
					 * the reply frees it */
	int		 sql_errors;	/* refusals; from 2: isolate */
	int		 built;		/* msgs are filled in */
	int64_t		 retry_at;	/* monotonic ms, if waiting */
	char		 after[48];	/* live: the last live read's last
					 * id ("-": none), for orphans */
	int64_t		 oldest_ms;	/* the first entry's id: ms
					 * (the inbox lag) */
};

/* The context of a reply that may come after leading stopped. */
struct hub_scan {
	struct part	*p;
	unsigned	 epoch;
	struct hub_batch *b;	/* batch_orphans(): the batch checked */
	char		 after[48];	/* batch_ask_orphans(): the live
					 * read it asked from, or "-" */
};

static void	batch_on_inbox_connect(struct bus *, void *);
static void	batch_group_create(struct part *);
static void	batch_group_cb(struct bus *, struct bus_reply *, void *);
static void	batch_lead(struct part *);
static void	batch_fenced_cb(enum store_status, int64_t, void *);
static struct hub_scan *batch_scan_new(struct part *, struct hub_batch *);
static int	batch_scan(struct part *, const char *);
static void	batch_presence_cb(struct bus *, struct bus_reply *, void *);
static int	batch_next(struct part *);
static void	batch_settle(struct part *);
static void	batch_drop(struct part *);
static void	batch_replay(struct part *);
static void	batch_read(struct part *);
static void	batch_read_cb(struct bus *, struct bus_reply *, void *);
static int	batch_orphans(struct part *, struct hub_batch *);
static void	batch_check_ahead(struct part *);
static int	batch_ask_orphans(struct bus *, struct hub_scan *,
		    const char *);
static int	batch_check(struct part *, struct hub_batch *,
		    struct hub_scan *);
static void	batch_orphans_cb(struct bus *, struct bus_reply *, void *);
static void	batch_bad(struct part *, struct hub_entry *, const char *, ...)
		    GC_PRINTF(3, 4);
static int	batch_entry_parse(struct part *, struct hub_entry *,
		    struct bus_reply *);
static struct hub_batch *batch_new(struct part *, struct bus_reply *);
static void	batch_run(struct part *);
static void	batch_retry(struct part *, int);
static void	batch_loaded_cb(enum store_status, const struct store_row *,
		    size_t, void *);
static void	batch_mark(struct hub_batch *);
static int	batch_store_returned(struct hub_batch *);
static void	batch_store(struct part *, int);
static void	batch_found_cb(enum store_status, void *);
static void	batch_stored_cb(enum store_status, void *);
static void	batch_commit(struct part *);
static void	batch_keep_mark(struct part *, const struct hub_batch *);
static int	batch_trim_from(struct part *, const struct hub_batch *, char *,
		    size_t);
static void	batch_on_broadcast(struct part *, struct hub_entry *,
		    const struct store_msg *);
static void	batch_on_register(struct part *, struct hub_entry *, int64_t);
static int	batch_entry_stored(const struct hub_entry *);
static void	batch_on_unregister(struct part *, struct hub_entry *, int64_t);
static void	batch_exec_cb(struct bus *, struct bus_reply *, void *);


/* Call batch_advance() in ms (a retry), not sooner than asked before. */
void
batch_kick(struct part *p, int ms)
{
	struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };

	evtimer_add(p->kick, &tv);
}

/*
 * Do the next thing the leader has to do, if nothing is under way: start
 * leading, retry the batch, or read the next one. Called after every step
 * and by the cron, so a lost wake-up costs a second at most.
 */
void
batch_advance(struct part *p)
{
	if (!p->h->exiting)
		hub_gauges(p->h);
	if (p->h->exiting || !lease_leading(p))
		return;
	if (p->h->stopping || p->giving) {
		batch_settle(p);
		return;
	}
	switch (p->phase) {
	case PART_STANDBY:
		batch_lead(p);
		break;
	case PART_FENCE:
	case PART_REBUILD:
		break;
	case PART_PENDING:
	case PART_LIVE:
		if (batch_next(p)) {
			if (!BATCH_BUSY(p->batch) &&
			    util_mono_ms() >= p->batch->retry_at)
				batch_run(p);
			/*
			 * The pipeline: while a live batch is in flight,
			 * read the next one (">" never hands out the same
			 * entries twice); its ids and store wait for this
			 * one's (batch_commit()).
			 */
			else if (BATCH_BUSY(p->batch) &&
			    p->batch->kind == BATCH_READ_LIVE &&
			    p->phase == PART_LIVE && p->next == NULL)
				batch_read(p);
		} else if (p->next == NULL && (!p->exec_pending ||
		    p->phase == PART_LIVE))
			batch_read(p);
		break;
	}
}


/* A read reply lost with a connection may have delivered entries we never
 * saw: they are pending now, so read those first. */
static void
batch_on_inbox_connect(struct bus *bus, void *arg)
{
	struct part *p = arg;

	(void)bus;
	if (p->phase == PART_LIVE || p->phase == PART_PENDING) {
		p->phase = PART_PENDING;
		p->replay_quiet = 0;
		snprintf(p->pending_from, sizeof(p->pending_from), "0-0");
	}
	batch_advance(p);
}

static void
batch_group_create(struct part *p)
{
	(void)!bus_command(p->redis, batch_group_cb, p,
	    "XGROUP CREATE %s " BATCH_GROUP " 0 MKSTREAM", p->inbox_key);
}

static void
batch_group_cb(struct bus *bus, struct bus_reply *reply, void *arg)
{
	struct part *p = arg;
	const char *err;

	(void)bus;
	if (p->h->exiting || reply == NULL)
		return;
	if (bus_reply_type(reply) == BUS_ERROR &&
	    (err = bus_reply_str(reply, NULL)) != NULL &&
	    strncmp(err, "BUSYGROUP", 9) != 0)
		log_warnx("XGROUP CREATE %s: %s", p->inbox_key, err);
}

/* ---- leading ------------------------------------------------------------- */

/*
 * The lease is ours: raise the epoch in PostgreSQL (from then on no hub
 * that led before can store anything), rebuild presence, replay, read.
 */
static void
batch_lead(struct part *p)
{
	struct hub *h = p->h;
	struct hub_scan *sc;
	char name[32], url[CONF_STR_MAX];

	if (p->inbox == NULL) {
		/* One reader per partition, on its shard: a partition whose
		 * batch has committed reads again at once, whatever the
		 * others wait for on their blocking reads. */
		snprintf(name, sizeof(name), "redis inbox %d", p->n);
		if (hub_shard_url(h, p->shard, url, sizeof(url)) == -1 ||
		    (p->inbox = bus_new(h->base, url, h->conf->redis_password,
		    name, batch_on_inbox_connect, NULL, p)) == NULL)
			return;		/* the cron tries again */
	}
	if (!bus_connected(p->redis) || (sc = batch_scan_new(p, NULL)) == NULL)
		return;		/* the cron tries again */
	if (store_fence(h->store, p->n, h->lease_value, batch_fenced_cb, sc) ==
	    -1) {
		free(sc);
		return;
	}
	batch_group_create(p);
	p->phase = PART_FENCE;
}

static void
batch_fenced_cb(enum store_status st, int64_t fence, void *arg)
{
	struct hub_scan *sc = arg;
	struct part *p = sc->p;
	unsigned epoch = sc->epoch;

	free(sc);
	if (p->h->exiting || epoch != p->epoch || p->phase != PART_FENCE)
		return;
	if (st != STORE_OK) {
		p->phase = PART_STANDBY;
		batch_kick(p, BATCH_RETRY_MS);
		return;
	}
	p->fence = fence;
	rooms_reset(p->rooms);
	if (batch_scan(p, "0") == -1) {
		p->phase = PART_STANDBY;
		return;		/* the cron tries again */
	}
	p->phase = PART_REBUILD;
	log_info("partition %d: leading with epoch %lld: rebuilding presence "
	    "from %s", p->n, (long long)fence, p->presence_key);
	door_lead(p);
}

static struct hub_scan *
batch_scan_new(struct part *p, struct hub_batch *b)
{
	struct hub_scan *sc;

	if ((sc = malloc(sizeof(*sc))) == NULL)
		return NULL;
	sc->p = p;
	sc->epoch = p->epoch;
	sc->b = b;
	return sc;
}

static int
batch_scan(struct part *p, const char *cursor)
{
	struct hub_scan *sc;

	if ((sc = batch_scan_new(p, NULL)) == NULL)
		return -1;
	if (bus_command(p->redis, batch_presence_cb, sc,
	    "HSCAN %s %s COUNT " BATCH_SCAN_COUNT, p->presence_key, cursor) ==
	    -1) {
		free(sc);
		return -1;
	}
	return 0;
}

static void
batch_presence_cb(struct bus *bus, struct bus_reply *reply, void *arg)
{
	struct hub_scan *sc = arg;
	struct part *p = sc->p;
	unsigned epoch = sc->epoch;
	struct bus_reply *kv;
	const char *cursor, *field, *value;
	size_t n;
	int bad = 0;

	(void)bus;
	free(sc);
	if (p->h->exiting || reply == NULL || epoch != p->epoch ||
	    p->phase != PART_REBUILD)
		return;
	if (bus_reply_type(reply) != BUS_ARRAY ||
	    bus_reply_elements(reply) != 2 ||
	    (cursor = bus_reply_str(bus_reply_element(reply, 0), NULL)) ==
	    NULL) {
		log_warnx("HSCAN %s: unexpected reply%s%s", p->presence_key,
		    bus_reply_type(reply) == BUS_ERROR ? ": " : "",
		    bus_reply_type(reply) == BUS_ERROR ?
		    bus_reply_str(reply, NULL) : "");
		batch_reset(p);
		return;
	}
	kv = bus_reply_element(reply, 1);
	n = bus_reply_elements(kv);
	for (size_t i = 0; i + 1 < n; i += 2) {
		field = bus_reply_str(bus_reply_element(kv, i), NULL);
		value = bus_reply_str(bus_reply_element(kv, i + 1), NULL);
		if (field == NULL || value == NULL ||
		    rooms_restore(p->rooms, field, value) == -1)
			bad++;
	}
	if (bad > 0)
		log_warnx("%s: %d unreadable fields ignored", p->presence_key,
		    bad);
	if (strcmp(cursor, "0") != 0) {
		if (batch_scan(p, cursor) == -1)
			batch_reset(p);
		return;
	}
	log_info("%s: presence rebuilt: %zu connections in %zu rooms; "
	    "replaying unacknowledged entries", p->presence_key,
	    rooms_connections(p->rooms),
	    rooms_active(p->rooms));
	p->phase = PART_PENDING;
	p->replay_quiet = 0;
	snprintf(p->pending_from, sizeof(p->pending_from), "0-0");
	batch_advance(p);
}

/*
 * Leading stopped (or what we hold in memory can no longer be trusted):
 * forget rooms and presence; replies of before are recognised as stale by
 * the epoch. The entries in flight stay pending in Redis for whoever leads
 * next, this hub included.
 */
void
batch_reset(struct part *p)
{
	p->epoch++;
	p->phase = PART_STANDBY;
	batch_drop(p);
	rooms_reset(p->rooms);
	evtimer_del(p->kick);
	p->oldest_ms = 0;
}

/*
 * Stopping, or handing the partition over: the batches read already run
 * to their end, nothing new is read; once none is left (a handover also
 * waits for the read out: its entries are ours to finish), the lease is
 * given back. A stop does not wait for that read: its reply is dropped
 * and its entries stay pending for the next leader.
 */
/* The batch to work on: the one in hand, else the one read ahead once
 * its orphan check is answered. 0: none. */
static int
batch_next(struct part *p)
{
	if (p->batch == NULL && p->next != NULL && !BATCH_BUSY(p->next)) {
		p->batch = p->next;
		p->next = NULL;
	}
	return p->batch != NULL;
}

static void
batch_settle(struct part *p)
{
	if ((p->phase == PART_PENDING || p->phase == PART_LIVE) &&
	    batch_next(p)) {
		if (!BATCH_BUSY(p->batch) &&
		    util_mono_ms() >= p->batch->retry_at)
			batch_run(p);
		return;
	}
	if (p->next != NULL || (!p->h->stopping &&
	    p->read != BATCH_READ_NONE && p->phase >= PART_PENDING))
		return;
	lease_give(p);
}

/* ---- the inbox ----------------------------------------------------------- */

static void
batch_read(struct part *p)
{
	int rc;

	if (p->read != BATCH_READ_NONE || !bus_connected(p->inbox))
		return;
	if (p->phase == PART_PENDING)
		rc = bus_command(p->inbox, batch_read_cb, p,
		    "XREADGROUP GROUP " BATCH_GROUP " " BATCH_GROUP " COUNT %d "
		    "STREAMS %s %s", BATCH_MAX, p->inbox_key, p->pending_from);
	else
		rc = bus_command(p->inbox, batch_read_cb, p,
		    "XREADGROUP GROUP " BATCH_GROUP " " BATCH_GROUP " COUNT %d "
		    "BLOCK %d STREAMS %s >", BATCH_MAX, BATCH_BLOCK_MS,
		    p->inbox_key);
	if (rc == 0) {
		p->read = p->phase == PART_PENDING ? BATCH_READ_REPLAY :
		    BATCH_READ_LIVE;
		p->read_epoch = p->epoch;
		if (p->read == BATCH_READ_LIVE)
			batch_check_ahead(p);
	}
}

/*
 * A live read's orphan check (batch_orphans()), pipelined behind it on the
 * same connection: Redis runs it as soon as the read is answered, so a
 * message pays no round trip of its own for it. It asks for the oldest
 * entry pending after the last live read; the batch goes on if that is its
 * first entry. An entry handed to a deposed hub after our read is newer
 * than our batch (">" hands out runs in order), as before. batch_read_cb()
 * hands it the batch, or asks again itself when live_last moved meanwhile.
 */
static void
batch_check_ahead(struct part *p)
{
	struct hub_scan *c;

	if ((c = batch_scan_new(p, NULL)) == NULL)
		return;		/* batch_read_cb() asks itself */
	if (batch_ask_orphans(p->inbox, c, p->live_last) == -1) {
		free(c);
		return;
	}
	p->check = c;
}

/*
 * The orphan check itself, on bus: the oldest entry pending after `after`
 * (a live read's last id, or "-"), which batch_orphans_cb() compares with
 * the first entry of c's batch.
 */
static int
batch_ask_orphans(struct bus *bus, struct hub_scan *c, const char *after)
{
	struct part *p = c->p;

	snprintf(c->after, sizeof(c->after), "%s", after);
	return bus_command(bus, batch_orphans_cb, c,
	    "XPENDING %s " BATCH_GROUP " %s%s + 1", p->inbox_key,
	    strcmp(c->after, "-") == 0 ? "" : "(", c->after);
}

/*
 * A batch, or nothing (nil: BLOCK timed out). A reply that comes after
 * leading stopped is dropped: its entries are pending, and the next leader
 * replays them.
 */
static void
batch_read_cb(struct bus *bus, struct bus_reply *reply, void *arg)
{
	struct part *p = arg;
	struct hub_batch *b;
	struct hub_scan *check = p->check;	/* its reply comes next */
	const char *err;
	int replay = p->read == BATCH_READ_REPLAY;

	(void)bus;
	p->read = BATCH_READ_NONE;
	p->check = NULL;
	if (p->h->exiting || reply == NULL)
		return;		/* batch_on_inbox_connect() goes on */
	if (p->read_epoch != p->epoch || p->h->stopping || !lease_leading(p) ||
	    (p->phase != PART_PENDING && p->phase != PART_LIVE)) {
		batch_advance(p);
		return;
	}
	if (bus_reply_type(reply) == BUS_ERROR) {
		err = bus_reply_str(reply, NULL);
		if (p->read_errors++ == 0)
			log_warnx("XREADGROUP %s: %s", p->inbox_key, err);
		if (strncmp(err, "NOGROUP", 7) == 0)
			batch_group_create(p);
		batch_kick(p, BATCH_READ_RETRY_MS);
		return;
	}
	p->read_errors = 0;
	if (bus_reply_type(reply) != BUS_ARRAY) {
		batch_advance(p);
		return;
	}
	if ((b = batch_new(p, reply)) == NULL) {
		log_warnx("%s: out of memory for a batch; reading it again",
		    p->inbox_key);
		p->phase = PART_PENDING;
		snprintf(p->pending_from, sizeof(p->pending_from), "0-0");
		batch_kick(p, BATCH_READ_RETRY_MS);
		return;
	}
	if (b->n == 0) {
		batch_free(b);
		if (replay && p->phase == PART_PENDING) {
			if (!p->replay_quiet)
				log_info("%s: no entry left to replay; "
				    "reading new ones", p->inbox_key);
			p->phase = PART_LIVE;
			p->replay_quiet = 0;
			p->replayed_ms = util_mono_ms();
		}
		batch_advance(p);
		return;
	}
	/* A live read answered after the cron asked for a replay is a live
	 * batch all the same: the replay reads next. */
	if (replay) {
		log_info("%s: replaying %zu unacknowledged entries from %s",
		    p->inbox_key, b->n, b->e[0].id);
		snprintf(p->pending_from, sizeof(p->pending_from), "%s",
		    b->e[b->n - 1].id);
	}
	b->kind = replay ? BATCH_READ_REPLAY : BATCH_READ_LIVE;
	metrics_count(MC_INBOX_ENTRIES, b->n);
	if (b->kind == BATCH_READ_LIVE) {
		/* Orphans can only lie between the last live read and this
		 * one: ">" hands out runs of the stream, in order. */
		snprintf(b->after, sizeof(b->after), "%s", p->live_last);
		snprintf(p->live_last, sizeof(p->live_last), "%s",
		    b->e[b->n - 1].id);
	} else
		snprintf(p->live_last, sizeof(p->live_last), "-");
	if (p->batch != NULL) {
		/* Read ahead: checked now, run once the batch before it
		 * has committed. */
		p->next = b;
		if (batch_check(p, b, check) == -1) {
			p->next = NULL;
			batch_free(b);
			batch_replay(p);
		}
		return;
	}
	p->batch = b;
	p->oldest_ms = b->oldest_ms;
	if (b->kind == BATCH_READ_LIVE && batch_check(p, b, check) == 0)
		return;		/* batch_orphans_cb() goes on */
	batch_run(p);
}

/* b's orphan check: the one sent with its read if it asked from where b
 * begins, else a new one. 0: b is busy until the reply. */
static int
batch_check(struct part *p, struct hub_batch *b, struct hub_scan *check)
{
	if (check != NULL && check->epoch == p->epoch &&
	    strcmp(check->after, b->after) == 0) {
		check->b = b;
		b->state = BATCH_CHECKING;
		return 0;
	}
	return batch_orphans(p, b);
}

/*
 * Forget the batches in flight: a busy one is abandoned (the reply it
 * waits for frees it). Their entries stay pending.
 */
static void
batch_drop(struct part *p)
{
	struct hub_batch *bs[2] = { p->batch, p->next };

	p->batch = p->next = NULL;
	snprintf(p->live_last, sizeof(p->live_last), "-");
	for (int i = 0; i < 2; i++) {
		if (bs[i] == NULL)
			continue;
		if (BATCH_BUSY(bs[i]))
			bs[i]->abandoned = 1;
		else
			batch_free(bs[i]);
	}
}

/* Replay every pending entry, in id order, once the batches in flight
 * are done (batch_advance() reads pending entries only then). */
static void
batch_replay(struct part *p)
{
	p->phase = PART_PENDING;
	snprintf(p->pending_from, sizeof(p->pending_from), "0-0");
	snprintf(p->live_last, sizeof(p->live_last), "-");
	batch_kick(p, 0);
}

/*
 * Every hub reads as the same consumer, so a hub deposed while its
 * blocking XREADGROUP was out may have been handed entries since our
 * replay: they are pending, older than this live batch, and some may be
 * from the same senders. Publishing this batch first would reorder them.
 * Ask Redis for the oldest entry pending after the last live read: if it
 * is not the batch's first, drop the batch (its entries stay pending) and
 * replay everything pending, in id order. 0: asked (b is busy until the
 * reply). Usually the check went out with the read (batch_check_ahead()).
 */
static int
batch_orphans(struct part *p, struct hub_batch *b)
{
	struct hub_scan *c;

	if ((c = batch_scan_new(p, b)) == NULL)
		return -1;
	if (batch_ask_orphans(p->redis, c, b->after) == -1) {
		free(c);
		return -1;
	}
	b->state = BATCH_CHECKING;
	return 0;
}

static void
batch_orphans_cb(struct bus *bus, struct bus_reply *reply, void *arg)
{
	struct hub_scan *c = arg;
	struct part *p = c->p;
	struct hub_batch *b = c->b;
	struct bus_reply *oldest;
	const char *id = NULL;

	(void)bus;
	free(c);
	if (b == NULL)
		return;		/* sent with a read that brought no batch */
	if (p->h->exiting)
		return;		/* hub_main() frees the batch */
	b->state = BATCH_NEW;
	if (b->abandoned) {
		batch_free(b);
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
			log_warnx("%s: entry %s, handed to a deposed hub, "
			    "precedes %s: replaying pending entries first",
			    p->inbox_key, id, b->e[0].id);
		/* The batch read after it (if any) goes too: newer. */
		if (p->next == b)
			p->next = NULL;
		else {
			p->batch = NULL;
			if (p->next != NULL && BATCH_BUSY(p->next))
				p->next->abandoned = 1;
			else if (p->next != NULL)
				batch_free(p->next);
			p->next = NULL;
		}
		batch_free(b);
		p->replay_quiet = id == NULL;
		batch_replay(p);
		return;
	}
	batch_advance(p);
}

/* Rate-limited: hostile entries must not flood the log. */
static void
batch_bad(struct part *p, struct hub_entry *e, const char *fmt, ...)
{
	char why[256];
	va_list ap;

	e->bad = 1;
	if (p->h->bad_logged >= BATCH_BAD_LOG_MAX) {
		p->h->bad_hidden++;
		return;
	}
	p->h->bad_logged++;
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
batch_entry_parse(struct part *p, struct hub_entry *e, struct bus_reply *fields)
{
	const char *argv[BATCH_FIELDS_MAX];
	size_t lens[BATCH_FIELDS_MAX], n, wlen = 0, rlen, ulen, need;
	struct msg_entry me;
	char err[128], *q;

	if (bus_reply_type(fields) != BUS_ARRAY) {
		batch_bad(p, e, "deleted from the stream");
		return 0;
	}
	if ((n = bus_reply_elements(fields)) > BATCH_FIELDS_MAX) {
		batch_bad(p, e, "%zu fields, more than %d", n,
		    BATCH_FIELDS_MAX);
		return 0;
	}
	for (size_t i = 0; i < n; i++)
		if ((argv[i] = bus_reply_str(bus_reply_element(fields, i),
		    &lens[i])) == NULL) {
			batch_bad(p, e, "a field is not a string");
			return 0;
		}
	if (msg_entry_parse(&me, argv, lens, n,
	    (size_t)p->h->conf->max_ws_message, err, sizeof(err)) == -1) {
		batch_bad(p, e, "%s", err);
		return 0;
	}
	/* PostgreSQL text cannot hold NUL; a worker id goes into keys. */
	if (me.content != NULL &&
	    memchr(me.content, '\0', me.content_len) != NULL) {
		batch_bad(p, e, "content contains a NUL character");
		return 0;
	}
	if (me.worker != NULL) {
		wlen = strlen(me.worker);
		if (wlen == 0 || wlen > BATCH_WID_MAX ||
		    strpbrk(me.worker, " \t\r\n") != NULL) {
			batch_bad(p, e, "invalid worker id");
			return 0;
		}
	}
	rlen = strlen(me.room);
	ulen = strlen(me.username);
	need = rlen + 1 + ulen + 1 + (me.worker != NULL ? wlen + 1 : 0) +
	    (me.content != NULL ? me.content_len + 1 : 1) +
	    (me.cid != NULL ? strlen(me.cid) + 1 : 0);
	if ((e->buf = q = malloc(need)) == NULL)
		return -1;
	e->op = me.op;
	e->history = me.history >= 0 ? me.history :
	    p->h->conf->history_on_join;
	e->rejoin = me.rejoin;
	e->conn = me.conn;
	e->user = me.user;
	e->room_id = memcpy(q, me.room, rlen + 1);
	q += rlen + 1;
	e->username = memcpy(q, me.username, ulen + 1);
	q += ulen + 1;
	if (me.worker != NULL) {
		e->worker = memcpy(q, me.worker, wlen + 1);
		q += wlen + 1;
	}
	/* A delete's content is "" (stored so). */
	if (me.content != NULL)
		memcpy(q, me.content, me.content_len);
	q[me.content_len] = '\0';
	e->content = q;
	e->content_len = me.content_len;
	q += me.content_len + 1;
	if (me.cid != NULL)
		e->cid = strcpy(q, me.cid);
	e->target = me.target;
	return 0;
}

/* reply: [[stream, [[id, fields], ...]]]; NULL if out of memory. */
static struct hub_batch *
batch_new(struct part *p, struct bus_reply *reply)
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
	b->p = p;
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
			if (batch_entry_parse(p, e,
			    bus_reply_element(ent, 1)) == -1)
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
	batch_free(b);
	return NULL;
}

size_t
batch_entries(const struct part *p)
{
	return (p->batch != NULL ? p->batch->n : 0) +
	    (p->next != NULL ? p->next->n : 0);
}

void
batch_free(struct hub_batch *b)
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
batch_run(struct part *p)
{
	struct hub_batch *b = p->batch;
	struct hub_entry *e;
	const char **ids;
	int rc;

	if (b->state == BATCH_STORED) {
		batch_commit(p);
		return;
	}
	b->retry_at = 0;
	b->nload = 0;
	for (size_t i = 0; i < b->n; i++) {
		e = &b->e[i];
		if (e->bad || e->op == MSG_UNREGISTER)
			continue;
		if (e->room == NULL &&
		    (e->room = rooms_get(p->rooms, e->room_id, 1)) == NULL) {
			batch_retry(p, BATCH_RETRY_MS);
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
		batch_store(p, 0);
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
		rc = store_load(p->h->store, ids, b->nload, keep,
		    batch_loaded_cb, b);
		free(ids);
	}
	if (rc == -1) {
		for (size_t i = 0; i < b->nload; i++)
			b->load[i]->state = ROOM_UNKNOWN;
		batch_retry(p, BATCH_RETRY_MS);
		return;
	}
	b->state = BATCH_LOADING;
}

/*
 * PostgreSQL is away (or refused): nothing of the batch was applied, and
 * nothing is acknowledged; it runs again in ms. Its entries wait in the
 * stream meanwhile, and so do those behind them: order is kept, nothing is
 * lost. Stopping or handing over, the batch is left to the next hub.
 */
static void
batch_retry(struct part *p, int ms)
{
	if (p->h->stopping || p->giving) {
		batch_drop(p);
		batch_advance(p);
		return;
	}
	p->batch->retry_at = util_mono_ms() + ms;
	batch_kick(p, ms);
}

/*
 * A store call of b answered: b is no longer busy. 1 if it was abandoned
 * meanwhile (or the hub is exiting): then it is freed, and the reply is
 * not for us.
 */
static int
batch_store_returned(struct hub_batch *b)
{
	struct part *p = b->p;

	b->state = BATCH_NEW;
	if (!b->abandoned && !p->h->exiting)
		return 0;
	if (p->batch == b)
		p->batch = NULL;
	batch_free(b);
	return 1;
}

static void
batch_loaded_cb(enum store_status st, const struct store_row *rows, size_t n,
    void *arg)
{
	struct hub_batch *b = arg;
	struct part *p = b->p;
	struct room *r;

	if (batch_store_returned(b))
		return;
	if (st != STORE_OK) {
		for (size_t i = 0; i < b->nload; i++)
			b->load[i]->state = ROOM_UNKNOWN;
		batch_retry(p, st == STORE_AWAY ? BATCH_RETRY_MS :
		    BATCH_RETRY_MS * 2);
		return;
	}
	for (size_t i = 0; i < n; i++) {
		if ((r = rooms_get(p->rooms, rows[i].room, 0)) == NULL)
			continue;
		if (r->state == ROOM_LOADING)
			rooms_loaded(p->rooms, r, rows[i].last_id);
		if (rows[i].id > 0 && r->state == ROOM_LOADED)
			rooms_history_add(p->rooms, r, rows[i].id,
			    rows[i].user, rows[i].username, rows[i].content,
			    rows[i].content_len, rows[i].ts_ms,
			    rows[i].edited_ms);
	}
	for (size_t i = 0; i < b->nload; i++)
		if (b->load[i]->state == ROOM_LOADING)
			b->load[i]->state = ROOM_MISSING;
	batch_store(p, 0);
}

/*
 * Give each broadcast not stored yet its room's next id, in entry order,
 * and store them all in one statement. An entry for a room that does not
 * exist is dropped: an operator's typo must not block the stream. Replayed
 * entries are first looked up (found: that is done, batch_found_cb()):
 * those an earlier hub stored keep the id it gave them, and the others get
 * the ids that follow, without a gap.
 */
static void
batch_store(struct part *p, int found)
{
	struct hub_batch *b = p->batch;
	struct hub_entry *e;
	struct store_msg *m;
	int64_t now = util_now_ms();
	size_t npending = 0;

	if (!b->built) {
		for (size_t i = 0; i < b->n; i++) {
			e = &b->e[i];
			if (e->bad || !batch_entry_stored(e) ||
			    e->room->state != ROOM_LOADED)
				continue;
			e->msg = (int)b->nmsgs;
			m = &b->msgs[b->nmsgs++];
			if (p->h->nparts > 1)
				snprintf(e->stored_as, sizeof(e->stored_as),
				    "%d:%s", p->n, e->id);
			else
				snprintf(e->stored_as, sizeof(e->stored_as),
				    "%s", e->id);
			m->inbox_id = e->stored_as;
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
	if (b->kind == BATCH_READ_REPLAY && !found && b->nmsgs > 0) {
		if (store_find(p->h->store, b->msgs, b->nmsgs, batch_found_cb,
		    b) == -1)
			batch_retry(p, BATCH_RETRY_MS);
		else
			b->state = BATCH_FINDING;
		return;
	}
	p->pass++;
	for (size_t i = 0; i < b->n; i++) {
		e = &b->e[i];
		if (e->bad || e->op == MSG_UNREGISTER)
			continue;
		m = e->msg >= 0 ? &b->msgs[e->msg] : NULL;
		if (e->room->state != ROOM_LOADED) {
			batch_bad(p, e, "no room '%s'", e->room_id);
			if (m != NULL)
				m->result = STORE_BAD;
			continue;
		}
		if (m == NULL || m->result == STORE_DUP ||
		    m->result == STORE_CID || m->result == STORE_BAD)
			continue;
		if (e->room->mark != p->pass) {
			e->room->mark = p->pass;
			e->room->next_id = e->room->last_id + 1;
		}
		m->id = e->room->next_id++;
		m->ts_ms = now;
		m->result = STORE_PENDING;
		npending++;
	}
	if (npending == 0) {
		batch_commit(p);
		return;
	}
	if (store_write(p->h->store, p->n, p->fence, b->msgs, b->nmsgs,
	    b->sql_errors >= 2, batch_stored_cb, b) == -1) {
		batch_retry(p, BATCH_RETRY_MS);
		return;
	}
	b->state = BATCH_STORING;
}

static void
batch_found_cb(enum store_status st, void *arg)
{
	struct hub_batch *b = arg;
	struct part *p = b->p;

	if (batch_store_returned(b))
		return;
	if (st != STORE_OK) {
		batch_retry(p, BATCH_RETRY_MS);
		return;
	}
	batch_mark(b);
	batch_store(p, 1);
}

/*
 * Mark the entries the store refused as bad (they are acknowledged, not
 * published), and say how many an earlier hub had stored already.
 */
static void
batch_mark(struct hub_batch *b)
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
		log_info("%s: %zu messages were stored by an earlier hub: "
		    "published with the ids they were given then",
		    b->p->inbox_key, dups);
}

static void
batch_stored_cb(enum store_status st, void *arg)
{
	struct hub_batch *b = arg;
	struct part *p = b->p;

	if (batch_store_returned(b))
		return;
	switch (st) {
	case STORE_AWAY:
		batch_retry(p, BATCH_RETRY_MS);
		return;
	case STORE_FENCED:
		/*
		 * Another hub raised the epoch: it leads, whatever our
		 * clock says. Nothing was stored; the entries stay pending
		 * for it. Lead again only if Redis gives us the lease.
		 */
		log_warnx("%s: another hub raised the epoch above %lld: "
		    "batch of %zu messages not stored; standing by",
		    p->inbox_key, (long long)p->fence, b->nmsgs);
		p->leader = 0;
		batch_reset(p);
		return;
	case STORE_ERROR:
		/*
		 * Most likely our last id of a room is behind (another hub
		 * wrote meanwhile) or a room was deleted: load the rooms
		 * again. Refused twice, the messages go one by one, so that
		 * only the one PostgreSQL cannot take is dropped.
		 */
		b->sql_errors++;
		log_warnx("%s: batch of %zu messages refused (%d); %s",
		    p->inbox_key, b->nmsgs, b->sql_errors, b->sql_errors >= 2 ?
		    "storing them one by one" : "reloading its rooms");
		for (size_t i = 0; i < b->n; i++)
			if (b->e[i].msg >= 0)
				rooms_unload(p->rooms, b->e[i].room);
		batch_retry(p, BATCH_SQL_RETRY_MS);
		return;
	case STORE_OK:
		break;
	}
	batch_mark(b);
	batch_commit(p);
}

/*
 * Every BATCH_INBOX_KEEP / HUB_KEEP_MARKS live entries this hub handles
 * in a partition, the last one's id is marked. Live reads hand out the
 * stream in order and a batch commits after the ones before it, so every
 * entry before a mark is handled (an orphan handed to a deposed hub is
 * newer than the live read before it, and replayed at the next one).
 */
static void
batch_keep_mark(struct part *p, const struct hub_batch *b)
{
	p->handled += b->n;
	if (p->handled < p->mark_at)
		return;
	snprintf(p->marks[p->nmarks % HUB_KEEP_MARKS], sizeof(p->marks[0]),
	    "%s", b->e[b->n - 1].id);
	p->nmarks++;
	p->mark_at = p->handled + BATCH_INBOX_KEEP / HUB_KEEP_MARKS;
}

/*
 * Where the inbox may be trimmed from, once b commits: ten minutes before
 * its last entry, or the oldest of the marks if that is later (the newest
 * 75,000 to 100,000 handled entries are kept: at 40,000 messages a second
 * ten minutes would be 24 million entries, 2.6 GB of Redis). -1: nothing
 * to trim yet.
 */
static int
batch_trim_from(struct part *p, const struct hub_batch *b, char *minid,
    size_t len)
{
	unsigned long long ms, mark_ms, mark_seq;
	int keep = 0;

	if (sscanf(b->e[b->n - 1].id, "%llu", &ms) == 1 &&
	    ms > BATCH_INBOX_KEEP_MS) {
		snprintf(minid, len, "%llu", ms - BATCH_INBOX_KEEP_MS);
		keep = 1;
	}
	if (p->nmarks >= HUB_KEEP_MARKS) {
		const char *mark = p->marks[p->nmarks % HUB_KEEP_MARKS];

		if (sscanf(mark, "%llu-%llu", &mark_ms, &mark_seq) == 2 &&
		    (!keep || mark_ms > ms - BATCH_INBOX_KEEP_MS)) {
			snprintf(minid, len, "%s", mark);
			keep = 1;
		}
	}
	return keep ? 0 : -1;
}

/*
 * Everything the batch changes, in entry order, then its acknowledgement,
 * in one fenced transaction (tx_commit()): Redis applies all of it,
 * or nothing if the lease is no longer ours. The next read waits for its
 * reply, so it never sees these entries again.
 */
static void
batch_commit(struct part *p)
{
	struct hub_batch *b = p->batch;
	int64_t now = util_now_ms(), mono = util_mono_ms();
	const char **argv;
	char minid[48];
	int rc;

	if (!lease_leading(p))
		return;		/* batch_reset() took the batch */
	/*
	 * One EXEC at a time: were the one before to fail, this batch must
	 * not be published before its entries are (it was stored after them
	 * and is published again with the same ids, in order).
	 */
	b->state = BATCH_STORED;
	if (p->exec_pending)
		return;		/* batch_exec_cb() commits it */
	p->batch = NULL;
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
	tx_begin(p->tx);
	for (size_t i = 0; i < b->n; i++) {
		struct hub_entry *e = &b->e[i];

		if (e->bad)
			continue;
		switch (e->op) {
		case MSG_BROADCAST:
		case MSG_EDIT:
		case MSG_DELETE:
			if (e->msg >= 0)
				batch_on_broadcast(p, e, &b->msgs[e->msg]);
			break;
		case MSG_REGISTER:
			batch_on_register(p, e, now);
			break;
		case MSG_UNREGISTER:
			batch_on_unregister(p, e, now);
			break;
		}
	}
	if ((argv = calloc(b->n + 3, sizeof(*argv))) == NULL)
		tx_fail(p->tx);
	else {
		argv[0] = "XACK";
		argv[1] = p->inbox_key;
		argv[2] = BATCH_GROUP;
		for (size_t i = 0; i < b->n; i++)
			argv[3 + i] = b->e[i].id;
		tx_command(p->tx, (int)b->n + 3, argv, NULL);
		free(argv);
	}
	if (b->kind == BATCH_READ_LIVE)
		batch_keep_mark(p, b);
	/* Entries before those are all acknowledged (replay is over). */
	if (b->kind == BATCH_READ_LIVE &&
	    mono - p->trimmed_ms >= BATCH_TRIM_MS &&
	    batch_trim_from(p, b, minid, sizeof(minid)) == 0) {
		/* "~" alone removes at most 10,000 entries a call (100 nodes
		 * of 100): less than a second of a busy inbox. */
		const char *targv[7] = { "XTRIM", p->inbox_key, "MINID", "~",
		    minid, "LIMIT", BATCH_TRIM_LIMIT };

		tx_command(p->tx, 7, targv, NULL);
		p->trimmed_ms = mono;
	}
	rc = tx_commit(p->tx, batch_exec_cb, p);
	batch_free(b);
	if (rc == -1) {
		log_warnx("%s: cannot send a batch's transaction to Redis; "
		    "starting over", p->inbox_key);
		batch_reset(p);
		return;
	}
	p->exec_pending = rc == 0;
	batch_advance(p);
}

/*
 * A stored room event goes out: a message (unless it is a resend of one
 * stored already: STORE_CID), an edit or a delete; then a gochat.v2
 * sender's ack, on its worker's channel.
 */
static void
batch_on_broadcast(struct part *p, struct hub_entry *e,
    const struct store_msg *m)
{
	if (m->result != STORE_CID) {
		if (e->op == MSG_BROADCAST)
			rooms_message(p->rooms, e->room, m->id, e->user,
			    e->username, e->content, e->content_len,
			    m->ts_ms);
		else
			rooms_change(p->rooms, e->room, m->id, e->target,
			    e->op == MSG_EDIT ? e->content : NULL,
			    e->content_len, m->ts_ms);
		metrics_count(MC_MSGS_IN, 1);
	}
	if (e->cid != NULL && e->worker != NULL)
		rooms_ack(p->rooms, e->room, e->worker, e->conn, e->cid, m->id,
		    m->ts_ms);
}

/* Entries that become rows of messages, with an id of their room's. */
static int
batch_entry_stored(const struct hub_entry *e)
{
	return e->op == MSG_BROADCAST || e->op == MSG_EDIT ||
	    e->op == MSG_DELETE;
}

static void
batch_on_register(struct part *p, struct hub_entry *e, int64_t now)
{
	switch (rooms_register(p->rooms, e->room, e->worker, e->conn, e->user,
	    e->username, now, e->below, e->history, e->rejoin)) {
	case -1:
		tx_fail(p->tx);	/* out of memory: start over */
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
batch_on_unregister(struct part *p, struct hub_entry *e, int64_t now)
{
	if (rooms_unregister(p->rooms, e->room_id, e->worker, e->conn, now) ==
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
batch_exec_check(struct part *p, struct bus_reply *reply, const char *what)
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
		p->leader = 0;
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
batch_exec_cb(struct bus *bus, struct bus_reply *reply, void *arg)
{
	struct part *p = arg;

	(void)bus;
	p->exec_pending = 0;
	if (p->h->exiting || reply == NULL)
		return;
	if (batch_exec_check(p, reply, "inbox batch") == -1) {
		batch_reset(p);
		return;
	}
	/* The next batch, stored meanwhile, goes now, even when stopping. */
	if (p->batch != NULL && p->batch->state == BATCH_STORED &&
	    p->leader) {
		batch_commit(p);
		return;
	}
	batch_advance(p);
}

