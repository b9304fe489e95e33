"""Users and the social graph (SPEC.md §3), seen by a client: follow and
unfollow (both parameter names, idempotence, the 400 and 404 cases), user
objects and their counts, the follower and following lists with their
order and keyset paging, and account deletion (204, sessions revoked,
follows and posts gone, names free again, the `<prefix>control` event,
nothing changed when a dependency is down). Every route needs a session
(§2). Users are registered through the server; where a test needs hundreds
of rows it writes them with psql, since each registration costs a scrypt
hash."""

import itertools
import json
import re
import socket
import time
import uuid

import pytest
import requests

import harness
from conftest import own_service, wait_for

TIME_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
PROFILE_KEYS = {"id", "username", "followers", "following", "posts",
    "created_at"}
NO_USER = 2 ** 62	# an id no test ever reaches

_seq = itertools.count(1)


# --- helpers ---------------------------------------------------------------

def unique(prefix="u"):
	"""A username no other test (or earlier run on the same database)
	uses: 1-32 characters of the allowed set."""
	return "%s%d_%s" % (prefix, next(_seq), uuid.uuid4().hex[:10])


def register(server, username=None, email=None, password="correct horse"):
	"""Register through the server; returns {"id","username","email",
	"token"}."""
	username = username or unique()
	email = email or "%s@example.org" % username.lower()
	r = requests.post(server.base + "/register", json={"username": username,
	    "email": email, "password": password}, timeout=10)
	assert r.status_code == 201, r.text
	body = r.json()
	assert body["token"] and body["username"] == username, body
	return body


def login(server, user, password="correct horse"):
	"""A second session of user; returns its token."""
	r = requests.post(server.base + "/login", json={"username":
	    user["username"], "password": password}, timeout=10)
	assert r.status_code == 200, r.text
	assert r.json()["token"] != user["token"]
	return r.json()["token"]


def call(server, method, path, token=None, **kw):
	"""One request, with "Authorization: Bearer <token>" when token is a
	str, or with a user's token when it is a dict from register()."""
	if isinstance(token, dict):
		token = token["token"]
	headers = {"Authorization": "Bearer " + token} if token else {}
	return requests.request(method, server.base + path, headers=headers,
	    timeout=10, **kw)


def ok_json(r, status=200):
	assert r.status_code == status, "expected %d, got %d: %s" % (status,
	    r.status_code, r.text)
	assert r.headers.get("Content-Type", "").startswith("application/json")
	return r.json()


def assert_json_error(r, status, mentions=None):
	"""An error the spec's way; mentions, if given, must be in it."""
	assert r.status_code == status, "expected %d, got %d: %s" % (status,
	    r.status_code, r.text)
	assert r.headers.get("Content-Type", "").startswith("application/json")
	body = r.json()
	assert isinstance(body.get("error"), str) and body["error"].strip(), body
	if mentions:
		assert mentions in body["error"], body
	return body


def follow(server, who, whom, param="toFollowId"):
	return call(server, "POST", "/follow?%s=%d" % (param, whom["id"]), who)


def unfollow(server, who, whom, param="toUnfollowId"):
	return call(server, "POST", "/unfollow?%s=%d" % (param, whom["id"]), who)


def profile(server, viewer, user):
	return ok_json(call(server, "GET", "/users/%d" % user["id"], viewer))


def counts(server, viewer, user):
	p = profile(server, viewer, user)
	return p["followers"], p["following"], p["posts"]


def listing(server, viewer, user, which, query=""):
	"""The ids of /users/{id}/<which>?<query>, checking each item's form."""
	items = ok_json(call(server, "GET", "/users/%d/%s%s" % (user["id"], which,
	    query), viewer))
	assert isinstance(items, list), items
	for it in items:
		assert set(it) == {"id", "username"}, it
		assert isinstance(it["id"], int), it
	return [it["id"] for it in items]


def sql(pg, text):
	"""Run SQL on the server's database; the rows of its output."""
	out = pg.psql(text, dbname=pg.dbname)
	return [line for line in out.splitlines() if line]


