/*
 * ring: a room's recent history in the hub, as clients must see it: the
 * last messages, each rendered once as its message event (again when it
 * is edited), deleted ones left out. Owns the items and the cached
 * rendering of a whole history, which stays valid until the next change.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "common/msg.h"
#include "common/util.h"
#include "hub/ring.h"

/* One message of a room's history, rendered once (again when edited). */
struct ring_item {
	int64_t		 id;
	char		*json;		/* the event as published */
	size_t		 len;
	int64_t		 user;		/* what an edit renders again */
	int64_t		 ts_ms;
	char		*username;
};

struct room_ring {
	struct ring_item *items;	/* cap slots, oldest at start */
	int		 cap, len, start;
	struct evbuffer	*cache;		/* the elements of a history
					 * message, or NULL if stale */
};

static int	ring_find(const struct room_ring *, int64_t);
static void	ring_set(struct ring_item *, struct evbuffer *);
static void	ring_changed(struct room_ring *);
static void	ring_remove(struct room_ring *, int);
static void	ring_render(struct evbuffer *, const char *,
		    const struct ring_item *, const char *, size_t,
		    int64_t);
static void	ring_item(struct evbuffer *, const struct ring_item *, int);

int
ring_cap(const struct room_ring *ring)
{
	return ring != NULL ? ring->cap : 0;
}

void
ring_add(struct room_ring *ring, const char *room, int64_t id, int64_t user,
    const char *username, const char *content, size_t content_len,
    int64_t ts_ms, int64_t edited_ms)
{
	struct ring_item it = { .id = id, .user = user, .ts_ms = ts_ms,
	    .username = (char *)username };
	struct evbuffer *b;

	if (ring == NULL || (b = evbuffer_new()) == NULL)
		return;
	ring_render(b, room, &it, content, content_len, edited_ms);
	ring_push(ring, id, b, user, username, ts_ms);
	evbuffer_free(b);
}

void
ring_change(struct room_ring *ring, const char *room, int64_t target,
    const char *content, size_t content_len, int64_t ts_ms)
{
	struct ring_item *it;
	struct evbuffer *b;
	int pos;

	if ((pos = ring_find(ring, target)) < 0)
		return;		/* older than the ring keeps */
	if (content == NULL) {
		ring_remove(ring, pos);
		return;
	}
	if ((b = evbuffer_new()) == NULL)
		return;
	it = &ring->items[(ring->start + pos) % ring->cap];
	ring_render(b, room, it, content, content_len, ts_ms);
	ring_set(it, b);
	ring_changed(ring);
	evbuffer_free(b);
}


struct room_ring *
ring_new(int cap)
{
	struct room_ring *ring;

	if ((ring = calloc(1, sizeof(*ring))) == NULL)
		return NULL;
	ring->cap = cap;
	if (cap > 0 && (ring->items = calloc((size_t)cap,
	    sizeof(*ring->items))) == NULL) {
		free(ring);
		return NULL;
	}
	return ring;
}

void
ring_clear(struct room_ring *ring)
{
	if (ring == NULL)
		return;
	for (int i = 0; i < ring->len; i++) {
		free(ring->items[(ring->start + i) % ring->cap].json);
		free(ring->items[(ring->start + i) % ring->cap].username);
	}
	ring->len = ring->start = 0;
	if (ring->cache != NULL)
		evbuffer_free(ring->cache);
	ring->cache = NULL;
}

void
ring_free(struct room_ring *ring)
{
	if (ring == NULL)
		return;
	ring_clear(ring);
	free(ring->items);
	free(ring);
}

/* Keep the event in ev (a message, '}' last) as the newest; the oldest
 * goes when the ring is full. user, username and ts_ms are what an edit
 * renders it again with. */
void
ring_push(struct room_ring *ring, int64_t id, struct evbuffer *ev,
    int64_t user, const char *username, int64_t ts_ms)
{
	struct ring_item *it;
	char *name;

	if (ring == NULL || ring->cap == 0 || evbuffer_get_length(ev) == 0 ||
	    (name = strdup(username)) == NULL)
		return;
	if (ring->len == ring->cap) {
		it = &ring->items[ring->start];
		free(it->json);
		free(it->username);
		ring->start = (ring->start + 1) % ring->cap;
		ring->len--;
	}
	it = &ring->items[(ring->start + ring->len) % ring->cap];
	it->id = id;
	it->json = NULL;
	it->len = 0;
	it->user = user;
	it->ts_ms = ts_ms;
	it->username = name;
	ring->len++;
	ring_set(it, ev);
	ring_changed(ring);
	if (it->json == NULL)
		ring_remove(ring, ring->len - 1);
}

