/*
 * chat: the worker's WebSocket members and their rooms. Owns the Redis
 * subscription connection (one for all rooms), the per-room member lists
 * and delivery state, and the worker's heartbeat key. The hub alone orders
 * a room; this file delivers what the hub publishes, once per event:
 *	room event -> parse type and id once -> drop if not newer than what
 *	this worker delivered -> frame once -> reference the frame from every
 *	joined member's output buffer.
 */
#include "config.h"

#include <sys/queue.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "common/bus.h"
#include "common/conf.h"
#include "common/db.h"
#include "common/hash.h"
#include "common/json.h"
#include "common/log.h"
#include "common/map.h"
#include "common/metrics.h"
#include "common/msg.h"
#include "common/util.h"
#include "workers/api.h"
#include "workers/auth.h"
#include "workers/chat.h"
#include "workers/chat_v2.h"
#include "workers/conn.h"
#include "workers/http.h"
#include "workers/limit.h"
#include "workers/worker.h"
#include "workers/ws.h"

#define CHAT_REVOKED	256	/* room events kept for chat_room_revoked() */
#define CHAT_MEMBER_BUCKETS	16384	/* members by conn id: ids are
					 * sequential, so chains stay even */
#define CHAT_ALIVE_TTL_S	3	/* heartbeat key lifetime */
#define CHAT_CLOSE_GRACE_MS	2000	/* then a closing socket is cut */
#define CHAT_HOLD_MAX		(64 * 1024)	/* input held for a member
					 * not yet registered */

enum member_state {
	MEMBER_SUBSCRIBING,	/* waiting for the room's SUBSCRIBE; its
				 * input is not read until it registers, so
				 * its messages reach the hub after its
				 * register (and come back to it live) */
	MEMBER_REGISTERING,	/* registered, waiting for its history */
	MEMBER_RESUMING,	/* ?since=: its history (upto) came, the
				 * events in (since, upto] are read from
				 * PostgreSQL; live events are held */
	MEMBER_JOINED,		/* receives the room's events */
	MEMBER_CLOSING		/* close started; unregistered */
};

struct chat_room;

struct chat_member {
	TAILQ_ENTRY(chat_member) entry;		/* in room->members */
	TAILQ_ENTRY(chat_member) all;		/* in chat->members */
	struct chat_member *hnext;	/* in chat->by_conn, while in a room */
	struct conn	*conn;
	struct chat_room *room;
	struct ws	*ws;
	enum member_state state;
	int		 registered;	/* the hub was told of it */
	int64_t		 uid;
	char		 username[MSG_USERNAME_MAX + 1];
	char		 session[AUTH_KEY_MAX];
	int64_t		 last_seen_ms;	/* monotonic: last frame from it */
	int		 ping_sent;
	struct limit_bucket bucket;	/* ws_msg_rate, ws_msg_burst */
	int		 v2;		/* speaks gochat.v2 (SPEC section 9) */
	int64_t		 since;		/* resume after this id, or -1 */
	int64_t		 upto;		/* resuming: the history's upto */
	int64_t		 typing_ms;	/* monotonic: its last typing sent */
	struct ws_frame	**held;		/* resuming: live events, in order */
	size_t		 nheld, held_cap, held_bytes;
};

/* Fields of an inbox entry beyond the common ones (common/msg.h). */
struct chat_extra {
	const char	*cid;		/* broadcast: client id, or NULL */
	int64_t		 target;	/* edit, delete: > 0 */
	int		 history;	/* register: messages wanted, -1 for
					 * history_on_join */
};

/*
 * A gochat.v2 command waiting for Redis or PostgreSQL; holds its conn
 * (conn_hold) until answered. The strings are copies.
 */
struct chat_pending {
	struct conn	*conn;
	enum chat_v2_op	 op;
	int64_t		 id;		/* edit, delete: the target */
	char		 cid[MSG_CID_MAX + 1];
	int		 has_cid;
	size_t		 content_len;
	char		 content[];	/* edit: the new content */
};

TAILQ_HEAD(member_list, chat_member);

/*
 * An unregister Redis did not take (it was away, or stalled past
 * backend_timeout, so the XADD may or may not have gone in): kept and sent
 * again from the cron until Redis answers it, so that the hub does not
 * list a user whose socket is gone (an unregister of a connection the hub
 * no longer holds is a no-op there).
 */
struct chat_leave {
	TAILQ_ENTRY(chat_leave) entry;	/* in chat->leaves until answered */
	struct chat	*chat;		/* NULL once chat is freed */
	int		 sent;		/* its XADD awaits an answer */
	uint64_t	 conn;
	int64_t		 uid;
	char		 room[MSG_ROOM_ID_MAX + 1];
	char		 username[MSG_USERNAME_MAX + 1];
};

TAILQ_HEAD(leave_list, chat_leave);

enum room_sub {
	ROOM_UNSUBSCRIBED,
	ROOM_SUBSCRIBING,
	ROOM_SUBSCRIBED
};

struct chat_room {
	char		 id[MSG_ROOM_ID_MAX + 1];
	char		 channel[MSG_ROOM_ID_MAX + 80];
	struct member_list members;
	size_t		 nmembers;
	enum room_sub	 sub;
	int64_t		 last_id;	/* newest message delivered here */
	int		 partition;	/* SPEC section 11: its shard's */
};

struct chat {
	struct worker	*w;
	struct bus_shards *subs;	/* SUBSCRIBE only, a bus per Redis
					 * shard: a room's channel on its
					 * partition's, the control channel
					 * on shard 0's, this worker's on
					 * every one */
	struct bus	*beat;		/* the heartbeat only: it never
					 * queues behind chat traffic */
	int		 beating;	/* a heartbeat was acknowledged */
	char		 wid[96];	/* <instance>:<pid> */
	char		 worker_channel[192];
	char		 control_channel[128];
	char		 alive_key[192];
	struct map	 rooms;		/* id -> struct chat_room */
	struct chat_member *by_conn[CHAT_MEMBER_BUCKETS]; /* members in a
					 * room, by conn id: a history finds
					 * its joiner in O(1), even in a
					 * join storm */
	struct member_list members;	/* every member in a room, walked
					 * by chat_each() alone */
	uint64_t	 nmembers;
	struct leave_list leaves;	/* unregisters not yet answered */
	struct chat_room_event {	/* the last room events heard, for
					 * chat_room_revoked() */
		char	 room[MSG_ROOM_ID_MAX + 1];
		int64_t	 uid;		/* 0: the room was deleted */
		int64_t	 at_ms;		/* monotonic, when heard */
	}		 revoked[CHAT_REVOKED];
	unsigned	 nrevoked;	/* events heard, ever */
	int		 stopping;
};

static struct chat_room *chat_room_get(struct chat *, const char *, int);
static struct bus *chat_room_bus(const struct chat *, const char *);
static struct bus *chat_room_sub(const struct chat *,
		    const struct chat_room *);
static int	chat_room_connected(const struct chat *, const char *);
static void	chat_rooms_collect(struct chat *);
static void	chat_subscribe(struct chat *, struct chat_room *);
static void	chat_register(struct chat *, struct chat_member *);
static void	chat_recheck_cb(struct bus *, struct bus_reply *, void *);
static int	chat_inbox_op(struct chat *, struct chat_member *,
		    const char *, const char *, size_t,
		    const struct chat_extra *, bus_cb *, void *);
static int	chat_inbox_xadd(struct chat *, const char *, const char *,
		    uint64_t, int64_t, const char *, const char *, size_t,
		    const struct chat_extra *, bus_cb *, void *);
static void	chat_deliver(struct chat_member *, struct ws_frame *);
static void	chat_send_json(struct chat_member *, struct evbuffer *, int);
static void	chat_held_free(struct chat_member *);
static void	chat_resume(struct chat *, struct chat_member *);
static void	chat_resumed_cb(struct db_result *, void *);
static void	chat_on_ack(struct chat *, struct json_doc *);
static void	chat_on_read(struct chat *, struct json_doc *, int64_t);
static void	chat_v2_on_text(struct chat *, struct chat_member *,
		    const char *, size_t);
static void	chat_v2_error(struct chat_member *, const struct chat_v2_cmd *,
		    enum chat_v2_code, const char *, int64_t);
static void	chat_v2_pending_error(struct chat_pending *,
		    enum chat_v2_code, const char *);
static struct chat_pending *chat_pending_new(struct chat_member *,
		    const struct chat_v2_cmd *);
static void	chat_pending_done(struct chat_pending *);
static void	chat_v2_sent_cb(struct bus *, struct bus_reply *, void *);
static void	chat_v2_checked_cb(struct db_result *, void *);
static void	chat_v2_typing_cb(struct bus *, struct bus_reply *, void *);
static void	chat_v2_read_cb(struct db_result *, void *);
static void	chat_leave(struct chat *, struct chat_member *);
static void	chat_leave_send(struct chat_leave *);
static void	chat_leave_cb(struct bus *, struct bus_reply *, void *);
static void	chat_sub_connected(struct bus *, void *);
static void	chat_sub_lost(struct bus *, void *);
static void	chat_sub_cb(struct bus *, struct bus_reply *, void *);
static void	chat_on_room_event(struct chat *, struct chat_room *,
		    const char *, size_t);
