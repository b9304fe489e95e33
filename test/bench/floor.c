/*
 * floor: the fan-out floor of make bench. A minimal WebSocket broadcaster
 * that speaks what loadgen's chat mode needs and nothing more: the RFC 6455
 * handshake on GET /ws/joinRoom/<room> (no authentication), a join event to
 * the joiner, and every text frame a client sends framed once as a message
 * event and written to every member of its room, the sender included. No
 * JSON parser, no broker, no storage; the same framing as GoChat (unmasked
 * server text frames, one per event).
 *
 *	floor -t THREADS -p PORT [-S CONNINFO [-r HOST:PORT] [-H HUBS]]
 *
 * With -S, the storing floor: every message goes through a Redis inbox, a
 * hub thread that stores it in PostgreSQL and a PUBLISH before it is
 * delivered (see store_send() below).
 *
 * Shape: THREADS threads (make bench gives as many as GoChat has workers),
 * each with its own libevent loop and its share of the connections (they
 * all accept on one listening socket, as GoChat's workers do). A message is
 * framed once by the thread that read it and handed, under one publish
 * lock (one total order per room, as GoChat's hub gives), to every
 * thread's inbox; a thread wakes through a pipe only when its inbox was
 * empty. A thread copies each message of its inbox into the output of its
 * members of the room, then writes every connection that got output, ONE
 * write(2) each (everything pending), and watches EV_WRITE only for what
 * the socket would not take. libevent, not raw epoll, so that the ratio
 * measures GoChat's own work and not the loop library: it adds nothing per
 * write here (no bufferevents; the read events are persistent).
 *
 * Loopback only (127.0.0.1). A client whose output passes FLOOR_OUT_MAX is
 * cut. Exits on SIGINT or SIGTERM.
 */
#include "config.h"

#include <sys/types.h>
#include <sys/socket.h>

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <event2/event.h>
#include <hiredis/hiredis.h>
#include <hiredis/async.h>
#include <hiredis/adapters/libevent.h>
#include <libpq-fe.h>
#include <openssl/evp.h>

#define FLOOR_THREADS_MAX	64
#define FLOOR_ROOMS_MAX		4096
#define FLOOR_ROOM_NAME_MAX	128
#define FLOOR_HEAD_MAX		8192
#define FLOOR_IN_MAX		(1 << 20)
#define FLOOR_OUT_MAX		(16 << 20)
#define FLOOR_READ_BUF		(64 * 1024)
#define FLOOR_ACCEPT_BATCH	16
#define FLOOR_GUID		"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
#define FLOOR_HUBS_MAX		16
#define FLOOR_BATCH		256	/* GoChat's hub batch */
#define FLOOR_CHANNEL		"floor:out"
#define FLOOR_INBOX		"floor:inbox:%d"	/* of hub %d */

struct floor_msg {
	atomic_uint	 refs;
	int		 room;
	size_t		 len;
	unsigned char	 bytes[];
};

struct floor_thread;

struct floor_conn {
	struct floor_thread *t;
	int		 fd;
	int		 open;		/* handshake done */
	int		 room;
	size_t		 slot;		/* in t->members[room] */
	int		 pending;	/* in t->pending */
	int		 dead;		/* closed; freed by the flush */
	struct event	*rev, *wev;
	unsigned char	*in;
	size_t		 inlen, incap;
	unsigned char	*out;
	size_t		 outoff, outlen, outcap;
};

struct floor_members {
	struct floor_conn **v;
	size_t		 n, cap;
};

struct floor_thread {
	pthread_t	 tid;
	struct event_base *base;
	struct event	*accept_ev, *wake_ev, *sig_ev[2];
	int		 wake[2];
	pthread_mutex_t	 lock;		/* inbox */
	struct floor_msg **inbox;
	size_t		 ninbox, capinbox;
	struct floor_msg **work;	/* the inbox taken, being delivered */
	size_t		 capwork;
	struct floor_conn **pending;
	size_t		 npending, cappending;
	struct floor_members members[FLOOR_ROOMS_MAX];
	redisAsyncContext *pub, *sub;	/* -S: XADD, SUBSCRIBE */
	unsigned char	 rbuf[FLOOR_READ_BUF];
};

/* -S: a hub thread, with the rooms r where r % nhubs == its index. */
struct floor_hub {
	pthread_t	 tid;
	int		 index;
	char		 inbox[32];
	redisContext	*rc;
	PGconn		*pg;
	uint64_t	 seq[FLOOR_ROOMS_MAX];
	unsigned char	*arr[4];	/* array literals: room, id,
					 * content, inbox id */
	size_t		 arrlen[4], arrcap[4];
	unsigned char	*out;		/* the batch, packed for FLOOR_CHANNEL */
	size_t		 outlen, outcap;
};

