/*
 * ws: the RFC 6455 handshake check, the shared server text frames, and one
 * session per upgraded connection. A session owns its wslay event context;
 * the bufferevent, its callbacks and the decision to close the TCP
 * connection stay with the caller.
 */
#include "config.h"

#include <sys/types.h>
#include <sys/socket.h>

#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <wslay/wslay.h>

#include "common/crypto.h"
#include "common/utf8.h"
#include "workers/http.h"
#include "workers/ws.h"

#define WS_GUID		"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
#define WS_KEY_LEN	24	/* base64 of 16 bytes, with its "==" */
#define WS_ACCEPT_LEN	28	/* base64 of a SHA-1 digest */
#define WS_CTRL_MAX	125	/* payload limit of a control frame */
#define WS_REASON_MAX	123	/* close reason: 125 less the code */
#define WS_CLOSE_ABNORMAL 1006	/* never sent: no close frame went out */

/*
 * Header and payload in one allocation. Frames are shared by the output
 * buffers of one worker's connections, all on one thread: the count is a
 * plain integer.
 */
struct ws_frame {
	unsigned int	 refs;
	size_t		 len;		/* of bytes[]: header and payload */
	unsigned char	 bytes[];
};

/*
 * wslay's context costs 8.8 KB (two 4 KiB buffers), more than everything
 * else of an idle connection together. It therefore exists only while it
 * holds something: from the first byte of a frame to the end of its
 * message, and while a control frame waits to be written. Between
 * messages it is freed and made again on the next byte. wslay's reader
 * may already hold the first bytes of the next frame, so "between" is
 * counted: the bytes handed to wslay against the bytes of the frames it
 * has finished.
 */
struct ws {
	struct bufferevent *bev;	/* the owner's; never freed here */
	wslay_event_context_ptr ctx;	/* or NULL between messages */
	uint64_t	 fed;		/* bytes handed to ctx */
	uint64_t	 framed;	/* of those, in frames ctx finished */
	uint64_t	 frame_len;	/* header and payload of the frame
					 * being read */
	int		 fragmented;	/* a data message awaits its last
					 * fragment */
	struct ws_handlers h;
	void		*arg;
	size_t		 max_message;
	size_t		 output_limit;
	int		 in_recv;	/* inside wslay_event_recv(): wslay's
					 * queue is written out afterwards */
	int		 activity;	/* a frame began during this read */
	int		 bad_close;	/* the peer's close frame had a
					 * one-byte body: answer 1002 */
	int		 closing;	/* a close frame is queued or written:
					 * no data frames, no more reading */
	int		 closed;	/* on_closed has been called */
	int		 close_code;	/* of a close frame written here,
					 * bypassing wslay; 0 if wslay's */
};

#define WS_SNDBUF_MIN	(16 * 1024)
#define WS_SNDBUF_MAX	(256 * 1024)
#define WS_COPY_MAX	512		/* frames copied behind a backlog */

static void	ws_bound_sndbuf(int, size_t);
static const char *ws_check_upgrade(const struct http_request *,
		    const char **);
static int	ws_header_has_token(const struct http_request *, const char *,
		    const char *);
static int	ws_list_has_token(const char *, const char *);
static int	ws_list_has(const char *, const char *, int);
static int	ws_header_once(const struct http_request *, const char *,
		    const char **);
static int	ws_key_valid(const char *);
static void	ws_frame_release_cb(const void *, size_t, void *);
static ssize_t	ws_recv_cb(wslay_event_context_ptr, uint8_t *, size_t, int,
		    void *);
static ssize_t	ws_send_cb(wslay_event_context_ptr, const uint8_t *, size_t,
		    int, void *);
static int	ws_ctx(struct ws *);
static void	ws_ctx_release(struct ws *);
static void	ws_frame_end_cb(wslay_event_context_ptr, void *);
static void	ws_frame_start_cb(wslay_event_context_ptr,
		    const struct wslay_event_on_frame_recv_start_arg *, void *);
