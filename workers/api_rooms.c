/*
 * api_rooms: the chat rooms' HTTP routes (SPEC sections 5 and 10): create,
 * list, one room, delete, who is connected, history, the members of
 * private rooms, direct rooms, and the checks of /ws/joinRoom before the
 * connection is handed to chat.c. Rooms and members live in PostgreSQL;
 * who is connected is the hub's presence hash in Redis. A private room
 * is invisible to a non-member: every route answers it exactly as an
 * unknown room (rooms_unknown()).
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/buffer.h>

#include "common/bus.h"
#include "common/conf.h"
#include "common/db.h"
#include "common/json.h"
#include "common/log.h"
#include "common/msg.h"
#include "common/utf8.h"
#include "common/util.h"
#include "workers/api.h"
#include "workers/auth.h"
#include "workers/chat.h"
#include "workers/chat_v2.h"
#include "workers/conn.h"
#include "workers/http.h"
#include "workers/limit.h"
#include "workers/router.h"
#include "workers/worker.h"
#include "workers/ws.h"

#define ROOMS_GENERATED_ID_BYTES 9	/* 12 base64url characters */
#define ROOMS_LIMIT_WINDOW	3600	/* rooms_max_per_hour */
#define ROOMS_LIST_DEFAULT	100	/* getRooms limit (SPEC section 8) */

/* One rooms request in flight. */
struct rooms_op {
	struct api_op	 api;		/* id: the other user (members, DMs) */
	char		 room[MSG_ROOM_ID_MAX + 1];
	char		 name[4 * MSG_ROOM_NAME_MAX + 1];
	int		 private;	/* createRoom: "private": true */
	int		 single;	/* rooms_show(): one room, not a page */
	int64_t		 asked_ms;	/* join: when the check was sent */
	/* getRooms: each room's users, counted on its partition's shard */
	long long	*counts;	/* per row of the page */
	int		*shards;	/* ... its shard */
	int		 nrows;
	int		 asked;		/* shards asked */
	int		 waiting;	/* ... whose replies are due */
	int		 failed;	/* ... that could not answer */
};

static struct rooms_op *rooms_op_new(struct conn *, struct http_request *,
		    int64_t);
static struct rooms_op *rooms_op_room(struct conn *, struct http_request *,
		    const struct route_match *, int64_t);
static struct rooms_op *rooms_op_paged(struct conn *, struct http_request *,
		    const struct route_match *, int64_t, const char *[4]);
static void	rooms_unknown(struct conn *, const char *);
static int	rooms_found(struct rooms_op *, struct db_result *,
		    const char *);
static void	rooms_dm_fixed(struct conn *, const char *);
static void	rooms_show(struct rooms_op *);
static void	rooms_add_room(struct evbuffer *, struct db_result *, int,
		    int);
static void	rooms_publish(struct worker *, const char *, const char *,
		    int64_t);
static void	rooms_allowed_cb(long long, void *);
static void	rooms_limit_key(const struct rooms_op *, char *, size_t);
static void	rooms_created_cb(struct db_result *, void *);
static void	rooms_listed_cb(struct db_result *, void *);
static int	rooms_count(struct rooms_op *, struct db_result *);
static void	rooms_counted_cb(struct bus *, struct bus_reply *, void *);
static void	rooms_counted(struct rooms_op *);
static void	rooms_clients_room_cb(struct db_result *, void *);
static void	rooms_clients_cb(struct bus *, struct bus_reply *, void *);
static void	rooms_history_cb(struct db_result *, void *);
static void	rooms_join_cb(struct db_result *, void *);
static void	rooms_deleted_cb(struct db_result *, void *);
static void	rooms_members_cb(struct db_result *, void *);
static void	rooms_member_added_cb(struct db_result *, void *);
static void	rooms_member_removed_cb(struct db_result *, void *);
static void	rooms_dm_cb(struct db_result *, void *);
static void	rooms_dm_found_cb(struct db_result *, void *);

/*
 * Whether room r is visible to the user $<n>: public, or private with
 * that user among its members (the primary key's index, in the statement
 * that reads the room anyway: no round trip of its own).
 */
#define ROOMS_VISIBLE(uid) \
	"(NOT r.private OR EXISTS (SELECT 1 FROM room_members vm " \
	"WHERE vm.room_id = r.id AND vm.user_id = " uid "))"
/*
 * The columns of a room object for the user $<n>, in rooms_add_room()'s
 * order, over rooms r: a direct room is named after the other user (its
 * stored name once that account is gone). lastId and unread (SPEC
 * section 9) cost two probes of the messages' primary key (room_id, id)
 * and one of the read marker's: max(id) is the index's last entry; the
 * unread messages are walked from the marker up and counted to 99 at
 * most, so a room read to its end costs one empty range scan, whatever
 * its history.
 */
#define ROOMS_COLUMNS(uid) \
	"r.id, CASE WHEN r.dm THEN coalesce((SELECT username FROM users " \
	"WHERE id = CASE WHEN r.dm_low = " uid " THEN r.dm_high ELSE " \
	"r.dm_low END), r.name) ELSE r.name END, r.private, r.dm, r.owner_id, " \
	"coalesce((SELECT max(lm.id) FROM messages lm WHERE " \
	"lm.room_id = r.id), 0), (SELECT count(*) FROM (SELECT 1 FROM " \
	"messages um WHERE um.room_id = r.id AND um.id > coalesce((SELECT " \
	"rm.last_read FROM read_markers rm WHERE rm.user_id = " uid \
	" AND rm.room_id = r.id), 0) AND um.kind = 0 AND NOT um.deleted " \
	"ORDER BY um.id LIMIT 99) u)"

/* Count the users of each room given as KEYS: one round trip a shard. */
static const char rooms_count_lua[] =
    "local r = {} for i, k in ipairs(KEYS) do r[i] = redis.call('hlen', k) "
    "end return r";

/* --- POST /ws/createRoom ------------------------------------------------ */

