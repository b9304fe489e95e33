/*
 * fuzz_http: raw bytes to routed requests, as a connection sees them. The
 * first four bytes choose how the rest is split into reads; every request
 * read goes through the header, query and cookie helpers and the SPEC.md
 * route table, and reading goes on after it (pipelining) until an error or
 * the end of the input. The same bytes read in one piece must give the same
 * requests and the same error.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "workers/http.h"
#include "workers/router.h"
#include "workers/routes.h"

int	LLVMFuzzerTestOneInput(const uint8_t *, size_t);

/* The server's own route table; a pattern stands in for its handler. */
#define FUZZ_ROUTE(m, pattern, kind, fn)	{ m, pattern, pattern },

static const struct route fuzz_routes[] = {
	GC_ROUTES(FUZZ_ROUTE)
	{ 0, NULL, NULL }
};

/* Touch every byte a handler could read, so ASan sees overreads. */
static size_t
fuzz_touch(const char *s)
{
	return s != NULL ? strlen(s) : 0;
}

static void
fuzz_use(struct http_request *req)
{
	static const char *const qnames[] = {
		"id", "toFollowId", "toUnfollowId", "username", "limit",
		"before", ""
	};
	struct route_match	 m;
	enum router_result	 res;
	char			 out[64];
	size_t			 i, sink = 0;
	int			 rc;

	sink += fuzz_touch(req->method_name) + fuzz_touch(req->target);
	sink += fuzz_touch(req->query);
	if (req->path == NULL || req->path[0] != '/' ||
	    strstr(req->path, "/../") != NULL ||
	    (strlen(req->path) >= 3 &&
	    strcmp(req->path + strlen(req->path) - 3, "/..") == 0))
		__builtin_trap();
	for (i = 0; i < (size_t)req->nheaders; i++) {
		sink += fuzz_touch(req->headers[i].name);
		sink += fuzz_touch(req->headers[i].value);
	}
	if (req->body != NULL && req->body[req->body_len] != '\0')
		__builtin_trap();
	sink += fuzz_touch(http_header(req, "Host"));
	sink += fuzz_touch(http_header(req, "authorization"));
	for (i = 0; i < sizeof(qnames) / sizeof(qnames[0]); i++) {
		rc = http_query_get(req->query, qnames[i], out, sizeof(out));
		if (rc == 1)
			sink += strlen(out);
		rc = http_query_get(req->query, qnames[i], out, 1);
		if (rc == 1 && out[0] != '\0')
			__builtin_trap();
	}
	if (http_cookie_get(req, "auth_token", out, sizeof(out)) == 1)
		sink += strlen(out);
	res = router_match(fuzz_routes, req->method, req->path, &m);
	if (res == ROUTER_FOUND) {
		sink += fuzz_touch(router_param(&m, "id"));
		sink += fuzz_touch(router_param(&m, "roomId"));
	} else if (res == ROUTER_BAD_METHOD) {
		sink += strlen(m.allow);
	}
	sink += strlen(http_status_text(res == ROUTER_FOUND ? 200 : 404));
	/* Keep the work from being optimised away. */
	__asm__ volatile("" : : "r"(sink));
}

/* What a connection would do with the requests, folded into a number. */
static uint64_t
fuzz_mix(uint64_t h, uint64_t v)
{
	return (h ^ v) * 0x100000001b3ULL;
}

static uint64_t
fuzz_mix_str(uint64_t h, const char *s)
{
	if (s == NULL)
		return fuzz_mix(h, 0xff);
	for (; *s != '\0'; s++)
		h = fuzz_mix(h, (unsigned char)*s);
	return fuzz_mix(h, 0);
}

/*
 * Read all of p as a connection would, in reads of the sizes given (0: all
 * at once), and return a digest of every request and of how it ended.
 */
static uint64_t
fuzz_run(const char *p, size_t size, const uint8_t *sizes, int use)
{
	struct http_reader	*r;
	struct http_request	*req;
	size_t			 off, n, used, k = 0;
	enum http_feed		 f = HTTP_FEED_MORE;
	uint64_t		 h = 0xcbf29ce484222325ULL;
	int			 st;

	if ((r = http_reader_new(1024, 4096)) == NULL)
		return 0;
	for (off = 0; off < size; ) {
		n = sizes == NULL ? size - off :
		    (size_t)(sizes[k++ % 4] % 64) + 1;
		if (n > size - off)
			n = size - off;
		f = http_reader_feed(r, p + off, n, &used);
		if (used > n)
			__builtin_trap();
		off += used;
		if (f == HTTP_FEED_ERROR) {
			st = http_reader_status(r);
			if (st != 400 && st != 411 && st != 413 &&
			    st != 431 && st != 501 && st != 505 && st != 500)
				__builtin_trap();
			h = fuzz_mix(h, (uint64_t)st);
			break;
		}
		if (f == HTTP_FEED_DONE) {
			if ((req = http_reader_take(r)) == NULL)
				__builtin_trap();
			h = fuzz_mix(h, off);
			h = fuzz_mix(h, (uint64_t)req->method);
			h = fuzz_mix_str(h, req->target);
			h = fuzz_mix_str(h, req->path);
			h = fuzz_mix_str(h, req->query);
			h = fuzz_mix(h, (uint64_t)req->nheaders);
			h = fuzz_mix(h, req->body_len);
			h = fuzz_mix(h, (uint64_t)(req->keep_alive << 2 |
			    req->upgrade << 1 | req->http_minor));
			if (use)
				fuzz_use(req);
			http_request_free(req);
		} else if (used != n) {
			__builtin_trap();	/* MORE takes everything */
		}
	}
	h = fuzz_mix(h, (uint64_t)f);
	h = fuzz_mix(h, (uint64_t)http_reader_started(r));
	http_reader_free(r);
	return h;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t sizes[4];

	/* The first four bytes are the read sizes, used in turn. */
	if (size < 4)
		return 0;
	memcpy(sizes, data, 4);
	/* However the bytes arrive, the requests read are the same. */
	if (fuzz_run((const char *)data + 4, size - 4, sizes, 1) !=
	    fuzz_run((const char *)data + 4, size - 4, NULL, 0))
		__builtin_trap();
	return 0;
}