static void	chat_on_worker_msg(struct chat *, const char *, size_t);
static void	chat_on_history(struct chat *, struct json_doc *,
		    const char *, size_t);
static void	chat_on_dropped(struct chat *, struct json_doc *);
static void	chat_beat_connected(struct bus *, void *);
static void	chat_beat_cb(struct bus *, struct bus_reply *, void *);
static void	chat_on_control(struct chat *, const char *, size_t);
static void	chat_on_room_control(struct chat *, struct json_doc *, int,
		    int64_t);
static void	chat_each(struct chat *, void (*)(struct chat *,
		    struct chat_member *, void *), void *);
static void	chat_broadcast_cb(struct bus *, struct bus_reply *, void *);
static void	chat_close_member(struct chat_member *, int, const char *);
static void	member_on_text(void *, const char *, size_t);
static void	member_on_activity(void *);
static void	member_on_closed(void *, int);
static void	chat_conn_read(struct conn *);
static void	chat_conn_close(struct conn *);
static void	chat_member_free(void *);

static const struct ws_handlers chat_ws_handlers = {
	member_on_text,
	member_on_activity,
	member_on_closed
};

/* What conn.c calls for a member's connection (conn_attach). */
static const struct conn_handlers chat_conn_handlers = {
	chat_conn_read,
	chat_conn_close,
	chat_member_free
};

/* The member a connection was attached to, or NULL. */
static struct chat_member *
chat_member_of(const struct conn *c)
{
	return c->handlers == &chat_conn_handlers ? c->owner : NULL;
}

/* --- the worker's chat state -------------------------------------------- */

struct chat *
chat_new(struct worker *w)
{
	const char *p = w->conf->redis_prefix;
	char shard0[sizeof(w->conf->redis_url)];
	struct chat *chat;

	if (hash_init() == -1 || (chat = calloc(1, sizeof(*chat))) == NULL)
		return NULL;
	chat->w = w;
	TAILQ_INIT(&chat->leaves);
	TAILQ_INIT(&chat->members);
	snprintf(chat->wid, sizeof(chat->wid), "%s:%ld", w->conf->instance,
	    (long)getpid());
	(void)msg_key_worker(chat->worker_channel,
	    sizeof(chat->worker_channel), p, chat->wid);
	(void)msg_key_name(chat->control_channel,
	    sizeof(chat->control_channel), p, MSG_CONTROL);
	(void)msg_key_worker_alive(chat->alive_key, sizeof(chat->alive_key),
	    p, chat->wid);
	chat->subs = bus_shards_new(w->base, w->conf->redis_url,
	    w->conf->redis_password, "subscriptions",
	    chat_sub_connected, chat_sub_lost, chat, 0);
	/* The heartbeat is on shard 0, where the hub looks for it. */
	if (bus_urls_entry(w->conf->redis_url, 0, shard0, sizeof(shard0)) ==
	    0)
		chat->beat = bus_new(w->base, shard0, w->conf->redis_password,
		    "heartbeat", chat_beat_connected, NULL, chat);
	if (chat->subs == NULL || chat->beat == NULL) {
		chat_free(chat);
		return NULL;
	}
	bus_shards_set_timeout(chat->subs, w->conf->backend_timeout * 1000);
	bus_set_priority(chat->beat, WORKER_PRI_LIVE);
	return chat;
}

void
chat_free(struct chat *chat)
{
	struct chat_room *r;
	struct map_iter it;
	struct chat_leave *l;

	if (chat == NULL)
		return;
	while ((l = TAILQ_FIRST(&chat->leaves)) != NULL) {
		TAILQ_REMOVE(&chat->leaves, l, entry);
		if (l->sent)
			l->chat = NULL;	/* chat_leave_cb() frees it */
		else
			free(l);
	}
	map_iter_init(&it, &chat->rooms);
	while ((r = map_iter_next(&it)) != NULL)
		free(r);
	map_clear(&chat->rooms);
	bus_shards_free(chat->subs);
	bus_free(chat->beat);
	free(chat);
}

uint64_t
chat_members(const struct chat *chat)
{
	return chat->nmembers;
}

static void
chat_stop_member(struct chat *chat, struct chat_member *m, void *arg)
{
	(void)chat;
	(void)arg;
	chat_close_member(m, WS_CLOSE_GOING_AWAY, "server going down");
}

void
chat_stop(struct chat *chat)
{
	chat->stopping = 1;
	chat_each(chat, chat_stop_member, NULL);
}

/*
 * Call fn for every member in a room, in the order they joined. fn may
 * close its member (which leaves the list at once), never another one.
 */
static void
chat_each(struct chat *chat, void (*fn)(struct chat *, struct chat_member *,
    void *), void *arg)
{
	struct chat_member *m, *next;

	for (m = TAILQ_FIRST(&chat->members); m != NULL; m = next) {
		next = TAILQ_NEXT(m, all);
		fn(chat, m, arg);
	}
}

/* --- members ------------------------------------------------------------ */

void
chat_upgrade(struct conn *c, const char *extra, const char *room,
    int64_t uid, const char *username, const char *session, int v2,
    int64_t since)
{
	struct worker *w = c->worker;
	struct chat *chat = w->chat;
	struct chat_member *m;

	if (chat->stopping) {
		conn_error(c, 503, "the server is going down");
		return;
	}
	/* A member could neither subscribe nor register: say so now, not
	 * with a socket that never hears its room. */
	if (!bus_connected(bus_shards_at(chat->subs, 0)) ||
	    !chat_room_connected(chat, room)) {
		conn_error(c, 503, "chat is unavailable right now (Redis); "
		    "try again");
		return;
	}
	if ((m = calloc(1, sizeof(*m))) == NULL) {
		conn_error(c, 500, "out of memory");
		return;
	}
	m->conn = c;
	m->uid = uid;
	snprintf(m->username, sizeof(m->username), "%s", username);
	snprintf(m->session, sizeof(m->session), "%s", session);
	m->last_seen_ms = util_mono_ms();
	m->v2 = v2;
	m->since = since;
	m->typing_ms = INT64_MIN / 2;
	limit_bucket_init(&m->bucket, w->conf->ws_msg_burst, m->last_seen_ms);
	if ((m->room = chat_room_get(chat, room, 1)) == NULL) {
		free(m);
		conn_error(c, 500, "out of memory");
		return;
	}
	api_count(c, 101);
	conn_upgrade(c, extra);
	/* A v2 frame is JSON: room for a max_ws_message content escaped. */
	m->ws = ws_new(c->bev, (size_t)w->conf->max_ws_message *
	    (v2 ? 6 : 1) + (v2 ? 1024 : 0),
	    (size_t)w->conf->ws_output_limit, &chat_ws_handlers, m);
	if (m->ws == NULL) {
		free(m);
		conn_close(c);
		return;
	}
	conn_attach(c, &chat_conn_handlers, m);
	chat->nmembers++;
	metrics_set(MG_WEBSOCKETS, (int64_t)chat->nmembers);
	TAILQ_INSERT_TAIL(&m->room->members, m, entry);
	TAILQ_INSERT_TAIL(&chat->members, m, all);
	m->room->nmembers++;
	m->hnext = chat->by_conn[c->id % CHAT_MEMBER_BUCKETS];
	chat->by_conn[c->id % CHAT_MEMBER_BUCKETS] = m;
	log_debug("conn %llu: user %lld joins room %s",
	    (unsigned long long)c->id, (long long)uid, room);
	if (m->room->sub == ROOM_SUBSCRIBED)
		chat_register(chat, m);
	else {
		/* Bounded: reading pauses once this much is held. */
		m->state = MEMBER_SUBSCRIBING;
		bufferevent_setwatermark(c->bev, EV_READ, 0, CHAT_HOLD_MAX);
		chat_subscribe(chat, m->room);
	}
	/* Frames the client sent right behind its handshake. */
	chat_conn_read(c);
}

/* A member still subscribing is not read: chat_register() reads it. */
static void
chat_conn_read(struct conn *c)
{
	struct chat_member *m = chat_member_of(c);

	if (m != NULL && m->ws != NULL && m->state != MEMBER_SUBSCRIBING)
		ws_read(m->ws);
}

/*
 * The connection is going away (closed by either side, or cut): leave the
 * room now, so that the hub announces it; the member itself is freed
 * later, with the conn, outside any of its callbacks.
 */
static void
chat_conn_close(struct conn *c)
{
	struct chat_member *m = chat_member_of(c), **pp;
	struct chat *chat = c->worker->chat;

	if (m == NULL || m->room == NULL)
		return;
	if (m->registered)
		chat_leave(chat, m);
	m->state = MEMBER_CLOSING;
	for (pp = &chat->by_conn[c->id % CHAT_MEMBER_BUCKETS]; *pp != NULL;
	    pp = &(*pp)->hnext)
		if (*pp == m) {
			*pp = m->hnext;
			break;
		}
	TAILQ_REMOVE(&m->room->members, m, entry);
	TAILQ_REMOVE(&chat->members, m, all);
	m->room->nmembers--;		/* chat_rooms_collect() frees it */
	m->room = NULL;
	chat->nmembers--;
	metrics_set(MG_WEBSOCKETS, (int64_t)chat->nmembers);
}