static void	ws_msg_cb(wslay_event_context_ptr,
		    const struct wslay_event_on_msg_recv_arg *, void *);
static void	ws_write_close(struct ws *, int);
static void	ws_flush(struct ws *);
static int	ws_over_limit(struct ws *);
static size_t	ws_reason_len(const char *);

static const struct wslay_event_callbacks ws_wslay_callbacks = {
	.recv_callback = ws_recv_cb,
	.send_callback = ws_send_cb,
	.genmask_callback = NULL,	/* a server never masks */
	.on_frame_recv_start_callback = ws_frame_start_cb,
	.on_frame_recv_chunk_callback = NULL,
	.on_frame_recv_end_callback = ws_frame_end_cb,
	.on_msg_recv_callback = ws_msg_cb
};

/* --- the handshake ------------------------------------------------------ */

int
ws_handshake(const struct http_request *req, char *extra, size_t extralen)
{
	char buf[WS_KEY_LEN + sizeof(WS_GUID)];
	char accept[WS_ACCEPT_LEN + 1];
	unsigned char md[20];
	const char *why, *key;
	int n;

	if ((why = ws_check_upgrade(req, &key)) != NULL)
		goto fail;
	memcpy(buf, key, WS_KEY_LEN);
	memcpy(buf + WS_KEY_LEN, WS_GUID, sizeof(WS_GUID) - 1);
	crypto_sha1(buf, WS_KEY_LEN + sizeof(WS_GUID) - 1, md);
	crypto_base64(md, sizeof(md), accept);
	/* No Connection line: http_write_head() writes it for a 101. */
	n = snprintf(extra, extralen,
	    "Upgrade: websocket\r\nSec-WebSocket-Accept: %s\r\n", accept);
	if (n >= 0 && (size_t)n < extralen)
		return 0;
	why = "the upgrade response does not fit";
fail:
	if (extralen > 0)
		snprintf(extra, extralen, "%s", why);
	return -1;
}

int
ws_subprotocol(const struct http_request *req, const char *name)
{
	for (int i = 0; i < req->nheaders; i++)
		if (strcasecmp(req->headers[i].name,
		    "Sec-WebSocket-Protocol") == 0 &&
		    ws_list_has(req->headers[i].value, name, 0))
			return 1;
	return 0;
}

/*
 * RFC 6455 4.2.1, in its order. Returns NULL and the key, or what a client
 * author needs to read to fix the request.
 */
static const char *
ws_check_upgrade(const struct http_request *req, const char **key)
{
	const char *v;

	if (req->method != HTTP_M_GET)
		return "a WebSocket upgrade must be a GET";
	if (req->http_minor < 1)
		return "a WebSocket upgrade needs HTTP/1.1";
	if (http_header(req, "Host") == NULL)
		return "a WebSocket upgrade needs a Host header";
	if (!ws_header_has_token(req, "Upgrade", "websocket"))
		return "Upgrade: websocket is required";
	if (!ws_header_has_token(req, "Connection", "upgrade"))
		return "Connection: Upgrade is required";
	if (ws_header_once(req, "Sec-WebSocket-Key", key) != 1)
		return "exactly one Sec-WebSocket-Key is required";
	if (!ws_key_valid(*key))
		return "Sec-WebSocket-Key must be 16 bytes in base64";
	if (ws_header_once(req, "Sec-WebSocket-Version", &v) != 1 ||
	    strcmp(v, "13") != 0)
		return "Sec-WebSocket-Version: 13 is required";
	return NULL;
}

/* 1 if any header called name lists token (a comma-separated list). */
static int
ws_header_has_token(const struct http_request *req, const char *name,
    const char *token)
{
	for (int i = 0; i < req->nheaders; i++)
		if (strcasecmp(req->headers[i].name, name) == 0 &&
		    ws_list_has_token(req->headers[i].value, token))
			return 1;
	return 0;
}

/* Case-insensitive, around optional white space: "keep-alive, Upgrade". */
static int
ws_list_has_token(const char *list, const char *token)
{
	return ws_list_has(list, token, 1);
}

