/*
 * api_rooms: the chat rooms' HTTP routes (SPEC section 5): create, list,
 * who is connected, history, and the checks of /ws/joinRoom before the
 * connection is handed to chat.c. Rooms live in PostgreSQL; who is
 * connected is the hub's presence hash in Redis.
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
	struct conn	*conn;
	struct http_request *req;
	int64_t		 uid;
	char		 room[MSG_ROOM_ID_MAX + 1];
	char		 name[4 * MSG_ROOM_NAME_MAX + 1];
	struct db_result *res;		/* not owned: during db callbacks */
	struct evbuffer	*body;
};

static struct rooms_op *rooms_op_new(struct conn *, struct http_request *,
		    int64_t);
static void	rooms_op_free(struct rooms_op *);
static int	rooms_room_param(struct conn *, const struct route_match *,
		    struct rooms_op *);
static void	rooms_allowed_cb(long long, void *);
static void	rooms_limit_key(const struct rooms_op *, char *, size_t);
static void	rooms_created_cb(struct db_result *, void *);
static void	rooms_listed_cb(struct db_result *, void *);
static void	rooms_counted_cb(struct bus *, struct bus_reply *, void *);
static void	rooms_clients_room_cb(struct db_result *, void *);
static void	rooms_clients_cb(struct bus *, struct bus_reply *, void *);
static void	rooms_history_cb(struct db_result *, void *);
static void	rooms_join_cb(struct db_result *, void *);

/* Count the users of each room given as KEYS: one round trip. */
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
	rooms_op_free(op);
}

/* rooms_max_per_hour per user (SPEC section 8): then the INSERT. */
static void
rooms_allowed_cb(long long retry_after, void *arg)
{
	struct rooms_op *op = arg;
	const char *params[3];
	char uidbuf[24];

	if (retry_after != 0) {
		if (retry_after > 0)
			limit_refuse(op->conn, retry_after, "rooms created "
			    "by this user");
		else
			conn_error(op->conn, 503, "the limit store is "
			    "unavailable; try again");
		rooms_op_free(op);
		return;
	}
	snprintf(uidbuf, sizeof(uidbuf), "%lld", (long long)op->uid);
	params[0] = op->room;
	params[1] = op->name;
	params[2] = uidbuf;
	if (db_query(op->conn->worker->db, "INSERT INTO rooms (id, name, "
	    "created_by) VALUES ($1, $2, $3)", 3, params, rooms_created_cb,
	    op) == -1) {
		api_db_error(op->conn, NULL, "create room");
		rooms_op_free(op);
	}
}

/* The key that counts the rooms op->uid has created this hour. */
static void
rooms_limit_key(const struct rooms_op *op, char *key, size_t keylen)
{
	char uidbuf[24];

	snprintf(uidbuf, sizeof(uidbuf), "%lld", (long long)op->uid);
	limit_key(op->conn->worker, "rooms", uidbuf, key, keylen);
}

static void
rooms_created_cb(struct db_result *res, void *arg)
{
	struct rooms_op *op = arg;
	char key[LIMIT_KEY_MAX];

	/* A room that was not made does not count against the limit. */
	if (res == NULL || !db_result_ok(res)) {
		rooms_limit_key(op, key, sizeof(key));
		limit_give_back(op->conn->worker, key);
	}
	if (res != NULL && strcmp(db_result_sqlstate(res), "23505") == 0)
		conn_error(op->conn, 409, "room id %s is taken", op->room);
	else if (res == NULL || !db_result_ok(res))
		api_db_error(op->conn, res, "create room");
	else {
		evbuffer_add(op->body, "{", 1);
		json_add_key(op->body, "id");
		json_add_cstr(op->body, op->room);
		evbuffer_add(op->body, ",", 1);
		json_add_key(op->body, "name");
		json_add_cstr(op->body, op->name);
		evbuffer_add(op->body, "}", 1);
		conn_json(op->conn, 200, op->body, NULL);
	}
	rooms_op_free(op);
}

/* --- GET /ws/getRooms --------------------------------------------------- */

