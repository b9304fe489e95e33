/*
 * bus: one Redis connection of an event loop, through hiredis' libevent
 * adapter. Owns the hiredis context, the timers that reconnect it and time
 * its attempts out, the callbacks of its subscriptions, and for a master
 * behind Sentinel the contexts that ask the sentinels and watch
 * +switch-master; and the sets of buses, one per shard, that redis_url
 * lists. The only includer of hiredis.
 */
#include "config.h"

#include <sys/types.h>
#include <sys/ioctl.h>
#ifdef HAVE_SYS_FILIO_H
#include <sys/filio.h>		/* FIONREAD on illumos */
#endif
#include <sys/queue.h>

#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/event.h>
#include <hiredis/hiredis.h>
#include <hiredis/async.h>

#include "common/bus.h"
#include "common/log.h"
#include "common/metrics.h"
#include "common/msg.h"
#include "common/util.h"

#define BUS_BACKOFF_MIN_MS	100
#define BUS_BACKOFF_MAX_MS	2000
#define BUS_CONNECT_TIMEOUT_MS	2000	/* connect(2), AUTH and SELECT */
#define BUS_DEFAULT_PORT	6379
#define BUS_SENTINEL_PORT	26379
#define BUS_WATCH_RETRY_MS	1000	/* a lost +switch-master watch */
#define BUS_READ_ON		15	/* reads after the adapter's, in a
					 * pass: 256 KB with its 16 KB */

_Static_assert(BUS_SHARDS_MAX <= METRICS_SHARDS, "a shard without metrics");

enum bus_state {
	BUS_IDLE,		/* no context; retry_ev is set */
	BUS_ASKING,		/* a sentinel for the master; timeout_ev set */
	BUS_CONNECTING,		/* connect(2), AUTH, SELECT, ROLE; timeout_ev
				 * set */
	BUS_READY
};

enum bus_cmd_kind {
	BUS_CMD_PLAIN,
	BUS_CMD_SUB,		/* (P)SUBSCRIBE with at least one channel */
	BUS_CMD_UNSUB,		/* (P)UNSUBSCRIBE */
	BUS_CMD_MONITOR
};

struct bus_addr {
	char	host[256];
	int	port;
};

struct bus_url {
	char	host[256];	/* with sentinels: the master last named */
	int	port;
	char	path[256];	/* unix socket; host is unused then */
	int	db;		/* -1: no SELECT */
	char	user[256];	/* ACL user; "" for the default user */
	char	password[512];	/* "": no AUTH */
	/* redis-sentinel://: who to ask for which master. */
	int	nsentinels;	/* 0: a plain URL */
	struct bus_addr sentinels[BUS_SENTINELS_MAX];
	char	master[BUS_MASTER_NAME_MAX + 1];
};

/*
 * A command, from bus_command() to its one reply: the caller's callback
 * (or none), and when it went, for the latency metrics and the deadline.
 * A (P)SUBSCRIBE on a bus with a deadline gets one too, only to be timed:
 * hiredis never sees it, the confirmations count it down.
 */
struct bus_call {
	TAILQ_ENTRY(bus_call) entry;	/* in bus->calls while timed */
	struct bus	*bus;
	bus_cb		*cb;		/* NULL: no one wants the reply */
	void		*arg;
	int64_t		 sent_us;	/* monotonic */
	int		 blocking;	/* waits by design: not timed */
	int		 timed;		/* in bus->calls */
	long		 confirms;	/* (P)SUBSCRIBE: channels to confirm */
};

/*
 * A subscription's callback. hiredis calls it for every message and keeps
 * it per channel, with no word when it lets go, so each distinct (cb, arg)
 * lives until bus_free().
 */
struct bus_sub {
	struct bus_sub	*next;
	struct bus	*bus;
	bus_cb		*cb;
	void		*arg;
	unsigned	 lost_gen;	/* NULL given for this connection */
};

struct bus {
	struct event_base *base;
	char		*name;
	struct bus_url	 url;
	char		 where[300];	/* for the log */
	bus_event_cb	*on_connect;
	bus_event_cb	*on_disconnect;
	void		*arg;
	redisAsyncContext *ac;		/* ac->data is this bus */
	enum bus_state	 state;
	unsigned	 gen;		/* counts contexts */
	struct event	*retry_ev;	/* back-off; or 0 s to close ac */
	struct event	*timeout_ev;
	int		 backoff_ms;
	int		 failing;	/* "unreachable" was logged */
	char		 why[256];	/* why we are closing ac ourselves */
	int		 freeing;
	struct bus_sub	*subs;
	int		 timeout_ms;	/* a reply's deadline; 0: none */
	struct event	*deadline_ev;	/* at the oldest timed call's */
	TAILQ_HEAD(, bus_call) calls;	/* timed, oldest first */
	int		 send_failing;	/* bus_send() logged a failure */
	int		 priority;	/* of its events; -1: the default */
	/* Sentinel (url.nsentinels > 0): the guidelines' client side. */
	redisAsyncContext *ask;		/* a sentinel being asked */
	int		 ask_next;	/* the sentinel to ask first: the
					 * last that answered */
	int		 asked;		/* sentinels asked in this round */
	redisAsyncContext *watch;	/* subscribed to +switch-master */
	int		 watch_next;	/* the sentinel to watch from */
	struct event	*watch_ev;	/* connects the watch again */
	int		 shard;		/* index in its set; 0 alone */
	int		 metrics;	/* shows its shard's state in /metrics */
	struct event	*read_on_ev;	/* bus_read_on_cb(), once per pass */
	int		 read_on_active;
	int		 reading_on;	/* in bus_read_on_cb(): it frees the
					 * bus that bus_free() leaves */
};

static int	bus_parse_num(const char **, long, long *);
static int	bus_url_decode(const char *, size_t, char *, size_t);
static int	bus_url_parse(const char *, struct bus_url *);
static void	bus_set_timer(struct event *, int);
static void	bus_connect(struct bus *);
static void	bus_ac_priority(struct bus *);
static void	bus_failed(struct bus *, const char *);
static void	bus_ready(struct bus *);
static void	bus_close(struct bus *);
static void	bus_connect_cb(const redisAsyncContext *, int);
static void	bus_disconnect_cb(const redisAsyncContext *, int);
static void	bus_select(struct bus *);
static int	bus_step_failed(struct bus *, const redisReply *,
		    const char *);
static void	bus_auth_cb(redisAsyncContext *, void *, void *);
static void	bus_select_cb(redisAsyncContext *, void *, void *);
static void	bus_retry_cb(evutil_socket_t, short, void *);
static void	bus_timeout_cb(evutil_socket_t, short, void *);
static void	bus_deadline_cb(evutil_socket_t, short, void *);
static enum bus_cmd_kind bus_cmd_kind(const char *, int);
static long	bus_cmd_argc(const char *, int);
static int	bus_cmd_arg(const char **, const char *, const char **,
		    long *);
static int	bus_cmd_blocking(const char *, int);
static void	bus_refused(void);
static int	bus_send_formatted(struct bus *, bus_cb *, void *,
		    const char *, int);
static void	bus_send_failed(struct bus *, const char *);
static int	bus_vcommand(struct bus *, bus_cb *, void *, const char *,
		    va_list);
static struct bus_sub *bus_sub_get(struct bus *, bus_cb *, void *);
static void	bus_call_cb(redisAsyncContext *, void *, void *);
static void	bus_sub_cb(redisAsyncContext *, void *, void *);
static void	bus_sub_confirmed(struct bus *, const redisReply *);
static void	bus_calls_drop(struct bus *);
static int	bus_addr_parse(const char **, struct bus_addr *, int);
static int	bus_userinfo_parse(const char **, struct bus_url *);
static int	bus_db_parse(const char *, struct bus_url *);
static int	bus_sentinel_url_parse(const char *, struct bus_url *);
static void	bus_connect_master(struct bus *);
static void	bus_ask(struct bus *);
static void	bus_ask_failed(struct bus *, const char *);
static void	bus_asked_cb(redisAsyncContext *, void *, void *);
static void	bus_role_cb(redisAsyncContext *, void *, void *);
static void	bus_watch(struct bus *);
static void	bus_watch_cb(redisAsyncContext *, void *, void *);
static void	bus_watch_retry_cb(evutil_socket_t, short, void *);
static void	bus_switch(struct bus *, const char *);
static void	bus_metrics_up(struct bus *, int);
static void	bus_read_on(struct bus *);
static void	bus_read_on_cb(evutil_socket_t, short, void *);
static redisAsyncContext *bus_ac_new(struct bus *, const char *, int);
static void	bus_readonly(struct bus *, const char *);

/* ---- URL ----------------------------------------------------------------- */

