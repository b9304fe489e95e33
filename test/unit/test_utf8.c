/*
 * test_utf8: strict validation against the classic stress cases (Markus
 * Kuhn's list, RFC 3629 boundaries), counting, Unicode white space, and the
 * incremental validator fed in every possible split.
 */
#include <stdio.h>
#include <string.h>

#include "common/utf8.h"
#include "test/unit/tap.h"

struct vcase {
	const char	*name;
	const char	*s;
	size_t		 len;	/* 0: strlen(s) */
	int		 valid;
	size_t		 count;	/* code points, when valid */
};

#define S(x)	x, sizeof(x) - 1

static const struct vcase vcases[] = {
	{ "empty", S(""), 1, 0 },
	{ "ASCII", S("hello, world"), 1, 12 },
	{ "NUL is a code point", S("a\0b"), 1, 3 },
	{ "DEL", S("\x7f"), 1, 1 },
	{ "2-byte e-acute", S("caf\xc3\xa9"), 1, 4 },
	{ "3-byte euro", S("\xe2\x82\xac"), 1, 1 },
	{ "4-byte emoji", S("\xf0\x9f\x98\x80"), 1, 1 },
	{ "Greek kosme", S("\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5"),
	    1, 5 },
	/* boundaries of each length */
	{ "U+0080 first 2-byte", S("\xc2\x80"), 1, 1 },
	{ "U+07FF last 2-byte", S("\xdf\xbf"), 1, 1 },
	{ "U+0800 first 3-byte", S("\xe0\xa0\x80"), 1, 1 },
	{ "U+D7FF before surrogates", S("\xed\x9f\xbf"), 1, 1 },
	{ "U+E000 after surrogates", S("\xee\x80\x80"), 1, 1 },
	{ "U+FFFD", S("\xef\xbf\xbd"), 1, 1 },
	{ "U+FFFF noncharacter is valid", S("\xef\xbf\xbf"), 1, 1 },
	{ "U+10000 first 4-byte", S("\xf0\x90\x80\x80"), 1, 1 },
	{ "U+10FFFF max code point", S("\xf4\x8f\xbf\xbf"), 1, 1 },
	/* past the maximum */
	{ "U+110000", S("\xf4\x90\x80\x80"), 0, 0 },
	{ "F5 lead", S("\xf5\x80\x80\x80"), 0, 0 },
	{ "5-byte form", S("\xf8\x88\x80\x80\x80"), 0, 0 },
	{ "6-byte form", S("\xfc\x84\x80\x80\x80\x80"), 0, 0 },
	{ "FE", S("\xfe"), 0, 0 },
	{ "FF", S("\xff"), 0, 0 },
	/* overlongs */
	{ "overlong / C0 AF", S("\xc0\xaf"), 0, 0 },
	{ "overlong NUL C0 80", S("\xc0\x80"), 0, 0 },
	{ "overlong C1 BF", S("\xc1\xbf"), 0, 0 },
	{ "overlong / E0 80 AF", S("\xe0\x80\xaf"), 0, 0 },
	{ "overlong U+07FF E0 9F BF", S("\xe0\x9f\xbf"), 0, 0 },
	{ "overlong / F0 80 80 AF", S("\xf0\x80\x80\xaf"), 0, 0 },
	{ "overlong U+FFFF F0 8F BF BF", S("\xf0\x8f\xbf\xbf"), 0, 0 },
	{ "overlong / F8 80 80 80 AF", S("\xf8\x80\x80\x80\xaf"), 0, 0 },
	/* surrogates */
	{ "U+D800", S("\xed\xa0\x80"), 0, 0 },
	{ "U+DBFF", S("\xed\xaf\xbf"), 0, 0 },
	{ "U+DC00", S("\xed\xb0\x80"), 0, 0 },
	{ "U+DFFF", S("\xed\xbf\xbf"), 0, 0 },
	{ "CESU pair D800 DC00", S("\xed\xa0\x80\xed\xb0\x80"), 0, 0 },
	/* stray and missing continuation bytes */
	{ "lone continuation 80", S("\x80"), 0, 0 },
	{ "lone continuation BF", S("a\xbf"), 0, 0 },
	{ "two continuations after 2-byte", S("\xc3\xa9\x80"), 0, 0 },
	{ "lead then ASCII", S("\xc3" "a"), 0, 0 },
	{ "3-byte lead then ASCII", S("\xe2\x82" "a"), 0, 0 },
	{ "lead then lead", S("\xc3\xc3\xa9"), 0, 0 },
	{ "truncated 2-byte at end", S("ab\xc3"), 0, 0 },
	{ "truncated 4-byte at end", S("\xf0\x9f\x98"), 0, 0 },
};

