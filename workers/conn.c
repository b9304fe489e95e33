/*
 * conn: the life of one client connection on a worker's loop. Requests are
 * read one at a time and answered in order (pipelining); a handler may
 * answer later from an async callback. Reading stops while output or
 * pipelined requests pile up (conn_flow). The struct is freed only from a
 * deferred event, never inside its own callback chain, and never while a
 * handler still owns its request.
 */
#include "config.h"

#include <sys/types.h>
#include <sys/socket.h>
#include <netdb.h>

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "common/conf.h"
#include "common/json.h"
#include "common/log.h"
#include "common/util.h"
#include "workers/api.h"
#include "workers/conn.h"
#include "workers/http.h"
#include "workers/worker.h"

#define CONN_LINGER_MS		2000	/* drain input this long before close */
#define CONN_OUTPUT_HIGH	(256 * 1024)	/* stop reading requests while
						 * more than this waits unsent */
#define CONN_PIPELINE_MAX	16	/* requests waiting or in progress
					 * before reading stops (SPEC 8) */
#define CONN_WRITES_MAX		8	/* writev calls per connection and
					 * pass (each takes up to 128 chains,
					 * libevent's NUM_WRITE_IOVEC) */

static void	conn_read_cb(struct bufferevent *, void *);
static void	conn_write_cb(struct bufferevent *, void *);
static void	conn_event_cb(struct bufferevent *, short, void *);
static void	conn_timer_cb(evutil_socket_t, short, void *);
static void	conn_free_cb(evutil_socket_t, short, void *);
static void	conn_process(struct conn *);
static void	conn_flow(struct conn *);
static int	conn_backlog_full(struct conn *);
static int	conn_hosts(const struct http_request *);
static void	conn_arm(struct conn *, int);
static void	conn_linger(struct conn *);
static void	conn_schedule_free(struct conn *);
static void	conn_shut(struct conn *);
static void	conn_pend(struct conn *);
static void	conn_unpend(struct conn *);
static void	conn_write_now(struct conn *);
static void	conn_drained(struct conn *);
static void	conn_output_cb(struct evbuffer *,
		    const struct evbuffer_cb_info *, void *);
static void	conn_verror(struct conn *, int, const char *, const char *,
		    va_list) __attribute__((format(printf, 4, 0)));

struct conn *
conn_new(struct worker *w, int fd, const struct sockaddr *sa, int salen)
{
	char host[NI_MAXHOST], serv[NI_MAXSERV];
	struct timeval wt = { w->conf->keepalive_timeout, 0 };
	struct conn *c;

	if ((c = calloc(1, sizeof(*c))) == NULL)
		goto fail;
	c->worker = w;
	c->id = ++w->next_conn_id;
	c->reader = http_reader_new(w->conf->max_header_size,
	    w->conf->max_body_size);
	c->bev = bufferevent_socket_new(w->base, fd, BEV_OPT_CLOSE_ON_FREE);
	c->timer = evtimer_new(w->base, conn_timer_cb, c);
	if (c->reader == NULL || c->bev == NULL || c->timer == NULL)
		goto fail;
	if (getnameinfo(sa, (socklen_t)salen, host, sizeof(host), serv,
	    sizeof(serv), NI_NUMERICHOST | NI_NUMERICSERV) == 0)
		snprintf(c->peer, sizeof(c->peer), "%.63s", host);
	else
		snprintf(c->peer, sizeof(c->peer), "unknown");
	bufferevent_setcb(c->bev, conn_read_cb, conn_write_cb, conn_event_cb,
	    c);
	bufferevent_set_timeouts(c->bev, NULL, &wt);
	if (bufferevent_enable(c->bev, EV_READ | EV_WRITE) == -1)
		goto fail;
	c->state = CONN_READING;
	conn_arm(c, w->conf->header_timeout);
	TAILQ_INSERT_TAIL(&w->conns, c, entry);
	w->stats.connections++;
	log_debug("conn %llu: accepted from %s", (unsigned long long)c->id,
	    c->peer);
	return c;
fail:
	log_warnx("cannot set up a connection (out of memory?)");
	if (c != NULL) {
		if (c->bev != NULL)
			bufferevent_free(c->bev);
		else
			close(fd);
		if (c->timer != NULL)
			event_free(c->timer);
		http_reader_free(c->reader);
		free(c);
	} else
		close(fd);
	return NULL;
}

int
conn_idle(const struct conn *c)
{
	return c->state == CONN_READING && c->nrequests > 0 &&
	    !http_reader_started(c->reader) &&
	    evbuffer_get_length(bufferevent_get_input(c->bev)) == 0 &&
	    evbuffer_get_length(bufferevent_get_output(c->bev)) == 0;
}

void
conn_close(struct conn *c)
{
	if (c->state == CONN_CLOSED)
		return;
	log_debug("conn %llu: closed", (unsigned long long)c->id);
	if (c->handlers != NULL && c->handlers->on_close != NULL)
		c->handlers->on_close(c);
	c->state = CONN_CLOSED;
	conn_unpend(c);
	bufferevent_free(c->bev);
	c->bev = NULL;
	evtimer_del(c->timer);
	if (c->req == NULL && c->holds == 0)
		conn_schedule_free(c);
}

void
conn_hold(struct conn *c)
{
	c->holds++;
}

void
conn_release(struct conn *c)
{
	if (--c->holds == 0 && c->state == CONN_CLOSED && c->req == NULL)
		conn_schedule_free(c);
}

/*
 * The access log line of the request being answered:
 *   2026-11-25T16:20:01.123Z 127.0.0.1 42 "GET /me" 200 85 3
 * (time, client address, user id or "-", method and target with anything
 * unprintable escaped, status, body bytes, milliseconds since the request
 * began).
 */
static void
conn_access_log(struct conn *c, int status, size_t bytes)
{
	const struct http_request *req = c->req;
	char line[1500], target[1030], user[24], ts[32];
	const char *t;
	size_t n = 0;
	int len;

	if (!alog_enabled())
		return;
	t = req != NULL && req->target != NULL ? req->target : "-";
	for (; *t != '\0' && n + 5 < sizeof(target) - 4; t++) {
		unsigned char ch = (unsigned char)*t;

		if (ch < 0x21 || ch >= 0x7f || ch == '"' || ch == '\\')
			n += (size_t)snprintf(target + n, sizeof(target) - n,
			    "\\x%02x", ch);
		else
			target[n++] = (char)ch;
	}
	if (*t != '\0')
		n += (size_t)snprintf(target + n, sizeof(target) - n, "...");
	target[n] = '\0';
	if (c->user_id > 0)
		snprintf(user, sizeof(user), "%lld", (long long)c->user_id);
	else
		snprintf(user, sizeof(user), "-");
	util_rfc3339(util_now_ms(), ts, sizeof(ts));
	len = snprintf(line, sizeof(line), "%s %s %s \"%s %s\" %d %zu %lld",
	    ts, c->peer, user, req != NULL ? req->method_name : "-", target,
	    status, bytes, (long long)(util_mono_ms() - c->req_start_ms));
	if (len > 0)
		alog_write(line, (size_t)len < sizeof(line) ? (size_t)len :
		    sizeof(line) - 1);
}

/*
 * From the upgrade on, the connection's output is written by the worker's
 * pass flush (conn_flush_pending), not by the bufferevent: EV_WRITE stays
 * disabled, so adding a frame costs no epoll_ctl, and it is enabled only
 * for what the socket would not take (conn_write_now). An output callback
 * puts the connection on the pending list whenever something is added,
 * whoever adds it (frames, pongs, close frames). If the callback cannot be
 * added (out of memory), the bufferevent keeps writing as before.
 */
void
conn_upgrade(struct conn *c, const char *extra)
{
	struct evbuffer *out = bufferevent_get_output(c->bev);

	if (evbuffer_add_cb(out, conn_output_cb, c) != NULL) {
		c->direct = 1;
		bufferevent_disable(c->bev, EV_WRITE);
		if (evbuffer_get_length(out) > 0)
			conn_pend(c);	/* earlier responses still unsent */
	}
	http_write_head(out, 101, NULL, 0, 1, extra);
	conn_access_log(c, 101, 0);
	http_request_free(c->req);
	c->req = NULL;
	/* No more HTTP on this connection: give back the reader's buffer. */
	http_reader_free(c->reader);
	c->reader = NULL;
	c->state = CONN_WEBSOCKET;
	evtimer_del(c->timer);
	bufferevent_enable(c->bev, EV_READ);
}

void
conn_attach(struct conn *c, const struct conn_handlers *h, void *owner)
{
	c->handlers = h;
	c->owner = owner;
}

/*
 * The worker's flush event: every connection that got output during this
 * pass is written now, before the loop waits again (Redis's
 * handleClientsWithPendingWrites). The list is taken whole first, so a
 * connection pended again meanwhile waits for the next run: bounded.
 */
void
conn_flush_pending(struct worker *w)
{
	struct conn_list todo = TAILQ_HEAD_INITIALIZER(todo);
	struct conn *c;

	TAILQ_CONCAT(&todo, &w->pending, pend_entry);
	while ((c = TAILQ_FIRST(&todo)) != NULL) {
		TAILQ_REMOVE(&todo, c, pend_entry);
		c->pending = 0;
		conn_write_now(c);
	}
}

/*
 * Something was added to a direct connection's output. The first
 * connection pended in a pass activates the flush event: libevent appends
 * it to the tail of its (single-priority) active queue, so it runs after
 * every callback already active in this pass (all the I/O of one
 * epoll_wait(), the subscription's read that delivers a burst among them)
 * and before the loop polls again. A lower priority would be starved by
 * a loop that always finds new events; the tail of the same queue cannot
 * be.
 */
static void
conn_output_cb(struct evbuffer *buf, const struct evbuffer_cb_info *info,
    void *arg)
{
	(void)buf;
	if (info->n_added > 0)
		conn_pend(arg);
}

static void
conn_pend(struct conn *c)
{
	struct worker *w = c->worker;

	if (c->pending || c->state == CONN_CLOSED)
		return;
	if (TAILQ_EMPTY(&w->pending))
		event_active(w->flush, EV_TIMEOUT, 0);
	TAILQ_INSERT_TAIL(&w->pending, c, pend_entry);
	c->pending = 1;
}

static void
conn_unpend(struct conn *c)
{
	if (c->pending) {
		TAILQ_REMOVE(&c->worker->pending, c, pend_entry);
		c->pending = 0;
	}
}

/*
 * Everything waiting, in as few writev() calls as the socket takes (one,
 * unless more than 128 frames wait). What it does not take is left to
 * the bufferevent: EV_WRITE is enabled until the output drains
 * (conn_write_cb disables it again). A connection already waiting for
 * EV_WRITE is not tried: its socket was full.
 */
static void
conn_write_now(struct conn *c)
{
	struct evbuffer *out;
	evutil_socket_t fd;
	int i, n;

	if (c->state == CONN_CLOSED ||
	    (bufferevent_get_enabled(c->bev) & EV_WRITE))
		return;
	out = bufferevent_get_output(c->bev);
	fd = bufferevent_getfd(c->bev);
	/* A socket bufferevent keeps its output's start frozen except in
	 * its own write callback: thaw it for the writes, as that does. */
	evbuffer_unfreeze(out, 1);
	for (i = 0, n = 0; i < CONN_WRITES_MAX &&
	    evbuffer_get_length(out) > 0; i++) {
		if ((n = evbuffer_write(out, fd)) <= 0)
			break;
	}
	evbuffer_freeze(out, 1);
	if (n == -1 && errno != EAGAIN && errno != EWOULDBLOCK &&
	    errno != EINTR) {
		log_debug("conn %llu: write: %s", (unsigned long long)c->id,
		    strerror(errno));
		conn_close(c);
		return;
	}
	if (evbuffer_get_length(out) > 0) {
		if (bufferevent_enable(c->bev, EV_WRITE) == -1)
			conn_close(c);
		return;
	}
	conn_drained(c);
}

/* A WebSocket's output is all written. */
static void
conn_drained(struct conn *c)
{
	if (c->close_after_write)
		conn_shut(c);
	conn_flow(c);
}

void
conn_close_when_drained(struct conn *c, int grace_ms)
{
	struct timeval tv = { grace_ms / 1000, (grace_ms % 1000) * 1000 };

	if (c->state == CONN_CLOSED)
		return;
	c->close_after_write = 1;
	evtimer_add(c->timer, &tv);
	if (evbuffer_get_length(bufferevent_get_output(c->bev)) == 0)
		conn_shut(c);
}

/*
 * Everything for a closing WebSocket is written: shut our side and keep
 * reading (the session discards it) until the client closes or the grace
 * timer fires. Closing with unread input would send a reset, and a reset
 * can destroy the close frame before the client reads it.
 */
static void
conn_shut(struct conn *c)
{
	if (!c->shut) {
		shutdown(bufferevent_getfd(c->bev), SHUT_WR);
		c->shut = 1;
	}
	if (c->peer_eof)
		conn_close(c);
}

void
conn_respond(struct conn *c, int status, const char *ctype, const void *body,
    size_t len, const char *extra)
{
	struct evbuffer *buf = evbuffer_new();

	if (buf != NULL && body != NULL && len > 0)
		evbuffer_add(buf, body, len);
	conn_respond_buffer(c, status, ctype, buf, extra);
	if (buf != NULL)
		evbuffer_free(buf);
}

void
conn_respond_buffer(struct conn *c, int status, const char *ctype,
    struct evbuffer *body, const char *extra)
{
	struct worker *w = c->worker;
	struct evbuffer *out;
	size_t len = body != NULL ? evbuffer_get_length(body) : 0;
	int head_only, keep;

	api_count(c, status);	/* the metrics, by the route recorded */
	c->route = 0;
	head_only = c->req != NULL && c->req->method == HTTP_M_HEAD;
	conn_access_log(c, status, head_only ? 0 : len);
	http_request_free(c->req);
	c->req = NULL;
	if (c->state == CONN_CLOSED) {	/* the client left meanwhile */
		if (c->holds == 0)
			conn_schedule_free(c);
		return;
	}
	keep = c->keep_alive && !c->peer_eof && !w->stopping;
	out = bufferevent_get_output(c->bev);
	http_write_head(out, status, ctype, len, keep, extra);
	if (len > 0 && !head_only)
		evbuffer_add_buffer(out, body);
	log_debug("conn %llu: %d", (unsigned long long)c->id, status);
	if (!keep) {
		c->close_after_write = 1;
		c->state = CONN_LINGERING;
		bufferevent_disable(c->bev, EV_READ);
		return;
	}
	c->state = CONN_READING;
	conn_arm(c, w->conf->keepalive_timeout);
	conn_flow(c);
	/* Pipelined requests may already be waiting in the input. */
	bufferevent_trigger(c->bev, EV_READ, BEV_TRIG_DEFER_CALLBACKS);
}

void
conn_error(struct conn *c, int status, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	conn_verror(c, status, NULL, fmt, ap);
	va_end(ap);
}

void
conn_error_hdr(struct conn *c, int status, const char *extra,
    const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	conn_verror(c, status, extra, fmt, ap);
	va_end(ap);
}

static void
conn_verror(struct conn *c, int status, const char *extra, const char *fmt,
    va_list ap)
{
	char msg[512];
	struct evbuffer *body = evbuffer_new();

	vsnprintf(msg, sizeof(msg), fmt, ap);
	if (body != NULL) {
		evbuffer_add(body, "{", 1);
		json_add_key(body, "error");
		json_add_cstr(body, msg);
		evbuffer_add(body, "}", 1);
	}
	conn_json(c, status, body, extra);
	if (body != NULL)
		evbuffer_free(body);
}

void
conn_json(struct conn *c, int status, struct evbuffer *body, const char *extra)
{
	conn_respond_buffer(c, status, "application/json", body, extra);
}

/* --- internals ---------------------------------------------------------- */

static void
conn_arm(struct conn *c, int seconds)
{
	struct timeval tv = { seconds, 0 };

	evtimer_add(c->timer, &tv);
}

/*
 * Feed buffered input to the reader until a request is complete, then hand
 * it to its handler. Stops while a handler owns a request, and while too
 * much output waits for a slow reader.
 */
static void
conn_process(struct conn *c)
{
	struct worker *w = c->worker;
	struct evbuffer *in, *out;
	struct evbuffer_iovec v;
	enum http_feed r;
	int was_started, hosts;
	size_t used;

	while (c->state == CONN_READING) {
		in = bufferevent_get_input(c->bev);
		out = bufferevent_get_output(c->bev);
		if (evbuffer_get_length(out) > CONN_OUTPUT_HIGH)
			return;		/* conn_write_cb resumes */
		if (evbuffer_get_length(in) == 0)
			break;
		if (evbuffer_peek(in, -1, NULL, &v, 1) < 1)
			break;
		was_started = http_reader_started(c->reader);
		r = http_reader_feed(c->reader, v.iov_base, v.iov_len, &used);
		evbuffer_drain(in, used);
		if (!was_started && http_reader_started(c->reader)) {
			c->req_start_ms = util_mono_ms();
			c->user_id = 0;
			c->continued = 0;
			conn_arm(c, w->conf->header_timeout);
		}
		if (r == HTTP_FEED_MORE) {
			/* The head is accepted: let the client send the body. */
			if (!c->continued &&
			    http_reader_expects_continue(c->reader)) {
				evbuffer_add_printf(out,
				    "HTTP/1.1 100 Continue\r\n\r\n");
				c->continued = 1;
			}
			continue;
		}
		evtimer_del(c->timer);
		c->state = CONN_HANDLING;
		if (r == HTTP_FEED_ERROR) {
			int status = http_reader_status(c->reader);

			c->keep_alive = 0;
			log_debug("conn %llu: bad request (%d)",
			    (unsigned long long)c->id, status);
			switch (status) {
			case 411:
				conn_error(c, 411, "a request body needs a "
				    "Content-Length header (chunked bodies are "
				    "not accepted)");
				break;
			case 413:
				conn_error(c, 413, "request body larger than "
				    "%d bytes", w->conf->max_body_size);
				break;
			case 431:
				if (http_reader_too_many(c->reader))
					conn_error(c, 431, "more than %d header "
					    "fields", HTTP_MAX_HEADERS);
				else
					conn_error(c, 431, "request line and "
					    "headers larger than %d bytes",
					    w->conf->max_header_size);
				break;
			case 505:
				conn_error(c, 505, "only HTTP/1.0 and HTTP/1.1 "
				    "are supported");
				break;
			case 501:
				conn_error(c, 501, "method not implemented");
				break;
			default:
				conn_error(c, 400, "malformed HTTP request");
			}
			return;
		}
		c->nrequests++;
		c->req = http_reader_take(c->reader);
		c->keep_alive = c->req->keep_alive;
		/* RFC 9112 3.2: one Host in HTTP/1.1, at most one in 1.0. */
		hosts = conn_hosts(c->req);
		if (hosts > 1 || (hosts == 0 && c->req->http_minor == 1)) {
			c->keep_alive = 0;
			conn_error(c, 400, "%s", hosts == 0 ? "an HTTP/1.1 "
			    "request needs a Host header" : "more than one "
			    "Host header");
			return;
		}
		api_dispatch(c, c->req);
		/* The handler may have answered (state READING again, with
		 * the next request possibly buffered) or not yet. */
	}
	if (c->state == CONN_READING && c->peer_eof)
		conn_close(c);
}

/*
 * SPEC 8: a connection is not read while more output waits unsent for it
 * than its limit (256 KiB for HTTP, ws_output_limit for a WebSocket, whose
 * pongs and close frames are in the same buffer as its data), nor while
 * CONN_PIPELINE_MAX requests wait or are in progress; so a peer that sends
 * and never reads costs a bounded amount. Called after every read, write
 * and answer: it turns reading back on once neither holds. The kernel keeps
 * what the peer sends meanwhile, and TCP's window stops the peer. A
 * lingering connection reads (and discards) on its own terms.
 */
static void
conn_flow(struct conn *c)
{
	size_t out;
	int stop;

	if (c->state == CONN_CLOSED || c->state == CONN_LINGERING)
		return;
	out = evbuffer_get_length(bufferevent_get_output(c->bev));
	if (c->state == CONN_WEBSOCKET)
		stop = out > (size_t)c->worker->conf->ws_output_limit;
	else
		stop = out > CONN_OUTPUT_HIGH || conn_backlog_full(c);
	if (stop == !(bufferevent_get_enabled(c->bev) & EV_READ))
		return;			/* as it should be */
	if (stop)
		bufferevent_disable(c->bev, EV_READ);
	else
		bufferevent_enable(c->bev, EV_READ);
}

/*
 * 1 if the input already holds what may wait unread: the heads of
 * CONN_PIPELINE_MAX requests, the one in progress included (a head ends
 * with an empty line; a body that holds one only makes the count high,
 * never low), or as many bytes as one request may have, however they are
 * split (so bare-LF heads and bodies are bounded too). Input is only left
 * waiting while a request is in progress or the output is over its limit;
 * otherwise conn_process() consumes it all.
 */
static int
conn_backlog_full(struct conn *c)
{
	const struct conf *conf = c->worker->conf;
	struct evbuffer *in = bufferevent_get_input(c->bev);
	struct evbuffer_ptr p;
	size_t len = evbuffer_get_length(in);
	int n = c->req != NULL;

	if (len == 0)
		return 0;
	if (len >= (size_t)conf->max_header_size + (size_t)conf->max_body_size)
		return 1;
	p = evbuffer_search(in, "\r\n\r\n", 4, NULL);
	while (p.pos != -1 && ++n < CONN_PIPELINE_MAX) {
		if (evbuffer_ptr_set(in, &p, 4, EVBUFFER_PTR_ADD) == -1)
			break;
		p = evbuffer_search(in, "\r\n\r\n", 4, &p);
	}
	return n >= CONN_PIPELINE_MAX;
}

/* How many Host header fields the request has. */
static int
conn_hosts(const struct http_request *req)
{
	int i, n = 0;

	for (i = 0; i < req->nheaders; i++)
		if (strcasecmp(req->headers[i].name, "Host") == 0)
			n++;
	return n;
}

static void
conn_read_cb(struct bufferevent *bev, void *arg)
{
	struct conn *c = arg;

	if (c->state == CONN_LINGERING) {
		evbuffer_drain(bufferevent_get_input(bev),
		    evbuffer_get_length(bufferevent_get_input(bev)));
		return;
	}
	if (c->state == CONN_WEBSOCKET) {
		if (c->handlers != NULL && c->handlers->on_read != NULL)
			c->handlers->on_read(c);
	} else
		conn_process(c);
	conn_flow(c);
}

static void
conn_write_cb(struct bufferevent *bev, void *arg)
{
	struct conn *c = arg;

	if (c->state == CONN_WEBSOCKET) {
		/* What conn_write_now() left is written: back to the pass
		 * flush. */
		if (c->direct)
			bufferevent_disable(bev, EV_WRITE);
		conn_drained(c);
		return;
	}
	if (c->close_after_write && c->state == CONN_LINGERING) {
		conn_linger(c);
		return;
	}
	if (c->state == CONN_READING)
		conn_process(c);
	conn_flow(c);
}

static void
conn_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct conn *c = arg;

	if (c->state == CONN_WEBSOCKET) {
		conn_close(c);
		return;
	}
	if (what & BEV_EVENT_EOF) {
		c->peer_eof = 1;
		/* Answer what was asked, then close. */
		if (c->state == CONN_HANDLING)
			return;
		if (c->state == CONN_READING &&
		    evbuffer_get_length(bufferevent_get_input(bev)) > 0) {
			conn_process(c);
			return;
		}
		if (c->state == CONN_LINGERING &&
		    evbuffer_get_length(bufferevent_get_output(bev)) > 0)
			return;
	}
	conn_close(c);
}

