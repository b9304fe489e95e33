/*
 * json: request bodies are tokenized by jsmn (this is its only includer),
 * then checked here against the RFC 8259 grammar jsmn does not enforce, and
 * their top-level members decoded into one allocation the doc owns.
 * Responses are written straight into an evbuffer, escaped for JSON and JS.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

/*
 * STRICT: only numbers, true, false and null are primitives, and never
 * keys. PARENT_LINKS: closing brackets are matched in O(depth), and
 * top-level members are the tokens whose parent is the root.
 */
#define JSMN_STATIC
#define JSMN_STRICT
#define JSMN_PARENT_LINKS
#include <jsmn.h>

#include "common/json.h"
#include "common/utf8.h"
#include "common/util.h"

#define JSON_MAX_TOKENS	1024
/* jsmn keeps offsets in int. */
#define JSON_MAX_LEN	((size_t)INT_MAX - 1)

/*
 * Reading: what the doc answers is decided at parse time.
 *
 * json_parse() returns NULL for anything that is not a JSON text (RFC
 * 8259): bad structure, trailing bytes, a number or literal outside the
 * grammar, a malformed escape, a raw control character or invalid UTF-8
 * inside any string, nested ones included. What is valid JSON but cannot
 * become a C string of valid UTF-8 -- a \u0000 or an unpaired surrogate
 * escape -- makes that value JSON_INVALID, or the whole doc NULL when it is
 * in a top-level key (such a member could never be asked for by name).
 */
enum json_type {
	JSON_T_STRING,
	JSON_T_NUMBER,
	JSON_T_BOOL,
	JSON_T_NULL,
	JSON_T_OBJECT,
	JSON_T_ARRAY
};

struct json_member {
	const char	*key;	/* decoded, NUL-terminated, in the arena */
	size_t		 keylen;
	enum json_type	 type;
	int		 status;	/* JSON_OK, or why it is unusable */
	const char	*str;	/* JSON_T_STRING: decoded, in the arena */
	size_t		 len;
	int64_t		 num;	/* JSON_T_NUMBER that is an int64; a
				 * JSON_T_BOOL: 1 true, 0 false */
};

struct json_doc {
	size_t			 n;
	struct json_member	 m[];	/* then the arena of decoded strings */
};

/* A cursor over the tokens and the text for the grammar check. */
struct json_walk {
	const char	*buf;
	size_t		 len;
	const jsmntok_t	*tok;
	int		 ntok;
	int		 next;	/* next token to account for */
	size_t		 pos;	/* next byte to account for */
};

static int	json_walk_value(struct json_walk *w);
static int	json_walk_token(struct json_walk *w, int is_key);
static void	json_walk_space(struct json_walk *w);
static int	json_walk_char(struct json_walk *w, char c);
static int	json_check_string(const char *s, size_t len);
static int	json_check_primitive(const char *s, size_t len);
static size_t	json_check_number(const char *s, size_t len, int *integer);
static int	json_digit(const char *s, size_t len, size_t i);
static int	json_hex4(const char *s);
static int	json_decode(const char *s, size_t len, char *out,
		    size_t *outlen);
static void	json_member_value(struct json_member *m, const char *s,
		    size_t len, jsmntype_t type, char **arena);
static int	json_int64(const char *s, size_t len, int64_t *out);
static const struct json_member *json_find(const struct json_doc *doc,
		    const char *key);
static size_t	json_utf8_put(char *out, uint32_t cp);

/* --- reading ------------------------------------------------------------ */

