"""Redis behind Sentinel (SPEC.md §11): the server finds the master through
the sentinels, follows a failover by itself, and loses no acknowledged
message through it. The harness runs a master, a replica and three
sentinels (quorum 2, master down after 1 s) on loopback, of this module's
own."""

import os
import signal
import time

import pytest
import requests

import harness
from conftest import needs_own_server, own_service
from test_chat import all_history, assert_increasing, call, create_room, \
    join, register
from test_chat import close_websockets  # noqa: F401 (autouse: aborts every WS)
from test_chat_faults import Chatter, settled

MASTER = "mymaster"


def metrics(srv):
	"""GET /metrics as {"name{labels}": value}."""
	r = requests.get(srv.base + "/metrics", timeout=10)
	assert r.status_code == 200, r.text
	out = {}
	for line in r.text.splitlines():
		if line and not line.startswith("#"):
			k, v = line.rsplit(" ", 1)
			out[k] = float(v)
	return out


class SentinelSet:
	"""A master, its replica and three sentinels watching it."""

	def __init__(self, workdir):
		self.master = harness.Redis(workdir / "sentinel-master",
		    harness.free_port())
		self.replica = harness.Redis(workdir / "sentinel-replica",
		    harness.free_port(), replicaof=self.master.port)
		self.sentinels = [harness.Sentinel(workdir / ("sentinel-%d" % i),
		    harness.free_port(), self.master.port, MASTER)
		    for i in range(3)]

	@property
	def url(self):
		return "redis-sentinel://%s/%s/0" % (",".join("127.0.0.1:%d" %
		    s.port for s in self.sentinels), MASTER)

	def start(self):
		self.master.start()
		self.replica.start()
		assert harness.wait_for(lambda: "master_link_status:up" in
		    self.replica.cmd("INFO", "replication"), 15), \
		    "the replica did not sync with the master"
		for s in self.sentinels:
			s.start()

		# Each sentinel knows the replica and the two others: a
		# failover can be authorized (quorum 2, majority 2 of 3).
		def known():
			for s in self.sentinels:
				try:
					if len(s.cmd("SENTINEL", "sentinels", MASTER)) != 2 or \
					    len(s.cmd("SENTINEL", "replicas", MASTER)) != 1 or \
					    not s.cmd("SENTINEL", "ckquorum", MASTER) \
					    .startswith("OK"):
						return False
				except (OSError, ConnectionError, harness.RedisError):
					return False
			return True
		assert harness.wait_for(known, 30, 0.2), "the sentinels did not " \
		    "find each other and the replica"
		return self

	def stop(self):
		for x in self.sentinels + [self.replica, self.master]:
			x.kill()


@pytest.fixture
def sentinels(workdir):
	needs_own_server()
	ss = SentinelSet(workdir / harness.free_port().__str__())
	yield from own_service(ss)


