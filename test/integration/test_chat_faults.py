"""Chat under faults (SPEC.md §5, DESIGN.md "How a chat message travels"):
a worker killed while others chat, the hub killed mid-stream, Redis
stopped and restarted mid-stream. Each test has a server of its own (and
the Redis tests a Redis of their own), and counts every message: an
accepted message is stored and delivered exactly once to every connection
that stayed open, in increasing id order; only a message whose sender had
its connection closed may be missing.

Which worker holds a connection is found from /proc: the server side of
our TCP connection (/proc/net/tcp) and the worker whose fd table holds
that socket."""

import os
import re
import signal
import socket
import threading
import time

import pytest

import harness
from conftest import needs_own_server, own_service
from test_chat import (all_history, all_rooms, assert_increasing, call,
    create_room, join, login, ok_json, register, try_join, wait_clients)
from test_chat import close_websockets  # noqa: F401 (autouse: aborts every WS)

pytestmark = pytest.mark.usefixtures("own_server_only")


@pytest.fixture
def own_server_only():
	needs_own_server()


# --- which worker holds a connection -----------------------------------------------

def _tcp_inodes(server_port):
	"""{client port: socket inode} of the server side of established
	connections to server_port on 127.0.0.1."""
	out = {}
	for path in ("/proc/net/tcp", "/proc/net/tcp6"):
		try:
			with open(path) as f:
				lines = f.read().splitlines()[1:]
		except OSError:
			continue
		for line in lines:
			parts = line.split()
			local, remote, state, inode = parts[1], parts[2], parts[3], \
			    parts[9]
			if state != "01":
				continue
			if int(local.rsplit(":", 1)[1], 16) == server_port:
				out[int(remote.rsplit(":", 1)[1], 16)] = inode
	return out


def _socket_inodes_of(pid):
	found = set()
	try:
		fds = os.listdir("/proc/%d/fd" % pid)
	except OSError:
		return found
	for fd in fds:
		try:
			link = os.readlink("/proc/%d/fd/%s" % (pid, fd))
		except OSError:
			continue
		if link.startswith("socket:["):
			found.add(link[8:-1])
	return found


def worker_of(srv, ws):
	"""The pid of the worker holding ws's connection, or None."""
	port = ws.sock.getsockname()[1]
	inode = _tcp_inodes(srv.port).get(port)
	if inode is None:
		return None
	for n, pid in srv.workers().items():
		if inode in _socket_inodes_of(pid):
			return pid
	return None


def settled(srv, n_workers=2, timeout=5):
	def check():
		kids = srv.children()
		titles = sorted(t for _, t in kids)
		want = sorted(["gochat: worker %d" % i for i in range(1,
		    n_workers + 1)] + ["gochat: hub"])
		return kids if titles == want else None
	kids = harness.wait_for(check, timeout)
	assert kids, "children: %r" % srv.children()
	return sorted(kids)


# --- senders that record what they sent ------------------------------------------------

class Sender(threading.Thread):
	"""Sends "<tag>-<n>" on ws every interval until stopped or the
	connection fails; remembers what it sent."""

	def __init__(self, ws, tag, interval=0.01, count=None):
		super().__init__(daemon=True)
		self.ws, self.tag, self.interval, self.count = ws, tag, interval, count
		self.sent = []
		self.stopping = threading.Event()
		self.error = None

	def run(self):
		n = 0
		while not self.stopping.is_set() and (self.count is None or
		    n < self.count):
			c = "%s-%d" % (self.tag, n)
			try:
				self.ws.send(c)
			except OSError as e:
				self.error = e
				return
			self.sent.append(c)
			n += 1
			time.sleep(self.interval)

	def stop(self):
		self.stopping.set()
		self.join(10)