void
api_create_room(struct conn *c, struct http_request *req,
    const struct route_match *m, int64_t uid)
{
	struct json_doc *doc = NULL;
	struct rooms_op *op;
	const char *s;
	char key[LIMIT_KEY_MAX];
	size_t len;
	int r;

	(void)m;
	if ((op = rooms_op_new(c, req, uid)) == NULL)
		return;
	/* An empty body is {}: both fields are optional. */
	if (req->body_len > 0 && (doc = api_body(c, req)) == NULL)
		goto fail;
	if (doc != NULL && (r = json_get_string(doc, "id", &s, &len)) !=
	    JSON_MISSING) {
		if (r != JSON_OK || !msg_room_id_valid(s, len)) {
			conn_error(c, 400, "id must be 1 to 64 characters from "
			    "A-Z a-z 0-9 _ -");
			goto fail;
		}
		memcpy(op->room, s, len + 1);
	} else if (util_token(op->room, sizeof(op->room),
	    ROOMS_GENERATED_ID_BYTES) == -1) {
		conn_error(c, 500, "cannot make a room id");
		goto fail;
	}
	if (doc != NULL && (r = json_get_string(doc, "name", &s, &len)) !=
	    JSON_MISSING) {
		if (r != JSON_OK || len == 0 || len >= sizeof(op->name) ||
		    utf8_count(s, len) > MSG_ROOM_NAME_MAX ||
		    utf8_blank(s, len)) {
			conn_error(c, 400, "name must be 1 to 100 characters");
			goto fail;
		}
		memcpy(op->name, s, len + 1);
	} else
		snprintf(op->name, sizeof(op->name), "%s", op->room);
	if (doc != NULL && (r = json_get_bool(doc, "private",
	    &op->private)) != JSON_OK && r != JSON_MISSING) {
		conn_error(c, 400, "private must be true or false");
		goto fail;
	}
	rooms_limit_key(op, key, sizeof(key));
	if (limit_take(c->worker, key, c->worker->conf->rooms_max_per_hour,
	    ROOMS_LIMIT_WINDOW, rooms_allowed_cb, op) == -1) {
		conn_error(c, 503, "the limit store is unavailable; try again");
		goto fail;
	}
	json_free(doc);
	return;
fail:
	json_free(doc);
	api_op_free(op);
}

/*
 * rooms_max_per_hour per user (SPEC section 8), private rooms included:
 * then the INSERT, with the owner's membership for a private room in the
 * same statement.
 */
static void
rooms_allowed_cb(long long retry_after, void *arg)
{
	struct rooms_op *op = arg;
	const char *params[4];

	if (retry_after != 0) {
		if (retry_after > 0)
			limit_refuse(op->api.conn, retry_after, "rooms created "
			    "by this user");
		else
			conn_error(op->api.conn, 503, "the limit store is "
			    "unavailable; try again");
		api_op_free(op);
		return;
	}
	params[0] = op->room;
	params[1] = op->name;
	params[2] = api_op_int(&op->api, op->api.uid);
	params[3] = op->private ? "t" : "f";
	/* No row: the id was a deleted room's (rooms_deleted), 409. */
	api_query(&op->api, "WITH r AS (INSERT INTO rooms (id, name, "
	    "created_by, owner_id, private) SELECT $1, $2, $3, $3, $4 WHERE "
	    "NOT EXISTS (SELECT 1 FROM rooms_deleted WHERE id = $1) "
	    "RETURNING id, seq, private), m AS (INSERT INTO room_members "
	    "(room_id, user_id, room_seq) SELECT id, $3, seq FROM r WHERE "
	    "private) SELECT 1 FROM r", 4, params, rooms_created_cb);
}

/* The key that counts the rooms op->api.uid has created this hour. */
static void
rooms_limit_key(const struct rooms_op *op, char *key, size_t keylen)
{
	char uidbuf[24];

	snprintf(uidbuf, sizeof(uidbuf), "%lld", (long long)op->api.uid);
	limit_key(op->api.conn->worker, "rooms", uidbuf, key, keylen);
}

static void
rooms_created_cb(struct db_result *res, void *arg)
{
	struct rooms_op *op = arg;
	char key[LIMIT_KEY_MAX];

	/* A room that was not made does not count against the limit. */
	if (res == NULL || !db_result_ok(res) || db_result_ntuples(res) == 0) {
		rooms_limit_key(op, key, sizeof(key));
		limit_give_back(op->api.conn->worker, key);
	}
	if (res != NULL && strcmp(db_result_sqlstate(res), "23505") == 0)
		conn_error(op->api.conn, 409, "room id %s is taken", op->room);
	else if (res != NULL && db_result_ok(res) &&
	    db_result_ntuples(res) == 0)
		conn_error(op->api.conn, 409, "room id %s belonged to a "
		    "deleted room and is not given again", op->room);
	else if (res == NULL || !db_result_ok(res))
		api_db_error(op->api.conn, res, "create room");
	else {
		struct evbuffer *b = op->api.body;

		evbuffer_add(b, "{", 1);
		json_add_key(b, "id");
		json_add_cstr(b, op->room);
		evbuffer_add(b, ",", 1);
		json_add_key(b, "name");
		json_add_cstr(b, op->name);
		evbuffer_add_printf(b, ",\"private\":%s,\"dm\":false,"
		    "\"owner\":%lld,\"clients\":0}", op->private ? "true" :
		    "false", (long long)op->api.uid);
		conn_json(op->api.conn, 200, b, NULL);
	}
	api_op_free(op);
}

/* --- GET /ws/getRooms --------------------------------------------------- */

