/*
 * rooms: the hub's rooms and presence in memory, and the Redis writes that
 * go with each change. Owns every room (with its history ring), every
 * user-in-room count, connection and worker record, in string-keyed maps
 * (common/map.h), so that an event costs the same with ten connections or a
 * hundred thousand.
 */
#include "config.h"

#include <sys/queue.h>

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "common/conf.h"
#include "common/log.h"
#include "common/map.h"
#include "common/msg.h"
#include "common/utf8.h"
#include "common/util.h"
#include "hub/ring.h"
#include "hub/rooms.h"
#include "hub/tx.h"

/* A user in a room: a field of <p>room:<id>:clients while nconns > 0. */
struct room_user {
	size_t		 nconns;
};

struct pworker;

/* One registered connection: a field of <p>hub:presence. */
struct pconn {
	TAILQ_ENTRY(pconn) entry;	/* in worker->conns */
	char		*key;		/* "<room> <wid> <conn>" */
	struct room	*room;
	struct pworker	*worker;
	uint64_t	 conn;
	int64_t		 uid;
	char		*username;
};
TAILQ_HEAD(pconn_list, pconn);

/* A worker with connections; forgotten with its last one. */
struct pworker {
	char		*wid;
	char		*channel;	/* <p>worker:<wid> */
	struct pconn_list conns;
	size_t		 nconns;
	int64_t		 added_ms;	/* monotonic */
	int		 alive;		/* its heartbeat was seen */
};

struct rooms {
	struct tx	*tx;
	const char	*presence_key;	/* <p>hub:presence[:<n>] */
	const struct conf *conf;
	int		 partition;	/* the one these rooms are in */
	struct map	 rooms;		/* id -> struct room */
	struct map	 users;		/* "<room> <uid>" -> room_user */
	struct map	 conns;		/* "<room> <wid> <conn>" */
	struct map	 workers;	/* wid -> struct pworker */
	size_t		 active;	/* rooms with nconns > 0 */
};

static char	*rooms_fmt(const char *, ...) GC_PRINTF(1, 2);
static void	room_free(struct room *);
static struct pworker *worker_get(struct rooms *, const char *);
static void	worker_free(struct pworker *);
static void	pconn_free(struct pconn *);
static struct pconn *conn_add(struct rooms *, struct room *, const char *,
		    uint64_t, int64_t, const char *, int *);
static void	conn_remove(struct rooms *, struct pconn *, int64_t);
static void	rooms_hset(struct rooms *, const char *, const char *,
		    const char *);
static void	rooms_hdel(struct rooms *, const char *, const char *);

/* ---- helpers ------------------------------------------------------------- */

/* A string of the caller's (free()), or NULL if out of memory. */
static char *
rooms_fmt(const char *fmt, ...)
{
	va_list ap;
	char *s;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n < 0 || (s = malloc((size_t)n + 1)) == NULL)
		return NULL;
	va_start(ap, fmt);
	(void)vsnprintf(s, (size_t)n + 1, fmt, ap);
	va_end(ap);
	return s;
}

static void
rooms_hset(struct rooms *rs, const char *key, const char *field,
    const char *value)
{
	const char *argv[4] = { "HSET", key, field, value };

	tx_command(rs->tx, 4, argv, NULL);
}

static void
rooms_hdel(struct rooms *rs, const char *key, const char *field)
{
	const char *argv[3] = { "HDEL", key, field };

	tx_command(rs->tx, 3, argv, NULL);
}

/* ---- rooms --------------------------------------------------------------- */

struct rooms *
rooms_new(const struct conf *conf, struct tx *tx, const char *presence_key,
    int partition)
{
	struct rooms *rs;

	if ((rs = calloc(1, sizeof(*rs))) == NULL)
		return NULL;
	rs->tx = tx;
	rs->presence_key = presence_key;
	rs->conf = conf;
	rs->partition = partition;
	return rs;
}

void
rooms_free(struct rooms *rs)
{
	if (rs == NULL)
		return;
	rooms_reset(rs);
	free(rs);
}

