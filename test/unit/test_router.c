/*
 * test_router: the route table of SPEC.md matched with parameters, the /v1
 * alias, HEAD through GET, 404 and 405 with its Allow list.
 */
#include <stdio.h>
#include <string.h>

#include "test/unit/tap.h"
#include "workers/router.h"

/* Handlers are opaque to the router: tag each route with its own name. */
#define R(m, p)	{ m, p, p }

static const struct route routes[] = {
	R(HTTP_M_GET, "/"),
	R(HTTP_M_GET, "/health"),
	R(HTTP_M_POST, "/register"),
	R(HTTP_M_POST, "/login"),
	R(HTTP_M_POST, "/logout"),
	R(HTTP_M_DELETE, "/delete"),
	R(HTTP_M_POST, "/follow"),
	R(HTTP_M_POST, "/unfollow"),
	R(HTTP_M_GET, "/me"),
	R(HTTP_M_GET, "/users/{id}"),
	R(HTTP_M_GET, "/users"),
	R(HTTP_M_GET, "/users/{id}/followers"),
	R(HTTP_M_GET, "/users/{id}/following"),
	R(HTTP_M_POST, "/posts"),
	R(HTTP_M_DELETE, "/posts/{id}"),	/* Allow is sorted anyway */
	R(HTTP_M_GET, "/posts/{id}"),
	R(HTTP_M_GET, "/users/{id}/posts"),
	R(HTTP_M_GET, "/feed"),
	R(HTTP_M_POST, "/ws/createRoom"),
	R(HTTP_M_GET, "/ws/getRooms"),
	R(HTTP_M_GET, "/ws/getClients/{roomId}"),
	R(HTTP_M_GET, "/ws/joinRoom/{roomId}"),
	R(HTTP_M_GET, "/ws/history/{roomId}"),
	R(HTTP_M_PUT, "/a/{x}/b/{y}"),
	R(HTTP_M_HEAD, "/only-head"),
	R(HTTP_M_GET, "/only-head"),
	R(HTTP_M_OTHER, "/never"),
	{ 0, NULL, NULL }
};

