/*
 * test_http: the request reader against whole, split and pipelined input,
 * every error status it can give, query and cookie decoding, and the
 * response head. Each reader case runs with several chunkings: the result
 * must not depend on how the bytes arrive.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "test/unit/tap.h"
#include "workers/http.h"

#define MAX_REQS 8

struct run {
	enum http_feed	 last;
	int		 status;
	int		 too_many;	/* http_reader_too_many() at the error */
	int		 nreq;
	struct http_request *req[MAX_REQS];
	size_t		 used[MAX_REQS];	/* bytes consumed up to DONE */
	size_t		 consumed;		/* bytes consumed in all */
};

/*
 * Feed data in chunks of step bytes (0: whole), taking each request as it
 * completes and feeding the rest after it, as a connection would.
 */
static void
run_feed(struct run *out, const char *data, size_t len, size_t step,
    size_t max_head, size_t max_body, int stop_after)
{
	struct http_reader *r = http_reader_new(max_head, max_body);
	size_t	off = 0, n, used;

	memset(out, 0, sizeof(*out));
	out->last = HTTP_FEED_MORE;
	while (off < len) {
		n = step == 0 || len - off < step ? len - off : step;
		out->last = http_reader_feed(r, data + off, n, &used);
		off += used;
		if (out->last == HTTP_FEED_ERROR) {
			out->status = http_reader_status(r);
			out->too_many = http_reader_too_many(r);
			break;
		}
		if (out->last == HTTP_FEED_DONE) {
			if (out->nreq < MAX_REQS) {
				out->used[out->nreq] = off;
				out->req[out->nreq++] = http_reader_take(r);
			} else {
				http_request_free(http_reader_take(r));
			}
			if (stop_after && out->nreq == stop_after)
				break;
		}
	}
	out->consumed = off;
	http_reader_free(r);
}

static void
run_free(struct run *run)
{
	int i;

	for (i = 0; i < run->nreq; i++)
		http_request_free(run->req[i]);
}

static int
streq(const char *a, const char *b)
{
	if (a == NULL || b == NULL)
		return a == b;
	return strcmp(a, b) == 0;
}

static const size_t steps[] = { 0, 1, 2, 3, 7, 64 };
#define NSTEPS (sizeof(steps) / sizeof(steps[0]))

/* --- requests that must be read ------------------------------------------ */

