/*
 * master: supervises the children. Signal handlers only set flags; the loop
 * in master_run() sleeps in pselect() (signals unblocked only there) and
 * acts on them: reap and respawn (with back-off for a child that keeps
 * dying, never for one that exits GC_EXIT_FATAL), reload by generations on
 * HUP, reopen logs on USR1, and an orderly stop on TERM/INT. Children tell
 * the master they are ready by writing their pid to the ready pipe.
 *
 * In nginx's shape: what differs between the kinds of children is one row
 * of master_roles[] (entry point, whether it keeps the listening socket,
 * whether it is restarted), and master_fork() is the only fork() of a
 * child, for the migration child as for the workers and the hub.
 */
#include "config.h"

#include <sys/types.h>
#include <sys/socket.h>
#include <sys/select.h>
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
#define MASTER_READY_WAIT_MS	5000	/* a reload stops waiting for a new
					 * worker's readiness after this */
#define MASTER_MIGRATE_GRACE_MS	5000	/* a stopped migration child gets
					 * SIGKILL after this */

/* One kind of child: see master_roles[]. */
struct master_role {
	enum proc_role	 role;
	int		(*main)(const struct proc_ctx *);
	int		 listens;	/* keeps the listening socket */
	int		 respawn;	/* restarted when it dies unasked */
};

static const struct master_role master_roles[] = {
	{ ROLE_WORKER,	worker_main,	1, 1 },
	{ ROLE_HUB,	hub_main,	0, 1 },
	{ ROLE_MIGRATE,	migrate_main,	0, 0 },	/* waited for, at start-up */
};

struct child {
	pid_t		 pid;		/* 0: slot free */
	enum proc_role	 role;
	int		 id;		/* worker number from 1; 0 for the hub */
	int		 generation;	/* reload generation it belongs to */
	int		 retiring;	/* sent SIGTERM; not to be respawned */
	int		 ready;		/* wrote to the ready pipe */
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
	int		 ready_pipe[2];	/* children write their pid when ready */
	int		 stopping;
	int64_t		 stop_deadline;
	/* A reload in progress replaces one worker slot at a time. */
	int		 reloading;
	int		 reload_slot;	/* the worker number being replaced */
	int		 reload_last;	/* highest slot, old or new */
	int		 reload_old_gen;
	pid_t		 reload_wait;	/* new worker whose readiness we await */
	int64_t		 reload_deadline;
};

static volatile sig_atomic_t sig_term, sig_hup, sig_usr1, sig_chld;

static void	master_signal(int);
static void	master_child_signals(void);
static const struct master_role *master_role(enum proc_role);
static pid_t	master_fork(const struct conf *, enum proc_role, int, int,
		    const int *);
static struct child *master_child(struct master *, pid_t);
static struct pending *master_slot(struct master *, enum proc_role, int);
static pid_t	master_spawn(struct master *, enum proc_role, int);
static void	master_reap(struct master *);
static void	master_reload(struct master *);
static void	master_reload_step(struct master *);
static void	master_retire_worker(struct master *, int, int);
static int	master_slot_taken(struct master *, enum proc_role, int);
static void	master_read_ready(struct master *);
static void	master_signal_children(struct master *, int, int);
static int	master_live_children(const struct master *);
static int64_t	master_next_deadline(const struct master *);
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

/*
 * Called once, before anything can take long: from here on the master's
 * signals only set flags and are blocked except while it sleeps, so a
 * TERM during start-up (migrations waiting for PostgreSQL) is acted on
 * rather than killing the master and orphaning the migration child.
 */
void
master_signals_init(void)
{
	struct sigaction sa;
	sigset_t set;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = master_signal;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
	sigaction(SIGUSR1, &sa, NULL);
	sigaction(SIGCHLD, &sa, NULL);
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);
	sigaddset(&set, SIGUSR1);
	sigaddset(&set, SIGCHLD);
	sigprocmask(SIG_BLOCK, &set, NULL);
}

/* In a new child: the default actions and an empty mask again. */
static void
master_child_signals(void)
{
	sigset_t empty;

	signal(SIGTERM, SIG_DFL);
	signal(SIGINT, SIG_DFL);
	signal(SIGHUP, SIG_DFL);
	signal(SIGUSR1, SIG_DFL);
	signal(SIGCHLD, SIG_DFL);
	sigemptyset(&empty);
	sigprocmask(SIG_SETMASK, &empty, NULL);
}