/* Decimal digits at *pp, at least one, at most max. */
static int
bus_parse_num(const char **pp, long max, long *out)
{
	const char *p = *pp;
	long v = 0;

	if (*p < '0' || *p > '9')
		return -1;
	for (; *p >= '0' && *p <= '9'; p++) {
		v = v * 10 + (*p - '0');
		if (v > max)
			return -1;
	}
	*pp = p;
	*out = v;
	return 0;
}

/*
 * The user or password of a URL, n bytes at s, into out: RFC 3986's
 * unreserved and sub-delims characters as they are, %XX decoded; a ':' is
 * taken too (a password may hold one after the first). Anything else, a
 * broken %XX, a %00, or no room is -1.
 */
static int
bus_url_decode(const char *s, size_t n, char *out, size_t outlen)
{
	size_t i, o = 0;
	int hi, lo;

	for (i = 0; i < n; i++) {
		if (o + 1 >= outlen)
			return -1;
		if (s[i] == '%') {
			if (i + 2 >= n)
				return -1;
			if ((hi = util_hexval((unsigned char)s[i + 1])) == -1 ||
			    (lo = util_hexval((unsigned char)s[i + 2])) == -1 ||
			    (hi == 0 && lo == 0))
				return -1;
			out[o++] = (char)(hi << 4 | lo);
			i += 2;
		} else if (strchr("abcdefghijklmnopqrstuvwxyz"
		    "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~!$&'()*+,;=:",
		    s[i]) != NULL && s[i] != '\0')
			out[o++] = s[i];
		else
			return -1;
	}
	out[o] = '\0';
	return 0;
}

/*
 * "host[:port]" or "[v6 address][:port]" at *pp, into a (port defport
 * when left out); *pp goes past it.
 */
static int
bus_addr_parse(const char **pp, struct bus_addr *a, int defport)
{
	const char *p = *pp, *host;
	size_t n;
	long v;

	if (*p == '[') {
		host = ++p;
		n = strspn(p, "0123456789abcdefABCDEF:.");
		if (p[n] != ']')
			return -1;
		p += n + 1;
	} else {
		host = p;
		n = strspn(p, "abcdefghijklmnopqrstuvwxyz"
		    "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_");
		p += n;
	}
	if (n == 0 || n >= sizeof(a->host))
		return -1;
	memcpy(a->host, host, n);
	a->host[n] = '\0';
	a->port = defport;
	if (*p == ':') {
		p++;
		if (bus_parse_num(&p, 65535, &v) == -1 || v == 0)
			return -1;
		a->port = (int)v;
	}
	*pp = p;
	return 0;
}

/*
 * The user info of a URL at *p, up to an '@' (one inside it is %40), if
 * there is one before the first '/': "[user]:password@", decoded into u.
 * *pp goes past the '@'. A user without a password is refused, not
 * misread, as is an empty password.
 */
static int
bus_userinfo_parse(const char **pp, struct bus_url *u)
{
	const char *p = *pp, *at, *colon;
	size_t n;

	n = strcspn(p, "@/");
	if (p[n] != '@')
		return 0;
	at = p + n;
	if ((colon = memchr(p, ':', n)) == NULL || colon + 1 == at)
		return -1;
	if (bus_url_decode(p, (size_t)(colon - p), u->user,
	    sizeof(u->user)) == -1 ||
	    bus_url_decode(colon + 1, (size_t)(at - colon - 1),
	    u->password, sizeof(u->password)) == -1)
		return -1;
	*pp = at + 1;
	return 0;
}

/* "/db" or "/" or nothing at *p, then the end. */
static int
bus_db_parse(const char *p, struct bus_url *u)
{
	long v;

	if (*p == '/' && p[1] != '\0') {
		p++;
		if (bus_parse_num(&p, 1000000, &v) == -1)
			return -1;
		u->db = (int)v;
	} else if (*p == '/')
		p++;
	return *p == '\0' ? 0 : -1;
}

/*
 * "redis-sentinel://[[user]:password@]host[:port][,host[:port]...]/name
 * [/db]": the sentinels to ask (port 26379 by default), the master's name
 * ([A-Za-z0-9._-], as Sentinel's config takes it). The user and password
 * are the master's, not the sentinels'.
 */
static int
bus_sentinel_url_parse(const char *url, struct bus_url *u)
{
	const char *p = url + strlen("redis-sentinel://");
	size_t n;

	if (bus_userinfo_parse(&p, u) == -1)
		return -1;
	for (;;) {
		if (u->nsentinels == BUS_SENTINELS_MAX ||
		    bus_addr_parse(&p, &u->sentinels[u->nsentinels],
		    BUS_SENTINEL_PORT) == -1)
			return -1;
		u->nsentinels++;
		if (*p != ',')
			break;
		p++;
	}
	if (*p++ != '/')
		return -1;
	n = strspn(p, "abcdefghijklmnopqrstuvwxyz"
	    "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_");
	if (n == 0 || n > BUS_MASTER_NAME_MAX)
		return -1;
	memcpy(u->master, p, n);
	u->master[n] = '\0';
	return bus_db_parse(p + n, u);
}

/*
 * "redis://[[user]:password@]host[:port][/db]" (host may be "[v6
 * address]"), "unix:/path", or a redis-sentinel:// URL. The user and
 * password are percent-decoded.
 */
static int
bus_url_parse(const char *url, struct bus_url *u)
{
	struct bus_addr a;
	const char *p;

	memset(u, 0, sizeof(*u));
	u->port = BUS_DEFAULT_PORT;
	u->db = -1;
	if (url == NULL)
		return -1;
	if (strncmp(url, "unix:", 5) == 0) {
		p = url + 5;
		if (p[0] != '/' || strlen(p) >= sizeof(u->path))
			return -1;
		memcpy(u->path, p, strlen(p) + 1);
		return 0;
	}
	if (strncmp(url, "redis-sentinel://", 17) == 0)
		return bus_sentinel_url_parse(url, u);
	if (strncmp(url, "redis://", 8) != 0)
		return -1;
	p = url + 8;
	if (bus_userinfo_parse(&p, u) == -1 ||
	    bus_addr_parse(&p, &a, BUS_DEFAULT_PORT) == -1)
		return -1;
	memcpy(u->host, a.host, sizeof(u->host));
	u->port = a.port;
	return bus_db_parse(p, u);
}

int
bus_url_valid(const char *url)
{
	struct bus_url u;

	return bus_url_parse(url, &u) == 0;
}

/*
 * Everything between "scheme://" and the last '@' is user info, whether the
 * URL parses or not (a password may hold a stray '@' or '/'): the user is
 * kept up to the first ':', the rest becomes "***". A URL without '@' is
 * copied as it is.
 */
const char *
bus_url_redact(const char *url, char *buf, size_t len)
{
	const char *start, *at, *colon;

	if (len == 0)
		return buf;
	if (url == NULL)
		url = "";
	start = strstr(url, "://");
	start = start != NULL ? start + 3 : url;
	if (strncmp(url, "unix:", 5) == 0 ||
	    (at = strrchr(start, '@')) == NULL) {
		snprintf(buf, len, "%s", url);
		return buf;
	}
	colon = memchr(start, ':', (size_t)(at - start));
	snprintf(buf, len, "%.*s***%s", (int)((colon != NULL ? colon + 1 :
	    start) - url), url, at);
	return buf;
}

/* ---- connection ---------------------------------------------------------- */

static void
bus_set_timer(struct event *ev, int ms)
{
	struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };

	evtimer_add(ev, &tv);
}

/*
 * The event loop's side of a hiredis connection (its adapter interface,
 * ac->ev), in place of hiredis' libevent adapter: that one's read event is
 * one-shot, so every read cost an epoll_ctl() to remove it and another to
 * add it back. Here it persists. A write waits, as with hiredis' adapter,
 * for the socket to say writable in the next loop pass, so that what the
 * rest of this pass queues goes in the same write; writing at the end of
 * the pass instead measured no faster and made Redis read more, smaller
 * writes.
 */
struct bus_ev {
	redisAsyncContext *ac;
	struct event	*rev;		/* EV_READ | EV_PERSIST */
	struct event	*wev;		/* EV_WRITE | EV_PERSIST */
	int		 reading;	/* rev added */
	int		 writing;	/* wev added */
};

static void
bus_ev_read_cb(evutil_socket_t fd, short what, void *arg)
{
	struct bus_ev *e = arg;

	(void)fd;
	(void)what;
	redisAsyncHandleRead(e->ac);	/* may free e */
}

static void
bus_ev_write_cb(evutil_socket_t fd, short what, void *arg)
{
	struct bus_ev *e = arg;

	(void)fd;
	(void)what;
	redisAsyncHandleWrite(e->ac);	/* may free e */
}

