"""The hub (SPEC.md §5 and §7, DESIGN.md "How a chat message travels"),
driven only through Redis and PostgreSQL, the way workers and operators
reach it: XADD entries to gochat:hub:inbox, watch the room and worker
channels with a subscriber, read presence hashes and the messages table.
No WebSocket is involved, so these tests hold whatever the workers do.

Fault tests kill the hub while entries stream in and stop PostgreSQL: every
message must be stored exactly once and published with its one id, and a
client (which drops a message whose id is not above the last it saw) must
see each exactly once, in order."""

import json
import os
import signal
import socket
import threading
import time

import pytest

import harness
from conftest import needs_own_server, own_service, wait_for

P = "gochat:"
INBOX = P + "hub:inbox"

pytestmark = pytest.mark.usefixtures("own_server_only")


@pytest.fixture
def own_server_only():
	needs_own_server()


_rooms = [0]


def new_room(pg):
	"""A room of the test's own (the PostgreSQL is shared by the run)."""
	_rooms[0] += 1
	rid = "hub%d-%d-%d" % (os.getpid(), int(time.time() * 1000) % 10**8,
	    _rooms[0])
	pg.psql("INSERT INTO rooms (id, name) VALUES ('%s', '%s')" % (rid, rid),
	    dbname="gochat")
	return rid


def sql(pg, text):
	return pg.psql(text, dbname="gochat")


def start(make_server, redis, pg=None, **conf):
	"""A server of the test's own on an empty Redis, with its hub leading.
	Ready means the hub holds the lease, not that /health says 200: these
	tests must not depend on the workers."""
	redis.cmd("FLUSHALL")
	conf.setdefault("workers", 1)
	s = make_server(pg=pg, start=False, **conf)
	s.start(wait=False)
	wait_leading(s, redis, 15)
	return s


def hub_pid(server):
	hubs = server.hubs()
	return hubs[0] if len(hubs) == 1 else None


def wait_leading(server, redis, timeout, other_than=None):
	"""The pid of the server's hub once it holds the lease; with
	other_than, a hub other than that (just killed, maybe not yet reaped:
	a zombie still shows as a child and the lease still names it)."""
	def leading():
		if not server.running():
			raise harness.HarnessError("gochat exited\n" + server.log_tail())
		pid = hub_pid(server)
		if pid == other_than:
			return None
		v = redis.cmd("GET", P + "hub:leader")
		return pid if pid and v and v.endswith(":%d" % pid) else None
	pid = wait_for(leading, timeout)
	assert pid, "no hub holds the lease after %d s\n%s" % (timeout,
	    server.log_tail())
	return pid


def after_renewal(redis):
	"""Return right after the leading hub renewed its lease: by its own
	clock it then leads for seconds, and renews again in about one."""
	last = redis.cmd("PTTL", P + "hub:leader")
	deadline = time.monotonic() + 5
	while time.monotonic() < deadline:
		now = redis.cmd("PTTL", P + "hub:leader")
		if now > last + 50:
			return
		last = now
		time.sleep(0.002)
	pytest.fail("the hub did not renew its lease")


def entry(op, room, **fields):
	args = ["XADD", INBOX, "*", "op", op, "room", room]
	for k, v in fields.items():
		args += [k, v]
	return args


def pipeline(port, commands):
	"""Send every command at once on one connection; their replies."""
	with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
		f = s.makefile("rb")
		s.sendall(b"".join(harness._resp_encode(c) for c in commands))
		return [harness._resp_read(f) for _ in commands]


class Sub(threading.Thread):
	"""A Redis subscriber (PSUBSCRIBE) recording [(channel, event)] in the
	order Redis delivered them: the room and worker channels on one
	connection, as a worker receives them."""

	def __init__(self, port, *patterns):
		super().__init__(daemon=True)
		self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
		self.f = self.sock.makefile("rb")
		self.sock.sendall(harness._resp_encode(["PSUBSCRIBE"] +
		    list(patterns)))
		for _ in patterns:
			harness._resp_read(self.f)
		self.events = []
		self.start()

	def run(self):
		self.sock.settimeout(None)
		while True:
			try:
				m = harness._resp_read(self.f)
			except (OSError, ConnectionError, ValueError):
				return
			if isinstance(m, list) and m[0] == "pmessage":
				self.events.append((m[2], json.loads(m[3])))

	def close(self):
		try:
			self.sock.shutdown(socket.SHUT_RDWR)
		except OSError:
			pass
		self.sock.close()

	def of(self, channel, type=None):
		return [e for c, e in list(self.events) if c == channel and
		    (type is None or e["type"] == type)]

	def wait(self, predicate, timeout, what):
		assert wait_for(predicate, timeout), "after %.1f s: %s\n%r" % (
		    timeout, what, list(self.events)[-20:])


