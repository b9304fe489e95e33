/*
 * api: the route table of SPEC.md and the dispatch that runs a route's
 * handler, or answers 404 and 405 (with Allow) itself.
 */
#include "config.h"

#include <stdio.h>

#include "workers/api.h"
#include "workers/conn.h"
#include "workers/http.h"
#include "workers/router.h"

static const struct route api_routes[] = {
	{ HTTP_M_GET, "/", api_static },
	{ HTTP_M_GET, "/health", api_health },
	{ 0, NULL, NULL }
};

void
api_dispatch(struct conn *c, struct http_request *req)
{
	struct route_match m;
	char allow[96];

	switch (router_match(api_routes, req->method, req->path, &m)) {
	case ROUTER_FOUND:
		((api_handler *)m.route->handler)(c, req, &m);
		return;
	case ROUTER_BAD_METHOD:
		snprintf(allow, sizeof(allow), "Allow: %s\r\n", m.allow);
		conn_error_hdr(c, 405, allow, "method %s is not allowed on %s;"
		    " use %s", req->method_name, req->path, m.allow);
		return;
	case ROUTER_NOT_FOUND:
		conn_error(c, 404, "no such route: %s", req->path);
		return;
	}
}