/*
 * Everything was written and the connection is to close. Shut our side,
 * then read and discard what the client still sends for a moment, so that
 * an unread request body does not turn our close into a reset that would
 * destroy the response before the client has read it.
 */
static void
conn_linger(struct conn *c)
{
	if (c->peer_eof) {
		conn_close(c);
		return;
	}
	shutdown(bufferevent_getfd(c->bev), SHUT_WR);
	c->close_after_write = 0;
	bufferevent_enable(c->bev, EV_READ);
	{
		struct timeval tv = { CONN_LINGER_MS / 1000,
		    (CONN_LINGER_MS % 1000) * 1000 };

		evtimer_add(c->timer, &tv);
	}
}

static void
conn_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct conn *c = arg;

	(void)fd;
	(void)what;
	switch (c->state) {
	case CONN_READING:
		if (http_reader_started(c->reader)) {
			log_debug("conn %llu: request head not complete in "
			    "time", (unsigned long long)c->id);
			c->state = CONN_HANDLING;
			c->keep_alive = 0;
			conn_error(c, 408, "request not received within %d "
			    "seconds", c->worker->conf->header_timeout);
		} else
			conn_close(c);
		break;
	case CONN_LINGERING:
	case CONN_WEBSOCKET:		/* conn_close_when_drained's grace */
		conn_close(c);
		break;
	default:
		break;
	}
}

static void
conn_schedule_free(struct conn *c)
{
	struct timeval now = { 0, 0 };

	if (event_base_once(c->worker->base, -1, EV_TIMEOUT, conn_free_cb, c,
	    &now) == -1)
		log_warnx("conn %llu: cannot schedule free, leaking it",
		    (unsigned long long)c->id);
}

static void
conn_free_cb(evutil_socket_t fd, short what, void *arg)
{
	struct conn *c = arg;
	struct worker *w = c->worker;

	(void)fd;
	(void)what;
	TAILQ_REMOVE(&w->conns, c, entry);
	conn_unpend(c);
	w->stats.connections--;
	if (c->handlers != NULL && c->handlers->on_free != NULL)
		c->handlers->on_free(c->owner);
	event_free(c->timer);
	http_reader_free(c->reader);
	http_request_free(c->req);
	free(c);
	worker_conn_closed(w);
}