@pytest.fixture
def sub(redis):
	subs = []

	def make(*patterns):
		s = Sub(redis.port, *patterns)
		subs.append(s)
		return s
	yield make
	for s in subs:
		s.close()


def alive(redis, wid, ttl=60):
	redis.cmd("SET", P + "worker:%s:alive" % wid, 1, "EX", ttl)


def pending(redis):
	try:
		return redis.cmd("XPENDING", INBOX, "hub")[0]
	except harness.RedisError:
		return None


def client_view(events):
	"""What a worker delivers: messages whose id is above the last one."""
	out, last = [], 0
	for e in events:
		if e["id"] > last:
			out.append(e)
			last = e["id"]
	return out


def stored(pg, room):
	"""{content: (id, ts as the hub publishes it)} of room's messages."""
	rows = sql(pg, "SELECT content, id, to_char(created_at AT TIME ZONE "
	    "'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"') FROM messages "
	    "WHERE room_id = '%s'" % room)
	out = {}
	for line in rows.splitlines():
		content, id, ts = line.split("|")
		out[content] = (int(id), ts)
	return out


# --- the normal path ---------------------------------------------------------

def test_ids_history_presence_and_operator_announcement(make_server, redis,
    pg, sub):
	s = start(make_server, redis)
	room = new_room(pg)
	rch, wch = P + "room:" + room, P + "worker:w:1"
	alive(redis, "w:1")
	watch = sub(rch, wch)

	cmds = [entry("broadcast", room, user=5, username="alice",
	    content="m%d" % i, worker="w:1", conn=1) for i in range(3)]
	cmds += [entry("register", room, worker="w:1", conn=10, user=5,
	    username="alice")]
	cmds += [entry("register", room, worker="w:1", conn=11, user=5,
	    username="alice")]
	cmds += [entry("register", room, worker="w:1", conn=12, user=6,
	    username="bob")]
	cmds += [entry("broadcast", room, username="ops",
	    content="Back in 5 minutes")]
	pipeline(redis.port, cmds)
	watch.wait(lambda: len(watch.of(rch, "join")) == 3 and
	    watch.of(rch, "message") and watch.of(rch, "message")[-1]["content"]
	    == "Back in 5 minutes", 5, "3 joins and the announcement")

	msgs = watch.of(rch, "message")
	assert [m["id"] for m in msgs] == [1, 2, 3, 4]
	assert [m["content"] for m in msgs] == ["m0", "m1", "m2",
	    "Back in 5 minutes"]
	op = msgs[-1]
	assert op["userId"] == 0 and op["username"] == "ops"
	assert op["roomId"] == room and op["type"] == "message"
	assert set(op) == {"type", "id", "roomId", "userId", "username",
	    "content", "ts"}
	assert list(msgs[0]) == ["type", "id", "roomId", "userId", "username",
	    "content", "ts"]
	# What the hub publishes is what it stored, ts included.
	db = stored(pg, room)
	for m in msgs:
		assert db[m["content"]] == (m["id"], m["ts"])

	# Each joiner's history comes first, on its worker's channel.
	order = [(c, e) for c, e in watch.events]
	for conn, upto, user in ((10, 3, 5), (11, 3, 5), (12, 3, 6)):
		hi = [i for i, (c, e) in enumerate(order) if c == wch and
		    e["conn"] == conn]
		assert len(hi) == 1, "one history for conn %d" % conn
		h = order[hi[0]][1]
		assert h["type"] == "history" and h["roomId"] == room
		assert h["upto"] == upto
		assert [m["id"] for m in h["messages"]] == [1, 2, 3]
		assert all(m["history"] is True for m in h["messages"])
		assert h["messages"][0]["content"] == "m0"
		joins = [i for i, (c, e) in enumerate(order) if c == rch and
		    e["type"] == "join" and i > hi[0] and e["userId"] == user]
		assert joins, "no join after the history of conn %d" % conn
	join = watch.of(rch, "join")[0]
	assert set(join) == {"type", "roomId", "userId", "username", "ts"}

	# Presence: distinct users in the room's hash, connections in the hub's.
	clients = P + "room:%s:clients" % room
	assert harness.redis_hash(redis.port, clients) == {"5": "alice",
	    "6": "bob"}
	pres = harness.redis_hash(redis.port, P + "hub:presence")
	assert pres == {"%s w:1 10" % room: "5 alice",
	    "%s w:1 11" % room: "5 alice", "%s w:1 12" % room: "6 bob"}

	# alice keeps her place while one of her connections is open.
	pipeline(redis.port, [entry("unregister", room, worker="w:1", conn=10,
	    user=5, username="alice")])
	watch.wait(lambda: len(watch.of(rch, "leave")) == 1, 5, "a leave")
	assert redis.cmd("HLEN", clients) == 2
	pipeline(redis.port, [entry("unregister", room, worker="w:1", conn=c,
	    user=u, username=n) for c, u, n in ((11, 5, "alice"),
	    (12, 6, "bob"))])
	watch.wait(lambda: len(watch.of(rch, "leave")) == 3, 5, "3 leaves")
	assert redis.cmd("EXISTS", clients) == 0
	assert redis.cmd("HLEN", P + "hub:presence") == 0
	assert pending(redis) == 0

	# A later joiner gets the announcement in its history too.
	pipeline(redis.port, [entry("register", room, worker="w:1", conn=13,
	    user=7, username="carol")])
	watch.wait(lambda: any(e["conn"] == 13 for e in watch.of(wch)), 5,
	    "history of conn 13")
	h = [e for e in watch.of(wch) if e["conn"] == 13][0]
	assert h["upto"] == 4 and h["messages"][-1]["userId"] == 0