def check_exactly_once(receivers, must, allowed, what):
	"""Every receiver got each content of must exactly once, nothing outside
	allowed, no content twice, ids strictly increasing, and all of them the
	same sequence."""
	seqs = []
	for w in receivers:
		msgs = w.messages(history=False)
		ids = [e["id"] for e in msgs]
		contents = [e["content"] for e in msgs]
		assert_increasing(ids, "%s: %s" % (what, w.label))
		dup = sorted({c for c in contents if contents.count(c) > 1})
		assert not dup, "%s: %s got %d contents twice, e.g. %r" % (what,
		    w.label, len(dup), dup[:5])
		extra = sorted(set(contents) - allowed)
		assert not extra, "%s: %s got messages nobody sent: %r" % (what,
		    w.label, extra[:5])
		missing = sorted(must - set(contents))
		assert not missing, "%s: %s is missing %d accepted messages, e.g. " \
		    "%r" % (what, w.label, len(missing), missing[:5])
		seqs.append([(e["id"], e["content"]) for e in msgs])
	for s in seqs[1:]:
		assert s == seqs[0], "%s: two connections saw different sequences" \
		    % what


def check_sender_order(history, senders):
	"""Each sender's stored messages are in the order it sent them."""
	pos = {e["content"]: e["id"] for e in history}
	for s in senders:
		ids = [pos[c] for c in s.sent if c in pos]
		assert_increasing(ids, "sender %s's messages" % s.tag)


# --- a worker dies ---------------------------------------------------------------------

def test_a_killed_worker_spares_the_clients_of_the_other(make_server, redis):
	redis.cmd("FLUSHALL")
	s = make_server()
	settled(s)
	owner = register(s)
	room = create_room(s, owner)
	# The kernel picks the worker for each connection, so keep connecting
	# until both hold at least two, closing the spares.
	conns = []		# (user, ws, worker pid)
	by_pid = {}
	for attempt in range(100):
		u = register(s)
		w = join(s, room, u)
		pid = harness.wait_for(lambda w=w: worker_of(s, w), 2)
		assert pid, "cannot tell which worker holds a connection"
		if len(by_pid.get(pid, [])) >= 4:
			w.close()
			continue
		by_pid.setdefault(pid, []).append((u, w, pid))
		conns.append((u, w, pid))
		if len(by_pid) == 2 and all(len(v) >= 2 for v in by_pid.values()):
			break
	assert len(by_pid) == 2 and all(len(v) >= 2 for v in by_pid.values()), \
	    "%d connections did not reach both workers twice: cannot test this" \
	    % (attempt + 1)
	victim_pid, survivor_pid = sorted(by_pid, key=lambda p: len(by_pid[p]))
	victims, survivors = by_pid[victim_pid], by_pid[survivor_pid]
	surv_ws = [w for _, w, _ in survivors]
	for w in surv_ws:
		w.wait_presence("join", conns[-1][0])
	senders = [Sender(w, "w%d" % i, 0.02) for i, w in enumerate(surv_ws)]
	for t in senders:
		t.start()
	time.sleep(0.4)
	t_kill = time.monotonic()
	os.kill(victim_pid, signal.SIGKILL)
	time.sleep(1.0)
	for t in senders:
		t.stop()
	for t in senders:
		assert t.error is None, "sender %s failed: %r" % (t.tag, t.error)
	sent = {c for t in senders for c in t.sent}
	for w in surv_ws:
		w.wait(lambda w=w: sent <= {e["content"] for e in w.messages()}, 10,
		    "every survivor's message")
		assert w.is_open(), w.describe()
	print("worker kill: %d connections on the victim, %d on the survivor, "
	    "%d messages sent" % (len(victims), len(survivors), len(sent)))
	check_exactly_once(surv_ws, sent, sent, "survivors")
	# The killed worker's users leave getClients and are announced within
	# 5 s of the kill.
	left = max(0.5, t_kill + 5 - time.monotonic())
	wait_clients(s, owner, room, [u for u, _, _ in survivors], left,
	    "the dead worker's users leaving")
	for u, _, _ in victims:
		surv_ws[0].wait_presence("leave", u, max(0.5, t_kill + 5.5 -
		    time.monotonic()))
	for _, w, _ in victims:
		w.wait_closed(2, "the dead worker's connection ending")
	# The replacement worker serves chat again.
	settled(s)
	again = register(s)
	for _ in range(6):
		w = join(s, room, again)
		w.send("after the crash")
		w.wait_content("after the crash")
	surv_ws[0].wait_content("after the crash")


