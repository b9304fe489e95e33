/*
 * test_ws: the upgrade check (RFC 6455's own sample key and every refusal),
 * frame headers at each length boundary, and sessions driven through a
 * bufferevent pair whose far end plays the client: it writes masked frames
 * and reads what the server sends back, close codes included.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "test/unit/tap.h"
#include "workers/http.h"
#include "workers/ws.h"

#define FIN	0x80
#define RSV1	0x40
#define OP_CONT	0x0
#define OP_TEXT	0x1
#define OP_BIN	0x2
#define OP_CLOSE 0x8
#define OP_PING	0x9
#define OP_PONG	0xa

/* --- the handshake ------------------------------------------------------ */

#define RFC_KEY		"dGhlIHNhbXBsZSBub25jZQ=="
#define RFC_ACCEPT	"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="	/* RFC 6455 1.3 */
#define H_HOST		"Host", "chat.example"
#define H_UPGRADE	"Upgrade", "websocket"
#define H_CONN		"Connection", "Upgrade"
#define H_KEY		"Sec-WebSocket-Key", RFC_KEY
#define H_VERSION	"Sec-WebSocket-Version", "13"

struct hs_case {
	const char	*what;
	int		 ok;
	enum http_method_id method;
	int		 minor;
	const char	*h[16];		/* name, value, ..., NULL */
};

static const struct hs_case hs_cases[] = {
	{ "the RFC's sample request", 1, HTTP_M_GET, 1,
	    { H_HOST, H_UPGRADE, H_CONN, H_KEY, H_VERSION } },
	{ "Upgrade and Connection in other cases, in lists", 1, HTTP_M_GET, 1,
	    { H_HOST, "upgrade", "h2c, WebSocket", "connection",
	    "keep-alive,upgrade", H_KEY, H_VERSION } },
	{ "Connection split over two headers", 1, HTTP_M_GET, 1,
	    { H_HOST, H_UPGRADE, "Connection", "keep-alive", "Connection",
	    " Upgrade ", H_KEY, H_VERSION } },
	{ "POST", 0, HTTP_M_POST, 1,
	    { H_HOST, H_UPGRADE, H_CONN, H_KEY, H_VERSION } },
	{ "HEAD", 0, HTTP_M_HEAD, 1,
	    { H_HOST, H_UPGRADE, H_CONN, H_KEY, H_VERSION } },
	{ "HTTP/1.0", 0, HTTP_M_GET, 0,
	    { H_HOST, H_UPGRADE, H_CONN, H_KEY, H_VERSION } },
	{ "no Host", 0, HTTP_M_GET, 1,
	    { H_UPGRADE, H_CONN, H_KEY, H_VERSION } },
	{ "no Upgrade", 0, HTTP_M_GET, 1,
	    { H_HOST, H_CONN, H_KEY, H_VERSION } },
	{ "Upgrade: h2c", 0, HTTP_M_GET, 1,
	    { H_HOST, "Upgrade", "h2c", H_CONN, H_KEY, H_VERSION } },
	{ "Upgrade: websockets", 0, HTTP_M_GET, 1,
	    { H_HOST, "Upgrade", "websockets", H_CONN, H_KEY, H_VERSION } },
	{ "no Connection", 0, HTTP_M_GET, 1,
	    { H_HOST, H_UPGRADE, H_KEY, H_VERSION } },
	{ "Connection: keep-alive", 0, HTTP_M_GET, 1,
	    { H_HOST, H_UPGRADE, "Connection", "keep-alive", H_KEY,
	    H_VERSION } },
	{ "Connection: upgraded", 0, HTTP_M_GET, 1,
	    { H_HOST, H_UPGRADE, "Connection", "upgraded", H_KEY,
	    H_VERSION } },
	{ "no key", 0, HTTP_M_GET, 1,
	    { H_HOST, H_UPGRADE, H_CONN, H_VERSION } },
	{ "empty key", 0, HTTP_M_GET, 1,
	    { H_HOST, H_UPGRADE, H_CONN, "Sec-WebSocket-Key", "",
	    H_VERSION } },
	{ "key of 15 bytes", 0, HTTP_M_GET, 1,
	    { H_HOST, H_UPGRADE, H_CONN, "Sec-WebSocket-Key",
	    "AAAAAAAAAAAAAAAAAAAA", H_VERSION } },
	{ "key of 17 bytes", 0, HTTP_M_GET, 1,
	    { H_HOST, H_UPGRADE, H_CONN, "Sec-WebSocket-Key",
	    "AAAAAAAAAAAAAAAAAAAAAAA=", H_VERSION } },
	{ "key not base64", 0, HTTP_M_GET, 1,
	    { H_HOST, H_UPGRADE, H_CONN, "Sec-WebSocket-Key",
	    "dGhlIHNhbXBsZSBub25jZ!==", H_VERSION } },
	{ "key with a space", 0, HTTP_M_GET, 1,
	    { H_HOST, H_UPGRADE, H_CONN, "Sec-WebSocket-Key",
	    "dGhlIHNhbXBsZSBub25j Q==", H_VERSION } },
	{ "two keys", 0, HTTP_M_GET, 1,
	    { H_HOST, H_UPGRADE, H_CONN, H_KEY, H_KEY, H_VERSION } },
	{ "no version", 0, HTTP_M_GET, 1,
	    { H_HOST, H_UPGRADE, H_CONN, H_KEY } },
	{ "version 8", 0, HTTP_M_GET, 1,
	    { H_HOST, H_UPGRADE, H_CONN, H_KEY, "Sec-WebSocket-Version",
	    "8" } },
	{ "version 13, 8", 0, HTTP_M_GET, 1,
	    { H_HOST, H_UPGRADE, H_CONN, H_KEY, "Sec-WebSocket-Version",
	    "13, 8" } },
	{ "two versions", 0, HTTP_M_GET, 1,
	    { H_HOST, H_UPGRADE, H_CONN, H_KEY, H_VERSION, H_VERSION } },
	{ NULL, 0, 0, 0, { NULL } }
};