static int			 g_listen = -1;
static int			 g_nthreads;
static struct floor_thread	*g_threads;
static pthread_mutex_t		 g_pub = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t		 g_rooms_lock = PTHREAD_MUTEX_INITIALIZER;
static char			 g_rooms[FLOOR_ROOMS_MAX][FLOOR_ROOM_NAME_MAX];
static int			 g_nrooms;
static uint64_t			 g_seq;		/* under g_pub */
static const char		*g_conninfo;	/* -S: store and forward */
static const char		*g_redis_host = "127.0.0.1";
static int			 g_redis_port = 6379;
static int			 g_nhubs = 1;
static struct floor_hub		*g_hubs;

static void	floor_close(struct floor_conn *);

static void *
xrealloc(void *p, size_t n)
{
	if ((p = realloc(p, n)) == NULL) {
		fprintf(stderr, "floor: out of memory\n");
		exit(1);
	}
	return p;
}

/* Grow *buf (capacity *cap) to hold need bytes. */
static void
grow(unsigned char **buf, size_t *cap, size_t need)
{
	size_t n = *cap ? *cap : 512;

	if (need <= *cap)
		return;
	while (n < need)
		n *= 2;
	*buf = xrealloc(*buf, n);
	*cap = n;
}

static int
room_index(const char *name, size_t len)
{
	int i;

	if (len == 0 || len >= FLOOR_ROOM_NAME_MAX)
		return -1;
	pthread_mutex_lock(&g_rooms_lock);
	for (i = 0; i < g_nrooms; i++)
		if (strlen(g_rooms[i]) == len &&
		    memcmp(g_rooms[i], name, len) == 0)
			break;
	if (i == g_nrooms) {
		if (g_nrooms == FLOOR_ROOMS_MAX)
			i = -1;
		else {
			memcpy(g_rooms[i], name, len);
			g_rooms[i][len] = '\0';
			g_nrooms++;
		}
	}
	pthread_mutex_unlock(&g_rooms_lock);
	return i;
}

/* An unmasked server frame of opcode op around payload, into buf. */
static size_t
frame_head(unsigned char *h, int op, size_t len)
{
	h[0] = (unsigned char)(0x80 | op);
	if (len < 126) {
		h[1] = (unsigned char)len;
		return 2;
	}
	if (len <= 0xffff) {
		h[1] = 126;
		h[2] = (unsigned char)(len >> 8);
		h[3] = (unsigned char)len;
		return 4;
	}
	h[1] = 127;
	for (int i = 0; i < 8; i++)
		h[2 + i] = (unsigned char)((uint64_t)len >> (56 - 8 * i));
	return 10;
}

/* Queue bytes for c and put it on its thread's pending list. */
static void
conn_queue(struct floor_conn *c, const void *p, size_t n)
{
	struct floor_thread *t = c->t;

	if (c->dead)
		return;
	if (c->outlen - c->outoff + n > FLOOR_OUT_MAX) {
		floor_close(c);
		return;
	}
	if (c->outoff > 0 && c->outoff == c->outlen)
		c->outoff = c->outlen = 0;
	grow(&c->out, &c->outcap, c->outlen + n);
	memcpy(c->out + c->outlen, p, n);
	c->outlen += n;
	if (!c->pending) {
		if (t->npending == t->cappending) {
			t->cappending = t->cappending ? 2 * t->cappending : 256;
			t->pending = xrealloc(t->pending, t->cappending *
			    sizeof(*t->pending));
		}
		t->pending[t->npending++] = c;
		c->pending = 1;
	}
}

static void
conn_frame(struct floor_conn *c, int op, const void *p, size_t n)
{
	unsigned char h[10];

	conn_queue(c, h, frame_head(h, op, n));
	conn_queue(c, p, n);
}

/* One write of everything c has pending; EV_WRITE for the rest. */
static void
conn_write(struct floor_conn *c)
{
	ssize_t n;

	if (c->dead || c->outlen == c->outoff)
		return;
	n = write(c->fd, c->out + c->outoff, c->outlen - c->outoff);
	if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK &&
	    errno != EINTR) {
		floor_close(c);
		return;
	}
	if (n > 0)
		c->outoff += (size_t)n;
	if (c->outoff < c->outlen)
		event_add(c->wev, NULL);
	else
		c->outoff = c->outlen = 0;
}

/* Before the thread waits again: every connection with output. */
static void
flush_pending(struct floor_thread *t)
{
	size_t i;

	for (i = 0; i < t->npending; i++) {
		struct floor_conn *c = t->pending[i];

		c->pending = 0;
		if (c->dead) {
			free(c->in);
			free(c->out);
			free(c);
			continue;
		}
		if (!event_pending(c->wev, EV_WRITE, NULL))
			conn_write(c);
	}
	t->npending = 0;
}

