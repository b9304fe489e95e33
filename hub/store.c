/*
 * store: the hub's reads and writes of rooms and messages in PostgreSQL,
 * through a small pool of its own. Owns the pool and one operation record
 * per call in flight. A batch of broadcasts is one INSERT of arrays,
 * fenced by the partition's epoch; the entries it did not insert were
 * stored by an earlier hub, and one SELECT finds the ids and times they
 * were given then.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "common/conf.h"
#include "common/db.h"
#include "common/log.h"
#include "common/util.h"
#include "hub/store.h"

#define STORE_POOL_SIZE		2
#define STORE_TIMEOUT_MS	10000	/* a query queued plus running */
#define STORE_RACES_MAX		8	/* room deletions raced in a row */

/* created_at in ms since the epoch: exact, since the hub stores ms. */
#define STORE_TS_MS(col) \
	"floor(extract(epoch FROM " col ") * 1000)::bigint"

/*
 * $1 text[] of room ids, $2 how many messages each. A room that exists
 * gives its last messages oldest first, or one row of NULLs when it has
 * none; max(id) comes from the primary key's index, once per room (a
 * subquery in the select list ran once per row: 50 times a room).
 */
static const char store_load_sql[] =
    "SELECT r.id, l.last, h.id, h.user_id, h.username, h.content, "
    STORE_TS_MS("h.created_at") ", " STORE_TS_MS("h.edited_at") " "
    "FROM rooms r CROSS JOIN LATERAL (SELECT coalesce(max(m.id), 0) AS last "
    "FROM messages m WHERE m.room_id = r.id) l "
    "LEFT JOIN LATERAL (SELECT m.id, m.user_id, m.username, "
    "m.content, m.created_at, m.edited_at FROM messages m "
    "WHERE m.room_id = r.id AND m.kind = 0 AND NOT m.deleted "
    "ORDER BY m.id DESC LIMIT $2::int) h ON true "
    "WHERE r.id = ANY ($1::text[]) ORDER BY r.id, h.id";

/*
 * $1 partition, $2 its epoch as this hub raised it, $3.. one array per
 * column (text[] literals: no JSON to decode per row). The partition's row
 * is locked FOR SHARE in the same statement, so an epoch raise
 * (store_fence_sql, an UPDATE) waits for this store to commit, and a store
 * that comes after the raise finds no row and inserts nothing: then the
 * result has no row at all; otherwise one row per message inserted, or a
 * single NULL. The row is locked only while its rooms_gen is the one this
 * statement's snapshot read: deleting a room bumps it first (see
 * sql/005_room_deletes.sql), so a store that raced a deletion inserts
 * nothing either, and store_recheck() tells the two apart. Messages have
 * no foreign key (sql/002_partitions.sql): each distinct room of the batch
 * is looked up once, an index probe (OFFSET 0 keeps the planner from
 * turning the lookups into a scan of every room), and a message whose
 * room is gone is not inserted; store_fetch() finds it neither, so it is
 * dropped as refused. "(... IN r) IS TRUE" keeps the planner from pulling
 * the IN up into a nested-loop semi join against the CTE (256 x the
 * batch's rooms text comparisons, a third of its time): as an expression
 * it is a hashed subplan, one probe a row. Only a conflict on inbox_id is
 * expected (an entry stored by an earlier hub); one on (room_id, id)
 * means our idea of the room's last id is wrong, and must fail loudly.
 */
#define STORE_SQL_FENCE \
    "WITH f AS (SELECT epoch FROM hub_partitions WHERE partition = $1::int " \
    "AND epoch = $2::bigint AND rooms_gen = (SELECT rooms_gen FROM " \
    "hub_partitions WHERE partition = $1::int) FOR SHARE), " \
    "r AS (SELECT k.id FROM (SELECT DISTINCT unnest($3::text[]) AS id) u " \
    "CROSS JOIN LATERAL (SELECT id FROM rooms WHERE rooms.id = u.id " \
    "OFFSET 0) k), "
#define STORE_SQL_RESULT	"SELECT i.inbox_id FROM f LEFT JOIN i ON true"

