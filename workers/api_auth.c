/*
 * api_auth: POST /register, /login and /logout (SPEC section 2). Each is a
 * chain of async steps on the loop: PostgreSQL, the scrypt pool, Redis.
 * Failed logins are counted in Redis per account and per client address,
 * so every worker and every instance sees one count.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "common/bus.h"
#include "common/conf.h"
#include "common/crypto.h"
#include "common/db.h"
#include "common/json.h"
#include "common/log.h"
#include "common/msg.h"
#include "common/utf8.h"
#include "common/util.h"
#include "workers/api.h"
#include "workers/auth.h"
#include "workers/conn.h"
#include "workers/http.h"
#include "workers/limit.h"
#include "workers/passwd.h"
#include "workers/worker.h"

#define USERNAME_MAX	32
#define EMAIL_MAX	254
#define PASSWORD_MIN	8
#define PASSWORD_MAX	1024
#define AUTH_AWAY	"the session store is unavailable; try again"
#define REGISTER_WINDOW	3600	/* register_max is per hour */

/* One registration or login in flight. */
struct account {
	struct api_op	 api;		/* uid: the account's */
	char		 username[USERNAME_MAX + 1];
	char		 email[EMAIL_MAX + 1];
	char		 password[PASSWORD_MAX + 1];	/* login only */
	char		 token[AUTH_TOKEN_MAX + 1];
	char		 mcf[160];			/* login: stored hash */
	char		 fail_account[AUTH_KEY_MAX];	/* login: counters */
	char		 fail_addr[AUTH_KEY_MAX];
	int		 split;		/* login: the counters are on two
					 * Redis shards */
	int		 step;		/* ... and so many are reserved */
	struct db_txn	*txn;		/* register: INSERT .. COMMIT */
};

/*
 * Reserve one attempt on both counters (KEYS[1] the account's, KEYS[2] the
 * address's) before the password is checked, in one step, so that
 * concurrent attempts cannot all pass a check made before any of them is
 * counted. A counter at the limit refuses: the seconds left of its window.
 * Else both are incremented (a window starts with its first attempt) and
 * -1 comes back. A failure keeps the reservation: it is the count. With
 * the counters on two shards, each is reserved alone (one key), the
 * account's first; the address's refusing gives the account's back.
 */
static const char login_reserve_lua[] =
    "for i = 1, #KEYS do "
    "  local n = tonumber(redis.call('get', KEYS[i]) or '0') "
    "  if n >= tonumber(ARGV[1]) then "
    "    local t = redis.call('ttl', KEYS[i]) "
    "    if t < 1 then t = 1 end return t end "
    "end "
    "for i = 1, #KEYS do "
    "  if redis.call('incr', KEYS[i]) == 1 or "
    "      redis.call('ttl', KEYS[i]) < 0 then "
    "    redis.call('expire', KEYS[i], ARGV[2]) end "
    "end return -1";
/* A success gives its reservation back: the account's count starts over,
 * the address's loses the one attempt (never below zero, never a key
 * without a TTL). */
static const char login_release_lua[] =
    "redis.call('del', KEYS[1]) if #KEYS == 1 then return 1 end "
    "local n = tonumber(redis.call('get', KEYS[2]) or '0') "
    "if n > 0 then redis.call('decr', KEYS[2]) end return 1";

static int	valid_username(const char *, size_t);
static int	valid_email(const char *, size_t);
static void	account_respond(struct account *, int);
static void	register_taken_cb(struct db_result *, void *);
static void	register_allowed_cb(long long, void *);
static void	register_hashed_cb(const char *, void *);
static void	register_fail(struct account *, int, const char *);
static void	register_begun_cb(struct db_result *, void *);
static void	register_inserted_cb(struct db_result *, void *);
static void	register_session_cb(int, void *);
static void	register_committed_cb(struct db_result *, void *);
static void	register_unsession(struct account *);
static void	register_unsession_cb(int, void *);
static void	login_found_cb(struct db_result *, void *);
static void	login_limit_cb(struct bus *, struct bus_reply *, void *);
static void	login_checked_cb(int, void *);
static int	login_reserve(struct account *);
static void	login_release(struct account *);
static void	login_session_cb(int, void *);
static void	logout_cb(int, void *);

