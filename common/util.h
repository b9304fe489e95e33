/*
 * util: small things every process needs: time formatting, random bytes,
 * tokens, host name.
 */
#ifndef GC_UTIL_H
#define GC_UTIL_H

#include <stddef.h>
#include <stdint.h>

#include "common/attr.h"

/* Milliseconds since the epoch, wall clock. */
int64_t	util_now_ms(void);
/* Monotonic milliseconds, for timeouts and uptime. */
int64_t	util_mono_ms(void);
int64_t	util_mono_us(void);	/* the same, microseconds: latencies */
/* RFC 3339 UTC with milliseconds ("2026-11-25T16:20:01.123Z"); buf >= 32. */
void	util_rfc3339(int64_t ms, char *buf, size_t len);
/* Fill buf from the OS random source; -1 on failure. */
int	util_random(void *buf, size_t len) GC_MUSTCHECK;
/* A URL-safe random token of nbytes entropy (base64url); out >= 2*nbytes. */
int	util_token(char *out, size_t outlen, size_t nbytes)
	    GC_MUSTCHECK;
/* The host name, for stats keys and logs. */
const char *util_hostname(void);
/* The value of one hex digit, or -1: for %XX and \uXXXX decoders. */
int	util_hexval(int c);
/* Parse a decimal integer in [min, max]; -1 if s is not exactly that. */
int	util_parse_int(const char *s, long long min, long long max, long long *out)
	    GC_MUSTCHECK;

#endif