#define STORE_SQL_INSERT(conflict) \
    STORE_SQL_FENCE \
    "b AS (SELECT v.*, row_number() OVER (PARTITION BY v.r, v.u, v.d " \
    "ORDER BY v.m) AS nth " \
    "FROM unnest($3::text[], $4::bigint[], $5::bigint[], $6::text[], " \
    "$7::text[], $8::text[], $9::bigint[], $10::smallint[], " \
    "$11::bigint[], $12::text[]) AS v (r, m, u, n, c, x, t, k, g, d)), " \
    "i AS (INSERT INTO messages (room_id, id, user_id, username, content, " \
    "inbox_id, created_at, kind, target, cid) SELECT b.r, b.m, b.u, b.n, " \
    "b.c, b.x, timestamptz 'epoch' + b.t * interval '1 millisecond', " \
    "b.k, b.g, b.d FROM b " \
    "WHERE EXISTS (SELECT 1 FROM f) AND (b.r IN (SELECT id FROM r)) IS TRUE " \
    "AND (b.d IS NULL OR (b.nth = 1 AND NOT EXISTS (SELECT 1 FROM " \
    "messages o WHERE o.room_id = b.r AND o.user_id = b.u AND " \
    "o.cid = b.d AND o.created_at > now() - interval '24 hours'))) " \
    "AND (b.k = 0 OR EXISTS (SELECT 1 FROM messages o WHERE " \
    "o.room_id = b.r AND o.id = b.g AND o.kind = 0 AND NOT o.deleted)) " \
    conflict \
    "RETURNING inbox_id, room_id, id, kind, target, content, created_at), " \
    "u AS (UPDATE messages o SET content = coalesce(e.c, o.content), " \
    "edited_at = coalesce(e.t, o.edited_at), deleted = o.deleted OR e.del " \
    "FROM (SELECT room_id, target, bool_or(kind = 2) AS del, " \
    "(array_agg(content ORDER BY id DESC) FILTER (WHERE kind = 1))[1] " \
    "AS c, max(created_at) FILTER (WHERE kind = 1) AS t FROM i " \
    "WHERE kind > 0 GROUP BY room_id, target) e " \
    "WHERE o.room_id = e.room_id AND o.id = e.target AND o.kind = 0) " \
    STORE_SQL_RESULT

/*
 * The same for a batch of plain messages only (no cid, no edit or
 * delete: section 5's, operators'), $3..$9: no per-sender numbering, no
 * dedupe or target probes, no UPDATE. PostgreSQL executes it in 0.08 ms
 * for one message against 0.12, and in 11 % less time for 256.
 */
#define STORE_SQL_INSERT_PLAIN(conflict) \
    STORE_SQL_FENCE \
    "i AS (INSERT INTO messages (room_id, id, user_id, username, content, " \
    "inbox_id, created_at) SELECT v.r, v.m, v.u, v.n, v.c, v.x, " \
    "timestamptz 'epoch' + v.t * interval '1 millisecond' " \
    "FROM unnest($3::text[], $4::bigint[], $5::bigint[], $6::text[], " \
    "$7::text[], $8::text[], $9::bigint[]) AS v (r, m, u, n, c, x, t) " \
    "WHERE EXISTS (SELECT 1 FROM f) AND (v.r IN (SELECT id FROM r)) IS TRUE " \
    conflict "RETURNING inbox_id) " \
    STORE_SQL_RESULT

/*
 * Each in two forms. A batch is first written without the ON CONFLICT
 * clause: PostgreSQL's speculative insertion (a probe of the inbox id's
 * index before each row, and a record more per row in the WAL) is 15 %
 * of its CPU per message in a rooms-of-2 closed loop (13.6 against 11.5
 * us). Only a replay meets an inbox id stored already (an entry a
 * deposed or dead hub stored, one a Redis failover hands out again), and
 * then the INSERT fails whole (unique_violation) and the batch is
 * written again with the clause: what was stored is skipped and found
 * by store_fetch(), as before. A conflict on (room_id, id) fails the
 * second time too, loudly.
 */
#define STORE_ON_CONFLICT	"ON CONFLICT (inbox_id) DO NOTHING "
static const char store_insert_sql[] = STORE_SQL_INSERT(STORE_ON_CONFLICT);
static const char store_insert_fast_sql[] = STORE_SQL_INSERT("");
static const char store_insert_plain_sql[] =
    STORE_SQL_INSERT_PLAIN(STORE_ON_CONFLICT);
