/*
 * http: owns the per-connection request reader (http-parser driven one
 * request at a time, with the head/body limits of SPEC §1), the decoding of
 * query strings and cookies, and the writing of response heads. No sockets:
 * the connection code feeds bytes in and writes the heads out.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <event2/buffer.h>
#include <http_parser.h>

#include "common/util.h"
#include "workers/http.h"

enum http_phase {
	HTTP_PHASE_HEAD,	/* request line and headers */
	HTTP_PHASE_METHOD,	/* parser refused the method: 400 or 501? */
	HTTP_PHASE_BODY,
	HTTP_PHASE_DONE,	/* a request waits for http_reader_take() */
	HTTP_PHASE_ERROR
};

/* Which string of the head the parser is handing us pieces of. */
enum http_piece {
	HTTP_PIECE_NONE,
	HTTP_PIECE_URL,
	HTTP_PIECE_FIELD,
	HTTP_PIECE_VALUE
};

/*
 * Where the head's bytes are, line by line, to find obs-fold (a header
 * line that starts with a space or a tab, RFC 9112 5.2): http-parser joins
 * it to the previous value without telling, and SPEC.md §8 wants a 400.
 */
enum http_fold {
	HTTP_FOLD_START,	/* before the request line's first byte */
	HTTP_FOLD_LINE,		/* in the request line */
	HTTP_FOLD_BOL,		/* at the start of a header line */
	HTTP_FOLD_BOL_CR,	/* after a CR there: the blank line? */
	HTTP_FOLD_NAME,		/* in a header line's field name */
	HTTP_FOLD_FIELD,	/* in a header line, past its colon */
	HTTP_FOLD_END		/* past the blank line: the body */
};

struct http_hdr_off {
	size_t	name;
	size_t	value;
};

struct http_reader {
	http_parser	 parser;
	size_t		 max_head;
	size_t		 max_body;
	enum http_phase	 phase;
	int		 status;
	int		 started;
	size_t		 head_len;	/* head bytes fed so far */
	size_t		 method_len;	/* token bytes of a refused method */
	/*
	 * The request line's last bytes: http-parser as Debian builds it (not
	 * HTTP_PARSER_STRICT) takes "HTXP/1.1" for "HTTP/1.1", so the
	 * protocol token is checked here.
	 */
	int		 line_done;
	int		 line_ok;
	size_t		 line_len;
	int		 line_spaces;	/* fewer than 2: HTTP/0.9, a 505 */
	char		 line_tail[9];	/* " HTTP/x.y" */
	enum http_fold	 fold;

	/*
	 * The head's strings, NUL-terminated, one after the other: offsets,
	 * not pointers, because the buffer moves while it grows.
	 */
	char		*buf;
	size_t		 buf_len;
	size_t		 buf_cap;
	enum http_piece	 piece;
	int		 have_url;
	size_t		 url;
	size_t		 path;
	size_t		 query;		/* SIZE_MAX: no query */
	struct http_hdr_off hdr[HTTP_MAX_HEADERS];
	int		 nhdr;
	int		 too_many;	/* over HTTP_MAX_HEADERS: 431 */

	char		*body;
	size_t		 body_len;
	size_t		 body_cap;

	struct http_request *done;
};

/* A head buffer above this is not kept for the connection's next request. */
#define HTTP_BUF_KEEP	4096

static int	http_is_tchar(unsigned char c);
static void	http_track_line(struct http_reader *r, const char *p, size_t n);
static size_t	http_track_fold(struct http_reader *r, const char *p, size_t n,
		    int commit);
static void	http_reader_reset(struct http_reader *r);
static int	http_fail(struct http_reader *r, int status);
static int	http_buf_reserve(struct http_reader *r, size_t n);
static int	http_buf_append(struct http_reader *r, const char *p, size_t n);
static int	http_piece_add(struct http_reader *r, enum http_piece kind,
	    const char *at, size_t len);
static int	http_on_message_begin(http_parser *p);
static int	http_on_url(http_parser *p, const char *at, size_t len);
static int	http_check_version(const http_parser *p);
static int	http_on_header_field(http_parser *p, const char *at,
	    size_t len);
static int	http_on_header_value(http_parser *p, const char *at,
	    size_t len);
