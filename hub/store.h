/*
 * store: the hub's PostgreSQL side. It loads what the hub needs to know of
 * a room (that it exists, its last message id, its recent history) and
 * writes the broadcasts of a batch in one statement, recognising those an
 * earlier hub already stored (messages.inbox_id is unique) so that they are
 * published again with the id they were given then, not a new one.
 * Writes are fenced (SPEC.md section 11): store_fence() raises a
 * partition's epoch when its lease is taken, and store_write() stores
 * nothing unless that epoch is still the one it was given.
 */
#ifndef GC_HUB_STORE_H
#define GC_HUB_STORE_H

#include <stddef.h>
#include <stdint.h>

struct event_base;
struct conf;
struct store;

enum store_status {
	STORE_OK,
	STORE_AWAY,	/* PostgreSQL unreachable or the query timed out:
			 * nothing is known, try again later */
	STORE_ERROR,	/* PostgreSQL refused the statement (logged) */
	STORE_FENCED	/* store_write(): the partition's epoch is no
			 * longer ours (another hub took it): nothing was
			 * stored */
};

/* What became of one message of store_write(). */
enum store_result {
	STORE_PENDING,	/* not known yet */
	STORE_NEW,	/* stored now, with the id and ts given */
	STORE_DUP,	/* stored before under this inbox id: id and ts_ms
			 * now hold the stored ones */
	STORE_BAD,	/* refused (logged): not stored, never will be */
	STORE_CID	/* a send whose cid (same user, same room, within
			 * 24 h) is stored already: nothing stored; id and
			 * ts_ms hold the first message's, to acknowledge */
};

/* What a row of messages is (sql/004_chat_v2.sql). */
enum store_kind {
	STORE_MESSAGE,
	STORE_EDIT,
	STORE_DELETE
};

/* One broadcast to store. The strings belong to the caller. */
struct store_msg {
	const char	*inbox_id;	/* the stream entry id */
	const char	*room;
	const char	*username;
	const char	*content;	/* no NUL byte: PostgreSQL text */
	size_t		 content_len;
	int64_t		 id;		/* the room's message id */
	int64_t		 user;
	int64_t		 ts_ms;		/* created_at, epoch ms */
	enum store_kind	 kind;
	int64_t		 target;	/* edit, delete: the message */
	const char	*cid;		/* a message's client id, or NULL */
	enum store_result result;	/* set by store_write() */
};

/* A message of a room's history, or a room with none (id == 0). */
struct store_row {
	const char	*room;
	int64_t		 last_id;	/* the room's highest id, or 0 */
	int64_t		 id;		/* 0: no message in the row */
	int64_t		 user;
	int64_t		 ts_ms;
	int64_t		 edited_ms;	/* the last edit's time, or 0 */
	const char	*username;
	const char	*content;
	size_t		 content_len;
};

typedef void store_cb(enum store_status st, void *arg);
/* epoch (for STORE_OK): the partition's epoch, now ours. */
typedef void store_fence_cb(enum store_status st, int64_t epoch, void *arg);
/*
 * rows (for STORE_OK) are valid during the call only: for each room that
 * exists, its history messages oldest first, or one row with id == 0 when
 * it has none. A room that does not exist has no row.
 */
typedef void store_load_cb(enum store_status st, const struct store_row *rows,
    size_t nrows, void *arg);

/* Connects a pool of its own (conf->database_url); NULL if that is
 * invalid. */
struct store *store_new(struct event_base *base, const struct conf *conf);
/* Fails what is in flight (callbacks get STORE_AWAY), then frees. */
void	store_free(struct store *s);

/*
 * Load rooms[0..n) with their last `history` messages. Returns 0 when the
 * query is under way (cb is called once, later), -1 when PostgreSQL is
 * unreachable (cb is not called).
 */
int	store_load(struct store *s, const char *const *rooms, size_t n,
	    int history, store_load_cb *cb, void *arg)
	    __attribute__((warn_unused_result));

/*
 * The lease of the partition was just taken by holder (the lease value):
 * raise the partition's epoch in PostgreSQL (creating its row at 1), and
 * give the new one to cb. The raise waits for every store_write() still
 * running under the old epoch; none can begin after it. Returns as
 * store_load() does.
 */
int	store_fence(struct store *s, int partition, const char *holder,
	    store_fence_cb *cb, void *arg) __attribute__((warn_unused_result));

/*
 * Store the messages of msgs[0..n) whose result is STORE_PENDING (the
 * others are left alone) and set each one's result. With isolate, each
 * message is written by a statement of its own, so that one PostgreSQL
 * refuses is marked STORE_BAD instead of failing the others; otherwise all
 * go in one statement and a refusal fails the call (STORE_ERROR). msgs
 * must stay valid until cb has run. Returns 0 when under way (cb is called
 * once, later), -1 when PostgreSQL is unreachable or nothing is pending (cb
 * is not called). Only while partition's epoch is still epoch (the one
 * store_fence() gave): otherwise nothing is stored and cb gets
 * STORE_FENCED.
 */
int	store_write(struct store *s, int partition, int64_t epoch,
	    struct store_msg *msgs, size_t n, int isolate, store_cb *cb,
	    void *arg)
	    __attribute__((warn_unused_result));

/*
 * Before giving ids to replayed entries: find those of msgs[0..n) with
 * result STORE_PENDING that are stored already. Found: STORE_DUP with the
 * stored id and ts_ms; another message under that inbox id: STORE_BAD;
 * not found: still STORE_PENDING. Results change only if cb gets
 * STORE_OK. Returns as store_write() does.
 */
int	store_find(struct store *s, struct store_msg *msgs, size_t n,
	    store_cb *cb, void *arg) __attribute__((warn_unused_result));

#endif
