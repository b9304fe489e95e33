/*
 * floor: the fan-out floor of make bench. A minimal WebSocket broadcaster
 * that speaks what loadgen's chat mode needs and nothing more: the RFC 6455
 * handshake on GET /ws/joinRoom/<room> (no authentication), a join event to
 * the joiner, and every text frame a client sends framed once as a message
 * event and written to every member of its room, the sender included. No
 * JSON parser, no broker, no storage; the same framing as GoChat (unmasked
 * server text frames, one per event).
 *
 *	floor -t THREADS -p PORT
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
	unsigned char	 rbuf[FLOOR_READ_BUF];
};

static int			 g_listen = -1;
static int			 g_nthreads;
static struct floor_thread	*g_threads;
static pthread_mutex_t		 g_pub = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t		 g_rooms_lock = PTHREAD_MUTEX_INITIALIZER;
static char			 g_rooms[FLOOR_ROOMS_MAX][FLOOR_ROOM_NAME_MAX];
static int			 g_nrooms;
static uint64_t			 g_seq;		/* under g_pub */

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

/* Hand a framed message to every thread, in one order for all. */
static void
publish(int room, const unsigned char *payload, size_t plen)
{
	static const char pre[] = "{\"type\":\"message\",\"id\":";
	static const char mid[] = ",\"roomId\":\"";
	static const char mid2[] = "\",\"userId\":1,\"username\":\"floor\","
	    "\"content\":\"";
	static const char post[] = "\"}";
	char id[24];
	size_t rlen = strlen(g_rooms[room]), jlen, hl;
	struct floor_msg *m;
	unsigned char h[10];
	int i, idlen;

	pthread_mutex_lock(&g_pub);
	idlen = snprintf(id, sizeof(id), "%llu",
	    (unsigned long long)++g_seq);
	jlen = sizeof(pre) - 1 + (size_t)idlen + sizeof(mid) - 1 + rlen +
	    sizeof(mid2) - 1 + plen + sizeof(post) - 1;
	hl = frame_head(h, 1, jlen);
	m = xrealloc(NULL, sizeof(*m) + hl + jlen);
	atomic_init(&m->refs, (unsigned)g_nthreads);
	m->room = room;
	m->len = hl + jlen;
	{
		unsigned char *p = m->bytes;

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
	}
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
	for (int i = 0; i < g_nthreads; i++)
		event_base_loopbreak(g_threads[i].base);
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
	while ((ch = getopt(argc, argv, "t:p:")) != -1)
		switch (ch) {
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
	    port > 65535)
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
	}
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
	for (int i = 1; i < g_nthreads; i++)
		if (pthread_create(&g_threads[i].tid, NULL, thread_main,
		    &g_threads[i]) != 0) {
			fprintf(stderr, "floor: cannot start thread %d\n", i);
			return 1;
		}
	pthread_sigmask(SIG_UNBLOCK, &set, NULL);
	printf("floor: 127.0.0.1:%d, %d threads\n", port, g_nthreads);
	fflush(stdout);
	thread_main(&g_threads[0]);
	for (int i = 1; i < g_nthreads; i++)
		pthread_join(g_threads[i].tid, NULL);
	return 0;
usage:
	fprintf(stderr, "usage: floor -t THREADS -p PORT\n");
	return 2;
}
