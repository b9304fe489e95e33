/*
 * loadgen: GoChat's load generator. One program, three modes:
 *
 *   loadgen http [options] HOST:PORT
 *	closed-loop HTTP/1.1 keep-alive requests (like wrk): every connection
 *	sends its next request when the previous answer is complete, cycling
 *	through its request templates (-r 'METHOD PATH [BODY]'), with its own
 *	token (-T). Reports requests/s, status classes and codes, latency.
 *	  loadgen http -c 64 -d 10 -u / 127.0.0.1:8080
 *	  loadgen http -c 64 -T tokens.txt -u /me 127.0.0.1:8080
 *	  loadgen http -c 64 -T tokens.txt -r 'POST /follow?toFollowId=%PEER%' \
 *	      -r 'POST /unfollow?toUnfollowId=%PEER%' 127.0.0.1:8080
 *
 *   loadgen chat [options] HOST:PORT
 *	N WebSocket clients (GET /ws/joinRoom/<room>, Authorization: Bearer,
 *	one token per client from -T, reused round robin) spread over rooms;
 *	clients 0..S-1 also send. A message's content is
 *	    b1 <run id, 8 hex> <sender> <seq> <CLOCK_MONOTONIC ns> xxx...
 *	(padded to -l bytes). Closed loop: a sender sends its next message
 *	when its previous one comes back to it (or after --timeout). Open
 *	loop: -R messages/s in all, paced by a 1 ms timer, spread over the
 *	senders. Sending starts once every client has seen its own join
 *	event (or --join-timeout passed), lasts -d seconds, then --drain.
 *	  loadgen chat -c 1000 -s 10 -d 10 -T tokens.txt -r bench 127.0.0.1:8080
 *
 *   loadgen idle [options] HOST:PORT
 *	the same clients, joined and held for -d seconds (0: until SIGINT or
 *	SIGTERM), answering pings; prints "joined N" on stdout once they are
 *	all joined (or the join timeout passed), for a driver that then
 *	measures the server. -s/-R add a small chat among them (-K: that many
 *	clients in the first room, the others in the other rooms).
 *	  loadgen idle -c 100000 -P 6 -d 0 -r idle --rooms 2000 \
 *	      -b 127.0.0.1,127.0.0.2,127.0.0.3,127.0.0.4 -T tokens.txt HOST:PORT
 *
 * What chat and idle count, per receiving connection: every live message
 * event of this run (history events, other runs' and foreign messages are
 * skipped, found with memmem, no JSON parser) is a delivery, its latency
 * now - t_ns goes into an HDR-style histogram (hdr.c); the same sender and
 * seq seen again is a duplicate; a seq below one already seen from that
 * sender is an order violation (a 64-entry window per sender tells the
 * two apart). At the end, for every receiver that was joined before
 * sending started and is still open, each message its room's senders got
 * back (echoed) but it never received is a loss. "unacked" counts
 * messages sent but never echoed to their sender (lost before fan-out).
 *
 * Output: a human table on stderr, and ONE JSON object on one line, the
 * last line of stdout (idle first prints "joined N"). Exit status 0, 1 if
 * nothing could be measured (no client joined, no HTTP answer), 2 on bad
 * usage.
 *
 * Design: one libevent loop per thread (-t), each with its share of the
 * connections; -P forks processes, each with its share, and the parent
 * merges their figures (RLIMIT_NOFILE is raised to the hard limit at
 * start; use -P beyond it). Sockets are non-blocking, read into a
 * per-thread buffer (a connection keeps a buffer only for a partial
 * frame), and written with one write(2) per frame; nothing is allocated
 * per message. Source addresses (-b) are bound round robin, so more
 * connections than one address has ephemeral ports can be held (with
 * IP_BIND_ADDRESS_NO_PORT where it exists). Connects, handshakes, joins
 * and requests time out after --timeout (10 s); at most --max-pending of
 * them are in flight at once. The client side of RFC 6455 (masking with
 * a per-frame key from xorshift, fragments in and out, ping/pong, close)
 * is written here; the handshake's Sec-WebSocket-Accept is checked with
 * libcrypto's SHA-1.
 *
 * Build:
 *   cc -O2 -std=c11 -Wall -Wextra -pthread -o loadgen \
 *     test/bench/loadgen.c test/bench/hdr.c \
 *     $(pkg-config --cflags --libs libevent_core libcrypto)
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif
#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1		/* memmem, strndup, dprintf where needed */
#endif

#include <sys/types.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>

#include <netinet/in.h>
#include <netinet/tcp.h>

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/util.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

#include "hdr.h"

#define WS_GUID		"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
#define SCRATCH		(64 * 1024)	/* per-thread read buffer */
#define MAX_HEAD	(16 * 1024)	/* HTTP response head */
#define MAX_FRAME	(1024 * 1024)	/* a server frame we accept */
#define WLIMIT		(1024 * 1024)	/* queued output before a sender
					 * skips a message */
#define MAX_MSG		16384		/* -l limit */
#define MAX_TEMPLATES	16
#define MAX_HEADERS	16
#define NCLOSE		16		/* close codes 1000..1015 */

enum mode { M_HTTP, M_CHAT, M_IDLE };
enum phase { PH_CONNECT, PH_RUN, PH_DRAIN, PH_DONE };
enum cstate { CS_NEW, CS_CONNECTING, CS_HANDSHAKE, CS_OPEN, CS_DEAD };
enum hstate { H_IDLE, H_HDR, H_BODY_CL, H_CHUNK_SIZE, H_CHUNK_DATA,
	H_CHUNK_CRLF, H_CHUNK_TRAILER, H_BODY_EOF };

/* --- options and shared read-only state --------------------------------- */

struct tmpl {
	char	*method;
	char	*path;
	char	*body;		/* NULL: none */
};

static struct {
	enum mode	 mode;
	const char	*target;
	unsigned	 nconn;
	double		 duration;
	unsigned	 threads;
	unsigned	 procs;
	const char	*tokens_file;
	const char	*headers[MAX_HEADERS];
	unsigned	 nheaders;
	unsigned	 max_pending;
	double		 timeout;
	int		 quiet;
	/* http */
	struct tmpl	 tmpl[MAX_TEMPLATES];
	unsigned	 ntmpl;
	const char	*path;
	const char	*method;
	const char	*body;
	/* chat, idle */
	unsigned	 senders;
	double		 rate;
	unsigned	 msg_size;
	unsigned	 chat_clients;
	unsigned	 nrooms_opt;
	double		 join_timeout;
	double		 drain;
	int		 frag;
	unsigned	 ping;
} O;

static char		**tokens;
static int64_t		 *token_ids;
static size_t		  ntokens;
static char		**rooms;
static unsigned		  nrooms;
static unsigned		 *room_nsenders;
static uint32_t		 *sender_slot;	/* by sender (client index < S) */
static uint32_t		  run_id;
static uint64_t		  key_seed;
static struct sockaddr_storage dst;
static socklen_t	  dstlen;
#define MAX_ALSO	8
/* --also: more instances */
static struct sockaddr_storage also[MAX_ALSO];
static socklen_t	  alsolen[MAX_ALSO];
static unsigned		  nalso;
static char		  hosthdr[300];
static struct sockaddr_storage *binds;
static unsigned		  nbinds;
static uint64_t		  t_origin;	/* now_ns() at start */

static atomic_int	  g_phase;
static atomic_ulong	  g_joined;
static atomic_ulong	  g_failed;
static volatile sig_atomic_t stop_sig;
static pid_t		 *child_pids;
static unsigned		  nchildren;

/* --- statistics (mergeable across threads and processes) --------------- */

#define COUNTERS(X) \
	X(conns) X(connected) X(connect_errors) X(connect_timeouts) \
	X(handshake_errors) X(handshake_timeouts) X(joined) X(join_timeouts) \
	X(closed_before_join) X(disconnects) X(io_errors) X(protocol_errors) \
	X(sent) X(acked) X(deliveries) X(duplicates) X(order_violations) \
	X(history_skipped) X(joins_seen) X(leaves_seen) X(foreign) \
	X(other_frames) X(pings_rx) X(pongs_rx) X(pings_tx) X(closes_rx) \
	X(send_blocked) X(send_skipped) X(echo_timeouts) X(eligible) \
	X(requests) X(responses) X(reconnects) X(request_timeouts) \
	X(bytes_in) X(bytes_out)

struct stats {
#define X(n) uint64_t n;
	COUNTERS(X)
#undef X
	uint64_t	 status[600];	/* handshake or response status */
	uint64_t	 close_codes[NCLOSE + 1];	/* last: other */
	uint64_t	*room_elig;	/* eligible receivers open at the end */
	uint64_t	*room_rcv;	/* their distinct deliveries */
	uint64_t	*room_sent;
	uint64_t	*room_acked;
	double		 join_s;
	double		 run_s;
	struct hdr	 lat;
};

static const char *const counter_names[] = {
#define X(n) #n,
	COUNTERS(X)
#undef X
};
#define NCOUNTERS (sizeof(counter_names) / sizeof(counter_names[0]))

static uint64_t *
stats_counter(struct stats *s, size_t i)
{
	return (uint64_t *)(void *)s + i;
}

/* --- connections and threads -------------------------------------------- */

struct rx {
	uint32_t	 max;		/* highest seq seen from the sender */
	uint32_t	 pad;
	uint64_t	 win;		/* bit d: seq max - d was seen */
};

struct worker;

struct conn {
	struct worker	*w;
	struct event	*ev;
	int		 fd;
	uint32_t	 gi;		/* global client index */
	uint16_t	 room;
	uint8_t		 state;
	uint8_t		 hstate;
	unsigned	 evflags : 8;
	unsigned	 joined : 1;
	unsigned	 eligible : 1;
	unsigned	 pending : 1;	/* counted in w->pending */
	unsigned	 failed : 1;	/* counted in g_failed */
	unsigned	 sender : 1;
	unsigned	 infrag : 1;	/* inside a fragmented message */
	unsigned	 hclose : 1;	/* http: Connection: close */
	unsigned	 hnobody : 1;
	unsigned	 retry : 1;	/* http: reconnect at the next sweep */
	uint32_t	 deadline;	/* seconds since t_origin */
	uint32_t	 rlen, rcap;
	char		*rbuf;		/* partial frame or head, if any */
	uint32_t	 wlen, wcap;
	char		*wbuf;		/* unwritten output, if any */
	uint32_t	 fraglen, fragcap;
	char		*frag;		/* fragmented message so far */
	struct rx	*rx;		/* by sender slot in the room */
	uint32_t	 rcv;		/* distinct deliveries */
	uint32_t	 seq;		/* sender: last sent */
	uint32_t	 acked;		/* sender: last echoed */
	uint32_t	 reqi;		/* http: next template */
	uint32_t	 hstatus;	/* http: status of the answer */
	uint64_t	 t0;		/* sender: last send; http: request */
	uint64_t	 remain;	/* http: body bytes */
	char		*reqs;		/* http: rendered requests */
	uint32_t	*reqoff;	/* http: ntmpl + 1 offsets */
};

struct worker {
	unsigned	 id;
	pthread_t	 th;
	struct event_base *base;
	struct event	*tick;
	struct conn	*conns;
	size_t		 nconns;
	size_t		 next_start;
	unsigned	 pending;
	unsigned	 max_pending;
	struct conn	**senders;
	size_t		 nsenders;
	size_t		 ol_next;
	uint64_t	 ol_t0;
	uint64_t	 ol_sent;
	double		 ol_rate;
	int		 phase_seen;
	uint32_t	 now_s;
	uint32_t	 last_sweep;
	uint64_t	 rng;
	struct stats	 st;
	char		 scratch[SCRATCH];
	unsigned char	 obuf[2 * MAX_MSG + 64];
};

