"""Posts and the feed (SPEC.md §4), seen by a client: creating a post (the
201 object, the content rules), reading and deleting one (only the author:
403 for others, 404 for none), a user's posts and the feed (the caller's
own posts and those of everyone followed) newest first with limit/before
keyset paging that neither repeats nor skips under concurrent inserts, the
post counts of user objects, and posts removed with their author's account.
Every route needs a session (§2). Where a test needs hundreds of posts it
writes them with psql; each registration costs a scrypt hash."""

import threading

import pytest

from test_users import (NO_USER, TIME_RE, assert_json_error, call, follow,
    ok_json, register, sql, unfollow)

POST_KEYS = {"id", "user_id", "username", "content", "created_at"}


# --- helpers ---------------------------------------------------------------

@pytest.fixture(scope="module")
def reader(server):
	"""One user for the tests that only need a session and whose posts, if
	any, no other test looks at."""
	return register(server)


def create(server, user, content="hello", status=201):
	r = call(server, "POST", "/posts", user, json={"content": content})
	return ok_json(r, status)


def check_post(p):
	assert set(p) == POST_KEYS, p
	assert isinstance(p["id"], int) and p["id"] > 0, p
	assert isinstance(p["user_id"], int), p
	assert TIME_RE.match(p["created_at"]), p
	return p


def ids(server, viewer, path):
	"""The post ids of a list route, checking each item's form."""
	items = ok_json(call(server, "GET", path, viewer))
	assert isinstance(items, list), items
	return [check_post(p)["id"] for p in items]


def bulk_posts(pg, user_id, n):
	"""n posts of user_id written straight into PostgreSQL: their ids,
	ascending."""
	return sorted(int(x) for x in sql(pg, "INSERT INTO posts (user_id, "
	    "content) SELECT %d, 'bulk ' || g FROM generate_series(1, %d) g "
	    "RETURNING id" % (user_id, n)))


def page_all(server, viewer, path, limit):
	"""Every id of a list route, page by page with before=<last id>."""
	out, before = [], None
	while True:
		q = "%s?limit=%d" % (path, limit)
		if before is not None:
			q += "&before=%d" % before
		page = ids(server, viewer, q)
		assert len(page) <= limit
		if not page:
			return out
		out += page
		before = page[-1]


# --- every route needs a session -------------------------------------------

ROUTES = [("POST", "/posts"), ("GET", "/posts/1"), ("DELETE", "/posts/1"),
    ("GET", "/users/1/posts"), ("GET", "/feed")]


@pytest.mark.parametrize("method,path", ROUTES)
@pytest.mark.parametrize("prefix", ["", "/v1"])
def test_every_route_is_401_without_a_valid_token(server, method, path,
    prefix):
	assert_json_error(call(server, method, prefix + path, None,
	    json={"content": "x"}), 401)
	assert_json_error(call(server, method, prefix + path, "A" * 43,
	    json={"content": "x"}), 401)


# --- POST /posts -----------------------------------------------------------

def test_create_answers_201_with_the_post(server):
	a = register(server)
	p = check_post(create(server, a, "hello, world"))
	assert (p["user_id"], p["username"], p["content"]) == (a["id"],
	    a["username"], "hello, world")
	q = check_post(create(server, a, "second"))
	assert q["id"] > p["id"]
	assert ok_json(call(server, "GET", "/v1/posts/%d" % p["id"], a)) == p


@pytest.mark.parametrize("content", [
	"",
	" ",
	" \t\r\n ",
	"\u3000",			# ideographic space
	"\u00a0\u2003\u3000\u2028",	# no-break, em space, line separator
	"x" * 1001,
	"\u00e9" * 1001,
	"\U0001f600" * 1001,
], ids=["empty", "space", "ascii-ws", "u3000", "unicode-ws", "1001-ascii",
    "1001-2byte", "1001-4byte"])
def test_content_rules(server, content):
	a = register(server)
	assert_json_error(call(server, "POST", "/posts", a,
	    json={"content": content}), 400, "content")
	assert ok_json(call(server, "GET", "/me", a))["posts"] == 0


@pytest.mark.parametrize("content", ["x", "x" * 1000, "\u00e9" * 1000,
    "\U0001f600" * 1000, " \u3000 a \u3000 ", "line\nbreak \"quoted\" \\"],
    ids=["1", "1000-ascii", "1000-2byte", "1000-4byte", "padded",
    "escapes"])
def test_content_up_to_1000_characters_of_any_script(server, reader,
    content):
	a = reader
	p = create(server, a, content)
	assert p["content"] == content
	assert ok_json(call(server, "GET", "/posts/%d" % p["id"], a)) == p


