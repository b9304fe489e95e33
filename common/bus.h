/*
 * bus: Redis for the event loops, through hiredis' libevent adapter. A bus
 * is one async connection that reconnects by itself (with back-off) after
 * Redis goes away; on every (re)connection it calls on_connect so the owner
 * can re-subscribe. bus.c is the only file that includes hiredis, so replies
 * are read through the accessors below.
 */
#ifndef GC_BUS_H
#define GC_BUS_H

#include <stddef.h>

struct event_base;
struct bus;
struct bus_reply;

enum bus_reply_type {
	BUS_NIL,
	BUS_STRING,	/* also status replies ("OK") */
	BUS_INTEGER,
	BUS_ARRAY,
	BUS_ERROR
};

/*
 * reply is NULL when the connection broke before the reply came. For a
 * subscription the callback runs for every message pushed on the channel.
 * The reply is freed by the bus after the callback returns.
 */
typedef void bus_cb(struct bus *bus, struct bus_reply *reply, void *arg);
typedef void bus_event_cb(struct bus *bus, void *arg);

/*
 * url: "redis://host:port/db" (db optional), "redis://host:port", or
 * "unix:/path/to/redis.sock". on_connect runs after each successful
 * (re)connection and the SELECT of db. Returns NULL if the url is invalid.
 */
struct bus *bus_new(struct event_base *base, const char *url, const char *name,
	    bus_event_cb *on_connect, bus_event_cb *on_disconnect, void *arg);
/* Disconnects; pending callbacks get NULL. */
void	bus_free(struct bus *bus);
int	bus_connected(const struct bus *bus);

/*
 * Send a command. Returns 0 when sent (cb, if not NULL, will be called once,
 * except for SUBSCRIBE-family commands), -1 when not connected.
 */
int	bus_command(struct bus *bus, bus_cb *cb, void *arg, const char *fmt, ...)
	    __attribute__((warn_unused_result));
int	bus_commandv(struct bus *bus, bus_cb *cb, void *arg, int argc,
	    const char **argv, const size_t *argvlen)
	    __attribute__((warn_unused_result));

enum bus_reply_type bus_reply_type(const struct bus_reply *r);
long long bus_reply_integer(const struct bus_reply *r);
/* For BUS_STRING and BUS_ERROR; *len may be NULL. */
const char *bus_reply_str(const struct bus_reply *r, size_t *len);
size_t	bus_reply_elements(const struct bus_reply *r);
struct bus_reply *bus_reply_element(const struct bus_reply *r, size_t i);

/* Parse a redis URL without connecting (for conf validation). */
int	bus_url_valid(const char *url);

#endif