static const struct master_role *
master_role(enum proc_role role)
{
	for (size_t i = 0; i < sizeof(master_roles) / sizeof(master_roles[0]);
	    i++)
		if (master_roles[i].role == role)
			return &master_roles[i];
	fatalx("no child role %d", (int)role);
}

/*
 * Fork a child of role (worker number id, 0 for the others) and return its
 * pid, or -1. The child gets the default signals, keeps listen_fd only if
 * its role serves it and only the write end of ready_pipe (NULL: none),
 * names itself, becomes conf->user and runs the role's entry point, never
 * returning here. Children end with exit(), not _exit(), so that sanitizer
 * builds report their leaks; stdio is flushed first so nothing is written
 * twice.
 */
static pid_t
master_fork(const struct conf *conf, enum proc_role role, int id,
    int listen_fd, const int *ready_pipe)
{
	const struct master_role *r = master_role(role);
	struct proc_ctx ctx = { role, id, r->listens ? listen_fd : -1, -1,
	    conf };
	char name[32], err[256];
	pid_t pid;

	fflush(NULL);
	if ((pid = fork()) == -1) {
		log_warn("fork() failed");
		return -1;
	}
	if (pid != 0)
		return pid;
	master_child_signals();
	if (ready_pipe != NULL) {
		close(ready_pipe[0]);
		ctx.ready_fd = ready_pipe[1];
	}
	if (!r->listens && listen_fd != -1)
		close(listen_fd);
	if (role == ROLE_WORKER)
		snprintf(name, sizeof(name), "worker %d", id);
	else
		snprintf(name, sizeof(name), "%s", proc_role_name(role));
	log_set_role(name);
	proc_title_set("gochat: %s", name);
	if (proc_drop_privileges(conf, err, sizeof(err)) == -1)
		fatalx("%s", err);
	exit(r->main(&ctx));
}

/*
 * HUP and USR1 that arrive meanwhile stay pending for master_run(); TERM
 * or INT stop the child (SIGKILL after a grace period) and end start-up.
 */