static const struct match_case {
	enum http_method_id method;
	const char	*path;
	enum router_result result;
	const char	*pattern;	/* FOUND */
	const char	*pname;		/* a parameter to look up */
	const char	*pvalue;
	const char	*allow;		/* BAD_METHOD */
} cases[] = {
	{ HTTP_M_GET, "/", ROUTER_FOUND, "/", NULL, NULL, NULL },
	{ HTTP_M_GET, "/health", ROUTER_FOUND, "/health", NULL, NULL, NULL },
	{ HTTP_M_POST, "/login", ROUTER_FOUND, "/login", NULL, NULL, NULL },
	{ HTTP_M_GET, "/users/42", ROUTER_FOUND, "/users/{id}", "id", "42",
	    NULL },
	{ HTTP_M_GET, "/users", ROUTER_FOUND, "/users", NULL, NULL, NULL },
	{ HTTP_M_GET, "/users/42/followers", ROUTER_FOUND,
	    "/users/{id}/followers", "id", "42", NULL },
	{ HTTP_M_GET, "/users/7/posts", ROUTER_FOUND, "/users/{id}/posts",
	    "id", "7", NULL },
	{ HTTP_M_GET, "/ws/joinRoom/room-1", ROUTER_FOUND,
	    "/ws/joinRoom/{roomId}", "roomId", "room-1", NULL },
	{ HTTP_M_GET, "/ws/getClients/a b", ROUTER_FOUND,
	    "/ws/getClients/{roomId}", "roomId", "a b", NULL },
	{ HTTP_M_PUT, "/a/1/b/2", ROUTER_FOUND, "/a/{x}/b/{y}", "y", "2",
	    NULL },
	{ HTTP_M_PUT, "/a/1/b/2", ROUTER_FOUND, "/a/{x}/b/{y}", "x", "1",
	    NULL },
	{ HTTP_M_PUT, "/a/1/b/2", ROUTER_FOUND, "/a/{x}/b/{y}", "z", NULL,
	    NULL },
	{ HTTP_M_DELETE, "/posts/9", ROUTER_FOUND, "/posts/{id}", "id", "9",
	    NULL },
	{ HTTP_M_GET, "/posts/9", ROUTER_FOUND, "/posts/{id}", "id", "9",
	    NULL },

	/* /v1 */
	{ HTTP_M_POST, "/v1/login", ROUTER_FOUND, "/login", NULL, NULL, NULL },
	{ HTTP_M_GET, "/v1", ROUTER_FOUND, "/", NULL, NULL, NULL },
	{ HTTP_M_GET, "/v1/", ROUTER_FOUND, "/", NULL, NULL, NULL },
	{ HTTP_M_GET, "/v1/users/5/following", ROUTER_FOUND,
	    "/users/{id}/following", "id", "5", NULL },
	{ HTTP_M_GET, "/v1/v1/health", ROUTER_NOT_FOUND, NULL, NULL, NULL,
	    NULL },
	{ HTTP_M_GET, "/v1health", ROUTER_NOT_FOUND, NULL, NULL, NULL, NULL },
	{ HTTP_M_GET, "/v2/health", ROUTER_NOT_FOUND, NULL, NULL, NULL, NULL },

	/* HEAD */
	{ HTTP_M_HEAD, "/health", ROUTER_FOUND, "/health", NULL, NULL, NULL },
	{ HTTP_M_HEAD, "/v1/users/3", ROUTER_FOUND, "/users/{id}", "id", "3",
	    NULL },
	{ HTTP_M_HEAD, "/posts/4", ROUTER_FOUND, "/posts/{id}", "id", "4",
	    NULL },
	{ HTTP_M_HEAD, "/only-head", ROUTER_FOUND, "/only-head", NULL, NULL,
	    NULL },
	{ HTTP_M_HEAD, "/login", ROUTER_BAD_METHOD, NULL, NULL, NULL,
	    "POST" },

	/* 404 */
	{ HTTP_M_GET, "/nope", ROUTER_NOT_FOUND, NULL, NULL, NULL, NULL },
	{ HTTP_M_GET, "/health/", ROUTER_NOT_FOUND, NULL, NULL, NULL, NULL },
	{ HTTP_M_GET, "/users/", ROUTER_NOT_FOUND, NULL, NULL, NULL, NULL },
	{ HTTP_M_GET, "/users//posts", ROUTER_NOT_FOUND, NULL, NULL, NULL,
	    NULL },
	{ HTTP_M_GET, "/users/1/2", ROUTER_NOT_FOUND, NULL, NULL, NULL, NULL },
	{ HTTP_M_GET, "/Health", ROUTER_NOT_FOUND, NULL, NULL, NULL, NULL },
	{ HTTP_M_GET, "", ROUTER_NOT_FOUND, NULL, NULL, NULL, NULL },
	{ HTTP_M_GET, "/never", ROUTER_NOT_FOUND, NULL, NULL, NULL, NULL },
	{ HTTP_M_OTHER, "/never", ROUTER_NOT_FOUND, NULL, NULL, NULL, NULL },

	/* 405 */
	{ HTTP_M_GET, "/login", ROUTER_BAD_METHOD, NULL, NULL, NULL, "POST" },
	{ HTTP_M_POST, "/health", ROUTER_BAD_METHOD, NULL, NULL, NULL,
	    "GET, HEAD" },
	{ HTTP_M_PUT, "/posts/1", ROUTER_BAD_METHOD, NULL, NULL, NULL,
	    "GET, HEAD, DELETE" },
	{ HTTP_M_OTHER, "/v1/posts/1", ROUTER_BAD_METHOD, NULL, NULL, NULL,
	    "GET, HEAD, DELETE" },
	{ HTTP_M_GET, "/delete", ROUTER_BAD_METHOD, NULL, NULL, NULL,
	    "DELETE" },
	{ HTTP_M_OPTIONS, "/ws/getRooms", ROUTER_BAD_METHOD, NULL, NULL, NULL,
	    "GET, HEAD" },
};

