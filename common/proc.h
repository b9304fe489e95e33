/*
 * proc: process roles, process titles and the entry points of the children.
 * The master forks; the child calls worker_main() or hub_main() and never
 * returns to the master's code.
 */
#ifndef GC_PROC_H
#define GC_PROC_H

#include <sys/types.h>

#include "common/attr.h"

struct conf;

enum proc_role {
	ROLE_MASTER,
	ROLE_WORKER,
	ROLE_HUB,
	ROLE_MIGRATE
};

/* What a child is handed by the master across fork(). */
struct proc_ctx {
	enum proc_role	 role;
	int		 id;		/* worker number from 1; 0 for others */
	int		 listen_fd;	/* workers: the shared listening socket */
	int		 ready_fd;	/* write getpid() here once serving */
	const struct conf *conf;
};

/*
 * Call once from main() after the options are parsed: argv's strings are
 * overwritten by later titles, and environ is moved to the heap.
 */
void	proc_title_init(int argc, char **argv);
/* Set the ps(1) command line, e.g. "gochat: worker 1". */
void	proc_title_set(const char *fmt, ...) GC_PRINTF(1, 2);
const char *proc_role_name(enum proc_role role);
/*
 * The privilege rules of conf->user and allow_root for a master running
 * with effective uid euid: 0, or -1 with the reason in err.
 */
int	proc_check_user(const struct conf *c, uid_t euid, char *err,
	    size_t errlen);
/*
 * In a child, before it touches anything else: become conf->user when
 * running as root. 0, or -1 with the reason in err (then exit
 * GC_EXIT_FATAL: retrying cannot help).
 */
int	proc_drop_privileges(const struct conf *c, char *err, size_t errlen);

/* Entry points: each returns the process exit code (see log.h). */
int	worker_main(const struct proc_ctx *ctx);
int	hub_main(const struct proc_ctx *ctx);
int	migrate_main(const struct proc_ctx *ctx);
/* Tell the master this child is serving (see master_read_ready()). */
void	proc_ready(const struct proc_ctx *ctx);

#endif