static void
chat_member_free(void *arg)
{
	struct chat_member *m = arg;

	if (m == NULL)
		return;
	chat_held_free(m);
	if (m->ws != NULL)
		ws_free(m->ws);
	free(m);
}

/*
 * Tell the hub about a member whose room channel is subscribed. If the
 * XADD cannot be sent, no history or join will ever come: close it (1011)
 * so that its client tries again. The close may remove m from its room.
 *
 * Then its session is looked up once more: a logout or an account
 * deletion whose control event this worker handled before m was in its
 * room's list (the upgrade was in flight) has removed the session key by
 * then, and chat_recheck_cb() closes m (1008). One that comes later finds
 * m in the list (chat_on_control()). So no revoked socket stays open.
 */
static void
chat_register(struct chat *chat, struct chat_member *m)
{
	struct chat_extra x = { NULL, 0, m->since >= 0 ? 0 : -1 };

	m->state = MEMBER_REGISTERING;
	if (chat_inbox_op(chat, m, "register", NULL, 0, &x, NULL, NULL) ==
	    -1) {
		chat_close_member(m, WS_CLOSE_ERROR, "cannot join the room "
		    "now; try again");
		return;
	}
	m->registered = 1;
	if (m->session[0] != '\0') {
		conn_hold(m->conn);
		if (bus_command(bus_shards_key(chat->w->shards, m->session),
		    chat_recheck_cb, m->conn,
		    "GET %s", m->session) == -1) {
			conn_release(m->conn);
			chat_close_member(m, WS_CLOSE_ERROR, "cannot join the "
			    "room now; try again");
		}
	}
}

/*
 * The session of a member that has just registered, read again (the conn
 * is held until now). Gone or another user's: revoked while the upgrade
 * was in flight, closed with 1008. No answer: it cannot be trusted, 1011.
 */
static void
chat_recheck_cb(struct bus *bus, struct bus_reply *reply, void *arg)
{
	struct conn *c = arg;
	struct chat_member *m = chat_member_of(c);
	const char *v;
	long long uid;

	(void)bus;
	if (m != NULL && m->room != NULL) {
		if (reply == NULL || bus_reply_type(reply) == BUS_ERROR)
			chat_close_member(m, WS_CLOSE_ERROR, "cannot join the "
			    "room now; try again");
		else if ((v = bus_reply_str(reply, NULL)) == NULL ||
		    util_parse_int(v, 1, INT64_MAX, &uid) == -1 ||
		    uid != m->uid) {
			log_debug("conn %llu: session revoked during the "
			    "upgrade", (unsigned long long)c->id);
			chat_close_member(m, WS_CLOSE_POLICY, "session "
			    "revoked");
		}
	}
	conn_release(c);
}

/* XADD one entry for m to the inbox (x may be NULL); -1 if Redis is
 * away. cb as in bus_commandv(). */
static int
chat_inbox_op(struct chat *chat, struct chat_member *m, const char *op,
    const char *content, size_t len, const struct chat_extra *x, bus_cb *cb,
    void *arg)
{
	return chat_inbox_xadd(chat, op, m->room->id, m->conn->id, m->uid,
	    m->username, content, len, x, cb, arg);
}

/* XADD an entry for connection conn of user uid in room; cb as in
 * bus_commandv(). -1 (logged) if Redis is away. */
static int
chat_inbox_xadd(struct chat *chat, const char *op, const char *room,
    uint64_t connid, int64_t uid, const char *username, const char *content,
    size_t len, const struct chat_extra *x, bus_cb *cb, void *arg)
{
	char user[24], conn[24], history[24], target[24], inbox[MSG_KEY_MAX];
	const char *argv[23];
	size_t lens[23];
	int argc = 0;

#define ARG(s, l) do { argv[argc] = (s); lens[argc++] = (l); } while (0)
	snprintf(user, sizeof(user), "%lld", (long long)uid);
	snprintf(conn, sizeof(conn), "%llu", (unsigned long long)connid);
	/* The inbox of the room's partition (SPEC section 11). */
	(void)msg_key_inbox(inbox, sizeof(inbox), chat->w->conf->redis_prefix,
	    room, chat->w->conf->partitions);
	ARG("XADD", 4);
	ARG(inbox, strlen(inbox));
	ARG("*", 1);
	ARG("op", 2);
	/* "rejoin": a register that rebuilds presence only (common/msg.h). */
	if (strcmp(op, "rejoin") == 0)
		ARG("register", 8);
	else
		ARG(op, strlen(op));
	ARG("room", 4);
	ARG(room, strlen(room));
	/* The hub answers a connection only for a register, an edit, a
	 * delete, or a message with a cid: a plain message names no socket
	 * (four arguments less to store, read and parse, a message). */
	if (strcmp(op, "broadcast") != 0 || (x != NULL && x->cid != NULL)) {
		ARG("worker", 6);
		ARG(chat->wid, strlen(chat->wid));
		ARG("conn", 4);
		ARG(conn, strlen(conn));
	}
	ARG("user", 4);
	ARG(user, strlen(user));
	ARG("username", 8);
	ARG(username, strlen(username));
	if (content != NULL) {
		ARG("content", 7);
		ARG(content, len);
	}
	if (strcmp(op, "register") == 0) {
		/* This instance's setting, whichever hub leads. */
		snprintf(history, sizeof(history), "%d", x != NULL &&
		    x->history >= 0 ? x->history :
		    chat->w->conf->history_on_join);
		ARG("history", 7);
		ARG(history, strlen(history));
	}
	if (x != NULL && x->cid != NULL) {
		ARG("cid", 3);
		ARG(x->cid, strlen(x->cid));
	}
	if (x != NULL && x->target > 0) {
		snprintf(target, sizeof(target), "%lld", (long long)x->target);
		ARG("target", 6);
		ARG(target, strlen(target));
	}
	if (strcmp(op, "rejoin") == 0) {
		ARG("rejoin", 6);
		ARG("1", 1);
	}
#undef ARG
	if (bus_commandv(chat_room_bus(chat, room), cb, arg, argc, argv,
	    lens) == -1) {
		log_warnx("conn %llu: cannot %s: Redis is away",
		    (unsigned long long)connid, op);
		return -1;
	}
	return 0;
}

/* The member leaves its room: unregister it, now or once Redis is back. */
static void
chat_leave(struct chat *chat, struct chat_member *m)
{
	struct chat_leave *l;

	if ((l = calloc(1, sizeof(*l))) == NULL) {
		/* Its worker's next restart or death clears it. */
		log_warn("conn %llu: cannot unregister: calloc",
		    (unsigned long long)m->conn->id);
		return;
	}
	l->chat = chat;
	l->conn = m->conn->id;
	l->uid = m->uid;
	snprintf(l->room, sizeof(l->room), "%s", m->room->id);
	snprintf(l->username, sizeof(l->username), "%s", m->username);
	TAILQ_INSERT_TAIL(&chat->leaves, l, entry);
	chat_leave_send(l);
}

/* Send l's unregister; if Redis is away, the cron tries again. */
static void
chat_leave_send(struct chat_leave *l)
{
	l->sent = chat_inbox_xadd(l->chat, "unregister", l->room, l->conn,
	    l->uid, l->username, NULL, 0, NULL, chat_leave_cb, l) == 0;
}

static void
chat_leave_cb(struct bus *bus, struct bus_reply *reply, void *arg)
{
	struct chat_leave *l = arg;

	(void)bus;
	if (l->chat == NULL) {
		free(l);
		return;
	}
	l->sent = 0;
	if (reply == NULL)
		return;	/* lost with the connection: perhaps taken, perhaps
			 * not: the cron sends it again */
	if (bus_reply_type(reply) == BUS_ERROR)
		log_warnx("conn %llu: unregister refused: %s",
		    (unsigned long long)l->conn, bus_reply_str(reply, NULL));
	TAILQ_REMOVE(&l->chat->leaves, l, entry);
	free(l);
}

/*
 * The XADD of a member's message was answered. member_on_text() holds the
 * conn until this runs, so it is still allocated even if it closed.
 */
static void
chat_broadcast_cb(struct bus *bus, struct bus_reply *reply, void *arg)
{
	struct conn *c = arg;
	struct chat_member *m = chat_member_of(c);

	(void)bus;
	/*
	 * An error reply: Redis refused it. No reply at all: the connection
	 * broke or stalled past backend_timeout after the XADD went out, so
	 * Redis may still have taken it: say so rather than invite a
	 * duplicate.
	 */
	if (m != NULL && m->room != NULL) {
		if (reply == NULL)
			chat_close_member(m, WS_CLOSE_ERROR, "message "
			    "may not have been accepted; look at the history "
			    "before sending it again");
		else if (bus_reply_type(reply) == BUS_ERROR)
			chat_close_member(m, WS_CLOSE_ERROR, "message "
			    "not accepted; try again");
	}
	conn_release(c);
}

