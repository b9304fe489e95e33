"""Backpressure (SPEC.md §8, "Input stops when output piles up"): a peer
that sends and never reads makes a worker hold a bounded amount, not
whatever it sends; the worker stays responsive to everyone else; reading
resumes once the output drains. Also the order of control frames: a pong
does not wait behind data sent later in the same read.

Each flood runs against a server of its own with one worker, so that the
flooding connection and the other client share it. Memory is the worker's
peak resident size (VmHWM in /proc), before and after."""

import os
import signal
import socket
import struct
import threading
import time

import pytest
import requests

import harness
from conftest import own_service
from test_chat import (OP_CLOSE, OP_PING, OP_PONG, OP_TEXT,  # noqa: F401
    close_websockets, create_room, decode_frame, encode_frame, join,
    register, WS)

# What the worker may grow by during a flood: SPEC's limits (256 KiB of
# HTTP output, 16 requests of at most max_header_size + max_body_size, or
# ws_output_limit) with room for the allocator. Unbounded reading took
# hundreds of megabytes in the same time.
GROWTH_MAX = 16 * 1024 * 1024
# A flood that has sent this much without being stopped was not stopped.
FLOOD_MAX = 64 * 1024 * 1024

GET_ROOT = b"GET / HTTP/1.1\r\nHost: t\r\n\r\n"


def drained_growth_max(pid):
	"""What the worker may have grown by once a flood's requests have all
	been answered: GROWTH_MAX, plus AddressSanitizer's quarantine (256 MiB
	by default) under --enable-asan, which keeps every freed block out of
	reuse until it is full. The bound during the flood holds either way."""
	with open("/proc/%d/maps" % pid) as f:
		asan = "libasan" in f.read()
	return GROWTH_MAX + (256 << 20 if asan else 0)


def peak_rss(pid):
	"""The peak resident size of pid so far, in bytes (VmHWM)."""
	with open("/proc/%d/status" % pid) as f:
		for line in f:
			if line.startswith("VmHWM:"):
				return int(line.split()[1]) * 1024
	raise AssertionError("no VmHWM for pid %d" % pid)


def the_worker(srv):
	workers = srv.workers()
	assert len(workers) == 1, workers
	return next(iter(workers.values()))


