/*
 * ws: RFC 6455 for a connection after its 101, over wslay (ws.c is the only
 * includer of wslay). wslay parses client frames (unmasking, fragments,
 * control frames, close handshake); GoChat checks UTF-8 itself. Data frames
 * from the server do not go through wslay's queue: an event is framed once
 * into a ws_frame, and the same bytes are referenced by every connection's
 * output buffer, so a room of N connections costs one serialization and no
 * payload copies.
 */
#ifndef GC_WS_H
#define GC_WS_H

#include <stddef.h>
#include <stdint.h>

struct bufferevent;
struct evbuffer;
struct http_request;

/* Close codes of SPEC section 5. */
#define WS_CLOSE_NORMAL		1000
#define WS_CLOSE_GOING_AWAY	1001
#define WS_CLOSE_PROTOCOL	1002
#define WS_CLOSE_UNSUPPORTED	1003	/* binary frame */
#define WS_CLOSE_BAD_DATA	1007	/* invalid UTF-8 */
#define WS_CLOSE_POLICY		1008	/* slow reader, account gone */
#define WS_CLOSE_TOO_BIG	1009
#define WS_CLOSE_ERROR		1011	/* cannot accept the message now */

/* --- the handshake ------------------------------------------------------ */

/*
 * Check that req is a valid RFC 6455 upgrade request (GET, HTTP/1.1,
 * Upgrade: websocket, Connection containing "upgrade", Sec-WebSocket-Key of
 * 16 bytes base64, Sec-WebSocket-Version: 13). Returns 0 and writes the
 * response header lines ("Upgrade: websocket\r\nSec-WebSocket-Accept:
 * ...\r\n") into extra; or -1 with a reason in extra for a 400.
 */
int	ws_handshake(const struct http_request *req, char *extra,
	    size_t extralen);
/*
 * 1 if the request's Sec-WebSocket-Protocol header(s) list the
 * subprotocol name (comma-separated tokens, compared exactly): the 101
 * then names it back ("Sec-WebSocket-Protocol: <name>").
 */
int	ws_subprotocol(const struct http_request *req, const char *name);

/* --- frames built once -------------------------------------------------- */

/* An unmasked server text frame, reference-counted. */
struct ws_frame;

/* Frame len bytes of text; one reference, owned by the caller. */
struct ws_frame *ws_frame_text(const char *payload, size_t len);
void	ws_frame_ref(struct ws_frame *f);
void	ws_frame_unref(struct ws_frame *f);
/* The frame's bytes (header and payload) and their length. */
const unsigned char *ws_frame_bytes(const struct ws_frame *f, size_t *len);

/* --- a session ---------------------------------------------------------- */

struct ws;

struct ws_handlers {
	/* A complete text message, valid UTF-8, at most max_message bytes. */
	void	(*on_text)(void *arg, const char *msg, size_t len);
	/* Any frame arrived (data, ping or pong): the peer is alive. */
	void	(*on_activity)(void *arg);
	/*
	 * The session is over: the close handshake finished, the peer broke
	 * the protocol (the right close frame has been queued), or
	 * ws_close() was called and its frame written. The owner closes the
	 * connection once the output has drained. Called once, synchronously
	 * from ws_read(), ws_close(), ws_send() or ws_ping() as soon as the
	 * close frame is in the output (1006: none could be written), never
	 * from inside on_text. Neither callback may call ws_free().
	 */
	void	(*on_closed)(void *arg, int code);
};

/*
 * Start a session on bev, whose callbacks the owner keeps: it calls
 * ws_read() when input arrives. max_message: longer messages close with
 * 1009. output_limit: once more than this waits unsent (every frame
 * counts: data, pongs, close), the session is closed with 1008 instead of
 * buffering more, whether ws_send() or the pongs of ws_read() passed it.
 */
struct ws *ws_new(struct bufferevent *bev, size_t max_message,
	    size_t output_limit, const struct ws_handlers *h, void *arg);
void	ws_free(struct ws *ws);
/* Process the input buffered on bev (call from the read callback). */
void	ws_read(struct ws *ws);
/*
 * Queue a frame for this connection (takes its own reference). Returns 0,
 * or -1 if the session is closing or the output limit was passed (then a
 * 1008 close has been started). Called from on_text, the pongs of pings
 * that came earlier in the same read are written first.
 */
int	ws_send(struct ws *ws, struct ws_frame *f);
/* Send a ping (the owner's idle timer decides when). */
void	ws_ping(struct ws *ws);
/* Start the close handshake with code and a short reason. */
void	ws_close(struct ws *ws, int code, const char *reason);
/* 1 once the session is closing (no more data frames go out). */
int	ws_closing(const struct ws *ws);
/*
 * 1 while the session holds wslay's context (8.8 KB): from the first byte
 * of a frame to the end of its message, while a control frame waits, and
 * once closing. An idle session holds none.
 */
int	ws_holds_context(const struct ws *ws);

#endif