static int	http_on_body(http_parser *p, const char *at, size_t len);
static long	http_pct_decode(const char *src, size_t len, char *dst,
	    size_t dstlen, int plus_is_space);
static int	http_has_dotdot(const char *path);
static int	http_split_target(struct http_reader *r);
static int	http_trim_values(struct http_reader *r);
static int	http_on_headers_complete(http_parser *p);
static enum http_method_id http_method_map(unsigned int m);
static int	http_on_message_complete(http_parser *p);
static int	http_errno_status(enum http_errno e);
static size_t	http_scan_method(struct http_reader *r, const char *data,
	    size_t len);
static int	http_key_is(const char *key, size_t len, const char *name);
static int	http_cookie_find(const char *v, const char *name, char *out,
	    size_t outlen);
static void	http_date(time_t t, char *buf, size_t len);

static const http_parser_settings http_settings = {
	.on_message_begin = http_on_message_begin,
	.on_url = http_on_url,
	.on_header_field = http_on_header_field,
	.on_header_value = http_on_header_value,
	.on_headers_complete = http_on_headers_complete,
	.on_body = http_on_body,
	.on_message_complete = http_on_message_complete,
};

struct http_reader *
http_reader_new(size_t max_head, size_t max_body)
{
	struct http_reader *r;

	if ((r = calloc(1, sizeof(*r))) == NULL)
		return NULL;
	r->max_head = max_head;
	r->max_body = max_body;
	http_reader_reset(r);
	return r;
}

void
http_reader_free(struct http_reader *r)
{
	if (r == NULL)
		return;
	http_request_free(r->done);
	free(r->body);
	free(r->buf);
	free(r);
}

enum http_feed
http_reader_feed(struct http_reader *r, const char *data, size_t len,
    size_t *consumed)
{
	size_t	off = 0, n, got, fold;
	enum http_errno e;
	int	head;

	*consumed = 0;
	if (r->phase == HTTP_PHASE_DONE)
		return HTTP_FEED_DONE;
	if (r->phase == HTTP_PHASE_ERROR)
		return HTTP_FEED_ERROR;
	if (len > 0)
		r->started = 1;
	while (off < len) {
		if (r->phase == HTTP_PHASE_METHOD) {
			off += http_scan_method(r, data + off, len - off);
			break;
		}
		n = len - off;
		if (r->phase == HTTP_PHASE_HEAD) {
			/*
			 * Never show the parser more head than the limit:
			 * then the limit holds however the bytes are split.
			 */
			if (r->head_len >= r->max_head) {
				r->status = 431;
				r->phase = HTTP_PHASE_ERROR;
				break;
			}
			if (n > r->max_head - r->head_len)
				n = r->max_head - r->head_len;
			/*
			 * Show the parser the head only up to a folded line:
			 * whatever it finds wrong before the fold wins, as it
			 * would if the bytes came one at a time.
			 */
			fold = http_track_fold(r, data + off, n, 0);
			if (fold == 0) {
				r->status = 400;
				r->phase = HTTP_PHASE_ERROR;
				break;
			}
			n = fold;
			if (!r->line_done)
				http_track_line(r, data + off, n);
		}
		head = r->phase == HTTP_PHASE_HEAD;
		got = http_parser_execute(&r->parser, &http_settings,
		    data + off, n);
		if (head) {
			r->head_len += got;
			(void)http_track_fold(r, data + off, got, 1);
		}
		off += got;
		if (r->phase == HTTP_PHASE_DONE) {
			*consumed = off;
			return HTTP_FEED_DONE;
		}
		e = HTTP_PARSER_ERRNO(&r->parser);
		if (r->status != 0) {
			r->phase = HTTP_PHASE_ERROR;
			break;
		}
		if (e == HPE_INVALID_METHOD) {
			r->phase = HTTP_PHASE_METHOD;
			continue;
		}
		if (e != HPE_OK || got != n) {
			r->status = http_errno_status(e);
			r->phase = HTTP_PHASE_ERROR;
			break;
		}
	}
	*consumed = off;
	return r->phase == HTTP_PHASE_ERROR ? HTTP_FEED_ERROR : HTTP_FEED_MORE;
}

