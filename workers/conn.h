/*
 * conn: one client connection: reading requests with the http reader,
 * answering them in order, timeouts, and lingering close. A handler owns the
 * request until it calls one of the conn_respond functions exactly once;
 * it may do so later from an async callback: the conn stays allocated (even
 * if the client has hung up, in which case the response is dropped) until
 * then.
 */
#ifndef GC_CONN_H
#define GC_CONN_H

#include <stddef.h>
#include <stdint.h>
#include <sys/queue.h>
#include <sys/socket.h>

struct worker;
struct http_request;
struct evbuffer;
struct conn;

/*
 * What owns a connection after its upgrade (chat's member, set with
 * conn_attach()): conn.c calls these and never names the owner.
 */
struct conn_handlers {
	/* Input arrived (in the bufferevent's input buffer). */
	void	(*on_read)(struct conn *c);
	/* The connection is closing, now (either side, or cut). */
	void	(*on_close)(struct conn *c);
	/* The deferred free: release owner, outside any of its callbacks. */
	void	(*on_free)(void *owner);
};

enum conn_state {
	CONN_READING,		/* waiting for (the rest of) a request */
	CONN_HANDLING,		/* a handler owns the current request */
	CONN_LINGERING,		/* response sent, draining input before close */
	CONN_WEBSOCKET,		/* upgraded: its handlers read, and its
				 * output is written once per loop pass */
	CONN_CLOSED		/* socket gone; freed once not busy */
};

struct conn {
	TAILQ_ENTRY(conn)	 entry;
	TAILQ_ENTRY(conn)	 pend_entry;	/* in worker->pending */
	uint64_t		 id;
	struct worker		*worker;
	struct bufferevent	*bev;
	struct http_reader	*reader;
	struct http_request	*req;		/* being handled, or NULL */
	const struct conn_handlers *handlers;	/* after an upgrade, or
						 * NULL */
	void			*owner;		/* the handlers' argument */
	int			 holds;		/* async work still to call back
						 * (conn_hold); freed at 0 */
	struct event		*timer;		/* header, idle or linger */
	enum conn_state		 state;
	int			 keep_alive;	/* answer the current request
						 * with keep-alive */
	int			 close_after_write;
	int			 peer_eof;	/* the client shut its side */
	uint64_t		 nrequests;	/* requests read so far */
	int			 shut;		/* our side is shut (closing) */
	int			 pending;	/* on worker->pending */
	int			 direct;	/* output written by the pass
						 * flush (conn_flush_pending),
						 * not by the bufferevent */
	int			 continued;	/* 100 Continue sent for the
						 * request being read */
	int64_t			 req_start_ms;	/* monotonic, for the log */
	int64_t			 user_id;	/* the request's caller, or 0 */
	int			 route;		/* the metrics route of the
						 * request, recorded at dispatch
						 * (api_dispatch); 0: none */
	char			 peer[64];	/* address, for logs and limits */
};

/* Take over an accepted socket; NULL (and the socket closed) on failure. */
struct conn *conn_new(struct worker *w, int fd, const struct sockaddr *sa,
	    int salen);
/* Close now, wherever it is (worker stop). Frees when not busy. */
void	conn_close(struct conn *c);
/*
 * 1 if the connection sits between requests, safe to close on stop: it has
 * been answered at least once and nothing of a next request has arrived.
 * A connection never read from is not idle: its request may be in flight.
 */
int	conn_idle(const struct conn *c);

/*
 * Answer the current request. body may be NULL for none; extra is zero or
 * more "Name: value\r\n" lines. conn_respond_buffer moves the contents of
 * body (a JSON document, say) into the output without copying.
 */
void	conn_respond(struct conn *c, int status, const char *ctype,
	    const void *body, size_t len, const char *extra);
void	conn_respond_buffer(struct conn *c, int status, const char *ctype,
	    struct evbuffer *body, const char *extra);
/*
 * Keep c allocated across an async call that will come back with it
 * (a Redis command for a WebSocket member, say), and let it go.
 */
void	conn_hold(struct conn *c);
void	conn_release(struct conn *c);
/*
 * Answer the current request with 101 and the handshake's header lines;
 * from now on the connection belongs to its chat member.
 */
void	conn_upgrade(struct conn *c, const char *extra);
/*
 * Hand the upgraded connection to its owner: from now on input goes to
 * h->on_read, and the close and the free to the others.
 */
void	conn_attach(struct conn *c, const struct conn_handlers *h,
	    void *owner);
/*
 * Write every WebSocket connection that got output during this loop pass:
 * one writev each (the worker's flush event, once per pass).
 */
void	conn_flush_pending(struct worker *w);
/* Close once the output has been written, or after grace_ms anyway. */
void	conn_close_when_drained(struct conn *c, int grace_ms);

/* JSON body helpers: {"error": "<message>"} and any JSON buffer. */
void	conn_error(struct conn *c, int status, const char *fmt, ...)
	    __attribute__((format(printf, 3, 4)));
/* The same with extra header lines (405's Allow, 429's Retry-After). */
void	conn_error_hdr(struct conn *c, int status, const char *extra,
	    const char *fmt, ...) __attribute__((format(printf, 4, 5)));
void	conn_json(struct conn *c, int status, struct evbuffer *body,
	    const char *extra);

#endif
