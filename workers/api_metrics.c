/*
 * api_metrics: GET /metrics, the Prometheus text format (version 0.0.4) of
 * the whole instance: every worker's and the hub's counters, summed from
 * the shared metrics region (common/metrics.h). Answered from memory only,
 * whichever worker takes the request; no authentication (like /health):
 * operators restrict it by network.
 */
#include "config.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include <event2/buffer.h>

#include "common/bus.h"
#include "common/metrics.h"
#include "workers/api.h"
#include "workers/conn.h"
#include "workers/worker.h"

#define METRICS_CTYPE	"text/plain; version=0.0.4; charset=utf-8"

static void	metrics_family(struct evbuffer *, const char *, const char *,
		    const char *);
static void	metrics_label(struct evbuffer *, const char *);
static void	metrics_shards(struct evbuffer *,
		    const struct metrics_snapshot *, int);
static void	api_metrics_parts(struct evbuffer *,
		    const struct metrics_snapshot *);
static void	metrics_histogram(struct evbuffer *, const char *,
		    const char *, const struct metrics_snapshot *, int, int);
static uint64_t	metrics_sum(const struct metrics_snapshot *, int);

static const char *const metrics_roles[METRICS_NROLES] = { "worker", "hub" };

/* The families that are one number of one role, gauge or counter. */
static const struct metrics_scalar {
	const char	*name;
	int		 gauge;		/* else a counter */
	int		 role;
	int		 index;		/* MG_* or MC_* */
	const char	*help;
} metrics_scalars[] = {
	{ "gochat_connections", 1, METRICS_WORKER, MG_CONNECTIONS,
	  "Open client connections (HTTP and WebSocket)." },
	{ "gochat_websockets", 1, METRICS_WORKER, MG_WEBSOCKETS,
	  "Open WebSocket connections in chat rooms." },
	{ "gochat_rooms", 1, METRICS_WORKER, MG_ROOMS,
	  "Rooms with a member on a worker, summed over the workers." },
	{ "gochat_messages_in_total", 0, METRICS_WORKER, MC_MSGS_IN,
	  "Chat messages received from clients." },
	{ "gochat_messages_out_total", 0, METRICS_WORKER, MC_MSGS_OUT,
	  "Chat frames (messages, history, joins, leaves) delivered to "
	  "clients." },
	{ "gochat_hub_leader", 1, METRICS_HUB, MG_LEADER,
	  "Partitions whose leader lease this instance's hub holds (with "
	  "partitions = 1: 1 while it leads)." },
	{ "gochat_hub_rooms", 1, METRICS_HUB, MG_ROOMS,
	  "Rooms with connected members, as the leading hub sees them." },
	{ "gochat_hub_messages_total", 0, METRICS_HUB, MC_MSGS_IN,
	  "Chat messages the hub gave an id, stored and published." },
	{ "gochat_hub_events_published_total", 0, METRICS_HUB, MC_MSGS_OUT,
	  "Room events the hub published (messages, joins, leaves)." },
	{ "gochat_hub_inbox_entries_total", 0, METRICS_HUB, MC_INBOX_ENTRIES,
	  "Entries the hub read from the inbox stream." },
};

