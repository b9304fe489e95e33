"""Many active hubs (SPEC.md §11, issue 13): with partitions = 16, every
instance's hub leads a share of the partitions (at most ceil(16 / hubs
alive)); a dead hub's partitions are led again within 5 s; a hub that
joins gets its share handed over; a hub paused past its leases and resumed
stores and publishes nothing after its successors began. Through all of it
chat clients count every message: each room's ids strictly increase,
nothing is lost, nothing repeated, nothing reordered.

The clients are real WebSockets on the instances' workers (which add each
room's entries to its partition's inbox), plus one Redis subscriber on
every room channel that checks that no id is ever published with two
different messages."""

import json
import math
import os
import signal
import socket
import threading
import time

import pytest
import requests

import harness
from conftest import wait_for
from test_chat import (close_websockets, create_room, join,  # noqa: F401
    register)
from test_hub import P, pipeline, sql, stored

pytestmark = pytest.mark.usefixtures("own_server_only")

PARTS = 16


@pytest.fixture
def own_server_only():
	from conftest import needs_own_server
	needs_own_server()


def crc16(data):
	"""CRC16-CCITT (XMODEM), as Redis Cluster and common/msg.c."""
	crc = 0
	for b in data:
		crc ^= b << 8
		for _ in range(8):
			crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
			crc &= 0xffff
	return crc


def partition(room, parts=PARTS):
	return crc16(room.encode()) % parts


def rooms_in_partitions(n, exclude=(), tag="mh"):
	"""n room ids, each in a partition of its own, none in exclude."""
	out, seen, k = [], set(exclude), 0
	base = "%s%d-%d" % (tag, os.getpid(), int(time.time() * 1000) % 10**7)
	while len(out) < n:
		k += 1
		rid = "%s-%d" % (base, k)
		if partition(rid) not in seen:
			seen.add(partition(rid))
			out.append(rid)
	return out


def holders(redis, parts=PARTS):
	return [redis.cmd("GET", P + "hub:leader:%d" % i) for i in range(parts)]


def hub_replaced(server, dead):
	"""server runs one hub again, not dead. One look at its children:
	between two, the respawn may land or the dead one be reaped."""
	hubs = server.hubs()
	return len(hubs) == 1 and hubs[0] != dead


def spread(redis, servers):
	"""{hub pid: partitions it leads} once every partition is led by a hub
	of servers and none leads more than ceil(16 / hubs); else None."""
	pids = {}
	for s in servers:
		for pid in s.hubs():
			pids[str(pid)] = pid
	counts = {}
	for h in holders(redis):
		if h is None or h.rpartition(":")[2] not in pids:
			return None
		counts[int(h.rpartition(":")[2])] = counts.get(int(
		    h.rpartition(":")[2]), 0) + 1
	if len(counts) != len(servers):
		return None
	share = math.ceil(PARTS / len(servers))
	return counts if max(counts.values()) <= share else None


def led_in_metrics(server):
	text = requests.get(server.base + "/metrics", timeout=10).text
	return sorted(int(l.split('"')[1]) for l in text.splitlines()
	    if l.startswith("gochat_hub_partition_leader{") and
	    l.endswith(" 1"))


def start_many(make_server, redis, n, first=0):
	servers = []
	for i in range(first, first + n):
		s = make_server(start=False, workers=1, partitions=PARTS,
		    instance="host-%d" % i)
		s.start()
		servers.append(s)
	return servers