struct json_doc *
json_parse(const char *buf, size_t len)
{
	struct json_walk w;
	struct json_doc *doc = NULL;
	struct json_member *m;
	jsmntok_t *tok = NULL;
	jsmn_parser parser;
	char *arena;
	size_t nmemb;
	int i, n;

	/* jsmn stops silently at a NUL byte; none is valid JSON anyway. */
	if (len == 0 || len > JSON_MAX_LEN || memchr(buf, '\0', len) != NULL)
		goto fail;
	if ((tok = malloc(JSON_MAX_TOKENS * sizeof(*tok))) == NULL)
		goto fail;
	jsmn_init(&parser);
	n = jsmn_parse(&parser, buf, len, tok, JSON_MAX_TOKENS);
	if (n < 1 || tok[0].type != JSMN_OBJECT)
		goto fail;

	/*
	 * jsmn's tokens are a shape, not a proof: it accepts missing or
	 * doubled commas and colons, several top-level values and primitives
	 * like "01" or "tru". Account for every token and every byte.
	 */
	memset(&w, 0, sizeof(w));
	w.buf = buf;
	w.len = len;
	w.tok = tok;
	w.ntok = n;
	json_walk_space(&w);
	if (json_walk_value(&w) == -1)
		goto fail;
	json_walk_space(&w);
	if (w.pos != len || w.next != n)
		goto fail;

	/* Decoded strings are never longer than their source, plus a NUL
	 * for each key and value. */
	nmemb = (size_t)tok[0].size;
	doc = malloc(sizeof(*doc) + nmemb * sizeof(doc->m[0]) + len +
	    2 * nmemb);
	if (doc == NULL)
		goto fail;
	doc->n = 0;
	arena = (char *)&doc->m[nmemb];
	for (i = 1; i < n; i++) {
		if (tok[i].parent != 0)
			continue;	/* not a top-level key */
		if (doc->n == nmemb || i + 1 == n)
			goto fail;	/* cannot be after the walk */
		m = &doc->m[doc->n++];
		m->key = arena;
		if (json_decode(buf + tok[i].start,
		    (size_t)(tok[i].end - tok[i].start), arena,
		    &m->keylen) == -1)
			goto fail;
		arena += m->keylen + 1;
		json_member_value(m, buf + tok[i + 1].start,
		    (size_t)(tok[i + 1].end - tok[i + 1].start),
		    tok[i + 1].type, &arena);
	}
	free(tok);
	return doc;
fail:
	free(doc);
	free(tok);
	return NULL;
}

void
json_free(struct json_doc *doc)
{
	free(doc);
}

int
json_get_string(struct json_doc *doc, const char *key, const char **out,
    size_t *len)
{
	const struct json_member *m;

	if ((m = json_find(doc, key)) == NULL || m->type == JSON_T_NULL)
		return JSON_MISSING;
	if (m->type != JSON_T_STRING)
		return JSON_WRONG_TYPE;
	if (m->status != JSON_OK)
		return m->status;
	*out = m->str;
	if (len != NULL)
		*len = m->len;
	return JSON_OK;
}

int
json_get_int(struct json_doc *doc, const char *key, int64_t *out)
{
	const struct json_member *m;

	if ((m = json_find(doc, key)) == NULL || m->type == JSON_T_NULL)
		return JSON_MISSING;
	if (m->type != JSON_T_NUMBER)
		return JSON_WRONG_TYPE;
	if (m->status != JSON_OK)
		return m->status;
	*out = m->num;
	return JSON_OK;
}

int
json_get_bool(struct json_doc *doc, const char *key, int *out)
{
	const struct json_member *m;

	if ((m = json_find(doc, key)) == NULL || m->type == JSON_T_NULL)
		return JSON_MISSING;
	if (m->type != JSON_T_BOOL)
		return JSON_WRONG_TYPE;
	*out = m->num != 0;
	return JSON_OK;
}

int
json_has(struct json_doc *doc, const char *key)
{
	return json_find(doc, key) != NULL;
}

/* --- writing ------------------------------------------------------------ */

/* The index of the token after t[i] and everything inside it. */
static int
json_skip(const jsmntok_t *t, int n, int i)
{
	int k = i + 1;

	while (k < n && t[k].start < t[i].end)
		k++;
	return k;
}

int
json_array_each(const char *buf, size_t len, const char *key,
    json_raw_cb *fn, void *arg)
{
	jsmn_parser p;
	jsmntok_t *t = NULL;
	size_t klen = strlen(key);
	int n, i, j, e, count = -1;

	if (len > INT_MAX)
		return -1;
	jsmn_init(&p);
	if ((n = jsmn_parse(&p, buf, len, NULL, 0)) < 1 || n > 1000000 ||
	    (t = calloc((size_t)n, sizeof(*t))) == NULL)
		goto done;
	jsmn_init(&p);
	if (jsmn_parse(&p, buf, len, t, (unsigned int)n) != n ||
	    t[0].type != JSMN_OBJECT)
		goto done;
	for (i = 1; i < n; i = json_skip(t, n, i + 1)) {
		if (i + 1 >= n)
			break;
		if (t[i].type != JSMN_STRING ||
		    (size_t)(t[i].end - t[i].start) != klen ||
		    memcmp(buf + t[i].start, key, klen) != 0)
			continue;
		if (t[i + 1].type != JSMN_ARRAY)
			break;
		count = 0;
		for (j = i + 2, e = 0; e < t[i + 1].size && j < n; e++) {
			fn(buf + t[j].start, (size_t)(t[j].end - t[j].start),
			    arg);
			count++;
			j = json_skip(t, n, j);
		}
		break;
	}
done:
	free(t);
	return count;
}

