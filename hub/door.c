/*
 * door: with partitions > 1, workers add entries to their room's
 * partition inbox, and <p>hub:inbox stays the operators' door (SPEC
 * section 11): the leader of partition 0 reads it with the consumer group
 * and moves each entry to its room's partition inbox, adding it there and
 * acknowledging it here in one script fenced by partition 0's lease, so
 * an entry is moved exactly once, in order, whoever leads. An entry whose
 * partition lives on another Redis shard is first added there by a script
 * that marks its id moved (<p>hub:door:<id>, for an hour) and adds it only
 * if it was not marked; it is acknowledged here once every such entry of
 * the read is moved (read again: acknowledged only).
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/bus.h"
#include "common/conf.h"
#include "common/log.h"
#include "common/msg.h"
#include "common/util.h"
#include "hub/door.h"
#include "hub/hub.h"
#include "hub/lease.h"

#define DOOR_GROUP	"hub"
#define DOOR_COUNT	256
#define DOOR_BLOCK_MS	1000
#define DOOR_FIELDS_MAX	32
#define DOOR_REPLAY_MS	5000	/* pending entries read again this often */
#define DOOR_MOVED_MS	"3600000" /* an id marked moved on another shard */
#define DOOR_ID_MAX	48

struct door {
	struct hub	*h;
	struct part	*p;		/* partition 0: its leader moves */
	struct bus	*bus;		/* the blocking reads; made when
					 * first needed */
	char		 key[128];	/* <p>hub:inbox */
	int		 reading;	/* an XREADGROUP out */
	int		 moving;	/* a move script out */
	int		 replay;	/* read pending entries first */
	int64_t		 replayed_ms;	/* monotonic: the last replay ended */
	unsigned	 epoch;		/* p's epoch when it was sent */
	int		 remote;	/* moves to other shards out */
	char		 moved[DOOR_COUNT][DOOR_ID_MAX];	/* ids moved
					 * to other shards, not yet
					 * acknowledged here */
	size_t		 nmoved;
	char		 sent[DOOR_COUNT][DOOR_ID_MAX];	/* ... being
					 * moved */
	int		 sent_shard[DOOR_COUNT];
	size_t		 nsent;
};

/* One entry of a read, as door_move() sees it. */
struct door_entry {
	const char	*id;
	size_t		 idlen;
	struct bus_reply *f;		/* its fields */
	size_t		 nf;		/* 0: dropped (acknowledged only) */
	int		 shard;		/* of its partition's inbox */
	int		 moved;		/* on another shard already */
	char		 key[MSG_KEY_MAX];	/* its partition's inbox */
	char		 count[16];
};

/*
 * KEYS[1] partition 0's lease, KEYS[2] the door; ARGV[1] us, then per
 * entry: its id, its partition inbox ("" to drop it), n, n field/values.
 */
static const char door_lua[] =
    "if redis.call('get', KEYS[1]) ~= ARGV[1] then "
    "return redis.error_reply('LEASE the leader lease is not ours') end "
    "local i, n = 2, #ARGV "
    "while i <= n do "
    "local nf = tonumber(ARGV[i + 2]) "
    "if ARGV[i + 1] ~= '' then "
    "redis.call('xadd', ARGV[i + 1], '*', unpack(ARGV, i + 3, i + 2 + nf)) "
    "end "
    "redis.call('xack', KEYS[2], 'hub', ARGV[i]) "
    "i = i + 3 + nf end "
    "return 1";
/*
 * The move to another shard: ARGV[1] the marks' ms, then per entry: its
 * mark, its partition inbox, n, n field/values. Added only if not marked.
 */
static const char door_remote_lua[] =
    "local i, n = 2, #ARGV "
    "while i <= n do "
    "local nf = tonumber(ARGV[i + 2]) "
    "if redis.call('set', ARGV[i], '1', 'NX', 'PX', ARGV[1]) then "
    "redis.call('xadd', ARGV[i + 1], '*', unpack(ARGV, i + 3, i + 2 + nf)) "
    "end "
    "i = i + 3 + nf end "
    "return 1";

static void	door_on_connect(struct bus *, void *);
static void	door_group_create(struct door *);
static void	door_read_cb(struct bus *, struct bus_reply *, void *);
static void	door_entry(struct door *, struct bus_reply *,
		    struct door_entry *);