int
http_reader_status(const struct http_reader *r)
{
	return r->status;
}

int
http_reader_too_many(const struct http_reader *r)
{
	return r->status == 431 && r->too_many;
}

int
http_reader_expects_continue(const struct http_reader *r)
{
	int i;

	if (r->phase != HTTP_PHASE_BODY || r->body_len >= r->body_cap ||
	    r->parser.http_minor != 1)
		return 0;
	for (i = 0; i < r->nhdr; i++)
		if (strcasecmp(r->buf + r->hdr[i].name, "Expect") == 0 &&
		    strcasecmp(r->buf + r->hdr[i].value, "100-continue") == 0)
			return 1;
	return 0;
}

int
http_reader_started(const struct http_reader *r)
{
	return r->started;
}

struct http_request *
http_reader_take(struct http_reader *r)
{
	struct http_request *req;

	if (r->phase != HTTP_PHASE_DONE)
		return NULL;
	req = r->done;
	r->done = NULL;
	http_reader_reset(r);
	return req;
}

void
http_request_free(struct http_request *req)
{
	if (req == NULL)
		return;
	free(req->body);
	free(req);
}

const char *
http_header(const struct http_request *req, const char *name)
{
	int i;

	for (i = 0; i < req->nheaders; i++)
		if (strcasecmp(req->headers[i].name, name) == 0)
			return req->headers[i].value;
	return NULL;
}

int
http_query_get(const char *query, const char *name, char *out,
    size_t outlen)
{
	const char	*s, *eq, *end;
	size_t		 klen, vlen;

	if (query == NULL)
		return 0;
	for (s = query; ; s = end + 1) {
		end = s + strcspn(s, "&");
		eq = memchr(s, '=', (size_t)(end - s));
		klen = (size_t)((eq != NULL ? eq : end) - s);
		if (klen > 0 && http_key_is(s, klen, name)) {
			/* "flag" alone is found, with an empty value. */
			vlen = eq != NULL ? (size_t)(end - eq - 1) : 0;
			if (http_pct_decode(eq != NULL ? eq + 1 : "", vlen,
			    out, outlen, 1) < 0)
				return -1;
			return 1;
		}
		if (*end == '\0')
			return 0;
	}
}

int
http_cookie_get(const struct http_request *req, const char *name,
    char *out, size_t outlen)
{
	int i, rc;

	for (i = 0; i < req->nheaders; i++) {
		if (strcasecmp(req->headers[i].name, "Cookie") != 0)
			continue;
		rc = http_cookie_find(req->headers[i].value, name, out,
		    outlen);
		if (rc != 0)
			return rc;
	}
	return 0;
}

const char *
http_status_text(int status)
{
	switch (status) {
	case 100: return "Continue";
	case 101: return "Switching Protocols";
	case 200: return "OK";
	case 201: return "Created";
	case 202: return "Accepted";
	case 204: return "No Content";
	case 301: return "Moved Permanently";
	case 302: return "Found";
	case 304: return "Not Modified";
	case 400: return "Bad Request";
	case 401: return "Unauthorized";
	case 403: return "Forbidden";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 408: return "Request Timeout";
	case 409: return "Conflict";
	case 411: return "Length Required";
	case 413: return "Content Too Large";
	case 414: return "URI Too Long";
	case 415: return "Unsupported Media Type";
	case 426: return "Upgrade Required";
	case 429: return "Too Many Requests";
	case 431: return "Request Header Fields Too Large";
	case 500: return "Internal Server Error";
	case 501: return "Not Implemented";
	case 502: return "Bad Gateway";
	case 503: return "Service Unavailable";
	case 504: return "Gateway Timeout";
	case 505: return "HTTP Version Not Supported";
	default:  return "Unknown";
	}
}

/*
 * 1xx and 204 carry no Content-Length (RFC 9110 8.6). A 101 says
 * "Connection: Upgrade" itself, so extra must hold only the Upgrade and
 * Sec-WebSocket-* lines: two Connection headers confuse some clients.
 */
