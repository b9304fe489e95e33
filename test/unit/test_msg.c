/* Unit tests of common/msg.c: the register entry's history and rejoin
 * fields. */
#include "config.h"

#include <stdarg.h>
#include <stdint.h>
#include <string.h>
#include <stdio.h>

#include <event2/buffer.h>

#include "common/msg.h"
#include "test/unit/tap.h"

/* A register entry, with field = v unless v is NULL. */
static int
parse_with(struct msg_entry *e, const char *field, const char *v)
{
	const char *argv[14] = { "op", "register", "room", "lobby", "worker",
	    "vm:1", "conn", "7", "user", "3", "username", "alice", field, v };
	size_t lens[14];
	size_t n = v != NULL ? 14 : 12;
	char err[128];

	for (size_t i = 0; i < n; i++)
		lens[i] = strlen(argv[i]);
	return msg_entry_parse(e, argv, lens, n, 4096, err, sizeof(err));
}

#define parse_register(e, h)	parse_with((e), "history", (h))
#define parse_rejoin(e, r)	parse_with((e), "rejoin", (r))

/* Every key and channel name, as SPEC.md section 7 shows them. */
static void
test_names(void)
{
	char k[MSG_KEY_MAX], small[8];
	const char *p = "gochat:";

	(void)msg_key_name(k, sizeof(k), p, MSG_INBOX);
	ok(strcmp(k, "gochat:hub:inbox") == 0, "inbox: %s", k);
	(void)msg_key_name(k, sizeof(k), p, MSG_LEADER);
	ok(strcmp(k, "gochat:hub:leader") == 0, "leader: %s", k);
	(void)msg_key_name(k, sizeof(k), p, MSG_PRESENCE);
	ok(strcmp(k, "gochat:hub:presence") == 0, "presence: %s", k);
	(void)msg_key_name(k, sizeof(k), p, MSG_CONTROL);
	ok(strcmp(k, "gochat:control") == 0, "control: %s", k);
	(void)msg_key_room(k, sizeof(k), p, "lobby");
	ok(strcmp(k, "gochat:room:lobby") == 0, "room channel: %s", k);
	(void)msg_key_room_clients(k, sizeof(k), p, "lobby");
	ok(strcmp(k, "gochat:room:lobby:clients") == 0, "room clients: %s", k);
	(void)msg_key_worker(k, sizeof(k), p, "vm:12");
	ok(strcmp(k, "gochat:worker:vm:12") == 0, "worker channel: %s", k);
	(void)msg_key_worker_alive(k, sizeof(k), p, "vm:12");
	ok(strcmp(k, "gochat:worker:vm:12:alive") == 0, "heartbeat: %s", k);
	(void)msg_key_session(k, sizeof(k), p, "ab12");
	ok(strcmp(k, "gochat:session:ab12") == 0, "session: %s", k);
	(void)msg_key_user_sessions(k, sizeof(k), p, 42);
	ok(strcmp(k, "gochat:user:42:sessions") == 0, "sessions: %s", k);
	(void)msg_key_login_fail(k, sizeof(k), p, "addr", "127.0.0.1");
	ok(strcmp(k, "gochat:login:fail:addr:127.0.0.1") == 0,
	    "login failures: %s", k);
	(void)msg_key_limit(k, sizeof(k), p, "msg", "7");
	ok(strcmp(k, "gochat:limit:msg:7") == 0, "limit: %s", k);
	(void)msg_key_stats(k, sizeof(k), p, "vm", 99);
	ok(strcmp(k, "gochat:stats:vm:99") == 0, "stats: %s", k);
	(void)msg_key_room(k, sizeof(k), "", "x");
	ok(strcmp(k, "room:x") == 0, "an empty prefix: %s", k);
	ok(msg_key_room(small, sizeof(small), p, "lobby") ==
	    (int)strlen("gochat:room:lobby") && strlen(small) ==
	    sizeof(small) - 1, "cut short: the full length is returned");

	(void)msg_key_name(k, sizeof(k), p, MSG_HUBS);
	ok(strcmp(k, "gochat:hub:hubs") == 0, "hubs alive: %s", k);

	/* One partition: the keys of section 7, unchanged. */
	(void)msg_key_part(k, sizeof(k), p, MSG_INBOX, 0, 1);
	ok(strcmp(k, "gochat:hub:inbox") == 0, "1 partition, inbox: %s", k);
	(void)msg_key_part(k, sizeof(k), p, MSG_LEADER, 0, 1);
	ok(strcmp(k, "gochat:hub:leader") == 0, "1 partition, lease: %s", k);
	(void)msg_key_part(k, sizeof(k), p, MSG_PRESENCE, 0, 1);
	ok(strcmp(k, "gochat:hub:presence") == 0, "1 partition, presence: %s",
	    k);
	(void)msg_key_inbox(k, sizeof(k), p, "lobby", 1);
	ok(strcmp(k, "gochat:hub:inbox") == 0, "1 partition, a room's inbox: "
	    "%s", k);
	/* Several: suffixed with the partition. */
	(void)msg_key_part(k, sizeof(k), p, MSG_INBOX, 0, 16);
	ok(strcmp(k, "gochat:hub:inbox:0") == 0, "16 partitions, inbox 0: %s",
	    k);
	(void)msg_key_part(k, sizeof(k), p, MSG_LEADER, 15, 16);
	ok(strcmp(k, "gochat:hub:leader:15") == 0, "lease 15: %s", k);
	(void)msg_key_part(k, sizeof(k), p, MSG_PRESENCE, 1023, 1024);
	ok(strcmp(k, "gochat:hub:presence:1023") == 0, "presence 1023: %s",
	    k);
	/* crc16("123456789") = 0x31c3 = 12739; 12739 % 16 = 3. */
	(void)msg_key_inbox(k, sizeof(k), p, "123456789", 16);
	ok(strcmp(k, "gochat:hub:inbox:3") == 0, "the room's partition's "
	    "inbox: %s", k);
	ok(msg_key_part(small, sizeof(small), p, MSG_INBOX, 7, 16) ==
	    (int)strlen("gochat:hub:inbox:7") && strlen(small) ==
	    sizeof(small) - 1, "a partition key cut short: the full length");

	ok(msg_channel_room("gochat:room:lobby", p) != NULL &&
	    strcmp(msg_channel_room("gochat:room:lobby", p), "lobby") == 0,
	    "the room of a room channel");
	ok(msg_channel_room("gochat:worker:vm:1", p) == NULL,
	    "a worker channel is no room channel");
	ok(msg_channel_room("other:room:lobby", p) == NULL,
	    "another prefix's room channel is not ours");
	ok(msg_channel_room("gochat:roo", p) == NULL, "a short name");
}