def test_chat_follows_a_sentinel_failover_and_keeps_every_acknowledged_message(
    make_server, sentinels):
	ss = sentinels
	s = make_server(redis_url=ss.url, redis=ss.master)
	kids = settled(s)
	assert harness.wait_for(lambda: s.health()[0] == 200, 10), s.health()
	# Found through the sentinels, not configured: the master's port is
	# nowhere in redis_url.
	assert str(ss.master.port) not in ss.url
	users = [register(s) for _ in range(4)]
	room = create_room(s, users[0])
	chatters = [Chatter(s, room, u, "f%d" % i, interval=0.03)
	    for i, u in enumerate(users)]
	for c in chatters:
		c.start()
	assert harness.wait_for(lambda: all(c.current() is not None and
	    len(c.current().messages()) >= 10 for c in chatters), 10), \
	    "chat did not start"
	time.sleep(1.5)

	# Everything written so far is on the replica (replication is async:
	# a write after this may be lost with the master, as README says).
	ss.master.cmd("SET", "gochat-test:fence", "1")
	assert ss.master.cmd("WAIT", 1, 5000) == 1, "the replica lags"
	ss.master.kill()
	t_kill = time.monotonic()
	acked = set()
	for c in chatters:
		with c.lock:
			gens = list(c.gens)
		for ws, _ in gens:
			acked.update(e["content"] for e in ws.messages(history=False)
			    if e["userId"] == c.user["id"] and "id" in e)

	# While there is no master: 503 at once, not a hang, not a crash.
	statuses = set()
	while time.monotonic() - t_kill < 0.8:
		t0 = time.monotonic()
		r = call(s, "GET", "/ws/getRooms", users[0])
		assert time.monotonic() - t0 < 3, "a request hung without Redis"
		statuses.add(r.status_code)
		time.sleep(0.05)
	assert 503 in statuses and statuses <= {200, 503}, statuses

	# A sentinel promotes the replica.
	assert harness.wait_for(lambda: ss.replica.cmd("ROLE")[0] == "master",
	    30, 0.05), "no sentinel promoted the replica"
	t_promoted = time.monotonic()
	assert harness.wait_for(lambda: all(x.master_addr() ==
	    ("127.0.0.1", ss.replica.port) for x in ss.sentinels), 10), \
	    [x.master_addr() for x in ss.sentinels]

	# Chat resumes within 10 s of the promotion: every chatter gets, on an
	# open connection, one of its messages sent after it.
	def resumed(c):
		ws = c.current()
		if ws is None or not ws.is_open():
			return False
		with c.lock:
			after = set(c.gens[-1][1])
		return any(e.get("type") == "message" and e["content"] in after and
		    t > t_promoted for e, t in zip(ws.events, ws.times))
	ok = harness.wait_for(lambda: all(resumed(c) for c in chatters), 12,
	    0.05)
	took = time.monotonic() - t_promoted
	assert ok, "chat did not resume after the failover: %r" % [(c.tag,
	    len(c.gens), c.failures[-2:]) for c in chatters]
	assert took <= 10, "chat resumed %.1f s after the promotion" % took
	for c in chatters:
		c.stop_sending.set()
	time.sleep(0.3)
	for c in chatters:
		c.stop()

	hist = all_history(s, users[0], room)
	contents = [e["content"] for e in hist]
	print("failover: %d acknowledged before the kill, %d stored, resumed "
	    "%.2f s after the promotion, %.2f s after the kill" % (len(acked),
	    len(contents), took, t_promoted - t_kill + took))
	dup = sorted({x for x in contents if contents.count(x) > 1})
	assert not dup, "stored twice: %r" % dup[:10]
	missing = sorted(acked - set(contents))
	assert not missing, "%d acknowledged messages lost, e.g. %r" % (
	    len(missing), missing[:5])
	assert_increasing([e["id"] for e in hist], "history")
	# Writes go to the new master only: the old one is dead, and the
	# server's stats hashes are there.
	assert harness.wait_for(lambda: harness.redis_keys(ss.replica.port,
	    "gochat:stats:*"), 5)
	# /metrics: every process's shard-0 connection is up again, and each
	# saw the failover once.
	m = metrics(s)
	assert m['gochat_redis_shard_connections{shard="0",role="worker",'
	    'state="up"}'] == 2, m
	assert m['gochat_redis_shard_connections{shard="0",role="worker",'
	    'state="down"}'] == 0, m
	assert m['gochat_redis_shard_connections{shard="0",role="hub",'
	    'state="up"}'] == 1, m
	assert m['gochat_redis_failovers_total{shard="0",role="worker"}'] == 2, m
	assert m['gochat_redis_failovers_total{shard="0",role="hub"}'] == 1, m
	assert settled(s) == kids, "a process died meanwhile"
	assert " exited with code " not in s.log_text() and \
	    " killed by signal " not in s.log_text(), "a child died"


