/*
 * test_json: what json_parse accepts and refuses (RFC 8259, plus the
 * grammar jsmn leaves unchecked), top-level lookups by type, string
 * unescaping, integer bounds, and the writer's escaping and round trip.
 */
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "common/json.h"
#include "common/utf8.h"
#include "test/unit/tap.h"

#define S(x)	x, sizeof(x) - 1
#define NELEM(a)	(sizeof(a) / sizeof((a)[0]))

/* --- json_parse: accepted or refused ------------------------------------ */

struct pcase {
	const char	*name;
	const char	*in;
	size_t		 len;
	int		 parses;
};

static const struct pcase pcases[] = {
	{ "empty object", S("{}"), 1 },
	{ "empty object with space", S("{ \t\r\n}"), 1 },
	{ "white space around", S(" \r\n\t{\"a\":1}\n "), 1 },
	{ "every value type", S("{\"s\":\"x\",\"i\":-12,\"f\":1.5e-3,"
	    "\"t\":true,\"F\":false,\"n\":null,\"o\":{},\"a\":[]}"), 1 },
	{ "deeply nested", S("{\"a\":[[[[{\"b\":[{\"c\":[]}]}]]]]}"), 1 },
	{ "numbers of every shape", S("{\"a\":[0,-0,1,-1,10,0.5,-0.5,1e5,"
	    "1E5,1e+5,1e-5,0e0,-0.0e-0,123.456E+789]}"), 1 },
	{ "DEL raw in string", S("{\"a\":\"\x7f\"}"), 1 },
	{ "raw UTF-8 in key and value",
	    S("{\"caf\xc3\xa9\":\"\xf0\x9f\x98\x80\"}"), 1 },
	{ "\\u0000 in a nested string is fine", S("{\"a\":[\"\\u0000\"]}"), 1 },
	{ "lone surrogate in a nested string is fine",
	    S("{\"a\":{\"b\":\"\\ud800\"}}"), 1 },

	{ "empty input", S(""), 0 },
	{ "only space", S("  "), 0 },
	{ "top-level array", S("[]"), 0 },
	{ "top-level array of object", S("[{}]"), 0 },
	{ "top-level number", S("1"), 0 },
	{ "top-level string", S("\"s\""), 0 },
	{ "top-level null", S("null"), 0 },
	{ "unclosed object", S("{"), 0 },
	{ "unclosed nested", S("{\"a\":{}"), 0 },
	{ "closing only", S("}"), 0 },
	{ "extra closing brace", S("{}}"), 0 },
	{ "two objects", S("{}{}"), 0 },
	{ "two objects with space", S("{\"a\":1} {\"b\":2}"), 0 },
	{ "trailing word", S("{} x"), 0 },
	{ "trailing number", S("{} 1"), 0 },
	{ "trailing comma", S("{},"), 0 },
	{ "trailing NUL", S("{}\0"), 0 },
	{ "NUL then garbage", S("{}\0garbage"), 0 },
	{ "byte order mark", S("\xef\xbb\xbf{}"), 0 },
	{ "vertical tab is not JSON space", S("\v{}"), 0 },
	{ "form feed is not JSON space", S("{}\f"), 0 },
	{ "trailing comma in object", S("{\"a\":1,}"), 0 },
	{ "lone comma", S("{,}"), 0 },
	{ "leading comma", S("{,\"a\":1}"), 0 },
	{ "double comma", S("{\"a\":1,,\"b\":2}"), 0 },
	{ "missing comma", S("{\"a\":1 \"b\":2}"), 0 },
	{ "missing colon", S("{\"a\" 1}"), 0 },
	{ "string after key, no colon", S("{\"a\" \"b\"}"), 0 },
	{ "comma instead of colon", S("{\"a\",\"b\"}"), 0 },
	{ "double colon", S("{\"a\"::1}"), 0 },
	{ "chained colons", S("{\"a\":1:2}"), 0 },
	{ "chained string colons", S("{\"a\":\"b\":\"c\"}"), 0 },
	{ "key without value", S("{\"a\"}"), 0 },
	{ "key and colon without value", S("{\"a\":}"), 0 },
	{ "value without key", S("{:1}"), 0 },
	{ "number key", S("{1:2}"), 0 },
	{ "literal key", S("{true:1}"), 0 },
	{ "object key", S("{{}:1}"), 0 },
	{ "single quotes", S("{'a':1}"), 0 },
	{ "unquoted key", S("{a:1}"), 0 },
	{ "two values", S("{\"a\":1 2}"), 0 },
	{ "array trailing comma", S("{\"a\":[1,]}"), 0 },
	{ "array leading comma", S("{\"a\":[,1]}"), 0 },
	{ "array double comma", S("{\"a\":[1,,2]}"), 0 },
	{ "array missing comma", S("{\"a\":[1 2]}"), 0 },
	{ "array with colon", S("{\"a\":[1:2]}"), 0 },
	{ "mismatched brackets", S("{\"a\":[}]"), 0 },
	{ "mismatched brackets 2", S("{\"a\":{]}"), 0 },
	{ "stray closing bracket", S("{\"a\":]}"), 0 },
	{ "nested key without value", S("{\"a\":{\"b\"}}"), 0 },
	{ "nested key and colon", S("{\"a\":{\"b\":}}"), 0 },
	{ "leading zero", S("{\"a\":01}"), 0 },
	{ "negative leading zero", S("{\"a\":-01}"), 0 },
	{ "lone minus", S("{\"a\":-}"), 0 },
	{ "plus sign", S("{\"a\":+1}"), 0 },
	{ "dot without fraction", S("{\"a\":1.}"), 0 },
	{ "fraction without integer", S("{\"a\":.5}"), 0 },
	{ "minus dot", S("{\"a\":-.5}"), 0 },
	{ "exponent without digits", S("{\"a\":1e}"), 0 },
	{ "exponent sign without digits", S("{\"a\":1e+}"), 0 },
	{ "two dots", S("{\"a\":1.5.3}"), 0 },
	{ "hex", S("{\"a\":0x10}"), 0 },
	{ "NaN", S("{\"a\":NaN}"), 0 },
	{ "Infinity", S("{\"a\":Infinity}"), 0 },
	{ "-Infinity", S("{\"a\":-Infinity}"), 0 },
	{ "truncated true", S("{\"a\":tru}"), 0 },
	{ "true with tail", S("{\"a\":truee}"), 0 },
	{ "truncated null", S("{\"a\":nul}"), 0 },
	{ "capital True", S("{\"a\":True}"), 0 },
	{ "false with quote tail", S("{\"a\":false\"}"), 0 },
	{ "number in nested array", S("{\"a\":[1,-]}"), 0 },
	{ "unclosed string", S("{\"a\":\"b}"), 0 },
	{ "unknown escape", S("{\"a\":\"x\\q\"}"), 0 },
	{ "escaped single quote", S("{\"a\":\"\\'\"}"), 0 },
	{ "escaped x", S("{\"a\":\"\\x41\"}"), 0 },
	{ "short \\u", S("{\"a\":\"\\u12\"}"), 0 },
	{ "bad hex in \\u", S("{\"a\":\"\\u12G4\"}"), 0 },
	{ "backslash at end of string", S("{\"a\":\"\\\"}"), 0 },
	{ "raw newline in string", S("{\"a\":\"x\ny\"}"), 0 },
	{ "raw tab in string", S("{\"a\":\"x\ty\"}"), 0 },
	{ "raw 0x1f in key", S("{\"\x1f\":1}"), 0 },
	{ "raw control in nested string", S("{\"a\":[\"\x01\"]}"), 0 },
	{ "raw NUL in string", S("{\"a\":\"b\0c\"}"), 0 },
	{ "invalid UTF-8 in value", S("{\"a\":\"\xc3\"}"), 0 },
	{ "invalid UTF-8 in key", S("{\"\xff\":1}"), 0 },
	{ "overlong in nested string", S("{\"a\":[\"\xc0\xaf\"]}"), 0 },
	{ "surrogate bytes in string", S("{\"a\":\"\xed\xa0\x80\"}"), 0 },
	{ "UTF-8 outside string", S("{\"a\":1\xc2\xa0}"), 0 },
	{ "\\u0000 in a top-level key", S("{\"a\\u0000\":1}"), 0 },
	{ "lone surrogate in a top-level key", S("{\"\\udc00\":1}"), 0 },
	{ "comment", S("{/* c */}"), 0 },
};

