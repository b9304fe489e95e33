/*
 * db: the PostgreSQL connection pool of the event loops, and the blocking
 * schema migration of the migration child. The pool owns its libpq
 * connections, their socket events and timers, and the queue of queries
 * waiting for an idle connection. The only includer of libpq-fe.h.
 */
#include "config.h"

#include <sys/queue.h>

#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <libpq-fe.h>

#include "common/db.h"
#include "common/log.h"
#include "common/metrics.h"
#include "common/util.h"

#define DB_QUEUE_MAX		10000	/* queued queries per pool */
#define DB_BACKOFF_MIN_MS	100
#define DB_BACKOFF_MAX_MS	2000
#define DB_CONNECT_TIMEOUT_MS	5000	/* libpq has none for PQconnectPoll */
#define DB_APP_NAME		"gochat"
#define DB_STMT_MAX		256	/* statement names per connection */
#define DB_STMT_SLOTS		512	/* its hash table: 2^n, > DB_STMT_MAX */
#define DB_SESSION_MAX		256	/* bytes of db_pool_session()'s SQL */

/* "gochat" then 0x0001: the advisory lock that serialises migrators
 * (taken per transaction: see db_migrate_begin()). */
#define DB_MIGRATE_LOCK		"7453285208284200961"
#define DB_MIGRATE_CONNECT_S	"10"

enum db_conn_state {
	DB_CONN_DOWN,		/* no connection; the retry timer is set */
	DB_CONN_CONNECTING,	/* PQconnectPoll() under way */
	DB_CONN_SETUP,		/* our own statement running: SET or ROLLBACK */
	DB_CONN_IDLE,
	DB_CONN_PINNED,		/* a transaction's, between its statements */
	DB_CONN_BUSY		/* running job */
};

enum db_job_kind {
	DB_JOB_QUERY,		/* db_query(): the first idle connection */
	DB_JOB_BEGIN,		/* the first idle connection, pinned by it */
	DB_JOB_TXN,		/* its transaction's connection */
	DB_JOB_COMMIT		/* the same; ends and frees the transaction */
};

struct db_job {
	TAILQ_ENTRY(db_job) entry;
	enum db_job_kind kind;
	struct db_txn	*txn;		/* all kinds but DB_JOB_QUERY */
	db_cb		*cb;
	void		*arg;
	int64_t		 deadline;	/* monotonic ms; 0: none */
	int64_t		 start_us;	/* db_query(), for metrics */
	int		 nparams;
	int		 retried;	/* sent again after a stale plan */
	const char	**params;	/* all in the job's own allocation */
	const char	*sql;
};
TAILQ_HEAD(db_jobq, db_job);

/*
 * A statement one connection has prepared, or is preparing, as "gc<num>",
 * keyed by its text. It lives as long as the session it was prepared in:
 * db_conn_close() forgets them all.
 */
struct db_stmt {
	uint32_t	 hash;		/* of sql */
	int		 num;		/* its name; 0: out of names, unnamed */
	int		 prepared;	/* the server has gc<num> */
	char		 sql[];
};

struct db_conn {
	struct db_pool	*pool;
	int		 id;
	enum db_conn_state state;
	PGconn		*pg;
	int		 fd;		/* the fd rev and wev watch */
	struct event	*rev, *wev;
	struct event	*timer;		/* retry, connect or query deadline */
	struct db_job	*job;
	struct db_txn	*txn;		/* pinned to it, or NULL */
	PGresult	*res;		/* what job will be given */
	struct db_stmt	**stmts;	/* DB_STMT_SLOTS open-addressed slots,
					 * NULL until the first statement */
	int		 nnames;	/* gc1..gc<nnames> given out */
	struct db_stmt	*preparing;	/* job's, while its PREPARE runs */
	struct db_stmt	*stmt;		/* job's, while it runs prepared */
	int		 flushing;	/* PQflush() said 1: want EV_WRITE */
	int		 backoff_ms;
	int		 failed;	/* the last attempt failed or broke */
	char		 why[256];	/* the last failure, for the log */
};

struct db_pool {
	struct event_base *base;
	char		*conninfo;
	int		 size;
	int		 timeout_ms;
	struct db_conn	*conns;
	struct db_jobq	 queue;
	int		 queued;
	struct event	*kick;		/* deferred dispatch after db_query() */
	struct event	*qtimer;	/* expiry of queued jobs */
	int		 down;		/* we said so in the log */
	int		 ever_up;
	int		 freeing;
	int		 unnamed;	/* never prepare: db_pool_prepare() */
	char		*session;	/* db_pool_session(), or NULL */
};

struct db_result {
	PGresult	*pg;
};

/* Owned by its caller from db_begin() to db_commit() or db_rollback(). */
struct db_txn {
	struct db_pool	*pool;
	struct db_conn	*conn;		/* pinned; NULL before BEGIN runs and
					 * once broken */
	int		 broken;	/* statements and COMMIT refused */
};

static void	db_oneline(const char *, char *, size_t);
static void	db_notice(void *, const char *);
static struct db_job *db_job_new(const char *, int, const char *const *,
		    db_cb *, void *, int64_t);
static void	db_job_finish(struct db_job *, PGresult *);
static void	db_conn_connect(struct db_conn *);
static int	db_conn_watch(struct db_conn *, short);
static void	db_conn_poll(struct db_conn *);
static void	db_conn_connected(struct db_conn *);
static void	db_conn_up(struct db_conn *);
static void	db_conn_send(struct db_conn *, struct db_job *);
static int	db_conn_exec(struct db_conn *, struct db_job *);
static int	db_conn_prepared(struct db_conn *, PGresult *);
static struct db_stmt *db_stmt_get(struct db_conn *, const struct db_job *);
static void	db_stmt_rename(struct db_conn *, struct db_stmt *);
static void	db_stmt_free_all(struct db_conn *);
static int	db_conn_flush(struct db_conn *);
static void	db_conn_io(struct db_conn *, short);
static int	db_conn_keep(struct db_conn *, PGresult *);
static void	db_conn_done(struct db_conn *);
static void	db_conn_rollback(struct db_conn *);
static void	db_conn_send_rollback(struct db_conn *);
static void	db_conn_unpin(struct db_conn *);
static void	db_conn_idle_read(struct db_conn *);
static void	db_conn_close(struct db_conn *);
static void	db_conn_broken(struct db_conn *, const char *);
static void	db_conn_reset(struct db_conn *);
static void	db_conn_retry(struct db_conn *, int);
static void	db_conn_io_cb(evutil_socket_t, short, void *);
static void	db_conn_timer_cb(evutil_socket_t, short, void *);
static int	db_pool_is_down(const struct db_pool *);
static void	db_pool_check_down(struct db_pool *, const char *);
static void	db_pool_dispatch(struct db_pool *);
static struct db_conn *db_pool_idle(struct db_pool *);
static void	db_pool_enqueue(struct db_pool *, struct db_job *);
static int	db_txn_queue(struct db_txn *, enum db_job_kind, const char *,
		    int, const char *const *, db_cb *, void *);