static const char store_insert_plain_fast_sql[] = STORE_SQL_INSERT_PLAIN("");

/*
 * $1 partition: its epoch now. A store that inserted nothing at all was
 * fenced, or raced a room's deletion: this tells which.
 */
static const char store_epoch_sql[] =
    "SELECT epoch FROM hub_partitions WHERE partition = $1::int";

/* $1 partition, $2 the lease holder: the partition's new epoch. */
static const char store_fence_sql[] =
    "INSERT INTO hub_partitions AS p (partition, holder) "
    "VALUES ($1::int, $2) ON CONFLICT (partition) DO UPDATE "
    "SET epoch = p.epoch + 1, holder = excluded.holder, taken_at = now() "
    "RETURNING epoch";

/*
 * $1 text[] of inbox ids, $2 their rooms, $3 users, $4 cids (NULL for
 * none): the rows stored under those inbox ids (by = 0), then for each
 * cid the first message of that user in that room with it, stored since
 * less than 24 h (by = 1). edited: its content is no longer the one sent.
 */
static const char store_fetch_sql[] =
    "SELECT inbox_id, room_id, id, user_id, content, "
    STORE_TS_MS("created_at") ", edited_at IS NOT NULL, 0 AS found_by "
    "FROM messages WHERE inbox_id = ANY ($1::text[]) "
    "UNION ALL SELECT x.i, m.room_id, m.id, m.user_id, m.content, "
    STORE_TS_MS("m.created_at") ", true, 1 "
    "FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[]) "
    "AS x (i, r, u, c) CROSS JOIN LATERAL (SELECT room_id, id, user_id, "
    "content, created_at FROM messages WHERE room_id = x.r AND "
    "user_id = x.u AND cid = x.c AND "
    "created_at > now() - interval '24 hours' ORDER BY id LIMIT 1) m "
    "WHERE x.c IS NOT NULL ORDER BY 8";

struct store {
	struct db_pool	*db;
};

/* One store_load() or store_write() in flight. */
struct store_op {
	struct store	*s;
	store_cb	*cb;
	store_load_cb	*lcb;
	store_fence_cb	*fcb;
	void		*arg;
	struct store_msg *msgs;
	size_t		 n;
	struct store_msg **sorted;	/* msgs by inbox id, for lookups */
	size_t		 next;		/* isolate: message written */
	int		 isolate;
	int		 careful;	/* with ON CONFLICT: isolating, or
					 * after a unique violation */
	int		 find;		/* store_find(): not found is ok */
	int		 races;		/* inserts a room's deletion voided */
	char		 partition[16];	/* store_write()'s fence */
	char		 epoch[24];
};

/* The columns of a store_write(), as array literals. */
enum store_col {
	STORE_COL_ROOM,
	STORE_COL_ID,
	STORE_COL_USER,
	STORE_COL_USERNAME,
	STORE_COL_CONTENT,
	STORE_COL_INBOX,
	STORE_COL_TS,
	STORE_COL_KIND,
	STORE_COL_TARGET,
	STORE_COL_CID,
	STORE_NCOLS
};

static void	store_array(struct evbuffer *, const char *);
static void	store_array_n(struct evbuffer *, const char *, size_t);
static void	store_array_or_null(struct evbuffer *, const char *);
static char	*store_param(struct evbuffer *);
static struct store_op *store_op_new(struct store *, struct store_msg *,
		    size_t, store_cb *, void *);
static int	store_cmp(const void *, const void *);
static size_t	store_next(struct store_op *, size_t);
static struct store_msg *store_lookup(struct store_op *, const char *);
static int	store_insert(struct store_op *);
static int	store_fetch(struct store_op *);
static int	store_recheck(struct store_op *);
static void	store_done(struct store_op *, enum store_status);
static void	store_op_free(struct store_op *);
static int	store_int(const struct db_result *, int, int, int64_t *);
static void	store_loaded_cb(struct db_result *, void *);
static void	store_inserted_cb(struct db_result *, void *);
static void	store_fetched_cb(struct db_result *, void *);
static void	store_rechecked_cb(struct db_result *, void *);
static void	store_fenced_cb(struct db_result *, void *);

