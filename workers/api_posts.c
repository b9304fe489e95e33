/*
 * api_posts: the posts and the feed of SPEC.md §4: creating, reading and
 * deleting a post, a user's posts and the caller's feed (own posts plus
 * those of everyone followed). Each handler runs one SQL statement; its
 * state lives in a struct api_op until the answer is sent.
 */
#include "config.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "common/db.h"
#include "common/json.h"
#include "common/log.h"
#include "common/utf8.h"
#include "common/util.h"
#include "workers/api.h"
#include "workers/conn.h"
#include "workers/http.h"
#include "workers/router.h"
#include "workers/worker.h"

#define POSTS_CONTENT_MAX	1000	/* SPEC.md §4, in code points */
/* 401 for a valid session whose user row is gone (deleted meanwhile). */
#define POSTS_GONE		"this account no longer exists"

static struct api_op *posts_op_new(struct conn *, struct http_request *,
		    int64_t, int64_t);
static void	posts_list(struct conn *, struct http_request *, int64_t,
		    int64_t, const char *, db_cb *);
static void	posts_answer_list(struct api_op *, struct db_result *);
static void	posts_add_post(struct evbuffer *, struct db_result *, int);
static void	posts_answer_post(struct api_op *, struct db_result *, int);

static void	posts_create_cb(struct db_result *, void *);
static void	posts_get_cb(struct db_result *, void *);
static void	posts_delete_cb(struct db_result *, void *);
static void	posts_user_list_cb(struct db_result *, void *);
static void	posts_feed_cb(struct db_result *, void *);
static void	posts_feed_empty_cb(struct db_result *, void *);

/* The columns of a post object, in the order posts_add_post() reads. */
#define POSTS_COLUMNS \
	"p.id, p.user_id, u.username, p.content, " \
	API_SQL_TIME("p.created_at")

/* $1 the author, $2 the content. */
static const char posts_create_sql[] =
    "WITH p AS (INSERT INTO posts (user_id, content) VALUES ($1, $2)"
    " RETURNING *) SELECT " POSTS_COLUMNS
    " FROM p JOIN users u ON u.id = p.user_id";

static const char posts_get_sql[] =
    "SELECT " POSTS_COLUMNS " FROM posts p JOIN users u ON u.id = p.user_id"
    " WHERE p.id = $1";

/*
 * $1 the post, $2 the caller. No row: no such post. Otherwise the author
 * and whether this statement deleted it (only the author's own can go).
 * Both CTEs see the same snapshot, so a post deleted concurrently shows
 * its author but deleted = false: see posts_delete_cb().
 */
static const char posts_delete_sql[] =
    "WITH d AS (DELETE FROM posts WHERE id = $1 AND user_id = $2"
    " RETURNING id)"
    " SELECT p.user_id, EXISTS (SELECT 1 FROM d) FROM posts p"
    " WHERE p.id = $1";

/*
 * A user's posts: $1 the user, $2 before (ids below it), $3 limit. Zero
 * rows means no such user; one row of NULLs, a user without posts. The
 * LATERAL reads posts_user_id (user_id, id DESC) from $2 down, at most $3
 * rows; it names $1, not u.id, so that the planner knows which user it is
 * (with u.id it planned for an average author and read all 17,000 posts of
 * a prolific one: sql/FEED.md). The keyset on the post id keeps pages stable under inserts: a new
 * post has a higher id than every one already read.
 */
static const char posts_user_list_sql[] =
    "SELECT " POSTS_COLUMNS " FROM users u LEFT JOIN LATERAL ("
    "SELECT * FROM posts WHERE user_id = $1 AND id < $2"
    " ORDER BY id DESC LIMIT $3) p ON true"
    " WHERE u.id = $1 ORDER BY p.id DESC";

/*
 * The feed: $1 the caller, $2 before, $3 limit. Stays fast for a reader
 * following thousands of authors and for authors with many followers
 * (sql/FEED.md has the plans and figures):
 * - for each author (everyone followed, via user_followers' primary key,
 *   plus the caller) one probe of posts_user_id (user_id, id DESC) takes
 *   at most $3 ids below $2, from the index alone;
 * - the top $3 of those ids are merged, and only then are those $3 posts
 *   and their authors fetched.
 * Fetching whole rows inside the LATERAL instead made the planner, which
 * sees an average author there, read and sort every post of every
 * followed author: 7 times slower for a reader following 5,000 people.
 * The keyset on the post id (no OFFSET) keeps pages stable under inserts.
 */
static const char posts_feed_sql[] =
    "SELECT " POSTS_COLUMNS " FROM ("
    "SELECT x.id FROM ("
    "SELECT following_id AS uid FROM user_followers WHERE follower_id = $1"
    " UNION ALL SELECT $1::bigint) a"
    " CROSS JOIN LATERAL (SELECT id FROM posts WHERE user_id = a.uid"
    " AND id < $2 ORDER BY id DESC LIMIT $3) x"
    " ORDER BY x.id DESC LIMIT $3) t"
    " JOIN posts p ON p.id = t.id JOIN users u ON u.id = p.user_id"
    " ORDER BY p.id DESC";