def test_history_ring_is_the_last_history_on_join_messages(make_server,
    redis, pg, sub):
	start(make_server, redis, history_on_join=5)
	room = new_room(pg)
	wch = P + "worker:w:2"
	alive(redis, "w:2")
	watch = sub(wch)
	pipeline(redis.port, [entry("broadcast", room, user=1, username="u",
	    content="c%d" % i) for i in range(12)] + [entry("register", room,
	    worker="w:2", conn=1, user=1, username="u")])
	watch.wait(lambda: watch.of(wch), 5, "a history")
	h = watch.of(wch)[0]
	assert h["upto"] == 12
	assert [m["id"] for m in h["messages"]] == [8, 9, 10, 11, 12]


def test_a_batch_is_stored_in_one_statement(make_server, redis, pg, sub):
	s = start(make_server, redis)
	room = new_room(pg)
	rch = P + "room:" + room
	watch = sub(rch)
	xacts = "SELECT xact_commit FROM pg_stat_database WHERE datname = 'gochat'"
	time.sleep(1.5)
	before = int(sql(pg, xacts))
	n = 1000
	pipeline(redis.port, [entry("broadcast", room, user=3, username="u",
	    content="b%d" % i) for i in range(n)])
	watch.wait(lambda: len(watch.of(rch)) == n, 10, "%d messages" % n)
	assert [m["id"] for m in watch.of(rch)] == list(range(1, n + 1))
	assert sql(pg, "SELECT count(*), count(DISTINCT inbox_id) FROM messages "
	    "WHERE room_id = '%s'" % room) == "%d|%d" % (n, n)
	time.sleep(1.5)		# PostgreSQL publishes its statistics lazily
	used = int(sql(pg, xacts)) - before
	# 1000 entries are 4 batches of 256: a few statements each at most,
	# plus the other processes' own (and our psql).
	assert used < 60, "%d transactions for %d messages" % (used, n)


def test_garbage_and_unknown_rooms_are_acknowledged_and_logged(make_server,
    redis, pg, sub):
	s = start(make_server, redis)
	room = new_room(pg)
	rch = P + "room:" + room
	watch = sub(rch)
	bad = [
		["XADD", INBOX, "*", "hello", "world"],
		["XADD", INBOX, "*", "op", "explode", "room", room],
		entry("broadcast", "bad room!", username="x", content="y"),
		entry("broadcast", room, username="x"),
		entry("broadcast", room, username="x", content=b"\xff\xfe"),
		entry("broadcast", room, username="x", content="a\0b"),
		entry("broadcast", room, username="x", content="z" * 5000),
		entry("broadcast", room, username="x", user="-4", content="y"),
		entry("register", room, username="x", user=1),
		entry("broadcast", "no-such-room-" + room, username="ops",
		    content="typo"),
		entry("register", "no-such-room-" + room, worker="w:9", conn=1,
		    user=1, username="x"),
	]
	ids = pipeline(redis.port, bad)
	pipeline(redis.port, [entry("broadcast", room, username="ops",
	    content="after the garbage")])
	watch.wait(lambda: watch.of(rch), 5, "the good entry")
	assert [(m["id"], m["content"]) for m in watch.of(rch)] == [
	    (1, "after the garbage")]
	assert wait_for(lambda: pending(redis) == 0, 2), "entries left pending"
	log = s.log_text()
	for i in ids:
		assert "inbox entry %s" % i in log, "entry %s not logged" % i
	assert "no room 'no-such-room-%s'" % room in log
	# Nothing but the hub's own entry went to PostgreSQL.
	assert sql(pg, "SELECT count(*) FROM messages WHERE room_id = '%s'"
	    % room) == "1"


