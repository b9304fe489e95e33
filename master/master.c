/*
 * master: supervises the children. Signal handlers only set flags; the loop
 * in master_run() sleeps in sigsuspend() and acts on them: reap and respawn
 * (with back-off for a child that keeps dying, never for one that exits
 * GC_EXIT_FATAL), reload by generations on HUP, reopen logs on USR1, and an
 * orderly stop on TERM/INT.
 */
#include "config.h"

#include <sys/types.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <netinet/in.h>

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/conf.h"
#include "common/log.h"
#include "common/proc.h"
#include "common/util.h"
#include "master/master.h"

#define MASTER_MAX_CHILDREN	(256 * 2 + 2)
#define MASTER_STOP_GRACE_MS	8000	/* then SIGKILL */
#define MASTER_QUICK_DEATH_MS	1000	/* dying sooner counts as a failure */
#define MASTER_BACKOFF_MAX_MS	5000

struct child {
	pid_t		 pid;		/* 0: slot free */
	enum proc_role	 role;
	int		 id;		/* worker number from 1; 0 for the hub */
	int		 generation;	/* reload generation it belongs to */
	int		 retiring;	/* sent SIGTERM; not to be respawned */
	int64_t		 started_ms;
};

/* A child slot waiting to be (re)spawned after a back-off. */
struct pending {
	enum proc_role	 role;
	int		 id;
	int		 failures;	/* consecutive quick deaths */
	int64_t		 due_ms;	/* 0: not pending */
};

struct master {
	struct conf	 conf;
	const char	*conf_path;
	int		 listen_fd;
	int		 generation;
	struct child	 children[MASTER_MAX_CHILDREN];
	struct pending	 slots[MASTER_MAX_CHILDREN];	/* [0] hub, [i] worker i */
	int		 stopping;
	int64_t		 stop_deadline;
};

static volatile sig_atomic_t sig_term, sig_hup, sig_usr1, sig_chld, sig_alrm;

static void	master_signal(int);
static pid_t	master_spawn(struct master *, enum proc_role, int);
static void	master_reap(struct master *);
static void	master_reload(struct master *);
static void	master_signal_children(struct master *, int, int);
static int	master_live_children(const struct master *);
static void	master_arm_timer(struct master *);
static void	master_respawn_due(struct master *);

int
master_listen(const struct conf *conf, char *err, size_t errlen)
{
	struct addrinfo hints, *res = NULL, *ai;
	char host[256], port[16];
	int fd = -1, on = 1, gai;

	if (conf_listen_split(conf->listen, host, sizeof(host), port,
	    sizeof(port)) == -1) {
		snprintf(err, errlen, "listen: bad address '%s'", conf->listen);
		return -1;
	}
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
	if ((gai = getaddrinfo(strcmp(host, "*") == 0 ? NULL : host, port,
	    &hints, &res)) != 0) {
		snprintf(err, errlen, "listen %s: %s", conf->listen,
		    gai_strerror(gai));
		return -1;
	}
	for (ai = res; ai != NULL; ai = ai->ai_next) {
		if ((fd = socket(ai->ai_family, ai->ai_socktype,
		    ai->ai_protocol)) == -1)
			continue;
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on));
		if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 &&
		    listen(fd, 1024) == 0)
			break;
		snprintf(err, errlen, "bind/listen %s: %s", conf->listen,
		    strerror(errno));
		close(fd);
		fd = -1;
	}
	freeaddrinfo(res);
	if (fd == -1)
		return -1;
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
	return fd;
}

int
master_migrate(const struct conf *conf)
{
	struct proc_ctx ctx = { ROLE_MIGRATE, 0, -1, conf };
	int status;
	pid_t pid;

	switch ((pid = fork())) {
	case -1:
		log_warn("fork() failed");
		return -1;
	case 0:
		log_set_role("migrate");
		proc_title_set("gochat: migrate");
		_exit(migrate_main(&ctx));
	}
	while (waitpid(pid, &status, 0) == -1)
		if (errno != EINTR) {
			log_warn("waitpid() failed");
			return -1;
		}
	if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
		return 0;
	log_error("the database schema could not be prepared (see above); "
	    "not starting");
	return -1;
}

