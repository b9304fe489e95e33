"""Abuse limits (SPEC.md §8) seen by a client: the chat token bucket per
connection (ws_msg_rate, ws_msg_burst: a §5 client over it is closed with
1008 "too many messages", one within it never is), registrations per
client address per hour (register_max), rooms created per user per hour
(rooms_max_per_hour), each refused with 429 and Retry-After and counted in
Redis under <prefix>limit:<what>:<subject>; getRooms paging (limit, after);
and logins that do not queue behind a storm of registrations in the scrypt
pool.

The suite's servers run with these limits raised (conftest.base_conf); the
servers here set them low, each with a redis_prefix of its own so that no
other test's registrations from 127.0.0.1 count against them. A second
client address is 127.0.0.2 (loopback: every 127/8 address is)."""

import asyncio
import http.client
import json
import threading
import time
import uuid

import pytest
import requests
import websockets

PASSWORD = "correct horse"


def unique(prefix="l"):
	return "%s_%s" % (prefix, uuid.uuid4().hex[:12])


def register(srv, username=None, source=None):
	"""POST /register from 127.0.0.1, or from source (an address to bind):
	(status, headers, body)."""
	username = username or unique("u")
	body = json.dumps({"username": username, "email": "%s@example.org" %
	    username, "password": PASSWORD})
	c = http.client.HTTPConnection(srv.host, srv.port, timeout=30,
	    source_address=(source, 0) if source else None)
	try:
		c.request("POST", "/register", body,
		    {"Content-Type": "application/json"})
		r = c.getresponse()
		return r.status, dict(r.getheaders()), json.loads(r.read() or b"{}")
	finally:
		c.close()


def new_user(srv):
	status, _, body = register(srv)
	assert status == 201, body
	return body


def call(srv, method, path, user, **kw):
	return requests.request(method, srv.base + path, headers={
	    "Authorization": "Bearer " + user["token"]}, timeout=30, **kw)


def create_room(srv, user, room=None):
	return call(srv, "POST", "/ws/createRoom", user,
	    json={"id": room or unique("room")})


def assert_429(status, headers, body):
	"""429 with a Retry-After of whole seconds within the hour window."""
	assert status == 429, (status, body)
	assert 1 <= int(headers["Retry-After"]) <= 3600, headers
	assert isinstance(body.get("error"), str) and body["error"], body
	return int(headers["Retry-After"])


def ws_url(srv, room):
	return "ws://%s:%d/ws/joinRoom/%s" % (srv.host, srv.port, room)


async def ws_join(srv, user, room):
	"""A §5 socket in room, past its join event."""
	ws = await websockets.connect(ws_url(srv, room), extra_headers={
	    "Authorization": "Bearer " + user["token"]}, max_size=None)
	while True:
		ev = json.loads(await asyncio.wait_for(ws.recv(), 10))
		if ev["type"] == "join" and ev["userId"] == user["id"]:
			return ws


# --- chat: a token bucket per connection --------------------------------------

def test_chat_flood_is_closed_with_1008_too_many_messages(make_server):
	"""Sending far faster than ws_msg_rate past the burst closes the
	sender's socket with 1008 "too many messages"; what went over the
	bucket is not accepted (the room's history holds at most the burst plus
	what the rate refilled meanwhile), and the room's other members keep
	their sockets."""
	rate, burst, flood = 2, 5, 200
	srv = make_server(ws_msg_rate=rate, ws_msg_burst=burst)
	flooder, other = new_user(srv), new_user(srv)
	room = unique("room")
	assert create_room(srv, flooder, room).status_code == 200

	async def run():
		watcher = await ws_join(srv, other, room)
		ws = await ws_join(srv, flooder, room)
		started = time.monotonic()
		for i in range(flood):
			try:
				await ws.send("flood %d" % i)
			except websockets.ConnectionClosed:
				break
		try:
			while True:
				await asyncio.wait_for(ws.recv(), 10)
		except websockets.ConnectionClosed:
			pass
		elapsed = time.monotonic() - started
		assert ws.close_code == 1008, (ws.close_code, ws.close_reason)
		assert ws.close_reason == "too many messages"
		# The other member is still there and can still talk.
		await watcher.send("still here")
		while True:
			ev = json.loads(await asyncio.wait_for(watcher.recv(), 10))
			if ev["type"] == "message" and ev["content"] == "still here":
				break
		await watcher.close()
		return elapsed

	elapsed = asyncio.run(run())
	r = call(srv, "GET", "/ws/history/%s?limit=200" % room, other)
	assert r.status_code == 200, r.text
	flooded = [m for m in r.json() if m["content"].startswith("flood ")]
	assert 1 <= len(flooded) <= burst + rate * (elapsed + 1), (
	    len(flooded), elapsed)
	assert len(flooded) < flood


