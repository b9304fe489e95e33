/*
 * static: serves the web client from memory. Files are read once when the
 * worker starts (a reload re-reads them); names never reach the file system
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

/* GET / serves index.html. */
void
api_static(struct conn *c, struct http_request *req,
    const struct route_match *m)
{
	struct static_files *s = c->worker->web;
	const struct static_file *f = NULL;
	const char *inm;
	char extra[256];

	for (int i = 0; i < s->n; i++)
		if (strcmp(s->files[i].name, "index.html") == 0)
			f = &s->files[i];
	if (f == NULL) {
		conn_error(c, 404, "the web client is not installed");
		return;
	}
	snprintf(extra, sizeof(extra), "ETag: %s\r\nLast-Modified: %s\r\n"
	    "Cache-Control: no-cache\r\nX-Content-Type-Options: nosniff\r\n",
	    f->etag, f->mtime);
	inm = http_header(req, "If-None-Match");
	if (inm != NULL && strcmp(inm, f->etag) == 0) {
		conn_respond(c, 304, NULL, NULL, 0, extra);
		return;
	}
	conn_respond(c, 200, f->ctype, f->data, f->len, extra);
}

static int
static_read(struct static_file *f, const char *dir, const char *name)
{
	char path[2048];
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
	snprintf(f->etag, sizeof(f->etag), "\"%llx-%zx\"",
	    (unsigned long long)st.st_mtime, f->len);
	gmtime_r(&st.st_mtime, &tm);
	strftime(f->mtime, sizeof(f->mtime), "%a, %d %b %Y %H:%M:%S GMT", &tm);
	return 0;
}
