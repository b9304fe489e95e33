/*
 * chat: the worker's side of chat. Owns the WebSocket members of this
 * worker, the Redis subscription connection (room channels, this worker's
 * channel, the control channel), and the heartbeat. A member joins by
 * subscribing to its room's channel, then registering with the hub through
 * the inbox; it sees nothing of the room until its history has arrived.
 * Every room event is framed once and the same frame is referenced by
 * every local member's output.
 */
#ifndef GC_CHAT_H
#define GC_CHAT_H

#include <stdint.h>

struct conn;
struct worker;
struct chat;
struct chat_member;

struct chat *chat_new(struct worker *w);
void	chat_free(struct chat *chat);
/* Worker stopping: every member gets close 1001. */
void	chat_stop(struct chat *chat);
/* Refresh this worker's heartbeat key now (also from chat_cron(), and on
 * every connection of its own Redis connection). */
void	chat_heartbeat(struct chat *chat);
/* 1 once Redis has acknowledged a heartbeat: the worker accepts no
 * connection before (its registrations would find the hub without it). */
int	chat_beating(const struct chat *chat);
/* Once a second, from the worker's cron: the heartbeat, empty rooms
 * forgotten, pings and their timeouts. */
void	chat_cron(struct chat *chat);
/* Number of members (for the worker's stats). */
uint64_t chat_members(const struct chat *chat);

/*
 * Answer the upgrade (101 with the handshake's extra headers) and make c a
 * member of room for user uid. session is the Redis key of the session the
 * socket was opened with ("" if none), so a logout can close it. v2: the
 * socket speaks gochat.v2 (SPEC section 9). since >= 0: a resume, the
 * room's events after since replace the join history. The member is
 * attached to c (conn_attach): conn.c reaches it only through its handler
 * vector.
 */
void	chat_upgrade(struct conn *c, const char *extra, const char *room,
	    int64_t uid, const char *username, const char *session, int v2,
	    int64_t since);

/*
 * 1 if, since since_ms (util_mono_ms()), this worker has heard that uid
 * was removed from room or that room was deleted (SPEC section 10), or
 * cannot tell: a membership read before then may be stale, so the join
 * it allowed is refused (workers/api_rooms.c).
 */
int	chat_room_revoked(struct chat *chat, const char *room, int64_t uid,
	    int64_t since_ms);

#endif