static void
test_parse(void)
{
	const struct pcase *c;
	struct json_doc *doc;
	size_t i;

	for (i = 0; i < NELEM(pcases); i++) {
		c = &pcases[i];
		doc = json_parse(c->in, c->len);
		ok((doc != NULL) == c->parses, "%s: %s", c->parses ?
		    "parses" : "refused", c->name);
		json_free(doc);
	}
}

/* --- lookups ------------------------------------------------------------ */

enum op {
	OP_STR,
	OP_INT,
	OP_BOOL,
	OP_HAS
};

struct gcase {
	const char	*name;
	const char	*in;
	const char	*key;
	enum op		 op;
	int		 rc;	/* json_get_* result, or json_has() */
	const char	*str;	/* OP_STR, JSON_OK: expected bytes... */
	size_t		 len;	/* ...and length */
	int64_t		 num;	/* OP_INT, JSON_OK */
};

#define STR(name, in, key, rc, out) \
	{ name, in, key, OP_STR, rc, out, sizeof(out) - 1, 0 }
#define INT(name, in, key, rc, v) \
	{ name, in, key, OP_INT, rc, NULL, 0, v }
#define BOOL(name, in, key, rc, v) \
	{ name, in, key, OP_BOOL, rc, NULL, 0, v }
#define HAS(name, in, key, v) \
	{ name, in, key, OP_HAS, v, NULL, 0, 0 }

