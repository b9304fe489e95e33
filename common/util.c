/*
 * util: clocks, RFC 3339 time stamps, random bytes and tokens, the host
 * name, strict integer parsing. Random bytes come from arc4random_buf where
 * the system has it (the BSDs), else getentropy, else /dev/urandom.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/util.h"

int64_t
util_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t
util_mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t
util_mono_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

void
util_rfc3339(int64_t ms, char *buf, size_t len)
{
	/*
	 * The last second formatted, "YYYY-MM-DDTHH:MM:SS": a busy hub
	 * stamps thousands of messages in one, and gmtime_r() with the
	 * format was most of what a stamp cost. Per thread (the workers'
	 * password threads log).
	 */
	static _Thread_local int64_t last = -1;
	static _Thread_local char prefix[20];
	int64_t secs = ms / 1000;
	int frac = (int)(ms % 1000);
	time_t t;
	struct tm tm;

	if (ms < 0 || len < 25 || secs != last) {
		t = (time_t)secs;
		gmtime_r(&t, &tm);
		/* A year past 9999 does not fit the kept second. */
		if (ms < 0 || len < 25 || snprintf(prefix, sizeof(prefix),
		    "%04d-%02d-%02dT%02d:%02d:%02d", tm.tm_year + 1900,
		    tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
		    tm.tm_sec) != 19) {
			last = -1;
			snprintf(buf, len, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ",
			    tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
			    tm.tm_hour, tm.tm_min, tm.tm_sec, frac);
			return;
		}
		last = secs;
	}
	memcpy(buf, prefix, 19);
	buf[19] = '.';
	buf[20] = (char)('0' + frac / 100);
	buf[21] = (char)('0' + frac / 10 % 10);
	buf[22] = (char)('0' + frac % 10);
	buf[23] = 'Z';
	buf[24] = '\0';
}

int
util_random(void *buf, size_t len)
{
#if defined(HAVE_ARC4RANDOM_BUF)
	arc4random_buf(buf, len);
	return 0;
#else
	unsigned char *p = buf;
# if defined(HAVE_GETENTROPY)
	while (len > 0) {
		size_t n = len > 256 ? 256 : len;

		if (getentropy(p, n) == -1)
			break;
		p += n;
		len -= n;
	}
	if (len == 0)
		return 0;
# endif
	int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);

	if (fd == -1)
		return -1;
	while (len > 0) {
		ssize_t n = read(fd, p, len);

		if (n <= 0) {
			if (n == -1 && errno == EINTR)
				continue;
			close(fd);
			return -1;
		}
		p += n;
		len -= (size_t)n;
	}
	close(fd);
	return 0;
#endif
}

int
util_token(char *out, size_t outlen, size_t nbytes)
{
	static const char b64url[] =
	    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
	unsigned char raw[64];
	size_t i, o = 0;
	unsigned bits = 0, acc = 0;

	if (nbytes > sizeof(raw) || outlen < (nbytes * 4 + 2) / 3 + 1)
		return -1;
	if (util_random(raw, nbytes) == -1)
		return -1;
	for (i = 0; i < nbytes; i++) {
		acc = (acc << 8) | raw[i];
		bits += 8;
		while (bits >= 6) {
			bits -= 6;
			out[o++] = b64url[(acc >> bits) & 63];
		}
	}
	if (bits > 0)
		out[o++] = b64url[(acc << (6 - bits)) & 63];
	out[o] = '\0';
	return 0;
}

const char *
util_hostname(void)
{
	static char name[256];

	if (name[0] == '\0') {
		if (gethostname(name, sizeof(name) - 1) == -1 ||
		    name[0] == '\0')
			snprintf(name, sizeof(name), "localhost");
		name[sizeof(name) - 1] = '\0';
	}
	return name;
}

int
util_hexval(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

int
util_parse_int(const char *s, long long min, long long max, long long *out)
{
	char *end;
	long long v;

	if (s == NULL || *s == '\0' || *s == ' ' || *s == '+' ||
	    (*s == '-' && min >= 0))
		return -1;
	for (const char *p = (*s == '-') ? s + 1 : s; *p; p++)
		if (*p < '0' || *p > '9')
			return -1;
	errno = 0;
	v = strtoll(s, &end, 10);
	if (errno != 0 || *end != '\0' || v < min || v > max)
		return -1;
	*out = v;
	return 0;
}