def bulk_users(pg, n):
	"""n users written straight into PostgreSQL (no password anyone can
	use): their ids, ascending."""
	tag = uuid.uuid4().hex[:8]
	return [int(x) for x in sql(pg, "INSERT INTO users (username, email, "
	    "password_hash) SELECT 'b%s_' || g, 'b%s_' || g || '@example.org', "
	    "'!' FROM generate_series(1, %d) g RETURNING id" % (tag, tag, n))]


def add_follows(pg, pairs):
	"""Insert (follower_id, following_id) rows."""
	values = ", ".join("(%d, %d)" % p for p in pairs)
	sql(pg, "INSERT INTO user_followers (follower_id, following_id) "
	    "VALUES %s" % values)


def add_post(pg, user, content="hello"):
	sql(pg, "INSERT INTO posts (user_id, content) VALUES (%d, '%s')"
	    % (user["id"], content))


class Subscriber:
	"""A raw RESP client SUBSCRIBEd to one channel; next_message() is the
	next payload published on it."""

	def __init__(self, port, channel):
		self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
		self.f = self.sock.makefile("rb")
		self.sock.sendall(harness._resp_encode(["SUBSCRIBE", channel]))
		assert harness._resp_read(self.f) == ["subscribe", channel, 1]
		self.channel = channel

	def next_message(self):
		kind, channel, payload = harness._resp_read(self.f)
		assert (kind, channel) == ("message", self.channel)
		return payload

	def close(self):
		self.f.close()
		self.sock.close()


# --- every route needs a session -------------------------------------------

ROUTES = [("DELETE", "/delete"), ("POST", "/follow?toFollowId=1"),
    ("POST", "/unfollow?toUnfollowId=1"), ("GET", "/me"), ("GET", "/users/1"),
    ("GET", "/users?username=someone"), ("GET", "/users/1/followers"),
    ("GET", "/users/1/following")]


@pytest.mark.parametrize("method,path", ROUTES)
@pytest.mark.parametrize("token", [None, "not a token", "A" * 43])
def test_every_route_is_401_without_a_valid_token(server, method, path,
    token):
	assert_json_error(call(server, method, path, token), 401)


@pytest.mark.parametrize("method,path", ROUTES)
def test_every_route_answers_under_v1(server, method, path):
	assert_json_error(call(server, method, "/v1" + path), 401)


def test_v1_routes_work_with_a_session(server):
	a, b = register(server), register(server)
	assert ok_json(call(server, "POST", "/v1/follow?id=%d" % b["id"], a)) == \
	    {"follower_id": a["id"], "following_id": b["id"]}
	assert ok_json(call(server, "GET", "/v1/me", a))["following"] == 1
	assert listing(server, a, b, "followers") == [a["id"]]
	assert ok_json(call(server, "GET", "/v1/users/%d/followers" % b["id"],
	    a)) == [{"id": a["id"], "username": a["username"]}]


# --- follow and unfollow ---------------------------------------------------

@pytest.mark.parametrize("param", ["toFollowId", "id"])
def test_follow_answers_the_pair_and_counts_it(server, param):
	a, b = register(server), register(server)
	r = follow(server, a, b, param)
	assert ok_json(r) == {"follower_id": a["id"], "following_id": b["id"]}
	assert counts(server, a, a)[:2] == (0, 1)
	assert counts(server, a, b)[:2] == (1, 0)
	assert listing(server, a, b, "followers") == [a["id"]]
	assert listing(server, a, a, "following") == [b["id"]]


def test_follow_is_idempotent(server):
	a, b = register(server), register(server)
	for param in ("toFollowId", "id", "toFollowId"):
		assert ok_json(follow(server, a, b, param)) == {
		    "follower_id": a["id"], "following_id": b["id"]}
	assert counts(server, a, b)[:2] == (1, 0)
	assert counts(server, b, a)[:2] == (0, 1)
	assert listing(server, a, b, "followers") == [a["id"]]