/* Have ev added (want) or not; *on says which it is. */
static void
bus_ev_want(struct event *ev, int *on, int want)
{
	if (want && !*on && event_add(ev, NULL) == 0)
		*on = 1;
	else if (!want && *on && event_del(ev) == 0)
		*on = 0;
}

static void
bus_ev_add_read(void *arg)
{
	struct bus_ev *e = arg;

	bus_ev_want(e->rev, &e->reading, 1);
}

static void
bus_ev_del_read(void *arg)
{
	struct bus_ev *e = arg;

	bus_ev_want(e->rev, &e->reading, 0);
}

static void
bus_ev_add_write(void *arg)
{
	struct bus_ev *e = arg;

	bus_ev_want(e->wev, &e->writing, 1);
}

static void
bus_ev_del_write(void *arg)
{
	struct bus_ev *e = arg;

	bus_ev_want(e->wev, &e->writing, 0);
}

static void
bus_ev_cleanup(void *arg)
{
	struct bus_ev *e = arg;

	event_free(e->rev);
	event_free(e->wev);
	free(e);
}

static int
bus_ev_attach(redisAsyncContext *ac, struct event_base *base)
{
	struct bus_ev *e;
	evutil_socket_t fd = ac->c.fd;

	if (ac->ev.data != NULL || (e = calloc(1, sizeof(*e))) == NULL)
		return -1;
	e->ac = ac;
	if ((e->rev = event_new(base, fd, EV_READ | EV_PERSIST,
	    bus_ev_read_cb, e)) == NULL ||
	    (e->wev = event_new(base, fd, EV_WRITE | EV_PERSIST,
	    bus_ev_write_cb, e)) == NULL) {
		if (e->rev != NULL)
			event_free(e->rev);
		free(e);
		return -1;
	}
	ac->ev.addRead = bus_ev_add_read;
	ac->ev.delRead = bus_ev_del_read;
	ac->ev.addWrite = bus_ev_add_write;
	ac->ev.delWrite = bus_ev_del_write;
	ac->ev.cleanup = bus_ev_cleanup;
	ac->ev.data = e;
	/* The connect completes when the socket turns writable. */
	bus_ev_add_read(e);
	bus_ev_add_write(e);
	return 0;
}

/*
 * A context to host:port (host NULL: url.path's unix socket) on the bus's
 * loop, or NULL with the reason in bus->why. DNS, when the host is a name,
 * is resolved synchronously by hiredis.
 */
static redisAsyncContext *
bus_ac_new(struct bus *bus, const char *host, int port)
{
	redisAsyncContext *ac;

	ac = host == NULL ? redisAsyncConnectUnix(bus->url.path) :
	    redisAsyncConnect(host, port);
	if (ac == NULL) {
		snprintf(bus->why, sizeof(bus->why), "out of memory");
		return NULL;
	}
	if (ac->err) {
		snprintf(bus->why, sizeof(bus->why), "%s", ac->c.errstr);
		redisAsyncFree(ac);
		return NULL;
	}
	ac->data = bus;
	if (bus_ev_attach(ac, bus->base) == -1) {
		snprintf(bus->why, sizeof(bus->why), "cannot attach to the "
		    "event loop");
		redisAsyncFree(ac);
		return NULL;
	}
	if (host != NULL)
		(void)redisEnableKeepAlive(&ac->c);
	return ac;
}

/* A new attempt: straight to the server, or through the sentinels. */
static void
bus_connect(struct bus *bus)
{
	bus->gen++;
	bus->why[0] = '\0';
	if (bus->url.nsentinels > 0) {
		bus->asked = 0;
		bus_ask(bus);
	} else
		bus_connect_master(bus);
}

/* To url.host:port (or url.path): AUTH, SELECT, ROLE follow. */
static void
bus_connect_master(struct bus *bus)
{
	redisAsyncContext *ac;

	if ((ac = bus_ac_new(bus, bus->url.path[0] != '\0' ? NULL :
	    bus->url.host, bus->url.port)) == NULL) {
		bus_failed(bus, bus->why);
		return;
	}
	if (redisAsyncSetConnectCallback(ac, bus_connect_cb) != REDIS_OK ||
	    redisAsyncSetDisconnectCallback(ac, bus_disconnect_cb) !=
	    REDIS_OK) {
		redisAsyncFree(ac);
		bus_failed(bus, "cannot attach to the event loop");
		return;
	}
	bus->ac = ac;
	if (bus->priority >= 0)
		bus_ac_priority(bus);
	bus->state = BUS_CONNECTING;
	bus_set_timer(bus->timeout_ev, BUS_CONNECT_TIMEOUT_MS);
}

/*
 * An attempt failed, or a connection went: try again after the back-off.
 * The first failure in a row is a warning, the rest are debug.
 */
static void
bus_failed(struct bus *bus, const char *why)
{
	if (!bus->failing)
		log_warnx("redis %s: cannot connect to %s: %s", bus->name,
		    bus->where, why);
	else
		log_debug("redis %s: cannot connect to %s: %s", bus->name,
		    bus->where, why);
	bus->failing = 1;
	bus->ac = NULL;
	bus->state = BUS_IDLE;
	evtimer_del(bus->timeout_ev);
	bus_set_timer(bus->retry_ev, bus->backoff_ms);
	bus->backoff_ms *= 2;
	if (bus->backoff_ms > BUS_BACKOFF_MAX_MS)
		bus->backoff_ms = BUS_BACKOFF_MAX_MS;
}

static void
bus_ready(struct bus *bus)
{
	evtimer_del(bus->timeout_ev);
	bus->state = BUS_READY;
	bus->backoff_ms = BUS_BACKOFF_MIN_MS;
	bus->failing = 0;
	log_info("redis %s: connected to %s", bus->name, bus->where);
	bus_metrics_up(bus, 1);
	if (bus->url.nsentinels > 0 && bus->watch == NULL &&
	    !evtimer_pending(bus->watch_ev, NULL)) {
		bus->watch_next = bus->ask_next;
		bus_watch(bus);
	}
	if (bus->on_connect != NULL)
		bus->on_connect(bus, bus->arg);
}

/*
 * Frees the context from outside hiredis' callbacks (a timer). A context
 * that was connected reports through bus_disconnect_cb(); one that was
 * still connecting does not, so it counts as a failed attempt here.
 */
static void
bus_close(struct bus *bus)
{
	redisAsyncContext *ac = bus->ac;
	int connected;

	if (ac == NULL)
		return;
	connected = (ac->c.flags & REDIS_CONNECTED) != 0;
	redisAsyncFree(ac);
	if (!connected)
		bus_failed(bus, bus->why);
}

/* hiredis frees the context itself after a failed connect. */
static void
bus_connect_cb(const redisAsyncContext *cac, int status)
{
	struct bus *bus = cac->data;

	if (status != REDIS_OK) {
		bus_failed(bus, cac->c.errstr);
		return;
	}
	if (bus->url.password[0] == '\0') {
		bus_select(bus);
		return;
	}
	if ((bus->url.user[0] != '\0' ?
	    redisAsyncCommand(bus->ac, bus_auth_cb, bus, "AUTH %s %s",
	    bus->url.user, bus->url.password) :
	    redisAsyncCommand(bus->ac, bus_auth_cb, bus, "AUTH %s",
	    bus->url.password)) != REDIS_OK) {
		snprintf(bus->why, sizeof(bus->why), "cannot send AUTH");
		bus_set_timer(bus->retry_ev, 0);
	}
}

/*
 * The SELECT of a new connection, after AUTH if any, or a PING when there
 * is no db to select; then it is ready. A connection is ready only once
 * Redis has answered: a Redis that is stopped (SIGSTOP) still completes
 * the TCP handshake, and taking that for "up" would make every request
 * wait out its deadline instead of failing at once.
 */
static void
bus_select(struct bus *bus)
{
	int rc;

	if (bus->url.db < 0)
		rc = redisAsyncCommand(bus->ac, bus_select_cb, bus, "PING");
	else
		rc = redisAsyncCommand(bus->ac, bus_select_cb, bus,
		    "SELECT %d", bus->url.db);
	if (rc != REDIS_OK) {
		snprintf(bus->why, sizeof(bus->why), "cannot send %s",
		    bus->url.db < 0 ? "PING" : "SELECT");
		bus_set_timer(bus->retry_ev, 0);
	}
}

/*
 * Runs inside hiredis' teardown of the context, after every pending
 * callback got NULL; hiredis frees the context when this returns.
 */
