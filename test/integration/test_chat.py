"""Chat rooms and WebSockets (SPEC.md §5, §7) seen by a client: the room
routes (createRoom, getRooms, getClients, history) and their validation,
the joinRoom checks in their order (401, 404, 403 Origin, 400) and the
handshake, history on join, join/message/leave events and their order on
every connection (across workers and across two instances sharing
PostgreSQL and Redis), no gap and no duplicate between history and the live
stream, the close codes (1003 binary, 1007 bad UTF-8, 1009 too big, 1002
protocol errors, 1001 server stopping), pings and pongs, slow readers,
account deletion and logout closing sockets, what an operator sees and does
in Redis (XADD broadcast, SUBSCRIBE, the clients hash, stats), and storms
of 1,000 clients joining and vanishing at once.

WebSockets are spoken by a small RFC 6455 client of our own (class WS
below, a raw socket with a reader thread) so that the tests can also send
what a browser never would: unmasked frames, reserved bits, bad UTF-8,
binary and oversized messages, fragments, and sockets that vanish without a
close frame. The storms use an asyncio variant of the same client.

Users are registered through the server (one scrypt hash each), except for
the 1,000 storm users: they are inserted straight into PostgreSQL (with an
unusable password hash) and given sessions straight in Redis, the way the
server stores them (SET gochat:session:<sha256 hex of the token> <user id>
EX 3600), so that the storm costs no hashing."""

import asyncio
import base64
import collections
import hashlib
import itertools
import json
import os
import re
import resource
import secrets
import socket
import struct
import threading
import time
import uuid

import pytest
import requests

import harness
from conftest import needs_own_server

TIME_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
ROOM_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
MAX_WS = 4096		# max_ws_message's default
MESSAGE_KEYS = {"type", "id", "roomId", "userId", "username", "content", "ts"}
PRESENCE_KEYS = {"type", "roomId", "userId", "username", "ts"}

_seq = itertools.count(1)


# The close code of a logged-out or deleted user's sockets (README: 1008,
# policy violation; what workers/chat.c sends).
CLOSE_POLICY = 1008

# --- HTTP helpers -------------------------------------------------------------

def unique(prefix="u"):
	"""A name no other test (or earlier run) uses: fits a username (32) and
	a room id (64)."""
	return "%s%d_%s" % (prefix, next(_seq), uuid.uuid4().hex[:10])


def register(srv, username=None):
	"""Register through the server: {"id","username","email","token"}."""
	username = username or unique()
	r = requests.post(srv.base + "/register", json={"username": username,
	    "email": "%s@example.org" % username.lower(),
	    "password": "correct horse"}, timeout=10)
	assert r.status_code == 201, "register: %d %s" % (r.status_code, r.text)
	return r.json()


def login(srv, user):
	"""Another session of user: its token."""
	r = requests.post(srv.base + "/login", json={"username": user["username"],
	    "password": "correct horse"}, timeout=10)
	assert r.status_code == 200, r.text
	return r.json()["token"]


def call(srv, method, path, token=None, **kw):
	"""One request with "Authorization: Bearer <token>" (token: a str or a
	user dict)."""
	if isinstance(token, dict):
		token = token["token"]
	headers = dict(kw.pop("headers", {}))
	if token:
		headers["Authorization"] = "Bearer " + token
	return requests.request(method, srv.base + path, headers=headers,
	    timeout=10, **kw)


def ok_json(r, status=200):
	assert r.status_code == status, "%s %s: expected %d, got %d: %s" % (
	    r.request.method, r.request.path_url, status, r.status_code, r.text)
	assert r.headers.get("Content-Type", "").startswith("application/json"), \
	    r.headers
	return r.json()


def assert_json_error(r, status):
	assert r.status_code == status, "%s %s: expected %d, got %d: %s" % (
	    r.request.method, r.request.path_url, status, r.status_code, r.text)
	assert r.headers.get("Content-Type", "").startswith("application/json"), \
	    r.headers
	body = r.json()
	assert isinstance(body.get("error"), str) and body["error"].strip(), body
	return body


def new_room_id():
	return unique("room")


def create_room(srv, user, room_id=None, name=None):
	"""POST /ws/createRoom; returns the room id (a fresh unique one unless
	given)."""
	room_id = room_id or new_room_id()
	body = {"id": room_id}
	if name is not None:
		body["name"] = name
	got = ok_json(call(srv, "POST", "/ws/createRoom", user, json=body))
	assert got == room_object(room_id, name if name is not None
	    else room_id, owner=user["id"]), got
	return room_id


def room_object(room_id, name, clients=0, owner=None, private=False,
    dm=False):
	"""A room object of SPEC section 10."""
	return {"id": room_id, "name": name, "private": private, "dm": dm,
	    "owner": owner, "clients": clients}


def get_clients(srv, user, room):
	"""getClients as a sorted list of (id, username), checking its form."""
	items = ok_json(call(srv, "GET", "/ws/getClients/%s" % room, user))
	assert isinstance(items, list), items
	for it in items:
		assert set(it) == {"id", "username"}, it
		assert isinstance(it["id"], int), it
	ids = [it["id"] for it in items]
	assert len(ids) == len(set(ids)), "a user listed twice: %r" % items
	return sorted((it["id"], it["username"]) for it in items)


def wait_clients(srv, user, room, expect, timeout, what=None):
	"""Wait until getClients is exactly expect (users); returns the time
	it took."""
	want = sorted((u["id"], u["username"]) for u in expect)
	t0 = time.monotonic()
	seen = []

	def check():
		seen.append(get_clients(srv, user, room))
		return seen[-1] == want
	if not harness.wait_for(check, timeout, 0.05):
		raise AssertionError("%sgetClients of %s after %.1f s: %r, expected %r"
		    % (what + ": " if what else "", room, timeout, seen[-1], want))
	return time.monotonic() - t0


def get_history(srv, user, room, query=""):
	items = ok_json(call(srv, "GET", "/ws/history/%s%s" % (room, query), user))
	assert isinstance(items, list), items
	for it in items:
		check_message_event(it, room)
	return items


def all_history(srv, user, room):
	"""Every stored message of room, oldest first, paging with before."""
	out = []
	before = None
	while True:
		q = "?limit=200" + ("&before=%d" % before if before else "")
		page = get_history(srv, user, room, q)
		out = page + out
		if len(page) < 200:
			return out
		before = page[0]["id"]


def all_rooms(srv, user, prefix=""):
	"""Every room getRooms lists, in creation order, paging with after
	(the shared server holds more rooms than one page by now). Each item's
	lastId and unread (SPEC section 9, tested in test_v2.py) are checked
	for their types and left out, so the rest compares to room_object()."""
	out = []
	while True:
		q = "?limit=200" + ("&after=%s" % out[-1]["id"] if out else "")
		page = ok_json(call(srv, "GET", prefix + "/ws/getRooms" + q, user))
		for r in page:
			last, unread = r.pop("lastId"), r.pop("unread")
			assert isinstance(last, int) and last >= 0, r
			assert isinstance(unread, int) and 0 <= unread <= 99, r
		out += page
		if len(page) < 200:
			return out


def check_message_event(e, room=None, history=None):
	keys = set(e) - {"history"}
	# An edited message (SPEC section 9) says when, in history and resume.
	if "edited" in keys:
		assert TIME_RE.match(e["edited"]), e
		keys.discard("edited")
	assert keys == MESSAGE_KEYS, "message event keys %r" % sorted(e)
	assert e["type"] == "message", e
	assert isinstance(e["id"], int) and e["id"] > 0, e
	assert isinstance(e["userId"], int), e
	assert isinstance(e["username"], str) and isinstance(e["content"], str), e
	assert TIME_RE.match(e["ts"]), e
	if room is not None:
		assert e["roomId"] == room, e
	if history is True:
		assert e.get("history") is True, "expected \"history\": true: %r" % e
	elif history is False:
		assert "history" not in e or e["history"] is False, e


def check_presence_event(e, kind, room, user):
	assert set(e) == PRESENCE_KEYS, "%s event keys %r" % (kind, sorted(e))
	assert e["type"] == kind and e["roomId"] == room, e
	assert e["userId"] == user["id"] and e["username"] == user["username"], e
	assert TIME_RE.match(e["ts"]), e


# --- a WebSocket client of our own -------------------------------------------

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0, 1, 2, 8, 9, 10