/* The item's event is now ev's (out of memory: it keeps the old one). */
static void
ring_set(struct ring_item *it, struct evbuffer *ev)
{
	size_t len = evbuffer_get_length(ev);
	char *json;

	if ((json = malloc(len)) == NULL)
		return;
	(void)evbuffer_copyout(ev, json, len);
	free(it->json);
	it->json = json;
	it->len = len;
}

/* The rendered history is stale. */
static void
ring_changed(struct room_ring *ring)
{
	if (ring->cache != NULL)
		evbuffer_free(ring->cache);
	ring->cache = NULL;
}

/* The position (0 oldest) of message id in the ring, or -1. */
static int
ring_find(const struct room_ring *ring, int64_t id)
{
	int lo = 0, hi, mid;
	int64_t v;

	if (ring == NULL)
		return -1;
	/* Ids grow along the ring. */
	for (hi = ring->len - 1; lo <= hi;) {
		mid = lo + (hi - lo) / 2;
		v = ring->items[(ring->start + mid) % ring->cap].id;
		if (v == id)
			return mid;
		if (v < id)
			lo = mid + 1;
		else
			hi = mid - 1;
	}
	return -1;
}

/* A deleted message leaves the ring; the newer ones move down. */
static void
ring_remove(struct room_ring *ring, int pos)
{
	struct ring_item *it = &ring->items[(ring->start + pos) % ring->cap];

	free(it->json);
	free(it->username);
	for (int i = pos; i + 1 < ring->len; i++)
		ring->items[(ring->start + i) % ring->cap] =
		    ring->items[(ring->start + i + 1) % ring->cap];
	ring->len--;
	ring_changed(ring);
}

/* A ring item's message as it is now: content, edited at ts edited. */
static void
ring_render(struct evbuffer *out, const char *room, const struct ring_item *it,
    const char *content, size_t content_len, int64_t edited_ms)
{
	char ts[32], edited[32];

	util_rfc3339(it->ts_ms, ts, sizeof(ts));
	if (edited_ms > 0)
		util_rfc3339(edited_ms, edited, sizeof(edited));
	msg_write_message_edited(out, it->id, room, it->user, it->username,
	    content, content_len, ts, edited_ms > 0 ? edited : NULL, 0);
}

/* One element of a history message: the event with "history":true. */
static void
ring_item(struct evbuffer *out, const struct ring_item *it, int comma)
{
	if (comma)
		(void)evbuffer_add(out, ",", 1);
	(void)evbuffer_add(out, it->json, it->len - 1);
	(void)evbuffer_add(out, ",\"history\":true}", 16);
}

/*
 * Append the last max of the history's elements with ids up to upto,
 * oldest first: each stored event with its closing brace replaced. The
 * whole ring is rendered once per change, however many join meanwhile
 * wanting all of it.
 */
void
ring_history(struct room_ring *ring, struct evbuffer *out, int64_t upto,
    int max)
{
	int end, first;

	if (ring == NULL || ring->len == 0 || max <= 0)
		return;
	/* Ids grow along the ring: those up to upto are its first end. */
	for (end = ring->len; end > 0 && ring->items[(ring->start + end - 1) %
	    ring->cap].id > upto; end--)
		;
	first = end > max ? end - max : 0;
	if (first > 0 || end < ring->len) {
		for (int i = first; i < end; i++)
			ring_item(out, &ring->items[(ring->start + i) %
			    ring->cap], i > first);
		return;
	}
	if (ring->cache == NULL) {
		if ((ring->cache = evbuffer_new()) == NULL)
			return;
		for (int i = 0; i < ring->len; i++)
			ring_item(ring->cache,
			    &ring->items[(ring->start + i) % ring->cap], i > 0);
	}
	(void)evbuffer_add(out, evbuffer_pullup(ring->cache, -1),
	    evbuffer_get_length(ring->cache));
}

