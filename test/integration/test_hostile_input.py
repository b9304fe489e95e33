"""Safe to expose (SPEC.md §8), the input side: cookies cannot be used
cross-site, and nothing a client sends is silently cut.

- A request authenticated by the auth_token cookie with POST, PUT, PATCH or
  DELETE and an Origin that is neither the server's own (its host:port is
  the Host header) nor in allowed_origins is refused with 403 before it does
  anything. A Bearer token, a request without Origin (not a browser) and the
  safe methods are not affected.
- Login identifiers over 254 bytes and passwords over 1024 bytes are 400
  (a cut copy once matched the account of its first 1024 bytes, or ended
  mid-character and failed in PostgreSQL); emails with spaces or control
  characters are 400; a header folded over two lines (obs-fold) is 400.

The module's server is the shared one of conftest.py; failed-login counters
are removed around every test so the 401s here limit nobody."""

import itertools
import json
import uuid

import pytest
import requests

import harness
from conftest import EXTERNAL

EVIL = "https://evil.example"
PASSWORD = "correct horse"

_seq = itertools.count(1)


@pytest.fixture(autouse=True)
def no_login_counters(request):
	if EXTERNAL:
		yield
		return
	redis = request.getfixturevalue("redis")
	for k in harness.redis_keys(redis.port, "gochat:login:*"):
		redis.cmd("DEL", k)
	yield
	for k in harness.redis_keys(redis.port, "gochat:login:*"):
		redis.cmd("DEL", k)


def unique(prefix="h"):
	return "%s%d_%s" % (prefix, next(_seq), uuid.uuid4().hex[:10])


def register(srv, username=None, email=None, password=PASSWORD):
	username = username or unique()
	email = email or "%s@example.org" % username.lower()
	r = requests.post(srv.base + "/register", json={"username": username,
	    "email": email, "password": password}, timeout=10)
	assert r.status_code == 201, r.text
	return r.json()


def own_origin(srv):
	return "http://%s:%d" % (srv.host, srv.port)


def send(srv, method, path, user=None, cookie=None, origin=None,
    headers=None, **kw):
	"""One request with the user's token as a Bearer header (user) or as
	the auth_token cookie (cookie), and an Origin when given."""
	h = dict(headers or {})
	if user is not None:
		h["Authorization"] = "Bearer " + user["token"]
	if cookie is not None:
		h["Cookie"] = "auth_token=" + cookie["token"]
	if origin is not None:
		h["Origin"] = origin
	return requests.request(method, srv.base + path, headers=h, timeout=10,
	    **kw)


def assert_error(r, status):
	assert r.status_code == status, (r.status_code, r.text)
	assert r.headers["Content-Type"].startswith("application/json")
	assert isinstance(r.json().get("error"), str) and r.json()["error"]


def post_count(srv, user):
	r = send(srv, "GET", "/me", user=user)
	assert r.status_code == 200, r.text
	return r.json()["posts"]


# --- cross-site requests -----------------------------------------------------

def test_cross_site_cookie_post_of_a_text_plain_post_is_403(server):
	"""The issue's reproduction: a form-like text/plain POST /posts with
	the cookie from another site made a post (201)."""
	u = register(server)
	r = send(server, "POST", "/posts", cookie=u, origin=EVIL,
	    headers={"Content-Type": "text/plain"},
	    data=json.dumps({"content": "posted by evil.example"}))
	assert_error(r, 403)
	assert "origin" in r.json()["error"].lower()
	assert post_count(server, u) == 0


# Every unsafe route a cookie could drive, and how to see it did nothing.
def _unsafe_requests(srv, u, other, room):
	r = send(srv, "POST", "/posts", user=u, json={"content": "mine"})
	assert r.status_code == 201, r.text
	post = r.json()["id"]
	return [
	    ("POST", "/logout", {}),
	    ("DELETE", "/delete", {}),
	    ("POST", "/follow?toFollowId=%d" % other["id"], {}),
	    ("POST", "/v1/unfollow?toUnfollowId=%d" % other["id"], {}),
	    ("POST", "/posts", {"json": {"content": "cross-site"}}),
	    ("DELETE", "/posts/%d" % post, {}),
	    ("POST", "/ws/createRoom", {"json": {"id": room}}),
	]


