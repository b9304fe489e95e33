"""Durability said plainly (SPEC §8): an accepted chat message is in Redis
until the hub stores it in PostgreSQL, so it survives a Redis crash only
when Redis keeps an AOF; the harness runs Redis with appendonly yes, and
every process that uses Redis warns at start-up when it has none."""

import os
import re
import signal
import time

import pytest

import harness
from conftest import own_service
from test_chat import call, create_room, join, login, register
from test_chat import close_websockets  # noqa: F401 (autouse: aborts every WS)
from test_chat_faults import settled

AOF_WARNING = "has no AOF (appendonly no)"


@pytest.fixture
def redis_without_aof(workdir):
	"""A Redis of the test's own with appendonly no (and no snapshots)."""
	yield from own_service(harness.Redis(workdir / "redis-no-aof",
	    harness.free_port(), appendonly=False))


@pytest.fixture
def redis_to_kill(workdir):
	"""A Redis of the test's own, with the harness' AOF, to SIGKILL."""
	yield from own_service(harness.Redis(workdir / "redis-to-kill",
	    harness.free_port()))


def aof_warnings(srv):
	"""The pids whose log lines carry the no-AOF warning."""
	return {int(m.group(1)) for line in srv.log_text().splitlines()
	    if AOF_WARNING in line
	    for m in [re.search(r"\[(\d+)\]: ", line)] if m}


def test_every_process_warns_once_when_redis_has_no_aof(make_server,
    redis_without_aof):
	assert "aof_enabled:0" in redis_without_aof.cmd("INFO", "persistence")
	s = make_server(redis=redis_without_aof)
	kids = settled(s)
	pids = {pid for pid, _ in kids}
	assert harness.wait_for(lambda: aof_warnings(s) == pids, 10), \
	    "warned by %r, want the workers and the hub %r:\n%s" % (
	    aof_warnings(s), pids, s.log_tail())
	# Once per process, not once per connection or reconnection.
	redis_without_aof.restart()	# empty: no AOF, no snapshot
	assert harness.wait_for(lambda: set(harness.stats_hashes(
	    redis_without_aof.port, pids)) == pids, 10), "no reconnection"
	lines = [x for x in s.log_text().splitlines() if AOF_WARNING in x]
	assert len(lines) == len(pids), lines
	assert "master" not in "".join(lines), lines


def test_no_warning_when_redis_has_an_aof(make_server, redis):
	assert "aof_enabled:1" in redis.cmd("INFO", "persistence")
	s = make_server()
	settled(s)
	# The hub's lease shows its Redis connection is up; the workers are
	# ready once /health answers (start() waited for it).
	assert harness.wait_for(lambda: redis.cmd("GET", "gochat:hub:leader"),
	    10)
	time.sleep(1)
	assert not aof_warnings(s), s.log_tail()


def test_messages_waiting_for_a_paused_hub_survive_a_redis_crash(
    make_server, redis_to_kill):
	"""The issue's report: hub paused, 20 messages accepted, Redis
	restarted: 19 were lost. With the AOF (appendfsync everysec), a
	SIGKILLed Redis comes back with all of them, and the hub stores and
	publishes every one once it goes on."""
	r = redis_to_kill
	s = make_server(redis=r)
	settled(s)
	a = register(s)
	room = create_room(s, a)
	wa = join(s, room, a)
	hub = s.hubs()
	assert len(hub) == 1
	want = ["kept %d" % i for i in range(20)]
	os.kill(hub[0], signal.SIGSTOP)
	try:
		for c in want:
			wa.send(c)

		def queued():
			entries = r.cmd("XRANGE", "gochat:hub:inbox", "-", "+") or []
			return sum(1 for e in entries if "broadcast" in e[1]) == 20
		assert harness.wait_for(queued, 10), "the inbox never had the 20"
		# appendfsync everysec: give the once-a-second fsync its turn, so
		# what is checked is Redis' AOF, not the page cache's timing.
		time.sleep(1.5)
		r.kill()
		r.start()
	finally:
		os.kill(hub[0], signal.SIGCONT)
	token = [a["token"]]

	def stored():
		"""The room's history; None while the processes reconnect (503),
		or after a new login if the session was lost with Redis' data."""
		try:
			r = call(s, "GET", "/ws/history/%s?limit=200" % room, token[0])
			if r.status_code == 401:
				token[0] = login(s, a)
		except AssertionError:
			return None
		if r.status_code != 200:
			return None
		return [e["content"] for e in r.json()]
	assert harness.wait_for(lambda: stored() == want, 15), \
	    "stored after the Redis crash: %r" % stored()
	# A new connection gets them as history, once each, in order.
	wb = join(s, room, register(s))
	assert [e["content"] for e in wb.messages(history=True)] == want