def spread(s, room, per_worker=2, attempts=100):
	"""Join new users to room until both workers hold per_worker of them;
	{worker pid: [(user, ws)]} (spare connections are closed)."""
	by_pid = {}
	for attempt in range(attempts):
		u = register(s)
		w = join(s, room, u)
		pid = harness.wait_for(lambda w=w: worker_of(s, w), 2)
		assert pid, "cannot tell which worker holds a connection"
		if len(by_pid.get(pid, [])) >= per_worker:
			w.close()
			continue
		by_pid.setdefault(pid, []).append((u, w))
		if len(by_pid) == 2 and all(len(v) >= per_worker
		    for v in by_pid.values()):
			return by_pid
	raise AssertionError("%d connections did not reach both workers %d "
	    "times: cannot test this" % (attempts, per_worker))


def test_the_heartbeat_has_a_redis_connection_of_its_own(make_server, redis):
	"""Each worker refreshes its heartbeat on a connection that carries
	nothing else, so that a backlog of chat commands (XADD, session
	lookups) never delays it past its TTL. Seen with MONITOR: the
	connections that SET the alive keys send nothing else, and none of
	them XADDs."""
	redis.cmd("FLUSHALL")
	s = make_server()
	settled(s)
	u = register(s)
	room = create_room(s, u)
	mon = socket.create_connection(("127.0.0.1", redis.port), timeout=5)
	f = mon.makefile("rb")
	mon.sendall(harness._resp_encode(["MONITOR"]))
	assert harness._resp_read(f) == "OK"
	by_addr = {}
	lines = []

	def read():
		while True:
			try:
				lines.append(harness._resp_read(f))
			except (OSError, ConnectionError, ValueError):
				return
	t = threading.Thread(target=read, daemon=True)
	t.start()
	ws = [join(s, room, u) for _ in range(4)]
	deadline = time.monotonic() + 2.5
	n = 0
	while time.monotonic() < deadline:
		ws[n % 4].send("beat %d" % n)
		n += 1
		time.sleep(0.01)
	ws[0].wait_content("beat %d" % (n - 1))
	mon.close()
	t.join(2)
	for line in lines:
		m = re.match(r'[0-9.]+ \[\d+ ([^\]]+)\] "([^"]*)"(?: "([^"]*)")?',
		    line or "")
		if m:
			by_addr.setdefault(m.group(1), []).append((m.group(2).upper(),
			    m.group(3) or ""))
	beats = {a for a, cmds in by_addr.items() if any(c == "SET" and
	    k.endswith(":alive") for c, k in cmds)}
	assert len(beats) == 2, "expected one heartbeat connection per worker, " \
	    "saw %r" % {a: by_addr[a][:5] for a in beats}
	for a in beats:
		other = [c for c in by_addr[a] if not (c[0] == "SET" and
		    c[1].endswith(":alive"))]
		assert not other, "the heartbeat connection %s also sent %r" % (a,
		    other[:5])
	assert any(c == "XADD" for cmds in by_addr.values() for c, _ in cmds), \
	    "MONITOR saw no XADD: the test saw nothing"


# --- the hub dies ----------------------------------------------------------------------

def test_a_killed_hub_loses_and_duplicates_no_message(make_server, redis):
	redis.cmd("FLUSHALL")
	s = make_server()
	settled(s)
	users = [register(s) for _ in range(5)]
	room = create_room(s, users[0])
	ws = [join(s, room, u) for u in users]
	for w in ws:
		w.wait_presence("join", users[-1])
	senders = [Sender(ws[i], "h%d" % i, 0.01) for i in range(3)]
	for t in senders:
		t.start()
	time.sleep(0.5)
	hub = s.hubs()
	assert len(hub) == 1, s.children()
	os.kill(hub[0], signal.SIGKILL)
	time.sleep(1.5)
	for t in senders:
		t.stop()
	assert harness.wait_for(lambda: (lambda h: len(h) == 1 and h != hub)(s.hubs()), 3), \
	    "the hub was not restarted: %r" % s.children()
	open_ws = [w for w in ws if w.is_open()]
	must = {c for t in senders if t.ws.is_open() for c in t.sent}
	allowed = {c for t in senders for c in t.sent}
	closed = [w.describe() for w in ws if not w.is_open()]
	for w in open_ws:
		w.wait(lambda w=w: must <= {e["content"] for e in w.messages()}, 15,
		    "every accepted message after the hub's restart")
	time.sleep(0.5)		# anything duplicated would be here by now
	print("hub kill: sent %d, accepted for sure %d, delivered %r, closed %r"
	    % (len(allowed), len(must), [len(w.messages()) for w in open_ws],
	    closed))
	check_exactly_once(open_ws, must, allowed, "after the hub's restart")
	assert len(open_ws) == len(ws), "connections closed although only the " \
	    "hub died: %r" % closed
	hist = all_history(s, users[0], room)
	contents = [e["content"] for e in hist]
	assert len(contents) == len(set(contents)), "duplicates in history"
	assert must <= set(contents), "accepted messages missing from history"
	assert_increasing([e["id"] for e in hist], "history")
	check_sender_order(hist, senders)
	live = {e["content"]: e["id"] for e in open_ws[0].messages()}
	for e in hist:
		if e["content"] in live:
			assert live[e["content"]] == e["id"], "history and live " \
			    "disagree on the id of %r" % e["content"]
	# And the room goes on.
	ws[4].send("after the hub")
	for w in open_ws:
		w.wait_content("after the hub", 5)