/* The same, case-insensitive only if nocase (subprotocols are not). */
static int
ws_list_has(const char *list, const char *token, int nocase)
{
	size_t tlen = strlen(token), n;
	const char *p = list, *end;

	while (*p != '\0') {
		while (*p == ' ' || *p == '\t' || *p == ',')
			p++;
		end = p + strcspn(p, ",");
		n = (size_t)(end - p);
		while (n > 0 && (p[n - 1] == ' ' || p[n - 1] == '\t'))
			n--;
		if (n == tlen && (nocase ? strncasecmp(p, token, n) :
		    strncmp(p, token, n)) == 0)
			return 1;
		p = end;
	}
	return 0;
}

/* How many headers are called name; *value is the first one's. */
static int
ws_header_once(const struct http_request *req, const char *name,
    const char **value)
{
	int count = 0;

	*value = NULL;
	for (int i = 0; i < req->nheaders; i++)
		if (strcasecmp(req->headers[i].name, name) == 0) {
			if (count++ == 0)
				*value = req->headers[i].value;
		}
	return count;
}

/* 22 base64 digits and "==": what 16 bytes encode to. */
static int
ws_key_valid(const char *key)
{
	static const char digits[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
	    "abcdefghijklmnopqrstuvwxyz0123456789+/";

	if (strlen(key) != WS_KEY_LEN || strcmp(key + 22, "==") != 0)
		return 0;
	for (int i = 0; i < 22; i++)
		if (key[i] == '\0' || strchr(digits, key[i]) == NULL)
			return 0;
	return 1;
}

/* --- frames built once -------------------------------------------------- */

struct ws_frame *
ws_frame_text(const char *payload, size_t len)
{
	struct ws_frame *f;
	unsigned char *p;
	size_t hlen;

	hlen = len < 126 ? 2 : len <= 0xffff ? 4 : 10;
	if (len > SIZE_MAX - sizeof(*f) - hlen)
		return NULL;
	if ((f = malloc(sizeof(*f) + hlen + len)) == NULL)
		return NULL;
	f->refs = 1;
	f->len = hlen + len;
	p = f->bytes;
	p[0] = 0x80 | WSLAY_TEXT_FRAME;		/* FIN, text, no RSV */
	if (hlen == 2)
		p[1] = (unsigned char)len;	/* no MASK bit from a server */
	else if (hlen == 4) {
		p[1] = 126;
		p[2] = (unsigned char)(len >> 8);
		p[3] = (unsigned char)len;
	} else {
		p[1] = 127;
		for (int i = 0; i < 8; i++)
			p[2 + i] = (unsigned char)((uint64_t)len >>
			    (56 - 8 * i));
	}
	if (len > 0)
		memcpy(p + hlen, payload, len);
	return f;
}

void
ws_frame_ref(struct ws_frame *f)
{
	f->refs++;
}

void
ws_frame_unref(struct ws_frame *f)
{
	if (f != NULL && --f->refs == 0)
		free(f);
}

const unsigned char *
ws_frame_bytes(const struct ws_frame *f, size_t *len)
{
	*len = f->len;
	return f->bytes;
}

/* An output buffer is done with its reference (sent, or buffer freed). */
static void
ws_frame_release_cb(const void *data, size_t len, void *extra)
{
	(void)data;
	(void)len;
	ws_frame_unref(extra);
}

/* --- a session ---------------------------------------------------------- */

/*
 * on_closed timing: it is called exactly once, synchronously, as soon as
 * the session's last frame (a close frame) is in bev's output buffer, or
 * it is known that none can be written (code 1006). That happens at the
 * end of ws_read() (the peer's close was echoed, or the peer broke the
 * protocol), or inside ws_close(), ws_send() (output limit: 1008) or
 * ws_ping(); never from inside on_text, where a close is only queued and
 * written when the read that delivered the message ends. The owner must
 * not free the ws or the bufferevent from on_text or on_closed (free them
 * later, outside these callbacks); it closes the connection once the
 * output has drained.
 */
struct ws *
ws_new(struct bufferevent *bev, size_t max_message, size_t output_limit,
    const struct ws_handlers *h, void *arg)
{
	struct ws *ws;

	if ((ws = calloc(1, sizeof(*ws))) == NULL)
		return NULL;
	ws->bev = bev;
	ws->h = *h;
	ws->arg = arg;
	ws->max_message = max_message;
	ws->output_limit = output_limit;
	ws_bound_sndbuf(bufferevent_getfd(bev), output_limit);
	return ws;
}

/*
 * The kernel's send buffer grows by itself up to megabytes (Linux
 * autotuning): a client that reads nothing would soak up that much before
 * output_limit counted a byte. Bounding it keeps "unsent" meaningful; chat
 * frames are small, so a few hundred kilobytes lose no throughput.
 */
static void
ws_bound_sndbuf(int fd, size_t output_limit)
{
	int size = output_limit < WS_SNDBUF_MIN ? WS_SNDBUF_MIN :
	    output_limit > WS_SNDBUF_MAX ? WS_SNDBUF_MAX : (int)output_limit;

	if (fd != -1)
		(void)setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size,
		    sizeof(size));
}