/* --- POST /register ----------------------------------------------------- */

void
api_register(struct conn *c, struct http_request *req,
    const struct route_match *m)
{
	struct worker *w = c->worker;
	const char *username, *email, *password;
	size_t ulen, elen, plen;
	struct json_doc *doc;
	struct account *a = NULL;
	const char *params[2];

	(void)m;
	if ((doc = api_body(c, req)) == NULL)
		return;
	if (api_string(c, doc, "username", &username, &ulen) == -1 ||
	    api_string(c, doc, "email", &email, &elen) == -1 ||
	    api_string(c, doc, "password", &password, &plen) == -1)
		goto done;
	if (!valid_username(username, ulen)) {
		conn_error(c, 400, "username must be 1 to 32 characters from "
		    "A-Z a-z 0-9 _ . -");
		goto done;
	}
	if (!valid_email(email, elen)) {
		conn_error(c, 400, "email must be at most 254 bytes with one @ "
		    "and something on each side, and no spaces or control "
		    "characters");
		goto done;
	}
	if (plen < PASSWORD_MIN || plen > PASSWORD_MAX) {
		conn_error(c, 400, "password must be 8 to 1024 bytes");
		goto done;
	}
	/* Without Redis no session can be made: refuse before any work. */
	if (!bus_connected(w->redis)) {
		conn_error(c, 503, AUTH_AWAY);
		goto done;
	}
	if ((a = api_op_new(c, req, 0, sizeof(*a))) == NULL)
		goto done;
	memcpy(a->username, username, ulen + 1);
	memcpy(a->email, email, elen + 1);
	memcpy(a->password, password, plen + 1);
	params[0] = a->username;
	params[1] = a->email;
	/* Name what is taken before paying for a hash; the unique indexes
	 * still decide races (register_inserted_cb). */
	api_query(&a->api, "SELECT bool_or(lower(username) = lower($1)), "
	    "bool_or(lower(email) = lower($2)) FROM users "
	    "WHERE lower(username) = lower($1) OR lower(email) = lower($2)",
	    2, params, register_taken_cb);
done:
	json_free(doc);
}

static void
register_taken_cb(struct db_result *res, void *arg)
{
	struct account *a = arg;
	struct worker *w = a->api.conn->worker;
	char key[LIMIT_KEY_MAX];
	int user_taken, email_taken;

	if (res == NULL || !db_result_ok(res)) {
		api_db_error(a->api.conn, res, "registration check");
		goto fail;
	}
	user_taken = strcmp(db_result_value(res, 0, 0), "t") == 0;
	email_taken = strcmp(db_result_value(res, 0, 1), "t") == 0;
	if (user_taken && email_taken) {
		conn_error(a->api.conn, 409, "username and email are both taken");
		goto fail;
	}
	if (user_taken || email_taken) {
		conn_error(a->api.conn, 409, user_taken ? "username is taken" :
		    "email is already registered");
		goto fail;
	}
	/* Only what would cost a hash is counted: a 409 is not a sign-up. */
	limit_key(w, "register", a->api.conn->peer, key, sizeof(key));
	if (limit_take(w, key, w->conf->register_max, REGISTER_WINDOW,
	    register_allowed_cb, a) == -1) {
		conn_error(a->api.conn, 503, AUTH_AWAY);
		goto fail;
	}
	return;
fail:
	api_op_free(a);
}

/* register_max per client address per hour (SPEC section 8). */
static void
register_allowed_cb(long long retry_after, void *arg)
{
	struct account *a = arg;

	if (retry_after != 0) {
		if (retry_after > 0)
			limit_refuse(a->api.conn, retry_after, "registrations "
			    "from this address");
		else
			conn_error(a->api.conn, 503, AUTH_AWAY);
		api_op_free(a);
		return;
	}
	if (passwd_hash(a->api.conn->worker->passwd, a->password,
	    register_hashed_cb, a) == -1) {
		conn_error(a->api.conn, 503, "too many sign-ups at once; try "
		    "again");
		api_op_free(a);
	}
}

/*
 * The row and the session are made in one transaction on one pinned
 * connection: BEGIN; INSERT; the session in Redis; COMMIT. If Redis fails,
 * or the client hangs up first, ROLLBACK: a failed registration leaves no
 * row. A COMMIT that fails takes the new session back out of Redis.
 */