void
http_write_head(struct evbuffer *out, int status, const char *ctype,
    size_t content_length, int keep_alive, const char *extra)
{
	char date[64];

	http_date(time(NULL), date, sizeof(date));
	evbuffer_add_printf(out, "HTTP/1.1 %d %s\r\nDate: %s\r\n"
	    "Server: gochat\r\n", status, http_status_text(status), date);
	if (status >= 200 && status != 204 && status != 304)
		evbuffer_add_printf(out, "Content-Length: %zu\r\n",
		    content_length);
	if (status == 101)
		evbuffer_add_printf(out, "Connection: Upgrade\r\n");
	else
		evbuffer_add_printf(out, "Connection: %s\r\n",
		    keep_alive ? "keep-alive" : "close");
	if (ctype != NULL)
		evbuffer_add_printf(out, "Content-Type: %s\r\n", ctype);
	if (extra != NULL)
		evbuffer_add_printf(out, "%s", extra);
	evbuffer_add_printf(out, "\r\n");
}

/* --- internal ------------------------------------------------------------ */

/* RFC 9110 tchar: what a method name is made of. */
static int
http_is_tchar(unsigned char c)
{
	if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	    (c >= '0' && c <= '9'))
		return 1;
	return c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

/*
 * Follow the request line (blank lines before it are allowed) and, at its
 * end, check that it ends with " HTTP/<digit>.<digit>".
 */
static void
http_track_line(struct http_reader *r, const char *p, size_t n)
{
	const size_t tl = sizeof(r->line_tail);

	for (size_t i = 0; i < n && !r->line_done; i++) {
		if (p[i] == '\n') {
			if (r->line_len == 0)
				continue;
			r->line_done = 1;
			r->line_ok = r->line_spaces < 2 || (r->line_len > tl &&
			    memcmp(r->line_tail, " HTTP/", 6) == 0 &&
			    r->line_tail[6] >= '0' && r->line_tail[6] <= '9' &&
			    r->line_tail[7] == '.' &&
			    r->line_tail[8] >= '0' && r->line_tail[8] <= '9');
			return;
		}
		if (p[i] == '\r')
			continue;
		if (p[i] == ' ')
			r->line_spaces++;
		memmove(r->line_tail, r->line_tail + 1, tl - 1);
		r->line_tail[tl - 1] = p[i];
		r->line_len++;
	}
}

/*
 * Follow the head's lines: the index in p of the first byte of a header
 * line that starts with a space or a tab (obs-fold; also white space
 * between the request line and the first header, which RFC 9112 2.2 lets
 * a server refuse), or of white space in a field name or before its colon
 * (which RFC 9112 5.1 says a server must refuse: proxies disagree on what
 * "Content-Length : 5" means), or n if there is none. Blank lines before the request
 * line are allowed, as http-parser allows them. Only commit moves r's
 * state on: the caller scans first, then commits what the parser took.
 */
static size_t
http_track_fold(struct http_reader *r, const char *p, size_t n, int commit)
{
	enum http_fold f = r->fold;
	size_t i;

	for (i = 0; i < n && f != HTTP_FOLD_END; i++) {
		switch (f) {
		case HTTP_FOLD_START:
			if (p[i] != '\r' && p[i] != '\n')
				f = HTTP_FOLD_LINE;
			break;
		case HTTP_FOLD_LINE:
		case HTTP_FOLD_FIELD:
			if (p[i] == '\n')
				f = HTTP_FOLD_BOL;
			break;
		case HTTP_FOLD_BOL:
			if (p[i] == ' ' || p[i] == '\t')
				return i;
			f = p[i] == '\r' ? HTTP_FOLD_BOL_CR :
			    p[i] == '\n' ? HTTP_FOLD_END : HTTP_FOLD_NAME;
			break;
		case HTTP_FOLD_BOL_CR:
			f = p[i] == '\n' ? HTTP_FOLD_END : HTTP_FOLD_NAME;
			break;
		case HTTP_FOLD_NAME:
			if (p[i] == ' ' || p[i] == '\t')
				return i;
			if (p[i] == ':')
				f = HTTP_FOLD_FIELD;
			else if (p[i] == '\n')
				f = HTTP_FOLD_BOL;
			break;
		case HTTP_FOLD_END:
			break;
		}
	}
	if (commit)
		r->fold = f;
	return n;
}