@pytest.mark.parametrize("param", ["toUnfollowId", "id"])
def test_unfollow_answers_the_pair_and_is_idempotent(server, param):
	a, b = register(server), register(server)
	ok_json(follow(server, a, b))
	ok_json(follow(server, b, a))
	expect = {"follower_id": a["id"], "following_id": b["id"]}
	assert ok_json(unfollow(server, a, b, param)) == expect
	assert counts(server, a, b)[:2] == (0, 1)	# b still follows a
	assert counts(server, a, a)[:2] == (1, 0)
	assert listing(server, a, b, "followers") == []
	# Not following any more: still 200, nothing changes.
	assert ok_json(unfollow(server, a, b, param)) == expect
	assert counts(server, a, b)[:2] == (0, 1)
	# Following again works after an unfollow.
	ok_json(follow(server, a, b))
	assert counts(server, a, b)[:2] == (1, 1)


@pytest.mark.parametrize("route,param", [("follow", "toFollowId"),
    ("follow", "id"), ("unfollow", "toUnfollowId"), ("unfollow", "id")])
def test_following_yourself_is_400(server, route, param):
	a = register(server)
	r = call(server, "POST", "/%s?%s=%d" % (route, param, a["id"]), a)
	assert_json_error(r, 400)
	assert counts(server, a, a)[:2] == (0, 0)


@pytest.mark.parametrize("route,param", [("follow", "toFollowId"),
    ("follow", "id"), ("unfollow", "toUnfollowId"), ("unfollow", "id")])
@pytest.mark.parametrize("target", [NO_USER, 0, -3])
def test_an_id_that_is_no_user_is_404(server, route, param, target):
	a = register(server)
	r = call(server, "POST", "/%s?%s=%d" % (route, param, target), a)
	assert_json_error(r, 404)
	assert counts(server, a, a)[:2] == (0, 0)


def test_follow_of_a_deleted_user_is_404(server):
	a, b = register(server), register(server)
	assert call(server, "DELETE", "/delete", b).status_code == 204
	assert_json_error(follow(server, a, b), 404)
	assert_json_error(unfollow(server, a, b), 404)


@pytest.mark.parametrize("route,param", [("follow", "toFollowId"),
    ("unfollow", "toUnfollowId")])
@pytest.mark.parametrize("query,named", [
    ("", "{p}"), ("?other=3", "{p}"), ("?{p}=", "{p}"), ("?{p}=abc", "{p}"),
    ("?{p}=1.5", "{p}"), ("?{p}=12abc", "{p}"), ("?{p}=%20", "{p}"),
    ("?{p}=99999999999999999999999", "{p}"), ("?id=x", "id"),
    ("?id=", "id"), ("?id=0x10", "id")])
def test_missing_or_non_integer_id_is_400_naming_it(server, route, param,
    query, named):
	a = register(server)
	r = call(server, "POST", "/%s%s" % (route, query.format(p=param)), a)
	assert_json_error(r, 400, mentions=named.format(p=param))


# --- user objects ----------------------------------------------------------

def test_me_is_the_callers_full_object(server, pg):
	a = register(server)
	b, c = register(server), register(server)
	ok_json(follow(server, b, a))
	ok_json(follow(server, c, a))
	ok_json(follow(server, a, c))
	add_post(pg, a)
	me = ok_json(call(server, "GET", "/me", a))
	assert set(me) == PROFILE_KEYS | {"email"}, me
	assert me["id"] == a["id"] and me["username"] == a["username"]
	assert me["email"] == a["email"]
	assert (me["followers"], me["following"], me["posts"]) == (2, 1, 1)
	assert TIME_RE.match(me["created_at"]), me
	for k in ("id", "followers", "following", "posts"):
		assert type(me[k]) is int, me


def test_me_of_a_new_user_has_zero_counts(server):
	a = register(server)
	me = ok_json(call(server, "GET", "/me", a))
	assert (me["followers"], me["following"], me["posts"]) == (0, 0, 0)


def test_user_by_id_has_counts_and_no_email(server, pg):
	a, b, c = register(server), register(server), register(server)
	ok_json(follow(server, a, b))
	ok_json(follow(server, c, b))
	ok_json(follow(server, b, a))
	add_post(pg, b, "one")
	add_post(pg, b, "two")
	p = profile(server, a, b)
	assert set(p) == PROFILE_KEYS, p
	assert "email" not in json.dumps(p) and b["email"] not in json.dumps(p)
	assert p["id"] == b["id"] and p["username"] == b["username"]
	assert (p["followers"], p["following"], p["posts"]) == (2, 1, 2)
	assert TIME_RE.match(p["created_at"]), p
	assert counts(server, b, a) == (1, 1, 0)
	assert counts(server, b, c) == (0, 1, 0)
	# created_at is the same in both views of one user.
	me = ok_json(call(server, "GET", "/me", b))
	assert me["created_at"] == p["created_at"]


