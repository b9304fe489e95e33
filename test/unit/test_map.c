/*
 * Unit tests of common/map.c: what rooms.c and chat.c rely on: lookups
 * among many keys, owned key copies, walks that see each entry once and
 * may delete it, and a table that shrinks back once emptied.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/hash.h"
#include "common/map.h"
#include "test/unit/tap.h"

#define NKEYS	100000

static int vals[NKEYS];
static unsigned char seen[NKEYS];

static void
key_of(int i, char *buf, size_t len)
{
	snprintf(buf, len, "room-%d", i);
}

/* Walk m, counting in seen[] how often each value came; if del, delete
 * each value with an even index as it comes. Returns how many came. */
static size_t
walk(struct map *m, int del)
{
	struct map_iter it;
	size_t n = 0;
	char k[32];
	int *v;

	memset(seen, 0, sizeof(seen));
	map_iter_init(&it, m);
	while ((v = map_iter_next(&it)) != NULL) {
		n++;
		seen[*v]++;
		if (del && *v % 2 == 0) {
			key_of(*v, k, sizeof(k));
			if (map_del(m, k) != v)
				return 0;
		}
	}
	return n;
}

/* 1 if the last walk returned each value once, if all, or else each
 * odd one once and no even one. */
static int
seen_once(int all)
{
	for (int i = 0; i < NKEYS; i++)
		if (seen[i] != (all || i % 2 == 1))
			return 0;
	return 1;
}

static void
test_small(void)
{
	static const char *const keys[] = {
		"", "a", "ab", "a b", "lobby", "Lobby", "lobby ", "é",
	};
	size_t nkeys = sizeof(keys) / sizeof(keys[0]);
	struct map m = { 0 };
	char buf[32];
	int ok_all = 1;

	ok(map_get(&m, "lobby") == NULL && map_del(&m, "lobby") == NULL &&
	    map_count(&m) == 0 && walk(&m, 0) == 0,
	    "an empty map finds nothing, deletes nothing, walks nothing");

	for (size_t i = 0; i < nkeys; i++)
		ok_all &= map_put(&m, keys[i], &vals[i]) == 0;
	for (size_t i = 0; i < nkeys; i++)
		ok_all &= map_get(&m, keys[i]) == &vals[i];
	ok(ok_all && map_count(&m) == nkeys, "keys that differ by a byte, "
	    "a space or their case are told apart (%zu)", map_count(&m));
	ok(map_get(&m, "lobbyx") == NULL && map_get(&m, "lob") == NULL,
	    "a key's prefix or extension is not the key");

	snprintf(buf, sizeof(buf), "%s", "copied");
	ok(map_put(&m, buf, &vals[10]) == 0, "put from a buffer");
	memset(buf, 'x', sizeof(buf) - 1);
	ok(map_get(&m, "copied") == &vals[10], "the map keeps its own copy "
	    "of the key");

	ok(map_del(&m, "lobby") == &vals[4], "del returns the value");
	ok(map_get(&m, "lobby") == NULL && map_get(&m, "Lobby") == &vals[5],
	    "the key is gone, its neighbours stay");
	ok(map_del(&m, "lobby") == NULL, "a second del finds nothing");
	ok(map_count(&m) == nkeys, "count follows puts and dels (%zu)",
	    map_count(&m));

	map_clear(&m);
	ok(map_count(&m) == 0 && map_get(&m, "a") == NULL,
	    "clear empties the map");
	ok(map_put(&m, "a", &vals[1]) == 0 && map_get(&m, "a") == &vals[1],
	    "a cleared map is usable again");
	map_clear(&m);
}