static void
member_on_text(void *arg, const char *msg, size_t len)
{
	struct chat_member *m = arg;
	struct chat *chat = m->conn->worker->chat;

	if (m->state == MEMBER_CLOSING || m->room == NULL)
		return;
	if (m->v2) {
		chat_v2_on_text(chat, m, msg, len);
		return;
	}
	if (len == 0)
		return;			/* an empty frame carries no message */
	/* Valid UTF-8, but no database text can hold it. */
	if (memchr(msg, '\0', len) != NULL) {
		chat_close_member(m, WS_CLOSE_POLICY, "messages cannot "
		    "contain NUL characters");
		return;
	}
	/* Over the bucket: not accepted. A §5 client has no error event to
	 * be told with, so its socket is closed (SPEC section 8). */
	if (limit_bucket_take(&m->bucket, chat->w->conf->ws_msg_rate,
	    chat->w->conf->ws_msg_burst, util_mono_ms()) != 0) {
		chat_close_member(m, WS_CLOSE_POLICY, "too many messages");
		return;
	}
	metrics_count(MC_MSGS_IN, 1);
	conn_hold(m->conn);
	if (chat_inbox_op(chat, m, "broadcast", msg, len, NULL,
	    chat_broadcast_cb, m->conn) == -1) {
		/* Not accepted: 1011 tells the client to try again. */
		conn_release(m->conn);
		chat_close_member(m, WS_CLOSE_ERROR, "message not accepted; "
		    "try again");
	}
}

static void
member_on_activity(void *arg)
{
	struct chat_member *m = arg;

	m->last_seen_ms = util_mono_ms();
	m->ping_sent = 0;
}

/* The WebSocket session is over: close the connection once drained. */
static void
member_on_closed(void *arg, int code)
{
	struct chat_member *m = arg;

	log_debug("conn %llu: websocket closed (%d)",
	    (unsigned long long)m->conn->id, code);
	if (m->room != NULL)
		chat_conn_close(m->conn);
	conn_close_when_drained(m->conn, CHAT_CLOSE_GRACE_MS);
}

static void
chat_close_member(struct chat_member *m, int code, const char *reason)
{
	if (m->ws != NULL && !ws_closing(m->ws))
		ws_close(m->ws, code, reason);
}

/* --- rooms -------------------------------------------------------------- */

/*
 * Where a room lives (SPEC section 11): its partition's shard, for the
 * inbox entries of its members (chat_room_bus) and its channel
 * (chat_room_sub). With one Redis, both are that one's.
 */
static struct bus *
chat_room_bus(const struct chat *chat, const char *room)
{
	return bus_shards_partition(chat->w->shards, msg_partition(room,
	    chat->w->conf->partitions));
}

static struct bus *
chat_room_sub(const struct chat *chat, const struct chat_room *r)
{
	return bus_shards_partition(chat->subs, r->partition);
}

/* 1 when a member of room can subscribe and register now. */
static int
chat_room_connected(const struct chat *chat, const char *room)
{
	return bus_connected(chat_room_bus(chat, room)) &&
	    bus_connected(bus_shards_partition(chat->subs,
	    msg_partition(room, chat->w->conf->partitions)));
}

/* The room called id, created if create and not known; NULL if not known
 * or out of memory. The map is keyed (hash_init() in chat_new()): room
 * ids come from clients. */
static struct chat_room *
chat_room_get(struct chat *chat, const char *id, int create)
{
	struct chat_room *r;

	if ((r = map_get(&chat->rooms, id)) != NULL || !create ||
	    (r = calloc(1, sizeof(*r))) == NULL)
		return r;
	snprintf(r->id, sizeof(r->id), "%s", id);
	r->partition = msg_partition(id, chat->w->conf->partitions);
	(void)msg_key_room(r->channel, sizeof(r->channel),
	    chat->w->conf->redis_prefix, id);
	TAILQ_INIT(&r->members);
	/* Keyed by r->id, which chat_rooms_collect() deletes. */
	if (map_put(&chat->rooms, r->id, r) == -1) {
		free(r);
		return NULL;
	}
	metrics_set(MG_ROOMS, (int64_t)map_count(&chat->rooms));
	return r;
}

/*
 * Rooms without members are unsubscribed and forgotten here, from the
 * cron, never while a member is leaving: a leave can happen inside loops
 * that walk the rooms (a close started from such a loop may finish at
 * once).
 */
static void
chat_rooms_collect(struct chat *chat)
{
	struct chat_room *r;
	struct map_iter it;

	map_iter_init(&it, &chat->rooms);
	while ((r = map_iter_next(&it)) != NULL) {
		if (r->nmembers > 0)
			continue;
		if (r->sub != ROOM_UNSUBSCRIBED &&
		    bus_connected(chat_room_sub(chat, r)))
			bus_send(chat_room_sub(chat, r), "UNSUBSCRIBE %s",
			    r->channel);
		map_del(&chat->rooms, r->id);
		free(r);
	}
	metrics_set(MG_ROOMS, (int64_t)map_count(&chat->rooms));
}

/*
 * Subscribe to r's channel unless done or under way. If the SUBSCRIBE
 * cannot be sent, the members waiting for it are closed (1011): they
 * would wait for ever.
 */
static void
chat_subscribe(struct chat *chat, struct chat_room *r)
{
	struct chat_member *m, *next;

	if (r->sub != ROOM_UNSUBSCRIBED)
		return;
	if (bus_command(chat_room_sub(chat, r), chat_sub_cb, chat,
	    "SUBSCRIBE %s",
	    r->channel) == 0) {
		r->sub = ROOM_SUBSCRIBING;
		return;
	}
	log_warnx("room %s: cannot subscribe: Redis is away", r->id);
	for (m = TAILQ_FIRST(&r->members); m != NULL; m = next) {
		next = TAILQ_NEXT(m, entry);
		if (m->state == MEMBER_SUBSCRIBING)
			chat_close_member(m, WS_CLOSE_ERROR, "cannot join the "
			    "room now; try again");
	}
}

/* --- the subscription connection ---------------------------------------- */

/*
 * (Re)connected: this worker's channel (on every shard: a hub sends a
 * joiner's history on the shard of its room, so that it comes before the
 * room's later events), and on shard 0 the control channel. No room
 * needs subscribing again: chat_sub_lost() closed every member of the
 * lost connection, and joins answer 503 until this one is up.
 */
static void
chat_sub_connected(struct bus *bus, void *arg)
{
	struct chat *chat = arg;
	int rc;

	if (bus_shard(bus) == 0)
		rc = bus_command(bus, chat_sub_cb, chat, "SUBSCRIBE %s %s",
		    chat->worker_channel, chat->control_channel);
	else
		rc = bus_command(bus, chat_sub_cb, chat, "SUBSCRIBE %s",
		    chat->worker_channel);
	if (rc == -1)
		log_warnx("cannot subscribe to %s", chat->worker_channel);
}

/* Still unregistered on close, through the command connection, in case
 * only the subscription connection broke and the hub's presence
 * survives. */
static void
chat_restart_member(struct chat *chat, struct chat_member *m, void *arg)
{
	(void)chat;
	(void)arg;
	chat_close_member(m, WS_CLOSE_ERROR, "chat service restarting; "
	    "reconnect");
}

/*
 * Redis went away: the subscriptions, the inbox and the hub's presence may
 * all be gone with it. Close every member with 1011; clients reconnect and
 * rejoin once Redis is back, which rebuilds everything consistently.
 */
static void
chat_sub_lost(struct bus *bus, void *arg)
{
	struct chat *chat = arg;
	struct chat_room *r;
	struct chat_member *m, *next;
	struct map_iter it;

	map_iter_init(&it, &chat->rooms);
	while ((r = map_iter_next(&it)) != NULL) {
		if (chat_room_sub(chat, r) != bus)
			continue;
		r->sub = ROOM_UNSUBSCRIBED;
		for (m = TAILQ_FIRST(&r->members); m != NULL; m = next) {
			next = TAILQ_NEXT(m, entry);
			chat_restart_member(chat, m, NULL);
		}
	}
	/* Shard 0's carries the control channel: without it, a revoked
	 * session could stay open. */
	if (bus_shard(bus) == 0)
		chat_each(chat, chat_restart_member, NULL);
}

/*
 * Everything the subscription connection receives: confirmations
 * ["subscribe", channel, n] and messages ["message", channel, payload].
 */