@pytest.mark.parametrize("body,mentions", [
	({"content": 5}, "content"),
	({"content": ["x"]}, "content"),
	({"content": None}, "content"),
	({"text": "hello"}, "content"),
	({}, "content"),
	('{"content": "x"', None),
	("not json", None),
	('["content"]', None),
	("", None),
])
def test_bad_bodies_are_400(server, body, mentions):
	a = register(server)
	kw = {"json": body} if isinstance(body, dict) else {"data": body}
	assert_json_error(call(server, "POST", "/posts", a, **kw), 400,
	    mentions)
	assert ok_json(call(server, "GET", "/me", a))["posts"] == 0


def test_create_by_a_deleted_user_is_401(server, pg):
	a = register(server)
	# The row goes, the session (in Redis) stays valid.
	sql(pg, "DELETE FROM users WHERE id = %d" % a["id"])
	assert_json_error(call(server, "POST", "/posts", a,
	    json={"content": "ghost"}), 401)
	assert sql(pg, "SELECT count(*) FROM posts WHERE user_id = %d"
	    % a["id"]) == ["0"]


# --- GET /posts/{id} -------------------------------------------------------

@pytest.mark.parametrize("pid", ["0", "-1", "abc", "1.5",
    "99999999999999999999"])
def test_get_bad_id_is_400(server, reader, pid):
	a = reader
	assert_json_error(call(server, "GET", "/posts/" + pid, a), 400)
	assert_json_error(call(server, "DELETE", "/posts/" + pid, a), 400)


def test_get_unknown_is_404(server, reader):
	a = reader
	assert_json_error(call(server, "GET", "/posts/%d" % NO_USER, a), 404)


def test_anyone_can_read_a_post(server):
	a, b = register(server), register(server)
	p = create(server, a, "public")
	assert ok_json(call(server, "GET", "/posts/%d" % p["id"], b)) == p


# --- DELETE /posts/{id} ----------------------------------------------------

def test_delete_own_is_204_and_the_post_is_gone(server):
	a, b = register(server), register(server)
	p = create(server, a)
	keep = create(server, a, "kept")
	r = call(server, "DELETE", "/posts/%d" % p["id"], a)
	assert r.status_code == 204, r.text
	assert r.content == b""
	assert_json_error(call(server, "GET", "/posts/%d" % p["id"], b), 404)
	assert ids(server, b, "/users/%d/posts" % a["id"]) == [keep["id"]]
	assert_json_error(call(server, "DELETE", "/posts/%d" % p["id"], a), 404)


def test_delete_someone_elses_is_403_and_changes_nothing(server):
	a, b = register(server), register(server)
	p = create(server, a)
	assert_json_error(call(server, "DELETE", "/posts/%d" % p["id"], b), 403)
	assert ok_json(call(server, "GET", "/posts/%d" % p["id"], b)) == p
	assert ok_json(call(server, "GET", "/me", a))["posts"] == 1


def test_delete_unknown_is_404(server, reader):
	a = reader
	assert_json_error(call(server, "DELETE", "/posts/%d" % NO_USER, a), 404)


# --- counts and account deletion -------------------------------------------

def test_post_counts_follow_creates_and_deletes(server):
	a, b = register(server), register(server)
	assert ok_json(call(server, "GET", "/me", a))["posts"] == 0
	p1, p2 = create(server, a), create(server, a)
	assert ok_json(call(server, "GET", "/me", a))["posts"] == 2
	assert ok_json(call(server, "GET", "/users/%d" % a["id"], b))["posts"] \
	    == 2
	assert call(server, "DELETE", "/posts/%d" % p1["id"], a).status_code \
	    == 204
	assert ok_json(call(server, "GET", "/me", a))["posts"] == 1
	assert ok_json(call(server, "GET", "/users/%d" % a["id"], b))["posts"] \
	    == 1
	assert ok_json(call(server, "GET", "/me", b))["posts"] == 0
	assert p2


def test_account_deletion_removes_posts(server, pg):
	a, b = register(server), register(server)
	assert follow(server, b, a).status_code == 200
	p = create(server, a, "soon gone")
	assert ids(server, b, "/feed") == [p["id"]]
	r = call(server, "DELETE", "/delete", a)
	assert r.status_code == 204, r.text
	assert_json_error(call(server, "GET", "/posts/%d" % p["id"], b), 404)
	assert_json_error(call(server, "GET", "/users/%d/posts" % a["id"], b),
	    404)
	assert ids(server, b, "/feed") == []
	assert sql(pg, "SELECT count(*) FROM posts WHERE user_id = %d"
	    % a["id"]) == ["0"]


# --- GET /users/{id}/posts -------------------------------------------------

def test_user_posts_newest_first_with_paging(server):
	a, b = register(server), register(server)
	made = [create(server, a, "post %d" % i) for i in range(7)]
	create(server, b, "not a's")
	want = [p["id"] for p in reversed(made)]
	items = ok_json(call(server, "GET", "/users/%d/posts" % a["id"], b))
	assert items == list(reversed(made))
	assert ids(server, b, "/users/%d/posts?limit=3" % a["id"]) == want[:3]
	assert ids(server, b, "/users/%d/posts?limit=3&before=%d"
	    % (a["id"], want[2])) == want[3:6]
	assert ids(server, b, "/users/%d/posts?before=%d"
	    % (a["id"], want[5])) == want[6:]
	assert ids(server, b, "/users/%d/posts?before=%d"
	    % (a["id"], want[6])) == []
	assert page_all(server, b, "/users/%d/posts" % a["id"], 2) == want