static const struct good_case {
	const char	*name;
	const char	*in;
	enum http_method_id method;
	const char	*method_name;
	const char	*path;
	const char	*query;
	const char	*body;
	int		 keep_alive;
	int		 upgrade;
	int		 minor;
	size_t		 tail;		/* bytes left after the request */
} good[] = {
	{ "simple GET", "GET / HTTP/1.1\r\nHost: a\r\n\r\n",
	    HTTP_M_GET, "GET", "/", NULL, NULL, 1, 0, 1, 0 },
	{ "POST with a body",
	    "POST /v1/login HTTP/1.1\r\nHost: a\r\nContent-Length: 15\r\n"
	    "Content-Type: application/json\r\n\r\n{\"email\":\"a@b\"}",
	    HTTP_M_POST, "POST", "/v1/login", NULL, "{\"email\":\"a@b\"}",
	    1, 0, 1, 0 },
	{ "POST with Content-Length: 0",
	    "POST /logout HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
	    HTTP_M_POST, "POST", "/logout", NULL, NULL, 1, 0, 1, 0 },
	{ "query kept raw, path decoded",
	    "GET /users/%41b?username=a%20b&x=1 HTTP/1.1\r\n\r\n",
	    HTTP_M_GET, "GET", "/users/Ab", "username=a%20b&x=1", NULL,
	    1, 0, 1, 0 },
	{ "empty query", "GET /feed? HTTP/1.1\r\n\r\n",
	    HTTP_M_GET, "GET", "/feed", "", NULL, 1, 0, 1, 0 },
	{ "fragment dropped", "GET /a?b=1#frag HTTP/1.1\r\n\r\n",
	    HTTP_M_GET, "GET", "/a", "b=1", NULL, 1, 0, 1, 0 },
	{ "absolute form",
	    "GET http://example.com:8080/health?x=1 HTTP/1.1\r\n\r\n",
	    HTTP_M_GET, "GET", "/health", "x=1", NULL, 1, 0, 1, 0 },
	{ "HTTP/1.0 closes", "GET / HTTP/1.0\r\n\r\n",
	    HTTP_M_GET, "GET", "/", NULL, NULL, 0, 0, 0, 0 },
	{ "HTTP/1.0 keep-alive",
	    "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
	    HTTP_M_GET, "GET", "/", NULL, NULL, 1, 0, 0, 0 },
	{ "HTTP/1.1 Connection: close",
	    "GET / HTTP/1.1\r\nConnection: close\r\n\r\n",
	    HTTP_M_GET, "GET", "/", NULL, NULL, 0, 0, 1, 0 },
	{ "HEAD", "HEAD /health HTTP/1.1\r\n\r\n",
	    HTTP_M_HEAD, "HEAD", "/health", NULL, NULL, 1, 0, 1, 0 },
	{ "DELETE", "DELETE /posts/7 HTTP/1.1\r\n\r\n",
	    HTTP_M_DELETE, "DELETE", "/posts/7", NULL, NULL, 1, 0, 1, 0 },
	{ "PUT", "PUT /x HTTP/1.1\r\nContent-Length: 1\r\n\r\nz",
	    HTTP_M_PUT, "PUT", "/x", NULL, "z", 1, 0, 1, 0 },
	{ "PATCH", "PATCH /x HTTP/1.1\r\n\r\n",
	    HTTP_M_PATCH, "PATCH", "/x", NULL, NULL, 1, 0, 1, 0 },
	{ "OPTIONS", "OPTIONS /x HTTP/1.1\r\n\r\n",
	    HTTP_M_OPTIONS, "OPTIONS", "/x", NULL, NULL, 1, 0, 1, 0 },
	{ "a method the router will refuse",
	    "PROPFIND /x HTTP/1.1\r\n\r\n",
	    HTTP_M_OTHER, "PROPFIND", "/x", NULL, NULL, 1, 0, 1, 0 },
	{ "blank lines before the request",
	    "\r\n\r\nGET / HTTP/1.1\r\n\r\n",
	    HTTP_M_GET, "GET", "/", NULL, NULL, 1, 0, 1, 0 },
	{ "bare LF line ends", "GET /me HTTP/1.1\nHost: a\n\n",
	    HTTP_M_GET, "GET", "/me", NULL, NULL, 1, 0, 1, 0 },
	{ "single dots and dotted names are not '..'",
	    "GET /a/./b/..c/.../d.. HTTP/1.1\r\n\r\n",
	    HTTP_M_GET, "GET", "/a/./b/..c/.../d..", NULL, NULL, 1, 0, 1, 0 },
	{ "WebSocket upgrade stops at the head",
	    "GET /ws/joinRoom/r1 HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n"
	    "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
	    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
	    "\x81\x85\x01\x02\x03\x04hello",
	    HTTP_M_GET, "GET", "/ws/joinRoom/r1", NULL, NULL, 1, 1, 1, 11 },
	{ "Upgrade without Connection: upgrade is no upgrade",
	    "GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n",
	    HTTP_M_GET, "GET", "/", NULL, NULL, 1, 0, 1, 0 },
	{ "a body with NULs and CRLFs is copied whole",
	    "POST /p HTTP/1.1\r\nContent-Length: 6\r\n\r\na\r\n\r\nb",
	    HTTP_M_POST, "POST", "/p", NULL, "a\r\n\r\nb", 1, 0, 1, 0 },
	{ "a body line that starts with a space is no obs-fold",
	    "POST /p HTTP/1.1\r\nContent-Length: 5\r\n\r\n a\n\tb",
	    HTTP_M_POST, "POST", "/p", NULL, " a\n\tb", 1, 0, 1, 0 },
	{ "white space inside and around a value",
	    "GET / HTTP/1.1\r\nX-A:  b c\t\r\nHost:a\r\n\r\n",
	    HTTP_M_GET, "GET", "/", NULL, NULL, 1, 0, 1, 0 },
};