struct scase {
	const char	*name;
	const char	*s;
	size_t		 len;
	int		 blank;
};

static const struct scase scases[] = {
	{ "empty is blank", S(""), 1 },
	{ "spaces", S("   "), 1 },
	{ "tab LF VT FF CR", S("\t\n\v\f\r"), 1 },
	{ "NEL U+0085", S("\xc2\x85"), 1 },
	{ "NBSP U+00A0", S("\xc2\xa0"), 1 },
	{ "ogham U+1680", S("\xe1\x9a\x80"), 1 },
	{ "en quad U+2000", S("\xe2\x80\x80"), 1 },
	{ "hair space U+200A", S("\xe2\x80\x8a"), 1 },
	{ "line separator U+2028", S("\xe2\x80\xa8"), 1 },
	{ "paragraph separator U+2029", S("\xe2\x80\xa9"), 1 },
	{ "narrow NBSP U+202F", S("\xe2\x80\xaf"), 1 },
	{ "math space U+205F", S("\xe2\x81\x9f"), 1 },
	{ "ideographic space U+3000", S("\xe3\x80\x80"), 1 },
	{ "all of them", S(" \t\xc2\xa0\xe3\x80\x80\xe2\x80\xa8\n"), 1 },
	{ "a letter", S("  x "), 0 },
	{ "NUL is not space", S("\0"), 0 },
	{ "U+0008 is not space", S("\b"), 0 },
	{ "U+000E is not space", S("\x0e"), 0 },
	{ "U+001F is not space", S("\x1f"), 0 },
	{ "zero width space U+200B is not White_Space", S("\xe2\x80\x8b"), 0 },
	{ "U+FEFF BOM is not White_Space", S("\xef\xbb\xbf"), 0 },
	{ "U+180E is no longer White_Space", S("\xe1\xa0\x8e"), 0 },
	{ "U+2060 word joiner", S("\xe2\x81\xa0"), 0 },
	{ "invalid UTF-8 is not blank", S(" \xc2"), 0 },
	{ "encoded space overlong is not blank", S("\xc0\xa0"), 0 },
};

/* Bytes at which utf8_feed must already have said -1, fed one at a time:
 * the first byte that proves the input invalid. */
struct ecase {
	const char	*name;
	const char	*s;
	size_t		 len;
	size_t		 fail_at;
};

static const struct ecase ecases[] = {
	{ "F5 at once", S("\xf5\x80\x80\x80"), 0 },
	{ "C0 at once", S("\xc0\x80"), 0 },
	{ "C1 at once", S("\xc1\x80"), 0 },
	{ "stray continuation at once", S("ab\x80"), 2 },
	{ "E0 overlong at 2nd byte", S("\xe0\x80\x80"), 1 },
	{ "F0 overlong at 2nd byte", S("\xf0\x8f\x80\x80"), 1 },
	{ "surrogate at 2nd byte", S("\xed\xa0\x80"), 1 },
	{ "past U+10FFFF at 2nd byte", S("\xf4\x90\x80\x80"), 1 },
	{ "ASCII inside 4-byte at 3rd byte", S("\xf0\x9f" "a"), 2 },
};

static int
feed_split(const char *s, size_t len, size_t cut1, size_t cut2)
{
	unsigned state = 0;

	if (utf8_feed(&state, s, cut1) == -1 ||
	    utf8_feed(&state, s + cut1, cut2 - cut1) == -1 ||
	    utf8_feed(&state, s + cut2, len - cut2) == -1)
		return 0;
	return state == 0;
}

static void
test_valid(void)
{
	const struct vcase *c;
	size_t i, a, b;
	int all;

	for (i = 0; i < sizeof(vcases) / sizeof(vcases[0]); i++) {
		c = &vcases[i];
		ok(utf8_valid(c->s, c->len) == c->valid, "valid: %s", c->name);
		if (c->valid)
			ok(utf8_count(c->s, c->len) == c->count,
			    "count: %s is %zu", c->name, c->count);
		/* Every way of cutting it in three agrees with utf8_valid. */
		all = 1;
		for (a = 0; a <= c->len; a++)
			for (b = a; b <= c->len; b++)
				if (feed_split(c->s, c->len, a, b) != c->valid)
					all = 0;
		ok(all, "feed in every 3-way split: %s", c->name);
	}
}