# --- Redis goes away -------------------------------------------------------------------

@pytest.fixture(scope="module")
def own_redis(workdir):
	"""A Redis of this module's own that keeps its data across a restart
	(sessions and the inbox live in it), like a production Redis with
	snapshots."""
	yield from own_service(harness.Redis(workdir / "chat-faults-redis",
	    harness.free_port(), persist=True))


@pytest.fixture
def redis_server(make_server, own_redis):
	own_redis.start()
	own_redis.cmd("FLUSHALL")
	return make_server(redis=own_redis)


def test_a_message_while_redis_is_down_closes_its_sender_with_1011(
    redis_server, own_redis):
	s = redis_server
	kids = settled(s)
	a, b = register(s), register(s)
	room = create_room(s, a)
	wa = join(s, room, a)
	join(s, room, b)		# a bystander
	own_redis.stop()
	assert harness.wait_for(lambda: s.health()[0] == 503, 5), s.health()
	if wa.is_open():
		try:
			wa.send("into the void")
		except OSError:
			pass
	code = wa.wait_closed(5, "closing the sender of a message that cannot "
	    "be accepted")
	assert code == 1011, "expected close 1011, got %r" % code
	# Joining needs Redis (sessions, the inbox): 503, not 401.
	ans = try_join(s, room, token=b["token"])
	assert ans.status == 503, ans
	for method, path in (("GET", "/ws/getRooms"), ("GET",
	    "/ws/getClients/%s" % room), ("GET", "/ws/history/%s" % room)):
		r = call(s, method, path, b)
		assert r.status_code == 503, "%s %s with Redis down: %d %s" % (
		    method, path, r.status_code, r.text)
	own_redis.start()
	t_up = time.monotonic()

	def rejoined():
		try:
			w = join(s, room, a, wait=False)
		except (AssertionError, OSError):
			return None
		try:
			w.wait_presence("join", a, 2)
			w.send("back")
			w.wait_content("back", 2)
		except AssertionError:
			w.abort()
			return None
		return w
	w = harness.wait_for(rejoined, 8, 0.2)
	assert w, "chat did not come back after Redis restarted"
	took = time.monotonic() - t_up
	assert took <= 5.5, "chat came back %.1f s after Redis" % took
	assert settled(s) == kids, "a process died meanwhile"