def test_unknown_user_is_404(server):
	a = register(server)
	assert_json_error(call(server, "GET", "/users/%d" % NO_USER, a), 404)


@pytest.mark.parametrize("bad", ["0", "-1", "abc", "1.0", "1e3",
    "99999999999999999999"])
def test_user_id_that_is_not_a_positive_integer_is_400(server, bad):
	a = register(server)
	for path in ("/users/%s", "/users/%s/followers", "/users/%s/following"):
		assert_json_error(call(server, "GET", path % bad, a), 400)


def test_user_by_username_ignores_case(server):
	a = register(server)
	b = register(server, username=unique("MiXeD"))
	for name in (b["username"], b["username"].lower(),
	    b["username"].upper(), b["username"].swapcase()):
		p = ok_json(call(server, "GET", "/users", a,
		    params={"username": name}))
		assert p == profile(server, a, b), name
		assert set(p) == PROFILE_KEYS and p["id"] == b["id"]
		assert p["username"] == b["username"]	# as registered


def test_user_by_username_unknown_is_404(server):
	a = register(server)
	assert_json_error(call(server, "GET", "/users", a,
	    params={"username": unique("nobody")}), 404)


@pytest.mark.parametrize("query", ["", "?username=", "?name=x",
    "?username=a%20b", "?username=%FF", "?username=" + "x" * 33])
def test_user_by_username_missing_or_invalid_is_400(server, query):
	a = register(server)
	assert_json_error(call(server, "GET", "/users" + query, a), 400,
	    mentions="username")


# --- the lists -------------------------------------------------------------

def test_lists_are_highest_id_first(server):
	target = register(server)
	others = [register(server) for _ in range(4)]
	# Follow in an order that is not the id order.
	for u in (others[2], others[0], others[3], others[1]):
		ok_json(follow(server, u, target))
		ok_json(follow(server, target, u))
	ids = sorted((u["id"] for u in others), reverse=True)
	assert listing(server, target, target, "followers") == ids
	assert listing(server, target, target, "following") == ids
	items = ok_json(call(server, "GET", "/users/%d/followers" % target["id"],
	    others[0]))
	names = {u["id"]: u["username"] for u in others}
	assert items == [{"id": i, "username": names[i]} for i in ids]


def test_lists_of_a_user_without_follows_are_empty_arrays(server):
	a, b = register(server), register(server)
	for which in ("followers", "following"):
		r = call(server, "GET", "/users/%d/%s" % (b["id"], which), a)
		assert ok_json(r) == []


@pytest.mark.parametrize("which", ["followers", "following"])
def test_list_of_an_unknown_user_is_404(server, which):
	a = register(server)
	assert_json_error(call(server, "GET", "/users/%d/%s" % (NO_USER, which),
	    a), 404)


@pytest.mark.parametrize("query,named", [("?limit=0", "limit"),
    ("?limit=-1", "limit"), ("?limit=abc", "limit"), ("?limit=", "limit"),
    ("?before=0", "before"), ("?before=x", "before"),
    ("?before=-5", "before")])
def test_list_paging_parameters_are_checked(server, query, named):
	a = register(server)
	for which in ("followers", "following"):
		assert_json_error(call(server, "GET", "/users/%d/%s%s" % (a["id"],
		    which, query), a), 400, mentions=named)