void
json_add_string(struct evbuffer *out, const char *s, size_t len)
{
	static const char hex[] = "0123456789abcdef";
	const unsigned char *p = (const unsigned char *)s;
	char buf[256];
	size_t i = 0, n = 0, start;
	unsigned state;
	unsigned char c;

	/* Staged in buf so a long string costs a few evbuffer_add calls;
	 * each turn of the loop adds at most 6 bytes. */
	buf[n++] = '"';
	while (i < len) {
		if (n > sizeof(buf) - 8) {
			(void)evbuffer_add(out, buf, n);
			n = 0;
		}
		c = p[i];
		if (c >= 0x80) {
			/*
			 * One U+FFFD per maximal ill-formed subpart (Unicode
			 * 3.9, as browsers decode): the bytes that could still
			 * have begun a valid sequence, or one stray byte.
			 * U+2028 and U+2029 end a line in JS before ES2019.
			 */
			start = i;
			state = 0;
			while (i < len && utf8_feed(&state, s + i, 1) == 0) {
				i++;
				if (state == 0)
					break;
			}
			if (state != 0 || i == start) {
				if (i == start)
					i++;
				memcpy(buf + n, "\xef\xbf\xbd", 3);
				n += 3;
			} else if (i - start == 3 && c == 0xe2 &&
			    p[start + 1] == 0x80 &&
			    (p[start + 2] == 0xa8 || p[start + 2] == 0xa9)) {
				memcpy(buf + n, p[start + 2] == 0xa8 ?
				    "\\u2028" : "\\u2029", 6);
				n += 6;
			} else {
				memcpy(buf + n, p + start, i - start);
				n += i - start;
			}
			continue;
		}
		i++;
		switch (c) {
		case '"':
		case '\\':
			buf[n++] = '\\';
			buf[n++] = (char)c;
			break;
		case '\b':
			buf[n++] = '\\';
			buf[n++] = 'b';
			break;
		case '\f':
			buf[n++] = '\\';
			buf[n++] = 'f';
			break;
		case '\n':
			buf[n++] = '\\';
			buf[n++] = 'n';
			break;
		case '\r':
			buf[n++] = '\\';
			buf[n++] = 'r';
			break;
		case '\t':
			buf[n++] = '\\';
			buf[n++] = 't';
			break;
		default:
			if (c < 0x20) {
				memcpy(buf + n, "\\u00", 4);
				buf[n + 4] = hex[c >> 4];
				buf[n + 5] = hex[c & 0xf];
				n += 6;
			} else
				buf[n++] = (char)c;
		}
	}
	buf[n++] = '"';
	(void)evbuffer_add(out, buf, n);
}

void
json_add_cstr(struct evbuffer *out, const char *s)
{
	json_add_string(out, s, strlen(s));
}

void
json_add_key(struct evbuffer *out, const char *key)
{
	json_add_string(out, key, strlen(key));
	(void)evbuffer_add(out, ":", 1);
}

/* --- grammar check ------------------------------------------------------ */

/*
 * Account for the next token, which must begin at w->pos (white space
 * already skipped), and for everything it contains. Recursion depth is
 * bounded by JSON_MAX_TOKENS, since each level is at least one token.
 */
static int
json_walk_value(struct json_walk *w)
{
	const jsmntok_t *t;
	int i, size;
	char close;

	if (w->next >= w->ntok)
		return -1;
	t = &w->tok[w->next];
	if (t->type != JSMN_OBJECT && t->type != JSMN_ARRAY)
		return json_walk_token(w, 0);
	if ((size_t)t->start != w->pos || t->end <= t->start ||
	    (size_t)t->end > w->len)
		return -1;
	w->next++;
	w->pos++;
	size = t->size;
	close = t->type == JSMN_OBJECT ? '}' : ']';
	for (i = 0; i < size; i++) {
		json_walk_space(w);
		if (i > 0) {
			if (json_walk_char(w, ',') == -1)
				return -1;
			json_walk_space(w);
		}
		if (t->type == JSMN_OBJECT) {
			if (json_walk_token(w, 1) == -1)
				return -1;
			json_walk_space(w);
			if (json_walk_char(w, ':') == -1)
				return -1;
			json_walk_space(w);
		}
		if (json_walk_value(w) == -1)
			return -1;
	}
	json_walk_space(w);
	if (json_walk_char(w, close) == -1 || w->pos != (size_t)t->end)
		return -1;
	return 0;
}