static void
chat_sub_cb(struct bus *bus, struct bus_reply *reply, void *arg)
{
	struct chat *chat = arg;
	const char *kind, *channel, *payload, *id;
	size_t plen;
	struct chat_room *r;
	struct chat_member *m, *next;

	(void)bus;
	if (reply == NULL || bus_reply_type(reply) != BUS_ARRAY ||
	    bus_reply_elements(reply) != 3)
		return;
	kind = bus_reply_str(bus_reply_element(reply, 0), NULL);
	channel = bus_reply_str(bus_reply_element(reply, 1), NULL);
	if (kind == NULL || channel == NULL)
		return;
	id = msg_channel_room(channel, chat->w->conf->redis_prefix);
	if (strcmp(kind, "subscribe") == 0) {
		if (id == NULL || (r = chat_room_get(chat, id, 0)) == NULL ||
		    r->sub != ROOM_SUBSCRIBING)
			return;
		r->sub = ROOM_SUBSCRIBED;
		for (m = TAILQ_FIRST(&r->members); m != NULL; m = next) {
			next = TAILQ_NEXT(m, entry);
			if (m->state != MEMBER_SUBSCRIBING)
				continue;
			chat_register(chat, m);
			/* What it sent meanwhile goes after its register. */
			bufferevent_setwatermark(m->conn->bev, EV_READ, 0, 0);
			chat_conn_read(m->conn);
		}
		return;
	}
	if (strcmp(kind, "message") != 0)
		return;
	payload = bus_reply_str(bus_reply_element(reply, 2), &plen);
	if (payload == NULL)
		return;
	if (id != NULL) {
		if ((r = chat_room_get(chat, id, 0)) != NULL &&
		    r->sub == ROOM_SUBSCRIBED)
			chat_on_room_event(chat, r, payload, plen);
	} else if (strcmp(channel, chat->worker_channel) == 0)
		chat_on_worker_msg(chat, payload, plen);
	else if (strcmp(channel, chat->control_channel) == 0)
		chat_on_control(chat, payload, plen);
}

/*
 * One event of a room, as the hub published it. Messages not newer than
 * the last one delivered here are a hub's replay: dropped. The payload is
 * framed once; each joined member's output takes that frame (ws_send).
 * A message, edit or delete in the hub's own layout is read from its
 * front (msg_event_peek()); anything else is parsed whole.
 */
static void
chat_on_room_event(struct chat *chat, struct chat_room *r, const char *payload,
    size_t len)
{
	struct json_doc *doc = NULL;
	struct ws_frame *f;
	struct chat_member *m, *next;
	const char *type;
	int64_t id, from = 0;
	uint64_t sent = 0;
	enum msg_event ev;

	(void)chat;
	if (msg_event_peek(payload, len, &ev, &id) == -1) {
		if ((doc = json_parse(payload, len)) == NULL) {
			log_warnx("room %s: unreadable event dropped", r->id);
			return;
		}
		if (json_get_string(doc, "type", &type, NULL) != JSON_OK)
			goto done;
		ev = msg_event_type(type);
		if ((ev == MSG_EV_MESSAGE || ev == MSG_EV_EDIT ||
		    ev == MSG_EV_DELETE) &&
		    json_get_int(doc, "id", &id) != JSON_OK)
			goto done;
		if (ev == MSG_EV_TYPING &&
		    json_get_int(doc, "userId", &from) != JSON_OK)
			goto done;
	}
	/* The events with an id of the room's sequence. */
	if (ev == MSG_EV_MESSAGE || ev == MSG_EV_EDIT || ev == MSG_EV_DELETE) {
		if (id <= r->last_id)
			goto done;
		r->last_id = id;
	}
	if ((f = ws_frame_text(payload, len)) == NULL)
		goto done;
	for (m = TAILQ_FIRST(&r->members); m != NULL; m = next) {
		next = TAILQ_NEXT(m, entry);
		/* Typing: v2 only, and not to the typist's own sockets. */
		if (ev == MSG_EV_TYPING && (!m->v2 || m->uid == from))
			continue;
		if (m->state == MEMBER_JOINED && ws_send(m->ws, f) == 0)
			sent++;
		else if (m->state == MEMBER_RESUMING)
			chat_deliver(m, f);
	}
	ws_frame_unref(f);
	/* Counted per event: the counter is shared memory (metrics.c). */
	metrics_count(MC_MSGS_OUT, sent);
done:
	json_free(doc);
}

struct history_ctx {
	struct chat		*chat;
	struct chat_member	*member;
};

static void
chat_history_elem(const char *elem, size_t len, void *arg)
{
	struct history_ctx *h = arg;
	struct ws_frame *f;

	if ((f = ws_frame_text(elem, len)) == NULL)
		return;
	if (ws_send(h->member->ws, f) == 0)
		metrics_count(MC_MSGS_OUT, 1);
	ws_frame_unref(f);
}

/* What the hub sends this worker alone: histories, and "dropped". */
static void
chat_on_worker_msg(struct chat *chat, const char *payload, size_t len)
{
	struct json_doc *doc;
	const char *type;

	if ((doc = json_parse(payload, len)) == NULL)
		return;
	if (json_get_string(doc, "type", &type, NULL) != JSON_OK) {
		log_warnx("%s: event without a type dropped",
		    chat->worker_channel);
		goto done;
	}
	switch (msg_event_type(type)) {
	case MSG_EV_HISTORY:
		chat_on_history(chat, doc, payload, len);
		break;
	case MSG_EV_DROPPED:
		chat_on_dropped(chat, doc);
		break;
	case MSG_EV_ACK:
		chat_on_ack(chat, doc);
		break;
	default:
		log_warnx("%s: unexpected event '%.32s' dropped",
		    chat->worker_channel, type);
		break;
	}
done:
	json_free(doc);
}

/*
 * A joining member's history, on this worker's channel: send it, then let
 * the member see the room's live events, which the hub publishes after.
 */
static void
chat_on_history(struct chat *chat, struct json_doc *doc, const char *payload,
    size_t len)
{
	struct history_ctx h = { chat, NULL };
	struct chat_room *r;
	struct chat_member *m;
	const char *room;
	int64_t conn, upto;

	if (json_get_string(doc, "roomId", &room, NULL) != JSON_OK ||
	    json_get_int(doc, "conn", &conn) != JSON_OK ||
	    json_get_int(doc, "upto", &upto) != JSON_OK ||
	    (r = chat_room_get(chat, room, 0)) == NULL)
		return;
	for (m = chat->by_conn[(uint64_t)conn % CHAT_MEMBER_BUCKETS];
	    m != NULL; m = m->hnext)
		if (m->conn->id == (uint64_t)conn)
			break;
	if (m == NULL || m->room != r || m->state != MEMBER_REGISTERING)
		return;
	if (upto > r->last_id)
		r->last_id = upto;
	if (m->since >= 0) {
		/* Resume: the hub sent no history; PostgreSQL has it all. */
		m->upto = upto;
		m->state = MEMBER_RESUMING;
		chat_resume(chat, m);
		return;
	}
	h.member = m;
	json_array_each(payload, len, "messages", chat_history_elem, &h);
	m->state = MEMBER_JOINED;
}

/*
 * The hub missed this worker's heartbeat (the process was stopped, or
 * starved) and dropped the presence of every connection it had registered:
 * their leaves are announced and getClients no longer lists them. The
 * worker is alive, so its clients are not thrown out: each registered
 * member is registered again with rejoin "1", which rebuilds its presence
 * without a second join event or history. A member registered after the
 * drop is registered already: the hub ignores the rejoin. Members still
 * subscribing register later. Only one whose rejoin cannot be sent (Redis
 * is away) is closed with 1011, so that its client joins again. Only the
 * members in rooms of the partition whose leader dropped us: the others'
 * presence is kept by other partitions' leaders.
 */
struct chat_dropped {
	int	 partition;	/* -1: every room */
	size_t	 n;		/* registered again */
};

static void
chat_dropped_member(struct chat *chat, struct chat_member *m, void *arg)
{
	struct chat_dropped *d = arg;

	if (!m->registered || m->state == MEMBER_CLOSING ||
	    (d->partition >= 0 && msg_partition(m->room->id,
	    chat->w->conf->partitions) != d->partition))
		return;
	if (chat_inbox_xadd(chat, "rejoin", m->room->id, m->conn->id, m->uid,
	    m->username, NULL, 0, NULL, NULL, NULL) == -1) {
		chat_close_member(m, WS_CLOSE_ERROR, "presence lost; "
		    "reconnect");
		return;
	}
	d->n++;
}

/* "partition": whose leader dropped us; absent (an older hub): all. */
static void
chat_on_dropped(struct chat *chat, struct json_doc *doc)
{
	struct chat_dropped d = { -1, 0 };
	int64_t part;

	if (json_get_int(doc, "partition", &part) == JSON_OK)
		d.partition = (int)part;
	chat_each(chat, chat_dropped_member, &d);
	log_warnx("the hub took this worker for dead (partition %d); %zu "
	    "sockets registered again (no join event)", d.partition, d.n);
}

struct chat_revoke {
	int64_t		 uid;
	int		 deleted;	/* the account, or only a session */
	char		 key[AUTH_KEY_MAX];	/* the session's key */
};

static void
chat_revoke_member(struct chat *chat, struct chat_member *m, void *arg)
{
	struct chat_revoke *rv = arg;

	(void)chat;
	if (m->uid != rv->uid || (!rv->deleted &&
	    strcmp(m->session, rv->key) != 0))
		return;
	chat_close_member(m, WS_CLOSE_POLICY, rv->deleted ?
	    "account deleted" : "logged out");
}

/* Account events: close the sockets of a deleted user or a revoked
 * session. */