static void
test_good(void)
{
	size_t		 i, s, len;
	struct run	 run;
	const struct good_case *c;
	struct http_request *q;
	int		 same;

	for (i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		c = &good[i];
		len = strlen(c->in);
		for (s = 0; s < NSTEPS; s++) {
			run_feed(&run, c->in, len, steps[s], 1024, 4096, 1);
			q = run.nreq == 1 ? run.req[0] : NULL;
			same = q != NULL && q->method == c->method &&
			    streq(q->method_name, c->method_name) &&
			    streq(q->path, c->path) &&
			    streq(q->query, c->query) &&
			    streq(q->body, c->body) &&
			    q->body_len == (c->body ? strlen(c->body) : 0) &&
			    q->keep_alive == c->keep_alive &&
			    q->upgrade == c->upgrade &&
			    q->http_minor == c->minor &&
			    run.used[0] == len - c->tail;
			ok(same, "%s (chunks of %zu)", c->name, steps[s]);
			if (!same && q != NULL)
				printf("#   got %s %s q=%s ka=%d up=%d 1.%d "
				    "used %zu of %zu\n", q->method_name,
				    q->path, q->query ? q->query : "(null)",
				    q->keep_alive, q->upgrade, q->http_minor,
				    run.used[0], len);
			run_free(&run);
		}
	}
}

/* --- requests that must be refused --------------------------------------- */