struct store *
store_new(struct event_base *base, const struct conf *conf)
{
	struct store *s;

	if ((s = calloc(1, sizeof(*s))) == NULL)
		return NULL;
	s->db = db_pool_new(base, conf->database_url, STORE_POOL_SIZE,
	    STORE_TIMEOUT_MS);
	if (s->db == NULL) {
		free(s);
		return NULL;
	}
	db_pool_prepare(s->db, conf->db_prepare);
	/*
	 * Every table the store's statements touch is reached by an index
	 * probe per key, whatever their arrays hold, so a custom plan per
	 * execution buys nothing and costs PostgreSQL 0.3 ms of planning each
	 * time: two thirds of the store of a one-message batch (the latency
	 * of a quiet room), 0.35 ms of a 256-message one. Prepared statements
	 * only: through a pooler in transaction mode the setting would stick
	 * to server sessions other clients share.
	 */
	if (conf->db_prepare && db_pool_session(s->db,
	    "SET plan_cache_mode = force_generic_plan") == -1) {
		db_pool_free(s->db);
		free(s);
		return NULL;
	}
	return s;
}

void
store_free(struct store *s)
{
	if (s == NULL)
		return;
	db_pool_free(s->db);
	free(s);
}

int
store_load(struct store *s, const char *const *rooms, size_t n, int history,
    store_load_cb *cb, void *arg)
{
	struct store_op *op;
	struct evbuffer *b;
	const char *params[2];
	char limit[16], *ids = NULL;
	int rc = -1;

	if ((op = calloc(1, sizeof(*op))) == NULL)
		return -1;
	op->s = s;
	op->lcb = cb;
	op->arg = arg;
	if ((b = evbuffer_new()) == NULL)
		goto done;
	(void)evbuffer_add(b, "{", 1);
	for (size_t i = 0; i < n; i++) {
		if (i > 0)
			(void)evbuffer_add(b, ",", 1);
		store_array(b, rooms[i]);
	}
	(void)evbuffer_add(b, "}", 1);
	if ((ids = store_param(b)) == NULL)
		goto done;
	snprintf(limit, sizeof(limit), "%d", history);
	params[0] = ids;
	params[1] = limit;
	rc = db_query(s->db, store_load_sql, 2, params, store_loaded_cb, op);
done:
	if (b != NULL)
		evbuffer_free(b);
	free(ids);
	if (rc == -1)
		store_op_free(op);
	return rc;
}

int
store_fence(struct store *s, int partition, const char *holder,
    store_fence_cb *cb, void *arg)
{
	struct store_op *op;
	const char *params[2];
	char p[16];

	if ((op = calloc(1, sizeof(*op))) == NULL)
		return -1;
	op->s = s;
	op->fcb = cb;
	op->arg = arg;
	snprintf(p, sizeof(p), "%d", partition);
	params[0] = p;
	params[1] = holder;
	if (db_query(s->db, store_fence_sql, 2, params, store_fenced_cb,
	    op) == -1) {
		store_op_free(op);
		return -1;
	}
	return 0;
}

int
store_write(struct store *s, int partition, int64_t epoch,
    struct store_msg *msgs, size_t n, int isolate, store_cb *cb, void *arg)
{
	struct store_op *op;

	if ((op = store_op_new(s, msgs, n, cb, arg)) == NULL)
		return -1;
	op->isolate = op->careful = isolate;
	snprintf(op->partition, sizeof(op->partition), "%d", partition);
	snprintf(op->epoch, sizeof(op->epoch), "%lld", (long long)epoch);
	if ((op->next = store_next(op, 0)) == n || store_insert(op) == -1) {
		store_op_free(op);
		return -1;
	}
	return 0;
}

int
store_find(struct store *s, struct store_msg *msgs, size_t n, store_cb *cb,
    void *arg)
{
	struct store_op *op;

	if ((op = store_op_new(s, msgs, n, cb, arg)) == NULL)
		return -1;
	op->find = 1;
	if (store_next(op, 0) == n || store_fetch(op) == -1) {
		store_op_free(op);
		return -1;
	}
	return 0;
}

/* ---- internals ----------------------------------------------------------- */

