"""Chat and hub correctness of issue 12 (SPEC.md §8): a WebSocket whose
session is revoked while its upgrade is in flight is closed (1008) once
joined; a message sent right after the 101 reaches its sender live, not
only in the join history; a NUL in a message closes with 1008 (1007 is for
invalid UTF-8); history_on_join is the joiner's instance's, whichever hub
leads; and a hub that lost its leader lease publishes and acknowledges
nothing, whatever its own clock says.

Each test reproduces its finding against the first edition (where it
fails) through the real server, PostgreSQL and Redis."""

import socket
import threading
import time

import pytest
import requests

import harness
from conftest import needs_own_server, wait_for
from test_chat import (WS, CLOSE_POLICY, OP_TEXT, call, close_websockets,
    create_room, encode_frame, join, new_room_id, open_socket, read_head,
    register, unique, upgrade_request)
from test_hub import (INBOX, P, Sub, after_renewal, new_room, pipeline,
    start, wait_leading)

__all__ = ["close_websockets"]	# autouse: every socket is gone after a test


# --- 7b: NUL ---------------------------------------------------------------

def test_a_nul_in_a_message_closes_with_1008_and_is_not_stored(server):
	"""NUL is valid UTF-8, so not 1007 (RFC 6455 keeps that for invalid
	data): it is a message the server refuses by policy, 1008."""
	user = register(server)
	room = create_room(server, user)
	ws = join(server, room, user)
	ws.send_frame(OP_TEXT, b"before\x00after")
	assert ws.wait_closed() == CLOSE_POLICY, ws.describe()
	other = join(server, room, user)
	other.send("still here")
	other.wait_content("still here")
	assert not [e for e in other.messages() if "\x00" in e["content"]]


# --- 7a: one's own message, live --------------------------------------------

def test_a_message_sent_right_after_the_101_reaches_its_sender_live(server):
	"""Fresh rooms (the worker is not subscribed yet), joined and written
	to at once: every sender gets its message as a live event (no
	"history"), after its join event, and exactly once."""
	user = register(server)
	rooms = [create_room(server, user) for _ in range(200)]
	socks = []
	for i, room in enumerate(rooms):
		ws = WS.connect(server, room, token=user["token"], label=room)
		ws.send("first words %d" % i)
		socks.append(ws)
	missed = []
	for i, ws in enumerate(socks):
		ws.wait_presence("join", user, timeout=10)
		want = "first words %d" % i
		try:
			ws.wait(lambda: [e for e in ws.messages(history=False)
			    if e["content"] == want], 5, "the live copy of %r" % want)
		except AssertionError:
			missed.append(ws.describe())
			continue
		mine = [e for e in ws.messages() if e["content"] == want]
		assert len(mine) == 1, mine
		kinds = [e["type"] for e in ws.events]
		assert kinds.index("join") < kinds.index("message"), kinds
	assert not missed, "%d of %d senders never got their message live:\n%s" % (
	    len(missed), len(socks), "\n".join(missed[:5]))


# --- 4: revocation without a window -----------------------------------------

def revoke(srv, how, user):
	if how == "logout":
		r = call(srv, "POST", "/logout", user)
		assert r.status_code == 202, r.text
	else:
		r = call(srv, "DELETE", "/delete", user)
		assert r.status_code == 204, r.text


def race(srv, room, how):
	"""Upgrades to room sent one after the other from four threads,
	before, while and just after a new user's session is revoked (how);
	returns (WS of those answered 101, how many were refused 401)."""
	user = register(srv)
	socks, done = [], threading.Event()

	def upgrade_stream():
		after = 0
		while len(socks) < 1000 and after < 40:
			s = open_socket(srv)
			req, _ = upgrade_request(srv, "/ws/joinRoom/%s" % room,
			    token=user["token"])
			s.sendall(req)
			socks.append(s)
			if done.is_set():
				after += 1
	senders = [threading.Thread(target=upgrade_stream) for _ in range(4)]
	for t in senders:
		t.start()
	assert wait_for(lambda: len(socks) >= 40, 10)
	revoke(srv, how, user)
	done.set()
	for t in senders:
		t.join()
	joined, refused = [], 0
	for s in socks:
		ans, rest = read_head(s, timeout=10)
		if ans.status == 101:
			joined.append(WS(s, rest, label="raced"))
		else:
			assert ans.status == 401, (ans.status, ans.body)
			refused += 1
			s.close()
	return joined, refused