void
api_get_rooms(struct conn *c, struct http_request *req,
    const struct route_match *m, int64_t uid)
{
	struct rooms_op *op;
	const char *params[3];
	long long limit;
	int r;

	(void)m;
	if ((op = rooms_op_new(c, req, uid)) == NULL)
		return;
	if (api_limit(c, req, ROOMS_LIST_DEFAULT, &limit) == -1)
		goto fail;
	/* after: the last room of the previous page ("" for the first). */
	if (req->query != NULL && (r = http_query_get(req->query, "after",
	    op->room, sizeof(op->room))) != 0 && (r == -1 ||
	    !msg_room_id_valid(op->room, strlen(op->room)))) {
		conn_error(c, 400, "after must be a room id (the last room of "
		    "the previous page)");
		goto fail;
	}
	params[0] = op->room;
	params[1] = api_op_int(&op->api, limit);
	params[2] = api_op_int(&op->api, uid);
	/*
	 * Keyset paging on the creation order, over two index scans merged:
	 * the public rooms (rooms_public_seq) and the caller's private ones
	 * (room_members_user), each at most a page. No row: after names no
	 * room the caller can see (400, see rooms_listed_cb); one row of
	 * NULLs: an empty page.
	 */
	api_query(&op->api, "SELECT " ROOMS_COLUMNS("$3") " FROM "
	    "(SELECT seq FROM rooms r WHERE id = $1 AND " ROOMS_VISIBLE("$3")
	    " UNION ALL SELECT 0 WHERE $1 = '') a LEFT JOIN LATERAL "
	    "(SELECT s.seq FROM ((SELECT seq FROM rooms WHERE NOT private "
	    "AND seq > a.seq ORDER BY seq LIMIT $2) UNION ALL "
	    "(SELECT room_seq FROM room_members WHERE user_id = $3 AND "
	    "room_seq > a.seq ORDER BY room_seq LIMIT $2)) s "
	    "ORDER BY s.seq LIMIT $2) p ON true "
	    "LEFT JOIN rooms r ON r.seq = p.seq ORDER BY p.seq", 3, params,
	    rooms_listed_cb);
	return;
fail:
	api_op_free(op);
}

/* --- GET /ws/rooms/{roomId} --------------------------------------------- */

void
api_room_get(struct conn *c, struct http_request *req,
    const struct route_match *m, int64_t uid)
{
	struct rooms_op *op;

	if ((op = rooms_op_room(c, req, m, uid)) == NULL)
		return;
	rooms_show(op);
}

/* Answer op->room as one room object (its users counted), or 404. */
static void
rooms_show(struct rooms_op *op)
{
	const char *params[2];

	op->single = 1;
	params[0] = op->room;
	params[1] = api_op_int(&op->api, op->api.uid);
	api_query(&op->api, "SELECT " ROOMS_COLUMNS("$2") " FROM rooms r "
	    "WHERE r.id = $1 AND " ROOMS_VISIBLE("$2"), 2, params,
	    rooms_listed_cb);
}

/* The shard of room's presence (its partition's, SPEC section 11). */
static struct bus *
rooms_bus(struct worker *w, const char *room)
{
	return bus_shards_partition(w->shards, msg_partition(room,
	    w->conf->partitions));
}

/*
 * The rooms are listed; count each one's users, one Redis call for the
 * rooms of each shard. The result is kept (copied into the body as we
 * go) until the counts come.
 */
static void
rooms_listed_cb(struct db_result *res, void *arg)
{
	struct rooms_op *op = arg;
	int n;

	if (res == NULL || !db_result_ok(res)) {
		api_db_error(op->api.conn, res, "list rooms");
		goto fail;
	}
	if (db_result_ntuples(res) == 0 && op->single) {
		rooms_unknown(op->api.conn, op->room);
		goto fail;
	}
	if (db_result_ntuples(res) == 0) {
		conn_error(op->api.conn, 400, "after: there is no room %s "
		    "(now); start again without after", op->room);
		goto fail;
	}
	/* The rows of the page; an empty page is one row of NULLs. */
	for (n = 0; n < db_result_ntuples(res) && !db_result_isnull(res, n,
	    0); n++)
		;
	if (n == 0) {
		evbuffer_add(op->api.body, "[]", 2);
		conn_json(op->api.conn, 200, op->api.body, NULL);
		goto fail;
	}
	op->nrows = n;
	if (rooms_count(op, res) == 0)
		return;
fail:
	free(op->counts);
	free(op->shards);
	api_op_free(op);
}

/*
 * Keep id and name pairs in the body buffer's place (the JSON is written
 * now, the counts spliced in by rooms_counted()) and ask each shard for
 * its rooms' counts. -1: answered already, op is the caller's to free.
 */
static int
rooms_count(struct rooms_op *op, struct db_result *res)
{
	struct worker *w = op->api.conn->worker;
	int nshards = bus_shards_count(w->shards), n = op->nrows, k;
	const char **argv = NULL;
	char (*keys)[MSG_ROOM_ID_MAX + 64] = NULL, nkeys[16];

	argv = calloc((size_t)n + 3, sizeof(*argv));
	keys = calloc((size_t)n, sizeof(*keys));
	op->counts = calloc((size_t)n, sizeof(*op->counts));
	op->shards = calloc((size_t)n, sizeof(*op->shards));
	if (argv == NULL || keys == NULL || op->counts == NULL ||
	    op->shards == NULL) {
		conn_error(op->api.conn, 500, "out of memory");
		goto fail;
	}
	for (int i = 0; i < n; i++) {
		const char *room = db_result_value(res, i, 0);

		(void)msg_key_room_clients(keys[i], sizeof(keys[i]),
		    w->conf->redis_prefix, room);
		op->shards[i] = bus_shard(rooms_bus(w, room));
		/* Each row as `"id":..,"name":..,..` separated by NUL. */
		rooms_add_room(op->api.body, res, i, !op->single);
		evbuffer_add(op->api.body, "", 1);
	}
	argv[0] = "EVAL";
	argv[1] = rooms_count_lua;
	argv[2] = nkeys;
	for (int s = 0; s < nshards; s++) {
		k = 3;
		for (int i = 0; i < n; i++)
			if (op->shards[i] == s)
				argv[k++] = keys[i];
		if (k == 3)
			continue;
		snprintf(nkeys, sizeof(nkeys), "%d", k - 3);
		op->asked++;
		if (bus_commandv(bus_shards_at(w->shards, s), rooms_counted_cb,
		    op, k, argv, NULL) == -1)
			op->failed++;
		else
			op->waiting++;
	}
	free(argv);
	free(keys);
	if (op->waiting > 0)
		return 0;	/* the last reply answers */
	rooms_counted(op);
	return 0;
fail:
	free(argv);
	free(keys);
	return -1;
}