@pytest.mark.parametrize("which", ["followers", "following"])
def test_lists_page_with_limit_and_before(server, pg, which):
	me = register(server)
	ids = bulk_users(pg, 7)
	if which == "followers":
		add_follows(pg, [(i, me["id"]) for i in ids])
	else:
		add_follows(pg, [(me["id"], i) for i in ids])
	full = listing(server, me, me, which)
	assert full == sorted(ids, reverse=True)
	pages, before = [], None
	while True:
		q = "?limit=3" + ("&before=%d" % before if before else "")
		page = listing(server, me, me, which, q)
		if not page:
			break
		assert len(page) <= 3
		pages.append(page)
		before = page[-1]
	assert [len(p) for p in pages] == [3, 3, 1]
	assert sum(pages, []) == full
	# before is exclusive and need not be an id in the list.
	assert listing(server, me, me, which, "?before=%d" % full[2]) == full[3:]
	assert listing(server, me, me, which, "?before=%d" % (full[0] + 1000)) \
	    == full
	assert listing(server, me, me, which, "?before=%d&limit=2"
	    % (full[1] + 0)) == full[2:4]
	assert listing(server, me, me, which, "?before=%d" % full[-1]) == []


@pytest.mark.parametrize("which", ["followers", "following"])
def test_lists_default_to_50_and_clamp_limit_at_200(server, pg, which):
	me = register(server)
	ids = bulk_users(pg, 230)
	if which == "followers":
		add_follows(pg, [(i, me["id"]) for i in ids])
	else:
		add_follows(pg, [(me["id"], i) for i in ids])
	desc = sorted(ids, reverse=True)
	assert listing(server, me, me, which) == desc[:50]
	assert listing(server, me, me, which, "?limit=200") == desc[:200]
	assert listing(server, me, me, which, "?limit=201") == desc[:200]
	assert listing(server, me, me, which, "?limit=100000") == desc[:200]
	assert listing(server, me, me, which, "?limit=%d" % (2 ** 63 - 1)) == \
	    desc[:200]
	assert listing(server, me, me, which, "?limit=1000&before=%d"
	    % desc[199]) == desc[200:]


def test_paging_neither_repeats_nor_skips_while_others_follow(server, pg):
	me = register(server)
	early = bulk_users(pg, 40)
	# Half of the early users follow now, the other half during the walk.
	now, later = early[0::2], early[1::2]
	add_follows(pg, [(i, me["id"]) for i in now])
	seen, before, inserted = [], None, []
	while True:
		q = "?limit=6" + ("&before=%d" % before if before else "")
		page = listing(server, me, me, "followers", q)
		if not page:
			break
		seen += page
		before = page[-1]
		# New users (ids above every page read) and older ones (ids on
		# both sides of the cursor) start following between pages.
		fresh = bulk_users(pg, 3)
		older = [later.pop()] if later else []
		add_follows(pg, [(i, me["id"]) for i in fresh + older])
		inserted += fresh + older
	assert len(seen) == len(set(seen)), "an item was repeated: %r" % seen
	assert seen == sorted(seen, reverse=True)
	assert set(now) <= set(seen), "skipped: %r" % (set(now) - set(seen))
	# Whatever showed up beyond the first followers was really inserted.
	assert set(seen) - set(now) <= set(inserted)


# --- deleting an account ---------------------------------------------------

