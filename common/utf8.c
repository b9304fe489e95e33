/*
 * utf8: strict UTF-8 (RFC 3629) for everything that crosses the wire: one
 * byte-at-a-time automaton shared by whole-buffer validation and by the
 * incremental validator of fragmented WebSocket text, plus counting and the
 * Unicode White_Space test used to refuse blank posts and messages.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <stddef.h>
#include <stdint.h>

#include "common/utf8.h"

/*
 * The automaton state is 0 between code points; inside a sequence it holds
 * the number of continuation bytes still expected and the byte range the
 * next one must fall in. Narrowing the range of the byte after the lead is
 * what rejects overlongs (E0, F0), surrogates (ED) and code points past
 * U+10FFFF (F4) at the first byte that proves them, not at the end.
 */
#define UTF8_STATE(need, lo, hi) \
	((unsigned)(need) << 16 | (unsigned)(lo) << 8 | (unsigned)(hi))
#define UTF8_NEED(st)	((st) >> 16)
#define UTF8_LO(st)	(((st) >> 8) & 0xffu)
#define UTF8_HI(st)	((st) & 0xffu)
/* Sticky: once invalid, a stream stays invalid whatever is fed next. */
#define UTF8_BAD	0xffffffffu

static int	utf8_step(unsigned *state, unsigned char c);
static size_t	utf8_decode(const unsigned char *s, size_t len, uint32_t *cp);
static int	utf8_is_space(uint32_t cp);
static int	utf8_is_invisible(uint32_t cp);
static int	utf8_is_hidden(uint32_t cp);
static int	utf8_find(const char *s, size_t len, int (*pred)(uint32_t),
		    int want, int bad);

int
utf8_valid(const char *s, size_t len)
{
	unsigned state = 0;

	return utf8_feed(&state, s, len) == 0 && state == 0;
}

size_t
utf8_count(const char *s, size_t len)
{
	size_t i, n = 0;

	/* Valid input: every byte that is not a continuation starts a code
	 * point. */
	for (i = 0; i < len; i++)
		if (((unsigned char)s[i] & 0xc0) != 0x80)
			n++;
	return n;
}

int
utf8_blank(const char *s, size_t len)
{
	/* Invalid text is not blank. */
	return utf8_find(s, len, utf8_is_space, 0, 1) == 0;
}

int
utf8_has_invisible(const char *s, size_t len)
{
	/* Invalid text shows nothing right. */
	return utf8_find(s, len, utf8_is_hidden, 1, 1);
}

int
utf8_feed(unsigned *state, const char *s, size_t len)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t i = 0;

	if (*state == UTF8_BAD)
		return -1;
	while (i < len) {
		/* Most chat text is ASCII: skip it without the automaton. */
		if (*state == 0 && p[i] < 0x80) {
			i++;
			continue;
		}
		if (utf8_step(state, p[i++]) == -1)
			return -1;
	}
	return 0;
}

/* --- internals ---------------------------------------------------------- */

/* Advance the automaton by one byte; -1 (and the sticky state) if c cannot
 * continue any valid text. */
static int
utf8_step(unsigned *state, unsigned char c)
{
	unsigned st = *state, need;

	if (st == UTF8_BAD)
		return -1;
	if (st != 0) {
		if (c < UTF8_LO(st) || c > UTF8_HI(st))
			goto bad;
		need = UTF8_NEED(st) - 1;
		*state = need == 0 ? 0 : UTF8_STATE(need, 0x80, 0xbf);
		return 0;
	}
	if (c < 0x80)
		return 0;
	if (c >= 0xc2 && c <= 0xdf)
		*state = UTF8_STATE(1, 0x80, 0xbf);
	else if (c == 0xe0)
		*state = UTF8_STATE(2, 0xa0, 0xbf);	/* no overlongs */
	else if (c == 0xed)
		*state = UTF8_STATE(2, 0x80, 0x9f);	/* no surrogates */
	else if (c >= 0xe1 && c <= 0xef)
		*state = UTF8_STATE(2, 0x80, 0xbf);
	else if (c == 0xf0)
		*state = UTF8_STATE(3, 0x90, 0xbf);	/* no overlongs */
	else if (c >= 0xf1 && c <= 0xf3)
		*state = UTF8_STATE(3, 0x80, 0xbf);
	else if (c == 0xf4)
		*state = UTF8_STATE(3, 0x80, 0x8f);	/* <= U+10FFFF */
	else
		goto bad;	/* stray continuation, C0, C1, F5..FF */
	return 0;
bad:
	*state = UTF8_BAD;
	return -1;
}

