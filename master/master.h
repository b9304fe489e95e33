/*
 * master: the supervisor. Owns the listening socket and the child table;
 * forks the migration child, the workers and the hub; turns signals into
 * actions in one sigsuspend() loop. Never touches Redis or PostgreSQL.
 */
#ifndef GC_MASTER_H
#define GC_MASTER_H

#include "common/conf.h"

/* Open, bind and listen on conf->listen; the fd, or -1 with err set. */
int	master_listen(const struct conf *conf, char *err, size_t errlen);
/*
 * Catch TERM/INT/HUP/USR1/CHLD as flags and block them (they are taken only
 * while the master sleeps). Call once before anything slow; children
 * forked by master_migrate() and master_run() get the defaults back.
 */
void	master_signals_init(void);
/*
 * Run the migration child and wait for it: 0 when the schema is ready,
 * -1 when it could not be prepared, 1 when TERM or INT asked to stop.
 */
int	master_migrate(const struct conf *conf);
/*
 * Supervise until TERM or INT; returns the exit code. conf_path is re-read
 * on HUP; conf is the configuration already loaded from it.
 */
int	master_run(const char *conf_path, const struct conf *conf,
	    int listen_fd);

#endif