static void
hs_request(struct http_request *req, const struct hs_case *c)
{
	memset(req, 0, sizeof(*req));
	req->method = c->method;
	req->http_minor = c->minor;
	for (int i = 0; c->h[i] != NULL; i += 2) {
		req->headers[req->nheaders].name = (char *)c->h[i];
		req->headers[req->nheaders].value = (char *)c->h[i + 1];
		req->nheaders++;
	}
}

static void
test_handshake(void)
{
	static const char want[] = "Upgrade: websocket\r\n"
	    "Sec-WebSocket-Accept: " RFC_ACCEPT "\r\n";
	struct http_request req;
	char extra[256];
	int r;

	for (const struct hs_case *c = hs_cases; c->what != NULL; c++) {
		hs_request(&req, c);
		memset(extra, 'x', sizeof(extra));
		r = ws_handshake(&req, extra, sizeof(extra));
		if (c->ok)
			ok(r == 0 && strcmp(extra, want) == 0,
			    "handshake accepted: %s", c->what);
		else
			ok(r == -1 && extra[0] != '\0' &&
			    memchr(extra, '\0', sizeof(extra)) != NULL &&
			    strstr(extra, "\r\n") == NULL,
			    "handshake refused with a reason: %s (%s)",
			    c->what, r == -1 ? extra : "accepted");
	}
	hs_request(&req, &hs_cases[0]);
	r = ws_handshake(&req, extra, sizeof(want) - 1);
	ok(r == -1 && strlen(extra) < sizeof(want) - 1,
	    "an extra buffer too small is an error, not a cut header");
}

/* --- frames ------------------------------------------------------------- */

static void
test_frames(void)
{
	static const size_t lens[] = { 0, 1, 125, 126, 65535, 65536, 70000 };
	const unsigned char *b;
	struct ws_frame *f;
	size_t n, len, hlen, got;
	char *payload;
	int good;

	for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
		n = lens[i];
		payload = malloc(n + 1);
		for (size_t j = 0; j < n; j++)
			payload[j] = (char)('a' + j % 26);
		f = ws_frame_text(payload, n);
		b = ws_frame_bytes(f, &len);
		hlen = n < 126 ? 2 : n < 65536 ? 4 : 10;
		good = len == hlen + n && b[0] == 0x81;
		if (hlen == 2)
			good = good && b[1] == n;
		else if (hlen == 4)
			good = good && b[1] == 126 &&
			    (size_t)(b[2] << 8 | b[3]) == n;
		else {
			got = 0;
			for (int k = 0; k < 8; k++)
				got = got << 8 | b[2 + k];
			good = good && b[1] == 127 && got == n;
		}
		good = good && memcmp(b + hlen, payload, n) == 0;
		ok(good, "text frame of %zu bytes: FIN|text, %zu-byte header, "
		    "unmasked, payload intact", n, hlen);
		ws_frame_ref(f);
		ws_frame_unref(f);
		ok(ws_frame_bytes(f, &len)[0] == 0x81,
		    "a frame outlives one of its two references (%zu)", n);
		ws_frame_unref(f);
		free(payload);
	}
	ws_frame_unref(NULL);
}

/* --- sessions ----------------------------------------------------------- */

struct sess {
	struct event_base *base;
	struct bufferevent *bev[2];	/* [0] the server's, [1] the client */
	struct ws	*ws;
	char		 text[80000];	/* the last message */
	size_t		 textlen;
	int		 ntext;
	int		 nactivity;
	int		 nclosed;
	int		 code;		/* given to on_closed */
	int		 in_text;
	int		 closed_in_text; /* on_closed ran inside on_text */
	int		 close_on_text;	/* on_text calls ws_close(this) */
	int		 echo;		/* on_text sends the message back */
	char		 all[256];	/* every message, '|' after each */
	size_t		 alllen;
};

struct sframe {
	int		 b0;		/* FIN, RSV, opcode */
	int		 masked;
	size_t		 len;
	unsigned char	 payload[1024];	/* the first 1024 bytes */
};