static struct store_op *
store_op_new(struct store *s, struct store_msg *msgs, size_t n, store_cb *cb,
    void *arg)
{
	struct store_op *op;

	if (n == 0 || (op = calloc(1, sizeof(*op))) == NULL)
		return NULL;
	op->s = s;
	op->cb = cb;
	op->arg = arg;
	op->msgs = msgs;
	op->n = n;
	if ((op->sorted = calloc(n, sizeof(*op->sorted))) == NULL) {
		store_op_free(op);
		return NULL;
	}
	for (size_t i = 0; i < n; i++)
		op->sorted[i] = &msgs[i];
	qsort(op->sorted, n, sizeof(*op->sorted), store_cmp);
	return op;
}

/* The first message from i on still to be written, or n. */
static size_t
store_next(struct store_op *op, size_t i)
{
	while (i < op->n && op->msgs[i].result != STORE_PENDING)
		i++;
	return i;
}

/* One element of a text[] literal, always quoted ("NULL" is a room id). */
static void
store_array(struct evbuffer *b, const char *s)
{
	store_array_n(b, s, strlen(s));
}

/* The same, or an unquoted NULL element for NULL. */
static void
store_array_or_null(struct evbuffer *b, const char *s)
{
	if (s == NULL)
		(void)evbuffer_add(b, "NULL", 4);
	else
		store_array(b, s);
}

/* The same for len bytes (no NUL among them): runs without a quote or a
 * backslash are copied in one go. */
static void
store_array_n(struct evbuffer *b, const char *s, size_t len)
{
	size_t from = 0;

	(void)evbuffer_add(b, "\"", 1);
	for (size_t i = 0; i < len; i++) {
		if (s[i] != '"' && s[i] != '\\')
			continue;
		(void)evbuffer_add(b, s + from, i - from);
		(void)evbuffer_add(b, "\\", 1);
		from = i;
	}
	(void)evbuffer_add(b, s + from, len - from);
	(void)evbuffer_add(b, "\"", 1);
}

/* The buffer as a C string of the caller's (free()). */
static char *
store_param(struct evbuffer *b)
{
	size_t len = evbuffer_get_length(b);
	char *p;

	if ((p = malloc(len + 1)) == NULL)
		return NULL;
	if (evbuffer_copyout(b, p, len) != (ev_ssize_t)len) {
		free(p);
		return NULL;
	}
	p[len] = '\0';
	return p;
}

static int
store_cmp(const void *a, const void *b)
{
	const struct store_msg *const *x = a, *const *y = b;

	return strcmp((*x)->inbox_id, (*y)->inbox_id);
}

static struct store_msg *
store_lookup(struct store_op *op, const char *inbox_id)
{
	struct store_msg key = { .inbox_id = inbox_id }, *kp = &key, **found;

	found = bsearch(&kp, op->sorted, op->n, sizeof(*op->sorted),
	    store_cmp);
	return found != NULL ? *found : NULL;
}