def test_a_command_redis_refuses_holds_back_nothing_else(make_server, redis,
    pg, sub):
	"""A batch's transaction runs every command even when Redis refuses
	one: the room's presence key of the wrong type (an operator's typo)
	refuses the register's HSET, and the messages around it are still
	published in order, the join too, and the refusal is logged."""
	s = start(make_server, redis)
	room = new_room(pg)
	rch, clients = P + "room:" + room, P + "room:" + room + ":clients"
	alive(redis, "w:1")
	redis.cmd("SET", clients, "not a hash")
	watch = sub(rch)
	pipeline(redis.port, [
		entry("broadcast", room, username="ops", content="before"),
		entry("register", room, worker="w:1", conn=10, user=5,
		    username="alice"),
		entry("broadcast", room, username="ops", content="after")])
	watch.wait(lambda: len(watch.of(rch, "message")) == 2, 5,
	    "both messages")
	assert [(m["id"], m["content"]) for m in watch.of(rch, "message")] == [
	    (1, "before"), (2, "after")]
	assert [e["username"] for e in watch.of(rch, "join")] == ["alice"]
	assert wait_for(lambda: pending(redis) == 0, 2), "entries left pending"
	assert wait_for(lambda: "Redis refused 1 commands: WRONGTYPE" in
	    s.log_text(), 2), s.log_tail()
	assert redis.cmd("GET", clients) == "not a hash"


# --- presence ----------------------------------------------------------------

def test_a_dead_workers_connections_leave_within_5_s(make_server, redis, pg,
    sub):
	start(make_server, redis)
	room = new_room(pg)
	rch = P + "room:" + room
	clients = P + "room:%s:clients" % room
	watch = sub(rch)
	# A worker that never set its heartbeat, and one whose heartbeat stops.
	alive(redis, "w:dying", ttl=4)
	t0 = time.monotonic()
	pipeline(redis.port, [
	    entry("register", room, worker="w:ghost", conn=1, user=1,
		username="ghost"),
	    entry("register", room, worker="w:dying", conn=2, user=2,
		username="dying"),
	    entry("register", room, worker="w:dying", conn=3, user=3,
		username="dying3")])
	watch.wait(lambda: len(watch.of(rch, "join")) == 3, 5, "3 joins")
	assert redis.cmd("HLEN", clients) == 3
	watch.wait(lambda: [e["userId"] for e in watch.of(rch, "leave")] ==
	    [1], 5, "the ghost worker's user leaves")
	took = time.monotonic() - t0
	assert took < 5, "left after %.1f s" % took
	assert redis.cmd("HLEN", clients) == 2	# the dying one is still alive
	watch.wait(lambda: sorted(e["userId"] for e in watch.of(rch, "leave"))
	    == [1, 2, 3], 5, "the dead worker's users leave")
	took = time.monotonic() - t0
	assert took < 4 + 5, "left %.1f s after the heartbeat stopped" % (
	    took - 4)
	assert redis.cmd("EXISTS", clients) == 0
	assert redis.cmd("HLEN", P + "hub:presence") == 0


def test_a_thousand_joins_and_leaves_at_once(make_server, redis, pg, sub):
	start(make_server, redis)
	room = new_room(pg)
	rch, wch = P + "room:" + room, P + "worker:w:big"
	clients = P + "room:%s:clients" % room
	alive(redis, "w:big")
	pipeline(redis.port, [entry("broadcast", room, user=1, username="u",
	    content="x" * 200) for i in range(50)])
	watch = sub(rch, wch)
	n = 1000
	t0 = time.monotonic()
	pipeline(redis.port, [entry("register", room, worker="w:big", conn=i,
	    user=1000 + i, username="u%d" % i) for i in range(n)])
	watch.wait(lambda: len(watch.of(rch, "join")) == n, 10, "%d joins" % n)
	joined = time.monotonic() - t0
	assert redis.cmd("HLEN", clients) == n
	order = list(watch.events)
	first_history = {}
	for i, (c, e) in enumerate(order):
		if c == wch:
			first_history.setdefault(e["conn"], i)
	for i, (c, e) in enumerate(order):
		if c == rch and e["type"] == "join":
			assert first_history[e["userId"] - 1000] < i
	assert all(len(e["messages"]) == 50 for e in watch.of(wch))
	t0 = time.monotonic()
	pipeline(redis.port, [entry("unregister", room, worker="w:big", conn=i,
	    user=1000 + i, username="u%d" % i) for i in range(n)])
	watch.wait(lambda: len(watch.of(rch, "leave")) == n, 10, "%d leaves" % n)
	left = time.monotonic() - t0
	assert redis.cmd("EXISTS", clients) == 0
	print("\n%d joins in %.2f s, %d leaves in %.2f s" % (n, joined, n, left))
	assert joined < 5 and left < 5


