/*
 * stats: publishes a process's counters (its metrics slot) to Redis once a
 * second with one HSET and one EXPIRE, so `redis-cli HGETALL
 * gochat:stats:<host>:<pid>` shows any process live. Nothing is published
 * while Redis is away. The same tick is the slot's heartbeat.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>

#include "common/bus.h"
#include "common/conf.h"
#include "common/metrics.h"
#include "common/msg.h"
#include "common/stats.h"
#include "common/util.h"

#define STATS_TTL_S	5

struct stats_pub {
	struct event	*timer;
	struct bus	*bus;
	struct stats	*s;
	char		 key[256];
	char		 host[128];
};

static void	stats_tick_cb(evutil_socket_t, short, void *);

struct stats_pub *
stats_pub_new(struct event_base *base, struct bus *bus,
    const struct conf *conf, struct stats *s)
{
	struct timeval one = { 1, 0 };
	struct stats_pub *p;

	if ((p = calloc(1, sizeof(*p))) == NULL)
		return NULL;
	p->bus = bus;
	p->s = s;
	snprintf(p->host, sizeof(p->host), "%s", conf->instance);
	(void)msg_key_stats(p->key, sizeof(p->key), conf->redis_prefix,
	    p->host, (long)getpid());
	if (base == NULL)
		return p;
	p->timer = event_new(base, -1, EV_PERSIST, stats_tick_cb, p);
	if (p->timer == NULL || event_add(p->timer, &one) == -1) {
		stats_pub_free(p);
		return NULL;
	}
	return p;
}

void
stats_pub_free(struct stats_pub *p)
{
	if (p == NULL)
		return;
	if (p->timer != NULL)
		event_free(p->timer);
	free(p);
}

void
stats_pub_remove(struct stats_pub *p)
{
	if (p != NULL && bus_connected(p->bus))
		bus_send(p->bus, "DEL %s", p->key);
}

static void
stats_tick_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	stats_pub_tick(arg);
}

/* The hash's fields, in the order redis-cli shows them. */
void
stats_pub_tick(struct stats_pub *p)
{
	const struct stats *s = p->s;
	const struct {
		const char	*name;
		long long	 value;
	} nums[] = {
		{ "id", s->id },
		{ "pid", (long long)getpid() },
		{ "uptime", (util_mono_ms() - s->started_ms) / 1000 },
		{ "connections", metrics_own_gauge(MG_CONNECTIONS) },
		{ "websockets", metrics_own_gauge(MG_WEBSOCKETS) },
		{ "rooms", metrics_own_gauge(MG_ROOMS) },
		{ "messages_in", (long long)metrics_own_counter(MC_MSGS_IN) },
		{ "messages_out", (long long)metrics_own_counter(MC_MSGS_OUT) },
		{ "http_1xx", (long long)metrics_own_http_class(0) },
		{ "http_2xx", (long long)metrics_own_http_class(1) },
		{ "http_3xx", (long long)metrics_own_http_class(2) },
		{ "http_4xx", (long long)metrics_own_http_class(3) },
		{ "http_5xx", (long long)metrics_own_http_class(4) },
		{ "db_queries", (long long)metrics_own_counter(MC_DB_QUERIES) },
		{ "db_errors", (long long)(metrics_own_counter(
		    MC_DB_UNAVAILABLE) + metrics_own_counter(
		    MC_DB_SQL_ERRORS)) },
		{ "redis_commands", (long long)metrics_own_counter(
		    MC_REDIS_COMMANDS) },
		{ "redis_errors", (long long)(metrics_own_counter(
		    MC_REDIS_UNAVAILABLE) + metrics_own_counter(
		    MC_REDIS_ERROR_REPLIES)) },
	};
	enum { NNUMS = sizeof(nums) / sizeof(nums[0]) };
	char vals[NNUMS][24];
	const char *argv[8 + 2 * NNUMS];
	int argc = 0;

	metrics_beat();
	if (!bus_connected(p->bus))
		return;
	argv[argc++] = "HSET";
	argv[argc++] = p->key;
	argv[argc++] = "role";
	argv[argc++] = s->role;
	argv[argc++] = "host";
	argv[argc++] = p->host;
	for (int i = 0; i < NNUMS; i++) {
		snprintf(vals[i], sizeof(vals[i]), "%lld", nums[i].value);
		argv[argc++] = nums[i].name;
		argv[argc++] = vals[i];
	}
	if (s->partitions != NULL) {
		argv[argc++] = "partitions";
		argv[argc++] = s->partitions;
	}
	bus_sendv(p->bus, argc, argv, NULL);
	bus_send(p->bus, "EXPIRE %s %d", p->key, STATS_TTL_S);
}
