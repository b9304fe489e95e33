"""Partitions on Redis shards (SPEC.md §11, issue 15): three Redis shards,
partitions = 16, two instances. Each partition's inbox, lease, presence,
room channels and clients hashes live on shard p mod 3, sessions on the
shard their key hashes to, the hubs alive on shard 0; login, logout,
revocation and chat work across the instances in rooms of every
partition, with clients that count every message (none lost, repeated or
reordered, every one stored once). One shard is killed and restarted: the
other shards' rooms chat on meanwhile, its own rooms resume once it is
back, and /metrics shows the hub's connection to it down, then up."""

import re
import signal
import time

import pytest
import requests

import harness
from conftest import wait_for
from test_chat import (call, create_room, join, login,  # noqa: F401
    register, close_websockets)
from test_hub import P, sql, stored
from test_many_hubs import Load, Published, crc16, rooms_in_partitions

pytestmark = pytest.mark.usefixtures("own_server_only")

PARTS = 16
SHARDS = 3
KILLED = 1		# the shard killed and restarted


@pytest.fixture
def own_server_only():
	from conftest import needs_own_server
	needs_own_server()


def partition(room):
	return crc16(room.encode()) % PARTS


def shard_of_key(key):
	return crc16(key.encode()) % SHARDS


@pytest.fixture(scope="module")
def shards(workdir):
	"""Three Redis servers of this module's own (AOF on: a killed one
	comes back with what it had acknowledged)."""
	from conftest import needs_own_server
	needs_own_server()
	rs = [harness.Redis(workdir / ("hubshard-%d" % i), harness.free_port())
	    for i in range(SHARDS)]
	for r in rs:
		r.start()
	yield rs
	for r in rs:
		r.stop()


class Chat:
	"""A room with a sender on one instance and a watcher on the other;
	the sender sends "<room>#<i>" for i = 0, 1, ... Its clients may be
	replaced (after an outage): each pair must see every message sent
	while it was there, once, in order, with increasing ids."""

	def __init__(self, rid, a, b, owner):
		self.id, self.a, self.b = rid, a, b
		create_room(a, owner, rid)
		self.user = register(a)
		self.sent = 0
		self.open()

	def open(self):
		self.sender = join(self.a, self.id, self.user)
		self.watcher = join(self.b, self.id, register(self.b))
		self.first = self.sent

	def send(self, k):
		for _ in range(k):
			self.sender.send("%s#%d" % (self.id, self.sent))
			self.sent += 1

	def check_clients(self, timeout=30):
		want = ["%s#%d" % (self.id, i) for i in range(self.first,
		    self.sent)]
		for ws in (self.sender, self.watcher):
			got = ws.wait_messages(len(want), timeout)
			contents = [e["content"] for e in got]
			ids = [e["id"] for e in got]
			assert contents == want, "%s (%s): %d messages of %d, first " \
			    "wrong at %r" % (self.id, ws.label, len(contents),
			    len(want), next(((i, c) for i, c in enumerate(contents)
			    if i >= len(want) or c != want[i]), None))
			assert all(y > x for x, y in zip(ids, ids[1:])), \
			    "%s: ids not strictly increasing" % self.id
		return ids

	def check_store(self, pg):
		"""Every message sent is stored once, ids in the order sent."""
		want = ["%s#%d" % (self.id, i) for i in range(self.sent)]
		db = stored(pg, self.id)
		n = int(sql(pg, "SELECT count(*) FROM messages WHERE room_id = "
		    "'%s'" % self.id))
		assert n == len(want) and sorted(db) == sorted(want), \
		    "%s: %d stored (%d distinct) of %d" % (self.id, n, len(db),
		    len(want))
		ids = [db[c][0] for c in want]
		assert all(y > x for x, y in zip(ids, ids[1:])), \
		    "%s: stored ids not in the order sent" % self.id


def holders(shards):
	"""Each partition's lease holder, read on its own shard."""
	return [shards[p % SHARDS].cmd("GET", P + "hub:leader:%d" % p)
	    for p in range(PARTS)]


def spread(shards, servers):
	pids = {str(pid) for s in servers for pid in s.hubs()}
	hs = holders(shards)
	if any(h is None or h.rpartition(":")[2] not in pids for h in hs):
		return None
	counts = {}
	for h in hs:
		counts[h] = counts.get(h, 0) + 1
	return counts if sorted(counts.values()) == [8, 8] else None


def on_shards(shards, key):
	return [i for i, r in enumerate(shards) if r.cmd("EXISTS", key)]


def shard_state(server, shard, state):
	text = requests.get(server.base + "/metrics", timeout=10).text
	m = re.search(r'^gochat_redis_shard_connections\{shard="%d",role="hub",'
	    r'state="%s"\} (\d+)$' % (shard, state), text, re.M)
	return int(m.group(1)) if m else None


