/*
 * conf: the configuration. `key = value` lines with # comments, then
 * GOCHAT_<KEY> environment overrides. One struct conf is built by the master
 * and inherited by its children across fork(); a reload builds a new one.
 */
#ifndef GC_CONF_H
#define GC_CONF_H

#include <stddef.h>

#include "common/attr.h"

#define CONF_STR_MAX	1024

struct conf {
	char	listen[256];		/* host:port */
	int	workers;		/* >= 1; "auto" is resolved at load time */
	char	database_url[CONF_STR_MAX];
	char	redis_url[CONF_STR_MAX];
	char	redis_password[512];	/* AUTH when redis_url carries none */
	char	redis_prefix[64];	/* "gochat:" */
	int	session_ttl;		/* seconds */
	char	allowed_origins[CONF_STR_MAX];	/* space or comma separated */
	int	history_on_join;
	int	resume_max;		/* events a resume replays at most */
	int	partitions;		/* rooms hash into this many (SPEC 11) */
	int	max_header_size;	/* request line + headers, bytes */
	int	max_body_size;		/* JSON body, bytes */
	int	max_ws_message;		/* WebSocket message, bytes */
	int	keepalive_timeout;	/* idle keep-alive, seconds */
	int	header_timeout;		/* reading one request's head, seconds */
	int	ws_ping_interval;	/* seconds */
	int	ws_output_limit;	/* bytes queued for one WebSocket */
	int	ws_msg_rate;		/* chat messages per second per socket */
	int	ws_msg_burst;		/* ... in bursts of up to this many */
	int	register_max;		/* registrations per address per hour */
	int	rooms_max_per_hour;	/* rooms one user may create per hour */
	int	backend_timeout;	/* seconds a query or command may take */
	int	db_pool_size;		/* PostgreSQL connections per worker */
	int	db_prepare;		/* prepare statements once per session */
	int	scrypt_threads;		/* password hashing threads per worker */
	int	login_max_failures;	/* per window, per account and per address */
	int	login_window;		/* seconds */
	int	log_level;		/* enum log_level */
	char	log_file[CONF_STR_MAX];
	char	pidfile[CONF_STR_MAX];
	char	sql_dir[CONF_STR_MAX];	/* migrations */
	char	web_dir[CONF_STR_MAX];	/* static web client */
	char	instance[64];		/* name in logs and stats; default hostname */
	char	user[64];		/* run workers and hub as this user */
	int	allow_root;		/* let them run as root without a user */
	char	access_log[CONF_STR_MAX];	/* path, "syslog", or empty: off */
	/* Resolved from user at load time (-1 when user is empty). */
	long	user_uid;
	long	user_gid;
};

/* Fill c with the built-in defaults. */
void	conf_defaults(struct conf *c);
/*
 * Load path (NULL: defaults only) over the defaults, then apply GOCHAT_*
 * environment overrides, then validate. Returns 0, or -1 with a reason
 * ("gochat.conf:12: unknown key 'lisen'") in err.
 */
int	conf_load(struct conf *c, const char *path, char *err, size_t errlen)
	    GC_MUSTCHECK;
/* Split listen into host and port; -1 if malformed. */
int	conf_listen_split(const char *listen, char *host, size_t hostlen,
	    char *port, size_t portlen);

#endif