static void
floor_close(struct floor_conn *c)
{
	struct floor_thread *t = c->t;

	if (c->dead)
		return;
	c->dead = 1;
	if (c->open) {
		struct floor_members *m = &t->members[c->room];

		m->v[c->slot] = m->v[--m->n];
		m->v[c->slot]->slot = c->slot;
	}
	event_free(c->rev);
	event_free(c->wev);
	close(c->fd);
	if (!c->pending) {
		free(c->in);
		free(c->out);
		free(c);
	}
}

/* A message event of room with id around payload, framed once. */
static struct floor_msg *
frame_msg(int room, uint64_t seq, const unsigned char *payload, size_t plen,
    unsigned refs)
{
	static const char pre[] = "{\"type\":\"message\",\"id\":";
	static const char mid[] = ",\"roomId\":\"";
	static const char mid2[] = "\",\"userId\":1,\"username\":\"floor\","
	    "\"content\":\"";
	static const char post[] = "\"}";
	char id[24];
	size_t rlen = strlen(g_rooms[room]), jlen, hl;
	struct floor_msg *m;
	unsigned char h[10], *p;
	int idlen;

	idlen = snprintf(id, sizeof(id), "%llu", (unsigned long long)seq);
	jlen = sizeof(pre) - 1 + (size_t)idlen + sizeof(mid) - 1 + rlen +
	    sizeof(mid2) - 1 + plen + sizeof(post) - 1;
	hl = frame_head(h, 1, jlen);
	m = xrealloc(NULL, sizeof(*m) + hl + jlen);
	atomic_init(&m->refs, refs);
	m->room = room;
	m->len = hl + jlen;
	p = m->bytes;
#define PUT(s, n) do { memcpy(p, (s), (n)); p += (n); } while (0)
	PUT(h, hl);
	PUT(pre, sizeof(pre) - 1);
	PUT(id, (size_t)idlen);
	PUT(mid, sizeof(mid) - 1);
	PUT(g_rooms[room], rlen);
	PUT(mid2, sizeof(mid2) - 1);
	PUT(payload, plen);
	PUT(post, sizeof(post) - 1);
#undef PUT
	return m;
}

/* Hand a framed message to every thread, in one order for all. */
static void
publish(int room, const unsigned char *payload, size_t plen)
{
	struct floor_msg *m;
	int i;

	pthread_mutex_lock(&g_pub);
	m = frame_msg(room, ++g_seq, payload, plen, (unsigned)g_nthreads);
	for (i = 0; i < g_nthreads; i++) {
		struct floor_thread *t = &g_threads[i];
		int was_empty;

		pthread_mutex_lock(&t->lock);
		was_empty = t->ninbox == 0;
		if (t->ninbox == t->capinbox) {
			t->capinbox = t->capinbox ? 2 * t->capinbox : 1024;
			t->inbox = xrealloc(t->inbox, t->capinbox *
			    sizeof(*t->inbox));
		}
		t->inbox[t->ninbox++] = m;
		pthread_mutex_unlock(&t->lock);
		if (was_empty && write(t->wake[1], "", 1) == -1) {
			/* full: the thread is awake already */
		}
	}
	pthread_mutex_unlock(&g_pub);
}

/*
 * -S CONNINFO: store and forward, the floor of GoChat's storing path. A
 * text frame is XADDed (r <room index>, p <payload>) to its hub's inbox,
 * floor:inbox:<room % hubs>, on its thread's own Redis connection
 * (hiredis' libevent adapter, as GoChat's workers do). A hub thread reads
 * its inbox in batches of up to 256 (XREADGROUP, blocking), numbers each
 * message in its room, stores the batch in PostgreSQL with one prepared
 * INSERT of unnest()ed arrays into GoChat's own messages table (its
 * indexes and checks, its size: rooms the floor's clients name, inbox ids
 * "<hub>:<entry id>"), then PUBLISHes the batch, packed, on one
 * channel and XACKs it in the same write. Every thread is subscribed to
 * that channel on a connection of its own and frames each message once for
 * its members of the room. No fencing, room locks, dedupe, presence, JSON
 * parsing or history: only what any design that stores a message before
 * delivering it, through an inbox and a broker, must do.
 */
static void
store_send(struct floor_conn *c, const unsigned char *payload, size_t plen)
{
	redisAsyncCommand(c->t->pub, NULL, NULL, "XADD " FLOOR_INBOX " * r %d "
	    "p %b", c->room % g_nhubs, c->room, payload, plen);
}