static void
t_on_text(void *arg, const char *msg, size_t len)
{
	struct sess *s = arg;
	struct ws_frame *f;

	s->ntext++;
	s->textlen = len < sizeof(s->text) ? len : sizeof(s->text);
	memcpy(s->text, msg, s->textlen);
	if (s->alllen + len + 1 < sizeof(s->all)) {
		memcpy(s->all + s->alllen, msg, len);
		s->alllen += len;
		s->all[s->alllen++] = '|';
	}
	s->in_text = 1;
	if (s->echo && (f = ws_frame_text(msg, len)) != NULL) {
		ws_send(s->ws, f);
		ws_frame_unref(f);
	}
	if (s->close_on_text)
		ws_close(s->ws, s->close_on_text, "cannot take it now");
	s->in_text = 0;
}

static void
t_on_activity(void *arg)
{
	struct sess *s = arg;

	s->nactivity++;
}

static void
t_on_closed(void *arg, int code)
{
	struct sess *s = arg;

	s->nclosed++;
	s->code = code;
	if (s->in_text)
		s->closed_in_text = 1;
}

static const struct ws_handlers t_handlers = {
	t_on_text, t_on_activity, t_on_closed
};

static void
srv_read_cb(struct bufferevent *bev, void *arg)
{
	struct sess *s = arg;

	(void)bev;
	ws_read(s->ws);
}

static void
sess_run(struct sess *s)
{
	for (int i = 0; i < 4; i++)
		event_base_loop(s->base, EVLOOP_NONBLOCK);
}

static struct sess *
sess_open(size_t max_message, size_t output_limit)
{
	struct sess *s = calloc(1, sizeof(*s));

	s->base = event_base_new();
	if (bufferevent_pair_new(s->base, 0, s->bev) == -1)
		abort();
	s->ws = ws_new(s->bev[0], max_message, output_limit, &t_handlers, s);
	bufferevent_setcb(s->bev[0], srv_read_cb, NULL, NULL, s);
	bufferevent_enable(s->bev[0], EV_READ | EV_WRITE);
	bufferevent_enable(s->bev[1], EV_READ | EV_WRITE);
	return s;
}

static void
sess_free(struct sess *s)
{
	ws_free(s->ws);
	bufferevent_free(s->bev[0]);
	bufferevent_free(s->bev[1]);
	event_base_free(s->base);
	free(s);
}

/* A client frame: masked (or not, to break the rules), shortest length. */
static size_t
mkframe(unsigned char *out, int b0, int masked, const void *payload,
    size_t len)
{
	static const unsigned char key[4] = { 0x37, 0xfa, 0x21, 0x3d };
	const unsigned char *p = payload;
	size_t h = 0;

	out[h++] = (unsigned char)b0;
	if (len < 126)
		out[h++] = (unsigned char)((masked ? 0x80 : 0) | len);
	else if (len < 65536) {
		out[h++] = (masked ? 0x80 : 0) | 126;
		out[h++] = (unsigned char)(len >> 8);
		out[h++] = (unsigned char)len;
	} else {
		out[h++] = (masked ? 0x80 : 0) | 127;
		for (int i = 0; i < 8; i++)
			out[h++] = (unsigned char)((unsigned long long)len >>
			    (56 - 8 * i));
	}
	if (masked) {
		memcpy(out + h, key, 4);
		h += 4;
	}
	for (size_t i = 0; i < len; i++)
		out[h + i] = masked ? p[i] ^ key[i % 4] : p[i];
	return h + len;
}

static void
client_write(struct sess *s, const void *data, size_t len)
{
	bufferevent_write(s->bev[1], data, len);
	sess_run(s);
}

static void
client_frame(struct sess *s, int b0, const void *payload, size_t len)
{
	unsigned char *buf = malloc(len + 14);

	client_write(s, buf, mkframe(buf, b0, 1, payload, len));
	free(buf);
}

static void
client_close(struct sess *s, int code, const char *reason)
{
	unsigned char body[125];
	size_t n = strlen(reason);

	body[0] = (unsigned char)(code >> 8);
	body[1] = (unsigned char)code;
	memcpy(body + 2, reason, n);
	client_frame(s, FIN | OP_CLOSE, body, n + 2);
}

/* Take one whole server frame from the client's input: 1, or 0 if none. */
static int
client_take(struct sess *s, struct sframe *fr)
{
	struct evbuffer *in = bufferevent_get_input(s->bev[1]);
	size_t avail = evbuffer_get_length(in), h = 2, len;
	unsigned char *p;

	memset(fr, 0, sizeof(*fr));
	if (avail < 2)
		return 0;
	p = evbuffer_pullup(in, 2);
	len = p[1] & 0x7f;
	fr->masked = p[1] >> 7;
	h = len == 126 ? 4 : len == 127 ? 10 : 2;
	if (avail < h)
		return 0;
	p = evbuffer_pullup(in, (ssize_t)h);
	if (h == 4)
		len = (size_t)p[2] << 8 | p[3];
	else if (h == 10) {
		len = 0;
		for (int i = 0; i < 8; i++)
			len = len << 8 | p[2 + i];
	}
	if (avail < h + len)
		return 0;
	p = evbuffer_pullup(in, (ssize_t)(h + len));
	fr->b0 = p[0];
	fr->len = len;
	memcpy(fr->payload, p + h, len < sizeof(fr->payload) ? len :
	    sizeof(fr->payload));
	evbuffer_drain(in, h + len);
	return 1;
}