void
rooms_reset(struct rooms *rs)
{
	struct map_iter it;
	struct pconn *pc;
	struct pworker *w;
	struct room *r;
	void *u;

	map_iter_init(&it, &rs->conns);
	while ((pc = map_iter_next(&it)) != NULL)
		pconn_free(pc);
	map_iter_init(&it, &rs->workers);
	while ((w = map_iter_next(&it)) != NULL)
		worker_free(w);
	map_iter_init(&it, &rs->users);
	while ((u = map_iter_next(&it)) != NULL)
		free(u);
	map_iter_init(&it, &rs->rooms);
	while ((r = map_iter_next(&it)) != NULL)
		room_free(r);
	map_clear(&rs->conns);
	map_clear(&rs->workers);
	map_clear(&rs->users);
	map_clear(&rs->rooms);
	rs->active = 0;
}

static void
room_free(struct room *r)
{
	if (r == NULL)
		return;
	ring_free(r->ring);
	free(r->id);
	free(r->channel);
	free(r->clients_key);
	free(r);
}

struct room *
rooms_get(struct rooms *rs, const char *id, int create)
{
	const char *p = rs->conf->redis_prefix;
	char k[MSG_KEY_MAX];
	struct room *r;

	if ((r = map_get(&rs->rooms, id)) != NULL || !create)
		return r;
	if ((r = calloc(1, sizeof(*r))) == NULL)
		return NULL;
	r->id = strdup(id);
	(void)msg_key_room(k, sizeof(k), p, id);
	r->channel = strdup(k);
	(void)msg_key_room_clients(k, sizeof(k), p, id);
	r->clients_key = strdup(k);
	r->used_ms = util_mono_ms();
	r->keep = rs->conf->history_on_join;
	if (r->id == NULL || r->channel == NULL || r->clients_key == NULL ||
	    map_put(&rs->rooms, id, r) == -1) {
		room_free(r);
		return NULL;
	}
	return r;
}

void
rooms_loaded(struct rooms *rs, struct room *r, int64_t last_id)
{
	(void)rs;
	if (r->ring != NULL && ring_cap(r->ring) == r->keep)
		ring_clear(r->ring);
	else {
		ring_free(r->ring);
		r->ring = ring_new(r->keep);
	}
	r->state = ROOM_LOADED;
	r->last_id = last_id;
	r->used_ms = util_mono_ms();
}

void
rooms_history_add(struct rooms *rs, struct room *r, int64_t id, int64_t user,
    const char *username, const char *content, size_t content_len,
    int64_t ts_ms, int64_t edited_ms)
{
	(void)rs;
	ring_add(r->ring, r->id, id, user, username, content, content_len,
	    ts_ms, edited_ms);
}

void
rooms_unload(struct rooms *rs, struct room *r)
{
	(void)rs;
	ring_free(r->ring);
	r->ring = NULL;
	r->state = ROOM_UNKNOWN;
	r->last_id = 0;
}

void
rooms_gc(struct rooms *rs, int64_t now_ms, int64_t idle_ms)
{
	struct map_iter it;
	struct room *r;

	map_iter_init(&it, &rs->rooms);
	while ((r = map_iter_next(&it)) != NULL) {
		if (r->nconns > 0 || (r->state == ROOM_LOADED &&
		    now_ms - r->used_ms < idle_ms))
			continue;
		map_del(&rs->rooms, r->id);
		room_free(r);
	}
}

size_t
rooms_active(const struct rooms *rs)
{
	return rs->active;
}

size_t
rooms_connections(const struct rooms *rs)
{
	return map_count(&rs->conns);
}

size_t
rooms_count(const struct rooms *rs)
{
	return map_count(&rs->rooms);
}

/* ---- events -------------------------------------------------------------- */

void
rooms_message(struct rooms *rs, struct room *r, int64_t id, int64_t user,
    const char *username, const char *content, size_t content_len,
    int64_t ts_ms)
{
	struct evbuffer *b;
	char ts[32];

	if ((b = evbuffer_new()) == NULL) {
		tx_fail(rs->tx);
		return;
	}
	util_rfc3339(ts_ms, ts, sizeof(ts));
	msg_write_message(b, id, r->id, user, username, content, content_len,
	    ts, 0);
	tx_publish(rs->tx, r->channel, b);
	if (id > r->last_id) {
		r->last_id = id;
		ring_push(r->ring, id, b, user, username, ts_ms);
	}
	r->used_ms = util_mono_ms();
	evbuffer_free(b);
}

