/*
 * api_users: the users and the social graph of SPEC.md §3: deleting one's
 * account, follow and unfollow, user objects (/me, /users/{id},
 * /users?username=) and the follower and following lists. Each handler
 * runs one SQL statement (deletion, a transaction around Redis work); its
 * state lives in a struct users_op (a struct api_op) until the answer is sent.
 */
#include "config.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "common/bus.h"
#include "common/conf.h"
#include "common/db.h"
#include "common/json.h"
#include "common/log.h"
#include "common/msg.h"
#include "common/util.h"
#include "workers/api.h"
#include "workers/auth.h"
#include "workers/conn.h"
#include "workers/http.h"
#include "workers/router.h"
#include "workers/worker.h"

#define USERS_NAME_MAX	32	/* SPEC.md §2: a username's longest */
/* 401 for a valid session whose user row is gone (deleted meanwhile). */
#define USERS_GONE	"this account no longer exists"

/* Which list of a user's graph. */
enum users_list {
	USERS_FOLLOWERS,	/* who follows them */
	USERS_FOLLOWING		/* whom they follow */
};

/*
 * One request in flight: owned by the handler until it hands it to a
 * callback, freed by whoever answers. Holds copies of everything the
 * continuation needs (the route match is gone by then).
 */
struct users_op {
	struct api_op	 api;		/* id: the other user (follow, lists) */
	int		 with_email;	/* user object of the caller (/me) */
	int		 gone;		/* delete: the caller's row was gone */
	struct db_txn	*txn;		/* delete: open until COMMIT/ROLLBACK */
};

static struct users_op *users_op_new(struct conn *, struct http_request *,
		    int64_t, int64_t);
static int	users_target(struct conn *, struct http_request *,
		    const char *, int64_t, int64_t *);
static void	users_follow_answer(struct users_op *);
static void	users_profile(struct conn *, struct http_request *, int64_t,
		    const char *, int64_t, const char *, int);
static void	users_list(struct conn *, struct http_request *,
		    const struct route_match *, enum users_list);
static void	users_publish_deleted(struct worker *, int64_t);

static void	users_delete_fail(struct users_op *, int, const char *);
static void	users_begun_cb(struct db_result *, void *);
static void	users_delete_cb(struct db_result *, void *);
static void	users_revoked_cb(int, void *);
static void	users_gone_cb(int, void *);
static void	users_committed_cb(struct db_result *, void *);
static void	users_published_cb(struct bus *, struct bus_reply *, void *);
static void	users_follow_cb(struct db_result *, void *);
static void	users_unfollow_cb(struct db_result *, void *);
static void	users_profile_cb(struct db_result *, void *);
static void	users_list_cb(struct db_result *, void *);

/*
 * A user object: the counts come from count(*) over the indexes of
 * user_followers (both directions) and posts. $1 is an id or a username;
 * see users_profile().
 */
#define USERS_PROFILE_SELECT \
	"SELECT u.id, u.username, u.email," \
	" (SELECT count(*) FROM user_followers f" \
	"  WHERE f.following_id = u.id)," \
	" (SELECT count(*) FROM user_followers f" \
	"  WHERE f.follower_id = u.id)," \
	" (SELECT count(*) FROM posts p WHERE p.user_id = u.id), " \
	API_SQL_TIME("u.created_at") " FROM users u "

static const char users_profile_by_id[] =
    USERS_PROFILE_SELECT "WHERE u.id = $1";
/* lower() on both sides uses the unique index users_username_lower. */
static const char users_profile_by_name[] =
    USERS_PROFILE_SELECT "WHERE lower(u.username) = lower($1)";

/*
 * The lists: $1 the user, $2 before (ids below it), $3 limit. Zero rows
 * means no such user; one row of NULLs, a user with an empty list. The
 * keyset on the other user's id makes pages stable under inserts: a new
 * row lands either on a page not yet read or above the ones already read.
 */
static const char *const users_list_sql[] = {
	[USERS_FOLLOWERS] =
	    "SELECT l.id, l.username FROM users t LEFT JOIN LATERAL ("
	    "SELECT u.id, u.username FROM user_followers f"
	    " JOIN users u ON u.id = f.follower_id"
	    " WHERE f.following_id = t.id AND f.follower_id < $2"
	    " ORDER BY f.follower_id DESC LIMIT $3) l ON true"
	    " WHERE t.id = $1 ORDER BY l.id DESC",
	[USERS_FOLLOWING] =
	    "SELECT l.id, l.username FROM users t LEFT JOIN LATERAL ("
	    "SELECT u.id, u.username FROM user_followers f"
	    " JOIN users u ON u.id = f.following_id"
	    " WHERE f.follower_id = t.id AND f.following_id < $2"
	    " ORDER BY f.following_id DESC LIMIT $3) l ON true"
	    " WHERE t.id = $1 ORDER BY l.id DESC",
};