static const struct bad_case {
	const char	*name;
	const char	*in;
	int		 status;
} bad[] = {
	{ "not HTTP at all", "\x16\x03\x01\x02\x01\x01\x03\x01\xfc\x03", 400 },
	{ "no URL", "GET HTTP/1.1\r\n\r\n", 400 },
	{ "method token without a request line", "GARBAGE\r\n\r\n", 400 },
	{ "encoded NUL in the path", "GET /a%00b HTTP/1.1\r\n\r\n", 400 },
	{ "bad escape in the path", "GET /a%zz HTTP/1.1\r\n\r\n", 400 },
	{ "cut escape in the path", "GET /a% HTTP/1.1\r\n\r\n", 400 },
	{ "'..' segment", "GET /a/../b HTTP/1.1\r\n\r\n", 400 },
	{ "'..' at the end", "GET /a/.. HTTP/1.1\r\n\r\n", 400 },
	{ "encoded '..' segment", "GET /a/%2e%2E/b HTTP/1.1\r\n\r\n", 400 },
	{ "'..' made with an encoded slash", "GET /a/..%2fb HTTP/1.1\r\n\r\n",
	    400 },
	{ "asterisk form", "OPTIONS * HTTP/1.1\r\n\r\n", 400 },
	{ "authority form", "CONNECT example.com:443 HTTP/1.1\r\n\r\n", 400 },
	{ "header without a colon", "GET / HTTP/1.1\r\nBad Header\r\n\r\n",
	    400 },
	{ "CR without LF", "GET / HTTP/1.1\r\nA: b\rX\r\n\r\n", 400 },
	{ "obs-fold with a space", "GET / HTTP/1.1\r\nHost: a\r\n"
	    "X-A: b\r\n c\r\n\r\n", 400 },
	{ "obs-fold with a tab", "GET / HTTP/1.1\r\nX-A: b\r\n\tc\r\n"
	    "Host: a\r\n\r\n", 400 },
	{ "obs-fold after a bare LF", "GET / HTTP/1.1\nX-A: b\n c\n\n", 400 },
	{ "obs-fold of an empty value", "GET / HTTP/1.1\r\nX-A:\r\n c\r\n"
	    "\r\n", 400 },
	{ "white space before the first header",
	    "GET / HTTP/1.1\r\n Host: a\r\n\r\n", 400 },
	{ "white space before a colon", "GET / HTTP/1.1\r\nX-A : 1\r\n"
	    "\r\n", 400 },
	{ "a tab before a colon", "GET / HTTP/1.1\r\nX-A\t: 1\r\n\r\n",
	    400 },
	{ "Content-Length with a space before its colon",
	    "POST / HTTP/1.1\r\nContent-Length : 2\r\n\r\nab", 400 },
	{ "a space inside a field name", "GET / HTTP/1.1\r\nX A: 1\r\n\r\n",
	    400 },
	{ "a fold behind an unknown method: the method's error first",
	    "TEG / HTTP/1.0\r\n    BREW /pot HTTP/1.1\r\n\r\n", 501 },
	{ "a fold behind a bad header: the header's error first",
	    "GET / HTTP/1.1\r\nBad Header\r\n c\r\n\r\n", 400 },
	{ "two Content-Lengths",
	    "POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n"
	    "\r\nab", 400 },
	{ "Content-Length and Transfer-Encoding",
	    "POST / HTTP/1.1\r\nContent-Length: 3\r\n"
	    "Transfer-Encoding: chunked\r\n\r\n", 400 },
	{ "Content-Length not a number",
	    "POST / HTTP/1.1\r\nContent-Length: 1x\r\n\r\n", 400 },
	{ "malformed version", "GET / HTTP/1.1x\r\n\r\n", 400 },
	{ "two-digit version", "GET / HTTP/11.1\r\n\r\n", 400 },
	{ "chunked body", "POST /posts HTTP/1.1\r\n"
	    "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", 411 },
	{ "other transfer coding", "POST /posts HTTP/1.1\r\n"
	    "Transfer-Encoding: gzip\r\n\r\n", 411 },
	{ "body over the limit, refused before it comes",
	    "POST /posts HTTP/1.1\r\nContent-Length: 4097\r\n\r\n", 413 },
	{ "huge Content-Length",
	    "POST /posts HTTP/1.1\r\nContent-Length: 99999999999999999\r\n"
	    "\r\n", 413 },
	{ "Content-Length past 64 bits",
	    "POST /posts HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n"
	    "\r\n", 400 },
	{ "HTTP/2.0", "GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505 },
	{ "HTTP/1.2", "GET / HTTP/1.2\r\n\r\n", 505 },
	{ "HTTP/0.9", "GET /\r\n\r\n", 505 },
	{ "unknown method", "BREW /pot HTTP/1.1\r\n\r\n", 501 },
	{ "lower-case method", "get / HTTP/1.1\r\n\r\n", 501 },
	{ "method a known prefix", "GE / HTTP/1.1\r\n\r\n", 501 },
	{ "HTTP/2 preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 501 },
};

static void
test_bad(void)
{
	size_t		 i, s;
	struct run	 run;
	const struct bad_case *c;

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		c = &bad[i];
		for (s = 0; s < NSTEPS; s++) {
			run_feed(&run, c->in, strlen(c->in), steps[s], 1024,
			    4096, 0);
			ok(run.last == HTTP_FEED_ERROR &&
			    run.status == c->status && run.nreq == 0,
			    "%s: %d (chunks of %zu; got %d)", c->name,
			    c->status, steps[s], run.status);
			run_free(&run);
		}
	}
}

/* Build "GET /<path> HTTP/1.1\r\n" + headers so the head is exactly n. */
static char *
head_of_size(size_t n)
{
	static const char pre[] = "GET / HTTP/1.1\r\nX-Pad: ";
	char	*s = malloc(n + 1);
	size_t	 fill = n - (sizeof(pre) - 1) - 4;

	memcpy(s, pre, sizeof(pre) - 1);
	memset(s + sizeof(pre) - 1, 'a', fill);
	memcpy(s + sizeof(pre) - 1 + fill, "\r\n\r\n", 5);
	return s;
}

static void
test_limits(void)
{
	struct run	 run;
	char		*s, *big;
	size_t		 i, st, len;
	int		 good_all = 1, bad_all = 1;
	char		 body[200];

	/* A head of exactly max_head is fine; one byte more is 431. */
	for (st = 0; st < NSTEPS; st++) {
		s = head_of_size(100);
		run_feed(&run, s, 100, steps[st], 100, 10, 1);
		good_all &= run.nreq == 1 && run.used[0] == 100;
		run_free(&run);
		free(s);
		s = head_of_size(101);
		run_feed(&run, s, 101, steps[st], 100, 10, 0);
		bad_all &= run.last == HTTP_FEED_ERROR && run.status == 431;
		run_free(&run);
		free(s);
	}
	ok(good_all, "a head of exactly max_head is read");
	ok(bad_all, "a head of max_head + 1 is 431");

	/* A request line alone over the limit. */
	big = malloc(3000);
	memcpy(big, "GET /", 5);
	memset(big + 5, 'a', 2990);
	memcpy(big + 2995, " HTTP", 5);
	run_feed(&run, big, 3000, 0, 1024, 4096, 0);
	ok(run.status == 431, "a URL over max_head is 431 (got %d)",
	    run.status);
	run_free(&run);
	/* An unknown method token over the limit. */
	memset(big, 'X', 3000);
	run_feed(&run, big, 3000, 0, 1024, 4096, 0);
	ok(run.status == 431, "a method token over max_head is 431 (got %d)",
	    run.status);
	run_free(&run);
	free(big);

	/* Too many headers, each one small. */
	big = malloc(HTTP_MAX_HEADERS * 8 + 64);
	len = (size_t)sprintf(big, "GET / HTTP/1.1\r\n");
	for (i = 0; i <= HTTP_MAX_HEADERS; i++)
		len += (size_t)sprintf(big + len, "H%zu: v\r\n", i % 100);
	len += (size_t)sprintf(big + len, "\r\n");
	for (st = 0; st < NSTEPS; st++) {
		run_feed(&run, big, len, steps[st], 8192, 4096, 0);
		ok(run.status == 431 && run.too_many, "%d headers are 431, "
		    "too many fields (chunks of %zu; got %d, %d)",
		    HTTP_MAX_HEADERS + 1, steps[st], run.status, run.too_many);
		run_free(&run);
	}
	/* A head too large with few fields is not "too many fields". */
	s = head_of_size(101);
	run_feed(&run, s, 101, 0, 100, 10, 0);
	ok(run.status == 431 && !run.too_many, "a long head is not too many "
	    "fields (got %d, %d)", run.status, run.too_many);
	run_free(&run);
	free(s);
	free(big);

	/* A body of exactly max_body. */
	len = (size_t)snprintf(body, sizeof(body),
	    "POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\n0123456789");
	run_feed(&run, body, len, 1, 1024, 10, 1);
	ok(run.nreq == 1 && run.req[0]->body_len == 10 &&
	    run.req[0]->body[10] == '\0',
	    "a body of exactly max_body is read, NUL-terminated");
	run_free(&run);
	len = (size_t)snprintf(body, sizeof(body),
	    "POST / HTTP/1.1\r\nContent-Length: 11\r\n\r\n");
	run_feed(&run, body, len, 0, 1024, 10, 0);
	ok(run.status == 413,
	    "413 as soon as the head ends, before any body byte");
	run_free(&run);
}

/* --- pipelining and the reader's life cycle ------------------------------ */

static void
test_pipeline(void)
{
	static const char two[] =
	    "POST /posts HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello"
	    "GET /feed?limit=2 HTTP/1.1\r\n\r\n"
	    "GET /me HTTP/1.1\r\nConnection: close\r\n\r\n";
	size_t		 first = strlen("POST /posts HTTP/1.1\r\n"
	    "Content-Length: 5\r\n\r\nhello");
	size_t		 second = first + strlen("GET /feed?limit=2 HTTP/1.1"
	    "\r\n\r\n");
	size_t		 st;
	struct run	 run;
	int		 good_all = 1;

	for (st = 0; st < NSTEPS; st++) {
		run_feed(&run, two, sizeof(two) - 1, steps[st], 1024, 4096,
		    0);
		good_all &= run.nreq == 3 &&
		    streq(run.req[0]->path, "/posts") &&
		    streq(run.req[0]->body, "hello") &&
		    run.used[0] == first &&
		    streq(run.req[1]->path, "/feed") &&
		    streq(run.req[1]->query, "limit=2") &&
		    run.req[1]->body == NULL &&
		    run.used[1] == second &&
		    streq(run.req[2]->path, "/me") &&
		    run.req[2]->keep_alive == 0 &&
		    run.used[2] == sizeof(two) - 1 &&
		    run.last == HTTP_FEED_DONE;
		run_free(&run);
	}
	ok(good_all, "three pipelined requests come out one by one, in order");
}

/* When a connection should send "100 Continue": head accepted, body due. */
static void
test_continue(void)
{
	static const struct {
		const char	*head;
		size_t		 max_body;
		int		 want;
	} cases[] = {
		{ "POST /p HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n"
		    "Content-Length: 5\r\n\r\n", 4096, 1 },
		{ "POST /p HTTP/1.1\r\nExpect:  100-Continue \r\n"
		    "Content-Length: 5\r\n\r\n", 4096, 1 },
		{ "POST /p HTTP/1.1\r\nContent-Length: 5\r\n\r\n", 4096, 0 },
		{ "POST /p HTTP/1.0\r\nExpect: 100-continue\r\n"
		    "Content-Length: 5\r\n\r\n", 4096, 0 },	/* 1.0 */
		{ "POST /p HTTP/1.1\r\nExpect: 100-continue\r\n"
		    "Content-Length: 5\r\n\r\n", 4, 0 },	/* 413 */
		{ "POST /p HTTP/1.1\r\nExpect: 100-continue\r\n\r\n",
		    4096, 0 },				/* no body */
		{ "POST /p HTTP/1.1\r\nExpect: 100-continue\r\n"
		    "Content-Length: 5\r\n", 4096, 0 },	/* head not done */
	};
	struct http_reader *r;
	size_t i, used;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		r = http_reader_new(1024, cases[i].max_body);
		http_reader_feed(r, cases[i].head, strlen(cases[i].head),
		    &used);
		ok(http_reader_expects_continue(r) == cases[i].want,
		    "100 Continue case %zu: %d", i, cases[i].want);
		if (cases[i].want) {
			http_reader_feed(r, "hello", 5, &used);
			ok(!http_reader_expects_continue(r),
			    "not once the body is in (case %zu)", i);
		}
		http_reader_free(r);
	}
}

