/*
 * auth: password hashing on a thread pool, and sessions in Redis. The pool
 * threads do nothing but scrypt: they take jobs from a mutex-protected
 * queue and hand results back to the loop through a pipe, so a burst of
 * logins never delays a request or a chat message on the loop. Session
 * keys carry the token's SHA-256, never the token itself.
 */
#include "config.h"

#include <sys/queue.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>
#include <libscrypt.h>

#include "common/bus.h"
#include "common/conf.h"
#include "common/crypto.h"
#include "common/log.h"
#include "common/util.h"
#include "workers/auth.h"
#include "workers/conn.h"
#include "workers/http.h"
#include "workers/router.h"
#include "workers/worker.h"

/*
 * scrypt cost: N = 2^14, r = 8, p = 1 takes about 75 ms on one core of the
 * development machine (libscrypt's default p = 16 would take over a
 * second). Stored hashes carry their own parameters, so raising these
 * later keeps old hashes valid.
 */
#define AUTH_SCRYPT_N		16384
#define AUTH_SCRYPT_R		8
#define AUTH_SCRYPT_P		1
#define AUTH_QUEUE_MAX		512	/* jobs waiting; beyond: 503 */
#define AUTH_PASSWORD_MAX	1024
#define AUTH_TOKEN_BYTES	32	/* 256 bits of entropy */

/* A hash of a random password with the same parameters: what an unknown
 * account is checked against, so that it costs as much as a wrong one. */
static const char auth_dummy_mcf[] =
    "$s1$0e0801$X857KfWvZo9IlzvSnuLtFA==$WJwDKBA550TNDl5TT+KaO0WyOWBlhjKsvpi"
    "OV5tO7iegiQeL+HQvJLOpmei3UIQdKAbG7FauOODtxt1CmOf8gQ==";

enum auth_kind {
	AUTH_HASH,
	AUTH_CHECK
};

struct auth_job {
	STAILQ_ENTRY(auth_job) entry;
	enum auth_kind	 kind;
	char		 password[AUTH_PASSWORD_MAX + 1];
	char		 mcf[SCRYPT_MCF_LEN + 1];	/* in or out */
	int		 result;	/* hash: 1 ok; check: 1 match */
	auth_hash_cb	*hash_cb;
	auth_check_cb	*check_cb;
	void		*arg;
};

STAILQ_HEAD(auth_jobs, auth_job);

struct auth_pool {
	pthread_t	*threads;
	int		 nthreads;
	pthread_mutex_t	 mu;
	pthread_cond_t	 cv;
	struct auth_jobs todo;		/* guarded by mu */
	struct auth_jobs done;		/* guarded by mu */
	int		 ntodo;		/* guarded by mu */
	int		 stopping;	/* guarded by mu */
	int		 wake[2];	/* threads write, the loop reads */
	struct event	*wake_ev;
};

/* A session lookup in flight for auth_require(). */
struct auth_lookup {
	struct conn		*conn;
	struct http_request	*req;
	struct route_match	 m;
	auth_handler		*handler;
};