static const struct gcase gcases[] = {
	/* types */
	STR("plain string", "{\"a\":\"hello\"}", "a", JSON_OK, "hello"),
	STR("empty string", "{\"a\":\"\"}", "a", JSON_OK, ""),
	STR("empty key", "{\"\":\"v\"}", "", JSON_OK, "v"),
	STR("absent key", "{\"a\":\"x\"}", "b", JSON_MISSING, ""),
	STR("absent from empty object", "{}", "a", JSON_MISSING, ""),
	STR("null is missing", "{\"a\":null}", "a", JSON_MISSING, ""),
	STR("number is not a string", "{\"a\":5}", "a", JSON_WRONG_TYPE, ""),
	STR("true is not a string", "{\"a\":true}", "a", JSON_WRONG_TYPE, ""),
	STR("object is not a string", "{\"a\":{}}", "a", JSON_WRONG_TYPE, ""),
	STR("array is not a string", "{\"a\":[\"x\"]}", "a", JSON_WRONG_TYPE,
	    ""),
	STR("key is case sensitive", "{\"A\":\"x\"}", "a", JSON_MISSING, ""),
	STR("key prefix does not match", "{\"ab\":\"x\"}", "a", JSON_MISSING,
	    ""),
	STR("key does not match its prefix", "{\"a\":\"x\"}", "ab",
	    JSON_MISSING, ""),

	/* nested values are skipped, never mistaken for members */
	STR("member after nested object",
	    "{\"o\":{\"a\":\"in\",\"b\":{\"a\":\"deep\"}},\"a\":\"out\"}",
	    "a", JSON_OK, "out"),
	STR("member after nested array",
	    "{\"x\":[\"a\",\"b\",[\"a\"],{\"a\":1}],\"a\":\"out\"}",
	    "a", JSON_OK, "out"),
	STR("nested-only key is missing",
	    "{\"o\":{\"a\":\"in\"},\"l\":[{\"a\":\"x\"}]}", "a",
	    JSON_MISSING, ""),
	STR("string value equal to a key name", "{\"k\":\"a\",\"z\":\"w\"}",
	    "a", JSON_MISSING, ""),
	STR("member after deep nesting",
	    "{\"d\":[[[[{\"x\":[[{}]]}]]]],\"e\":\"after\"}", "e", JSON_OK,
	    "after"),
	INT("members on both sides of nesting",
	    "{\"a\":1,\"o\":{\"a\":2,\"b\":[3,{\"a\":4}]},\"b\":5}", "b",
	    JSON_OK, 5),
	INT("first member before nesting",
	    "{\"a\":1,\"o\":{\"a\":2,\"b\":[3,{\"a\":4}]},\"b\":5}", "a",
	    JSON_OK, 1),

	/* duplicates: the last one wins */
	INT("duplicate int", "{\"a\":1,\"a\":2}", "a", JSON_OK, 2),
	STR("duplicate string", "{\"a\":\"x\",\"b\":0,\"a\":\"y\"}", "a",
	    JSON_OK, "y"),
	STR("duplicate, last is null", "{\"a\":\"x\",\"a\":null}", "a",
	    JSON_MISSING, ""),
	INT("duplicate, last is a string", "{\"a\":1,\"a\":\"1\"}", "a",
	    JSON_WRONG_TYPE, 0),
	STR("duplicate via escaped key", "{\"a\":\"x\",\"\\u0061\":\"y\"}",
	    "a", JSON_OK, "y"),

	/* escapes */
	STR("simple escapes", "{\"a\":\"\\\"\\\\\\/\\b\\f\\n\\r\\t\"}", "a",
	    JSON_OK, "\"\\/\b\f\n\r\t"),
	STR("\\u ASCII", "{\"a\":\"\\u0041\\u007e\"}", "a", JSON_OK, "A~"),
	STR("\\u control", "{\"a\":\"\\u0001\\u001F\"}", "a", JSON_OK,
	    "\x01\x1f"),
	STR("\\u 2-byte", "{\"a\":\"\\u00e9\\u07FF\"}", "a", JSON_OK,
	    "\xc3\xa9\xdf\xbf"),
	STR("\\u 3-byte", "{\"a\":\"\\u20AC\\uffff\"}", "a", JSON_OK,
	    "\xe2\x82\xac\xef\xbf\xbf"),
	STR("surrogate pair", "{\"a\":\"\\uD83D\\uDE00\"}", "a", JSON_OK,
	    "\xf0\x9f\x98\x80"),
	STR("surrogate pair lower case", "{\"a\":\"x\\ud83d\\ude00y\"}", "a",
	    JSON_OK, "x\xf0\x9f\x98\x80y"),
	STR("first pair U+10000", "{\"a\":\"\\uD800\\uDC00\"}", "a", JSON_OK,
	    "\xf0\x90\x80\x80"),
	STR("last pair U+10FFFF", "{\"a\":\"\\uDBFF\\uDFFF\"}", "a", JSON_OK,
	    "\xf4\x8f\xbf\xbf"),
	STR("raw UTF-8 kept", "{\"a\":\"caf\xc3\xa9 \xe2\x80\xa8\"}", "a",
	    JSON_OK, "caf\xc3\xa9 \xe2\x80\xa8"),
	STR("DEL kept", "{\"a\":\"\x7f\"}", "a", JSON_OK, "\x7f"),
	STR("escaped key", "{\"a\\\"b\\u00e9\":\"v\"}", "a\"b\xc3\xa9",
	    JSON_OK, "v"),
	STR("\\u0000 cannot be a C string", "{\"a\":\"x\\u0000y\"}", "a",
	    JSON_INVALID, ""),
	STR("lone high surrogate", "{\"a\":\"\\uD800\"}", "a", JSON_INVALID,
	    ""),
	STR("lone high surrogate then text", "{\"a\":\"\\uD800abcdef\"}", "a",
	    JSON_INVALID, ""),
	STR("lone low surrogate", "{\"a\":\"\\uDC00\"}", "a", JSON_INVALID,
	    ""),
	STR("high then BMP escape", "{\"a\":\"\\uD800\\u0041\"}", "a",
	    JSON_INVALID, ""),
	STR("high then high", "{\"a\":\"\\uD800\\uD800\"}", "a",
	    JSON_INVALID, ""),
	STR("reversed pair", "{\"a\":\"\\uDE00\\uD83D\"}", "a", JSON_INVALID,
	    ""),
	STR("high then other escape", "{\"a\":\"\\uD800\\n\"}", "a",
	    JSON_INVALID, ""),
	STR("invalid value does not spoil others",
	    "{\"a\":\"\\u0000\",\"b\":\"ok\"}", "b", JSON_OK, "ok"),

	/* integers */
	INT("zero", "{\"a\":0}", "a", JSON_OK, 0),
	INT("negative zero", "{\"a\":-0}", "a", JSON_OK, 0),
	INT("positive", "{\"a\":42}", "a", JSON_OK, 42),
	INT("negative", "{\"a\":-42}", "a", JSON_OK, -42),
	INT("INT64_MAX", "{\"a\":9223372036854775807}", "a", JSON_OK,
	    INT64_MAX),
	INT("INT64_MAX + 1", "{\"a\":9223372036854775808}", "a",
	    JSON_INVALID, 0),
	INT("INT64_MIN", "{\"a\":-9223372036854775808}", "a", JSON_OK,
	    INT64_MIN),
	INT("INT64_MIN - 1", "{\"a\":-9223372036854775809}", "a",
	    JSON_INVALID, 0),
	INT("10 * INT64_MAX", "{\"a\":92233720368547758070}", "a",
	    JSON_INVALID, 0),
	INT("huge", "{\"a\":123456789012345678901234567890}", "a",
	    JSON_INVALID, 0),
	INT("huge negative", "{\"a\":-123456789012345678901234567890}", "a",
	    JSON_INVALID, 0),
	INT("1.0 is not an int", "{\"a\":1.0}", "a", JSON_WRONG_TYPE, 0),
	INT("1e3 is not an int", "{\"a\":1e3}", "a", JSON_WRONG_TYPE, 0),
	INT("1E0 is not an int", "{\"a\":1E0}", "a", JSON_WRONG_TYPE, 0),
	INT("huge fraction is wrong type", "{\"a\":1e999}", "a",
	    JSON_WRONG_TYPE, 0),
	INT("string \"5\"", "{\"a\":\"5\"}", "a", JSON_WRONG_TYPE, 0),
	INT("true", "{\"a\":true}", "a", JSON_WRONG_TYPE, 0),
	INT("false", "{\"a\":false}", "a", JSON_WRONG_TYPE, 0),
	INT("array", "{\"a\":[1]}", "a", JSON_WRONG_TYPE, 0),
	INT("object", "{\"a\":{\"a\":1}}", "a", JSON_WRONG_TYPE, 0),
	INT("null", "{\"a\":null}", "a", JSON_MISSING, 0),
	INT("absent", "{\"b\":1}", "a", JSON_MISSING, 0),
	INT("int before closing brace with space", "{\"a\": 7 }", "a",
	    JSON_OK, 7),

	/* booleans */
	BOOL("true", "{\"a\":true}", "a", JSON_OK, 1),
	BOOL("false", "{\"a\": false }", "a", JSON_OK, 0),
	BOOL("null", "{\"a\":null}", "a", JSON_MISSING, 0),
	BOOL("absent", "{\"b\":true}", "a", JSON_MISSING, 0),
	BOOL("string", "{\"a\":\"true\"}", "a", JSON_WRONG_TYPE, 0),
	BOOL("number", "{\"a\":1}", "a", JSON_WRONG_TYPE, 0),
	BOOL("array", "{\"a\":[true]}", "a", JSON_WRONG_TYPE, 0),
	BOOL("last wins", "{\"a\":true,\"a\":false}", "a", JSON_OK, 0),

	/* presence */
	HAS("present string", "{\"a\":\"x\"}", "a", 1),
	HAS("present null", "{\"a\":null}", "a", 1),
	HAS("present object", "{\"a\":{}}", "a", 1),
	HAS("present invalid string", "{\"a\":\"\\uDC00\"}", "a", 1),
	HAS("absent", "{\"a\":1}", "b", 0),
	HAS("nested only", "{\"o\":{\"a\":1}}", "a", 0),
};