/* --- DELETE /delete ------------------------------------------------------ */

#define USERS_KEPT	"nothing was deleted; try again"
#define USERS_LOGGED_OUT "every session of the account was revoked but the " \
	"deletion could not be committed (the database is unavailable): " \
	"the account is intact; log in and try again"

/*
 * One transaction on one pinned connection: BEGIN; DELETE the row (the
 * foreign keys cascade to both directions of the follows and to the
 * posts); revoke every session in Redis and tell the workers (on
 * <prefix>control) to close the user's WebSockets; COMMIT. If Redis fails,
 * or the client hangs up before the sessions are touched, ROLLBACK: the
 * account and its sessions stay as they were. Only a COMMIT that fails
 * after the revocation leaves a user logged out but intact.
 */
void
api_delete(struct conn *c, struct http_request *req,
    const struct route_match *m, int64_t uid)
{
	struct users_op *op;

	(void)m;
	if (!bus_connected(c->worker->redis)) {
		conn_error(c, 503, "Redis is unavailable, so sessions cannot "
		    "be revoked; " USERS_KEPT);
		return;
	}
	if ((op = users_op_new(c, req, uid, 0)) == NULL)
		return;
	if ((op->txn = db_begin(c->worker->db, users_begun_cb, op)) == NULL) {
		api_db_error(c, NULL, "BEGIN");
		api_op_free(op);
	}
}

/* Roll back, answer status with msg, free op. */
static void
users_delete_fail(struct users_op *op, int status, const char *msg)
{
	db_rollback(op->txn);
	op->txn = NULL;
	conn_error(op->api.conn, status, "%s", msg);
	api_op_free(op);
}

static void
users_begun_cb(struct db_result *res, void *arg)
{
	struct users_op *op = arg;
	const char *params[1];

	if (res == NULL || !db_result_ok(res)) {
		db_rollback(op->txn);
		api_db_error(op->api.conn, res, "BEGIN");
		api_op_free(op);
		return;
	}
	params[0] = api_op_int(&op->api, op->api.uid);
	if (db_txn_query(op->txn, "DELETE FROM users WHERE id = $1 RETURNING id",
	    1, params, users_delete_cb, op) == -1)
		users_delete_fail(op, 503, "the database is unavailable; "
		    USERS_KEPT);
}

static void
users_delete_cb(struct db_result *res, void *arg)
{
	struct users_op *op = arg;
	struct worker *w = op->api.conn->worker;

	if (res == NULL || !db_result_ok(res)) {
		db_rollback(op->txn);
		api_db_error(op->api.conn, res, "deleting a user");
		api_op_free(op);
		return;
	}
	if (db_result_ntuples(res) == 0) {
		/*
		 * Already gone: a session that outlived its user. Nothing to
		 * commit; revoke what is left all the same, then answer 401.
		 */
		db_rollback(op->txn);
		op->txn = NULL;
		op->gone = 1;
		if (auth_session_revoke_all(w, op->api.uid, users_gone_cb, op) == -1)
			users_gone_cb(0, op);
		return;
	}
	/* Nobody is waiting for the answer: change nothing. */
	if (op->api.conn->state == CONN_CLOSED || op->api.conn->peer_eof) {
		users_delete_fail(op, 503, "the client went away; "
		    USERS_KEPT);
		return;
	}
	if (auth_session_revoke_all(w, op->api.uid, users_revoked_cb, op) == -1)
		users_delete_fail(op, 503, "Redis is unavailable, so sessions "
		    "cannot be revoked; " USERS_KEPT);
}

static void
users_revoked_cb(int ok, void *arg)
{
	struct users_op *op = arg;
	struct db_txn *txn = op->txn;

	if (!ok) {
		users_delete_fail(op, 503, "the sessions could not be revoked "
		    "(Redis is unavailable); " USERS_KEPT);
		return;
	}
	users_publish_deleted(op->api.conn->worker, op->api.uid);
	op->txn = NULL;
	if (db_commit(txn, users_committed_cb, op) == -1) {
		conn_error(op->api.conn, 503, USERS_LOGGED_OUT);
		api_op_free(op);
	}
}