def test_a_join_without_the_subscription_connection_is_503_not_a_hang(
    make_server, redis):
	"""Only the workers' subscription connections are down (killed, and
	Redis refuses new clients): a member could not subscribe to its room,
	so a join answers 503 before the upgrade instead of a 101 that never
	hears the room. Once the connections are back, joining works again,
	within 5 s."""
	redis.cmd("FLUSHALL")
	s = make_server()
	kids = settled(s)
	a, b = register(s), register(s)
	room = create_room(s, a)
	wa = join(s, room, a)
	admin = socket.create_connection(("127.0.0.1", redis.port), timeout=5)
	f = admin.makefile("rb")
	try:
		admin.sendall(harness._resp_encode(["INFO", "clients"]))
		info = harness._resp_read(f)
		n = int(re.search(r"connected_clients:(\d+)", info).group(1))
		# In one round trip, so that no worker reconnects in between:
		# the two subscription connections go, and no new client comes.
		admin.sendall(harness._resp_encode(["CONFIG", "SET", "maxclients",
		    str(n - 2)]) + harness._resp_encode(["CLIENT", "KILL", "TYPE",
		    "pubsub"]))
		assert harness._resp_read(f) == "OK"
		assert harness._resp_read(f) == 2, "expected the two workers' " \
		    "subscription connections"
		code = wa.wait_closed(3, "a member of the lost subscription")
		assert code == 1011, code
		time.sleep(0.3)
		answers = [try_join(s, room, token=b["token"]).status
		    for _ in range(8)]
		assert answers == [503] * 8, "joins without the subscription " \
		    "connection: %r" % answers
		r = call(s, "GET", "/ws/getClients/%s" % room, b)
		assert r.status_code == 200, "the command connection is up: %d" \
		    % r.status_code
	finally:
		admin.sendall(harness._resp_encode(["CONFIG", "SET", "maxclients",
		    "10000"]))
		harness._resp_read(f)
		admin.close()
	t_up = time.monotonic()

	def joined():
		try:
			w = join(s, room, b, wait=False)
		except (AssertionError, OSError):
			return None
		try:
			w.wait_presence("join", b, 2)
			w.send("heard")
			w.wait_content("heard", 2)
		except AssertionError:
			w.abort()
			raise
		return w
	w = harness.wait_for(joined, 8, 0.1)
	assert w, "joining did not work again"
	assert time.monotonic() - t_up <= 5.5
	# Both workers: every join now is heard.
	for _ in range(6):
		w2 = join(s, room, a)
		w2.send("again")
		w2.wait_content("again")
		w2.close()
	assert settled(s) == kids, "a process died meanwhile"


class Chatter(threading.Thread):
	"""A client that keeps sending "<tag>-<n>" every interval and reconnects
	whenever its connection ends, remembering each connection (generation)
	and what was sent on it."""

	def __init__(self, srv, room, user, tag, interval=0.02):
		super().__init__(daemon=True)
		self.srv, self.room, self.user, self.tag = srv, room, user, tag
		self.interval = interval
		self.gens = []		# [(ws, [contents sent])]
		self.stopping = threading.Event()
		self.stop_sending = threading.Event()
		self.failures = []	# join attempts that failed
		self.n = 0
		self.lock = threading.Lock()

	def current(self):
		with self.lock:
			return self.gens[-1][0] if self.gens else None

	def run(self):
		while not self.stopping.is_set():
			ws = self.current()
			if ws is None or not ws.is_open():
				try:
					ws = join(self.srv, self.room, self.user, wait=False,
					    label="%s#%d" % (self.tag, len(self.gens)))
				except (AssertionError, OSError) as e:
					self.failures.append(str(e)[:100])
					time.sleep(0.1)
					continue
				with self.lock:
					self.gens.append((ws, []))
			if self.stop_sending.is_set():
				time.sleep(0.05)
				continue
			c = "%s-%d" % (self.tag, self.n)
			try:
				ws.send(c)
			except OSError:
				continue
			self.n += 1
			with self.lock:
				self.gens[-1][1].append(c)
			time.sleep(self.interval)

	def stop(self):
		self.stopping.set()
		self.join(10)


