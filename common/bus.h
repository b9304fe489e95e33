/*
 * bus: Redis for the event loops, through hiredis' async API on libevent
 * (bus.c has its own adapter: see bus_ev_attach()). A bus
 * is one async connection that reconnects by itself (with back-off) after
 * Redis goes away; on every (re)connection it calls on_connect so the owner
 * can re-subscribe; a master behind Sentinel is found and followed the same
 * way. A shard set holds a bus per entry of redis_url. bus.c is the only
 * file that includes hiredis, so replies are read through the accessors
 * below.
 */
#ifndef GC_BUS_H
#define GC_BUS_H

#include <stddef.h>

#include "common/attr.h"

#define BUS_SENTINELS_MAX	8	/* in one redis-sentinel:// URL */
#define BUS_MASTER_NAME_MAX	127
#define BUS_SHARDS_MAX		16	/* entries of redis_url */

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
 * reply is NULL when the connection broke before the reply came. The reply
 * is freed by the bus after the callback returns. Callbacks run on the
 * loop; they may send commands but must not call bus_free().
 *
 * Subscriptions: the cb given to SUBSCRIBE runs for ["subscribe", channel,
 * count], then for every ["message", channel, payload], and for
 * ["unsubscribe", channel, count]; PSUBSCRIBE's for ["psubscribe", pattern,
 * count] and ["pmessage", pattern, channel, payload]. When the connection
 * drops it gets NULL once, and the subscriptions are gone: subscribe again
 * from on_connect. The bus keeps each distinct (cb, arg) given to
 * (P)SUBSCRIBE until bus_free(), so use one per bus and dispatch by channel.
 */
typedef void bus_cb(struct bus *bus, struct bus_reply *reply, void *arg);
typedef void bus_event_cb(struct bus *bus, void *arg);

/*
 * url: "redis://host:port/db", "redis://host:port", "redis://host" (port
 * 6379), "unix:/path/to/redis.sock", or
 * "redis-sentinel://host:port[,host:port...]/<master name>[/db]" (port
 * 26379): the sentinels are asked in turn for the master's address, the
 * server there must say it is the master (ROLE) before the bus is up, and
 * a +switch-master from a sentinel, a -READONLY reply or a lost connection
 * makes the bus ask again; the owner sees a connection lost and made
 * again, nothing else. A redis:// or redis-sentinel:// URL may carry
 * "[user]:password@" (percent-encoded) before the host, sent as AUTH on
 * every connection, whose refusal counts as a failed attempt; password
 * (NULL or "" for none) is the one sent when url has none, for the default
 * user, also over a unix: socket. on_connect
 * runs after each successful (re)connection, AUTH and the SELECT of db;
 * on_disconnect when a connection that was up is lost (pending callbacks
 * got NULL just before).
 * Reconnects forever, every 100 ms doubling to 2 s; an attempt gets 2 s.
 * Returns NULL if the url is invalid. Use from base's thread only.
 */
struct bus *bus_new(struct event_base *base, const char *url,
	    const char *password, const char *name, bus_event_cb *on_connect,
	    bus_event_cb *on_disconnect, void *arg);
/* Disconnects; pending callbacks get NULL. Not from a bus callback. */
void	bus_free(struct bus *bus);
int	bus_connected(const struct bus *bus);
/*
 * Give every later command a deadline of ms (0, the default: none). A
 * command without its reply ms after it went means the connection is
 * stalled: the bus closes it, so every pending callback gets NULL (as when
 * Redis goes away; a late reply can never come) and reconnects, and the
 * new connection counts as up only once Redis answers a PING (or the
 * SELECT), so while Redis stays stalled commands fail at once (-1).
 * Commands that wait by design (BLPOP, XREAD(GROUP) ... BLOCK, WAIT, ...)
 * have no deadline, and a timed command queued behind one waits for it:
 * give a deadline only to a bus that sends none. A (P)SUBSCRIBE is timed
 * until Redis has confirmed each of its channels; messages and
 * (P)UNSUBSCRIBE are not.
 */
void	bus_set_timeout(struct bus *bus, int ms);

/*
 * Serve this bus's socket and timer events at libevent priority pri of
 * its base (event_base_priority_init()), its current connection and
 * every later one: a worker's heartbeat connection runs before a backlog
 * of other events. Call it right after bus_new(), before the loop runs
 * (an active event's priority cannot change).
 */
void	bus_set_priority(struct bus *bus, int pri);

/*
 * Send a command. Returns 0 when sent (cb, if not NULL, will be called once,
 * except for SUBSCRIBE-family commands), -1 when not connected. The cb of
 * (P)UNSUBSCRIBE is never called (the subscription's cb gets the
 * confirmations), and -1 comes back if nothing is subscribed. While
 * subscribed, a bus takes only (P)(UN)SUBSCRIBE: anything else is -1, as is
 * MONITOR.
 */
