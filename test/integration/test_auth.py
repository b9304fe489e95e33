"""Authentication (SPEC.md §2, §1, §7) seen by a client: registration and
its validation, login by email or username, logout, sessions as opaque
tokens in Redis (a Bearer header or the auth_token cookie), revocation seen
at once by every worker and by a second instance, rate limiting of failed
logins, and password hashing that never stalls the event loop. No response
may ever carry a password or a password hash: every request made here
checks that.

The module runs its own server (session_ttl = 3600 so that the cookie and
the Redis TTL visibly follow the configuration; a high login_max_failures
so that the wrong-password tests do not trip the limiter, which the
rate-limit tests check on servers of their own). Failed-login counters are
removed from the shared Redis around every test, so no test, here or in
another module, sees this module's failures."""

import base64
import hashlib
import http.client
import json
import re
import statistics
import threading
import time
import uuid

import pytest

import harness
from conftest import EXTERNAL, _stop, needs_own_server, start_server

SESSION_TTL = 3600
TOKEN_RE = re.compile(r"[A-Za-z0-9_-]{22,}")
HASH_MARK = "$s1$"		# libscrypt's MCF prefix
FIELDS = ("username", "email", "password")

# Every valid password used here: no response may contain one of them.
PASSWORDS = set()


@pytest.fixture(scope="module")
def srv(request, workdir):
	"""The module's server (or GOCHAT_TEST_URL's)."""
	if EXTERNAL:
		yield harness.ExternalServer(EXTERNAL)
		return
	pg = request.getfixturevalue("pg")
	redis = request.getfixturevalue("redis")
	s = start_server(workdir, pg, redis, "test_auth",
	    session_ttl=SESSION_TTL, login_max_failures=100000)
	yield s
	_stop([s])


@pytest.fixture(autouse=True)
def no_login_counters(request):
	"""Failed-login counters from earlier tests must not limit this one,
	and this test's must not limit later ones."""
	if EXTERNAL:
		yield
		return
	redis = request.getfixturevalue("redis")
	clear_login_counters(redis)
	yield
	clear_login_counters(redis)


def clear_login_counters(redis):
	for k in harness.redis_keys(redis.port, "gochat:login:*"):
		redis.cmd("DEL", k)


# --- a small client ----------------------------------------------------------

class Resp:
	def __init__(self, status, headers, body, elapsed):
		self.status = status
		self.headers = headers		# [(name, value)] as received
		self.body = body
		self.elapsed = elapsed

	def header(self, name):
		for k, v in self.headers:
			if k.lower() == name.lower():
				return v
		return None

	def all(self, name):
		return [v for k, v in self.headers if k.lower() == name.lower()]

	def json(self):
		return json.loads(self.body.decode("utf-8"))

	def __repr__(self):
		return "<%d %r>" % (self.status, self.body[:300])


def check_no_secrets(r, what):
	text = r.body.decode("utf-8", "replace") + "\n" + "\n".join(
	    "%s: %s" % kv for kv in r.headers)
	assert HASH_MARK not in text, "%s: a password hash in the response: %r" % (
	    what, text[:500])
	for p in PASSWORDS:
		assert p not in text, "%s: a password in the response: %r" % (
		    what, text[:500])


def call(srv, method, path, body=None, token=None, via="bearer",
    headers=None, source=None, ctype=True, timeout=10):
	"""One request on a new connection (so that successive calls spread
	over the workers). body: a dict/list (sent as JSON) or bytes. token is
	sent as a Bearer header or as the auth_token cookie (via). source: the
	client address to connect from (127.0.0.x)."""
	hdrs = {"Connection": "close"}
	if isinstance(body, (dict, list)):
		body = json.dumps(body).encode()
	if body is not None and ctype:
		hdrs["Content-Type"] = "application/json"
	if token is not None:
		if via == "bearer":
			hdrs["Authorization"] = "Bearer " + token
		else:
			hdrs["Cookie"] = "auth_token=" + token
	hdrs.update(headers or {})
	c = http.client.HTTPConnection(srv.host, srv.port, timeout=timeout,
	    source_address=(source, 0) if source else None)
	t0 = time.monotonic()
	try:
		if method == "POST" and body is None:
			body = b""
		c.request(method, path, body=body, headers=hdrs)
		res = c.getresponse()
		data = res.read()
		elapsed = time.monotonic() - t0
		r = Resp(res.status, res.getheaders(), data, elapsed)
	finally:
		c.close()
	check_no_secrets(r, "%s %s" % (method, path))
	if r.status != 204:
		assert (r.header("Content-Type") or "").startswith(
		    "application/json"), (method, path, r.headers)
	return r


def assert_error(r, status, field=None, others=FIELDS):
	"""status with {"error": "..."}; with field, the message names it (and
	none of the other fields, which would leave the user guessing)."""
	assert r.status == status, "expected %d, got %r" % (status, r)
	body = r.json()
	assert isinstance(body, dict) and isinstance(body.get("error"), str) \
	    and body["error"].strip(), body
	if field:
		msg = body["error"].lower()
		assert field in msg, "the error does not name %s: %r" % (field, body)
		for o in others:
			if o != field:
				assert o not in msg, "the error names %s, not only %s: %r" % (
				    o, field, body)
	return body["error"]