/*
 * Never from inside on_text or on_closed. Frames still in bev's output
 * keep their own references and are released with that buffer.
 */
void
ws_free(struct ws *ws)
{
	if (ws == NULL)
		return;
	if (ws->ctx != NULL)
		wslay_event_context_free(ws->ctx);
	free(ws);
}

/*
 * Runs wslay over what the input holds: messages go to on_text, pings are
 * answered, errors and the peer's close queue the right close frame, which
 * ws_flush() then writes. Bounded by the input: wslay stops when the
 * buffer is empty or once it has queued a close.
 */
void
ws_read(struct ws *ws)
{
	struct evbuffer *in = bufferevent_get_input(ws->bev);
	int r;

	if (ws->in_recv)
		return;
	if (!ws->closing && evbuffer_get_length(in) > 0 && ws_ctx(ws) == -1)
		ws_write_close(ws, WS_CLOSE_ERROR);	/* out of memory */
	if (!ws->closing && ws->ctx != NULL) {
		ws->in_recv = 1;
		r = wslay_event_recv(ws->ctx);
		ws->in_recv = 0;
		/*
		 * wslay 1.1.1 answers the errors its frame parser finds
		 * (a control frame over 125 bytes or fragmented, a length
		 * not in its shortest form, a 64-bit length with the top
		 * bit set) with a close frame without a code, and returns
		 * WSLAY_ERR_CALLBACK_FAILURE (our recv callback itself never
		 * fails). SPEC wants 1002, so that close is replaced.
		 */
		if (r == WSLAY_ERR_CALLBACK_FAILURE || ws->bad_close)
			ws_write_close(ws, WS_CLOSE_PROTOCOL);
		else if (r != 0)		/* out of memory */
			ws_write_close(ws, WS_CLOSE_ERROR);
		if (ws->activity) {
			ws->activity = 0;
			if (ws->h.on_activity != NULL)
				ws->h.on_activity(ws->arg);
		}
	}
	ws_flush(ws);
	/* SPEC 8: pongs count against the limit as data frames do. */
	if (!ws->closing && ws_over_limit(ws))
		ws_close(ws, WS_CLOSE_POLICY, "too slow to read");
	ws_ctx_release(ws);
	/* Whatever follows a close is not read: drop it, not keep it. */
	if (ws->closing)
		evbuffer_drain(in, evbuffer_get_length(in));
}

/*
 * Into an empty output the frame goes by reference: no copy of the
 * payload, one reference per connection, released when the bytes have
 * been written; behind other output a small one is copied. The output
 * limit is checked before adding, so at most output_limit plus one frame
 * is ever buffered; the 1008 close frame then waits behind that backlog,
 * which a slow reader may never drain: the owner should cut the
 * connection after a short grace.
 */
