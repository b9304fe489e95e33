/*
 * auth: sessions in Redis and the check that runs before every route that
 * needs a caller (auth_require). Session keys carry the token's SHA-256,
 * never the token itself. Passwords are passwd.c's.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/bus.h"
#include "common/conf.h"
#include "common/crypto.h"
#include "common/log.h"
#include "common/msg.h"
#include "common/util.h"
#include "workers/auth.h"
#include "workers/conn.h"
#include "workers/http.h"
#include "workers/router.h"
#include "workers/worker.h"

#define AUTH_TOKEN_BYTES	32	/* 256 bits of entropy */

/* A session lookup in flight for auth_require(). */
struct auth_lookup {
	struct conn		*conn;
	struct http_request	*req;
	struct route_match	 m;
	auth_handler		*handler;
};

/*
 * A session operation: one script, or one per shard for "every session
 * of a user" (each shard indexes the sessions it holds).
 */
struct auth_op {
	auth_session_cb	*cb;
	void		*arg;
	int		 pending;	/* scripts not answered yet */
	int		 ok;		/* every answer so far was good */
};

/* Create a session: the key with the user id and TTL, and its index. */
static const char auth_create_lua[] =
    "redis.call('set', KEYS[1], ARGV[1], 'EX', ARGV[2]) "
    "redis.call('sadd', KEYS[2], KEYS[1]) "
    "redis.call('expire', KEYS[2], ARGV[2]) return 1";
static const char auth_revoke_lua[] =
    "redis.call('del', KEYS[1]) redis.call('srem', KEYS[2], KEYS[1]) "
    "return 1";
static const char auth_revoke_all_lua[] =
    "local keys = redis.call('smembers', KEYS[1]) "
    "for _, k in ipairs(keys) do redis.call('del', k) end "
    "redis.call('del', KEYS[1]) return #keys";

static void	 auth_lookup_cb(struct bus *, struct bus_reply *, void *);
static void	 auth_op_cb(struct bus *, struct bus_reply *, void *);
static void	 auth_index_key(const struct worker *, int64_t, char *, size_t);
static struct auth_op *auth_op_new(auth_session_cb *, void *, int);

int
auth_request_token(const struct http_request *req, char *out, size_t outlen)
{
	const char *h = http_header(req, "Authorization");
	size_t n;
	int r;

	if (h != NULL) {
		if (strncasecmp(h, "Bearer ", 7) != 0)
			return -1;
		h += 7;
		while (*h == ' ')
			h++;
		if ((n = strlen(h)) == 0 || n >= outlen)
			return -1;
		memcpy(out, h, n + 1);
	} else if ((r = http_cookie_get(req, "auth_token", out, outlen)) != 1)
		return r;
	n = strlen(out);
	if (n < 16 || n > AUTH_TOKEN_MAX ||
	    strspn(out, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
	    "0123456789-_") != n)
		return -1;
	return 1;
}

void
auth_session_key(const struct worker *w, const char *token, char *key,
    size_t keylen)
{
	char hex[65];

	crypto_sha256_hex(token, strlen(token), hex);
	(void)msg_key_session(key, keylen, w->conf->redis_prefix, hex);
}

static void
auth_index_key(const struct worker *w, int64_t uid, char *key, size_t keylen)
{
	(void)msg_key_user_sessions(key, keylen, w->conf->redis_prefix, uid);
}

void
auth_require(struct conn *c, struct http_request *req,
    const struct route_match *m, auth_handler *h)
{
	struct worker *w = c->worker;
	struct auth_lookup *a;
	char token[AUTH_TOKEN_MAX + 2], key[AUTH_KEY_MAX];

	switch (auth_request_token(req, token, sizeof(token))) {
	case 0:
		conn_error(c, 401, "authentication required: send "
		    "\"Authorization: Bearer <token>\" or the auth_token "
		    "cookie");
		return;
	case -1:
		conn_error(c, 401, "invalid token");
		return;
	}
	if ((a = calloc(1, sizeof(*a))) == NULL) {
		conn_error(c, 500, "out of memory");
		return;
	}
	a->conn = c;
	a->req = req;
	a->m = *m;
	a->handler = h;
	auth_session_key(w, token, key, sizeof(key));
	if (bus_command(bus_shards_key(w->shards, key), auth_lookup_cb, a,
	    "GET %s", key) == -1) {
		free(a);
		conn_error(c, 503, "the session store is unavailable; try "
		    "again");
	}
}

