/*
 * json: reading request bodies (over jsmn; json.c is the only includer of
 * jsmn.h) and writing responses into an evbuffer with correct escaping.
 */
#ifndef GC_JSON_H
#define GC_JSON_H

#include <stddef.h>
#include <stdint.h>

struct evbuffer;

/* --- reading ------------------------------------------------------------ */

struct json_doc;	/* a parsed top-level JSON object */

enum json_get {
	JSON_OK = 0,
	JSON_MISSING = -1,	/* no such key (or null) */
	JSON_WRONG_TYPE = -2,	/* present but not the asked type */
	JSON_INVALID = -3	/* bad escape, invalid UTF-8, out of range */
};

/*
 * Parse len bytes that must hold exactly one JSON object (white space
 * around it allowed). NULL on malformed input, non-object top level, or
 * more than 1024 tokens. The doc does not point into buf after return.
 */
struct json_doc *json_parse(const char *buf, size_t len);
void	json_free(struct json_doc *doc);
/*
 * Top-level member key as a string: unescaped, valid UTF-8, no NUL.
 * *out is owned by doc. Duplicated keys: the last one wins.
 */
int	json_get_string(struct json_doc *doc, const char *key, const char **out,
	    size_t *len);
int	json_get_int(struct json_doc *doc, const char *key, int64_t *out);
/* true or false as 1 or 0. */
int	json_get_bool(struct json_doc *doc, const char *key, int *out);
/* 1 if the key is present (any type, including null). */
int	json_has(struct json_doc *doc, const char *key);

/*
 * Call fn with the raw text of each element of the top-level member key of
 * the object in buf, which must be an array (used for the hub's history
 * message, whose elements are forwarded to clients as they are). Returns
 * the number of elements, or -1 if buf is not an object with that array.
 * Only the structure is checked: the elements come from the hub.
 */
typedef void json_raw_cb(const char *elem, size_t len, void *arg);
int	json_array_each(const char *buf, size_t len, const char *key,
	    json_raw_cb *fn, void *arg);

/* --- writing ------------------------------------------------------------ */

/* Append s as a JSON string with quotes; escapes control characters, ", \,
 * and replaces invalid UTF-8 sequences by U+FFFD. */
void	json_add_string(struct evbuffer *out, const char *s, size_t len);
void	json_add_cstr(struct evbuffer *out, const char *s);
/* Append "key": (with the quotes and colon). */
void	json_add_key(struct evbuffer *out, const char *key);

#endif