# A deletion is one PostgreSQL transaction: fewer upgrades straddle its
# control event than a logout's, so it is raced more often.
@pytest.mark.parametrize("how,rounds", [("logout", 1), ("delete", 3)])
def test_sockets_whose_upgrade_raced_the_revocation_are_closed(server, how,
    rounds):
	"""Hundreds of upgrades in flight while the session is revoked: each
	either is refused (401) or, joined, is closed with 1008; none stays
	open and chatting."""
	owner = register(server)
	room = create_room(server, owner)
	watcher = join(server, room, owner)
	left, codes, njoined = [], set(), 0
	for _ in range(rounds):
		joined, refused = race(server, room, how)
		deadline = time.monotonic() + 10
		stayed = []
		for ws in joined:
			try:
				codes.add(ws.wait_closed(max(0.1, deadline -
				    time.monotonic())))
			except AssertionError:
				stayed.append(ws)
		for ws in stayed:	# what a ghost could do: chat on
			try:
				ws.send("ghost")
			except OSError:
				pass
		print("\n%s: %d upgrades answered 101, %d refused, %d left "
		    "open" % (how, len(joined), refused, len(stayed)))
		left += [ws.describe() for ws in stayed]
		njoined += len(joined)
		for ws in joined:
			ws.abort()
	assert not left, "%d of %d joined sockets stayed open after the %s" % (
	    len(left), njoined, how)
	assert codes <= {CLOSE_POLICY}, sorted(codes)
	time.sleep(0.5)
	assert not [e for e in watcher.messages() if e["content"] == "ghost"]


# --- the tests below start hubs of their own ---------------------------------

@pytest.fixture
def alone(make_server, server):
	"""The module's server stopped: its hub would race these tests' own for
	the lease on the flushed Redis (any hub takes a free lease at its next
	tick) and sometimes win, most often under AddressSanitizer."""
	server.stop()


# --- 7d: history_on_join per instance --------------------------------------

@pytest.mark.parametrize("leader", ["five", "default"])
def test_history_on_join_is_the_joiners_instance_s(alone, make_server, redis,
    pg, leader):
	"""Two instances sharing PostgreSQL and Redis, one with
	history_on_join = 5, one with the default 50; whichever hub leads,
	a client gets its own instance's number of messages."""
	confs = {"five": dict(instance="host-five", history_on_join=5),
	    "default": dict(instance="host-default")}
	first = start(make_server, redis, pg, **confs[leader])
	other = "default" if leader == "five" else "five"
	second = make_server(start=False, workers=1, **confs[other])
	second.start()
	srv = {leader: first, other: second}
	wait_leading(first, redis, 10)
	user = register(first)
	room = create_room(first, user)
	pipeline(redis.port, [["XADD", INBOX, "*", "op", "broadcast", "room",
	    room, "username", "ops", "content", "m%d" % i] for i in range(20)])
	# (An entry another test's hub was handed may come a few seconds
	# late, with a later id: expect the stored order, not the sent one.)
	history = lambda: call(first, "GET", "/ws/history/%s" % room,
	    user).json()
	assert wait_for(lambda: len(history()) == 20, 15)
	stored = [e["content"] for e in history()]
	assert sorted(stored) == sorted("m%d" % i for i in range(20))
	for which, want in (("five", 5), ("default", 20), ("five", 5)):
		ws = join(srv[which], room, user)
		got = [e["content"] for e in ws.messages(history=True)]
		assert got == stored[-want:], (which, got)
		ws.close()


# --- 9: a hub that lost its lease is fenced off ------------------------------

