/*
 * hub: entry point of the hub process. It takes the leader lease
 * <prefix>hub:leader (SET NX PX, renewed every second by a compare-and-
 * extend script) so that only one hub among all instances acts; the others
 * stand by and take over within HUB_LEASE_MS when the leader disappears.
 */
#include "config.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>

#include "common/bus.h"
#include "common/conf.h"
#include "common/log.h"
#include "common/proc.h"
#include "common/stats.h"
#include "common/util.h"
#include "hub/hub.h"

#define HUB_LEASE_MS	5000	/* a silent leader loses the lease this soon */

/* Extend the lease only if we still hold it; 1 extended, 0 lost. */
static const char hub_renew_lua[] =
    "if redis.call('get', KEYS[1]) == ARGV[1] then "
    "return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end";
/* Give the lease back only if we hold it. */
static const char hub_release_lua[] =
    "if redis.call('get', KEYS[1]) == ARGV[1] then "
    "return redis.call('del', KEYS[1]) else return 0 end";

static void	hub_signal_cb(evutil_socket_t, short, void *);
static void	hub_cron_cb(evutil_socket_t, short, void *);
static void	hub_lease(struct hub *);
static void	hub_lease_cb(struct bus *, struct bus_reply *, void *);
static void	hub_on_disconnect(struct bus *, void *);
static void	hub_stop(struct hub *);

int
hub_main(const struct proc_ctx *ctx)
{
	static struct hub h;
	struct timeval one = { 1, 0 };

	h.conf = ctx->conf;
	h.parent = getppid();
	h.stats.role = "hub";
	h.stats.started_ms = util_mono_ms();
	snprintf(h.lease_key, sizeof(h.lease_key), "%shub:leader",
	    h.conf->redis_prefix);
	snprintf(h.lease_value, sizeof(h.lease_value), "%s:%ld",
	    h.conf->instance, (long)getpid());

	if ((h.base = event_base_new()) == NULL)
		fatalx("event_base_new() failed");
	if ((h.redis = bus_new(h.base, h.conf->redis_url, "redis", NULL,
	    hub_on_disconnect, &h)) == NULL)
		fatalx("redis_url: cannot use '%s'", h.conf->redis_url);
	if ((h.stats_pub = stats_pub_new(h.base, h.redis, h.conf,
	    &h.stats)) == NULL)
		fatalx("cannot set up stats");
	h.sig_term = evsignal_new(h.base, SIGTERM, hub_signal_cb, &h);
	h.sig_int = evsignal_new(h.base, SIGINT, hub_signal_cb, &h);
	h.sig_usr1 = evsignal_new(h.base, SIGUSR1, hub_signal_cb, &h);
	h.sig_hup = evsignal_new(h.base, SIGHUP, hub_signal_cb, &h);
	h.cron = event_new(h.base, -1, EV_PERSIST, hub_cron_cb, &h);
	if (h.sig_term == NULL || h.sig_int == NULL || h.sig_usr1 == NULL ||
	    h.sig_hup == NULL || h.cron == NULL ||
	    evsignal_add(h.sig_term, NULL) == -1 ||
	    evsignal_add(h.sig_int, NULL) == -1 ||
	    evsignal_add(h.sig_usr1, NULL) == -1 ||
	    evsignal_add(h.sig_hup, NULL) == -1 ||
	    event_add(h.cron, &one) == -1)
		fatalx("cannot set up signal and timer events");

	log_info("started; waiting for the leader lease %s", h.lease_key);
	event_base_dispatch(h.base);
	log_info("exiting");

	stats_pub_free(h.stats_pub);
	bus_free(h.redis);
	event_free(h.sig_term);
	event_free(h.sig_int);
	event_free(h.sig_usr1);
	event_free(h.sig_hup);
	event_free(h.cron);
	event_base_free(h.base);
	return GC_EXIT_OK;
}

static void
hub_signal_cb(evutil_socket_t sig, short what, void *arg)
{
	struct hub *h = arg;

	switch (sig) {
	case SIGTERM:
	case SIGINT:
		hub_stop(h);
		break;
	case SIGUSR1:
		log_reopen();
		break;
	default:
		break;
	}
}

static void
hub_cron_cb(evutil_socket_t fd, short what, void *arg)
{
	struct hub *h = arg;

	if (getppid() != h->parent) {
		log_warnx("the master is gone; exiting");
		hub_stop(h);
		return;
	}
	hub_lease(h);
}

/* Take the lease if it is free, or extend it if it is ours. */
static void
hub_lease(struct hub *h)
{
	char ttl[16];
	int rc;

	if (h->lease_pending || !bus_connected(h->redis))
		return;
	snprintf(ttl, sizeof(ttl), "%d", HUB_LEASE_MS);
	if (h->leader)
		rc = bus_command(h->redis, hub_lease_cb, h, "EVAL %s 1 %s %s %s",
		    hub_renew_lua, h->lease_key, h->lease_value, ttl);
	else
		rc = bus_command(h->redis, hub_lease_cb, h,
		    "SET %s %s NX PX %s", h->lease_key, h->lease_value, ttl);
	if (rc == 0)
		h->lease_pending = 1;
}

static void
hub_lease_cb(struct bus *bus, struct bus_reply *reply, void *arg)
{
	struct hub *h = arg;
	int held;

	h->lease_pending = 0;
	if (reply == NULL)
		return;		/* disconnected: hub_on_disconnect decides */
	if (h->leader)
		held = bus_reply_type(reply) == BUS_INTEGER &&
		    bus_reply_integer(reply) == 1;
	else
		held = bus_reply_type(reply) == BUS_STRING;
	if (held && !h->leader)
		log_info("leader lease taken: this hub is active");
	else if (!held && h->leader)
		log_warnx("leader lease lost: standing by");
	h->leader = held;
}

/*
 * Without Redis we cannot renew; another hub may take over once the lease
 * expires, so stop acting as leader now rather than risk two leaders.
 */
static void
hub_on_disconnect(struct bus *bus, void *arg)
{
	struct hub *h = arg;

	if (h->leader)
		log_warnx("Redis connection lost: standing by until it is back");
	h->leader = 0;
	h->lease_pending = 0;
}

static void
hub_stop(struct hub *h)
{
	log_info("stopping");
	stats_pub_remove(h->stats_pub);
	if (h->leader && bus_connected(h->redis))
		(void)!bus_command(h->redis, NULL, NULL, "EVAL %s 1 %s %s",
		    hub_release_lua, h->lease_key, h->lease_value);
	h->leader = 0;
	/* Let the release and the stats DEL reach Redis before exiting. */
	{
		struct timeval tv = { 0, 200000 };

		event_base_loopexit(h->base, &tv);
	}
}