static void	db_txn_end(struct db_txn *);
static void	db_pool_arm(struct db_pool *);
static void	db_pool_kick_cb(evutil_socket_t, short, void *);
static void	db_pool_qtimer_cb(evutil_socket_t, short, void *);
static int	db_lost_sqlstate(const PGresult *);
static void	db_set_timer(struct event *, int64_t);
static int	db_migrate_exec(PGconn *, const char *, const char *, char *,
		    size_t);
static void	db_migrate_error(const PGresult *, PGconn *, const char *,
		    const char *, char *, size_t);
static int	db_migrate_list(const char *, char ***, size_t *, char *,
		    size_t);
static char	*db_migrate_read(const char *, char *, size_t);
static int	db_migrate_applied(PGconn *, const char *, char *, size_t);
static int	db_migrate_begin(PGconn *, const char *, char *, size_t);
static int	db_migrate_one(PGconn *, const char *, const char *, char *,
		    size_t);
static int	db_migrate_cmp(const void *, const void *);
static void	db_migrate_quiet(void *, const char *);

/* libpq's messages span lines; the log wants one. */
static void
db_oneline(const char *in, char *buf, size_t len)
{
	size_t n = 0;
	int space = 0;

	for (; *in != '\0' && n + 1 < len; in++) {
		if (*in == '\n' || *in == '\t' || *in == '\r' || *in == ' ') {
			space = n > 0;
			continue;
		}
		if (space && n + 2 < len)
			buf[n++] = ' ';
		space = 0;
		buf[n++] = *in;
	}
	buf[n] = '\0';
}

static void
db_notice(void *arg, const char *msg)
{
	char line[512];

	(void)arg;
	db_oneline(msg, line, sizeof(line));
	log_debug("db: %s", line);
}

static void
db_set_timer(struct event *ev, int64_t ms)
{
	struct timeval tv;

	if (ms < 0)
		ms = 0;
	tv.tv_sec = ms / 1000;
	tv.tv_usec = (ms % 1000) * 1000;
	evtimer_add(ev, &tv);
}

/* ---- jobs ---------------------------------------------------------------- */

/* One allocation holds the job, the parameter array and copies of every
 * string, so the caller's buffers may go away once db_query() returns. */
static struct db_job *
db_job_new(const char *sql, int nparams, const char *const *params, db_cb *cb,
    void *arg, int64_t deadline)
{
	struct db_job *job;
	size_t size, n;
	char *p;

	size = sizeof(*job) + nparams * sizeof(char *) + strlen(sql) + 1;
	for (int i = 0; i < nparams; i++)
		if (params[i] != NULL)
			size += strlen(params[i]) + 1;
	if ((job = malloc(size)) == NULL)
		return NULL;
	job->kind = DB_JOB_QUERY;
	job->txn = NULL;
	job->cb = cb;
	job->arg = arg;
	job->deadline = deadline;
	job->start_us = util_mono_us();
	job->nparams = nparams;
	job->retried = 0;
	job->params = (const char **)(job + 1);
	p = (char *)(job->params + nparams);
	for (int i = 0; i < nparams; i++) {
		if (params[i] == NULL) {
			job->params[i] = NULL;
			continue;
		}
		n = strlen(params[i]) + 1;
		memcpy(p, params[i], n);
		job->params[i] = p;
		p += n;
	}
	memcpy(p, sql, strlen(sql) + 1);
	job->sql = p;
	return job;
}

/*
 * Calls back once, with res or NULL, and frees both. Every query ends
 * here, so here it is counted and timed (queue wait included: the time
 * its caller waited).
 */
static void
db_job_finish(struct db_job *job, PGresult *res)
{
	struct db_result r = { res };

	metrics_count(MC_DB_QUERIES, 1);
	if (res == NULL)
		metrics_count(MC_DB_UNAVAILABLE, 1);
	else if (!db_result_ok(&r))
		metrics_count(MC_DB_SQL_ERRORS, 1);
	metrics_db_observe(util_mono_us() - job->start_us);
	if (job->txn != NULL && res == NULL)
		job->txn->broken = 1;
	job->cb(res != NULL ? &r : NULL, job->arg);
	PQclear(res);
	if (job->kind == DB_JOB_COMMIT)
		db_txn_end(job->txn);
	free(job);
}

/* ---- one connection ------------------------------------------------------ */

/*
 * application_name comes before the conninfo string, so a value the
 * operator wrote there wins. PQconnectStartParams() may resolve a host name
 * synchronously; give an address (or hostaddr=) to avoid that.
 */
static void
db_conn_connect(struct db_conn *c)
{
	const char *keys[] = { "application_name", "dbname", NULL };
	const char *vals[] = { DB_APP_NAME, c->pool->conninfo, NULL };

	c->pg = PQconnectStartParams(keys, vals, 1);
	if (c->pg == NULL) {
		db_conn_broken(c, "out of memory");
		return;
	}
	if (PQstatus(c->pg) == CONNECTION_BAD) {
		db_conn_broken(c, PQerrorMessage(c->pg));
		return;
	}
	PQsetNoticeProcessor(c->pg, db_notice, NULL);
	c->state = DB_CONN_CONNECTING;
	db_set_timer(c->timer, DB_CONNECT_TIMEOUT_MS);
	/* Before the first PQconnectPoll(), wait as if it said WRITING. */
	if (db_conn_watch(c, EV_WRITE) == -1)
		db_conn_broken(c, "cannot watch the socket");
}

/*
 * Watch the connection's socket for what (EV_READ, EV_WRITE or both). libpq
 * opens a new socket for each address it tries while connecting, so the
 * events follow PQsocket().
 */
static int
db_conn_watch(struct db_conn *c, short what)
{
	struct event_base *base = c->pool->base;
	int fd = PQsocket(c->pg);

	if (fd < 0)
		return -1;
	if (fd != c->fd || c->rev == NULL) {
		if (c->rev != NULL)
			event_free(c->rev);
		if (c->wev != NULL)
			event_free(c->wev);
		c->rev = event_new(base, fd, EV_READ | EV_PERSIST,
		    db_conn_io_cb, c);
		c->wev = event_new(base, fd, EV_WRITE | EV_PERSIST,
		    db_conn_io_cb, c);
		c->fd = fd;
		if (c->rev == NULL || c->wev == NULL)
			return -1;
	}
	if (((what & EV_READ) ? event_add(c->rev, NULL) : event_del(c->rev))
	    == -1)
		return -1;
	if (((what & EV_WRITE) ? event_add(c->wev, NULL) : event_del(c->wev))
	    == -1)
		return -1;
	return 0;
}

/*
 * The events are removed before each PQconnectPoll(): if libpq closes the
 * socket and the next one gets the same number, the loop must not believe
 * it is still registered.
 */
static void
db_conn_poll(struct db_conn *c)
{
	PostgresPollingStatusType st;

	event_del(c->rev);
	event_del(c->wev);
	st = PQconnectPoll(c->pg);
	switch (st) {
	case PGRES_POLLING_READING:
	case PGRES_POLLING_WRITING:
		if (db_conn_watch(c, st == PGRES_POLLING_READING ? EV_READ :
		    EV_WRITE) == -1)
			db_conn_broken(c, "cannot watch the socket");
		break;
	case PGRES_POLLING_OK:
		db_conn_connected(c);
		break;
	default:
		db_conn_broken(c, PQerrorMessage(c->pg));
		break;
	}
}