static void	conn_start(struct conn *);
static void	conn_close(struct conn *, int);
static void	conn_cb(evutil_socket_t, short, void *);
static int	conn_write(struct conn *, const void *, size_t);
static int	http_send(struct conn *, uint64_t);
static void	chat_send(struct conn *, uint64_t);
static void	stats_init(struct stats *);
static void	stats_merge(struct stats *, const struct stats *);

/* --- small helpers ------------------------------------------------------- */

static void
vwarnx_(const char *fmt, va_list ap)
{
	fputs("loadgen: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
}

static void
warnx_(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vwarnx_(fmt, ap);
	va_end(ap);
}

static void
die(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vwarnx_(fmt, ap);
	va_end(ap);
	exit(2);
}

static void *
xcalloc(size_t n, size_t sz)
{
	void *p = calloc(n ? n : 1, sz ? sz : 1);

	if (p == NULL)
		die("out of memory");
	return p;
}

static void *
xrealloc(void *p, size_t sz)
{
	if ((p = realloc(p, sz)) == NULL)
		die("out of memory");
	return p;
}

static char *
xstrdup(const char *s)
{
	char *p = strdup(s);

	if (p == NULL)
		die("out of memory");
	return p;
}

static uint64_t
now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static double
since_s(uint64_t t)
{
	return (double)(now_ns() - t) / 1e9;
}

static void
sleep_ms(unsigned ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) == -1 && errno == EINTR && !stop_sig)
		;
}

static uint64_t
xorshift(uint64_t *s)
{
	uint64_t x = *s;

	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*s = x;
	return x * UINT64_C(2685821657736338717);
}

static uint64_t
mix64(uint64_t x)		/* splitmix64 finaliser */
{
	x += UINT64_C(0x9e3779b97f4a7c15);
	x = (x ^ (x >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
	x = (x ^ (x >> 27)) * UINT64_C(0x94d049bb133111eb);
	return x ^ (x >> 31);
}

static char *
u64dec(char *p, uint64_t v)	/* writes v, returns the end */
{
	char tmp[24];
	int n = 0;

	do {
		tmp[n++] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	while (n)
		*p++ = tmp[--n];
	return p;
}

static int
parse_u64(const char **pp, const char *end, uint64_t *out)
{
	const char *p = *pp;
	uint64_t v = 0;

	if (p >= end || *p < '0' || *p > '9')
		return -1;
	while (p < end && *p >= '0' && *p <= '9')
		v = v * 10 + (uint64_t)(*p++ - '0');
	*pp = p;
	*out = v;
	return 0;
}

static void
b64(const unsigned char *in, size_t n, char *out)
{
	static const char t[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
	    "abcdefghijklmnopqrstuvwxyz0123456789+/";
	size_t i;
	uint32_t v;

	for (i = 0; i + 2 < n; i += 3) {
		v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
		*out++ = t[v >> 18];
		*out++ = t[(v >> 12) & 63];
		*out++ = t[(v >> 6) & 63];
		*out++ = t[v & 63];
	}
	if (i < n) {
		v = (uint32_t)in[i] << 16;
		if (i + 1 < n)
			v |= (uint32_t)in[i + 1] << 8;
		*out++ = t[v >> 18];
		*out++ = t[(v >> 12) & 63];
		*out++ = i + 1 < n ? t[(v >> 6) & 63] : '=';
		*out++ = '=';
	}
	*out = '\0';
}

/* A response header's value (trimmed), or NULL. head ends at "\r\n\r\n". */
static const char *
head_find(const char *head, size_t len, const char *name, size_t *vlen)
{
	size_t nl = strlen(name);
	const char *p = head, *end = head + len, *eol, *v;

	/* skip the status line */
	if ((p = memchr(p, '\n', len)) == NULL)
		return NULL;
	p++;
	while (p < end) {
		if ((eol = memchr(p, '\n', (size_t)(end - p))) == NULL)
			eol = end;
		if ((size_t)(eol - p) > nl && p[nl] == ':' &&
		    strncasecmp(p, name, nl) == 0) {
			v = p + nl + 1;
			while (v < eol && (*v == ' ' || *v == '\t'))
				v++;
			*vlen = (size_t)(eol - v);
			while (*vlen && (v[*vlen - 1] == '\r' ||
			    v[*vlen - 1] == ' ' || v[*vlen - 1] == '\t'))
				(*vlen)--;
			return v;
		}
		p = eol + 1;
	}
	return NULL;
}

static int
has_token(const char *v, size_t n, const char *tok)
{
	size_t tl = strlen(tok), i = 0, j;

	while (i < n) {
		while (i < n && (v[i] == ' ' || v[i] == ',' || v[i] == '\t'))
			i++;
		j = i;
		while (j < n && v[j] != ',')
			j++;
		while (j > i && (v[j - 1] == ' ' || v[j - 1] == '\t'))
			j--;
		if (j - i == tl && strncasecmp(v + i, tok, tl) == 0)
			return 1;
		while (i < n && v[i] != ',')
			i++;
	}
	return 0;
}

/* --- setup --------------------------------------------------------------- */

static void
load_tokens(const char *file)
{
	FILE *f;
	char line[4096], *p, *tok, *id;
	size_t cap = 0;

	if ((f = fopen(file, "r")) == NULL)
		die("%s: %s", file, strerror(errno));
	while (fgets(line, sizeof(line), f) != NULL) {
		for (p = line; *p == ' ' || *p == '\t'; p++)
			;
		if (*p == '#' || *p == '\n' || *p == '\r' || *p == '\0')
			continue;
		tok = strtok(p, " \t\r\n");
		id = strtok(NULL, " \t\r\n");
		if (tok == NULL)
			continue;
		if (ntokens == cap) {
			cap = cap ? cap * 2 : 1024;
			tokens = xrealloc(tokens, cap * sizeof(*tokens));
			token_ids = xrealloc(token_ids, cap * sizeof(*token_ids));
		}
		tokens[ntokens] = xstrdup(tok);
		token_ids[ntokens] = id ? strtoll(id, NULL, 10) : 0;
		ntokens++;
	}
	fclose(f);
	if (ntokens == 0)
		die("%s: no tokens", file);
}

static void
parse_addr(const char *s, struct sockaddr_storage *ss, socklen_t *len,
    int need_port)
{
	char host[256], *port = NULL;
	struct addrinfo hints, *ai;
	int e;

	if (strncmp(s, "http://", 7) == 0)
		s += 7;
	else if (strncmp(s, "ws://", 5) == 0)
		s += 5;
	if (strlen(s) >= sizeof(host))
		die("address too long: %s", s);
	strcpy(host, s);
	if ((port = strchr(host, '/')) != NULL)
		*port = '\0';
	port = NULL;
	if (host[0] == '[') {
		char *e2 = strchr(host, ']');

		if (e2 == NULL)
			die("bad address %s", s);
		*e2 = '\0';
		if (e2[1] == ':')
			port = e2 + 2;
		memmove(host, host + 1, strlen(host + 1) + 1);
	} else if ((port = strrchr(host, ':')) != NULL && need_port)
		*port++ = '\0';
	else
		port = NULL;
	if (need_port && (port == NULL || *port == '\0'))
		die("%s: want HOST:PORT", s);
	memset(&hints, 0, sizeof(hints));
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_NUMERICSERV;
	if ((e = getaddrinfo(host, need_port ? port : "0", &hints, &ai)) != 0)
		die("%s: %s", s, gai_strerror(e));
	memcpy(ss, ai->ai_addr, ai->ai_addrlen);
	*len = (socklen_t)ai->ai_addrlen;
	freeaddrinfo(ai);
}

static void
parse_binds(const char *list)
{
	char *copy = xstrdup(list), *save = NULL, *a;
	socklen_t len;

	for (a = strtok_r(copy, ",", &save); a; a = strtok_r(NULL, ",", &save)) {
		binds = xrealloc(binds, (nbinds + 1) * sizeof(*binds));
		parse_addr(a, &binds[nbinds], &len, 0);
		nbinds++;
	}
	free(copy);
}

static void
add_rooms(const char *list)
{
	char *copy = xstrdup(list), *save = NULL, *r;

	for (r = strtok_r(copy, ",", &save); r; r = strtok_r(NULL, ",", &save)) {
		rooms = xrealloc(rooms, (nrooms + 1) * sizeof(*rooms));
		rooms[nrooms++] = xstrdup(r);
	}
	free(copy);
}

static void
add_template(const char *s)
{
	const char *sp, *sp2;
	struct tmpl *t;

	if (O.ntmpl == MAX_TEMPLATES)
		die("at most %d -r templates", MAX_TEMPLATES);
	t = &O.tmpl[O.ntmpl++];
	if ((sp = strchr(s, ' ')) == NULL) {	/* a bare path */
		t->method = xstrdup("GET");
		t->path = xstrdup(s);
		return;
	}
	t->method = strndup(s, (size_t)(sp - s));
	while (*sp == ' ')
		sp++;
	if ((sp2 = strchr(sp, ' ')) == NULL)
		t->path = xstrdup(sp);
	else {
		t->path = strndup(sp, (size_t)(sp2 - sp));
		while (*sp2 == ' ')
			sp2++;
		t->body = xstrdup(sp2);
	}
	if (t->method == NULL || t->path == NULL)
		die("out of memory");
}

static unsigned
room_of(uint32_t gi)
{
	if (O.chat_clients > 0) {
		if (gi < O.chat_clients || nrooms == 1)
			return 0;
		return 1 + (gi - O.chat_clients) % (nrooms - 1);
	}
	return gi % nrooms;
}

static void
raise_nofile(unsigned want)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == -1)
		return;
	if (rl.rlim_cur < rl.rlim_max) {
		rlim_t old = rl.rlim_cur;

		rl.rlim_cur = rl.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &rl) == -1) {
			rl.rlim_cur = (rlim_t)want + 64 > old ?
			    (rlim_t)want + 64 : old;
			(void)setrlimit(RLIMIT_NOFILE, &rl);
		}
		(void)getrlimit(RLIMIT_NOFILE, &rl);
	}
	if (rl.rlim_cur != RLIM_INFINITY && (rlim_t)want + 32 > rl.rlim_cur)
		warnx_("%u connections in one process but RLIMIT_NOFILE is "
		    "%llu: use -P to spread them over processes", want,
		    (unsigned long long)rl.rlim_cur);
}

/* --- connection I/O ------------------------------------------------------ */

static void
conn_set_ev(struct conn *c, short flags)
{
	if (c->evflags == (unsigned)flags)
		return;
	if (c->evflags)
		event_del(c->ev);
	c->evflags = (unsigned)flags;
	if (flags) {
		event_assign(c->ev, c->w->base, c->fd, flags | EV_PERSIST,
		    conn_cb, c);
		event_add(c->ev, NULL);
	}
}

static void
pending_done(struct conn *c)
{
	if (c->pending) {
		c->pending = 0;
		c->w->pending--;
	}
}

static void
mark_failed(struct conn *c)
{
	if (!c->failed && !c->joined) {
		c->failed = 1;
		atomic_fetch_add(&g_failed, 1);
	}
}

/* Close the socket. why: 0 normal end, 1 an error/close (counted by the
 * caller). HTTP connections reconnect while the run lasts. */