int
master_run(const char *conf_path, const struct conf *conf, int listen_fd)
{
	static struct master m;
	struct sigaction sa;
	sigset_t set, empty;
	int i;

	m.conf = *conf;
	m.conf_path = conf_path;
	m.listen_fd = listen_fd;
	m.generation = 1;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = master_signal;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
	sigaction(SIGUSR1, &sa, NULL);
	sigaction(SIGCHLD, &sa, NULL);
	sigaction(SIGALRM, &sa, NULL);
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);
	sigaddset(&set, SIGUSR1);
	sigaddset(&set, SIGCHLD);
	sigaddset(&set, SIGALRM);
	sigprocmask(SIG_BLOCK, &set, NULL);
	sigemptyset(&empty);

	for (i = 1; i <= m.conf.workers; i++)
		master_spawn(&m, ROLE_WORKER, i);
	master_spawn(&m, ROLE_HUB, 0);

	for (;;) {
		master_arm_timer(&m);
		if (!sig_term && !sig_hup && !sig_usr1 && !sig_chld &&
		    !sig_alrm)
			sigsuspend(&empty);
		sig_alrm = 0;
		if (sig_chld) {
			sig_chld = 0;
			master_reap(&m);
		}
		if (sig_term && !m.stopping) {
			sig_term = 0;
			log_info("stopping: asking every child to finish");
			m.stopping = 1;
			m.stop_deadline = util_mono_ms() + MASTER_STOP_GRACE_MS;
			master_signal_children(&m, SIGTERM, 0);
		}
		if (m.stopping) {
			if (master_live_children(&m) == 0)
				break;
			if (util_mono_ms() >= m.stop_deadline) {
				log_warnx("children still running after %d ms, "
				    "killing them", MASTER_STOP_GRACE_MS);
				master_signal_children(&m, SIGKILL, 0);
				m.stop_deadline = util_mono_ms() + 60000;
			}
			continue;
		}
		if (sig_hup) {
			sig_hup = 0;
			master_reload(&m);
		}
		if (sig_usr1) {
			sig_usr1 = 0;
			log_reopen();
			log_info("log file reopened");
			master_signal_children(&m, SIGUSR1, 0);
		}
		master_respawn_due(&m);
	}
	close(m.listen_fd);
	return GC_EXIT_OK;
}

static void
master_signal(int sig)
{
	switch (sig) {
	case SIGTERM:
	case SIGINT:
		sig_term = 1;
		break;
	case SIGHUP:
		sig_hup = 1;
		break;
	case SIGUSR1:
		sig_usr1 = 1;
		break;
	case SIGCHLD:
		sig_chld = 1;
		break;
	case SIGALRM:
		sig_alrm = 1;
		break;
	}
}

/*
 * Fork one child of the current generation. The child starts with the
 * master's signal mask and handlers reset, builds its own event loop and
 * never returns here.
 */
static pid_t
master_spawn(struct master *m, enum proc_role role, int id)
{
	struct proc_ctx ctx = { role, id, m->listen_fd, &m->conf };
	struct child *c = NULL;
	sigset_t empty;
	pid_t pid;
	int i;

	for (i = 0; i < MASTER_MAX_CHILDREN; i++)
		if (m->children[i].pid == 0) {
			c = &m->children[i];
			break;
		}
	if (c == NULL) {
		log_warnx("child table full");
		return -1;
	}
	switch ((pid = fork())) {
	case -1:
		log_warn("fork() failed");
		return -1;
	case 0:
		signal(SIGTERM, SIG_DFL);
		signal(SIGINT, SIG_DFL);
		signal(SIGHUP, SIG_DFL);
		signal(SIGUSR1, SIG_DFL);
		signal(SIGCHLD, SIG_DFL);
		signal(SIGALRM, SIG_DFL);
		sigemptyset(&empty);
		sigprocmask(SIG_SETMASK, &empty, NULL);
		if (role == ROLE_WORKER) {
			char name[32];

			snprintf(name, sizeof(name), "worker %d", id);
			log_set_role(name);
			proc_title_set("gochat: worker %d", id);
			_exit(worker_main(&ctx));
		}
		close(m->listen_fd);
		log_set_role("hub");
		proc_title_set("gochat: hub");
		_exit(hub_main(&ctx));
	}
	c->pid = pid;
	c->role = role;
	c->id = id;
	c->generation = m->generation;
	c->retiring = 0;
	c->started_ms = util_mono_ms();
	log_info("started %s %d (pid %ld)", proc_role_name(role), id,
	    (long)pid);
	return pid;
}

/* Collect every exited child; schedule a respawn for those still wanted. */
static void
master_reap(struct master *m)
{
	struct child *c;
	struct pending *p;
	int status, i, code;
	pid_t pid;

	while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
		c = NULL;
		for (i = 0; i < MASTER_MAX_CHILDREN; i++)
			if (m->children[i].pid == pid)
				c = &m->children[i];
		if (c == NULL)
			continue;
		code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
		if (WIFSIGNALED(status))
			log_warnx("%s %d (pid %ld) killed by signal %d",
			    proc_role_name(c->role), c->id, (long)pid,
			    WTERMSIG(status));
		else if (code != 0 || !c->retiring)
			log_warnx("%s %d (pid %ld) exited with code %d",
			    proc_role_name(c->role), c->id, (long)pid, code);
		else
			log_info("%s %d (pid %ld) finished",
			    proc_role_name(c->role), c->id, (long)pid);
		c->pid = 0;
		if (c->retiring || m->stopping)
			continue;
		p = &m->slots[c->role == ROLE_HUB ? 0 : c->id];
		if (code == GC_EXIT_FATAL) {
			log_error("%s %d cannot start with this configuration;"
			    " not restarting it (fix the cause and send HUP)",
			    proc_role_name(c->role), c->id);
			continue;
		}
		p->role = c->role;
		p->id = c->id;
		if (util_mono_ms() - c->started_ms < MASTER_QUICK_DEATH_MS) {
			int64_t delay = 100LL << (p->failures < 6 ?
			    p->failures : 6);

			if (delay > MASTER_BACKOFF_MAX_MS)
				delay = MASTER_BACKOFF_MAX_MS;
			p->failures++;
			p->due_ms = util_mono_ms() + delay;
			log_warnx("%s %d keeps dying; restarting it in %lld ms",
			    proc_role_name(c->role), c->id, (long long)delay);
		} else {
			p->failures = 0;
			p->due_ms = util_mono_ms();
		}
	}
}

