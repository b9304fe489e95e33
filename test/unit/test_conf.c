/* Unit tests of common/conf.c: the file format, the key table, ranges,
 * environment overrides and the reasons given for bad input; and the
 * redis_url forms common/bus.c takes, and how it hides their passwords. */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/bus.h"
#include "common/conf.h"
#include "test/unit/tap.h"

static char tmpl[] = "/tmp/gochat-conf-XXXXXX";

/* redis_url values: taken (1) or refused (0) by bus_url_valid(). */
static const struct {
	const char	*url;
	int		 valid;
} redis_urls[] = {
	{ "redis://127.0.0.1:6379/0", 1 },
	{ "redis://localhost", 1 },
	{ "redis://[::1]:6380/2", 1 },
	{ "unix:/run/redis/redis.sock", 1 },
	{ "redis://:secret@127.0.0.1:6379/0", 1 },
	{ "redis://gochat:pw@127.0.0.1:6379/0", 1 },
	{ "redis://gochat:pw@[::1]:6379", 1 },
	{ "redis://u:p%40ss%3Aw%2Frd%25@h:1/2", 1 },	/* p@ss:w/rd% */
	{ "redis://u:pa:ss@h", 1 },			/* password "pa:ss" */
	{ "redis://u:!$&'()*+,;=-._~@h", 1 },
	{ "http://x", 0 },
	{ "redis://u:pw@127.0.0.1:6379/x", 0 },
	{ "redis://127.0.0.1:70000", 0 },
	{ "redis://user@h", 0 },		/* no password */
	{ "redis://user:@h", 0 },		/* an empty one */
	{ "redis://:@h", 0 },
	{ "redis://:pw@", 0 },			/* no host */
	{ "redis://:p@ss@h", 0 },		/* '@' must be %40 */
	{ "redis://:p%4@h", 0 },		/* broken %XX */
	{ "redis://:p%@h", 0 },
	{ "redis://:p%zz@h", 0 },
	{ "redis://:p%00@h", 0 },		/* NUL */
	{ "redis://:p w@h", 0 },		/* space */
	{ "redis://:p\"w@h", 0 },
	{ "redis://:pw@h:6379/0?x=1", 0 },
	{ "unix::pw@/run/redis.sock", 0 },
	/* Sentinel (SPEC section 11). */
	{ "redis-sentinel://127.0.0.1:26379/mymaster", 1 },
	{ "redis-sentinel://h1,h2:26380,[::1]:5/mymaster/3", 1 },
	{ "redis-sentinel://:pw@h1:1,h2:2/my-master.1", 1 },
	{ "redis-sentinel://u:p%40w@h1/m/0", 1 },
	{ "redis-sentinel://h1:26379", 0 },		/* no master name */
	{ "redis-sentinel://h1:26379/", 0 },
	{ "redis-sentinel:///mymaster", 0 },		/* no sentinel */
	{ "redis-sentinel://h1,/mymaster", 0 },
	{ "redis-sentinel://h1:0/mymaster", 0 },
	{ "redis-sentinel://h1/my master", 0 },
	{ "redis-sentinel://h1/m/x", 0 },
	{ "redis-sentinel://h1/m/0/1", 0 },
	{ "redis-sentinel://a,b,c,d,e,f,g,h,i/m", 0 },	/* over 8 */
	{ "redis-sentinel://user@h1/m", 0 },
};

/* redis_url lists: how many shards bus_urls_count() finds (0: refused). */
static const struct {
	const char	*urls;
	int		 count;
} redis_lists[] = {
	{ "redis://h:1/0", 1 },
	{ "  redis://h:1/0  ", 1 },
	{ "redis://h:1 redis://h:2\tunix:/r.sock", 3 },
	{ "redis-sentinel://s1,s2/m redis://h:2", 2 },
	{ "redis://h:1 http://h:2", 0 },
	{ "", 0 },
	{ "   ", 0 },
	{ "redis://a redis://b redis://c redis://d redis://e redis://f "
	  "redis://g redis://h redis://i redis://j redis://k redis://l "
	  "redis://m redis://n redis://o redis://p", 16 },
	{ "redis://a redis://b redis://c redis://d redis://e redis://f "
	  "redis://g redis://h redis://i redis://j redis://k redis://l "
	  "redis://m redis://n redis://o redis://p redis://q", 0 },
};