/* A batch as PUBLISHed: room (4 bytes), id (8), length (4), payload. */
static void
pack_put(unsigned char *p, uint64_t v, int n)
{
	for (int i = 0; i < n; i++)
		p[i] = (unsigned char)(v >> (8 * i));
}

static uint64_t
pack_get(const unsigned char *p, int n)
{
	uint64_t v = 0;

	for (int i = n; i-- > 0;)
		v = v << 8 | p[i];
	return v;
}

static void
sub_cb(redisAsyncContext *ac, void *reply, void *arg)
{
	struct floor_thread *t = arg;
	redisReply *r = reply;
	const unsigned char *p, *e;

	(void)ac;
	if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements != 3 ||
	    r->element[0]->type != REDIS_REPLY_STRING ||
	    strcmp(r->element[0]->str, "message") != 0 ||
	    r->element[2]->type != REDIS_REPLY_STRING)
		return;
	p = (const unsigned char *)r->element[2]->str;
	e = p + r->element[2]->len;
	while (e - p >= 16) {
		int room = (int)pack_get(p, 4);
		uint64_t seq = pack_get(p + 4, 8);
		size_t len = (size_t)pack_get(p + 12, 4);
		struct floor_members *mem;
		struct floor_msg *m;

		p += 16;
		if (room < 0 || room >= FLOOR_ROOMS_MAX || len > (size_t)(e - p))
			break;
		mem = &t->members[room];
		if (mem->n > 0) {
			m = frame_msg(room, seq, p, len, 1);
			for (size_t j = mem->n; j-- > 0;)
				conn_queue(mem->v[j], m->bytes, m->len);
			free(m);
		}
		p += len;
	}
	flush_pending(t);
}

static void
hub_fail(struct floor_hub *h, const char *what, const char *why)
{
	fprintf(stderr, "floor: hub %d: %s: %s\n", h->index, what, why);
	exit(1);
}

/* Append one element to array literal k (quoted, escaped). */
static void
arr_add(struct floor_hub *h, int k, const char *v, size_t n)
{
	unsigned char *p;

	grow(&h->arr[k], &h->arrcap[k], h->arrlen[k] + 2 * n + 4);
	p = h->arr[k] + h->arrlen[k];
	*p++ = h->arrlen[k] == 1 ? '"' : ',';
	if (h->arrlen[k] > 1)
		*p++ = '"';
	for (size_t i = 0; i < n; i++) {
		if (v[i] == '"' || v[i] == '\\')
			*p++ = '\\';
		*p++ = (unsigned char)v[i];
	}
	*p++ = '"';
	h->arrlen[k] = (size_t)(p - h->arr[k]);
}

static const char *
field(redisReply *kv, const char *name, size_t *len)
{
	for (size_t i = 0; i + 1 < kv->elements; i += 2)
		if (kv->element[i]->type == REDIS_REPLY_STRING &&
		    strcmp(kv->element[i]->str, name) == 0 &&
		    kv->element[i + 1]->type == REDIS_REPLY_STRING) {
			*len = kv->element[i + 1]->len;
			return kv->element[i + 1]->str;
		}
	return NULL;
}