def test_chat_within_the_bucket_is_never_limited(make_server):
	"""A client that bursts up to ws_msg_burst and then keeps under
	ws_msg_rate sends every message; all of them come back and the socket
	stays open."""
	rate, burst = 20, 8
	srv = make_server(ws_msg_rate=rate, ws_msg_burst=burst)
	user = new_user(srv)
	room = unique("room")
	assert create_room(srv, user, room).status_code == 200
	sent = ["m%d" % i for i in range(burst + 30)]

	async def run():
		ws = await ws_join(srv, user, room)
		for i, text in enumerate(sent):
			await ws.send(text)
			if i >= burst - 1:
				await asyncio.sleep(2.0 / rate)	# half the rate
		got = []
		while len(got) < len(sent):
			ev = json.loads(await asyncio.wait_for(ws.recv(), 10))
			if ev["type"] == "message":
				got.append(ev["content"])
		assert ws.open, (ws.close_code, ws.close_reason)
		await ws.close()
		return got

	assert asyncio.run(run()) == sent


# --- registrations per address ------------------------------------------------

def test_registrations_per_address_are_limited_with_429(make_server, redis):
	"""register_max registrations per client address per hour, whichever
	worker serves them; the next is 429 with Retry-After, counted in Redis
	as <prefix>limit:register:<address> with the window as its TTL. A 409
	(a taken name) does not count; another address is not limited; logins
	are not limited."""
	prefix = unique("lim") + ":"
	srv = make_server(register_max=3, redis_prefix=prefix)
	first = new_user(srv)
	status, _, body = register(srv, first["username"])
	assert status == 409, body
	new_user(srv)
	new_user(srv)
	retry = assert_429(*register(srv))
	assert "registrations" in register(srv)[2]["error"]
	key = prefix + "limit:register:127.0.0.1"
	assert redis.cmd("GET", key) in (b"3", "3")
	assert retry - 1 <= int(redis.cmd("TTL", key)) <= 3600
	# Another client address has its own budget.
	status, _, body = register(srv, source="127.0.0.2")
	assert status == 201, body
	# The limited address can still log in.
	r = requests.post(srv.base + "/login", json={"username":
	    first["username"], "password": PASSWORD}, timeout=30)
	assert r.status_code == 200, r.text


def test_parallel_registrations_cannot_pass_the_limit_together(make_server):
	"""The counter is checked and counted in one step: 12 registrations at
	once against register_max = 4 make exactly 4 accounts."""
	srv = make_server(register_max=4, redis_prefix=unique("lim") + ":")
	results = []

	def one():
		results.append(register(srv)[0])
	threads = [threading.Thread(target=one) for _ in range(12)]
	for t in threads:
		t.start()
	for t in threads:
		t.join(60)
	assert sorted(results) == [201] * 4 + [429] * 8, results


def test_a_login_is_not_queued_behind_a_registration_storm(make_server):
	"""With many registrations in flight on one worker (one scrypt thread,
	register_max high), a login is answered before the registrations'
	backlog drains: checks are served before hashes."""
	n = 24
	srv = make_server(workers=1, scrypt_threads=1)
	user = new_user(srv)
	done = []		# ("reg", status) or ("login", status), in order
	lock = threading.Lock()

	def reg():
		status = register(srv)[0]
		with lock:
			done.append(("reg", status))
	threads = [threading.Thread(target=reg) for _ in range(n)]
	for t in threads:
		t.start()
	# Wait until the storm is being hashed (the first sign-up is done).
	deadline = time.monotonic() + 60
	while not done and time.monotonic() < deadline:
		time.sleep(0.01)
	assert done, "no registration finished within 60 s"
	r = requests.post(srv.base + "/login", json={"username":
	    user["username"], "password": PASSWORD}, timeout=60)
	with lock:
		done.append(("login", r.status_code))
	for t in threads:
		t.join(120)
	assert r.status_code == 200, r.text
	assert [s for what, s in done if what == "reg"] == [201] * n, done
	after = len(done) - 1 - done.index(("login", 200))
	# FIFO would put the login behind every queued sign-up (after == 0).
	assert after >= n // 2, "the login waited for %d of %d sign-ups" % (
	    n - after, n)