/*
 * The server gets statement_timeout too: closing our end does not stop a
 * running statement (see db_conn_reset()), this does.
 */
static void
db_conn_connected(struct db_conn *c)
{
	struct db_pool *pool = c->pool;
	char sql[DB_SESSION_MAX + 64];

	if (PQsetnonblocking(c->pg, 1) == -1 ||
	    db_conn_watch(c, EV_READ) == -1) {
		db_conn_broken(c, PQerrorMessage(c->pg));
		return;
	}
	if (pool->timeout_ms <= 0 && pool->session == NULL) {
		db_conn_up(c);
		return;
	}
	snprintf(sql, sizeof(sql), "SET statement_timeout = %d;%s",
	    pool->timeout_ms, pool->session != NULL ? pool->session : "");
	c->state = DB_CONN_SETUP;
	if (PQsendQuery(c->pg, sql) == 0 || db_conn_flush(c) == -1)
		db_conn_broken(c, PQerrorMessage(c->pg));
}

static void
db_conn_up(struct db_conn *c)
{
	struct db_pool *pool = c->pool;

	evtimer_del(c->timer);
	c->state = DB_CONN_IDLE;
	c->failed = 0;
	c->backoff_ms = DB_BACKOFF_MIN_MS;
	log_debug("db: connection %d up", c->id);
	if (pool->down || !pool->ever_up)
		log_info("db: connected to PostgreSQL");
	pool->down = 0;
	pool->ever_up = 1;
	db_pool_dispatch(pool);
}

static void
db_conn_send(struct db_conn *c, struct db_job *job)
{
	c->job = job;
	c->state = DB_CONN_BUSY;
	if (job->kind == DB_JOB_BEGIN) {
		c->txn = job->txn;
		job->txn->conn = c;
	}
	if (db_conn_exec(c, job) == -1)
		db_conn_broken(c, PQerrorMessage(c->pg));
}

/*
 * Sends job on c, which is busy with it: PQsendQueryPrepared() when c has
 * prepared its text, else PQsendPrepare() first (db_conn_done() sends the
 * execution once that is through), else unnamed. Unnamed are BEGIN and
 * COMMIT, a text with several statements (nparams == 0 and a ';': the
 * simple protocol, the only one that allows them), and everything once c
 * is out of names. -1 when the connection broke.
 */
static int
db_conn_exec(struct db_conn *c, struct db_job *job)
{
	struct db_stmt *st;
	char name[16];
	int ok;

	c->stmt = c->preparing = NULL;
	if ((st = db_stmt_get(c, job)) != NULL) {
		snprintf(name, sizeof(name), "gc%d", st->num);
		if (st->prepared) {
			c->stmt = st;
			ok = PQsendQueryPrepared(c->pg, name, job->nparams,
			    job->params, NULL, NULL, 0);
		} else {
			c->preparing = st;
			ok = PQsendPrepare(c->pg, name, job->sql, job->nparams,
			    NULL);
		}
	} else if (job->nparams == 0)
		ok = PQsendQuery(c->pg, job->sql);
	else
		ok = PQsendQueryParams(c->pg, job->sql, job->nparams, NULL,
		    job->params, NULL, NULL, 0);
	if (!ok || db_conn_flush(c) == -1)
		return -1;
	if (job->deadline != 0)
		db_set_timer(c->timer, job->deadline - util_mono_ms());
	return 0;
}

static int
db_conn_flush(struct db_conn *c)
{
	int r;

	if ((r = PQflush(c->pg)) == -1)
		return -1;
	c->flushing = r == 1;
	if ((c->flushing ? event_add(c->wev, NULL) : event_del(c->wev)) == -1)
		return -1;
	return 0;
}

/* Read what came, send what is left, and collect results until libpq says
 * the statement is complete (PQgetResult() == NULL), never blocking. */
static void
db_conn_io(struct db_conn *c, short what)
{
	PGresult *r;

	if ((what & EV_READ) && PQconsumeInput(c->pg) == 0)
		goto broken;
	if (c->flushing && db_conn_flush(c) == -1)
		goto broken;
	while (!PQisBusy(c->pg)) {
		if ((r = PQgetResult(c->pg)) == NULL) {
			db_conn_done(c);
			return;
		}
		if (db_conn_keep(c, r) == -1) {
			log_warnx("db: COPY is not supported by the pool");
			db_conn_reset(c);
			return;
		}
	}
	return;
broken:
	db_conn_broken(c, PQerrorMessage(c->pg));
}

/* Keeps the first error, or else the last result: a failed statement ends
 * a multi-statement string, and the last one is what a caller asked for. */
static int
db_conn_keep(struct db_conn *c, PGresult *r)
{
	switch (PQresultStatus(r)) {
	case PGRES_COPY_IN:
	case PGRES_COPY_OUT:
	case PGRES_COPY_BOTH:
		PQclear(r);
		return -1;
	default:
		break;
	}
	if (c->res != NULL && PQresultStatus(c->res) == PGRES_FATAL_ERROR) {
		PQclear(r);
		return 0;
	}
	PQclear(c->res);
	c->res = r;
	return 0;
}

/* The SQLSTATEs that mean "could not run" rather than "ran and failed":
 * statement timeout, server shutting down, connection exceptions. */
static int
db_lost_sqlstate(const PGresult *r)
{
	const char *s;

	if (r == NULL || PQresultStatus(r) != PGRES_FATAL_ERROR)
		return 0;
	if ((s = PQresultErrorField(r, PG_DIAG_SQLSTATE)) == NULL)
		return 1;
	return strcmp(s, "57014") == 0 || strncmp(s, "57P", 3) == 0 ||
	    strncmp(s, "08", 2) == 0;
}

/*
 * The statement is complete. The connection is idle again before the
 * callback runs, so a db_query() from there may use it.
 */