/* A string or primitive value, or a key: a string owning its value. */
static int
json_walk_token(struct json_walk *w, int is_key)
{
	const jsmntok_t *t;
	size_t start, end;

	if (w->next >= w->ntok)
		return -1;
	t = &w->tok[w->next];
	if (t->start < 0 || t->end < t->start || (size_t)t->end > w->len ||
	    t->size != (is_key ? 1 : 0))
		return -1;
	start = (size_t)t->start;
	end = (size_t)t->end;
	if (t->type == JSMN_STRING) {
		/* jsmn's range excludes the quotes. */
		if (start == 0 || start - 1 != w->pos || end >= w->len ||
		    w->buf[end] != '"' ||
		    json_check_string(w->buf + start, end - start) == -1)
			return -1;
		end++;
	} else if (t->type == JSMN_PRIMITIVE && !is_key) {
		if (start != w->pos ||
		    json_check_primitive(w->buf + start, end - start) == -1)
			return -1;
	} else
		return -1;
	w->next++;
	w->pos = end;
	return 0;
}

static void
json_walk_space(struct json_walk *w)
{
	while (w->pos < w->len && (w->buf[w->pos] == ' ' ||
	    w->buf[w->pos] == '\t' || w->buf[w->pos] == '\n' ||
	    w->buf[w->pos] == '\r'))
		w->pos++;
}

static int
json_walk_char(struct json_walk *w, char c)
{
	if (w->pos >= w->len || w->buf[w->pos] != c)
		return -1;
	w->pos++;
	return 0;
}

/* The inside of a string: escapes well formed, no raw control character,
 * valid UTF-8. */
static int
json_check_string(const char *s, size_t len)
{
	size_t i;

	for (i = 0; i < len; i++) {
		if ((unsigned char)s[i] < 0x20 || s[i] == '"')
			return -1;
		if (s[i] != '\\')
			continue;
		if (++i == len)
			return -1;
		switch (s[i]) {
		case '"':
		case '\\':
		case '/':
		case 'b':
		case 'f':
		case 'n':
		case 'r':
		case 't':
			break;
		case 'u':
			if (len - i < 5 || json_hex4(s + i + 1) == -1)
				return -1;
			i += 4;
			break;
		default:
			return -1;
		}
	}
	return utf8_valid(s, len) ? 0 : -1;
}

static int
json_check_primitive(const char *s, size_t len)
{
	int integer;

	if ((len == 4 && memcmp(s, "true", 4) == 0) ||
	    (len == 5 && memcmp(s, "false", 5) == 0) ||
	    (len == 4 && memcmp(s, "null", 4) == 0))
		return 0;
	return len > 0 && json_check_number(s, len, &integer) == len ? 0 : -1;
}

/*
 * Length of the RFC 8259 number at the start of s (0 if none):
 * -? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?
 * *integer is set when it has neither fraction nor exponent.
 */
static size_t
json_check_number(const char *s, size_t len, int *integer)
{
	size_t i = 0;

	*integer = 1;
	if (i < len && s[i] == '-')
		i++;
	if (i < len && s[i] == '0')
		i++;
	else if (json_digit(s, len, i))
		while (json_digit(s, len, i))
			i++;
	else
		return 0;
	if (i < len && s[i] == '.') {
		*integer = 0;
		i++;
		if (!json_digit(s, len, i))
			return 0;
		while (json_digit(s, len, i))
			i++;
	}
	if (i < len && (s[i] == 'e' || s[i] == 'E')) {
		*integer = 0;
		i++;
		if (i < len && (s[i] == '+' || s[i] == '-'))
			i++;
		if (!json_digit(s, len, i))
			return 0;
		while (json_digit(s, len, i))
			i++;
	}
	return i;
}

static int
json_digit(const char *s, size_t len, size_t i)
{
	return i < len && s[i] >= '0' && s[i] <= '9';
}

static int
json_hex4(const char *s)
{
	int i, v = 0, d;

	for (i = 0; i < 4; i++) {
		if ((d = util_hexval((unsigned char)s[i])) == -1)
			return -1;
		v = v << 4 | d;
	}
	return v;
}

/* --- decoding ----------------------------------------------------------- */

/*
 * Unescape a string that passed json_check_string() into out (room for
 * len + 1 bytes), NUL-terminated. -1 on a \u0000 or an unpaired surrogate:
 * the result would not be a C string of valid UTF-8.
 */