static int	door_move(struct door *, struct bus_reply *);
static int	door_remote(struct door *, struct door_entry *, size_t);
static void	door_remote_cb(struct bus *, struct bus_reply *, void *);
static void	door_moved_cb(struct bus *, struct bus_reply *, void *);

struct door *
door_new(struct hub *h)
{
	struct door *d;

	if ((d = calloc(1, sizeof(*d))) == NULL)
		return NULL;
	d->h = h;
	d->p = &h->parts[0];
	(void)msg_key_name(d->key, sizeof(d->key), h->conf->redis_prefix,
	    MSG_INBOX);
	return d;
}

void
door_free(struct door *d)
{
	if (d == NULL)
		return;
	bus_free(d->bus);
	free(d);
}

void
door_lead(struct part *p)
{
	struct hub *h = p->h;
	struct door *d = h->door;
	char url[CONF_STR_MAX];

	if (d == NULL || p != d->p)
		return;
	if (d->bus == NULL && (hub_shard_url(h, 0, url, sizeof(url)) == -1 ||
	    (d->bus = bus_new(h->base, url, h->conf->redis_password,
	    "redis door", door_on_connect, NULL, d)) == NULL))
		return;
	d->nmoved = 0;
	door_group_create(d);
	d->replay = 1;
	door_advance(d);
}

void
door_advance(struct door *d)
{
	struct hub *h;
	int rc;

	if (d == NULL || d->bus == NULL)
		return;
	h = d->h;
	if (h->exiting || h->stopping || d->reading || d->moving ||
	    d->remote > 0 ||
	    !bus_connected(d->bus) || !lease_leading(d->p) ||
	    d->p->phase == PART_STANDBY || d->p->phase == PART_FENCE)
		return;
	/* A deposed leader's read may have been handed entries after our
	 * replay: they are pending, so the replay runs again now and then. */
	if (!d->replay && util_mono_ms() - d->replayed_ms >= DOOR_REPLAY_MS)
		d->replay = 1;
	if (d->replay)
		rc = bus_command(d->bus, door_read_cb, d, "XREADGROUP GROUP "
		    DOOR_GROUP " " DOOR_GROUP " COUNT %d STREAMS %s 0",
		    DOOR_COUNT, d->key);
	else
		rc = bus_command(d->bus, door_read_cb, d, "XREADGROUP GROUP "
		    DOOR_GROUP " " DOOR_GROUP " COUNT %d BLOCK %d STREAMS "
		    "%s >", DOOR_COUNT, DOOR_BLOCK_MS, d->key);
	if (rc == 0) {
		d->reading = 1;
		d->epoch = d->p->epoch;
	}
}

/* The connection is (back): a read lost with it may have delivered
 * entries, pending now: those go first. */
static void
door_on_connect(struct bus *bus, void *arg)
{
	struct door *d = arg;

	(void)bus;
	d->reading = 0;
	d->replay = 1;
	door_advance(d);
}

static void
door_group_create(struct door *d)
{
	(void)!bus_command(d->h->redis, NULL, NULL,
	    "XGROUP CREATE %s " DOOR_GROUP " 0 MKSTREAM", d->key);
}

static void
door_read_cb(struct bus *bus, struct bus_reply *reply, void *arg)
{
	struct door *d = arg;
	struct bus_reply *s;
	const char *err;

	(void)bus;
	d->reading = 0;
	if (d->h->exiting || reply == NULL)
		return;
	/* Not ours any more: the entries stay pending for the next
	 * leader of partition 0, which reads pending ones first. */
	if (d->epoch != d->p->epoch || !lease_leading(d->p))
		return;
	if (bus_reply_type(reply) == BUS_ERROR) {
		err = bus_reply_str(reply, NULL);
		log_warnx("XREADGROUP %s: %s", d->key, err);
		if (strncmp(err, "NOGROUP", 7) == 0)
			door_group_create(d);
		return;		/* the cron reads again */
	}
	if (bus_reply_type(reply) != BUS_ARRAY ||
	    bus_reply_elements(reply) == 0 ||
	    bus_reply_elements(bus_reply_element((s = bus_reply_element(reply,
	    0)), 1)) == 0) {
		if (d->replay)	/* nothing (more) pending */
			d->replayed_ms = util_mono_ms();
		d->replay = 0;
		door_advance(d);
		return;
	}
	if (door_move(d, bus_reply_element(s, 1)) == -1)
		d->replay = 1;	/* read them again, from the cron */
}

