/*
 * hash: SipHash-2-4 (Aumasson and Bernstein), keyed per process, for the
 * hash tables that hold what clients name (rooms, presence): with a secret
 * key, nobody can craft room ids that pile into one bucket.
 */
#ifndef GC_HASH_H
#define GC_HASH_H

#include <stddef.h>
#include <stdint.h>

#define HASH_KEY_LEN	16

/*
 * Give this process its own random key (call it after fork(), before the
 * loop); -1 if no random bytes could be had. Until then the key is zero.
 */
int	hash_init(void) __attribute__((warn_unused_result));
/* Use key (HASH_KEY_LEN bytes) instead: for tests. */
void	hash_set_key(const unsigned char *key);
/* SipHash-2-4 of len bytes at data, or of the string s, under the key. */
uint64_t hash_bytes(const void *data, size_t len);
uint64_t hash_str(const char *s);

#endif