static void
http_reader_reset(struct http_reader *r)
{
	http_parser_init(&r->parser, HTTP_REQUEST);
	r->parser.data = r;
	r->phase = HTTP_PHASE_HEAD;
	r->status = 0;
	r->started = 0;
	r->head_len = 0;
	r->method_len = 0;
	r->line_done = r->line_ok = 0;
	r->line_len = 0;
	r->line_spaces = 0;
	r->fold = HTTP_FOLD_START;
	if (r->buf_cap > HTTP_BUF_KEEP) {
		free(r->buf);
		r->buf = NULL;
		r->buf_cap = 0;
	}
	r->buf_len = 0;
	r->piece = HTTP_PIECE_NONE;
	r->have_url = 0;
	r->url = r->path = 0;
	r->query = SIZE_MAX;
	r->nhdr = 0;
	r->too_many = 0;
	free(r->body);
	r->body = NULL;
	r->body_len = r->body_cap = 0;
	r->done = NULL;
}

static int
http_fail(struct http_reader *r, int status)
{
	if (r->status == 0)
		r->status = status;
	return -1;
}

/* Make room for n more bytes; pointers into the buffer become invalid. */
static int
http_buf_reserve(struct http_reader *r, size_t n)
{
	char	*nb;
	size_t	 cap;

	if (n > SIZE_MAX / 4 - r->buf_len)
		return -1;
	if (r->buf_len + n <= r->buf_cap)
		return 0;
	cap = r->buf_cap ? r->buf_cap : 256;
	while (cap < r->buf_len + n)
		cap *= 2;
	if ((nb = realloc(r->buf, cap)) == NULL)
		return -1;
	r->buf = nb;
	r->buf_cap = cap;
	return 0;
}

/* p must not point into the buffer. */
static int
http_buf_append(struct http_reader *r, const char *p, size_t n)
{
	if (http_buf_reserve(r, n) == -1)
		return -1;
	if (n > 0)
		memcpy(r->buf + r->buf_len, p, n);
	r->buf_len += n;
	return 0;
}

/*
 * Append a piece of the head. The parser may split any string over many
 * callbacks (and does, when fed byte by byte), so a string ends only when a
 * piece of another kind starts. When a callback comes depends on how the
 * input was split, so nothing here refuses a request: too many headers is
 * only noted, and decided with everything else once the head is complete.
 */
static int
http_piece_add(struct http_reader *r, enum http_piece kind, const char *at,
    size_t len)
{
	if (r->piece != kind) {
		if (r->piece != HTTP_PIECE_NONE &&
		    http_buf_append(r, "", 1) == -1)
			return http_fail(r, 500);
		if (kind == HTTP_PIECE_URL) {
			r->url = r->buf_len;
			r->have_url = 1;
		} else if (kind == HTTP_PIECE_FIELD) {
			if (r->nhdr == HTTP_MAX_HEADERS) {
				r->too_many = 1;
				r->piece = HTTP_PIECE_NONE;
				return 0;
			}
			r->hdr[r->nhdr].name = r->buf_len;
			r->hdr[r->nhdr].value = SIZE_MAX;
			r->nhdr++;
		} else if (kind == HTTP_PIECE_VALUE) {
			if (r->too_many)
				return 0;
			r->hdr[r->nhdr - 1].value = r->buf_len;
		}
		r->piece = kind;
	}
	if (http_buf_append(r, at, len) == -1)
		return http_fail(r, 500);
	return 0;
}

static int
http_on_message_begin(http_parser *p)
{
	struct http_reader *r = p->data;

	r->method_len = 1;
	return 0;
}

static int
http_on_url(http_parser *p, const char *at, size_t len)
{
	return http_piece_add(p->data, HTTP_PIECE_URL, at, len);
}

static int
http_check_version(const http_parser *p)
{
	return p->http_major == 1 && (p->http_minor == 0 || p->http_minor == 1);
}

static int
http_on_header_field(http_parser *p, const char *at, size_t len)
{
	return http_piece_add(p->data, HTTP_PIECE_FIELD, at, len);
}

static int
http_on_header_value(http_parser *p, const char *at, size_t len)
{
	return http_piece_add(p->data, HTTP_PIECE_VALUE, at, len);
}