static void
db_conn_done(struct db_conn *c)
{
	PGresult *res = c->res;
	struct db_job *job = c->job;

	c->res = NULL;
	evtimer_del(c->timer);
	if (PQstatus(c->pg) == CONNECTION_BAD) {
		PQclear(res);
		db_conn_broken(c, PQerrorMessage(c->pg));
		return;
	}
	if (c->state == DB_CONN_SETUP) {
		if (PQresultStatus(res) != PGRES_COMMAND_OK)
			log_warnx("db: connection %d: %s", c->id,
			    PQresultErrorMessage(res));
		PQclear(res);
		db_conn_up(c);
		return;
	}
	if ((c->preparing != NULL || c->stmt != NULL) &&
	    db_conn_prepared(c, res) == 1)
		return;
	c->job = NULL;
	c->state = DB_CONN_IDLE;
	if (db_lost_sqlstate(res)) {
		log_debug("db: query did not run: %s",
		    PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY));
		PQclear(res);
		res = NULL;
	}
	/* COMMIT of a transaction in error succeeds as "ROLLBACK". */
	if (job->kind == DB_JOB_COMMIT && res != NULL &&
	    PQresultStatus(res) == PGRES_COMMAND_OK &&
	    strcmp(PQcmdStatus(res), "COMMIT") != 0) {
		log_warnx("db: COMMIT of a failed transaction rolled it back");
		PQclear(res);
		res = NULL;
	}
	/* The transaction keeps its connection until it ends, or until a
	 * BEGIN that failed or a statement that could not run breaks it. */
	if (c->txn != NULL && res != NULL && job->kind != DB_JOB_COMMIT &&
	    (job->kind != DB_JOB_BEGIN ||
	    PQresultStatus(res) == PGRES_COMMAND_OK)) {
		c->state = DB_CONN_PINNED;
		if (c->pool->timeout_ms > 0)
			db_set_timer(c->timer, c->pool->timeout_ms);
		db_job_finish(job, res);
		return;
	}
	db_conn_unpin(c);
	db_conn_rollback(c);
	db_job_finish(job, res);
	db_pool_dispatch(c->pool);
}

/*
 * The PREPARE of c's job, or its prepared execution, is complete with res.
 * 1 when res is taken and the job sent again: its execution after PREPARE
 * succeeded, or a retry after a stale plan. 0 when res is the job's: the
 * PREPARE failed (a syntax error, say: the same error the statement gets
 * unnamed) or the execution is done.
 *
 * Plans go stale when the schema changes under a running worker (a newer
 * instance's migration child, an operator's ALTER TABLE): PostgreSQL
 * re-plans a prepared statement by itself, but one whose result columns
 * changed fails with "cached plan must not change result type" (0A000).
 * The entry then takes a new name, to be prepared afresh, and a query
 * outside a transaction is retried once at once; in a transaction the
 * error has aborted it, so the caller gets the error and rolls back.
 */
static int
db_conn_prepared(struct db_conn *c, PGresult *res)
{
	struct db_stmt *st;
	const char *state;

	if ((st = c->preparing) != NULL) {
		c->preparing = NULL;
		if (PQresultStatus(res) != PGRES_COMMAND_OK)
			return 0;
		st->prepared = 1;
		goto again;
	}
	st = c->stmt;
	c->stmt = NULL;
	if (PQresultStatus(res) != PGRES_FATAL_ERROR ||
	    (state = PQresultErrorField(res, PG_DIAG_SQLSTATE)) == NULL ||
	    strcmp(state, "0A000") != 0)
		return 0;
	log_warnx("db: connection %d: prepared statement gc%d: %s", c->id,
	    st->num, PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY));
	db_stmt_rename(c, st);
	if (c->job->kind != DB_JOB_QUERY || c->job->retried ||
	    PQtransactionStatus(c->pg) != PQTRANS_IDLE)
		return 0;
	c->job->retried = 1;
again:
	PQclear(res);
	if (db_conn_exec(c, c->job) == -1)
		db_conn_broken(c, PQerrorMessage(c->pg));
	return 1;
}

/*
 * "BEGIN; ...; COMMIT" that fails half way leaves its transaction open
 * (the server skips the rest of the string), and the next query on this
 * connection must not inherit it. A transaction left open on purpose is a
 * caller's mistake: queries of one caller may run on different
 * connections.
 */
static void
db_conn_rollback(struct db_conn *c)
{
	PGTransactionStatusType ts = PQtransactionStatus(c->pg);

	if (ts == PQTRANS_IDLE)
		return;
	if (ts == PQTRANS_INTRANS)
		log_warnx("db: a query left a transaction open; rolling back");
	db_conn_send_rollback(c);
}

/* Our own ROLLBACK: the connection is idle again once it is done. */
static void
db_conn_send_rollback(struct db_conn *c)
{
	c->state = DB_CONN_SETUP;
	db_set_timer(c->timer, DB_CONNECT_TIMEOUT_MS);
	if (PQsendQuery(c->pg, "ROLLBACK") == 0 || db_conn_flush(c) == -1)
		db_conn_broken(c, PQerrorMessage(c->pg));
}

/* The connection no longer serves its transaction, which is broken. */
static void
db_conn_unpin(struct db_conn *c)
{
	if (c->txn == NULL)
		return;
	c->txn->conn = NULL;
	c->txn->broken = 1;
	c->txn = NULL;
}

/* An idle connection reads only to notice the server going away. */
static void
db_conn_idle_read(struct db_conn *c)
{
	PGnotify *n;

	if (PQconsumeInput(c->pg) == 0 || PQstatus(c->pg) == CONNECTION_BAD) {
		db_conn_broken(c, PQerrorMessage(c->pg));
		return;
	}
	while ((n = PQnotifies(c->pg)) != NULL)
		PQfreemem(n);
}

/*
 * Events go before the socket does. Leaves the job and the timer alone; a
 * pinned transaction is broken (the server rolls it back).
 */
static void
db_conn_close(struct db_conn *c)
{
	db_conn_unpin(c);
	if (c->rev != NULL)
		event_free(c->rev);
	if (c->wev != NULL)
		event_free(c->wev);
	c->rev = c->wev = NULL;
	c->fd = -1;
	c->flushing = 0;
	PQclear(c->res);
	c->res = NULL;
	db_stmt_free_all(c);
	if (c->pg != NULL)
		PQfinish(c->pg);
	c->pg = NULL;
	c->state = DB_CONN_DOWN;
}

/*
 * A connect attempt failed or a connection broke: fail its query, retry
 * after the back-off, and fail the queue if that was the last hope.
 */
static void
db_conn_broken(struct db_conn *c, const char *why)
{
	struct db_pool *pool = c->pool;
	struct db_job *job = c->job;
	int was_up = c->state >= DB_CONN_SETUP;

	db_oneline(why, c->why, sizeof(c->why));
	if (c->why[0] == '\0')
		snprintf(c->why, sizeof(c->why), "connection lost");
	if (was_up)
		log_warnx("db: connection %d lost: %s", c->id, c->why);
	else
		log_debug("db: connection %d: %s", c->id, c->why);
	c->job = NULL;
	db_conn_close(c);
	c->failed = 1;
	db_conn_retry(c, c->backoff_ms);
	if (c->backoff_ms < DB_BACKOFF_MAX_MS)
		c->backoff_ms *= 2;
	if (c->backoff_ms > DB_BACKOFF_MAX_MS)
		c->backoff_ms = DB_BACKOFF_MAX_MS;
	if (job != NULL)
		db_job_finish(job, NULL);
	db_pool_check_down(pool, c->why);
}

/*
 * The running query passed its deadline. PQcancel() would block on a new
 * connection to the server, so the connection is closed instead and a new
 * one made at once; the server stops the statement itself through
 * statement_timeout, or when it next writes to the closed socket.
 */
static void
db_conn_reset(struct db_conn *c)
{
	struct db_job *job = c->job;

	c->job = NULL;
	db_conn_close(c);
	c->failed = 0;
	db_conn_retry(c, 0);
	if (job != NULL)
		db_job_finish(job, NULL);
}