static void
register_hashed_cb(const char *mcf, void *arg)
{
	struct account *a = arg;

	if (mcf == NULL) {
		conn_error(a->api.conn, 500, "password hashing failed");
		goto fail;
	}
	snprintf(a->mcf, sizeof(a->mcf), "%s", mcf);
	if ((a->txn = db_begin(a->api.conn->worker->db, register_begun_cb,
	    a)) == NULL) {
		conn_error(a->api.conn, 503, "the database is unavailable; try "
		    "again");
		goto fail;
	}
	return;
fail:
	api_op_free(a);
}

/* Roll back, answer status with msg, free a. */
static void
register_fail(struct account *a, int status, const char *msg)
{
	db_rollback(a->txn);
	a->txn = NULL;
	conn_error(a->api.conn, status, "%s", msg);
	api_op_free(a);
}

static void
register_begun_cb(struct db_result *res, void *arg)
{
	struct account *a = arg;
	const char *params[3] = { a->username, a->email, a->mcf };

	if (res == NULL || !db_result_ok(res)) {
		db_rollback(a->txn);
		a->txn = NULL;
		api_db_error(a->api.conn, res, "BEGIN");
		api_op_free(a);
		return;
	}
	if (db_txn_query(a->txn, "INSERT INTO users (username, email, "
	    "password_hash) VALUES ($1, $2, $3) RETURNING id", 3, params,
	    register_inserted_cb, a) == -1)
		register_fail(a, 503, "the database is unavailable; try again");
}

static void
register_inserted_cb(struct db_result *res, void *arg)
{
	struct account *a = arg;
	long long id;

	if (res != NULL && strcmp(db_result_sqlstate(res), "23505") == 0) {
		const char *what = db_result_constraint(res);

		register_fail(a, 409, strstr(what, "email") != NULL ?
		    "email is already registered" : "username is taken");
		return;
	}
	if (res == NULL || !db_result_ok(res) ||
	    util_parse_int(db_result_value(res, 0, 0), 1, INT64_MAX,
	    &id) == -1) {
		db_rollback(a->txn);
		a->txn = NULL;
		api_db_error(a->api.conn, res, "registration");
		api_op_free(a);
		return;
	}
	a->api.uid = id;
	/* Nobody is waiting for the token: keep nothing. */
	if (a->api.conn->state == CONN_CLOSED || a->api.conn->peer_eof) {
		register_fail(a, 503, "the client went away");
		return;
	}
	if (auth_session_create(a->api.conn->worker, a->api.uid, a->token,
	    sizeof(a->token), register_session_cb, a) == -1)
		register_session_cb(0, a);
}

static void
register_session_cb(int ok, void *arg)
{
	struct account *a = arg;
	struct db_txn *txn = a->txn;

	if (!ok) {
		register_fail(a, 503, AUTH_AWAY);
		return;
	}
	a->txn = NULL;
	if (db_commit(txn, register_committed_cb, a) == -1)
		register_committed_cb(NULL, a);
}

static void
register_committed_cb(struct db_result *res, void *arg)
{
	struct account *a = arg;

	if (res != NULL && db_result_ok(res)) {
		account_respond(a, 201);
		return;
	}
	log_warnx("conn %llu: registration of user %lld: COMMIT failed: %s",
	    (unsigned long long)a->api.conn->id, (long long)a->api.uid,
	    res != NULL ? db_result_error(res) : "connection lost");
	register_unsession(a);
	conn_error(a->api.conn, 503, "the database is unavailable; try again");
	api_op_free(a);
}

/* The session of a registration that did not commit goes again (its user
 * id is no account, so it would be refused anyway: this is tidiness). */
static void
register_unsession(struct account *a)
{
	char *uid;

	if ((uid = malloc(24)) == NULL)
		return;
	snprintf(uid, 24, "%lld", (long long)a->api.uid);
	if (auth_session_revoke(a->api.conn->worker, a->api.uid, a->token,
	    register_unsession_cb, uid) == -1)
		register_unsession_cb(0, uid);
}