static void
test_get(void)
{
	const struct gcase *c;
	struct json_doc *doc;
	const char *s;
	size_t i, len;
	int64_t v;
	int rc, good, b;

	for (i = 0; i < NELEM(gcases); i++) {
		c = &gcases[i];
		if ((doc = json_parse(c->in, strlen(c->in))) == NULL) {
			ok(0, "%s: parses", c->name);
			continue;
		}
		switch (c->op) {
		case OP_STR:
			s = NULL;
			len = 0;
			rc = json_get_string(doc, c->key, &s, &len);
			good = rc == c->rc;
			if (good && rc == JSON_OK)
				good = len == c->len &&
				    memcmp(s, c->str, len) == 0 &&
				    s[len] == '\0' && utf8_valid(s, len);
			ok(good, "string %s: rc %d", c->name, rc);
			break;
		case OP_INT:
			v = -1;
			rc = json_get_int(doc, c->key, &v);
			good = rc == c->rc && (rc != JSON_OK || v == c->num);
			ok(good, "int %s: rc %d, %" PRId64, c->name, rc, v);
			break;
		case OP_BOOL:
			b = -1;
			rc = json_get_bool(doc, c->key, &b);
			good = rc == c->rc && (rc != JSON_OK || b == c->num);
			ok(good, "bool %s: rc %d, %d", c->name, rc, b);
			break;
		case OP_HAS:
			rc = json_has(doc, c->key);
			ok(rc == c->rc, "has %s: %d", c->name, rc);
			break;
		}
		json_free(doc);
	}
}