static void
test_events(void)
{
	ok(msg_event_type("message") == MSG_EV_MESSAGE, "message");
	ok(msg_event_type("join") == MSG_EV_JOIN, "join");
	ok(msg_event_type("leave") == MSG_EV_LEAVE, "leave");
	ok(msg_event_type("history") == MSG_EV_HISTORY, "history");
	ok(msg_event_type("dropped") == MSG_EV_DROPPED, "dropped");
	{
		struct evbuffer *b = evbuffer_new();
		char *s;

		msg_write_dropped(b, 5);
		evbuffer_add(b, "", 1);
		s = (char *)evbuffer_pullup(b, -1);
		ok(strcmp(s, "{\"type\":\"dropped\",\"partition\":5}") == 0,
		    "dropped names its partition: %s", s);
		evbuffer_free(b);
	}
	ok(msg_event_type("user_deleted") == MSG_EV_USER_DELETED,
	    "user_deleted");
	ok(msg_event_type("session_revoked") == MSG_EV_SESSION_REVOKED,
	    "session_revoked");
	ok(msg_event_type("member_removed") == MSG_EV_MEMBER_REMOVED,
	    "member_removed");
	ok(msg_event_type("room_deleted") == MSG_EV_ROOM_DELETED,
	    "room_deleted");
	ok(msg_event_type("Message") == MSG_EV_UNKNOWN, "case matters");
	ok(msg_event_type("") == MSG_EV_UNKNOWN, "empty: unknown");
	ok(msg_event_type("messages") == MSG_EV_UNKNOWN, "a longer name");
}

/* msg_event_peek() on s (NUL-terminated); its id, or -1 if it declined. */
static int64_t
peek(const char *s, enum msg_event *ev)
{
	int64_t id = -1;

	*ev = MSG_EV_UNKNOWN;
	return msg_event_peek(s, strlen(s), ev, &id) == 0 ? id : -1;
}