def test_a_new_hub_rebuilds_presence_and_history(make_server, redis, pg, sub):
	s = start(make_server, redis)
	room = new_room(pg)
	rch, wch = P + "room:" + room, P + "worker:w:3"
	clients = P + "room:%s:clients" % room
	alive(redis, "w:3")
	watch = sub(rch, wch)
	pipeline(redis.port, [entry("register", room, worker="w:3", conn=c,
	    user=u, username="u%d" % u) for c, u in ((1, 1), (2, 1), (3, 2))] +
	    [entry("broadcast", room, user=1, username="u1", content="before")])
	watch.wait(lambda: watch.of(rch, "message"), 5, "a message")

	old = hub_pid(s)
	t0 = time.monotonic()
	os.kill(old, signal.SIGKILL)
	new = wait_leading(s, redis, 10, other_than=old)
	took = time.monotonic() - t0
	assert new != old
	# The restarted hub saw that the lease holder was its dead predecessor.
	assert took < 3, "the new hub led only after %.1f s" % took

	# Presence survived: a leave of a connection from before is announced,
	# a register seen before is not announced twice.
	pipeline(redis.port, [
	    entry("unregister", room, worker="w:3", conn=3, user=2,
		username="u2"),
	    entry("register", room, worker="w:3", conn=1, user=1,
		username="u1"),
	    entry("register", room, worker="w:3", conn=4, user=3,
		username="u3")])
	watch.wait(lambda: len(watch.of(rch, "join")) == 4, 5, "the new join")
	assert [e["userId"] for e in watch.of(rch, "leave")] == [2]
	assert [e["userId"] for e in watch.of(rch, "join")] == [1, 1, 2, 3]
	assert harness.redis_hash(redis.port, clients) == {"1": "u1",
	    "3": "u3"}
	# The history comes from PostgreSQL now.
	h = [e for e in watch.of(wch) if e["conn"] == 4][0]
	assert h["upto"] == 1 and [m["content"] for m in h["messages"]] == [
	    "before"]


def test_acknowledged_entries_older_than_10_minutes_are_trimmed(
    make_server, redis, pg, sub):
	"""The inbox keeps 10 minutes of handled entries for operators
	(XRANGE), not everything forever; entries not handled yet are never
	trimmed."""
	start(make_server, redis)
	room = new_room(pg)
	rch = P + "room:" + room
	watch = sub(rch)
	# Entries from 1970, as far as their ids say.
	pipeline(redis.port, [["XADD", INBOX, "1-%d" % i, "op", "broadcast",
	    "room", room, "username", "old", "content", "o%d" % i]
	    for i in range(1, 151)])
	watch.wait(lambda: len(watch.of(rch)) == 150, 5, "150 messages")
	assert redis.cmd("XLEN", INBOX) == 150
	recent = redis.cmd("XADD", INBOX, "*", "op", "broadcast", "room", room,
	    "username", "new", "content", "now")
	watch.wait(lambda: len(watch.of(rch)) == 151, 5, "the recent one")
	assert wait_for(lambda: redis.cmd("XLEN", INBOX) < 150, 3), \
	    "nothing trimmed"
	assert redis.cmd("XRANGE", INBOX, recent, "+")[0][0] == recent
	assert pending(redis) == 0


def test_sigterm_gives_the_lease_back(make_server, redis, pg):
	s = start(make_server, redis)
	s.stop()
	assert redis.cmd("GET", P + "hub:leader") is None


# --- faults ------------------------------------------------------------------