static void
test_lifecycle(void)
{
	struct http_reader *r = http_reader_new(1024, 4096);
	static const char req[] =
	    "GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\n";
	size_t		 used;
	struct http_request *q;

	ok(!http_reader_started(r), "a new reader has not started");
	ok(http_reader_take(r) == NULL, "nothing to take before DONE");
	ok(http_reader_feed(r, req, 3, &used) == HTTP_FEED_MORE && used == 3,
	    "a partial request is MORE, all consumed");
	ok(http_reader_started(r), "started once a byte came");
	ok(http_reader_feed(r, req + 3, sizeof(req) - 4, &used) ==
	    HTTP_FEED_DONE && used == 16, "DONE stops at the end of the first");
	ok(http_reader_feed(r, req + 19, sizeof(req) - 20, &used) ==
	    HTTP_FEED_DONE && used == 0,
	    "feeding again before take is DONE, consuming nothing");
	q = http_reader_take(r);
	ok(q != NULL && streq(q->path, "/a") && streq(q->target, "/a"),
	    "take gives the first request");
	ok(!http_reader_started(r), "take resets started");
	http_request_free(q);
	ok(http_reader_feed(r, req + 19, sizeof(req) - 20, &used) ==
	    HTTP_FEED_DONE && used == sizeof(req) - 20,
	    "the rest is the second request");
	q = http_reader_take(r);
	ok(q != NULL && streq(q->path, "/b"), "take gives the second request");
	http_request_free(q);
	ok(http_reader_feed(r, "\x01", 1, &used) == HTTP_FEED_ERROR &&
	    http_reader_status(r) == 400, "junk is an error");
	ok(http_reader_feed(r, "GET", 3, &used) == HTTP_FEED_ERROR &&
	    used == 0, "an error is final");
	http_reader_free(r);

	/* Freeing a reader that holds an untaken request or a body. */
	r = http_reader_new(1024, 4096);
	http_reader_feed(r, req, sizeof(req) - 1, &used);
	http_reader_free(r);
	r = http_reader_new(1024, 4096);
	http_reader_feed(r, "POST / HTTP/1.1\r\nContent-Length: 9\r\n\r\nab",
	    40, &used);
	http_reader_free(r);
	ok(1, "freeing a reader mid-request leaks nothing (ASan)");
}