static void
users_committed_cb(struct db_result *res, void *arg)
{
	struct users_op *op = arg;

	if (res == NULL || !db_result_ok(res)) {
		log_warnx("conn %llu: deleting user %" PRId64 ": COMMIT failed "
		    "after its sessions were revoked: %s",
		    (unsigned long long)op->api.conn->id, op->api.uid,
		    res != NULL ? db_result_error(res) : "connection lost");
		conn_error(op->api.conn, 503, USERS_LOGGED_OUT);
	} else
		conn_respond(op->api.conn, 204, NULL, NULL, 0, NULL);
	api_op_free(op);
}

static void
users_gone_cb(int ok, void *arg)
{
	struct users_op *op = arg;

	if (ok)
		users_publish_deleted(op->api.conn->worker, op->api.uid);
	conn_error(op->api.conn, 401, USERS_GONE);
	api_op_free(op);
}

/*
 * Tell every worker (every host) to close uid's WebSockets. Best effort:
 * the sessions are revoked already (a socket whose session is gone cannot
 * be reopened), so a failure is logged, not answered.
 */
static void
users_publish_deleted(struct worker *w, int64_t uid)
{
	char channel[sizeof(w->conf->redis_prefix) + 16], payload[80];

	(void)msg_key_name(channel, sizeof(channel), w->conf->redis_prefix,
	    MSG_CONTROL);
	snprintf(payload, sizeof(payload),
	    "{\"type\":\"user_deleted\",\"userId\":%" PRId64 "}", uid);
	if (bus_command(w->redis, users_published_cb, NULL, "PUBLISH %s %s",
	    channel, payload) == -1)
		log_warnx("PUBLISH %s %s failed: Redis is unavailable", channel,
		    payload);
}

static void
users_published_cb(struct bus *bus, struct bus_reply *reply, void *arg)
{
	(void)bus;
	(void)arg;
	if (reply == NULL)
		log_warnx("PUBLISH user_deleted: lost the Redis connection");
	else if (bus_reply_type(reply) == BUS_ERROR)
		log_warnx("PUBLISH user_deleted failed: %s",
		    bus_reply_str(reply, NULL));
}

/* --- POST /follow, POST /unfollow ---------------------------------------- */

void
api_follow(struct conn *c, struct http_request *req,
    const struct route_match *m, int64_t uid)
{
	struct users_op *op;
	const char *params[2];
	int64_t target;

	(void)m;
	if (!users_target(c, req, "toFollowId", uid, &target))
		return;
	if ((op = users_op_new(c, req, uid, target)) == NULL)
		return;
	params[0] = api_op_int(&op->api, uid);
	params[1] = api_op_int(&op->api, target);
	/* An unknown id fails the foreign key (23503): see the callback. */
	api_query(&op->api, "INSERT INTO user_followers (follower_id, following_id)"
	    " VALUES ($1, $2) ON CONFLICT DO NOTHING", 2, params,
	    users_follow_cb);
}

static void
users_follow_cb(struct db_result *res, void *arg)
{
	struct users_op *op = arg;

	if (res != NULL && !db_result_ok(res) &&
	    strcmp(db_result_sqlstate(res), "23503") == 0) {
		/* Which key failed tells whose row is missing. */
		if (strstr(db_result_constraint(res), "follower_id") != NULL)
			conn_error(op->api.conn, 401, USERS_GONE);
		else
			conn_error(op->api.conn, 404, "no user with id %" PRId64,
			    op->api.id);
	} else if (res == NULL || !db_result_ok(res))
		api_db_error(op->api.conn, res, "following a user");
	else
		users_follow_answer(op);
	api_op_free(op);
}

void
api_unfollow(struct conn *c, struct http_request *req,
    const struct route_match *m, int64_t uid)
{
	struct users_op *op;
	const char *params[2];
	int64_t target;

	(void)m;
	if (!users_target(c, req, "toUnfollowId", uid, &target))
		return;
	if ((op = users_op_new(c, req, uid, target)) == NULL)
		return;
	params[0] = api_op_int(&op->api, uid);
	params[1] = api_op_int(&op->api, target);
	/*
	 * The DELETE in the CTE runs whatever the main query reads; the main
	 * query says whether the user exists (no row: 404).
	 */
	api_query(&op->api, "WITH d AS (DELETE FROM user_followers"
	    " WHERE follower_id = $1 AND following_id = $2)"
	    " SELECT id FROM users WHERE id = $2", 2, params,
	    users_unfollow_cb);
}