/* $1 the caller: one row while their account exists. */
static const char posts_caller_sql[] =
    "SELECT NULL FROM users WHERE id = $1";

/* --- POST /posts --------------------------------------------------------- */

void
api_post_create(struct conn *c, struct http_request *req,
    const struct route_match *m, int64_t uid)
{
	struct json_doc *doc;
	struct api_op *op;
	const char *s, *params[2];
	size_t len;

	(void)m;
	if ((doc = api_body(c, req)) == NULL)
		return;
	if (api_string(c, doc, "content", &s, &len) == -1)
		goto done;
	/* json_get_string() has checked that s is valid UTF-8 without NUL. */
	if (len == 0 || utf8_count(s, len) > POSTS_CONTENT_MAX ||
	    utf8_blank(s, len)) {
		conn_error(c, 400, "content must be 1 to %d characters, not "
		    "only white space", POSTS_CONTENT_MAX);
		goto done;
	}
	if ((op = posts_op_new(c, req, uid, 0)) == NULL)
		goto done;
	params[0] = api_op_int(op, uid);
	params[1] = s;	/* copied by db_query() */
	api_query(op, posts_create_sql, 2, params, posts_create_cb);
done:
	json_free(doc);
}

static void
posts_create_cb(struct db_result *res, void *arg)
{
	struct api_op *op = arg;

	/* The only foreign key is the author's: the caller's row is gone. */
	if (res != NULL && !db_result_ok(res) &&
	    strcmp(db_result_sqlstate(res), "23503") == 0) {
		conn_error(op->conn, 401, POSTS_GONE);
		goto done;
	}
	if (res == NULL || !db_result_ok(res)) {
		api_db_error(op->conn, res, "creating a post");
		goto done;
	}
	if (db_result_ntuples(res) != 1) {
		/* The user was deleted between the insert and the join. */
		conn_error(op->conn, 401, POSTS_GONE);
		goto done;
	}
	posts_answer_post(op, res, 201);
	return;
done:
	api_op_free(op);
}

/* --- GET /posts/{id} ----------------------------------------------------- */

void
api_post_get(struct conn *c, struct http_request *req,
    const struct route_match *m, int64_t uid)
{
	struct api_op *op;
	const char *params[1];
	int64_t n;

	if (api_id(c, router_param(m, "id"), "the post id", &n) == -1)
		return;
	if ((op = posts_op_new(c, req, uid, n)) == NULL)
		return;
	params[0] = api_op_int(op, n);
	api_query(op, posts_get_sql, 1, params, posts_get_cb);
}

static void
posts_get_cb(struct db_result *res, void *arg)
{
	struct api_op *op = arg;

	if (res == NULL || !db_result_ok(res)) {
		api_db_error(op->conn, res, "reading a post");
		goto done;
	}
	if (db_result_ntuples(res) == 0) {
		conn_error(op->conn, 404, "no post with id %" PRId64, op->id);
		goto done;
	}
	posts_answer_post(op, res, 200);
	return;
done:
	api_op_free(op);
}

/* --- DELETE /posts/{id} -------------------------------------------------- */

void
api_post_delete(struct conn *c, struct http_request *req,
    const struct route_match *m, int64_t uid)
{
	struct api_op *op;
	const char *params[2];
	int64_t n;

	if (api_id(c, router_param(m, "id"), "the post id", &n) == -1)
		return;
	if ((op = posts_op_new(c, req, uid, n)) == NULL)
		return;
	params[0] = api_op_int(op, n);
	params[1] = api_op_int(op, uid);
	api_query(op, posts_delete_sql, 2, params, posts_delete_cb);
}

static void
posts_delete_cb(struct db_result *res, void *arg)
{
	struct api_op *op = arg;
	long long author;

	if (res == NULL || !db_result_ok(res)) {
		api_db_error(op->conn, res, "deleting a post");
		goto done;
	}
	if (db_result_ntuples(res) == 0) {
		conn_error(op->conn, 404, "no post with id %" PRId64, op->id);
		goto done;
	}
	if (strcmp(db_result_value(res, 0, 1), "t") == 0) {
		conn_respond(op->conn, 204, NULL, NULL, 0, NULL);
		goto done;
	}
	if (util_parse_int(db_result_value(res, 0, 0), INT64_MIN, INT64_MAX,
	    &author) == -1) {
		log_warnx("delete post: bad author %s",
		    db_result_value(res, 0, 0));
		conn_error(op->conn, 500, "internal error");
	} else if (author == op->uid)	/* deleted concurrently */
		conn_error(op->conn, 404, "no post with id %" PRId64, op->id);
	else
		conn_error(op->conn, 403, "post %" PRId64 " is not yours: only "
		    "its author can delete it", op->id);
done:
	api_op_free(op);
}

/* --- GET /users/{id}/posts, GET /feed ------------------------------------ */