int
ws_send(struct ws *ws, struct ws_frame *f)
{
	struct evbuffer *out = bufferevent_get_output(ws->bev);
	int rc;

	if (ws->closing)
		return -1;
	/*
	 * Sent from on_text: the pongs wslay queued earlier in this read go
	 * first, so a pong never waits behind data that came after its ping
	 * (Autobahn 5.6, 5.19); ws_flush() would write them after.
	 */
	if (ws->in_recv && ws->ctx != NULL && wslay_event_want_write(ws->ctx))
		(void)wslay_event_send(ws->ctx);
	if (ws_over_limit(ws)) {
		ws_close(ws, WS_CLOSE_POLICY, "too slow to read");
		return -1;
	}
	/*
	 * Behind other output, a small frame is copied into the buffer's
	 * last chain: a reference costs a chain of its own (a malloc, a
	 * free and a callback) and an iovec in every writev, so a worker
	 * that falls behind would get dearer per frame the further it
	 * falls. Copied, a backlog costs less per frame, not more.
	 */
	if (f->len <= WS_COPY_MAX && evbuffer_get_length(out) > 0)
		rc = evbuffer_add(out, f->bytes, f->len);
	else {
		ws_frame_ref(f);
		rc = evbuffer_add_reference(out, f->bytes, f->len,
		    ws_frame_release_cb, f);
		if (rc == -1)	/* libevent did not take it: still ours */
			ws_frame_unref(f);
	}
	if (rc == -1) {
		ws_close(ws, WS_CLOSE_ERROR, "out of memory");
		return -1;
	}
	return 0;
}

/* An empty ping: the owner only needs some frame back (on_activity). */
void
ws_ping(struct ws *ws)
{
	struct wslay_event_msg msg = { WSLAY_PING, NULL, 0 };

	if (ws->closing)
		return;
	if (ws_ctx(ws) == -1 || wslay_event_queue_msg(ws->ctx, &msg) != 0)
		return;			/* out of memory: the pong timeout
					 * will close the connection */
	if (!ws->in_recv) {
		ws_flush(ws);
		ws_ctx_release(ws);
	}
}

/*
 * code must be one an endpoint may send (1000-1003, 1007-1011,
 * 3000-4999). The session stops reading at once: the owner closes the
 * connection after the output drains instead of waiting for the peer's
 * close frame. Called while a read is delivering a message, the frame is
 * written (and on_closed called) when that read ends.
 */
void
ws_close(struct ws *ws, int code, const char *reason)
{
	if (ws->closing)
		return;
	if (ws_ctx(ws) == -1)
		ws_write_close(ws, code);
	else {
		ws->closing = 1;
		wslay_event_shutdown_read(ws->ctx);
		if (wslay_event_queue_close(ws->ctx, (uint16_t)code,
		    (const uint8_t *)reason, ws_reason_len(reason)) != 0)
			ws_write_close(ws, code);
	}
	if (!ws->in_recv)
		ws_flush(ws);
}

int
ws_closing(const struct ws *ws)
{
	return ws->closing;
}

int
ws_holds_context(const struct ws *ws)
{
	return ws->ctx != NULL;
}

/* --- wslay's side ------------------------------------------------------- */

/* wslay pulls client bytes here; an empty buffer is "would block". */
static ssize_t
ws_recv_cb(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, int flags,
    void *user_data)
{
	struct ws *ws = user_data;
	int n;

	(void)flags;
	if (len > INT_MAX)
		len = INT_MAX;
	n = evbuffer_remove(bufferevent_get_input(ws->bev), buf, len);
	if (n <= 0) {
		wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
		return -1;
	}
	ws->fed += (uint64_t)n;
	return n;
}

/*
 * wslay's frames (pongs, close frames) are taken whole into the output
 * buffer, so wslay never holds half a frame and our own data frames,
 * added to the same buffer whole, never land inside one of its.
 */
