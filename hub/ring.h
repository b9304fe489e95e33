/*
 * ring: a room's recent history in the hub (the last `keep` messages as
 * clients see them now: edited content, deleted ones left out), rendered
 * once for every joiner until it changes. rooms.c owns one per loaded
 * room. Functions taking a ring accept NULL (a room not loaded) and do
 * nothing then.
 */
#ifndef GC_HUB_RING_H
#define GC_HUB_RING_H

#include <stddef.h>
#include <stdint.h>

struct evbuffer;
struct room_ring;

/* An empty ring of cap messages; NULL if out of memory. */
struct room_ring *ring_new(int cap);
void	ring_free(struct room_ring *ring);
/* Forget every message. */
void	ring_clear(struct room_ring *ring);
int	ring_cap(const struct room_ring *ring);

/*
 * Keep message id (rendered from the fields; edited_ms 0 if never edited)
 * as the newest; the oldest goes when the ring is full. Ids must grow.
 */
void	ring_add(struct room_ring *ring, const char *room, int64_t id,
	    int64_t user, const char *username, const char *content,
	    size_t content_len, int64_t ts_ms, int64_t edited_ms);
/* The same for a message event rendered already (ev: '}' last). */
void	ring_push(struct room_ring *ring, int64_t id, struct evbuffer *ev,
	    int64_t user, const char *username, int64_t ts_ms);
/* Message target was edited at ts_ms (content) or deleted (NULL). */
void	ring_change(struct room_ring *ring, const char *room, int64_t target,
	    const char *content, size_t content_len, int64_t ts_ms);
/*
 * Append to out the elements of a history message: the newest max
 * messages with ids up to upto, oldest first, each with "history":true,
 * separated by commas.
 */
void	ring_history(struct room_ring *ring, struct evbuffer *out,
	    int64_t upto, int max);

#endif