/* A shard's counts, in the order of the page's rows on that shard. */
static void
rooms_counted_cb(struct bus *bus, struct bus_reply *reply, void *arg)
{
	struct rooms_op *op = arg;
	struct bus_reply *e;
	int s = bus_shard(bus);
	size_t k = 0;

	if (reply == NULL || bus_reply_type(reply) != BUS_ARRAY)
		op->failed++;
	else
		for (int i = 0; i < op->nrows; i++) {
			if (op->shards[i] != s)
				continue;
			e = bus_reply_element(reply, k++);
			if (e != NULL && bus_reply_type(e) == BUS_INTEGER)
				op->counts[i] = bus_reply_integer(e);
		}
	if (--op->waiting == 0)
		rooms_counted(op);
}

/*
 * Every shard has answered: the rows with their counts, and op freed. A
 * shard that is away counts its rooms' users as 0 (the others' rooms are
 * still worth listing); with none answering, 503.
 */
static void
rooms_counted(struct rooms_op *op)
{
	struct evbuffer *out = NULL;
	size_t len;
	char *rows = NULL, *p;
	int i;

	if (op->failed == op->asked) {
		conn_error(op->api.conn, 503, "the presence store is "
		    "unavailable; try again");
		goto done;
	}
	len = evbuffer_get_length(op->api.body);
	if ((rows = malloc(len + 1)) == NULL || (out = evbuffer_new()) ==
	    NULL) {
		conn_error(op->api.conn, 500, "out of memory");
		goto done;
	}
	evbuffer_remove(op->api.body, rows, len);
	rows[len] = '\0';
	if (!op->single)
		evbuffer_add(out, "[", 1);
	for (i = 0, p = rows; i < op->nrows && p < rows + len; i++) {
		evbuffer_add_printf(out, "%s{%s,\"clients\":%lld}",
		    i > 0 ? "," : "", p, op->counts[i]);
		p += strlen(p) + 1;
	}
	if (!op->single)
		evbuffer_add(out, "]", 1);
	conn_json(op->api.conn, 200, out, NULL);
done:
	if (out != NULL)
		evbuffer_free(out);
	free(rows);
	free(op->counts);
	free(op->shards);
	api_op_free(op);
}

/* --- GET /ws/getClients/{roomId} ---------------------------------------- */

void
api_get_clients(struct conn *c, struct http_request *req,
    const struct route_match *m, int64_t uid)
{
	struct rooms_op *op;
	const char *params[2];

	if ((op = rooms_op_room(c, req, m, uid)) == NULL)
		return;
	params[0] = op->room;
	params[1] = api_op_int(&op->api, uid);
	api_query(&op->api, "SELECT 1 FROM rooms r WHERE r.id = $1 AND "
	    ROOMS_VISIBLE("$2"), 2, params, rooms_clients_room_cb);
}

static void
rooms_clients_room_cb(struct db_result *res, void *arg)
{
	struct rooms_op *op = arg;
	struct worker *w = op->api.conn->worker;
	char key[MSG_KEY_MAX];

	if (rooms_found(op, res, "room lookup") == -1)
		goto fail;
	(void)msg_key_room_clients(key, sizeof(key), w->conf->redis_prefix,
	    op->room);
	if (bus_command(rooms_bus(w, op->room), rooms_clients_cb, op,
	    "HGETALL %s", key) == -1) {
		conn_error(op->api.conn, 503, "the presence store is "
		    "unavailable; try again");
		goto fail;
	}
	return;
fail:
	api_op_free(op);
}

static int
rooms_cmp_uid(const void *a, const void *b)
{
	long long x = *(const long long *)a, y = *(const long long *)b;

	return x < y ? -1 : x > y;
}

/* The hash is user id -> username; answer them by increasing id. */
static void
rooms_clients_cb(struct bus *bus, struct bus_reply *reply, void *arg)
{
	struct rooms_op *op = arg;
	struct { long long id; size_t i; } *users = NULL;
	size_t n, i, k = 0;

	(void)bus;
	if (reply == NULL || bus_reply_type(reply) != BUS_ARRAY) {
		conn_error(op->api.conn, 503, "the presence store is "
		    "unavailable; try again");
		goto done;
	}
	n = bus_reply_elements(reply) / 2;
	if (n > 0 && (users = calloc(n, sizeof(*users))) == NULL) {
		conn_error(op->api.conn, 500, "out of memory");
		goto done;
	}
	for (i = 0; i < n; i++) {
		const char *id = bus_reply_str(bus_reply_element(reply, 2 * i),
		    NULL);

		if (id != NULL && util_parse_int(id, 0, INT64_MAX,
		    &users[k].id) == 0)
			users[k++].i = i;
	}
	if (k > 1)	/* users is NULL for an empty room */
		qsort(users, k, sizeof(*users), rooms_cmp_uid);
	evbuffer_add(op->api.body, "[", 1);
	for (i = 0; i < k; i++) {
		size_t len;
		const char *name = bus_reply_str(bus_reply_element(reply,
		    2 * users[i].i + 1), &len);

		evbuffer_add_printf(op->api.body, "%s{\"id\":%lld,",
		    i ? "," : "", users[i].id);
		json_add_key(op->api.body, "username");
		json_add_string(op->api.body, name != NULL ? name : "",
		    name != NULL ? len : 0);
		evbuffer_add(op->api.body, "}", 1);
	}
	evbuffer_add(op->api.body, "]", 1);
	conn_json(op->api.conn, 200, op->api.body, NULL);
done:
	free(users);
	api_op_free(op);
}

/* --- GET /ws/history/{roomId} ------------------------------------------- */