static void
register_unsession_cb(int ok, void *arg)
{
	char *uid = arg;

	if (!ok)
		log_warnx("the session of uncommitted user %s stays in Redis "
		    "until it expires", uid);
	free(uid);
}

/* --- POST /login -------------------------------------------------------- */

void
api_login(struct conn *c, struct http_request *req,
    const struct route_match *m)
{
	struct worker *w = c->worker;
	const char *ident, *password, *params[1];
	size_t ilen, plen;
	struct json_doc *doc;
	struct account *a = NULL;
	int by_email;

	(void)m;
	if ((doc = api_body(c, req)) == NULL)
		return;
	by_email = json_has(doc, "email");
	if (!by_email && !json_has(doc, "username")) {
		conn_error(c, 400, "email or username is required");
		goto done;
	}
	if (api_string(c, doc, by_email ? "email" : "username", &ident,
	    &ilen) == -1 ||
	    api_string(c, doc, "password", &password, &plen) == -1)
		goto done;
	/*
	 * SPEC.md §8: no silent truncation. Longer than any email or
	 * username, or than any password, cannot be anyone's: say so rather
	 * than try a cut copy (which could match the account of its first
	 * bytes, or end mid-character).
	 */
	if (ilen > EMAIL_MAX) {
		conn_error(c, 400, "%s must be at most %d bytes",
		    by_email ? "email" : "username", EMAIL_MAX);
		goto done;
	}
	if (plen > PASSWORD_MAX) {
		conn_error(c, 400, "password must be at most %d bytes",
		    PASSWORD_MAX);
		goto done;
	}
	if (!bus_connected(w->redis)) {
		conn_error(c, 503, AUTH_AWAY);
		goto done;
	}
	if ((a = api_op_new(c, req, 0, sizeof(*a))) == NULL)
		goto done;
	memcpy(a->email, ident, ilen + 1);
	memcpy(a->password, password, plen + 1);
	/*
	 * PostgreSQL's lower(), as in the unique indexes, not ours: what
	 * matches is exactly what is unique (the database's LC_CTYPE decides
	 * non-ASCII letters). One row always, with the name as lowered.
	 */
	params[0] = a->email;
	api_query(&a->api, by_email ?
	    "SELECT l.name, u.id, u.username, u.email, u.password_hash "
	    "FROM (SELECT lower($1) AS name) l "
	    "LEFT JOIN users u ON lower(u.email) = l.name" :
	    "SELECT l.name, u.id, u.username, u.email, u.password_hash "
	    "FROM (SELECT lower($1) AS name) l "
	    "LEFT JOIN users u ON lower(u.username) = l.name", 1, params,
	    login_found_cb);
done:
	json_free(doc);
}

static void
login_found_cb(struct db_result *res, void *arg)
{
	struct account *a = arg;
	struct worker *w = a->api.conn->worker;
	const char *prefix = w->conf->redis_prefix;
	char hex[65];
	long long id;

	if (res == NULL || !db_result_ok(res)) {
		api_db_error(a->api.conn, res, "login lookup");
		api_op_free(a);
		return;
	}
	/* The account's counter: by user id when it exists, else by the
	 * name tried, so that probing unknown names is limited too. */
	if (db_result_ntuples(res) == 1 && !db_result_isnull(res, 0, 1) &&
	    util_parse_int(db_result_value(res, 0, 1), 1, INT64_MAX,
	    &id) == 0) {
		a->api.uid = id;
		snprintf(a->username, sizeof(a->username), "%s",
		    db_result_value(res, 0, 2));
		snprintf(a->email, sizeof(a->email), "%s",
		    db_result_value(res, 0, 3));
		snprintf(a->mcf, sizeof(a->mcf), "%s",
		    db_result_value(res, 0, 4));
		snprintf(hex, sizeof(hex), "%lld", id);
		(void)msg_key_login_fail(a->fail_account,
		    sizeof(a->fail_account), prefix, "user", hex);
	} else {
		/* Keyed by the name as the database lowers it, so that
		 * every spelling of it shares one counter. */
		const char *name = db_result_value(res, 0, 0);

		crypto_sha256_hex(name, strlen(name), hex);
		(void)msg_key_login_fail(a->fail_account,
		    sizeof(a->fail_account), prefix, "name", hex);
	}
	(void)msg_key_login_fail(a->fail_addr, sizeof(a->fail_addr), prefix,
	    "addr", a->api.conn->peer);
	a->split = bus_shard_of_key(a->fail_account, bus_shards_count(
	    w->shards)) != bus_shard_of_key(a->fail_addr,
	    bus_shards_count(w->shards));
	if (login_reserve(a) == -1) {
		conn_error(a->api.conn, 503, AUTH_AWAY);
		api_op_free(a);
	}
}