def mask_bytes(data, key):
	n = len(data)
	if n == 0:
		return b""
	k = (key * (n // 4 + 1))[:n]
	return (int.from_bytes(data, "big") ^ int.from_bytes(k, "big")).to_bytes(
	    n, "big")


def encode_frame(opcode, payload=b"", fin=True, masked=True, rsv=0):
	"""A client frame (masked unless told otherwise). rsv: the three
	reserved bits as a number 0-7 (4 = RSV1)."""
	if isinstance(payload, str):
		payload = payload.encode("utf-8")
	b0 = (0x80 if fin else 0) | ((rsv & 7) << 4) | (opcode & 0x0F)
	mbit = 0x80 if masked else 0
	n = len(payload)
	if n < 126:
		head = struct.pack("!BB", b0, mbit | n)
	elif n < 65536:
		head = struct.pack("!BBH", b0, mbit | 126, n)
	else:
		head = struct.pack("!BBQ", b0, mbit | 127, n)
	if masked:
		key = os.urandom(4)
		return head + key + mask_bytes(payload, key)
	return head + payload


def decode_frame(buf):
	"""(fin, rsv, opcode, masked, payload, length used) of the frame at the
	start of buf, or None if it is not complete yet."""
	if len(buf) < 2:
		return None
	b0, b1 = buf[0], buf[1]
	n = b1 & 0x7F
	i = 2
	if n == 126:
		if len(buf) < 4:
			return None
		n = struct.unpack_from("!H", buf, 2)[0]
		i = 4
	elif n == 127:
		if len(buf) < 10:
			return None
		n = struct.unpack_from("!Q", buf, 2)[0]
		i = 10
	masked = bool(b1 & 0x80)
	key = None
	if masked:
		if len(buf) < i + 4:
			return None
		key = bytes(buf[i:i + 4])
		i += 4
	if len(buf) < i + n:
		return None
	payload = bytes(buf[i:i + n])
	if masked:
		payload = mask_bytes(payload, key)
	return bool(b0 & 0x80), (b0 >> 4) & 7, b0 & 0x0F, masked, payload, i + n


def upgrade_request(srv, path, token=None, cookie=None, origin=None,
    host=None, key=None, version="13", upgrade=True, extra=()):
	"""The bytes of a GET for path: an RFC 6455 upgrade unless upgrade is
	false; token as Bearer, cookie as auth_token."""
	key = key or base64.b64encode(os.urandom(16)).decode()
	lines = ["GET %s HTTP/1.1" % path,
	    "Host: %s" % (host or "%s:%d" % (srv.host, srv.port))]
	if upgrade:
		lines += ["Upgrade: websocket", "Connection: Upgrade",
		    "Sec-WebSocket-Key: %s" % key]
		if version is not None:
			lines.append("Sec-WebSocket-Version: %s" % version)
	if token:
		lines.append("Authorization: Bearer %s" % token)
	if cookie:
		lines.append("Cookie: auth_token=%s" % cookie)
	if origin:
		lines.append("Origin: %s" % origin)
	lines += list(extra)
	return ("\r\n".join(lines) + "\r\n\r\n").encode(), key


Answer = collections.namedtuple("Answer", "status headers body")


def read_head(sock, timeout=5):
	"""Read a response head (and a Content-Length body unless 101): returns
	(Answer, bytes after it)."""
	deadline = time.monotonic() + timeout
	buf = b""
	while b"\r\n\r\n" not in buf:
		left = deadline - time.monotonic()
		if left <= 0:
			raise AssertionError("no response head within %.1f s (got %r)" % (
			    timeout, buf[:200]))
		sock.settimeout(left)
		data = sock.recv(65536)
		if not data:
			raise AssertionError("connection closed before a response head "
			    "(got %r)" % buf[:200])
		buf += data
	end = buf.index(b"\r\n\r\n") + 4
	lines = buf[:end].decode("iso-8859-1").split("\r\n")
	m = re.fullmatch(r"HTTP/1\.[01] (\d{3})(?: .*)?", lines[0])
	assert m, "bad status line %r" % lines[0]
	headers = {}
	for line in lines[1:]:
		if line:
			k, _, v = line.partition(":")
			headers[k.strip().lower()] = v.strip()
	status = int(m.group(1))
	rest = buf[end:]
	if status == 101:
		return Answer(status, headers, b""), rest
	n = int(headers.get("content-length", "0"))
	while len(rest) < n:
		left = deadline - time.monotonic()
		if left <= 0:
			break
		sock.settimeout(left)
		data = sock.recv(65536)
		if not data:
			break
		rest += data
	return Answer(status, headers, rest[:n]), rest[n:]


def open_socket(srv, rcvbuf=None):
	s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
	if rcvbuf:
		s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
	s.settimeout(5)
	s.connect((srv.host, srv.port))
	s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
	return s


def try_join(srv, room, token=None, path=None, **kw):
	"""Attempt an upgrade and return only its Answer (connection closed)."""
	s = open_socket(srv)
	try:
		req, _ = upgrade_request(srv, path or "/ws/joinRoom/%s" % room,
		    token=token, **kw)
		s.sendall(req)
		return read_head(s)[0]
	finally:
		s.close()


_open_ws = []		# every WS of the running test, aborted afterwards


class WS:
	"""One WebSocket connection. With reader (the default) a thread reads
	every frame: text messages are parsed into events (and kept raw in
	texts), pings are answered (unless auto_pong is false), a close frame is
	answered and its code kept. All state is guarded by cv."""

	def __init__(self, sock, leftover=b"", reader=True, auto_pong=True,
	    label=""):
		self.sock = sock
		self.label = label
		self.auto_pong = auto_pong
		self.cv = threading.Condition()
		self.send_lock = threading.Lock()
		self.events = []	# parsed JSON of each text message
		self.texts = []		# the same, raw
		self.times = []		# monotonic arrival time of each
		self.pings = []
		self.pongs = []
		self.bad_frames = []	# server frames that break RFC 6455
		self.close_code = None	# code of the server's close frame (1005:
					# none given, 1006: no close frame at all)
		self.close_reason = None
		self.close_sent = False
		self.eof = False
		self.buf = bytearray(leftover)
		self.thread = None
		_open_ws.append(self)
		sock.settimeout(None)
		if reader:
			self.thread = threading.Thread(target=self._run, daemon=True)
			self.thread.start()

	@classmethod
	def connect(cls, srv, room, token=None, cookie=None, origin=None,
	    rcvbuf=None, reader=True, auto_pong=True, path=None, label="",
	    **kw):
		s = open_socket(srv, rcvbuf)
		req, key = upgrade_request(srv, path or "/ws/joinRoom/%s" % room,
		    token=token, cookie=cookie, origin=origin, **kw)
		s.sendall(req)
		try:
			ans, rest = read_head(s)
		except Exception:
			s.close()
			raise
		if ans.status != 101:
			s.close()
			raise AssertionError("joinRoom %s: expected 101, got %d %r" % (
			    room, ans.status, ans.body[:300]))
		want = base64.b64encode(hashlib.sha1((key + GUID).encode())
		    .digest()).decode()
		assert ans.headers.get("sec-websocket-accept") == want, ans.headers
		assert ans.headers.get("upgrade", "").lower() == "websocket", \
		    ans.headers
		assert "upgrade" in ans.headers.get("connection", "").lower(), \
		    ans.headers
		return cls(s, rest, reader=reader, auto_pong=auto_pong,
		    label=label or room)

	# -- the reader thread --

	def _run(self):
		frag_op, frag = None, bytearray()
		while True:
			while True:
				f = decode_frame(self.buf)
				if f is None:
					break
				fin, rsv, op, masked, payload, used = f
				del self.buf[:used]
				if masked or rsv:
					with self.cv:
						self.bad_frames.append(("masked" if masked else
						    "rsv", op))
				if op in (OP_TEXT, OP_BINARY) or op == OP_CONT:
					if op != OP_CONT:
						frag_op, frag = op, bytearray()
					frag += payload
					if fin:
						self._on_message(frag_op, bytes(frag))
						frag_op, frag = None, bytearray()
				elif op == OP_PING:
					with self.cv:
						self.pings.append(time.monotonic())
						self.cv.notify_all()
					if self.auto_pong:
						self._send_quiet(encode_frame(OP_PONG, payload))
				elif op == OP_PONG:
					with self.cv:
						self.pongs.append(payload)
						self.cv.notify_all()
				elif op == OP_CLOSE:
					code = struct.unpack("!H", payload[:2])[0] \
					    if len(payload) >= 2 else 1005
					with self.cv:
						if self.close_code is None:
							self.close_code = code
							self.close_reason = payload[2:]
						self.cv.notify_all()
					if not self.close_sent:
						self.close_sent = True
						self._send_quiet(encode_frame(OP_CLOSE,
						    payload[:2]))
				else:
					with self.cv:
						self.bad_frames.append(("opcode", op))
			try:
				data = self.sock.recv(262144)
			except OSError:
				data = b""
			if not data:
				break
			self.buf += data
		with self.cv:
			self.eof = True
			if self.close_code is None:
				self.close_code = 1006
			self.cv.notify_all()

	def _on_message(self, op, data):
		if op != OP_TEXT:
			with self.cv:
				self.bad_frames.append(("binary message", op))
			return
		try:
			text = data.decode("utf-8")
			ev = json.loads(text)
		except ValueError as e:
			with self.cv:
				self.bad_frames.append(("not UTF-8 JSON: %s" % e, data[:100]))
			return
		with self.cv:
			self.texts.append(text)
			self.events.append(ev)
			self.times.append(time.monotonic())
			self.cv.notify_all()

	# -- sending --

	def send_raw(self, data):
		with self.send_lock:
			self.sock.sendall(data)

	def _send_quiet(self, data):
		try:
			self.send_raw(data)
		except OSError:
			pass

	def send(self, text):
		"""One text message."""
		self.send_raw(encode_frame(OP_TEXT, text))

	def send_frame(self, opcode, payload=b"", **kw):
		self.send_raw(encode_frame(opcode, payload, **kw))

	def ping(self, payload=b""):
		self.send_raw(encode_frame(OP_PING, payload))

	# -- waiting --

	def describe(self):
		last = [{k: (v[:40] + "..." if isinstance(v, str) and len(v) > 40
		    else v) for k, v in e.items()} if isinstance(e, dict) else e
		    for e in self.events[-3:]]
		return "connection %s: %d events (last %r), close code %r, eof %r" % (
		    self.label, len(self.events), last, self.close_code, self.eof)

	def wait(self, pred, timeout=5, what="the condition"):
		"""Wait until pred() (called under the lock) is true; returns it."""
		deadline = time.monotonic() + timeout
		with self.cv:
			while True:
				v = pred()
				if v:
					return v
				left = deadline - time.monotonic()
				if left <= 0:
					raise AssertionError("%s: not within %.1f s (%s)" % (
					    what, timeout, self.describe()))
				self.cv.wait(min(left, 0.5))

	def messages(self, history=None):
		"""The message events received (live ones only with
		history=False, history ones only with history=True)."""
		with self.cv:
			out = [e for e in self.events if e.get("type") == "message"]
		if history is True:
			return [e for e in out if e.get("history") is True]
		if history is False:
			return [e for e in out if e.get("history") is not True]
		return out

	def of_type(self, kind):
		with self.cv:
			return [e for e in self.events if e.get("type") == kind]

	def wait_messages(self, n, timeout=5, history=False):
		"""Wait until at least n live message events have arrived."""
		self.wait(lambda: len(self.messages(history)) >= n, timeout,
		    "%d messages" % n)
		return self.messages(history)

	def wait_content(self, content, timeout=5):
		"""The first message event carrying content."""
		def find():
			for e in self.events:
				if e.get("type") == "message" and e.get("content") == content:
					return e
			return None
		return self.wait(find, timeout, "a message %r" % content[:60])

	def wait_presence(self, kind, user, timeout=5, count=1):
		"""The count-th kind ("join"/"leave") event of user."""
		def find():
			found = [e for e in self.events if e.get("type") == kind
			    and e.get("userId") == user["id"]]
			return found[count - 1] if len(found) >= count else None
		return self.wait(find, timeout, "%s event #%d of user %s" % (kind,
		    count, user["username"]))

	def wait_closed(self, timeout=5, what="the server closing the connection"):
		"""Wait for the end of the connection; returns the close code."""
		self.wait(lambda: self.eof, timeout, what)
		return self.close_code

	def is_open(self):
		with self.cv:
			return not self.eof and self.close_code is None

	# -- ending --

	def close(self, code=1000, timeout=3):
		"""The close handshake from our side; returns the server's code."""
		if not self.close_sent:
			self.close_sent = True
			self._send_quiet(encode_frame(OP_CLOSE, struct.pack("!H", code)))
		if self.thread:
			try:
				self.wait(lambda: self.eof, timeout, "close handshake")
			finally:
				self.sock.close()
		else:
			self.sock.close()
		return self.close_code

	def abort(self, rst=True):
		"""Vanish without a close frame (a reset with rst)."""
		try:
			if rst:
				self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
				    struct.pack("ii", 1, 0))
			self.sock.shutdown(socket.SHUT_RD)
		except OSError:
			pass
		self.sock.close()


@pytest.fixture(autouse=True)
def close_websockets():
	"""Every WebSocket a test opened is gone after it."""
	yield
	while _open_ws:
		ws = _open_ws.pop()
		ws.abort()


def join(srv, room, user, token=None, wait=True, **kw):
	"""A WebSocket of user in room (Bearer token: user's unless given);
	with wait, returns once its own join event has arrived."""
	kw.setdefault("label", "%s@%s" % (user["username"], room))
	ws = WS.connect(srv, room, token=token or user["token"], **kw)
	if wait:
		ws.wait_presence("join", user)
	return ws


def live_ids(ws):
	return [e["id"] for e in ws.messages(history=False)]


def assert_increasing(ids, what):
	bad = [(a, b) for a, b in zip(ids, ids[1:]) if not b > a]
	assert not bad, "%s: ids not strictly increasing at %r (of %d)" % (what,
	    bad[:5], len(ids))


# --- stats and Redis helpers -----------------------------------------------------

def worker_stats(srv, redis):
	"""{pid: stats hash} of srv's workers."""
	return harness.stats_hashes(redis.port, set(srv.workers().values()))


def stats_sum(srv, redis, field):
	total = 0
	st = worker_stats(srv, redis)
	for h in st.values():
		assert field in h, "no field %s in a worker's stats hash: %r" % (
		    field, h)
		total += int(h[field])
	return total


class Subscriber:
	"""A raw RESP connection SUBSCRIBEd to one channel; a thread collects
	every payload published on it."""

	def __init__(self, port, channel):
		self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
		self.f = self.sock.makefile("rb")
		self.sock.sendall(harness._resp_encode(["SUBSCRIBE", channel]))
		assert harness._resp_read(self.f) == ["subscribe", channel, 1]
		self.sock.settimeout(None)
		self.channel = channel
		self.payloads = []
		self.cv = threading.Condition()
		threading.Thread(target=self._run, daemon=True).start()

	def _run(self):
		while True:
			try:
				kind, channel, payload = harness._resp_read(self.f)
			except (OSError, ConnectionError, ValueError):
				return
			with self.cv:
				self.payloads.append(payload)
				self.cv.notify_all()

	def wait(self, n, timeout=5):
		deadline = time.monotonic() + timeout
		with self.cv:
			while len(self.payloads) < n:
				left = deadline - time.monotonic()
				if left <= 0:
					raise AssertionError("%d of %d events on %s after %.1f s: "
					    "%r" % (len(self.payloads), n, self.channel, timeout,
					    self.payloads))
				self.cv.wait(left)
			return list(self.payloads)

	def close(self):
		try:
			self.sock.shutdown(socket.SHUT_RDWR)
		except OSError:
			pass
		self.sock.close()


# --- creating rooms ----------------------------------------------------------------

@pytest.mark.parametrize("prefix", ["", "/v1"])
def test_create_room_answers_its_id_and_name(server, prefix):
	u = register(server)
	rid = new_room_id()
	r = call(server, "POST", prefix + "/ws/createRoom", u,
	    json={"id": rid, "name": "Lobby — café ☕"})
	assert ok_json(r) == room_object(rid, "Lobby — café ☕", owner=u["id"])
	rooms = all_rooms(server, u, prefix)
	assert room_object(rid, "Lobby — café ☕", owner=u["id"]) in rooms


def test_create_room_name_defaults_to_the_id(server):
	u = register(server)
	rid = new_room_id()
	assert ok_json(call(server, "POST", "/ws/createRoom", u,
	    json={"id": rid})) == room_object(rid, rid, owner=u["id"])


def test_create_room_without_an_id_makes_one(server):
	u = register(server)
	ids = []
	for body in ({"name": "no id given"}, {}):
		got = ok_json(call(server, "POST", "/ws/createRoom", u, json=body))
		assert set(got) == {"id", "name", "private", "dm", "owner",
		    "clients"}, got
		assert isinstance(got["id"], str) and ROOM_ID_RE.match(got["id"]), got
		assert got["name"] == body.get("name", got["id"]), got
		ids.append(got["id"])
	assert ids[0] != ids[1]
	listed = [r["id"] for r in all_rooms(server, u)]
	assert ids[0] in listed and ids[1] in listed
	# The made-up id is a room like any other.
	ws = join(server, ids[0], u)
	ws.send("hello")
	assert ws.wait_content("hello")["roomId"] == ids[0]


def test_create_room_accepts_the_boundaries(server):
	u = register(server)
	rid = ("b%s" % uuid.uuid4().hex) + "x" * 31		# 64 characters
	assert len(rid) == 64
	name = "é" * 100					# 100 characters, 200 bytes
	assert ok_json(call(server, "POST", "/ws/createRoom", u,
	    json={"id": rid, "name": name})) == room_object(rid, name,
	    owner=u["id"])
	one = uuid.uuid4().hex[:1] + "-_" + uuid.uuid4().hex[:6]
	assert ok_json(call(server, "POST", "/ws/createRoom", u,
	    json={"id": one, "name": "a"})) == room_object(one, "a",
	    owner=u["id"])


@pytest.mark.parametrize("rid", ["", "has space", "x" * 65, "café", "a/b",
    "a.b", "semi;colon", "percent%20", 7, ["a"], {"a": 1}],
    ids=["empty", "space", "65chars", "non-ascii", "slash", "dot", "semicolon",
    "percent", "number", "array", "object"])
def test_create_room_rejects_an_invalid_id(server, rid):
	u = register(server)
	assert_json_error(call(server, "POST", "/ws/createRoom", u,
	    json={"id": rid, "name": "x"}), 400)


@pytest.mark.parametrize("name", ["", "n" * 101, "é" * 101, 5, ["x"]],
    ids=["empty", "101chars", "101-non-ascii", "number", "array"])
def test_create_room_rejects_an_invalid_name(server, name):
	u = register(server)
	rid = new_room_id()
	assert_json_error(call(server, "POST", "/ws/createRoom", u,
	    json={"id": rid, "name": name}), 400)
	# Nothing was created.
	assert_json_error(call(server, "GET", "/ws/getClients/%s" % rid, u), 404)


@pytest.mark.parametrize("body", [b"{", b"[]", b"\"x\"", b"{\"id\": \"a\",}",
    b"\xff\xfe"], ids=["truncated", "array", "string", "trailing-comma",
    "not-utf8"])
def test_create_room_with_a_malformed_body_is_400(server, body):
	u = register(server)
	assert_json_error(call(server, "POST", "/ws/createRoom", u, data=body,
	    headers={"Content-Type": "application/json"}), 400)


def test_a_taken_room_id_is_409(server):
	u, v = register(server), register(server)
	rid = create_room(server, u, name="first")
	assert_json_error(call(server, "POST", "/ws/createRoom", v,
	    json={"id": rid, "name": "second"}), 409)
	rooms = [r for r in all_rooms(server, v) if r["id"] == rid]
	assert rooms == [room_object(rid, "first", owner=u["id"])]


def test_get_rooms_lists_rooms_in_creation_order_with_client_counts(server):
	u, v = register(server), register(server)
	made = [create_room(server, u, name="r%d" % i) for i in range(3)]
	rooms = all_rooms(server, u)
	for r in rooms:
		assert set(r) == {"id", "name", "private", "dm", "owner",
		    "clients"}, r
		assert isinstance(r["clients"], int) and r["clients"] >= 0, r
	mine = [r for r in rooms if r["id"] in made]
	assert mine == [room_object(made[i], "r%d" % i, owner=u["id"])
	    for i in range(3)]
	# Distinct users: two connections of u count once.
	join(server, made[1], u)
	join(server, made[1], u)
	join(server, made[1], v)

	def counted():
		rs = all_rooms(server, u)
		return [r["clients"] for r in rs if r["id"] in made]
	assert harness.wait_for(lambda: counted() == [0, 2, 0], 1.5), counted()


# --- authentication and unknown rooms ---------------------------------------------

ROUTES = [("POST", "/ws/createRoom"), ("GET", "/ws/getRooms"),
    ("GET", "/ws/getClients/lobby"), ("GET", "/ws/history/lobby"),
    ("GET", "/ws/joinRoom/lobby")]


@pytest.mark.parametrize("method,path", ROUTES)
@pytest.mark.parametrize("token", [None, "not a token", "A" * 43])
@pytest.mark.parametrize("prefix", ["", "/v1"])
def test_every_chat_route_needs_a_session(server, method, path, token,
    prefix):
	kw = {"json": {"id": new_room_id()}} if method == "POST" else {}
	assert_json_error(call(server, method, prefix + path, token, **kw), 401)


@pytest.mark.parametrize("path", ["/ws/getClients/%s", "/ws/history/%s",
    "/ws/joinRoom/%s", "/v1/ws/getClients/%s", "/v1/ws/history/%s"])
def test_an_unknown_room_is_404(server, path):
	u = register(server)
	assert_json_error(call(server, "GET", path % new_room_id(), u), 404)


def test_join_an_unknown_room_is_404_before_the_upgrade(server):
	u = register(server)
	ans = try_join(server, new_room_id(), token=u["token"])
	assert ans.status == 404, ans


def test_join_checks_token_then_room_then_origin_then_upgrade(server):
	u = register(server)
	room = create_room(server, u)
	bad = "http://evil.example"
	cases = [
	    # (token, room, origin, upgrade) -> status
	    (None, new_room_id(), bad, False, 401),
	    ("A" * 43, new_room_id(), bad, False, 401),
	    (None, room, None, True, 401),
	    (u["token"], new_room_id(), bad, False, 404),
	    (u["token"], room, bad, False, 403),
	    (u["token"], room, bad, True, 403),
	    (u["token"], room, None, False, 400),
	]
	for token, rid, origin, upgrade, status in cases:
		ans = try_join(server, rid, token=token, origin=origin,
		    upgrade=upgrade)
		assert ans.status == status, (
		    "token=%s room=%s origin=%s upgrade=%s: expected %d, got %d %r"
		    % (bool(token), rid == room, origin, upgrade, status, ans.status,
		    ans.body[:200]))
		body = json.loads(ans.body)
		assert isinstance(body.get("error"), str) and body["error"], body


@pytest.mark.parametrize("what", ["no-key", "short-key", "version-8",
    "no-version", "no-upgrade-token", "http-1.0", "post"])
def test_an_invalid_upgrade_is_400(server, what):
	u = register(server)
	room = create_room(server, u)
	path = "/ws/joinRoom/%s" % room
	kw = {}
	if what == "short-key":
		kw["key"] = base64.b64encode(b"short").decode()
	elif what == "version-8":
		kw["version"] = "8"
	elif what == "no-version":
		kw["version"] = None
	req, _ = upgrade_request(server, path, token=u["token"], **kw)
	if what == "no-key":
		req = re.sub(rb"Sec-WebSocket-Key: [^\r]*\r\n", b"", req)
	elif what == "no-upgrade-token":
		req = req.replace(b"Upgrade: websocket\r\n", b"Upgrade: h2c\r\n")
	elif what == "http-1.0":
		req = req.replace(b"HTTP/1.1", b"HTTP/1.0", 1)
	elif what == "post":
		req = req.replace(b"GET ", b"POST ", 1).replace(b"\r\n\r\n",
		    b"\r\nContent-Length: 0\r\n\r\n")
	s = open_socket(server)
	try:
		s.sendall(req)
		ans = read_head(s)[0]
	finally:
		s.close()
	if what == "version-8":
		# RFC 6455 4.4 suggests 426 with the supported version.
		assert ans.status in (400, 426), ans
	elif what == "post":
		assert ans.status in (400, 405), ans
	else:
		assert ans.status == 400, ans


def test_join_with_the_cookie_or_the_bearer_header(server):
	u = register(server)
	room = create_room(server, u)
	a = WS.connect(server, room, cookie=u["token"])
	a.wait_presence("join", u)
	b = WS.connect(server, room, token=u["token"])
	b.wait_presence("join", u)
	a.send("via cookie")
	assert b.wait_content("via cookie")["userId"] == u["id"]


# --- Origin ------------------------------------------------------------------------

def test_origin_of_the_server_itself_is_accepted_in_http_and_https(server):
	u = register(server)
	room = create_room(server, u)
	own = "%s:%d" % (server.host, server.port)
	for origin in ("http://" + own, "https://" + own):
		ws = WS.connect(server, room, token=u["token"], origin=origin)
		ws.wait_presence("join", u)
		ws.close()
	# Same host:port as the Host header, whatever name the client used.
	ws = WS.connect(server, room, token=u["token"],
	    origin="http://localhost:%d" % server.port,
	    host="localhost:%d" % server.port)
	ws.wait_presence("join", u)


@pytest.mark.parametrize("origin", ["http://evil.example", "null",
    "http://127.0.0.1:1", "http://127.0.0.1", "ws://127.0.0.1:%(port)d",
    "http://localhost:%(port)d", "http://127.0.0.1:%(port)d.evil.example"])
def test_a_foreign_origin_is_403(server, origin):
	u = register(server)
	room = create_room(server, u)
	ans = try_join(server, room, token=u["token"],
	    origin=origin % {"port": server.port})
	assert ans.status == 403, ans
	assert json.loads(ans.body).get("error"), ans


def test_allowed_origins_are_accepted_and_no_others(make_server):
	s = make_server(allowed_origins="http://example.org, "
	    "https://chat.example.com  http://localhost:3000")
	u = register(s)
	room = create_room(s, u)
	for origin in ("http://example.org", "https://chat.example.com",
	    "http://localhost:3000", "http://%s:%d" % (s.host, s.port)):
		ws = WS.connect(s, room, token=u["token"], origin=origin)
		ws.wait_presence("join", u)
		ws.close()
	for origin in ("https://example.org", "http://example.org:8080",
	    "http://chat.example.com", "http://example.org.evil.example",
	    "http://localhost:3001", "http://evil.example"):
		ans = try_join(s, room, token=u["token"], origin=origin)
		assert ans.status == 403, (origin, ans)


# --- joining, presence, messages -----------------------------------------------------

def test_join_event_reaches_the_joiner_and_everyone_in_the_room(server):
	a, b = register(server), register(server)
	room = create_room(server, a)
	wa = WS.connect(server, room, token=a["token"])
	first = wa.wait(lambda: wa.events and wa.events[0], 5, "a first event")
	check_presence_event(first, "join", room, a)	# empty room: no history
	wb = join(server, room, b)
	check_presence_event(wa.wait_presence("join", b), "join", room, b)
	check_presence_event(wb.events[0], "join", room, b)
	assert wb.of_type("message") == []
	assert not wa.bad_frames and not wb.bad_frames, (wa.bad_frames,
	    wb.bad_frames)


def test_a_message_reaches_everyone_including_the_sender(server):
	a, b, c = register(server), register(server), register(server)
	room = create_room(server, a)
	ws = [join(server, room, u) for u in (a, b, c)]
	ws[1].send("hello, room")
	evs = [w.wait_content("hello, room") for w in ws]
	for e in evs:
		check_message_event(e, room, history=False)
		assert e["userId"] == b["id"] and e["username"] == b["username"], e
	assert evs[0] == evs[1] == evs[2]
	ws[0].send("second")
	e2 = ws[2].wait_content("second")
	assert e2["id"] > evs[0]["id"]


CONTENTS = ["plain", "quote \" backslash \\ slash /", "newline\nCR\r tab\t",
    "control \x01 \x1f \x7f", "unicode é 中文 😀 👍🏽", "<script>alert(1)</script>",
    "  spaces around  ", "{\"type\":\"join\"}", "\u2028\u2029", "a" * 1000]


def test_content_arrives_exactly_as_sent(server):
	a, b = register(server), register(server)
	room = create_room(server, a)
	wa, wb = join(server, room, a), join(server, room, b)
	for c in CONTENTS:
		wa.send(c)
	got = wb.wait_messages(len(CONTENTS))
	assert [e["content"] for e in got] == CONTENTS
	# Stored the same way.
	hist = get_history(server, b, room)
	assert [e["content"] for e in hist] == CONTENTS


def test_message_of_exactly_the_limit_is_accepted(server):
	a = register(server)
	room = create_room(server, a)
	w = join(server, room, a)
	for c in ("x" * MAX_WS, "é" * (MAX_WS // 2)):
		w.send(c)
		assert w.wait_content(c, 5)["content"] == c
	assert w.is_open()


def test_a_fragmented_message_is_one_message(server):
	a, b = register(server), register(server)
	room = create_room(server, a)
	wa, wb = join(server, room, a), join(server, room, b)
	text = "Hello, wörld".encode()
	cut = text.index(b"\xc3") + 1		# split inside "ö"
	wa.send_frame(OP_TEXT, b"Hel", fin=False)
	wa.send_frame(OP_CONT, text[3:cut], fin=False)
	wa.ping(b"between fragments")		# control frames may interleave
	wa.send_frame(OP_CONT, text[cut:], fin=True)
	assert wb.wait_content("Hello, wörld")["userId"] == a["id"]
	wa.wait(lambda: b"between fragments" in wa.pongs, 3, "the pong")
	assert [e["content"] for e in wb.messages()] == ["Hello, wörld"]


def test_ping_is_answered_with_the_same_payload(server):
	a = register(server)
	room = create_room(server, a)
	w = join(server, room, a)
	w.ping(b"are you there?")
	w.wait(lambda: b"are you there?" in w.pongs, 3, "a pong")
	w.ping(b"")
	w.wait(lambda: len(w.pongs) >= 2, 3, "a second pong")
	assert w.is_open()


def test_a_close_from_the_client_is_echoed(server):
	a = register(server)
	room = create_room(server, a)
	w = join(server, room, a)
	assert w.close(1000) == 1000


def test_messages_are_in_one_order_everywhere_across_workers(server):
	"""8 connections (so both workers hold some), 4 of them sending 25
	messages each at once: all 8 see the same 100 messages in the same
	order, ids strictly increasing, each sender's in the order sent."""
	users = [register(server) for _ in range(8)]
	room = create_room(server, users[0])
	ws = [join(server, room, u) for u in users]
	for w in ws:
		w.wait(lambda w=w: len(w.of_type("join")) >= 1, 5)
	per = 25

	def send_all(i):
		for n in range(per):
			ws[i].send("s%d-%d" % (i, n))
	threads = [threading.Thread(target=send_all, args=(i,)) for i in range(4)]
	for t in threads:
		t.start()
	for t in threads:
		t.join(20)
	total = 4 * per
	seqs = []
	for w in ws:
		msgs = w.wait_messages(total, 15)
		assert len(msgs) == total, "%s got %d messages" % (w.label, len(msgs))
		seqs.append([(e["id"], e["content"], e["userId"]) for e in msgs])
	assert_increasing([s[0] for s in seqs[0]], "room order")
	for s in seqs[1:]:
		assert s == seqs[0], "two connections saw different sequences"
	for i in range(4):
		mine = [c for _, c, uid in seqs[0] if uid == users[i]["id"]]
		assert mine == ["s%d-%d" % (i, n) for n in range(per)], mine[:5]


def test_a_flood_from_one_client_arrives_whole_and_in_order(server):
	"""2,000 messages written in one go (a single sendall): every member
	gets every one, in the order sent, ids strictly increasing."""
	users = [register(server) for _ in range(3)]
	room = create_room(server, users[0])
	ws = [join(server, room, u) for u in users]
	ws[0].wait_presence("join", users[-1])
	n = 2000
	ws[0].send_raw(b"".join(encode_frame(OP_TEXT, "f%d" % i)
	    for i in range(n)))
	for w in ws:
		msgs = w.wait_messages(n, 30)
		assert [e["content"] for e in msgs] == ["f%d" % i for i in range(n)]
		assert_increasing([e["id"] for e in msgs], w.label)
		assert w.is_open(), w.describe()


def test_leave_is_announced_and_get_clients_follows_within_1_s(server):
	a, b = register(server), register(server)
	room = create_room(server, a)
	a1, a2 = join(server, room, a), join(server, room, a)
	wb = join(server, room, b)
	wait_clients(server, b, room, [a, b], 1.5)
	# a still has a connection: still listed.
	a1.close()
	time.sleep(1.2)
	assert get_clients(server, b, room) == sorted([(a["id"], a["username"]),
	    (b["id"], b["username"])])
	a2.close()
	took = wait_clients(server, b, room, [b], 2, "after a's last close")
	assert took <= 1.0 + 0.3, "a left getClients only after %.2f s" % took
	check_presence_event(wb.wait_presence("leave", a, 2), "leave", room, a)


@pytest.mark.parametrize("rst", [False, True], ids=["fin", "reset"])
def test_a_vanished_client_leaves_within_1_s(server, rst):
	a, b = register(server), register(server)
	room = create_room(server, a)
	wa, wb = join(server, room, a), join(server, room, b)
	wait_clients(server, b, room, [a, b], 1.5)
	wa.abort(rst=rst)
	took = wait_clients(server, b, room, [b], 3, "after a vanished")
	assert took <= 1.3, "a left getClients only after %.2f s" % took
	wb.wait_presence("leave", a, 2)


def test_rooms_are_isolated(server):
	a, b, c = register(server), register(server), register(server)
	r1, r2 = create_room(server, a), create_room(server, a)
	a1 = join(server, r1, a)
	a2 = join(server, r2, a)		# a is in both rooms
	b1 = join(server, r1, b)
	c2 = join(server, r2, c)
	b1.send("for room 1")
	c2.send("for room 2")
	a1.wait_content("for room 1")
	a2.wait_content("for room 2")
	b1.wait_content("for room 1")
	c2.wait_content("for room 2")
	time.sleep(0.3)
	assert [e["content"] for e in a1.messages()] == ["for room 1"]
	assert [e["content"] for e in a2.messages()] == ["for room 2"]
	assert [e["content"] for e in c2.messages()] == ["for room 2"]
	assert all(e["roomId"] == r1 for e in a1.events), a1.events
	assert all(e["roomId"] == r2 for e in a2.events), a2.events
	assert not c2.of_type("join") or all(e["userId"] != b["id"]
	    for e in c2.of_type("join"))
	wait_clients(server, a, r1, [a, b], 1.5)
	wait_clients(server, a, r2, [a, c], 1.5)
	# Leaving one room leaves the other alone.
	a1.close()
	wait_clients(server, a, r1, [b], 1.5)
	assert get_clients(server, a, r2) == sorted([(a["id"], a["username"]),
	    (c["id"], c["username"])])
	assert [e["content"] for e in get_history(server, a, r1)] == ["for room 1"]
	assert [e["content"] for e in get_history(server, a, r2)] == ["for room 2"]


def test_join_answers_under_v1_too(server):
	a = register(server)
	room = create_room(server, a)
	w = WS.connect(server, room, token=a["token"],
	    path="/v1/ws/joinRoom/%s" % room)
	w.wait_presence("join", a)
	w.send("via v1")
	w.wait_content("via v1")


def test_a_frame_sent_with_the_upgrade_request_is_not_lost(server):
	"""A client may send its first message in the same packet as the
	upgrade request: it is one message, seen once by the sender (live or
	in its history) and live by the others."""
	a, b = register(server), register(server)
	room = create_room(server, a)
	wb = join(server, room, b)
	s = open_socket(server)
	req, _ = upgrade_request(server, "/ws/joinRoom/%s" % room,
	    token=a["token"])
	s.sendall(req + encode_frame(OP_TEXT, "in the same packet"))
	ans, rest = read_head(s)
	assert ans.status == 101, ans
	wa = WS(s, rest, label="eager")
	wb.wait_content("in the same packet")
	wa.wait_content("in the same packet")
	wa.wait_presence("join", a)
	time.sleep(0.3)
	assert [e["content"] for e in wa.messages()] == ["in the same packet"]
	assert [e["content"] for e in wb.messages()] == ["in the same packet"]


# --- history ----------------------------------------------------------------

def test_history_pages_oldest_first_with_limit_and_before(server):
	a = register(server)
	room = create_room(server, a)
	assert get_history(server, a, room) == []
	w = join(server, room, a)
	for i in range(7):
		w.send("h%d" % i)
	live = w.wait_messages(7)
	ids = [e["id"] for e in live]
	hist = get_history(server, a, room)
	assert [e["content"] for e in hist] == ["h%d" % i for i in range(7)]
	for h, e in zip(hist, live):
		# The same event as the live one (plus, at most, "history").
		assert {k: v for k, v in h.items() if k != "history"} == e
	assert [e["id"] for e in get_history(server, a, room, "?limit=3")] == \
	    ids[4:]
	assert [e["id"] for e in get_history(server, a, room,
	    "?before=%d" % ids[4])] == ids[:4]
	assert [e["id"] for e in get_history(server, a, room,
	    "?before=%d&limit=2" % ids[4])] == ids[2:4]
	assert get_history(server, a, room, "?before=%d" % ids[0]) == []
	assert [e["id"] for e in get_history(server, a, room, "?limit=1")] == \
	    ids[6:]


@pytest.mark.parametrize("query", ["?limit=0", "?limit=-1", "?limit=abc",
    "?limit=", "?before=abc", "?before=1.5"])
def test_history_rejects_a_bad_parameter(server, query):
	a = register(server)
	room = create_room(server, a)
	assert_json_error(call(server, "GET", "/ws/history/%s%s" % (room, query),
	    a), 400)


def test_history_defaults_to_50_clamps_at_200_and_joiners_get_the_last_50(
    server):
	a, b = register(server), register(server)
	room = create_room(server, a)
	w = join(server, room, a)
	n = 210
	for i in range(n):
		w.send("m%d" % i)
	live = w.wait_messages(n, 20)
	ids = [e["id"] for e in live]
	assert [e["id"] for e in get_history(server, a, room)] == ids[-50:]
	assert [e["id"] for e in get_history(server, a, room, "?limit=200")] == \
	    ids[-200:]
	for q in ("?limit=201", "?limit=100000"):
		assert [e["id"] for e in get_history(server, a, room, q)] == \
		    ids[-200:], q
	# A joiner gets the last history_on_join (50), oldest first, flagged,
	# then its join event.
	wb = WS.connect(server, room, token=b["token"])
	wb.wait_presence("join", b)
	evs = list(wb.events)
	hist = evs[:50]
	for e in hist:
		check_message_event(e, room, history=True)
	assert [e["id"] for e in hist] == ids[-50:]
	assert [e["content"] for e in hist] == ["m%d" % i for i in range(n - 50, n)]
	check_presence_event(evs[50], "join", room, b)


def test_messages_are_stored_and_shown_again_after_a_reconnect(server):
	a = register(server)
	room = create_room(server, a)
	w = join(server, room, a)
	for c in ("one", "two", "three"):
		w.send(c)
	live = w.wait_messages(3)
	w.close()
	w2 = WS.connect(server, room, token=a["token"])
	w2.wait_presence("join", a)
	hist = w2.messages(history=True)
	assert [(e["id"], e["content"], e["ts"]) for e in hist] == \
	    [(e["id"], e["content"], e["ts"]) for e in live]
	# Later messages continue the sequence.
	w2.send("four")
	assert w2.wait_content("four")["id"] > live[-1]["id"]


def test_no_gap_and_no_duplicate_between_history_and_the_live_stream(server):
	"""A joiner arriving while messages stream in sees exactly the suffix
	of what a member present all along saw: history then live, no hole, no
	repeat."""
	a, b = register(server), register(server)
	room = create_room(server, a)
	wa = join(server, room, a)
	n = 300
	joined = threading.Event()

	def stream():
		for i in range(n):
			wa.send("g%d" % i)
			if i == n // 3:
				joined.wait(10)
			time.sleep(0.002)
	t = threading.Thread(target=stream)
	t.start()
	try:
		wa.wait(lambda: len(wa.messages()) >= n // 4, 10, "the stream")
		wb = WS.connect(server, room, token=b["token"])
		joined.set()
		wb.wait_presence("join", b, 10)
	finally:
		joined.set()
		t.join(30)
	full = wa.wait_messages(n, 20)
	wb.wait_content("g%d" % (n - 1), 20)
	got = [(e["id"], e["content"]) for e in wb.messages()]
	ids = [i for i, _ in got]
	assert len(ids) == len(set(ids)), "duplicates: %r" % [i for i in ids
	    if ids.count(i) > 1][:10]
	assert got, "the joiner got nothing"
	every = [(e["id"], e["content"]) for e in full]
	start = every.index(got[0])
	assert got == every[start:], "the joiner's history + live messages are " \
	    "not a contiguous suffix of the room's: first %r, %d vs %d" % (
	    got[0], len(got), len(every) - start)
	# History then live: the flagged ones come first.
	flags = [e.get("history") is True for e in wb.messages()]
	assert flags == sorted(flags, reverse=True), "history after live events"
	assert any(flags), "no history on join although the room had messages"


# --- close codes -----------------------------------------------------------------

VIOLATIONS = {
	"binary": ([(OP_BINARY, b"\x00\x01", {})], 1003),
	"invalid-utf8": ([(OP_TEXT, b"ab\xff\xfe", {})], 1007),
	"overlong-utf8": ([(OP_TEXT, b"\xc0\xaf", {})], 1007),
	"surrogate-utf8": ([(OP_TEXT, b"\xed\xa0\x80", {})], 1007),
	"truncated-utf8": ([(OP_TEXT, b"ab\xe2\x82", {"fin": False}),
	    (OP_CONT, b"", {})], 1007),
	"too-big": ([(OP_TEXT, b"x" * (MAX_WS + 1), {})], 1009),
	"too-big-fragmented": ([(OP_TEXT, b"x" * 2000, {"fin": False}),
	    (OP_CONT, b"x" * 2000, {"fin": False}),
	    (OP_CONT, b"x" * 2000, {})], 1009),
	"unmasked": ([(OP_TEXT, b"hello", {"masked": False})], 1002),
	"rsv1": ([(OP_TEXT, b"hello", {"rsv": 4})], 1002),
	"rsv3": ([(OP_TEXT, b"hello", {"rsv": 1})], 1002),
	"unknown-opcode": ([(3, b"hello", {})], 1002),
	"unknown-control-opcode": ([(11, b"", {})], 1002),
	"continuation-first": ([(OP_CONT, b"hello", {})], 1002),
	"text-inside-fragments": ([(OP_TEXT, b"he", {"fin": False}),
	    (OP_TEXT, b"llo", {})], 1002),
	"fragmented-ping": ([(OP_PING, b"x", {"fin": False})], 1002),
	"long-ping": ([(OP_PING, b"p" * 126, {})], 1002),
	"close-1-byte": ([(OP_CLOSE, b"\x03", {})], 1002),
	"close-code-1005": ([(OP_CLOSE, struct.pack("!H", 1005), {})], 1002),
}


@pytest.mark.parametrize("name", sorted(VIOLATIONS))
def test_a_bad_frame_closes_with_the_right_code_and_the_room_goes_on(
    server, name):
	frames, code = VIOLATIONS[name]
	a, b = register(server), register(server)
	room = create_room(server, a)
	wa, wb = join(server, room, a), join(server, room, b)
	for op, payload, kw in frames:
		wa.send_raw(encode_frame(op, payload, **kw))
	got = wa.wait_closed(5, "a close after a %s frame" % name)
	assert got == code, "%s: expected close %d, got %r (%r)" % (name, code,
	    got, wa.close_reason)
	assert wa.messages() == [], "the bad frame became a message"
	# The others do not notice, except for a's leave.
	wb.wait_presence("leave", a, 3)
	wb.send("still here")
	wb.wait_content("still here")
	assert not any(e.get("type") == "message" and e["userId"] == a["id"]
	    for e in wb.events), wb.events


@pytest.mark.parametrize("name", ["too-big", "too-big-fragmented",
    "invalid-utf8", "binary"])
def test_the_close_frame_is_never_lost_to_a_reset(server, name):
	"""The close frame must reach the client every time, even when the
	rest of the offending message is still arriving: the server finishes
	the close handshake (or drains its input) instead of closing a socket
	with unread data, which resets the connection and makes the client
	drop the close frame it had already received. 30 tries."""
	frames, code = VIOLATIONS[name]
	a = register(server)
	room = create_room(server, a)
	got = collections.Counter()
	for _ in range(30):
		w = WS.connect(server, room, token=a["token"])
		try:
			for op, payload, kw in frames:
				w.send_raw(encode_frame(op, payload, **kw))
		except OSError:
			pass
		got[w.wait_closed(5)] += 1
		w.sock.close()
	assert got == {code: 30}, "close codes seen in 30 tries (1006: no close " \
	    "frame received): %r" % dict(got)


def test_server_stop_closes_websockets_with_1001(make_server):
	s = make_server()
	a, b = register(s), register(s)
	room = create_room(s, a)
	ws = [join(s, room, a), join(s, room, b), join(s, room, a)]
	s.stop()
	for w in ws:
		assert w.wait_closed(5) == 1001, w.describe()


# --- pings from the server ---------------------------------------------------------

def test_an_idle_connection_is_pinged_and_closed_without_pongs(make_server):
	s = make_server(ws_ping_interval=1)
	a, b = register(s), register(s)
	room = create_room(s, a)
	deaf = WS.connect(s, room, token=a["token"], auto_pong=False,
	    label="no pongs")
	deaf.wait_presence("join", a)
	alive = join(s, room, b, label="answers pongs")
	t0 = time.monotonic()
	deaf.wait(lambda: deaf.pings, 3, "a ping after 1 s idle")
	code = deaf.wait_closed(5, "closing a connection that never answers "
	    "pings")
	took = time.monotonic() - t0
	# 1001 (going away): the server gives the silent peer up, as the
	# README says; not 1006, a cut without a close frame.
	assert code == 1001, "ping timeout: expected close 1001, got %r" % code
	assert took <= 4.5, "closed only after %.1f s" % took
	# The one that answers stays, being pinged meanwhile.
	t1 = time.monotonic()
	alive.wait(lambda: len(alive.pings) >= 2 and time.monotonic() - t1 > 2.5,
	    6, "two pings")
	assert alive.is_open(), alive.describe()
	alive.wait_presence("leave", a, 1)
	alive.send("still alive")
	alive.wait_content("still alive")
	wait_clients(s, b, room, [b], 2)


def test_a_busy_connection_that_answers_pongs_is_never_closed(make_server):
	s = make_server(ws_ping_interval=1)
	a = register(s)
	room = create_room(s, a)
	w = join(s, room, a)
	for i in range(8):
		w.send("tick %d" % i)
		time.sleep(0.4)
	w.wait_messages(8)
	assert w.is_open(), w.describe()


# --- slow readers -------------------------------------------------------------------

def test_a_slow_reader_is_closed_and_the_room_does_not_stall(make_server):
	s = make_server(ws_output_limit=262144)
	users = [register(s) for _ in range(4)]
	slow_user = users[3]
	room = create_room(s, users[0])
	readers = [join(s, room, u) for u in users[:3]]
	slow = WS.connect(s, room, token=slow_user["token"], reader=False,
	    rcvbuf=4096, label="never reads")
	for r in readers:
		r.wait_presence("join", slow_user)
	per, size = 400, 1000
	t0 = time.monotonic()
	# The slow one reads nothing until the server gives it up: its leave
	# is announced when the server queues the close frame (behind the
	# backlog). Then it reads everything at once, within the server's
	# grace, to see that close frame.
	drained = {"bytes": 0, "code": None, "eof": False}

	def drain():
		try:
			readers[0].wait_presence("leave", slow_user, 60)
		except AssertionError:
			return
		buf = bytearray()
		slow.sock.settimeout(10)
		while True:
			try:
				data = slow.sock.recv(1 << 20)
			except ConnectionResetError:
				break
			except socket.timeout:
				return
			if not data:
				break
			buf += data
		drained["eof"] = True
		drained["bytes"] = len(buf)
		while True:
			f = decode_frame(buf)
			if f is None:
				break
			op, payload, used = f[2], f[4], f[5]
			del buf[:used]
			if op == OP_CLOSE and len(payload) >= 2:
				drained["code"] = struct.unpack("!H", payload[:2])[0]
	drainer = threading.Thread(target=drain, daemon=True)
	drainer.start()

	def send_all(i):
		for n in range(per):
			try:
				readers[i].send(("%d-%d " % (i, n)).ljust(size, "x"))
			except OSError:
				return		# closed: the assertions below say why
	threads = [threading.Thread(target=send_all, args=(i,)) for i in range(2)]
	for t in threads:
		t.start()
	for t in threads:
		t.join(60)
	for r in readers:
		r.wait(lambda r=r: len(r.messages()) >= 2 * per or r.eof, 30,
		    "%d messages" % (2 * per))
		assert r.is_open(), "a connection that reads all the time was " \
		    "closed (code %r) after %d of %d messages" % (r.close_code,
		    len(r.messages()), 2 * per)
	took = time.monotonic() - t0
	# The slow one was dropped: the server closes it (1008) and frees it.
	wait_clients(s, users[0], room, users[:3], 5, "the slow reader dropped")
	readers[0].wait_presence("leave", slow_user, 2)
	drainer.join(15)
	got = drained["bytes"]
	assert drained["eof"], "the slow reader's connection is still open"
	assert got < 2 * per * size, "the slow reader got everything (%d bytes): " \
	    "nothing was limited" % got
	assert drained["code"] == 1008, "the slow reader: expected close 1008 " \
	    "after %d bytes, got %r" % (got, drained["code"])
	assert took < 40


# --- account deletion and logout -------------------------------------------------------

def test_deleting_the_account_closes_its_websockets_within_2_s(server):
	a, b = register(server), register(server)
	room = create_room(server, b)
	t2 = login(server, a)
	wa1 = join(server, room, a)
	wa2 = join(server, room, a, token=t2)
	wb = join(server, room, b)
	wa1.send("before deletion")
	wb.wait_content("before deletion")
	assert call(server, "DELETE", "/delete", a).status_code == 204
	t0 = time.monotonic()		# SPEC §3: within 2 s of the deletion
	for w in (wa1, wa2):
		code = w.wait_closed(2.0, "closing the deleted user's socket")
		assert code == CLOSE_POLICY, "closed with %r, not %d (policy)" % (
		    code, CLOSE_POLICY)
	assert time.monotonic() - t0 <= 2.0
	wb.wait_presence("leave", a, 2)
	wait_clients(server, b, room, [b], 2)
	assert wb.is_open()
	# The past message stays, under the old name.
	hist = get_history(server, b, room)
	assert [(e["content"], e["username"]) for e in hist] == [
	    ("before deletion", a["username"])]


def test_deleting_on_one_instance_is_seen_on_another_within_2_s(server,
    make_server):
	# Two instances on one PostgreSQL and one Redis: the deletion, made on
	# the first, refuses the tokens on the second and closes the sockets
	# the second holds.
	needs_own_server()
	other = make_server()
	a, b = register(server), register(server)
	room = create_room(server, b)
	t2 = login(other, a)
	on_other = [join(other, room, a), join(other, room, a, token=t2)]
	wb = join(other, room, b)
	assert call(other, "GET", "/me", t2).status_code == 200
	assert call(server, "DELETE", "/delete", a).status_code == 204
	t0 = time.monotonic()
	for w in on_other:
		assert w.wait_closed(2.0, "closing the deleted user's socket on "
		    "the other instance") == CLOSE_POLICY
	assert time.monotonic() - t0 <= 2.0
	for token in (a["token"], t2):
		for _ in range(4):		# new connections: both workers
			assert call(other, "GET", "/me", token).status_code == 401
	wb.wait_presence("leave", a, 2)
	assert wb.is_open()


def test_logout_closes_the_sockets_of_that_session_only(server):
	a, b = register(server), register(server)
	room = create_room(server, b)
	t2 = login(server, a)
	w1 = join(server, room, a)			# Bearer, token 1
	w2 = WS.connect(server, room, cookie=t2)	# cookie, token 2
	w2.wait_presence("join", a)
	wb = join(server, room, b)
	assert call(server, "POST", "/logout", a).status_code == 202
	t0 = time.monotonic()		# SPEC §2: revoked at once; 2 s as §3
	code = w1.wait_closed(2.0, "closing the logged-out session's socket")
	assert code == CLOSE_POLICY, "closed with %r, not %d (policy)" % (code,
	    CLOSE_POLICY)
	assert time.monotonic() - t0 <= 2.0
	time.sleep(0.5)
	assert w2.is_open(), "the other session's socket was closed too"
	w2.send("other device")
	wb.wait_content("other device")
	assert call(server, "POST", "/logout", t2).status_code == 202
	assert w2.wait_closed(2.0) == CLOSE_POLICY
	wb.wait_presence("leave", a, 2)


# --- what an operator sees and does in Redis ----------------------------------------------

def test_an_operator_broadcast_reaches_everyone(server, redis):
	a, b = register(server), register(server)
	room = create_room(server, a)
	wa, wb = join(server, room, a), join(server, room, b)
	wa.send("before")
	first = wb.wait_content("before")
	harness.redis_cmd(redis.port, "XADD", "gochat:hub:inbox", "*", "op",
	    "broadcast", "room", room, "username", "ops", "content",
	    "Back in 5 minutes")
	for w in (wa, wb):
		e = w.wait_content("Back in 5 minutes", 5)
		check_message_event(e, room, history=False)
		assert e["userId"] == 0 and e["username"] == "ops", e
		assert e["id"] > first["id"], e
	assert get_history(server, a, room)[-1]["content"] == "Back in 5 minutes"


def test_inbox_entries_name_a_socket_only_when_the_hub_answers_it(server,
    redis):
	"""What an operator reads with XRANGE (README, Watching it with
	redis-cli): a §5 message names its room and sender, as an operator's
	announcement does; a register names the worker and the connection."""
	a = register(server)
	room = create_room(server, a)
	w = join(server, room, a)
	text = "entry of %s" % room
	w.send(text)
	w.wait_content(text)

	def entries():
		out = []
		for _, f in harness.redis_cmd(redis.port, "XREVRANGE",
		    "gochat:hub:inbox", "+", "-", "COUNT", "200") or []:
			d = dict(zip(f[0::2], f[1::2]))
			if d.get("room") == room:
				out.append(d)
		return out
	got = {d["op"]: d for d in entries()}
	assert got["broadcast"] == {"op": "broadcast", "room": room,
	    "user": str(a["id"]), "username": a["username"], "content": text}
	assert {"worker", "conn", "user", "username"} <= set(got["register"])


def test_bad_inbox_entries_are_acknowledged_and_skipped(server, redis):
	a = register(server)
	room = create_room(server, a)
	w = join(server, room, a)
	inbox = "gochat:hub:inbox"
	for fields in (["op", "frobnicate", "room", room],
	    ["op", "broadcast", "room", "bad room id", "username", "ops",
	    "content", "x"],
	    ["op", "broadcast", "room", room, "username", "ops"],
	    ["op", "broadcast", "room", room, "username", "ops", "content",
	    b"\xff\xfe"],
	    ["nothing", "useful"]):
		harness.redis_cmd(redis.port, "XADD", inbox, "*", *fields)
	harness.redis_cmd(redis.port, "XADD", inbox, "*", "op", "broadcast",
	    "room", room, "username", "ops", "content", "after the garbage")
	w.wait_content("after the garbage", 5)
	assert [e["content"] for e in w.messages()] == ["after the garbage"]

	def pending():
		r = harness.redis_cmd(redis.port, "XPENDING", inbox, "hub")
		return r[0] if isinstance(r, list) else r
	assert harness.wait_for(lambda: pending() == 0, 3), \
	    "entries still pending in the hub's group: %r" % pending()


def test_the_room_channel_carries_every_event_exactly_as_clients_get_it(
    server, redis):
	a, b = register(server), register(server)
	room = create_room(server, a)
	sub = Subscriber(redis.port, "gochat:room:%s" % room)
	try:
		wa = join(server, room, a)
		wa.send("one")
		wa.send("two ü")
		wa.wait_messages(2)
		wb = join(server, room, b)
		wa.wait_presence("join", b)
		wb.close()
		wa.wait_presence("leave", b)
		seen = sub.wait(5)
		live = [t for t, e in zip(wa.texts, wa.events)
		    if e.get("history") is not True]
		assert len(live) == 5, wa.events
		assert seen[:5] == live, "channel %r\nclient %r" % (seen, live)
		assert [json.loads(p)["type"] for p in seen] == ["join", "message",
		    "message", "join", "leave"]
	finally:
		sub.close()


def test_the_clients_hash_shows_who_is_connected(server, redis):
	a, b = register(server), register(server)
	room = create_room(server, a)
	key = "gochat:room:%s:clients" % room
	wa = join(server, room, a)
	join(server, room, a)
	wb = join(server, room, b)
	want = {str(a["id"]): a["username"], str(b["id"]): b["username"]}
	assert harness.wait_for(lambda: harness.redis_hash(redis.port, key) ==
	    want, 1.5), harness.redis_hash(redis.port, key)
	wb.close()
	del want[str(b["id"])]
	assert harness.wait_for(lambda: harness.redis_hash(redis.port, key) ==
	    want, 1.5), harness.redis_hash(redis.port, key)
	assert wa.is_open()


def test_worker_stats_count_websockets_and_messages(make_server, redis):
	s = make_server()
	assert harness.wait_for(lambda: len(worker_stats(s, redis)) == 2, 3), \
	    "no stats hash for each of the 2 workers: %r" % worker_stats(s, redis)
	fields = ("connections", "websockets", "rooms", "messages_in",
	    "messages_out")
	for h in worker_stats(s, redis).values():
		for f in fields:
			assert f in h and h[f].lstrip("-").isdigit(), (f, h)
	base = {f: stats_sum(s, redis, f) for f in fields}
	users = [register(s) for _ in range(3)]
	room = create_room(s, users[0])
	ws = [join(s, room, u) for u in users]
	for i in range(4):
		ws[0].send("count %d" % i)
	for w in ws:
		w.wait_messages(4)

	def moved():
		now = {f: stats_sum(s, redis, f) for f in fields}
		return now if (now["websockets"] >= base["websockets"] + 3
		    and now["rooms"] >= 1 and now["connections"] >= 3
		    and now["messages_in"] >= base["messages_in"] + 4
		    and now["messages_out"] >= base["messages_out"] + 4) else None
	assert harness.wait_for(moved, 3), "stats did not follow the traffic: " \
	    "before %r, now %r" % (base, {f: stats_sum(s, redis, f)
	    for f in fields})
	for w in ws:
		w.close()
	assert harness.wait_for(lambda: stats_sum(s, redis, "websockets") ==
	    base["websockets"], 3), "websockets still counted after closing: %d" \
	    % stats_sum(s, redis, "websockets")


# --- two instances ------------------------------------------------------------------

def test_a_room_spans_two_instances(server, make_server):
	"""Two instances (of different instance names, as on two hosts), each
	with receivers on both of its workers; one sender on each of the four
	workers sends 100 messages at once: all receivers get all 400 exactly
	once, in one order, ids strictly increasing, each sender's in the order
	sent; getClients agrees on both instances."""
	needs_own_server()
	from test_chat_faults import spread	# /proc: which worker holds one
	other = make_server(instance="other-host")
	owner = register(server)
	room = create_room(server, owner)
	spreads = [spread(h, room) for h in (server, other)]
	conns = [c for sp in spreads for v in sp.values() for c in v]
	users = [u for u, _ in conns]
	ws = [w for _, w in conns]
	last = max(users, key=lambda u: u["id"])
	for w in ws:
		w.wait_presence("join", last)
	for h in (server, other):
		wait_clients(h, owner, room, users, 2, "on both instances")
	# One sender per worker of each instance.
	senders = [v[0][1] for sp in spreads for v in sp.values()]
	per = 100

	def send_all(i):
		for n in range(per):
			senders[i].send("i%d-%d" % (i, n))
	threads = [threading.Thread(target=send_all, args=(i,))
	    for i in range(len(senders))]
	for t in threads:
		t.start()
	for t in threads:
		t.join(30)
	total = len(senders) * per
	seqs = []
	for w in ws:
		msgs = w.wait_messages(total, 20)
		seqs.append([(e["id"], e["content"]) for e in msgs])
		assert len(msgs) == total, "%s got %d of %d messages" % (w.label,
		    len(msgs), total)
	assert_increasing([i for i, _ in seqs[0]], "room order")
	assert len({c for _, c in seqs[0]}) == total, "a message came twice"
	for s in seqs[1:]:
		assert s == seqs[0], "two receivers saw different sequences"
	for i in range(len(senders)):
		mine = [c for _, c in seqs[0] if c.startswith("i%d-" % i)]
		assert mine == ["i%d-%d" % (i, n) for n in range(per)], mine[:5]
	ws[-1].close()
	ws[0].wait_presence("leave", users[-1], 2)
	wait_clients(server, owner, room, users[:-1], 2)


# --- storms -------------------------------------------------------------------------

STORM = 1000


def storm_users(pg, redis, n):
	"""n users in PostgreSQL with sessions set straight in Redis (no scrypt):
	[{"id","username","token"}]."""
	tag = uuid.uuid4().hex[:8]
	rows = pg.psql("INSERT INTO users (username, email, password_hash) "
	    "SELECT 's%s_' || g, 's%s_' || g || '@example.org', '!' "
	    "FROM generate_series(1, %d) g RETURNING id, username" % (tag, tag, n),
	    dbname=pg.dbname)
	users = []
	for line in rows.splitlines():
		if not line.strip():
			continue
		uid, name = line.split("|")
		users.append({"id": int(uid), "username": name,
		    "token": secrets.token_urlsafe(32)})
	assert len(users) == n, rows[:200]
	cmds = b"".join(harness._resp_encode(["SET", "gochat:session:" +
	    hashlib.sha256(u["token"].encode()).hexdigest(), str(u["id"]), "EX",
	    "3600"]) for u in users)
	with socket.create_connection(("127.0.0.1", redis.port), timeout=10) as s:
		s.sendall(cmds)
		f = s.makefile("rb")
		for _ in users:
			assert harness._resp_read(f) == "OK"
	return users


class AsyncWS:
	"""The storm's client: one asyncio connection that parses frames and
	looks for what it is told to."""

	def __init__(self, user):
		self.user = user
		self.reader = self.writer = None
		self.status = None
		self.joined = asyncio.Event()	# its own join event arrived
		self.wanted = None		# content of a message to wait for
		self.got_wanted = asyncio.Event()
		self.close_code = None
		self.error = None
		self.history = 0		# history messages before its join

	async def connect(self, srv, room):
		self.reader, self.writer = await asyncio.open_connection(srv.host,
		    srv.port)
		req, _ = upgrade_request(srv, "/ws/joinRoom/%s" % room,
		    token=self.user["token"])
		self.writer.write(req)
		head = await self.reader.readuntil(b"\r\n\r\n")
		self.status = int(head.split(b" ", 2)[1])
		if self.status != 101:
			raise AssertionError("joinRoom: %d" % self.status)

	async def run(self):
		uid = b'%d' % self.user["id"]
		try:
			while True:
				h = await self.reader.readexactly(2)
				n = h[1] & 0x7F
				if n == 126:
					n = struct.unpack("!H", await self.reader.readexactly(2))[0]
				elif n == 127:
					n = struct.unpack("!Q", await self.reader.readexactly(8))[0]
				payload = await self.reader.readexactly(n) if n else b""
				op = h[0] & 0x0F
				if op == OP_CLOSE:
					self.close_code = struct.unpack("!H", payload[:2])[0] \
					    if len(payload) >= 2 else 1005
					return
				if op == OP_PING:
					self.writer.write(encode_frame(OP_PONG, payload))
					continue
				if op != OP_TEXT:
					continue
				if not self.joined.is_set() and \
				    b'"history":true' in payload:
					self.history += 1
					continue
				if not self.joined.is_set() and b'"join"' in payload and \
				    uid in payload:
					e = json.loads(payload)
					if e["type"] == "join" and e["userId"] == self.user["id"]:
						self.joined.set()
				elif self.wanted and self.wanted.encode() in payload:
					self.got_wanted.set()
		except (asyncio.IncompleteReadError, ConnectionError, OSError) as e:
			self.error = e

	def abort(self):
		if self.writer:
			self.writer.transport.abort()


def raise_fd_limit(n):
	soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
	want = min(hard, max(soft, n))
	if want > soft:
		resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
	if want < n:
		pytest.skip("the fd limit %d is below %d" % (hard, n))


class Ticker(threading.Thread):
	"""Sends "<tag>-<n>" on ws every interval until stopped."""

	def __init__(self, ws, tag, interval=0.02):
		super().__init__(daemon=True)
		self.ws, self.tag, self.interval = ws, tag, interval
		self.sent = []
		self.stopping = threading.Event()
		self.error = None

	def run(self):
		while not self.stopping.is_set():
			c = "%s-%d" % (self.tag, len(self.sent))
			try:
				self.ws.send(c)
			except OSError as e:
				self.error = e
				return
			self.sent.append(c)
			time.sleep(self.interval)

	def stop(self):
		self.stopping.set()
		self.join(10)


def test_a_storm_of_1000_joins_then_1000_vanishing_at_once(server, pg, redis):
	"""In a room with history (50 messages), 1,000 clients (distinct users)
	join at once: every one is connected and gets the 50 messages of
	history, then its own join event; two observers present from the start
	see each of the 1,000 joins exactly once, and a message sent afterwards
	reaches all of them. Then all 1,000 vanish at once without a close
	frame: the observers see each of the 1,000 leaves exactly once within
	5 s, and getClients is back to the observers. Messages sent all along,
	through both storms, reach each observer once each, in order."""
	raise_fd_limit(STORM * 2 + 200)
	watcher, other = register(server), register(server)
	room = create_room(server, watcher)
	users = storm_users(pg, redis, STORM)
	ww = join(server, room, watcher, label="watcher")
	wo = join(server, room, other, label="observer")
	ww.wait_presence("join", other)
	for i in range(50):
		ww.send("before the storm %d" % i)
	for w in (ww, wo):
		w.wait_content("before the storm 49")
	observers = (ww, wo)
	ids = {u["id"] for u in users}
	ticker = Ticker(wo, "during the storm")
	ticker.start()

	def exactly_once(w, kind, timeout, what):
		def counts():
			c = collections.Counter(e["userId"] for e in w.events
			    if e.get("type") == kind and e["userId"] in ids)
			return c if len(c) == len(ids) else None
		c = w.wait(counts, timeout, what)
		twice = [uid for uid, n in c.items() if n != 1]
		assert not twice, "%s: %d users' %s events came more than once, " \
		    "e.g. %r" % (w.label, len(twice), kind, twice[:5])

	async def storm():
		clients = [AsyncWS(u) for u in users]
		t0 = time.monotonic()
		res = await asyncio.gather(*(c.connect(server, room)
		    for c in clients), return_exceptions=True)
		failed = [(c.user["username"], r) for c, r in zip(clients, res)
		    if isinstance(r, BaseException)]
		assert not failed, "%d of %d joins failed, e.g. %r" % (len(failed),
		    STORM, failed[:5])
		tasks = [asyncio.ensure_future(c.run()) for c in clients]
		try:
			await asyncio.wait_for(asyncio.gather(*(c.joined.wait()
			    for c in clients)), 30)
		except asyncio.TimeoutError:
			missing = [c.user["username"] for c in clients
			    if not c.joined.is_set()]
			raise AssertionError("%d clients got no join event of their own "
			    "within 30 s (e.g. %r)" % (len(missing), missing[:5]))
		t_joined = time.monotonic() - t0
		short = [(c.user["username"], c.history) for c in clients
		    if c.history != 50]
		assert not short, "%d joiners did not get 50 messages of history " \
		    "before their join, e.g. %r" % (len(short), short[:5])
		for w in observers:
			exactly_once(w, "join", 15, "the 1000 joins")
		assert harness.wait_for(lambda: len(get_clients(server, watcher,
		    room)) == STORM + 2, 5), len(get_clients(server, watcher, room))
		# Messages still flow, to every one of them.
		content = "after the join storm %s" % uuid.uuid4().hex
		for c in clients:
			c.wanted = content
		ww.send(content)
		try:
			await asyncio.wait_for(asyncio.gather(*(c.got_wanted.wait()
			    for c in clients)), 20)
		except asyncio.TimeoutError:
			n = sum(1 for c in clients if not c.got_wanted.is_set())
			raise AssertionError("%d of %d clients did not get the message "
			    "sent after the storm" % (n, STORM))
		ww.wait_content(content, 5)
		# All vanish at once.
		t_abort = time.monotonic()
		for c in clients:
			c.abort()
		for t in tasks:
			t.cancel()
		await asyncio.gather(*tasks, return_exceptions=True)
		return t_joined, t_abort
	try:
		t_joined, t_abort = asyncio.run(storm())
		for w in observers:
			exactly_once(w, "leave", max(0.5, t_abort + 5 -
			    time.monotonic()), "1000 leaves within 5 s of the sockets "
			    "vanishing")
		assert harness.wait_for(lambda: sorted(get_clients(server, watcher,
		    room)) == sorted([(watcher["id"], watcher["username"]),
		    (other["id"], other["username"])]), 3), \
		    len(get_clients(server, watcher, room))
		time.sleep(0.3)
	finally:
		ticker.stop()
	assert ticker.error is None, ticker.error
	assert len(ticker.sent) >= 20, "too few messages during the storms"
	last = ticker.sent[-1]
	for w in observers:
		w.wait_content(last, 5)
		got = [e["content"] for e in w.messages(history=False)
		    if e["content"].startswith("during the storm")]
		assert got == ticker.sent, "%s: the messages sent during the " \
		    "storms: got %d (%d distinct) of %d, not all once in order" % (
		    w.label, len(got), len(set(got)), len(ticker.sent))
		assert_increasing([e["id"] for e in w.messages(history=False)],
		    w.label)
	ww.send("after the leave storm")
	ww.wait_content("after the leave storm", 3)
	assert ww.is_open()