def test_delete_removes_the_account_and_everything_of_it(server, pg):
	a, b, c = register(server), register(server), register(server)
	second = login(server, a)
	ok_json(follow(server, a, b))
	ok_json(follow(server, c, a))
	ok_json(follow(server, b, c))
	add_post(pg, a)
	add_post(pg, c)
	assert counts(server, b, b)[:2] == (1, 1)
	assert counts(server, b, c)[:2] == (1, 1)

	r = call(server, "DELETE", "/delete", a)
	assert r.status_code == 204, r.text
	assert r.content == b""
	# Every session of a is revoked by the time the 204 arrives: even
	# routes about other users refuse them.
	for token in (a["token"], second):
		assert_json_error(call(server, "GET", "/users/%d" % b["id"],
		    token), 401)
		assert_json_error(call(server, "GET", "/users/%d/followers"
		    % b["id"], token), 401)
		assert_json_error(call(server, "GET", "/me", token), 401)
		assert_json_error(call(server, "DELETE", "/delete", token), 401)
		assert_json_error(call(server, "POST", "/follow?id=%d" % b["id"],
		    token), 401)
	# a is gone for everyone else, and so are both directions of its
	# follows; the others' own follow and post stay.
	assert_json_error(call(server, "GET", "/users/%d" % a["id"], b), 404)
	assert_json_error(call(server, "GET", "/users", b,
	    params={"username": a["username"]}), 404)
	for which in ("followers", "following"):
		assert_json_error(call(server, "GET", "/users/%d/%s" % (a["id"],
		    which), b), 404)
	assert counts(server, b, b) == (0, 1, 0)
	assert counts(server, b, c) == (1, 0, 1)
	assert listing(server, b, b, "followers") == []
	assert listing(server, b, c, "following") == []
	assert sql(pg, "SELECT count(*) FROM posts WHERE user_id = %d"
	    % a["id"]) == ["0"]
	assert sql(pg, "SELECT count(*) FROM user_followers WHERE %d IN "
	    "(follower_id, following_id)" % a["id"]) == ["0"]
	# The email and the username are free again, whatever their case.
	again = register(server, username=a["username"].upper(),
	    email=a["email"].upper())
	assert again["id"] != a["id"]
	me = ok_json(call(server, "GET", "/me", again))
	assert (me["followers"], me["following"], me["posts"]) == (0, 0, 0)
	assert_json_error(call(server, "GET", "/me", a), 401)


def test_delete_leaves_other_users_sessions_alone(server):
	a, b = register(server), register(server)
	assert call(server, "DELETE", "/delete", a).status_code == 204
	assert ok_json(call(server, "GET", "/me", b))["id"] == b["id"]


def test_delete_announces_user_deleted_on_the_control_channel(make_server,
    redis):
	srv = make_server(redis_prefix="usr%s:" % uuid.uuid4().hex[:6])
	a = register(srv)
	sub = Subscriber(redis.port, srv.conf["redis_prefix"] + "control")
	try:
		assert call(srv, "DELETE", "/delete", a).status_code == 204
		payload = sub.next_message()
	finally:
		sub.close()
	assert json.loads(payload) == {"type": "user_deleted", "userId": a["id"]}


# --- deleting while a dependency is down -----------------------------------

@pytest.fixture(scope="module")
def users_pg(workdir):
	yield from own_service(harness.Postgres(workdir / "users-pg",
	    harness.free_port()))


@pytest.fixture(scope="module")
def users_redis(workdir):
	yield from own_service(harness.Redis(workdir / "users-redis",
	    harness.free_port()))


@pytest.fixture
def deps_server(make_server, users_pg, users_redis):
	"""A server on a PostgreSQL and a Redis the test may stop."""
	users_pg.start()	# a test that failed half-way may have left
	users_redis.start()	# one of them down
	return make_server(pg=users_pg, redis=users_redis)


def recovered(server, method, path, token=None, **kw):
	"""The first answer other than 503 to a request repeated for up to 5 s
	(SPEC §5: service resumes within 5 s of a dependency being back; one
	worker's /health saying so does not mean every worker has
	reconnected)."""
	seen = []

	def answer():
		seen.append(call(server, method, path, token, **kw))
		return seen[-1].status_code != 503
	wait_for(answer, 5, 0.1)
	return seen[-1]


def test_delete_with_redis_down_is_503_and_deletes_nothing(deps_server,
    users_redis):
	a, b = register(deps_server), register(deps_server)
	ok_json(follow(deps_server, a, b))
	users_redis.stop()
	assert wait_for(lambda: deps_server.health()[0] == 503, 5)
	assert_json_error(call(deps_server, "DELETE", "/delete", a), 503)
	users_redis.start()
	# Redis lost its sessions (no persistence): log in again.
	r = recovered(deps_server, "POST", "/login", json={"username":
	    a["username"], "password": "correct horse"})
	token = ok_json(r)["token"]
	me = ok_json(recovered(deps_server, "GET", "/me", token))
	assert me["id"] == a["id"] and me["following"] == 1


