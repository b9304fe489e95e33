"""Start-up migrations through PgBouncer in transaction mode (SPEC §6 and
§11): several instances starting at once against an empty database, each
statement of a session possibly on another server connection. Every
instance starts, each migration is applied and recorded once, no error is
logged, no migration lock is left held on a pooled server connection, and
an instance started afterwards does not wait for one. The same directly
against PostgreSQL. (The API and chat tests through PgBouncer are
pgbouncer.tap's.)"""

import os
import re

import pytest

import harness
from conftest import SRCDIR, needs_own_server

INSTANCES = 4

pytestmark = pytest.mark.skipif(not harness.PgBouncer.available(),
    reason="pgbouncer is not installed (Debian: apt-get install pgbouncer)")


@pytest.fixture(scope="module")
def pgbouncer(workdir, pg):
	"""A PgBouncer of this module's own in front of the shared PostgreSQL
	(not its pooler: the other modules' servers do not use it)."""
	needs_own_server()
	b = harness.PgBouncer(workdir / "pgbouncer-migrations",
	    harness.free_port(), pg)
	b.start()
	yield b
	b.stop()


def migration_files():
	return sorted(f for f in os.listdir(SRCDIR / "sql")
	    if re.fullmatch(r"\d{3}_.*\.sql", f))


def advisory_locks(pg, dbname):
	return pg.psql("SELECT count(*) FROM pg_locks l JOIN pg_database d ON "
	    "d.oid = l.database WHERE l.locktype = 'advisory' AND d.datname = "
	    "'%s'" % dbname)


@pytest.mark.parametrize("via", ["pgbouncer", "direct"])
def test_instances_starting_at_once_migrate_an_empty_database_once(
    make_server, pg, pgbouncer, via):
	dbname = "gochat_at_once_%s" % via
	pg.create_database(dbname)
	url = (pgbouncer.url_for(dbname) if via == "pgbouncer" else
	    pg.direct_url_for(dbname))
	servers = [make_server(start=False, database_url=url, db_prepare="no",
	    workers=1, instance="host-%s-%d" % (via, i))
	    for i in range(INSTANCES)]
	for s in servers:
		s.start(wait=False)
	for s in servers:
		s.wait_ready(timeout=30)

	files = migration_files()
	assert files, "no sql/NNN_*.sql found"
	rows = pg.psql("SELECT version, name FROM schema_migrations ORDER BY "
	    "version", dbname=dbname).splitlines()
	assert rows == ["%d|%s" % (int(f[:3]), f) for f in files], rows
	# Applied by one instance each, and nobody failed on the way (the
	# race through a pooler: 'duplicate key value violates unique
	# constraint "pg_type_typname_nsp_index"', then a retry).
	logs = [s.log_text() for s in servers]
	for f in files:
		appliers = [i for i, text in enumerate(logs)
		    if "migrations: applied %s" % f in text]
		assert len(appliers) == 1, (f, appliers)
	for s, text in zip(servers, logs):
		assert "migrations: " not in text.replace("migrations: applied",
		    ""), s.log_tail()
	# No migration lock outlives the start on a pooled server connection,
	# where the next instance's migrations would wait for it for ever.
	assert advisory_locks(pg, dbname) == "0"
	later = make_server(start=False, database_url=url, db_prepare="no",
	    workers=1, instance="host-%s-later" % via)
	later.start(wait=False)
	later.wait_ready(timeout=20)
	assert "migrations: applied" not in later.log_text()