static size_t
client_pending(struct sess *s)
{
	return evbuffer_get_length(bufferevent_get_input(s->bev[1]));
}

/*
 * The session ended with code: one close frame with that code on the
 * wire and nothing after it, on_closed called once with it, outside
 * on_text.
 */
static int
closed_with(struct sess *s, int code)
{
	struct sframe fr;

	if (!client_take(s, &fr) || fr.b0 != (FIN | OP_CLOSE) || fr.masked ||
	    fr.len < 2 || (fr.payload[0] << 8 | fr.payload[1]) != code)
		return 0;
	return client_pending(s) == 0 && s->nclosed == 1 && s->code == code &&
	    !s->closed_in_text && ws_closing(s->ws);
}

static void
test_text(void)
{
	unsigned char buf[64];
	struct sframe fr;
	struct sess *s;
	size_t n;

	s = sess_open(4096, 1 << 20);
	client_frame(s, FIN | OP_TEXT, "hello", 5);
	ok(s->ntext == 1 && s->textlen == 5 && memcmp(s->text, "hello", 5) ==
	    0, "a text frame reaches on_text");
	ok(s->nactivity >= 1, "a text frame counts as activity");
	ok(client_pending(s) == 0 && s->nclosed == 0 && !ws_closing(s->ws),
	    "nothing is sent back, the session stays open");

	n = mkframe(buf, FIN | OP_TEXT, 1, "byte by byte", 12);
	for (size_t i = 0; i < n; i++)
		client_write(s, buf + i, 1);
	ok(s->ntext == 2 && s->textlen == 12 &&
	    memcmp(s->text, "byte by byte", 12) == 0,
	    "a frame arriving one byte at a time is one message");

	client_frame(s, FIN | OP_TEXT, "", 0);
	ok(s->ntext == 3 && s->textlen == 0, "an empty text message");

	n = mkframe(buf, FIN | OP_TEXT, 1, "one", 3);
	n += mkframe(buf + n, FIN | OP_TEXT, 1, "two", 3);
	client_write(s, buf, n);
	ok(s->ntext == 5 && memcmp(s->text, "two", 3) == 0,
	    "two messages in one read: both, in order");

	client_frame(s, FIN | OP_PONG, "", 0);
	ok(client_pending(s) == 0 && s->nclosed == 0,
	    "an unasked-for pong is ignored");

	ws_ping(s->ws);
	ok(client_take(s, &fr) && fr.b0 == (FIN | OP_PING) && !fr.masked,
	    "ws_ping sends an unmasked ping");
	n = s->nactivity;
	client_frame(s, FIN | OP_PONG, "", 0);
	ok(s->nactivity > (int)n, "the pong counts as activity");
	sess_free(s);
}

static void
test_sizes(void)
{
	struct sess *s;
	char *big = malloc(70000);

	memset(big, 'z', 70000);
	s = sess_open(100000, 1 << 20);
	client_frame(s, FIN | OP_TEXT, big, 300);
	ok(s->ntext == 1 && s->textlen == 300, "a 300-byte message (16-bit "
	    "length)");
	client_frame(s, FIN | OP_TEXT, big, 70000);
	ok(s->ntext == 2 && s->textlen == 70000 &&
	    memcmp(s->text, big, 70000) == 0,
	    "a 70000-byte message (64-bit length)");
	sess_free(s);
	free(big);
}

static void
test_fragments(void)
{
	struct sframe fr;
	struct sess *s;

	s = sess_open(4096, 1 << 20);
	client_frame(s, OP_TEXT, "hel", 3);
	ok(s->ntext == 0, "a first fragment is not a message");
	client_frame(s, FIN | OP_PING, "p", 1);
	ok(client_take(s, &fr) && fr.b0 == (FIN | OP_PONG) && fr.len == 1 &&
	    fr.payload[0] == 'p', "a ping between fragments is answered");
	client_frame(s, OP_CONT, "", 0);
	client_frame(s, FIN | OP_CONT, "lo", 2);
	ok(s->ntext == 1 && s->textlen == 5 && memcmp(s->text, "hello", 5) ==
	    0, "fragments are joined into one message");

	client_frame(s, OP_TEXT, "\xe2\x82", 2);
	client_frame(s, FIN | OP_CONT, "\xac", 1);
	ok(s->ntext == 2 && s->textlen == 3 &&
	    memcmp(s->text, "\xe2\x82\xac", 3) == 0,
	    "a character split across fragments is valid");
	ok(s->nclosed == 0, "still open");
	sess_free(s);
}