/* The hub's own events are read from their front, all else declined. */
static void
test_event_peek(void)
{
	struct evbuffer *b = evbuffer_new();
	enum msg_event ev;
	char *s;

	msg_write_message(b, 42, "lobby", 3, "alice", "hi \"you\"", 8,
	    "2026-12-07T21:00:00.000Z", 0);
	evbuffer_add(b, "", 1);
	s = (char *)evbuffer_pullup(b, -1);
	ok(peek(s, &ev) == 42 && ev == MSG_EV_MESSAGE, "a message: %s", s);
	ok(strcmp(s, "{\"type\":\"message\",\"id\":42,\"roomId\":\"lobby\","
	    "\"userId\":3,\"username\":\"alice\",\"content\":\"hi \\\"you\\\"\","
	    "\"ts\":\"2026-12-07T21:00:00.000Z\"}") == 0, "its layout");
	evbuffer_drain(b, evbuffer_get_length(b));
	msg_write_message(b, INT64_MAX, "r", 0, "ops", "x", 1,
	    "2026-12-07T21:00:00.000Z", 1);
	evbuffer_add(b, "", 1);
	s = (char *)evbuffer_pullup(b, -1);
	ok(strcmp(s, "{\"type\":\"message\",\"id\":9223372036854775807,"
	    "\"roomId\":\"r\",\"userId\":0,\"username\":\"ops\",\"content\":"
	    "\"x\",\"ts\":\"2026-12-07T21:00:00.000Z\",\"history\":true}") == 0,
	    "the largest id, user 0, from history: %s", s);
	evbuffer_drain(b, evbuffer_get_length(b));
	msg_write_message(b, 1, "r", INT64_MIN, "u", "x", 1, "t", 0);
	evbuffer_add(b, "", 1);
	s = (char *)evbuffer_pullup(b, -1);
	ok(strstr(s, "\"userId\":-9223372036854775808,") != NULL,
	    "the smallest integer: %s", s);
	evbuffer_drain(b, evbuffer_get_length(b));
	msg_write_change(b, 9000000000000LL, "lobby", 41, "new", 3,
	    "2026-12-07T21:00:00.000Z", 1);
	evbuffer_add(b, "", 1);
	s = (char *)evbuffer_pullup(b, -1);
	ok(peek(s, &ev) == 9000000000000LL && ev == MSG_EV_EDIT,
	    "an edit: %s", s);
	evbuffer_drain(b, evbuffer_get_length(b));
	msg_write_change(b, 7, "lobby", 41, NULL, 0,
	    "2026-12-07T21:00:00.000Z", 0);
	evbuffer_add(b, "", 1);
	s = (char *)evbuffer_pullup(b, -1);
	ok(peek(s, &ev) == 7 && ev == MSG_EV_DELETE, "a delete: %s", s);
	evbuffer_drain(b, evbuffer_get_length(b));
	msg_write_presence(b, "join", "lobby", 3, "alice",
	    "2026-12-07T21:00:00.000Z");
	evbuffer_add(b, "", 1);
	s = (char *)evbuffer_pullup(b, -1);
	ok(peek(s, &ev) == -1, "a join is parsed whole");
	evbuffer_free(b);

	ok(peek("{\"type\":\"typing\",\"id\":5,\"userId\":3}", &ev) == -1,
	    "typing (its userId is needed) is parsed whole");
	ok(peek("{\"id\":5,\"type\":\"message\"}", &ev) == -1,
	    "another member order is parsed whole");
	ok(peek("{\"type\":\"message\",\"id\":5,\"content\":\"x", &ev) == -1,
	    "an object cut short is parsed whole");
	ok(peek("{\"type\":\"message\",\"id\":05,\"x\":1}", &ev) == -1,
	    "a leading zero");
	ok(peek("{\"type\":\"message\",\"id\":0,\"x\":1}", &ev) == -1,
	    "id 0");
	ok(peek("{\"type\":\"message\",\"id\":-5,\"x\":1}", &ev) == -1,
	    "a negative id");
	ok(peek("{\"type\":\"message\",\"id\":5.5,\"x\":1}", &ev) == -1,
	    "a fraction");
	ok(peek("{\"type\":\"message\",\"id\":5}", &ev) == -1,
	    "an id that ends the object");
	ok(peek("{\"type\":\"message\",\"id\":999999999999999999,\"x\":1}",
	    &ev) == 999999999999999999LL, "18 digits");
	ok(peek("{\"type\":\"message\",\"id\":1000000000000000000,\"x\":1}",
	    &ev) == -1, "19 digits are parsed whole");
	ok(peek("{\"type\":\"messages\",\"id\":5,\"x\":1}", &ev) == -1,
	    "another type");
	ok(peek("", &ev) == -1 && peek("}", &ev) == -1, "empty payloads");
}