int	bus_command(struct bus *bus, bus_cb *cb, void *arg, const char *fmt, ...)
	    GC_MUSTCHECK;
int	bus_commandv(struct bus *bus, bus_cb *cb, void *arg, int argc,
	    const char **argv, const size_t *argvlen)
	    GC_MUSTCHECK;
/*
 * A command as RESP ("*<argc>\r\n", then "$<len>\r\n<arg>\r\n" each),
 * byte for byte what hiredis' redisFormatCommandArgv() makes, into *out
 * (malloc'ed, NUL-terminated; argvlen NULL: strlen); its length, or -1.
 */
int	bus_format_argv(char **out, int argc, const char **argv,
	    const size_t *argvlen) GC_MUSTCHECK;
/*
 * Fire and forget: send a command whose reply no one needs. A command that
 * cannot be sent is lost; the first loss after one that went is logged
 * (a warning naming the command), the rest at debug level.
 */
void	bus_send(struct bus *bus, const char *fmt, ...);
void	bus_sendv(struct bus *bus, int argc, const char **argv,
	    const size_t *argvlen);

enum bus_reply_type bus_reply_type(const struct bus_reply *r);
long long bus_reply_integer(const struct bus_reply *r);
/* For BUS_STRING and BUS_ERROR, NULL otherwise; *len may be NULL. */
const char *bus_reply_str(const struct bus_reply *r, size_t *len);
size_t	bus_reply_elements(const struct bus_reply *r);
struct bus_reply *bus_reply_element(const struct bus_reply *r, size_t i);

/* 1 when url parses as bus_new() wants it, 0 if not; does not connect. */
int	bus_url_valid(const char *url);
/*
 * urls: one to BUS_SHARDS_MAX bus_new() URLs separated by spaces (or
 * tabs), as redis_url holds them. The number of entries, 0 if one of
 * them is invalid or there are none or too many.
 */
int	bus_urls_count(const char *urls);
/* Entry i (from 0) of urls into buf; -1 if there is none or it does not
 * fit. */
int	bus_urls_entry(const char *urls, int i, char *buf, size_t len)
	    GC_MUSTCHECK;

/* ---- shards (SPEC section 11) ----------------------------------------------
 *
 * One bus per entry of redis_url, each with the reconnect and back-off
 * rules above. What lives where: a key (session, login counter, rate
 * limit) on the shard its CRC16 picks (bus_shard_of_key()); partition p
 * (its room channels and inbox) on shard p mod shards; the rest (control
 * and worker channels, heartbeats, stats) on shard 0. With one entry,
 * everything is on it.
 */
struct bus_shards;

/*
 * One bus per entry of urls, named "<name>" (one entry) or "<name>
 * <i>"; the callbacks get the shard's bus (bus_shard()). metrics: the
 * buses show their shard's state and failovers in /metrics (give it to
 * one set per process). NULL if urls is invalid or out of memory.
 */
struct bus_shards *bus_shards_new(struct event_base *base, const char *urls,
	    const char *password, const char *name, bus_event_cb *on_connect,
	    bus_event_cb *on_disconnect, void *arg, int metrics);
/* Frees every bus (bus_free()). */
void	bus_shards_free(struct bus_shards *set);
int	bus_shards_count(const struct bus_shards *set);
/* The bus of shard i (0 .. count - 1). */
struct bus *bus_shards_at(const struct bus_shards *set, int i);
/* The bus of the shard key hashes to, and of partition p. */
struct bus *bus_shards_key(const struct bus_shards *set, const char *key);
struct bus *bus_shards_partition(const struct bus_shards *set, int p);
void	bus_shards_set_timeout(struct bus_shards *set, int ms);
void	bus_shards_set_priority(struct bus_shards *set, int pri);
/* 1 when every shard's bus is up. */
int	bus_shards_connected(const struct bus_shards *set);
/* The shard of key among n: CRC16 (msg_crc16) mod n. */
int	bus_shard_of_key(const char *key, int n);
/* Let bus show its shard's state and failovers in /metrics (one bus per
 * shard and process; bus_shards_new() does it for its set). */
void	bus_show_in_metrics(struct bus *bus);
/* The shard of a bus in its set (0 for one made by bus_new()). */
int	bus_shard(const struct bus *bus);
/*
 * url for a log line or an error message, into buf (truncated to len) and
 * returned: a password becomes "***" ("redis://user:***@host:port/db"),
 * also in a URL that does not parse.
 */
const char *bus_url_redact(const char *url, char *buf, size_t len);

/*
 * A bus_event_cb for on_connect (arg unused), or a call from one: asks this
 * Redis once per process for INFO persistence and logs a warning when it
 * has no AOF (SPEC §8: an accepted chat message lives only in Redis until
 * the hub stores it). Asked again on a later connect only if the connection
 * went before the answer. Not for a subscribed bus.
 */
void	bus_aof_check(struct bus *bus, void *arg);

#endif