def test_delete_with_postgres_down_is_503_and_keeps_the_sessions(deps_server,
    users_pg):
	a, b = register(deps_server), register(deps_server)
	ok_json(follow(deps_server, a, b))
	users_pg.stop()
	assert wait_for(lambda: deps_server.health()[0] == 503, 5)
	assert_json_error(call(deps_server, "DELETE", "/delete", a), 503)
	# Every other route of §3 answers 503 too, not 500 nor a hang.
	for method, path in (("GET", "/me"), ("GET", "/users/%d" % b["id"]),
	    ("GET", "/users?username=%s" % b["username"]),
	    ("GET", "/users/%d/followers" % b["id"]),
	    ("GET", "/users/%d/following" % a["id"]),
	    ("POST", "/follow?id=%d" % b["id"]),
	    ("POST", "/unfollow?id=%d" % b["id"])):
		assert_json_error(call(deps_server, method, path, a), 503)
	users_pg.start()
	# The failed deletion left everything: the user, the follow, the
	# session it was asked with.
	me = ok_json(recovered(deps_server, "GET", "/me", a))
	assert me["id"] == a["id"] and me["following"] == 1
	assert ok_json(recovered(deps_server, "GET", "/users/%d" % b["id"],
	    a))["followers"] == 1
	assert recovered(deps_server, "DELETE", "/delete", a).status_code == 204
	assert_json_error(call(deps_server, "GET", "/me", a), 401)


# --- deletion and registration are all or nothing ----------------------------
#
# Both run in one PostgreSQL transaction around their Redis work (BEGIN;
# DELETE or INSERT; sessions in Redis; COMMIT), so a Redis failure after the
# statement rolls it back. The Redis here persists (saved on stop), so
# sessions survive an outage and "nothing changed" includes them.

@pytest.fixture(scope="module")
def kept_redis(workdir):
	yield from own_service(harness.Redis(workdir / "users-kept-redis",
	    harness.free_port(), persist=True))


@pytest.fixture
def txn_server(make_server, users_pg, kept_redis):
	users_pg.start()
	kept_redis.start()
	return make_server(pg=users_pg, redis=kept_redis)


def user_rows(pg, username):
	return sql(pg, "SELECT count(*) FROM users WHERE lower(username) = "
	    "lower('%s')" % username)[0]


def assert_intact(server, pg, a, tokens, following=1, followers=1, posts=1):
	"""a, its follows both ways, its posts and every session in tokens are
	as they were, once the server has its dependencies back."""
	for t in tokens:
		me = ok_json(recovered(server, "GET", "/me", t))
		assert (me["id"], me["following"], me["followers"], me["posts"]) \
		    == (a["id"], following, followers, posts), me
	assert user_rows(pg, a["username"]) == "1"


def graph_of_three(server, pg):
	"""a follows b, b follows a, a has a post; a's second session."""
	a, b = register(server), register(server)
	ok_json(follow(server, a, b))
	ok_json(follow(server, b, a))
	add_post(pg, a)
	return a, b, login(server, a)


class Held:
	"""A psql transaction that runs sql, holds what it took for seconds,
	then rolls back: a statement of the server's that needs it waits."""

	def __init__(self, pg, sql_text, seconds):
		import threading
		self.t = threading.Thread(target=pg.psql, args=("BEGIN; %s; "
		    "SELECT pg_sleep(%s); ROLLBACK" % (sql_text, seconds),),
		    kwargs={"dbname": pg.dbname}, daemon=True)
		self.t.start()

	def join(self):
		self.t.join(30)


def waiting_on_lock(pg, verb):
	"""True once a statement starting with verb waits on a lock."""
	return wait_for(lambda: sql(pg, "SELECT count(*) FROM pg_stat_activity "
	    "WHERE wait_event_type = 'Lock' AND query LIKE '%s %%'" % verb)
	    != ["0"], 10)


def in_background(fn):
	import threading
	out = []
	t = threading.Thread(target=lambda: out.append(fn()), daemon=True)
	t.start()
	return t, out


