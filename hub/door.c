/*
 * door: with partitions > 1, workers add entries to their room's
 * partition inbox, and <p>hub:inbox stays the operators' door (SPEC
 * section 11): the leader of partition 0 reads it with the consumer group
 * and moves each entry to its room's partition inbox, adding it there and
 * acknowledging it here in one script fenced by partition 0's lease, so
 * an entry is moved exactly once, in order, whoever leads.
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

static void	door_on_connect(struct bus *, void *);
static void	door_group_create(struct door *);
static void	door_read_cb(struct bus *, struct bus_reply *, void *);
static int	door_move(struct door *, struct bus_reply *);
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

	if (d == NULL || p != d->p)
		return;
	if (d->bus == NULL && (d->bus = bus_new(h->base, h->redis_url,
	    h->conf->redis_password, "redis door", door_on_connect, NULL,
	    d)) == NULL)
		return;
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

/*
 * entries: [[id, [field, value, ...]], ...]. One script moves them all.
 * An entry without a valid room is only acknowledged (and logged): the
 * door must not be blocked by a typo.
 */
static int
door_move(struct door *d, struct bus_reply *entries)
{
	struct hub *h = d->h;
	size_t n = bus_reply_elements(entries), argc = 0, cap;
	const char **argv = NULL;
	size_t *lens = NULL;
	char (*keys)[MSG_KEY_MAX] = NULL, (*counts)[16] = NULL;
	int rc = -1;

	cap = 6 + n * (3 + DOOR_FIELDS_MAX);
	if ((argv = calloc(cap, sizeof(*argv))) == NULL ||
	    (lens = calloc(cap, sizeof(*lens))) == NULL ||
	    (keys = calloc(n, sizeof(*keys))) == NULL ||
	    (counts = calloc(n, sizeof(*counts))) == NULL)
		goto done;
#define ARG(s, l) do { argv[argc] = (s); lens[argc++] = (l); } while (0)
	ARG("EVAL", 4);
	ARG(door_lua, strlen(door_lua));
	ARG("2", 1);
	ARG(d->p->lease_key, strlen(d->p->lease_key));
	ARG(d->key, strlen(d->key));
	ARG(h->lease_value, strlen(h->lease_value));
	for (size_t i = 0; i < n; i++) {
		struct bus_reply *ent = bus_reply_element(entries, i), *f;
		const char *id, *room = NULL, *v;
		size_t idlen, nf = 0, len, rlen = 0;

		if ((id = bus_reply_str(bus_reply_element(ent, 0), &idlen)) ==
		    NULL)
			continue;
		f = bus_reply_element(ent, 1);
		if (bus_reply_type(f) == BUS_ARRAY &&
		    (nf = bus_reply_elements(f)) <= DOOR_FIELDS_MAX &&
		    nf % 2 == 0)
			for (size_t k = 0; k + 1 < nf; k += 2) {
				v = bus_reply_str(bus_reply_element(f, k),
				    &len);
				if (v != NULL && len == 4 &&
				    memcmp(v, "room", 4) == 0)
					room = bus_reply_str(
					    bus_reply_element(f, k + 1), &rlen);
			}
		if (room != NULL && !msg_room_id_valid(room, rlen))
			room = NULL;
		if (room == NULL) {
			log_warnx("inbox entry %s: no valid room; acknowledged "
			    "and dropped", id);
			nf = 0;
		} else
			(void)msg_key_inbox(keys[i], sizeof(keys[i]),
			    h->conf->redis_prefix, room, h->nparts);
		snprintf(counts[i], sizeof(counts[i]), "%zu", nf);
		ARG(id, idlen);
		ARG(keys[i], strlen(keys[i]));
		ARG(counts[i], strlen(counts[i]));
		for (size_t k = 0; k < nf; k++) {
			v = bus_reply_str(bus_reply_element(f, k), &len);
			ARG(v != NULL ? v : "", v != NULL ? len : 0);
		}
	}
#undef ARG
	if (bus_commandv(h->redis, door_moved_cb, d, (int)argc, argv, lens) ==
	    0) {
		d->moving = 1;
		rc = 0;
	}
done:
	free(argv);
	free(lens);
	free(keys);
	free(counts);
	return rc;
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
	door_advance(d);
}