class Producer(threading.Thread):
	"""XADD n broadcasts "m<i>", in small pipelined bursts."""

	def __init__(self, port, room, n, burst=20, pause=0.004, first=0):
		super().__init__(daemon=True)
		self.port, self.room, self.n = port, room, n
		self.first = first
		self.burst, self.pause = burst, pause
		self.sent = 0
		self.error = None

	def run(self):
		try:
			while self.sent < self.n:
				k = min(self.burst, self.n - self.sent)
				pipeline(self.port, [entry("broadcast", self.room, user=9,
				    username="p", content="m%d" % (self.first + self.sent + i),
				    worker="w:p", conn=1) for i in range(k)])
				self.sent += k
				time.sleep(self.pause)
		except Exception as e:	# reported by the test
			self.error = e


def check_exactly_once(pg, room, events, n):
	"""Every message stored once; every publication carries the stored id
	and ts; a client sees each exactly once, in order. Returns the number
	of publications that were repeats."""
	assert sql(pg, "SELECT count(*), count(DISTINCT inbox_id), "
	    "count(DISTINCT id) FROM messages WHERE room_id = '%s'" % room) == \
	    "%d|%d|%d" % (n, n, n)
	db = stored(pg, room)
	assert len(db) == n
	ids = [db["m%d" % i][0] for i in range(n)]
	assert ids == sorted(ids), "ids do not follow the stream's order"
	for e in events:
		assert (e["id"], e["ts"]) == db[e["content"]], (
		    "%s published as %d, stored as %d" % (e["content"], e["id"],
		    db[e["content"]][0]))
	seen = [e["content"] for e in client_view(events)]
	assert seen == ["m%d" % i for i in range(n)]
	return len(events) - n


def test_hub_killed_while_messages_stream_in_loses_and_repeats_nothing(
    make_server, redis, pg, sub):
	s = start(make_server, redis)
	room = new_room(pg)
	rch = P + "room:" + room
	watch = sub(rch)
	n = 2000
	prod = Producer(redis.port, room, n)
	prod.start()
	kills = []
	for at in (400, 1100):
		assert wait_for(lambda: prod.sent >= at, 30), "producer stuck"
		pid = wait_leading(s, redis, 10)
		t0 = time.monotonic()
		os.kill(pid, signal.SIGKILL)
		wait_leading(s, redis, 10)
		kills.append(time.monotonic() - t0)
	prod.join(60)
	assert prod.error is None, prod.error
	watch.wait(lambda: len(client_view(watch.of(rch))) == n, 20,
	    "all %d messages published" % n)
	assert wait_for(lambda: pending(redis) == 0, 5)
	repeats = check_exactly_once(pg, room, watch.of(rch), n)
	log = s.log_text()
	print("\nhub killed twice: new leader after %s s; %d publications "
	    "repeated (same ids); replays logged: %d" % (
	    ", ".join("%.2f" % k for k in kills), repeats,
	    log.count("replaying")))


@pytest.fixture(scope="module")
def private_pg(workdir):
	yield from own_service(harness.Postgres(workdir / "hub-pg",
	    harness.free_port()))


def test_postgres_down_delays_messages_but_loses_none(make_server, redis,
    private_pg, sub):
	private_pg.start()
	s = start(make_server, redis, pg=private_pg)
	room = new_room(private_pg)
	rch = P + "room:" + room
	watch = sub(rch)
	pipeline(redis.port, [entry("broadcast", room, user=9, username="p",
	    content="m%d" % i) for i in range(100)])
	watch.wait(lambda: len(watch.of(rch)) == 100, 5, "100 messages")

	prod = Producer(redis.port, room, 400, burst=10, pause=0.01, first=100)
	prod.start()
	assert wait_for(lambda: prod.sent >= 100, 10)
	private_pg.stop()
	down = len(watch.of(rch))
	time.sleep(2)
	assert len(watch.of(rch)) - down <= 256, "published without storing"
	prod.join(30)
	assert prod.error is None, prod.error
	assert s.running() and hub_pid(s), "a process died"
	stuck = len(watch.of(rch))
	t0 = time.monotonic()
	private_pg.start()
	watch.wait(lambda: len(client_view(watch.of(rch))) == 500, 15,
	    "the messages held while PostgreSQL was down")
	took = time.monotonic() - t0
	repeats = check_exactly_once(private_pg, room, watch.of(rch), 500)
	print("\nPostgreSQL down: %d messages waited; all published %.2f s "
	    "after it was back; %d repeats" % (500 - stuck, took, repeats))
	assert took < 5