static void
conn_close(struct conn *c, int why)
{
	int was = c->state;

	if (c->fd != -1) {
		conn_set_ev(c, 0);
		close(c->fd);
		c->fd = -1;
	}
	if (why && O.mode != M_HTTP) {
		if (c->joined)
			c->w->st.disconnects++;
		else if (c->state == CS_OPEN)
			c->w->st.closed_before_join++;
	}
	c->state = CS_DEAD;
	c->wlen = c->rlen = 0;
	c->infrag = 0;
	c->fraglen = 0;
	pending_done(c);
	if (O.mode != M_HTTP) {
		mark_failed(c);
		return;
	}
	c->hstate = H_IDLE;
	if (why && atomic_load(&g_phase) == PH_RUN) {
		c->w->st.reconnects++;
		if (was == CS_CONNECTING)
			c->retry = 1;	/* refused: the sweep retries */
		else
			conn_start(c);
	}
}

static void
conn_flush(struct conn *c)
{
	ssize_t n;

	while (c->wlen > 0) {
		n = write(c->fd, c->wbuf, c->wlen);
		if (n > 0) {
			c->w->st.bytes_out += (uint64_t)n;
			memmove(c->wbuf, c->wbuf + n, c->wlen - (size_t)n);
			c->wlen -= (uint32_t)n;
			continue;
		}
		if (n == -1 && (errno == EAGAIN || errno == EWOULDBLOCK ||
		    errno == EINTR))
			return;
		c->w->st.io_errors++;
		conn_close(c, 1);
		return;
	}
	conn_set_ev(c, EV_READ);
}

/* Write p whole or queue the rest; -1 when the connection broke. */
static int
conn_write(struct conn *c, const void *p, size_t len)
{
	ssize_t n = 0;

	if (c->fd == -1)
		return -1;
	if (c->wlen == 0) {
		n = write(c->fd, p, len);
		if (n == -1) {
			if (errno != EAGAIN && errno != EWOULDBLOCK &&
			    errno != EINTR) {
				c->w->st.io_errors++;
				conn_close(c, 1);
				return -1;
			}
			n = 0;
		}
		c->w->st.bytes_out += (uint64_t)n;
		if ((size_t)n == len)
			return 0;
	}
	if (c->wlen + (len - (size_t)n) > c->wcap) {
		c->wcap = c->wlen + (uint32_t)(len - (size_t)n) + 4096;
		if (c->wcap < 2 * c->wlen)
			c->wcap = 2 * c->wlen;
		c->wbuf = xrealloc(c->wbuf, c->wcap);
	}
	memcpy(c->wbuf + c->wlen, (const char *)p + n, len - (size_t)n);
	c->wlen += (uint32_t)(len - (size_t)n);
	conn_set_ev(c, EV_READ | EV_WRITE);
	return 0;
}

/* --- WebSocket frames ---------------------------------------------------- */

/* Build one masked client frame at out; returns its length. */
static size_t
ws_frame(struct worker *w, unsigned char *out, int fin, int op,
    const unsigned char *p, size_t n)
{
	unsigned char *q = out, mk[4];
	uint32_t m = (uint32_t)xorshift(&w->rng);
	size_t i;

	*q++ = (unsigned char)((fin ? 0x80 : 0) | op);
	if (n < 126)
		*q++ = (unsigned char)(0x80 | n);
	else if (n < 65536) {
		*q++ = 0x80 | 126;
		*q++ = (unsigned char)(n >> 8);
		*q++ = (unsigned char)n;
	} else {
		*q++ = 0x80 | 127;
		for (i = 0; i < 8; i++)
			*q++ = (unsigned char)((uint64_t)n >> (56 - 8 * i));
	}
	memcpy(mk, &m, 4);
	memcpy(q, mk, 4);
	q += 4;
	for (i = 0; i < n; i++)
		q[i] = p[i] ^ mk[i & 3];
	return (size_t)(q - out) + n;
}

static void
ws_send_close(struct conn *c, unsigned code)
{
	unsigned char f[16], pl[2];

	pl[0] = (unsigned char)(code >> 8);
	pl[1] = (unsigned char)code;
	if (c->fd != -1 && c->wlen == 0)
		(void)!write(c->fd, f, ws_frame(c->w, f, 1, 0x8, pl, 2));
}

static void
ws_send_ping(struct conn *c)
{
	unsigned char f[16];

	if (conn_write(c, f, ws_frame(c->w, f, 1, 0x9, NULL, 0)) == 0)
		c->w->st.pings_tx++;
}

static void
conn_joined(struct conn *c)
{
	c->joined = 1;
	c->w->st.joined++;
	atomic_fetch_add(&g_joined, 1);
	if (atomic_load(&g_phase) < PH_RUN && !c->failed)
		c->eligible = 1;
	pending_done(c);
	/* a closed-loop sender that joined late starts now */
	if (c->sender && O.rate <= 0 && atomic_load(&g_phase) == PH_RUN)
		chat_send(c, 0);
}

static void
on_chat(struct conn *c, uint64_t sender, uint64_t seq, uint64_t tns,
    uint64_t now)
{
	struct worker *w = c->w;
	struct rx *r;
	uint64_t d;

	if (sender >= O.senders || room_of((uint32_t)sender) != c->room ||
	    seq == 0 || seq > UINT32_MAX) {
		w->st.foreign++;
		return;
	}
	if (c->rx == NULL)
		c->rx = xcalloc(room_nsenders[c->room], sizeof(*c->rx));
	r = &c->rx[sender_slot[sender]];
	if (seq > r->max) {
		d = seq - r->max;
		r->win = d >= 64 ? 1 : (r->win << d) | 1;
		r->max = (uint32_t)seq;
	} else {
		d = r->max - seq;
		if (d >= 64) {		/* too old to tell: late */
			w->st.order_violations++;
			return;
		}
		if (r->win & (UINT64_C(1) << d)) {
			w->st.duplicates++;
			return;
		}
		r->win |= UINT64_C(1) << d;
		w->st.order_violations++;
	}
	c->rcv++;
	w->st.deliveries++;
	hdr_record(&w->st.lat, now > tns ? now - tns : 0);
	if (sender == c->gi && seq > c->acked) {
		c->acked = (uint32_t)seq;
		if (O.rate <= 0 && seq == c->seq &&
		    atomic_load(&g_phase) == PH_RUN)
			chat_send(c, now);
	}
}

/* One whole text message from the server. */
static void
on_text(struct conn *c, const char *p, size_t n, uint64_t now)
{
	static const char hist[] = ",\"history\":true}";
	static const char key[] = "\"content\":\"b1 ";
	const char *q, *end = p + n;
	uint64_t run, sender, seq, tns, uid;

	if (n < 12 || memcmp(p, "{\"type\":\"", 9) != 0) {
		c->w->st.other_frames++;
		return;
	}
	switch (p[9]) {
	case 'm':
		if (n > sizeof(hist) && memcmp(end - (sizeof(hist) - 1), hist,
		    sizeof(hist) - 1) == 0) {
			c->w->st.history_skipped++;
			return;
		}
		if ((q = memmem(p, n, key, sizeof(key) - 1)) == NULL) {
			c->w->st.foreign++;
			return;
		}
		q += sizeof(key) - 1;
		/* run id: 8 hex digits */
		if (end - q < 9) {
			c->w->st.foreign++;
			return;
		}
		run = 0;
		for (int i = 0; i < 8; i++) {
			int ch = q[i];

			run <<= 4;
			if (ch >= '0' && ch <= '9')
				run |= (uint64_t)(ch - '0');
			else if (ch >= 'a' && ch <= 'f')
				run |= (uint64_t)(ch - 'a' + 10);
			else
				run = UINT64_MAX;
		}
		q += 9;
		if (run != run_id || parse_u64(&q, end, &sender) == -1 ||
		    ++q >= end || parse_u64(&q, end, &seq) == -1 ||
		    ++q >= end || parse_u64(&q, end, &tns) == -1) {
			c->w->st.foreign++;
			return;
		}
		on_chat(c, sender, seq, tns, now);
		return;
	case 'j':
		c->w->st.joins_seen++;
		if (c->joined)
			return;
		if (token_ids[c->gi % ntokens] > 0 &&
		    (q = memmem(p, n, "\"userId\":", 9)) != NULL) {
			q += 9;
			if (parse_u64(&q, end, &uid) == 0 &&
			    (int64_t)uid != token_ids[c->gi % ntokens])
				return;		/* someone else's */
		}
		conn_joined(c);
		return;
	case 'l':
		c->w->st.leaves_seen++;
		return;
	default:
		c->w->st.other_frames++;
	}
}

static void
frag_append(struct conn *c, const unsigned char *p, size_t n)
{
	if (c->fraglen + n > c->fragcap) {
		c->fragcap = c->fraglen + (uint32_t)n + 1024;
		c->frag = xrealloc(c->frag, c->fragcap);
	}
	memcpy(c->frag + c->fraglen, p, n);
	c->fraglen += (uint32_t)n;
}

static void
proto_error(struct conn *c)
{
	c->w->st.protocol_errors++;
	ws_send_close(c, 1002);
	conn_close(c, 1);
}

/* Parse frames; returns bytes consumed, -1 if the connection closed. */
static long
ws_parse(struct conn *c, const unsigned char *p, size_t len, uint64_t now)
{
	size_t off = 0, hl, i;
	uint64_t plen;
	unsigned char pong[140];
	const unsigned char *pl;
	int fin, op;
	unsigned code;

	while (len - off >= 2) {
		const unsigned char *f = p + off;

		fin = f[0] & 0x80;
		op = f[0] & 0x0f;
		plen = f[1] & 0x7f;
		hl = 2;
		if ((f[1] & 0x80) || (f[0] & 0x70)) {
			proto_error(c);		/* masked or RSV bits */
			return -1;
		}
		if (plen == 126) {
			if (len - off < 4)
				break;
			plen = (uint64_t)f[2] << 8 | f[3];
			hl = 4;
		} else if (plen == 127) {
			if (len - off < 10)
				break;
			plen = 0;
			for (i = 0; i < 8; i++)
				plen = plen << 8 | f[2 + i];
			hl = 10;
		}
		if (plen > MAX_FRAME) {
			proto_error(c);
			return -1;
		}
		if (len - off < hl + plen)
			break;
		pl = f + hl;
		off += hl + (size_t)plen;
		switch (op) {
		case 0x1:
		case 0x2:
			if (c->infrag) {
				proto_error(c);
				return -1;
			}
			if (fin) {
				if (op == 0x1)
					on_text(c, (const char *)pl,
					    (size_t)plen, now);
				else
					c->w->st.other_frames++;
			} else {
				c->infrag = 1;
				c->fraglen = 0;
				frag_append(c, pl, (size_t)plen);
			}
			break;
		case 0x0:
			if (!c->infrag) {
				proto_error(c);
				return -1;
			}
			frag_append(c, pl, (size_t)plen);
			if (fin) {
				c->infrag = 0;
				on_text(c, c->frag, c->fraglen, now);
				c->fraglen = 0;
			}
			break;
		case 0x8:
			c->w->st.closes_rx++;
			code = plen >= 2 ? (unsigned)pl[0] << 8 | pl[1] : 1005;
			if (code >= 1000 && code < 1000 + NCLOSE)
				c->w->st.close_codes[code - 1000]++;
			else
				c->w->st.close_codes[NCLOSE]++;
			ws_send_close(c, code == 1005 ? 1000 : code);
			conn_close(c, 1);
			return -1;
		case 0x9:
			c->w->st.pings_rx++;
			if (plen > 125 || !fin) {
				proto_error(c);
				return -1;
			}
			if (conn_write(c, pong, ws_frame(c->w, pong, 1, 0xA,
			    pl, (size_t)plen)) == -1)
				return -1;
			break;
		case 0xA:
			c->w->st.pongs_rx++;
			break;
		default:
			proto_error(c);
			return -1;
		}
		if (c->fd == -1)
			return -1;
	}
	return (long)off;
}