static void
test_many(void)
{
	struct map m = { 0 };
	size_t nb;
	char k[32];
	int ok_all = 1;

	for (int i = 0; i < NKEYS; i++) {
		key_of(i, k, sizeof(k));
		ok_all &= map_put(&m, k, &vals[i]) == 0;
	}
	ok(ok_all && map_count(&m) == NKEYS, "%d keys put", NKEYS);
	for (int i = 0; i < NKEYS; i++) {
		key_of(i, k, sizeof(k));
		ok_all &= map_get(&m, k) == &vals[i];
	}
	ok(ok_all, "each of them is found with its value");
	ok(map_get(&m, "room-100000") == NULL && map_get(&m, "room-") ==
	    NULL, "keys never put are not found");
	ok(m.nb >= map_count(&m), "the table grew with them: %zu buckets "
	    "for %zu keys", m.nb, map_count(&m));

	ok(walk(&m, 0) == NKEYS && seen_once(1), "a walk returns "
	    "every value exactly once");

	ok(walk(&m, 1) == NKEYS && seen_once(1), "a walk that "
	    "deletes half of the entries as it goes still returns each once");
	ok(map_count(&m) == NKEYS / 2, "half are left (%zu)",
	    map_count(&m));
	for (int i = 0; i < NKEYS; i++) {
		key_of(i, k, sizeof(k));
		ok_all &= map_get(&m, k) == (i % 2 ? &vals[i] : NULL);
	}
	ok(ok_all, "the deleted ones are gone, the others found");
	ok(walk(&m, 0) == NKEYS / 2 && seen_once(0),
	    "the next walk returns the ones left");

	/* Delete all but 10, as the rooms of a worker empty out. */
	nb = m.nb;
	for (int i = 1; i < NKEYS - 20; i += 2) {
		key_of(i, k, sizeof(k));
		ok_all &= map_del(&m, k) == &vals[i];
	}
	ok(ok_all && map_count(&m) == 10, "deleted down to 10 entries");
	ok(m.nb == nb, "deletes alone do not move entries (%zu buckets)",
	    m.nb);
	ok(walk(&m, 0) == 10, "a walk returns the 10");
	ok(m.nb <= 32, "and starts by shrinking the table: %zu buckets "
	    "(from %zu)", m.nb, nb);
	for (int i = NKEYS - 20; i < NKEYS; i++) {
		key_of(i, k, sizeof(k));
		ok_all &= map_get(&m, k) == (i % 2 ? &vals[i] : NULL);
	}
	ok(ok_all, "the 10 are found after the shrink");

	ok(walk(&m, 1) == 10 && map_count(&m) == 10, "a walk deleting "
	    "the even ones deletes none of the 10 (odd)");
	for (int i = NKEYS - 20; i < NKEYS; i++) {
		key_of(i, k, sizeof(k));
		(void)map_del(&m, k);
	}
	ok(map_count(&m) == 0 && walk(&m, 0) == 0, "emptied");
	map_clear(&m);
}

/* Deleting every entry during one walk, from one entry to many. */
static void
test_walk_delete_all(void)
{
	static const int sizes[] = { 1, 2, 16, 17, 1000 };
	struct map_iter it;
	char k[32];
	int *v;

	for (size_t s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++) {
		struct map m = { 0 };
		size_t n = 0;
		int ok_all = 1;

		for (int i = 0; i < sizes[s]; i++) {
			key_of(i, k, sizeof(k));
			ok_all &= map_put(&m, k, &vals[i]) == 0;
		}
		map_iter_init(&it, &m);
		while ((v = map_iter_next(&it)) != NULL) {
			key_of(*v, k, sizeof(k));
			ok_all &= map_del(&m, k) == v;
			n++;
		}
		ok(ok_all && n == (size_t)sizes[s] && map_count(&m) == 0,
		    "a walk deleting each entry it meets empties a map of %d "
		    "(%zu returned)", sizes[s], n);
		map_clear(&m);
	}
}

int
main(void)
{
	unsigned char key[HASH_KEY_LEN] = "gochat map test";

	for (int i = 0; i < NKEYS; i++)
		vals[i] = i;
	hash_set_key(key);
	test_small();
	test_many();
	test_walk_delete_all();
	/* The same under another key: nothing depends on the hashes. */
	key[0] ^= 1;
	hash_set_key(key);
	test_many();
	return tap_done();
}