static void
test_ping(void)
{
	struct sframe fr;
	struct sess *s;
	char p125[125];

	s = sess_open(4, 1 << 20);
	client_frame(s, FIN | OP_PING, "abc", 3);
	ok(client_take(s, &fr) && fr.b0 == (FIN | OP_PONG) && !fr.masked &&
	    fr.len == 3 && memcmp(fr.payload, "abc", 3) == 0,
	    "a ping is answered by an unmasked pong with its payload");
	memset(p125, 'p', sizeof(p125));
	client_frame(s, FIN | OP_PING, p125, sizeof(p125));
	ok(client_take(s, &fr) && fr.b0 == (FIN | OP_PONG) && fr.len == 125,
	    "a 125-byte ping is fine even with max_message 4");
	ok(s->nclosed == 0 && s->nactivity >= 2, "pings are activity");
	sess_free(s);
}

/* One session per bad input; each must end with code. */
struct bad_case {
	const char	*what;
	int		 code;
	size_t		 max_message;
	const unsigned char *raw;	/* sent as is, or ... */
	size_t		 rawlen;
	int		 b0[3];		/* ... these masked frames */
	const char	*payload[3];
	size_t		 len[3];
};

#define RAW(s)	(const unsigned char *)(s), sizeof(s) - 1, \
	{ 0 }, { NULL }, { 0 }

static const struct bad_case bad_cases[] = {
	{ "binary frame", 1003, 4096, NULL, 0,
	    { FIN | OP_BIN }, { "\x01\x02" }, { 2 } },
	{ "invalid UTF-8", 1007, 4096, NULL, 0,
	    { FIN | OP_TEXT }, { "ab\xff" }, { 3 } },
	{ "a surrogate", 1007, 4096, NULL, 0,
	    { FIN | OP_TEXT }, { "\xed\xa0\x80" }, { 3 } },
	{ "an overlong '/'", 1007, 4096, NULL, 0,
	    { FIN | OP_TEXT }, { "\xc0\xaf" }, { 2 } },
	{ "invalid UTF-8 across fragments", 1007, 4096, NULL, 0,
	    { OP_TEXT, FIN | OP_CONT }, { "\xe2\x82", "(" }, { 2, 1 } },
	{ "a message ending inside a character", 1007, 4096, NULL, 0,
	    { OP_TEXT, FIN | OP_CONT }, { "a", "\xe2\x82" }, { 1, 2 } },
	{ "a message over max_message", 1009, 16, NULL, 0,
	    { FIN | OP_TEXT }, { "12345678901234567" }, { 17 } },
	{ "fragments adding up over max_message", 1009, 16, NULL, 0,
	    { OP_TEXT, FIN | OP_CONT }, { "1234567890", "1234567" },
	    { 10, 7 } },
	{ "over a max_message under 125", 1009, 4, NULL, 0,
	    { FIN | OP_TEXT }, { "12345" }, { 5 } },
	/* wslay judges the length once a first payload byte is there. */
	{ "a 2^40-byte length", 1009, 4096,
	    RAW("\x81\xff\x00\x00\x01\x00\x00\x00\x00\x00" "\0\0\0\0x") },
	{ "an unmasked frame", 1002, 4096, RAW("\x81\x02hi") },
	{ "RSV1 without an extension", 1002, 4096, NULL, 0,
	    { FIN | RSV1 | OP_TEXT }, { "hi" }, { 2 } },
	{ "opcode 3", 1002, 4096, NULL, 0,
	    { FIN | 0x3 }, { "hi" }, { 2 } },
	{ "opcode 0xb", 1002, 4096, NULL, 0,
	    { FIN | 0xb }, { "" }, { 0 } },
	{ "a continuation with no message", 1002, 4096, NULL, 0,
	    { FIN | OP_CONT }, { "hi" }, { 2 } },
	{ "a new message inside a fragmented one", 1002, 4096, NULL, 0,
	    { OP_TEXT, FIN | OP_TEXT }, { "a", "b" }, { 1, 1 } },
	{ "a fragmented ping", 1002, 4096, NULL, 0,
	    { OP_PING }, { "p" }, { 1 } },
	{ "a 126-byte ping", 1002, 4096,
	    RAW("\x89\xfe\x00\x7e") },
	{ "a length not in its shortest form", 1002, 4096,
	    RAW("\x81\xfe\x00\x05") },
	{ "a 64-bit length with its top bit", 1002, 4096,
	    RAW("\x81\xff\x80\x00\x00\x00\x00\x00\x00\x00") },
	{ "a close with a one-byte body", 1002, 4096, NULL, 0,
	    { FIN | OP_CLOSE }, { "\x03" }, { 1 } },
	{ "close code 1005", 1002, 4096, NULL, 0,
	    { FIN | OP_CLOSE }, { "\x03\xed" }, { 2 } },
	{ "close code 999", 1002, 4096, NULL, 0,
	    { FIN | OP_CLOSE }, { "\x03\xe7" }, { 2 } },
	{ "a close reason not UTF-8", 1007, 4096, NULL, 0,
	    { FIN | OP_CLOSE }, { "\x03\xe8\xff" }, { 3 } },
	{ NULL, 0, 0, NULL, 0, { 0 }, { NULL }, { 0 } }
};