class Room:
	"""A room with a sender on one instance and a watcher on another;
	the sender's thread sends "<room>#<i>" for i = 0, 1, ..."""

	def __init__(self, rid, sender_srv, watcher_srv, owner):
		self.id = rid
		create_room(sender_srv, owner, rid)
		self.user = register(sender_srv)
		self.sender = join(sender_srv, rid, self.user)
		self.watcher = join(watcher_srv, rid, register(watcher_srv))
		self.sent = 0

	def send(self, k):
		for _ in range(k):
			self.sender.send("%s#%d" % (self.id, self.sent))
			self.sent += 1

	def check(self, pg, timeout=30):
		"""Both clients saw every message sent, once each, in order, with
		strictly increasing ids; the store holds each once."""
		want = ["%s#%d" % (self.id, i) for i in range(self.sent)]
		for ws in (self.sender, self.watcher):
			got = ws.wait_messages(self.sent, timeout)
			contents = [e["content"] for e in got]
			ids = [e["id"] for e in got]
			assert contents == want, "%s (%s): %d messages, first wrong " \
			    "at %r" % (self.id, ws.label, len(contents), next(((i, c)
			    for i, c in enumerate(contents) if i >= len(want) or
			    c != want[i]), None))
			assert all(b > a for a, b in zip(ids, ids[1:])), \
			    "%s: ids not strictly increasing" % self.id
		db = stored(pg, self.id)
		assert sorted(db) == sorted(want), "%s: %d stored of %d" % (
		    self.id, len(db), len(want))
		assert [db[c][0] for c in want] == \
		    [e["id"] for e in self.watcher.messages(False)]


class Load(threading.Thread):
	"""Chat in every room, a message each in turn, until stopped."""

	def __init__(self, rooms, pause=0.01):
		super().__init__(daemon=True)
		self.rooms, self.pause = rooms, pause
		self.halt = threading.Event()
		self.error = None

	def run(self):
		try:
			while not self.halt.is_set():
				for r in self.rooms:
					r.send(1)
				time.sleep(self.pause)
		except Exception as e:		# reported by the test
			self.error = e

	def stop(self):
		self.halt.set()
		self.join(10)
		assert self.error is None, self.error


class Published(threading.Thread):
	"""Every message event published on any room channel: an id must never
	come with two different messages (a deposed hub publishing what its
	successor numbered otherwise)."""

	def __init__(self, port):
		super().__init__(daemon=True)
		self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
		self.f = self.sock.makefile("rb")
		self.sock.sendall(harness._resp_encode(["PSUBSCRIBE",
		    P + "room:*"]))
		harness._resp_read(self.f)
		self.by_id = {}		# (room, id) -> content
		self.conflicts = []
		self.start()

	def run(self):
		self.sock.settimeout(None)
		while True:
			try:
				m = harness._resp_read(self.f)
			except (OSError, ConnectionError, ValueError):
				return
			if not (isinstance(m, list) and m[0] == "pmessage"):
				continue
			e = json.loads(m[3])
			if e.get("type") != "message":
				continue
			k = (e["roomId"], e["id"])
			if self.by_id.setdefault(k, e["content"]) != e["content"]:
				self.conflicts.append((k, self.by_id[k], e["content"]))

	def close(self):
		try:
			self.sock.close()
		except OSError:
			pass


def chat_rooms(servers, n):
	owner = register(servers[0])
	return [Room(rid, servers[i % len(servers)],
	    servers[(i + 1) % len(servers)], owner)
	    for i, rid in enumerate(rooms_in_partitions(n))]


# --- spreading ----------------------------------------------------------------