void
api_history(struct conn *c, struct http_request *req,
    const struct route_match *m, int64_t uid)
{
	struct rooms_op *op;
	const char *params[4];

	if ((op = rooms_op_paged(c, req, m, uid, params)) == NULL)
		return;
	/* Messages as they are now (SPEC section 9): edited content and
	 * time; deleted ones, edits and deletes left out. */
	api_query(&op->api, "SELECT m.id, m.user_id, m.username, m.content, "
	    API_SQL_TIME("m.created_at") ", " API_SQL_TIME("m.edited_at")
	    " FROM rooms r "
	    "LEFT JOIN LATERAL (SELECT * FROM messages WHERE room_id = r.id "
	    "AND id < $3 AND kind = 0 AND NOT deleted ORDER BY id DESC "
	    "LIMIT $4) m ON true "
	    "WHERE r.id = $1 AND " ROOMS_VISIBLE("$2") " ORDER BY m.id", 4,
	    params, rooms_history_cb);
}

static void
rooms_history_cb(struct db_result *res, void *arg)
{
	struct rooms_op *op = arg;
	int n, i, first = 1;

	if (rooms_found(op, res, "history") == -1)
		goto done;
	n = db_result_ntuples(res);
	evbuffer_add(op->api.body, "[", 1);
	for (i = 0; i < n; i++) {
		if (db_result_isnull(res, i, 0))
			continue;	/* a room without messages */
		evbuffer_add_printf(op->api.body, "%s{\"type\":\"message\","
		    "\"id\":%s,", first ? "" : ",", db_result_value(res, i, 0));
		json_add_key(op->api.body, "roomId");
		json_add_cstr(op->api.body, op->room);
		evbuffer_add_printf(op->api.body, ",\"userId\":%s,",
		    db_result_value(res, i, 1));
		json_add_key(op->api.body, "username");
		json_add_cstr(op->api.body, db_result_value(res, i, 2));
		evbuffer_add(op->api.body, ",", 1);
		json_add_key(op->api.body, "content");
		json_add_cstr(op->api.body, db_result_value(res, i, 3));
		evbuffer_add_printf(op->api.body, ",\"ts\":\"%s\"",
		    db_result_value(res, i, 4));
		if (!db_result_isnull(res, i, 5))
			evbuffer_add_printf(op->api.body, ",\"edited\":\"%s\"",
			    db_result_value(res, i, 5));
		evbuffer_add(op->api.body, "}", 1);
		first = 0;
	}
	evbuffer_add(op->api.body, "]", 1);
	conn_json(op->api.conn, 200, op->api.body, NULL);
done:
	api_op_free(op);
}

/* --- GET /ws/joinRoom/{roomId} ------------------------------------------ */

/*
 * The checks run in the order SPEC section 5 gives: 401 (done by
 * auth_require), 404 unknown room, 403 Origin, 400 not an upgrade; then
 * the connection becomes a WebSocket and chat.c takes it.
 */
void
api_join_room(struct conn *c, struct http_request *req,
    const struct route_match *m, int64_t uid)
{
	struct rooms_op *op;
	const char *params[2];

	if ((op = rooms_op_room(c, req, m, uid)) == NULL)
		return;
	params[0] = api_op_int(&op->api, uid);
	params[1] = op->room;
	/* Membership is checked here, once: messages on the socket are not
	 * (a removed member's socket is closed, see chat.c). */
	op->asked_ms = util_mono_ms();
	api_query(&op->api, "SELECT u.username, EXISTS (SELECT 1 FROM "
	    "rooms r WHERE r.id = $2 AND " ROOMS_VISIBLE("$1") ") FROM users u "
	    "WHERE u.id = $1", 2, params, rooms_join_cb);
}

static void
rooms_join_cb(struct db_result *res, void *arg)
{
	struct rooms_op *op = arg;
	struct conn *c = op->api.conn;
	char extra[256], token[AUTH_TOKEN_MAX + 2], session[AUTH_KEY_MAX];
	char buf[32];
	long long since;
	int v2, r;

	if (res == NULL || !db_result_ok(res)) {
		api_db_error(c, res, "join");
		goto done;
	}
	if (db_result_ntuples(res) == 0) {
		conn_error(c, 401, "the account no longer exists");
		goto done;
	}
	/*
	 * A removal (or deletion) heard since the check was sent may have
	 * come after the row was read: its event found no socket to close
	 * yet, so the join is refused as the next one would be.
	 */
	if (strcmp(db_result_value(res, 0, 1), "t") != 0 ||
	    chat_room_revoked(c->worker->chat, op->room, op->api.uid,
	    op->asked_ms)) {
		rooms_unknown(c, op->room);
		goto done;
	}
	if (!api_origin_allowed(c->worker, op->api.req)) {
		conn_error(c, 403, "WebSocket connections from origin %s are "
		    "not allowed", http_header(op->api.req, "Origin"));
		goto done;
	}
	if (ws_handshake(op->api.req, extra, sizeof(extra)) == -1) {
		conn_error(c, 400, "not a valid WebSocket upgrade: %s", extra);
		goto done;
	}
	/* Resume (SPEC section 9): since, an event id (0 or more). */
	since = -1;
	if (op->api.req->query != NULL && (r = http_query_get(
	    op->api.req->query, "since", buf, sizeof(buf))) != 0 && (r == -1 ||
	    util_parse_int(buf, 0, INT64_MAX, &since) == -1)) {
		conn_error(c, 400, "since must be an event id (an integer, 0 "
		    "or more)");
		goto done;
	}
	session[0] = '\0';
	if (auth_request_token(op->api.req, token, sizeof(token)) == 1)
		auth_session_key(c->worker, token, session, sizeof(session));
	snprintf(op->name, sizeof(op->name), "%s", db_result_value(res, 0, 0));
	/* gochat.v2 when asked for (SPEC section 9), named back in the 101. */
	v2 = ws_subprotocol(op->api.req, CHAT_V2_PROTOCOL);
	if (v2)
			snprintf(extra + strlen(extra), sizeof(extra) - strlen(extra),
		    "Sec-WebSocket-Protocol: %s\r\n", CHAT_V2_PROTOCOL);
	chat_upgrade(c, extra, op->room, op->api.uid, op->name, session, v2,
	    (int64_t)since);
done:
	api_op_free(op);
}

/* --- DELETE /ws/rooms/{roomId} ------------------------------------------ */