static int
json_decode(const char *s, size_t len, char *out, size_t *outlen)
{
	size_t i, n = 0;
	uint32_t cp, lo;

	for (i = 0; i < len; i++) {
		if (s[i] != '\\') {
			out[n++] = s[i];
			continue;
		}
		switch (s[++i]) {
		case 'b':
			out[n++] = '\b';
			break;
		case 'f':
			out[n++] = '\f';
			break;
		case 'n':
			out[n++] = '\n';
			break;
		case 'r':
			out[n++] = '\r';
			break;
		case 't':
			out[n++] = '\t';
			break;
		case 'u':
			cp = (uint32_t)json_hex4(s + i + 1);
			i += 4;
			if (cp == 0 || (cp >= 0xdc00 && cp <= 0xdfff))
				return -1;
			if (cp >= 0xd800 && cp <= 0xdbff) {
				if (len - i < 7 || s[i + 1] != '\\' ||
				    s[i + 2] != 'u')
					return -1;
				lo = (uint32_t)json_hex4(s + i + 3);
				if (lo < 0xdc00 || lo > 0xdfff)
					return -1;
				cp = 0x10000 + ((cp - 0xd800) << 10) +
				    (lo - 0xdc00);
				i += 6;
			}
			n += json_utf8_put(out + n, cp);
			break;
		default:	/* " \ / */
			out[n++] = s[i];
		}
	}
	out[n] = '\0';
	*outlen = n;
	return 0;
}

/* Fill in m's value from its token; strings are decoded into *arena. */
static void
json_member_value(struct json_member *m, const char *s, size_t len,
    jsmntype_t type, char **arena)
{
	int integer;

	m->status = JSON_OK;
	m->str = NULL;
	m->len = 0;
	m->num = 0;
	switch (type) {
	case JSMN_OBJECT:
		m->type = JSON_T_OBJECT;
		return;
	case JSMN_ARRAY:
		m->type = JSON_T_ARRAY;
		return;
	case JSMN_STRING:
		m->type = JSON_T_STRING;
		m->str = *arena;
		if (json_decode(s, len, *arena, &m->len) == -1) {
			m->status = JSON_INVALID;
			m->str = NULL;
			m->len = 0;
			return;
		}
		*arena += m->len + 1;
		return;
	default:
		break;
	}
	if (s[0] == 't' || s[0] == 'f') {
		m->type = JSON_T_BOOL;
		m->num = s[0] == 't';
		return;
	}
	if (s[0] == 'n') {
		m->type = JSON_T_NULL;
		return;
	}
	m->type = JSON_T_NUMBER;
	(void)json_check_number(s, len, &integer);
	if (!integer)
		m->status = JSON_WRONG_TYPE;	/* 1.0 and 1e3 are not ints */
	else if (json_int64(s, len, &m->num) == -1)
		m->status = JSON_INVALID;
}

/* A grammatical integer into int64; -1 if out of range. */
static int
json_int64(const char *s, size_t len, int64_t *out)
{
	int64_t v = 0;
	size_t i = 0;
	int d, neg = 0;

	if (s[0] == '-') {
		neg = 1;
		i++;
	}
	/* Accumulate negatively: INT64_MIN has no positive twin. */
	for (; i < len; i++) {
		d = s[i] - '0';
		if (v < (INT64_MIN + d) / 10)
			return -1;
		v = v * 10 - d;
	}
	if (!neg) {
		if (v == INT64_MIN)
			return -1;
		v = -v;
	}
	*out = v;
	return 0;
}

/* The last member named key (duplicates: the last one wins). */
static const struct json_member *
json_find(const struct json_doc *doc, const char *key)
{
	size_t i, klen = strlen(key);

	for (i = doc->n; i > 0; i--)
		if (doc->m[i - 1].keylen == klen &&
		    memcmp(doc->m[i - 1].key, key, klen) == 0)
			return &doc->m[i - 1];
	return NULL;
}

static size_t
json_utf8_put(char *out, uint32_t cp)
{
	unsigned char *p = (unsigned char *)out;

	if (cp < 0x80) {
		p[0] = (unsigned char)cp;
		return 1;
	}
	if (cp < 0x800) {
		p[0] = (unsigned char)(0xc0 | cp >> 6);
		p[1] = (unsigned char)(0x80 | (cp & 0x3f));
		return 2;
	}
	if (cp < 0x10000) {
		p[0] = (unsigned char)(0xe0 | cp >> 12);
		p[1] = (unsigned char)(0x80 | (cp >> 6 & 0x3f));
		p[2] = (unsigned char)(0x80 | (cp & 0x3f));
		return 3;
	}
	p[0] = (unsigned char)(0xf0 | cp >> 18);
	p[1] = (unsigned char)(0x80 | (cp >> 12 & 0x3f));
	p[2] = (unsigned char)(0x80 | (cp >> 6 & 0x3f));
	p[3] = (unsigned char)(0x80 | (cp & 0x3f));
	return 4;
}