void
api_get_rooms(struct conn *c, struct http_request *req,
    const struct route_match *m, int64_t uid)
{
	struct rooms_op *op;
	const char *params[2];
	long long limit;
	char lim[24];
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
	snprintf(lim, sizeof(lim), "%lld", limit);
	params[0] = op->room;
	params[1] = lim;
	/*
	 * Keyset paging on the creation order. No row: after names no room
	 * (400, see rooms_listed_cb); one row of NULLs: an empty page.
	 */
	if (db_query(c->worker->db, "SELECT r.id, r.name FROM "
	    "(SELECT seq FROM rooms WHERE id = $1 UNION ALL "
	    "SELECT 0 WHERE $1 = '') a LEFT JOIN LATERAL "
	    "(SELECT id, name, seq FROM rooms WHERE seq > a.seq "
	    "ORDER BY seq LIMIT $2) r ON true ORDER BY r.seq", 2, params,
	    rooms_listed_cb, op) == -1) {
		api_db_error(c, NULL, "list rooms");
		goto fail;
	}
	return;
fail:
	rooms_op_free(op);
}

/*
 * The rooms are listed; count each one's users in one Redis call. The
 * result is kept (copied into the body as we go) until the counts come.
 */
static void
rooms_listed_cb(struct db_result *res, void *arg)
{
	struct rooms_op *op = arg;
	struct worker *w = op->conn->worker;
	const char **argv = NULL;
	char (*keys)[MSG_ROOM_ID_MAX + 64] = NULL;
	int n, i;

	if (res == NULL || !db_result_ok(res)) {
		api_db_error(op->conn, res, "list rooms");
		goto fail;
	}
	if (db_result_ntuples(res) == 0) {
		conn_error(op->conn, 400, "after: there is no room %s (now); "
		    "start again without after", op->room);
		goto fail;
	}
	/* The rows of the page; an empty page is one row of NULLs. */
	for (n = 0; n < db_result_ntuples(res) && !db_result_isnull(res, n,
	    0); n++)
		;
	if (n == 0) {
		evbuffer_add(op->body, "[]", 2);
		conn_json(op->conn, 200, op->body, NULL);
		goto fail;
	}
	/* Keep id and name pairs in the body buffer's place: the JSON is
	 * written now, the counts spliced in by rooms_counted_cb. */
	argv = calloc((size_t)n + 3, sizeof(*argv));
	keys = calloc((size_t)n, sizeof(*keys));
	if (argv == NULL || keys == NULL) {
		conn_error(op->conn, 500, "out of memory");
		goto fail;
	}
	argv[0] = "EVAL";
	argv[1] = rooms_count_lua;
	argv[2] = op->name;
	snprintf(op->name, sizeof(op->name), "%d", n);
	for (i = 0; i < n; i++) {
		(void)msg_key_room_clients(keys[i], sizeof(keys[i]),
		    w->conf->redis_prefix, db_result_value(res, i, 0));
		argv[3 + i] = keys[i];
		/* Each row as `"id":..,"name":..` separated by NUL. */
		json_add_key(op->body, "id");
		json_add_cstr(op->body, db_result_value(res, i, 0));
		evbuffer_add(op->body, ",", 1);
		json_add_key(op->body, "name");
		json_add_cstr(op->body, db_result_value(res, i, 1));
		evbuffer_add(op->body, "", 1);
	}
	if (bus_commandv(w->redis, rooms_counted_cb, op, n + 3, argv,
	    NULL) == -1) {
		conn_error(op->conn, 503, "the presence store is unavailable; "
		    "try again");
		goto fail;
	}
	free(argv);
	free(keys);
	return;
fail:
	free(argv);
	free(keys);
	rooms_op_free(op);
}

static void
rooms_counted_cb(struct bus *bus, struct bus_reply *reply, void *arg)
{
	struct rooms_op *op = arg;
	struct evbuffer *out = NULL;
	size_t n, i, len;
	char *rows = NULL, *p;

	(void)bus;
	if (reply == NULL || bus_reply_type(reply) != BUS_ARRAY) {
		conn_error(op->conn, 503, "the presence store is unavailable; "
		    "try again");
		goto done;
	}
	n = bus_reply_elements(reply);
	len = evbuffer_get_length(op->body);
	if ((rows = malloc(len + 1)) == NULL || (out = evbuffer_new()) ==
	    NULL) {
		conn_error(op->conn, 500, "out of memory");
		goto done;
	}
	evbuffer_remove(op->body, rows, len);
	rows[len] = '\0';
	evbuffer_add(out, "[", 1);
	for (i = 0, p = rows; i < n && p < rows + len; i++) {
		struct bus_reply *e = bus_reply_element(reply, i);

		evbuffer_add_printf(out, "%s{%s,\"clients\":%lld}",
		    i > 0 ? "," : "", p, e != NULL &&
		    bus_reply_type(e) == BUS_INTEGER ?
		    bus_reply_integer(e) : 0LL);
		p += strlen(p) + 1;
	}
	evbuffer_add(out, "]", 1);
	conn_json(op->conn, 200, out, NULL);
done:
	if (out != NULL)
		evbuffer_free(out);
	free(rows);
	rooms_op_free(op);
}

