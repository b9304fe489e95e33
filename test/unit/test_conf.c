/* Unit tests of common/conf.c: the file format, the key table, ranges,
 * environment overrides and the reasons given for bad input. */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/conf.h"
#include "test/unit/tap.h"

static char tmpl[] = "/tmp/gochat-conf-XXXXXX";

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
	    sizeof(err)) == -1, "a redis URL with a password is refused: %s",
	    err);
	ok(load_text(&c, "redis_url = redis://127.0.0.1:70000\n", err,
	    sizeof(err)) == -1, "a redis URL port above 65535 is refused");
	ok(load_text(&c, "redis_url = redis://127.0.0.1:6379/x\n", err,
	    sizeof(err)) == -1, "a redis URL with a non-numeric db is refused");
	ok(load_text(&c, "redis_url = redis://[::1]:6380/2\n", err,
	    sizeof(err)) == 0, "a redis URL with a v6 address and a db is "
	    "taken");
	ok(load_text(&c, "log_level = loud\n", err, sizeof(err)) == -1,
	    "an unknown log level is refused");

	setenv("GOCHAT_LISTEN", "127.0.0.1:7000", 1);
	setenv("GOCHAT_WORKERS", "2", 1);
	ok(load_text(&c, "listen = 127.0.0.1:9000\nworkers = 5\n", err,
	    sizeof(err)) == 0 && strcmp(c.listen, "127.0.0.1:7000") == 0 &&
	    c.workers == 2, "GOCHAT_* environment overrides the file");
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