def uniq():
	return uuid.uuid4().hex[:12]


def identity():
	"""A fresh (username, email, password)."""
	u = "u_" + uniq()
	e = "e.%s@example.org" % uniq()
	p = "pw-" + uuid.uuid4().hex
	PASSWORDS.add(p)
	return u, e, p


def register(srv, prefix="", ident=None):
	"""Register a new user: (response JSON, password)."""
	u, e, p = ident or identity()
	r = call(srv, "POST", prefix + "/register",
	    {"username": u, "email": e, "password": p})
	assert r.status == 201, r
	return r.json(), p


def login(srv, password, prefix="", source=None, timeout=10, **who):
	return call(srv, "POST", prefix + "/login", dict(who, password=password),
	    source=source, timeout=timeout)


def cookie_of(r):
	"""(value, {attribute lower-case: value}) of the auth_token Set-Cookie."""
	found = [c for c in r.all("Set-Cookie") if c.strip().startswith(
	    "auth_token=")]
	assert len(found) == 1, "Set-Cookie: %r" % r.all("Set-Cookie")
	parts = [x.strip() for x in found[0].split(";")]
	value = parts[0].partition("=")[2]
	attrs = {}
	for a in parts[1:]:
		k, _, v = a.partition("=")
		attrs[k.strip().lower()] = v.strip()
	return value, attrs


def assert_session_response(srv, r, status, user=None):
	"""The register/login answer of srv: {"id","username","email","token"}
	and the session cookie carrying the same token."""
	assert r.status == status, r
	body = r.json()
	assert sorted(body) == ["email", "id", "token", "username"], body
	assert isinstance(body["id"], int) and body["id"] > 0, body
	if user:
		assert (body["id"], body["username"], body["email"]) == (
		    user["id"], user["username"], user["email"]), (body, user)
	tok = body["token"]
	assert isinstance(tok, str) and TOKEN_RE.fullmatch(tok), \
	    "token not URL-safe or shorter than 128 bits: %r" % tok
	value, attrs = cookie_of(r)
	assert value == tok
	assert "httponly" in attrs, attrs
	assert attrs.get("samesite", "").lower() == "lax", attrs
	assert attrs.get("path") == "/", attrs
	if not EXTERNAL:
		assert attrs.get("max-age") == str(srv.conf.get("session_ttl",
		    86400)), attrs
	return body


def me(srv, token, via="bearer", keep=True, headers=None):
	"""The user id the token authenticates as, or None (401). Uses GET /me;
	while /me does not exist yet (404), POST /logout answers whether the
	token is valid, but revokes it: allowed only when keep is false."""
	r = call(srv, "GET", "/me", token=token, via=via, headers=headers)
	if r.status == 404:
		if keep:
			pytest.skip("GET /me answers 404 (not implemented yet): no "
			    "non-destructive way to check a token")
		r = call(srv, "POST", "/logout", token=token, via=via,
		    headers=headers)
		if r.status == 202:
			return -1	# valid, user unknown
		assert_error(r, 401)
		return None
	if r.status == 401:
		assert_error(r, 401)
		return None
	assert r.status == 200, r
	return r.json()["id"]


def refused_everywhere(srv, token, tries=6):
	"""The token is refused on several new connections, which land on
	every worker."""
	for i in range(tries):
		got = me(srv, token, keep=False)
		assert got is None, "try %d: the token still authenticates" % i


# --- registration ------------------------------------------------------------

@pytest.mark.parametrize("prefix,ctype", [("", True), ("/v1", True),
    ("", False)], ids=["plain", "v1", "no-content-type"])
def test_register_returns_the_user_a_token_and_the_cookie(srv, prefix, ctype):
	u, e, p = identity()
	r = call(srv, "POST", prefix + "/register",
	    {"username": u, "email": e, "password": p}, ctype=ctype)
	body = assert_session_response(srv, r, 201)
	assert (body["username"], body["email"]) == (u, e)
	assert me(srv, body["token"], keep=False) in (body["id"], -1)


def test_register_then_login_gives_a_new_token_each_time(srv):
	user, p = register(srv)
	tokens = {user["token"]}
	for _ in range(3):
		r = login(srv, p, email=user["email"])
		body = assert_session_response(srv, r, 200, user)
		tokens.add(body["token"])
	assert len(tokens) == 4, "a token was handed out twice"