def test_replayed_entries_keep_the_ids_an_earlier_hub_stored(make_server,
    redis, pg, sub):
	"""A hub that stored a batch and died before publishing it: its
	successor finds the entries pending, the rows in PostgreSQL, and
	publishes those ids and times, not new ones; the new entries get the
	ids that follow, without a gap. A joiner registered in that batch
	before those messages gets a history that stops below them, so that
	they reach it, and the room's other members, live."""
	s = start(make_server, redis)
	room = new_room(pg)
	rch, wch = P + "room:" + room, P + "worker:w:r"
	alive(redis, "w:r")
	watch = sub(rch, wch)
	pipeline(redis.port, [entry("broadcast", room, user=9, username="p",
	    content="m%d" % i) for i in range(2)])
	watch.wait(lambda: len(watch.of(rch)) == 2, 5, "2 messages")

	old = hub_pid(s)
	os.kill(old, signal.SIGSTOP)
	try:
		pipeline(redis.port, [entry("register", room, worker="w:r",
		    conn=50, user=50, username="late")] + [entry("broadcast",
		    room, user=9, username="p", content="m%d" % i)
		    for i in range(2, 7)])
		# Delivered to consumer "hub" (the frozen one's blocked read
		# takes some), never acknowledged.
		redis.cmd("XREADGROUP", "GROUP", "hub", "hub", "COUNT", 100,
		    "STREAMS", INBOX, ">")
		ids = [p[0] for p in redis.cmd("XPENDING", INBOX, "hub", "-", "+",
		    100)]
		assert len(ids) == 6
		# What the frozen hub "had stored": m2, m3, m4 as ids 3, 4, 5.
		for i, (inbox_id, id) in enumerate(zip(ids[1:4], (3, 4, 5))):
			sql(pg, "INSERT INTO messages (room_id, id, user_id, "
			    "username, content, inbox_id, created_at) VALUES "
			    "('%s', %d, 9, 'p', 'm%d', '%s', "
			    "'2001-02-03T04:05:06.%03dZ')" % (room, id, i + 2,
			    inbox_id, i))
		time.sleep(0.5)
		assert len(watch.of(rch)) == 2
	finally:
		os.kill(old, signal.SIGKILL)
	wait_leading(s, redis, 10, other_than=old)
	watch.wait(lambda: len(watch.of(rch, "message")) == 7, 5,
	    "the 5 replayed")
	got = [(e["id"], e["content"], e["ts"]) for e in
	    watch.of(rch, "message")][2:]
	assert got[:3] == [(3, "m2", "2001-02-03T04:05:06.000Z"),
	    (4, "m3", "2001-02-03T04:05:06.001Z"),
	    (5, "m4", "2001-02-03T04:05:06.002Z")]
	assert [(i, c) for i, c, _ in got[3:]] == [(6, "m5"), (7, "m6")]
	check_exactly_once(pg, room, watch.of(rch, "message"), 7)
	h = watch.of(wch)[0]
	assert h["upto"] == 2 and [m["id"] for m in h["messages"]] == [1, 2]
	# In order on the one connection: history, join, then 3..7.
	order = [(c, e.get("type"), e.get("id")) for c, e in watch.events]
	assert order[2:] == [(wch, "history", None), (rch, "join", None)] + [
	    (rch, "message", i) for i in range(3, 8)]
	assert pending(redis) == 0
	assert "stored by an earlier hub" in s.log_text()
	# A replay is no refusal: what is stored is found, not refused and
	# isolated.
	assert "refused" not in s.log_text(), s.log_tail()


def test_a_new_entry_found_stored_already_is_published_as_stored(
    make_server, redis, pg, sub):
	"""An entry that reaches the hub as new although its message is stored
	(a Redis failover that lost the group's progress hands it out again):
	the store's first INSERT, without ON CONFLICT, fails on its inbox id;
	the batch is written again with it, and the message goes out once,
	with the stored id and time, the one after it with the next id. No
	refusal is logged and nothing is isolated."""
	s = start(make_server, redis)
	room = new_room(pg)
	rch = P + "room:" + room
	watch = sub(rch)
	pipeline(redis.port, [entry("broadcast", room, user=9, username="p",
	    content="m%d" % i) for i in range(2)])
	watch.wait(lambda: len(watch.of(rch)) == 2, 5, "2 messages")
	# An id above the stream's last, given explicitly: stored first, as
	# by a hub before the failover, then added to the inbox.
	again = "%d-0" % (int(time.time() * 1000) + 60000)
	sql(pg, "INSERT INTO messages (room_id, id, user_id, username, "
	    "content, inbox_id, created_at) VALUES ('%s', 3, 9, 'p', 'm2', "
	    "'%s', '2001-02-03T04:05:06.007Z')" % (room, again))
	redis.cmd("XADD", INBOX, again, "op", "broadcast", "room", room,
	    "user", 9, "username", "p", "content", "m2")
	pipeline(redis.port, [entry("broadcast", room, user=9, username="p",
	    content="m3")])
	watch.wait(lambda: len(watch.of(rch, "message")) == 4, 5,
	    "the stored one and the next")
	got = [(e["id"], e["content"], e["ts"]) for e in
	    watch.of(rch, "message")][2:]
	assert got[0] == (3, "m2", "2001-02-03T04:05:06.007Z")
	assert got[1][:2] == (4, "m3")
	check_exactly_once(pg, room, watch.of(rch, "message"), 4)
	assert pending(redis) == 0
	assert "stored by an earlier hub" in s.log_text()
	assert "refused" not in s.log_text(), s.log_tail()