def test_two_then_three_hubs_spread_the_partitions_and_hand_over_under_load(
    make_server, redis, pg):
	"""Two instances share the 16 partitions (8 each); a third joins while
	every room chats: partitions are handed over until none leads more than
	6, and no room loses, repeats or reorders a message."""
	redis.cmd("FLUSHALL")
	a, b = start_many(make_server, redis, 2)
	counts = wait_for(lambda: spread(redis, [a, b]), 15)
	assert counts, "not spread over two hubs: %r" % holders(redis)
	assert sorted(counts.values()) == [8, 8], counts
	assert sql(pg, "SELECT count(*) FROM hub_partitions") == str(PARTS)
	# What an operator sees: each instance's /metrics and stats hash name
	# the partitions its hub leads, with each one's inbox.
	for s in (a, b):
		(pid,) = s.hubs()
		mine = sorted(i for i, h in enumerate(holders(redis))
		    if h.endswith(":%d" % pid))
		assert wait_for(lambda: led_in_metrics(s) == mine, 5), \
		    (led_in_metrics(s), mine)
		text = requests.get(s.base + "/metrics", timeout=10).text
		for i in mine:
			assert 'gochat_hub_inbox_pending{partition="%d"} ' % i in text
			assert 'gochat_hub_inbox_length{partition="%d"} ' % i in text
		field = lambda: redis.cmd("HGET", P + "stats:%s:%d" % (
		    s.conf["instance"], pid), "partitions")
		assert wait_for(lambda: field() in ("0-7", "8-15"), 5), field()
	rooms = chat_rooms([a, b], 6)
	pub = Published(redis.port)
	load = Load(rooms)
	load.start()
	try:
		time.sleep(1)
		(c,) = start_many(make_server, redis, 1, first=2)
		t0 = time.monotonic()
		counts = wait_for(lambda: spread(redis, [a, b, c]), 15)
		took = time.monotonic() - t0
		assert counts, "not spread over three hubs: %r" % holders(redis)
		assert sorted(counts.values()) == [4, 6, 6], counts
		time.sleep(1)
	finally:
		load.stop()
	for r in rooms:
		r.check(pg)
	assert pub.conflicts == []
	pub.close()
	handed = a.log_text().count("handing it over") + \
	    b.log_text().count("handing it over")
	assert handed >= 4, "no handover logged"
	print("\nthird hub had its share %.1f s after starting; %d messages"
	    % (took, sum(r.sent for r in rooms)))


# --- a dead hub ---------------------------------------------------------------

def test_a_dead_hubs_partitions_are_led_again_within_5_s_under_load(
    make_server, redis, pg):
	"""The hub of one instance is killed while its master is frozen (so
	that no hub of that instance comes back): the other instance's hub
	leads all 16 partitions within 5 s. Then the master resumes, its new
	hub joins and gets its share back. Nothing is lost, repeated or
	reordered in any room."""
	redis.cmd("FLUSHALL")
	a, b = start_many(make_server, redis, 2)
	assert wait_for(lambda: spread(redis, [a, b]), 15), holders(redis)
	rooms = chat_rooms([a, b], 6)
	pub = Published(redis.port)
	load = Load(rooms)
	load.start()
	master = b.master_pid
	try:
		time.sleep(1)
		(dead,) = b.hubs()
		os.kill(master, signal.SIGSTOP)
		os.kill(dead, signal.SIGKILL)
		t0 = time.monotonic()
		(alive,) = a.hubs()
		assert wait_for(lambda: holders(redis).count("host-0:%d" % alive)
		    == PARTS, 8), "not all led by the live hub: %r" % holders(redis)
		took = time.monotonic() - t0
		time.sleep(1)
	finally:
		os.kill(master, signal.SIGCONT)
	try:
		assert wait_for(lambda: hub_replaced(b, dead) and
		    spread(redis, [a, b]), 15), \
		    "the new hub got no share: %r" % holders(redis)
		time.sleep(1)
	finally:
		load.stop()
	assert took <= 5, "partitions led again after %.1f s" % took
	for r in rooms:
		r.check(pg)
	assert pub.conflicts == []
	pub.close()
	print("\ndead hub's partitions led again after %.2f s" % took)