/* Entry ent of a read: its room's inbox and shard, or dropped (nf 0). */
static void
door_entry(struct door *d, struct bus_reply *ent, struct door_entry *e)
{
	struct hub *h = d->h;
	const char *room = NULL, *v;
	size_t len, rlen = 0;

	memset(e, 0, sizeof(*e));
	if ((e->id = bus_reply_str(bus_reply_element(ent, 0), &e->idlen)) ==
	    NULL || e->idlen >= DOOR_ID_MAX) {
		e->id = NULL;	/* not an id Redis makes: left alone */
		return;
	}
	e->f = bus_reply_element(ent, 1);
	if (bus_reply_type(e->f) == BUS_ARRAY &&
	    (e->nf = bus_reply_elements(e->f)) <= DOOR_FIELDS_MAX &&
	    e->nf % 2 == 0)
		for (size_t k = 0; k + 1 < e->nf; k += 2) {
			v = bus_reply_str(bus_reply_element(e->f, k), &len);
			if (v != NULL && len == 4 && memcmp(v, "room", 4) == 0)
				room = bus_reply_str(bus_reply_element(e->f,
				    k + 1), &rlen);
		}
	if (room != NULL && !msg_room_id_valid(room, rlen))
		room = NULL;
	if (room == NULL) {
		log_warnx("inbox entry %s: no valid room; acknowledged and "
		    "dropped", e->id);
		e->nf = 0;
	} else {
		(void)msg_key_inbox(e->key, sizeof(e->key),
		    h->conf->redis_prefix, room, h->nparts);
		e->shard = msg_partition(room, h->nparts) % h->nshards;
	}
	for (size_t i = 0; i < d->nmoved && e->shard != 0; i++)
		if (strcmp(d->moved[i], e->id) == 0)
			e->moved = 1;
	snprintf(e->count, sizeof(e->count), "%zu", e->shard == 0 ? e->nf :
	    0);
}

/* One more argument of the command being built. */
#define ARG(s, l) do { argv[argc] = (s); lens[argc++] = (l); } while (0)

/*
 * entries: [[id, [field, value, ...]], ...]. Those for other shards are
 * moved there first (door_remote()); then one script here adds the rest
 * and acknowledges them all. An entry without a valid room is only
 * acknowledged (and logged): the door must not be blocked by a typo.
 */
static int
door_move(struct door *d, struct bus_reply *entries)
{
	struct hub *h = d->h;
	size_t n = bus_reply_elements(entries), argc = 0, cap, len;
	const char **argv = NULL;
	size_t *lens = NULL;
	struct door_entry *es;
	int rc = -1, remote = 0;
	const char *v;

	if (n > DOOR_COUNT || (es = calloc(n, sizeof(*es))) == NULL)
		return -1;
	for (size_t i = 0; i < n; i++) {
		door_entry(d, bus_reply_element(entries, i), &es[i]);
		remote |= es[i].id != NULL && es[i].nf > 0 &&
		    es[i].shard != 0 && !es[i].moved;
	}
	if (remote) {
		rc = door_remote(d, es, n);
		goto done;
	}
	cap = 6 + n * (3 + DOOR_FIELDS_MAX);
	if ((argv = calloc(cap, sizeof(*argv))) == NULL ||
	    (lens = calloc(cap, sizeof(*lens))) == NULL)
		goto done;
	ARG("EVAL", 4);
	ARG(door_lua, strlen(door_lua));
	ARG("2", 1);
	ARG(d->p->lease_key, strlen(d->p->lease_key));
	ARG(d->key, strlen(d->key));
	ARG(h->lease_value, strlen(h->lease_value));
	for (size_t i = 0; i < n; i++) {
		struct door_entry *e = &es[i];

		if (e->id == NULL)
			continue;
		ARG(e->id, e->idlen);
		/* moved to its shard already: acknowledged only */
		ARG(e->shard == 0 ? e->key : "", e->shard == 0 ?
		    strlen(e->key) : 0);
		ARG(e->count, strlen(e->count));
		for (size_t k = 0; e->shard == 0 && k < e->nf; k++) {
			v = bus_reply_str(bus_reply_element(e->f, k), &len);
			ARG(v != NULL ? v : "", v != NULL ? len : 0);
		}
	}
	if (bus_commandv(h->redis, door_moved_cb, d, (int)argc, argv, lens) ==
	    0) {
		d->moving = 1;
		rc = 0;
	}
done:
	free(argv);
	free(lens);
	free(es);
	return rc;
}