def test_with_redis_down_register_and_login_are_503_and_write_nothing(
    txn_server, users_pg, kept_redis):
	a = register(txn_server)
	name = unique()
	kept_redis.stop()
	assert wait_for(lambda: txn_server.health()[0] == 503, 5)
	assert_json_error(requests.post(txn_server.base + "/register", json={
	    "username": name, "email": name + "@example.org", "password":
	    "correct horse"}, timeout=10), 503)
	assert user_rows(users_pg, name) == "0"
	assert_json_error(requests.post(txn_server.base + "/login", json={
	    "username": a["username"], "password": "correct horse"},
	    timeout=10), 503)
	kept_redis.start()
	r = recovered(txn_server, "POST", "/register", json={"username": name,
	    "email": name + "@example.org", "password": "correct horse"})
	assert r.status_code == 201, r.text
	assert ok_json(recovered(txn_server, "GET", "/me", a))["id"] == a["id"]


def test_delete_with_redis_down_keeps_user_graph_posts_and_sessions(
    txn_server, users_pg, kept_redis):
	a, b, second = graph_of_three(txn_server, users_pg)
	kept_redis.stop()
	assert wait_for(lambda: txn_server.health()[0] == 503, 5)
	assert_json_error(call(txn_server, "DELETE", "/delete", a), 503)
	kept_redis.start()
	assert_intact(txn_server, users_pg, a, [a["token"], second])


def test_redis_failing_mid_deletion_rolls_it_back(txn_server, users_pg,
    kept_redis):
	# The DELETE waits on a row lock taken here; Redis stops meanwhile, so
	# the sessions cannot be revoked after the row is deleted: ROLLBACK.
	a, b, second = graph_of_three(txn_server, users_pg)
	held = Held(users_pg, "SELECT 1 FROM users WHERE id = %d FOR UPDATE"
	    % a["id"], 3)
	time.sleep(0.3)
	t, out = in_background(lambda: call(txn_server, "DELETE", "/delete", a))
	assert waiting_on_lock(users_pg, "DELETE"), "the DELETE never waited"
	kept_redis.stop()
	held.join()
	t.join(15)
	assert_json_error(out[0], 503)
	kept_redis.start()
	assert_intact(txn_server, users_pg, a, [a["token"], second])
	# And with Redis back, the deletion goes through.
	assert recovered(txn_server, "DELETE", "/delete", a).status_code == 204
	assert user_rows(users_pg, a["username"]) == "0"


def test_redis_failing_mid_registration_leaves_no_row(txn_server, users_pg,
    kept_redis):
	# The INSERT waits for an uncommitted row with the same username
	# (written here); Redis stops meanwhile, so no session can be made
	# after the row is inserted: ROLLBACK.
	name = unique()
	held = Held(users_pg, "INSERT INTO users (username, email, "
	    "password_hash) VALUES ('%s', 'held-%s@example.org', '!')"
	    % (name, name), 3)
	time.sleep(0.3)
	t, out = in_background(lambda: requests.post(txn_server.base +
	    "/register", json={"username": name, "email": name +
	    "@example.org", "password": "correct horse"}, timeout=15))
	assert waiting_on_lock(users_pg, "INSERT"), "the INSERT never waited"
	kept_redis.stop()
	held.join()
	t.join(15)
	assert_json_error(out[0], 503)
	assert user_rows(users_pg, name) == "0"
	kept_redis.start()
	r = recovered(txn_server, "POST", "/register", json={"username": name,
	    "email": name + "@example.org", "password": "correct horse"})
	assert r.status_code == 201, r.text


def test_a_client_hanging_up_mid_deletion_changes_nothing(txn_server,
    users_pg):
	a, b, second = graph_of_three(txn_server, users_pg)
	held = Held(users_pg, "SELECT 1 FROM users WHERE id = %d FOR UPDATE"
	    % a["id"], 1.5)
	time.sleep(0.3)
	s = socket.create_connection((txn_server.host, txn_server.port))
	s.sendall(("DELETE /delete HTTP/1.1\r\nHost: x\r\nAuthorization: "
	    "Bearer %s\r\nContent-Length: 0\r\n\r\n" % a["token"]).encode())
	assert waiting_on_lock(users_pg, "DELETE"), "the DELETE never waited"
	s.close()
	held.join()
	time.sleep(0.5)
	assert_intact(txn_server, users_pg, a, [a["token"], second])
	assert sql(users_pg, "SELECT count(*) FROM pg_stat_activity WHERE "
	    "state LIKE 'idle in transaction%'") == ["0"], \
	    "a transaction was left open"