static void
users_unfollow_cb(struct db_result *res, void *arg)
{
	struct users_op *op = arg;

	if (res == NULL || !db_result_ok(res))
		api_db_error(op->api.conn, res, "unfollowing a user");
	else if (db_result_ntuples(res) == 0)
		conn_error(op->api.conn, 404, "no user with id %" PRId64, op->api.id);
	else
		users_follow_answer(op);
	api_op_free(op);
}

/*
 * The user id of follow and unfollow, from the query parameter name or
 * from "id" (the original program's). 1 with *id set, or 0 once answered:
 * 400 for a missing or non-integer id or the caller's own, 404 for an
 * integer that cannot be a user id.
 */
static int
users_target(struct conn *c, struct http_request *req, const char *name,
    int64_t uid, int64_t *id)
{
	const char *used = name;
	char v[32];
	long long n;
	int r;

	if ((r = http_query_get(req->query, name, v, sizeof(v))) == 0) {
		used = "id";
		r = http_query_get(req->query, "id", v, sizeof(v));
	}
	if (r == 0) {
		conn_error(c, 400, "%s is required: the id of the user", name);
		return 0;
	}
	if (r == -1 || util_parse_int(v, INT64_MIN, INT64_MAX, &n) == -1) {
		conn_error(c, 400, "%s must be an integer (a user id)", used);
		return 0;
	}
	if (n == uid) {
		conn_error(c, 400, "%s is your own id: you cannot %s yourself",
		    used, strcmp(name, "toFollowId") == 0 ? "follow" :
		    "unfollow");
		return 0;
	}
	if (n <= 0) {
		conn_error(c, 404, "no user with id %lld", n);
		return 0;
	}
	*id = n;
	return 1;
}

static void
users_follow_answer(struct users_op *op)
{
	evbuffer_add_printf(op->api.body, "{\"follower_id\":%" PRId64
	    ",\"following_id\":%" PRId64 "}", op->api.uid, op->api.id);
	conn_json(op->api.conn, 200, op->api.body, NULL);
}

/* --- user objects ------------------------------------------------------- */

void
api_me(struct conn *c, struct http_request *req,
    const struct route_match *m, int64_t uid)
{
	(void)m;
	users_profile(c, req, uid, users_profile_by_id, uid, NULL, 1);
}

void
api_user_get(struct conn *c, struct http_request *req,
    const struct route_match *m, int64_t uid)
{
	int64_t n;

	if (api_id(c, router_param(m, "id"), "the user id", &n) == -1)
		return;
	users_profile(c, req, uid, users_profile_by_id, n, NULL, 0);
}

void
api_user_find(struct conn *c, struct http_request *req,
    const struct route_match *m, int64_t uid)
{
	char name[USERS_NAME_MAX + 1];
	size_t len;
	int r;

	(void)m;
	r = http_query_get(req->query, "username", name, sizeof(name));
	if (r == 0 || (r == 1 && name[0] == '\0')) {
		conn_error(c, 400, "username is required "
		    "(/users?username=<name>)");
		return;
	}
	/* Checked here so that odd bytes never reach PostgreSQL (invalid
	 * UTF-8 would be an SQL error, not a 404). */
	len = r == 1 ? strlen(name) : 0;
	if (r == -1 || strspn(name, "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
	    "abcdefghijklmnopqrstuvwxyz0123456789_.-") != len) {
		conn_error(c, 400, "username must be 1 to %d characters from "
		    "A-Z a-z 0-9 _ . -", USERS_NAME_MAX);
		return;
	}
	users_profile(c, req, uid, users_profile_by_name, 0, name, 0);
}

/* Look a user up with sql and its one parameter (name, or id when name is
 * NULL); /me (with_email) answers 401 when the caller's row is gone, the
 * others 404. */
static void
users_profile(struct conn *c, struct http_request *req, int64_t uid,
    const char *sql, int64_t id, const char *name, int with_email)
{
	struct users_op *op;
	const char *params[1] = { name };

	if ((op = users_op_new(c, req, uid, 0)) == NULL)
		return;
	if (name == NULL)
		params[0] = api_op_int(&op->api, id);
	op->with_email = with_email;
	api_query(&op->api, sql, 1, params, users_profile_cb);
}