/*
 * The entries of es for other shards, not moved yet: one script per
 * shard adds them there (each once, by its mark). When all have answered,
 * the door reads its pending entries again and acknowledges them.
 */
static int
door_remote(struct door *d, struct door_entry *es, size_t n)
{
	struct hub *h = d->h;
	size_t argc, cap = 4 + n * (3 + DOOR_FIELDS_MAX), len;
	const char **argv;
	size_t *lens;
	char (*marks)[MSG_KEY_MAX];
	const char *v;
	int rc = 0;

	argv = calloc(cap, sizeof(*argv));
	lens = calloc(cap, sizeof(*lens));
	marks = calloc(n, sizeof(*marks));
	d->nsent = 0;
	for (int s = 1; argv != NULL && lens != NULL && marks != NULL &&
	    s < h->nshards && rc == 0; s++) {
		argc = 0;
		ARG("EVAL", 4);
		ARG(door_remote_lua, strlen(door_remote_lua));
		ARG("0", 1);
		ARG(DOOR_MOVED_MS, strlen(DOOR_MOVED_MS));
		for (size_t i = 0; i < n; i++) {
			struct door_entry *e = &es[i];

			if (e->id == NULL || e->nf == 0 || e->shard != s ||
			    e->moved)
				continue;
			(void)msg_key_door_moved(marks[i], sizeof(marks[i]),
			    h->conf->redis_prefix, e->id);
			snprintf(e->count, sizeof(e->count), "%zu", e->nf);
			ARG(marks[i], strlen(marks[i]));
			ARG(e->key, strlen(e->key));
			ARG(e->count, strlen(e->count));
			for (size_t k = 0; k < e->nf; k++) {
				v = bus_reply_str(bus_reply_element(e->f, k),
				    &len);
				ARG(v != NULL ? v : "", v != NULL ? len : 0);
			}
			memcpy(d->sent[d->nsent], e->id, e->idlen + 1);
			d->sent_shard[d->nsent++] = s;
		}
		if (argc == 4)
			continue;
		if (bus_commandv(bus_shards_at(h->shards, s), door_remote_cb,
		    d, (int)argc, argv, lens) == 0)
			d->remote++;
		else
			rc = -1;
	}
#undef ARG
	if (argv == NULL || lens == NULL || marks == NULL)
		rc = -1;
	free(argv);
	free(lens);
	free(marks);
	return d->remote > 0 ? 0 : rc;
}

static void
door_remote_cb(struct bus *bus, struct bus_reply *reply, void *arg)
{
	struct door *d = arg;
	int s = bus_shard(bus);

	d->remote--;
	if (d->h->exiting)
		return;
	if (reply == NULL || bus_reply_type(reply) == BUS_ERROR)
		log_warnx("%s: entries not moved to shard %d: %s", d->key, s,
		    reply != NULL ? bus_reply_str(reply, NULL) :
		    "connection lost");
	else
		for (size_t i = 0; i < d->nsent; i++)
			if (d->sent_shard[i] == s && d->nmoved < DOOR_COUNT)
				memcpy(d->moved[d->nmoved++], d->sent[i],
				    DOOR_ID_MAX);
	/* read them again: acknowledged if all are moved, else moved */
	d->replay = 1;
	if (d->remote == 0 && reply != NULL &&
	    bus_reply_type(reply) != BUS_ERROR)
		door_advance(d);
}

static void
door_moved_cb(struct bus *bus, struct bus_reply *reply, void *arg)
{
	struct door *d = arg;

	(void)bus;
	d->moving = 0;
	if (d->h->exiting || reply == NULL)
		return;
	if (bus_reply_type(reply) == BUS_ERROR) {
		log_warnx("%s: entries not moved: %s", d->key,
		    bus_reply_str(reply, NULL));
		d->replay = 1;
		return;
	}
	d->nmoved = 0;
	door_advance(d);
}