static void
chat_on_control(struct chat *chat, const char *payload, size_t len)
{
	struct json_doc *doc;
	struct chat_revoke rv = { 0, 0, "" };
	const char *type, *session = NULL;
	int64_t uid;
	int deleted;

	if ((doc = json_parse(payload, len)) == NULL)
		return;
	if (json_get_string(doc, "type", &type, NULL) != JSON_OK ||
	    json_get_int(doc, "userId", &uid) != JSON_OK)
		goto done;
	switch (msg_event_type(type)) {
	case MSG_EV_MEMBER_REMOVED:
	case MSG_EV_ROOM_DELETED:
		chat_on_room_control(chat, doc,
		    msg_event_type(type) == MSG_EV_ROOM_DELETED, uid);
		goto done;
	case MSG_EV_READ:
		chat_on_read(chat, doc, uid);
		goto done;
	case MSG_EV_USER_DELETED:
		deleted = 1;
		break;
	case MSG_EV_SESSION_REVOKED:
		deleted = 0;
		if (json_get_string(doc, "session", &session, NULL) !=
		    JSON_OK)
			goto done;
		break;
	default:
		log_warnx("%s: unexpected event '%.32s' dropped",
		    chat->control_channel, type);
		goto done;
	}
	if (session != NULL)
		(void)msg_key_session(rv.key, sizeof(rv.key),
		    chat->w->conf->redis_prefix, session);
	rv.uid = uid;
	rv.deleted = deleted;
	chat_each(chat, chat_revoke_member, &rv);
done:
	json_free(doc);
}

/*
 * Room events of SPEC section 10 (workers/api_rooms.c publishes them once
 * committed): a member removed from a private room (its sockets to that
 * room close) or a room deleted (all of its sockets close), 1008 both.
 * A room this worker has no member of is not in its table: nothing to do.
 */
static void
chat_on_room_control(struct chat *chat, struct json_doc *doc, int deleted,
    int64_t uid)
{
	struct chat_room_event *e;
	struct chat_room *r;
	struct chat_member *m, *next;
	const char *room;

	if (json_get_string(doc, "roomId", &room, NULL) != JSON_OK ||
	    !msg_room_id_valid(room, strlen(room)))
		return;
	e = &chat->revoked[chat->nrevoked++ % CHAT_REVOKED];
	snprintf(e->room, sizeof(e->room), "%s", room);
	e->uid = deleted ? 0 : uid;
	e->at_ms = util_mono_ms();
	if ((r = chat_room_get(chat, room, 0)) == NULL)
		return;
	for (m = TAILQ_FIRST(&r->members); m != NULL; m = next) {
		next = TAILQ_NEXT(m, entry);
		if (deleted)
			chat_close_member(m, WS_CLOSE_POLICY, "room deleted");
		else if (m->uid == uid)
			chat_close_member(m, WS_CLOSE_POLICY, "removed from "
			    "the room");
	}
}

int
chat_room_revoked(struct chat *chat, const char *room, int64_t uid,
    int64_t since_ms)
{
	const struct chat_room_event *e;
	unsigned n = chat->nrevoked < CHAT_REVOKED ? chat->nrevoked :
	    CHAT_REVOKED;

	for (unsigned i = 1; i <= n; i++) {
		e = &chat->revoked[(chat->nrevoked - i) % CHAT_REVOKED];
		if (e->at_ms < since_ms)
			return 0;	/* older ones are older still */
		if ((e->uid == 0 || e->uid == uid) &&
		    strcmp(e->room, room) == 0)
			return 1;
	}
	/* All kept events are recent: one that fell out may be the one. */
	return chat->nrevoked > CHAT_REVOKED;
}

/*
 * The heartbeat the hub watches: a worker without it has died. It has a
 * connection of its own, so that a backlog of XADDs and session lookups
 * on the command connection never delays it past its TTL.
 */
void
chat_heartbeat(struct chat *chat)
{
	if (!bus_connected(chat->beat))
		return;
	if (chat->beating)
		bus_send(chat->beat, "SET %s 1 EX %d", chat->alive_key,
		    CHAT_ALIVE_TTL_S);
	else if (bus_command(chat->beat, chat_beat_cb, chat, "SET %s 1 EX %d",
	    chat->alive_key, CHAT_ALIVE_TTL_S) == -1)
		log_debug("heartbeat: not sent; again in a second");
}

/* The first acknowledged heartbeat opens the worker's gate. */
static void
chat_beat_cb(struct bus *bus, struct bus_reply *reply, void *arg)
{
	struct chat *chat = arg;

	(void)bus;
	if (reply != NULL && bus_reply_type(reply) != BUS_ERROR)
		chat->beating = 1;
}

int
chat_beating(const struct chat *chat)
{
	return chat->beating;
}

/* On every connection of the heartbeat's bus: tell the hub at once. */
static void
chat_beat_connected(struct bus *bus, void *arg)
{
	(void)bus;
	chat_heartbeat(arg);
}

/* A member silent for ws_ping_interval is pinged; one still silent a
 * second interval later is closed. */
static void
chat_ping_member(struct chat *chat, struct chat_member *m, void *arg)
{
	int64_t now = *(const int64_t *)arg;
	int64_t interval = (int64_t)chat->w->conf->ws_ping_interval * 1000;

	if (now - m->last_seen_ms < interval)
		return;
	if (!m->ping_sent) {
		ws_ping(m->ws);
		m->ping_sent = 1;
	} else if (now - m->last_seen_ms >= 2 * interval)
		chat_close_member(m, WS_CLOSE_GOING_AWAY, "no answer to ping");
}

/* Every second, from the worker's cron: the heartbeat, rooms left empty,
 * pings. */
void
chat_cron(struct chat *chat)
{
	int64_t now = util_mono_ms();
	struct chat_leave *l;

	chat_heartbeat(chat);
	chat_rooms_collect(chat);
	TAILQ_FOREACH(l, &chat->leaves, entry)
		if (!l->sent && bus_connected(chat_room_bus(chat, l->room)))
			chat_leave_send(l);
	chat_each(chat, chat_ping_member, &now);
}

/* --- delivery to one member ------------------------------------------- */

/*
 * A live event for m: sent if joined, held (in order) while it resumes.
 * Held bytes count against ws_output_limit as queued output would.
 */
static void
chat_deliver(struct chat_member *m, struct ws_frame *f)
{
	struct ws_frame **held;
	size_t len;

	if (m->state == MEMBER_JOINED) {
		if (ws_send(m->ws, f) == 0)
			metrics_count(MC_MSGS_OUT, 1);
		return;
	}
	if (m->state != MEMBER_RESUMING)
		return;
	(void)ws_frame_bytes(f, &len);
	if (m->held_bytes + len > (size_t)m->conn->worker->conf->ws_output_limit) {
		chat_close_member(m, WS_CLOSE_POLICY, "too much output waits "
		    "for this connection");
		return;
	}
	if (m->nheld == m->held_cap) {
		size_t cap = m->held_cap > 0 ? m->held_cap * 2 : 16;

		if ((held = realloc(m->held, cap * sizeof(*held))) == NULL) {
			chat_close_member(m, WS_CLOSE_ERROR, "out of memory");
			return;
		}
		m->held = held;
		m->held_cap = cap;
	}
	ws_frame_ref(f);
	m->held[m->nheld++] = f;
	m->held_bytes += len;
}

/* The JSON in b to m alone: held behind live events while it resumes if
 * hold, else at once. b is drained. */
static void
chat_send_json(struct chat_member *m, struct evbuffer *b, int hold)
{
	struct ws_frame *f;
	size_t len = evbuffer_get_length(b);

	f = ws_frame_text((const char *)evbuffer_pullup(b, -1), len);
	(void)evbuffer_drain(b, len);
	if (f == NULL)
		return;
	if (hold)
		chat_deliver(m, f);
	else if (ws_send(m->ws, f) == 0)
		metrics_count(MC_MSGS_OUT, 1);
	ws_frame_unref(f);
}

static void
chat_held_free(struct chat_member *m)
{
	for (size_t i = 0; i < m->nheld; i++)
		ws_frame_unref(m->held[i]);
	free(m->held);
	m->held = NULL;
	m->nheld = m->held_cap = m->held_bytes = 0;
}

/* --- resume (?since=) -------------------------------------------------- */

/*
 * $1 room, $2 since, $3 upto, $4 resume_max + 1: the room's events in
 * (since, upto], newest first: messages as they are now (deleted ones
 * left out), and the edits and deletes of messages up to since (what the
 * client shows). One range scan of the primary key.
 */
static const char chat_resume_sql[] =
    "SELECT id, kind, target, user_id, username, content, "
    "floor(extract(epoch FROM created_at) * 1000)::bigint, "
    "floor(extract(epoch FROM edited_at) * 1000)::bigint "
    "FROM messages WHERE room_id = $1 AND id > $2::bigint AND "
    "id <= $3::bigint AND ((kind = 0 AND NOT deleted) OR "
    "(kind > 0 AND target <= $2::bigint)) ORDER BY id DESC LIMIT $4::int";

/*
 * m's history (upto) has come: read what it missed from PostgreSQL,
 * holding its live events meanwhile. PostgreSQL away: 1011, the client
 * resumes again.
 */
