/*
 * worker: the entry point of a worker process. Builds its own event loop
 * after fork(), accepts on the listening socket it shares with its
 * siblings, and owns everything the connections use: the PostgreSQL pool,
 * the Redis bus, the static files and the stats. SIGTERM stops accepting,
 * lets requests in flight finish, then exits.
 */
#include "config.h"

#include <sys/types.h>
#include <sys/socket.h>

#include <netinet/in.h>
#include <netinet/tcp.h>

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>

#include "common/bus.h"
#include "common/conf.h"
#include "common/db.h"
#include "common/log.h"
#include "common/metrics.h"
#include "common/proc.h"
#include "common/stats.h"
#include "common/util.h"
#include "workers/chat.h"
#include "workers/conn.h"
#include "workers/passwd.h"
#include "workers/static.h"
#include "workers/worker.h"

#define WORKER_STOP_GRACE_MS	5000	/* requests in flight get this long */
#define WORKER_GATE_MS		3000	/* accept after this even if PostgreSQL
					 * or Redis is still away (then 503) */
#define WORKER_ACCEPT_BATCH	4	/* connections taken per wake-up */

static void	worker_accept_cb(evutil_socket_t, short, void *);
static int	worker_accept_one(struct worker *, int);
static void	worker_signal_cb(evutil_socket_t, short, void *);
static void	worker_cron_cb(evutil_socket_t, short, void *);
static void	worker_gate_cb(evutil_socket_t, short, void *);
static void	worker_flush_cb(evutil_socket_t, short, void *);
static void	worker_stop(struct worker *);
static void	worker_free(struct worker *);

int
worker_main(const struct proc_ctx *ctx)
{
	static struct worker w;
	struct timeval one = { 1, 0 };
	char shown[CONF_STR_MAX];
	struct event_config *cfg;

	w.id = ctx->id;
	w.ctx = ctx;
	w.conf = ctx->conf;
	w.parent = getppid();
	TAILQ_INIT(&w.conns);
	TAILQ_INIT(&w.pending);
	w.stats.role = "worker";
	w.stats.id = w.id;
	w.stats.started_ms = util_mono_ms();
	if (metrics_attach(METRICS_WORKER, w.id) == -1)
		log_warnx("no metrics slot free: /metrics will miss this "
		    "worker");

	if ((cfg = event_config_new()) == NULL ||
	    event_config_set_max_dispatch_interval(cfg, NULL, WORKER_SLICE,
	    WORKER_PRI_LIVE + 1) == -1 ||
	    (w.base = event_base_new_with_config(cfg)) == NULL ||
	    event_base_priority_init(w.base, WORKER_NPRI) == -1)
		fatalx("cannot set up the event loop");
	event_config_free(cfg);
	/* Never added: conn.c activates it once per pass (conn_pend). */
	if ((w.flush = event_new(w.base, -1, 0, worker_flush_cb, &w)) == NULL)
		fatalx("cannot set up the write flush");
	if ((w.db = db_pool_new(w.base, w.conf->database_url,
	    w.conf->db_pool_size, w.conf->backend_timeout * 1000)) == NULL)
		fatalx("cannot set up the PostgreSQL pool");
	db_pool_prepare(w.db, w.conf->db_prepare);
	if ((w.shards = bus_shards_new(w.base, w.conf->redis_url,
	    w.conf->redis_password, "commands", bus_aof_check,
	    NULL, &w, 1)) == NULL)
		fatalx("redis_url: cannot use '%s'",
		    bus_url_redact(w.conf->redis_url, shown, sizeof(shown)));
	w.redis = bus_shards_at(w.shards, 0);
	bus_shards_set_timeout(w.shards, w.conf->backend_timeout * 1000);
	/* No timer of its own: worker_cron_cb ticks it. */
	if ((w.stats_pub = stats_pub_new(NULL, w.redis, w.conf,
	    &w.stats)) == NULL)
		fatalx("cannot set up stats");
	if ((w.passwd = passwd_pool_new(w.base,
	    w.conf->scrypt_threads)) == NULL)
		fatalx("cannot start the password hashing threads");
	if ((w.chat = chat_new(&w)) == NULL)
		fatalx("cannot set up chat");
	w.web = static_load(w.conf->web_dir);

	/* Added by worker_gate_cb once PostgreSQL and Redis are up. */
	w.accept_ev = event_new(w.base, ctx->listen_fd, EV_READ | EV_PERSIST,
	    worker_accept_cb, &w);
	if (w.accept_ev == NULL)
		fatalx("cannot watch the shared listening socket");

	w.sig_term = evsignal_new(w.base, SIGTERM, worker_signal_cb, &w);
	w.sig_int = evsignal_new(w.base, SIGINT, worker_signal_cb, &w);
	w.sig_usr1 = evsignal_new(w.base, SIGUSR1, worker_signal_cb, &w);
	w.sig_hup = evsignal_new(w.base, SIGHUP, worker_signal_cb, &w);
	w.cron = event_new(w.base, -1, EV_PERSIST, worker_cron_cb, &w);
	if (w.cron != NULL)
		(void)event_priority_set(w.cron, WORKER_PRI_LIVE);
	w.gate = event_new(w.base, -1, EV_PERSIST, worker_gate_cb, &w);
	w.gate_deadline = util_mono_ms() + WORKER_GATE_MS;
	if (w.gate == NULL || event_add(w.gate, &(struct timeval){ 0, 10000 })
	    == -1 || w.sig_term == NULL || w.sig_int == NULL || w.sig_usr1 == NULL ||
	    w.sig_hup == NULL || w.cron == NULL ||
	    evsignal_add(w.sig_term, NULL) == -1 ||
	    evsignal_add(w.sig_int, NULL) == -1 ||
	    evsignal_add(w.sig_usr1, NULL) == -1 ||
	    evsignal_add(w.sig_hup, NULL) == -1 ||
	    event_add(w.cron, &one) == -1)
		fatalx("cannot set up signal and timer events");

	event_base_dispatch(w.base);
	log_info("exiting");
	stats_pub_remove(w.stats_pub);
	worker_free(&w);
	metrics_detach();
	return GC_EXIT_OK;
}