def test_sixteen_partitions_on_three_shards_over_two_instances(make_server,
    shards, pg):
	for r in shards:
		r.cmd("FLUSHALL")
	url = " ".join(r.url for r in shards)
	a, b = [make_server(redis=shards[0], redis_url=url, workers=1,
	    partitions=PARTS, instance="host-%d" % i) for i in range(2)]
	assert wait_for(lambda: spread(shards, [a, b]), 15), holders(shards)
	# Each partition's lease on its shard only; the hubs alive on shard 0.
	for p in range(PARTS):
		assert on_shards(shards, P + "hub:leader:%d" % p) == [p % SHARDS]
	assert on_shards(shards, P + "hub:hubs") == [0]
	for s in (a, b):
		for i in range(SHARDS):
			assert wait_for(lambda: shard_state(s, i, "up") == 1, 5), \
			    (s.base, i)

	# Sessions, logout and revocation across the instances.
	owner = register(a)
	tokens = [login(a, owner) for _ in range(6)]
	for t in tokens:
		assert call(b, "GET", "/ws/getRooms", t).status_code == 200
	found = {i: harness.redis_keys(r.port, P + "session:*")
	    for i, r in enumerate(shards)}
	assert sum(len(v) for v in found.values()) == 7, found
	for i, keys in found.items():
		for k in keys:
			assert shard_of_key(k) == i, (k, i)
	assert call(b, "POST", "/logout", tokens[0]).status_code == 202
	assert call(a, "GET", "/ws/getRooms", tokens[0]).status_code == 401
	assert call(a, "GET", "/ws/getRooms", tokens[1]).status_code == 200
	victim = register(a)
	vt = login(b, victim)

	# A room in every partition, a sender on one instance and a watcher
	# on the other, alternately; a watcher of every room channel on each
	# shard checks no id is published with two different messages.
	rids = rooms_in_partitions(PARTS, tag="sh")
	chats = [Chat(rid, (a, b)[i % 2], (b, a)[i % 2], owner)
	    for i, rid in enumerate(rids)]
	vroom = rids[0]
	vws = join(a, vroom, victim, token=vt)
	assert call(b, "POST", "/logout", vt).status_code == 202
	assert vws.wait_closed(5, "the revoked session's socket") == 1008
	for c in chats:
		p = partition(c.id)
		channel = P + "room:" + c.id
		assert wait_for(lambda: shards[p % SHARDS].cmd("HLEN", channel +
		    ":clients") == 2, 5), c.id
		for i, r in enumerate(shards):
			assert (channel in r.cmd("PUBSUB", "CHANNELS", P + "room:*")) \
			    == (i == p % SHARDS), (c.id, p, i)
			if i != p % SHARDS:
				assert r.cmd("EXISTS", channel + ":clients") == 0
	pubs = [Published(r.port) for r in shards]
	killed = [c for c in chats if partition(c.id) % SHARDS == KILLED]
	others = [c for c in chats if c not in killed]
	load, kload = Load(others, pause=0.05), Load(killed, pause=0.05)
	load.start()
	kload.start()
	try:
		time.sleep(2)
		kload.stop()
		for c in killed:
			c.check_clients()
		# Every partition's inbox, lease and presence on its shard.
		for p in range(PARTS):
			for name in ("inbox", "leader", "presence"):
				assert on_shards(shards, P + "hub:%s:%d" % (name, p)) == \
				    [p % SHARDS], (name, p)
		# Shard KILLED goes: its rooms' clients are closed; the other
		# rooms chat on.
		shards[KILLED].kill()
		pubs[KILLED].close()
		for c in killed:
			c.sender.wait_closed(5, "a client of the killed shard")
		marks = {c.id: c.sent for c in others}
		for s in (a, b):
			assert wait_for(lambda: shard_state(s, KILLED, "down") == 1,
			    5), "the hub's shard %d not down in /metrics" % KILLED
		assert wait_for(lambda: all(len(c.watcher.messages(False)) >=
		    marks[c.id] + 20 for c in others), 15), \
		    "the other shards' rooms stalled while shard %d was away" % \
		    KILLED
	finally:
		if not shards[KILLED].running():
			shards[KILLED].start()
	# Back: its rooms resume (new clients), the others never stopped.
	pubs[KILLED] = Published(shards[KILLED].port)
	for s in (a, b):
		assert wait_for(lambda: shard_state(s, KILLED, "up") == 1, 10)
	assert wait_for(lambda: all(h is not None for p, h in
	    enumerate(holders(shards)) if p % SHARDS == KILLED), 10), \
	    holders(shards)
	for c in killed:
		c.open()
	kload = Load(killed, pause=0.05)
	kload.start()
	time.sleep(2)
	kload.stop()
	load.stop()
	for c in chats:
		c.check_clients()
		c.check_store(pg)
	for pub in pubs:
		assert pub.conflicts == []
		pub.close()
	assert wait_for(lambda: spread(shards, [a, b]), 10), holders(shards)
	# The operators' door on shard 0 reaches a room of every partition,
	# on every shard, once.
	for c in chats:
		shards[0].cmd("XADD", P + "hub:inbox", "*", "op", "broadcast",
		    "room", c.id, "username", "ops", "content", "ops to " + c.id)
	for c in chats:
		c.watcher.wait_content("ops to " + c.id, 10)
	time.sleep(1)
	for c in chats:
		got = [e for e in c.watcher.messages(False)
		    if e["content"] == "ops to " + c.id]
		assert len(got) == 1 and got[0]["userId"] == 0, (c.id, got)
	assert shards[0].cmd("XPENDING", P + "hub:inbox", "hub")[0] == 0
	print("\n%d messages in %d rooms; shard %d killed and back" % (
	    sum(c.sent for c in chats), len(chats), KILLED))


