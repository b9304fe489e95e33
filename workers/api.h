/*
 * api: the route table and the handlers of SPEC.md, one api_*.c file per
 * group of routes. Every handler answers through conn_respond*() exactly
 * once, possibly later from an async callback. Routes that need a caller
 * go through auth_require() first and run with the caller's user id.
 */
#ifndef GC_API_H
#define GC_API_H

#include <stddef.h>
#include <stdint.h>

struct conn;
struct evbuffer;
struct http_request;
struct route_match;
struct json_doc;
struct db_result;
struct worker;

typedef void api_handler(struct conn *c, struct http_request *req,
	    const struct route_match *m);
typedef void api_user_handler(struct conn *c, struct http_request *req,
	    const struct route_match *m, int64_t uid);

/* Route the request held by c and run its handler (or answer 404/405). */
void	api_dispatch(struct conn *c, struct http_request *req);
/*
 * Count a response under the route api_dispatch() recorded in c->route
 * (its pattern, "static" for web/ files, "none" for a request that was
 * not routed or found nothing) and its status class: conn.c calls it for
 * every response, chat.c for a 101. The router does not run again.
 */
void	api_count(const struct conn *c, int status);
/*
 * The label of a route index: the route pattern ("/users/{id}"),
 * "static" or "none"; "" for an index that shares an earlier index's
 * pattern (never counted); NULL past the last one.
 */
const char *api_route_label(int route);

/* --- helpers for handlers (api.c) ---------------------------------------- */

/*
 * 1 if req's Origin header is absent, this server's own (its host[:port]
 * is the Host header) or listed in allowed_origins; else 0. It decides
 * the cross-site refusals of SPEC.md §5 (joinRoom) and §8 (cookies).
 */
int	api_origin_allowed(const struct worker *w,
	    const struct http_request *req);

/*
 * Parse the request body as a JSON object; on failure answer 400 and
 * return NULL. The caller frees the doc.
 */
struct json_doc *api_body(struct conn *c, struct http_request *req);
/*
 * A required string member: 0 with *out set, or -1 after answering 400
 * ("<key> is required" / "<key> must be a string").
 */
int	api_string(struct conn *c, struct json_doc *doc, const char *key,
	    const char **out, size_t *len) __attribute__((warn_unused_result));
/*
 * The limit query parameter of a list route: def when absent, 1.., above
 * 200 is 200 however many digits it has. 0, or -1 after 400 (or 500).
 */
int	api_limit(struct conn *c, const struct http_request *req,
	    long long def, long long *limit) __attribute__((warn_unused_result));
/*
 * Paging parameters of list routes: limit (default 50, 1.., above 200 is
 * 200 however many digits it has) and before (an id >= 1; default: no
 * bound). 0, or -1 after 400 (or 500).
 */
int	api_paging(struct conn *c, const struct http_request *req,
	    long long *limit, long long *before)
	    __attribute__((warn_unused_result));
/* A positive id from a path parameter or query value: 0, or -1 after 400. */
int	api_id(struct conn *c, const char *s, const char *what, int64_t *id)
	    __attribute__((warn_unused_result));
/*
 * Answer for a failed query: 503 when res is NULL (PostgreSQL away or too
 * slow), else 500 with the error logged.
 */
void	api_db_error(struct conn *c, struct db_result *res, const char *what);

/*
 * One request in flight, the state every handler shares: each api_*.c
 * keeps it as the first member of its own op (struct posts_op { struct
 * api_op api; ... }), made by api_op_new() and freed by api_op_free().
 * Owned by the handler until it hands the op to a callback, freed by
 * whoever answers.
 */
#define API_OP_INTS	8	/* api_op_int() texts per op */
struct api_op {
	struct conn	*conn;
	struct http_request *req;	/* valid until the answer is sent */
	int64_t		 uid;		/* the caller (0: none) */
	int64_t		 id;		/* the route's target id, if any */
	struct evbuffer	*body;		/* the answer being written */
	size_t		 size;		/* of the whole op, for api_op_free() */
	int		 nints;		/* ints used */
	char		 ints[API_OP_INTS][24];	/* see api_op_int() */
};
/*
 * A zeroed op of size bytes (sizeof the file's op) whose struct api_op is
 * filled in; NULL after answering 500.
 */
void	*api_op_new(struct conn *c, struct http_request *req, int64_t uid,
	    size_t size);
/* Wipe and free an op made by api_op_new() (it is the op's first
 * member); NULL is fine. */
void	 api_op_free(void *op);
/*
 * The text of v as a query parameter, held by op until it is freed (up to
 * API_OP_INTS of them, NULL past that): params[1] = api_op_int(&op->api,
 * limit).
 */
const char *api_op_int(struct api_op *op, long long v);
/*
 * Queue one statement for op; cb answers and frees op. If it cannot be
 * queued, answer 503 and free op here.
 */
void	api_query(struct api_op *op, const char *sql, int nparams,
	    const char *const *params, void (*cb)(struct db_result *, void *));
/*
 * Append "key":<n> for an integer column (a count, an id): the text form
 * of a bigint is already a JSON number; anything else would be a bug, and
 * is written as 0 rather than as broken JSON.
 */
void	api_add_int(struct evbuffer *out, const char *key, const char *v);
/* SQL that renders a timestamptz column as RFC 3339 UTC with ms. */
#define API_SQL_TIME(col) \
	"to_char(" col " AT TIME ZONE 'UTC', " \
	"'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')"

/* api_health.c */
api_handler	api_health;
/* api_metrics.c */
api_handler	api_metrics;
/* static.c */
api_handler	api_static;
/* api_auth.c */
api_handler	api_register;
api_handler	api_login;
api_user_handler api_logout;
/* api_users.c */
api_user_handler api_delete;
api_user_handler api_follow;
api_user_handler api_unfollow;
api_user_handler api_me;
api_user_handler api_user_get;
api_user_handler api_user_find;
api_user_handler api_followers;
api_user_handler api_following;
/* api_posts.c */
api_user_handler api_post_create;
api_user_handler api_post_get;
api_user_handler api_post_delete;
api_user_handler api_user_posts;
api_user_handler api_feed;
/* api_rooms.c */
api_user_handler api_create_room;
api_user_handler api_get_rooms;
api_user_handler api_get_clients;
api_user_handler api_join_room;
api_user_handler api_history;
api_user_handler api_room_get;
api_user_handler api_room_delete;
api_user_handler api_room_members;
api_user_handler api_room_member_add;
api_user_handler api_room_member_remove;
api_user_handler api_dm;

#endif