/* The doc owns its strings: they outlive the input buffer. */
static void
test_ownership(void)
{
	static const char src[] = "{\"name\":\"alice\"}";
	struct json_doc *doc;
	const char *s = NULL;
	size_t len = 0;
	char *in;

	if ((in = malloc(sizeof(src))) == NULL)
		return;
	memcpy(in, src, sizeof(src));
	doc = json_parse(in, sizeof(src) - 1);
	memset(in, 'x', sizeof(src));
	free(in);
	ok(doc != NULL && json_get_string(doc, "name", &s, NULL) == JSON_OK &&
	    strcmp(s, "alice") == 0, "strings outlive the input buffer");
	ok(doc != NULL && json_get_string(doc, "name", &s, &len) == JSON_OK &&
	    len == 5, "string length reported");
	json_free(doc);
	json_free(NULL);
	ok(1, "json_free(NULL) is harmless");
}

/* At most 1024 tokens: an object, a key, an array and n elements. */
static void
test_tokens(void)
{
	struct evbuffer *b = evbuffer_new();
	struct json_doc *doc;
	char *s;
	size_t k, len;
	int n, got[2];

	for (n = 0; n < 2; n++) {
		evbuffer_drain(b, evbuffer_get_length(b));
		evbuffer_add_printf(b, "{\"a\":[");
		for (k = 0; k < (size_t)(1021 + n); k++)
			evbuffer_add_printf(b, "%s1", k ? "," : "");
		evbuffer_add_printf(b, "]}");
		len = evbuffer_get_length(b);
		s = (char *)evbuffer_pullup(b, -1);
		doc = json_parse(s, len);
		got[n] = doc != NULL;
		json_free(doc);
	}
	ok(got[0], "1024 tokens parse");
	ok(!got[1], "1025 tokens are refused");

	/* Nesting as deep as the token limit allows. */
	evbuffer_drain(b, evbuffer_get_length(b));
	evbuffer_add_printf(b, "{\"a\":");
	for (k = 0; k < 1022; k++)
		evbuffer_add(b, "[", 1);
	for (k = 0; k < 1022; k++)
		evbuffer_add(b, "]", 1);
	evbuffer_add(b, "}", 1);
	len = evbuffer_get_length(b);
	s = (char *)evbuffer_pullup(b, -1);
	doc = json_parse(s, len);
	ok(doc != NULL && json_has(doc, "a"), "1022 nested arrays parse");
	json_free(doc);
	evbuffer_free(b);
}

