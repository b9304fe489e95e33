/*
 * http: HTTP/1.1 request reading (over Debian's http-parser) and response
 * heads. Pure: no sockets, no event loop, so it can be unit-tested and
 * fuzzed from raw bytes. One reader per connection reads one request at a
 * time; the caller stops feeding while a request is being answered, which is
 * how pipelined requests are answered in order.
 */
#ifndef GC_HTTP_H
#define GC_HTTP_H

#include <stddef.h>

struct evbuffer;

enum http_method_id {
	HTTP_M_OTHER = 0,
	HTTP_M_GET,
	HTTP_M_HEAD,
	HTTP_M_POST,
	HTTP_M_PUT,
	HTTP_M_DELETE,
	HTTP_M_PATCH,
	HTTP_M_OPTIONS
};

#define HTTP_MAX_HEADERS 64

struct http_header {
	char	*name;		/* as received; compare case-insensitively */
	char	*value;		/* leading/trailing white space trimmed */
};

struct http_request {
	enum http_method_id method;
	const char	*method_name;	/* "GET", ... for logs */
	char		*target;	/* raw request target */
	char		*path;		/* percent-decoded path, no query; never
					 * contains NUL or "..": see http.c */
	char		*query;		/* raw query string after '?', or NULL */
	struct http_header headers[HTTP_MAX_HEADERS];
	int		 nheaders;
	char		*body;		/* NUL-terminated copy, or NULL */
	size_t		 body_len;
	int		 keep_alive;	/* the connection may serve another */
	int		 upgrade;	/* Connection: upgrade was asked */
	int		 http_minor;	/* 1.0 or 1.1 */
};

enum http_feed {
	HTTP_FEED_MORE,		/* all input consumed, request not complete */
	HTTP_FEED_DONE,		/* one request complete: take it */
	HTTP_FEED_ERROR		/* reply with http_reader_status() and close */
};

struct http_reader;

struct http_reader *http_reader_new(size_t max_head, size_t max_body);
void	http_reader_free(struct http_reader *r);
/*
 * Feed bytes. *consumed is how many were used; on DONE the rest belongs to
 * the next request (feed it after http_reader_take() and the response).
 * Errors set a status: 400 malformed, 411 chunked or otherwise unsized body,
 * 413 body over max_body, 431 head over max_head, 501 unknown method,
 * 505 HTTP version other than 1.0/1.1.
 */
enum http_feed http_reader_feed(struct http_reader *r, const char *data,
	    size_t len, size_t *consumed);
int	http_reader_status(const struct http_reader *r);
/* After a 431: 1 if it was for more than HTTP_MAX_HEADERS header fields. */
int	http_reader_too_many(const struct http_reader *r);
/*
 * 1 when the head of an HTTP/1.1 request with "Expect: 100-continue" has
 * been accepted (no error, sizes within limits) and its body is still to
 * come: the moment to send "100 Continue" (RFC 9110 10.1.1).
 */
int	http_reader_expects_continue(const struct http_reader *r);
/* 1 once any byte of the current request has been fed (for timeouts). */
int	http_reader_started(const struct http_reader *r);
/* Take the completed request (caller owns it) and reset for the next one. */
struct http_request *http_reader_take(struct http_reader *r);
void	http_request_free(struct http_request *req);

/* The value of the first header named name (case-insensitive), or NULL. */
const char *http_header(const struct http_request *req, const char *name);
/*
 * Find name in a query string and percent-decode its value (+ is a space)
 * into out. 1 found, 0 absent, -1 too long or bad encoding.
 */
int	http_query_get(const char *query, const char *name, char *out,
	    size_t outlen);
/* Value of cookie name from the Cookie header into out; 1, 0 or -1. */
int	http_cookie_get(const struct http_request *req, const char *name,
	    char *out, size_t outlen);

const char *http_status_text(int status);
/*
 * Append a status line and the standard headers (Date, Server,
 * Content-Length, Connection: keep-alive|close, and Content-Type when ctype
 * is not NULL), then extra (zero or more "Name: value\r\n" lines, may be
 * NULL), then the blank line.
 */
void	http_write_head(struct evbuffer *out, int status, const char *ctype,
	    size_t content_length, int keep_alive, const char *extra);

#endif