/* Each proper prefix of every multi-byte character is invalid as a whole
 * but open (not failed) when fed. */
static void
test_truncated(void)
{
	static const char *const chars[] = {
		"\xc2\x80", "\xdf\xbf", "\xe0\xa0\x80", "\xe2\x82\xac",
		"\xed\x9f\xbf", "\xef\xbf\xbf", "\xf0\x90\x80\x80",
		"\xf0\x9f\x98\x80", "\xf3\xbf\xbf\xbf", "\xf4\x8f\xbf\xbf",
	};
	unsigned state;
	size_t i, k, n;
	int whole, open;

	for (i = 0; i < sizeof(chars) / sizeof(chars[0]); i++) {
		n = strlen(chars[i]);
		whole = open = 1;
		for (k = 1; k < n; k++) {
			if (utf8_valid(chars[i], k))
				whole = 0;
			state = 0;
			if (utf8_feed(&state, chars[i], k) != 0 || state == 0)
				open = 0;
			/* ...and finishing it closes the sequence. */
			if (utf8_feed(&state, chars[i] + k, n - k) != 0 ||
			    state != 0)
				open = 0;
		}
		ok(whole, "truncated at every position is invalid: char %zu",
		    i);
		ok(open, "truncated at every position is open, then "
		    "completes: char %zu", i);
	}
}

static void
test_early(void)
{
	const struct ecase *c;
	unsigned state;
	size_t i, k, failed_at;

	for (i = 0; i < sizeof(ecases) / sizeof(ecases[0]); i++) {
		c = &ecases[i];
		state = 0;
		failed_at = c->len;
		for (k = 0; k < c->len; k++)
			if (utf8_feed(&state, c->s + k, 1) == -1) {
				failed_at = k;
				break;
			}
		ok(failed_at == c->fail_at, "feed fails at byte %zu: %s",
		    c->fail_at, c->name);
	}
	/* Once failed, valid bytes do not revive the stream. */
	state = 0;
	ok(utf8_feed(&state, "\xff", 1) == -1 &&
	    utf8_feed(&state, "abc", 3) == -1 &&
	    utf8_feed(&state, "", 0) == -1, "failure is sticky");
	state = 0;
	ok(utf8_feed(&state, "", 0) == 0 && state == 0,
	    "empty feed keeps state 0");
}

static void
test_blank(void)
{
	const struct scase *c;
	size_t i;

	for (i = 0; i < sizeof(scases) / sizeof(scases[0]); i++) {
		c = &scases[i];
		ok(utf8_blank(c->s, c->len) == c->blank, "blank: %s", c->name);
	}
}

static void
test_invisible(void)
{
	static const struct {
		const char	*name;
		const char	*s;
		int		 invisible;
	} cases[] = {
		{ "plain address", "alice@example.org", 0 },
		{ "letters beyond ASCII", "jos\xc3\xa9@exämple.org", 0 },
		{ "CJK", "\xe7\x94\xa8\xe6\x88\xb7@example.org", 0 },
		{ "emoji", "a\xf0\x9f\x98\x80@example.org", 0 },
		{ "space", "a b@example.org", 1 },
		{ "CR LF", "a@example.org\r\nBcc: x", 1 },
		{ "tab", "a\t@example.org", 1 },
		{ "DEL", "a\x7f@example.org", 1 },
		{ "NEL (C1)", "a\xc2\x85@example.org", 1 },
		{ "no-break space", "a\xc2\xa0@example.org", 1 },
		{ "soft hyphen", "a\xc2\xad@example.org", 1 },
		{ "ogham space", "a\xe1\x9a\x80@example.org", 1 },
		{ "zero-width space", "a\xe2\x80\x8b@example.org", 1 },
		{ "line separator", "a\xe2\x80\xa8@example.org", 1 },
		{ "paragraph separator", "a\xe2\x80\xa9@example.org", 1 },
		{ "right-to-left override", "a\xe2\x80\xae@example.org", 1 },
		{ "ideographic space", "a\xe3\x80\x80@example.org", 1 },
		{ "BOM", "\xef\xbb\xbf" "a@example.org", 1 },
		{ "tag character", "a\xf3\xa0\x80\x81@example.org", 1 },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		ok(utf8_has_invisible(cases[i].s, strlen(cases[i].s)) ==
		    cases[i].invisible, "invisible: %s", cases[i].name);
}

int
main(void)
{
	test_valid();
	test_invisible();
	test_truncated();
	test_early();
	test_blank();
	return tap_done();
}
