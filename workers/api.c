/*
 * api: the route table of SPEC.md, the dispatch that runs a route's
 * handler (through auth_require() for routes that need a caller) or
 * answers 404 and 405 itself, and the input helpers every handler uses.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/buffer.h>

#include "common/conf.h"
#include "common/db.h"
#include "common/json.h"
#include "common/log.h"
#include "common/metrics.h"
#include "common/utf8.h"
#include "common/util.h"
#include "workers/api.h"
#include "workers/auth.h"
#include "workers/conn.h"
#include "workers/http.h"
#include "workers/router.h"
#include "workers/routes.h"
#include "workers/static.h"
#include "workers/worker.h"

/* What a route runs: exactly one of the two. */
struct api_endpoint {
	api_handler		*open;	/* needs no caller */
	api_user_handler	*user;	/* runs with the caller's user id */
	int			 body;	/* reads a request body: sent without
					 * Content-Length, that is a 411 */
};

#define API_LIMIT_DEFAULT	50	/* list routes' limit: SPEC.md §3 */
#define API_LIMIT_MAX		200	/* a larger limit is clamped to it */

static int	api_parse_limit(const char *, long long *);
static int	api_route_of(const struct route *);
static int	api_cross_site(const struct worker *,
		    const struct http_request *);

#define OPEN(fn)	(&(const struct api_endpoint){ fn, NULL, 0 })
#define USER(fn)	(&(const struct api_endpoint){ NULL, fn, 0 })
#define OPEN_BODY(fn)	(&(const struct api_endpoint){ fn, NULL, 1 })
#define USER_BODY(fn)	(&(const struct api_endpoint){ NULL, fn, 1 })

#define API_ROUTE(m, pattern, kind, fn)	{ m, pattern, kind(fn) },

static const struct route api_routes[] = {
	GC_ROUTES(API_ROUTE)
	{ 0, NULL, NULL }
};

/* Route indexes for the metrics: these two, then api_routes[i] at
 * API_ROUTE_TABLE + i. */
#define API_ROUTE_NONE		0	/* no route: 404, unreadable */
#define API_ROUTE_STATIC	1	/* a file of web/ */
#define API_ROUTE_TABLE		2
#define API_NROUTES	(sizeof(api_routes) / sizeof(api_routes[0]) - 1)

_Static_assert(API_ROUTE_TABLE + API_NROUTES <= METRICS_ROUTES,
    "more routes than METRICS_ROUTES can count");

void
api_dispatch(struct conn *c, struct http_request *req)
{
	const struct api_endpoint *e;
	struct route_match m;
	char allow[96];

	switch (router_match(api_routes, req->method, req->path, &m)) {
	case ROUTER_FOUND:
		c->route = api_route_of(m.route);
		/*
		 * Without Content-Length (Transfer-Encoding is refused by the
		 * reader) a request has no body, so body bytes sent anyway
		 * would be read as the next request: refuse it and close;
		 * the lingering close discards them.
		 */
		e = m.route->handler;
		if (e->body && http_header(req, "Content-Length") == NULL) {
			c->keep_alive = 0;
			conn_error(c, 411, "%s %s needs a Content-Length "
			    "header (Content-Length: 0 for an empty body)",
			    req->method_name, req->path);
			return;
		}
		if (e->user != NULL && api_cross_site(c->worker, req)) {
			conn_error(c, 403, "%s %s with the auth_token cookie is "
			    "not allowed from origin %s; send \"Authorization: "
			    "Bearer <token>\" or list the origin in "
			    "allowed_origins", req->method_name, req->path,
			    http_header(req, "Origin"));
			return;
		}
		if (e->user != NULL)
			auth_require(c, req, &m, e->user);
		else
			e->open(c, req, &m);
		return;
	case ROUTER_BAD_METHOD:
		/* Counted under the path's route, whatever the method. */
		c->route = api_route_of(m.path_route);
		snprintf(allow, sizeof(allow), "Allow: %s\r\n", m.allow);
		conn_error_hdr(c, 405, allow, "method %s is not allowed on %s;"
		    " use %s", req->method_name, req->path, m.allow);
		return;
	case ROUTER_NOT_FOUND:
		c->route = API_ROUTE_STATIC;
		if (static_serve(c, req, req->path))
			return;
		c->route = API_ROUTE_NONE;
		conn_error(c, 404, "no such route: %s", req->path);
		return;
	}
}

/*
 * The metrics index of a table entry: that of the first entry with the
 * same pattern (so GET and DELETE /posts/{id} are one route). The table
 * is fixed: the first entries are found once per process.
 */
static int
api_route_of(const struct route *rt)
{
	static int first[API_NROUTES], known;
	size_t i, j;

	if (rt == NULL || rt < api_routes || rt >= api_routes + API_NROUTES)
		return API_ROUTE_NONE;
	if (!known) {
		for (i = 0; i < API_NROUTES; i++) {
			for (j = 0; j < i; j++)
				if (strcmp(api_routes[j].pattern,
				    api_routes[i].pattern) == 0)
					break;
			first[i] = API_ROUTE_TABLE + (int)j;
		}
		known = 1;
	}
	return first[rt - api_routes];
}

