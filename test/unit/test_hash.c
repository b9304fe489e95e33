/* Unit tests of common/hash.c: SipHash-2-4 as published, and keyed. */
#include "config.h"

#include <stdio.h>
#include <string.h>

#include "common/hash.h"
#include "test/unit/tap.h"

int
main(void)
{
	unsigned char key[HASH_KEY_LEN], msg[64];
	uint64_t a, b;
	int differ = 0, same = 1;

	/* The reference vectors of the SipHash paper: key 00..0f. */
	for (int i = 0; i < HASH_KEY_LEN; i++)
		key[i] = (unsigned char)i;
	for (int i = 0; i < (int)sizeof(msg); i++)
		msg[i] = (unsigned char)i;
	hash_set_key(key);
	ok(hash_bytes(msg, 0) == 0x726fdb47dd0e0e31ULL, "empty message");
	ok(hash_bytes(msg, 15) == 0xa129ca6149be45e5ULL, "15 bytes (the "
	    "paper's example)");
	ok(hash_bytes(msg, 8) == 0x93f5f5799a932462ULL, "8 bytes");
	ok(hash_str("") == hash_bytes("", 0), "hash_str is hash_bytes");

	/* The same room ids land elsewhere under another key. */
	for (int i = 0; i < 32; i++) {
		char id[16];

		snprintf(id, sizeof(id), "room%d", i);
		hash_set_key(key);
		a = hash_str(id);
		hash_set_key(key);
		same &= a == hash_str(id);
		key[0] ^= 0x80;
		hash_set_key(key);
		b = hash_str(id);
		key[0] ^= 0x80;
		differ += a != b;
	}
	ok(same, "a key gives the same hash every time");
	ok(differ == 32, "another key gives other hashes (%d of 32)", differ);

	ok(hash_init() == 0, "a random key is drawn");
	a = hash_str("lobby");
	ok(hash_init() == 0, "and another");
	ok(hash_str("lobby") != a, "two random keys hash apart");
	return tap_done();
}