static void
master_respawn_due(struct master *m)
{
	int64_t now = util_mono_ms();

	for (int i = 0; i <= m->conf.workers && i < MASTER_MAX_CHILDREN; i++) {
		struct pending *p = &m->slots[i];

		if (p->due_ms != 0 && p->due_ms <= now) {
			p->due_ms = 0;
			if (master_spawn(m, p->role, p->id) == -1)
				p->due_ms = now + 1000;
		}
	}
}

/*
 * HUP: read the configuration again; if it is valid, start a new generation
 * slot by slot (new worker n, then retire old worker n; the hub last), all
 * on the same listening socket, so no connection is refused meanwhile.
 */
static void
master_reload(struct master *m)
{
	struct conf next;
	char err[1024];
	int i, old_gen = m->generation, old_workers = m->conf.workers;

	if (conf_load(&next, m->conf_path, err, sizeof(err)) == -1) {
		log_error("reload: %s; keeping the running configuration", err);
		return;
	}
	if (strcmp(next.listen, m->conf.listen) != 0) {
		log_warnx("reload: listen changed to %s; that takes a restart, "
		    "keeping %s", next.listen, m->conf.listen);
		memcpy(next.listen, m->conf.listen, sizeof(next.listen));
	}
	if (strcmp(next.log_file, m->conf.log_file) != 0 &&
	    log_open(next.log_file) == -1)
		log_warn("reload: cannot open log file %s", next.log_file);
	log_set_level(next.log_level);
	m->conf = next;
	m->generation++;
	log_info("reload: starting generation %d with %d workers",
	    m->generation, m->conf.workers);
	memset(m->slots, 0, sizeof(m->slots));
	for (i = 1; i <= m->conf.workers || i <= old_workers; i++) {
		if (i <= m->conf.workers)
			master_spawn(m, ROLE_WORKER, i);
		for (int j = 0; j < MASTER_MAX_CHILDREN; j++) {
			struct child *c = &m->children[j];

			if (c->pid != 0 && c->role == ROLE_WORKER &&
			    c->id == i && c->generation == old_gen) {
				c->retiring = 1;
				kill(c->pid, SIGTERM);
			}
		}
	}
	master_spawn(m, ROLE_HUB, 0);
	master_signal_children(m, SIGTERM, old_gen);
}

/* Send sig to every child, or only to those of generation gen (non-zero). */
static void
master_signal_children(struct master *m, int sig, int gen)
{
	for (int i = 0; i < MASTER_MAX_CHILDREN; i++) {
		struct child *c = &m->children[i];

		if (c->pid == 0 || (gen != 0 && c->generation != gen))
			continue;
		if (sig == SIGTERM || sig == SIGKILL)
			c->retiring = 1;
		if (kill(c->pid, sig) == -1 && errno != ESRCH)
			log_warn("kill(%ld, %d) failed", (long)c->pid, sig);
	}
}

static int
master_live_children(const struct master *m)
{
	int n = 0;

	for (int i = 0; i < MASTER_MAX_CHILDREN; i++)
		if (m->children[i].pid != 0)
			n++;
	return n;
}

/* Wake sigsuspend() in time for the next back-off or stop deadline. */
static void
master_arm_timer(struct master *m)
{
	struct itimerval it;
	int64_t now = util_mono_ms(), next = 0;

	for (int i = 0; i < MASTER_MAX_CHILDREN; i++)
		if (m->slots[i].due_ms != 0 &&
		    (next == 0 || m->slots[i].due_ms < next))
			next = m->slots[i].due_ms;
	if (m->stopping && (next == 0 || m->stop_deadline < next))
		next = m->stop_deadline;
	memset(&it, 0, sizeof(it));
	if (next != 0) {
		int64_t ms = next - now;

		if (ms < 1)
			ms = 1;
		it.it_value.tv_sec = ms / 1000;
		it.it_value.tv_usec = (ms % 1000) * 1000;
	}
	setitimer(ITIMER_REAL, &it, NULL);
}