/*
 * The owner only: the room goes, its messages and members with it (the
 * members' foreign key cascades, the messages go by the trigger
 * rooms_delete_messages of sql/002_partitions.sql), its id is never given
 * again (rooms_deleted), then every instance closes its sockets. Zero rows: the caller cannot
 * see the room (404); a row with nothing deleted: not the owner (403).
 */
void
api_room_delete(struct conn *c, struct http_request *req,
    const struct route_match *m, int64_t uid)
{
	struct rooms_op *op;
	const char *params[2];

	if ((op = rooms_op_room(c, req, m, uid)) == NULL)
		return;
	params[0] = op->room;
	params[1] = api_op_int(&op->api, uid);
	api_query(&op->api, "WITH v AS (SELECT r.id, r.owner_id FROM rooms r "
	    "WHERE r.id = $1 AND " ROOMS_VISIBLE("$2") "), d AS (DELETE FROM "
	    "rooms x USING v WHERE x.id = v.id AND v.owner_id = $2 RETURNING "
	    "x.id), t AS (INSERT INTO rooms_deleted (id) SELECT id FROM d "
	    "ON CONFLICT DO NOTHING) SELECT (SELECT count(*) FROM d) FROM v",
	    2, params, rooms_deleted_cb);
}

static void
rooms_deleted_cb(struct db_result *res, void *arg)
{
	struct rooms_op *op = arg;

	if (rooms_found(op, res, "delete room") == -1)
		goto done;
	if (strcmp(db_result_value(res, 0, 0), "0") == 0)
		conn_error(op->api.conn, 403, "only the owner of room %s can "
		    "delete it", op->room);
	else {
		rooms_publish(op->api.conn->worker, "room_deleted", op->room,
		    0);
		conn_respond(op->api.conn, 204, NULL, NULL, 0, NULL);
	}
done:
	api_op_free(op);
}

/* --- GET /ws/rooms/{roomId}/members ------------------------------------- */

/* Members only, private rooms only: anything else is an unknown room. */
void
api_room_members(struct conn *c, struct http_request *req,
    const struct route_match *m, int64_t uid)
{
	struct rooms_op *op;
	const char *params[4];

	if ((op = rooms_op_paged(c, req, m, uid, params)) == NULL)
		return;
	api_query(&op->api, "SELECT l.id, l.username FROM rooms r "
	    "LEFT JOIN LATERAL (SELECT u.id, u.username FROM room_members mm "
	    "JOIN users u ON u.id = mm.user_id WHERE mm.room_id = r.id AND "
	    "mm.user_id < $3 ORDER BY mm.user_id DESC LIMIT $4) l ON true "
	    "WHERE r.id = $1 AND r.private AND " ROOMS_VISIBLE("$2")
	    " ORDER BY l.id DESC", 4, params, rooms_members_cb);
}

static void
rooms_members_cb(struct db_result *res, void *arg)
{
	struct rooms_op *op = arg;
	int i, n, first = 1;

	if (rooms_found(op, res, "members") == -1)
		goto done;
	n = db_result_ntuples(res);
	evbuffer_add(op->api.body, "[", 1);
	for (i = 0; i < n; i++) {
		if (db_result_isnull(res, i, 0))	/* no member left */
			continue;
		evbuffer_add_printf(op->api.body, "%s{", first ? "" : ",");
		first = 0;
		api_add_int(op->api.body, "id", db_result_value(res, i, 0));
		evbuffer_add(op->api.body, ",", 1);
		json_add_key(op->api.body, "username");
		json_add_cstr(op->api.body, db_result_value(res, i, 1));
		evbuffer_add(op->api.body, "}", 1);
	}
	evbuffer_add(op->api.body, "]", 1);
	conn_json(op->api.conn, 200, op->api.body, NULL);
done:
	api_op_free(op);
}

/* --- POST /ws/rooms/{roomId}/members ------------------------------------ */

/*
 * {"userId": n}: the owner adds a user (again: nothing changes). The one
 * statement reads the room as the caller sees it, the user, and inserts
 * only when the caller owns a room that is not a direct one; the row
 * says which check failed.
 */
void
api_room_member_add(struct conn *c, struct http_request *req,
    const struct route_match *m, int64_t uid)
{
	struct json_doc *doc = NULL;
	struct rooms_op *op;
	const char *params[3];
	int64_t id;
	int r;

	if ((op = rooms_op_room(c, req, m, uid)) == NULL)
		return;
	if ((doc = api_body(c, req)) == NULL)
		goto fail;
	if ((r = json_get_int(doc, "userId", &id)) != JSON_OK || id < 1) {
		conn_error(c, 400, r == JSON_MISSING ? "userId is required" :
		    "userId must be a positive integer (a user id)");
		goto fail;
	}
	json_free(doc);
	op->api.id = id;
	params[0] = op->room;
	params[1] = api_op_int(&op->api, uid);
	params[2] = api_op_int(&op->api, id);
	api_query(&op->api, "WITH v AS (SELECT r.id, r.seq, r.dm, "
	    "coalesce(r.owner_id = $2, false) AS owner FROM rooms r "
	    "WHERE r.id = $1 AND r.private AND " ROOMS_VISIBLE("$2") "), "
	    "u AS (SELECT id, username FROM users WHERE id = $3), "
	    "i AS (INSERT INTO room_members (room_id, user_id, room_seq) "
	    "SELECT v.id, u.id, v.seq FROM v, u WHERE v.owner AND NOT v.dm "
	    "ON CONFLICT DO NOTHING) "
	    "SELECT v.dm, v.owner, u.id, u.username FROM v LEFT JOIN u ON true",
	    3, params, rooms_member_added_cb);
	return;
fail:
	json_free(doc);
	api_op_free(op);
}