/* --- WebSocket handshake ------------------------------------------------- */

static void
ws_key(const struct conn *c, char out[25])
{
	unsigned char k[16];
	uint64_t a = mix64(key_seed ^ c->gi), b = mix64(a ^ c->gi);

	memcpy(k, &a, 8);
	memcpy(k + 8, &b, 8);
	b64(k, 16, out);
}

static void
ws_handshake_send(struct conn *c)
{
	char req[4096], key[25];
	int n;
	unsigned i;
	size_t t = c->gi % ntokens;

	ws_key(c, key);
	n = snprintf(req, sizeof(req),
	    "GET /ws/joinRoom/%s HTTP/1.1\r\nHost: %s\r\n"
	    "Upgrade: websocket\r\nConnection: Upgrade\r\n"
	    "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n"
	    "Authorization: Bearer %s\r\n", rooms[c->room], hosthdr, key,
	    tokens[t]);
	for (i = 0; i < O.nheaders && n > 0 && (size_t)n < sizeof(req); i++)
		n += snprintf(req + n, sizeof(req) - (size_t)n, "%s\r\n",
		    O.headers[i]);
	if (n <= 0 || (size_t)n + 2 >= sizeof(req))
		die("handshake request too long");
	memcpy(req + n, "\r\n", 2);
	n += 2;
	(void)conn_write(c, req, (size_t)n);
}

/* The 101's head (len bytes, through "\r\n\r\n"): 0 ok, -1 refused. */
static int
ws_handshake_check(struct conn *c, const char *h, size_t len)
{
	char key[25], cat[64], want[32];
	unsigned char dig[SHA_DIGEST_LENGTH];
	const char *v;
	size_t vl;
	unsigned st = 0;

	if (len < 12 || strncmp(h, "HTTP/1.", 7) != 0)
		return -1;
	st = (unsigned)atoi(h + 9);
	if (st < 600)
		c->w->st.status[st]++;
	if (st != 101)
		return -1;
	ws_key(c, key);
	snprintf(cat, sizeof(cat), "%s%s", key, WS_GUID);
	SHA1((const unsigned char *)cat, strlen(cat), dig);
	b64(dig, sizeof(dig), want);
	if ((v = head_find(h, len, "Sec-WebSocket-Accept", &vl)) == NULL ||
	    vl != strlen(want) || memcmp(v, want, vl) != 0)
		return -1;
	if ((v = head_find(h, len, "Upgrade", &vl)) == NULL ||
	    !has_token(v, vl, "websocket"))
		return -1;
	return 0;
}

/* --- HTTP client --------------------------------------------------------- */

static size_t
subst(char *out, size_t cap, const char *s, const struct conn *c)
{
	size_t n = 0;
	const char *v;
	char num[24];

	for (; *s; s++) {
		v = NULL;
		if (*s == '%') {
			if (strncmp(s, "%ID%", 4) == 0) {
				snprintf(num, sizeof(num), "%lld", (long long)
				    (ntokens ? token_ids[c->gi % ntokens] : 0));
				v = num;
				s += 3;
			} else if (strncmp(s, "%PEER%", 6) == 0) {
				snprintf(num, sizeof(num), "%lld", (long long)
				    (ntokens ? token_ids[(c->gi + 1) % ntokens] :
				    0));
				v = num;
				s += 5;
			} else if (strncmp(s, "%N%", 3) == 0) {
				snprintf(num, sizeof(num), "%u", c->gi);
				v = num;
				s += 2;
			} else if (strncmp(s, "%TOKEN%", 7) == 0) {
				v = ntokens ? tokens[c->gi % ntokens] : "";
				s += 6;
			}
		}
		if (v != NULL) {
			size_t l = strlen(v);

			if (n + l < cap)
				memcpy(out + n, v, l);
			n += l;
		} else {
			if (n + 1 < cap)
				out[n] = *s;
			n++;
		}
	}
	if (n < cap)
		out[n] = '\0';
	return n;
}

struct sbuf {
	char	*p;
	size_t	 len, cap;
};

static void
sb_add(struct sbuf *b, const char *s, size_t n)
{
	if (b->len + n + 1 > b->cap) {
		b->cap = (b->len + n + 1) * 2;
		b->p = xrealloc(b->p, b->cap);
	}
	memcpy(b->p + b->len, s, n);
	b->len += n;
	b->p[b->len] = '\0';
}

static void
sb_str(struct sbuf *b, const char *s)
{
	sb_add(b, s, strlen(s));
}

static void
sb_subst(struct sbuf *b, const char *s, const struct conn *c)
{
	char tmp[4096];
	size_t n = subst(tmp, sizeof(tmp), s, c);

	if (n >= sizeof(tmp))
		die("request part too long: %s", s);
	sb_add(b, tmp, n);
}

/* Every request of connection c, rendered once. */
static void
http_render(struct conn *c)
{
	struct sbuf b = { NULL, 0, 0 }, body = { NULL, 0, 0 };
	unsigned i, h;
	char num[32];

	c->reqoff = xcalloc(O.ntmpl + 1, sizeof(*c->reqoff));
	for (i = 0; i < O.ntmpl; i++) {
		const struct tmpl *t = &O.tmpl[i];

		c->reqoff[i] = (uint32_t)b.len;
		body.len = 0;
		if (t->body != NULL)
			sb_subst(&body, t->body, c);
		sb_str(&b, t->method);
		sb_str(&b, " ");
		sb_subst(&b, t->path, c);
		sb_str(&b, " HTTP/1.1\r\nHost: ");
		sb_str(&b, hosthdr);
		sb_str(&b, "\r\n");
		if (ntokens) {
			sb_str(&b, "Authorization: Bearer ");
			sb_str(&b, tokens[c->gi % ntokens]);
			sb_str(&b, "\r\n");
		}
		for (h = 0; h < O.nheaders; h++) {
			sb_subst(&b, O.headers[h], c);
			sb_str(&b, "\r\n");
		}
		if (t->body != NULL) {
			snprintf(num, sizeof(num), "%zu", body.len);
			sb_str(&b, "Content-Type: application/json\r\n"
			    "Content-Length: ");
			sb_str(&b, num);
			sb_str(&b, "\r\n\r\n");
			sb_add(&b, body.p, body.len);
		} else if (strcmp(t->method, "GET") == 0 ||
		    strcmp(t->method, "HEAD") == 0)
			sb_str(&b, "\r\n");
		else
			sb_str(&b, "Content-Length: 0\r\n\r\n");
	}
	c->reqoff[O.ntmpl] = (uint32_t)b.len;
	c->reqs = b.p;
	free(body.p);
}

/* Send the next request; -1 if the connection broke. */
static int
http_send(struct conn *c, uint64_t now)
{
	uint32_t i = c->reqi;

	c->reqi = (i + 1) % O.ntmpl;
	c->hstate = H_HDR;
	c->hnobody = strcmp(O.tmpl[i].method, "HEAD") == 0;
	c->t0 = now;
	c->deadline = c->w->now_s + (uint32_t)(O.timeout + 0.999);
	c->w->st.requests++;
	return conn_write(c, c->reqs + c->reqoff[i],
	    c->reqoff[i + 1] - c->reqoff[i]);
}

/* An answer is complete; -1 if the connection was closed. */
static int
http_complete(struct conn *c, uint64_t now)
{
	struct worker *w = c->w;

	if (atomic_load(&g_phase) == PH_RUN) {
		w->st.responses++;
		if (c->hstatus < 600)
			w->st.status[c->hstatus]++;
		hdr_record(&w->st.lat, now - c->t0);
	}
	c->hstate = H_IDLE;
	if (c->hclose) {
		conn_close(c, 2);
		return -1;
	}
	if (atomic_load(&g_phase) == PH_RUN)
		return http_send(c, now);
	return 0;
}

static long
http_parse(struct conn *c, const char *p, size_t len, uint64_t now)
{
	size_t off = 0, take, vl;
	const char *e, *v, *h;
	int done;

	for (;;) {
		done = 0;
		switch (c->hstate) {
		case H_IDLE:
			if (off < len) {
				c->w->st.protocol_errors++;
				conn_close(c, 1);
				return -1;
			}
			return (long)off;
		case H_HDR:
			h = p + off;
			if ((e = memmem(h, len - off, "\r\n\r\n", 4)) == NULL) {
				if (len - off > MAX_HEAD) {
					c->w->st.protocol_errors++;
					conn_close(c, 1);
					return -1;
				}
				return (long)off;
			}
			take = (size_t)(e + 4 - h);
			off += take;
			if (take < 13 || strncmp(h, "HTTP/1.", 7) != 0) {
				c->w->st.protocol_errors++;
				conn_close(c, 1);
				return -1;
			}
			c->hstatus = (uint32_t)atoi(h + 9);
			if (c->hstatus >= 100 && c->hstatus < 200)
				continue;	/* interim */
			c->hclose = h[7] == '0';
			if ((v = head_find(h, take, "Connection", &vl)) != NULL) {
				if (has_token(v, vl, "close"))
					c->hclose = 1;
				else if (has_token(v, vl, "keep-alive"))
					c->hclose = 0;
			}
			if (c->hnobody || c->hstatus == 204 ||
			    c->hstatus == 304)
				done = 1;
			else if ((v = head_find(h, take, "Transfer-Encoding",
			    &vl)) != NULL && has_token(v, vl, "chunked"))
				c->hstate = H_CHUNK_SIZE;
			else if ((v = head_find(h, take, "Content-Length",
			    &vl)) != NULL) {
				c->remain = strtoull(v, NULL, 10);
				if (c->remain == 0)
					done = 1;
				else
					c->hstate = H_BODY_CL;
			} else {
				c->hstate = H_BODY_EOF;
				c->hclose = 1;
			}
			break;
		case H_BODY_CL:
		case H_CHUNK_DATA:
			take = len - off < c->remain ? len - off :
			    (size_t)c->remain;
			off += take;
			c->remain -= take;
			if (c->remain)
				return (long)off;
			if (c->hstate == H_BODY_CL)
				done = 1;
			else
				c->hstate = H_CHUNK_CRLF;
			break;
		case H_CHUNK_CRLF:
			if (len - off < 2)
				return (long)off;
			off += 2;
			c->hstate = H_CHUNK_SIZE;
			break;
		case H_CHUNK_SIZE:
		case H_CHUNK_TRAILER:
			h = p + off;
			if ((e = memmem(h, len - off, "\r\n", 2)) == NULL) {
				if (len - off > 4096) {
					c->w->st.protocol_errors++;
					conn_close(c, 1);
					return -1;
				}
				return (long)off;
			}
			off += (size_t)(e + 2 - h);
			if (c->hstate == H_CHUNK_TRAILER) {
				if (e == h)
					done = 1;
			} else if ((c->remain = strtoull(h, NULL, 16)) == 0)
				c->hstate = H_CHUNK_TRAILER;
			else
				c->hstate = H_CHUNK_DATA;
			break;
		case H_BODY_EOF:
			return (long)len;
		}
		if (done && http_complete(c, now) == -1)
			return -1;
	}
}

/* --- chat sending ---------------------------------------------------------- */

