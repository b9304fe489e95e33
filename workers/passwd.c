/*
 * passwd: password hashing on a thread pool. The threads do nothing but
 * scrypt: they take jobs from two mutex-protected queues (checks before
 * hashes) and hand results back to the loop through a pipe, so a burst of
 * logins or sign-ups never delays a request or a chat message on the loop,
 * and sign-ups never make a login wait behind them.
 */
#include "config.h"

#include <sys/queue.h>

#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>
#include <libscrypt.h>

#include "common/log.h"
#include "workers/passwd.h"

/*
 * scrypt cost: N = 2^14, r = 8, p = 1 takes about 75 ms on one core of the
 * development machine (libscrypt's default p = 16 would take over a
 * second). Stored hashes carry their own parameters, so raising these
 * later keeps old hashes valid.
 */
#define PASSWD_SCRYPT_N		16384
#define PASSWD_SCRYPT_R		8
#define PASSWD_SCRYPT_P		1
#define PASSWD_QUEUE_MAX	512	/* waiting jobs per kind; then 503 */
#define PASSWD_MAX		1024

/* A hash of a random password with the same parameters: what an unknown
 * account is checked against, so that it costs as much as a wrong one. */
static const char passwd_dummy_mcf[] =
    "$s1$0e0801$X857KfWvZo9IlzvSnuLtFA==$WJwDKBA550TNDl5TT+KaO0WyOWBlhjKsvpi"
    "OV5tO7iegiQeL+HQvJLOpmei3UIQdKAbG7FauOODtxt1CmOf8gQ==";

/* The kinds of job, in the order the threads serve them. */
enum passwd_kind {
	PASSWD_CHECK,		/* a login: someone is waiting at the door */
	PASSWD_HASH,		/* a registration */
	PASSWD_KINDS
};

struct passwd_job {
	STAILQ_ENTRY(passwd_job) entry;
	enum passwd_kind kind;
	char		 password[PASSWD_MAX + 1];
	char		 mcf[SCRYPT_MCF_LEN + 1];	/* in or out */
	int		 result;	/* hash: 1 ok; check: 1 match */
	passwd_hash_cb	*hash_cb;
	passwd_check_cb	*check_cb;
	void		*arg;
};

STAILQ_HEAD(passwd_jobs, passwd_job);

struct passwd_pool {
	pthread_t	*threads;
	int		 nthreads;
	pthread_mutex_t	 mu;
	pthread_cond_t	 cv;
	struct passwd_jobs todo[PASSWD_KINDS];	/* guarded by mu */
	int		 ntodo[PASSWD_KINDS];	/* guarded by mu */
	struct passwd_jobs done;		/* guarded by mu */
	int		 stopping;		/* guarded by mu */
	int		 wake[2];	/* threads write, the loop reads */
	struct event	*wake_ev;
};

static void	*passwd_thread(void *);
static struct passwd_job *passwd_next(struct passwd_pool *);
static void	 passwd_wake_cb(evutil_socket_t, short, void *);
static int	 passwd_submit(struct passwd_pool *, struct passwd_job *);
static void	 passwd_job_free(struct passwd_job *);
static void	 passwd_jobs_free(struct passwd_jobs *);
static void	 passwd_wipe(void *, size_t);

