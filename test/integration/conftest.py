"""Fixtures for GoChat's black-box tests: one private PostgreSQL and one
Redis for the whole run (on free loopback ports, under a temporary
directory), the server started from GOCHAT_BIN with its sql/ and web/ from
GOCHAT_SRCDIR, and raw-socket helpers. The knobs (GOCHAT_TEST_KEEP,
GOCHAT_TEST_VERBOSE, GOCHAT_TEST_URL, GOCHAT_TEST_PGBOUNCER) are described
in test/harness.py.

Fixtures:
    workdir        session temp dir (kept with GOCHAT_TEST_KEEP=1)
    pg, redis      the shared PostgreSQL and Redis (harness.Postgres/Redis)
    server         one gochat per test module, test configuration below
    fresh_server   a gochat of the test's own, for tests that signal or kill
                   processes; Redis is emptied first so no earlier server's
                   keys (hub lease, stats) are seen
    make_server    factory: make_server(**conf_overrides, env=..., start=...)
    raw            factory: raw(srv) -> harness.RawHTTP connected to srv
"""

import os
import shutil
import sys
import pathlib
import tempfile

import pytest

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import harness  # noqa: E402

SRCDIR = pathlib.Path(os.environ.get("GOCHAT_SRCDIR") or HERE.parents[1])
BIN = pathlib.Path(os.environ.get("GOCHAT_BIN") or SRCDIR / "gochat")
EXTERNAL = harness.EXTERNAL_URL
# The shared PostgreSQL through PgBouncer in transaction mode, every server
# with db_prepare = no (test/integration/pgbouncer.tap sets it).
PGBOUNCER = harness.PGBOUNCER

# The test configuration: short timeouts so the timeout tests are quick.
HEADER_TIMEOUT = 2
KEEPALIVE_TIMEOUT = 2


def base_conf(pg, redis, port, **overrides):
	conf = {
		"listen": "127.0.0.1:%d" % port,
		"workers": 2,
		"database_url": pg.url,
		"redis_url": redis.url,
		"sql_dir": SRCDIR / "sql",
		"web_dir": SRCDIR / "web",
		"log_level": "info",
		"header_timeout": HEADER_TIMEOUT,
		"keepalive_timeout": KEEPALIVE_TIMEOUT,
		# The suite registers many users from 127.0.0.1, chats fast
		# and creates many rooms: the abuse limits (SPEC section 8)
		# are off here and set low by test_limits.py's own servers.
		"ws_msg_rate": 100000,
		"ws_msg_burst": 1000000,
		"register_max": 1000000,
		"rooms_max_per_hour": 1000000,
	}
	if PGBOUNCER:
		conf["db_prepare"] = "no"
	conf.update(overrides)
	return {k: v for k, v in conf.items() if v is not None}


def needs_own_server():
	"""Skip when testing an external server (GOCHAT_TEST_URL)."""
	if EXTERNAL:
		pytest.skip("needs a server started by the tests (GOCHAT_TEST_URL "
		    "is set)")


@pytest.fixture(scope="session")
def workdir():
	d = pathlib.Path(tempfile.mkdtemp(prefix="gochat-test-"))
	# PostgreSQL runs as the postgres user when we are root: let it in.
	os.chmod(d, 0o711)
	_kept.append(d)
	yield d
	if not harness.KEEP:
		shutil.rmtree(d, ignore_errors=True)


_kept = []
_services = []	# every PostgreSQL and Redis started, for VERBOSE logs


def pytest_terminal_summary(terminalreporter):
	if harness.KEEP and _kept:
		terminalreporter.write_line("GOCHAT_TEST_KEEP: configs, logs and "
		    "data kept in %s" % _kept[0])


def own_service(svc):
	"""The body of a fixture that owns svc (a harness.Postgres or Redis not
	yet started): start it, yield it, stop it; listed for VERBOSE logs."""
	needs_own_server()
	_services.append(svc)
	svc.start()
	yield svc
	svc.stop()


@pytest.fixture(scope="session")
def pg(workdir):
	"""The shared PostgreSQL; with GOCHAT_TEST_PGBOUNCER=1 its url (and
	url_for()) lead through a PgBouncer in transaction mode."""
	for p in own_service(harness.Postgres(workdir / "pg",
	    harness.free_port())):
		if not PGBOUNCER:
			yield p
			continue
		for pooler in own_service(harness.PgBouncer(workdir /
		    "pgbouncer", harness.free_port(), p)):
			p.pooler = pooler
			yield p


