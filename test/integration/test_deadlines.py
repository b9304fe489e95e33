"""Deadlines on backend calls (SPEC.md §8): with backend_timeout = 1 s, a
Redis or PostgreSQL that is stopped with SIGSTOP (stalled, not
disconnected) makes a request answer 503 within the deadline plus slack
instead of hanging, the keep-alive connection stays usable, and once the
backend is continued (SIGCONT) the same connection gets proper answers
again. Each test stops only a backend of its own or, for PostgreSQL, the
shared one for the length of the test, and always continues it."""

import contextlib
import http.client
import json
import os
import signal
import threading
import time

import pytest

import harness
from conftest import needs_own_server, own_service
from test_chat import (WS, call, create_room, open_socket, read_head,
    register, try_join, upgrade_request, wait_clients)
from test_chat import close_websockets  # noqa: F401 (autouse: aborts every WS)

BACKEND_TIMEOUT = 1
SLACK = 3		# seconds over the deadline a 503 may take on a busy box


@pytest.fixture
def stall_redis(workdir):
	"""A Redis of the test's own, stopped and continued by the test."""
	needs_own_server()
	yield from own_service(harness.Redis(workdir / ("deadline-redis-%d" %
	    harness.free_port()), harness.free_port()))


@contextlib.contextmanager
def stopped(pids):
	"""SIGSTOP every pid; SIGCONT them all whatever happens."""
	done = []
	try:
		for pid in pids:
			os.kill(pid, signal.SIGSTOP)
			done.append(pid)
		yield
	finally:
		for pid in done:
			with contextlib.suppress(ProcessLookupError):
				os.kill(pid, signal.SIGCONT)


def pg_pids(pg):
	"""The postmaster and all its children (backends, walwriter, ...)."""
	return [pg.pid()] + [pid for pid, _ in harness.children_of(pg.pid())]


class KeepAlive:
	"""One keep-alive HTTP/1.1 connection that must never be reopened."""

	def __init__(self, srv, token):
		self.conn = http.client.HTTPConnection(srv.host, srv.port,
		    timeout=BACKEND_TIMEOUT + SLACK + 10)
		self.token = token
		self.conn.connect()
		self.sock = self.conn.sock
		self.local = self.sock.getsockname()

	def request(self, method, path, body=None, auth=True):
		headers = {}
		if auth:
			headers["Authorization"] = "Bearer " + self.token
		if body is not None:
			body = json.dumps(body)
			headers["Content-Type"] = "application/json"
		t0 = time.monotonic()
		self.conn.request(method, path, body=body, headers=headers)
		r = self.conn.getresponse()
		data = r.read()
		took = time.monotonic() - t0
		assert self.conn.sock is self.sock and \
		    self.sock.getsockname() == self.local, \
		    "the keep-alive connection was closed"
		assert (r.getheader("Connection") or "").lower() != "close", \
		    "%s %s: %d closes the connection" % (method, path, r.status)
		return r.status, data, took

	def expect_503(self, method, path, body=None, auth=True):
		status, data, took = self.request(method, path, body, auth)
		assert status == 503, "%s %s: %d %r" % (method, path, status, data)
		assert took < BACKEND_TIMEOUT + SLACK, \
		    "%s %s: 503 after %.1f s" % (method, path, took)
		return json.loads(data)

	def wait_ok(self, method, path, timeout=20):
		"""Repeat until 200 (503 meanwhile); returns the body."""
		deadline = time.monotonic() + timeout
		while True:
			status, data, _ = self.request(method, path)
			if status == 200:
				return json.loads(data)
			assert status == 503, (status, data)
			assert time.monotonic() < deadline, \
			    "%s %s: still %d after %d s" % (method, path, status,
			    timeout)
			time.sleep(0.2)

	def close(self):
		self.conn.close()


def test_a_stalled_redis_answers_503_and_the_connection_recovers(
    make_server, stall_redis):
	srv = make_server(redis=stall_redis, backend_timeout=BACKEND_TIMEOUT,
	    workers=1)
	user = register(srv)
	room = create_room(srv, user)
	ka = KeepAlive(srv, user["token"])
	try:
		me = ka.wait_ok("GET", "/me")
		with stopped([stall_redis.proc.pid]):
			ka.expect_503("GET", "/me")
			# Later requests fail too (at once or within the
			# deadline), whichever route needs Redis.
			ka.expect_503("GET", "/me")
			ka.expect_503("POST", "/login", {"username":
			    user["username"], "password": "correct horse"},
			    auth=False)
			status, data, took = ka.request("GET", "/health",
			    auth=False)
			assert status == 503 and took < BACKEND_TIMEOUT + SLACK, \
			    (status, data, took)
			assert json.loads(data)["redis"] != "ok", data
			t0 = time.monotonic()
			answer = try_join(srv, room, token=user["token"])
			assert answer.status == 503, answer
			assert time.monotonic() - t0 < BACKEND_TIMEOUT + SLACK
		assert ka.wait_ok("GET", "/me") == me
		status, data, _ = ka.request("POST", "/login",
		    {"username": user["username"], "password": "correct horse"},
		    auth=False)
		assert status == 200, (status, data)
	finally:
		ka.close()
	assert "no reply in %d ms" % (BACKEND_TIMEOUT * 1000) in srv.log_text()


