"""Resume (SPEC.md §9, issue 16): GET /ws/joinRoom/{roomId}?since=<id>, for
§5 and gochat.v2 sockets. The join history is replaced by every room event
after since, oldest first, each with "history": true (messages as they are
now, deleted ones left out, plus the edits and deletes of messages up to
since), then the join event, then live events: no event missing or
repeated, also while others send during the join, across instances and
across a hub killed with SIGKILL. resume_max bounds the replay and a gap
event says what was left out; since is validated before the upgrade.

Clients are test_chat.py's; a resuming client keeps the newest id it has
seen and reconnects with it, as a real one would."""

import os
import signal
import threading
import time

import pytest

from test_chat import create_room, join, register, try_join
from test_hub import wait_leading
from test_v2 import (ack_of, private_redis, send, sent, v2,  # noqa: F401
    wait_type)

ROOM_EVENTS = ("message", "edit", "delete")


def resume(srv, room, user, since, proto=True, wait=True):
	"""A socket of user resuming room after since (v2 unless proto is
	false), once its join has come (with wait)."""
	if proto:
		return v2(srv, room, user, since=since, wait=wait)
	return join(srv, room, user, path="/ws/joinRoom/%s?since=%s" % (room,
	    since), wait=wait)


def room_events(ws):
	with ws.cv:
		return [e for e in ws.events if e.get("type") in ROOM_EVENTS]


def before_join(ws, user):
	"""The events ws got before its own join event."""
	with ws.cv:
		out = []
		for e in ws.events:
			if e.get("type") == "join" and e.get("userId") == user["id"]:
				return out
			out.append(e)
	raise AssertionError("no join event")


@pytest.mark.parametrize("since", ["-1", "abc", "1.5", "", "1e3",
    "99999999999999999999"])
def test_an_invalid_since_is_400_before_the_upgrade(server, since):
	u = register(server)
	room = create_room(server, u)
	ans = try_join(server, room, token=u["token"],
	    path="/ws/joinRoom/%s?since=%s" % (room, since))
	assert ans.status == 400, ans


def test_an_unknown_room_is_still_404(server):
	u = register(server)
	ans = try_join(server, "nosuchroom", token=u["token"],
	    path="/ws/joinRoom/nosuchroom?since=3")
	assert ans.status == 404


@pytest.mark.parametrize("proto", [True, False], ids=["v2", "v1"])
def test_resume_replays_what_came_after_since_then_join_then_live(server,
    proto):
	u, v = register(server), register(server)
	room = create_room(server, u)
	a = v2(server, room, u)
	acks = [sent(a, "m%d" % i) for i in range(6)]
	ws = resume(server, room, v, acks[2]["id"], proto)
	got = before_join(ws, v)
	assert [(e["type"], e["content"], e.get("history")) for e in got] == [
	    ("message", "m%d" % i, True) for i in (3, 4, 5)]
	assert [e["id"] for e in got] == [x["id"] for x in acks[3:]]
	sent(a, "live")
	e = ws.wait_content("live")
	assert "history" not in e
	assert [x["content"] for x in room_events(ws)] == ["m3", "m4", "m5",
	    "live"]


def test_since_0_replays_everything_and_the_newest_nothing(server):
	u = register(server)
	room = create_room(server, u)
	a = v2(server, room, u)
	acks = [sent(a, "m%d" % i) for i in range(3)]
	assert [e["content"] for e in before_join(resume(server, room, u, 0),
	    u)] == ["m0", "m1", "m2"]
	assert before_join(resume(server, room, u, acks[-1]["id"]), u) == []
	assert before_join(resume(server, room, u, 10 ** 9), u) == []


def test_resume_shows_the_current_state_and_the_changes_it_needs(server):
	u, v = register(server), register(server)
	room = create_room(server, u)
	a = v2(server, room, u)
	m1, m2, m3 = (sent(a, c) for c in ("one", "two", "three"))
	since = m3["id"]
	send(a, op="edit", id=m1["id"], content="one!")	# target <= since
	e1 = wait_type(a, "edit")
	send(a, op="delete", id=m2["id"])			# target <= since
	d1 = wait_type(a, "delete")
	m4 = sent(a, "four")
	send(a, op="edit", id=m4["id"], content="four!")	# target > since
	e2 = wait_type(a, "edit", count=2)
	m5 = sent(a, "five")
	send(a, op="delete", id=m5["id"])			# target > since
	wait_type(a, "delete", count=2)
	for proto in (True, False):
		ws = resume(server, room, v, since, proto)
		got = before_join(ws, v)
		assert [(e["type"], e["id"]) for e in got] == [("edit", e1["id"]),
		    ("delete", d1["id"]), ("message", m4["id"])], got
		assert all(e["history"] is True for e in got)
		assert got[0]["target"] == m1["id"] and got[0]["content"] == "one!"
		assert got[1]["target"] == m2["id"] and "content" not in got[1]
		assert got[2]["content"] == "four!" and got[2]["edited"] == e2["ts"]