@pytest.fixture(scope="session")
def redis(workdir):
	yield from own_service(harness.Redis(workdir / "redis",
	    harness.free_port()))


def _check_bin():
	if not os.access(BIN, os.X_OK):
		pytest.fail("no gochat binary at %s: build it first (make), or set "
		    "GOCHAT_BIN" % BIN, pytrace=False)


_counter = [0]


def _server_dir(workdir, name):
	_counter[0] += 1
	d = workdir / ("%s-%d" % (name, _counter[0]))
	d.mkdir()
	return d


def start_server(workdir, pg, redis, name, env=None, start=True,
    **overrides):
	"""A harness.Server with the test configuration plus overrides (a None
	value removes a key), started unless start is false."""
	_check_bin()
	port = harness.free_port()
	s = harness.Server(BIN, base_conf(pg, redis, port, **overrides),
	    _server_dir(workdir, name), env=env)
	if start:
		s.start()
	return s


def _stop(servers):
	errors = []
	for s in servers:
		try:
			s.stop()
		except harness.HarnessError as e:
			errors.append(str(e))
	if errors:
		pytest.fail("\n\n".join(errors), pytrace=False)


@pytest.fixture(scope="module")
def server(request, workdir):
	"""The module's server (or GOCHAT_TEST_URL's)."""
	if EXTERNAL:
		yield harness.ExternalServer(EXTERNAL)
		return
	pg = request.getfixturevalue("pg")
	redis = request.getfixturevalue("redis")
	s = start_server(workdir, pg, redis, request.module.__name__)
	yield s
	_stop([s])


@pytest.fixture
def make_server(request, workdir):
	"""Factory for servers of the test's own: make_server(**conf) with
	conf overrides (None removes a key), env=, start=False to only build
	it, pg=/redis= for other instances. All are stopped afterwards; one that
	does not stop on SIGTERM fails the test."""
	needs_own_server()
	servers = []
	request.node.gochat_servers = servers

	def make(pg=None, redis=None, env=None, start=True, **overrides):
		"""pg and redis default to the shared ones."""
		pg = pg or request.getfixturevalue("pg")
		redis = redis or request.getfixturevalue("redis")
		s = start_server(workdir, pg, redis, request.node.name[:40]
		    .replace("/", "_").replace("[", "_").replace("]", ""),
		    env=env, start=False, **overrides)
		servers.append(s)
		if start:
			s.start()
		return s
	yield make
	_stop(servers)


@pytest.fixture
def fresh_server(make_server, redis):
	"""A server of this test's own, with an empty Redis."""
	redis.cmd("FLUSHALL")
	return make_server()


@pytest.fixture
def raw():
	"""raw(srv) opens a harness.RawHTTP to srv; all are closed afterwards."""
	conns = []

	def connect(srv, timeout=5):
		c = harness.RawHTTP(srv.host, srv.port, timeout=timeout)
		conns.append(c)
		return c
	yield connect
	for c in conns:
		c.close()


def wait_for(predicate, timeout, interval=0.05):
	"""The first true value of predicate() within timeout, else its last."""
	return harness.wait_for(predicate, timeout, interval)


# --- logs on failure ----------------------------------------------------------

def _servers_of(item):
	found = []
	for v in getattr(item, "funcargs", {}).values():
		if isinstance(v, harness.Server):
			found.append(v)
	for s in getattr(item, "gochat_servers", []):
		if s not in found:
			found.append(s)
	return found


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
	outcome = yield
	rep = outcome.get_result()
	if not rep.failed or rep.when == "teardown":
		return
	for s in _servers_of(item):
		if s.proc is not None:
			rep.sections.append(("gochat log: %s" % s.dir, s.log_tail(60)))
	if harness.VERBOSE:
		for svc in _services:
			rep.sections.append(("%s log: %s" % (type(svc).__name__,
			    svc.logfile), svc.log_text()))


def raw_request(srv, data, responses=1, method="GET", timeout=5):
	"""Send exactly data on a new connection and return that many parsed
	responses (harness.Response: status, headers, body, raw bytes)."""
	return harness.raw_exchange(srv.host, srv.port, data, responses, method,
	    timeout)