static void *
hub_main(void *arg)
{
	struct floor_hub *h = arg;
	const char *argv[FLOOR_BATCH + 3], *params[4];
	size_t argvlen[FLOOR_BATCH + 3];
	redisReply *r, *entries, *x;
	PGresult *res;

	for (;;) {
		int nack = 3;

		r = redisCommand(h->rc, "XREADGROUP GROUP floor floor COUNT %d "
		    "BLOCK 0 STREAMS %s >", FLOOR_BATCH, h->inbox);
		if (r == NULL)
			hub_fail(h, "XREADGROUP", h->rc->errstr);
		if (r->type != REDIS_REPLY_ARRAY || r->elements != 1 ||
		    r->element[0]->elements != 2) {
			freeReplyObject(r);
			continue;
		}
		entries = r->element[0]->element[1];
		for (int k = 0; k < 4; k++) {
			grow(&h->arr[k], &h->arrcap[k], 2);
			h->arr[k][0] = '{';
			h->arrlen[k] = 1;
		}
		h->outlen = 0;
		argv[0] = "XACK";
		argv[1] = h->inbox;
		argv[2] = "floor";
		pthread_mutex_lock(&g_rooms_lock);
		for (size_t i = 0; i < entries->elements; i++) {
			redisReply *en = entries->element[i];
			const char *rs, *pl;
			size_t rl, plen;
			char num[24], xid[64];
			int room;

			if (en->type != REDIS_REPLY_ARRAY || en->elements != 2 ||
			    en->element[1]->type != REDIS_REPLY_ARRAY)
				continue;
			argv[nack] = en->element[0]->str;
			argvlen[nack++] = en->element[0]->len;
			if ((rs = field(en->element[1], "r", &rl)) == NULL ||
			    (pl = field(en->element[1], "p", &plen)) == NULL ||
			    (room = atoi(rs)) < 0 || room >= g_nrooms)
				continue;
			arr_add(h, 0, g_rooms[room], strlen(g_rooms[room]));
			h->seq[room]++;
			arr_add(h, 1, num, (size_t)snprintf(num, sizeof(num),
			    "%llu", (unsigned long long)h->seq[room]));
			arr_add(h, 2, pl, plen);
			/* unique over the inboxes, as a partition's in GoChat */
			arr_add(h, 3, xid, (size_t)snprintf(xid, sizeof(xid),
			    "%d:%s", h->index, en->element[0]->str));
			grow(&h->out, &h->outcap, h->outlen + 16 + plen);
			pack_put(h->out + h->outlen, (uint64_t)room, 4);
			pack_put(h->out + h->outlen + 4, h->seq[room], 8);
			pack_put(h->out + h->outlen + 12, plen, 4);
			memcpy(h->out + h->outlen + 16, pl, plen);
			h->outlen += 16 + plen;
		}
		pthread_mutex_unlock(&g_rooms_lock);
		for (int k = 0; k < 4; k++) {
			grow(&h->arr[k], &h->arrcap[k], h->arrlen[k] + 2);
			h->arr[k][h->arrlen[k]++] = '}';
			h->arr[k][h->arrlen[k]] = '\0';
			params[k] = (const char *)h->arr[k];
		}
		if (h->outlen > 0) {
			res = PQexecPrepared(h->pg, "store", 4, params, NULL,
			    NULL, 0);
			if (PQresultStatus(res) != PGRES_COMMAND_OK)
				hub_fail(h, "INSERT", PQerrorMessage(h->pg));
			PQclear(res);
			redisAppendCommand(h->rc, "PUBLISH " FLOOR_CHANNEL " %b",
			    h->out, h->outlen);
		}
		for (int i = 0; i < 3; i++)
			argvlen[i] = strlen(argv[i]);
		if (nack > 3)
			redisAppendCommandArgv(h->rc, nack, argv, argvlen);
		for (int i = (h->outlen > 0) + (nack > 3); i > 0; i--) {
			if (redisGetReply(h->rc, (void **)&x) != REDIS_OK)
				hub_fail(h, "PUBLISH/XACK", h->rc->errstr);
			freeReplyObject(x);
		}
		freeReplyObject(r);
	}
	return NULL;
}

/* -S: every hub's inbox, group and connections. */
static void
store_setup(void)
{
	static const char *setup = "SET plan_cache_mode = force_generic_plan";
	PGresult *res;

	if ((g_hubs = calloc((size_t)g_nhubs, sizeof(*g_hubs))) == NULL) {
		fprintf(stderr, "floor: out of memory\n");
		exit(1);
	}
	for (int i = 0; i < g_nhubs; i++) {
		struct floor_hub *h = &g_hubs[i];
		redisReply *r;

		h->index = i;
		snprintf(h->inbox, sizeof(h->inbox), FLOOR_INBOX, i);
		h->rc = redisConnect(g_redis_host, g_redis_port);
		if (h->rc == NULL || h->rc->err)
			hub_fail(h, "redis", h->rc ? h->rc->errstr : "no memory");
		freeReplyObject(redisCommand(h->rc, "DEL %s", h->inbox));
		r = redisCommand(h->rc, "XGROUP CREATE %s floor $ MKSTREAM",
		    h->inbox);
		if (r == NULL || r->type == REDIS_REPLY_ERROR)
			hub_fail(h, "XGROUP", r ? r->str : h->rc->errstr);
		freeReplyObject(r);
		h->pg = PQconnectdb(g_conninfo);
		if (PQstatus(h->pg) != CONNECTION_OK)
			hub_fail(h, "PostgreSQL", PQerrorMessage(h->pg));
		res = PQexec(h->pg, setup);
		PQclear(res);
		res = PQprepare(h->pg, "store", "INSERT INTO messages "
		    "(room_id, id, user_id, username, content, inbox_id) "
		    "SELECT r, i, 1, 'floor', c, x FROM unnest($1::text[], "
		    "$2::bigint[], $3::text[], $4::text[]) AS b (r, i, c, x)",
		    4, NULL);
		if (PQresultStatus(res) != PGRES_COMMAND_OK)
			hub_fail(h, "PREPARE", PQerrorMessage(h->pg));
		PQclear(res);
	}
}

