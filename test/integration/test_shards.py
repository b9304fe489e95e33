"""Redis shards (SPEC.md §11): redis_url lists three Redis servers; keys
land where the README says (a session, a login counter, a rate-limit key
on the shard its CRC16 picks; a room's channel and inbox entries on its
partition's shard, partition p on shard p mod 3; heartbeats, stats and
the control channel on shard 0), and login, logout, revocation and chat
work across them."""

import hashlib

import pytest
import requests

import harness
from conftest import needs_own_server, own_service
from test_chat import (all_rooms, call, create_room, get_clients, join,
    login, register, unique)
from test_chat import close_websockets  # noqa: F401 (autouse: aborts every WS)

PARTITIONS = 3


def crc16(data):
	"""CRC16-XMODEM, as Redis Cluster and common/msg.c hash keys."""
	crc = 0
	for b in data.encode():
		crc ^= b << 8
		for _ in range(8):
			crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
			crc &= 0xFFFF
	return crc


def shard_of(key, n=3):
	return crc16(key) % n


def room_in_partition(srv, user, p):
	"""A new room whose partition (CRC16 of its id mod PARTITIONS) is p."""
	while True:
		rid = unique("room")
		if crc16(rid) % PARTITIONS == p:
			return create_room(srv, user, rid)


@pytest.fixture(scope="module")
def shards(workdir):
	"""Three Redis servers of this module's own."""
	needs_own_server()
	rs = [harness.Redis(workdir / ("shard-%d" % i), harness.free_port())
	    for i in range(3)]
	for r in rs:
		r.start()
	yield rs
	for r in rs:
		r.stop()


@pytest.fixture
def sharded(make_server, shards):
	for r in shards:
		r.cmd("FLUSHALL")
	return make_server(redis=shards[0], partitions=PARTITIONS,
	    redis_url=" ".join(r.url for r in shards))


def where(shards, pattern):
	"""{shard index: [keys matching pattern there]} of the shards with
	some."""
	out = {}
	for i, r in enumerate(shards):
		keys = harness.redis_keys(r.port, pattern)
		if keys:
			out[i] = keys
	return out


def test_session_keys_live_on_the_shard_their_hash_picks(sharded, shards):
	s = sharded
	users = [register(s) for _ in range(6)]
	for u in users:
		login(s, u)
	sessions = where(shards, "gochat:session:*")
	assert sum(len(v) for v in sessions.values()) == 12, sessions
	for i, keys in sessions.items():
		for k in keys:
			assert shard_of(k) == i, "%s is on shard %d, its hash says " \
			    "%d" % (k, i, shard_of(k))
	assert len(sessions) >= 2, "twelve sessions all on one shard: %r" % \
	    sessions
	# Each shard indexes the sessions it holds.
	for i, r in enumerate(shards):
		for k in harness.redis_keys(r.port, "gochat:user:*"):
			for member in r.cmd("SMEMBERS", k):
				assert shard_of(member) == i, (k, member)
	# Rate limits and failed-login counters too.
	requests.post(s.base + "/login", json={"username": users[0]["username"],
	    "password": "wrong horse"}, timeout=10)
	for pattern in ("gochat:login:*", "gochat:limit:*"):
		found = where(shards, pattern)
		assert found, pattern
		for i, keys in found.items():
			for k in keys:
				assert shard_of(k) == i, (pattern, k, i)
	# The heartbeats and stats hashes are on shard 0 only.
	assert harness.wait_for(lambda: set(where(shards,
	    "gochat:stats:*")) == {0}, 5), where(shards, "gochat:stats:*")
	assert set(where(shards, "gochat:worker:*")) == {0}


def session_shard(token):
	return shard_of("gochat:session:" +
	    hashlib.sha256(token.encode()).hexdigest())


def test_login_logout_and_revocation_work_across_shards(sharded, shards):
	s = sharded
	u = register(s)
	# Sessions of one user on each of the three shards.
	by_shard = {}
	for _ in range(60):
		t = login(s, u)
		by_shard.setdefault(session_shard(t), []).append(t)
		if len(by_shard) == 3 and all(len(v) >= 2 for v in
		    by_shard.values()):
			break
	assert len(by_shard) == 3, by_shard
	tokens = [t for v in by_shard.values() for t in v]
	for t in tokens:
		assert call(s, "GET", "/ws/getRooms", t).status_code == 200
	# Logout revokes that token only, wherever it lives.
	for i in range(3):
		gone, kept = by_shard[i][0], by_shard[i][1]
		assert call(s, "POST", "/logout", gone).status_code == 202
		assert call(s, "GET", "/ws/getRooms", gone).status_code == 401
		assert call(s, "GET", "/ws/getRooms", kept).status_code == 200
	# Deleting the account revokes every session on every shard, and
	# closes its sockets.
	live = [v[1] for v in by_shard.values()]
	room = room_in_partition(s, u, 0)
	ws = join(s, room, u, token=live[2])
	r = call(s, "DELETE", "/delete", live[0])
	assert r.status_code == 204, r.text
	for t in live:
		assert call(s, "GET", "/ws/getRooms", t).status_code == 401
	code = ws.wait_closed(5, "the deleted account's socket")
	assert code == 1008, code
	assert not where(shards, "gochat:session:*"), where(shards,
	    "gochat:session:*")