void
rooms_change(struct rooms *rs, struct room *r, int64_t id, int64_t target,
    const char *content, size_t content_len, int64_t ts_ms)
{
	struct evbuffer *b;
	char ts[32];

	if ((b = evbuffer_new()) == NULL) {
		tx_fail(rs->tx);
		return;
	}
	util_rfc3339(ts_ms, ts, sizeof(ts));
	msg_write_change(b, id, r->id, target, content, content_len, ts, 0);
	tx_publish(rs->tx, r->channel, b);
	/* A replay of a change published before is in the ring already. */
	if (id > r->last_id) {
		r->last_id = id;
		ring_change(r->ring, r->id, target, content, content_len,
		    ts_ms);
	}
	r->used_ms = util_mono_ms();
	evbuffer_free(b);
}

void
rooms_ack(struct rooms *rs, struct room *r, const char *wid, uint64_t conn,
    const char *cid, int64_t id, int64_t ts_ms)
{
	char channel[MSG_KEY_MAX], ts[32];
	struct evbuffer *b;

	if ((b = evbuffer_new()) == NULL) {
		tx_fail(rs->tx);
		return;
	}
	(void)msg_key_worker(channel, sizeof(channel), rs->conf->redis_prefix,
	    wid);
	util_rfc3339(ts_ms, ts, sizeof(ts));
	msg_write_ack(b, conn, r->id, cid, id, ts);
	tx_publish(rs->tx, channel, b);
	evbuffer_free(b);
}

int
rooms_register(struct rooms *rs, struct room *r, const char *wid,
    uint64_t conn, int64_t user, const char *username, int64_t ts_ms,
    int64_t below, int history, int rejoin)
{
	char ts[32], uid[24], *key, *value;
	int64_t upto = r->last_id < below ? r->last_id : below - 1;
	struct evbuffer *b;
	struct pconn *pc;
	int new_user;

	if ((key = rooms_fmt("%s %s %llu", r->id, wid,
	    (unsigned long long)conn)) == NULL)
		return -1;
	pc = map_get(&rs->conns, key);
	free(key);
	if (pc != NULL)
		return 1;
	if ((b = evbuffer_new()) == NULL)
		return -1;
	if ((pc = conn_add(rs, r, wid, conn, user, username, &new_user)) ==
	    NULL) {
		evbuffer_free(b);
		return -1;
	}
	r->used_ms = util_mono_ms();

	/* The history first: the worker holds the joiner's live events
	 * until it has come. A rejoin is a member joined long since: no
	 * history; its join is announced again only if the room heard its
	 * user leave (no other connection of the user kept it listed), so
	 * the room's join and leave events stay paired. */
	if (!rejoin) {
		msg_write_history_head(b, conn, r->id, upto);
		ring_history(r->ring, b, upto, history);
		(void)evbuffer_add(b, "]}", 2);
		tx_publish(rs->tx, pc->worker->channel, b);
		(void)evbuffer_drain(b, evbuffer_get_length(b));
	}
	if (!rejoin || new_user) {
		util_rfc3339(ts_ms, ts, sizeof(ts));
		msg_write_presence(b, "join", r->id, user, pc->username, ts);
		tx_publish(rs->tx, r->channel, b);
	}
	evbuffer_free(b);

	snprintf(uid, sizeof(uid), "%lld", (long long)user);
	if (new_user)
		rooms_hset(rs, r->clients_key, uid, pc->username);
	if ((value = rooms_fmt("%s %s", uid, pc->username)) == NULL) {
		tx_fail(rs->tx);
		return 0;
	}
	rooms_hset(rs, rs->presence_key, pc->key, value);
	free(value);
	return 0;
}

int
rooms_unregister(struct rooms *rs, const char *room, const char *wid,
    uint64_t conn, int64_t ts_ms)
{
	struct pconn *pc;
	char *key;

	if ((key = rooms_fmt("%s %s %llu", room, wid,
	    (unsigned long long)conn)) == NULL) {
		tx_fail(rs->tx);
		return 0;
	}
	pc = map_get(&rs->conns, key);
	free(key);
	if (pc == NULL)
		return 1;
	conn_remove(rs, pc, ts_ms);
	return 0;
}