def flood(sock, unit, stall=1.5, seconds=8):
	"""Send unit over and over without reading until the server stops
	taking it (nothing sent for stall seconds), it resets the connection,
	FLOOD_MAX bytes went out, or seconds passed. Returns (bytes sent,
	whether it was stopped)."""
	chunk = unit * max(1, 16384 // len(unit))
	sock.setblocking(False)
	sent, pending = 0, b""
	start = last = time.monotonic()
	try:
		while sent < FLOOD_MAX and time.monotonic() - start < seconds:
			if not pending:
				pending = chunk
			try:
				n = sock.send(pending)
			except BlockingIOError:
				n = 0
			except (ConnectionResetError, BrokenPipeError):
				return sent, True
			if n:
				sent += n
				pending = pending[n:]
				last = time.monotonic()
			elif time.monotonic() - last >= stall:
				return sent, True
			else:
				time.sleep(0.005)
		return sent, False
	finally:
		sock.setblocking(True)


def flooding_socket(srv):
	"""A connection whose own buffers are small: what it does not read
	piles up on the server's side."""
	s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
	s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
	s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
	s.settimeout(10)
	s.connect((srv.host, srv.port))
	return s


def assert_served(srv, what):
	"""Another client gets /health at once."""
	r = requests.get(srv.base + "/health", timeout=10)
	assert r.status_code == 200, "%s: /health %d %s" % (what, r.status_code,
	    r.text)


class Counter(threading.Thread):
	"""Reads a connection, counting the responses in it, until target
	have come, the connection ends or nothing comes for 30 s."""

	def __init__(self, sock, target, mark=b"HTTP/1.1 "):
		super().__init__(daemon=True)
		self.sock, self.target, self.mark = sock, target, mark
		self.count, self.first, self.error = 0, b"", None

	def run(self):
		tail = b""
		self.sock.settimeout(30)
		try:
			while self.count < self.target:
				data = self.sock.recv(1 << 20)
				if not data:
					break
				if len(self.first) < 4096:
					self.first += data[:4096]
				# the tail is shorter than a mark: none is counted twice
				buf = tail + data
				self.count += buf.count(self.mark)
				tail = buf[-(len(self.mark) - 1):]
		except OSError as e:
			self.error = e


def finish(sock, sent, unit, extra=0, timeout=60):
	"""Complete the last request of a flood and read the answers to it
	and to extra requests sent before it; returns (requests, Counter)."""
	rest = (len(unit) - sent % len(unit)) % len(unit)
	n = (sent + rest) // len(unit) + extra
	reader = Counter(sock, n)
	reader.start()
	sock.sendall(unit[len(unit) - rest:])
	reader.join(timeout)
	assert not reader.is_alive(), "the answers did not end within %d s" % (
	    timeout)
	return n, reader


def test_pipelined_gets_never_read_hold_the_worker_bounded(make_server):
	"""Pipelined GET / without reading: the worker stops reading once
	256 KiB of answers wait; it neither grows nor stalls others, and once
	the client reads, every request is answered, in order."""
	s = make_server(workers=1, keepalive_timeout=30)
	pid = the_worker(s)
	before = peak_rss(pid)
	sock = flooding_socket(s)
	try:
		sent, stopped = flood(sock, GET_ROOT)
		grown = peak_rss(pid) - before
		assert stopped, "the server read %d bytes of requests without " \
		    "stopping (worker grew by %d bytes)" % (sent, grown)
		assert grown < GROWTH_MAX, "the worker grew by %d bytes" % grown
		assert_served(s, "during the flood")
		n, reader = finish(sock, sent, GET_ROOT)
		assert reader.error is None, reader.error
		assert reader.first.startswith(b"HTTP/1.1 200 "), reader.first[:200]
		assert reader.count == n, "%d requests, %d answers" % (n,
		    reader.count)
	finally:
		sock.close()
	assert peak_rss(pid) - before < drained_growth_max(pid)


@pytest.fixture
def own_redis(workdir):
	"""A Redis of the test's own, to pause."""
	yield from own_service(harness.Redis(workdir / "backpressure-redis",
	    harness.free_port()))


def test_requests_behind_one_in_progress_are_not_read_without_bound(
    make_server, own_redis):
	"""While a request waits for its backend (its Redis is paused), the
	requests behind it are not read past 16 (or one request's size): the
	sender is held up by TCP and the worker does not grow. When the backend
	is back, every request is answered, in order."""
	s = make_server(workers=1, keepalive_timeout=30, redis=own_redis)
	user = register(s)
	pid = the_worker(s)
	first = ("GET /me HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer "
	    "%s\r\n\r\n" % user["token"]).encode()
	before = peak_rss(pid)
	sock = flooding_socket(s)
	os.kill(own_redis.proc.pid, signal.SIGSTOP)
	try:
		sock.sendall(first)
		sent, stopped = flood(sock, GET_ROOT)
		grown = peak_rss(pid) - before
		assert stopped, "the server read %d bytes of requests queued " \
		    "behind one in progress (worker grew by %d bytes)" % (sent,
		    grown)
		assert grown < GROWTH_MAX, "the worker grew by %d bytes" % grown
		r = requests.get(s.base + "/", timeout=10)
		assert r.status_code == 200, "another client during the flood"
	finally:
		os.kill(own_redis.proc.pid, signal.SIGCONT)
	n, reader = finish(sock, sent, GET_ROOT, extra=1)
	sock.close()
	assert reader.error is None, reader.error
	# /me's answer first: its user, or 503 if it outlived backend_timeout
	head = reader.first.split(b"HTTP/1.1 ")[1]
	assert (head.startswith(b"200 ") and b'"username"' in head) or \
	    head.startswith(b"503 "), "not /me's answer: %r" % head[:300]
	assert reader.count == n, "%d requests, %d answers" % (n,
	    reader.count)


def test_pings_never_read_hold_the_worker_bounded_and_close_1008(
    make_server):
	"""A WebSocket that pings and never reads: its pongs count against
	ws_output_limit, so the worker stops reading it, then closes it with
	1008; it does not grow, and the room goes on for everyone else."""
	s = make_server(workers=1)
	a, b = register(s), register(s)
	room = create_room(s, a)
	other = join(s, room, b)
	pid = the_worker(s)
	before = peak_rss(pid)
	ws = WS.connect(s, room, token=a["token"], reader=False, rcvbuf=4096)
	ping = encode_frame(OP_PING, b"p" * 125)
	sent, stopped = flood(ws.sock, ping)
	grown = peak_rss(pid) - before
	assert stopped, "the server read %d bytes of pings without stopping " \
	    "(worker grew by %d bytes)" % (sent, grown)
	assert grown < GROWTH_MAX, "the worker grew by %d bytes" % grown
	assert_served(s, "during the ping flood")
	other.send("still here")
	other.wait_content("still here", timeout=10)
	# Now read: pongs, then the close (or the cut, once its grace is over).
	ws.sock.settimeout(10)
	buf, code, deadline = bytearray(), None, time.monotonic() + 20
	while time.monotonic() < deadline:
		try:
			data = ws.sock.recv(1 << 20)
		except ConnectionResetError:
			break
		if not data:
			break
		buf += data
		while True:
			f = decode_frame(buf)
			if f is None:
				break
			del buf[:f[5]]
			if f[2] == OP_CLOSE:
				code = struct.unpack("!H", f[4][:2])[0]
	else:
		pytest.fail("the pinging connection is still open after 20 s")
	assert code in (1008, None), "closed with %r, not 1008" % code
	assert peak_rss(pid) - before < GROWTH_MAX


def frames_until(ws, last, what, timeout=10):
	"""(opcode, payload) of every frame ws reads, up to and including
	the first for which last(opcode, payload) is true."""
	ws.sock.settimeout(timeout)
	seen, buf = [], bytearray(ws.buf)
	while not seen or not last(*seen[-1]):
		f = decode_frame(buf)
		if f is None:
			data = ws.sock.recv(65536)
			assert data, "closed before %s came: %r" % (what, seen)
			buf += data
			continue
		del buf[:f[5]]
		seen.append((f[2], f[4]))
	return seen


def test_a_pong_is_not_held_behind_the_message_of_the_same_read(server):
	"""ping, text, ping in one TCP segment: both pongs come back, and
	before the message event of that text (which the hub sends later).
	Today no data frame is written inside the read that brought the text,
	so this guards the order for handlers that answer at once; the case
	where one does is tested in test/unit/test_ws.c."""
	a = register(server)
	room = create_room(server, a)
	ws = WS.connect(server, room, token=a["token"], reader=False)
	content = "order-%s" % os.urandom(4).hex()
	ws.send_raw(encode_frame(OP_PING, b"first") + encode_frame(OP_TEXT,
	    content) + encode_frame(OP_PING, b"second"))
	seen = frames_until(ws, lambda op, p: op == OP_TEXT and
	    content.encode() in p, "the message")
	pongs = [p for op, p in seen if op == OP_PONG]
	assert pongs == [b"first", b"second"], "frames before the message: " \
	    "%r" % seen


def test_a_ping_before_a_close_is_answered(server):
	"""ping then close in one TCP segment: the pong comes, then the close
	(RFC 6455 5.5.2: only a ping after the close goes unanswered; wslay
	drops queued pongs once its close is queued)."""
	a = register(server)
	room = create_room(server, a)
	ws = WS.connect(server, room, token=a["token"], reader=False)
	ws.send_raw(encode_frame(OP_PING, b"before") + encode_frame(OP_CLOSE,
	    struct.pack("!H", 1000)))
	seen = frames_until(ws, lambda op, p: op == OP_CLOSE, "a close frame")
	control = [(op, p) for op, p in seen if op in (OP_PONG, OP_CLOSE)]
	assert control == [(OP_PONG, b"before"), (OP_CLOSE,
	    struct.pack("!H", 1000))], control
