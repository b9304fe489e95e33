/*
 * log: one line per event, "2026-11-25T16:20:01.123Z [info] web1 worker
 * 1[4242]: text" (instance, role, pid), to stderr or to log_file. Owns the log file descriptor; every
 * process inherits it across fork() and reopens it itself on SIGUSR1.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"

static void	log_vline(enum log_level, int, const char *, va_list)
		    GC_PRINTF(3, 0);

static char		log_role[32] = "gochat";
static char		log_instance[72];	/* "name " or empty */
static enum log_level	log_level = LOG_LVL_INFO;
static int		log_fdesc = STDERR_FILENO;
static char		log_path[1024];
static long		log_uid = -1, log_gid = -1;
static int		alog_fdesc = -1;
static int		alog_syslog;
static char		alog_path[1024];

static int	log_create(const char *);

static const char *const log_names[] = { "error", "warn", "info", "debug" };

void
log_set_role(const char *role)
{
	snprintf(log_role, sizeof(log_role), "%s", role);
}

void
log_set_instance(const char *name)
{
	snprintf(log_instance, sizeof(log_instance), "%s%s", name,
	    *name != '\0' ? " " : "");
}

void
log_set_level(enum log_level level)
{
	log_level = level;
}

int
log_level_parse(const char *name)
{
	for (size_t i = 0; i < sizeof(log_names) / sizeof(log_names[0]); i++)
		if (strcmp(name, log_names[i]) == 0)
			return (int)i;
	return -1;
}

void
log_set_owner(long uid, long gid)
{
	log_uid = uid;
	log_gid = gid;
}

/* Open path for appending, creating it for the configured owner. */
static int
log_create(const char *path)
{
	int fd;

	fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
	if (fd != -1 && log_uid != -1 && geteuid() == 0)
		(void)fchown(fd, (uid_t)log_uid, (gid_t)log_gid);
	return fd;
}

int
log_open(const char *path)
{
	int fd;

	if (path == NULL || *path == '\0') {
		if (log_fdesc != STDERR_FILENO)
			close(log_fdesc);
		log_fdesc = STDERR_FILENO;
		log_path[0] = '\0';
		return 0;
	}
	if ((fd = log_create(path)) == -1)
		return -1;
	if (log_fdesc != STDERR_FILENO)
		close(log_fdesc);
	log_fdesc = fd;
	snprintf(log_path, sizeof(log_path), "%s", path);
	return 0;
}

void
log_reopen(void)
{
	char path[sizeof(log_path)];

	if (log_path[0] == '\0')
		return;
	memcpy(path, log_path, sizeof(path));
	if (log_open(path) == -1)
		log_warn("cannot reopen log file %s, keeping the old one", path);
}

int
log_fd(void)
{
	return log_fdesc;
}

int
alog_open(const char *path)
{
	int fd = -1;

	if (path != NULL && strcmp(path, "syslog") == 0) {
		openlog("gochat", LOG_PID | LOG_NDELAY, LOG_DAEMON);
		alog_syslog = 1;
	} else if (path != NULL && *path != '\0') {
		if ((fd = log_create(path)) == -1)
			return -1;
		alog_syslog = 0;
	} else
		alog_syslog = 0;
	if (alog_fdesc != -1)
		close(alog_fdesc);
	alog_fdesc = fd;
	snprintf(alog_path, sizeof(alog_path), "%s", path != NULL &&
	    !alog_syslog ? path : "");
	return 0;
}

void
alog_reopen(void)
{
	char path[sizeof(alog_path)];

	if (alog_path[0] == '\0')
		return;
	memcpy(path, alog_path, sizeof(path));
	if (alog_open(path) == -1)
		log_warn("cannot reopen access log %s, keeping the old one",
		    path);
}

int
alog_enabled(void)
{
	return alog_fdesc != -1 || alog_syslog;
}

/*
 * One write(2) per line on an O_APPEND descriptor: lines of several
 * processes never interleave within a line.
 */
void
alog_write(const char *line, size_t len)
{
	char buf[2048];

	if (alog_syslog) {
		syslog(LOG_INFO, "%.*s", (int)len, line);
		return;
	}
	if (alog_fdesc == -1)
		return;
	if (len > sizeof(buf) - 1)
		len = sizeof(buf) - 1;
	memcpy(buf, line, len);
	buf[len++] = '\n';
	(void)write(alog_fdesc, buf, len);
}

/*
 * Format the whole line first and write it with one write(2), so lines of
 * several processes appending to one file never interleave.
 */
static void
log_vline(enum log_level level, int with_errno, const char *fmt, va_list ap)
{
	char line[2048], ts[40];
	int saved = errno, n, m;

	if (level > log_level)
		return;
	util_rfc3339(util_now_ms(), ts, sizeof(ts));
	n = snprintf(line, sizeof(line), "%s [%s] %s%s[%ld]: ", ts,
	    log_names[level], log_instance, log_role, (long)getpid());
	if (n < 0 || (size_t)n >= sizeof(line))
		n = 0;
	m = vsnprintf(line + n, sizeof(line) - n, fmt, ap);
	if (m > 0)
		n += m;
	if ((size_t)n >= sizeof(line) - 2)
		n = sizeof(line) - 3;
	if (with_errno) {
		m = snprintf(line + n, sizeof(line) - n, ": %s",
		    strerror(saved));
		if (m > 0)
			n += m;
		if ((size_t)n >= sizeof(line) - 2)
			n = sizeof(line) - 3;
	}
	line[n++] = '\n';
	(void)!write(log_fdesc, line, n);
	errno = saved;
}

#define LOG_BODY(level, with_errno) do {		\
	va_list ap;					\
	va_start(ap, fmt);				\
	log_vline(level, with_errno, fmt, ap);		\
	va_end(ap);					\
} while (0)

void
log_warn(const char *fmt, ...)
{
	LOG_BODY(LOG_LVL_WARN, 1);
}

void
log_warnx(const char *fmt, ...)
{
	LOG_BODY(LOG_LVL_WARN, 0);
}

void
log_error(const char *fmt, ...)
{
	LOG_BODY(LOG_LVL_ERROR, 0);
}

void
log_info(const char *fmt, ...)
{
	LOG_BODY(LOG_LVL_INFO, 0);
}

void
log_debug(const char *fmt, ...)
{
	LOG_BODY(LOG_LVL_DEBUG, 0);
}

void
fatal(const char *fmt, ...)
{
	LOG_BODY(LOG_LVL_ERROR, 1);
	exit(GC_EXIT_FATAL);
}

void
fatalx(const char *fmt, ...)
{
	LOG_BODY(LOG_LVL_ERROR, 0);
	exit(GC_EXIT_FATAL);
}