/* --- writing ------------------------------------------------------------ */

struct wcase {
	const char	*name;
	const char	*in;
	size_t		 len;
	const char	*out;
};

static const struct wcase wcases[] = {
	{ "empty", S(""), "\"\"" },
	{ "plain", S("abc"), "\"abc\"" },
	{ "quote and backslash", S("a\"b\\c"), "\"a\\\"b\\\\c\"" },
	{ "slash stays", S("</script>"), "\"</script>\"" },
	{ "short escapes", S("\b\f\n\r\t"), "\"\\b\\f\\n\\r\\t\"" },
	{ "other controls", S("\x01\x0b\x1f"), "\"\\u0001\\u000b\\u001f\"" },
	{ "NUL", S("a\0b"), "\"a\\u0000b\"" },
	{ "DEL raw", S("\x7f"), "\"\x7f\"" },
	{ "UTF-8 raw", S("caf\xc3\xa9 \xf0\x9f\x98\x80"),
	    "\"caf\xc3\xa9 \xf0\x9f\x98\x80\"" },
	{ "U+2028", S("a\xe2\x80\xa8" "b"), "\"a\\u2028b\"" },
	{ "U+2029", S("\xe2\x80\xa9"), "\"\\u2029\"" },
	{ "U+2027 raw", S("\xe2\x80\xa7"), "\"\xe2\x80\xa7\"" },
	{ "U+202A raw", S("\xe2\x80\xaa"), "\"\xe2\x80\xaa\"" },
	{ "FF", S("\xff"), "\"\xef\xbf\xbd\"" },
	{ "stray continuation", S("a\x80" "b"), "\"a\xef\xbf\xbd" "b\"" },
	{ "truncated at end", S("a\xc3"), "\"a\xef\xbf\xbd\"" },
	{ "lead then ASCII", S("\xc3" "a"), "\"\xef\xbf\xbd" "a\"" },
	{ "truncated 4-byte is one U+FFFD", S("\xf0\x9f\x98" "!"),
	    "\"\xef\xbf\xbd!\"" },
	{ "truncated then quote", S("\xe2\x82\""),
	    "\"\xef\xbf\xbd\\\"\"" },
	{ "overlong is two", S("\xc0\xaf"),
	    "\"\xef\xbf\xbd\xef\xbf\xbd\"" },
	{ "surrogate is three", S("\xed\xa0\x80"),
	    "\"\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\"" },
	{ "past U+10FFFF is four", S("\xf4\x90\x80\x80"),
	    "\"\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\"" },
	{ "lead then lead", S("\xc3\xc3\xa9"),
	    "\"\xef\xbf\xbd\xc3\xa9\"" },
};