def test_a_killed_hub_is_replaced_by_its_instance_at_once(make_server, redis,
    pg):
	"""A hub SIGKILLed (its master respawns it) under load: its successor
	on the same instance takes its leases at once, without waiting for
	them to expire; nothing lost, repeated or reordered."""
	redis.cmd("FLUSHALL")
	a, b = start_many(make_server, redis, 2)
	assert wait_for(lambda: spread(redis, [a, b]), 15), holders(redis)
	rooms = chat_rooms([a, b], 4)
	load = Load(rooms)
	load.start()
	try:
		time.sleep(0.5)
		(dead,) = b.hubs()
		os.kill(dead, signal.SIGKILL)
		t0 = time.monotonic()
		assert wait_for(lambda: hub_replaced(b, dead) and
		    spread(redis, [a, b]), 8), holders(redis)
		took = time.monotonic() - t0
		time.sleep(1)
	finally:
		load.stop()
	for r in rooms:
		r.check(pg)
	assert "was a hub of this instance and is gone" in b.log_text()
	print("\nrespawned hub led its share after %.2f s" % took)


def test_a_stopped_instance_gives_its_partitions_back_at_once(make_server,
    redis, pg):
	"""An instance stopped (SIGTERM) gives its leases back and leaves the
	hubs alive: the other hub leads all 16 partitions at its next tick,
	before the leases would have expired; chat goes on in every room."""
	redis.cmd("FLUSHALL")
	a, b = start_many(make_server, redis, 2)
	assert wait_for(lambda: spread(redis, [a, b]), 15), holders(redis)
	rooms = chat_rooms([a], 3)
	(alive,) = a.hubs()
	b.stop()
	t0 = time.monotonic()
	assert wait_for(lambda: holders(redis).count("host-0:%d" % alive) ==
	    PARTS, 10), holders(redis)
	took = time.monotonic() - t0
	assert took < 2.5, "taken after %.1f s: as if waiting for the leases " \
	    "to expire" % took
	assert redis.cmd("ZRANGE", P + "hub:hubs", "0", "-1") == \
	    ["host-0:%d" % alive]
	for r in rooms:
		r.send(5)
	for r in rooms:
		r.sender.wait_messages(5, 10)


# --- fencing ------------------------------------------------------------------

def test_a_hub_frozen_past_its_leases_stores_and_publishes_nothing_after(
    make_server, redis, pg):
	"""One hub is frozen (SIGSTOP) while rooms of its partitions chat: the
	other hub leads all 16 within 5 s and raises their epochs. The frozen
	hub, resumed, must not store or publish anything it read before (its
	clock says its leases are gone, Redis and PostgreSQL refuse it): no id
	is ever published with two messages, every room's clients see each
	message once, in order, and what is stored is what they saw."""
	redis.cmd("FLUSHALL")
	a, b = start_many(make_server, redis, 2)
	assert wait_for(lambda: spread(redis, [a, b]), 15), holders(redis)
	rooms = chat_rooms([a, b], 6)
	pub = Published(redis.port)
	load = Load(rooms, pause=0.005)
	load.start()
	(frozen,) = b.hubs()
	(alive,) = a.hubs()
	mine = [i for i, h in enumerate(holders(redis))
	    if h == "host-1:%d" % frozen]
	epochs = lambda: dict(tuple(map(int, l.split("|"))) for l in sql(pg,
	    "SELECT partition, epoch FROM hub_partitions").splitlines())
	try:
		time.sleep(1)
		before = epochs()
		os.kill(frozen, signal.SIGSTOP)
		t0 = time.monotonic()
		try:
			assert wait_for(lambda: holders(redis).count("host-0:%d" %
			    alive) == PARTS, 8), holders(redis)
			took = time.monotonic() - t0
			after = epochs()
			assert all(after[i] > before[i] for i in mine), \
			    "the successor did not raise the epochs"
			time.sleep(1)
		finally:
			os.kill(frozen, signal.SIGCONT)
		assert wait_for(lambda: "not renewed in time" in b.log_text() or
		    "lease lost" in b.log_text(), 5), b.log_tail()
		# It comes back as a live hub and gets its share again.
		assert wait_for(lambda: spread(redis, [a, b]), 15), holders(redis)
		time.sleep(1)
	finally:
		load.stop()
	assert took <= 5, "led again after %.1f s" % took
	for r in rooms:
		r.check(pg)
	assert pub.conflicts == [], "an id published with two messages: %r" % \
	    pub.conflicts[:3]
	pub.close()
	assert b.hubs() == [frozen], "the frozen hub died"


