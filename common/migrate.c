/*
 * migrate: the short-lived child that brings the schema up to date before
 * the workers start. Blocking libpq is fine here: nothing else runs in this
 * process. PostgreSQL that is still starting is waited for, briefly.
 */
#include "config.h"

#include <unistd.h>

#include "common/conf.h"
#include "common/db.h"
#include "common/log.h"
#include "common/proc.h"

#define MIGRATE_WAIT_S	30	/* how long to wait for PostgreSQL to answer */

int
migrate_main(const struct proc_ctx *ctx)
{
	char err[1024];

	for (int waited = 0;; waited++) {
		if (db_migrate(ctx->conf->database_url, ctx->conf->sql_dir, err,
		    sizeof(err)) == 0)
			return GC_EXIT_OK;
		if (waited == 0 || waited >= MIGRATE_WAIT_S)
			log_error("migrations: %s", err);
		if (waited >= MIGRATE_WAIT_S)
			return GC_EXIT_FATAL;
		sleep(1);
	}
}
