/*
 * rooms: what the hub knows of chat rooms: each room's last event id and
 * recent history (ring.h: the messages as clients see them now, edits
 * applied, deletes left out), and presence: which
 * connection of which worker is in which room, and so which users. Every
 * change that others must see is written through the hub's transaction
 * (tx.h), in the order clients must see it:
 *	history (to the joiner's worker), join, HSET clients, HSET presence
 *	leave, HDEL clients, HDEL presence
 *	message, edit or delete (room channel), then its ack (worker channel)
 * Operations are O(1) per event (hash tables), except a worker's removal,
 * which is O(its connections).
 */
#ifndef GC_HUB_ROOMS_H
#define GC_HUB_ROOMS_H

#include <stddef.h>
#include <stdint.h>

struct conf;
struct tx;
struct rooms;
struct room_ring;
struct evbuffer;

enum room_state {
	ROOM_UNKNOWN,	/* not loaded from PostgreSQL (presence only) */
	ROOM_LOADING,	/* asked for by the batch in progress */
	ROOM_LOADED,	/* exists; last_id and history are known */
	ROOM_MISSING	/* PostgreSQL has no such room (asked again
			 * when next needed) */
};

struct room {
	char		*id;
	char		*channel;	/* <p>room:<id> */
	char		*clients_key;	/* <p>room:<id>:clients */
	enum room_state	 state;
	int64_t		 last_id;	/* highest message id stored,
					 * as far as published or loaded */
	int64_t		 next_id;	/* batch scratch: next id */
	unsigned	 mark;		/* batch scratch: next_id set */
	int64_t		 hold;		/* batch scratch: lowest id it
					 * publishes again later on */
	size_t		 nconns;	/* registered connections */
	int64_t		 used_ms;	/* monotonic: last event */
	struct room_ring *ring;		/* history, NULL until loaded */
	int		 keep;		/* messages the ring keeps: the most
					 * any joiner's instance asked for
					 * (history_on_join), this hub's
					 * at least */
};

/*
 * Everything starts empty. Changes go into tx; presence_key is
 * <p>hub:presence. conf, tx and presence_key must outlive the rooms.
 */
struct rooms *rooms_new(const struct conf *conf, struct tx *tx,
	    const char *presence_key);
void	rooms_free(struct rooms *rs);
/* Forget every room, connection and worker (leadership ended). */
void	rooms_reset(struct rooms *rs);

/*
 * The room called id, created (ROOM_UNKNOWN) if create and not known;
 * NULL if not known or out of memory. A room lives until rooms_gc() or
 * rooms_reset(); pointers to it stay valid until then.
 */
struct room *rooms_get(struct rooms *rs, const char *id, int create);

/* ---- loading (from PostgreSQL) ------------------------------------------- */

/* r exists with last_id; its history (r->keep messages) is emptied, to be
 * refilled with rooms_history_add() oldest first. */
void	rooms_loaded(struct rooms *rs, struct room *r, int64_t last_id);
/* edited_ms: the last edit's time, 0 if none. */
void	rooms_history_add(struct rooms *rs, struct room *r, int64_t id,
	    int64_t user, const char *username, const char *content,
	    size_t content_len, int64_t ts_ms, int64_t edited_ms);
/* Drop r's loaded state (a write failed): it is loaded again when next
 * needed. Presence stays. */
void	rooms_unload(struct rooms *rs, struct room *r);

/* ---- events (inside a hub transaction) ----------------------------------- */

/*
 * Publish message id of r (r must be ROOM_LOADED) and keep it in the
 * history. An id not above r's last one (a message an earlier hub stored
 * but may not have published) is published, but not kept twice.
 */
void	rooms_message(struct rooms *rs, struct room *r, int64_t id,
	    int64_t user, const char *username, const char *content,
	    size_t content_len, int64_t ts_ms);
/*
 * Publish edit (content not NULL) or delete id of message target of r
 * (ROOM_LOADED); the history keeps the message as it is now: edited, or
 * left out. An id not above r's last one is a replay: published only.
 */
void	rooms_change(struct rooms *rs, struct room *r, int64_t id,
	    int64_t target, const char *content, size_t content_len,
	    int64_t ts_ms);
/* Tell worker wid that the send cid of its connection conn has id. */
void	rooms_ack(struct rooms *rs, struct room *r, const char *wid,
	    uint64_t conn, const char *cid, int64_t id, int64_t ts_ms);
/*
 * Connection conn of worker wid joins r (ROOM_LOADED): the history goes
 * to the worker's channel, then the join event to the room. The history
 * ends at id `below` - 1 at most (its upto says so): messages from there
 * on, stored by an earlier hub but not yet published, follow live, and a
 * worker must not take them for replays it has seen. INT64_MAX: no limit.
 * history is how many messages the joiner gets at most (its instance's
 * history_on_join; r->keep at least that much, or it gets fewer). rejoin:
 * a connection that stayed open while the hub took its worker for dead,
 * registered again: presence only (no history, no join event; the room
 * saw its join before). Returns 0, 1 if that connection is registered
 * already (a replayed entry: it was all done then), -1 if out of memory.
 */
int	rooms_register(struct rooms *rs, struct room *r, const char *wid,
	    uint64_t conn, int64_t user, const char *username, int64_t ts_ms,
	    int64_t below, int history, int rejoin);
/* The connection leaves: 0, or 1 if it was not registered. */
int	rooms_unregister(struct rooms *rs, const char *room, const char *wid,
	    uint64_t conn, int64_t ts_ms);
/* Every connection of worker wid leaves, and the worker is told so on its
 * channel ({"type":"dropped"}), in case it lives; returns how many. */
size_t	rooms_worker_gone(struct rooms *rs, const char *wid,
	    int64_t ts_ms);

/* ---- presence kept in Redis ---------------------------------------------- */

/* One field of <p>hub:presence and its value: 0, or -1 if unreadable. */
int	rooms_restore(struct rooms *rs, const char *field,
	    const char *value);

/*
 * The workers that have connections, for the heartbeat check: fn is called
 * with each worker's id; added is when (monotonic ms) the hub first saw
 * one of its connections, alive whether its heartbeat was ever seen.
 */
typedef void rooms_worker_fn(const char *wid, int64_t added, int alive,
    void *arg);
void	rooms_workers(struct rooms *rs, rooms_worker_fn *fn, void *arg);
/* The heartbeat of worker wid was seen. */
void	rooms_worker_alive(struct rooms *rs, const char *wid);

/* ---- housekeeping -------------------------------------------------------- */

/*
 * Free rooms nobody is in: at once those not loaded, after idle_ms those
 * loaded. Not while a batch holds room pointers.
 */
void	rooms_gc(struct rooms *rs, int64_t now_ms, int64_t idle_ms);
/* Rooms with at least one connection; connections; rooms in memory. */
size_t	rooms_active(const struct rooms *rs);
size_t	rooms_connections(const struct rooms *rs);
size_t	rooms_count(const struct rooms *rs);

#endif