static void
bus_disconnect_cb(const redisAsyncContext *cac, int status)
{
	struct bus *bus = cac->data;
	int was_ready = bus->state == BUS_READY;

	(void)status;
	bus->ac = NULL;
	bus->state = BUS_IDLE;
	evtimer_del(bus->timeout_ev);
	bus_calls_drop(bus);
	if (bus->freeing)
		return;
	if (!was_ready) {
		bus_failed(bus, bus->why[0] != '\0' ? bus->why :
		    cac->c.errstr[0] != '\0' ? cac->c.errstr : "disconnected");
		return;
	}
	bus_metrics_up(bus, 0);
	log_warnx("redis %s: connection to %s lost: %s", bus->name,
	    bus->where, bus->why[0] != '\0' ? bus->why :
	    cac->c.errstr[0] != '\0' ? cac->c.errstr : "closed");
	bus->failing = 1;
	bus_set_timer(bus->retry_ev, bus->backoff_ms);
	if (bus->on_disconnect != NULL)
		bus->on_disconnect(bus, bus->arg);
}

/*
 * A refused AUTH (WRONGPASS, or a server without a password) is a failed
 * attempt like a refused connection: logged once, then retried with the
 * back-off, since the password may be set on the server meanwhile. The
 * context is closed later, not from inside hiredis.
 */
static void
bus_auth_cb(redisAsyncContext *ac, void *r, void *privdata)
{
	struct bus *bus = privdata;
	char what[96];

	(void)ac;
	snprintf(what, sizeof(what), "authentication failed%s%.64s",
	    bus->url.user[0] != '\0' ? " as user " : "", bus->url.user);
	if (!bus_step_failed(bus, r, what))
		bus_select(bus);
}

/* A refused SELECT (or PING) closes the context, later: not from inside
 * hiredis. */
static void
bus_select_cb(redisAsyncContext *ac, void *r, void *privdata)
{
	struct bus *bus = privdata;
	char what[32];

	(void)ac;
	if (bus->url.db < 0)
		snprintf(what, sizeof(what), "PING");
	else
		snprintf(what, sizeof(what), "SELECT %d", bus->url.db);
	if (bus_step_failed(bus, r, what))
		return;
	if (bus->url.nsentinels == 0)
		bus_ready(bus);
	else if (redisAsyncCommand(bus->ac, bus_role_cb, bus, "ROLE") !=
	    REDIS_OK) {
		snprintf(bus->why, sizeof(bus->why), "cannot send ROLE");
		bus_set_timer(bus->retry_ev, 0);
	}
}

/*
 * The reply to a step of a new connection (AUTH, SELECT): 0 to go on; 1
 * when the connection is going (no reply) or the server refused the step,
 * which then fails this attempt as "what: the server's error".
 */
static int
bus_step_failed(struct bus *bus, const redisReply *reply, const char *what)
{
	if (reply == NULL || bus->freeing)
		return 1;
	if (reply->type != REDIS_REPLY_ERROR)
		return 0;
	snprintf(bus->why, sizeof(bus->why), "%s: %s", what, reply->str);
	bus_set_timer(bus->retry_ev, 0);
	return 1;
}

/* Either the back-off is over, or a context is to be closed. */
static void
bus_retry_cb(evutil_socket_t fd, short what, void *arg)
{
	struct bus *bus = arg;

	(void)fd;
	(void)what;
	if (bus->ac != NULL)
		bus_close(bus);
	else
		bus_connect(bus);
}

static void
bus_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
	struct bus *bus = arg;

	(void)fd;
	(void)what;
	if (bus->ask != NULL) {
		redisAsyncContext *ac = bus->ask;

		bus->ask = NULL;	/* its callback gets NULL: ignored */
		redisAsyncFree(ac);
		bus_ask_failed(bus, "no answer in time");
		return;
	}
	snprintf(bus->why, sizeof(bus->why), "no answer in %d ms",
	    BUS_CONNECT_TIMEOUT_MS);
	bus_close(bus);
}

/*
 * The oldest timed command may have passed its deadline. Replies come in
 * the order the commands went, so a late one means the connection is
 * stalled (Redis stopped, a network that drops without a reset): it is
 * closed, which gives every pending callback NULL at once (the "Redis is
 * away" path: 503), and no late reply can reach an owner that has freed
 * what its callback points to. The reconnection is ready only when Redis
 * answers (bus_select()), so meanwhile commands fail at once.
 */
static void
bus_deadline_cb(evutil_socket_t fd, short what, void *arg)
{
	struct bus *bus = arg;
	struct bus_call *call;
	int64_t now = util_mono_us();

	(void)fd;
	(void)what;
	if ((call = TAILQ_FIRST(&bus->calls)) == NULL || bus->ac == NULL)
		return;
	if (call->sent_us + (int64_t)bus->timeout_ms * 1000 > now) {
		bus_set_timer(bus->deadline_ev, (int)((call->sent_us +
		    (int64_t)bus->timeout_ms * 1000 - now) / 1000) + 1);
		return;
	}
	snprintf(bus->why, sizeof(bus->why), "no reply in %d ms",
	    bus->timeout_ms);
	redisAsyncFree(bus->ac);
}

/* ---- Sentinel ------------------------------------------------------------ */

/*
 * Redis's guidelines for Sentinel clients: ask the sentinels in turn for
 * the master's address, check with ROLE that the server there is the
 * master before using it (bus_select_cb()), and follow +switch-master
 * from a sentinel; a -READONLY reply or a lost connection means asking
 * again. The owner of the bus sees none of it: a switch is a connection
 * lost and a new one made, as when a plain Redis restarts.
 */

/* How long a sentinel may take to answer: the bus's deadline. */
static int
bus_ask_ms(const struct bus *bus)
{
	return bus->timeout_ms > 0 ? bus->timeout_ms : BUS_CONNECT_TIMEOUT_MS;
}

/*
 * Ask the next sentinel of this round where the master is. A round asks
 * each sentinel once, the one that answered last first; a round without
 * an answer is a failed attempt (the back-off, then a new round).
 */
static void
bus_ask(struct bus *bus)
{
	const struct bus_addr *s;
	redisAsyncContext *ac;
	char why[sizeof(bus->why) + 64];

	if (bus->asked >= bus->url.nsentinels) {
		snprintf(why, sizeof(why), "no sentinel gave its address "
		    "(last: %s)", bus->why);
		bus_failed(bus, why);
		return;
	}
	bus->asked++;
	bus->state = BUS_ASKING;
	s = &bus->url.sentinels[bus->ask_next];
	if ((ac = bus_ac_new(bus, s->host, s->port)) == NULL) {
		snprintf(why, sizeof(why), "%s", bus->why);
		bus_ask_failed(bus, why);
		return;
	}
	if (redisAsyncCommand(ac, bus_asked_cb, bus,
	    "SENTINEL get-master-addr-by-name %s", bus->url.master) !=
	    REDIS_OK) {
		redisAsyncFree(ac);
		bus_ask_failed(bus, "cannot send SENTINEL");
		return;
	}
	bus->ask = ac;
	bus_set_timer(bus->timeout_ev, bus_ask_ms(bus));
}

/* The sentinel asked did not answer: the next one. */
static void
bus_ask_failed(struct bus *bus, const char *why)
{
	const struct bus_addr *s = &bus->url.sentinels[bus->ask_next];
	char tmp[sizeof(bus->why)];

	snprintf(tmp, sizeof(tmp), "%s", why);
	snprintf(bus->why, sizeof(bus->why), "sentinel %.64s:%d: %.160s",
	    s->host, s->port, tmp);
	log_debug("redis %s: %s", bus->name, bus->why);
	evtimer_del(bus->timeout_ev);
	bus->ask_next = (bus->ask_next + 1) % bus->url.nsentinels;
	bus_ask(bus);
}

/*
 * A sentinel's answer: [ip, port] of the master, or nil when it does not
 * know the name. NULL: it could not be reached. The context is let go
 * after this callback (hiredis frees it).
 */
static void
bus_asked_cb(redisAsyncContext *ac, void *r, void *privdata)
{
	struct bus *bus = privdata;
	const redisReply *reply = r, *ip, *port;
	long long p;

	if (bus->ask != ac || bus->freeing)
		return;		/* let go by us: timed out, or bus_free() */
	bus->ask = NULL;
	if (reply == NULL) {
		bus_ask_failed(bus, ac->c.errstr[0] != '\0' ? ac->c.errstr :
		    "connection lost");
		return;
	}
	redisAsyncDisconnect(ac);
	if (reply->type == REDIS_REPLY_ERROR) {
		bus_ask_failed(bus, reply->str);
		return;
	}
	if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 2 ||
	    (ip = reply->element[0])->type != REDIS_REPLY_STRING ||
	    (port = reply->element[1])->type != REDIS_REPLY_STRING ||
	    ip->len == 0 || ip->len >= sizeof(bus->url.host) ||
	    strspn(ip->str, "0123456789abcdefABCDEF:.-_"
	    "ghijklmnopqrstuvwxyzGHIJKLMNOPQRSTUVWXYZ") != ip->len ||
	    util_parse_int(port->str, 1, 65535, &p) == -1) {
		bus_ask_failed(bus, reply->type == REDIS_REPLY_NIL ?
		    "does not know this master" : "unexpected answer");
		return;
	}
	memcpy(bus->url.host, ip->str, ip->len + 1);
	bus->url.port = (int)p;
	snprintf(bus->where, sizeof(bus->where), "%.128s:%d (master "
	    "'%.127s')", bus->url.host, bus->url.port, bus->url.master);
	evtimer_del(bus->timeout_ev);
	bus_connect_master(bus);
}