def test_a_switch_with_the_old_master_alive_moves_every_connection(
    make_server, sentinels):
	"""SENTINEL FAILOVER (an operator's switch): the old master lives on as
	a replica; the server follows +switch-master, writes nothing to it any
	more, and chat works on the new master."""
	ss = sentinels
	s = make_server(redis_url=ss.url, redis=ss.master)
	kids = settled(s)
	a, b = register(s), register(s)
	room = create_room(s, a)
	wb = join(s, room, b)
	wb.send("before the switch")
	wb.wait_content("before the switch", 5)
	assert ss.sentinels[1].cmd("SENTINEL", "FAILOVER", MASTER) == "OK"
	assert harness.wait_for(lambda: ss.replica.cmd("ROLE")[0] == "master" and
	    ss.master.cmd("ROLE")[0] == "slave", 30, 0.05), "no switch"
	t_switch = time.monotonic()

	def chatted():
		try:
			w = join(s, room, a, wait=False)
			w.wait_presence("join", a, 2)
			w.send("after the switch")
			w.wait_content("after the switch", 2)
		except (AssertionError, OSError):
			return None
		return w
	assert harness.wait_for(chatted, 12, 0.2), "chat did not resume"
	assert time.monotonic() - t_switch <= 10
	hist = [e["content"] for e in all_history(s, a, room)]
	assert hist == ["before the switch", "after the switch"], hist

	# Nothing of the server's is left on the old master (a replica now):
	# only the sentinels' connections, the replication link and ours.
	def ours(line):
		f = dict(kv.split("=", 1) for kv in line.split(" ") if "=" in kv)
		return "M" not in f.get("flags", "") and "S" not in \
		    f.get("flags", "") and not f.get("name", "").startswith(
		    "sentinel-") and f.get("cmd") not in ("client|list", "client")
	assert harness.wait_for(lambda: not [x for x in ss.master.cmd(
	    "CLIENT", "LIST").splitlines() if ours(x)], 5), \
	    ss.master.cmd("CLIENT", "LIST")
	m = metrics(s)
	assert m['gochat_redis_failovers_total{shard="0",role="worker"}'] == 2, m
	assert settled(s) == kids, "a process died meanwhile"


def test_a_stopped_master_is_left_for_the_promoted_one(make_server,
    sentinels):
	"""A master that hangs (SIGSTOP) rather than dies: no connection to it
	breaks, and one that is idle (the heartbeat's, a subscription) would
	wait on it for ever. +switch-master moves them all: the workers'
	heartbeats go on on the new master, and chat resumes."""
	ss = sentinels
	s = make_server(redis_url=ss.url, redis=ss.master)
	kids = settled(s)
	a = register(s)
	room = create_room(s, a)
	os.kill(ss.master.proc.pid, signal.SIGSTOP)
	try:
		assert harness.wait_for(lambda: ss.replica.cmd("ROLE")[0] ==
		    "master", 30, 0.05), "no sentinel promoted the replica"
		t_promoted = time.monotonic()

		def chatted():
			try:
				w = join(s, room, a, wait=False)
				w.wait_presence("join", a, 2)
				w.send("on the new master")
				w.wait_content("on the new master", 2)
			except (AssertionError, OSError):
				return None
			return w
		assert harness.wait_for(chatted, 12, 0.2), "chat did not resume"
		assert time.monotonic() - t_promoted <= 10
		# The heartbeats (3 s TTL) copied from the old master have
		# expired by now: these are written on the new one.
		time.sleep(max(0, t_promoted + 4 - time.monotonic()))
		alive = harness.redis_keys(ss.replica.port, "gochat:worker:*:alive")
		assert len(alive) == 2, alive
		assert "taken for dead" not in s.log_text()
		assert settled(s) == kids, "a process died meanwhile"
	finally:
		os.kill(ss.master.proc.pid, signal.SIGCONT)


def test_the_server_never_uses_a_replica_a_sentinel_names(make_server,
    workdir):
	"""A sentinel naming a replica as the master (a stale or lying one):
	ROLE says "slave", the server does not use it, /health stays 503 and
	nothing is written there."""
	needs_own_server()
	d = workdir / ("liar-%d" % harness.free_port())
	master = harness.Redis(d / "master", harness.free_port())
	replica = harness.Redis(d / "replica", harness.free_port(),
	    replicaof=master.port)
	# The "sentinel" watches the replica under the master's name.
	liar = harness.Sentinel(d / "sentinel", harness.free_port(),
	    replica.port, MASTER, quorum=1)
	for x in (master, replica, liar):
		x.start()
	try:
		assert harness.wait_for(lambda: "master_link_status:up" in
		    replica.cmd("INFO", "replication"), 15)
		s = make_server(start=False, redis=master,
		    redis_url="redis-sentinel://127.0.0.1:%d/%s/0" % (liar.port,
		    MASTER))
		s.start(wait=False)
		time.sleep(3)
		assert s.health()[0] == 503, s.health()
		assert "not the master" in s.log_text() or \
		    "is a slave" in s.log_text(), s.log_tail(20)
		assert not harness.redis_keys(master.port, "gochat:*")
	finally:
		for x in (liar, replica, master):
			x.kill()