void
api_count(const struct conn *c, int status)
{
	/* A file of web/ that was not there is a 404 of no route. */
	metrics_http(c->route == API_ROUTE_STATIC && status == 404 ?
	    API_ROUTE_NONE : c->route, status);
}

const char *
api_route_label(int route)
{
	size_t i;

	if (route == API_ROUTE_NONE)
		return "none";
	if (route == API_ROUTE_STATIC)
		return "static";
	if (route < API_ROUTE_TABLE ||
	    (i = (size_t)(route - API_ROUTE_TABLE)) >= API_NROUTES)
		return NULL;
	/* A pattern listed before under another method has that index. */
	for (size_t j = 0; j < i; j++)
		if (strcmp(api_routes[j].pattern, api_routes[i].pattern) == 0)
			return "";
	return api_routes[i].pattern;
}

/*
 * Cookies make cross-site requests possible: a page elsewhere can make the
 * browser send the user's cookie, in a WebSocket upgrade as in a form POST.
 * An Origin must therefore be this server itself (the Host the client
 * asked for) or listed in allowed_origins. Clients that send no Origin
 * (not browsers) are fine.
 */
int
api_origin_allowed(const struct worker *w, const struct http_request *req)
{
	const char *origin = http_header(req, "Origin");
	const char *host = http_header(req, "Host");
	const char *o, *list = w->conf->allowed_origins;
	size_t olen, n;

	if (origin == NULL)
		return 1;
	/* Browsers send one: two are a forgery, whichever comes first. */
	for (int i = 0, seen = 0; i < req->nheaders; i++)
		if (strcasecmp(req->headers[i].name, "Origin") == 0 &&
		    ++seen > 1)
			return 0;
	olen = strlen(origin);
	while (olen > 0 && origin[olen - 1] == '/')
		olen--;
	for (const char *p = list; *p; p += n) {
		p += strspn(p, " ,\t");
		n = strcspn(p, " ,\t");
		if (n > 0 && n == olen && strncasecmp(p, origin, n) == 0)
			return 1;
	}
	if (host == NULL)
		return 0;
	if (strncasecmp(origin, "http://", 7) == 0)
		o = origin + 7;
	else if (strncasecmp(origin, "https://", 8) == 0)
		o = origin + 8;
	else
		return 0;
	return strlen(host) == olen - (size_t)(o - origin) &&
	    strncasecmp(o, host, strlen(host)) == 0;
}

struct json_doc *
api_body(struct conn *c, struct http_request *req)
{
	struct json_doc *doc;

	if (req->body == NULL || req->body_len == 0) {
		conn_error(c, 400, "a JSON object is required as the body");
		return NULL;
	}
	if ((doc = json_parse(req->body, req->body_len)) == NULL) {
		/* Say which rule broke: invalid bytes cannot be pinned on a
		 * field, as the parser rejects the whole text (RFC 8259 §8.1). */
		if (!utf8_valid(req->body, req->body_len))
			conn_error(c, 400, "the body is not valid UTF-8");
		else
			conn_error(c, 400, "the body is not a valid JSON object");
		return NULL;
	}
	return doc;
}

int
api_string(struct conn *c, struct json_doc *doc, const char *key,
    const char **out, size_t *len)
{
	switch (json_get_string(doc, key, out, len)) {
	case JSON_OK:
		return 0;
	case JSON_MISSING:
		conn_error(c, 400, "%s is required", key);
		return -1;
	case JSON_WRONG_TYPE:
		conn_error(c, 400, "%s must be a string", key);
		return -1;
	default:
		conn_error(c, 400, "%s is not a valid string", key);
		return -1;
	}
}

int
api_limit(struct conn *c, const struct http_request *req, long long def,
    long long *limit)
{
	char *lv;
	size_t qlen;
	int r, rc = 0;

	*limit = def;
	if (req->query == NULL)
		return 0;
	/* limit may have any number of digits: a decoded value is never
	 * longer than the query it comes from. */
	qlen = strlen(req->query) + 1;
	if ((lv = malloc(qlen)) == NULL) {
		conn_error(c, 500, "out of memory");
		return -1;
	}
	r = http_query_get(req->query, "limit", lv, qlen);
	if (r == -1 || (r == 1 && api_parse_limit(lv, limit) == -1)) {
		conn_error(c, 400, "limit must be a positive integer");
		rc = -1;
	}
	free(lv);
	return rc;
}

