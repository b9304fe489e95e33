/*
 * msg: the vocabulary between workers and the hub, over Redis. Names of
 * keys and channels, the fields of inbox entries, and the events the hub
 * publishes. Both sides use these functions so the two never disagree.
 *
 * Keys and channels (prefix = redis_prefix, "gochat:" by default):
 *   <p>hub:inbox                stream, workers XADD, the hub reads it with
 *                               the consumer group "hub" (consumer "hub")
 *   <p>hub:leader               the hub leader lease
 *   <p>hub:hubs                 sorted set: the hubs alive (lease value
 *                               -> Redis time in ms of their last tick)
 * With partitions > 1 (SPEC section 11) partition <n> (0 .. partitions-1)
 * has <p>hub:inbox:<n>, <p>hub:leader:<n> and <p>hub:presence:<n> instead
 * of the three unsuffixed keys, and workers add a room's entries to its
 * partition's inbox; <p>hub:inbox stays the operators' door: the leader
 * of partition 0 moves each entry there to its room's partition inbox.
 *   <p>room:<id>                channel: every event of room <id>, exactly
 *                               as clients receive it (JSON text)
 *   <p>room:<id>:clients        hash: user id -> username of the users
 *                               connected to room <id> now (HLEN = count)
 *   <p>worker:<wid>             channel: the hub's messages to one worker
 *                               (history for a joining connection)
 *   <p>worker:<wid>:alive       key with a short TTL: the worker's heartbeat
 *   <p>control                  channel: account events every worker hears
 *   <p>hub:presence             hash kept by the hub: "<room> <wid> <conn>"
 *                               -> "<user id> <username>", one field per
 *                               registered connection, so that a hub that
 *                               takes over rebuilds presence from it
 *   <wid> is "<instance>:<pid>", unique across instances.
 * The workers' own keys (sessions, rate limits) are named here too:
 *   <p>session:<sha256 hex>, <p>user:<id>:sessions,
 *   <p>login:fail:{user,name,addr}:<subject>, <p>limit:<what>:<subject>,
 *   <p>stats:<instance>:<pid> (every process's counters),
 *   <p>typing:<room>:<uid> (a gochat.v2 typing event went out; 3 s TTL).
 *
 * Inbox entries are flat field/value lists; every entry has "op":
 *   op register    room, worker, conn, user, username [, history]
 *                  [, rejoin]
 *                  (history: the worker's history_on_join, the number of
 *                  messages its joiner gets; the hub caps it at
 *                  MSG_HISTORY_MAX; without it, the hub's own setting.
 *                  rejoin "1": a connection that stayed open, registered
 *                  again after a "dropped": no history, and a join event
 *                  only if its user was not listed (the room heard the
 *                  leave); absent or "0": a join)
 *   op unregister  room, worker, conn, user, username
 *   op broadcast   room, user, username, content [, worker, conn]
 *                  [, cid]
 *                  (an operator's XADD has only room, username, content:
 *                  user defaults to 0. cid: a gochat.v2 send's client id,
 *                  1-64 characters: the hub acknowledges it to the worker, and a
 *                  second one of the same user in the same room within 24 h
 *                  stores nothing and is acknowledged with the first id)
 *   op edit        room, user, username, target, content, worker, conn
 *   op delete      room, user, username, target, worker, conn
 *                  (gochat.v2: the worker checked the author or owner;
 *                  each gets the room's next id, is stored with its target
 *                  and published as an edit or delete event)
 * Entries that do not parse are acknowledged and logged, never retried.
 *
 * Events on <p>room:<id> (one JSON object each, as sent to clients):
 *   {"type":"message","id":N,"roomId":..,"userId":..,"username":..,
 *    "content":..,"ts":"RFC 3339"}
 *   (an edited message, in histories and resumes, adds "edited":"<ts>")
 *   {"type":"join"|"leave","roomId":..,"userId":..,"username":..,"ts":..}
 *   {"type":"edit","id":N,"roomId":..,"target":M,"content":..,"ts":..}
 *   {"type":"delete","id":N,"roomId":..,"target":M,"ts":..}
 *   {"type":"typing","roomId":..,"userId":..,"username":..,"ts":..}
 *   (typing: published by a worker directly, at most one per user and
 *   room every 3 s by <p>typing:<room>:<uid>; never stored, no id)
 * Messages on <p>worker:<wid>:
 *   {"type":"history","conn":C,"roomId":..,"upto":N,"messages":[message
 *    events with "history":true, oldest first]}
 *   where upto is the id of the room's last message when the joiner was
 *   registered: live events with an id above it follow on the room channel.
 *   {"type":"ack","conn":C,"roomId":..,"cid":..,"id":N,"ts":..}
 *   a broadcast with a cid from connection C got id N (or had it already)
 *   {"type":"dropped","partition":P}
 *   the leader of partition P missed the worker's heartbeat and dropped
 *   the presence of all its connections in that partition's rooms (their
 *   leaves are published): the worker registers the ones still open in
 *   rooms of partition P again (register with rejoin "1"), so presence is
 *   rebuilt without closing them (each user's join is announced once
 *   more, after the leave the room heard).
 * Messages on <p>control:
 *   {"type":"user_deleted","userId":N}
 *   {"type":"session_revoked","userId":N,"session":"<sha256 hex>"}
 *   {"type":"member_removed"|"room_deleted","roomId":..,"userId":N}
 *   (private rooms, SPEC section 10: published by workers/api_rooms.c)
 *   {"type":"read","roomId":..,"userId":N,"id":M,"worker":..,"conn":C}
 *   (gochat.v2: user N's read marker in the room is now M; the user's
 *   other connections to the room are told, not conn C of worker wid)
 */
