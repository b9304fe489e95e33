/*
 * main: the one main() of gochat. Parses the command line, loads the
 * configuration, opens the log and the listening socket, daemonizes when
 * asked, waits for the schema, then hands over to the master loop.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/conf.h"
#include "common/log.h"
#include "common/metrics.h"
#include "common/proc.h"
#include "master/master.h"

#ifndef GC_SYSCONFDIR
#define GC_SYSCONFDIR "/usr/local/etc"
#endif
#ifndef GC_RUNSTATEDIR
#define GC_RUNSTATEDIR "/var/run"
#endif

static void	usage(void) __attribute__((noreturn));
static int	daemonize(void);
static int	pidfile_open(const char *path);
static int	pidfile_write(int fd);
static long	raise_nofile(void);

static void
usage(void)
{
	fprintf(stderr,
	    "usage: gochat [-dtv] [-c file]\n"
	    "  -c file  configuration file (default %s/gochat.conf)\n"
	    "  -d       run in the background and write the pidfile\n"
	    "  -t       check the configuration and exit\n"
	    "  -v       print the version and exit\n",
	    GC_SYSCONFDIR);
	exit(GC_EXIT_FATAL);
}

int
main(int argc, char **argv)
{
	static struct conf conf;
	static char path[1024];	/* a copy: process titles overwrite argv */
	char err[1024];
	int ch, dflag = 0, tflag = 0, fd, pidfd = -1, rc;

	while ((ch = getopt(argc, argv, "c:dhtv")) != -1) {
		switch (ch) {
		case 'c':
			if (strlen(optarg) >= sizeof(path))
				usage();
			snprintf(path, sizeof(path), "%s", optarg);
			break;
		case 'd':
			dflag = 1;
			break;
		case 't':
			tflag = 1;
			break;
		case 'v':
			printf("gochat %s\n", PACKAGE_VERSION);
			return 0;
		default:
			usage();
		}
	}
	if (optind != argc)
		usage();
	if (path[0] == '\0')
		snprintf(path, sizeof(path), "%s/gochat.conf", GC_SYSCONFDIR);
	if (conf_load(&conf, path, err, sizeof(err)) == -1 ||
	    proc_check_user(&conf, geteuid(), err, sizeof(err)) == -1) {
		fprintf(stderr, "gochat: %s\n", err);
		return tflag ? 1 : GC_EXIT_FATAL;
	}
	if (tflag) {
		printf("gochat: configuration %s is valid\n", path);
		return 0;
	}
	if (dflag && conf.pidfile[0] == '\0')
		snprintf(conf.pidfile, sizeof(conf.pidfile),
		    "%s/gochat.pid", GC_RUNSTATEDIR);

	proc_title_init(argc, argv);
	proc_title_set("gochat: master");
	log_set_role("master");
	log_set_level(conf.log_level);
	log_set_instance(conf.instance);
	log_set_owner(conf.user_uid, conf.user_gid);
	if (log_open(conf.log_file) == -1) {
		fprintf(stderr, "gochat: cannot open log file %s: %s\n",
		    conf.log_file, strerror(errno));
		return GC_EXIT_FATAL;
	}
	if (alog_open(conf.access_log) == -1) {
		fprintf(stderr, "gochat: cannot open access log %s: %s\n",
		    conf.access_log, strerror(errno));
		return GC_EXIT_FATAL;
	}
	signal(SIGPIPE, SIG_IGN);
	master_signals_init();

	if ((fd = master_listen(&conf, err, sizeof(err))) == -1) {
		log_error("%s", err);
		return GC_EXIT_FATAL;
	}
	/*
	 * The pidfile is created while stderr is still the terminal: once
	 * daemonized, the parent has exited 0 and nobody would see why.
	 */
	if (conf.pidfile[0] != '\0' &&
	    (pidfd = pidfile_open(conf.pidfile)) == -1) {
		fprintf(stderr, "gochat: cannot create pidfile %s: %s\n",
		    conf.pidfile, strerror(errno));
		if (log_fd() != STDERR_FILENO)
			log_warn("cannot create pidfile %s", conf.pidfile);
		return GC_EXIT_FATAL;
	}
	if (dflag && daemonize() == -1) {
		log_warn("daemonize failed");
		return GC_EXIT_FATAL;
	}
	if (metrics_init(METRICS_SLOTS) == -1)	/* before any child */
		fatal("cannot map the shared memory of /metrics");
	if (pidfd != -1 && pidfile_write(pidfd) == -1) {
		log_warn("cannot write pidfile %s", conf.pidfile);
		unlink(conf.pidfile);
		return GC_EXIT_FATAL;
	}
	log_info("gochat %s starting: listen %s, %d workers, instance %s, "
	    "%ld open files per process", PACKAGE_VERSION, conf.listen,
	    conf.workers, conf.instance, raise_nofile());
	if (conf.user[0] != '\0')
		log_info("workers and hub run as %s (uid %ld)", conf.user,
		    conf.user_uid);
	switch (master_migrate(&conf)) {
	case 0:
		rc = master_run(path, &conf, fd);
		break;
	case 1:		/* TERM or INT during start-up: a clean stop */
		rc = GC_EXIT_OK;
		break;
	default:
		rc = GC_EXIT_ERROR;
	}
	if (conf.pidfile[0] != '\0')
		unlink(conf.pidfile);
	log_info("stopped");
	return rc;
}

/*
 * Every WebSocket is a descriptor: raise the soft limit on open files to
 * the hard one (children inherit it). Returns the limit now in force.
 */
static long
raise_nofile(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == -1)
		return -1;
	if (rl.rlim_cur != rl.rlim_max) {
		struct rlimit want = rl;

		want.rlim_cur = rl.rlim_max;
#ifdef OPEN_MAX
		/* macOS refuses RLIM_INFINITY; its real ceiling is OPEN_MAX. */
		if (want.rlim_cur == RLIM_INFINITY)
			want.rlim_cur = OPEN_MAX;
#endif
		if (setrlimit(RLIMIT_NOFILE, &want) == 0)
			rl = want;
		else
			log_warn("cannot raise the open files limit to %lld",
			    (long long)want.rlim_cur);
	}
	return rl.rlim_cur == RLIM_INFINITY ? -1 : (long)rl.rlim_cur;
}

/* The classic double fork: no controlling terminal, not a group leader. */
static int
daemonize(void)
{
	int fd;

	switch (fork()) {
	case -1:
		return -1;
	case 0:
		break;
	default:
		_exit(0);
	}
	if (setsid() == -1)
		return -1;
	switch (fork()) {
	case -1:
		return -1;
	case 0:
		break;
	default:
		_exit(0);
	}
	if (chdir("/") == -1)
		return -1;
	if ((fd = open("/dev/null", O_RDWR)) == -1)
		return -1;
	dup2(fd, STDIN_FILENO);
	dup2(fd, STDOUT_FILENO);
	if (log_fd() != STDERR_FILENO)
		dup2(fd, STDERR_FILENO);
	if (fd > STDERR_FILENO)
		close(fd);
	return 0;
}

/* Create (or truncate) the pidfile; its fd, or -1 with errno set. */
static int
pidfile_open(const char *path)
{
	return open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
}

/* Write this process's pid (the daemon's, after the forks) and close fd. */
static int
pidfile_write(int fd)
{
	char buf[32];
	int n;

	n = snprintf(buf, sizeof(buf), "%ld\n", (long)getpid());
	if (write(fd, buf, n) != n) {
		close(fd);
		return -1;
	}
	return close(fd);
}
