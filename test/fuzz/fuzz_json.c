/*
 * fuzz_json: libFuzzer target for common/json.c. Any bytes may be handed
 * to json_parse; every string it yields and the raw input itself are
 * written back with json_add_string, and the output must be valid UTF-8
 * that reads back as a JSON string (identical when the source was valid).
 *
 *	clang -g -O1 -fsanitize=fuzzer,address,undefined -I. \
 *	    -o fuzz_json test/fuzz/fuzz_json.c common/json.c common/utf8.c \
 *	    -levent_core
 *	./fuzz_json test/fuzz/seeds/json
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "common/json.h"
#include "common/utf8.h"

int	LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void	fuzz_check(int cond);
static void	fuzz_write_back(struct evbuffer *b, const char *s, size_t len);

/* Short names so the fuzzer reaches them; the rest are request fields. */
static const char *const fuzz_keys[] = {
	"", "a", "b", "k", "id", "name", "body", "email", "password", "limit",
};

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct evbuffer *b;
	struct json_doc *doc;
	const char *s;
	size_t i, len;
	int64_t v;
	int rc, has, bv;

	if ((b = evbuffer_new()) == NULL)
		return 0;
	/* Arbitrary bytes, valid or not, must be written as valid JSON. */
	fuzz_write_back(b, (const char *)data, size);

	if ((doc = json_parse((const char *)data, size)) != NULL) {
		for (i = 0; i < sizeof(fuzz_keys) / sizeof(fuzz_keys[0]); i++) {
			has = json_has(doc, fuzz_keys[i]);
			fuzz_check(has == 0 || has == 1);
			s = NULL;
			len = 0;
			rc = json_get_string(doc, fuzz_keys[i], &s, &len);
			fuzz_check(rc == JSON_OK || rc == JSON_MISSING ||
			    rc == JSON_WRONG_TYPE || rc == JSON_INVALID);
			fuzz_check(has || rc == JSON_MISSING);
			if (rc == JSON_OK) {
				/* A C string of valid UTF-8, no inner NUL. */
				fuzz_check(s != NULL && s[len] == '\0' &&
				    strlen(s) == len && utf8_valid(s, len));
				fuzz_write_back(b, s, len);
			}
			rc = json_get_int(doc, fuzz_keys[i], &v);
			fuzz_check(rc == JSON_OK || rc == JSON_MISSING ||
			    rc == JSON_WRONG_TYPE || rc == JSON_INVALID);
			fuzz_check(has || rc == JSON_MISSING);
			bv = -1;
			rc = json_get_bool(doc, fuzz_keys[i], &bv);
			fuzz_check(rc == JSON_MISSING || rc == JSON_WRONG_TYPE ||
			    (rc == JSON_OK && (bv == 0 || bv == 1)));
			fuzz_check(has || rc == JSON_MISSING);
		}
		json_free(doc);
	}
	evbuffer_free(b);
	return 0;
}

/* Not assert(): the check must survive -DNDEBUG. */
static void
fuzz_check(int cond)
{
	if (!cond)
		abort();
}

/*
 * Write s as {"k":<string>}; the text must be valid UTF-8 and parse, and
 * "k" must read back as valid UTF-8 -- the very bytes of s when s was
 * valid UTF-8 without NUL (NUL is written as \u0000, which reads back as
 * JSON_INVALID by contract).
 */
static void
fuzz_write_back(struct evbuffer *b, const char *s, size_t len)
{
	struct json_doc *doc;
	const char *back = NULL;
	size_t n, backlen = 0;
	char *w;
	int rc, exact, nul;

	evbuffer_drain(b, evbuffer_get_length(b));
	evbuffer_add(b, "{", 1);
	json_add_key(b, "k");
	json_add_string(b, s, len);
	evbuffer_add(b, "}", 1);
	n = evbuffer_get_length(b);
	w = (char *)evbuffer_pullup(b, -1);
	fuzz_check(w != NULL && utf8_valid(w, n));
	doc = json_parse(w, n);
	fuzz_check(doc != NULL);
	rc = json_get_string(doc, "k", &back, &backlen);
	nul = len > 0 && memchr(s, '\0', len) != NULL;
	exact = !nul && utf8_valid(s, len);
	if (nul)
		fuzz_check(rc == JSON_INVALID);
	else
		fuzz_check(rc == JSON_OK && utf8_valid(back, backlen));
	if (exact)
		fuzz_check(backlen == len && memcmp(back, s, len) == 0);
	json_free(doc);
}