static void
rooms_member_added_cb(struct db_result *res, void *arg)
{
	struct rooms_op *op = arg;
	struct conn *c = op->api.conn;

	/* The room deleted meanwhile fails the foreign key. */
	if (res != NULL && !db_result_ok(res) &&
	    strcmp(db_result_sqlstate(res), "23503") == 0)
		rooms_unknown(c, op->room);
	else if (res == NULL || !db_result_ok(res))
		api_db_error(c, res, "add member");
	else if (db_result_ntuples(res) == 0)
		rooms_unknown(c, op->room);
	else if (strcmp(db_result_value(res, 0, 0), "t") == 0)
		rooms_dm_fixed(c, op->room);
	else if (strcmp(db_result_value(res, 0, 1), "t") != 0)
		conn_error(c, 403, "only the owner of room %s can add members",
		    op->room);
	else if (db_result_isnull(res, 0, 2))
		conn_error(c, 404, "no user with id %lld",
		    (long long)op->api.id);
	else {
		evbuffer_add(op->api.body, "{", 1);
		api_add_int(op->api.body, "id", db_result_value(res, 0, 2));
		evbuffer_add(op->api.body, ",", 1);
		json_add_key(op->api.body, "username");
		json_add_cstr(op->api.body, db_result_value(res, 0, 3));
		evbuffer_add(op->api.body, "}", 1);
		conn_json(c, 200, op->api.body, NULL);
	}
	api_op_free(op);
}

/* --- DELETE /ws/rooms/{roomId}/members/{userId} ------------------------- */

/*
 * The owner removes anyone but themself (an owner leaves by deleting the
 * room: 400); a member removes themself; nobody leaves or is removed from
 * a direct room (403). Removing someone who is not a member is done
 * already (204). Then the removed user's sockets to the room close on
 * every instance.
 */
void
api_room_member_remove(struct conn *c, struct http_request *req,
    const struct route_match *m, int64_t uid)
{
	struct rooms_op *op;
	const char *params[3];
	int64_t id;

	if (api_id(c, router_param(m, "userId"), "the user id", &id) == -1)
		return;
	if ((op = rooms_op_room(c, req, m, uid)) == NULL)
		return;
	op->api.id = id;
	params[0] = op->room;
	params[1] = api_op_int(&op->api, uid);
	params[2] = api_op_int(&op->api, id);
	api_query(&op->api, "WITH v AS (SELECT r.id, r.dm, "
	    "coalesce(r.owner_id = $2, false) AS owner FROM rooms r "
	    "WHERE r.id = $1 AND r.private AND " ROOMS_VISIBLE("$2") "), "
	    "d AS (DELETE FROM room_members mm USING v WHERE mm.room_id = v.id "
	    "AND mm.user_id = $3 AND NOT v.dm AND "
	    "(v.owner <> ($2 = $3)) RETURNING mm.user_id) "
	    "SELECT v.dm, v.owner, (SELECT count(*) FROM d) FROM v",
	    3, params, rooms_member_removed_cb);
}

static void
rooms_member_removed_cb(struct db_result *res, void *arg)
{
	struct rooms_op *op = arg;
	struct conn *c = op->api.conn;
	int owner, self = op->api.id == op->api.uid;

	if (rooms_found(op, res, "remove member") == -1)
		goto done;
	owner = strcmp(db_result_value(res, 0, 1), "t") == 0;
	if (strcmp(db_result_value(res, 0, 0), "t") == 0)
		rooms_dm_fixed(c, op->room);
	else if (owner && self)
		conn_error(c, 400, "the owner cannot leave room %s; delete it "
		    "instead (DELETE /ws/rooms/%s)", op->room, op->room);
	else if (!owner && !self)
		conn_error(c, 403, "only the owner of room %s can remove other "
		    "members", op->room);
	else {
		if (strcmp(db_result_value(res, 0, 2), "0") != 0)
			rooms_publish(c->worker, "member_removed", op->room,
			    op->api.id);
		conn_respond(c, 204, NULL, NULL, 0, NULL);
	}
done:
	api_op_free(op);
}

/* --- POST /ws/dm/{userId} ----------------------------------------------- */

/*
 * The one direct room of the caller and userId, made on the first call.
 * The pair's unique index (rooms_dm_pair) decides a race, on one instance
 * or many: the loser's INSERT does nothing, and a second statement (a new
 * snapshot, which sees the winner's committed row) reads the room. DMs do
 * not count against rooms_max_per_hour: there is at most one per pair.
 */
void
api_dm(struct conn *c, struct http_request *req,
    const struct route_match *m, int64_t uid)
{
	struct rooms_op *op;
	const char *params[3];
	int64_t id;

	if (api_id(c, router_param(m, "userId"), "the user id", &id) == -1)
		return;
	if (id == uid) {
		conn_error(c, 400, "userId is your own id: a direct "
		    "conversation needs another user");
		return;
	}
	if ((op = rooms_op_new(c, req, uid)) == NULL)
		return;
	op->api.id = id;
	if (util_token(op->room, sizeof(op->room),
	    ROOMS_GENERATED_ID_BYTES) == -1) {
		conn_error(c, 500, "cannot make a room id");
		api_op_free(op);
		return;
	}
	params[0] = api_op_int(&op->api, uid);
	params[1] = api_op_int(&op->api, id);
	params[2] = op->room;
	api_query(&op->api, "WITH o AS (SELECT id FROM users WHERE id = $2), "
	    "i AS (INSERT INTO rooms (id, name, private, dm, dm_low, dm_high) "
	    "SELECT $3, 'direct', true, true, least($1::bigint, $2::bigint), "
	    "greatest($1::bigint, $2::bigint) FROM o ON CONFLICT (dm_low, "
	    "dm_high) WHERE dm DO NOTHING RETURNING id, seq), "
	    "mm AS (INSERT INTO room_members (room_id, user_id, room_seq) "
	    "SELECT i.id, x.u, i.seq FROM i CROSS JOIN (VALUES ($1::bigint), "
	    "($2::bigint)) x (u)) "
	    "SELECT i.id FROM o LEFT JOIN i ON true", 3, params, rooms_dm_cb);
}

