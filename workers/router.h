/*
 * router: maps a method and a decoded path to a handler. Patterns are
 * literal segments and {name} parameters ("/users/{id}/posts"). Every route
 * also answers under "/v1". A path that matches a pattern under another
 * method is a 405 with the Allow list; no pattern at all is a 404.
 */
#ifndef GC_ROUTER_H
#define GC_ROUTER_H

#include <stddef.h>
#include "workers/http.h"

#define ROUTE_MAX_PARAMS 4
#define ROUTE_PARAM_MAX 256	/* a longer parameter does not match */

struct route {
	enum http_method_id method;
	const char	*pattern;
	const void	*handler;	/* opaque to the router */
};

struct route_match {
	const struct route *route;
	int		 nparams;
	char		 params[ROUTE_MAX_PARAMS][ROUTE_PARAM_MAX];
	char		 allow[64];	/* for 405: "GET, HEAD, POST" */
	const struct route *path_route;	/* for 405: the first route of
					 * the path, under another method */
};

enum router_result {
	ROUTER_FOUND,
	ROUTER_NOT_FOUND,
	ROUTER_BAD_METHOD
};

/* HEAD matches a GET route. routes[] ends with a NULL pattern. */
enum router_result router_match(const struct route *routes,
	    enum http_method_id method, const char *path, struct route_match *m);
/* The value of parameter name in the matched pattern, or NULL. */
const char *router_param(const struct route_match *m, const char *name);

#endif