/* The INSERT of every pending message, or in isolation of msgs[next]. */
static int
store_insert(struct store_op *op)
{
	size_t from = op->isolate ? op->next : 0;
	size_t to = op->isolate ? op->next + 1 : op->n;
	struct evbuffer *col[STORE_NCOLS];
	char *params[2 + STORE_NCOLS] = { NULL };
	const char *sql;
	int rc = -1, first = 1, plain = 1, ncols, c;

	for (c = 0; c < STORE_NCOLS; c++)
		if ((col[c] = evbuffer_new()) == NULL)
			break;
	if (c < STORE_NCOLS) {
		while (c-- > 0)
			evbuffer_free(col[c]);
		return -1;
	}
	for (size_t i = from; i < to; i++)
		if (op->msgs[i].result == STORE_PENDING &&
		    (op->msgs[i].kind != STORE_MESSAGE ||
		    op->msgs[i].cid != NULL))
			plain = 0;
	/* store_insert_plain_sql takes the columns up to STORE_COL_TS. */
	ncols = plain ? STORE_COL_KIND : STORE_NCOLS;
	for (c = 0; c < ncols; c++)
		(void)evbuffer_add(col[c], "{", 1);
	for (size_t i = from; i < to; i++) {
		const struct store_msg *m = &op->msgs[i];

		if (m->result != STORE_PENDING)
			continue;
		if (!first)
			for (c = 0; c < ncols; c++)
				(void)evbuffer_add(col[c], ",", 1);
		first = 0;
		store_array(col[STORE_COL_ROOM], m->room);
		(void)evbuffer_add_printf(col[STORE_COL_ID], "%lld",
		    (long long)m->id);
		(void)evbuffer_add_printf(col[STORE_COL_USER], "%lld",
		    (long long)m->user);
		store_array(col[STORE_COL_USERNAME], m->username);
		store_array_n(col[STORE_COL_CONTENT], m->content,
		    m->content_len);
		store_array(col[STORE_COL_INBOX], m->inbox_id);
		(void)evbuffer_add_printf(col[STORE_COL_TS], "%lld",
		    (long long)m->ts_ms);
		if (plain)
			continue;
		(void)evbuffer_add_printf(col[STORE_COL_KIND], "%d",
		    (int)m->kind);
		if (m->kind == STORE_MESSAGE)
			(void)evbuffer_add(col[STORE_COL_TARGET], "NULL", 4);
		else
			(void)evbuffer_add_printf(col[STORE_COL_TARGET],
			    "%lld", (long long)m->target);
		store_array_or_null(col[STORE_COL_CID], m->cid);
	}
	for (c = 0; c < ncols; c++) {
		(void)evbuffer_add(col[c], "}", 1);
		if ((params[2 + c] = store_param(col[c])) == NULL)
			goto done;
	}
	params[0] = op->partition;
	params[1] = op->epoch;
	if (op->careful)
		sql = plain ? store_insert_plain_sql : store_insert_sql;
	else
		sql = plain ? store_insert_plain_fast_sql :
		    store_insert_fast_sql;
	rc = db_query(op->s->db, sql, 2 + ncols, (const char **)params,
	    store_inserted_cb, op);
done:
	for (c = 0; c < STORE_NCOLS; c++) {
		evbuffer_free(col[c]);
		free(params[2 + c]);
	}
	return rc;
}

/* Look up the messages the INSERT skipped: stored before (by inbox id),
 * or resends (by cid). */
static int
store_fetch(struct store_op *op)
{
	struct evbuffer *b[4];
	char *params[4] = { NULL };
	size_t n = 0;
	int rc = -1, c;

	for (c = 0; c < 4; c++)
		if ((b[c] = evbuffer_new()) == NULL)
			break;
	if (c < 4) {
		while (c-- > 0)
			evbuffer_free(b[c]);
		return -1;
	}
	for (c = 0; c < 4; c++)
		(void)evbuffer_add(b[c], "{", 1);
	for (size_t i = 0; i < op->n; i++) {
		const struct store_msg *m = &op->msgs[i];

		if (m->result != STORE_PENDING)
			continue;
		if (n++ > 0)
			for (c = 0; c < 4; c++)
				(void)evbuffer_add(b[c], ",", 1);
		store_array(b[0], m->inbox_id);
		store_array(b[1], m->room);
		(void)evbuffer_add_printf(b[2], "%lld", (long long)m->user);
		store_array_or_null(b[3], m->kind == STORE_MESSAGE ? m->cid :
		    NULL);
	}
	for (c = 0; c < 4; c++) {
		(void)evbuffer_add(b[c], "}", 1);
		if ((params[c] = store_param(b[c])) == NULL)
			goto done;
	}
	if (n == 0) {
		store_done(op, STORE_OK);
		rc = 0;
		goto done;
	}
	rc = db_query(op->s->db, store_fetch_sql, 4, (const char **)params,
	    store_fetched_cb, op);
done:
	for (c = 0; c < 4; c++) {
		evbuffer_free(b[c]);
		free(params[c]);
	}
	return rc;
}

static void
store_done(struct store_op *op, enum store_status st)
{
	op->cb(st, op->arg);
	store_op_free(op);
}

static void
store_op_free(struct store_op *op)
{
	if (op == NULL)
		return;
	free(op->sorted);
	free(op);
}

static int
store_int(const struct db_result *res, int row, int col, int64_t *out)
{
	long long v;

	if (db_result_isnull(res, row, col) ||
	    util_parse_int(db_result_value(res, row, col), INT64_MIN,
	    INT64_MAX, &v) == -1)
		return -1;
	*out = v;
	return 0;
}