static void
test_headers(void)
{
	static const char in[] =
	    "GET / HTTP/1.1\r\nHost: example.com\r\nX-Pad:   spaced  \t\r\n"
	    "X-Empty:\r\nCookie: a=1; auth_token=tok_123-x;  q=\"quoted\"\r\n"
	    "cookie: late=2\r\n\r\n";
	struct run	 run;
	struct http_request *q;
	char		 out[16];

	run_feed(&run, in, sizeof(in) - 1, 1, 1024, 4096, 1);
	q = run.req[0];
	ok(q != NULL && q->nheaders == 5, "five headers");
	ok(streq(http_header(q, "host"), "example.com"),
	    "header names compare case-insensitively");
	ok(streq(http_header(q, "X-Pad"), "spaced"),
	    "header values are trimmed");
	ok(streq(http_header(q, "X-Empty"), ""), "an empty header is \"\"");
	ok(http_header(q, "X-None") == NULL, "an absent header is NULL");
	ok(http_cookie_get(q, "auth_token", out, sizeof(out)) == 1 &&
	    streq(out, "tok_123-x"), "cookie found among others");
	ok(http_cookie_get(q, "a", out, sizeof(out)) == 1 && streq(out, "1"),
	    "first cookie");
	ok(http_cookie_get(q, "q", out, sizeof(out)) == 1 &&
	    streq(out, "quoted"), "quoted cookie value is unquoted");
	ok(http_cookie_get(q, "late", out, sizeof(out)) == 1 &&
	    streq(out, "2"), "a second Cookie header is searched");
	ok(http_cookie_get(q, "token", out, sizeof(out)) == 0,
	    "a name that is a suffix of another is absent");
	ok(http_cookie_get(q, "auth_token", out, 9) == -1,
	    "a cookie longer than out is -1");
	run_free(&run);
}