# --- the operators' door and the keys ---------------------------------------------

def test_an_operator_announcement_reaches_a_room_of_any_partition(
    make_server, redis, pg):
	"""With partitions = 16, `XADD gochat:hub:inbox * op broadcast room R
	...` (the §7 door) reaches R in partition != 0; an entry without a
	valid room is acknowledged and dropped; the workers' entries go to
	their room's partition inbox."""
	redis.cmd("FLUSHALL")
	(s,) = start_many(make_server, redis, 1)
	assert wait_for(lambda: spread(redis, [s]), 15), holders(redis)
	owner = register(s)
	(rid,) = rooms_in_partitions(1, exclude=(0,), tag="door")
	create_room(s, owner, rid)
	ws = join(s, rid, register(s))
	part = partition(rid)
	assert redis.cmd("XLEN", P + "hub:inbox:%d" % part) >= 1, \
	    "the register went elsewhere"
	assert redis.cmd("HLEN", P + "hub:presence:%d" % part) == 1
	assert redis.cmd("EXISTS", P + "hub:presence") == 0
	pipeline(redis.port, [["XADD", P + "hub:inbox", "*", "op", "broadcast",
	    "room", "no room!", "username", "ops", "content", "x"],
	    ["XADD", P + "hub:inbox", "*", "op", "broadcast", "room", rid,
	    "username", "ops", "content", "Back in 5 minutes"]])
	(e,) = ws.wait_messages(1, 10)
	assert (e["content"], e["userId"], e["username"]) == (
	    "Back in 5 minutes", 0, "ops")
	assert wait_for(lambda: redis.cmd("XPENDING", P + "hub:inbox",
	    "hub")[0] == 0, 5), "the door's entries stay pending"
	assert "no valid room" in s.log_text()


def test_a_dropped_worker_registers_again_only_the_partition_dropped(
    make_server, redis, pg):
	"""A worker frozen past its heartbeat loses its presence in each
	partition whose rooms it had sockets in; each leader says which
	partition it dropped, and the worker registers again (rejoin) only its
	sockets in that partition's rooms: one rejoin entry per socket, in its
	room's partition inbox, and both users are listed again."""
	redis.cmd("FLUSHALL")
	(s,) = start_many(make_server, redis, 1)
	assert wait_for(lambda: spread(redis, [s]), 15), holders(redis)
	owner = register(s)
	r1, r2 = rooms_in_partitions(2, tag="drop")
	create_room(s, owner, r1)
	create_room(s, owner, r2)
	u1, u2 = register(s), register(s)
	w1, w2 = join(s, r1, u1), join(s, r2, u2)
	(worker,) = s.workers().values()
	os.kill(worker, signal.SIGSTOP)
	try:
		assert wait_for(lambda: redis.cmd("HLEN", P + "room:%s:clients" %
		    r1) == 0 and redis.cmd("HLEN", P + "room:%s:clients" % r2) ==
		    0, 10), "presence not dropped"
	finally:
		os.kill(worker, signal.SIGCONT)
	assert wait_for(lambda: redis.cmd("HLEN", P + "room:%s:clients" % r1)
	    == 1 and redis.cmd("HLEN", P + "room:%s:clients" % r2) == 1, 10), \
	    "not registered again"
	time.sleep(1)

	def rejoins(room):
		entries = redis.cmd("XRANGE", P + "hub:inbox:%d" % partition(room),
		    "-", "+")
		return [f for _, f in entries if "rejoin" in f and
		    f[f.index("rejoin") + 1] == "1" and
		    f[f.index("room") + 1] == room]
	assert len(rejoins(r1)) == 1, rejoins(r1)
	assert len(rejoins(r2)) == 1, rejoins(r2)
	assert w1.is_open() and w2.is_open()
