/*
 * static: the web client's files, read once at worker start and served
 * from memory with validators (ETag, Last-Modified).
 */
#ifndef GC_STATIC_H
#define GC_STATIC_H

struct static_files;

/* Load every regular file of dir; never NULL (an empty set if unreadable,
 * with a warning). */
struct static_files *static_load(const char *dir);
void	static_free(struct static_files *s);

struct conn;
struct http_request;
/* Answer a request for path ("/app.js") if it names a loaded file (GET and
 * HEAD, with 304 for a matching validator; 405 otherwise): 1 if answered,
 * 0 if no file has that name. */
int	static_serve(struct conn *c, struct http_request *req,
	    const char *path);

#endif