#ifndef GC_MSG_H
#define GC_MSG_H

#include <stddef.h>
#include <stdint.h>

#include "common/attr.h"

#define MSG_ROOM_ID_MAX		64
#define MSG_ROOM_NAME_MAX	100	/* characters */
#define MSG_USERNAME_MAX	64	/* operators may use longer names than
					 * accounts (32) */
#define MSG_HISTORY_MAX		200	/* history_on_join's upper bound */
#define MSG_PARTITIONS_MAX	1024	/* partitions' upper bound */

enum msg_op {
	MSG_REGISTER,
	MSG_UNREGISTER,
	MSG_BROADCAST,
	MSG_EDIT,		/* gochat.v2: room events with a target */
	MSG_DELETE
};

#define MSG_CID_CHARS		64	/* characters of a client message id */
#define MSG_CID_MAX		(4 * MSG_CID_CHARS)	/* ... in bytes */

/* One parsed inbox entry; strings point into the entry's reply. */
struct msg_entry {
	enum msg_op	 op;
	const char	*room;
	const char	*worker;	/* may be NULL for an operator */
	uint64_t	 conn;
	int64_t		 user;
	const char	*username;
	const char	*content;
	size_t		 content_len;
	int		 history;	/* register: messages wanted, or -1
					 * if the entry does not say */
	int		 rejoin;	/* register: "rejoin" "1", a live
					 * connection registered again after
					 * the hub took its worker for dead
					 * (no join event, no history) */
	const char	*cid;		/* broadcast: client id, or NULL */
	int64_t		 target;	/* edit, delete: the message (> 0) */
};

/*
 * Key and channel names: this file alone spells them (the table above,
 * plus the workers' own keys: sessions, login and rate counters, stats).
 * Each writes prefix (redis_prefix) and the name into buf (len bytes) as
 * snprintf() does, and returns the name's length: >= len means it was cut
 * short. MSG_KEY_MAX holds any of them whose variable parts are at most
 * 128 bytes.
 */
#define MSG_KEY_MAX		256

/* The names that take no parameter. */
enum msg_name {
	MSG_INBOX,	/* <p>hub:inbox */
	MSG_LEADER,	/* <p>hub:leader */
	MSG_PRESENCE,	/* <p>hub:presence */
	MSG_CONTROL,	/* <p>control */
	MSG_HUBS	/* <p>hub:hubs */
};

int	msg_key_name(char *buf, size_t len, const char *prefix,
	    enum msg_name name);
/*
 * The inbox, lease or presence key (name MSG_INBOX, MSG_LEADER or
 * MSG_PRESENCE) of partition part of partitions: the unsuffixed name when
 * partitions is 1, "<name>:<part>" otherwise.
 */
int	msg_key_part(char *buf, size_t len, const char *prefix,
	    enum msg_name name, int part, int partitions);
/* The inbox a worker adds room's entries to (its partition's). */
int	msg_key_inbox(char *buf, size_t len, const char *prefix,
	    const char *room, int partitions);
int	msg_key_room(char *buf, size_t len, const char *prefix,
	    const char *room);
int	msg_key_room_clients(char *buf, size_t len, const char *prefix,
	    const char *room);
int	msg_key_worker(char *buf, size_t len, const char *prefix,
	    const char *wid);
int	msg_key_worker_alive(char *buf, size_t len, const char *prefix,
	    const char *wid);
int	msg_key_session(char *buf, size_t len, const char *prefix,
	    const char *hex);
int	msg_key_user_sessions(char *buf, size_t len, const char *prefix,
	    int64_t user);
/* <p>login:fail:<kind>:<subject>, kind "user", "name" or "addr". */
int	msg_key_login_fail(char *buf, size_t len, const char *prefix,
	    const char *kind, const char *subject);
/* <p>limit:<what>:<subject>. */
int	msg_key_limit(char *buf, size_t len, const char *prefix,
	    const char *what, const char *subject);
/* <p>stats:<instance>:<pid>. */
int	msg_key_stats(char *buf, size_t len, const char *prefix,
	    const char *instance, long pid);