/* -S: a thread's XADD and SUBSCRIBE connections, on its loop. */
static void
store_attach(struct floor_thread *t)
{
	t->pub = redisAsyncConnect(g_redis_host, g_redis_port);
	t->sub = redisAsyncConnect(g_redis_host, g_redis_port);
	if (t->pub == NULL || t->pub->err || t->sub == NULL || t->sub->err ||
	    redisLibeventAttach(t->pub, t->base) != REDIS_OK ||
	    redisLibeventAttach(t->sub, t->base) != REDIS_OK ||
	    redisAsyncCommand(t->sub, sub_cb, t, "SUBSCRIBE "
	    FLOOR_CHANNEL) != REDIS_OK) {
		fprintf(stderr, "floor: cannot reach Redis\n");
		exit(1);
	}
}

/* The inbox: deliver every message to this thread's members, then write. */
static void
wake_cb(evutil_socket_t fd, short what, void *arg)
{
	struct floor_thread *t = arg;
	char drain[256];
	size_t n, i, j;

	(void)what;
	while (read(fd, drain, sizeof(drain)) > 0)
		;
	pthread_mutex_lock(&t->lock);
	n = t->ninbox;
	if (n > t->capwork) {
		t->capwork = t->capinbox;
		t->work = xrealloc(t->work, t->capwork * sizeof(*t->work));
	}
	if (n > 0)	/* none when a signal woke it */
		memcpy(t->work, t->inbox, n * sizeof(*t->work));
	t->ninbox = 0;
	pthread_mutex_unlock(&t->lock);
	for (i = 0; i < n; i++) {
		struct floor_msg *m = t->work[i];
		struct floor_members *mem = &t->members[m->room];

		/* Backwards: a member cut here takes the last one's slot,
		 * which has had the message already. */
		for (j = mem->n; j-- > 0;)
			conn_queue(mem->v[j], m->bytes, m->len);
		if (atomic_fetch_sub(&m->refs, 1) == 1)
			free(m);
	}
	flush_pending(t);
}

/* The handshake, once the head is in c->in: 0, or -1 to close. */
static int
handshake(struct floor_conn *c, size_t headlen)
{
	char *head = (char *)c->in, *p, *e, *key = NULL;
	char resp[256], kbuf[64 + sizeof(FLOOR_GUID)], join[256];
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned char acc[64];
	unsigned int mdlen;
	struct floor_members *m;
	size_t klen = 0;
	int n;

	head[headlen - 1] = '\0';
	if (strncmp(head, "GET /ws/joinRoom/", 17) != 0)
		return -1;
	p = head + 17;
	e = p + strcspn(p, " ?\r\n");
	if ((c->room = room_index(p, (size_t)(e - p))) == -1)
		return -1;
	for (p = strstr(head, "\r\n"); p != NULL; p = strstr(p + 2, "\r\n"))
		if (strncasecmp(p + 2, "Sec-WebSocket-Key:", 18) == 0) {
			key = p + 20;
			while (*key == ' ' || *key == '\t')
				key++;
			klen = strcspn(key, " \t\r\n");
			break;
		}
	if (key == NULL || klen == 0 || klen > 64)
		return -1;
	memcpy(kbuf, key, klen);
	memcpy(kbuf + klen, FLOOR_GUID, sizeof(FLOOR_GUID) - 1);
	if (EVP_Digest(kbuf, klen + sizeof(FLOOR_GUID) - 1, md, &mdlen,
	    EVP_sha1(), NULL) != 1)
		return -1;
	EVP_EncodeBlock(acc, md, (int)mdlen);
	n = snprintf(resp, sizeof(resp), "HTTP/1.1 101 Switching Protocols\r\n"
	    "Upgrade: websocket\r\nConnection: Upgrade\r\n"
	    "Sec-WebSocket-Accept: %s\r\n\r\n", acc);
	conn_queue(c, resp, (size_t)n);
	n = snprintf(join, sizeof(join), "{\"type\":\"join\",\"roomId\":"
	    "\"%s\",\"username\":\"floor\"}", g_rooms[c->room]);
	conn_frame(c, 1, join, (size_t)n);
	m = &c->t->members[c->room];
	if (m->n == m->cap) {
		m->cap = m->cap ? 2 * m->cap : 64;
		m->v = xrealloc(m->v, m->cap * sizeof(*m->v));
	}
	c->slot = m->n;
	m->v[m->n++] = c;
	c->open = 1;
	return 0;
}

