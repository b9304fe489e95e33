/*
 * map: a hash table of pointers keyed by strings, for what clients name
 * (rooms, presence, workers). Keys are hashed with SipHash under this
 * process's key (hash.h: hash_init() before the first put), so ids crafted
 * to collide cannot pile into one bucket. The map owns copies of its keys,
 * never its values.
 *
 * A zeroed struct map is an empty map; map_clear() frees what it holds.
 * The buckets grow with the entries (about one entry per bucket) and shrink
 * when a walk starts, so a lookup costs O(1) and a walk O(entries now),
 * however many there once were.
 */
#ifndef GC_MAP_H
#define GC_MAP_H

#include <stddef.h>

#include "common/attr.h"

struct map_node;

/* Read its fields through the functions below. */
struct map {
	struct map_node	**b;		/* buckets */
	size_t		 nb;		/* a power of two, or 0 */
	size_t		 n;		/* entries */
};

/*
 * A walk over a map, in no particular order. While it walks, the entry it
 * returned last may be map_del()eted, and no other: deleting another could
 * free the one it goes to next; an entry put meanwhile may be missed or
 * seen twice.
 */
struct map_iter {
	const struct map *m;
	size_t		 i;		/* next bucket */
	struct map_node	*next;		/* next entry */
};

/* The value of key, or NULL if it is not there. */
void	*map_get(const struct map *m, const char *key);
/*
 * Add key (copied) with val, which must not be NULL; key must not be there
 * (map_get() first). -1 if out of memory, with nothing changed.
 */
int	 map_put(struct map *m, const char *key, void *val) GC_MUSTCHECK;
/* Remove key; its value (the caller's to free), or NULL if not there. */
void	*map_del(struct map *m, const char *key);
size_t	 map_count(const struct map *m);
/* Remove everything: the keys are freed, the values are not. */
void	 map_clear(struct map *m);

/* Start a walk over m (first shrinking m if it is mostly empty). */
void	 map_iter_init(struct map_iter *it, struct map *m);
/* The next value, or NULL when every entry was returned. */
void	*map_iter_next(struct map_iter *it);

#endif