static int
http_on_body(http_parser *p, const char *at, size_t len)
{
	struct http_reader *r = p->data;

	if (len > r->body_cap - r->body_len)
		return http_fail(r, 400);
	memcpy(r->body + r->body_len, at, len);
	r->body_len += len;
	return 0;
}

/*
 * Percent-decode src[0..len) into dst, NUL-terminated, at most dstlen
 * bytes with the NUL. Returns the decoded length, or -1 for no room, a bad
 * escape or an encoded NUL: the result is a C string, so a NUL inside would
 * silently cut it.
 */
static long
http_pct_decode(const char *src, size_t len, char *dst, size_t dstlen,
    int plus_is_space)
{
	size_t	i, o;
	int	hi, lo;

	for (i = o = 0; i < len; i++) {
		if (o + 1 >= dstlen)
			return -1;
		if (src[i] == '%') {
			if (len - i < 3)
				return -1;
			hi = util_hexval((unsigned char)src[i + 1]);
			lo = util_hexval((unsigned char)src[i + 2]);
			if (hi < 0 || lo < 0 || (hi == 0 && lo == 0))
				return -1;
			dst[o++] = (char)(hi << 4 | lo);
			i += 2;
		} else if (src[i] == '+' && plus_is_space) {
			dst[o++] = ' ';
		} else {
			dst[o++] = src[i];
		}
	}
	if (dstlen == 0)
		return -1;
	dst[o] = '\0';
	return (long)o;
}

/* 1 if the decoded path has a ".." segment, which no route may see. */
static int
http_has_dotdot(const char *path)
{
	const char *s = path;

	while ((s = strstr(s, "..")) != NULL) {
		if ((s == path || s[-1] == '/') &&
		    (s[2] == '/' || s[2] == '\0'))
			return 1;
		s++;
	}
	return 0;
}

/*
 * Split the target (origin form "/p?q", or absolute form
 * "http://host/p?q") into the decoded path and the raw query, both
 * appended to the head buffer. -1 for what no route can serve ("*", an
 * authority, a bad escape, a ".." segment).
 */
static int
http_split_target(struct http_reader *r)
{
	const char	*t, *s;
	size_t		 soff, plen, qoff = 0, qlen = 0, at;
	int		 hasq;
	long		 n;

	if (!r->have_url)
		return -1;
	t = r->buf + r->url;
	s = t;
	if (*s != '/') {
		/* Absolute form: skip the scheme and the authority. */
		if ((s = strstr(t, "://")) == NULL)
			return -1;
		s += 3;
		s += strcspn(s, "/?#");
		if (*s != '/')
			return -1;
	}
	plen = strcspn(s, "?#");
	hasq = s[plen] == '?';
	if (hasq) {
		qoff = (size_t)(s + plen + 1 - r->buf);
		qlen = strcspn(s + plen + 1, "#");
	}
	/* Appending moves the buffer: from here on, offsets only. */
	soff = (size_t)(s - r->buf);
	if (http_buf_reserve(r, plen + 1 + qlen + 1) == -1)
		return http_fail(r, 500);
	at = r->buf_len;
	n = http_pct_decode(r->buf + soff, plen, r->buf + at, plen + 1, 0);
	if (n < 0 || http_has_dotdot(r->buf + at))
		return -1;
	r->path = at;
	r->buf_len = at + (size_t)n + 1;
	if (hasq) {
		r->query = r->buf_len;
		memcpy(r->buf + r->buf_len, r->buf + qoff, qlen);
		r->buf[r->buf_len + qlen] = '\0';
		r->buf_len += qlen + 1;
	}
	return 0;
}

/* Trim the white space around each header value, in place. */
static int
http_trim_values(struct http_reader *r)
{
	int	 i;
	char	*v, *e;

	for (i = 0; i < r->nhdr; i++) {
		if (r->hdr[i].value == SIZE_MAX) {
			r->hdr[i].value = r->buf_len;
			if (http_buf_append(r, "", 1) == -1)
				return -1;
		}
	}
	for (i = 0; i < r->nhdr; i++) {
		v = r->buf + r->hdr[i].value;
		while (*v == ' ' || *v == '\t')
			v++;
		e = v + strlen(v);
		while (e > v && (e[-1] == ' ' || e[-1] == '\t'))
			e--;
		*e = '\0';
		r->hdr[i].value = (size_t)(v - r->buf);
	}
	return 0;
}