/* Whole client frames in c->in: text published, ping answered, close. */
static int
frames(struct floor_conn *c)
{
	size_t off = 0;

	while (c->inlen - off >= 2) {
		unsigned char *f = c->in + off;
		size_t avail = c->inlen - off, hl = 2, len = f[1] & 0x7f;
		int op = f[0] & 0x0f, masked = f[1] & 0x80;

		if (len == 126) {
			if (avail < 4)
				break;
			len = (size_t)f[2] << 8 | f[3];
			hl = 4;
		} else if (len == 127) {
			if (avail < 10)
				break;
			len = 0;
			for (int i = 0; i < 8; i++)
				len = len << 8 | f[2 + i];
			hl = 10;
		}
		if (!masked || len > FLOOR_IN_MAX)
			return -1;
		if (avail < hl + 4 + len)
			break;
		for (size_t i = 0; i < len; i++)
			f[hl + 4 + i] ^= f[hl + i % 4];
		switch (op) {
		case 1:
			if (g_conninfo != NULL)
				store_send(c, f + hl + 4, len);
			else
				publish(c->room, f + hl + 4, len);
			break;
		case 8:
			conn_frame(c, 8, f + hl + 4, len < 2 ? len : 2);
			return -1;
		case 9:
			conn_frame(c, 10, f + hl + 4, len);
			break;
		default:
			break;
		}
		off += hl + 4 + len;
	}
	if (off > 0) {
		memmove(c->in, c->in + off, c->inlen - off);
		c->inlen -= off;
	}
	return 0;
}

static void
read_cb(evutil_socket_t fd, short what, void *arg)
{
	struct floor_conn *c = arg;
	struct floor_thread *t = c->t;
	unsigned char *e;
	ssize_t n;

	(void)what;
	n = read(fd, t->rbuf, sizeof(t->rbuf));
	if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
		floor_close(c);
		goto out;
	}
	if (n < 0)
		return;
	grow(&c->in, &c->incap, c->inlen + (size_t)n + 1);
	memcpy(c->in + c->inlen, t->rbuf, (size_t)n);
	c->inlen += (size_t)n;
	if (!c->open) {
		c->in[c->inlen] = '\0';
		e = (unsigned char *)strstr((char *)c->in, "\r\n\r\n");
		if (e == NULL) {
			if (c->inlen > FLOOR_HEAD_MAX)
				floor_close(c);
			goto out;
		}
		{
			size_t hl = (size_t)(e - c->in) + 4;

			if (handshake(c, hl) == -1) {
				floor_close(c);
				goto out;
			}
			memmove(c->in, c->in + hl, c->inlen - hl);
			c->inlen -= hl;
		}
	}
	if (frames(c) == -1 || c->inlen > FLOOR_IN_MAX)
		floor_close(c);
out:
	flush_pending(t);
}

static void
write_cb(evutil_socket_t fd, short what, void *arg)
{
	struct floor_conn *c = arg;

	(void)fd;
	(void)what;
	conn_write(c);		/* re-adds itself while anything is left */
}

static void
accept_cb(evutil_socket_t lfd, short what, void *arg)
{
	struct floor_thread *t = arg;
	struct floor_conn *c;
	int fd, one = 1;

	(void)what;
	for (int i = 0; i < FLOOR_ACCEPT_BATCH; i++) {
		if ((fd = accept(lfd, NULL, NULL)) == -1)
			return;
		if (evutil_make_socket_nonblocking(fd) == -1) {
			close(fd);
			continue;
		}
		(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one,
		    sizeof(one));
		c = xrealloc(NULL, sizeof(*c));
		memset(c, 0, sizeof(*c));
		c->t = t;
		c->fd = fd;
		c->rev = event_new(t->base, fd, EV_READ | EV_PERSIST, read_cb,
		    c);
		c->wev = event_new(t->base, fd, EV_WRITE, write_cb, c);
		if (c->rev == NULL || c->wev == NULL ||
		    event_add(c->rev, NULL) == -1) {
			fprintf(stderr, "floor: cannot watch a connection\n");
			exit(1);
		}
	}
}

static void
signal_cb(evutil_socket_t sig, short what, void *arg)
{
	(void)sig;
	(void)what;
	(void)arg;
	for (int i = 0; i < g_nthreads; i++) {
		event_base_loopbreak(g_threads[i].base);
		/* a thread waiting in its loop sees the break once woken */
		if (write(g_threads[i].wake[1], "", 1) == -1) {
			/* full: the thread is awake already */
		}
	}
}

static void *
thread_main(void *arg)
{
	struct floor_thread *t = arg;

	event_base_dispatch(t->base);
	return NULL;
}

