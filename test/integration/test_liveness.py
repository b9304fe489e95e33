"""Workers are never taken for dead while they are alive (issue 18).

A worker's heartbeat is served before everything else in its event loop
(a priority above the rest, and a pass runs a bounded slice of other
callbacks before it looks again), so a burst of closes cannot starve it.
A worker that the hub took for dead all the same (here: stopped with
SIGSTOP past the heartbeat's TTL) keeps its clients: when it runs again
it registers their connections again, presence is rebuilt, and the room
sees no second join event. Every test counts close codes: a client of a
live worker is never closed."""

import os
import signal
import subprocess
import time

import pytest

import harness
from conftest import needs_own_server
from test_chat import create_room, join, register, wait_clients
from test_chat import close_websockets  # noqa: F401 (autouse: aborts every WS)
from test_chat_faults import settled, spread
from test_bench_loadgen import LOADGEN, new_rooms, users_file, websockets_of


pytestmark = pytest.mark.usefixtures("own_server_only")


@pytest.fixture
def own_server_only():
	needs_own_server()


def _kinds(ws, user):
	return [e["type"] for e in ws.events if e.get("userId") == user["id"]
	    and e.get("type") in ("join", "leave")]


def test_a_worker_taken_for_dead_keeps_its_clients(make_server, redis):
	"""Stopped for 5 s, a worker is taken for dead: its users leave
	getClients within SPEC section 5's 5 s and the room hears their
	leaves. After SIGCONT the same connections stay open, are listed
	again, and chat on; the room hears one join of each user when it is
	listed again (none repeated), and no client was closed."""
	redis.cmd("FLUSHALL")
	s = make_server()
	settled(s)
	owner = register(s)
	room = create_room(s, owner)
	by_pid = spread(s, room)
	victim_pid, observer_pid = sorted(by_pid)
	victims, observers = by_pid[victim_pid], by_pid[observer_pid]
	obs = observers[0][1]
	everyone = victims + observers
	last = max((u for u, _ in everyone), key=lambda u: u["id"])
	for _, w in everyone:
		w.wait_presence("join", last)
	os.kill(victim_pid, signal.SIGSTOP)
	t_stop = time.monotonic()
	try:
		# Taken for dead within SPEC section 5's 5 s (plus slack for
		# a loaded machine).
		wait_clients(s, owner, room, [u for u, _ in observers],
		    max(0.5, t_stop + 6 - time.monotonic()),
		    "the stopped worker's users leaving")
		for u, _ in victims:
			obs.wait_presence("leave", u, 2)
		time.sleep(max(0, t_stop + 5 - time.monotonic()))
	finally:
		os.kill(victim_pid, signal.SIGCONT)
	print("worker stopped for %.1f s" % (time.monotonic() - t_stop))
	assert victim_pid in s.workers().values(), "the stopped worker died: " \
	    "this tests one that lives"
	# The same connections are listed again, none closed.
	wait_clients(s, owner, room, [u for u, _ in everyone], 5,
	    "the stopped worker's users listed again")
	for _, w in everyone:
		assert w.is_open(), w.describe()
	# They chat on, both ways.
	victims[0][1].send("still here")
	for _, w in everyone:
		w.wait_content("still here")
	obs.send("welcome back")
	for _, w in everyone:
		w.wait_content("welcome back")
	# The join before the stop (obs hears it if it joined first), the
	# leave, and one join when listed again: paired, none repeated.
	for u, _ in victims:
		kinds = _kinds(obs, u)
		assert kinds in (["join", "leave", "join"], ["leave", "join"]), \
		    "%s: presence events %r" % (u["username"], kinds)
	for _, w in everyone:
		assert w.is_open() and w.close_code is None, w.describe()


@pytest.mark.parametrize("mass,workers", [(30000, 2), (60000, 7)])
def test_a_mass_close_takes_no_worker_for_dead(make_server, redis, pg,
    tmp_path, mass, workers):
	"""30,000 WebSockets on 2 workers (60,000 on 7, sharing the 2 cores
	with the load generator), closed at once (their loadgen processes
	killed): each worker handles thousands of closes. No worker is taken
	for dead (no "no heartbeat" in the log, no "dropped" handled), and the
	watchers kept open are not closed and stay listed."""
	procs = (mass + 14999) // 15000	# at most 20,000 files a process
	addrs = (mass + 4999) // 5000	# 5,000 ephemeral ports an address
	if not LOADGEN.exists():
		pytest.skip("no %s (make test/bench/loadgen)" % LOADGEN)
	redis.cmd("FLUSHALL")
	s = make_server(workers=workers)
	settled(s, workers)
	owner = register(s)
	room = create_room(s, owner)
	# Watchers on both workers (spread over all of them with more).
	if workers == 2:
		watchers = [uw for v in spread(s, room).values() for uw in v]
	else:
		users = [register(s) for _ in range(2 * workers)]
		watchers = [(u, join(s, room, u)) for u in users]
	tokens = users_file(s, tmp_path, 20)
	nrooms = 1000
	prefix = new_rooms(pg, nrooms)
	cmd = [str(LOADGEN), "idle", "-c", str(mass), "-P", str(procs),
	    "-t", "1", "-d", "0", "-T", tokens, "-r", prefix, "--rooms",
	    str(nrooms), "--join-timeout", "90", "--max-pending", "512", "-q",
	    "-b", ",".join("127.0.0.%d" % (i + 1) for i in range(addrs)),
	    "127.0.0.1:%d" % s.port]
	p = subprocess.Popen(cmd, stdout=subprocess.PIPE,
	    stderr=subprocess.DEVNULL, text=True, start_new_session=True)
	try:
		joined = None
		for line in p.stdout:
			if line.startswith("joined "):
				joined = int(line.split()[1])
				break
		assert joined is not None and joined >= mass * 0.95, \
		    "loadgen joined %r of %d: cannot test this" % (joined, mass)
		held = websockets_of(s, redis)
		print("%d joined, the workers hold %d WebSockets" % (joined, held))
		# Every socket closes at once: the kernel closes them all when
		# the load generator's processes die.
		os.killpg(p.pid, signal.SIGKILL)
		t_kill = time.monotonic()
		p.wait(60)
	finally:
		if p.poll() is None:
			os.killpg(p.pid, signal.SIGKILL)
			p.wait(10)
	# Until the closes are done, and a heartbeat TTL (3 s) and two sweeps
	# past that: a starved heartbeat would have lapsed by then.
	harness.wait_for(lambda: websockets_of(s, redis) <= len(watchers), 90)
	print("closes done in %.1f s" % (time.monotonic() - t_kill))
	time.sleep(5)
	log = s.log_text()
	assert "no heartbeat" not in log, "a worker was taken for dead"
	assert "took this worker for dead" not in log
	for _, w in watchers:
		assert w.is_open() and w.close_code is None, w.describe()
	wait_clients(s, owner, room, [u for u, _ in watchers], 5,
	    "the watchers after the mass close")
	watchers[0][1].send("after the storm")
	for _, w in watchers:
		w.wait_content("after the storm")