static void
db_conn_retry(struct db_conn *c, int ms)
{
	c->state = DB_CONN_DOWN;
	db_set_timer(c->timer, ms);
}

static void
db_conn_io_cb(evutil_socket_t fd, short what, void *arg)
{
	struct db_conn *c = arg;

	(void)fd;
	switch (c->state) {
	case DB_CONN_CONNECTING:
		db_conn_poll(c);
		break;
	case DB_CONN_SETUP:
	case DB_CONN_BUSY:
		db_conn_io(c, what);
		break;
	case DB_CONN_IDLE:
	case DB_CONN_PINNED:
		if (what & EV_READ)
			db_conn_idle_read(c);
		break;
	case DB_CONN_DOWN:
		break;
	}
}

static void
db_conn_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct db_conn *c = arg;

	(void)fd;
	(void)what;
	switch (c->state) {
	case DB_CONN_DOWN:
		db_conn_connect(c);
		break;
	case DB_CONN_CONNECTING:
	case DB_CONN_SETUP:
		db_conn_broken(c, "no answer from the server");
		break;
	case DB_CONN_BUSY:
		log_warnx("db: query timed out after %d ms, closing connection"
		    " %d", c->pool->timeout_ms, c->id);
		db_conn_reset(c);
		break;
	case DB_CONN_PINNED:
		log_warnx("db: a transaction stayed idle for %d ms, closing "
		    "connection %d", c->pool->timeout_ms, c->id);
		db_conn_reset(c);
		break;
	case DB_CONN_IDLE:
		break;
	}
}

/* ---- prepared statements ------------------------------------------------ */

/*
 * The entry of job's text on c, made (unprepared) if it is new; NULL when
 * job goes unnamed: BEGIN, COMMIT, several statements in one text, c out
 * of names (DB_STMT_MAX per session, so a caller building texts at run
 * time cannot grow the table or the server's memory without bound), or out
 * of memory. Keyed by the text (FNV-1a, then strcmp()), not by pointer:
 * the job holds a copy.
 */
static struct db_stmt *
db_stmt_get(struct db_conn *c, const struct db_job *job)
{
	struct db_stmt *st;
	uint32_t h = 2166136261u;
	size_t i, len;

	if (c->pool->unnamed ||
	    (job->kind != DB_JOB_QUERY && job->kind != DB_JOB_TXN) ||
	    (job->nparams == 0 && strchr(job->sql, ';') != NULL))
		return NULL;
	for (const char *p = job->sql; *p != '\0'; p++)
		h = (h ^ (unsigned char)*p) * 16777619u;
	if (c->stmts == NULL &&
	    (c->stmts = calloc(DB_STMT_SLOTS, sizeof(*c->stmts))) == NULL)
		return NULL;
	/* At most DB_STMT_MAX entries: an empty slot always ends the probe. */
	for (i = h & (DB_STMT_SLOTS - 1); (st = c->stmts[i]) != NULL;
	    i = (i + 1) & (DB_STMT_SLOTS - 1))
		if (st->hash == h && strcmp(st->sql, job->sql) == 0)
			return st->num > 0 ? st : NULL;
	if (c->nnames >= DB_STMT_MAX)
		return NULL;
	len = strlen(job->sql) + 1;
	if ((st = malloc(sizeof(*st) + len)) == NULL)
		return NULL;
	st->hash = h;
	st->num = ++c->nnames;
	st->prepared = 0;
	memcpy(st->sql, job->sql, len);
	c->stmts[i] = st;
	return st;
}

/* st's plan is stale: prepare it again under a new name (or none, when
 * out of names). The old one stays on the server until the session ends. */
static void
db_stmt_rename(struct db_conn *c, struct db_stmt *st)
{
	st->num = c->nnames < DB_STMT_MAX ? ++c->nnames : 0;
	st->prepared = 0;
}

/* The session is gone, and its prepared statements with it. */
static void
db_stmt_free_all(struct db_conn *c)
{
	for (int i = 0; c->stmts != NULL && i < DB_STMT_SLOTS; i++)
		free(c->stmts[i]);
	free(c->stmts);
	c->stmts = NULL;
	c->nnames = 0;
	c->preparing = c->stmt = NULL;
}

/* ---- the pool ------------------------------------------------------------ */

/*
 * Down means: no connection is up and every one's last attempt failed.
 * Connections still making their first attempt (start-up) or replacing a
 * timed-out one keep the pool from being down, so queries queue for them.
 */
static int
db_pool_is_down(const struct db_pool *pool)
{
	for (int i = 0; i < pool->size; i++) {
		const struct db_conn *c = &pool->conns[i];

		if (c->state >= DB_CONN_SETUP || !c->failed)
			return 0;
	}
	return 1;
}

/* Queued queries would wait for the next retry, seconds away: fail them. */
static void
db_pool_check_down(struct db_pool *pool, const char *why)
{
	struct db_job *job;

	if (pool->freeing || !db_pool_is_down(pool))
		return;
	if (!pool->down)
		log_warnx("db: PostgreSQL is unreachable: %s", why);
	pool->down = 1;
	while ((job = TAILQ_FIRST(&pool->queue)) != NULL) {
		TAILQ_REMOVE(&pool->queue, job, entry);
		pool->queued--;
		db_job_finish(job, NULL);
	}
}

/*
 * Hands queued jobs to connections: a transaction's statements to its
 * pinned connection once it is between statements, the others to idle
 * ones. Runs from the loop only, never from db_query() and friends, so a
 * callback never runs inside them. After each job handed over or failed,
 * the scan starts again: a callback may have changed the queue.
 */
static void
db_pool_dispatch(struct db_pool *pool)
{
	struct db_job *job;
	struct db_conn *c = NULL;

	while (!pool->freeing) {
		TAILQ_FOREACH(job, &pool->queue, entry) {
			if (job->kind == DB_JOB_TXN ||
			    job->kind == DB_JOB_COMMIT) {
				c = job->txn->conn;
				if (c == NULL || c->state == DB_CONN_PINNED)
					break;
			} else if ((c = db_pool_idle(pool)) != NULL)
				break;
		}
		if (job == NULL)
			break;
		TAILQ_REMOVE(&pool->queue, job, entry);
		pool->queued--;
		if (c == NULL || (job->deadline != 0 &&
		    util_mono_ms() >= job->deadline))
			db_job_finish(job, NULL);
		else
			db_conn_send(c, job);
	}
}

static struct db_conn *
db_pool_idle(struct db_pool *pool)
{
	for (int i = 0; i < pool->size; i++)
		if (pool->conns[i].state == DB_CONN_IDLE)
			return &pool->conns[i];
	return NULL;
}

static void
db_pool_enqueue(struct db_pool *pool, struct db_job *job)
{
	TAILQ_INSERT_TAIL(&pool->queue, job, entry);
	pool->queued++;
	db_pool_arm(pool);
	event_active(pool->kick, EV_TIMEOUT, 1);
}

/* The queue is in deadline order: one timer at the head's deadline. */
static void
db_pool_arm(struct db_pool *pool)
{
	struct db_job *job = TAILQ_FIRST(&pool->queue);

	if (job == NULL || job->deadline == 0 || evtimer_pending(pool->qtimer,
	    NULL))
		return;
	db_set_timer(pool->qtimer, job->deadline - util_mono_ms());
}