def test_room_channels_are_on_their_partition_s_shard_and_chat_works(
    sharded, shards):
	"""A room of each partition chats (the hub leads every partition on
	its shard); its channel, inbox entries, lease, presence and clients
	hash are on shard p and nowhere else; getRooms and getClients count
	its users there."""
	s = sharded
	a, b = register(s), register(s)
	rooms = {p: room_in_partition(s, a, p) for p in range(PARTITIONS)}
	for p, room in rooms.items():
		wa, wb = join(s, room, a), join(s, room, b)
		wa.send("hello over shard %d" % p)
		wb.wait_content("hello over shard %d" % p, 5)
		wa.wait_content("hello over shard %d" % p, 5)
	for p, room in rooms.items():
		channel = "gochat:room:%s" % room
		clients = channel + ":clients"
		for i, r in enumerate(shards):
			assert (channel in r.cmd("PUBSUB", "CHANNELS",
			    "gochat:room:*")) == (i == p), (p, i, channel)
			assert r.cmd("HLEN", clients) == (2 if i == p else 0), \
			    (p, i, clients)
			for key in ("gochat:hub:leader:%d" % p,
			    "gochat:hub:presence:%d" % p):
				assert r.cmd("EXISTS", key) == (i == p), (i, key)
		# Each room's inbox entries (its members' registers and
		# message) went to its partition's inbox on its shard.
		inbox = "gochat:hub:inbox:%d" % p
		assert room in rooms_in_inbox(shards[p], inbox), (p, room)
		for i in range(3):
			if i != p:
				assert shards[i].cmd("EXISTS", inbox) == 0, (i, inbox)
		assert [u[0] for u in get_clients(s, a, room)] == sorted(
		    [a["id"], b["id"]]), (p, room)
	listed = {r["id"]: r["clients"] for r in all_rooms(s, a)}
	assert all(listed[room] == 2 for room in rooms.values()), listed
	# The control channel is on shard 0; each worker listens on its own
	# channel on every shard; the hubs alive on shard 0.
	assert shards[0].cmd("PUBSUB", "NUMSUB", "gochat:control")[1] == 2
	for r in shards:
		assert len(r.cmd("PUBSUB", "CHANNELS", "gochat:worker:*")) == 2
	assert set(where(shards, "gochat:hub:hubs")) == {0}


def rooms_in_inbox(r, inbox):
	return {e[1][e[1].index("room") + 1] for e in
	    r.cmd("XRANGE", inbox, "-", "+")}


def test_a_shard_down_fails_what_lives_there_and_health(sharded, shards):
	"""Shard 2 stopped: /health is 503, a session kept there answers 503,
	one on shard 0 or 1 still works, getRooms lists every room, getClients
	of a room of partition 2 answers 503; once it is back, everything
	does."""
	s = sharded
	u = register(s)
	by_shard = {}
	while len(by_shard) < 3:
		t = login(s, u)
		by_shard.setdefault(session_shard(t), t)
	rooms = {p: room_in_partition(s, u, p) for p in (0, 2)}
	assert s.health()[0] == 200, s.health()
	shards[2].stop()
	try:
		assert harness.wait_for(lambda: s.health()[0] == 503, 5), s.health()
		assert call(s, "GET", "/ws/getRooms", by_shard[2]).status_code == 503
		for i in (0, 1):
			assert call(s, "GET", "/ws/getRooms",
			    by_shard[i]).status_code == 200
		# Every room is listed (shard 2's counted as 0); who is in a
		# room of shard 2 cannot be told, in one of shard 0 it can.
		t = by_shard[0]
		listed = {r["id"]: r["clients"] for r in all_rooms(s, t)}
		assert listed[rooms[0]] == 0 and listed[rooms[2]] == 0, listed
		assert call(s, "GET", "/ws/getClients/" + rooms[2],
		    t).status_code == 503
		assert call(s, "GET", "/ws/getClients/" + rooms[0],
		    t).status_code == 200
	finally:
		shards[2].start()
	assert harness.wait_for(lambda: s.health()[0] == 200, 10), s.health()
	for t in by_shard.values():
		assert call(s, "GET", "/ws/getRooms", t).status_code == 200


def test_v2_acks_edits_and_typing_reach_rooms_on_every_shard(sharded,
    shards):
	"""gochat.v2 in a room of each partition: the ack (the hub's, on the
	worker channel of the room's shard), an edit (through the hub) and a
	typing event (the worker's own PUBLISH, which must go on the room's
	shard, where its subscribers are) all reach the room's sockets, and
	the typing key lives on the room's shard only."""
	from test_v2 import sent, send, v2, wait_type
	s = sharded
	a, b = register(s), register(s)
	for p in range(PARTITIONS):
		room = room_in_partition(s, a, p)
		wa, wb = v2(s, room, a), v2(s, room, b)
		ack = sent(wa, "v2 over shard %d" % p)
		wb.wait_content("v2 over shard %d" % p, 5)
		send(wa, op="edit", id=ack["id"], content="edited %d" % p)
		e = wait_type(wb, "edit", lambda e: e.get("target") == ack["id"])
		assert e["content"] == "edited %d" % p, e
		send(wa, op="typing")
		t = wait_type(wb, "typing")
		assert t["userId"] == a["id"] and t["roomId"] == room, t
		key = "gochat:typing:%s:%d" % (room, a["id"])
		assert set(where(shards, key)) == {p}, (p, key)
		wa.close()
		wb.close()