static void
chat_resume(struct chat *chat, struct chat_member *m)
{
	char since[24], upto[24], max[24];
	const char *params[4] = { m->room->id, since, upto, max };

	snprintf(since, sizeof(since), "%lld", (long long)m->since);
	snprintf(upto, sizeof(upto), "%lld", (long long)m->upto);
	snprintf(max, sizeof(max), "%d", chat->w->conf->resume_max + 1);
	conn_hold(m->conn);
	if (db_query(chat->w->db, chat_resume_sql, 4, params, chat_resumed_cb,
	    m->conn) == -1) {
		conn_release(m->conn);
		chat_close_member(m, WS_CLOSE_ERROR, "cannot resume now (the "
		    "database is unavailable); try again");
	}
}

/* An integer column (0 if NULL or unreadable: PostgreSQL wrote it). */
static long long
chat_int(struct db_result *res, int row, int col)
{
	long long v;

	if (db_result_isnull(res, row, col) || util_parse_int(
	    db_result_value(res, row, col), INT64_MIN, INT64_MAX, &v) == -1)
		return 0;
	return v;
}

/* One replayed row as its event, with "history":true, into b. */
static void
chat_resume_row(struct evbuffer *b, const char *room, struct db_result *res,
    int i)
{
	long long id, kind, target, user, ts, edited = 0;
	char t[32], e[32];
	const char *content = db_result_value(res, i, 5);

	id = chat_int(res, i, 0);
	kind = chat_int(res, i, 1);
	user = chat_int(res, i, 3);
	ts = chat_int(res, i, 6);
	util_rfc3339(ts, t, sizeof(t));
	if (kind == 0) {
		edited = chat_int(res, i, 7);
		if (edited != 0)
			util_rfc3339(edited, e, sizeof(e));
		msg_write_message_edited(b, id, room, user,
		    db_result_value(res, i, 4), content, strlen(content), t,
		    edited != 0 ? e : NULL, 1);
		return;
	}
	target = chat_int(res, i, 2);
	msg_write_change(b, id, room, target, kind == 1 ? content : NULL,
	    strlen(content), t, 1);
}

static void
chat_resumed_cb(struct db_result *res, void *arg)
{
	struct conn *c = arg;
	struct chat_member *m = chat_member_of(c);
	struct evbuffer *b = NULL;
	int n, max, from, i;

	if (m == NULL || m->room == NULL || m->state != MEMBER_RESUMING)
		goto done;
	if (res == NULL || !db_result_ok(res) || (b = evbuffer_new()) ==
	    NULL) {
		chat_close_member(m, WS_CLOSE_ERROR, "cannot resume now (the "
		    "database is unavailable); try again");
		goto done;
	}
	n = db_result_ntuples(res);
	max = c->worker->conf->resume_max;
	from = n > max ? max - 1 : n - 1;
	if (n > max) {
		long long first;

		first = chat_int(res, from, 0);
		chat_v2_write_gap(b, m->room->id, m->since, first);
		chat_send_json(m, b, 0);
	}
	for (i = from; i >= 0 && m->ws != NULL && !ws_closing(m->ws); i--) {
		chat_resume_row(b, m->room->id, res, i);
		chat_send_json(m, b, 0);
	}
	/* Then the join and what came live meanwhile, in order. */
	m->state = MEMBER_JOINED;
	for (size_t k = 0; k < m->nheld; k++)
		if (ws_send(m->ws, m->held[k]) == 0)
			metrics_count(MC_MSGS_OUT, 1);
	chat_held_free(m);
done:
	if (b != NULL)
		evbuffer_free(b);
	conn_release(c);
}

/* --- gochat.v2 ---------------------------------------------------------- */

/* The member of connection id conn in room, or NULL. */
static struct chat_member *
chat_member_find(struct chat *chat, uint64_t conn, const char *room)
{
	struct chat_member *m;

	for (m = chat->by_conn[conn % CHAT_MEMBER_BUCKETS]; m != NULL;
	    m = m->hnext)
		if (m->conn->id == conn)
			break;
	if (m == NULL || m->room == NULL || strcmp(m->room->id, room) != 0)
		return NULL;
	return m;
}

/* The hub's ack of a send (on this worker's channel): to its sender, in
 * the client's form, after what it has seen of the room. */
static void
chat_on_ack(struct chat *chat, struct json_doc *doc)
{
	struct chat_member *m;
	struct evbuffer *b;
	const char *room, *cid, *ts;
	int64_t conn, id;

	if (json_get_string(doc, "roomId", &room, NULL) != JSON_OK ||
	    json_get_string(doc, "cid", &cid, NULL) != JSON_OK ||
	    json_get_string(doc, "ts", &ts, NULL) != JSON_OK ||
	    json_get_int(doc, "conn", &conn) != JSON_OK ||
	    json_get_int(doc, "id", &id) != JSON_OK ||
	    (m = chat_member_find(chat, (uint64_t)conn, room)) == NULL ||
	    !m->v2 || (b = evbuffer_new()) == NULL)
		return;
	msg_write_ack(b, 0, room, cid, id, ts);
	chat_send_json(m, b, 1);
	evbuffer_free(b);
}

/* A user's read marker moved (control channel): its other v2 sockets to
 * the room are told. */
static void
chat_on_read(struct chat *chat, struct json_doc *doc, int64_t uid)
{
	struct chat_room *r;
	struct chat_member *m, *next;
	struct evbuffer *b;
	const char *room, *wid;
	int64_t id, conn;

	if (json_get_string(doc, "roomId", &room, NULL) != JSON_OK ||
	    json_get_string(doc, "worker", &wid, NULL) != JSON_OK ||
	    json_get_int(doc, "id", &id) != JSON_OK ||
	    json_get_int(doc, "conn", &conn) != JSON_OK ||
	    (r = chat_room_get(chat, room, 0)) == NULL ||
	    (b = evbuffer_new()) == NULL)
		return;
	for (m = TAILQ_FIRST(&r->members); m != NULL; m = next) {
		next = TAILQ_NEXT(m, entry);
		if (m->uid != uid || !m->v2 || (m->conn->id == (uint64_t)conn &&
		    strcmp(wid, chat->wid) == 0))
			continue;
		msg_write_read(b, room, id, 0, NULL, 0);
		chat_send_json(m, b, 1);
	}
	evbuffer_free(b);
}

/*
 * One v2 frame: a command, or an error event (the socket stays open).
 * send, edit and delete take a token of the member's bucket: over it, a
 * rate_limited error with retryAfterMs (SPEC section 8), nothing done.
 */
static void
chat_v2_on_text(struct chat *chat, struct chat_member *m, const char *msg,
    size_t len)
{
	const struct conf *conf = chat->w->conf;
	struct chat_v2_cmd cmd;
	struct chat_pending *p;
	struct chat_extra x = { NULL, 0, -1 };
	enum chat_v2_code code;
	const char *params[3];
	char uid[24], id[24], key[MSG_KEY_MAX];
	int64_t wait, now = util_mono_ms();

	if ((code = chat_v2_parse(&cmd, msg, len,
	    (size_t)conf->max_ws_message)) != CHAT_V2_OK) {
		chat_v2_error(m, &cmd, code, cmd.why, 0);
		goto done;
	}
	if ((cmd.op == CHAT_V2_SEND || cmd.op == CHAT_V2_EDIT ||
	    cmd.op == CHAT_V2_DELETE) && (wait = limit_bucket_take(&m->bucket,
	    conf->ws_msg_rate, conf->ws_msg_burst, now)) != 0) {
		chat_v2_error(m, &cmd, CHAT_V2_RATE_LIMITED, "too many "
		    "messages; wait retryAfterMs", wait);
		goto done;
	}
	if (cmd.op == CHAT_V2_TYPING) {
		/* At most one per CHAT_V2_TYPING_MS: this socket's clock,
		 * then the user's in the room, everywhere (SET NX). */
		if (now - m->typing_ms < CHAT_V2_TYPING_MS)
			goto done;
		m->typing_ms = now;
		(void)msg_key_typing(key, sizeof(key), conf->redis_prefix,
		    m->room->id, m->uid);
	}
	if ((p = chat_pending_new(m, &cmd)) == NULL) {
		chat_v2_error(m, &cmd, CHAT_V2_UNAVAILABLE, "out of memory", 0);
		goto done;
	}
	snprintf(uid, sizeof(uid), "%lld", (long long)m->uid);
	snprintf(id, sizeof(id), "%lld", (long long)cmd.id);
	params[0] = m->room->id;
	params[1] = id;
	params[2] = uid;
	switch (cmd.op) {
	case CHAT_V2_SEND:
		metrics_count(MC_MSGS_IN, 1);
		x.cid = p->cid;
		code = chat_inbox_op(chat, m, "broadcast", cmd.content,
		    cmd.content_len, &x, chat_v2_sent_cb, p) == 0 ? CHAT_V2_OK :
		    CHAT_V2_UNAVAILABLE;
		break;
	case CHAT_V2_EDIT:
	case CHAT_V2_DELETE:
		/* Who may: checked against the stored message first. */
		code = db_query(chat->w->db, "SELECT m.user_id, r.owner_id "
		    "FROM messages m JOIN rooms r ON r.id = m.room_id "
		    "WHERE m.room_id = $1 AND m.id = $2::bigint AND m.kind = 0 "
		    "AND NOT m.deleted", 2, params, chat_v2_checked_cb, p) ==
		    0 ? CHAT_V2_OK : CHAT_V2_UNAVAILABLE;
		break;
	case CHAT_V2_TYPING:
		/* On the room's shard, with its channel (SPEC section 11). */
		code = bus_command(chat_room_bus(chat, m->room->id),
		    chat_v2_typing_cb, p,
		    "SET %s 1 PX %d NX", key, CHAT_V2_TYPING_MS) == 0 ?
		    CHAT_V2_OK : CHAT_V2_UNAVAILABLE;
		break;
	case CHAT_V2_READ:
		/* Never down, never past the room's last event. */
		params[0] = uid;
		params[1] = m->room->id;
		params[2] = id;
		code = db_query(chat->w->db, "INSERT INTO read_markers "
		    "(user_id, room_id, last_read) SELECT $1::bigint, $2, "
		    "least($3::bigint, coalesce((SELECT max(id) FROM messages "
		    "WHERE room_id = $2), 0)) ON CONFLICT (user_id, room_id) "
		    "DO UPDATE SET last_read = greatest(read_markers.last_read, "
		    "excluded.last_read) RETURNING last_read", 3, params,
		    chat_v2_read_cb, p) == 0 ? CHAT_V2_OK : CHAT_V2_UNAVAILABLE;
		break;
	case CHAT_V2_NONE:
		break;
	}
	if (code != CHAT_V2_OK) {
		chat_v2_pending_error(p, code, "the service is unavailable "
		    "right now; try again");
		chat_pending_done(p);
	}
done:
	chat_v2_cmd_free(&cmd);
}