/*
 * ROLE of the server a sentinel named: only a master is used. A replica
 * (the sentinels have not all caught up with a failover) fails the
 * attempt: the back-off, then the sentinels are asked again.
 */
static void
bus_role_cb(redisAsyncContext *ac, void *r, void *privdata)
{
	struct bus *bus = privdata;
	const redisReply *reply = r;

	(void)ac;
	if (bus_step_failed(bus, reply, "ROLE"))
		return;
	if (reply->type == REDIS_REPLY_ARRAY && reply->elements > 0 &&
	    reply->element[0]->type == REDIS_REPLY_STRING &&
	    strcmp(reply->element[0]->str, "master") == 0) {
		bus_ready(bus);
		return;
	}
	snprintf(bus->why, sizeof(bus->why), "the server is a %.32s, not "
	    "the master", reply->type == REDIS_REPLY_ARRAY &&
	    reply->elements > 0 && reply->element[0]->type ==
	    REDIS_REPLY_STRING ? reply->element[0]->str : "stranger");
	bus_set_timer(bus->retry_ev, 0);
}

/* Subscribe to +switch-master on a sentinel; another one later if not. */
static void
bus_watch(struct bus *bus)
{
	const struct bus_addr *s = &bus->url.sentinels[bus->watch_next];
	redisAsyncContext *ac;

	if ((ac = bus_ac_new(bus, s->host, s->port)) != NULL &&
	    redisAsyncCommand(ac, bus_watch_cb, bus,
	    "SUBSCRIBE +switch-master") == REDIS_OK) {
		bus->watch = ac;
		return;
	}
	if (ac != NULL)
		redisAsyncFree(ac);
	bus->watch_next = (bus->watch_next + 1) % bus->url.nsentinels;
	bus_set_timer(bus->watch_ev, BUS_WATCH_RETRY_MS);
}

static void
bus_watch_retry_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	bus_watch(arg);
}

/*
 * The watch's messages: ["message", "+switch-master", "<name> <old ip>
 * <old port> <new ip> <new port>"]. NULL: the sentinel went; the next one
 * is watched a second later (a switch meanwhile still shows as a lost
 * connection or a -READONLY).
 */
static void
bus_watch_cb(redisAsyncContext *ac, void *r, void *privdata)
{
	struct bus *bus = privdata;
	const redisReply *reply = r;

	if (bus->watch != ac || bus->freeing)
		return;
	if (reply == NULL) {
		bus->watch = NULL;
		log_debug("redis %s: the sentinel watched is gone: %s",
		    bus->name, ac->c.errstr);
		bus->watch_next = (bus->watch_next + 1) % bus->url.nsentinels;
		bus_set_timer(bus->watch_ev, BUS_WATCH_RETRY_MS);
		return;
	}
	if (reply->type == REDIS_REPLY_ARRAY && reply->elements == 3 &&
	    reply->element[0]->type == REDIS_REPLY_STRING &&
	    strcmp(reply->element[0]->str, "message") == 0 &&
	    reply->element[2]->type == REDIS_REPLY_STRING)
		bus_switch(bus, reply->element[2]->str);
}

/*
 * A sentinel announced a new master. For this bus's master, the
 * connection (or the attempt) is dropped and made again at once, to the
 * address the sentinels give now: nothing more is written to the old one.
 */
static void
bus_switch(struct bus *bus, const char *event)
{
	char name[BUS_MASTER_NAME_MAX + 1], oldip[64], newip[64];
	int oldport, newport;

	if (sscanf(event, "%127s %63s %d %63s %d", name, oldip, &oldport,
	    newip, &newport) != 5 || strcmp(name, bus->url.master) != 0)
		return;
	log_warnx("redis %s: sentinel: master '%s' moved from %s:%d to "
	    "%s:%d", bus->name, name, oldip, oldport, newip, newport);
	if (bus->metrics)
		metrics_count(MC_REDIS_FAILOVERS0 + bus->shard, 1);
	bus->backoff_ms = BUS_BACKOFF_MIN_MS;
	switch (bus->state) {
	case BUS_ASKING:
		return;		/* the answer will name the new one */
	case BUS_READY:
	case BUS_CONNECTING:
		if (strcmp(newip, bus->url.host) == 0 &&
		    newport == bus->url.port)
			return;
		snprintf(bus->why, sizeof(bus->why), "the master moved to "
		    "%s:%d", newip, newport);
		break;
	case BUS_IDLE:
		break;
	}
	bus_set_timer(bus->retry_ev, 0);
}

/* An error reply: -READONLY means the master was demoted; ask again. */
static void
bus_readonly(struct bus *bus, const char *err)
{
	if (bus->url.nsentinels == 0 || bus->ac == NULL ||
	    strstr(err, "READONLY") == NULL)
		return;
	snprintf(bus->why, sizeof(bus->why), "the server is read-only "
	    "(a replica now)");
	bus_set_timer(bus->retry_ev, 0);
}

/* The shard's state in /metrics, from the bus that represents it. */
static void
bus_metrics_up(struct bus *bus, int up)
{
	if (!bus->metrics)
		return;
	metrics_set(MG_REDIS_SHARD_UP0 + bus->shard, up);
	metrics_set(MG_REDIS_SHARD_DOWN0 + bus->shard, !up);
}

struct bus *
bus_new(struct event_base *base, const char *url, const char *password,
    const char *name, bus_event_cb *on_connect, bus_event_cb *on_disconnect,
    void *arg)
{
	struct bus *bus;

	if ((bus = calloc(1, sizeof(*bus))) == NULL)
		goto fail;
	if (bus_url_parse(url, &bus->url) == -1) {
		char shown[300];

		log_error("redis: invalid URL '%s'",
		    bus_url_redact(url, shown, sizeof(shown)));
		goto fail;
	}
	if (bus->url.password[0] == '\0' && password != NULL) {
		if (strlen(password) >= sizeof(bus->url.password)) {
			log_error("redis: the password is longer than %zu bytes",
			    sizeof(bus->url.password) - 1);
			goto fail;
		}
		memcpy(bus->url.password, password, strlen(password) + 1);
	}
	if (bus->url.path[0] != '\0')
		snprintf(bus->where, sizeof(bus->where), "unix:%s",
		    bus->url.path);
	else if (bus->url.nsentinels > 0)
		snprintf(bus->where, sizeof(bus->where), "master '%s'",
		    bus->url.master);
	else
		snprintf(bus->where, sizeof(bus->where), "%s:%d",
		    bus->url.host, bus->url.port);
	bus->base = base;
	bus->on_connect = on_connect;
	bus->on_disconnect = on_disconnect;
	bus->arg = arg;
	bus->backoff_ms = BUS_BACKOFF_MIN_MS;
	bus->name = strdup(name != NULL ? name : "bus");
	TAILQ_INIT(&bus->calls);
	bus->priority = -1;
	bus->retry_ev = evtimer_new(base, bus_retry_cb, bus);
	bus->timeout_ev = evtimer_new(base, bus_timeout_cb, bus);
	bus->deadline_ev = evtimer_new(base, bus_deadline_cb, bus);
	bus->watch_ev = evtimer_new(base, bus_watch_retry_cb, bus);
	bus->read_on_ev = event_new(base, -1, 0, bus_read_on_cb, bus);
	if (bus->name == NULL || bus->retry_ev == NULL ||
	    bus->timeout_ev == NULL || bus->deadline_ev == NULL ||
	    bus->watch_ev == NULL || bus->read_on_ev == NULL)
		goto fail;
	bus_connect(bus);
	return bus;
fail:
	bus_free(bus);
	return NULL;
}