/* <p>typing:<room>:<uid>: a typing event went out less than 3 s ago. */
int	msg_key_typing(char *buf, size_t len, const char *prefix,
	    const char *room, int64_t user);
/* <p>hub:door:<entry id>: the operators' inbox entry id was moved to its
 * partition's inbox on another shard (set there, for a while). */
int	msg_key_door_moved(char *buf, size_t len, const char *prefix,
	    const char *id);
/*
 * The room id of a room channel's name (<p>room:<id>), pointing into
 * channel; NULL if channel is not one.
 */
const char *msg_channel_room(const char *channel, const char *prefix);

/*
 * The type of an event the hub or a worker published (the "type" member
 * of the JSON objects above). Readers switch on it; MSG_EV_UNKNOWN is for
 * anything else, which they log and drop.
 */
enum msg_event {
	MSG_EV_UNKNOWN,
	MSG_EV_MESSAGE,
	MSG_EV_JOIN,
	MSG_EV_LEAVE,
	MSG_EV_HISTORY,
	MSG_EV_DROPPED,
	MSG_EV_USER_DELETED,
	MSG_EV_SESSION_REVOKED,
	MSG_EV_MEMBER_REMOVED,
	MSG_EV_ROOM_DELETED,
	MSG_EV_EDIT,
	MSG_EV_DELETE,
	MSG_EV_ACK,
	MSG_EV_TYPING,
	MSG_EV_READ
};

enum msg_event msg_event_type(const char *type);

/*
 * The type and id of a room event as the hub writes the ones that carry
 * a sequence id (msg_write_message(), msg_write_change()):
 * {"type":"message","id":N, ... }. Reads that front only, and that the
 * object closes: 0 with *ev and *id set; -1 for anything else (another
 * event, another writer's layout), which the reader parses whole.
 */
int	msg_event_peek(const char *payload, size_t len, enum msg_event *ev,
	    int64_t *id);

/*
 * The partition of room (SPEC section 11): CRC16 of the room id (the
 * CCITT/XMODEM variant Redis Cluster hashes keys with) modulo partitions
 * (1 .. MSG_PARTITIONS_MAX). With partitions = 1, always 0.
 */
int	msg_partition(const char *room, int partitions);
/* CRC16-CCITT (XMODEM) of len bytes at data, as Redis Cluster's crc16(). */
uint16_t msg_crc16(const void *data, size_t len);

/* 1 if s (len bytes) is a valid room id: 1-64 of A-Z a-z 0-9 _ -. */
int	msg_room_id_valid(const char *s, size_t len);

/*
 * Parse an entry's field/value pairs (argv[0..n), n even) into e.
 * Returns 0, or -1 with a reason in err (unknown op, missing field,
 * invalid room id, content not valid UTF-8 or over max_content bytes).
 */
int	msg_entry_parse(struct msg_entry *e, const char *const *argv,
	    const size_t *lens, size_t n, size_t max_content, char *err,
	    size_t errlen) GC_MUSTCHECK;

/*
 * Writers of the hub's events, exactly as shown above (ts is RFC 3339 with
 * milliseconds, UTC), appended to out. history adds "history":true, for
 * the elements of a history message.
 */
struct evbuffer;

void	msg_write_message(struct evbuffer *out, int64_t id,
	    const char *room, int64_t user, const char *username,
	    const char *content, size_t content_len, const char *ts,
	    int history);
/* The same with "edited":edited when edited is not NULL. */
void	msg_write_message_edited(struct evbuffer *out, int64_t id,
	    const char *room, int64_t user, const char *username,
	    const char *content, size_t content_len, const char *ts,
	    const char *edited, int history);
/* An edit (content not NULL) or delete event of target. */
void	msg_write_change(struct evbuffer *out, int64_t id, const char *room,
	    int64_t target, const char *content, size_t content_len,
	    const char *ts, int history);
/* An ack; conn 0 leaves "conn" out (the client's form). */
void	msg_write_ack(struct evbuffer *out, uint64_t conn, const char *room,
	    const char *cid, int64_t id, const char *ts);
void	msg_write_typing(struct evbuffer *out, const char *room,
	    int64_t user, const char *username, const char *ts);
/* A read event; user 0 gives the client's form {"type","roomId","id"}. */
void	msg_write_read(struct evbuffer *out, const char *room, int64_t id,
	    int64_t user, const char *wid, uint64_t conn);
/* type is "join" or "leave". */
void	msg_write_presence(struct evbuffer *out, const char *type,
	    const char *room, int64_t user, const char *username,
	    const char *ts);
/*
 * The head of a history message, up to and including "messages":[ ; the
 * caller appends the elements, separated by commas, then "]}".
 */
void	msg_write_history_head(struct evbuffer *out, uint64_t conn,
	    const char *room, int64_t upto);
/* {"type":"dropped","partition":P}, to a worker whose presence in the
 * rooms of partition P the hub dropped. */
void	msg_write_dropped(struct evbuffer *out, int partition);

#endif
