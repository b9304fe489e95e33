/*
 * db: PostgreSQL for the event loops. A pool of libpq connections driven by
 * the non-blocking API on one event_base; queries are queued and handed to
 * the first idle connection (a transaction's, to the connection it pins).
 * Connections that break are reconnected by a timer, forever, so the
 * process never exits because PostgreSQL is away. Each connection prepares
 * a statement the first time it runs its text and executes it prepared
 * afterwards (see db_query()).
 * db.c is the only file that includes libpq-fe.h.
 */
#ifndef GC_DB_H
#define GC_DB_H

#include <stddef.h>

#include "common/attr.h"

struct event_base;
struct db_pool;
struct db_result;

/*
 * Called exactly once per query accepted by db_query(), always from the
 * loop (never from inside db_query()): with the result, or with res == NULL
 * when the query could not run (connection lost, timeout, server shutting
 * down, pool freed) -- answer 503 then. A result that is not ok is a real
 * SQL error (db_result_sqlstate()). res is owned by the pool and freed
 * after the callback returns. The callback may call db_query() but must
 * not call db_pool_free().
 */
typedef void db_cb(struct db_result *res, void *arg);

/*
 * conninfo is a libpq connection string or URI; NULL if it does not parse.
 * size >= 1 connections, all on base and used only from its thread.
 * query_timeout_ms (0: none) bounds the time from db_query() to the
 * callback, queued plus running. A running query past it is not cancelled
 * with PQcancel(), which blocks: its connection is closed and replaced, and
 * the server stops the statement through statement_timeout, which each
 * connection sets to query_timeout_ms.
 */
struct db_pool *db_pool_new(struct event_base *base, const char *conninfo,
	    int size, int query_timeout_ms);
/*
 * on = 0: send every statement unnamed, never prepared (for a pooler in
 * transaction mode, where the next transaction may run on a session that
 * never saw the PREPARE). Call before the first query; the default is 1.
 */
void	db_pool_prepare(struct db_pool *pool, int on);
/*
 * sql (a SET, say; copied) runs on every connection of the pool once it
 * is up, after statement_timeout's, in the same implicit transaction: a
 * session setting its callers want. Call before the first query. Not for
 * a pooler in transaction mode, where a session setting sticks to a
 * server connection other clients share.
 */
int	db_pool_session(struct db_pool *pool, const char *sql);
/* Fails every queued and running query (callbacks get NULL), then frees. */
void	db_pool_free(struct db_pool *pool);
/* 1 when at least one connection is up. */
int	db_pool_up(const struct db_pool *pool);

/*
 * Queue one statement with text parameters ($1..$n; NULL params are SQL
 * NULL); sql and params are copied. Several statements separated by ';'
 * are allowed only when nparams == 0 (the result is the first error or the
 * last statement's). Returns 0 when queued (cb will be called), -1 when the
 * pool is down or the queue (10000) is full (cb will not be called: answer
 * 503). Down means no connection is up and every connection's last attempt
 * failed; at start-up, before the first attempts have failed, queries
 * queue. When the pool goes down, queued queries fail at once. Successive
 * queries may run on different connections: a transaction is one call,
 * or db_begin() below (one left open is rolled back before the next
 * query).
 *
 * Prepared statements: each connection prepares a text the first time it
 * runs it (names gc1, gc2, ... per session, keyed by the text itself, so
 * sql need not be static, but it should be a fixed text with parameters:
 * after DB_STMT_MAX (256) distinct texts a connection sends the rest
 * unnamed). A text that fails to prepare gets the same error it would get
 * unnamed. A text with several statements (nparams == 0 and a ';') is
 * never prepared.
 */
int	db_query(struct db_pool *pool, const char *sql, int nparams,
	    const char *const *params, db_cb *cb, void *arg)
	    GC_MUSTCHECK;

/*
 * Transactions: several statements on one connection, pinned to the
 * transaction from BEGIN until COMMIT or ROLLBACK, with other work (Redis,
 * say) between them. A handle from db_begin() must be ended by exactly
 * one db_commit() or db_rollback(), whatever happened meanwhile, and
 * never while one of its statements is queued or running (end it from a
 * callback, or after one). A connection left pinned and idle for
 * query_timeout_ms is closed, which rolls the transaction back; so is one
 * that breaks. Either way the transaction is "broken": its statements
 * and its COMMIT are refused (-1), and db_rollback() just frees it.
 */
struct db_txn;

/*
 * Queue BEGIN for a connection of the transaction's own; cb gets its
 * result (NULL or not ok: the transaction is broken, roll it back).
 * NULL when the pool is down or the queue full (answer 503; cb will not
 * be called, nothing to end).
 */
struct db_txn *db_begin(struct db_pool *pool, db_cb *cb, void *arg)
	    GC_MUSTCHECK;
/*
 * One statement in the transaction, as db_query() (one at a time). A
 * statement that fails (cb gets a result that is not ok) leaves the
 * transaction pinned but aborted: roll it back. -1 when the transaction is
 * broken (cb will not be called).
 */
int	db_txn_query(struct db_txn *txn, const char *sql, int nparams,
	    const char *const *params, db_cb *cb, void *arg)
	    GC_MUSTCHECK;
/*
 * End with COMMIT: cb gets an ok result when it committed, else NULL or an
 * error (nothing was committed, or with NULL, perhaps it was: the
 * connection broke while COMMIT ran). txn is freed either way; -1 (cb not
 * called) when it was broken already.
 */
int	db_commit(struct db_txn *txn, db_cb *cb, void *arg)
	    GC_MUSTCHECK;
/* End with ROLLBACK, without waiting for it; txn is freed. */
void	db_rollback(struct db_txn *txn);

/* Result accessors. A result is "ok" for COMMAND_OK and TUPLES_OK. */
int	db_result_ok(const struct db_result *res);
int	db_result_ntuples(const struct db_result *res);
int	db_result_nfields(const struct db_result *res);
/* "" for NULL; the string is owned by res. */
const char *db_result_value(const struct db_result *res, int row, int col);
int	db_result_isnull(const struct db_result *res, int row, int col);
/* Five-character SQLSTATE ("23505") or "" when ok. */
const char *db_result_sqlstate(const struct db_result *res);
/* The constraint name of an integrity error, or "". */
const char *db_result_constraint(const struct db_result *res);
const char *db_result_error(const struct db_result *res);

/*
 * Blocking, for the short-lived migration child only: connect, apply every
 * dir/NNN_*.sql not yet in schema_migrations in order, each in its own
 * transaction (so a file must not BEGIN or COMMIT itself) that first takes
 * pg_advisory_xact_lock and then checks schema_migrations: safe with
 * several instances starting at once, directly or through a pooler in
 * transaction mode. 0, or -1 with err set (naming the file and line, and
 * PostgreSQL's message and SQLSTATE).
 */
int	db_migrate(const char *conninfo, const char *dir, char *err,
	    size_t errlen) GC_MUSTCHECK;

#endif
