/*
 * map: string-keyed hash tables with chained buckets, a power of two of
 * them, keyed SipHash (hash.c). Owns each table's buckets and key copies.
 * map_del() never moves an entry, which is what lets a walk delete the
 * entry it is at; the buckets shrink only when a walk starts.
 */
#include "config.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/hash.h"
#include "common/map.h"

#define MAP_MIN_BUCKETS	16

struct map_node {
	struct map_node	*next;		/* in its bucket */
	uint32_t	 hash;
	void		*val;
	char		 key[];
};

static int	map_resize(struct map *, size_t);

/* ---- public -------------------------------------------------------------- */

void *
map_get(const struct map *m, const char *key)
{
	uint32_t hash;
	struct map_node *n;

	if (m->nb == 0)
		return NULL;
	hash = (uint32_t)hash_str(key);
	for (n = m->b[hash & (m->nb - 1)]; n != NULL; n = n->next)
		if (n->hash == hash && strcmp(n->key, key) == 0)
			return n->val;
	return NULL;
}

int
map_put(struct map *m, const char *key, void *val)
{
	size_t len = strlen(key);
	struct map_node *n;

	/* Growing may fail: then the chains get longer, nothing worse. */
	if (m->n >= m->nb && map_resize(m, m->nb > 0 ? m->nb * 2 :
	    MAP_MIN_BUCKETS) == -1 && m->nb == 0)
		return -1;
	if ((n = malloc(sizeof(*n) + len + 1)) == NULL)
		return -1;
	memcpy(n->key, key, len + 1);
	n->hash = (uint32_t)hash_str(key);
	n->val = val;
	n->next = m->b[n->hash & (m->nb - 1)];
	m->b[n->hash & (m->nb - 1)] = n;
	m->n++;
	return 0;
}

void *
map_del(struct map *m, const char *key)
{
	uint32_t hash;
	struct map_node **pp, *n;
	void *val;

	if (m->nb == 0)
		return NULL;
	hash = (uint32_t)hash_str(key);
	for (pp = &m->b[hash & (m->nb - 1)]; (n = *pp) != NULL;
	    pp = &n->next)
		if (n->hash == hash && strcmp(n->key, key) == 0) {
			*pp = n->next;
			val = n->val;
			free(n);
			m->n--;
			return val;
		}
	return NULL;
}

size_t
map_count(const struct map *m)
{
	return m->n;
}

void
map_clear(struct map *m)
{
	struct map_node *n, *next;

	for (size_t i = 0; i < m->nb; i++)
		for (n = m->b[i]; n != NULL; n = next) {
			next = n->next;
			free(n);
		}
	free(m->b);
	m->b = NULL;
	m->nb = m->n = 0;
}

/*
 * A map left mostly empty (under a quarter of a bucket per entry) shrinks
 * to about two buckets per entry: a walk then costs what it finds, and
 * map_put() does not grow it back before the entries double. If that
 * fails, the walk goes over the larger table.
 */
void
map_iter_init(struct map_iter *it, struct map *m)
{
	size_t nb = MAP_MIN_BUCKETS;

	if (m->nb > MAP_MIN_BUCKETS && m->n < m->nb / 4) {
		while (nb < 2 * m->n)
			nb *= 2;
		(void)map_resize(m, nb);
	}
	it->m = m;
	it->i = 0;
	it->next = NULL;
}

void *
map_iter_next(struct map_iter *it)
{
	struct map_node *n;

	while (it->next == NULL) {
		if (it->i >= it->m->nb)
			return NULL;
		it->next = it->m->b[it->i++];
	}
	n = it->next;
	it->next = n->next;
	return n->val;
}

/* ---- internal ------------------------------------------------------------ */

/* Rehash every entry into nb buckets (a power of two); -1 if out of
 * memory, with nothing changed. */
static int
map_resize(struct map *m, size_t nb)
{
	struct map_node **b, *n, *next;

	if ((b = calloc(nb, sizeof(*b))) == NULL)
		return -1;
	for (size_t i = 0; i < m->nb; i++)
		for (n = m->b[i]; n != NULL; n = next) {
			next = n->next;
			n->next = b[n->hash & (nb - 1)];
			b[n->hash & (nb - 1)] = n;
		}
	free(m->b);
	m->b = b;
	m->nb = nb;
	return 0;
}
