/*
 * static: serves the web client from memory. Every regular file of web_dir
 * is read once when the worker starts (a reload re-reads them) and served
 * at "/<name>", index.html also at "/". Names never reach the file system
 * at request time, so there is no path to traverse.
 */
#include "config.h"

#include <sys/stat.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "common/crypto.h"
#include "common/log.h"
#include "workers/api.h"
#include "workers/conn.h"
#include "workers/http.h"
#include "workers/router.h"
#include "workers/static.h"
#include "workers/worker.h"

#define STATIC_MAX_FILES	64
#define STATIC_MAX_SIZE		(4 * 1024 * 1024)

struct static_file {
	char	 name[128];
	char	*data;
	size_t	 len;
	char	 ctype[64];
	char	 etag[48];
	char	 mtime[40];	/* IMF-fixdate */
};

struct static_files {
	struct static_file files[STATIC_MAX_FILES];
	int	 n;
};

static const struct {
	const char *ext, *ctype;
} static_types[] = {
	{ ".html", "text/html; charset=utf-8" },
	{ ".js", "text/javascript; charset=utf-8" },
	{ ".css", "text/css; charset=utf-8" },
	{ ".png", "image/png" },
	{ ".svg", "image/svg+xml" },
	{ ".ico", "image/x-icon" },
	{ ".json", "application/json" },
	{ ".txt", "text/plain; charset=utf-8" },
};

static int	static_read(struct static_file *, const char *, const char *);
static int	static_etag_match(const char *, const char *);

struct static_files *
static_load(const char *dir)
{
	struct static_files *s;
	struct dirent *de;
	DIR *d;

	if ((s = calloc(1, sizeof(*s))) == NULL)
		fatalx("out of memory");
	if ((d = opendir(dir)) == NULL) {
		log_warn("web_dir %s: cannot open; / will answer 404", dir);
		return s;
	}
	while ((de = readdir(d)) != NULL && s->n < STATIC_MAX_FILES) {
		if (de->d_name[0] == '.' ||
		    strlen(de->d_name) >= sizeof(s->files[0].name))
			continue;
		if (static_read(&s->files[s->n], dir, de->d_name) == 0)
			s->n++;
	}
	closedir(d);
	return s;
}

void
static_free(struct static_files *s)
{
	if (s == NULL)
		return;
	for (int i = 0; i < s->n; i++)
		free(s->files[i].data);
	free(s);
}

/*
 * The security headers of every file: the client needs nothing but its own
 * origin (and WebSockets to it), so a message that slipped past escaping
 * could still not load or run anything.
 */
#define STATIC_HEADERS \
	"Cache-Control: no-cache\r\n" \
	"X-Content-Type-Options: nosniff\r\n" \
	"Referrer-Policy: same-origin\r\n" \
	"Content-Security-Policy: default-src 'self'; " \
	"connect-src 'self' ws: wss:; img-src 'self' data:; " \
	"style-src 'self'; script-src 'self'; frame-ancestors 'none'\r\n"

static const struct static_file *
static_find(const struct static_files *s, const char *name)
{
	for (int i = 0; i < s->n; i++)
		if (strcmp(s->files[i].name, name) == 0)
			return &s->files[i];
	return NULL;
}

int
static_serve(struct conn *c, struct http_request *req, const char *path)
{
	const struct static_file *f;
	const char *inm, *ims;
	char extra[512];

	/* Only "/name": names come from the table, never the file system. */
	if (path[0] != '/' || strchr(path + 1, '/') != NULL)
		return 0;
	if ((f = static_find(c->worker->web, path + 1)) == NULL)
		return 0;
	if (req->method != HTTP_M_GET && req->method != HTTP_M_HEAD) {
		conn_error_hdr(c, 405, "Allow: GET, HEAD\r\n", "method %s is "
		    "not allowed on %s; use GET, HEAD", req->method_name, path);
		return 1;
	}
	snprintf(extra, sizeof(extra), "ETag: %s\r\nLast-Modified: %s\r\n"
	    STATIC_HEADERS, f->etag, f->mtime);
	/* RFC 9110 13.1.3: If-None-Match wins over If-Modified-Since. */
	inm = http_header(req, "If-None-Match");
	ims = http_header(req, "If-Modified-Since");
	if ((inm != NULL && static_etag_match(inm, f->etag)) ||
	    (inm == NULL && ims != NULL && strcmp(ims, f->mtime) == 0)) {
		conn_respond(c, 304, NULL, NULL, 0, extra);
		return 1;
	}
	conn_respond(c, 200, f->ctype, f->data, f->len, extra);
	return 1;
}

/* GET / is index.html. */
void
api_static(struct conn *c, struct http_request *req,
    const struct route_match *m)
{
	(void)m;
	if (!static_serve(c, req, "/index.html"))
		conn_error(c, 404, "the web client is not installed");
}

/* Does an If-None-Match list ("a", W/"b", or *) name etag? */
static int
static_etag_match(const char *list, const char *etag)
{
	size_t elen = strlen(etag);
	const char *p = list;

	while (*p != '\0') {
		while (*p == ' ' || *p == '\t' || *p == ',')
			p++;
		if (*p == '*')
			return 1;
		if (strncmp(p, "W/", 2) == 0)
			p += 2;
		if (strncmp(p, etag, elen) == 0 &&
		    (p[elen] == '\0' || p[elen] == ',' || p[elen] == ' ' ||
		    p[elen] == '\t'))
			return 1;
		while (*p != '\0' && *p != ',')
			p++;
	}
	return 0;
}

static int
static_read(struct static_file *f, const char *dir, const char *name)
{
	char path[2048], hex[65];
	struct stat st;
	struct tm tm;
	const char *dot;
	ssize_t n;
	size_t got = 0;
	int fd;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) == -1)
		return -1;
	if (fstat(fd, &st) == -1 || !S_ISREG(st.st_mode) ||
	    st.st_size > STATIC_MAX_SIZE ||
	    (f->data = malloc((size_t)st.st_size + 1)) == NULL) {
		close(fd);
		return -1;
	}
	while (got < (size_t)st.st_size) {
		n = read(fd, f->data + got, (size_t)st.st_size - got);
		if (n <= 0)
			break;
		got += (size_t)n;
	}
	close(fd);
	f->len = got;
	snprintf(f->name, sizeof(f->name), "%s", name);
	snprintf(f->ctype, sizeof(f->ctype), "application/octet-stream");
	if ((dot = strrchr(name, '.')) != NULL)
		for (size_t i = 0; i < sizeof(static_types) /
		    sizeof(static_types[0]); i++)
			if (strcasecmp(dot, static_types[i].ext) == 0)
				snprintf(f->ctype, sizeof(f->ctype), "%s",
				    static_types[i].ctype);
	/* From the content, so every host of a cluster gives the same. */
	crypto_sha256_hex(f->data, f->len, hex);
	snprintf(f->etag, sizeof(f->etag), "\"%.16s\"", hex);
	gmtime_r(&st.st_mtime, &tm);
	strftime(f->mtime, sizeof(f->mtime), "%a, %d %b %Y %H:%M:%S GMT", &tm);
	return 0;
}
