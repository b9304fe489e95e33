/*
 * log: printf-style logging for every process. Each line carries the time,
 * the level, the role, the instance and the pid. Writes go to stderr or to
 * log_file; log_reopen() reopens the file (SIGUSR1, logrotate).
 */
#ifndef GC_LOG_H
#define GC_LOG_H

#include <stdarg.h>

#include "common/attr.h"

enum log_level {
	LOG_LVL_ERROR,		/* something failed and was not recovered */
	LOG_LVL_WARN,		/* something failed and was worked around */
	LOG_LVL_INFO,		/* lifecycle: start, stop, reload, respawn */
	LOG_LVL_DEBUG		/* per request / per message detail */
};


/* Set the role name shown in each line ("master", "worker 1", "hub"). */
void	log_set_role(const char *role);
/* The instance name shown before the role (conf's instance). */
void	log_set_instance(const char *name);
void	log_set_level(enum log_level level);
/* Parse "error|warn|info|debug"; -1 if unknown. */
int	log_level_parse(const char *name);
/* Log to path (appending) instead of stderr; NULL or "" means stderr. */
int	log_open(const char *path) GC_MUSTCHECK;
/* Reopen the current file after rotation; keeps the old one on failure. */
void	log_reopen(void);
int	log_fd(void);
/*
 * Files this process creates from now on (log and access log) are given
 * to uid/gid (-1: left alone), so that children running as conf's user can
 * reopen them after the master rotated them. Effective only as root.
 */
void	log_set_owner(long uid, long gid);

/*
 * The access log: path, "syslog" (LOG_DAEMON, info) or NULL/"" for none.
 * alog_reopen() follows a rotation; alog_enabled() tells whether lines
 * are wanted; alog_write() writes one line (no newline needed).
 */
int	alog_open(const char *path) GC_MUSTCHECK;
void	alog_reopen(void);
int	alog_enabled(void);
void	alog_write(const char *line, size_t len);

void	log_warn(const char *fmt, ...) GC_PRINTF(1, 2);	/* adds strerror(errno) */
void	log_warnx(const char *fmt, ...) GC_PRINTF(1, 2);
void	log_error(const char *fmt, ...) GC_PRINTF(1, 2);
void	log_info(const char *fmt, ...) GC_PRINTF(1, 2);
void	log_debug(const char *fmt, ...) GC_PRINTF(1, 2);
/* Log and exit(2): for trouble before the loop runs, so the master does not
 * respawn a child that can never work. fatal adds strerror(errno). */
void	fatal(const char *fmt, ...) GC_PRINTF(1, 2) GC_NORETURN;
void	fatalx(const char *fmt, ...) GC_PRINTF(1, 2) GC_NORETURN;

/* Exit codes shared by master and children. */
#define GC_EXIT_OK	0
#define GC_EXIT_ERROR	1	/* a run-time failure: respawn */
#define GC_EXIT_FATAL	2	/* cannot ever work with this config: do not respawn */

#endif