static void
test_write(void)
{
	const struct wcase *c;
	struct evbuffer *b = evbuffer_new();
	size_t i, len;
	char *s;

	for (i = 0; i < NELEM(wcases); i++) {
		c = &wcases[i];
		evbuffer_drain(b, evbuffer_get_length(b));
		json_add_string(b, c->in, c->len);
		len = evbuffer_get_length(b);
		s = (char *)evbuffer_pullup(b, -1);
		ok(len == strlen(c->out) && memcmp(s, c->out, len) == 0,
		    "write %s: %.*s", c->name, (int)len, s);
	}
	evbuffer_drain(b, evbuffer_get_length(b));
	json_add_key(b, "na\"me");
	json_add_cstr(b, "x");
	len = evbuffer_get_length(b);
	s = (char *)evbuffer_pullup(b, -1);
	ok(len == 12 && memcmp(s, "\"na\\\"me\":\"x\"", 12) == 0,
	    "json_add_key then json_add_cstr");
	evbuffer_free(b);
}

/* A deterministic generator, so a failure is reproducible. */
static uint32_t rng = 12345;

static uint32_t
next_rand(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 17;
	rng ^= rng << 5;
	return rng;
}

/* Valid UTF-8 without NUL, rich in what needs escaping. */
static size_t
gen_valid(char *out, size_t max)
{
	static const char *const atoms[] = {
		"a", "Z", " ", "\"", "\\", "/", "\n", "\t", "\x01", "\x1f",
		"\x7f", "\xc3\xa9", "\xdf\xbf", "\xe2\x80\xa8", "\xe2\x80\xa9",
		"\xe2\x82\xac", "\xef\xbf\xbd", "\xef\xbf\xbf",
		"\xf0\x9f\x98\x80", "\xf4\x8f\xbf\xbf", "\\u0041", "}", "[",
	};
	size_t n = 0, k, count = next_rand() % 200;
	const char *a;

	for (k = 0; k < count; k++) {
		a = atoms[next_rand() % NELEM(atoms)];
		if (n + strlen(a) > max)
			break;
		memcpy(out + n, a, strlen(a));
		n += strlen(a);
	}
	return n;
}