def test_redis_restart_mid_stream_loses_and_duplicates_nothing(
    redis_server, own_redis):
	s = redis_server
	kids = settled(s)
	users = [register(s) for _ in range(4)]
	room = create_room(s, users[0])
	chatters = [Chatter(s, room, u, "c%d" % i) for i, u in enumerate(users)]
	for c in chatters:
		c.start()
	time.sleep(1.0)
	own_redis.stop()
	time.sleep(1.5)
	own_redis.start()
	t_up = time.monotonic()

	# Service resumes: within 5 s of Redis being back every chatter gets,
	# on an open connection, a message sent after that moment.
	def resumed(c):
		ws = c.current()
		if ws is None or not ws.is_open():
			return False
		with c.lock:
			after = set(sum((g[1] for g in c.gens[-1:]), []))
		return any(e["content"] in after and t > t_up for e, t in
		    zip(ws.events, ws.times) if e.get("type") == "message")
	ok = harness.wait_for(lambda: all(resumed(c) for c in chatters), 8, 0.05)
	took = time.monotonic() - t_up
	assert ok, "chat did not resume within 8 s of Redis' restart: %r" % [
	    (c.tag, len(c.gens), c.failures[-2:]) for c in chatters]
	assert took <= 5.5, "chat resumed %.1f s after Redis came back" % took
	time.sleep(0.5)
	for c in chatters:
		c.stop_sending.set()
	time.sleep(0.2)
	# Every message sent on a connection the server never closed is
	# certain; so is every message anyone received live.
	certain, sent = set(), set()
	received = set()
	codes = []
	for c in chatters:
		with c.lock:
			gens = list(c.gens)
		for ws, contents in gens:
			sent.update(contents)
			if ws.is_open():
				certain.update(contents)
			else:
				codes.append(ws.close_code)
			received.update(e["content"] for e in ws.messages())
	certain |= received & sent
	last = [c.current() for c in chatters]
	for w in last:
		w.wait(lambda w=w: {x for c in chatters for x in c.gens[-1][1]} <=
		    {e["content"] for e in w.messages()}, 10,
		    "the last messages after the restart")
	for c in chatters:
		c.stop()
	hist = all_history(s, users[0], room)
	contents = [e["content"] for e in hist]
	print("redis restart: sent %d, certain %d, stored %d, connections %r, "
	    "close codes %r, resumed after %.2f s" % (len(sent), len(certain),
	    len(contents), [len(c.gens) for c in chatters], codes, took))
	dup = sorted({x for x in contents if contents.count(x) > 1})
	assert not dup, "stored twice: %r" % dup[:10]
	assert set(contents) <= sent, "stored but never sent: %r" % sorted(
	    set(contents) - sent)[:5]
	missing = sorted(certain - set(contents))
	assert not missing, "%d accepted messages lost (e.g. %r); closes seen: " \
	    "%r" % (len(missing), missing[:5], codes)
	assert_increasing([e["id"] for e in hist], "history")
	# Each connection's live stream: increasing ids, nothing twice, and the
	# same ids as stored.
	stored = {e["content"]: e["id"] for e in hist}
	for c in chatters:
		for ws, _ in c.gens:
			msgs = ws.messages(history=False)
			assert_increasing([e["id"] for e in msgs], ws.label)
			for e in msgs:
				assert stored.get(e["content"]) == e["id"], (ws.label, e)
	# What the server closes during the outage, it closes with 1011 (or
	# 1001), never with a code blaming the client.
	assert not [x for x in codes if x in (1002, 1003, 1007, 1008, 1009)], \
	    codes
	assert settled(s) == kids, "a process died meanwhile"


# --- PostgreSQL goes away --------------------------------------------------------------

@pytest.fixture(scope="module")
def own_pg(workdir):
	"""A PostgreSQL of this module's own, to stop and start."""
	yield from own_service(harness.Postgres(workdir / "chat-faults-pg",
	    harness.free_port()))


