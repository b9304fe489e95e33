/* utf8: validation and counting (RFC 3629: no overlongs, no surrogates). */
#ifndef GC_UTF8_H
#define GC_UTF8_H

#include <stddef.h>

/* 1 if s[0..len) is valid UTF-8. */
int	utf8_valid(const char *s, size_t len);
/* Number of code points in valid UTF-8 (call utf8_valid first). */
size_t	utf8_count(const char *s, size_t len);
/* 1 if every code point is white space (Unicode White_Space) or len == 0. */
int	utf8_blank(const char *s, size_t len);
/*
 * 1 if some code point of valid UTF-8 s does not show as a character of its
 * own: white space, a control character (C0, DEL, C1) or a format
 * character (zero-width spaces and joiners, bidi controls, the BOM, soft
 * hyphen, tags): what an identifier such as an email must not hold.
 */
int	utf8_has_invisible(const char *s, size_t len);
/*
 * Incremental validation for fragmented WebSocket messages: state starts at
 * 0; returns 0 while valid so far (state != 0 means a sequence is open),
 * -1 as soon as invalid.
 */
int	utf8_feed(unsigned *state, const char *s, size_t len);

#endif
