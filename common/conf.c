/*
 * conf: reads `key = value` lines (# starts a comment) into struct conf,
 * then applies GOCHAT_<KEY> environment overrides, then checks the whole.
 * The key table below is the single list of keys: defaults, ranges and
 * environment names all come from it.
 */
#include "config.h"

#include <ctype.h>
#include <pwd.h>
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "common/bus.h"
#include "common/conf.h"
#include "common/msg.h"
#include "common/log.h"
#include "common/util.h"

#ifndef GC_PKGDATADIR
#define GC_PKGDATADIR "/usr/local/share/gochat"
#endif

enum conf_type {
	CONF_INT,
	CONF_STR,
	CONF_WORKERS,		/* a number or "auto" */
	CONF_LOGLEVEL,
	CONF_BOOL
};

struct conf_key {
	const char	*name;
	enum conf_type	 type;
	size_t		 offset;
	size_t		 size;		/* CONF_STR: capacity */
	long long	 min, max;	/* CONF_INT */
};

#define KEY_INT(n, lo, hi) \
	{ #n, CONF_INT, offsetof(struct conf, n), 0, lo, hi }
#define KEY_STR(n) \
	{ #n, CONF_STR, offsetof(struct conf, n), \
	  sizeof(((struct conf *)0)->n), 0, 0 }

static const struct conf_key conf_keys[] = {
	KEY_STR(listen),
	{ "workers", CONF_WORKERS, offsetof(struct conf, workers), 0, 1, 256 },
	KEY_STR(database_url),
	KEY_STR(redis_url),
	KEY_STR(redis_password),
	KEY_STR(redis_prefix),
	KEY_INT(session_ttl, 60, 365LL * 86400),
	KEY_STR(allowed_origins),
	KEY_INT(history_on_join, 0, 200),
	KEY_INT(resume_max, 1, 100000),
	KEY_INT(partitions, 1, MSG_PARTITIONS_MAX),
	KEY_INT(max_header_size, 1024, 1024 * 1024),
	KEY_INT(max_body_size, 1024, 16 * 1024 * 1024),
	KEY_INT(max_ws_message, 128, 1024 * 1024),
	KEY_INT(keepalive_timeout, 1, 3600),
	KEY_INT(header_timeout, 1, 3600),
	KEY_INT(ws_ping_interval, 1, 3600),
	KEY_INT(ws_output_limit, 4096, 256 * 1024 * 1024),
	KEY_INT(ws_msg_rate, 1, 100000),
	KEY_INT(ws_msg_burst, 1, 1000000),
	KEY_INT(register_max, 1, 1000000),
	KEY_INT(rooms_max_per_hour, 1, 1000000),
	KEY_INT(backend_timeout, 1, 60),
	KEY_INT(db_pool_size, 1, 64),
	{ "db_prepare", CONF_BOOL, offsetof(struct conf, db_prepare), 0, 0, 1 },
	KEY_INT(scrypt_threads, 1, 64),
	KEY_INT(login_max_failures, 1, 1000000),
	KEY_INT(login_window, 1, 86400),
	{ "log_level", CONF_LOGLEVEL, offsetof(struct conf, log_level), 0,
	  0, 0 },
	KEY_STR(log_file),
	KEY_STR(pidfile),
	KEY_STR(sql_dir),
	KEY_STR(web_dir),
	KEY_STR(instance),
	KEY_STR(user),
	{ "allow_root", CONF_BOOL, offsetof(struct conf, allow_root), 0, 0, 1 },
	KEY_STR(access_log),
};
#define NKEYS	(sizeof(conf_keys) / sizeof(conf_keys[0]))

static int	conf_set(struct conf *, const char *, const char *, char *,
		    size_t);
static int	conf_check(struct conf *, char *, size_t);

void
conf_defaults(struct conf *c)
{
	memset(c, 0, sizeof(*c));
	snprintf(c->listen, sizeof(c->listen), "127.0.0.1:8080");
	c->workers = 0;		/* auto */
	snprintf(c->database_url, sizeof(c->database_url),
	    "postgresql:///gochat");
	snprintf(c->redis_url, sizeof(c->redis_url),
	    "redis://127.0.0.1:6379/0");
	snprintf(c->redis_prefix, sizeof(c->redis_prefix), "gochat:");
	c->session_ttl = 86400;
	c->history_on_join = 50;
	c->resume_max = 1000;
	c->partitions = 1;
	c->max_header_size = 8192;
	c->max_body_size = 65536;
	c->max_ws_message = 4096;
	c->keepalive_timeout = 60;
	c->header_timeout = 10;
	c->ws_ping_interval = 30;
	c->ws_output_limit = 1048576;
	c->ws_msg_rate = 10;
	c->ws_msg_burst = 30;
	c->register_max = 20;
	c->rooms_max_per_hour = 30;
	c->backend_timeout = 5;
	c->db_pool_size = 4;
	c->db_prepare = 1;
	c->scrypt_threads = 1;
	c->login_max_failures = 10;
	c->login_window = 900;
	c->log_level = LOG_LVL_INFO;
	c->user_uid = c->user_gid = -1;
	snprintf(c->sql_dir, sizeof(c->sql_dir), "%s/sql", GC_PKGDATADIR);
	snprintf(c->web_dir, sizeof(c->web_dir), "%s/web", GC_PKGDATADIR);
}

int
conf_load(struct conf *c, const char *path, char *err, size_t errlen)
{
	char line[4096], where[1100], envname[128];
	FILE *fp = NULL;
	int lineno = 0;

	conf_defaults(c);
	if (path != NULL) {
		if ((fp = fopen(path, "r")) == NULL) {
			snprintf(err, errlen, "cannot open %s: %s", path,
			    strerror(errno));
			return -1;
		}
		while (fgets(line, sizeof(line), fp) != NULL) {
			char *p = line, *key, *val, *end;

			lineno++;
			if (strchr(line, '\n') == NULL && !feof(fp)) {
				snprintf(err, errlen, "%s:%d: line too long",
				    path, lineno);
				goto fail;
			}
			if ((end = strchr(p, '#')) != NULL)
				*end = '\0';
			while (isspace((unsigned char)*p))
				p++;
			if (*p == '\0')
				continue;
			key = p;
			if ((val = strchr(p, '=')) == NULL) {
				snprintf(err, errlen, "%s:%d: expected "
				    "'key = value'", path, lineno);
				goto fail;
			}
			*val++ = '\0';
			for (end = val - 2; end >= key &&
			    isspace((unsigned char)*end); end--)
				*end = '\0';
			while (isspace((unsigned char)*val))
				val++;
			end = val + strlen(val);
			while (end > val && isspace((unsigned char)end[-1]))
				*--end = '\0';
			snprintf(where, sizeof(where), "%s:%d", path, lineno);
			if (conf_set(c, key, val, err, errlen) == -1) {
				char reason[512];

				snprintf(reason, sizeof(reason), "%s", err);
				snprintf(err, errlen, "%s: %s", where, reason);
				goto fail;
			}
		}
		fclose(fp);
		fp = NULL;
	}
	for (size_t i = 0; i < NKEYS; i++) {
		const char *v;
		size_t j;

		snprintf(envname, sizeof(envname), "GOCHAT_%s",
		    conf_keys[i].name);
		for (j = 7; envname[j]; j++)
			envname[j] = toupper((unsigned char)envname[j]);
		if ((v = getenv(envname)) == NULL)
			continue;
		if (conf_set(c, conf_keys[i].name, v, err, errlen) == -1) {
			char reason[512];

			snprintf(reason, sizeof(reason), "%s", err);
			snprintf(err, errlen, "%s: %s", envname, reason);
			return -1;
		}
	}
	return conf_check(c, err, errlen);
fail:
	if (fp != NULL)
		fclose(fp);
	return -1;
}

static int
conf_set(struct conf *c, const char *key, const char *val, char *err,
    size_t errlen)
{
	const struct conf_key *k = NULL;
	long long n;
	char *dst;

	for (size_t i = 0; i < NKEYS; i++)
		if (strcmp(conf_keys[i].name, key) == 0)
			k = &conf_keys[i];
	if (k == NULL) {
		snprintf(err, errlen, "unknown key '%s'", key);
		return -1;
	}
	dst = (char *)c + k->offset;
	switch (k->type) {
	case CONF_STR:
		if (strlen(val) >= k->size) {
			snprintf(err, errlen, "%s: value longer than %zu bytes",
			    key, k->size - 1);
			return -1;
		}
		memcpy(dst, val, strlen(val) + 1);
		return 0;
	case CONF_WORKERS:
		if (strcmp(val, "auto") == 0) {
			*(int *)(void *)dst = 0;
			return 0;
		}
		/* FALLTHROUGH */
	case CONF_INT:
		if (util_parse_int(val, k->min, k->max, &n) == -1) {
			snprintf(err, errlen, "%s: expected %s from %lld to "
			    "%lld, got '%s'", key, k->type == CONF_WORKERS ?
			    "'auto' or a number" : "a number", k->min, k->max,
			    val);
			return -1;
		}
		*(int *)(void *)dst = (int)n;
		return 0;
	case CONF_BOOL:
		if (strcasecmp(val, "yes") == 0 || strcasecmp(val, "on") == 0 ||
		    strcasecmp(val, "true") == 0 || strcmp(val, "1") == 0)
			n = 1;
		else if (strcasecmp(val, "no") == 0 ||
		    strcasecmp(val, "off") == 0 ||
		    strcasecmp(val, "false") == 0 || strcmp(val, "0") == 0)
			n = 0;
		else {
			snprintf(err, errlen, "%s: expected yes or no, got "
			    "'%s'", key, val);
			return -1;
		}
		*(int *)(void *)dst = (int)n;
		return 0;
	case CONF_LOGLEVEL:
		if ((n = log_level_parse(val)) == -1) {
			snprintf(err, errlen, "log_level: expected error, warn,"
			    " info or debug, got '%s'", val);
			return -1;
		}
		*(int *)(void *)dst = (int)n;
		return 0;
	}
	return -1;
}

/* Whole-configuration checks, and resolving "auto". */
static int
conf_check(struct conf *c, char *err, size_t errlen)
{
	char host[256], port[16];

	if (conf_listen_split(c->listen, host, sizeof(host), port,
	    sizeof(port)) == -1) {
		snprintf(err, errlen, "listen: expected host:port, got '%s'",
		    c->listen);
		return -1;
	}
	if (c->workers == 0) {
		long n = sysconf(_SC_NPROCESSORS_ONLN);

		c->workers = n < 1 ? 1 : n > 256 ? 256 : (int)n;
	}
	if (!bus_url_valid(c->redis_url)) {
		char shown[CONF_STR_MAX];

		snprintf(err, errlen, "redis_url: expected "
		    "redis://[[user]:password@]host[:port][/db] or "
		    "unix:/path, got '%s'", bus_url_redact(c->redis_url, shown,
		    sizeof(shown)));
		return -1;
	}
	if (c->database_url[0] == '\0') {
		snprintf(err, errlen, "database_url: must not be empty");
		return -1;
	}
	if (c->instance[0] == '\0')
		snprintf(c->instance, sizeof(c->instance), "%.63s",
		    util_hostname());
	c->user_uid = c->user_gid = -1;
	if (c->user[0] != '\0') {
		struct passwd *pw;

		/* The master only: a blocking lookup is fine here. */
		if ((pw = getpwnam(c->user)) == NULL) {
			snprintf(err, errlen, "user: no such user '%s'",
			    c->user);
			return -1;
		}
		c->user_uid = (long)pw->pw_uid;
		c->user_gid = (long)pw->pw_gid;
	}
	return 0;
}

int
conf_listen_split(const char *listen, char *host, size_t hostlen, char *port,
    size_t portlen)
{
	const char *colon = strrchr(listen, ':');
	const char *h = listen;
	size_t hl;
	long long p;

	if (colon == NULL)
		return -1;
	hl = (size_t)(colon - listen);
	if (hl >= 2 && h[0] == '[' && h[hl - 1] == ']') {	/* [::1]:8080 */
		h++;
		hl -= 2;
	}
	if (hl == 0 || hl >= hostlen || strlen(colon + 1) >= portlen ||
	    util_parse_int(colon + 1, 0, 65535, &p) == -1)
		return -1;
	memcpy(host, h, hl);
	host[hl] = '\0';
	snprintf(port, portlen, "%s", colon + 1);
	return 0;
}