/* bus_url_redact(): what a log line or an error message shows. */
static const struct {
	const char	*url;
	const char	*shown;
} redacted[] = {
	{ "redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0" },
	{ "redis://:secret@h:1/0", "redis://:***@h:1/0" },
	{ "redis://gochat:secret@h:1/0", "redis://gochat:***@h:1/0" },
	{ "redis://secret@h", "redis://***@h" },
	{ "redis://u:se@cr/et@h:1", "redis://u:***@h:1" },
	{ "http://u:secret@x", "http://u:***@x" },
	{ "unix:/tmp/r@1.sock", "unix:/tmp/r@1.sock" },
};

static int
load_text(struct conf *c, const char *text, char *err, size_t errlen)
{
	FILE *fp = fopen(tmpl, "w");

	fputs(text, fp);
	fclose(fp);
	return conf_load(c, tmpl, err, errlen);
}

int
main(void)
{
	struct conf c;
	char err[1024], host[256], port[16];
	int fd = mkstemp(tmpl);

	close(fd);

	ok(conf_load(&c, NULL, err, sizeof(err)) == 0, "defaults load");
	ok(strcmp(c.listen, "127.0.0.1:8080") == 0, "default listen");
	ok(c.workers >= 1, "workers = auto resolves to the core count (%d)",
	    c.workers);
	ok(c.max_header_size == 8192 && c.max_body_size == 65536 &&
	    c.max_ws_message == 4096 && c.keepalive_timeout == 60 &&
	    c.header_timeout == 10, "SPEC limits are the defaults");
	ok(c.session_ttl == 86400 && c.history_on_join == 50 &&
	    strcmp(c.redis_prefix, "gochat:") == 0, "SPEC defaults");
	ok(c.login_max_failures == 10 && c.login_window == 900,
	    "SPEC §2: 10 failed logins in 15 minutes (login_max_failures = %d, "
	    "login_window = %d)", c.login_max_failures, c.login_window);

	ok(load_text(&c, "# comment\n\n  listen = 0.0.0.0:9000  # trailing\n"
	    "workers=3\nredis_url = unix:/tmp/r.sock\n", err,
	    sizeof(err)) == 0, "a file with comments and spacing loads: %s",
	    err);
	ok(strcmp(c.listen, "0.0.0.0:9000") == 0 && c.workers == 3,
	    "values are read and trimmed");

	ok(load_text(&c, "listen = x:1\nlisen = 1\n", err, sizeof(err)) == -1,
	    "an unknown key is refused");
	ok(strstr(err, ":2:") != NULL && strstr(err, "lisen") != NULL,
	    "the reason names the line and the key: %s", err);
	ok(load_text(&c, "workers = many\n", err, sizeof(err)) == -1 &&
	    strstr(err, "workers") != NULL, "a bad number is refused: %s",
	    err);
	ok(load_text(&c, "session_ttl = 1\n", err, sizeof(err)) == -1,
	    "an out-of-range value is refused: %s", err);
	ok(load_text(&c, "listen\n", err, sizeof(err)) == -1,
	    "a line without = is refused");
	ok(load_text(&c, "listen = nocolon\n", err, sizeof(err)) == -1,
	    "a listen without a port is refused");
	ok(load_text(&c, "redis_url = http://x\n", err, sizeof(err)) == -1,
	    "a non-redis URL is refused");
	ok(load_text(&c, "redis_url = redis://u:pw@127.0.0.1:6379\n", err,
	    sizeof(err)) == 0, "a redis URL with a user and password is taken: "
	    "%s", err);
	ok(load_text(&c, "redis_url = redis://:sec%23ret@127.0.0.1:6379/0 "
	    "# a '#' in a password is %23\n", err, sizeof(err)) == 0 &&
	    strcmp(c.redis_url, "redis://:sec%23ret@127.0.0.1:6379/0") == 0,
	    "a percent-encoded password survives the comment rule: %s", err);
	ok(load_text(&c, "redis_url = redis://gochat:secret@127.0.0.1:x/0\n",
	    err, sizeof(err)) == -1 && strstr(err, "redis_url") != NULL &&
	    strstr(err, "redis://gochat:***@127.0.0.1:x/0") != NULL &&
	    strstr(err, "secret") == NULL, "a bad redis URL is refused without "
	    "showing its password: %s", err);
	ok(load_text(&c, "redis_url = redis://:se@cret@h\n", err,
	    sizeof(err)) == -1 && strstr(err, "cret") == NULL &&
	    strstr(err, "se@") == NULL, "nor any part of a malformed one: %s",
	    err);
	ok(load_text(&c, "redis_url = redis://127.0.0.1:70000\n", err,
	    sizeof(err)) == -1, "a redis URL port above 65535 is refused");
	ok(load_text(&c, "redis_url = redis://127.0.0.1:6379/x\n", err,
	    sizeof(err)) == -1, "a redis URL with a non-numeric db is refused");
	ok(load_text(&c, "redis_url = redis://[::1]:6380/2\n", err,
	    sizeof(err)) == 0, "a redis URL with a v6 address and a db is "
	    "taken");
	for (size_t i = 0; i < sizeof(redis_urls) / sizeof(redis_urls[0]); i++)
		ok(bus_url_valid(redis_urls[i].url) == redis_urls[i].valid,
		    "redis_url %s is %s", redis_urls[i].url,
		    redis_urls[i].valid ? "taken" : "refused");
	for (size_t i = 0; i < sizeof(redis_lists) / sizeof(redis_lists[0]);
	    i++)
		ok(bus_urls_count(redis_lists[i].urls) == redis_lists[i].count,
		    "redis_url '%s' has %d shards", redis_lists[i].urls,
		    redis_lists[i].count);
	ok(load_text(&c, "redis_url = redis-sentinel://127.0.0.1:26379,"
	    "127.0.0.1:26380/mymaster/0 redis://127.0.0.1:6380/0\n", err,
	    sizeof(err)) == 0, "a Sentinel entry and a plain one are taken: "
	    "%s", err);
	ok(load_text(&c, "redis_url = redis://127.0.0.1:6379 "
	    "redis-sentinel://:secret@h/\n", err, sizeof(err)) == -1 &&
	    strstr(err, "redis-sentinel://") != NULL &&
	    strstr(err, "secret") == NULL, "a list with a bad entry is "
	    "refused, saying what is expected, without its password: %s",
	    err);
	ok(bus_shard_of_key("x", 1) == 0, "one shard holds every key");
	{
		int seen[3] = { 0, 0, 0 };
		char key[32];

		for (int i = 0; i < 300; i++) {
			snprintf(key, sizeof(key), "gochat:session:%d", i);
			seen[bus_shard_of_key(key, 3)]++;
		}
		ok(seen[0] > 50 && seen[1] > 50 && seen[2] > 50,
		    "keys spread over three shards (%d %d %d)", seen[0],
		    seen[1], seen[2]);
	}
	/* CRC16-XMODEM("123456789") = 0x31C3 = 12739: Redis Cluster's. */
	ok(bus_shard_of_key("123456789", 16384) == 12739 % 16384,
	    "a key's shard is its CRC16 (Redis Cluster's) mod shards");
	for (size_t i = 0; i < sizeof(redacted) / sizeof(redacted[0]); i++) {
		char shown[256];

		bus_url_redact(redacted[i].url, shown, sizeof(shown));
		ok(strcmp(shown, redacted[i].shown) == 0, "%s is shown as %s "
		    "(got %s)", redacted[i].url, redacted[i].shown, shown);
	}
	ok(load_text(&c, "log_level = loud\n", err, sizeof(err)) == -1,
	    "an unknown log level is refused");

	setenv("GOCHAT_LISTEN", "127.0.0.1:7000", 1);
	setenv("GOCHAT_WORKERS", "2", 1);
	ok(load_text(&c, "listen = 127.0.0.1:9000\nworkers = 5\n", err,
	    sizeof(err)) == 0 && strcmp(c.listen, "127.0.0.1:7000") == 0 &&
	    c.workers == 2, "GOCHAT_* environment overrides the file");
	setenv("GOCHAT_REDIS_PASSWORD", "se#cret", 1);
	ok(load_text(&c, "", err, sizeof(err)) == 0 &&
	    strcmp(c.redis_password, "se#cret") == 0,
	    "GOCHAT_REDIS_PASSWORD sets redis_password, as it is");
	unsetenv("GOCHAT_REDIS_PASSWORD");
	setenv("GOCHAT_WORKERS", "zero", 1);
	ok(load_text(&c, "", err, sizeof(err)) == -1 &&
	    strstr(err, "GOCHAT_WORKERS") != NULL,
	    "a bad environment value names the variable: %s", err);
	unsetenv("GOCHAT_WORKERS");
	unsetenv("GOCHAT_LISTEN");

	ok(conf_load(&c, "/nonexistent/gochat.conf", err, sizeof(err)) == -1 &&
	    strstr(err, "/nonexistent/gochat.conf") != NULL,
	    "a missing file is named");

	ok(conf_listen_split("[::1]:80", host, sizeof(host), port,
	    sizeof(port)) == 0 && strcmp(host, "::1") == 0 &&
	    strcmp(port, "80") == 0, "IPv6 listen splits");
	ok(conf_listen_split("h:99999", host, sizeof(host), port,
	    sizeof(port)) == -1, "port out of range");

	unlink(tmpl);
	return tap_done();
}
