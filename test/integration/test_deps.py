"""Dependencies going away (SPEC.md §1, §2, §5): when Redis or PostgreSQL
stops or crashes, /health says which one is down with a 503, the server
itself stays up (no process dies, `/` is still served), and once the
dependency is back everything recovers by itself within 5 s. These tests
stop and crash their own PostgreSQL and Redis, not the shared ones."""

import time

import pytest
import requests

import harness
from conftest import needs_own_server, own_service, wait_for

HEALTHY = {"status": "ok", "postgres": "ok", "redis": "ok"}

pytestmark = pytest.mark.usefixtures("own_server_only")


@pytest.fixture
def own_server_only():
	needs_own_server()


@pytest.fixture(scope="module")
def private_pg(workdir):
	yield from own_service(harness.Postgres(workdir / "deps-pg",
	    harness.free_port()))


@pytest.fixture(scope="module")
def private_redis(workdir):
	yield from own_service(harness.Redis(workdir / "deps-redis",
	    harness.free_port()))


@pytest.fixture
def deps_server(make_server, private_pg, private_redis):
	# A test that failed half-way may have left one of them down.
	private_pg.start()
	private_redis.start()
	s = make_server(pg=private_pg, redis=private_redis)
	return s


def settled(server):
	"""The master's workers and hub as [(pid, title)], once there are some."""
	def kids():
		return [(p, t) for p, t in server.children()
		    if t.startswith("gochat: worker ") or t == "gochat: hub"]
	found = wait_for(lambda: len(kids()) >= 3 and kids(), 5)
	assert found, "children: %r" % server.children()
	return found


def health(server):
	"""(status, JSON body, seconds taken) of GET /health."""
	t = time.monotonic()
	r = requests.get(server.base + "/health", timeout=10)
	took = time.monotonic() - t
	assert r.headers.get("Content-Type", "").startswith("application/json")
	return r.status_code, r.json(), took


def outage(server, dep, how, expect):
	"""Take dep down (stop or kill), check /health reports expect within
	5 s while nothing else breaks, bring dep back, check recovery within 5 s
	of it being ready again."""
	kids = settled(server)
	assert health(server)[:2] == (200, HEALTHY)

	getattr(dep, how)()
	seen = []

	def down():
		seen.append(health(server))
		return seen[-1][0] == 503
	assert wait_for(down, 5, 0.2), "after 5 s /health still says %r" % (
	    seen[-1][:2],)
	status, body, took = seen[-1]
	assert body["postgres"] == expect["postgres"], body
	assert body["redis"] == expect["redis"], body
	assert body.get("status") != "ok", body
	assert took < 3, "/health took %.1f s to answer during the outage" % took
	r = requests.get(server.base + "/", timeout=5)
	assert r.status_code == 200, "/ not served while a dependency is down"

	dep.start()
	seen.clear()

	def up():
		seen.append(health(server))
		return seen[-1][0] == 200
	assert wait_for(up, 5, 0.1), "5 s after the restart /health says %r" % (
	    seen[-1][:2],)
	assert seen[-1][1] == HEALTHY
	# One worker answering is not recovery: every worker must have
	# reconnected, so ask on fresh connections (each may land on any
	# worker) until 10 answers in a row are healthy, within 5 s more.
	run = []

	def all_up():
		st, body, _ = health(server)
		run.append((st, body))
		if st != 200:
			run.clear()
		return len(run) >= 10
	assert wait_for(all_up, 5, 0.05), "no 10 healthy answers in a row " \
	    "5 s after the first: last %r" % (run[-1:] or seen[-1:])
	assert server.running(), "the master died"
	assert settled(server) == kids, "a process died meanwhile"


@pytest.mark.parametrize("how", ["stop", "kill"])
def test_health_reports_redis_down_and_recovers_by_itself(deps_server,
    private_redis, how):
	outage(deps_server, private_redis, how,
	    {"postgres": "ok", "redis": "down"})


@pytest.mark.parametrize("how", ["stop", "kill"])
def test_health_reports_postgres_down_and_recovers_by_itself(deps_server,
    private_pg, how):
	outage(deps_server, private_pg, how,
	    {"postgres": "down", "redis": "ok"})
