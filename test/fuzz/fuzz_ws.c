/*
 * fuzz_ws: raw bytes as a WebSocket client's, into a session over a
 * bufferevent pair. The first byte chooses the limits, how the rest is
 * split into reads, and what the owner does between them (ping, send a
 * shared frame, echo or close from on_text); what the server wrote must
 * be unmasked frames with nothing after a close. With its top bit set,
 * the input is instead a handshake request, one "name:value" per line.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "workers/http.h"
#include "workers/ws.h"

int	LLVMFuzzerTestOneInput(const uint8_t *, size_t);

#define CTL_MAX_SMALL	0x08	/* max_message 16, not 4096 */
#define CTL_SLOW	0x10	/* output_limit 64 and a client not reading */
#define CTL_ECHO	0x20	/* on_text sends the message back */
#define CTL_OWNER	0x40	/* ping and send a frame between reads */
#define CTL_HANDSHAKE	0x80

struct fuzz {
	struct ws	*ws;
	int		 ctl;
	int		 ntext;
	int		 nclosed;
	int		 in_text;
};

static struct event_base *fuzz_base;

static void
fuzz_on_text(void *arg, const char *msg, size_t len)
{
	struct fuzz *z = arg;
	struct ws_frame *f;

	if (z->nclosed != 0 || z->in_text)
		abort();		/* no message after on_closed */
	z->ntext++;
	z->in_text = 1;
	if ((z->ctl & CTL_ECHO) && (f = ws_frame_text(msg, len)) != NULL) {
		ws_send(z->ws, f);
		ws_frame_unref(f);
	}
	if (len > 0 && msg[0] == '!')
		ws_close(z->ws, WS_CLOSE_ERROR, "fuzz");
	z->in_text = 0;
}

static void
fuzz_on_activity(void *arg)
{
}

static void
fuzz_on_closed(void *arg, int code)
{
	struct fuzz *z = arg;

	if (z->nclosed++ != 0 || z->in_text)
		abort();		/* once, never inside on_text */
}

static const struct ws_handlers fuzz_handlers = {
	fuzz_on_text, fuzz_on_activity, fuzz_on_closed
};

static void
fuzz_read_cb(struct bufferevent *bev, void *arg)
{
	struct fuzz *z = arg;

	ws_read(z->ws);
}

static void
fuzz_run(void)
{
	for (int i = 0; i < 3; i++)
		event_base_loop(fuzz_base, EVLOOP_NONBLOCK);
}

/* What the server wrote: whole unmasked frames, a close only last. */
static void
fuzz_check_output(struct evbuffer *in, int closed)
{
	size_t avail = evbuffer_get_length(in), h, len;
	unsigned char *p = evbuffer_pullup(in, -1);
	int op, seen_close = 0;

	while (avail > 0) {
		if (seen_close || avail < 2 || (p[1] & 0x80) != 0 ||
		    (p[0] & 0xf0) != 0x80)
			abort();
		op = p[0] & 0x0f;
		len = p[1] & 0x7f;
		h = len == 126 ? 4 : len == 127 ? 10 : 2;
		if (avail < h)
			abort();
		if (h == 4)
			len = (size_t)p[2] << 8 | p[3];
		else if (h == 10) {
			len = 0;
			for (int i = 0; i < 8; i++)
				len = len << 8 | p[2 + i];
		}
		if (avail - h < len)
			abort();
		if (op == 0x8) {
			if (len == 1)
				abort();
			seen_close = 1;
		} else if (op != 0x1 && op != 0x9 && op != 0xa)
			abort();
		p += h + len;
		avail -= h + len;
	}
	if (seen_close && !closed)
		abort();		/* a close frame without on_closed */
	evbuffer_drain(in, evbuffer_get_length(in));
}

static void
fuzz_session(const uint8_t *data, size_t size)
{
	struct bufferevent *bev[2];
	struct ws_frame *f;
	struct fuzz z;
	size_t step, off, n;
	int ctl = data[0];

	memset(&z, 0, sizeof(z));
	z.ctl = ctl;
	data++;
	size--;
	if (bufferevent_pair_new(fuzz_base, 0, bev) == -1)
		return;
	z.ws = ws_new(bev[0], ctl & CTL_MAX_SMALL ? 16 : 4096,
	    ctl & CTL_SLOW ? 64 : 1 << 20, &fuzz_handlers, &z);
	if (z.ws == NULL)
		goto done;
	bufferevent_setcb(bev[0], fuzz_read_cb, NULL, NULL, &z);
	bufferevent_enable(bev[0], EV_READ | EV_WRITE);
	bufferevent_enable(bev[1], ctl & CTL_SLOW ? EV_WRITE :
	    EV_READ | EV_WRITE);
	step = (ctl & 7) == 0 ? size : (size_t)1 << ((ctl & 7) - 1);
	f = ws_frame_text("{\"type\":\"join\"}", 15);
	for (off = 0; off < size; off += n) {
		n = size - off < step ? size - off : step;
		bufferevent_write(bev[1], data + off, n);
		fuzz_run();
		if ((ctl & CTL_OWNER) && f != NULL) {
			ws_ping(z.ws);
			ws_send(z.ws, f);
		}
		if (!(ctl & CTL_SLOW))
			fuzz_check_output(bufferevent_get_input(bev[1]),
			    z.nclosed);
	}
	ws_frame_unref(f);
	/* Between calls, closing and closed are one state. */
	if (ws_closing(z.ws) != (z.nclosed != 0))
		abort();
	bufferevent_enable(bev[1], EV_READ);
	fuzz_run();
	fuzz_check_output(bufferevent_get_input(bev[1]), z.nclosed);
	ws_free(z.ws);
done:
	bufferevent_free(bev[0]);
	bufferevent_free(bev[1]);
}

static void
fuzz_handshake(const uint8_t *data, size_t size)
{
	struct http_request req;
	char *copy, *line, *next, *colon, extra[256], small[40];

	memset(&req, 0, sizeof(req));
	req.method = data[0] & 1 ? HTTP_M_GET : HTTP_M_POST;
	req.http_minor = data[0] & 2 ? 1 : 0;
	if ((copy = malloc(size)) == NULL)
		return;
	memcpy(copy, data + 1, size - 1);
	copy[size - 1] = '\0';
	for (line = copy; line != NULL && req.nheaders < HTTP_MAX_HEADERS;
	    line = next) {
		if ((next = strchr(line, '\n')) != NULL)
			*next++ = '\0';
		if ((colon = strchr(line, ':')) == NULL)
			continue;
		*colon = '\0';
		req.headers[req.nheaders].name = line;
		req.headers[req.nheaders].value = colon + 1;
		req.nheaders++;
	}
	if (ws_handshake(&req, extra, sizeof(extra)) == 0 &&
	    strncmp(extra, "Upgrade: websocket\r\n", 20) != 0)
		abort();
	if (strlen(extra) >= sizeof(extra))
		abort();
	(void)ws_handshake(&req, small, sizeof(small));
	if (strlen(small) >= sizeof(small))
		abort();
	free(copy);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (fuzz_base == NULL && (fuzz_base = event_base_new()) == NULL)
		abort();
	if (size == 0)
		return 0;
	if (data[0] & CTL_HANDSHAKE)
		fuzz_handshake(data, size);
	else
		fuzz_session(data, size);
	return 0;
}