@pytest.mark.parametrize("origin", [EVIL, "null",
    "http://127.0.0.1:1", "http://127.0.0.1.evil.example"])
def test_every_unsafe_route_refuses_a_foreign_origin_with_the_cookie(server,
    origin):
	u, other = register(server), register(server)
	room = unique("r")
	r = send(server, "POST", "/follow?toFollowId=%d" % other["id"], user=u)
	assert r.status_code == 200, r.text
	for method, path, kw in _unsafe_requests(server, u, other, room):
		r = send(server, method, path, cookie=u, origin=origin, **kw)
		assert_error(r, 403)
	# Nothing happened: the session and the account are there, the follow
	# is still there, one post (made with the Bearer token), no room.
	me = send(server, "GET", "/me", cookie=u)
	assert me.status_code == 200, me.text
	assert me.json()["following"] == 1 and me.json()["posts"] == 1
	r = send(server, "GET", "/ws/history/" + room, user=u)
	assert_error(r, 404)


def test_two_origin_headers_are_foreign_whichever_comes_first(server, raw):
	"""Browsers send one Origin: a request with two (the own one first,
	then a foreign one) is not let through on the first."""
	u = register(server)
	body = json.dumps({"content": "two origins"}).encode()
	c = raw(server)
	c.send(b"POST /posts HTTP/1.1\r\nHost: %s:%d\r\n"
	    b"Cookie: auth_token=%s\r\nOrigin: %s\r\nOrigin: %s\r\n"
	    b"Content-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s" % (
	    server.host.encode(), server.port, u["token"].encode(),
	    own_origin(server).encode(), EVIL.encode(), len(body), body))
	r = c.read_response()
	assert r.status == 403, r
	assert post_count(server, u) == 0


def test_a_bearer_token_is_not_affected_by_origin(server):
	u, other = register(server), register(server)
	r = send(server, "POST", "/posts", user=u, origin=EVIL,
	    json={"content": "from a page that holds the token"})
	assert r.status_code == 201, r.text
	r = send(server, "POST", "/follow?toFollowId=%d" % other["id"], user=u,
	    origin=EVIL)
	assert r.status_code == 200, r.text
	# A Bearer header decides even when a cookie comes too.
	r = send(server, "DELETE", "/posts/%d" % 0, user=u, cookie=u,
	    origin=EVIL)
	assert_error(r, 400)


def test_same_origin_and_no_origin_cookie_requests_are_accepted(server):
	"""The web client's requests: same-origin fetches with the cookie
	(browsers send Origin on them); and clients that send no Origin."""
	u = register(server)
	for origin in (own_origin(server), own_origin(server) + "/",
	    "https://%s:%d" % (server.host, server.port), None):
		r = send(server, "POST", "/posts", cookie=u, origin=origin,
		    json={"content": "hello from %s" % origin})
		assert r.status_code == 201, (origin, r.text)
	assert post_count(server, u) == 4
	r = send(server, "POST", "/logout", cookie=u, origin=own_origin(server))
	assert r.status_code == 202, r.text


def test_safe_methods_with_the_cookie_are_not_affected(server):
	u = register(server)
	for path in ("/me", "/feed", "/ws/getRooms"):
		r = send(server, "GET", path, cookie=u, origin=EVIL)
		assert r.status_code == 200, (path, r.text)


def test_no_valid_credentials_is_still_401(server):
	r = send(server, "POST", "/posts", origin=EVIL,
	    json={"content": "anonymous"})
	assert_error(r, 401)


def test_allowed_origins_may_use_the_cookie(make_server):
	s = make_server(allowed_origins="https://app.example, "
	    "http://localhost:3000")
	u = register(s)
	for origin in ("https://app.example", "http://localhost:3000"):
		r = send(s, "POST", "/posts", cookie=u, origin=origin,
		    json={"content": "from " + origin})
		assert r.status_code == 201, (origin, r.text)
	for origin in ("http://app.example", "https://app.example.evil.example",
	    "http://localhost:3001"):
		r = send(s, "POST", "/posts", cookie=u, origin=origin,
		    json={"content": "from " + origin})
		assert_error(r, 403)