static void
test_bad(void)
{
	static const unsigned char after[] = "\x81\x82\0\0\0\0ok";
	struct sess *s;

	for (const struct bad_case *c = bad_cases; c->what != NULL; c++) {
		s = sess_open(c->max_message, 1 << 20);
		if (c->raw != NULL)
			client_write(s, c->raw, c->rawlen);
		for (int i = 0; i < 3 && c->payload[i] != NULL; i++)
			client_frame(s, c->b0[i], c->payload[i], c->len[i]);
		ok(closed_with(s, c->code) && s->ntext == 0,
		    "%s: close %d (got %d, %d calls)", c->what, c->code,
		    s->code, s->nclosed);
		client_write(s, after, sizeof(after) - 1);
		ok(s->ntext == 0 && s->nclosed == 1 && client_pending(s) == 0,
		    "%s: nothing read or sent after the close", c->what);
		sess_free(s);
	}
}

static void
test_peer_close(void)
{
	struct sframe fr;
	struct sess *s;

	s = sess_open(4096, 1 << 20);
	client_close(s, 1000, "bye");
	ok(client_take(s, &fr) && fr.b0 == (FIN | OP_CLOSE) && fr.len == 5 &&
	    memcmp(fr.payload, "\x03\xe8" "bye", 5) == 0,
	    "the peer's close 1000 is echoed");
	ok(s->nclosed == 1 && s->code == 1000 && ws_closing(s->ws),
	    "on_closed(1000)");
	client_frame(s, FIN | OP_TEXT, "late", 4);
	ok(s->ntext == 0 && s->nclosed == 1 && client_pending(s) == 0,
	    "a frame after the close is ignored");
	sess_free(s);

	s = sess_open(4096, 1 << 20);
	client_frame(s, FIN | OP_CLOSE, "", 0);
	ok(client_take(s, &fr) && fr.b0 == (FIN | OP_CLOSE) && fr.len == 0,
	    "a close without a code is answered by one");
	ok(s->nclosed == 1 && s->code == 1005, "on_closed(1005)");
	sess_free(s);

	/* RFC 6455 5.5.2: a ping before the close is still answered. */
	{
		unsigned char buf[32];
		size_t n = 0;

		s = sess_open(4096, 1 << 20);
		n += mkframe(buf + n, FIN | OP_PING, 1, "p", 1);
		n += mkframe(buf + n, FIN | OP_CLOSE, 1, "\x03\xe8", 2);
		client_write(s, buf, n);
		ok(client_take(s, &fr) && fr.b0 == (FIN | OP_PONG) &&
		    fr.len == 1 && fr.payload[0] == 'p',
		    "ping and close in one read: the pong first");
		ok(client_take(s, &fr) && fr.b0 == (FIN | OP_CLOSE) &&
		    client_pending(s) == 0, "then the close");
		sess_free(s);
	}
}

static void
test_server_close(void)
{
	unsigned char buf[32];
	struct ws_frame *f;
	struct sframe fr;
	struct sess *s;
	char reason[200];
	size_t n;

	s = sess_open(4096, 1 << 20);
	ws_close(s->ws, WS_CLOSE_GOING_AWAY, "server going down");
	ok(s->nclosed == 1 && s->code == 1001,
	    "ws_close calls on_closed(1001) before it returns");
	sess_run(s);
	ok(client_take(s, &fr) && fr.b0 == (FIN | OP_CLOSE) &&
	    fr.len == 2 + 17 && memcmp(fr.payload + 2, "server going down",
	    17) == 0 && (fr.payload[0] << 8 | fr.payload[1]) == 1001,
	    "the close frame carries the code and the reason");
	f = ws_frame_text("x", 1);
	ok(ws_send(s->ws, f) == -1 && ws_closing(s->ws),
	    "no data frame after a close");
	ws_ping(s->ws);
	ws_close(s->ws, 1000, "again");
	ok(client_pending(s) == 0 && s->nclosed == 1,
	    "no ping and no second close after a close");
	ws_frame_unref(f);
	sess_free(s);

	s = sess_open(4096, 1 << 20);
	memset(reason, 'r', sizeof(reason) - 1);
	reason[sizeof(reason) - 1] = '\0';
	memcpy(reason + 121, "\xe2\x82\xac", 3);	/* bytes 121-123 */
	ws_close(s->ws, 1000, reason);
	ok(client_take(s, &fr) && fr.len == 2 + 121,
	    "a long reason is cut to fit, not inside a character");
	sess_free(s);

	/* on_text closing: the close waits for the end of the read. */
	s = sess_open(4096, 1 << 20);
	s->close_on_text = WS_CLOSE_ERROR;
	n = mkframe(buf, FIN | OP_TEXT, 1, "one", 3);
	n += mkframe(buf + n, FIN | OP_TEXT, 1, "two", 3);
	client_write(s, buf, n);
	ok(s->ntext == 1 && memcmp(s->text, "one", 3) == 0,
	    "a close from on_text stops delivery of the rest of the read");
	ok(closed_with(s, 1011), "close 1011 from on_text, on_closed after "
	    "on_text returned");
	sess_free(s);
}