/*
 * The next reservation (login_reserve_lua) on the counters' shard: both
 * at once, or (split) the account's, then the address's. -1 if Redis is
 * away.
 */
static int
login_reserve(struct account *a)
{
	struct worker *w = a->api.conn->worker;
	const char *key = a->step == 0 ? a->fail_account : a->fail_addr;
	char max[16], window[16];

	snprintf(max, sizeof(max), "%d", w->conf->login_max_failures);
	snprintf(window, sizeof(window), "%d", w->conf->login_window);
	if (!a->split)
		return bus_command(bus_shards_key(w->shards, key),
		    login_limit_cb, a, "EVAL %s 2 %s %s %s %s",
		    login_reserve_lua, a->fail_account, a->fail_addr, max,
		    window);
	return bus_command(bus_shards_key(w->shards, key), login_limit_cb, a,
	    "EVAL %s 1 %s %s %s", login_reserve_lua, key, max, window);
}

static void
login_limit_cb(struct bus *bus, struct bus_reply *reply, void *arg)
{
	struct account *a = arg;
	const char *mcf = a->api.uid != 0 ? a->mcf : NULL;
	char retry[48];
	long long secs;

	(void)bus;
	if (reply == NULL || bus_reply_type(reply) != BUS_INTEGER) {
		conn_error(a->api.conn, 503, AUTH_AWAY);
		goto give_back;
	}
	if ((secs = bus_reply_integer(reply)) <= 0 && a->split &&
	    a->step++ == 0) {
		/* The account's is reserved: now the address's. */
		if (login_reserve(a) == 0)
			return;
		conn_error(a->api.conn, 503, AUTH_AWAY);
		goto give_back;
	}
	if (secs > 0) {
		snprintf(retry, sizeof(retry), "Retry-After: %lld\r\n", secs);
		conn_error_hdr(a->api.conn, 429, retry, "too many failed logins; "
		    "try again in %lld seconds", secs);
		goto give_back;
	}
	if (passwd_check(a->api.conn->worker->passwd, mcf, a->password,
	    login_checked_cb, a) == -1) {
		/* Not an attempt: give the reservation back. */
		login_release(a);
		conn_error(a->api.conn, 503, "too many logins at once; try again");
		goto fail;
	}
	return;
give_back:
	/* Split counters: the account's reservation alone was taken (step
	 * 1: the address's was refused, or never answered). */
	if (a->split && a->step == 1)
		limit_give_back(a->api.conn->worker, a->fail_account);
fail:
	api_op_free(a);
}

/* The attempt was reserved by login_reserve_lua: a failure is already
 * counted, a success gives the reservation back. */
static void
login_checked_cb(int match, void *arg)
{
	struct account *a = arg;
	struct worker *w = a->api.conn->worker;

	if (!match) {
		/* The same answer for a wrong password and an unknown
		 * account. */
		conn_error(a->api.conn, 401, "wrong email, username or password");
		api_op_free(a);
		return;
	}
	login_release(a);
	if (auth_session_create(w, a->api.uid, a->token, sizeof(a->token),
	    login_session_cb, a) == -1)
		login_session_cb(0, a);
}

/* Best effort: without Redis the counters stay until their window ends. */
static void
login_release(struct account *a)
{
	struct worker *w = a->api.conn->worker;

	if (a->split) {
		/* The address's counter loses the attempt, as below. */
		limit_give_back(w, a->fail_addr);
		if (bus_command(bus_shards_key(w->shards, a->fail_account),
		    NULL, NULL, "EVAL %s 1 %s", login_release_lua,
		    a->fail_account) == -1)
			log_warnx("login: Redis is away; the failed-login "
			    "counter %s keeps this attempt until its window "
			    "ends", a->fail_account);
		return;
	}
	if (bus_command(bus_shards_key(w->shards, a->fail_account), NULL,
	    NULL, "EVAL %s 2 %s %s",
	    login_release_lua, a->fail_account, a->fail_addr) == -1)
		log_warnx("login: Redis is away; the failed-login counters %s "
		    "and %s keep this attempt until their window ends",
		    a->fail_account, a->fail_addr);
}