size_t
rooms_worker_gone(struct rooms *rs, const char *wid, int64_t ts_ms)
{
	struct pworker *w;
	struct evbuffer *b;
	size_t n;

	if ((w = map_get(&rs->workers, wid)) == NULL || w->nconns == 0)
		return 0;
	/*
	 * Tell the worker, in case it lives after all (stopped, or starved
	 * of CPU): it closes the connections whose presence goes here, so
	 * none stays open unlisted. After the leaves, in the same
	 * transaction; before the last removal frees w.
	 */
	if ((b = evbuffer_new()) == NULL) {
		tx_fail(rs->tx);
		return 0;
	}
	msg_write_dropped(b, rs->partition);
	n = w->nconns;
	for (size_t i = 0; i < n - 1; i++)
		conn_remove(rs, TAILQ_FIRST(&w->conns), ts_ms);
	tx_publish(rs->tx, w->channel, b);
	conn_remove(rs, TAILQ_FIRST(&w->conns), ts_ms);
	evbuffer_free(b);
	return n;
}

/* ---- presence ------------------------------------------------------------ */

static struct pworker *
worker_get(struct rooms *rs, const char *wid)
{
	struct pworker *w;
	char k[MSG_KEY_MAX];

	if ((w = map_get(&rs->workers, wid)) != NULL)
		return w;
	if ((w = calloc(1, sizeof(*w))) == NULL)
		return NULL;
	TAILQ_INIT(&w->conns);
	w->added_ms = util_mono_ms();
	w->wid = strdup(wid);
	(void)msg_key_worker(k, sizeof(k), rs->conf->redis_prefix, wid);
	w->channel = strdup(k);
	if (w->wid == NULL || w->channel == NULL ||
	    map_put(&rs->workers, wid, w) == -1) {
		worker_free(w);
		return NULL;
	}
	return w;
}

static void
worker_free(struct pworker *w)
{
	if (w == NULL)
		return;
	free(w->wid);
	free(w->channel);
	free(w);
}

static void
pconn_free(struct pconn *pc)
{
	if (pc == NULL)
		return;
	free(pc->key);
	free(pc->username);
	free(pc);
}

/*
 * Record a connection (not registered yet) in memory only; *new_user says
 * whether it is its user's first in the room. NULL if out of memory, with
 * nothing changed.
 */
static struct pconn *
conn_add(struct rooms *rs, struct room *r, const char *wid, uint64_t conn,
    int64_t uid, const char *username, int *new_user)
{
	struct room_user *u = NULL;
	struct pworker *w;
	struct pconn *pc;
	char *ukey;
	int made_user = 0;

	if ((ukey = rooms_fmt("%s %lld", r->id, (long long)uid)) == NULL)
		return NULL;
	if ((w = worker_get(rs, wid)) == NULL)
		goto fail;
	if ((u = map_get(&rs->users, ukey)) == NULL) {
		if ((u = calloc(1, sizeof(*u))) == NULL ||
		    map_put(&rs->users, ukey, u) == -1) {
			free(u);
			u = NULL;
			goto fail;
		}
		made_user = 1;
	}
	if ((pc = calloc(1, sizeof(*pc))) == NULL)
		goto fail;
	pc->key = rooms_fmt("%s %s %llu", r->id, wid,
	    (unsigned long long)conn);
	pc->username = strdup(username);
	if (pc->key == NULL || pc->username == NULL ||
	    map_put(&rs->conns, pc->key, pc) == -1) {
		pconn_free(pc);
		goto fail;
	}
	pc->room = r;
	pc->worker = w;
	pc->conn = conn;
	pc->uid = uid;
	TAILQ_INSERT_TAIL(&w->conns, pc, entry);
	w->nconns++;
	if (r->nconns++ == 0)
		rs->active++;
	*new_user = u->nconns++ == 0;
	free(ukey);
	return pc;
fail:
	if (made_user)
		free(map_del(&rs->users, ukey));
	if (w != NULL && w->nconns == 0) {
		map_del(&rs->workers, w->wid);
		worker_free(w);
	}
	free(ukey);
	return NULL;
}