static ssize_t
ws_send_cb(wslay_event_context_ptr ctx, const uint8_t *data, size_t len,
    int flags, void *user_data)
{
	struct ws *ws = user_data;

	(void)flags;
	if (evbuffer_add(bufferevent_get_output(ws->bev), data, len) == -1) {
		wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
		return -1;
	}
	return (ssize_t)len;
}

/* Any frame, control frames included, shows the peer is alive. */
static void
ws_frame_start_cb(wslay_event_context_ptr ctx,
    const struct wslay_event_on_frame_recv_start_arg *arg, void *user_data)
{
	struct ws *ws = user_data;
	uint64_t len = arg->payload_length;

	ws->activity = 1;
	/*
	 * wslay has read the whole header by now, and it refuses lengths
	 * not in their shortest form and unmasked client frames, so the
	 * header's size follows from the payload's.
	 */
	ws->frame_len = 2 + (len <= 125 ? 0 : len <= 0xffff ? 2 : 8) + 4 + len;
	if (!(arg->opcode & 0x8))		/* data, not control */
		ws->fragmented = !arg->fin;
	/*
	 * Once its close is queued, wslay drops every other control frame
	 * still queued: send the pongs of pings that came before this close
	 * now (RFC 6455 5.5.2: only a ping after the close goes unanswered).
	 */
	if (arg->opcode == WSLAY_CONNECTION_CLOSE && wslay_event_want_write(ctx))
		(void)wslay_event_send(ctx);	/* failed: writing is off */
}

static void
ws_frame_end_cb(wslay_event_context_ptr ctx, void *user_data)
{
	struct ws *ws = user_data;

	(void)ctx;
	ws->framed += ws->frame_len;
	ws->frame_len = 0;
}

/*
 * A whole message, fragments joined. wslay has already answered pings and
 * echoed a close; text is checked here. wslay 1.1.1 also rejects invalid
 * UTF-8 in text (1007) as it arrives, but DESIGN.md does not count on it
 * and older wslay releases do not: utf8_valid() is the check GoChat owns.
 */
static void
ws_msg_cb(wslay_event_context_ptr ctx,
    const struct wslay_event_on_msg_recv_arg *arg, void *user_data)
{
	struct ws *ws = user_data;
	const char *msg = arg->msg != NULL ? (const char *)arg->msg : "";

	(void)ctx;
	switch (arg->opcode) {
	case WSLAY_TEXT_FRAME:
		if (ws->closing)
			break;
		if (arg->msg_length > ws->max_message)
			ws_close(ws, WS_CLOSE_TOO_BIG, "message too big");
		else if (!utf8_valid(msg, arg->msg_length))
			ws_close(ws, WS_CLOSE_BAD_DATA, "invalid UTF-8");
		else if (ws->h.on_text != NULL)
			ws->h.on_text(ws->arg, msg, arg->msg_length);
		break;
	case WSLAY_BINARY_FRAME:
		ws_close(ws, WS_CLOSE_UNSUPPORTED, "binary frames are not "
		    "accepted");
		break;
	case WSLAY_CONNECTION_CLOSE:
		/* A body is empty or starts with a 2-byte code (5.5.1);
		 * wslay takes a single byte for "no code" and echoes. */
		if (arg->msg_length == 1)
			ws->bad_close = 1;
		break;
	default:			/* ping (pong queued), pong */
		break;
	}
}

/* --- internal ----------------------------------------------------------- */

/* Make wslay's context if there is none: 0, or -1 out of memory. */
static int
ws_ctx(struct ws *ws)
{
	if (ws->ctx != NULL)
		return 0;
	if (wslay_event_context_server_init(&ws->ctx, &ws_wslay_callbacks,
	    ws) != 0) {
		ws->ctx = NULL;
		return -1;
	}
	/*
	 * wslay refuses a frame that would take a message past this limit
	 * from its header (close 1009), before buffering any of it. Control
	 * frames are held to the same limit, so it never goes below 125
	 * bytes; text messages are then held to max_message in ws_msg_cb().
	 */
	wslay_event_config_set_max_recv_msg_length(ws->ctx,
	    ws->max_message < WS_CTRL_MAX ? WS_CTRL_MAX : ws->max_message);
	ws->fed = ws->framed = ws->frame_len = 0;
	ws->fragmented = 0;
	return 0;
}

