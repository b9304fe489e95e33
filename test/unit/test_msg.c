/* Unit tests of common/msg.c: the register entry's history field. */
#include "config.h"

#include <string.h>

#include "common/msg.h"
#include "test/unit/tap.h"

/* A register entry, with history = h unless h is NULL. */
static int
parse_register(struct msg_entry *e, const char *h)
{
	const char *argv[14] = { "op", "register", "room", "lobby", "worker",
	    "vm:1", "conn", "7", "user", "3", "username", "alice", "history",
	    h };
	size_t lens[14];
	size_t n = h != NULL ? 14 : 12;
	char err[128];

	for (size_t i = 0; i < n; i++)
		lens[i] = strlen(argv[i]);
	return msg_entry_parse(e, argv, lens, n, 4096, err, sizeof(err));
}

int
main(void)
{
	struct msg_entry e;

	ok(parse_register(&e, NULL) == 0 && e.history == -1,
	    "without history: -1 (the hub's own setting)");
	ok(parse_register(&e, "5") == 0 && e.history == 5, "history 5");
	ok(parse_register(&e, "0") == 0 && e.history == 0, "history 0");
	ok(parse_register(&e, "100000") == 0 && e.history == MSG_HISTORY_MAX,
	    "a large history is capped at %d", MSG_HISTORY_MAX);
	ok(parse_register(&e, "99999999999999999999") == -1,
	    "an overflowing history is refused");
	ok(parse_register(&e, "-1") == -1, "a negative history is refused");
	ok(parse_register(&e, "5x") == -1, "garbage is refused");
	ok(parse_register(&e, "") == -1, "an empty history is refused");
	return tap_done();
}