static void
db_pool_kick_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	db_pool_dispatch(arg);
}

static void
db_pool_qtimer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct db_pool *pool = arg;
	struct db_job *job;
	int64_t now = util_mono_ms();
	int n = 0;

	(void)fd;
	(void)what;
	while ((job = TAILQ_FIRST(&pool->queue)) != NULL &&
	    job->deadline <= now) {
		TAILQ_REMOVE(&pool->queue, job, entry);
		pool->queued--;
		n++;
		db_job_finish(job, NULL);
	}
	if (n > 0)
		log_warnx("db: %d queries waited %d ms for a connection", n,
		    pool->timeout_ms);
	db_pool_arm(pool);
}

struct db_pool *
db_pool_new(struct event_base *base, const char *conninfo, int size,
    int query_timeout_ms)
{
	struct db_pool *pool = NULL;
	PQconninfoOption *opts;
	char *msg = NULL;

	if (size < 1 || conninfo == NULL)
		goto fail;
	if ((opts = PQconninfoParse(conninfo, &msg)) == NULL) {
		log_error("db: invalid database URL: %s",
		    msg != NULL ? msg : "out of memory");
		goto fail;
	}
	PQconninfoFree(opts);
	if ((pool = calloc(1, sizeof(*pool))) == NULL)
		goto fail;
	pool->base = base;
	pool->size = size;
	pool->timeout_ms = query_timeout_ms > 0 ? query_timeout_ms : 0;
	TAILQ_INIT(&pool->queue);
	pool->conninfo = strdup(conninfo);
	pool->conns = calloc(size, sizeof(*pool->conns));
	pool->kick = event_new(base, -1, 0, db_pool_kick_cb, pool);
	pool->qtimer = evtimer_new(base, db_pool_qtimer_cb, pool);
	if (pool->conninfo == NULL || pool->conns == NULL ||
	    pool->kick == NULL || pool->qtimer == NULL)
		goto fail;
	for (int i = 0; i < size; i++) {
		struct db_conn *c = &pool->conns[i];

		c->pool = pool;
		c->id = i + 1;
		c->fd = -1;
		c->backoff_ms = DB_BACKOFF_MIN_MS;
		if ((c->timer = evtimer_new(base, db_conn_timer_cb, c)) == NULL)
			goto fail;
	}
	for (int i = 0; i < size; i++)
		db_conn_connect(&pool->conns[i]);
	return pool;
fail:
	PQfreemem(msg);
	db_pool_free(pool);
	return NULL;
}

void
db_pool_prepare(struct db_pool *pool, int on)
{
	pool->unnamed = !on;
}

int
db_pool_session(struct db_pool *pool, const char *sql)
{
	char *s;

	if (strlen(sql) > DB_SESSION_MAX || (s = strdup(sql)) == NULL)
		return -1;
	free(pool->session);
	pool->session = s;
	return 0;
}

void
db_pool_free(struct db_pool *pool)
{
	struct db_job *job;

	if (pool == NULL)
		return;
	pool->freeing = 1;
	for (int i = 0; pool->conns != NULL && i < pool->size; i++) {
		struct db_conn *c = &pool->conns[i];

		job = c->job;
		c->job = NULL;
		db_conn_close(c);
		if (c->timer != NULL)
			event_free(c->timer);
		c->timer = NULL;
		if (job != NULL)
			db_job_finish(job, NULL);
	}
	while ((job = TAILQ_FIRST(&pool->queue)) != NULL) {
		TAILQ_REMOVE(&pool->queue, job, entry);
		db_job_finish(job, NULL);
	}
	if (pool->kick != NULL)
		event_free(pool->kick);
	if (pool->qtimer != NULL)
		event_free(pool->qtimer);
	free(pool->conns);
	free(pool->conninfo);
	free(pool->session);
	free(pool);
}

int
db_pool_up(const struct db_pool *pool)
{
	for (int i = 0; i < pool->size; i++)
		if (pool->conns[i].state >= DB_CONN_IDLE)
			return 1;
	return 0;
}

int
db_query(struct db_pool *pool, const char *sql, int nparams,
    const char *const *params, db_cb *cb, void *arg)
{
	struct db_job *job;
	int64_t deadline = 0;

	if (pool->freeing || sql == NULL || cb == NULL || nparams < 0 ||
	    (nparams > 0 && params == NULL))
		return -1;
	if (pool->queued >= DB_QUEUE_MAX || db_pool_is_down(pool))
		goto refused;
	if (pool->timeout_ms > 0)
		deadline = util_mono_ms() + pool->timeout_ms;
	if ((job = db_job_new(sql, nparams, params, cb, arg, deadline)) == NULL)
		goto refused;
	db_pool_enqueue(pool, job);
	return 0;
refused:
	/* Its caller answers 503: a query that could not run. */
	metrics_count(MC_DB_QUERIES, 1);
	metrics_count(MC_DB_UNAVAILABLE, 1);
	return -1;
}

/* ---- transactions -------------------------------------------------------- */

struct db_txn *
db_begin(struct db_pool *pool, db_cb *cb, void *arg)
{
	struct db_txn *txn = NULL;
	struct db_job *job = NULL;
	int64_t deadline = 0;

	if (pool->freeing || cb == NULL)
		return NULL;
	if (pool->queued >= DB_QUEUE_MAX || db_pool_is_down(pool))
		goto refused;
	if (pool->timeout_ms > 0)
		deadline = util_mono_ms() + pool->timeout_ms;
	if ((txn = calloc(1, sizeof(*txn))) == NULL ||
	    (job = db_job_new("BEGIN", 0, NULL, cb, arg, deadline)) == NULL)
		goto refused;
	txn->pool = pool;
	job->kind = DB_JOB_BEGIN;
	job->txn = txn;
	db_pool_enqueue(pool, job);
	return txn;
refused:
	free(txn);
	metrics_count(MC_DB_QUERIES, 1);
	metrics_count(MC_DB_UNAVAILABLE, 1);
	return NULL;
}

/* A statement or the COMMIT of txn, queued for its connection. */
static int
db_txn_queue(struct db_txn *txn, enum db_job_kind kind, const char *sql,
    int nparams, const char *const *params, db_cb *cb, void *arg)
{
	struct db_pool *pool;
	struct db_job *job;
	int64_t deadline = 0;

	if (txn->broken || txn->conn == NULL || txn->pool->freeing)
		return -1;
	pool = txn->pool;
	if (pool->timeout_ms > 0)
		deadline = util_mono_ms() + pool->timeout_ms;
	if ((job = db_job_new(sql, nparams, params, cb, arg, deadline)) == NULL)
		return -1;
	job->kind = kind;
	job->txn = txn;
	db_pool_enqueue(pool, job);
	return 0;
}