static int
http_on_headers_complete(http_parser *p)
{
	struct http_reader *r = p->data;
	int	 i;

	if (!r->line_ok)
		return http_fail(r, 400);
	if (!http_check_version(p))
		return http_fail(r, 505);
	if (r->too_many)
		return http_fail(r, 431);
	/* End the last string of the head. */
	if (r->piece != HTTP_PIECE_NONE && http_buf_append(r, "", 1) == -1)
		return http_fail(r, 500);
	r->piece = HTTP_PIECE_NONE;
	if (http_trim_values(r) == -1)
		return http_fail(r, 500);
	for (i = 0; i < r->nhdr; i++)
		if (strcasecmp(r->buf + r->hdr[i].name,
		    "Transfer-Encoding") == 0)
			return http_fail(r, 411);
	if (http_split_target(r) == -1)
		return http_fail(r, 400);
	/* Decide on the size before a byte of the body is read. */
	if ((p->flags & F_CONTENTLENGTH) && p->content_length > 0) {
		if (p->content_length > r->max_body ||
		    p->content_length >= SIZE_MAX)
			return http_fail(r, 413);
		r->body_cap = (size_t)p->content_length;
		if ((r->body = malloc(r->body_cap + 1)) == NULL)
			return http_fail(r, 500);
	}
	r->phase = HTTP_PHASE_BODY;
	return 0;
}

static enum http_method_id
http_method_map(unsigned int m)
{
	switch (m) {
	case HTTP_GET:		return HTTP_M_GET;
	case HTTP_HEAD:		return HTTP_M_HEAD;
	case HTTP_POST:		return HTTP_M_POST;
	case HTTP_PUT:		return HTTP_M_PUT;
	case HTTP_DELETE:	return HTTP_M_DELETE;
	case HTTP_PATCH:	return HTTP_M_PATCH;
	case HTTP_OPTIONS:	return HTTP_M_OPTIONS;
	default:		return HTTP_M_OTHER;
	}
}

/*
 * Build the request as one allocation (the struct, then a copy of the head
 * buffer its strings point into) so that http_request_free() is two frees.
 */
static int
http_on_message_complete(http_parser *p)
{
	struct http_reader	*r = p->data;
	struct http_request	*req;
	char			*s;
	int			 i;

	if ((req = calloc(1, sizeof(*req) + r->buf_len)) == NULL)
		return http_fail(r, 500);
	s = (char *)(req + 1);
	if (r->buf_len > 0)
		memcpy(s, r->buf, r->buf_len);
	req->method = http_method_map(p->method);
	req->method_name = http_method_str((enum http_method)p->method);
	req->target = s + r->url;
	req->path = s + r->path;
	req->query = r->query == SIZE_MAX ? NULL : s + r->query;
	for (i = 0; i < r->nhdr; i++) {
		req->headers[i].name = s + r->hdr[i].name;
		req->headers[i].value = s + r->hdr[i].value;
	}
	req->nheaders = r->nhdr;
	if (r->body != NULL) {
		r->body[r->body_len] = '\0';
		req->body = r->body;
		req->body_len = r->body_len;
		r->body = NULL;
		r->body_len = r->body_cap = 0;
	}
	req->keep_alive = http_should_keep_alive(p);
	req->upgrade = p->upgrade;
	req->http_minor = p->http_minor;
	r->done = req;
	r->phase = HTTP_PHASE_DONE;
	/* Stop right after this request: what follows is the next one's. */
	http_parser_pause(p, 1);
	return 0;
}

static int
http_errno_status(enum http_errno e)
{
	switch (e) {
	case HPE_HEADER_OVERFLOW:
		return 431;
	default:
		return 400;
	}
}

/*
 * The parser refused the method at data[0]. It only knows its own list, so
 * look at the token: a well-formed name it does not know ("BREW /") is 501,
 * anything else (a TLS hello, binary junk) is 400.
 */
