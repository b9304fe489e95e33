/*
 * api_health: GET /health checks PostgreSQL (SELECT 1) and Redis (PING,
 * every shard) live, in parallel, and answers within HEALTH_TIMEOUT_MS whatever happens:
 * a check that has not answered by then counts as down.
 */
#include "config.h"

#include <stdlib.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "common/bus.h"
#include "common/db.h"
#include "common/json.h"
#include "workers/api.h"
#include "workers/conn.h"
#include "workers/worker.h"

#define HEALTH_TIMEOUT_MS	2000

/* Freed when it has answered and no check callback is still to come. */
struct health {
	struct conn	*conn;		/* NULL once answered */
	struct event	*timer;
	struct bus_shards *shards;
	int		 pending;	/* checks still to call back */
	int		 pg_ok;
	int		 redis_up;	/* shards that answered PING */
	int		 redis_ok;	/* ... all of them */
};

static void	health_db_cb(struct db_result *, void *);
static void	health_redis_cb(struct bus *, struct bus_reply *, void *);
static void	health_timeout_cb(evutil_socket_t, short, void *);
static void	health_answer(struct health *);
static void	health_unref(struct health *);

void
api_health(struct conn *c, struct http_request *req,
    const struct route_match *m)
{
	struct worker *w = c->worker;
	struct timeval tv = { HEALTH_TIMEOUT_MS / 1000,
	    (HEALTH_TIMEOUT_MS % 1000) * 1000 };
	struct health *h;

	(void)req;
	(void)m;
	if ((h = calloc(1, sizeof(*h))) == NULL ||
	    (h->timer = evtimer_new(w->base, health_timeout_cb, h)) == NULL) {
		free(h);
		conn_error(c, 500, "out of memory");
		return;
	}
	h->conn = c;
	h->shards = w->shards;
	h->pending = 1;		/* held by this function until the end */
	if (db_query(w->db, "SELECT 1", 0, NULL, health_db_cb, h) == 0)
		h->pending++;
	for (int i = 0; i < bus_shards_count(w->shards); i++)
		if (bus_command(bus_shards_at(w->shards, i), health_redis_cb,
		    h, "PING") == 0)
			h->pending++;
	evtimer_add(h->timer, &tv);
	health_unref(h);
}

static void
health_db_cb(struct db_result *res, void *arg)
{
	struct health *h = arg;

	h->pg_ok = res != NULL && db_result_ok(res);
	health_unref(h);
}

static void
health_redis_cb(struct bus *bus, struct bus_reply *reply, void *arg)
{
	struct health *h = arg;

	if (reply != NULL && bus_reply_type(reply) == BUS_STRING &&
	    ++h->redis_up == bus_shards_count(h->shards))
		h->redis_ok = 1;
	(void)bus;
	health_unref(h);
}

static void
health_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	health_answer(arg);
}

static void
health_unref(struct health *h)
{
	if (--h->pending > 0)
		return;
	health_answer(h);
	event_free(h->timer);
	free(h);
}

static void
health_answer(struct health *h)
{
	struct evbuffer *body;
	int ok = h->pg_ok && h->redis_ok;

	if (h->conn == NULL)
		return;
	evtimer_del(h->timer);
	if ((body = evbuffer_new()) == NULL) {
		conn_error(h->conn, 500, "out of memory");
		h->conn = NULL;
		return;
	}
	evbuffer_add_printf(body, "{\"status\":\"%s\",\"postgres\":\"%s\","
	    "\"redis\":\"%s\"", ok ? "ok" : "down", h->pg_ok ? "ok" : "down",
	    h->redis_ok ? "ok" : "down");
	if (!ok)
		evbuffer_add_printf(body, ",\"error\":\"%s unreachable\"",
		    !h->pg_ok && !h->redis_ok ? "PostgreSQL and Redis are" :
		    !h->pg_ok ? "PostgreSQL is" : "Redis is");
	evbuffer_add(body, "}", 1);
	conn_json(h->conn, ok ? 200 : 503, body, "Cache-Control: no-store\r\n");
	evbuffer_free(body);
	h->conn = NULL;
}