int
db_txn_query(struct db_txn *txn, const char *sql, int nparams,
    const char *const *params, db_cb *cb, void *arg)
{
	if (sql == NULL || cb == NULL || nparams < 0 ||
	    (nparams > 0 && params == NULL))
		return -1;
	return db_txn_queue(txn, DB_JOB_TXN, sql, nparams, params, cb, arg);
}

int
db_commit(struct db_txn *txn, db_cb *cb, void *arg)
{
	if (cb == NULL || db_txn_queue(txn, DB_JOB_COMMIT, "COMMIT", 0, NULL,
	    cb, arg) == -1) {
		db_txn_end(txn);
		return -1;
	}
	return 0;
}

void
db_rollback(struct db_txn *txn)
{
	if (txn != NULL)
		db_txn_end(txn);
}

/*
 * Frees txn, giving its connection back: rolled back first if it is
 * between statements (a statement still running is the caller's mistake;
 * the connection is rolled back once it is done, see db_conn_done()).
 */
static void
db_txn_end(struct db_txn *txn)
{
	struct db_conn *c = txn->conn;

	if (c != NULL) {
		c->txn = NULL;
		if (c->state == DB_CONN_PINNED) {
			evtimer_del(c->timer);
			c->state = DB_CONN_IDLE;
			if (PQtransactionStatus(c->pg) != PQTRANS_IDLE)
				db_conn_send_rollback(c);
			else
				event_active(c->pool->kick, EV_TIMEOUT, 1);
		}
	}
	free(txn);
}

/* ---- results ------------------------------------------------------------- */

int
db_result_ok(const struct db_result *res)
{
	ExecStatusType st;

	if (res == NULL)
		return 0;
	st = PQresultStatus(res->pg);
	return st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;
}

int
db_result_ntuples(const struct db_result *res)
{
	return res != NULL ? PQntuples(res->pg) : 0;
}

int
db_result_nfields(const struct db_result *res)
{
	return res != NULL ? PQnfields(res->pg) : 0;
}

const char *
db_result_value(const struct db_result *res, int row, int col)
{
	if (res == NULL || row < 0 || row >= PQntuples(res->pg) || col < 0 ||
	    col >= PQnfields(res->pg))
		return "";
	return PQgetvalue(res->pg, row, col);
}

int
db_result_isnull(const struct db_result *res, int row, int col)
{
	if (res == NULL || row < 0 || row >= PQntuples(res->pg) || col < 0 ||
	    col >= PQnfields(res->pg))
		return 1;
	return PQgetisnull(res->pg, row, col);
}

const char *
db_result_sqlstate(const struct db_result *res)
{
	const char *s;

	if (res == NULL || db_result_ok(res))
		return "";
	s = PQresultErrorField(res->pg, PG_DIAG_SQLSTATE);
	return s != NULL ? s : "";
}

const char *
db_result_constraint(const struct db_result *res)
{
	const char *s;

	if (res == NULL || db_result_ok(res))
		return "";
	s = PQresultErrorField(res->pg, PG_DIAG_CONSTRAINT_NAME);
	return s != NULL ? s : "";
}

const char *
db_result_error(const struct db_result *res)
{
	const char *s;

	if (res == NULL || db_result_ok(res))
		return "";
	if ((s = PQresultErrorField(res->pg, PG_DIAG_MESSAGE_PRIMARY)) != NULL)
		return s;
	return PQresultErrorMessage(res->pg);
}

/* ---- migrations (blocking) ----------------------------------------------- */

/* CREATE TABLE IF NOT EXISTS and friends say "skipping": not news. */
static void
db_migrate_quiet(void *arg, const char *msg)
{
	(void)arg;
	(void)msg;
}

/*
 * "what: message", and for an error inside a file the line it is on:
 * PostgreSQL gives the position in characters, so UTF-8 continuation bytes
 * are not counted.
 */
static void
db_migrate_error(const PGresult *r, PGconn *pg, const char *what,
    const char *text, char *err, size_t errlen)
{
	const char *msg = NULL, *state = NULL, *pos = NULL;
	char line[512];
	long at, n = 0, lineno = 1;

	if (r != NULL) {
		msg = PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY);
		state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
		pos = PQresultErrorField(r, PG_DIAG_STATEMENT_POSITION);
	}
	db_oneline(msg != NULL ? msg : PQerrorMessage(pg), line, sizeof(line));
	if (text != NULL && pos != NULL && (at = strtol(pos, NULL, 10)) > 0) {
		for (const char *p = text; *p != '\0' && n < at - 1; p++) {
			if ((*(const unsigned char *)p & 0xc0) != 0x80)
				n++;
			if (*p == '\n')
				lineno++;
		}
		snprintf(err, errlen, "%s, line %ld: %s (SQLSTATE %s)", what,
		    lineno, line, state != NULL ? state : "?");
	} else if (state != NULL)
		snprintf(err, errlen, "%s: %s (SQLSTATE %s)", what, line,
		    state);
	else
		snprintf(err, errlen, "%s: %s", what, line);
}

/* Runs sql and checks it succeeded; err names what on failure. */
static int
db_migrate_exec(PGconn *pg, const char *sql, const char *what, char *err,
    size_t errlen)
{
	PGresult *r = PQexec(pg, sql);
	ExecStatusType st = PQresultStatus(r);
	int rc = -1;

	if (r == NULL || (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK &&
	    st != PGRES_EMPTY_QUERY)) {
		db_migrate_error(r, pg, what, NULL, err, errlen);
		goto fail;
	}
	rc = 0;
fail:
	PQclear(r);
	return rc;
}

static int
db_migrate_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The names in dir matching [0-9][0-9][0-9]_*.sql, sorted; numbers must
 * be unique. */
static int
db_migrate_list(const char *dir, char ***out, size_t *nout, char *err,
    size_t errlen)
{
	DIR *d;
	struct dirent *de;
	char **names = NULL, **tmp;
	size_t n = 0, cap = 0, len;
	const char *s;

	if ((d = opendir(dir)) == NULL) {
		snprintf(err, errlen, "cannot open the migrations directory"
		    " %s: %s", dir, strerror(errno));
		goto fail;
	}
	while ((de = readdir(d)) != NULL) {
		s = de->d_name;
		len = strlen(s);
		if (len < 8 || s[0] < '0' || s[0] > '9' || s[1] < '0' ||
		    s[1] > '9' || s[2] < '0' || s[2] > '9' || s[3] != '_' ||
		    strcmp(s + len - 4, ".sql") != 0)
			continue;
		if (n == cap) {
			cap = cap ? 2 * cap : 16;
			if ((tmp = realloc(names, cap * sizeof(*names))) ==
			    NULL)
				goto oom;
			names = tmp;
		}
		if ((names[n] = strdup(s)) == NULL)
			goto oom;
		n++;
	}
	closedir(d);
	d = NULL;
	if (n > 0)
		qsort(names, n, sizeof(*names), db_migrate_cmp);
	for (size_t i = 1; i < n; i++) {
		if (strncmp(names[i - 1], names[i], 3) == 0) {
			snprintf(err, errlen, "%s/%s and %s/%s have the same"
			    " number", dir, names[i - 1], dir, names[i]);
			goto fail;
		}
	}
	*out = names;
	*nout = n;
	return 0;
oom:
	snprintf(err, errlen, "out of memory");
fail:
	if (d != NULL)
		closedir(d);
	while (n > 0)
		free(names[--n]);
	free(names);
	return -1;
}

