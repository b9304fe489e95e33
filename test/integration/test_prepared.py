"""Prepared statements of the worker's PostgreSQL pool (common/db.c): each
pooled connection prepares a statement the first time it runs it (gc1,
gc2, ...) and executes it prepared afterwards; a connection made again
after PostgreSQL restarts prepares afresh; a plan made stale by a schema
change (the result type of a cached statement changed) is prepared again
and the request still succeeds; a PREPARE that fails answers the request
with the SQL error at once. The evidence is PostgreSQL's own log, with
log_min_duration_statement = 0 on a private PostgreSQL: every parse, bind
and execute message is logged with the statement's name and the backend's
pid, "<unnamed>" for an unnamed one."""

import re

import pytest
import requests

import harness
from conftest import needs_own_server, own_service, wait_for
from test_chat import register

# The text of GET /me's statement ends like this (workers/api_users.c).
ME_TAIL = "FROM users u WHERE u.id = $1"
LINE_RE = re.compile(r"^\[(\d+)\] LOG:  duration: [0-9.]+ ms  "
    r"(parse|bind|execute) (\S+): (.*)$")
N = 20

pytestmark = pytest.mark.usefixtures("own_server_only")


@pytest.fixture
def own_server_only():
	needs_own_server()


@pytest.fixture(scope="module")
def logged_pg(workdir):
	"""A PostgreSQL of this module's own that logs every protocol step."""
	for p in own_service(harness.Postgres(workdir / "prepared-pg",
	    harness.free_port())):
		for sql in ("ALTER SYSTEM SET log_min_duration_statement = 0",
		    "ALTER SYSTEM SET log_line_prefix = '[%p] '",
		    "SELECT pg_reload_conf()"):
			p.psql(sql)
		yield p


def log_offset(pg):
	with open(pg.logfile, "rb") as f:
		return f.seek(0, 2)


def me_steps(pg, offset):
	"""[(pid, step, name)] of GET /me's statement logged since offset."""
	with open(pg.logfile, "rb") as f:
		f.seek(offset)
		text = f.read().decode("utf-8", "replace")
	out = []
	for line in text.splitlines():
		m = LINE_RE.match(line)
		if m and m.group(4).endswith(ME_TAIL):
			out.append((int(m.group(1)), m.group(2), m.group(3)))
	return out


def get_me(server, token, n):
	for _ in range(n):
		r = requests.get(server.base + "/me", headers={"Authorization":
		    "Bearer " + token}, timeout=10)
		assert r.status_code == 200, r.text


def assert_prepared_once_per_session(pg, offset, n):
	"""n GET /me since offset: every one executed prepared, each backend
	parsed it once, so at least one backend executed it repeatedly."""
	assert wait_for(lambda: sum(1 for s in me_steps(pg, offset)
	    if s[1] == "execute") >= n, 5), me_steps(pg, offset)
	steps = me_steps(pg, offset)
	unnamed = [s for s in steps if s[2] == "<unnamed>"]
	assert not unnamed, "GET /me sent unnamed: %r" % unnamed[:5]
	assert all(re.fullmatch(r"gc\d+", s[2]) for s in steps), steps
	pids = {s[0] for s in steps}
	for pid in pids:
		parses = [s for s in steps if s[0] == pid and s[1] == "parse"]
		assert len(parses) == 1, "backend %d parsed GET /me %d times" % (
		    pid, len(parses))
	executes = [s for s in steps if s[1] == "execute"]
	assert len(executes) >= n
	assert len(executes) > len(pids), "no statement was executed twice"
	return pids


def test_statements_prepared_once_and_again_after_postgres_restarts(
    make_server, logged_pg):
	s = make_server(pg=logged_pg, workers=1)
	token = register(s, "prep1")["token"]

	off = log_offset(logged_pg)
	get_me(s, token, N)
	before = assert_prepared_once_per_session(logged_pg, off, N)

	# The sessions, and their prepared statements, end with the server:
	# the reconnected pool must prepare again, not execute names the new
	# sessions never had.
	logged_pg.restart()
	off = log_offset(logged_pg)

	def answers():
		r = requests.get(s.base + "/me", headers={"Authorization":
		    "Bearer " + token}, timeout=10)
		return r.status_code == 200
	assert wait_for(answers, 10, 0.1), "GET /me never recovered"
	get_me(s, token, N)
	after = assert_prepared_once_per_session(logged_pg, off, N)
	assert not before & after, "backend pids survived a restart?"


def test_stale_plan_is_prepared_again(make_server, logged_pg):
	"""A migration that changes a result column's type under a running
	worker: the cached plan fails with "cached plan must not change result
	type"; the pool prepares the text again and the request succeeds."""
	s = make_server(pg=logged_pg, workers=1, db_pool_size=1)
	token = register(s, "prep2")["token"]
	off = log_offset(logged_pg)
	get_me(s, token, 3)
	wait_for(lambda: me_steps(logged_pg, off), 5)
	old = {x[2] for x in me_steps(logged_pg, off)}
	assert len(old) == 1 and old != {"<unnamed>"}, old
	off = log_offset(logged_pg)
	logged_pg.psql("ALTER TABLE users ALTER COLUMN username TYPE "
	    "varchar(32)", dbname="gochat")
	try:
		get_me(s, token, 3)
		steps = me_steps(logged_pg, off)
		parses = [x for x in steps if x[1] == "parse"]
		assert len(parses) == 1, steps
		assert parses[0][2] not in old | {"<unnamed>"}, steps
	finally:
		logged_pg.psql("ALTER TABLE users ALTER COLUMN username TYPE text",
		    dbname="gochat")


def test_failed_prepare_answers_like_an_unnamed_statement(make_server,
    logged_pg):
	"""GET /me's PREPARE fails (a table it reads is missing): the request
	gets the SQL error's 500 at once, as it did unnamed, not a hang; once
	the table is back the same connection prepares it and answers 200."""
	s = make_server(pg=logged_pg, workers=1, db_pool_size=1)
	token = register(s, "prep3")["token"]
	logged_pg.psql("ALTER TABLE posts RENAME TO posts_away", dbname="gochat")
	try:
		for _ in range(2):
			r = requests.get(s.base + "/me", headers={"Authorization":
			    "Bearer " + token}, timeout=5)
			assert r.status_code == 500, r.text
		assert "(SQLSTATE 42P01)" in s.log_tail()
	finally:
		logged_pg.psql("ALTER TABLE posts_away RENAME TO posts",
		    dbname="gochat")
	off = log_offset(logged_pg)
	get_me(s, token, 3)
	assert_prepared_once_per_session(logged_pg, off, 3)


def test_db_prepare_no_sends_every_statement_unnamed(make_server, logged_pg):
	"""db_prepare = no, for a pooler in transaction mode (the next
	transaction may land on a session that never saw the PREPARE): every
	GET /me goes out unnamed, parsed each time, and still answers."""
	s = make_server(pg=logged_pg, workers=1, db_prepare="no")
	token = register(s, "prep4")["token"]
	off = log_offset(logged_pg)
	get_me(s, token, 5)
	assert wait_for(lambda: sum(1 for x in me_steps(logged_pg, off)
	    if x[1] == "execute") >= 5, 5), me_steps(logged_pg, off)
	steps = me_steps(logged_pg, off)
	assert {x[2] for x in steps} == {"<unnamed>"}, steps
	assert sum(1 for x in steps if x[1] == "parse") >= 5, steps