static void
chat_send(struct conn *c, uint64_t unused)
{
	struct worker *w = c->w;
	unsigned char pl[MAX_MSG + 64];
	char *p = (char *)pl;
	static const char hex[] = "0123456789abcdef";
	uint64_t now;
	size_t n, half, fl;
	int i;

	(void)unused;
	if (c->fd == -1 || c->state != CS_OPEN)
		return;
	if (c->wlen > WLIMIT) {
		w->st.send_blocked++;
		return;
	}
	now = now_ns();
	c->seq++;
	memcpy(p, "b1 ", 3);
	p += 3;
	for (i = 7; i >= 0; i--)
		*p++ = hex[(run_id >> (4 * i)) & 15];
	*p++ = ' ';
	p = u64dec(p, c->gi);
	*p++ = ' ';
	p = u64dec(p, c->seq);
	*p++ = ' ';
	p = u64dec(p, now);
	n = (size_t)(p - (char *)pl);
	if (n + 1 < O.msg_size) {
		*p++ = ' ';
		memset(p, 'x', O.msg_size - n - 1);
		n = O.msg_size;
	}
	if (O.frag && n >= 2) {
		half = n / 2;
		fl = ws_frame(w, w->obuf, 0, 0x1, pl, half);
		fl += ws_frame(w, w->obuf + fl, 1, 0x0, pl + half, n - half);
	} else
		fl = ws_frame(w, w->obuf, 1, 0x1, pl, n);
	c->t0 = now;
	w->st.sent++;
	(void)conn_write(c, w->obuf, fl);
}

/* --- connection life ------------------------------------------------------ */

static void
start_failed(struct conn *c, int fd)
{
	c->w->st.connect_errors++;
	if (fd != -1)
		close(fd);
	c->fd = -1;
	c->state = CS_DEAD;
	pending_done(c);
	mark_failed(c);
}

/*
 * The instance client gi talks to: HOST:PORT or one of the --also ones.
 * Clients of a room are gi = r, r + nrooms, r + 2 * nrooms, ... (room_of),
 * so taking gi / nrooms spreads every room's members over the instances.
 */
static const struct sockaddr_storage *
target_of(uint32_t gi, socklen_t *len)
{
	unsigned i = 0;

	if (nalso > 0)
		i = (O.mode == M_HTTP || nrooms == 0 ? gi : gi / nrooms) %
		    (nalso + 1);
	if (i == 0) {
		*len = dstlen;
		return &dst;
	}
	*len = alsolen[i - 1];
	return &also[i - 1];
}

static socklen_t
sa_len(const struct sockaddr_storage *ss)
{
	return ss->ss_family == AF_INET6 ? sizeof(struct sockaddr_in6) :
	    sizeof(struct sockaddr_in);
}

static void
conn_start(struct conn *c)
{
	struct worker *w = c->w;
	const struct sockaddr_storage *to;
	socklen_t tolen;
	int fd, one = 1;

	c->state = CS_CONNECTING;
	c->rlen = c->wlen = 0;
	c->evflags = 0;
	w->st.conns++;
	if (!c->pending) {
		c->pending = 1;
		w->pending++;
	}
	to = target_of(c->gi, &tolen);
	if ((fd = socket(to->ss_family, SOCK_STREAM, 0)) == -1) {
		start_failed(c, -1);
		return;
	}
	if (evutil_make_socket_nonblocking(fd) == -1 ||
	    evutil_make_socket_closeonexec(fd) == -1) {
		start_failed(c, fd);
		return;
	}
	(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (nbinds) {
		const struct sockaddr_storage *b = &binds[c->gi % nbinds];
#ifdef IP_BIND_ADDRESS_NO_PORT
		/* Linux: choose the port at connect(), per 4-tuple */
		if (b->ss_family == AF_INET)
			(void)setsockopt(fd, IPPROTO_IP,
			    IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
#endif
		if (bind(fd, (const struct sockaddr *)b, sa_len(b)) == -1) {
			start_failed(c, fd);
			return;
		}
	}
	if (connect(fd, (const struct sockaddr *)to, tolen) == -1 &&
	    errno != EINPROGRESS && errno != EINTR) {
		start_failed(c, fd);
		return;
	}
	c->fd = fd;
	c->deadline = w->now_s + (uint32_t)(O.timeout + 0.999);
	conn_set_ev(c, EV_WRITE);
}

static void
on_connected(struct conn *c)
{
	int err = 0;
	socklen_t l = sizeof(err);

	if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &l) == -1)
		err = errno;
	if (err != 0) {
		c->w->st.connect_errors++;
		conn_close(c, 1);
		return;
	}
	c->w->st.connected++;
	conn_set_ev(c, EV_READ);
	if (O.mode == M_HTTP) {
		c->state = CS_OPEN;
		pending_done(c);
		(void)http_send(c, now_ns());
	} else {
		c->state = CS_HANDSHAKE;
		c->deadline = c->w->now_s + (uint32_t)(O.timeout + 0.999);
		ws_handshake_send(c);
	}
}

static long
ws_data(struct conn *c, const char *p, size_t len, uint64_t now)
{
	const char *e;
	size_t hl = 0;
	long r;

	if (c->state == CS_HANDSHAKE) {
		if ((e = memmem(p, len, "\r\n\r\n", 4)) == NULL) {
			if (len > MAX_HEAD) {
				c->w->st.handshake_errors++;
				conn_close(c, 1);
				return -1;
			}
			return 0;
		}
		hl = (size_t)(e + 4 - p);
		if (ws_handshake_check(c, p, hl) == -1) {
			c->w->st.handshake_errors++;
			conn_close(c, 1);
			return -1;
		}
		c->state = CS_OPEN;
		c->deadline = c->w->now_s + (uint32_t)(O.timeout + 0.999);
	}
	r = ws_parse(c, (const unsigned char *)p + hl, len - hl, now);
	return r < 0 ? -1 : (long)hl + r;
}

static void
conn_read(struct conn *c)
{
	struct worker *w = c->w;
	char *buf;
	size_t len;
	ssize_t n;
	long used;

	if (c->rlen) {
		if (c->rcap - c->rlen < 4096) {
			c->rcap = c->rcap * 2 > c->rlen + 4096 ? c->rcap * 2 :
			    c->rlen + 4096;
			c->rbuf = xrealloc(c->rbuf, c->rcap);
		}
		n = read(c->fd, c->rbuf + c->rlen, c->rcap - c->rlen);
		buf = c->rbuf;
	} else {
		n = read(c->fd, w->scratch, SCRATCH);
		buf = w->scratch;
	}
	if (n <= 0) {
		if (n == -1 && (errno == EAGAIN || errno == EWOULDBLOCK ||
		    errno == EINTR))
			return;
		if (O.mode == M_HTTP && n == 0 && c->hstate == H_BODY_EOF) {
			(void)http_complete(c, now_ns());
			return;
		}
		if (O.mode == M_HTTP && n == 0 && c->hstate == H_IDLE) {
			conn_close(c, 2);	/* idle keep-alive closed */
			return;
		}
		w->st.io_errors++;
		conn_close(c, 1);
		return;
	}
	w->st.bytes_in += (uint64_t)n;
	len = (buf == c->rbuf ? c->rlen : 0) + (size_t)n;
	if (O.mode == M_HTTP)
		used = http_parse(c, buf, len, now_ns());
	else
		used = ws_data(c, buf, len, now_ns());
	if (used < 0)
		return;
	len -= (size_t)used;
	if (len == 0) {
		c->rlen = 0;
		if (c->rcap > 256 * 1024) {
			free(c->rbuf);
			c->rbuf = NULL;
			c->rcap = 0;
		}
		return;
	}
	if (buf == c->rbuf) {
		if (used)
			memmove(c->rbuf, c->rbuf + used, len);
	} else {
		if (c->rcap < len + 4096) {
			c->rcap = (uint32_t)len + 8192;
			c->rbuf = xrealloc(c->rbuf, c->rcap);
		}
		memcpy(c->rbuf, buf + used, len);
	}
	c->rlen = (uint32_t)len;
}

static void
conn_cb(evutil_socket_t fd, short what, void *arg)
{
	struct conn *c = arg;

	(void)fd;
	if (what & EV_WRITE) {
		if (c->state == CS_CONNECTING)
			on_connected(c);
		else
			conn_flush(c);
		if (c->fd == -1 || c->state == CS_CONNECTING)
			return;
	}
	if (what & EV_READ)
		conn_read(c);
}

/* --- threads ---------------------------------------------------------------- */

static struct timeval
tick_interval(int ph)
{
	struct timeval tv = { 0, 10000 };

	if (O.mode != M_HTTP && (ph == PH_CONNECT ||
	    (ph == PH_RUN && O.rate > 0)))
		tv.tv_usec = 1000;
	return tv;
}

static void
phase_change(struct worker *w, int ph, uint64_t now)
{
	size_t i;
	struct conn *c;
	struct stats *s = &w->st;

	switch (ph) {
	case PH_RUN:
		w->ol_t0 = now;
		w->ol_sent = 0;
		if (O.mode != M_HTTP && O.rate <= 0)
			for (i = 0; i < w->nsenders; i++)
				if (w->senders[i]->joined)
					chat_send(w->senders[i], now);
		break;
	case PH_DONE:
		for (i = 0; i < w->nconns; i++) {
			c = &w->conns[i];
			if (c->sender) {
				s->room_sent[c->room] += c->seq;
				s->room_acked[c->room] += c->acked;
				s->acked += c->acked;
			}
			if (O.mode != M_HTTP && c->eligible &&
			    c->state == CS_OPEN) {
				s->eligible++;
				s->room_elig[c->room]++;
				s->room_rcv[c->room] += c->rcv;
			}
			if (c->fd != -1) {
				if (O.mode != M_HTTP && c->state == CS_OPEN)
					ws_send_close(c, 1000);
				conn_close(c, 0);
			}
		}
		event_base_loopbreak(w->base);
		break;
	}
}

static void
open_loop(struct worker *w, uint64_t now)
{
	uint64_t due = (uint64_t)((double)(now - w->ol_t0) * w->ol_rate / 1e9);
	struct conn *c = NULL;
	size_t tries;

	while (w->ol_sent < due) {
		for (tries = 0; tries < w->nsenders; tries++) {
			c = w->senders[w->ol_next++ % w->nsenders];
			if (c->joined && c->state == CS_OPEN)
				break;
		}
		if (tries == w->nsenders) {
			w->st.send_skipped += due - w->ol_sent;
			w->ol_sent = due;
			break;
		}
		chat_send(c, now);
		w->ol_sent++;
	}
}

static void
sweep(struct worker *w, uint64_t now, int ph)
{
	uint64_t to_ns = (uint64_t)(O.timeout * 1e9);
	struct conn *c;
	size_t i;

	for (i = 0; i < w->nconns; i++) {
		c = &w->conns[i];
		switch (c->state) {
		case CS_DEAD:
			if (c->retry && ph == PH_RUN) {
				c->retry = 0;
				conn_start(c);
			}
			break;
		case CS_CONNECTING:
			if (w->now_s >= c->deadline) {
				w->st.connect_timeouts++;
				conn_close(c, 1);
			}
			break;
		case CS_HANDSHAKE:
			if (w->now_s >= c->deadline) {
				w->st.handshake_timeouts++;
				conn_close(c, 1);
			}
			break;
		case CS_OPEN:
			if (O.mode == M_HTTP) {
				if (c->hstate != H_IDLE &&
				    w->now_s >= c->deadline) {
					w->st.request_timeouts++;
					conn_close(c, 1);
				}
				break;
			}
			if (!c->joined && !c->failed &&
			    w->now_s >= c->deadline) {
				w->st.join_timeouts++;
				mark_failed(c);
				pending_done(c);
			}
			if (c->sender && O.rate <= 0 && ph == PH_RUN &&
			    c->joined && c->acked < c->seq &&
			    now - c->t0 > to_ns) {
				w->st.echo_timeouts++;
				chat_send(c, now);
			}
			if (O.ping && c->fd != -1 &&
			    (c->gi + w->now_s) % O.ping == 0)
				ws_send_ping(c);
			break;
		}
	}
}