/* --- query strings ------------------------------------------------------- */

static const struct query_case {
	const char	*query;
	const char	*name;
	size_t		 outlen;
	int		 rc;
	const char	*value;
} queries[] = {
	{ "a=1&b=2", "b", 16, 1, "2" },
	{ "a=1&b=2", "a", 16, 1, "1" },
	{ "a=1&b=2", "c", 16, 0, NULL },
	{ NULL, "a", 16, 0, NULL },
	{ "", "a", 16, 0, NULL },
	{ "username=a+b%20c%2B", "username", 16, 1, "a b c+" },
	{ "x=%zz", "x", 16, -1, NULL },
	{ "x=%4", "x", 16, -1, NULL },
	{ "x=%00", "x", 16, -1, NULL },
	{ "x=12345", "x", 5, -1, NULL },
	{ "x=12345", "x", 6, 1, "12345" },
	{ "x=%41%42%43%44%45", "x", 6, 1, "ABCDE" },
	{ "flag&x=1", "flag", 16, 1, "" },
	{ "flag=&x=1", "flag", 16, 1, "" },
	{ "%74oFollowId=5", "toFollowId", 16, 1, "5" },
	{ "ab=1", "a", 16, 0, NULL },
	{ "a=1&a=2", "a", 16, 1, "1" },
	{ "=5&a=3", "a", 16, 1, "3" },
	{ "&&id=2&", "id", 16, 1, "2" },
	{ "x=%zz&id=7", "id", 16, 1, "7" },
	{ "toFollowId=42", "toFollowId", 16, 1, "42" },
	{ "a=%C3%A9", "a", 16, 1, "\xc3\xa9" },
};

static void
test_query(void)
{
	size_t	i;
	char	out[32];
	int	rc;
	const struct query_case *c;

	for (i = 0; i < sizeof(queries) / sizeof(queries[0]); i++) {
		c = &queries[i];
		memset(out, '#', sizeof(out));
		rc = http_query_get(c->query, c->name, out, c->outlen);
		ok(rc == c->rc && (rc != 1 || streq(out, c->value)),
		    "query \"%s\" %s -> %d", c->query ? c->query : "(null)",
		    c->name, c->rc);
	}
}

/* --- response heads ------------------------------------------------------ */