int
api_paging(struct conn *c, const struct http_request *req, long long *limit,
    long long *before)
{
	char v[32];
	int r;

	*before = INT64_MAX;
	if (api_limit(c, req, API_LIMIT_DEFAULT, limit) == -1)
		return -1;
	if (req->query == NULL)
		return 0;
	if ((r = http_query_get(req->query, "before", v, sizeof(v))) == 1) {
		if (util_parse_int(v, 1, INT64_MAX, before) == -1) {
			conn_error(c, 400, "before must be a positive integer "
			    "(the id of the last item of the previous page)");
			return -1;
		}
	} else if (r == -1) {
		conn_error(c, 400, "before must be a positive integer");
		return -1;
	}
	return 0;
}

/*
 * SPEC.md §8: 1 for a request the auth_token cookie would authenticate
 * (a cookie and no Authorization header: auth_request_token() takes a
 * Bearer token first) with an unsafe method and an Origin that is not
 * allowed. A Bearer token is not affected: a page elsewhere cannot make the
 * browser send one. Checked before the session is looked up.
 */
static int
api_cross_site(const struct worker *w, const struct http_request *req)
{
	char token[AUTH_TOKEN_MAX + 2];

	switch (req->method) {
	case HTTP_M_POST:
	case HTTP_M_PUT:
	case HTTP_M_PATCH:
	case HTTP_M_DELETE:
		break;
	default:
		return 0;
	}
	return http_header(req, "Authorization") == NULL &&
	    http_cookie_get(req, "auth_token", token, sizeof(token)) != 0 &&
	    !api_origin_allowed(w, req);
}

/*
 * limit: 1 or more decimal digits, not all zeros. Above API_LIMIT_MAX it
 * is clamped, however many digits it has (SPEC.md §3: "above 200 is
 * clamped"), so only a sign, 0, empty or non-digits are -1.
 */
static int
api_parse_limit(const char *v, long long *limit)
{
	size_t n = strlen(v);

	if (n == 0 || strspn(v, "0123456789") != n)
		return -1;
	v += strspn(v, "0");
	if ((n = strlen(v)) == 0)
		return -1;
	if (n > 9 || util_parse_int(v, 1, INT64_MAX, limit) == -1 ||
	    *limit > API_LIMIT_MAX)
		*limit = API_LIMIT_MAX;
	return 0;
}

int
api_id(struct conn *c, const char *s, const char *what, int64_t *id)
{
	long long v;

	if (s == NULL || util_parse_int(s, 1, INT64_MAX, &v) == -1) {
		conn_error(c, 400, "%s must be a positive integer", what);
		return -1;
	}
	*id = v;
	return 0;
}

void *
api_op_new(struct conn *c, struct http_request *req, int64_t uid,
    size_t size)
{
	struct api_op *op;

	if ((op = calloc(1, size)) == NULL ||
	    (op->body = evbuffer_new()) == NULL) {
		free(op);
		conn_error(c, 500, "out of memory");
		return NULL;
	}
	op->conn = c;
	op->req = req;
	op->uid = uid;
	op->size = size;
	return op;
}

void
api_op_free(void *arg)
{
	struct api_op *op = arg;
	volatile unsigned char *p = arg;

	if (op == NULL)
		return;
	evbuffer_free(op->body);
	/* Ops may hold passwords and tokens (api_auth.c): wiped, every one,
	 * through a volatile pointer so that the stores are not dropped. */
	for (size_t i = op->size; i > 0; i--)
		p[i - 1] = 0;
	free(op);
}

const char *
api_op_int(struct api_op *op, long long v)
{
	/* A fixed number per op: more is a bug in the caller, logged; the
	 * NULL is an SQL NULL, which matches no row. */
	if (op->nints >= API_OP_INTS) {
		log_warnx("api_op_int: more than %d integers", API_OP_INTS);
		return NULL;
	}
	snprintf(op->ints[op->nints], sizeof(op->ints[0]), "%lld", v);
	return op->ints[op->nints++];
}

void
api_query(struct api_op *op, const char *sql, int nparams,
    const char *const *params, void (*cb)(struct db_result *, void *))
{
	if (db_query(op->conn->worker->db, sql, nparams, params, cb, op) == 0)
		return;
	api_db_error(op->conn, NULL, sql);
	api_op_free(op);
}

void
api_add_int(struct evbuffer *out, const char *key, const char *v)
{
	long long n;

	json_add_key(out, key);
	if (util_parse_int(v, INT64_MIN, INT64_MAX, &n) == -1) {
		log_warnx("%s: %s is not an integer", key, v);
		n = 0;
	}
	evbuffer_add_printf(out, "%lld", n);
}

void
api_db_error(struct conn *c, struct db_result *res, const char *what)
{
	if (res == NULL) {
		/* A query that went out and timed out may still have run. */
		conn_error(c, 503, "the database is unavailable or did not "
		    "answer in time; a change may or may not have been made");
		return;
	}
	log_warnx("conn %llu: %s failed: %s (SQLSTATE %s)",
	    (unsigned long long)c->id, what, db_result_error(res),
	    db_result_sqlstate(res));
	conn_error(c, 500, "internal error");
}