static void
tick_cb(evutil_socket_t fd, short what, void *arg)
{
	struct worker *w = arg;
	uint64_t now = now_ns();
	int ph = atomic_load(&g_phase);
	struct timeval tv;

	(void)fd;
	(void)what;
	w->now_s = (uint32_t)((now - t_origin) / 1000000000u);
	if (ph != w->phase_seen) {
		w->phase_seen = ph;
		phase_change(w, ph, now);
		if (ph == PH_DONE)
			return;
	}
	if (O.mode == M_HTTP ? ph == PH_RUN : ph < PH_DONE)
		while (w->pending < w->max_pending &&
		    w->next_start < w->nconns)
			conn_start(&w->conns[w->next_start++]);
	if (ph == PH_RUN && O.rate > 0 && w->nsenders)
		open_loop(w, now);
	if (w->now_s != w->last_sweep) {
		w->last_sweep = w->now_s;
		sweep(w, now, ph);
	}
	tv = tick_interval(ph);
	event_add(w->tick, &tv);
}

static void *
worker_main(void *arg)
{
	struct worker *w = arg;
	struct timeval tv = { 0, 1000 };

	event_add(w->tick, &tv);
	event_base_dispatch(w->base);
	return NULL;
}

/* --- statistics: merge, serialise, report -------------------------------- */

static void
stats_init(struct stats *s)
{
	unsigned n = nrooms ? nrooms : 1;

	memset(s, 0, sizeof(*s));
	hdr_init(&s->lat);
	s->room_elig = xcalloc(n, sizeof(uint64_t));
	s->room_rcv = xcalloc(n, sizeof(uint64_t));
	s->room_sent = xcalloc(n, sizeof(uint64_t));
	s->room_acked = xcalloc(n, sizeof(uint64_t));
}

static void
stats_merge(struct stats *d, const struct stats *s)
{
	size_t i;
	unsigned n = nrooms ? nrooms : 1;

	for (i = 0; i < NCOUNTERS; i++)
		*stats_counter(d, i) += *stats_counter((struct stats *)
		    (uintptr_t)s, i);
	for (i = 0; i < 600; i++)
		d->status[i] += s->status[i];
	for (i = 0; i <= NCLOSE; i++)
		d->close_codes[i] += s->close_codes[i];
	for (i = 0; i < n; i++) {
		d->room_elig[i] += s->room_elig[i];
		d->room_rcv[i] += s->room_rcv[i];
		d->room_sent[i] += s->room_sent[i];
		d->room_acked[i] += s->room_acked[i];
	}
	hdr_merge(&d->lat, &s->lat);
	if (s->join_s > d->join_s)
		d->join_s = s->join_s;
	if (s->run_s > d->run_s)
		d->run_s = s->run_s;
}

static void
stats_dump(FILE *f, struct stats *s)
{
	size_t i;
	unsigned n = nrooms ? nrooms : 1;

	for (i = 0; i < NCOUNTERS; i++)
		if (*stats_counter(s, i))
			fprintf(f, "c %zu %" PRIu64 "\n", i,
			    *stats_counter(s, i));
	for (i = 0; i < 600; i++)
		if (s->status[i])
			fprintf(f, "s %zu %" PRIu64 "\n", i, s->status[i]);
	for (i = 0; i <= NCLOSE; i++)
		if (s->close_codes[i])
			fprintf(f, "k %zu %" PRIu64 "\n", i,
			    s->close_codes[i]);
	for (i = 0; i < n; i++)
		if (s->room_elig[i] || s->room_rcv[i] || s->room_sent[i] ||
		    s->room_acked[i])
			fprintf(f, "r %zu %" PRIu64 " %" PRIu64 " %" PRIu64
			    " %" PRIu64 "\n", i, s->room_elig[i],
			    s->room_rcv[i], s->room_sent[i], s->room_acked[i]);
	for (i = 0; i < HDR_BUCKETS; i++)
		if (s->lat.b[i])
			fprintf(f, "h %zu %" PRIu64 "\n", i, s->lat.b[i]);
	fprintf(f, "m %" PRIu64 " %" PRIu64 " %" PRIu64 "\n", s->lat.min,
	    s->lat.max, s->lat.sum);
	fprintf(f, "t %.6f %.6f\nE\n", s->join_s, s->run_s);
	fflush(f);
}

/* Read one child's dump into s (fresh); 0 at "E", -1 on EOF first. */
static int
stats_load(FILE *f, struct stats *s)
{
	char line[256];
	unsigned long long a, b, c2, d, e;
	double x, y;

	while (fgets(line, sizeof(line), f) != NULL ||
	    (ferror(f) && errno == EINTR && (clearerr(f), 1))) {
		switch (line[0]) {
		case 'c':
			if (sscanf(line + 1, "%llu %llu", &a, &b) == 2 &&
			    a < NCOUNTERS)
				*stats_counter(s, a) = b;
			break;
		case 's':
			if (sscanf(line + 1, "%llu %llu", &a, &b) == 2 &&
			    a < 600)
				s->status[a] = b;
			break;
		case 'k':
			if (sscanf(line + 1, "%llu %llu", &a, &b) == 2 &&
			    a <= NCLOSE)
				s->close_codes[a] = b;
			break;
		case 'r':
			if (sscanf(line + 1, "%llu %llu %llu %llu %llu", &a,
			    &b, &c2, &d, &e) == 5 && a < (nrooms ? nrooms : 1)) {
				s->room_elig[a] = b;
				s->room_rcv[a] = c2;
				s->room_sent[a] = d;
				s->room_acked[a] = e;
			}
			break;
		case 'h':
			if (sscanf(line + 1, "%llu %llu", &a, &b) == 2)
				hdr_add_bucket(&s->lat, (unsigned)a, b);
			break;
		case 'm':
			if (sscanf(line + 1, "%llu %llu %llu", &a, &b,
			    &c2) == 3) {
				s->lat.min = a;
				s->lat.max = b;
				s->lat.sum = c2;
			}
			break;
		case 't':
			if (sscanf(line + 1, "%lf %lf", &x, &y) == 2) {
				s->join_s = x;
				s->run_s = y;
			}
			break;
		case 'E':
			return 0;
		}
		line[0] = '\0';
	}
	return -1;
}

static double
ms(uint64_t ns)
{
	return (double)ns / 1e6;
}

static uint64_t
losses_of(const struct stats *s)
{
	uint64_t l = 0, want;
	unsigned r;

	for (r = 0; r < nrooms; r++) {
		want = s->room_elig[r] * s->room_acked[r];
		if (want > s->room_rcv[r])
			l += want - s->room_rcv[r];
	}
	return l;
}

static void
json_latency(FILE *f, const struct hdr *h)
{
	fprintf(f, "\"latency_ms\":{\"count\":%" PRIu64 ",\"min\":%.3f,"
	    "\"mean\":%.3f,\"p50\":%.3f,\"p90\":%.3f,\"p99\":%.3f,"
	    "\"p99.9\":%.3f,\"max\":%.3f}", h->count,
	    h->count ? ms(h->min) : 0.0, hdr_mean(h) / 1e6,
	    ms(hdr_percentile(h, 50)), ms(hdr_percentile(h, 90)),
	    ms(hdr_percentile(h, 99)), ms(hdr_percentile(h, 99.9)),
	    ms(h->max));
}

static void
json_statuses(FILE *f, const struct stats *s)
{
	unsigned i, first = 1;

	fputc('{', f);
	for (i = 0; i < 600; i++)
		if (s->status[i]) {
			fprintf(f, "%s\"%u\":%" PRIu64, first ? "" : ",", i,
			    s->status[i]);
			first = 0;
		}
	fputc('}', f);
}