static void
login_session_cb(int ok, void *arg)
{
	struct account *a = arg;

	if (ok)
		account_respond(a, 200);
	else {
		conn_error(a->api.conn, 503, AUTH_AWAY);
		api_op_free(a);
	}
}

/* --- POST /logout ------------------------------------------------------- */

struct logout {
	struct api_op	 api;
	char		 session[65];	/* SHA-256 hex of the token */
};

void
api_logout(struct conn *c, struct http_request *req,
    const struct route_match *m, int64_t uid)
{
	char token[AUTH_TOKEN_MAX + 2];
	struct logout *l;

	(void)m;
	if ((l = api_op_new(c, req, uid, sizeof(*l))) == NULL)
		return;
	/* auth_require() has just read this token. */
	if (auth_request_token(req, token, sizeof(token)) != 1 ||
	    auth_session_revoke(c->worker, uid, token, logout_cb, l) == -1) {
		conn_error(c, 503, AUTH_AWAY);
		api_op_free(l);
		return;
	}
	crypto_sha256_hex(token, strlen(token), l->session);
}

/* Revoked: sockets opened with this session close on every worker. */
static void
logout_cb(int ok, void *arg)
{
	struct logout *l = arg;
	struct worker *w = l->api.conn->worker;
	char cookie[128], channel[128], event[160];
	static const char body[] = "{\"status\":\"logged out\"}";

	if (!ok) {
		conn_error(l->api.conn, 503, AUTH_AWAY);
		api_op_free(l);
		return;
	}
	(void)msg_key_name(channel, sizeof(channel), w->conf->redis_prefix,
	    MSG_CONTROL);
	snprintf(event, sizeof(event), "{\"type\":\"session_revoked\","
	    "\"userId\":%lld,\"session\":\"%s\"}", (long long)l->api.uid,
	    l->session);
	bus_send(w->redis, "PUBLISH %s %s", channel, event);
	auth_cookie_clear(cookie, sizeof(cookie));
	conn_respond(l->api.conn, 202, "application/json", body, sizeof(body) - 1,
	    cookie);
	api_op_free(l);
}

/* --- helpers ------------------------------------------------------------ */

static int
valid_username(const char *s, size_t len)
{
	return len >= 1 && len <= USERNAME_MAX &&
	    strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
	    "0123456789_.-") == len;
}

/*
 * At most EMAIL_MAX bytes, one '@' with something on each side, and
 * nothing invisible: no white space (ASCII or Unicode), no control
 * character and no format character (zero-width, bidi override): a "\r\n"
 * in an address is a header injection waiting for the first mail, and an
 * invisible character makes two addresses look the same. s is valid UTF-8
 * (json_get_string() checked it).
 */
static int
valid_email(const char *s, size_t len)
{
	const char *at = memchr(s, '@', len);

	return len <= EMAIL_MAX && at != NULL && at != s &&
	    at != s + len - 1 && memchr(at + 1, '@', len - (size_t)(at - s) -
	    1) == NULL && !utf8_has_invisible(s, len);
}

/* 200 or 201 with {"id","username","email","token"} and the cookie. */
static void
account_respond(struct account *a, int status)
{
	struct evbuffer *body = a->api.body;
	char cookie[256];

	evbuffer_add_printf(body, "{\"id\":%lld,", (long long)a->api.uid);
	json_add_key(body, "username");
	json_add_cstr(body, a->username);
	evbuffer_add(body, ",", 1);
	json_add_key(body, "email");
	json_add_cstr(body, a->email);
	evbuffer_add(body, ",", 1);
	json_add_key(body, "token");
	json_add_cstr(body, a->token);
	evbuffer_add(body, "}", 1);
	auth_cookie_set(a->api.conn->worker, a->token, cookie, sizeof(cookie));
	conn_json(a->api.conn, status, body, cookie);
	api_op_free(a);
}