BAD_FIELDS = [
	("username", ""),
	("username", "x" * 33),
	("username", "has space"),
	("username", "semi;colon"),
	("username", "slash/"),
	("username", "at@sign"),
	("username", "\u00fcmlaut"),
	("username", "tab\t"),
	("username", 42),
	("username", None),
	("username", ["list"]),
	("email", ""),
	("email", "no-at-sign.example.org"),
	("email", "two@@example.org"),
	("email", "a@b@example.org"),
	("email", "@example.org"),
	("email", "nobody@"),
	("email", "a" * 243 + "@example.org"),		# 255 bytes
	("email", "\u00e9" * 122 + "@example.org"),	# 134 chars, 256 bytes
	("email", 42),
	("email", {"x": 1}),
	("password", ""),
	("password", "7chars!"),
	("password", "x" * 1025),
	("password", "\u00e9" * 513),			# 513 chars, 1026 bytes
	("password", 12345678),
	("password", None),
]


@pytest.mark.parametrize("field,value", BAD_FIELDS,
    ids=["%s-%d" % (f, i) for i, (f, _) in enumerate(BAD_FIELDS)])
def test_register_rejects_an_invalid_field_naming_it(srv, request, field,
    value):
	u, e, p = identity()
	body = {"username": u, "email": e, "password": p, field: value}
	assert_error(call(srv, "POST", "/register", body), 400, field)
	if not EXTERNAL:
		pg = request.getfixturevalue("pg")
		assert pg.psql("SELECT count(*) FROM users WHERE lower(username) = "
		    "lower('%s') OR lower(email) = lower('%s')" % (u, e),
		    dbname=pg.dbname) == "0", "a rejected registration left a row"


@pytest.mark.parametrize("field", FIELDS)
def test_register_without_a_field_is_400_naming_it(srv, field):
	u, e, p = identity()
	body = {"username": u, "email": e, "password": p}
	del body[field]
	assert_error(call(srv, "POST", "/register", body), 400, field)