static void
test_rejoin(void)
{
	struct msg_entry e;

	ok(parse_rejoin(&e, NULL) == 0 && e.rejoin == 0,
	    "without rejoin: a join (older workers' entries)");
	ok(parse_rejoin(&e, "0") == 0 && e.rejoin == 0, "rejoin 0: a join");
	ok(parse_rejoin(&e, "1") == 0 && e.rejoin == 1, "rejoin 1");
	ok(parse_rejoin(&e, "2") == -1, "rejoin 2 is refused");
	ok(parse_rejoin(&e, "") == -1, "an empty rejoin is refused");
	ok(parse_rejoin(&e, "1x") == -1, "rejoin 1x is refused");
}

/* A gochat.v2 entry: op with the fields given (NULL-terminated pairs). */
static int
parse_v2(struct msg_entry *e, const char *op, ...)
{
	const char *argv[32] = { "op", op, "room", "lobby", "worker", "vm:1",
	    "conn", "7", "user", "3", "username", "alice" };
	size_t lens[32], n = 12;
	char err[128];
	va_list ap;

	va_start(ap, op);
	while (n < 30 && (argv[n] = va_arg(ap, const char *)) != NULL)
		n++;
	va_end(ap);
	for (size_t i = 0; i < n; i++)
		lens[i] = strlen(argv[i]);
	return msg_entry_parse(e, argv, lens, n, 4096, err, sizeof(err));
}

static void
test_v2_entries(void)
{
	struct msg_entry e;

	ok(parse_v2(&e, "broadcast", "content", "hi", NULL) == 0 &&
	    e.cid == NULL, "a broadcast without cid (v1, operators)");
	ok(parse_v2(&e, "broadcast", "content", "hi", "cid", "c-1", NULL) ==
	    0 && strcmp(e.cid, "c-1") == 0, "a broadcast with its cid");
	ok(parse_v2(&e, "broadcast", "content", "hi", "cid", "", NULL) == -1,
	    "an empty cid is refused");
	ok(parse_v2(&e, "broadcast", "content", "hi", "cid",
	    "0123456789012345678901234567890123456789012345678901234567890123",
	    NULL) == 0, "a cid of 64 characters");
	ok(parse_v2(&e, "broadcast", "content", "hi", "cid",
	    "01234567890123456789012345678901234567890123456789012345678901234",
	    NULL) == -1, "a cid of 65 characters is refused");
	ok(parse_v2(&e, "edit", "target", "12", "content", "new", NULL) == 0 &&
	    e.op == MSG_EDIT && e.target == 12 && e.content_len == 3,
	    "an edit: target and content");
	ok(parse_v2(&e, "edit", "target", "12", NULL) == -1,
	    "an edit without content is refused");
	ok(parse_v2(&e, "edit", "content", "x", NULL) == -1,
	    "an edit without target is refused");
	ok(parse_v2(&e, "delete", "target", "9", NULL) == 0 &&
	    e.op == MSG_DELETE && e.target == 9 && e.content == NULL,
	    "a delete: target, no content");
	ok(parse_v2(&e, "delete", "target", "0", NULL) == -1,
	    "target 0 is refused");
	ok(parse_v2(&e, "delete", "target", "x9", NULL) == -1,
	    "a target that is no number is refused");
	{
		const char *argv[] = { "op", "delete", "room", "lobby",
		    "username", "ops", "target", "3" };
		size_t lens[8];
		char err[128];

		for (size_t i = 0; i < 8; i++)
			lens[i] = strlen(argv[i]);
		ok(msg_entry_parse(&e, argv, lens, 8, 4096, err,
		    sizeof(err)) == -1, "an operator's delete (no worker, "
		    "conn, user) is refused: %s", err);
	}
}

static void
test_partition(void)
{
	ok(msg_crc16("123456789", 9) == 0x31c3,
	    "crc16 of 123456789 is 0x31c3 (Redis Cluster's check value)");
	ok(msg_crc16("", 0) == 0, "crc16 of nothing is 0");
	ok(msg_partition("anything", 1) == 0, "one partition: always 0");
	ok(msg_partition("123456789", 16) == (0x31c3 % 16),
	    "16 partitions: crc16 mod 16");
	ok(msg_partition("123456789", 1024) == (0x31c3 % 1024),
	    "1024 partitions: crc16 mod 1024");
	int seen[16] = { 0 }, all = 1;
	char room[16];
	for (int i = 0; i < 1000; i++) {
		snprintf(room, sizeof(room), "r%d", i);
		seen[msg_partition(room, 16)]++;
	}
	for (int i = 0; i < 16; i++)
		if (seen[i] == 0)
			all = 0;
	ok(all, "1000 rooms reach all 16 partitions");
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
	test_names();
	test_events();
	test_event_peek();
	test_rejoin();
	test_partition();
	test_v2_entries();
	return tap_done();
}