def test_user_posts_of_a_user_without_posts_is_empty(server):
	a = register(server)
	assert ids(server, a, "/users/%d/posts" % a["id"]) == []


def test_user_posts_unknown_user_is_404_bad_id_400(server):
	a = register(server)
	assert_json_error(call(server, "GET", "/users/%d/posts" % NO_USER, a),
	    404)
	assert_json_error(call(server, "GET", "/users/0/posts", a), 400)
	assert_json_error(call(server, "GET", "/users/x/posts", a), 400)


@pytest.mark.parametrize("path", ["/feed", "/users/1/posts"])
@pytest.mark.parametrize("query", ["limit=0", "limit=-1", "limit=x",
    "before=0", "before=x"])
def test_bad_paging_is_400(server, reader, path, query):
	a = reader
	assert_json_error(call(server, "GET", "%s?%s" % (path, query), a), 400)


# --- GET /feed -------------------------------------------------------------

def test_feed_holds_own_and_followed_posts_only(server):
	a, b, c, d = (register(server) for _ in range(4))
	early = create(server, b, "before the follow")
	assert follow(server, a, b).status_code == 200
	assert follow(server, a, d).status_code == 200
	# c follows a: that puts a's posts in c's feed, not c's in a's.
	assert follow(server, c, a).status_code == 200
	mine = create(server, a, "mine")
	theirs = create(server, b, "b's")
	create(server, c, "c's: not followed")
	dp = create(server, d, "d's")
	feed = ok_json(call(server, "GET", "/feed", a))
	assert feed == [dp, theirs, mine, early]
	assert unfollow(server, a, b).status_code == 200
	assert ids(server, a, "/feed") == [dp["id"], mine["id"]]
	# c's feed: c's own and a's (whom c follows).
	assert [p["user_id"] for p in ok_json(call(server, "GET", "/feed",
	    c))] == [c["id"], a["id"]]


def test_feed_of_a_new_user_is_empty(server):
	a = register(server)
	assert ok_json(call(server, "GET", "/feed", a)) == []


def test_feed_paging_and_clamp(server, pg):
	a, b, c = register(server), register(server), register(server)
	assert follow(server, a, b).status_code == 200
	assert follow(server, a, c).status_code == 200
	made = bulk_posts(pg, b["id"], 130) + bulk_posts(pg, c["id"], 100) + \
	    bulk_posts(pg, a["id"], 20)
	want = sorted(made, reverse=True)
	assert ids(server, a, "/feed") == want[:50]
	assert ids(server, a, "/feed?limit=1000") == want[:200]
	assert ids(server, a, "/feed?limit=200&before=%d" % want[199]) == \
	    want[200:]
	assert ids(server, a, "/feed?limit=7&before=%d" % want[10]) == \
	    want[11:18]
	assert ids(server, a, "/v1/feed?limit=1") == want[:1]
	assert page_all(server, a, "/feed", 33) == want
	assert ids(server, a, "/users/%d/posts?limit=500" % b["id"]) == \
	    sorted(made[:130], reverse=True)


def test_feed_interleaves_authors_by_id(server, pg):
	a, b, c = register(server), register(server), register(server)
	assert follow(server, a, b).status_code == 200
	assert follow(server, a, c).status_code == 200
	made = []
	for i in range(6):
		made.append(create(server, (a, b, c)[i % 3], "p%d" % i)["id"])
	want = list(reversed(made))
	assert page_all(server, a, "/feed", 2) == want
	assert page_all(server, a, "/feed", 1) == want


@pytest.mark.parametrize("path", ["feed", "user"])
def test_paging_under_concurrent_inserts(server, pg, path):
	a, b = register(server), register(server)
	assert follow(server, a, b).status_code == 200
	before = bulk_posts(pg, b["id"], 150) + bulk_posts(pg, a["id"], 50)
	route = "/feed" if path == "feed" else "/users/%d/posts" % b["id"]
	if path == "user":
		before = before[:150]
	stop = threading.Event()
	written = []

	def writer():
		i = 0
		while not stop.is_set():
			r = call(server, "POST", "/posts", (a, b)[i % 2],
			    json={"content": "live %d" % i})
			assert r.status_code == 201, r.text
			written.append(r.json()["id"])
			i += 1

	t = threading.Thread(target=writer)
	t.start()
	try:
		seen = page_all(server, a, route, 9)
	finally:
		stop.set()
		t.join()
	assert written, "the writer wrote nothing while the reader paged"
	assert len(seen) == len(set(seen)), "an item was repeated"
	assert seen == sorted(seen, reverse=True)
	assert sorted(set(seen) & set(before)) == before, "an item was skipped"