void
worker_conn_closed(struct worker *w)
{
	metrics_set(MG_CONNECTIONS, (int64_t)w->stats.connections);
	if (w->stopping && TAILQ_EMPTY(&w->conns))
		event_base_loopexit(w->base, NULL);
}

/*
 * Every worker waits on the one listening socket, and a new connection
 * wakes them all. Taking at most WORKER_ACCEPT_BATCH per wake-up, rather
 * than all that are pending (what evconnlistener does), leaves the rest
 * of a burst to the siblings: a worker busy with its own loop pass takes
 * fewer, an idle one more, and a burst no longer lands on whichever woke
 * first. What is left makes the socket readable again at once.
 */
static void
worker_accept_cb(evutil_socket_t lfd, short what, void *arg)
{
	struct worker *w = arg;
	int i;

	(void)what;
	for (i = 0; i < WORKER_ACCEPT_BATCH && !w->stopping; i++)
		if (worker_accept_one(w, lfd) == -1)
			break;
}

/* 0: one taken (or aborted by the peer); -1: none left, or paused. */
static int
worker_accept_one(struct worker *w, int lfd)
{
	struct sockaddr_storage ss;
	socklen_t sslen = sizeof(ss);
	int fd, one = 1;

#ifdef HAVE_ACCEPT4
	fd = accept4(lfd, (struct sockaddr *)&ss, &sslen,
	    SOCK_NONBLOCK | SOCK_CLOEXEC);
#else
	if ((fd = accept(lfd, (struct sockaddr *)&ss, &sslen)) != -1 &&
	    (evutil_make_socket_nonblocking(fd) == -1 ||
	    evutil_make_socket_closeonexec(fd) == -1)) {
		log_warn("accept: cannot set up the new socket");
		close(fd);
		return 0;
	}
#endif
	if (fd == -1) {
		switch (errno) {
		case EAGAIN:
#if EWOULDBLOCK != EAGAIN
		case EWOULDBLOCK:
#endif
		case EINTR:
			return -1;
		case ECONNABORTED:
			return 0;
		default:
			/* Out of descriptors, say: pause, do not spin. */
			log_warn("accept() failed; pausing accepts for a "
			    "second");
			event_del(w->accept_ev); /* worker_cron_cb re-adds */
			return -1;
		}
	}
	/*
	 * Responses and frames are written whole; Nagle would hold back a
	 * small one until the peer's delayed ACK (up to 40 ms a message).
	 */
	(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	conn_new(w, fd, (struct sockaddr *)&ss, (int)sslen);
	/* conn.c counts connections; the metrics slot shows the count. */
	metrics_set(MG_CONNECTIONS, (int64_t)w->stats.connections);
	return 0;
}

static void
worker_signal_cb(evutil_socket_t sig, short what, void *arg)
{
	struct worker *w = arg;

	(void)what;
	switch (sig) {
	case SIGTERM:
	case SIGINT:
		worker_stop(w);
		break;
	case SIGUSR1:
		log_reopen();
		alog_reopen();
		log_info("log file reopened");
		break;
	default:
		break;		/* HUP is the master's business */
	}
}

/*
 * Stop accepting, close connections that sit between requests, and let
 * the others finish their current request (they are answered with
 * Connection: close); exit when none is left or the grace time is over.
 */
static void
worker_stop(struct worker *w)
{
	struct conn *c, *next;

	if (w->stopping)
		return;
	log_info("stopping: %zu connections to finish",
	    (size_t)w->stats.connections);
	w->stopping = 1;
	w->stop_deadline = util_mono_ms() + WORKER_STOP_GRACE_MS;
	if (w->accept_ev != NULL) {
		event_free(w->accept_ev);
		w->accept_ev = NULL;
	}
	for (c = TAILQ_FIRST(&w->conns); c != NULL; c = next) {
		next = TAILQ_NEXT(c, entry);
		if (conn_idle(c))
			conn_close(c);
	}
	chat_stop(w->chat);
	if (TAILQ_EMPTY(&w->conns))
		event_base_loopexit(w->base, NULL);
}

static void
worker_cron_cb(evutil_socket_t fd, short what, void *arg)
{
	struct worker *w = arg;
	struct conn *c;

	(void)fd;
	(void)what;
	/* An orphan (the master was killed) has no one to report to. */
	if (getppid() != w->parent) {
		log_warnx("the master is gone; exiting");
		worker_stop(w);
		w->stop_deadline = util_mono_ms();
	}
	if (w->accept_ev != NULL && w->ready && !w->stopping &&
	    !event_pending(w->accept_ev, EV_READ, NULL))
		event_add(w->accept_ev, NULL);
	if (w->stopping && util_mono_ms() >= w->stop_deadline) {
		TAILQ_FOREACH(c, &w->conns, entry)
			conn_close(c);
		event_base_loopexit(w->base, NULL);
	}
	stats_pub_tick(w->stats_pub);
	chat_cron(w->chat);
}

/*
 * Accept only once PostgreSQL and Redis are connected, so that a worker
 * started by a reload or a respawn does not answer 503 in its first
 * milliseconds; connections wait in the shared backlog meanwhile, or are
 * taken by a sibling. After WORKER_GATE_MS it serves anyway: a dependency
 * that is really down gets its 503s.
 */
static void
worker_gate_cb(evutil_socket_t fd, short what, void *arg)
{
	struct worker *w = arg;
	int up;

	(void)fd;
	(void)what;
	if (w->stopping)
		return;
	/* The heartbeat first: the hub takes a worker whose connections
	 * register before its first heartbeat for dead (SWEEP_GRACE_MS). */
	up = db_pool_up(w->db) && bus_shards_connected(w->shards) &&
	    chat_beating(w->chat);
	if (!up && util_mono_ms() < w->gate_deadline)
		return;
	event_del(w->gate);
	w->ready = 1;
	if (event_add(w->accept_ev, NULL) == -1)
		fatalx("cannot watch the shared listening socket");
	proc_ready(w->ctx);
	if (up)
		log_info("serving on %s", w->conf->listen);
	else
		log_warnx("serving on %s without %s", w->conf->listen,
		    !db_pool_up(w->db) ? "PostgreSQL" :
		    bus_shards_connected(w->shards) ? "its heartbeat" :
		    "Redis");
}

/* Before the loop polls again: the WebSockets written to in this pass. */
static void
worker_flush_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	conn_flush_pending(arg);
}

/* Free everything, so that leak reports of debug builds mean something. */
static void
worker_free(struct worker *w)
{
	struct conn *c;

	/* No timer may run into what is freed below. */
	event_del(w->gate);
	event_del(w->cron);
	TAILQ_FOREACH(c, &w->conns, entry)
		conn_close(c);
	if (w->accept_ev != NULL)
		event_free(w->accept_ev);
	stats_pub_free(w->stats_pub);
	chat_free(w->chat);
	/* Pending queries and commands are answered with errors here... */
	bus_shards_free(w->shards);
	db_pool_free(w->db);
	passwd_pool_free(w->passwd);
	/* ...and the deferred frees they and the closes scheduled run now. */
	event_base_loop(w->base, EVLOOP_NONBLOCK);
	static_free(w->web);
	event_free(w->sig_term);
	event_free(w->sig_int);
	event_free(w->sig_usr1);
	event_free(w->sig_hup);
	event_free(w->cron);
	event_free(w->gate);
	event_free(w->flush);
	event_base_free(w->base);
}