/*
 * Free wslay's context when it holds nothing: every byte it was given
 * belongs to a frame it has finished, no message is half received, and
 * nothing waits to be written. A closing session keeps it to the end.
 */
static void
ws_ctx_release(struct ws *ws)
{
	if (ws->ctx == NULL || ws->closing || ws->in_recv ||
	    ws->fed != ws->framed || ws->fragmented ||
	    wslay_event_want_write(ws->ctx) ||
	    wslay_event_get_queued_msg_count(ws->ctx) != 0)
		return;
	wslay_event_context_free(ws->ctx);
	ws->ctx = NULL;
}

/*
 * Close with code ourselves, discarding whatever wslay has queued (its
 * close without a code, a pong): for when wslay's own answer is wrong or
 * it cannot queue one. wslay has written nothing of what it queued, since
 * ws_send_cb() takes whole frames and ws_flush() has not run yet.
 */
static void
ws_write_close(struct ws *ws, int code)
{
	unsigned char frame[4] = {
		0x80 | WSLAY_CONNECTION_CLOSE, 2,
		(unsigned char)(code >> 8), (unsigned char)code
	};

	if (ws->ctx != NULL) {
		wslay_event_shutdown_read(ws->ctx);
		wslay_event_shutdown_write(ws->ctx);
	}
	ws->closing = 1;
	ws->close_code = code;
	if (evbuffer_add(bufferevent_get_output(ws->bev), frame,
	    sizeof(frame)) == -1)
		ws->close_code = WS_CLOSE_ABNORMAL;
}

/*
 * Write out what wslay has queued (pongs, pings, its close frame) and,
 * once the session is over, tell the owner. The session is over when
 * wslay stops reading or writing: both follow a close being queued, and
 * a close, once queued, is written here at once.
 */
static void
ws_flush(struct ws *ws)
{
	int code;

	if (ws->ctx != NULL && wslay_event_want_write(ws->ctx))
		(void)wslay_event_send(ws->ctx);  /* failed: writing is off */
	if (ws->closed)
		return;
	if (ws->ctx == NULL ? !ws->closing :
	    wslay_event_get_read_enabled(ws->ctx) &&
	    wslay_event_get_write_enabled(ws->ctx))
		return;
	ws->closing = 1;
	ws->closed = 1;
	if (ws->close_code != 0)
		code = ws->close_code;
	else if (ws->ctx != NULL && wslay_event_get_close_sent(ws->ctx))
		code = wslay_event_get_status_code_sent(ws->ctx);
	else
		code = WS_CLOSE_ABNORMAL;
	if (ws->h.on_closed != NULL)
		ws->h.on_closed(ws->arg, code);
}

/*
 * 1 if more than output_limit waits unsent, every frame counted (data,
 * pongs, close). First hand what waits to the kernel: a burst of events
 * in one loop pass piles up before libevent's next write, and that is not
 * a slow reader. One whose socket still takes nothing is.
 */
static int
ws_over_limit(struct ws *ws)
{
	struct evbuffer *out = bufferevent_get_output(ws->bev);

	return evbuffer_get_length(out) > ws->output_limit &&
	    (evbuffer_write(out, bufferevent_getfd(ws->bev)) <= 0 ||
	    evbuffer_get_length(out) > ws->output_limit);
}

/* At most 123 bytes of reason, not cutting a UTF-8 sequence. */
static size_t
ws_reason_len(const char *reason)
{
	size_t n;

	if (reason == NULL)
		return 0;
	if ((n = strlen(reason)) <= WS_REASON_MAX)
		return n;
	n = WS_REASON_MAX;
	while (n > 0 && ((unsigned char)reason[n] & 0xc0) == 0x80)
		n--;
	return n;
}