def test_more_than_resume_max_missing_gives_a_gap_then_the_newest(
    make_server):
	srv = make_server(resume_max=3)
	u = register(srv)
	room = create_room(srv, u)
	a = v2(srv, room, u)
	acks = [sent(a, "m%d" % i) for i in range(7)]
	ws = resume(srv, room, u, acks[0]["id"])
	got = before_join(ws, u)
	assert got[0] == {"type": "gap", "roomId": room, "after": acks[0]["id"],
	    "before": acks[4]["id"]}, got
	assert [e["content"] for e in got[1:]] == ["m4", "m5", "m6"]
	# Exactly resume_max: no gap.
	got = before_join(resume(srv, room, u, acks[3]["id"], False), u)
	assert [e["content"] for e in got] == ["m4", "m5", "m6"]


class Sender(threading.Thread):
	"""Sends n messages through a v2 socket of its own, each acked before
	the next one goes out once window are in flight."""

	def __init__(self, srv, room, user, n, pause=0.002):
		super().__init__(daemon=True)
		self.ws = v2(srv, room, user)
		self.n, self.pause = n, pause
		self.acked = []
		self.error = None

	def run(self):
		try:
			for i in range(self.n):
				send(self.ws, op="send", content="s%d" % i, cid="s%d" % i)
				time.sleep(self.pause)
			for i in range(self.n):
				self.acked.append(ack_of(self.ws, "s%d" % i, timeout=60))
		except Exception as e:		# noqa: BLE001 (reported by the test)
			self.error = e


def follow(srv, room, user, sender, proto, servers=None, interrupt=None):
	"""Reconnect to room over and over with since = the newest id seen,
	until every message of sender is seen; returns the room events seen,
	in order, across all the connections. servers: the instances to go
	round; interrupt(i) runs after connection i (a hub kill, say)."""
	servers = servers or [srv]
	seen, last, i = [], 0, 0
	deadline = time.monotonic() + 90
	while time.monotonic() < deadline:
		ws = resume(servers[i % len(servers)], room, user, last,
		    proto=(proto if proto != "mixed" else i % 2 == 0), wait=False)
		time.sleep(0.05 + 0.03 * (i % 4))
		ws.abort()
		evs = room_events(ws)
		seen += evs
		if evs:
			last = evs[-1]["id"]
		if interrupt:
			interrupt(i)
		i += 1
		if not sender.is_alive() and len(sender.acked) == sender.n and \
		    sum(1 for e in seen if e["type"] == "message") >= sender.n:
			break
	return seen, i


def check_exactly_once(seen, sender, srv, user, room):
	assert sender.error is None, sender.error
	ids = [e["id"] for e in seen]
	assert ids == sorted(set(ids)), "a repeat or a reordering"
	assert [e["content"] for e in seen] == ["s%d" % i for i in
	    range(sender.n)], "a loss"
	assert ids == [a["id"] for a in sender.acked]


@pytest.mark.parametrize("proto", [True, False, "mixed"],
    ids=["v2", "v1", "mixed"])
def test_resume_under_concurrent_sends_loses_and_repeats_nothing(server,
    proto):
	u, v = register(server), register(server)
	room = create_room(server, u)
	sender = Sender(server, room, u, 300)
	sender.start()
	seen, n = follow(server, room, v, sender, proto)
	sender.join(60)
	check_exactly_once(seen, sender, server, v, room)
	assert n > 3


def test_resume_across_two_instances(make_server, pg, redis):
	s1, s2 = make_server(), make_server()
	u, v = register(s1), register(s1)
	room = create_room(s1, u)
	sender = Sender(s1, room, u, 200)
	sender.start()
	seen, n = follow(s1, room, v, sender, "mixed", servers=[s1, s2])
	sender.join(60)
	check_exactly_once(seen, sender, s1, v, room)


def test_resume_across_a_hub_killed_with_sigkill(make_server, private_redis):
	redis = private_redis
	srv = make_server(redis=redis)
	u, v = register(srv), register(srv)
	room = create_room(srv, u)
	sender = Sender(srv, room, u, 300, pause=0.005)
	sender.start()
	kills = []

	def kill(i):
		if i in (3, 12) and len(kills) < 2:
			pid = wait_leading(srv, redis, 10)
			os.kill(pid, signal.SIGKILL)
			kills.append(pid)
			wait_leading(srv, redis, 10, other_than=pid)
	seen, n = follow(srv, room, v, sender, True, interrupt=kill)
	sender.join(60)
	assert len(kills) == 2
	check_exactly_once(seen, sender, srv, v, room)