/* --- GET /ws/getClients/{roomId} ---------------------------------------- */

void
api_get_clients(struct conn *c, struct http_request *req,
    const struct route_match *m, int64_t uid)
{
	struct rooms_op *op;
	const char *params[1];

	if ((op = rooms_op_new(c, req, uid)) == NULL)
		return;
	if (!rooms_room_param(c, m, op))
		return;
	params[0] = op->room;
	if (db_query(c->worker->db, "SELECT 1 FROM rooms WHERE id = $1", 1,
	    params, rooms_clients_room_cb, op) == -1) {
		api_db_error(c, NULL, "room lookup");
		rooms_op_free(op);
	}
}

static void
rooms_clients_room_cb(struct db_result *res, void *arg)
{
	struct rooms_op *op = arg;
	struct worker *w = op->conn->worker;
	char key[MSG_KEY_MAX];

	if (res == NULL || !db_result_ok(res)) {
		api_db_error(op->conn, res, "room lookup");
		goto fail;
	}
	if (db_result_ntuples(res) == 0) {
		conn_error(op->conn, 404, "no room %s", op->room);
		goto fail;
	}
	(void)msg_key_room_clients(key, sizeof(key), w->conf->redis_prefix,
	    op->room);
	if (bus_command(w->redis, rooms_clients_cb, op, "HGETALL %s", key) ==
	    -1) {
		conn_error(op->conn, 503, "the presence store is unavailable; "
		    "try again");
		goto fail;
	}
	return;
fail:
	rooms_op_free(op);
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
		conn_error(op->conn, 503, "the presence store is unavailable; "
		    "try again");
		goto done;
	}
	n = bus_reply_elements(reply) / 2;
	if (n > 0 && (users = calloc(n, sizeof(*users))) == NULL) {
		conn_error(op->conn, 500, "out of memory");
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
	evbuffer_add(op->body, "[", 1);
	for (i = 0; i < k; i++) {
		size_t len;
		const char *name = bus_reply_str(bus_reply_element(reply,
		    2 * users[i].i + 1), &len);

		evbuffer_add_printf(op->body, "%s{\"id\":%lld,", i ? "," : "",
		    users[i].id);
		json_add_key(op->body, "username");
		json_add_string(op->body, name != NULL ? name : "",
		    name != NULL ? len : 0);
		evbuffer_add(op->body, "}", 1);
	}
	evbuffer_add(op->body, "]", 1);
	conn_json(op->conn, 200, op->body, NULL);
done:
	free(users);
	rooms_op_free(op);
}

/* --- GET /ws/history/{roomId} ------------------------------------------- */

void
api_history(struct conn *c, struct http_request *req,
    const struct route_match *m, int64_t uid)
{
	struct rooms_op *op;
	long long limit, before;
	char lim[24], bef[24];
	const char *params[3] = { NULL, bef, lim };

	if ((op = rooms_op_new(c, req, uid)) == NULL)
		return;
	if (!rooms_room_param(c, m, op))
		return;
	if (api_paging(c, req, &limit, &before) == -1) {
		rooms_op_free(op);
		return;
	}
	snprintf(lim, sizeof(lim), "%lld", limit);
	snprintf(bef, sizeof(bef), "%lld", before);
	params[0] = op->room;
	if (db_query(c->worker->db,
	    "SELECT m.id, m.user_id, m.username, m.content, "
	    API_SQL_TIME("m.created_at") " FROM rooms r "
	    "LEFT JOIN LATERAL (SELECT * FROM messages WHERE room_id = r.id "
	    "AND id < $2 ORDER BY id DESC LIMIT $3) m ON true "
	    "WHERE r.id = $1 ORDER BY m.id", 3, params, rooms_history_cb,
	    op) == -1) {
		api_db_error(c, NULL, "history");
		rooms_op_free(op);
	}
}