static void
store_loaded_cb(struct db_result *res, void *arg)
{
	struct store_op *op = arg;
	struct store_row *rows = NULL;
	size_t n = 0, nt;

	if (res == NULL) {
		op->lcb(STORE_AWAY, NULL, 0, op->arg);
		goto done;
	}
	if (!db_result_ok(res)) {
		log_warnx("store: cannot load rooms: %s (SQLSTATE %s)",
		    db_result_error(res), db_result_sqlstate(res));
		op->lcb(STORE_ERROR, NULL, 0, op->arg);
		goto done;
	}
	nt = (size_t)db_result_ntuples(res);
	if (nt > 0 && (rows = calloc(nt, sizeof(*rows))) == NULL) {
		op->lcb(STORE_AWAY, NULL, 0, op->arg);
		goto done;
	}
	for (size_t i = 0; i < nt; i++) {
		struct store_row *r = &rows[n];
		int row = (int)i;

		r->room = db_result_value(res, row, 0);
		if (store_int(res, row, 1, &r->last_id) == -1)
			continue;
		if (!db_result_isnull(res, row, 2) &&
		    (store_int(res, row, 2, &r->id) == -1 ||
		    store_int(res, row, 3, &r->user) == -1 ||
		    store_int(res, row, 6, &r->ts_ms) == -1))
			continue;
		if (db_result_isnull(res, row, 7) ||
		    store_int(res, row, 7, &r->edited_ms) == -1)
			r->edited_ms = 0;
		r->username = db_result_value(res, row, 4);
		r->content = db_result_value(res, row, 5);
		r->content_len = strlen(r->content);
		n++;
	}
	op->lcb(STORE_OK, rows, n, op->arg);
done:
	free(rows);
	store_op_free(op);
}

static void
store_inserted_cb(struct db_result *res, void *arg)
{
	struct store_op *op = arg;
	struct store_msg *m;

	if (res == NULL) {
		store_done(op, STORE_AWAY);
		return;
	}
	if (!db_result_ok(res)) {
		if (!op->careful &&
		    strcmp(db_result_sqlstate(res), "23505") == 0) {
			/* Stored before, some of it: again, with the clause. */
			op->careful = 1;
			if (store_insert(op) == -1)
				store_done(op, STORE_AWAY);
			return;
		}
		if (!op->isolate) {
			log_warnx("store: PostgreSQL refused a batch of %zu "
			    "messages: %s (SQLSTATE %s%s%s)", op->n,
			    db_result_error(res), db_result_sqlstate(res),
			    *db_result_constraint(res) ? ", " : "",
			    db_result_constraint(res));
			store_done(op, STORE_ERROR);
			return;
		}
		m = &op->msgs[op->next];
		log_warnx("inbox entry %s: PostgreSQL refused the message to "
		    "room %s: %s (SQLSTATE %s); dropped", m->inbox_id, m->room,
		    db_result_error(res), db_result_sqlstate(res));
		m->result = STORE_BAD;
	} else if (db_result_ntuples(res) == 0) {
		if (store_recheck(op) == -1)
			store_done(op, STORE_AWAY);
		return;
	} else
		for (int i = 0; i < db_result_ntuples(res); i++)
			if (!db_result_isnull(res, i, 0) && (m = store_lookup(op,
			    db_result_value(res, i, 0))) != NULL)
				m->result = STORE_NEW;
	if (op->isolate && (op->next = store_next(op, op->next + 1)) < op->n) {
		if (store_insert(op) == -1)
			store_done(op, STORE_AWAY);
		return;
	}
	if (store_fetch(op) == -1)
		store_done(op, STORE_AWAY);
}

/*
 * The insert found its partition's row neither at our epoch nor at the
 * rooms_gen it read: ask for the epoch as it is now.
 */
static int
store_recheck(struct store_op *op)
{
	const char *params[1];

	params[0] = op->partition;
	return db_query(op->s->db, store_epoch_sql, 1, params,
	    store_rechecked_cb, op);
}

/*
 * Another hub raised the epoch: fenced, nothing was stored. Still ours: a
 * room was deleted while the insert ran, and it inserted nothing; again,
 * in a snapshot where that room is gone (its messages are then dropped as
 * refused). Deletions that keep coming leave the batch to a later try.
 */