static void
test_send(void)
{
	const unsigned char *bytes;
	struct sess *a, *b;
	struct ws_frame *f;
	struct sframe fa, fb;
	size_t len;
	int ra, rb;

	a = sess_open(4096, 1 << 20);
	b = sess_open(4096, 1 << 20);
	f = ws_frame_text("{\"type\":\"message\"}", 18);
	bytes = ws_frame_bytes(f, &len);
	ra = ws_send(a->ws, f);
	rb = ws_send(b->ws, f);
	ws_frame_unref(f);		/* the caller's reference goes first */
	sess_run(a);
	sess_run(b);
	ok(ra == 0 && rb == 0, "ws_send to two sessions");
	ok(client_pending(a) == len && client_pending(b) == len,
	    "each client gets the whole frame");
	ok(client_take(a, &fa) && client_take(b, &fb) &&
	    fa.b0 == (FIN | OP_TEXT) && !fa.masked && fa.len == 18 &&
	    fb.len == 18 && memcmp(fa.payload, fb.payload, 18) == 0 &&
	    memcmp(fa.payload, "{\"type\":\"message\"}", 18) == 0,
	    "both get identical bytes after the caller dropped its reference");
	(void)bytes;
	sess_free(a);
	sess_free(b);

	/* A frame still unsent when the connection is freed. */
	a = sess_open(4096, 1 << 20);
	bufferevent_disable(a->bev[1], EV_READ);
	f = ws_frame_text("pending", 7);
	ok(ws_send(a->ws, f) == 0, "a frame waiting in the output");
	ws_frame_unref(f);
	sess_free(a);
	ok(1, "is released with the buffer (ASan/LeakSanitizer would tell)");

	a = sess_open(4096, 1 << 20);
	a->echo = 1;
	client_frame(a, FIN | OP_TEXT, "echo", 4);
	ok(client_take(a, &fa) && fa.b0 == (FIN | OP_TEXT) && fa.len == 4 &&
	    memcmp(fa.payload, "echo", 4) == 0,
	    "ws_send from inside on_text");
	sess_free(a);
}

static void
test_output_limit(void)
{
	struct ws_frame *f;
	struct sframe fr;
	struct sess *s;
	char payload[60];
	int r[4];

	s = sess_open(4096, 100);
	bufferevent_disable(s->bev[1], EV_READ);	/* a slow reader */
	memset(payload, 'm', sizeof(payload));
	f = ws_frame_text(payload, sizeof(payload));	/* 62 bytes */
	for (int i = 0; i < 4; i++)
		r[i] = ws_send(s->ws, f);
	ws_frame_unref(f);
	ok(r[0] == 0 && r[1] == 0, "frames go out while at most the limit "
	    "waits");
	ok(r[2] == -1 && r[3] == -1, "past the limit ws_send refuses");
	ok(s->nclosed == 1 && s->code == 1008 && ws_closing(s->ws),
	    "and the session closes with 1008 at once");
	bufferevent_enable(s->bev[1], EV_READ);
	sess_run(s);
	ok(client_take(s, &fr) && fr.b0 == (FIN | OP_TEXT) && fr.len == 60 &&
	    client_take(s, &fr) && fr.b0 == (FIN | OP_TEXT),
	    "the backlog is still delivered");
	ok(closed_with(s, 1008), "then the 1008 close frame");
	sess_free(s);
}

/*
 * SPEC 8: pongs count against the output limit like data frames. A client
 * that pings and never reads is closed with 1008 once more than the limit
 * of pongs waits for it.
 */
static void
test_pong_limit(void)
{
	struct sframe fr;
	struct sess *s;
	char payload[60];

	s = sess_open(4096, 100);
	bufferevent_disable(s->bev[1], EV_READ);	/* reads nothing */
	memset(payload, 'p', sizeof(payload));
	client_frame(s, FIN | OP_PING, payload, sizeof(payload));
	ok(s->nclosed == 0, "one pong (62 bytes) waits under the limit");
	client_frame(s, FIN | OP_PING, payload, sizeof(payload));
	ok(s->nclosed == 1 && s->code == 1008 && ws_closing(s->ws),
	    "a second one passes it: close 1008");
	client_frame(s, FIN | OP_PING, payload, sizeof(payload));
	bufferevent_enable(s->bev[1], EV_READ);
	sess_run(s);
	ok(client_take(s, &fr) && fr.b0 == (FIN | OP_PONG) && fr.len == 60 &&
	    client_take(s, &fr) && fr.b0 == (FIN | OP_PONG) && fr.len == 60,
	    "the pongs asked for before are delivered");
	ok(closed_with(s, 1008), "then the 1008 close frame, and no pong for "
	    "the ping after it");
	sess_free(s);
}

/*
 * A pong never waits behind data frames sent after its ping arrived in
 * the same read (Autobahn 5.6: text fragment, ping, last fragment; the
 * echo comes from on_text while the pong is still queued in wslay).
 */