void
api_metrics(struct conn *c, struct http_request *req,
    const struct route_match *m)
{
	struct metrics_snapshot *s;
	struct evbuffer *b;
	const char *label;
	int64_t oldest, lag_ms;
	uint64_t v;
	size_t nprocs[METRICS_NROLES] = { 0 };

	(void)req;
	(void)m;
	if ((s = metrics_snapshot()) == NULL || (b = evbuffer_new()) == NULL) {
		free(s);
		conn_error(c, 500, "out of memory");
		return;
	}

	metrics_family(b, "gochat_build_info", "gauge",
	    "The version of gochat answering; always 1.");
	evbuffer_add_printf(b, "gochat_build_info{version=");
	metrics_label(b, PACKAGE_VERSION);
	evbuffer_add_printf(b, "} 1\n");
	metrics_family(b, "gochat_start_time_seconds", "gauge",
	    "When the master process started, in seconds since the epoch.");
	evbuffer_add_printf(b, "gochat_start_time_seconds %.3f\n",
	    (double)s->started_ms / 1000);
	metrics_family(b, "gochat_uptime_seconds", "gauge",
	    "Seconds since the master process started.");
	evbuffer_add_printf(b, "gochat_uptime_seconds %.3f\n",
	    s->started_ms > 0 ? (double)(s->now_ms - s->started_ms) / 1000 : 0);

	for (size_t i = 0; i < s->nprocs; i++)
		nprocs[s->procs[i].role]++;
	metrics_family(b, "gochat_processes", "gauge",
	    "Live worker and hub processes of this instance.");
	for (int r = 0; r < METRICS_NROLES; r++)
		evbuffer_add_printf(b, "gochat_processes{role=\"%s\"} %zu\n",
		    metrics_roles[r], nprocs[r]);
	metrics_family(b, "gochat_process_start_time_seconds", "gauge",
	    "When each live process started, in seconds since the epoch.");
	for (size_t i = 0; i < s->nprocs; i++)
		evbuffer_add_printf(b, "gochat_process_start_time_seconds"
		    "{role=\"%s\",id=\"%d\",pid=\"%ld\"} %.3f\n",
		    metrics_roles[s->procs[i].role], s->procs[i].id,
		    s->procs[i].pid, (double)s->procs[i].started_ms / 1000);

	for (size_t i = 0; i < sizeof(metrics_scalars) /
	    sizeof(metrics_scalars[0]); i++) {
		const struct metrics_scalar *k = &metrics_scalars[i];

		metrics_family(b, k->name, k->gauge ? "gauge" : "counter",
		    k->help);
		if (k->gauge)
			evbuffer_add_printf(b, "%s %" PRId64 "\n", k->name,
			    s->gauge[k->role][k->index]);
		else
			evbuffer_add_printf(b, "%s %" PRIu64 "\n", k->name,
			    s->counter[k->role][k->index]);
	}
	oldest = s->gauge[METRICS_HUB][MG_INBOX_OLDEST_MS];
	lag_ms = oldest > 0 && s->now_ms > oldest ? s->now_ms - oldest : 0;
	metrics_family(b, "gochat_hub_inbox_lag_seconds", "gauge",
	    "Age of the oldest inbox entry the hub is working on (by its "
	    "stream id); 0 when it has caught up.");
	evbuffer_add_printf(b, "gochat_hub_inbox_lag_seconds %.3f\n",
	    (double)lag_ms / 1000);

	api_metrics_parts(b, s);

	metrics_family(b, "gochat_http_requests_total", "counter",
	    "HTTP responses by route pattern and status class.");
	for (int r = 0; r < METRICS_ROUTES &&
	    (label = api_route_label(r)) != NULL; r++) {
		if (*label == '\0')
			continue;	/* counted under its first index */
		for (int k = 0; k < METRICS_CLASSES; k++) {
			if ((v = metrics_sum(s, METRICS_HTTP(r, k))) == 0)
				continue;
			evbuffer_add_printf(b,
			    "gochat_http_requests_total{route=");
			metrics_label(b, label);
			evbuffer_add_printf(b, ",code=\"%dxx\"} %" PRIu64 "\n",
			    k + 1, v);
		}
	}

	metrics_family(b, "gochat_db_queries_total", "counter",
	    "PostgreSQL queries asked for, run or not.");
	evbuffer_add_printf(b, "gochat_db_queries_total %" PRIu64 "\n",
	    metrics_sum(s, MC_DB_QUERIES));
	metrics_family(b, "gochat_db_errors_total", "counter",
	    "PostgreSQL queries that failed: unavailable (no connection, "
	    "timeout) or sql (refused by the server).");
	evbuffer_add_printf(b, "gochat_db_errors_total{kind=\"unavailable\"} %"
	    PRIu64 "\n", metrics_sum(s, MC_DB_UNAVAILABLE));
	evbuffer_add_printf(b, "gochat_db_errors_total{kind=\"sql\"} %" PRIu64
	    "\n", metrics_sum(s, MC_DB_SQL_ERRORS));
	metrics_histogram(b, "gochat_db_query_duration_seconds",
	    "PostgreSQL query latency, queue wait included.", s,
	    MC_DB_BUCKET0, MC_DB_USEC);

	metrics_family(b, "gochat_redis_commands_total", "counter",
	    "Redis commands sent (or refused while Redis was away).");
	evbuffer_add_printf(b, "gochat_redis_commands_total %" PRIu64 "\n",
	    metrics_sum(s, MC_REDIS_COMMANDS));
	metrics_family(b, "gochat_redis_errors_total", "counter",
	    "Redis commands that failed: unavailable (not connected, or the "
	    "connection went before the reply) or reply (an error reply).");
	evbuffer_add_printf(b, "gochat_redis_errors_total{kind=\"unavailable\"}"
	    " %" PRIu64 "\n", metrics_sum(s, MC_REDIS_UNAVAILABLE));
	evbuffer_add_printf(b, "gochat_redis_errors_total{kind=\"reply\"} %"
	    PRIu64 "\n", metrics_sum(s, MC_REDIS_ERROR_REPLIES));
	metrics_histogram(b, "gochat_redis_command_duration_seconds",
	    "Redis command latency (blocking reads excluded).", s,
	    MC_REDIS_BUCKET0, MC_REDIS_USEC);
	metrics_shards(b, s, bus_shards_count(c->worker->shards));

	free(s);
	conn_respond_buffer(c, 200, METRICS_CTYPE, b,
	    "Cache-Control: no-store\r\n");
	evbuffer_free(b);
}

/*
 * Per Redis shard (SPEC section 11): how many processes of each role have
 * their command connection to it up (with Sentinel: to a server whose
 * ROLE said master) or down, and the failovers (+switch-master) they saw.
 */