static char *
head_text(int status, const char *ctype, size_t clen, int ka,
    const char *extra)
{
	struct evbuffer	*b = evbuffer_new();
	size_t		 n;
	char		*s;

	http_write_head(b, status, ctype, clen, ka, extra);
	n = evbuffer_get_length(b);
	s = malloc(n + 1);
	evbuffer_remove(b, s, n);
	s[n] = '\0';
	evbuffer_free(b);
	return s;
}

/* The Date line is "Date: Sun, 06 Nov 1994 08:49:37 GMT". */
static int
date_ok(const char *h)
{
	const char	*d = strstr(h, "\r\nDate: ");
	const char	*e;

	if (d == NULL)
		return 0;
	d += 8;
	e = strstr(d, "\r\n");
	return e != NULL && e - d == 29 && d[3] == ',' && d[4] == ' ' &&
	    d[7] == ' ' && d[11] == ' ' && d[16] == ' ' && d[19] == ':' &&
	    d[22] == ':' && strncmp(d + 25, " GMT", 4) == 0;
}

static void
test_write_head(void)
{
	char *h;

	h = head_text(200, "application/json", 12, 1,
	    "Set-Cookie: a=b\r\n");
	ok(strncmp(h, "HTTP/1.1 200 OK\r\n", 17) == 0, "status line");
	ok(date_ok(h), "Date in IMF-fixdate");
	ok(strstr(h, "\r\nServer: gochat\r\n") != NULL, "Server");
	ok(strstr(h, "\r\nContent-Length: 12\r\n") != NULL, "Content-Length");
	ok(strstr(h, "\r\nConnection: keep-alive\r\n") != NULL, "keep-alive");
	ok(strstr(h, "\r\nContent-Type: application/json\r\n") != NULL,
	    "Content-Type");
	ok(strstr(h, "\r\nContent-Type: application/json\r\n"
	    "Set-Cookie: a=b\r\n\r\n") != NULL &&
	    strstr(h, "\r\n\r\n")[4] == '\0',
	    "extra after the standard headers, then the blank line, last");
	free(h);

	h = head_text(404, NULL, 0, 0, NULL);
	ok(strncmp(h, "HTTP/1.1 404 Not Found\r\n", 24) == 0 &&
	    strstr(h, "\r\nConnection: close\r\n") != NULL &&
	    strstr(h, "Content-Length: 0\r\n") != NULL &&
	    strstr(h, "Content-Type") == NULL,
	    "close, length 0, no Content-Type without ctype");
	free(h);

	h = head_text(204, "application/json", 0, 1, NULL);
	ok(strncmp(h, "HTTP/1.1 204 No Content\r\n", 25) == 0 &&
	    strstr(h, "Content-Length") == NULL,
	    "204 has no Content-Length");
	free(h);

	h = head_text(101, NULL, 0, 1, "Upgrade: websocket\r\n");
	ok(strncmp(h, "HTTP/1.1 101 Switching Protocols\r\n", 34) == 0 &&
	    strstr(h, "Content-Length") == NULL &&
	    strstr(h, "\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
	    != NULL && strstr(h, "keep-alive") == NULL,
	    "101 says Connection: Upgrade and no Content-Length");
	free(h);
}

static void
test_status_text(void)
{
	static const int codes[] = {
		101, 200, 201, 202, 204, 400, 401, 403, 404, 405, 408, 409,
		411, 413, 429, 431, 500, 501, 503, 505
	};
	size_t	i;
	int	all = 1;

	for (i = 0; i < sizeof(codes) / sizeof(codes[0]); i++)
		all &= strcmp(http_status_text(codes[i]), "Unknown") != 0;
	ok(all, "every status the server sends has a reason phrase");
	ok(streq(http_status_text(431), "Request Header Fields Too Large") &&
	    streq(http_status_text(405), "Method Not Allowed"),
	    "reason phrases are RFC 9110's");
	ok(streq(http_status_text(299), "Unknown"), "others are \"Unknown\"");
}

int
main(void)
{
	test_good();
	test_bad();
	test_limits();
	test_pipeline();
	test_lifecycle();
	test_continue();
	test_headers();
	test_query();
	test_write_head();
	test_status_text();
	return tap_done();
}