/* The whole file as a string; NULL with err set. */
static char *
db_migrate_read(const char *path, char *err, size_t errlen)
{
	FILE *f = NULL;
	char *buf = NULL, *tmp;
	size_t len = 0, cap = 0, n;

	if ((f = fopen(path, "r")) == NULL) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		goto fail;
	}
	for (;;) {
		if (cap - len < 4096) {
			cap = cap ? 2 * cap : 16384;
			if ((tmp = realloc(buf, cap)) == NULL) {
				snprintf(err, errlen, "%s: out of memory",
				    path);
				goto fail;
			}
			buf = tmp;
		}
		n = fread(buf + len, 1, cap - len - 1, f);
		len += n;
		if (n == 0)
			break;
	}
	if (ferror(f)) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		goto fail;
	}
	buf[len] = '\0';
	if (strlen(buf) != len) {
		snprintf(err, errlen, "%s: contains a NUL byte", path);
		goto fail;
	}
	fclose(f);
	return buf;
fail:
	if (f != NULL)
		fclose(f);
	free(buf);
	return NULL;
}

/* 1 when the migration numbered version is recorded, 0 if not, -1. */
static int
db_migrate_applied(PGconn *pg, const char *version, char *err, size_t errlen)
{
	const char *params[1] = { version };
	PGresult *r;
	int rc = -1;

	r = PQexecParams(pg, "SELECT 1 FROM schema_migrations WHERE version ="
	    " $1::int", 1, NULL, params, NULL, NULL, 0);
	if (PQresultStatus(r) != PGRES_TUPLES_OK) {
		db_migrate_error(r, pg, "reading schema_migrations", NULL, err,
		    errlen);
		goto fail;
	}
	rc = PQntuples(r) > 0;
fail:
	PQclear(r);
	return rc;
}

/*
 * BEGIN, then the migration lock for the rest of the transaction. A
 * transaction-level lock, not a session-level one: through a pooler in
 * transaction mode (PgBouncer) the statements of one session may run on
 * different server connections, so a session lock would serialize nothing
 * and stay held on whichever server connection took it. A transaction runs
 * on one server connection from BEGIN to COMMIT whatever the pooler, and
 * its lock ends with it, even when the migrator dies.
 */
static int
db_migrate_begin(PGconn *pg, const char *what, char *err, size_t errlen)
{
	if (db_migrate_exec(pg, "BEGIN", what, err, errlen) == -1)
		return -1;
	if (db_migrate_exec(pg, "SELECT pg_advisory_xact_lock("
	    DB_MIGRATE_LOCK ")", "taking the migration lock", err,
	    errlen) == -1) {
		PQclear(PQexec(pg, "ROLLBACK"));
		return -1;
	}
	return 0;
}

/*
 * Applies dir/name in one transaction with its record in schema_migrations,
 * under the migration lock; whether it is recorded already is read after
 * the lock is taken, so a migrator that waited for another one applies
 * nothing twice. The file must not contain BEGIN or COMMIT of its own.
 */
static int
db_migrate_one(PGconn *pg, const char *dir, const char *name, char *err,
    size_t errlen)
{
	char version[4], path[4096];
	const char *params[2] = { version, name };
	PGresult *r = NULL;
	char *text = NULL;
	int rc = -1, begun = 0, applied;

	memcpy(version, name, 3);
	version[3] = '\0';
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	if ((text = db_migrate_read(path, err, errlen)) == NULL)
		goto fail;
	if (db_migrate_begin(pg, path, err, errlen) == -1)
		goto fail;
	begun = 1;
	if ((applied = db_migrate_applied(pg, version, err, errlen)) == -1)
		goto fail;
	if (applied == 0) {
		r = PQexec(pg, text);
		if (PQresultStatus(r) != PGRES_COMMAND_OK &&
		    PQresultStatus(r) != PGRES_TUPLES_OK &&
		    PQresultStatus(r) != PGRES_EMPTY_QUERY) {
			db_migrate_error(r, pg, path, text, err, errlen);
			goto fail;
		}
		PQclear(r);
		r = PQexecParams(pg, "INSERT INTO schema_migrations (version,"
		    " name) VALUES ($1::int, $2)", 2, NULL, params, NULL, NULL,
		    0);
		if (PQresultStatus(r) != PGRES_COMMAND_OK) {
			db_migrate_error(r, pg, path, NULL, err, errlen);
			goto fail;
		}
	}
	if (db_migrate_exec(pg, "COMMIT", path, err, errlen) == -1)
		goto fail;
	begun = 0;
	if (applied == 0)
		log_info("migrations: applied %s", name);
	rc = 0;
fail:
	if (begun)
		PQclear(PQexec(pg, "ROLLBACK"));
	PQclear(r);
	free(text);
	return rc;
}

/*
 * Concurrent migrators (several instances starting at once, directly or
 * through a pooler) queue on the migration lock of each transaction; the
 * later ones then find everything recorded. Even schema_migrations is
 * created under it: two concurrent CREATE TABLE IF NOT EXISTS can both
 * try to create it.
 */
int
db_migrate(const char *conninfo, const char *dir, char *err, size_t errlen)
{
	const char *keys[] = { "connect_timeout", "application_name",
	    "dbname", NULL };
	const char *vals[] = { DB_MIGRATE_CONNECT_S, DB_APP_NAME "-migrate",
	    conninfo, NULL };
	PGconn *pg;
	char **names = NULL;
	size_t n = 0;
	char line[512];
	int rc = -1;

	pg = PQconnectdbParams(keys, vals, 1);
	if (pg == NULL || PQstatus(pg) != CONNECTION_OK) {
		db_oneline(pg != NULL ? PQerrorMessage(pg) : "out of memory",
		    line, sizeof(line));
		snprintf(err, errlen, "cannot connect to PostgreSQL: %s", line);
		goto fail;
	}
	PQsetNoticeProcessor(pg, db_migrate_quiet, NULL);
	if (db_migrate_list(dir, &names, &n, err, errlen) == -1)
		goto fail;
	if (db_migrate_begin(pg, "creating schema_migrations", err,
	    errlen) == -1)
		goto fail;
	if (db_migrate_exec(pg, "CREATE TABLE IF NOT EXISTS schema_migrations ("
	    "version int PRIMARY KEY, name text NOT NULL, "
	    "applied_at timestamptz NOT NULL DEFAULT now())",
	    "creating schema_migrations", err, errlen) == -1 ||
	    db_migrate_exec(pg, "COMMIT", "creating schema_migrations", err,
	    errlen) == -1) {
		PQclear(PQexec(pg, "ROLLBACK"));
		goto fail;
	}
	for (size_t i = 0; i < n; i++)
		if (db_migrate_one(pg, dir, names[i], err, errlen) == -1)
			goto fail;
	rc = 0;
fail:
	PQfinish(pg);
	while (n > 0)
		free(names[--n]);
	free(names);
	return rc;
}
