/*
 * hash: SipHash-2-4 under a key of this process's own, drawn at start-up
 * from the system's random source (util_random()). Owns the key.
 */
#include "config.h"

#include <string.h>

#include "common/hash.h"
#include "common/util.h"

static uint64_t hash_k0, hash_k1;

#define ROTL(x, b)	(uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))
#define SIPROUND do {							\
	v0 += v1; v1 = ROTL(v1, 13); v1 ^= v0; v0 = ROTL(v0, 32);	\
	v2 += v3; v3 = ROTL(v3, 16); v3 ^= v2;				\
	v0 += v3; v3 = ROTL(v3, 21); v3 ^= v0;				\
	v2 += v1; v1 = ROTL(v1, 17); v1 ^= v2; v2 = ROTL(v2, 32);	\
} while (0)

static uint64_t
hash_le64(const unsigned char *p)
{
	uint64_t v = 0;

	for (int i = 7; i >= 0; i--)
		v = (v << 8) | p[i];
	return v;
}

int
hash_init(void)
{
	unsigned char key[HASH_KEY_LEN];

	if (util_random(key, sizeof(key)) == -1)
		return -1;
	hash_set_key(key);
	return 0;
}

void
hash_set_key(const unsigned char *key)
{
	hash_k0 = hash_le64(key);
	hash_k1 = hash_le64(key + 8);
}

uint64_t
hash_bytes(const void *data, size_t len)
{
	const unsigned char *p = data;
	uint64_t v0 = 0x736f6d6570736575ULL ^ hash_k0;
	uint64_t v1 = 0x646f72616e646f6dULL ^ hash_k1;
	uint64_t v2 = 0x6c7967656e657261ULL ^ hash_k0;
	uint64_t v3 = 0x7465646279746573ULL ^ hash_k1;
	uint64_t m, b = (uint64_t)len << 56;
	size_t left = len & 7;

	for (const unsigned char *end = p + (len - left); p < end; p += 8) {
		m = hash_le64(p);
		v3 ^= m;
		SIPROUND;
		SIPROUND;
		v0 ^= m;
	}
	for (size_t i = 0; i < left; i++)
		b |= (uint64_t)p[i] << (8 * i);
	v3 ^= b;
	SIPROUND;
	SIPROUND;
	v0 ^= b;
	v2 ^= 0xff;
	SIPROUND;
	SIPROUND;
	SIPROUND;
	SIPROUND;
	return v0 ^ v1 ^ v2 ^ v3;
}

uint64_t
hash_str(const char *s)
{
	return hash_bytes(s, strlen(s));
}