void
api_user_posts(struct conn *c, struct http_request *req,
    const struct route_match *m, int64_t uid)
{
	int64_t n;

	if (api_id(c, router_param(m, "id"), "the user id", &n) == -1)
		return;
	posts_list(c, req, uid, n, posts_user_list_sql, posts_user_list_cb);
}

void
api_feed(struct conn *c, struct http_request *req,
    const struct route_match *m, int64_t uid)
{
	(void)m;
	posts_list(c, req, uid, uid, posts_feed_sql, posts_feed_cb);
}

/* Run a list statement with $1 id, $2 before, $3 limit from the query. */
static void
posts_list(struct conn *c, struct http_request *req, int64_t uid, int64_t id,
    const char *sql, db_cb *cb)
{
	struct api_op *op;
	const char *params[3];
	long long lim, bef;

	if (api_paging(c, req, &lim, &bef) == -1)
		return;
	if ((op = posts_op_new(c, req, uid, id)) == NULL)
		return;
	params[0] = api_op_int(op, id);
	params[1] = api_op_int(op, bef);
	params[2] = api_op_int(op, lim);
	api_query(op, sql, 3, params, cb);
}

/* Answer 200 with the rows of res as an array, skipping a row of NULLs
 * (the LEFT JOIN of a user without posts). */
static void
posts_answer_list(struct api_op *op, struct db_result *res)
{
	struct evbuffer *body = op->body;
	int i, n, first = 1;

	n = db_result_ntuples(res);
	evbuffer_add(body, "[", 1);
	for (i = 0; i < n; i++) {
		if (db_result_isnull(res, i, 0))
			continue;
		if (!first)
			evbuffer_add(body, ",", 1);
		first = 0;
		posts_add_post(body, res, i);
	}
	evbuffer_add(body, "]", 1);
	conn_json(op->conn, 200, body, NULL);
}

static void
posts_user_list_cb(struct db_result *res, void *arg)
{
	struct api_op *op = arg;

	if (res == NULL || !db_result_ok(res))
		api_db_error(op->conn, res, "listing a user's posts");
	else if (db_result_ntuples(res) == 0)
		conn_error(op->conn, 404, "no user with id %" PRId64, op->id);
	else
		posts_answer_list(op, res);
	api_op_free(op);
}

/*
 * An empty feed may mean that the caller's row is gone (its follows and
 * posts went with it): ask, and answer 401 as POST /posts does. The check
 * runs only for empty feeds, so posts_feed_sql stays the measured query.
 */
static void
posts_feed_cb(struct db_result *res, void *arg)
{
	struct api_op *op = arg;
	const char *params[1];

	if (res == NULL || !db_result_ok(res))
		api_db_error(op->conn, res, "reading the feed");
	else if (db_result_ntuples(res) == 0) {
		params[0] = api_op_int(op, op->uid);
		api_query(op, posts_caller_sql, 1, params,
		    posts_feed_empty_cb);
		return;
	} else
		posts_answer_list(op, res);
	api_op_free(op);
}

static void
posts_feed_empty_cb(struct db_result *res, void *arg)
{
	struct api_op *op = arg;

	if (res == NULL || !db_result_ok(res))
		api_db_error(op->conn, res, "reading the feed");
	else if (db_result_ntuples(res) == 0)
		conn_error(op->conn, 401, POSTS_GONE);
	else
		posts_answer_list(op, res);	/* no post rows: [] */
	api_op_free(op);
}

/* --- helpers ------------------------------------------------------------ */

/* An op for the post or user id; NULL after answering 500. */
static struct api_op *
posts_op_new(struct conn *c, struct http_request *req, int64_t uid,
    int64_t id)
{
	struct api_op *op;

	if ((op = api_op_new(c, req, uid, sizeof(*op))) != NULL)
		op->id = id;
	return op;
}

/* Answer status with the post of res's first row, and free op. */
static void
posts_answer_post(struct api_op *op, struct db_result *res, int status)
{
	posts_add_post(op->body, res, 0);
	conn_json(op->conn, status, op->body, NULL);
	api_op_free(op);
}

/* The post object of row (columns as in POSTS_COLUMNS). */
static void
posts_add_post(struct evbuffer *out, struct db_result *res, int row)
{
	evbuffer_add(out, "{", 1);
	api_add_int(out, "id", db_result_value(res, row, 0));
	evbuffer_add(out, ",", 1);
	api_add_int(out, "user_id", db_result_value(res, row, 1));
	evbuffer_add(out, ",", 1);
	json_add_key(out, "username");
	json_add_cstr(out, db_result_value(res, row, 2));
	evbuffer_add(out, ",", 1);
	json_add_key(out, "content");
	json_add_cstr(out, db_result_value(res, row, 3));
	evbuffer_add(out, ",", 1);
	json_add_key(out, "created_at");
	json_add_cstr(out, db_result_value(res, row, 4));
	evbuffer_add(out, "}", 1);
}