static void
rooms_history_cb(struct db_result *res, void *arg)
{
	struct rooms_op *op = arg;
	int n, i, first = 1;

	if (res == NULL || !db_result_ok(res)) {
		api_db_error(op->conn, res, "history");
		goto done;
	}
	if ((n = db_result_ntuples(res)) == 0) {
		conn_error(op->conn, 404, "no room %s", op->room);
		goto done;
	}
	evbuffer_add(op->body, "[", 1);
	for (i = 0; i < n; i++) {
		if (db_result_isnull(res, i, 0))
			continue;	/* a room without messages */
		evbuffer_add_printf(op->body, "%s{\"type\":\"message\","
		    "\"id\":%s,", first ? "" : ",", db_result_value(res, i, 0));
		json_add_key(op->body, "roomId");
		json_add_cstr(op->body, op->room);
		evbuffer_add_printf(op->body, ",\"userId\":%s,",
		    db_result_value(res, i, 1));
		json_add_key(op->body, "username");
		json_add_cstr(op->body, db_result_value(res, i, 2));
		evbuffer_add(op->body, ",", 1);
		json_add_key(op->body, "content");
		json_add_cstr(op->body, db_result_value(res, i, 3));
		evbuffer_add_printf(op->body, ",\"ts\":\"%s\"}",
		    db_result_value(res, i, 4));
		first = 0;
	}
	evbuffer_add(op->body, "]", 1);
	conn_json(op->conn, 200, op->body, NULL);
done:
	rooms_op_free(op);
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
	char uidbuf[24];

	if ((op = rooms_op_new(c, req, uid)) == NULL)
		return;
	if (!rooms_room_param(c, m, op))
		return;
	snprintf(uidbuf, sizeof(uidbuf), "%lld", (long long)uid);
	params[0] = uidbuf;
	params[1] = op->room;
	if (db_query(c->worker->db, "SELECT u.username, EXISTS (SELECT 1 FROM "
	    "rooms WHERE id = $2) FROM users u WHERE u.id = $1", 2, params,
	    rooms_join_cb, op) == -1) {
		api_db_error(c, NULL, "join");
		rooms_op_free(op);
	}
}

static void
rooms_join_cb(struct db_result *res, void *arg)
{
	struct rooms_op *op = arg;
	struct conn *c = op->conn;
	char extra[256], token[AUTH_TOKEN_MAX + 2], session[AUTH_KEY_MAX];

	if (res == NULL || !db_result_ok(res)) {
		api_db_error(c, res, "join");
		goto done;
	}
	if (db_result_ntuples(res) == 0) {
		conn_error(c, 401, "the account no longer exists");
		goto done;
	}
	if (strcmp(db_result_value(res, 0, 1), "t") != 0) {
		conn_error(c, 404, "no room %s", op->room);
		goto done;
	}
	if (!api_origin_allowed(c->worker, op->req)) {
		conn_error(c, 403, "WebSocket connections from origin %s are "
		    "not allowed", http_header(op->req, "Origin"));
		goto done;
	}
	if (ws_handshake(op->req, extra, sizeof(extra)) == -1) {
		conn_error(c, 400, "not a valid WebSocket upgrade: %s", extra);
		goto done;
	}
	session[0] = '\0';
	if (auth_request_token(op->req, token, sizeof(token)) == 1)
		auth_session_key(c->worker, token, session, sizeof(session));
	snprintf(op->name, sizeof(op->name), "%s", db_result_value(res, 0, 0));
	chat_upgrade(c, extra, op->room, op->uid, op->name, session);
done:
	rooms_op_free(op);
}

/* --- helpers ------------------------------------------------------------ */

static struct rooms_op *
rooms_op_new(struct conn *c, struct http_request *req, int64_t uid)
{
	struct rooms_op *op;

	if ((op = calloc(1, sizeof(*op))) == NULL ||
	    (op->body = evbuffer_new()) == NULL) {
		free(op);
		conn_error(c, 500, "out of memory");
		return NULL;
	}
	op->conn = c;
	op->req = req;
	op->uid = uid;
	return op;
}

static void
rooms_op_free(struct rooms_op *op)
{
	if (op == NULL)
		return;
	evbuffer_free(op->body);
	free(op);
}

/* The {roomId} parameter; an id that cannot exist is an unknown room. */
static int
rooms_room_param(struct conn *c, const struct route_match *m,
    struct rooms_op *op)
{
	const char *id = router_param(m, "roomId");

	if (id == NULL || !msg_room_id_valid(id, strlen(id))) {
		conn_error(c, 404, "no room %s", id != NULL ? id : "");
		rooms_op_free(op);
		return 0;
	}
	snprintf(op->room, sizeof(op->room), "%s", id);
	return 1;
}