static void
rooms_dm_cb(struct db_result *res, void *arg)
{
	struct rooms_op *op = arg;
	const char *params[2];

	if (res == NULL || !db_result_ok(res)) {
		api_db_error(op->api.conn, res, "direct room");
		goto fail;
	}
	if (db_result_ntuples(res) == 0) {
		conn_error(op->api.conn, 404, "no user with id %lld",
		    (long long)op->api.id);
		goto fail;
	}
	if (!db_result_isnull(res, 0, 0)) {	/* made now */
		rooms_show(op);
		return;
	}
	params[0] = api_op_int(&op->api, op->api.uid);
	params[1] = api_op_int(&op->api, op->api.id);
	api_query(&op->api, "SELECT id FROM rooms WHERE dm AND "
	    "dm_low = least($1::bigint, $2::bigint) AND "
	    "dm_high = greatest($1::bigint, $2::bigint)", 2, params,
	    rooms_dm_found_cb);
	return;
fail:
	api_op_free(op);
}

static void
rooms_dm_found_cb(struct db_result *res, void *arg)
{
	struct rooms_op *op = arg;

	if (res == NULL || !db_result_ok(res)) {
		api_db_error(op->api.conn, res, "direct room");
		goto fail;
	}
	if (db_result_ntuples(res) == 0) {
		/* Only a deletion of the room between the two statements. */
		conn_error(op->api.conn, 503, "the direct room changed "
		    "meanwhile; try again");
		goto fail;
	}
	snprintf(op->room, sizeof(op->room), "%s", db_result_value(res, 0, 0));
	rooms_show(op);
	return;
fail:
	api_op_free(op);
}

/* --- helpers ------------------------------------------------------------ */

static struct rooms_op *
rooms_op_new(struct conn *c, struct http_request *req, int64_t uid)
{
	return api_op_new(c, req, uid, sizeof(struct rooms_op));
}

/*
 * The answer for a room that does not exist, or is private and the caller
 * not a member: the same status and body, so that nothing tells them
 * apart (SPEC section 10).
 */
static void
rooms_unknown(struct conn *c, const char *room)
{
	conn_error(c, 404, "no room %s", room);
}

/*
 * A room's lookup answered at least one row (the room, visible to the
 * caller): 0; else -1 after answering 503/500 (failed query, logged as
 * what) or the unknown-room 404.
 */
static int
rooms_found(struct rooms_op *op, struct db_result *res, const char *what)
{
	if (res == NULL || !db_result_ok(res)) {
		api_db_error(op->api.conn, res, what);
		return -1;
	}
	if (db_result_ntuples(res) == 0) {
		rooms_unknown(op->api.conn, op->room);
		return -1;
	}
	return 0;
}

/* A direct room's two members are fixed (SPEC section 10). */
static void
rooms_dm_fixed(struct conn *c, const char *room)
{
	conn_error(c, 403, "room %s is a direct conversation: nobody is "
	    "added to it or removed from it", room);
}

/*
 * An op for the room of the {roomId} parameter; an id that cannot exist
 * is an unknown room. NULL once answered.
 */
static struct rooms_op *
rooms_op_room(struct conn *c, struct http_request *req,
    const struct route_match *m, int64_t uid)
{
	const char *id = router_param(m, "roomId");
	struct rooms_op *op;

	if (id == NULL || !msg_room_id_valid(id, strlen(id))) {
		rooms_unknown(c, id != NULL ? id : "");
		return NULL;
	}
	if ((op = rooms_op_new(c, req, uid)) != NULL)
		snprintf(op->room, sizeof(op->room), "%s", id);
	return op;
}

/*
 * The op of a room's list route (history, members) and its parameters:
 * $1 the room, $2 the caller, $3 before, $4 limit. NULL once answered.
 */
static struct rooms_op *
rooms_op_paged(struct conn *c, struct http_request *req,
    const struct route_match *m, int64_t uid, const char *params[4])
{
	struct rooms_op *op;
	long long limit, before;

	if ((op = rooms_op_room(c, req, m, uid)) == NULL)
		return NULL;
	if (api_paging(c, req, &limit, &before) == -1) {
		api_op_free(op);
		return NULL;
	}
	params[0] = op->room;
	params[1] = api_op_int(&op->api, uid);
	params[2] = api_op_int(&op->api, before);
	params[3] = api_op_int(&op->api, limit);
	return op;
}

/* `"id":..,"name":..,"private":..,"dm":..,"owner":..` of a row read with
 * ROOMS_COLUMNS(), and with counts (getRooms) `,"lastId":..,"unread":..`. */
static void
rooms_add_room(struct evbuffer *out, struct db_result *res, int row,
    int counts)
{
	json_add_key(out, "id");
	json_add_cstr(out, db_result_value(res, row, 0));
	evbuffer_add(out, ",", 1);
	json_add_key(out, "name");
	json_add_cstr(out, db_result_value(res, row, 1));
	evbuffer_add_printf(out, ",\"private\":%s,\"dm\":%s,",
	    strcmp(db_result_value(res, row, 2), "t") == 0 ? "true" : "false",
	    strcmp(db_result_value(res, row, 3), "t") == 0 ? "true" : "false");
	if (db_result_isnull(res, row, 4)) {
		json_add_key(out, "owner");
		evbuffer_add(out, "null", 4);
	} else
		api_add_int(out, "owner", db_result_value(res, row, 4));
	if (!counts)
		return;
	evbuffer_add(out, ",", 1);
	api_add_int(out, "lastId", db_result_value(res, row, 5));
	evbuffer_add(out, ",", 1);
	api_add_int(out, "unread", db_result_value(res, row, 6));
}

/*
 * Tell every worker (every instance) on <prefix>control to close sockets
 * of a room: a removed member's (uid > 0) or all of a deleted room's
 * (uid 0). Fire and forget, as logout does: the change is committed, and
 * a lost event is logged by the bus.
 */
static void
rooms_publish(struct worker *w, const char *type, const char *room,
    int64_t uid)
{
	char channel[sizeof(w->conf->redis_prefix) + 16], event[160];

	(void)msg_key_name(channel, sizeof(channel), w->conf->redis_prefix,
	    MSG_CONTROL);
	snprintf(event, sizeof(event), "{\"type\":\"%s\",\"roomId\":\"%s\","
	    "\"userId\":%lld}", type, room, (long long)uid);
	bus_send(w->redis, "PUBLISH %s %s", channel, event);
}