/* Pending callbacks get NULL from hiredis, inside redisAsyncFree(). */
void
bus_free(struct bus *bus)
{
	redisAsyncContext *ac;
	struct bus_sub *s;

	if (bus == NULL)
		return;
	bus->freeing = 1;
	if (bus->read_on_ev != NULL)
		event_free(bus->read_on_ev);
	if (bus->ac != NULL)
		redisAsyncFree(bus->ac);
	bus->ac = NULL;
	if ((ac = bus->ask) != NULL) {
		bus->ask = NULL;
		redisAsyncFree(ac);
	}
	if ((ac = bus->watch) != NULL) {
		bus->watch = NULL;
		redisAsyncFree(ac);
	}
	if (bus->watch_ev != NULL)
		event_free(bus->watch_ev);
	if (bus->retry_ev != NULL)
		event_free(bus->retry_ev);
	if (bus->timeout_ev != NULL)
		event_free(bus->timeout_ev);
	if (bus->deadline_ev != NULL)
		event_free(bus->deadline_ev);
	while ((s = bus->subs) != NULL) {
		bus->subs = s->next;
		free(s);
	}
	if (bus->reading_on)
		return;		/* bus_read_on_cb() frees it */
	free(bus->name);
	free(bus);
}

int
bus_connected(const struct bus *bus)
{
	return bus != NULL && bus->state == BUS_READY && !bus->freeing;
}

void
bus_set_timeout(struct bus *bus, int ms)
{
	bus->timeout_ms = ms > 0 ? ms : 0;
}

void
bus_set_priority(struct bus *bus, int pri)
{
	bus->priority = pri;
	(void)event_priority_set(bus->retry_ev, pri);
	(void)event_priority_set(bus->timeout_ev, pri);
	(void)event_priority_set(bus->deadline_ev, pri);
	(void)event_priority_set(bus->read_on_ev, pri);
	if (bus->ac != NULL)
		bus_ac_priority(bus);
}

/*
 * The priority of the events of bus->ac, set while they are not active:
 * right after they are made.
 */
static void
bus_ac_priority(struct bus *bus)
{
	struct bus_ev *e = bus->ac->ev.data;

	(void)event_priority_set(e->rev, bus->priority);
	(void)event_priority_set(e->wev, bus->priority);
}

/* ---- commands ------------------------------------------------------------ */

/*
 * What hiredis will make of a formatted command ("*2\r\n$9\r\nSUBSCRIBE
 * \r\n..."): the same test as its own, so our callbacks match its lists.
 */
static enum bus_cmd_kind
bus_cmd_kind(const char *cmd, int len)
{
	const char *p, *end = cmd + len, *name;
	long argc, n;

	p = cmd + 1;
	if (len < 4 || cmd[0] != '*' || bus_parse_num(&p, 1L << 30, &argc) ==
	    -1 || end - p < 3 || p[0] != '\r' || p[2] != '$')
		return BUS_CMD_PLAIN;
	p += 3;
	if (bus_parse_num(&p, len, &n) == -1 || end - p < 2 + n)
		return BUS_CMD_PLAIN;
	name = p + 2;
	if (n > 0 && (name[0] == 'p' || name[0] == 'P')) {
		name++;
		n--;
	}
	if (n == 9 && strncasecmp(name, "subscribe", 9) == 0)
		return argc >= 2 ? BUS_CMD_SUB : BUS_CMD_PLAIN;
	if (n == 11 && strncasecmp(name, "unsubscribe", 11) == 0)
		return BUS_CMD_UNSUB;
	if (n == 7 && strncasecmp(name, "monitor", 7) == 0)
		return BUS_CMD_MONITOR;
	return BUS_CMD_PLAIN;
}

/* The number of arguments of a formatted command, the name included. */
static long
bus_cmd_argc(const char *cmd, int len)
{
	const char *p = cmd + 1;
	long argc;

	if (len < 2 || cmd[0] != '*' || bus_parse_num(&p, 1L << 30, &argc) ==
	    -1)
		return 0;
	return argc;
}

/* The next argument of a formatted command ("$<n>\r\n<n bytes>\r\n"):
 * 0 with *arg and *len set and *pp past it, -1 at the end or if garbled. */
static int
bus_cmd_arg(const char **pp, const char *end, const char **arg, long *len)
{
	const char *p = *pp;

	if (end - p < 4 || *p++ != '$' || bus_parse_num(&p, end - p, len) ==
	    -1 || end - p < *len + 4 || p[0] != '\r' || p[1] != '\n')
		return -1;
	*arg = p + 2;
	*pp = p + 2 + *len + 2;
	return 0;
}

/*
 * 1 for a command that waits on the server by design (XREAD(GROUP) with
 * BLOCK, BLPOP and friends): its reply time is no latency, so it is
 * counted but not timed.
 */
static int
bus_cmd_blocking(const char *cmd, int len)
{
	static const char *const bnames[] = { "BLPOP", "BRPOP", "BRPOPLPUSH",
	    "BLMOVE", "BLMPOP", "BZPOPMIN", "BZPOPMAX", "BZMPOP", "WAIT" };
	const char *p, *end = cmd + len, *arg;
	long argc, n;

	p = cmd + 1;
	if (len < 4 || cmd[0] != '*' || bus_parse_num(&p, 1L << 30, &argc) ==
	    -1 || end - p < 2 || p[0] != '\r' || p[1] != '\n')
		return 0;
	p += 2;
	if (bus_cmd_arg(&p, end, &arg, &n) == -1)
		return 0;
	for (size_t i = 0; i < sizeof(bnames) / sizeof(bnames[0]); i++)
		if ((size_t)n == strlen(bnames[i]) &&
		    strncasecmp(arg, bnames[i], n) == 0)
			return 1;
	if (!((n == 5 && strncasecmp(arg, "XREAD", 5) == 0) ||
	    (n == 10 && strncasecmp(arg, "XREADGROUP", 10) == 0)))
		return 0;
	/* Options come before STREAMS; keys and ids after it. */
	while (--argc > 0 && bus_cmd_arg(&p, end, &arg, &n) == 0) {
		if (n == 7 && strncasecmp(arg, "STREAMS", 7) == 0)
			return 0;
		if (n == 5 && strncasecmp(arg, "BLOCK", 5) == 0)
			return 1;
	}
	return 0;
}

/* A command that could not be sent: Redis is away. */
static void
bus_refused(void)
{
	metrics_count(MC_REDIS_COMMANDS, 1);
	metrics_count(MC_REDIS_UNAVAILABLE, 1);
}

static struct bus_sub *
bus_sub_get(struct bus *bus, bus_cb *cb, void *arg)
{
	struct bus_sub *s;

	for (s = bus->subs; s != NULL; s = s->next)
		if (s->cb == cb && s->arg == arg)
			return s;
	if ((s = calloc(1, sizeof(*s))) == NULL)
		return NULL;
	s->bus = bus;
	s->cb = cb;
	s->arg = arg;
	s->next = bus->subs;
	bus->subs = s;
	return s;
}

/*
 * A connection with subscriptions takes only (P)(UN)SUBSCRIBE: hiredis 0.14
 * can hand another command's reply to the wrong callback there.
 */
static int
bus_send_formatted(struct bus *bus, bus_cb *cb, void *arg, const char *cmd,
    int len)
{
	enum bus_cmd_kind kind = bus_cmd_kind(cmd, len);
	redisCallbackFn *fn = NULL;
	struct bus_call *call = NULL;
	struct bus_sub *sub;
	void *priv = NULL;
	int rc = -1;

	if (!bus_connected(bus) || kind == BUS_CMD_MONITOR)
		goto fail;
	if ((bus->ac->c.flags & REDIS_SUBSCRIBED) && kind == BUS_CMD_PLAIN)
		goto fail;
	if (kind == BUS_CMD_SUB && cb != NULL) {
		if ((sub = bus_sub_get(bus, cb, arg)) == NULL)
			goto fail;
		fn = bus_sub_cb;
		priv = sub;
		if (bus->timeout_ms > 0) {
			if ((call = calloc(1, sizeof(*call))) == NULL)
				goto fail;
			call->bus = bus;
			call->sent_us = util_mono_us();
			call->timed = 1;
			call->confirms = bus_cmd_argc(cmd, len) - 1;
		}
	} else if (kind == BUS_CMD_PLAIN) {
		/* Even without cb: its reply is counted and timed. */
		if ((call = calloc(1, sizeof(*call))) == NULL)
			goto fail;
		call->bus = bus;
		call->cb = cb;
		call->arg = arg;
		call->sent_us = util_mono_us();
		call->blocking = bus_cmd_blocking(cmd, len);
		call->timed = bus->timeout_ms > 0 && !call->blocking;
		fn = bus_call_cb;
		priv = call;
	}
	if (redisAsyncFormattedCommand(bus->ac, fn, priv, cmd, len) !=
	    REDIS_OK)
		goto fail;
	if (kind == BUS_CMD_PLAIN)
		metrics_count(MC_REDIS_COMMANDS, 1);
	if (call != NULL && call->timed) {
		TAILQ_INSERT_TAIL(&bus->calls, call, entry);
		if (!evtimer_pending(bus->deadline_ev, NULL))
			bus_set_timer(bus->deadline_ev, bus->timeout_ms);
	}
	call = NULL;
	rc = 0;
fail:
	if (rc == -1 && kind == BUS_CMD_PLAIN)
		bus_refused();
	free(call);
	return rc;
}