static void
test_control_first(void)
{
	unsigned char buf[64];
	struct sframe fr;
	struct sess *s;
	size_t n = 0;

	s = sess_open(4096, 1 << 20);
	s->echo = 1;
	n += mkframe(buf + n, FIN | OP_PING, 1, "p", 1);
	n += mkframe(buf + n, FIN | OP_TEXT, 1, "x", 1);
	n += mkframe(buf + n, FIN | OP_PING, 1, "q", 1);
	client_write(s, buf, n);
	ok(client_take(s, &fr) && fr.b0 == (FIN | OP_PONG) &&
	    fr.payload[0] == 'p', "ping, text, ping in one read: first the "
	    "pong of the first ping");
	ok(client_take(s, &fr) && fr.b0 == (FIN | OP_TEXT) &&
	    fr.payload[0] == 'x', "then the echo");
	ok(client_take(s, &fr) && fr.b0 == (FIN | OP_PONG) &&
	    fr.payload[0] == 'q' && client_pending(s) == 0,
	    "then the pong of the ping after the text");
	sess_free(s);

	s = sess_open(4096, 1 << 20);
	s->echo = 1;
	n = 0;
	n += mkframe(buf + n, OP_TEXT, 1, "fr", 2);
	n += mkframe(buf + n, FIN | OP_PING, 1, "p", 1);
	n += mkframe(buf + n, FIN | OP_CONT, 1, "ag", 2);
	client_write(s, buf, n);
	ok(client_take(s, &fr) && fr.b0 == (FIN | OP_PONG) &&
	    fr.payload[0] == 'p' && client_take(s, &fr) &&
	    fr.b0 == (FIN | OP_TEXT) && fr.len == 4 &&
	    memcmp(fr.payload, "frag", 4) == 0 && client_pending(s) == 0,
	    "fragment, ping, fragment (Autobahn 5.6): the pong before the "
	    "echo");
	sess_free(s);
}

/*
 * wslay's context is freed between messages and made again on the next
 * byte. Whatever the split of the input over two reads, nothing of a
 * frame, a fragmented message or a ping may be lost in between; and the
 * context is held exactly while part of a message is in.
 */
static void
test_context_between_messages(void)
{
	unsigned char buf[256];
	size_t n = 0, bounds[8], nb = 0, frag_from, frag_to, k;
	int good = 1, held = 1, idle = 1, pongs = 1;
	struct sframe fr;
	struct sess *s;

	bounds[nb++] = 0;
	n += mkframe(buf + n, FIN | OP_TEXT, 1, "alpha", 5);
	bounds[nb++] = n;
	n += mkframe(buf + n, FIN | OP_PING, 1, "p", 1);
	bounds[nb++] = frag_from = n;
	n += mkframe(buf + n, OP_TEXT, 1, "frag", 4);
	n += mkframe(buf + n, FIN | OP_PING, 1, "q", 1);
	n += mkframe(buf + n, FIN | OP_CONT, 1, "ment", 4);
	bounds[nb++] = frag_to = n;
	n += mkframe(buf + n, FIN | OP_TEXT, 1, "", 0);
	bounds[nb++] = n;
	n += mkframe(buf + n, FIN | OP_TEXT, 1, "omega", 5);
	bounds[nb++] = n;

	s = sess_open(4096, 1 << 20);
	ok(!ws_holds_context(s->ws), "a new session holds no wslay context");
	sess_free(s);
	for (k = 1; k < n; k++) {
		int boundary = 0;

		for (size_t b = 0; b < nb; b++)
			boundary |= bounds[b] == k;
		s = sess_open(4096, 1 << 20);
		client_write(s, buf, k);
		if (ws_holds_context(s->ws) != (!boundary ||
		    (k > frag_from && k < frag_to)))
			held = 0;
		client_write(s, buf + k, n - k);
		if (ws_holds_context(s->ws))
			idle = 0;
		if (s->ntext != 4 || s->alllen != 22 ||
		    memcmp(s->all, "alpha|fragment||omega|", 22) != 0 ||
		    s->nclosed != 0)
			good = 0;
		if (!client_take(s, &fr) || fr.b0 != (FIN | OP_PONG) ||
		    fr.len != 1 || fr.payload[0] != 'p' ||
		    !client_take(s, &fr) || fr.b0 != (FIN | OP_PONG) ||
		    fr.len != 1 || fr.payload[0] != 'q' || client_pending(s))
			pongs = 0;
		sess_free(s);
	}
	ok(good, "input split anywhere over two reads: every message whole, "
	    "in order, fragments joined");
	ok(pongs, "input split anywhere: both pings answered, in order");
	ok(held, "the context is held while part of a message is in, and "
	    "only then");
	ok(idle, "and freed once the last message is in");

	s = sess_open(4096, 1 << 20);
	ws_ping(s->ws);
	ok(client_take(s, &fr) && fr.b0 == (FIN | OP_PING) &&
	    !ws_holds_context(s->ws), "a ping is sent without keeping one");
	client_frame(s, FIN | OP_TEXT, "x", 1);
	ws_close(s->ws, 1001, "going away");
	ok(closed_with(s, 1001) && ws_holds_context(s->ws),
	    "an idle session closes with its code (and keeps its context)");
	sess_free(s);
}

int
main(void)
{
	test_handshake();
	test_frames();
	test_text();
	test_sizes();
	test_fragments();
	test_ping();
	test_bad();
	test_peer_close();
	test_server_close();
	test_send();
	test_output_limit();
	test_pong_limit();
	test_control_first();
	test_context_between_messages();
	return tap_done();
}