def test_postgres_restart_mid_stream_loses_and_duplicates_nothing(
    make_server, own_pg, redis):
	"""Messages keep coming while PostgreSQL restarts: those the server
	accepted (their sender's connection stayed open, or anyone received
	them) are all stored exactly once, in order, and chat works again
	within 5 s of PostgreSQL being back."""
	own_pg.start()
	redis.cmd("FLUSHALL")
	s = make_server(pg=own_pg)
	kids = settled(s)
	users = [register(s) for _ in range(3)]
	room = create_room(s, users[0])
	chatters = [Chatter(s, room, u, "p%d" % i) for i, u in enumerate(users)]
	for c in chatters:
		c.start()
	time.sleep(0.8)
	own_pg.stop()
	t_down = time.monotonic()
	r = call(s, "POST", "/ws/createRoom", users[0], json={})
	assert r.status_code == 503, "createRoom with PostgreSQL down: %d %s" % (
	    r.status_code, r.text)
	time.sleep(max(0, t_down + 1.5 - time.monotonic()))
	own_pg.start()
	t_up = time.monotonic()

	def round_trip():
		ws = chatters[0].current()
		if ws is None or not ws.is_open():
			return False
		return any(t > t_up + 0.05 for e, t in zip(ws.events, ws.times)
		    if e.get("type") == "message" and e.get("userId") ==
		    users[1]["id"])
	ok = harness.wait_for(round_trip, 8, 0.05)
	took = time.monotonic() - t_up
	assert ok, "chat did not resume within 8 s of PostgreSQL's restart"
	assert took <= 5.5, "chat resumed %.1f s after PostgreSQL came back" % took
	for c in chatters:
		c.stop_sending.set()
	time.sleep(0.2)
	sent, certain, received, codes = set(), set(), set(), []
	for c in chatters:
		with c.lock:
			gens = list(c.gens)
		for ws, contents in gens:
			sent.update(contents)
			if ws.is_open():
				certain.update(contents)
			else:
				codes.append(ws.close_code)
			received.update(e["content"] for e in ws.messages())
	certain |= received & sent
	for c in chatters:
		w = c.current()
		w.wait(lambda w=w: {x for c in chatters for x in c.gens[-1][1]} <=
		    {e["content"] for e in w.messages()}, 10,
		    "the last messages after the restart")
	for c in chatters:
		c.stop()
	hist = all_history(s, users[0], room)
	contents = [e["content"] for e in hist]
	print("postgres restart: sent %d, certain %d, stored %d, connections %r, "
	    "close codes %r, resumed after %.2f s" % (len(sent), len(certain),
	    len(contents), [len(c.gens) for c in chatters], codes, took))
	dup = sorted({x for x in contents if contents.count(x) > 1})
	assert not dup, "stored twice: %r" % dup[:10]
	assert set(contents) <= sent
	missing = sorted(certain - set(contents))
	assert not missing, "%d accepted messages lost (e.g. %r); closes seen: " \
	    "%r" % (len(missing), missing[:5], codes)
	assert_increasing([e["id"] for e in hist], "history")
	stored = {e["content"]: e["id"] for e in hist}
	for c in chatters:
		for ws, _ in c.gens:
			msgs = ws.messages(history=False)
			assert_increasing([e["id"] for e in msgs], ws.label)
			for e in msgs:
				assert stored.get(e["content"]) == e["id"], (ws.label, e)
	assert settled(s) == kids, "a process died meanwhile"


# --- a whole instance dies -------------------------------------------------------------

def test_a_standby_hub_takes_over_when_the_leading_instance_dies(make_server,
    redis):
	"""Two instances on "two hosts" (different instance names, so the
	standby cannot see the leader's pid and must wait for its lease to
	expire) share PostgreSQL and Redis; the one whose hub leads is killed
	outright (SIGKILL to its master and children). Clients on the other
	keep their connections; a message sent right after the kill is
	delivered once, with the room's next id, within the lease (5 s) and a
	margin; every message accepted meanwhile is delivered once, in order."""
	redis.cmd("FLUSHALL")
	a = make_server(instance="host-a")
	settled(a)
	assert harness.wait_for(lambda: redis.cmd("EXISTS", "gochat:hub:leader"),
	    5), "no hub took the lease"
	b = make_server(instance="host-b")
	settled(b)
	leader = redis.cmd("GET", "gochat:hub:leader")
	assert leader.startswith("host-a:"), leader
	users = [register(b) for _ in range(3)]
	room = create_room(b, users[0])
	ws = [join(b, room, u) for u in users]
	for w in ws:
		w.wait_presence("join", users[-1])
	ws[0].send("before")
	before = [w.wait_content("before")["id"] for w in ws]
	assert len(set(before)) == 1, before
	t_kill = time.monotonic()
	a.kill()
	ws[0].send("after")

	def queued():
		entries = redis.cmd("XRANGE", "gochat:hub:inbox", "-", "+")
		return any("after" in e[1] for e in entries or [])
	# The first message after the kill is in the inbox before any other.
	assert harness.wait_for(queued, 2), "the message never reached the inbox"
	senders = [Sender(ws[i], "f%d" % i, 0.02) for i in range(2)]
	for t in senders:
		t.start()
	time.sleep(1.0)
	for t in senders:
		t.stop()
	for w in ws:
		e = w.wait_content("after", max(0.5, t_kill + 7.5 -
		    time.monotonic()))
		assert e["id"] == before[0] + 1, "%s: %r after %d" % (w.label, e,
		    before[0])
	took = time.monotonic() - t_kill
	assert redis.cmd("GET", "gochat:hub:leader").startswith("host-b:")
	must = {c for t in senders if t.ws.is_open() for c in t.sent}
	allowed = {c for t in senders for c in t.sent}
	open_ws = [w for w in ws if w.is_open()]
	assert len(open_ws) == len(ws), [w.describe() for w in ws]
	for w in open_ws:
		w.wait(lambda w=w: must <= {e["content"] for e in w.messages()},
		    max(1, t_kill + 12 - time.monotonic()),
		    "the messages sent while the leading hub was gone")
	time.sleep(0.3)
	check_exactly_once(open_ws, must | {"before", "after"},
	    allowed | {"before", "after"}, "after the failover")
	print("failover: the first message delivered %.1f s after the kill, "
	    "%d more" % (took, len(must)))


