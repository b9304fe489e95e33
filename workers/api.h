/*
 * api: the route table and the handlers of SPEC.md, one api_*.c file per
 * group of routes. Every handler answers through conn_respond*() exactly
 * once, possibly later from an async callback.
 */
#ifndef GC_API_H
#define GC_API_H

struct conn;
struct http_request;
struct route_match;

typedef void api_handler(struct conn *c, struct http_request *req,
	    const struct route_match *m);

/* Route the request held by c and run its handler (or answer 404/405). */
void	api_dispatch(struct conn *c, struct http_request *req);

/* api_health.c */
api_handler	api_health;
/* static.c */
api_handler	api_static;

#endif