/* The connection leaves: its leave event, then presence in Redis. */
static void
conn_remove(struct rooms *rs, struct pconn *pc, int64_t ts_ms)
{
	struct room *r = pc->room;
	struct pworker *w = pc->worker;
	struct room_user *u;
	struct evbuffer *b;
	char ts[32], uid[24], *ukey;

	if ((b = evbuffer_new()) != NULL) {
		util_rfc3339(ts_ms, ts, sizeof(ts));
		msg_write_presence(b, "leave", r->id, pc->uid, pc->username,
		    ts);
		tx_publish(rs->tx, r->channel, b);
		evbuffer_free(b);
	} else
		tx_fail(rs->tx);

	snprintf(uid, sizeof(uid), "%lld", (long long)pc->uid);
	if ((ukey = rooms_fmt("%s %s", r->id, uid)) == NULL)
		tx_fail(rs->tx);
	else if ((u = map_get(&rs->users, ukey)) != NULL &&
	    --u->nconns == 0) {
		rooms_hdel(rs, r->clients_key, uid);
		free(map_del(&rs->users, ukey));
	}
	free(ukey);
	rooms_hdel(rs, rs->presence_key, pc->key);

	map_del(&rs->conns, pc->key);
	TAILQ_REMOVE(&w->conns, pc, entry);
	pconn_free(pc);
	if (--r->nconns == 0)
		rs->active--;
	r->used_ms = util_mono_ms();
	if (--w->nconns == 0) {
		map_del(&rs->workers, w->wid);
		worker_free(w);
	}
}

/*
 * field "<room> <wid> <conn>", value "<user id> <username>", as
 * rooms_register() wrote them. The worker id is what lies between the
 * first and the last space.
 */
int
rooms_restore(struct rooms *rs, const char *field, const char *value)
{
	const char *sp1, *sp2, *vsp;
	char room[MSG_ROOM_ID_MAX + 1], wid[256], num[24];
	long long conn, uid;
	struct room *r;
	int new_user;

	if ((sp1 = strchr(field, ' ')) == NULL ||
	    (sp2 = strrchr(field, ' ')) == sp1 || sp2 == sp1 + 1 ||
	    !msg_room_id_valid(field, (size_t)(sp1 - field)) ||
	    (size_t)(sp2 - sp1 - 1) >= sizeof(wid) ||
	    util_parse_int(sp2 + 1, 0, INT64_MAX, &conn) == -1)
		return -1;
	if ((vsp = strchr(value, ' ')) == NULL ||
	    (size_t)(vsp - value) >= sizeof(num) || vsp[1] == '\0' ||
	    strlen(vsp + 1) > MSG_USERNAME_MAX ||
	    !utf8_valid(vsp + 1, strlen(vsp + 1)))
		return -1;
	memcpy(num, value, (size_t)(vsp - value));
	num[vsp - value] = '\0';
	if (util_parse_int(num, 0, INT64_MAX, &uid) == -1)
		return -1;
	memcpy(room, field, (size_t)(sp1 - field));
	room[sp1 - field] = '\0';
	memcpy(wid, sp1 + 1, (size_t)(sp2 - sp1 - 1));
	wid[sp2 - sp1 - 1] = '\0';

	if (map_get(&rs->conns, field) != NULL)
		return 0;	/* HSCAN may return a field twice */
	if ((r = rooms_get(rs, room, 1)) == NULL ||
	    conn_add(rs, r, wid, (uint64_t)conn, uid, vsp + 1, &new_user) ==
	    NULL)
		return -1;
	return 0;
}

void
rooms_workers(struct rooms *rs, rooms_worker_fn *fn, void *arg)
{
	struct map_iter it;
	struct pworker *w;

	map_iter_init(&it, &rs->workers);
	while ((w = map_iter_next(&it)) != NULL)
		fn(w->wid, w->added_ms, w->alive, arg);
}

void
rooms_worker_alive(struct rooms *rs, const char *wid)
{
	struct pworker *w;

	if ((w = map_get(&rs->workers, wid)) != NULL)
		w->alive = 1;
}