static void
metrics_shards(struct evbuffer *b, const struct metrics_snapshot *s,
    int shards)
{
	metrics_family(b, "gochat_redis_shard_connections", "gauge",
	    "Processes whose command connection to the Redis shard is up "
	    "(for a Sentinel entry: to the master, ROLE checked) or down.");
	for (int i = 0; i < shards && i < METRICS_SHARDS; i++)
		for (int r = 0; r < METRICS_NROLES; r++) {
			evbuffer_add_printf(b, "gochat_redis_shard_connections"
			    "{shard=\"%d\",role=\"%s\",state=\"up\"} %" PRId64
			    "\n", i, metrics_roles[r],
			    s->gauge[r][MG_REDIS_SHARD_UP0 + i]);
			evbuffer_add_printf(b, "gochat_redis_shard_connections"
			    "{shard=\"%d\",role=\"%s\",state=\"down\"} %"
			    PRId64 "\n", i, metrics_roles[r],
			    s->gauge[r][MG_REDIS_SHARD_DOWN0 + i]);
		}
	metrics_family(b, "gochat_redis_failovers_total", "counter",
	    "Sentinel failovers (+switch-master) of the shard's master seen, "
	    "once per process.");
	for (int i = 0; i < shards && i < METRICS_SHARDS; i++)
		for (int r = 0; r < METRICS_NROLES; r++)
			evbuffer_add_printf(b, "gochat_redis_failovers_total"
			    "{shard=\"%d\",role=\"%s\"} %" PRIu64 "\n", i,
			    metrics_roles[r],
			    s->counter[r][MC_REDIS_FAILOVERS0 + i]);
}

/*
 * The partitions this instance's hub leads (SPEC section 11), and the
 * length and pending entries of each one's inbox as the hub last sampled
 * them (every second).
 */
static void
api_metrics_parts(struct evbuffer *b, const struct metrics_snapshot *s)
{
	static const struct {
		const char	*name, *help;
	} fams[3] = {
		{ "gochat_hub_partition_leader", "1 for each partition of the "
		  "rooms this instance's hub leads." },
		{ "gochat_hub_inbox_length", "Entries in the inbox stream of "
		  "each partition this instance's hub leads (XLEN)." },
		{ "gochat_hub_inbox_pending", "Entries delivered but not yet "
		  "acknowledged in the inbox of each partition this instance's "
		  "hub leads (XPENDING)." }
	};
	int64_t v[3];

	for (int f = 0; f < 3; f++) {
		metrics_family(b, fams[f].name, "gauge", fams[f].help);
		for (int n = 0; n < METRICS_PARTS; n++) {
			if (!((uint64_t)s->gauge[METRICS_HUB][MG_PARTS0 +
			    n / 64] & ((uint64_t)1 << (n % 64))))
				continue;
			v[0] = 1;
			if (f > 0 && metrics_inbox_get(n, &v[1], &v[2]) == -1)
				continue;
			evbuffer_add_printf(b, "%s{partition=\"%d\"} %" PRId64
			    "\n", fams[f].name, n, v[f]);
		}
	}
}

static void
metrics_family(struct evbuffer *b, const char *name, const char *type,
    const char *help)
{
	evbuffer_add_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name,
	    type);
}

/* A quoted label value: backslash, double quote and newline escaped. */
static void
metrics_label(struct evbuffer *b, const char *v)
{
	evbuffer_add(b, "\"", 1);
	for (; *v != '\0'; v++) {
		if (*v == '\\')
			evbuffer_add(b, "\\\\", 2);
		else if (*v == '"')
			evbuffer_add(b, "\\\"", 2);
		else if (*v == '\n')
			evbuffer_add(b, "\\n", 2);
		else
			evbuffer_add(b, v, 1);
	}
	evbuffer_add(b, "\"", 1);
}

/* Cumulative buckets, then _sum and _count, from per-bucket counts. */
static void
metrics_histogram(struct evbuffer *b, const char *name, const char *help,
    const struct metrics_snapshot *s, int bucket0, int usec)
{
	uint64_t n = 0;

	metrics_family(b, name, "histogram", help);
	for (int i = 0; i < METRICS_BUCKETS; i++) {
		n += metrics_sum(s, bucket0 + i);
		if (i == METRICS_BUCKETS - 1)
			evbuffer_add_printf(b, "%s_bucket{le=\"+Inf\"} %" PRIu64
			    "\n", name, n);
		else
			evbuffer_add_printf(b, "%s_bucket{le=\"%g\"} %" PRIu64
			    "\n", name, (double)metrics_bucket_us[i] / 1e6, n);
	}
	evbuffer_add_printf(b, "%s_sum %.6f\n", name,
	    (double)metrics_sum(s, usec) / 1e6);
	evbuffer_add_printf(b, "%s_count %" PRIu64 "\n", name, n);
}

/* A counter of every role. */
static uint64_t
metrics_sum(const struct metrics_snapshot *s, int c)
{
	uint64_t n = 0;

	for (int r = 0; r < METRICS_NROLES; r++)
		n += s->counter[r][c];
	return n;
}