def test_a_hub_whose_lease_was_taken_publishes_and_acknowledges_nothing(
    alone, make_server, redis, pg):
	"""The lease is taken from the leading hub just after it renewed it (as
	a Redis failover or another hub would), so by its own clock it still
	leads for seconds; a message then comes. The hub must not publish or
	acknowledge it; once the lease is free again the hub leads again and
	publishes it exactly once, with the id it was stored with."""
	srv = start(make_server, redis, pg, instance="host-fenced")
	room = new_room(pg)
	ch = P + "room:" + room
	watch = Sub(redis.port, ch)
	try:
		pipeline(redis.port, [["XADD", INBOX, "*", "op", "broadcast",
		    "room", room, "username", "ops", "content", "warm-up"]])
		assert wait_for(lambda: watch.of(ch), 10), "no warm-up message"
		# Right after a renewal (the TTL jumps back up) ...
		after_renewal(redis)
		# ... the lease goes to someone else, and a message comes.
		pipeline(redis.port, [
		    ["SET", P + "hub:leader", "host-elsewhere:1", "PX", "30000"],
		    ["XADD", INBOX, "*", "op", "broadcast", "room", room,
		    "username", "ops", "content", "fenced"]])
		time.sleep(2.5)
		early = watch.of(ch, "message")
		assert [e["content"] for e in early] == ["warm-up"], \
		    "published by a hub without the lease: %r" % early
		assert redis.cmd("XPENDING", INBOX, "hub")[0] == 1, \
		    "acknowledged by a hub without the lease"
		redis.cmd("DEL", P + "hub:leader")
		assert wait_for(lambda: len(watch.of(ch, "message")) == 2, 10), \
		    "not published once the lease was free\n" + srv.log_tail()
		time.sleep(1)
		events = watch.of(ch, "message")
		assert [e["content"] for e in events] == ["warm-up", "fenced"]
		stored = pg.psql("SELECT id FROM messages WHERE room_id = '%s' AND "
		    "content = 'fenced'" % room, dbname="gochat").split()
		assert stored == [str(events[1]["id"])], (stored, events)
		assert events[1]["id"] > events[0]["id"]
		assert wait_for(lambda: redis.cmd("XPENDING", INBOX, "hub")[0] ==
		    0, 5)
	finally:
		watch.close()


def test_an_entry_a_deposed_hub_was_handed_is_published_by_the_leader(
    alone, make_server, redis, pg):
	"""A hub that lost the lease while its blocking XREADGROUP was out can
	still be handed an entry (the group and its consumer are shared by
	every hub), after the new leader's replay of pending entries: such
	an entry is made here by reading it as that hub would, and must be
	published by the leader all the same, once."""
	start(make_server, redis, pg, instance="host-orphan")
	room = new_room(pg)
	ch = P + "room:" + room
	watch = Sub(redis.port, ch)
	try:
		got = pipeline(redis.port, [["MULTI"],
		    ["XADD", INBOX, "*", "op", "broadcast", "room", room,
		    "username", "ops", "content", "orphan"],
		    ["XREADGROUP", "GROUP", "hub", "hub", "COUNT", "1", "STREAMS",
		    INBOX, ">"], ["EXEC"]])
		assert got[-1][1], "the entry was not read as a deposed hub's"
		assert wait_for(lambda: watch.of(ch, "message"), 20), \
		    "an entry handed to a deposed hub was never published"
		time.sleep(1)
		assert [e["content"] for e in watch.of(ch, "message")] == [
		    "orphan"]
		assert wait_for(lambda: redis.cmd("XPENDING", INBOX, "hub")[0] ==
		    0, 5)
	finally:
		watch.close()


def test_an_entry_a_deposed_hub_was_handed_goes_before_later_ones(
    alone, make_server, redis, pg):
	"""The orphan of the test above, then a later entry to the same room
	read live by the leader: the leader's check of that read (sent behind
	it) finds the older pending entry and replays both in id order, so
	the room sees the orphan first, then the later one, each once."""
	start(make_server, redis, pg, instance="host-orphan-order")
	room = new_room(pg)
	ch = P + "room:" + room
	watch = Sub(redis.port, ch)
	try:
		for round_ in range(3):
			got = pipeline(redis.port, [["MULTI"],
			    ["XADD", INBOX, "*", "op", "broadcast", "room", room,
			    "username", "ops", "content", "orphan %d" % round_],
			    ["XREADGROUP", "GROUP", "hub", "hub", "COUNT", "1",
			    "STREAMS", INBOX, ">"],
			    ["XADD", INBOX, "*", "op", "broadcast", "room", room,
			    "username", "ops", "content", "later %d" % round_],
			    ["EXEC"]])
			assert got[-1][1], "the entry was not read as a deposed hub's"
			assert wait_for(lambda: len(watch.of(ch, "message")) ==
			    2 * (round_ + 1), 20), "an entry was never published"
		time.sleep(1)
		assert [e["content"] for e in watch.of(ch, "message")] == [
		    "%s %d" % (w, r) for r in range(3) for w in ("orphan", "later")]
		ids = [e["id"] for e in watch.of(ch, "message")]
		assert ids == sorted(ids) and len(set(ids)) == 6
		assert wait_for(lambda: redis.cmd("XPENDING", INBOX, "hub")[0] ==
		    0, 5)
	finally:
		watch.close()