def test_a_stalled_postgres_answers_503_and_the_connection_recovers(
    make_server, pg):
	srv = make_server(backend_timeout=BACKEND_TIMEOUT, workers=1)
	user = register(srv)
	room = create_room(srv, user)
	ka = KeepAlive(srv, user["token"])
	try:
		me = ka.wait_ok("GET", "/me")
		with stopped(pg_pids(pg)):
			ka.expect_503("GET", "/me")
			ka.expect_503("GET", "/me")
			ka.expect_503("POST", "/login", {"username":
			    user["username"], "password": "correct horse"},
			    auth=False)
			t0 = time.monotonic()
			answer = try_join(srv, room, token=user["token"])
			assert answer.status == 503, answer
			assert time.monotonic() - t0 < BACKEND_TIMEOUT + SLACK
			status, data, took = ka.request("GET", "/health",
			    auth=False)
			assert status == 503 and took < BACKEND_TIMEOUT + SLACK, \
			    (status, data, took)
			assert json.loads(data)["postgres"] != "ok", data
		assert ka.wait_ok("GET", "/me") == me
	finally:
		ka.close()


def test_a_join_whose_subscribe_stalls_is_closed_within_the_deadline(
    make_server, stall_redis, pg):
	"""The room's SUBSCRIBE is the one Redis command of a join made after
	the upgrade. To have Redis stall right then, the join's room check
	waits on a lock held in PostgreSQL while Redis is stopped: the upgrade
	is answered when the lock goes, the SUBSCRIBE gets no confirmation, and
	the WebSocket is closed with 1011 instead of waiting for ever."""
	timeout = 3		# longer than the lock, so the check passes
	srv = make_server(redis=stall_redis, backend_timeout=timeout,
	    workers=1)
	user = register(srv)
	room = create_room(srv, user)
	dbname = pg.url.rsplit("/", 1)[1].split("?")[0]
	holder = threading.Thread(target=pg.psql, args=("BEGIN; LOCK TABLE "
	    "rooms IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(2); COMMIT;",),
	    kwargs={"dbname": dbname})
	holder.start()
	s = None
	try:
		assert harness.wait_for(lambda: pg.psql("SELECT count(*) FROM "
		    "pg_locks l JOIN pg_class c ON c.oid = l.relation WHERE "
		    "c.relname = 'rooms' AND l.mode = 'AccessExclusiveLock' AND "
		    "l.granted", dbname=dbname) == "1", 10), "no lock"
		s = open_socket(srv)
		req, _ = upgrade_request(srv, "/ws/joinRoom/%s" % room,
		    token=user["token"])
		s.sendall(req)
		# The session was found in Redis: the room check waits.
		assert harness.wait_for(lambda: pg.psql("SELECT count(*) FROM "
		    "pg_stat_activity WHERE wait_event_type = 'Lock' AND query "
		    "LIKE '%FROM rooms%'", dbname=dbname) == "1", 10), \
		    "the join's room check is not waiting on the lock"
		with stopped([stall_redis.proc.pid]):
			answer, rest = read_head(s, timeout=10)
			assert answer.status == 101, answer
			ws = WS(s, rest)
			s = None
			ws.wait(lambda: ws.close_code is not None,
			    timeout=timeout + SLACK, what="a close while the "
			    "room's SUBSCRIBE stalls")
			assert ws.close_code == 1011, ws.describe()
	finally:
		if s is not None:
			s.close()
		holder.join()
	assert "no reply in %d ms" % (timeout * 1000) in srv.log_text()


@pytest.mark.parametrize("db", ["/0", ""])
def test_a_stalled_redis_fails_later_requests_at_once(make_server,
    stall_redis, db):
	"""After the first deadline the stalled connection is dropped, and the
	new one counts as up only once Redis answers (SELECT, or PING when the
	URL names no db): the requests that follow fail at once, not each
	after the whole deadline."""
	timeout = 5
	srv = make_server(redis_url="redis://127.0.0.1:%d%s" % (
	    stall_redis.port, db), backend_timeout=timeout, workers=1)
	user = register(srv)
	ka = KeepAlive(srv, user["token"])
	try:
		me = ka.wait_ok("GET", "/me")
		with stopped([stall_redis.proc.pid]):
			status, _, took = ka.request("GET", "/me")
			assert status == 503 and took < timeout + SLACK, \
			    (status, took)
			for _ in range(3):
				status, _, took = ka.request("GET", "/me")
				assert status == 503 and took < timeout / 2, \
				    (status, took)
				time.sleep(0.5)
		assert ka.wait_ok("GET", "/me") == me
	finally:
		ka.close()


def test_a_socket_closed_while_redis_stalls_leaves_the_room_once_it_is_back(
    make_server, stall_redis):
	"""A member whose socket closes while Redis is stalled cannot be
	unregistered then; its worker keeps the unregister and sends it once
	Redis answers again, so the user does not stay listed by getClients
	(and in gochat:room:<id>:clients) for good. Here the close is the 1011
	of a message whose XADD got no answer in time."""
	srv = make_server(redis=stall_redis, backend_timeout=BACKEND_TIMEOUT,
	    workers=1)
	a, b = register(srv), register(srv)
	room = create_room(srv, a)
	wa = WS.connect(srv, room, token=a["token"])
	wa.wait_presence("join", a, 5)
	wait_clients(srv, b, room, [a], 5)
	with stopped([stall_redis.proc.pid]):
		wa.send("sent into a stalled Redis")
		code = wa.wait_closed(BACKEND_TIMEOUT + SLACK + 5,
		    "the 1011 of a message Redis did not answer")
		assert code == 1011, (code, wa.close_reason)
	# Redis answers again (the worker reconnects: 503 meanwhile) ...
	assert harness.wait_for(lambda: call(srv, "GET", "/ws/getClients/" +
	    room, b).status_code == 200, 10), "Redis did not come back"
	# ... and a is no longer in the room.
	wait_clients(srv, b, room, [], 10, "a's leave after Redis came back")