/* An error event for cmd to m, at once. */
static void
chat_v2_error(struct chat_member *m, const struct chat_v2_cmd *cmd,
    enum chat_v2_code code, const char *why, int64_t retry_ms)
{
	struct evbuffer *b;

	if (m->ws == NULL || ws_closing(m->ws) || (b = evbuffer_new()) == NULL)
		return;
	chat_v2_write_error(b, cmd, code, why, retry_ms);
	chat_send_json(m, b, 0);
	evbuffer_free(b);
}

/* The same for a command answered later, if its member is still there. */
static void
chat_v2_pending_error(struct chat_pending *p, enum chat_v2_code code,
    const char *why)
{
	struct chat_member *m = chat_member_of(p->conn);
	struct chat_v2_cmd cmd;
	static const char *const names[] = {
		[CHAT_V2_NONE] = NULL, [CHAT_V2_SEND] = "send",
		[CHAT_V2_EDIT] = "edit", [CHAT_V2_DELETE] = "delete",
		[CHAT_V2_TYPING] = "typing", [CHAT_V2_READ] = "read"
	};

	if (m == NULL || m->room == NULL)
		return;
	memset(&cmd, 0, sizeof(cmd));
	if ((cmd.opname = names[p->op]) != NULL)
		cmd.opname_len = strlen(cmd.opname);
	if (p->has_cid) {
		cmd.cid = p->cid;
		cmd.cid_len = strlen(p->cid);
	}
	chat_v2_error(m, &cmd, code, why, 0);
}

/* A command's copy, holding m's conn; NULL if out of memory. */
static struct chat_pending *
chat_pending_new(struct chat_member *m, const struct chat_v2_cmd *cmd)
{
	struct chat_pending *p;
	size_t clen = cmd->op == CHAT_V2_EDIT ? cmd->content_len : 0;

	if ((p = calloc(1, sizeof(*p) + clen + 1)) == NULL)
		return NULL;
	p->conn = m->conn;
	p->op = cmd->op;
	p->id = cmd->id;
	if (cmd->cid != NULL && cmd->cid_len < sizeof(p->cid)) {
		memcpy(p->cid, cmd->cid, cmd->cid_len);
		p->has_cid = 1;
	}
	if (clen > 0)
		memcpy(p->content, cmd->content, clen);
	p->content_len = clen;
	conn_hold(p->conn);
	return p;
}

static void
chat_pending_done(struct chat_pending *p)
{
	conn_release(p->conn);
	free(p);
}

/* The XADD of a send, edit or delete was answered. No answer at all: it
 * may have been taken; a send is safe to repeat with the same cid. */
static void
chat_v2_sent_cb(struct bus *bus, struct bus_reply *reply, void *arg)
{
	struct chat_pending *p = arg;

	(void)bus;
	if (reply == NULL || bus_reply_type(reply) == BUS_ERROR)
		chat_v2_pending_error(p, CHAT_V2_UNAVAILABLE, reply == NULL ?
		    "not known to be accepted (the service is unavailable); "
		    "send it again with the same cid" : "not accepted; try "
		    "again");
	chat_pending_done(p);
}

/*
 * An edit's or delete's target, read: the author may edit it; the author
 * or the room's owner may delete it. Then the entry goes to the hub, which
 * gives it the room's next id (and stores it only if the message is still
 * there: a delete that raced wins).
 */
static void
chat_v2_checked_cb(struct db_result *res, void *arg)
{
	struct chat_pending *p = arg;
	struct chat_member *m = chat_member_of(p->conn);
	struct chat_extra x = { NULL, p->id, -1 };
	long long author, owner = 0;
	int edit = p->op == CHAT_V2_EDIT;

	if (m == NULL || m->room == NULL)
		goto done;
	if (res == NULL || !db_result_ok(res)) {
		chat_v2_pending_error(p, CHAT_V2_UNAVAILABLE, "the service is "
		    "unavailable right now; try again");
		goto done;
	}
	if (db_result_ntuples(res) == 0) {
		chat_v2_pending_error(p, CHAT_V2_NOT_FOUND, "no such message "
		    "in this room");
		goto done;
	}
	author = chat_int(res, 0, 0);
	owner = chat_int(res, 0, 1);
	if (author != m->uid && (edit || owner != m->uid)) {
		chat_v2_pending_error(p, CHAT_V2_FORBIDDEN, edit ? "only its "
		    "author may edit a message" : "only its author or the "
		    "room's owner may delete a message");
		goto done;
	}
	if (chat_inbox_op(m->conn->worker->chat, m, edit ? "edit" : "delete",
	    edit ? p->content : NULL, p->content_len, &x, chat_v2_sent_cb,
	    p) == 0)
		return;		/* chat_v2_sent_cb() finishes p */
	chat_v2_pending_error(p, CHAT_V2_UNAVAILABLE, "the service is "
	    "unavailable right now; try again");
done:
	chat_pending_done(p);
}

/* The typing key was free: the typing event goes on the room's channel,
 * to the others (chat_on_room_event() skips the typist's sockets). */
static void
chat_v2_typing_cb(struct bus *bus, struct bus_reply *reply, void *arg)
{
	struct chat_pending *p = arg;
	struct chat_member *m = chat_member_of(p->conn);
	struct evbuffer *b;
	char ts[32];
	size_t len;

	(void)bus;
	if (m == NULL || m->room == NULL || reply == NULL ||
	    bus_reply_type(reply) != BUS_STRING ||
	    (b = evbuffer_new()) == NULL)
		goto done;
	util_rfc3339(util_now_ms(), ts, sizeof(ts));
	msg_write_typing(b, m->room->id, m->uid, m->username, ts);
	len = evbuffer_get_length(b);
	bus_send(chat_room_bus(m->conn->worker->chat, m->room->id),
	    "PUBLISH %s %b", m->room->channel, evbuffer_pullup(b, -1), len);
	evbuffer_free(b);
done:
	chat_pending_done(p);
}

/* The marker is stored: the user's other sockets to the room, on every
 * worker, are told through the control channel. */
static void
chat_v2_read_cb(struct db_result *res, void *arg)
{
	struct chat_pending *p = arg;
	struct chat_member *m = chat_member_of(p->conn);
	struct chat *chat;
	struct evbuffer *b;
	long long id;

	if (m == NULL || m->room == NULL)
		goto done;
	chat = m->conn->worker->chat;
	if (res == NULL || !db_result_ok(res) || db_result_ntuples(res) != 1) {
		/* 23503: the room is gone (its marker's foreign key). */
		chat_v2_pending_error(p, res != NULL &&
		    strcmp(db_result_sqlstate(res), "23503") == 0 ?
		    CHAT_V2_NOT_FOUND : CHAT_V2_UNAVAILABLE, "the read marker "
		    "was not stored; try again");
		goto done;
	}
	if (util_parse_int(db_result_value(res, 0, 0), 0, INT64_MAX, &id) ==
	    -1 || (b = evbuffer_new()) == NULL)
		goto done;
	msg_write_read(b, m->room->id, id, m->uid, chat->wid, m->conn->id);
	bus_send(chat->w->redis, "PUBLISH %s %b", chat->control_channel,
	    evbuffer_pullup(b, -1), evbuffer_get_length(b));
	evbuffer_free(b);
done:
	chat_pending_done(p);
}