/* Length of the valid sequence at s and its code point; 0 if s does not
 * start with one (invalid or cut short). */
static size_t
utf8_decode(const unsigned char *s, size_t len, uint32_t *cp)
{
	static const unsigned char lead_mask[] = { 0, 0x7f, 0x1f, 0x0f, 0x07 };
	unsigned state = 0;
	size_t i = 0, n;

	if (s[0] < 0x80) {
		*cp = s[0];
		return 1;
	}
	do {
		if (i == len || utf8_step(&state, s[i]) == -1)
			return 0;
		i++;
	} while (state != 0);
	n = i;
	*cp = s[0] & lead_mask[n];
	for (i = 1; i < n; i++)
		*cp = *cp << 6 | (s[i] & 0x3f);
	return n;
}

/* Unicode White_Space (PropList.txt). */
static int
utf8_is_space(uint32_t cp)
{
	switch (cp) {
	case 0x0020:
	case 0x0085:
	case 0x00a0:
	case 0x1680:
	case 0x2028:
	case 0x2029:
	case 0x202f:
	case 0x205f:
	case 0x3000:
		return 1;
	}
	return (cp >= 0x0009 && cp <= 0x000d) || (cp >= 0x2000 && cp <= 0x200a);
}

/* Controls (Cc) and format characters (Cf) of Unicode 15. */
static int
utf8_is_invisible(uint32_t cp)
{
	static const uint32_t ranges[][2] = {
		{ 0x0000, 0x001f }, { 0x007f, 0x009f }, { 0x00ad, 0x00ad },
		{ 0x0600, 0x0605 }, { 0x061c, 0x061c }, { 0x06dd, 0x06dd },
		{ 0x070f, 0x070f }, { 0x0890, 0x0891 }, { 0x08e2, 0x08e2 },
		{ 0x180e, 0x180e }, { 0x200b, 0x200f }, { 0x202a, 0x202e },
		{ 0x2060, 0x2064 }, { 0x2066, 0x206f }, { 0xfeff, 0xfeff },
		{ 0xfff9, 0xfffb }, { 0x110bd, 0x110bd }, { 0x110cd, 0x110cd },
		{ 0x13430, 0x1343f }, { 0x1bca0, 0x1bca3 },
		{ 0x1d173, 0x1d17a }, { 0xe0001, 0xe0001 },
		{ 0xe0020, 0xe007f }
	};

	for (size_t i = 0; i < sizeof(ranges) / sizeof(ranges[0]); i++)
		if (cp >= ranges[i][0] && cp <= ranges[i][1])
			return 1;
	return 0;
}

/* White space, a control or a format character: nothing of its own. */
static int
utf8_is_hidden(uint32_t cp)
{
	return utf8_is_space(cp) || utf8_is_invisible(cp);
}

/*
 * 1 if some code point of s has pred(cp) == want, 0 if none has; bad if
 * s is not valid UTF-8.
 */
static int
utf8_find(const char *s, size_t len, int (*pred)(uint32_t), int want,
    int bad)
{
	const unsigned char *p = (const unsigned char *)s;
	uint32_t cp;
	size_t n;

	while (len > 0) {
		if ((n = utf8_decode(p, len, &cp)) == 0)
			return bad;
		if ((pred(cp) != 0) == want)
			return 1;
		p += n;
		len -= n;
	}
	return 0;
}