static void
users_profile_cb(struct db_result *res, void *arg)
{
	struct users_op *op = arg;
	struct evbuffer *body = op->api.body;

	if (res == NULL || !db_result_ok(res)) {
		api_db_error(op->api.conn, res, "reading a user");
		goto done;
	}
	if (db_result_ntuples(res) == 0) {
		if (op->with_email)
			conn_error(op->api.conn, 401, USERS_GONE);
		else
			conn_error(op->api.conn, 404, "no such user");
		goto done;
	}
	evbuffer_add(body, "{", 1);
	api_add_int(body, "id", db_result_value(res, 0, 0));
	evbuffer_add(body, ",", 1);
	json_add_key(body, "username");
	json_add_cstr(body, db_result_value(res, 0, 1));
	if (op->with_email) {
		evbuffer_add(body, ",", 1);
		json_add_key(body, "email");
		json_add_cstr(body, db_result_value(res, 0, 2));
	}
	evbuffer_add(body, ",", 1);
	api_add_int(body, "followers", db_result_value(res, 0, 3));
	evbuffer_add(body, ",", 1);
	api_add_int(body, "following", db_result_value(res, 0, 4));
	evbuffer_add(body, ",", 1);
	api_add_int(body, "posts", db_result_value(res, 0, 5));
	evbuffer_add(body, ",", 1);
	json_add_key(body, "created_at");
	json_add_cstr(body, db_result_value(res, 0, 6));
	evbuffer_add(body, "}", 1);
	conn_json(op->api.conn, 200, body, NULL);
done:
	api_op_free(op);
}

/* --- GET /users/{id}/followers, /users/{id}/following ------------------- */

void
api_followers(struct conn *c, struct http_request *req,
    const struct route_match *m, int64_t uid)
{
	(void)uid;
	users_list(c, req, m, USERS_FOLLOWERS);
}

void
api_following(struct conn *c, struct http_request *req,
    const struct route_match *m, int64_t uid)
{
	(void)uid;
	users_list(c, req, m, USERS_FOLLOWING);
}

static void
users_list(struct conn *c, struct http_request *req,
    const struct route_match *m, enum users_list which)
{
	struct users_op *op;
	const char *params[3];
	long long lim, bef;
	int64_t n;

	if (api_id(c, router_param(m, "id"), "the user id", &n) == -1 ||
	    api_paging(c, req, &lim, &bef) == -1)
		return;
	if ((op = users_op_new(c, req, 0, n)) == NULL)
		return;
	params[0] = api_op_int(&op->api, n);
	params[1] = api_op_int(&op->api, bef);
	params[2] = api_op_int(&op->api, lim);
	api_query(&op->api, users_list_sql[which], 3, params, users_list_cb);
}

static void
users_list_cb(struct db_result *res, void *arg)
{
	struct users_op *op = arg;
	struct evbuffer *body = op->api.body;
	int i, n, first = 1;

	if (res == NULL || !db_result_ok(res)) {
		api_db_error(op->api.conn, res, "listing users");
		goto done;
	}
	if ((n = db_result_ntuples(res)) == 0) {
		conn_error(op->api.conn, 404, "no user with id %" PRId64, op->api.id);
		goto done;
	}
	evbuffer_add(body, "[", 1);
	for (i = 0; i < n; i++) {
		if (db_result_isnull(res, i, 0))	/* the empty list */
			continue;
		evbuffer_add_printf(body, "%s{", first ? "" : ",");
		first = 0;
		api_add_int(body, "id", db_result_value(res, i, 0));
		evbuffer_add(body, ",", 1);
		json_add_key(body, "username");
		json_add_cstr(body, db_result_value(res, i, 1));
		evbuffer_add(body, "}", 1);
	}
	evbuffer_add(body, "]", 1);
	conn_json(op->api.conn, 200, body, NULL);
done:
	api_op_free(op);
}

/* --- helpers ------------------------------------------------------------ */

/* NULL after answering 500. */
static struct users_op *
users_op_new(struct conn *c, struct http_request *req, int64_t uid,
    int64_t id)
{
	struct users_op *op;

	if ((op = api_op_new(c, req, uid, sizeof(*op))) != NULL)
		op->api.id = id;
	return op;
}