static void
auth_lookup_cb(struct bus *bus, struct bus_reply *reply, void *arg)
{
	struct auth_lookup *a = arg;
	long long uid;

	(void)bus;
	if (reply == NULL)
		conn_error(a->conn, 503, "the session store is unavailable; "
		    "try again");
	else if (bus_reply_type(reply) != BUS_STRING ||
	    util_parse_int(bus_reply_str(reply, NULL), 1, INT64_MAX,
	    &uid) == -1)
		conn_error(a->conn, 401, "the session has expired or was "
		    "revoked; log in again");
	else {
		a->conn->user_id = uid;
		a->handler(a->conn, a->req, &a->m, uid);
	}
	free(a);
}

int
auth_session_create(struct worker *w, int64_t uid, char *token,
    size_t tokenlen, auth_session_cb *cb, void *arg)
{
	char key[AUTH_KEY_MAX], index[AUTH_KEY_MAX], id[24], ttl[16];
	struct auth_op *op;
	struct bus *bus;

	if (util_token(token, tokenlen, AUTH_TOKEN_BYTES) == -1)
		return -1;
	auth_session_key(w, token, key, sizeof(key));
	bus = bus_shards_key(w->shards, key);
	if (!bus_connected(bus) || (op = auth_op_new(cb, arg, 1)) == NULL)
		return -1;
	auth_index_key(w, uid, index, sizeof(index));
	snprintf(id, sizeof(id), "%lld", (long long)uid);
	snprintf(ttl, sizeof(ttl), "%d", w->conf->session_ttl);
	if (bus_command(bus, auth_op_cb, op, "EVAL %s 2 %s %s %s %s",
	    auth_create_lua, key, index, id, ttl) == -1) {
		free(op);
		return -1;
	}
	return 0;
}

int
auth_session_revoke(struct worker *w, int64_t uid, const char *token,
    auth_session_cb *cb, void *arg)
{
	char key[AUTH_KEY_MAX], index[AUTH_KEY_MAX];
	struct auth_op *op;

	if ((op = auth_op_new(cb, arg, 1)) == NULL)
		return -1;
	auth_session_key(w, token, key, sizeof(key));
	auth_index_key(w, uid, index, sizeof(index));
	if (bus_command(bus_shards_key(w->shards, key), auth_op_cb, op,
	    "EVAL %s 2 %s %s",
	    auth_revoke_lua, key, index) == -1) {
		free(op);
		return -1;
	}
	return 0;
}

int
auth_session_revoke_all(struct worker *w, int64_t uid, auth_session_cb *cb,
    void *arg)
{
	char index[AUTH_KEY_MAX];
	struct auth_op *op;
	int n = bus_shards_count(w->shards);

	/* All or nothing: every shard must be up to be asked. */
	if (!bus_shards_connected(w->shards) ||
	    (op = auth_op_new(cb, arg, n)) == NULL)
		return -1;
	auth_index_key(w, uid, index, sizeof(index));
	for (int i = 0; i < n; i++)
		if (bus_command(bus_shards_at(w->shards, i), auth_op_cb, op,
		    "EVAL %s 1 %s", auth_revoke_all_lua, index) == -1) {
			/* Those sent answer later: op->cb with 0. */
			op->ok = 0;
			if (--op->pending == 0) {
				free(op);
				return -1;
			}
		}
	return 0;
}

static struct auth_op *
auth_op_new(auth_session_cb *cb, void *arg, int scripts)
{
	struct auth_op *op;

	if ((op = malloc(sizeof(*op))) == NULL)
		return NULL;
	op->cb = cb;
	op->arg = arg;
	op->pending = scripts;
	op->ok = 1;
	return op;
}

static void
auth_op_cb(struct bus *bus, struct bus_reply *reply, void *arg)
{
	struct auth_op *op = arg;

	(void)bus;
	if (reply != NULL && bus_reply_type(reply) == BUS_ERROR)
		log_warnx("session script failed: %s",
		    bus_reply_str(reply, NULL));
	if (reply == NULL || bus_reply_type(reply) != BUS_INTEGER)
		op->ok = 0;
	if (--op->pending > 0)
		return;
	op->cb(op->ok, op->arg);
	free(op);
}

void
auth_cookie_set(const struct worker *w, const char *token, char *out,
    size_t outlen)
{
	snprintf(out, outlen, "Set-Cookie: auth_token=%s; HttpOnly; "
	    "SameSite=Lax; Path=/; Max-Age=%d\r\n", token,
	    w->conf->session_ttl);
}

void
auth_cookie_clear(char *out, size_t outlen)
{
	snprintf(out, outlen, "Set-Cookie: auth_token=; HttpOnly; "
	    "SameSite=Lax; Path=/; Max-Age=0\r\n");
}