struct auth_op {
	auth_session_cb	*cb;
	void		*arg;
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

static void	*auth_thread(void *);
static void	 auth_wake_cb(evutil_socket_t, short, void *);
static int	 auth_submit(struct auth_pool *, struct auth_job *);
static void	 auth_job_free(struct auth_job *);
static void	 auth_lookup_cb(struct bus *, struct bus_reply *, void *);
static void	 auth_op_cb(struct bus *, struct bus_reply *, void *);
static void	 auth_wipe(void *, size_t);
static void	 auth_index_key(const struct worker *, int64_t, char *, size_t);

/* --- the scrypt pool ---------------------------------------------------- */

struct auth_pool *
auth_pool_new(struct event_base *base, int threads)
{
	struct auth_pool *p;
	sigset_t all, old;
	int i;

	if ((p = calloc(1, sizeof(*p))) == NULL)
		return NULL;
	STAILQ_INIT(&p->todo);
	STAILQ_INIT(&p->done);
	p->wake[0] = p->wake[1] = -1;
	if (pthread_mutex_init(&p->mu, NULL) != 0 ||
	    pthread_cond_init(&p->cv, NULL) != 0 || pipe(p->wake) == -1)
		goto fail;
	fcntl(p->wake[0], F_SETFL, O_NONBLOCK);
	fcntl(p->wake[1], F_SETFL, O_NONBLOCK);
	fcntl(p->wake[0], F_SETFD, FD_CLOEXEC);
	fcntl(p->wake[1], F_SETFD, FD_CLOEXEC);
	p->wake_ev = event_new(base, p->wake[0], EV_READ | EV_PERSIST,
	    auth_wake_cb, p);
	if (p->wake_ev == NULL || event_add(p->wake_ev, NULL) == -1)
		goto fail;
	if ((p->threads = calloc((size_t)threads, sizeof(pthread_t))) == NULL)
		goto fail;
	/* Signals belong to the loop's thread, not to the hashers. */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	for (i = 0; i < threads; i++) {
		if (pthread_create(&p->threads[i], NULL, auth_thread, p) != 0)
			break;
		p->nthreads++;
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (p->nthreads == 0)
		goto fail;
	return p;
fail:
	log_warnx("cannot start the password hashing threads");
	auth_pool_free(p);
	return NULL;
}

void
auth_pool_free(struct auth_pool *p)
{
	struct auth_job *j;

	if (p == NULL)
		return;
	pthread_mutex_lock(&p->mu);
	p->stopping = 1;
	pthread_cond_broadcast(&p->cv);
	pthread_mutex_unlock(&p->mu);
	for (int i = 0; i < p->nthreads; i++)
		pthread_join(p->threads[i], NULL);
	while ((j = STAILQ_FIRST(&p->todo)) != NULL) {
		STAILQ_REMOVE_HEAD(&p->todo, entry);
		auth_job_free(j);
	}
	while ((j = STAILQ_FIRST(&p->done)) != NULL) {
		STAILQ_REMOVE_HEAD(&p->done, entry);
		auth_job_free(j);
	}
	if (p->wake_ev != NULL)
		event_free(p->wake_ev);
	if (p->wake[0] != -1)
		close(p->wake[0]);
	if (p->wake[1] != -1)
		close(p->wake[1]);
	pthread_cond_destroy(&p->cv);
	pthread_mutex_destroy(&p->mu);
	free(p->threads);
	free(p);
}

int
auth_hash(struct auth_pool *p, const char *password, auth_hash_cb *cb,
    void *arg)
{
	struct auth_job *j;

	if (strlen(password) > AUTH_PASSWORD_MAX ||
	    (j = calloc(1, sizeof(*j))) == NULL)
		return -1;
	j->kind = AUTH_HASH;
	memcpy(j->password, password, strlen(password) + 1);
	j->hash_cb = cb;
	j->arg = arg;
	return auth_submit(p, j);
}

int
auth_check(struct auth_pool *p, const char *mcf, const char *password,
    auth_check_cb *cb, void *arg)
{
	struct auth_job *j;

	if (mcf == NULL)
		mcf = auth_dummy_mcf;
	if (strlen(password) > AUTH_PASSWORD_MAX ||
	    strlen(mcf) > SCRYPT_MCF_LEN ||
	    (j = calloc(1, sizeof(*j))) == NULL)
		return -1;
	j->kind = AUTH_CHECK;
	memcpy(j->password, password, strlen(password) + 1);
	memcpy(j->mcf, mcf, strlen(mcf) + 1);
	/* The dummy never matches, whatever the password. */
	j->result = mcf == auth_dummy_mcf ? -1 : 0;
	j->check_cb = cb;
	j->arg = arg;
	return auth_submit(p, j);
}

static int
auth_submit(struct auth_pool *p, struct auth_job *j)
{
	pthread_mutex_lock(&p->mu);
	if (p->ntodo >= AUTH_QUEUE_MAX) {
		pthread_mutex_unlock(&p->mu);
		auth_job_free(j);
		return -1;
	}
	STAILQ_INSERT_TAIL(&p->todo, j, entry);
	p->ntodo++;
	pthread_cond_signal(&p->cv);
	pthread_mutex_unlock(&p->mu);
	return 0;
}

/* A hashing thread: scrypt, nothing else; never touches the loop. */
static void *
auth_thread(void *arg)
{
	struct auth_pool *p = arg;
	struct auth_job *j;
	char mcf[SCRYPT_MCF_LEN + 1];
#ifdef SCHED_IDLE
	struct sched_param sp = { 0 };

	/*
	 * Hashing only gets the CPU the event loops leave: a storm of logins
	 * slows logins, not chat. (Linux; elsewhere the threads run at the
	 * loops' priority.)
	 */
	if (pthread_setschedparam(pthread_self(), SCHED_IDLE, &sp) != 0)
		log_warnx("scrypt thread: cannot lower its priority");
#endif

	for (;;) {
		pthread_mutex_lock(&p->mu);
		while (STAILQ_EMPTY(&p->todo) && !p->stopping)
			pthread_cond_wait(&p->cv, &p->mu);
		if (p->stopping) {
			pthread_mutex_unlock(&p->mu);
			return NULL;
		}
		j = STAILQ_FIRST(&p->todo);
		STAILQ_REMOVE_HEAD(&p->todo, entry);
		p->ntodo--;
		pthread_mutex_unlock(&p->mu);

		if (j->kind == AUTH_HASH) {
			j->result = libscrypt_hash(mcf, j->password,
			    AUTH_SCRYPT_N, AUTH_SCRYPT_R, AUTH_SCRYPT_P) > 0;
			if (j->result)
				memcpy(j->mcf, mcf, sizeof(mcf));
		} else {
			int dummy = j->result == -1;

			/* libscrypt_check writes into the MCF it is given. */
			j->result = libscrypt_check(j->mcf, j->password) > 0 &&
			    !dummy;
		}
		auth_wipe(j->password, sizeof(j->password));

		pthread_mutex_lock(&p->mu);
		STAILQ_INSERT_TAIL(&p->done, j, entry);
		pthread_mutex_unlock(&p->mu);
		(void)!write(p->wake[1], "", 1);
	}
}

/* On the loop: run the callbacks of finished jobs. */
static void
auth_wake_cb(evutil_socket_t fd, short what, void *arg)
{
	struct auth_pool *p = arg;
	struct auth_jobs done;
	struct auth_job *j;
	char buf[256];

	(void)what;
	while (read(fd, buf, sizeof(buf)) > 0)
		;
	pthread_mutex_lock(&p->mu);
	STAILQ_INIT(&done);
	STAILQ_CONCAT(&done, &p->done);
	pthread_mutex_unlock(&p->mu);
	while ((j = STAILQ_FIRST(&done)) != NULL) {
		STAILQ_REMOVE_HEAD(&done, entry);
		if (j->kind == AUTH_HASH)
			j->hash_cb(j->result ? j->mcf : NULL, j->arg);
		else
			j->check_cb(j->result, j->arg);
		auth_job_free(j);
	}
}

static void
auth_job_free(struct auth_job *j)
{
	auth_wipe(j, sizeof(*j));
	free(j);
}

/* Passwords do not linger in freed memory. */
static void
auth_wipe(void *p, size_t len)
{
#ifdef HAVE_EXPLICIT_BZERO
	explicit_bzero(p, len);
#else
	volatile unsigned char *v = p;

	while (len--)
		*v++ = 0;
#endif
}

/* --- sessions ----------------------------------------------------------- */

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
	snprintf(key, keylen, "%ssession:%s", w->conf->redis_prefix, hex);
}

static void
auth_index_key(const struct worker *w, int64_t uid, char *key, size_t keylen)
{
	snprintf(key, keylen, "%suser:%lld:sessions", w->conf->redis_prefix,
	    (long long)uid);
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
	if (bus_command(w->redis, auth_lookup_cb, a, "GET %s", key) == -1) {
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

	if (!bus_connected(w->redis) ||
	    util_token(token, tokenlen, AUTH_TOKEN_BYTES) == -1 ||
	    (op = malloc(sizeof(*op))) == NULL)
		return -1;
	op->cb = cb;
	op->arg = arg;
	auth_session_key(w, token, key, sizeof(key));
	auth_index_key(w, uid, index, sizeof(index));
	snprintf(id, sizeof(id), "%lld", (long long)uid);
	snprintf(ttl, sizeof(ttl), "%d", w->conf->session_ttl);
	if (bus_command(w->redis, auth_op_cb, op, "EVAL %s 2 %s %s %s %s",
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

	if ((op = malloc(sizeof(*op))) == NULL)
		return -1;
	op->cb = cb;
	op->arg = arg;
	auth_session_key(w, token, key, sizeof(key));
	auth_index_key(w, uid, index, sizeof(index));
	if (bus_command(w->redis, auth_op_cb, op, "EVAL %s 2 %s %s",
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

	if ((op = malloc(sizeof(*op))) == NULL)
		return -1;
	op->cb = cb;
	op->arg = arg;
	auth_index_key(w, uid, index, sizeof(index));
	if (bus_command(w->redis, auth_op_cb, op, "EVAL %s 1 %s",
	    auth_revoke_all_lua, index) == -1) {
		free(op);
		return -1;
	}
	return 0;
}

static void
auth_op_cb(struct bus *bus, struct bus_reply *reply, void *arg)
{
	struct auth_op *op = arg;

	(void)bus;
	if (reply != NULL && bus_reply_type(reply) == BUS_ERROR)
		log_warnx("session script failed: %s",
		    bus_reply_str(reply, NULL));
	op->cb(reply != NULL && bus_reply_type(reply) == BUS_INTEGER, op->arg);
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