static void
report(struct stats *s)
{
	FILE *f = stdout;
	const struct hdr *h = &s->lat;
	double dur = s->run_s > 0 ? s->run_s : O.duration;
	uint64_t cls[6] = { 0 }, losses = losses_of(s), sent_rooms = 0;
	unsigned i, first;
	size_t k;
	static const char *const modes[] = { "http", "chat", "idle" };

	if (dur <= 0)
		dur = 1e-9;
	for (i = 0; i < nrooms; i++)
		sent_rooms += s->room_sent[i];
	for (i = 100; i < 600; i++)
		cls[i / 100] += s->status[i];

	fprintf(f, "{\"mode\":\"%s\",\"target\":\"%s\",\"connections\":%u,"
	    "\"threads\":%u,\"procs\":%u,\"duration_s\":%.3f,",
	    modes[O.mode], hosthdr, O.nconn, O.threads, O.procs, dur);
	if (O.mode == M_HTTP) {
		fprintf(f, "\"requests\":%" PRIu64 ",\"req_per_s\":%.1f,"
		    "\"status\":{\"1xx\":%" PRIu64 ",\"2xx\":%" PRIu64
		    ",\"3xx\":%" PRIu64 ",\"4xx\":%" PRIu64 ",\"5xx\":%"
		    PRIu64 "},\"status_codes\":", s->responses,
		    (double)s->responses / dur, cls[1], cls[2], cls[3],
		    cls[4], cls[5]);
		json_statuses(f, s);
		fputc(',', f);
		json_latency(f, h);
		fprintf(f, ",\"errors\":{\"connect\":%" PRIu64 ",\"connect_"
		    "timeout\":%" PRIu64 ",\"io\":%" PRIu64 ",\"protocol\":%"
		    PRIu64 ",\"timeout\":%" PRIu64 "},\"reconnects\":%" PRIu64
		    ",\"connects\":%" PRIu64 ",\"bytes_in\":%" PRIu64
		    ",\"bytes_out\":%" PRIu64 "}\n", s->connect_errors,
		    s->connect_timeouts, s->io_errors, s->protocol_errors,
		    s->request_timeouts, s->reconnects, s->connected,
		    s->bytes_in, s->bytes_out);
	} else {
		fprintf(f, "\"rooms\":%u,\"senders\":%u,\"rate\":%.1f,"
		    "\"loop\":\"%s\",\"msg_bytes\":%u,\"join_s\":%.3f,",
		    nrooms, O.senders, O.rate, O.rate > 0 ? "open" : "closed",
		    O.msg_size, s->join_s);
		fprintf(f, "\"joined\":%" PRIu64 ",\"sent\":%" PRIu64
		    ",\"sent_per_s\":%.1f,\"acked\":%" PRIu64 ",\"unacked\":%"
		    PRIu64 ",\"deliveries\":%" PRIu64 ",\"deliveries_per_s\":"
		    "%.1f,", s->joined, s->sent, (double)s->sent / dur,
		    s->acked, sent_rooms - s->acked, s->deliveries,
		    (double)s->deliveries / dur);
		json_latency(f, h);
		fprintf(f, ",\"losses\":%" PRIu64 ",\"duplicates\":%" PRIu64
		    ",\"order_violations\":%" PRIu64 ",\"receivers_checked\":%"
		    PRIu64 ",\"handshake_status\":", losses, s->duplicates,
		    s->order_violations, s->eligible);
		json_statuses(f, s);
		fputs(",\"close_codes\":{", f);
		for (i = 0, first = 1; i <= NCLOSE; i++)
			if (s->close_codes[i]) {
				if (i < NCLOSE)
					fprintf(f, "%s\"%u\":%" PRIu64,
					    first ? "" : ",", 1000 + i,
					    s->close_codes[i]);
				else
					fprintf(f, "%s\"other\":%" PRIu64,
					    first ? "" : ",",
					    s->close_codes[i]);
				first = 0;
			}
		fputs("}", f);
		for (k = 0; k < NCOUNTERS; k++) {
			const char *nm = counter_names[k];

			if (strcmp(nm, "requests") == 0 ||
			    strcmp(nm, "responses") == 0 ||
			    strcmp(nm, "reconnects") == 0 ||
			    strcmp(nm, "request_timeouts") == 0 ||
			    strcmp(nm, "joined") == 0 ||
			    strcmp(nm, "sent") == 0 ||
			    strcmp(nm, "acked") == 0 ||
			    strcmp(nm, "deliveries") == 0 ||
			    strcmp(nm, "duplicates") == 0 ||
			    strcmp(nm, "order_violations") == 0 ||
			    strcmp(nm, "eligible") == 0)
				continue;
			fprintf(f, ",\"%s\":%" PRIu64, nm,
			    *stats_counter(s, k));
		}
		fputs("}\n", f);
	}
	fflush(f);
	if (O.quiet)
		return;

	f = stderr;
	if (O.mode == M_HTTP) {
		fprintf(f, "loadgen http %s: %u connections, %u thread(s), "
		    "%u process(es), %.1f s\n", hosthdr, O.nconn, O.threads,
		    O.procs, dur);
		fprintf(f, "  requests    %10" PRIu64 "  %10.1f/s\n",
		    s->responses, (double)s->responses / dur);
		fprintf(f, "  status      2xx %" PRIu64 "  3xx %" PRIu64
		    "  4xx %" PRIu64 "  5xx %" PRIu64 "  other %" PRIu64 "\n",
		    cls[2], cls[3], cls[4], cls[5], cls[1]);
	} else {
		fprintf(f, "loadgen %s %s: %u clients, %u room(s), %u "
		    "sender(s), %s, %u thread(s), %u process(es)\n",
		    modes[O.mode], hosthdr, O.nconn, nrooms, O.senders,
		    O.rate > 0 ? "open loop" : "closed loop", O.threads,
		    O.procs);
		fprintf(f, "  joined      %10" PRIu64 "  in %.2f s; "
		    "measured %.1f s\n", s->joined, s->join_s, dur);
	}
	if (O.mode != M_HTTP && O.senders > 0) {
		fprintf(f, "  sent        %10" PRIu64 "  %10.1f/s  (echoed "
		    "%" PRIu64 ", not echoed %" PRIu64 ")\n", s->sent,
		    (double)s->sent / dur, s->acked, sent_rooms - s->acked);
		fprintf(f, "  deliveries  %10" PRIu64 "  %10.1f/s\n",
		    s->deliveries, (double)s->deliveries / dur);
		fprintf(f, "  losses %" PRIu64 "  duplicates %" PRIu64
		    "  order violations %" PRIu64 "  (%" PRIu64
		    " receivers checked)\n", losses, s->duplicates,
		    s->order_violations, s->eligible);
	}
	if (O.mode == M_HTTP || O.senders > 0)
		fprintf(f, "  latency ms  p50 %.3f  p90 %.3f  p99 %.3f  "
		    "p99.9 %.3f  max %.3f  (n %" PRIu64 ")\n",
		    ms(hdr_percentile(h, 50)), ms(hdr_percentile(h, 90)),
		    ms(hdr_percentile(h, 99)), ms(hdr_percentile(h, 99.9)),
		    ms(h->max), h->count);
	fprintf(f, "  errors      connect %" PRIu64 "  connect timeout %"
	    PRIu64 "  io %" PRIu64 "  protocol %" PRIu64,
	    s->connect_errors, s->connect_timeouts, s->io_errors,
	    s->protocol_errors);
	if (O.mode == M_HTTP)
		fprintf(f, "  request timeout %" PRIu64 "  reconnects %"
		    PRIu64 "\n", s->request_timeouts, s->reconnects);
	else
		fprintf(f, "  handshake %" PRIu64 "  handshake timeout %"
		    PRIu64 "  join timeout %" PRIu64 "  disconnects %" PRIu64
		    "\n", s->handshake_errors, s->handshake_timeouts,
		    s->join_timeouts, s->disconnects);
	for (i = 0; i < 600; i++)
		if (s->status[i] && (O.mode == M_HTTP ? i >= 300 : i != 101))
			fprintf(f, "  status %u: %" PRIu64 "\n", i,
			    s->status[i]);
	for (i = 0; i <= NCLOSE; i++)
		if (s->close_codes[i])
			fprintf(f, "  closed by server %s%u: %" PRIu64 "\n",
			    i < NCLOSE ? "" : ">", 1000 + i, s->close_codes[i]);
}

/* --- one process: threads and phases -------------------------------------- */

static void
wait_go(int cfd)
{
	struct pollfd pfd = { cfd, POLLIN, 0 };
	char c;

	while (!stop_sig) {
		if (poll(&pfd, 1, 100) > 0) {
			if (read(cfd, &c, 1) != 1)
				stop_sig = 1;	/* the parent is gone */
			return;
		}
	}
}

/* The parent of a -P child closed its end of the control pipe. */
static int
parent_gone(int cfd)
{
	struct pollfd pfd = { cfd, POLLIN, 0 };
	char c;

	return cfd != -1 && poll(&pfd, 1, 0) > 0 && read(cfd, &c, 1) <= 0;
}

static void
run_local(unsigned p, unsigned np, int sfd, int cfd, struct stats *out)
{
	struct worker *ws;
	unsigned t, T = O.threads, nlocal = 0;
	uint32_t gi;
	size_t k;
	uint64_t t0, trun = 0;
	sigset_t all, old;
	unsigned long j = 0, fl = 0;
	unsigned wd = (unsigned)(O.join_timeout + O.duration + O.drain + 30);

	for (gi = p; gi < O.nconn; gi += np)
		nlocal++;
	if (T > nlocal && nlocal > 0)
		T = nlocal;
	raise_nofile(nlocal);
	ws = xcalloc(T, sizeof(*ws));
	for (t = 0; t < T; t++) {
		ws[t].id = t;
		ws[t].conns = xcalloc(nlocal / T + 1, sizeof(struct conn));
		ws[t].senders = xcalloc(nlocal / T + 1, sizeof(struct conn *));
		if ((ws[t].base = event_base_new()) == NULL)
			die("event_base_new failed");
		ws[t].tick = evtimer_new(ws[t].base, tick_cb, &ws[t]);
		ws[t].max_pending = O.max_pending / (np * T);
		if (ws[t].max_pending == 0)
			ws[t].max_pending = 1;
		if (RAND_bytes((unsigned char *)&ws[t].rng,
		    sizeof(ws[t].rng)) != 1)
			ws[t].rng = now_ns() ^ ((uint64_t)getpid() << 32);
		ws[t].rng |= 1;
		ws[t].phase_seen = -1;
		stats_init(&ws[t].st);
	}
	for (gi = p, k = 0; gi < O.nconn; gi += np, k++) {
		struct worker *w = &ws[k % T];
		struct conn *c = &w->conns[w->nconns++];

		c->w = w;
		c->gi = gi;
		c->fd = -1;
		c->room = O.mode == M_HTTP ? 0 : (uint16_t)room_of(gi);
		if ((c->ev = malloc(event_get_struct_event_size())) == NULL)
			die("out of memory");
		if (O.mode != M_HTTP && gi < O.senders) {
			c->sender = 1;
			w->senders[w->nsenders++] = c;
		}
		if (O.mode == M_HTTP)
			http_render(c);
	}
	for (t = 0; t < T; t++)
		ws[t].ol_rate = O.senders ? O.rate * (double)ws[t].nsenders /
		    O.senders : 0;

	atomic_store(&g_phase, O.mode == M_HTTP ? PH_RUN : PH_CONNECT);
	if (O.duration > 0)
		alarm(wd);
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	for (t = 0; t < T; t++)
		if (pthread_create(&ws[t].th, NULL, worker_main, &ws[t]) != 0)
			die("pthread_create failed");
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	t0 = now_ns();

	if (O.mode != M_HTTP) {
		for (;;) {
			sleep_ms(10);
			j = atomic_load(&g_joined);
			fl = atomic_load(&g_failed);
			if (stop_sig || j + fl >= nlocal ||
			    since_s(t0) > O.join_timeout)
				break;
		}
		out->join_s = since_s(t0);
		if (np > 1) {
			dprintf(sfd, "R %lu %lu\n", j, fl);
			wait_go(cfd);
		} else {
			if (O.mode == M_IDLE) {
				printf("joined %lu\n", j);
				fflush(stdout);
			}
			if (!O.quiet)
				fprintf(stderr, "loadgen: %lu of %u joined "
				    "in %.2f s (%lu failed)\n", j, nlocal,
				    out->join_s, fl);
		}
	}
	if (O.mode != M_HTTP && j == 0 && np == 1) {
		warnx_("no client joined: nothing to measure");
		stop_sig = 1;
	}
	if (!stop_sig) {
		trun = now_ns();
		atomic_store(&g_phase, PH_RUN);
		while (!stop_sig && (O.duration <= 0 ||
		    since_s(trun) < O.duration)) {
			sleep_ms(O.duration <= 0 ? 50 :
			    O.duration - since_s(trun) > 0.01 ? 10 : 1);
			if (parent_gone(cfd))
				stop_sig = 1;
		}
		out->run_s = since_s(trun);
		if (O.mode != M_HTTP && O.senders > 0) {
			atomic_store(&g_phase, PH_DRAIN);
			sleep_ms((unsigned)(O.drain * 1000));
		}
	}
	atomic_store(&g_phase, PH_DONE);
	alarm(30);
	for (t = 0; t < T; t++) {
		pthread_join(ws[t].th, NULL);
		stats_merge(out, &ws[t].st);
	}
	alarm(0);
}

/* --- processes ------------------------------------------------------------- */

static void
on_signal(int sig)
{
	unsigned i;

	(void)sig;
	stop_sig = 1;
	for (i = 0; i < nchildren; i++)
		if (child_pids[i] > 0)
			kill(child_pids[i], SIGTERM);
}

static int
read_line(FILE *f, char *buf, size_t n)
{
	for (;;) {
		if (fgets(buf, (int)n, f) != NULL)
			return 0;
		if (ferror(f) && errno == EINTR) {
			clearerr(f);
			continue;
		}
		return -1;
	}
}