static size_t
http_scan_method(struct http_reader *r, const char *data, size_t len)
{
	size_t i;

	for (i = 0; i < len; i++) {
		if (r->head_len >= r->max_head) {
			r->status = 431;
			break;
		}
		r->head_len++;
		if (data[i] == ' ') {
			r->status = r->method_len > 0 ? 501 : 400;
			break;
		}
		if (!http_is_tchar((unsigned char)data[i])) {
			r->status = 400;
			break;
		}
		r->method_len++;
	}
	if (r->status != 0) {
		r->phase = HTTP_PHASE_ERROR;
		return i;
	}
	return len;
}

/* 1 if the percent-encoded key[0..len) decodes to exactly name. */
static int
http_key_is(const char *key, size_t len, const char *name)
{
	size_t	i;
	int	c, hi, lo;

	for (i = 0; i < len; i++, name++) {
		c = (unsigned char)key[i];
		if (c == '+') {
			c = ' ';
		} else if (c == '%') {
			if (len - i < 3)
				return 0;
			hi = util_hexval((unsigned char)key[i + 1]);
			lo = util_hexval((unsigned char)key[i + 2]);
			if (hi < 0 || lo < 0)
				return 0;
			c = hi << 4 | lo;
			i += 2;
		}
		if (*name == '\0' || (unsigned char)*name != c)
			return 0;
	}
	return *name == '\0';
}

/* Look for name in one Cookie header value ("a=1; b=2"). */
static int
http_cookie_find(const char *v, const char *name, char *out, size_t outlen)
{
	const char	*s, *end, *eq, *vs, *ve;
	size_t		 nlen = strlen(name), len;

	for (s = v; *s != '\0'; s = *end != '\0' ? end + 1 : end) {
		while (*s == ' ' || *s == '\t')
			s++;
		end = s + strcspn(s, ";");
		if ((eq = memchr(s, '=', (size_t)(end - s))) == NULL)
			continue;
		ve = eq;
		while (ve > s && (ve[-1] == ' ' || ve[-1] == '\t'))
			ve--;
		if ((size_t)(ve - s) != nlen || memcmp(s, name, nlen) != 0)
			continue;
		vs = eq + 1;
		ve = end;
		while (vs < ve && (*vs == ' ' || *vs == '\t'))
			vs++;
		while (ve > vs && (ve[-1] == ' ' || ve[-1] == '\t'))
			ve--;
		/* RFC 6265 allows the value in double quotes. */
		if (ve - vs >= 2 && *vs == '"' && ve[-1] == '"') {
			vs++;
			ve--;
		}
		len = (size_t)(ve - vs);
		if (len >= outlen)
			return -1;
		memcpy(out, vs, len);
		out[len] = '\0';
		return 1;
	}
	return 0;
}

/*
 * IMF-fixdate (RFC 9110 5.6.7) of t, computed here: gmtime_r() is POSIX
 * (hidden by -std=c11 without feature macros) and strftime() follows the
 * locale. Proleptic Gregorian calendar, counted from 0000-03-01 so that the
 * leap day ends each year.
 */
static void
http_date(time_t t, char *buf, size_t len)
{
	static const char wdays[7][4] = {
		"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"
	};
	static const char months[12][4] = {
		"Jan", "Feb", "Mar", "Apr", "May", "Jun",
		"Jul", "Aug", "Sep", "Oct", "Nov", "Dec"
	};
	long long	secs = (long long)t, days, z, era, doe, yoe, doy, mp;
	long long	year, month, mday, wday;

	days = secs / 86400;
	secs %= 86400;
	if (secs < 0) {
		secs += 86400;
		days--;
	}
	wday = (days % 7 + 11) % 7;	/* 1970-01-01 was a Thursday */
	z = days + 719468;		/* days since 0000-03-01 */
	era = (z >= 0 ? z : z - 146096) / 146097;	/* 400-year cycles */
	doe = z - era * 146097;
	yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
	doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
	mp = (5 * doy + 2) / 153;	/* 0 is March */
	mday = doy - (153 * mp + 2) / 5 + 1;
	month = mp < 10 ? mp + 3 : mp - 9;
	year = yoe + era * 400 + (month <= 2);
	snprintf(buf, len, "%s, %02lld %s %04lld %02lld:%02lld:%02lld GMT",
	    wdays[wday], mday, months[month - 1], year, secs / 3600,
	    secs / 60 % 60, secs % 60);
}