# --- rooms per user -----------------------------------------------------------

def test_room_creation_per_user_is_limited_with_429(make_server, redis):
	"""rooms_max_per_hour rooms per user; the next is 429 with Retry-After
	(counted as <prefix>limit:rooms:<user id>); a taken id (409) does not
	count; another user is not limited."""
	prefix = unique("lim") + ":"
	srv = make_server(rooms_max_per_hour=2, redis_prefix=prefix)
	user, other = new_user(srv), new_user(srv)
	taken = unique("room")
	assert create_room(srv, other, taken).status_code == 200
	assert create_room(srv, user, taken).status_code == 409
	assert create_room(srv, user).status_code == 200
	assert create_room(srv, user).status_code == 200
	r = create_room(srv, user)
	assert_429(r.status_code, r.headers, r.json())
	assert "rooms" in r.json()["error"]
	assert redis.cmd("GET", prefix + "limit:rooms:%d" % user["id"]) in (
	    b"2", "2")
	assert create_room(srv, other).status_code == 200


# --- getRooms paging ----------------------------------------------------------

def rooms_page(srv, user, **params):
	r = call(srv, "GET", "/ws/getRooms", user, params=params)
	assert r.status_code == 200, r.text
	page = r.json()
	for room in page:
		assert set(room) >= {"id", "name", "clients"}, room
	return page


def test_get_rooms_pages_with_limit_and_after(server, pg):
	"""limit (default 100, above 200 clamped to 200) and after=<roomId>
	walk every room once, in creation order, while rooms are added."""
	user = new_user(server)
	tag = unique("pg")
	pg.psql("INSERT INTO rooms (id, name) SELECT '%s_' || g, 'paged' "
	    "FROM generate_series(1, 250) g ORDER BY g" % tag, dbname="gochat")
	mine = ["%s_%d" % (tag, g) for g in range(1, 251)]
	seen, after, pages = [], None, 0
	while True:
		params = {"after": after} if after else {}
		page = rooms_page(server, user, **params)
		assert len(page) <= 100
		if not page:
			break
		seen += [room["id"] for room in page]
		after = page[-1]["id"]
		pages += 1
		if pages == 1:	# a room added while paging comes last
			assert create_room(server, user, tag + "_late") \
			    .status_code == 200
			mine.append(tag + "_late")
		if len(page) < 100:
			break
	assert len(seen) == len(set(seen)), "a room came twice"
	assert [r for r in seen if r.startswith(tag + "_")] == mine
	assert len(rooms_page(server, user)) == min(100, len(seen))
	# Clamped to 200, however many digits.
	assert len(rooms_page(server, user, limit="1000")) == 200
	assert len(rooms_page(server, user, limit="9" * 40)) == 200
	assert [r["id"] for r in rooms_page(server, user, after=mine[0],
	    limit=2)] == mine[1:3]
	assert rooms_page(server, user, after=mine[-1]) == []


@pytest.mark.parametrize("query", ["limit=0", "limit=-1", "limit=abc",
    "limit=", "after=", "after=no%20such%20id!", "after=" + "x" * 65,
    "after=%ZZ"])
def test_get_rooms_bad_paging_is_400(server, query):
	user = new_user(server)
	r = call(server, "GET", "/ws/getRooms?" + query, user)
	assert r.status_code == 400, r.text
	assert r.json()["error"]


def test_get_rooms_after_an_unknown_room_is_400(server):
	"""An after that names no room (never made, or deleted since) is 400,
	not an empty page that would look like the end of the list."""
	user = new_user(server)
	r = call(server, "GET", "/ws/getRooms?after=" + unique("gone"), user)
	assert r.status_code == 400, r.text
	assert "after" in r.json()["error"]