static void
run_procs(struct stats *total)
{
	unsigned P = O.procs, p;
	int (*sp)[2] = xcalloc(P, sizeof(*sp)), (*cp)[2] = xcalloc(P,
	    sizeof(*cp));
	FILE **fs = xcalloc(P, sizeof(*fs));
	unsigned long joined = 0, failed = 0, a, b;
	char line[256];
	struct stats s;
	pid_t pid;
	int status;

	child_pids = xcalloc(P, sizeof(*child_pids));
	fflush(stdout);
	fflush(stderr);
	for (p = 0; p < P; p++) {
		if (pipe(sp[p]) == -1 || pipe(cp[p]) == -1)
			die("pipe: %s", strerror(errno));
		if ((pid = fork()) == -1)
			die("fork: %s", strerror(errno));
		if (pid == 0) {
			FILE *f;

			nchildren = 0;
			close(sp[p][0]);
			close(cp[p][1]);
			for (unsigned q = 0; q < p; q++) {
				close(sp[q][0]);
				close(cp[q][1]);
			}
			if ((f = fdopen(sp[p][1], "w")) == NULL)
				_exit(2);
			stats_init(&s);
			run_local(p, P, sp[p][1], cp[p][0], &s);
			stats_dump(f, &s);
			fclose(f);
			_exit(0);
		}
		child_pids[p] = pid;
		nchildren = p + 1;
		close(sp[p][1]);
		close(cp[p][0]);
		if ((fs[p] = fdopen(sp[p][0], "r")) == NULL)
			die("fdopen failed");
	}
	if (O.mode != M_HTTP) {
		for (p = 0; p < P; p++) {
			if (read_line(fs[p], line, sizeof(line)) == -1 ||
			    sscanf(line, "R %lu %lu", &a, &b) != 2) {
				warnx_("process %u ended before it was ready", p);
				continue;
			}
			joined += a;
			failed += b;
		}
		if (O.mode == M_IDLE) {
			printf("joined %lu\n", joined);
			fflush(stdout);
		}
		if (!O.quiet)
			fprintf(stderr, "loadgen: %lu of %u joined (%lu "
			    "failed)\n", joined, O.nconn, failed);
		for (p = 0; p < P; p++)
			(void)!write(cp[p][1], "G", 1);
	}
	for (p = 0; p < P; p++) {
		stats_init(&s);
		if (stats_load(fs[p], &s) == -1)
			warnx_("process %u ended without its figures", p);
		else
			stats_merge(total, &s);
		fclose(fs[p]);
		close(cp[p][1]);
	}
	for (p = 0; p < P; p++) {
		while (waitpid(child_pids[p], &status, 0) == -1 &&
		    errno == EINTR)
			;
		child_pids[p] = 0;
	}
}

/* --- main ------------------------------------------------------------------- */

static void
usage(int code)
{
	fputs(
"usage: loadgen http [options] HOST:PORT\n"
"       loadgen chat [options] HOST:PORT\n"
"       loadgen idle [options] HOST:PORT\n"
"common options:\n"
"  -c N          connections / clients (http 64, chat 100, idle 1000)\n"
"  -d SECONDS    measured duration (10; idle: 0 holds until SIGINT/SIGTERM)\n"
"  -t N          threads (event loops) per process (1)\n"
"  -P N          processes (1); the parent merges their figures\n"
"  -T FILE       tokens, one per line: \"TOKEN [USER_ID]\"; connection i\n"
"                uses line i mod lines (chat, idle: required)\n"
"  -H 'K: V'     extra request header (repeatable)\n"
"  -b A1,A2,..   local source addresses, bound round robin (127.0.0.x)\n"
"  --also HOST:PORT  another instance (repeatable): clients are spread\n"
"                over HOST:PORT and these, every room over all of them\n"
"  --max-pending N  connects/handshakes/joins in flight at once (256)\n"
"  --timeout S   connect, handshake, join and request timeout (10)\n"
"  -q            no table on stderr\n"
"http options:\n"
"  -r 'METHOD PATH [BODY]'  request template (repeatable; each connection\n"
"                cycles through them). In paths, bodies and -H: %ID% the\n"
"                connection's user id, %PEER% the next token's user id,\n"
"                %N% the connection number, %TOKEN% its token\n"
"  -u PATH -m METHOD -B BODY  one template (default GET /)\n"
"chat and idle options:\n"
"  -r ROOM[,ROOM]  rooms (default bench); clients spread round robin\n"
"  --rooms N     N rooms named <first -r>0 .. <first -r>N-1\n"
"  -s N          senders: clients 0..N-1 (chat 10, idle 0)\n"
"  -R RATE       open loop: RATE messages/s in all (0: closed loop)\n"
"  -l BYTES      message size (64)\n"
"  -K N          the first N clients in the first room, the others in\n"
"                the other rooms (a small chat among idle clients)\n"
"  --join-timeout S  wait for joins at most (60)\n"
"  --drain S     after -d, wait for messages in flight (1)\n"
"  --frag        send each message as two fragments\n"
"  --ping S      send a ping on each connection every S seconds\n"
"Output: a table on stderr; one JSON object on the last line of stdout\n"
"(idle prints \"joined N\" on stdout first, once all have joined).\n",
	    code ? stderr : stdout);
	exit(code);
}

int
main(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "max-pending", required_argument, NULL, 1 },
		{ "timeout", required_argument, NULL, 2 },
		{ "join-timeout", required_argument, NULL, 3 },
		{ "drain", required_argument, NULL, 4 },
		{ "frag", no_argument, NULL, 5 },
		{ "ping", required_argument, NULL, 6 },
		{ "rooms", required_argument, NULL, 7 },
		{ "also", required_argument, NULL, 8 },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 }
	};
	const char *binds_opt = NULL, *cmd;
	long senders = -1, nconn = -1;
	struct stats total;
	struct sigaction sa;
	unsigned r, s;
	uint64_t seed[2];
	int ch;

	if (argc < 2)
		usage(2);
	cmd = argv[1];
	if (strcmp(cmd, "http") == 0)
		O.mode = M_HTTP;
	else if (strcmp(cmd, "chat") == 0)
		O.mode = M_CHAT;
	else if (strcmp(cmd, "idle") == 0)
		O.mode = M_IDLE;
	else if (strcmp(cmd, "-h") == 0 || strcmp(cmd, "--help") == 0)
		usage(0);
	else
		usage(2);
	argc--;
	argv++;
	O.duration = 10;
	O.threads = 1;
	O.procs = 1;
	O.max_pending = 256;
	O.timeout = 10;
	O.join_timeout = 60;
	O.drain = 1;
	O.msg_size = 64;
	while ((ch = getopt_long(argc, argv, "c:d:t:P:T:H:b:qr:u:m:B:s:R:l:K:h",
	    lo, NULL)) != -1) {
		switch (ch) {
		case 'c': nconn = atol(optarg); break;
		case 'd': O.duration = atof(optarg); break;
		case 't': O.threads = (unsigned)atoi(optarg); break;
		case 'P': O.procs = (unsigned)atoi(optarg); break;
		case 'T': O.tokens_file = optarg; break;
		case 'H':
			if (O.nheaders == MAX_HEADERS)
				die("at most %d -H", MAX_HEADERS);
			O.headers[O.nheaders++] = optarg;
			break;
		case 'b': binds_opt = optarg; break;
		case 'q': O.quiet = 1; break;
		case 'r':
			if (O.mode == M_HTTP)
				add_template(optarg);
			else
				add_rooms(optarg);
			break;
		case 'u': O.path = optarg; break;
		case 'm': O.method = optarg; break;
		case 'B': O.body = optarg; break;
		case 's': senders = atol(optarg); break;
		case 'R': O.rate = atof(optarg); break;
		case 'l': O.msg_size = (unsigned)atoi(optarg); break;
		case 'K': O.chat_clients = (unsigned)atoi(optarg); break;
		case 1: O.max_pending = (unsigned)atoi(optarg); break;
		case 2: O.timeout = atof(optarg); break;
		case 3: O.join_timeout = atof(optarg); break;
		case 4: O.drain = atof(optarg); break;
		case 5: O.frag = 1; break;
		case 6: O.ping = (unsigned)atoi(optarg); break;
		case 7: O.nrooms_opt = (unsigned)atoi(optarg); break;
		case 8:
			if (nalso == MAX_ALSO)
				die("at most %d --also", MAX_ALSO);
			parse_addr(optarg, &also[nalso], &alsolen[nalso], 1);
			nalso++;
			break;
		case 'h': usage(0); break;
		default: usage(2);
		}
	}
	if (optind != argc - 1)
		usage(2);
	O.target = argv[optind];

	/* defaults and checks */
	O.nconn = (unsigned)(nconn >= 0 ? nconn : O.mode == M_HTTP ? 64 :
	    O.mode == M_CHAT ? 100 : 1000);
	if (O.nconn == 0)
		die("-c must be at least 1");
	if (O.threads == 0 || O.threads > 256 || O.procs == 0 ||
	    O.procs > 256)
		die("-t and -P must be 1..256");
	if (O.duration < 0 || (O.duration == 0 && O.mode != M_IDLE))
		die("-d must be positive (0 only for idle)");
	if (O.timeout <= 0 || O.max_pending == 0)
		die("bad --timeout or --max-pending");
	if (O.tokens_file != NULL)
		load_tokens(O.tokens_file);
	else if (O.mode != M_HTTP)
		die("%s needs -T tokens-file", cmd);
	if (O.mode == M_HTTP) {
		if (O.ntmpl == 0) {
			struct tmpl *t = &O.tmpl[O.ntmpl++];

			t->method = xstrdup(O.method ? O.method : "GET");
			t->path = xstrdup(O.path ? O.path : "/");
			t->body = O.body ? xstrdup(O.body) : NULL;
		} else if (O.path || O.method || O.body)
			die("-r and -u/-m/-B do not mix");
	} else {
		if (nrooms == 0)
			add_rooms("bench");
		if (O.nrooms_opt > 0) {
			char *prefix = rooms[0], name[128];

			nrooms = 0;
			for (r = 0; r < O.nrooms_opt; r++) {
				snprintf(name, sizeof(name), "%s%u", prefix, r);
				add_rooms(name);
			}
		}
		if (nrooms > 65535)
			die("at most 65535 rooms");
		O.senders = (unsigned)(senders >= 0 ? senders :
		    O.mode == M_CHAT ? 10 : 0);
		if (O.senders > O.nconn)
			O.senders = O.nconn;
		if (O.chat_clients > O.nconn)
			die("-K is more than -c");
		if (O.chat_clients > 0 && O.senders > O.chat_clients)
			die("-s must not exceed -K (senders are the first "
			    "clients)");
		if (O.mode == M_CHAT && O.senders == 0)
			die("chat needs at least one sender (-s)");
		if (O.msg_size > MAX_MSG)
			die("-l at most %d", MAX_MSG);
		if (O.rate < 0)
			die("-R must not be negative");
		room_nsenders = xcalloc(nrooms, sizeof(*room_nsenders));
		sender_slot = xcalloc(O.senders, sizeof(*sender_slot));
		for (s = 0; s < O.senders; s++)
			sender_slot[s] = room_nsenders[room_of(s)]++;
	}
	parse_addr(O.target, &dst, &dstlen, 1);
	{
		char h[256], *e;
		const char *t = O.target;

		if (strncmp(t, "http://", 7) == 0)
			t += 7;
		else if (strncmp(t, "ws://", 5) == 0)
			t += 5;
		snprintf(h, sizeof(h), "%s", t);
		if ((e = strchr(h, '/')) != NULL)
			*e = '\0';
		snprintf(hosthdr, sizeof(hosthdr), "%s", h);
	}
	if (binds_opt != NULL)
		parse_binds(binds_opt);
	if (RAND_bytes((unsigned char *)seed, sizeof(seed)) != 1)
		die("no random bytes from libcrypto");
	run_id = (uint32_t)seed[0];
	key_seed = seed[1];
	t_origin = now_ns();

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);

	stats_init(&total);
	if (O.procs > 1)
		run_procs(&total);
	else
		run_local(0, 1, -1, -1, &total);
	report(&total);
	/* 1: nothing could be measured (see the errors) */
	return (O.mode == M_HTTP ? total.responses : total.joined) ? 0 : 1;
}