def test_shard_0_away_keeps_the_other_shards_partitions_led(make_server,
    shards):
	"""Shard 0 (the hubs alive, the door, the control channel) killed:
	the hub keeps leading the partitions of shards 1 and 2 throughout
	(their leases never change hands), joins are refused meanwhile; once
	it is back every partition is led and chat works in rooms of each
	shard."""
	for r in shards:
		r.cmd("FLUSHALL")
	a = make_server(redis=shards[0], redis_url=" ".join(r.url for r in
	    shards), workers=1, partitions=PARTS)
	assert wait_for(lambda: all(h is not None for h in holders(shards)),
	    15), holders(shards)
	before = holders(shards)
	shards[0].kill()
	try:
		for _ in range(5):
			time.sleep(1)
			for p in range(PARTS):
				if p % SHARDS != 0:
					assert shards[p % SHARDS].cmd("GET", P +
					    "hub:leader:%d" % p) == before[p], p
		assert call(a, "GET", "/health").status_code == 503
	finally:
		shards[0].start()
	assert wait_for(lambda: all(h is not None for h in holders(shards)),
	    10), holders(shards)
	owner = register(a)
	rids, seen = [], set()
	for rid in rooms_in_partitions(PARTS, tag="s0"):
		if partition(rid) % SHARDS not in seen:
			seen.add(partition(rid) % SHARDS)
			rids.append(rid)
	for rid in rids:
		create_room(a, owner, rid)
		ws = join(a, rid, owner)
		ws.send("after shard 0 came back")
		ws.wait_content("after shard 0 came back", 10)


def test_a_stalled_shard_stops_only_its_partitions(make_server, shards):
	"""Shard 2 frozen (SIGSTOP): the hub goes on renewing the leases of
	shards 0 and 1 (those never change hands) and chat goes on in their
	rooms; once it resumes, its partitions are led again and its rooms
	chat."""
	for r in shards:
		r.cmd("FLUSHALL")
	a = make_server(redis=shards[0], redis_url=" ".join(r.url for r in
	    shards), workers=1, partitions=PARTS)
	assert wait_for(lambda: all(h is not None for h in holders(shards)),
	    15), holders(shards)
	owner = register(a)
	by_shard = {}
	for rid in rooms_in_partitions(PARTS, tag="st"):
		by_shard.setdefault(partition(rid) % SHARDS, rid)
	for rid in by_shard.values():
		create_room(a, owner, rid)
	live = {i: join(a, by_shard[i], owner) for i in (0, 1)}
	before = holders(shards)
	shards[2].proc.send_signal(signal.SIGSTOP)
	try:
		for k in range(5):
			time.sleep(1)
			for p in range(PARTS):
				if p % SHARDS != 2:
					assert shards[p % SHARDS].cmd("GET", P +
					    "hub:leader:%d" % p) == before[p], (k, p)
			for i, ws in live.items():
				ws.send("stalled %d %d" % (i, k))
				ws.wait_content("stalled %d %d" % (i, k), 5)
	finally:
		shards[2].proc.send_signal(signal.SIGCONT)
	assert "has not answered" in a.log_text()
	assert wait_for(lambda: all(h is not None for h in holders(shards)),
	    10), holders(shards)

	def chat_on_2():
		try:
			ws = join(a, by_shard[2], owner)
			ws.send("resumed")
			ws.wait_content("resumed", 5)
			return True
		except AssertionError:
			return False
	assert wait_for(chat_on_2, 20, interval=1), "shard 2's room never " \
	    "chatted again"