MALFORMED = {
	"truncated": b'{"username": "x", "email": ',
	"array": b'[]',
	"string": b'"just a string"',
	"number": b'42',
	"null": b'null',
	"empty": b'',
	"not_json": b'username=x&email=y&password=z',
	"trailing_garbage": None,	# a valid object followed by junk
	"invalid_utf8": None,
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_register_with_a_malformed_body_is_400(srv, name):
	u, e, p = identity()
	data = MALFORMED[name]
	if name == "trailing_garbage":
		data = json.dumps({"username": u, "email": e, "password": p}).encode() \
		    + b" }{"
	elif name == "invalid_utf8":
		data = json.dumps({"username": u, "email": e,
		    "password": p}).encode().replace(b"pw-", b"pw\xff\xfe")
	assert_error(call(srv, "POST", "/register", data), 400)
	# And nothing was created: the same identity registers fine now.
	register(srv, ident=(u, e, p))


def test_register_accepts_the_boundaries_and_the_password_logs_in(srv):
	cases = []
	tail = "@example.org"
	# 32 characters, every kind allowed; a 254-byte email; 1024 bytes.
	cases.append(("A-z_." + uniq() + "x" * 15, uniq() + "a" * (
	    254 - 12 - len(tail)) + tail, "p" * 1000 + uuid.uuid4().hex[:24]))
	# An 8-byte password (of 4 characters: the limits are in bytes).
	cases.append(("u." + uniq(), "b@" + uniq(), "\u00e9\u00e8\u00ea\u00eb"))
	# A 1024-byte password of 512 characters.
	cases.append(("u-" + uniq(), uniq() + tail, "\u00e9" * 511 + "xy"))
	for u, e, p in cases:
		assert len(u) <= 32 and len(e.encode()) <= 254, (u, e)
		PASSWORDS.add(p)
		user, _ = register(srv, ident=(u, e, p))
		assert (user["username"], user["email"]) == (u, e)
		assert_session_response(srv, login(srv, p, username=u), 200, user)
	assert len(cases[0][0]) == 32 and len(cases[0][1].encode()) == 254
	assert len(cases[0][2]) == 1024 and len(cases[1][2].encode()) == 8
	assert len(cases[2][2].encode()) == 1024


def test_register_accepts_a_one_character_username(srv):
	# A single character may be taken by another test: try a few.
	for ch in "qzQZ0123456789_.-":
		u, e, p = identity()
		r = call(srv, "POST", "/register", {"username": ch, "email": e,
		    "password": p})
		if r.status == 409:
			continue
		assert_session_response(srv, r, 201)
		assert r.json()["username"] == ch
		return
	pytest.fail("every one-character username is taken")


def test_duplicate_username_or_email_is_409_naming_which(srv):
	user, p = register(srv)
	_, e2, p2 = identity()
	r = call(srv, "POST", "/register", {"username": user["username"].upper(),
	    "email": e2, "password": p2})
	assert_error(r, 409, "username", others=("email",))
	u3, _, p3 = identity()
	r = call(srv, "POST", "/v1/register", {"username": u3,
	    "email": user["email"].upper(), "password": p3})
	assert_error(r, 409, "email", others=("username",))
	# Neither attempt created a row: the other half of each is still free.
	register(srv, ident=(u3, e2, p2))


def test_a_failed_registration_leaves_no_row(srv, request):
	user, _ = register(srv)
	u2, e2, p2 = identity()
	assert call(srv, "POST", "/register", {"username": user["username"],
	    "email": e2, "password": p2}).status == 409
	# e2 must not have been stored: it registers with a new username.
	other, _ = register(srv, ident=(u2, e2, p2))
	assert other["email"] == e2
	if not EXTERNAL:
		pg = request.getfixturevalue("pg")
		assert pg.psql("SELECT count(*) FROM users WHERE lower(email) = "
		    "lower('%s')" % e2, dbname=pg.dbname) == "1"


def test_passwords_are_stored_as_salted_scrypt_hashes(srv, request):
	needs_own_server()
	pg = request.getfixturevalue("pg")
	p = "pw-" + uuid.uuid4().hex
	PASSWORDS.add(p)
	a, _ = register(srv, ident=("u_" + uniq(), "a%s@example.org" % uniq(), p))
	b, _ = register(srv, ident=("u_" + uniq(), "b%s@example.org" % uniq(), p))
	rows = pg.psql("SELECT password_hash FROM users WHERE id IN (%d, %d)" % (
	    a["id"], b["id"]), dbname=pg.dbname).splitlines()
	assert len(rows) == 2
	for h in rows:
		assert h.startswith(HASH_MARK), "not a libscrypt MCF hash: %r" % h
		assert p not in h
		# The documented cost (README): N = 2^14, r = 8, p = 1, which
		# libscrypt writes as "0e0801" (log2 N, r, p in hex); a 16-byte
		# salt and a 64-byte hash, base64.
		_, tag, params, salt, digest = h.split("$")
		assert (tag, params) == ("s1", "0e0801"), (
		    "scrypt parameters %r, documented N = 2^14, r = 8, p = 1 "
		    "(0e0801): %r" % (params, h))
		assert len(base64.b64decode(salt)) == 16, h
		assert len(base64.b64decode(digest)) == 64, h
	assert rows[0] != rows[1], "same password, same hash: no per-user salt"


# --- login -------------------------------------------------------------------

@pytest.mark.parametrize("by,case,prefix", [
    ("email", "same", ""), ("email", "upper", ""),
    ("username", "same", "/v1"), ("username", "swapped", "")])
def test_login_by_email_or_username_ignores_case(srv, by, case, prefix):
	user, p = register(srv)
	who = user[by]
	who = {"same": who, "upper": who.upper(), "swapped": who.swapcase()}[case]
	r = login(srv, p, prefix=prefix, **{by: who})
	body = assert_session_response(srv, r, 200, user)
	assert body["token"] != user["token"]
	assert me(srv, body["token"], keep=False) in (user["id"], -1)


@pytest.fixture(scope="module")
def utf8_db(request):
	"""A database whose LC_CTYPE (C.utf8) lowers non-ASCII letters; the
	test cluster's default (C) lowers only A-Z."""
	needs_own_server()
	pg = request.getfixturevalue("pg")
	name = "gochat_utf8"
	if pg.psql("SELECT 1 FROM pg_database WHERE datname = '%s'" % name) \
	    != "1":
		pg.psql("CREATE DATABASE %s TEMPLATE template0 ENCODING 'UTF8' "
		    "LOCALE 'C.utf8'" % name)
	return pg, name


def test_login_matches_non_ascii_case_as_the_unique_index_does(make_server,
    utf8_db):
	pg, dbname = utf8_db
	s = make_server(database_url=pg.url_for(dbname))
	tag = uniq()
	email = "Émile.Ørsted.%s@Exämple.org" % tag
	user, p = register(s, ident=("u_" + tag, email, "pw-" + uuid.uuid4().hex))
	PASSWORDS.add(p)
	# The unique index says these are one email: login agrees.
	assert_error(call(s, "POST", "/register", {"username": "v_" + tag,
	    "email": email.lower(), "password": p}), 409, "email",
	    others=("username",))
	for spelling in (email, email.lower(), email.upper()):
		assert_session_response(s, login(s, p, email=spelling), 200, user)
	assert_error(login(s, p, email=email.replace("É", "E")), 401)
	# The lookup is the index's own expression (an index scan, not a
	# sequential one over every user).
	plan = pg.psql("SET enable_seqscan = off; EXPLAIN SELECT l.name, u.id "
	    "FROM (SELECT lower('%s') AS name) l LEFT JOIN users u ON "
	    "lower(u.email) = l.name" % email.upper(), dbname=dbname)
	assert "users_email_lower" in plan, plan


def test_wrong_password_and_unknown_account_get_the_same_401(srv):
	user, p = register(srv)
	wrong = "pw-" + uuid.uuid4().hex
	PASSWORDS.add(wrong)
	answers = [
	    login(srv, wrong, email=user["email"]),
	    login(srv, wrong, username=user["username"]),
	    login(srv, p, email="nobody.%s@example.org" % uniq()),
	    login(srv, p, username="nobody_" + uniq()),
	    login(srv, p[:-1], email=user["email"]),
	    login(srv, p + "x", email=user["email"]),
	    login(srv, p.upper(), email=user["email"]),
	]
	msgs = [assert_error(r, 401) for r in answers]
	assert len(set(msgs)) == 1, "the messages tell accounts apart: %r" % msgs
	for r in answers:
		assert not any(c.startswith("auth_token=") and "max-age=0" not in
		    c.lower() for c in r.all("Set-Cookie")), r.headers


@pytest.mark.parametrize("body", [
    {}, {"password": "whatever-password"}, {"email": "x@example.org"},
    {"username": "someone"}, {"email": 42, "password": "whatever-password"},
    {"username": "someone", "password": 12345678}, b'{"email": "x@y", ',
    b'[]'], ids=["empty", "no-account", "no-password-email",
    "no-password-username", "email-number", "password-number",
    "malformed", "array"])
def test_login_with_a_malformed_request_is_400(srv, body):
	assert_error(call(srv, "POST", "/login", body), 400)


def test_an_unknown_account_takes_as_long_as_a_wrong_password(srv):
	# 15 failures: more than the default limit allows (this module's server
	# raises it). Medians of 7 tries each, within a factor of 2 either way.
	needs_own_server()
	user, p = register(srv)
	wrong = "pw-" + uuid.uuid4().hex
	PASSWORDS.add(wrong)
	login(srv, wrong, email=user["email"])		# warm up
	known, unknown = [], []
	for _ in range(7):
		r = login(srv, wrong, email=user["email"])
		assert r.status == 401, r
		known.append(r.elapsed)
		r = login(srv, wrong, email="nobody.%s@example.org" % uniq())
		assert r.status == 401, r
		unknown.append(r.elapsed)
	mk, mu = statistics.median(known), statistics.median(unknown)
	print("login timing: wrong password median %.1f ms %s; unknown account "
	    "median %.1f ms %s" % (mk * 1000, ["%.0f" % (x * 1000) for x in known],
	    mu * 1000, ["%.0f" % (x * 1000) for x in unknown]))
	assert mu >= 0.5 * mk, ("an unknown account answers in %.1f ms, a wrong "
	    "password in %.1f ms: the difference tells which accounts exist"
	    % (mu * 1000, mk * 1000))
	# Both ways: an unknown account that is much slower tells as much.
	assert mu <= 2 * mk, ("an unknown account answers in %.1f ms, a wrong "
	    "password in %.1f ms: the difference tells which accounts exist"
	    % (mu * 1000, mk * 1000))


# --- tokens, cookies, logout -------------------------------------------------

def test_bearer_header_and_cookie_both_authenticate(srv):
	user, p = register(srv)
	t2, t3 = [assert_session_response(srv, login(srv, p,
	    email=user["email"]), 200)["token"] for _ in range(2)]
	assert me(srv, user["token"], via="bearer", keep=False) in (
	    user["id"], -1)
	assert me(srv, t2, via="cookie", keep=False) in (user["id"], -1)
	# The cookie among others, as a browser sends it.
	assert me(srv, None, keep=False, headers={"Cookie":
	    "theme=dark; auth_token=%s; lang=en" % t3}) in (user["id"], -1)


@pytest.mark.parametrize("headers", [
    {}, {"Authorization": "Bearer "}, {"Authorization": "Bearer nope"},
    {"Authorization": "Bearer " + "A" * 43},
    {"Authorization": "Bearer " + "A" * 5000},
    {"Authorization": "Basic dXNlcjpwYXNz"},
    {"Cookie": "auth_token="}, {"Cookie": "auth_token=" + "B" * 43},
    {"Cookie": "other_token=x"}],
    ids=["none", "empty-bearer", "short", "unknown", "huge", "basic",
    "empty-cookie", "unknown-cookie", "other-cookie"])
def test_a_missing_or_unknown_token_is_401(srv, headers):
	r = call(srv, "POST", "/logout", headers=headers)
	assert_error(r, 401)
	r = call(srv, "GET", "/me", headers=headers)
	if r.status != 404:		# /me may not exist yet
		assert_error(r, 401)


@pytest.mark.parametrize("via,prefix", [("bearer", ""), ("cookie", "/v1")])
def test_logout_revokes_only_that_token_everywhere(srv, via, prefix):
	user, p = register(srv)
	r = login(srv, p, username=user["username"])
	other = assert_session_response(srv, r, 200)["token"]
	r = call(srv, "POST", prefix + "/logout", token=user["token"], via=via)
	assert r.status == 202, r
	assert r.json() == {"status": "logged out"}
	value, attrs = cookie_of(r)
	assert value != user["token"] and attrs.get("max-age") == "0", \
	    r.all("Set-Cookie")
	assert attrs.get("path") == "/", attrs
	refused_everywhere(srv, user["token"])
	assert_error(call(srv, "POST", "/logout", token=user["token"], via=via),
	    401)
	# The other device is still logged in, on every worker.
	for _ in range(4):
		assert me(srv, other) == user["id"]
	assert call(srv, "POST", "/logout", token=other).status == 202
	refused_everywhere(srv, other, tries=2)


def test_a_second_instance_shares_sessions_and_sees_logouts_at_once(srv,
    make_server):
	needs_own_server()
	b = make_server()
	user, p = register(srv)
	# Registered on one instance, valid on the other.
	assert me(b, user["token"]) == user["id"]
	# Logged in on the second, valid on the first.
	t2 = assert_session_response(b, login(b, p, email=user["email"]), 200,
	    user)["token"]
	assert me(srv, t2) == user["id"]
	# Logged out on the first: refused on the second at once.
	assert call(srv, "POST", "/logout", token=user["token"]).status == 202
	refused_everywhere(b, user["token"])
	# Logged out on the second: refused on the first.
	assert me(srv, t2) == user["id"]
	assert call(b, "POST", "/v1/logout", token=t2,
	    via="cookie").status == 202
	refused_everywhere(srv, t2)


# --- sessions in Redis -------------------------------------------------------

def redis_dump(port):
	"""Every key and every value (strings, sets, hashes, lists, sorted sets,
	streams) in Redis as one text."""
	out = []
	for k in harness.redis_keys(port, "*"):
		out.append(k)
		t = harness.redis_cmd(port, "TYPE", k)
		if t == "string":
			out.append(harness.redis_cmd(port, "GET", k) or "")
		elif t == "set":
			out += harness.redis_cmd(port, "SMEMBERS", k) or []
		elif t == "hash":
			out += harness.redis_cmd(port, "HGETALL", k) or []
		elif t == "list":
			out += harness.redis_cmd(port, "LRANGE", k, 0, -1) or []
		elif t == "zset":
			out += harness.redis_cmd(port, "ZRANGE", k, 0, -1) or []
		elif t == "stream":
			out.append(repr(harness.redis_cmd(port, "XRANGE", k, "-", "+")))
	return "\n".join(str(x) for x in out)


def session_key(token):
	return "gochat:session:" + hashlib.sha256(token.encode()).hexdigest()


def test_sessions_live_in_redis_under_the_token_hash_with_the_ttl(srv, redis):
	user, p = register(srv)
	t2 = login(srv, p, email=user["email"]).json()["token"]
	for tok in (user["token"], t2):
		key = session_key(tok)
		assert redis.cmd("GET", key) == str(user["id"]), (
		    "no session %s in Redis (keys: %r)" % (key,
		    harness.redis_keys(redis.port, "gochat:session:*")[:10]))
		ttl = redis.cmd("TTL", key)
		assert SESSION_TTL - 60 <= ttl <= SESSION_TTL, (
		    "TTL %r, session_ttl = %d" % (ttl, SESSION_TTL))
	dump = redis_dump(redis.port)
	for tok in (user["token"], t2):
		assert tok not in dump, "the raw token is stored in Redis"
	for x in PASSWORDS:
		assert x not in dump, "a password is stored in Redis"
	assert HASH_MARK not in dump, "a password hash is stored in Redis"
	# The session is the Redis key: when it goes (expiry, an operator's
	# DEL), the token is refused at once on every worker.
	assert me(srv, user["token"]) == user["id"]
	assert redis.cmd("DEL", session_key(user["token"])) == 1
	refused_everywhere(srv, user["token"])
	assert me(srv, t2) == user["id"]


def test_logout_removes_the_session_from_redis(srv, redis):
	user, _ = register(srv)
	key = session_key(user["token"])
	assert redis.cmd("EXISTS", key) == 1
	assert call(srv, "POST", "/logout", token=user["token"]).status == 202
	assert redis.cmd("EXISTS", key) == 0


# --- failed logins are rate limited ------------------------------------------

MAX_FAILURES = 3
WINDOW = 60


def assert_429(r):
	assert_error(r, 429)
	ra = r.header("Retry-After")
	assert ra is not None and ra.strip().isdigit(), "Retry-After: %r" % ra
	return int(ra)


def test_failed_logins_are_limited_per_account_and_per_address(make_server,
    redis):
	s = make_server(login_max_failures=MAX_FAILURES, login_window=WINDOW)
	a, pa = register(s)
	b, pb = register(s)
	wrong = "pw-" + uuid.uuid4().hex
	PASSWORDS.add(wrong)

	# Per account: failures from three addresses (one each, so that no
	# address reaches the limit), then the right password from a fourth.
	for i in range(MAX_FAILURES):
		assert_error(login(s, wrong, email=a["email"],
		    source="127.0.0.%d" % (2 + i)), 401)
	assert harness.redis_keys(redis.port, "gochat:login:fail:*"), (
	    "no failure counter in Redis: workers and instances cannot share it")
	r = login(s, pa, email=a["email"], source="127.0.0.9")
	assert 1 <= assert_429(r) <= WINDOW
	r = login(s, pa, username=a["username"].upper(), source="127.0.0.10")
	assert 1 <= assert_429(r) <= WINDOW, "the limit depends on the spelling"
	assert_429(login(s, wrong, email=a["email"], source="127.0.0.11"))
	# Another account from an address with one failure is not limited.
	assert_session_response(s, login(s, pb, email=b["email"],
	    source="127.0.0.2"), 200)

	# Per address: failures on other (unknown) accounts from one address,
	# on new connections spread over the workers; then a good login of b
	# from there is refused, while b from elsewhere is fine.
	for i in range(MAX_FAILURES):
		assert_error(login(s, wrong, email="nobody.%s@example.org" % uniq(),
		    source="127.0.0.20"), 401)
	r = login(s, pb, email=b["email"], source="127.0.0.20")
	assert 1 <= assert_429(r) <= WINDOW
	assert_session_response(s, login(s, pb, email=b["email"],
	    source="127.0.0.21"), 200)

	# Below the limit, the right password still works.
	for i in range(MAX_FAILURES - 1):
		assert_error(login(s, wrong, username="nobody_" + uniq(),
		    source="127.0.0.30"), 401)
	assert_session_response(s, login(s, pb, username=b["username"],
	    source="127.0.0.30"), 200)

	# The counters are what limits: once they are gone, both log in again.
	clear_login_counters(redis)
	assert_session_response(s, login(s, pa, email=a["email"],
	    source="127.0.0.9"), 200, a)
	assert_session_response(s, login(s, pb, email=b["email"],
	    source="127.0.0.20"), 200, b)


def test_failures_are_counted_across_workers_from_one_address(make_server):
	s = make_server(login_max_failures=MAX_FAILURES, login_window=WINDOW)
	a, pa = register(s)
	wrong = "pw-" + uuid.uuid4().hex
	PASSWORDS.add(wrong)
	# New connections from 127.0.0.1 land on both workers.
	for _ in range(MAX_FAILURES):
		assert_error(login(s, wrong, email=a["email"]), 401)
	for _ in range(4):
		assert_429(login(s, pa, email=a["email"]))


def test_the_limit_ends_when_the_window_passes(make_server):
	window = 2
	s = make_server(login_max_failures=MAX_FAILURES, login_window=window)
	a, pa = register(s)
	wrong = "pw-" + uuid.uuid4().hex
	PASSWORDS.add(wrong)
	for _ in range(MAX_FAILURES):
		assert_error(login(s, wrong, email=a["email"]), 401)
	retry = assert_429(login(s, pa, email=a["email"]))
	assert 1 <= retry <= window
	# A client that waits as told gets in (a little slack for rounding).
	time.sleep(retry + 0.6)
	r = login(s, pa, email=a["email"])
	assert r.status == 200, "still refused %.1f s after Retry-After: %d: %r" \
	    % (retry + 0.6, retry, r)


def test_failures_are_counted_across_instances(make_server):
	# Two instances sharing Redis share the counters: failures on one
	# limit the account and the address on the other, at once.
	one = make_server(login_max_failures=MAX_FAILURES, login_window=WINDOW)
	two = make_server(login_max_failures=MAX_FAILURES, login_window=WINDOW)
	a, pa = register(one)
	b, pb = register(two)
	wrong = "pw-" + uuid.uuid4().hex
	PASSWORDS.add(wrong)
	for i in range(MAX_FAILURES):
		assert_error(login(one, wrong, email=a["email"],
		    source="127.0.0.7%d" % i), 401)
	assert_429(login(two, pa, email=a["email"], source="127.0.0.79"))
	for _ in range(MAX_FAILURES):
		assert_error(login(two, wrong, email="nobody.%s@example.org" %
		    uniq(), source="127.0.0.80"), 401)
	assert_429(login(one, pb, email=b["email"], source="127.0.0.80"))
	assert_session_response(one, login(one, pb, email=b["email"],
	    source="127.0.0.81"), 200, b)


def parallel(n, fn):
	"""Run fn(i) for i in range(n) on n threads released at once; the
	results in order (an exception's repr for a request that failed)."""
	out = [None] * n
	go = threading.Event()

	def run(i):
		go.wait()
		try:
			out[i] = fn(i)
		except (OSError, http.client.HTTPException) as e:
			out[i] = repr(e)
	threads = [threading.Thread(target=run, args=(i,), daemon=True)
	    for i in range(n)]
	for t in threads:
		t.start()
	go.set()
	for t in threads:
		t.join(60)
	return out


@pytest.mark.parametrize("who", ["one-account", "many-accounts"])
def test_concurrent_failed_logins_cannot_pass_the_limit(make_server, who):
	# Each attempt is reserved before its password is checked (about 75 ms
	# of scrypt): attempts in flight count, so a burst cannot slip past a
	# check that would see none of the others yet.
	s = make_server(login_max_failures=MAX_FAILURES, login_window=WINDOW)
	a, pa = register(s)
	wrong = "pw-" + uuid.uuid4().hex
	PASSWORDS.add(wrong)
	n = 20

	def attempt(i):
		email = a["email"] if who == "one-account" else \
		    "nobody.%s@example.org" % uniq()
		return login(s, wrong, email=email, timeout=30)
	answers = parallel(n, attempt)
	statuses = sorted(r.status if isinstance(r, Resp) else r
	    for r in answers)
	assert statuses.count(401) == MAX_FAILURES and \
	    statuses.count(429) == n - MAX_FAILURES, (
	    "%d parallel wrong logins with login_max_failures = %d: %r" % (n,
	    MAX_FAILURES, statuses))
	for r in answers:
		if r.status == 429:
			assert 1 <= assert_429(r) <= WINDOW
	# The limit holds afterwards, for the right password too.
	assert_429(login(s, pa, email=a["email"]))


def test_a_success_resets_the_account_and_spares_the_address(make_server,
    redis):
	s = make_server(login_max_failures=MAX_FAILURES, login_window=WINDOW)
	a, pa = register(s)
	wrong = "pw-" + uuid.uuid4().hex
	PASSWORDS.add(wrong)
	account_key = "gochat:login:fail:user:%d" % a["id"]
	# Just below the limit, from two addresses: the right password works
	# and starts the account's count over.
	for i in range(MAX_FAILURES - 1):
		assert_error(login(s, wrong, email=a["email"],
		    source="127.0.0.4%d" % i), 401)
	assert redis.cmd("GET", account_key) == str(MAX_FAILURES - 1)
	assert_session_response(s, login(s, pa, email=a["email"],
	    source="127.0.0.49"), 200, a)
	assert redis.cmd("EXISTS", account_key) == 0, \
	    "a successful login left the account's failure count"
	for i in range(MAX_FAILURES - 1):
		assert_error(login(s, wrong, email=a["email"],
		    source="127.0.0.5%d" % i), 401)
	assert_session_response(s, login(s, pa, username=a["username"],
	    source="127.0.0.59"), 200, a)
	# Successful logins do not use up their address's budget, however
	# many, in a row or at once.
	addr = "127.0.0.60"
	for _ in range(MAX_FAILURES + 2):
		assert_session_response(s, login(s, pa, email=a["email"],
		    source=addr), 200, a)
	got = parallel(MAX_FAILURES, lambda i: login(s, pa, email=a["email"],
	    source=addr, timeout=30))
	assert [r.status for r in got] == [200] * MAX_FAILURES, got
	assert int(redis.cmd("GET", "gochat:login:fail:addr:" + addr) or 0) \
	    == 0
	# ... while its failures still count.
	for _ in range(MAX_FAILURES):
		assert_error(login(s, wrong, username="nobody_" + uniq(),
		    source=addr), 401)
	assert_429(login(s, pa, email=a["email"], source=addr))


# --- hashing stays off the loop ----------------------------------------------

def test_a_burst_of_logins_does_not_stall_other_requests(srv, record_property):
	user, p = register(srv)
	# The cost of one login, alone.
	alone = []
	for _ in range(3):
		r = login(srv, p, email=user["email"])
		assert r.status == 200, r
		alone.append(r.elapsed)
	one = statistics.median(alone)
	# Enough logins that, run on the loops of the 2 workers, each would hold
	# its loop for well over a second.
	n = max(24, min(80, int(2 * 1.5 / max(one, 0.005)) + 1))
	statuses, lock = [], threading.Lock()
	go = threading.Event()

	def one_login():
		go.wait()
		try:
			st = login(srv, p, email=user["email"], timeout=30).status
		except (OSError, http.client.HTTPException) as e:
			st = repr(e)
		with lock:
			statuses.append(st)

	health = []
	stop = threading.Event()

	def poll_health():
		while not stop.is_set():
			t0 = time.monotonic()
			c = http.client.HTTPConnection(srv.host, srv.port, timeout=10)
			try:
				c.request("GET", "/health", headers={"Connection": "close"})
				st = c.getresponse()
				st.read()
				health.append((time.monotonic() - t0, st.status))
			except (OSError, http.client.HTTPException) as e:
				health.append((time.monotonic() - t0, repr(e)))
			finally:
				c.close()
			time.sleep(0.01)

	threads = [threading.Thread(target=one_login, daemon=True)
	    for _ in range(n)]
	for t in threads:
		t.start()
	poller = threading.Thread(target=poll_health, daemon=True)
	poller.start()
	time.sleep(0.1)
	health.clear()			# only what overlaps the burst
	t0 = time.monotonic()
	go.set()
	for t in threads:
		t.join(60)
	burst = time.monotonic() - t0
	stop.set()
	poller.join(15)

	lat = [x for x, _ in health]
	figures = ("%d concurrent logins in %.2f s (%.1f logins/s; one login "
	    "alone %.0f ms); GET /health during the burst: %d requests, median "
	    "%.1f ms, max %.1f ms" % (n, burst, n / burst, one * 1000, len(lat),
	    statistics.median(lat) * 1000 if lat else -1,
	    max(lat) * 1000 if lat else -1))
	print("login burst:", figures)
	record_property("login_burst", figures)
	assert statuses.count(200) == n, "logins: %r" % sorted(map(str, statuses))
	assert len(lat) >= 3, "too few /health requests during the burst"
	assert all(st == 200 for _, st in health), health
	assert max(lat) < 0.6, ("GET /health took up to %.0f ms during the "
	    "burst: password hashing holds the loop (%s)" % (max(lat) * 1000,
	    figures))