/* Write s, wrap it as {"k":<written>}, read it back. */
static int
round_trip(struct evbuffer *b, const char *s, size_t len, const char **back,
    size_t *backlen, struct json_doc **doc)
{
	size_t n;
	char *w;

	evbuffer_drain(b, evbuffer_get_length(b));
	evbuffer_add(b, "{", 1);
	json_add_key(b, "k");
	json_add_string(b, s, len);
	evbuffer_add(b, "}", 1);
	n = evbuffer_get_length(b);
	w = (char *)evbuffer_pullup(b, -1);
	if (!utf8_valid(w, n))
		return -1;
	if ((*doc = json_parse(w, n)) == NULL)
		return -1;
	return json_get_string(*doc, "k", back, backlen) == JSON_OK ? 0 : -1;
}

static void
test_round_trip(void)
{
	struct evbuffer *b = evbuffer_new();
	struct json_doc *doc;
	const char *back;
	char s[1024];
	size_t k, len, backlen;
	int good = 1, all_valid = 1;
	uint32_t r;

	for (k = 0; k < 2000; k++) {
		doc = NULL;
		len = gen_valid(s, sizeof(s));
		if (round_trip(b, s, len, &back, &backlen, &doc) == -1 ||
		    backlen != len || memcmp(back, s, len) != 0)
			good = 0;
		json_free(doc);
	}
	ok(good, "2000 valid strings survive write then read");

	/* Arbitrary bytes: the output is valid UTF-8 and readable. */
	for (k = 0; k < 2000; k++) {
		doc = NULL;
		len = next_rand() % 64;
		for (r = 0; r < len; r++)
			s[r] = (char)(next_rand() % 255 + 1);
		if (round_trip(b, s, len, &back, &backlen, &doc) == -1 ||
		    !utf8_valid(back, backlen))
			all_valid = 0;
		/* A string already valid UTF-8 comes back unchanged. */
		if (doc != NULL && utf8_valid(s, len) &&
		    (backlen != len || memcmp(back, s, len) != 0))
			all_valid = 0;
		json_free(doc);
	}
	ok(all_valid, "2000 random byte strings write valid, readable JSON");
	evbuffer_free(b);
}

int
main(void)
{
	test_parse();
	test_get();
	test_ownership();
	test_tokens();
	test_write();
	test_round_trip();
	return tap_done();
}
