/*
 * proc: process titles ("gochat: worker 1" in ps) and role names. Where the
 * system has setproctitle(3) (the BSDs) it is used; elsewhere the argv area,
 * extended over the environment strings that follow it (after moving those
 * to the heap), is overwritten in place, as nginx and PostgreSQL do.
 */
#include "config.h"

#include <sys/types.h>

#include <errno.h>
#include <grp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#ifdef HAVE_SYS_PRCTL_H
#include <sys/prctl.h>
#endif

#include "common/conf.h"
#include "common/proc.h"

#ifndef HAVE_SETPROCTITLE
extern char **environ;

static char	*title_start;	/* argv[0] */
static size_t	 title_len;	/* bytes we may overwrite */
#endif

void
proc_title_init(int argc, char **argv)
{
#ifndef HAVE_SETPROCTITLE
	char *end;
	int i, n;

	if (argc < 1 || argv[0] == NULL)
		return;
	end = argv[0];
	for (i = 0; i < argc; i++)
		if (argv[i] == end)
			end = argv[i] + strlen(argv[i]) + 1;
	for (n = 0; environ[n] != NULL; n++)
		;
	for (i = 0; i < n; i++)
		if (environ[i] == end)
			end = environ[i] + strlen(environ[i]) + 1;
	/* Move the environment out of the way before it is overwritten. */
	char **env = calloc((size_t)n + 1, sizeof(*env));

	if (env == NULL)
		return;
	for (i = 0; i < n; i++)
		if ((env[i] = strdup(environ[i])) == NULL)
			return;
	environ = env;
	title_start = argv[0];
	title_len = (size_t)(end - argv[0]);
#else
	(void)argc;
	(void)argv;
#endif
}

void
proc_title_set(const char *fmt, ...)
{
	char buf[256];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
#ifdef HAVE_SETPROCTITLE
	setproctitle("-%s", buf);
#else
	if (title_start != NULL && title_len > 1) {
		size_t n = strlen(buf);

		if (n > title_len - 1)
			n = title_len - 1;
		memcpy(title_start, buf, n);
		memset(title_start + n, '\0', title_len - n);
	}
#endif
#if defined(HAVE_PRCTL) && defined(PR_SET_NAME)
	/* The 15-byte comm name shown by top and ps -o comm. */
	{
		const char *shortname = strncmp(buf, "gochat: ", 8) == 0 ?
		    buf + 8 : buf;
		char comm[16];

		snprintf(comm, sizeof(comm), "gochat-%.8s", shortname);
		prctl(PR_SET_NAME, comm, 0, 0, 0);
	}
#endif
}

void
proc_ready(const struct proc_ctx *ctx)
{
	pid_t pid = getpid();

	if (ctx->ready_fd != -1)
		(void)!write(ctx->ready_fd, &pid, sizeof(pid));
}

const char *
proc_role_name(enum proc_role role)
{
	switch (role) {
	case ROLE_MASTER:
		return "master";
	case ROLE_WORKER:
		return "worker";
	case ROLE_HUB:
		return "hub";
	case ROLE_MIGRATE:
		return "migrate";
	}
	return "?";
}

int
proc_check_user(const struct conf *c, uid_t euid, char *err, size_t errlen)
{
	if (c->user[0] == '\0') {
		if (euid == 0 && !c->allow_root) {
			snprintf(err, errlen, "refusing to run the workers and "
			    "the hub as root: set user = <an unprivileged "
			    "user> (or allow_root = yes)");
			return -1;
		}
		return 0;
	}
	if (euid != 0 && (long)euid != c->user_uid) {
		snprintf(err, errlen, "user = %s: gochat must be started as "
		    "root (or as %s) to run its children as %s", c->user,
		    c->user, c->user);
		return -1;
	}
	if (c->user_uid == 0 && !c->allow_root) {
		snprintf(err, errlen, "user = %s is root: set allow_root = yes "
		    "if that is really meant", c->user);
		return -1;
	}
	return 0;
}

int
proc_drop_privileges(const struct conf *c, char *err, size_t errlen)
{
	gid_t gid = (gid_t)c->user_gid;
	uid_t uid = (uid_t)c->user_uid;

	if (c->user[0] == '\0' || geteuid() != 0)
		return 0;
	/* Groups first: once the uid is gone, they cannot change. */
	if (setgroups(1, &gid) == -1 || setgid(gid) == -1 ||
	    setuid(uid) == -1) {
		snprintf(err, errlen, "cannot become user %s (uid %ld, gid %ld):"
		    " %s", c->user, c->user_uid, c->user_gid, strerror(errno));
		return -1;
	}
	if (uid != 0 && (setuid(0) != -1 || seteuid(0) != -1)) {
		snprintf(err, errlen, "could regain root after becoming %s",
		    c->user);
		return -1;
	}
	return 0;
}