static void
store_rechecked_cb(struct db_result *res, void *arg)
{
	struct store_op *op = arg;

	if (res == NULL) {
		store_done(op, STORE_AWAY);
		return;
	}
	if (!db_result_ok(res)) {
		log_warnx("store: cannot read partition %s's epoch: %s "
		    "(SQLSTATE %s)", op->partition, db_result_error(res),
		    db_result_sqlstate(res));
		store_done(op, STORE_AWAY);
		return;
	}
	/* bigint's text is canonical, as op->epoch's %lld is */
	if (db_result_ntuples(res) != 1 || db_result_isnull(res, 0, 0) ||
	    strcmp(db_result_value(res, 0, 0), op->epoch) != 0) {
		store_done(op, STORE_FENCED);
		return;
	}
	if (++op->races > STORE_RACES_MAX) {
		log_warnx("partition %s: rooms deleted during each of %d "
		    "tries to store a batch of %zu messages; trying later",
		    op->partition, STORE_RACES_MAX, op->n);
		store_done(op, STORE_AWAY);
		return;
	}
	log_info("partition %s: a room was deleted while a batch was stored "
	    "(%zu messages); storing it again", op->partition, op->n);
	if (store_insert(op) == -1)
		store_done(op, STORE_AWAY);
}

/*
 * A stored row is this entry's message only if it says the same thing;
 * anything else under the same inbox id (a stream that restarted with ids
 * already used, say) must not be published in its place.
 */
static void
store_fetched_cb(struct db_result *res, void *arg)
{
	struct store_op *op = arg;
	struct store_msg *m;
	const char *content;
	int64_t id, user, ts;

	if (res == NULL) {
		store_done(op, STORE_AWAY);
		return;
	}
	if (!db_result_ok(res)) {
		log_warnx("store: cannot read stored messages: %s (SQLSTATE "
		    "%s)", db_result_error(res), db_result_sqlstate(res));
		store_done(op, STORE_ERROR);
		return;
	}
	for (int i = 0; i < db_result_ntuples(res); i++) {
		m = store_lookup(op, db_result_value(res, i, 0));
		if (m == NULL || m->result != STORE_PENDING)
			continue;
		content = db_result_value(res, i, 4);
		if (store_int(res, i, 2, &id) == -1 ||
		    store_int(res, i, 3, &user) == -1 ||
		    store_int(res, i, 5, &ts) == -1 ||
		    strcmp(db_result_value(res, i, 1), m->room) != 0 ||
		    user != m->user)
			goto other;
		/* A resend of a message stored already: acknowledged with
		 * the first one's id. */
		if (strcmp(db_result_value(res, i, 7), "1") == 0) {
			m->id = id;
			m->ts_ms = ts;
			m->result = STORE_CID;
			continue;
		}
		/* An edited message no longer holds what was sent. */
		if (strcmp(db_result_value(res, i, 6), "t") != 0 &&
		    (strlen(content) != m->content_len ||
		    (m->content_len > 0 &&
		    memcmp(content, m->content, m->content_len) != 0)))
			goto other;
		m->id = id;
		m->ts_ms = ts;
		m->result = STORE_DUP;
		continue;
other:
		log_warnx("inbox entry %s: another message is stored under "
		    "this id; dropped", m->inbox_id);
		m->result = STORE_BAD;
	}
	for (size_t i = 0; i < op->n && !op->find; i++)
		if (op->msgs[i].result == STORE_PENDING) {
			log_warnx("inbox entry %s: neither stored nor found "
			    "(room %s deleted?); dropped", op->msgs[i].inbox_id,
			    op->msgs[i].room);
			op->msgs[i].result = STORE_BAD;
		}
	store_done(op, STORE_OK);
}

static void
store_fenced_cb(struct db_result *res, void *arg)
{
	struct store_op *op = arg;
	int64_t epoch;

	if (res == NULL)
		op->fcb(STORE_AWAY, 0, op->arg);
	else if (!db_result_ok(res)) {
		log_warnx("store: cannot raise the partition's epoch: %s "
		    "(SQLSTATE %s)", db_result_error(res),
		    db_result_sqlstate(res));
		op->fcb(STORE_ERROR, 0, op->arg);
	} else if (db_result_ntuples(res) != 1 ||
	    store_int(res, 0, 0, &epoch) == -1) {
		log_warnx("store: the epoch raise returned no epoch");
		op->fcb(STORE_ERROR, 0, op->arg);
	} else
		op->fcb(STORE_OK, epoch, op->arg);
	store_op_free(op);
}