static int
bus_vcommand(struct bus *bus, bus_cb *cb, void *arg, const char *fmt,
    va_list ap)
{
	char *cmd = NULL;
	int len, rc;

	if (!bus_connected(bus)) {
		bus_refused();
		return -1;
	}
	if ((len = redisvFormatCommand(&cmd, fmt, ap)) < 0)
		return -1;
	rc = bus_send_formatted(bus, cb, arg, cmd, len);
	redisFreeCommand(cmd);
	return rc;
}

int
bus_command(struct bus *bus, bus_cb *cb, void *arg, const char *fmt, ...)
{
	va_list ap;
	int rc;

	va_start(ap, fmt);
	rc = bus_vcommand(bus, cb, arg, fmt, ap);
	va_end(ap);
	return rc;
}

void
bus_send(struct bus *bus, const char *fmt, ...)
{
	va_list ap;
	int rc;

	va_start(ap, fmt);
	rc = bus_vcommand(bus, NULL, NULL, fmt, ap);
	va_end(ap);
	if (rc == -1)
		bus_send_failed(bus, fmt);
	else
		bus->send_failing = 0;
}

void
bus_sendv(struct bus *bus, int argc, const char **argv,
    const size_t *argvlen)
{
	if (bus_commandv(bus, NULL, NULL, argc, argv, argvlen) == -1)
		bus_send_failed(bus, argc > 0 && argvlen == NULL ? argv[0] :
		    "command");
	else
		bus->send_failing = 0;
}

/*
 * What bus_send() could not send is lost; the first loss of a run of them
 * is a warning (named by the command's first word), the rest are debug, so
 * an outage does not flood the log.
 */
static void
bus_send_failed(struct bus *bus, const char *cmd)
{
	int n = (int)strcspn(cmd, " ");

	if (n > 32)
		n = 32;
	if (!bus->send_failing)
		log_warnx("redis %s: %.*s not sent: Redis is away; further "
		    "losses are logged at debug level", bus->name, n, cmd);
	else
		log_debug("redis %s: %.*s not sent: Redis is away", bus->name,
		    n, cmd);
	bus->send_failing = 1;
}

/* v in decimal at p; the number of digits. */
static size_t
bus_put_size(char *p, size_t v)
{
	char tmp[24];
	size_t n = 0, i;

	do {
		tmp[n++] = (char)('0' + v % 10);
		v /= 10;
	} while (v > 0);
	for (i = 0; i < n; i++)
		p[i] = tmp[n - 1 - i];
	return n;
}

/*
 * bus_commandv()'s formatting. hiredis' redisFormatCommandArgv() formats
 * each argument's header with sprintf(), and a chat message is one XADD
 * of 16 arguments, a hub's batch one EVAL of thousands: in rooms of 2, the
 * workers' printf family took 2.2 % of the samples of the workers and the
 * hub together, and 0.7 % with this.
 */
int
bus_format_argv(char **out, int argc, const char **argv,
    const size_t *argvlen)
{
	char digits[24], *p;
	size_t total, i;

	*out = NULL;
	if (argc < 0)
		return -1;
	total = 1 + bus_put_size(digits, (size_t)argc) + 2;
	for (i = 0; i < (size_t)argc; i++) {
		size_t len = argvlen != NULL ? argvlen[i] : strlen(argv[i]);

		if (len > (size_t)INT_MAX - total)
			return -1;
		total += 1 + bus_put_size(digits, len) + 2 + len + 2;
		if (total > (size_t)INT_MAX)
			return -1;
	}
	if ((p = malloc(total + 1)) == NULL)
		return -1;
	*out = p;
	*p++ = '*';
	p += bus_put_size(p, (size_t)argc);
	*p++ = '\r';
	*p++ = '\n';
	for (i = 0; i < (size_t)argc; i++) {
		size_t len = argvlen != NULL ? argvlen[i] : strlen(argv[i]);

		*p++ = '$';
		p += bus_put_size(p, len);
		*p++ = '\r';
		*p++ = '\n';
		memcpy(p, argv[i], len);
		p += len;
		*p++ = '\r';
		*p++ = '\n';
	}
	*p = '\0';
	return (int)total;
}

int
bus_commandv(struct bus *bus, bus_cb *cb, void *arg, int argc,
    const char **argv, const size_t *argvlen)
{
	char *cmd = NULL;
	int len, rc;

	if (!bus_connected(bus) || argc < 1) {
		bus_refused();
		return -1;
	}
	if ((len = bus_format_argv(&cmd, argc, argv, argvlen)) < 0)
		return -1;
	rc = bus_send_formatted(bus, cb, arg, cmd, len);
	free(cmd);
	return rc;
}

/* r is NULL when the connection went before the reply came. */
static void
bus_call_cb(redisAsyncContext *ac, void *r, void *privdata)
{
	struct bus_call *call = privdata;
	const redisReply *reply = r;

	(void)ac;
	if (call->timed)
		TAILQ_REMOVE(&call->bus->calls, call, entry);
	if (reply == NULL)
		metrics_count(MC_REDIS_UNAVAILABLE, 1);
	else {
		if (reply->type == REDIS_REPLY_ERROR) {
			metrics_count(MC_REDIS_ERROR_REPLIES, 1);
			bus_readonly(call->bus, reply->str);
		}
		if (!call->blocking)
			metrics_redis_observe(util_mono_us() -
			    call->sent_us);
	}
	if (call->cb != NULL)
		call->cb(call->bus, r, call->arg);
	free(call);
}

/* hiredis gives NULL once per channel when the connection goes; the owner
 * hears it once per connection. */
static void
bus_sub_cb(redisAsyncContext *ac, void *r, void *privdata)
{
	struct bus_sub *s = privdata;

	(void)ac;
	if (r == NULL) {
		if (s->lost_gen == s->bus->gen)
			return;
		s->lost_gen = s->bus->gen;
	} else {
		bus_read_on(s->bus);	/* before s->cb: see there */
		bus_sub_confirmed(s->bus, r);
	}
	s->cb(s->bus, r, s->arg);
}

/*
 * A reply on a subscribed connection: a ["(p)subscribe", channel, count]
 * confirms one channel of the oldest (P)SUBSCRIBE still waiting (Redis
 * confirms in order); messages and unsubscriptions are not timed.
 */
static void
bus_sub_confirmed(struct bus *bus, const redisReply *r)
{
	struct bus_call *call;
	const redisReply *kind;

	if (r->type != REDIS_REPLY_ARRAY || r->elements < 1)
		return;
	kind = r->element[0];
	if (kind->type != REDIS_REPLY_STRING ||
	    (strcasecmp(kind->str, "subscribe") != 0 &&
	    strcasecmp(kind->str, "psubscribe") != 0))
		return;
	TAILQ_FOREACH(call, &bus->calls, entry)
		if (call->confirms > 0)
			break;
	if (call != NULL && --call->confirms == 0) {
		TAILQ_REMOVE(&bus->calls, call, entry);
		free(call);
	}
}

/*
 * The connection is gone: hiredis has called back every command, so what
 * is left timed is (P)SUBSCRIBEs, which only the bus holds.
 */
static void
bus_calls_drop(struct bus *bus)
{
	struct bus_call *call;

	while ((call = TAILQ_FIRST(&bus->calls)) != NULL) {
		TAILQ_REMOVE(&bus->calls, call, entry);
		call->timed = 0;
		if (call->confirms > 0)
			free(call);
	}
}

/*
 * Reading on. hiredis reads one 16 KB buffer each time the socket is
 * readable (redisAsyncHandleRead()). A worker's subscription under load
 * holds far more (hundreds of KB: a room's events for many sockets), and
 * the worker writes what a pass delivered when the pass ends
 * (conn_flush_pending): 16 KB a pass means about one frame per socket per
 * write. So the first message of a pass activates read_on_ev, which
 * libevent runs after the adapter's read and, activated before the
 * message's callback makes any output, before the pass's flush: it reads
 * on while the socket holds more, up to BUS_READ_ON reads, and the flush
 * then writes each socket's frames of all of them at once. What is left
 * waits for the next pass, so a flood cannot hold the loop. Only
 * subscriptions read on: a reply to a command is one caller's, and reading
 * on there measured no better.
 */