# --- a restart of everything ------------------------------------------------------------

def test_rooms_and_ids_survive_a_restart_even_with_redis_emptied(make_server,
    redis):
	"""Rooms and history live in PostgreSQL: after the server restarts, and
	even after Redis lost everything (sessions aside, restored here by
	logging in again), the room is listed, its history is intact and new
	messages continue its ids."""
	redis.cmd("FLUSHALL")
	s = make_server()
	settled(s)
	a = register(s)
	room = create_room(s, a, name="survivor")
	w = join(s, room, a)
	for i in range(5):
		w.send("old %d" % i)
	old = w.wait_messages(5)
	w.close()
	s.stop()
	redis.cmd("FLUSHALL")
	s2 = make_server()
	settled(s2)
	a2 = dict(a, token=login(s2, a))
	rooms = [x for x in all_rooms(s2, a2) if x["id"] == room]
	assert [{k: x[k] for k in ("id", "name", "clients")} for x in rooms] == \
	    [{"id": room, "name": "survivor", "clients": 0}], rooms
	hist = all_history(s2, a2, room)
	assert [(e["id"], e["content"]) for e in hist] == [(e["id"], e["content"])
	    for e in old]
	w2 = join(s2, room, a2)
	assert [e["id"] for e in w2.messages(history=True)] == [e["id"]
	    for e in old]
	w2.send("new")
	e = w2.wait_content("new")
	assert e["id"] > old[-1]["id"], "ids restarted: %d after %d" % (e["id"],
	    old[-1]["id"])


def test_a_paused_hub_delays_joins_and_messages_but_loses_none(make_server,
    redis):
	"""The hub stops (SIGSTOP) for 2 s: a client joining meanwhile gets its
	101 at once, and once the hub goes on (SIGCONT) its history, its join
	event and every message sent meanwhile arrive, once each, in order."""
	redis.cmd("FLUSHALL")
	s = make_server()
	settled(s)
	a, b = register(s), register(s)
	room = create_room(s, a)
	wa = join(s, room, a)
	wa.send("before the pause")
	wa.wait_content("before the pause")
	hub = s.hubs()
	assert len(hub) == 1
	os.kill(hub[0], signal.SIGSTOP)
	try:
		wb = join(s, room, b, wait=False)

		# The join counts from its register entry, which the worker
		# queues once its room subscription is confirmed: wait for it,
		# or the messages below may come first and so be history.
		def registered():
			entries = redis.cmd("XRANGE", "gochat:hub:inbox", "-",
			    "+")
			return any("register" in e[1] and b["username"] in e[1]
			    for e in entries or [])
		assert harness.wait_for(registered, 5), "no register entry"
		for i in range(20):
			wa.send("paused %d" % i)
		time.sleep(2)
	finally:
		os.kill(hub[0], signal.SIGCONT)
	want = ["paused %d" % i for i in range(20)]
	for w in (wa, wb):
		w.wait(lambda w=w: set(want) <= {e["content"]
		    for e in w.messages(history=False)}, 8,
		    "the messages sent while the hub was paused")
	wb.wait_presence("join", b, 1)
	for w in (wa, wb):
		got = [e["content"] for e in w.messages(history=False)
		    if e["content"] != "before the pause"]
		assert got == want, "%s: %r" % (w.label, got)
		assert_increasing([e["id"] for e in w.messages()], w.label)
	hist = [e["content"] for e in wb.messages(history=True)]
	assert hist == ["before the pause"], hist
	# The join event came after the history and before the live messages.
	kinds = [e["type"] if e.get("history") is not True else "history"
	    for e in wb.events]
	assert kinds[:2] == ["history", "join"], kinds[:5]