int
master_migrate(const struct conf *conf)
{
	struct timespec ts = { 0, 200 * 1000000 };
	int64_t kill_at = 0;
	sigset_t empty;
	int status, stopped = 0;
	pid_t pid, r;

	if (sig_term) {
		sig_term = 0;
		log_info("stopping before the migrations");
		return 1;
	}
	if ((pid = master_fork(conf, ROLE_MIGRATE, 0, -1, NULL)) == -1)
		return -1;
	sigemptyset(&empty);
	for (;;) {
		if ((r = waitpid(pid, &status, WNOHANG)) == pid)
			break;
		if (r == -1 && errno != EINTR) {
			log_warn("waitpid() failed");
			return -1;
		}
		if (sig_term && !stopped) {
			sig_term = 0;
			stopped = 1;
			log_info("stopping during start-up: ending the "
			    "migration child (pid %ld)", (long)pid);
			kill(pid, SIGTERM);
			kill_at = util_mono_ms() + MASTER_MIGRATE_GRACE_MS;
		}
		if (stopped && util_mono_ms() >= kill_at) {
			log_warnx("the migration child (pid %ld) outlived "
			    "SIGTERM; killing it", (long)pid);
			kill(pid, SIGKILL);
			kill_at = util_mono_ms() + 60000;
		}
		/* Signals are blocked but here: none is missed. */
		pselect(0, NULL, NULL, NULL, &ts, &empty);
	}
	sig_chld = 0;
	if (stopped)
		return 1;
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
	struct timespec ts, *tsp;
	sigset_t empty;
	fd_set rfds;
	int64_t next;
	int i;

	m.conf = *conf;
	m.conf_path = conf_path;
	m.listen_fd = listen_fd;
	m.generation = 1;
	if (pipe(m.ready_pipe) == -1) {
		log_warn("pipe() failed");
		return GC_EXIT_FATAL;
	}
	fcntl(m.ready_pipe[0], F_SETFL, O_NONBLOCK);
	fcntl(m.ready_pipe[0], F_SETFD, FD_CLOEXEC);
	fcntl(m.ready_pipe[1], F_SETFD, FD_CLOEXEC);

	master_signals_init();	/* already done by main(); harmless again */
	sigemptyset(&empty);

	for (i = 1; i <= m.conf.workers; i++)
		master_spawn(&m, ROLE_WORKER, i);
	master_spawn(&m, ROLE_HUB, 0);

	for (;;) {
		/* Sleep until a signal, a ready child or the next deadline. */
		next = master_next_deadline(&m);
		tsp = NULL;
		if (next != 0) {
			int64_t ms = next - util_mono_ms();

			ms = ms < 0 ? 0 : ms;
			ts.tv_sec = ms / 1000;
			ts.tv_nsec = (ms % 1000) * 1000000;
			tsp = &ts;
		}
		FD_ZERO(&rfds);
		FD_SET(m.ready_pipe[0], &rfds);
		if (!sig_term && !sig_hup && !sig_usr1 && !sig_chld &&
		    pselect(m.ready_pipe[0] + 1, &rfds, NULL, NULL, tsp,
		    &empty) > 0)
			master_read_ready(&m);
		if (sig_chld) {
			sig_chld = 0;
			master_reap(&m);
		}
		if (sig_term && !m.stopping) {
			sig_term = 0;
			log_info("stopping: asking every child to finish");
			m.stopping = 1;
			m.reloading = 0;
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
		/* A HUP during a reload waits for that reload to finish. */
		if (sig_hup && !m.reloading) {
			sig_hup = 0;
			master_reload(&m);
		}
		if (m.reloading)
			master_reload_step(&m);
		if (sig_usr1) {
			sig_usr1 = 0;
			log_reopen();
			alog_reopen();
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
	}
}

/* The child table's entry of pid; pid 0 finds a free entry. NULL: none. */
static struct child *
master_child(struct master *m, pid_t pid)
{
	for (int i = 0; i < MASTER_MAX_CHILDREN; i++)
		if (m->children[i].pid == pid)
			return &m->children[i];
	return NULL;
}

/* The respawn slot of (role, id): [0] the hub, [n] worker n. */
static struct pending *
master_slot(struct master *m, enum proc_role role, int id)
{
	return &m->slots[role == ROLE_HUB ? 0 : id];
}

/* Fork one child of the current generation and record it. */
static pid_t
master_spawn(struct master *m, enum proc_role role, int id)
{
	struct child *c;
	pid_t pid;

	if ((c = master_child(m, 0)) == NULL) {
		log_warnx("child table full");
		return -1;
	}
	if ((pid = master_fork(&m->conf, role, id, m->listen_fd,
	    m->ready_pipe)) == -1)
		return -1;
	c->pid = pid;
	c->role = role;
	c->id = id;
	c->generation = m->generation;
	c->retiring = 0;
	c->ready = 0;
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
	int status, code;
	pid_t pid;

	while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
		if ((c = master_child(m, pid)) == NULL)
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
		if (c->retiring || m->stopping || !master_role(c->role)->respawn)
			continue;
		p = master_slot(m, c->role, c->id);
		/*
		 * An old-generation worker whose slot the reload has reached
		 * already has its replacement (or is beyond the new count):
		 * respawning it would make two.
		 */
		if (m->reloading && c->role == ROLE_WORKER &&
		    c->generation == m->reload_old_gen &&
		    (c->id <= m->reload_slot || c->id > m->conf.workers))
			continue;
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
 * slot by slot: new worker n, and once it is accepting, retire old worker n;
 * the hub last. All on the same listening socket, so no connection is ever
 * refused, and all but one worker serve throughout.
 */
static void
master_reload(struct master *m)
{
	struct conf next;
	char err[1024];
	int old_workers = m->conf.workers;

	if (conf_load(&next, m->conf_path, err, sizeof(err)) == -1 ||
	    proc_check_user(&next, geteuid(), err, sizeof(err)) == -1) {
		log_error("reload: %s; keeping the running configuration", err);
		return;
	}
	if (strcmp(next.listen, m->conf.listen) != 0) {
		log_warnx("reload: listen changed to %s; that takes a restart, "
		    "keeping %s", next.listen, m->conf.listen);
		memcpy(next.listen, m->conf.listen, sizeof(next.listen));
	}
	log_set_owner(next.user_uid, next.user_gid);
	if (strcmp(next.log_file, m->conf.log_file) != 0 &&
	    log_open(next.log_file) == -1)
		log_warn("reload: cannot open log file %s", next.log_file);
	if (strcmp(next.access_log, m->conf.access_log) != 0 &&
	    alog_open(next.access_log) == -1)
		log_warn("reload: cannot open access log %s", next.access_log);
	log_set_level(next.log_level);
	m->conf = next;
	m->reload_old_gen = m->generation++;
	log_info("reload: starting generation %d with %d workers",
	    m->generation, m->conf.workers);
	memset(m->slots, 0, sizeof(m->slots));
	m->reloading = 1;
	m->reload_slot = 0;
	m->reload_last = m->conf.workers > old_workers ? m->conf.workers :
	    old_workers;
	m->reload_wait = 0;
}

/* Advance the reload as far as it can go without waiting. */
static void
master_reload_step(struct master *m)
{
	for (;;) {
		if (m->reload_wait != 0) {
			struct child *c = master_child(m, m->reload_wait);

			if (c != NULL && !c->ready &&
			    util_mono_ms() < m->reload_deadline)
				return;
			if (c == NULL || !c->ready)
				log_warnx("reload: worker %d is not ready in "
				    "time; going on", m->reload_slot);
			m->reload_wait = 0;
			master_retire_worker(m, m->reload_slot,
			    m->reload_old_gen);
		}
		if (++m->reload_slot > m->reload_last)
			break;
		if (m->reload_slot <= m->conf.workers &&
		    master_slot_taken(m, ROLE_WORKER, m->reload_slot)) {
			/* Its old worker died meanwhile and was respawned in
			 * this generation (or soon will be): done. */
			log_info("reload: worker %d already restarted",
			    m->reload_slot);
			master_retire_worker(m, m->reload_slot,
			    m->reload_old_gen);
		} else if (m->reload_slot <= m->conf.workers) {
			m->reload_wait = master_spawn(m, ROLE_WORKER,
			    m->reload_slot);
			m->reload_deadline = util_mono_ms() +
			    MASTER_READY_WAIT_MS;
			if (m->reload_wait == -1)
				m->reload_wait = 0;
		} else
			master_retire_worker(m, m->reload_slot,
			    m->reload_old_gen);
	}
	/* The new hub stands by until the old one gives the lease back. */
	if (!master_slot_taken(m, ROLE_HUB, 0))
		master_spawn(m, ROLE_HUB, 0);
	master_signal_children(m, SIGTERM, m->reload_old_gen);
	m->reloading = 0;
	log_info("reload: generation %d is running", m->generation);
}

/*
 * 1 if slot (role, id) already has a child of the current generation, live
 * or waiting for its back-off: a respawn after a crash during a reload.
 */
static int
master_slot_taken(struct master *m, enum proc_role role, int id)
{
	const struct pending *p = master_slot(m, role, id);

	if (p->due_ms != 0 && p->role == role && p->id == id)
		return 1;
	for (int i = 0; i < MASTER_MAX_CHILDREN; i++) {
		const struct child *c = &m->children[i];

		if (c->pid != 0 && !c->retiring && c->role == role &&
		    c->id == id && c->generation == m->generation)
			return 1;
	}
	return 0;
}

static void
master_retire_worker(struct master *m, int id, int gen)
{
	for (int j = 0; j < MASTER_MAX_CHILDREN; j++) {
		struct child *c = &m->children[j];

		if (c->pid != 0 && c->role == ROLE_WORKER && c->id == id &&
		    c->generation == gen) {
			c->retiring = 1;
			kill(c->pid, SIGTERM);
		}
	}
}

/* Children write their pid (one atomic write) when they are serving. */
static void
master_read_ready(struct master *m)
{
	struct child *c;
	pid_t pids[64];
	ssize_t n;

	while ((n = read(m->ready_pipe[0], pids, sizeof(pids))) > 0)
		for (size_t k = 0; k < (size_t)n / sizeof(pid_t); k++)
			if (pids[k] > 0 && (c = master_child(m, pids[k])) != NULL)
				c->ready = 1;
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

/* The earliest back-off, stop or reload deadline; 0 for none. */
static int64_t
master_next_deadline(const struct master *m)
{
	int64_t next = 0;

	for (int i = 0; i < MASTER_MAX_CHILDREN; i++)
		if (m->slots[i].due_ms != 0 &&
		    (next == 0 || m->slots[i].due_ms < next))
			next = m->slots[i].due_ms;
	if (m->stopping && (next == 0 || m->stop_deadline < next))
		next = m->stop_deadline;
	if (m->reloading && m->reload_wait != 0 &&
	    (next == 0 || m->reload_deadline < next))
		next = m->reload_deadline;
	return next;
}