struct passwd_pool *
passwd_pool_new(struct event_base *base, int threads)
{
	struct passwd_pool *p;
	sigset_t all, old;
	int i;

	if ((p = calloc(1, sizeof(*p))) == NULL)
		return NULL;
	for (i = 0; i < PASSWD_KINDS; i++)
		STAILQ_INIT(&p->todo[i]);
	STAILQ_INIT(&p->done);
	p->wake[0] = p->wake[1] = -1;
	if (pthread_mutex_init(&p->mu, NULL) != 0 ||
	    pthread_cond_init(&p->cv, NULL) != 0 || pipe(p->wake) == -1)
		goto fail;
	fcntl(p->wake[0], F_SETFL, O_NONBLOCK);
	fcntl(p->wake[1], F_SETFL, O_NONBLOCK);
	fcntl(p->wake[0], F_SETFD, FD_CLOEXEC);
	fcntl(p->wake[1], F_SETFD, FD_CLOEXEC);
	p->wake_ev = event_new(base, p->wake[0], EV_READ | EV_PERSIST,
	    passwd_wake_cb, p);
	if (p->wake_ev == NULL || event_add(p->wake_ev, NULL) == -1)
		goto fail;
	if ((p->threads = calloc((size_t)threads, sizeof(pthread_t))) == NULL)
		goto fail;
	/* Signals belong to the loop's thread, not to the hashers. */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	for (i = 0; i < threads; i++) {
		if (pthread_create(&p->threads[i], NULL, passwd_thread,
		    p) != 0)
			break;
		p->nthreads++;
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (p->nthreads == 0)
		goto fail;
	return p;
fail:
	log_warnx("cannot start the password hashing threads");
	passwd_pool_free(p);
	return NULL;
}

void
passwd_pool_free(struct passwd_pool *p)
{
	if (p == NULL)
		return;
	pthread_mutex_lock(&p->mu);
	p->stopping = 1;
	pthread_cond_broadcast(&p->cv);
	pthread_mutex_unlock(&p->mu);
	for (int i = 0; i < p->nthreads; i++)
		pthread_join(p->threads[i], NULL);
	for (int i = 0; i < PASSWD_KINDS; i++)
		passwd_jobs_free(&p->todo[i]);
	passwd_jobs_free(&p->done);
	if (p->wake_ev != NULL)
		event_free(p->wake_ev);
	if (p->wake[0] != -1)
		close(p->wake[0]);
	if (p->wake[1] != -1)
		close(p->wake[1]);
	pthread_cond_destroy(&p->cv);
	pthread_mutex_destroy(&p->mu);
	free(p->threads);
	free(p);
}

int
passwd_hash(struct passwd_pool *p, const char *password, passwd_hash_cb *cb,
    void *arg)
{
	struct passwd_job *j;

	if (strlen(password) > PASSWD_MAX ||
	    (j = calloc(1, sizeof(*j))) == NULL)
		return -1;
	j->kind = PASSWD_HASH;
	memcpy(j->password, password, strlen(password) + 1);
	j->hash_cb = cb;
	j->arg = arg;
	return passwd_submit(p, j);
}

int
passwd_check(struct passwd_pool *p, const char *mcf, const char *password,
    passwd_check_cb *cb, void *arg)
{
	struct passwd_job *j;

	if (mcf == NULL)
		mcf = passwd_dummy_mcf;
	if (strlen(password) > PASSWD_MAX ||
	    strlen(mcf) > SCRYPT_MCF_LEN ||
	    (j = calloc(1, sizeof(*j))) == NULL)
		return -1;
	j->kind = PASSWD_CHECK;
	memcpy(j->password, password, strlen(password) + 1);
	memcpy(j->mcf, mcf, strlen(mcf) + 1);
	/* The dummy never matches, whatever the password. */
	j->result = mcf == passwd_dummy_mcf ? -1 : 0;
	j->check_cb = cb;
	j->arg = arg;
	return passwd_submit(p, j);
}

/* Each kind has its own bound: a full queue of sign-ups never makes a
 * login answer 503. */
static int
passwd_submit(struct passwd_pool *p, struct passwd_job *j)
{
	pthread_mutex_lock(&p->mu);
	if (p->ntodo[j->kind] >= PASSWD_QUEUE_MAX) {
		pthread_mutex_unlock(&p->mu);
		passwd_job_free(j);
		return -1;
	}
	STAILQ_INSERT_TAIL(&p->todo[j->kind], j, entry);
	p->ntodo[j->kind]++;
	pthread_cond_signal(&p->cv);
	pthread_mutex_unlock(&p->mu);
	return 0;
}

/* With mu held: the next job, checks first; NULL when there is none. */
static struct passwd_job *
passwd_next(struct passwd_pool *p)
{
	struct passwd_job *j;

	for (int k = 0; k < PASSWD_KINDS; k++)
		if ((j = STAILQ_FIRST(&p->todo[k])) != NULL) {
			STAILQ_REMOVE_HEAD(&p->todo[k], entry);
			p->ntodo[k]--;
			return j;
		}
	return NULL;
}

/* A hashing thread: scrypt, nothing else; never touches the loop. */
static void *
passwd_thread(void *arg)
{
	struct passwd_pool *p = arg;
	struct passwd_job *j;
	char mcf[SCRYPT_MCF_LEN + 1];
#ifdef SCHED_IDLE
	struct sched_param sp = { 0 };

	/*
	 * Hashing only gets the CPU the event loops leave: a storm of logins
	 * slows logins, not chat. (Linux; elsewhere the threads run at the
	 * loops' priority.)
	 */
	if (pthread_setschedparam(pthread_self(), SCHED_IDLE, &sp) != 0)
		log_warnx("scrypt thread: cannot lower its priority");
#endif

	for (;;) {
		pthread_mutex_lock(&p->mu);
		while ((j = passwd_next(p)) == NULL && !p->stopping)
			pthread_cond_wait(&p->cv, &p->mu);
		if (p->stopping) {
			pthread_mutex_unlock(&p->mu);
			if (j != NULL)
				passwd_job_free(j);
			return NULL;
		}
		pthread_mutex_unlock(&p->mu);

		if (j->kind == PASSWD_HASH) {
			j->result = libscrypt_hash(mcf, j->password,
			    PASSWD_SCRYPT_N, PASSWD_SCRYPT_R,
			    PASSWD_SCRYPT_P) > 0;
			if (j->result)
				memcpy(j->mcf, mcf, sizeof(mcf));
		} else {
			int dummy = j->result == -1;

			/* libscrypt_check writes into the MCF it is given. */
			j->result = libscrypt_check(j->mcf, j->password) > 0 &&
			    !dummy;
		}
		passwd_wipe(j->password, sizeof(j->password));

		pthread_mutex_lock(&p->mu);
		STAILQ_INSERT_TAIL(&p->done, j, entry);
		pthread_mutex_unlock(&p->mu);
		(void)!write(p->wake[1], "", 1);
	}
}

/* On the loop: run the callbacks of finished jobs. */
static void
passwd_wake_cb(evutil_socket_t fd, short what, void *arg)
{
	struct passwd_pool *p = arg;
	struct passwd_jobs done;
	struct passwd_job *j;
	char buf[256];

	(void)what;
	while (read(fd, buf, sizeof(buf)) > 0)
		;
	pthread_mutex_lock(&p->mu);
	STAILQ_INIT(&done);
	STAILQ_CONCAT(&done, &p->done);
	pthread_mutex_unlock(&p->mu);
	while ((j = STAILQ_FIRST(&done)) != NULL) {
		STAILQ_REMOVE_HEAD(&done, entry);
		if (j->kind == PASSWD_HASH)
			j->hash_cb(j->result ? j->mcf : NULL, j->arg);
		else
			j->check_cb(j->result, j->arg);
		passwd_job_free(j);
	}
}

static void
passwd_jobs_free(struct passwd_jobs *jobs)
{
	struct passwd_job *j;

	while ((j = STAILQ_FIRST(jobs)) != NULL) {
		STAILQ_REMOVE_HEAD(jobs, entry);
		passwd_job_free(j);
	}
}

static void
passwd_job_free(struct passwd_job *j)
{
	passwd_wipe(j, sizeof(*j));
	free(j);
}

/* Passwords do not linger in freed memory. */
static void
passwd_wipe(void *p, size_t len)
{
#ifdef HAVE_EXPLICIT_BZERO
	explicit_bzero(p, len);
#else
	volatile unsigned char *v = p;

	while (len--)
		*v++ = 0;
#endif
}