# --- no silent truncation ----------------------------------------------------

@pytest.mark.parametrize("field", ["email", "username"])
def test_a_300_byte_login_identifier_is_400_not_500(server, field):
	"""Cut at 254 bytes, a run of two-byte characters ended mid-character:
	PostgreSQL refused it (22021), a 500 and a log line per request."""
	before = server.log_text()
	ident = "é" * 150		# 300 bytes
	if field == "email":
		ident = "é" * 144 + "@example.org"
	r = requests.post(server.base + "/login", json={field: ident,
	    "password": PASSWORD}, timeout=10)
	assert_error(r, 400)
	assert field in r.json()["error"]
	after = server.log_text()[len(before):]
	assert "22021" not in after and "login lookup" not in after, after


def test_identifier_limit_is_254_bytes(server):
	r = requests.post(server.base + "/login", json={"username": "a" * 255,
	    "password": PASSWORD}, timeout=10)
	assert_error(r, 400)
	r = requests.post(server.base + "/login", json={"email": "a" * 242 +
	    "@example.org", "password": PASSWORD}, timeout=10)
	assert len("a" * 242 + "@example.org") == 254
	assert_error(r, 401)


def test_a_password_over_1024_bytes_does_not_log_in_as_its_first_1024(server):
	pw = "p" * 1024
	u = register(server, password=pw)
	r = requests.post(server.base + "/login", json={"username":
	    u["username"], "password": pw + "JUNK"}, timeout=10)
	assert_error(r, 400)
	assert "password" in r.json()["error"]
	assert "token" not in r.json() and "Set-Cookie" not in r.headers
	r = requests.post(server.base + "/login", json={"username":
	    u["username"], "password": pw}, timeout=10)
	assert r.status_code == 200, r.text


def test_a_password_over_1024_bytes_cannot_register(server):
	name = unique()
	r = requests.post(server.base + "/register", json={"username": name,
	    "email": name + "@example.org", "password": "p" * 1025},
	    timeout=10)
	assert_error(r, 400)


@pytest.mark.parametrize("email", ["a@b.example\r\nX-Injected:1",
    "a@b.example\n", "a b@example.org", "a@example.org ", "\ta@example.org",
    "a@exa\x00mple.org", "a@exa\x7fmple.org", "a@exa\u0085mple.org",
    "a@exa\x1bmple.org", "a\u00a0@example.org", "a\u2028@example.org",
    "a\u2029@example.org", "a\u3000@example.org", "a\u1680@example.org",
    "a\u200b@example.org", "\ufeffa@example.org", "a\u202e@example.org"])
def test_an_email_with_spaces_or_control_characters_is_400(server, email):
	name = unique()
	r = requests.post(server.base + "/register", json={"username": name,
	    "email": email, "password": PASSWORD}, timeout=10)
	assert_error(r, 400)
	assert "email" in r.json()["error"]


def test_an_email_with_non_ascii_letters_is_still_accepted(server):
	name = unique()
	register(server, username=name, email="%s@exämple.org" % name)


@pytest.mark.parametrize("fold", [b"X-Note: a\r\n b", b"X-Note: a\r\n\tb",
    b"X-Note:\r\n b", b"X-Note : a", b"X-Note\t: a", b"X Note: a"])
def test_a_folded_header_is_400(server, raw, fold):
	"""obs-fold, and white space in a field name or before its colon
	(RFC 9112 5.1: "Content-Length : 5" means different things to
	different proxies), are 400."""
	c = raw(server)
	c.send(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n" + fold +
	    b"\r\n\r\n")
	r = c.read_response()
	assert r.status == 400, r
	assert r.json()["error"]


def test_a_folded_authorization_header_is_400_not_a_login(server, raw):
	"""Folded, "Bearer" and the token were joined into one value."""
	u = register(server)
	c = raw(server)
	c.send(("GET /me HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer"
	    "\r\n %s\r\n\r\n" % u["token"]).encode())
	r = c.read_response()
	assert r.status == 400, r