def test_a_standby_takes_over_a_frozen_leader_which_then_steps_down(
    make_server, redis, pg, sub):
	"""Two instances: the standby hub leads within the lease's 5 s once
	the leader is frozen; the old leader, woken up, stands by without
	publishing anything; every message is published once, in order."""
	a = start(make_server, redis, instance="host-a")
	b = make_server(start=False, workers=1, instance="host-b")
	b.start(wait=False)
	assert wait_for(lambda: hub_pid(b) and "waiting for the leader lease"
	    in b.log_text(), 10), "no standby hub\n" + b.log_tail()
	room = new_room(pg)
	rch = P + "room:" + room
	watch = sub(rch)
	burst = lambda first, n: pipeline(redis.port, [entry("broadcast", room,
	    user=9, username="p", content="m%d" % i)
	    for i in range(first, first + n)])
	burst(0, 10)
	watch.wait(lambda: len(watch.of(rch)) == 10, 5, "10 messages")

	old = hub_pid(a)
	os.kill(old, signal.SIGSTOP)
	try:
		t0 = time.monotonic()
		burst(10, 50)
		wait_leading(b, redis, 8)
		took = time.monotonic() - t0
		watch.wait(lambda: len(watch.of(rch)) == 60, 5,
		    "the messages sent while the leader was frozen")
	finally:
		os.kill(old, signal.SIGCONT)
	assert took < 5 + 1.5, "the standby led after %.1f s" % took
	assert wait_for(lambda: "standing by" in a.log_text(), 3), \
	    "the old leader did not step down\n" + a.log_tail()
	burst(60, 20)
	watch.wait(lambda: len(watch.of(rch)) >= 80, 5, "80 messages")
	time.sleep(1)
	check_exactly_once(pg, room, watch.of(rch), 80)
	assert hub_pid(a) == old, "the old leader died"
	print("\nstandby on another instance led %.2f s after the leader "
	    "froze" % took)


def test_the_inbox_keeps_only_the_newest_handled_entries(make_server, redis,
    pg):
	"""Handled entries are trimmed when older than ten minutes, and also
	beyond about the newest 100,000 (75,000 to 100,000 are kept): at a high
	intake ten minutes would be millions of entries, gigabytes of Redis.
	Nothing is trimmed before it is handled: every message is stored, in
	order, and nothing stays pending."""
	start(make_server, redis, pg, instance="host-keep")
	room = new_room(pg)
	n = 130000
	for k in range(0, n, 10000):
		pipeline(redis.port, [["XADD", INBOX, "*", "op", "broadcast",
		    "room", room, "username", "ops", "content", "m%d" % i]
		    for i in range(k, k + 10000)])

	def stored():
		return int(sql(pg, "SELECT count(*) FROM messages WHERE room_id "
		    "= '%s'" % room))
	assert wait_for(lambda: stored() == n, 180), \
	    "%d of %d stored" % (stored(), n)
	time.sleep(1.2)		# a trim rides a live batch, once a second at most
	pipeline(redis.port, [["XADD", INBOX, "*", "op", "broadcast", "room",
	    room, "username", "ops", "content", "m%d" % n]])
	assert wait_for(lambda: stored() == n + 1, 30)
	assert wait_for(lambda: 75000 <= redis.cmd("XLEN", INBOX) <= 100200,
	    10), "XLEN %d" % redis.cmd("XLEN", INBOX)
	assert redis.cmd("XPENDING", INBOX, "hub")[0] == 0
	assert sql(pg, "SELECT bool_and(content = 'm' || (n - 1)) FROM (SELECT "
	    "content, row_number() OVER (ORDER BY id) AS n FROM messages WHERE "
	    "room_id = '%s') s" % room) == "t"
