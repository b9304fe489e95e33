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
import time

import pytest

import harness
from conftest import needs_own_server
from test_chat import create_room, join, register, wait_clients
from test_chat import close_websockets  # noqa: F401 (autouse: aborts every WS)
from test_chat_faults import settled, spread

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
	again, and chat on; the room has heard one join of each (none
	repeated), and no client was closed."""
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
	# One join each, the one before the stop (obs hears it if it joined
	# first): the leave, and no join repeated after it.
	for u, _ in victims:
		kinds = _kinds(obs, u)
		assert kinds in (["join", "leave"], ["leave"]), \
		    "%s: presence events %r" % (u["username"], kinds)
	for _, w in everyone:
		assert w.is_open() and w.close_code is None, w.describe()
