/*
 * passwd: password hashing and checking with libscrypt on a small thread
 * pool, never on the loop; results come back to the loop through a pipe.
 * Two queues: checks (logins) are served before hashes (registrations), so
 * a storm of sign-ups makes a login wait for at most the hashes already
 * running, not for the whole backlog. passwd.c is the only file that
 * includes libscrypt.h.
 */
#ifndef GC_PASSWD_H
#define GC_PASSWD_H

struct event_base;
struct passwd_pool;

/* threads hashing threads; NULL (logged) if none can start. */
struct passwd_pool *passwd_pool_new(struct event_base *base, int threads);
/* Joins the threads; jobs not yet done are dropped without callback. */
void	passwd_pool_free(struct passwd_pool *pool);

/* mcf is the hash to store, or NULL if hashing failed. */
typedef void passwd_hash_cb(const char *mcf, void *arg);
/* match is 1 when the password is right. */
typedef void passwd_check_cb(int match, void *arg);

/*
 * Queue a hash or a check; the callback runs later on the loop. -1 when
 * that kind's queue is full (answer 503). passwd_check with mcf NULL checks
 * against a dummy hash of the same cost, so that an unknown account takes
 * as long as a wrong password.
 */
int	passwd_hash(struct passwd_pool *pool, const char *password,
	    passwd_hash_cb *cb, void *arg) __attribute__((warn_unused_result));
int	passwd_check(struct passwd_pool *pool, const char *mcf,
	    const char *password, passwd_check_cb *cb, void *arg)
	    __attribute__((warn_unused_result));

#endif