static void
test_cases(void)
{
	size_t			 i;
	const struct match_case	*c;
	struct route_match	 m;
	enum router_result	 res;
	int			 good;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		c = &cases[i];
		memset(&m, 0x5a, sizeof(m));
		res = router_match(routes, c->method, c->path, &m);
		good = res == c->result;
		if (good && res == ROUTER_FOUND) {
			const char *v = router_param(&m, c->pname ?
			    c->pname : "none");

			good = m.route != NULL &&
			    strcmp(m.route->pattern, c->pattern) == 0 &&
			    m.route->handler == (const void *)c->pattern &&
			    (c->pvalue == NULL ? v == NULL :
			    v != NULL && strcmp(v, c->pvalue) == 0);
		} else if (good && res == ROUTER_BAD_METHOD) {
			good = m.route == NULL &&
			    strcmp(m.allow, c->allow) == 0;
		} else if (good) {
			good = m.route == NULL && m.allow[0] == '\0';
		}
		ok(good, "method %d %s -> %s%s%s", (int)c->method, c->path,
		    res == ROUTER_FOUND ? "found " :
		    res == ROUTER_BAD_METHOD ? "405 " : "404",
		    c->pattern ? c->pattern : "", c->allow ? c->allow : "");
	}
}

static void
test_param_length(void)
{
	char			 path[ROUTE_PARAM_MAX + 16];
	struct route_match	 m;
	const char		*v;
	size_t			 n;

	/* The longest parameter that fits. */
	strcpy(path, "/users/");
	n = strlen(path);
	memset(path + n, '9', ROUTE_PARAM_MAX - 1);
	path[n + ROUTE_PARAM_MAX - 1] = '\0';
	ok(router_match(routes, HTTP_M_GET, path, &m) == ROUTER_FOUND &&
	    (v = router_param(&m, "id")) != NULL &&
	    strlen(v) == ROUTE_PARAM_MAX - 1,
	    "a parameter of %d bytes matches", ROUTE_PARAM_MAX - 1);
	/* One more byte and there is no such route. */
	path[n + ROUTE_PARAM_MAX - 1] = '9';
	path[n + ROUTE_PARAM_MAX] = '\0';
	ok(router_match(routes, HTTP_M_GET, path, &m) == ROUTER_NOT_FOUND,
	    "a parameter of %d bytes is 404", ROUTE_PARAM_MAX);
	strcat(path, "/posts");
	ok(router_match(routes, HTTP_M_GET, path, &m) == ROUTER_NOT_FOUND,
	    "also in the middle of a path");
}

static void
test_params(void)
{
	static const struct route many[] = {
		{ HTTP_M_GET, "/{a}/{b}/{c}/{d}", "four" },
		{ HTTP_M_GET, "/{a}/{b}/{c}/{d}/{e}", "five" },
		{ HTTP_M_GET, "/x/{bad", "unclosed" },
		{ HTTP_M_GET, "/f/{name}.json", "suffix" },
		{ 0, NULL, NULL }
	};
	struct route_match m;

	ok(router_match(many, HTTP_M_GET, "/1/2/3/4", &m) == ROUTER_FOUND &&
	    m.nparams == 4 && strcmp(router_param(&m, "d"), "4") == 0 &&
	    strcmp(router_param(&m, "a"), "1") == 0,
	    "%d parameters", ROUTE_MAX_PARAMS);
	ok(router_match(many, HTTP_M_GET, "/1/2/3/4/5", &m) ==
	    ROUTER_NOT_FOUND, "more than %d parameters never match",
	    ROUTE_MAX_PARAMS);
	ok(router_match(many, HTTP_M_GET, "/x/{bad", &m) == ROUTER_NOT_FOUND,
	    "an unclosed {name} never matches");
	ok(router_match(many, HTTP_M_GET, "/f/a.json", &m) == ROUTER_NOT_FOUND,
	    "a parameter takes its whole segment");
	ok(router_param(&m, "name") == NULL, "no parameter after a 404");
}

int
main(void)
{
	test_cases();
	test_param_length();
	test_params();
	return tap_done();
}