int
main(int argc, char **argv)
{
	struct sockaddr_in sin;
	int ch, port = 0, one = 1;
	sigset_t set;

	g_nthreads = 1;
	while ((ch = getopt(argc, argv, "t:p:S:r:H:")) != -1)
		switch (ch) {
		case 'S':
			g_conninfo = optarg;
			break;
		case 'r': {
			char *colon = strrchr(optarg, ':');

			if (colon == NULL)
				goto usage;
			*colon = '\0';
			g_redis_host = optarg;
			g_redis_port = atoi(colon + 1);
			break;
		}
		case 'H':
			g_nhubs = atoi(optarg);
			break;
		case 't':
			g_nthreads = atoi(optarg);
			break;
		case 'p':
			port = atoi(optarg);
			break;
		default:
			goto usage;
		}
	if (g_nthreads < 1 || g_nthreads > FLOOR_THREADS_MAX || port <= 0 ||
	    port > 65535 || g_nhubs < 1 || g_nhubs > FLOOR_HUBS_MAX ||
	    g_redis_port <= 0 || g_redis_port > 65535)
		goto usage;
	signal(SIGPIPE, SIG_IGN);
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_port = htons((uint16_t)port);
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if ((g_listen = socket(AF_INET, SOCK_STREAM, 0)) == -1 ||
	    setsockopt(g_listen, SOL_SOCKET, SO_REUSEADDR, &one,
	    sizeof(one)) == -1 ||
	    bind(g_listen, (struct sockaddr *)&sin, sizeof(sin)) == -1 ||
	    listen(g_listen, 4096) == -1 ||
	    evutil_make_socket_nonblocking(g_listen) == -1) {
		perror("floor: listen");
		return 1;
	}
	g_threads = calloc((size_t)g_nthreads, sizeof(*g_threads));
	if (g_threads == NULL)
		return 1;
	for (int i = 0; i < g_nthreads; i++) {
		struct floor_thread *t = &g_threads[i];

		pthread_mutex_init(&t->lock, NULL);
		if ((t->base = event_base_new()) == NULL ||
		    pipe(t->wake) == -1 ||
		    evutil_make_socket_nonblocking(t->wake[0]) == -1 ||
		    evutil_make_socket_nonblocking(t->wake[1]) == -1 ||
		    (t->wake_ev = event_new(t->base, t->wake[0],
		    EV_READ | EV_PERSIST, wake_cb, t)) == NULL ||
		    (t->accept_ev = event_new(t->base, g_listen,
		    EV_READ | EV_PERSIST, accept_cb, t)) == NULL ||
		    event_add(t->wake_ev, NULL) == -1 ||
		    event_add(t->accept_ev, NULL) == -1) {
			fprintf(stderr, "floor: cannot set up thread %d\n", i);
			return 1;
		}
		if (g_conninfo != NULL)
			store_attach(t);
	}
	if (g_conninfo != NULL)
		store_setup();
	/* Signals reach thread 0's loop only. */
	g_threads[0].sig_ev[0] = evsignal_new(g_threads[0].base, SIGINT,
	    signal_cb, NULL);
	g_threads[0].sig_ev[1] = evsignal_new(g_threads[0].base, SIGTERM,
	    signal_cb, NULL);
	if (g_threads[0].sig_ev[0] == NULL || g_threads[0].sig_ev[1] == NULL ||
	    evsignal_add(g_threads[0].sig_ev[0], NULL) == -1 ||
	    evsignal_add(g_threads[0].sig_ev[1], NULL) == -1)
		return 1;
	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	/* The other threads block them, so that thread 0 takes them. */
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	for (int i = 0; g_conninfo != NULL && i < g_nhubs; i++)
		if (pthread_create(&g_hubs[i].tid, NULL, hub_main,
		    &g_hubs[i]) != 0) {
			fprintf(stderr, "floor: cannot start hub %d\n", i);
			return 1;
		}
	for (int i = 1; i < g_nthreads; i++)
		if (pthread_create(&g_threads[i].tid, NULL, thread_main,
		    &g_threads[i]) != 0) {
			fprintf(stderr, "floor: cannot start thread %d\n", i);
			return 1;
		}
	pthread_sigmask(SIG_UNBLOCK, &set, NULL);
	printf("floor: 127.0.0.1:%d, %d threads", port, g_nthreads);
	if (g_conninfo != NULL)
		printf(", store and forward through Redis %s:%d, %d hubs",
		    g_redis_host, g_redis_port, g_nhubs);
	printf("\n");
	fflush(stdout);
	thread_main(&g_threads[0]);
	for (int i = 1; i < g_nthreads; i++)
		pthread_join(g_threads[i].tid, NULL);
	return 0;
usage:
	fprintf(stderr, "usage: floor -t THREADS -p PORT "
	    "[-S CONNINFO [-r HOST:PORT] [-H HUBS]]\n");
	return 2;
}
