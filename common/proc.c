/*
 * proc: process titles ("gochat: worker 1" in ps) and role names. Where the
 * system has setproctitle(3) (the BSDs) it is used; elsewhere the argv area,
 * extended over the environment strings that follow it (after moving those
 * to the heap), is overwritten in place, as nginx and PostgreSQL do.
 */
#include "config.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#ifdef HAVE_SYS_PRCTL_H
#include <sys/prctl.h>
#endif

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