static void
bus_read_on(struct bus *bus)
{
#ifdef FIONREAD
	if (bus->read_on_active || bus->reading_on)
		return;
	bus->read_on_active = 1;
	event_active(bus->read_on_ev, EV_READ, 0);
#else
	(void)bus;
#endif
}

static void
bus_read_on_cb(evutil_socket_t fd, short what, void *arg)
{
	struct bus *bus = arg;
	redisAsyncContext *ac = bus->ac;
	unsigned gen = bus->gen;
	int i;

	(void)fd;
	(void)what;
	bus->read_on_active = 0;
	if (ac == NULL)
		return;
	bus->reading_on = 1;
	for (i = 0; i < BUS_READ_ON; i++) {
#ifdef FIONREAD
		int n;

		if (ioctl(ac->c.fd, FIONREAD, &n) == -1 || n <= 0)
			break;
#endif
		/* Its callbacks may close the context or free the bus. */
		redisAsyncHandleRead(ac);
		if (bus->freeing || bus->ac != ac || bus->gen != gen)
			break;
	}
	bus->reading_on = 0;
	if (bus->freeing) {
		free(bus->name);
		free(bus);
	}
}

/* ---- replies ------------------------------------------------------------- */

enum bus_reply_type
bus_reply_type(const struct bus_reply *r)
{
	const redisReply *rr = (const redisReply *)r;

	if (rr == NULL)
		return BUS_NIL;
	switch (rr->type) {
	case REDIS_REPLY_STRING:
	case REDIS_REPLY_STATUS:
		return BUS_STRING;
	case REDIS_REPLY_INTEGER:
		return BUS_INTEGER;
	case REDIS_REPLY_ARRAY:
		return BUS_ARRAY;
	case REDIS_REPLY_ERROR:
		return BUS_ERROR;
	default:
		return BUS_NIL;
	}
}

long long
bus_reply_integer(const struct bus_reply *r)
{
	const redisReply *rr = (const redisReply *)r;

	return rr != NULL && rr->type == REDIS_REPLY_INTEGER ? rr->integer : 0;
}

const char *
bus_reply_str(const struct bus_reply *r, size_t *len)
{
	const redisReply *rr = (const redisReply *)r;
	enum bus_reply_type t = bus_reply_type(r);

	if (t != BUS_STRING && t != BUS_ERROR) {
		if (len != NULL)
			*len = 0;
		return NULL;
	}
	if (len != NULL)
		*len = rr->len;
	return rr->str;
}

size_t
bus_reply_elements(const struct bus_reply *r)
{
	const redisReply *rr = (const redisReply *)r;

	return rr != NULL && rr->type == REDIS_REPLY_ARRAY ? rr->elements : 0;
}

struct bus_reply *
bus_reply_element(const struct bus_reply *r, size_t i)
{
	const redisReply *rr = (const redisReply *)r;

	if (i >= bus_reply_elements(r))
		return NULL;
	return (struct bus_reply *)rr->element[i];
}

/* ---- durability check (SPEC §8) ------------------------------------------ */

static void	bus_aof_cb(struct bus *, struct bus_reply *, void *);

/*
 * 0: not asked yet, or the connection went before the answer (ask on the
 * next connect); 1: asked, waiting; 2: answered, or the answer cannot be
 * had (INFO renamed or refused). Per process and shard: one warning at
 * most each.
 */
static int bus_aof_state[BUS_SHARDS_MAX];

void
bus_aof_check(struct bus *bus, void *arg)
{
	(void)arg;
	if (bus_aof_state[bus->shard] != 0)
		return;
	if (bus_command(bus, bus_aof_cb, NULL, "INFO persistence") == -1)
		return;
	bus_aof_state[bus->shard] = 1;
}

/*
 * The INFO section is "key:value\r\n" lines; aof_enabled is 0 or 1. An
 * error (INFO renamed away by rename-command, refused by an ACL) or a reply
 * without the field is no evidence either way: debug only.
 */
static void
bus_aof_cb(struct bus *bus, struct bus_reply *reply, void *arg)
{
	const char	*s, *p;

	(void)arg;
	if (reply == NULL) {
		bus_aof_state[bus->shard] = 0;
		return;
	}
	bus_aof_state[bus->shard] = 2;
	if (bus_reply_type(reply) != BUS_STRING ||
	    (s = bus_reply_str(reply, NULL)) == NULL) {
		log_debug("%s: INFO persistence refused: AOF not checked",
		    bus->where);
		return;
	}
	for (p = s; (p = strstr(p, "aof_enabled:")) != NULL; p++) {
		if (p != s && p[-1] != '\n')
			continue;
		if (p[strlen("aof_enabled:")] == '0')
			log_warnx("Redis at %s has no AOF (appendonly no): "
			    "chat messages accepted but not yet stored in "
			    "PostgreSQL are lost if Redis crashes (README, "
			    "Durability)", bus->where);
		return;
	}
	log_debug("%s: INFO persistence has no aof_enabled: AOF not checked",
	    bus->where);
}

/* ---- shards -------------------------------------------------------------- */

struct bus_shards {
	int		 n;
	struct bus	*bus[BUS_SHARDS_MAX];
};

int
bus_urls_entry(const char *urls, int i, char *buf, size_t len)
{
	const char *p = urls;
	size_t n;

	for (;;) {
		p += strspn(p, " \t");
		if (*p == '\0')
			return -1;
		n = strcspn(p, " \t");
		if (i-- == 0)
			break;
		p += n;
	}
	if (n >= len)
		return -1;
	memcpy(buf, p, n);
	buf[n] = '\0';
	return 0;
}

int
bus_urls_count(const char *urls)
{
	char url[1024];
	int n;

	if (urls == NULL)
		return 0;
	for (n = 0; bus_urls_entry(urls, n, url, sizeof(url)) == 0; n++)
		if (n == BUS_SHARDS_MAX || !bus_url_valid(url))
			return 0;
	return n;
}

struct bus_shards *
bus_shards_new(struct event_base *base, const char *urls,
    const char *password, const char *name, bus_event_cb *on_connect,
    bus_event_cb *on_disconnect, void *arg, int metrics)
{
	struct bus_shards *set;
	char url[1024], shown[1100], sname[64];
	int n;

	if ((n = bus_urls_count(urls)) == 0) {
		log_error("redis: invalid redis_url '%s'",
		    bus_url_redact(urls, shown, sizeof(shown)));
		return NULL;
	}
	if ((set = calloc(1, sizeof(*set))) == NULL)
		return NULL;
	for (set->n = 0; set->n < n; set->n++) {
		if (n == 1)
			snprintf(sname, sizeof(sname), "%s", name);
		else
			snprintf(sname, sizeof(sname), "%s %d", name, set->n);
		if (bus_urls_entry(urls, set->n, url, sizeof(url)) == -1 ||
		    (set->bus[set->n] = bus_new(base, url, password, sname,
		    on_connect, on_disconnect, arg)) == NULL)
			goto fail;
		set->bus[set->n]->shard = set->n;
		if (metrics)
			bus_show_in_metrics(set->bus[set->n]);
	}
	return set;
fail:
	bus_shards_free(set);
	return NULL;
}

void
bus_shards_free(struct bus_shards *set)
{
	if (set == NULL)
		return;
	for (int i = 0; i < set->n; i++)
		bus_free(set->bus[i]);
	free(set);
}

int
bus_shards_count(const struct bus_shards *set)
{
	return set->n;
}

struct bus *
bus_shards_at(const struct bus_shards *set, int i)
{
	return i >= 0 && i < set->n ? set->bus[i] : NULL;
}

int
bus_shard_of_key(const char *key, int n)
{
	return n <= 1 ? 0 : (int)(msg_crc16(key, strlen(key)) % (unsigned)n);
}

struct bus *
bus_shards_key(const struct bus_shards *set, const char *key)
{
	return set->bus[bus_shard_of_key(key, set->n)];
}

struct bus *
bus_shards_partition(const struct bus_shards *set, int p)
{
	return set->bus[(p < 0 ? 0 : p) % set->n];
}

void
bus_shards_set_timeout(struct bus_shards *set, int ms)
{
	for (int i = 0; i < set->n; i++)
		bus_set_timeout(set->bus[i], ms);
}

void
bus_shards_set_priority(struct bus_shards *set, int pri)
{
	for (int i = 0; i < set->n; i++)
		bus_set_priority(set->bus[i], pri);
}

int
bus_shards_connected(const struct bus_shards *set)
{
	for (int i = 0; i < set->n; i++)
		if (!bus_connected(set->bus[i]))
			return 0;
	return 1;
}

void
bus_show_in_metrics(struct bus *bus)
{
	bus->metrics = 1;
	bus_metrics_up(bus, bus->state == BUS_READY);
}

int
bus_shard(const struct bus *bus)
{
	return bus->shard;
}
