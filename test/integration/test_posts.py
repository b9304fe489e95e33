"""Posts and the feed (SPEC.md §4), seen by a client: creating a post (the
201 object, the content rules), reading and deleting one (only the author:
403 for others, 404 for none), a user's posts and the feed (the caller's
own posts and those of everyone followed) newest first with limit/before
keyset paging that neither repeats nor skips under concurrent inserts, the
post counts of user objects, and posts removed with their author's account.
Every route needs a session (§2). Where a test needs hundreds of posts it
writes them with psql; each registration costs a scrypt hash."""

import os
import re
import subprocess
import threading
import time

import pytest
import requests

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
	assert isinstance(p["username"], str) and p["username"], p
	assert isinstance(p["content"], str) and p["content"].strip(), p
	assert isinstance(p["created_at"], str), p
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


def page_all(server, viewer, path, limit, pages=None):
	"""Every id of a list route, page by page with before=<last id>. With
	pages (a list), each page's (time sent, before, its last id) goes
	there: the page covers the ids from its last one up to before."""
	out, before = [], None
	while True:
		q = "%s?limit=%d" % (path, limit)
		if before is not None:
			q += "&before=%d" % before
		sent = time.monotonic()
		page = ids(server, viewer, q)
		assert len(page) <= limit
		if pages is not None:
			pages.append((sent, before if before is not None else 2 ** 63,
			    page[-1] if page else 0))
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


# Invalid UTF-8 as raw bytes breaks the JSON text itself (RFC 8259 §8.1):
# the parser cannot say which member held it, so the error names UTF-8.
# Escapes that decode to no valid character are valid JSON: the error
# names content.
@pytest.mark.parametrize("body,mentions", [
	(b'{"content": "\xff"}', "UTF-8"),
	(b'{"content": "a\xc0\xafb"}', "UTF-8"),		# overlong '/'
	(b'{"content": "\xed\xa0\x80"}', "UTF-8"),	# encoded U+D800
	(b'{"content": "ok \xe2\x82"}', "UTF-8"),	# 2 of 3 bytes, then '"'
	(b'{"content": "ok \xf0\x9f\x98"}', "UTF-8"),	# 3 of 4 bytes
	(b'{"content": "\\ud800"}', "content"),		# lone surrogate
	(b'{"content": "a\\udc00b"}', "content"),
	(b'{"content": "a\\u0000b"}', "content"),		# NUL
], ids=["ff", "overlong", "surrogate-bytes", "truncated-3", "truncated-4",
    "escaped-high-surrogate", "escaped-low-surrogate", "escaped-nul"])
def test_content_that_is_not_valid_utf8_is_400(server, body, mentions):
	a = register(server)
	assert_json_error(requests.post(server.base + "/posts", data=body,
	    headers={"Authorization": "Bearer " + a["token"],
	    "Content-Type": "application/json"}, timeout=10), 400, mentions)
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
    "limit=", "limit", "limit=000", "limit=+5", "limit=%2B5", "limit=-0",
    "limit=1e3", "limit=5x", "limit=%205", "limit=-99999999999999999999",
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


def test_feed_of_a_deleted_user_is_401(server, pg):
	a, b = register(server), register(server)
	assert follow(server, a, b).status_code == 200
	create(server, a, "mine")
	create(server, b, "theirs")
	# The row goes (with its follows and posts), the session stays.
	sql(pg, "DELETE FROM users WHERE id = %d" % a["id"])
	for q in ("/feed", "/v1/feed?limit=5", "/feed?before=%d" % NO_USER):
		assert_json_error(call(server, "GET", q, a), 401, "no longer")
	# b's own feed is unaffected, and an empty feed is still [].
	assert len(ids(server, b, "/feed")) == 1
	assert ids(server, b, "/feed?before=1") == []


def test_feed_paging_and_clamp(server, pg):
	a, b, c = register(server), register(server), register(server)
	assert follow(server, a, b).status_code == 200
	assert follow(server, a, c).status_code == 200
	made = bulk_posts(pg, b["id"], 130) + bulk_posts(pg, c["id"], 100) + \
	    bulk_posts(pg, a["id"], 20)
	want = sorted(made, reverse=True)
	assert ids(server, a, "/feed") == want[:50]
	assert ids(server, a, "/feed?limit=1000") == want[:200]
	# Any number of digits above 200 is clamped (SPEC §3), zeros or not.
	for lim in ("201", "99999999999999999999", "0000201", "00200",
	    "9223372036854775808", "1" * 500, "0" * 300 + "300"):
		assert ids(server, a, "/feed?limit=" + lim) == want[:200], lim
		assert ids(server, a, "/users/%d/posts?limit=%s" % (b["id"],
		    lim)) == sorted(made[:130], reverse=True), lim
	assert ids(server, a, "/feed?limit=007") == want[:7]
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
	"""SPEC §3/§4: paging neither repeats nor skips while others write.
	Three writers commit concurrently, so a post can commit after one
	with a higher id. What a traversal promises (README): no id twice,
	newest first, every post that existed when it began, and every post
	committed before the page covering its id was asked for. A post
	committed later with an id below the page being read (its id was
	taken before a higher one committed) is not in this traversal; a new
	one from the top shows it."""
	a, b = register(server), register(server)
	assert follow(server, a, b).status_code == 200
	before = bulk_posts(pg, b["id"], 150) + bulk_posts(pg, a["id"], 50)
	route = "/feed" if path == "feed" else "/users/%d/posts" % b["id"]
	authors = {a["id"], b["id"]} if path == "feed" else {b["id"]}
	if path == "user":
		before = before[:150]
	stop = threading.Event()
	written, errors = [], []	# (time acknowledged, id, author)

	def writer(n):
		i = 0
		try:
			while not stop.is_set():
				who = (a, b)[(i + n) % 2]
				r = call(server, "POST", "/posts", who,
				    json={"content": "live %d.%d" % (n, i)})
				if r.status_code != 201:
					errors.append("writer %d: %d %s" % (n, r.status_code,
					    r.text))
					return
				written.append((time.monotonic(), r.json()["id"], who["id"]))
				i += 1
		except Exception as e:	# noqa: BLE001 -- reported below
			errors.append("writer %d: %r" % (n, e))

	threads = [threading.Thread(target=writer, args=(n,)) for n in range(3)]
	for t in threads:
		t.start()
	pages = []
	try:
		time.sleep(0.1)		# the writers are writing
		seen = page_all(server, a, route, 9, pages)
	finally:
		stop.set()
		for t in threads:
			t.join()
	assert not errors, errors
	assert len(written) >= 3, "the writers wrote %d posts while the reader " \
	    "paged" % len(written)
	assert len(seen) == len(set(seen)), "an item was repeated"
	assert seen == sorted(seen, reverse=True)
	assert sorted(set(seen) & set(before)) == before, "an item was skipped"
	got = set(seen)
	for acked, pid, author in written:
		if author not in authors:
			continue
		page = next(p for p in pages if p[2] <= pid < p[1])
		if acked < page[0]:
			assert pid in got, "post %d was committed before the page " \
			    "covering it was asked for, and skipped" % pid
	assert {pid for _, pid, _ in written} >= got - set(before)


# --- the plans of the feed and user-posts queries --------------------------

SRCDIR = os.environ.get("GOCHAT_SRCDIR") or os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "..")


def server_sql(name):
	"""The SQL constant `name` of workers/api_posts.c exactly as the server
	sends it: the #defines of api.h and api_posts.c and name's initializer
	run through the C preprocessor, then the string literals joined."""
	text = ""
	for f in ("workers/api.h", "workers/api_posts.c"):
		with open(os.path.join(SRCDIR, f)) as fh:
			text += fh.read()
	text = text.replace("\\\n", " ")
	defines = [l for l in text.splitlines() if l.startswith("#define")]
	m = re.search(r"\b%s\[\]\s*=([^;]*);" % name, text)
	assert m, "no %s in workers/api_posts.c" % name
	r = subprocess.run([os.environ.get("CC") or "cc", "-E", "-P", "-x", "c",
	    "-"], input="\n".join(defines) + "\nx = " + m.group(1) + ";\n",
	    capture_output=True, text=True, check=True)
	body = r.stdout[r.stdout.index("x ="):]
	lits = re.findall(r'"((?:[^"\\]|\\.)*)"', body)
	return "".join(re.sub(r"\\(.)", r"\1", l) for l in lits)


def feed_sql_of_the_bench():
	"""test/bench/feed.sql's query (what pgbench runs and check_feed_sql()
	compares) with $1..$3 put back for its pgbench spellings."""
	with open(os.path.join(SRCDIR, "test/bench/feed.sql")) as f:
		q = "".join(l for l in f if not l.startswith(("--", "\\")))
	q = q.replace("' || chr(58) || '", ":").replace(":uid", "$1")
	q = q.replace("9223372036854775807", "$2").replace("LIMIT 50", "LIMIT $3")
	return " ".join(q.split()).rstrip(";")


def test_feed_sql_is_what_the_server_runs_and_the_bench_measures(server, pg):
	a, b, c = register(server), register(server), register(server)
	assert follow(server, a, b).status_code == 200
	bulk_posts(pg, b["id"], 30)
	bulk_posts(pg, a["id"], 5)
	bulk_posts(pg, c["id"], 5)
	q = server_sql("posts_feed_sql")
	assert " ".join(q.split()) == feed_sql_of_the_bench(), \
	    "test/bench/feed.sql no longer runs the server's feed query"
	for lim, bef in ((50, 2 ** 63 - 1), (7, NO_USER)):
		rows = sql(pg, "PREPARE f AS %s; EXECUTE f(%d, %d, %d)" % (q,
		    a["id"], bef, lim))
		assert [int(r.split("|")[0]) for r in rows] == ids(server, a,
		    "/feed?limit=%d&before=%d" % (lim, bef))


def plan(pg, db, sqltext, args):
	"""EXPLAIN of sqltext as a prepared statement run with args: a custom
	plan for these values, as for the server's unnamed statements."""
	return pg.psql("SET plan_cache_mode = force_custom_plan; PREPARE q AS "
	    "%s; EXPLAIN EXECUTE q(%s)" % (sqltext, ", ".join(str(x) for x in
	    args)), dbname=db)


# A skewed graph in the proportions of test/bench/seed.py's large one,
# small enough to load in seconds: 5,000 users; 300,000 posts (60 per
# author) and 3,000 more by the celebrity (1 %); the heavy reader follows
# 2,000 authors, the typical one 100; the celebrity has 3,000 followers;
# everyone else follows 20. (seed.py --small is too small for this: with
# 20,000 posts a 200-post page is rightly fetched by a hash join over a
# sequential scan of the whole table, and its celebrity writes 8 % of all
# posts, so walking posts_pkey backwards finds 50 of them soonest.)
PLAN_SEED = """
SET synchronous_commit = off;
SELECT setseed(0.42);
INSERT INTO users (id, username, email, password_hash)
OVERRIDING SYSTEM VALUE
SELECT i, 'p' || i, 'p' || i || '@example.test', 'x'
FROM generate_series(1, 5000) i;
INSERT INTO user_followers (follower_id, following_id)
SELECT 5000, g FROM generate_series(1, 2000) g
UNION ALL SELECT 4999, g FROM generate_series(1, 100) g
UNION ALL SELECT g, 1 FROM generate_series(2, 3001) g
UNION SELECT f, t FROM (SELECT f, 2 + floor(4990 * random() ^ 2)::int t
    FROM generate_series(2, 4998) f, generate_series(1, 20)) r WHERE t <> f
ON CONFLICT DO NOTHING;
INSERT INTO posts (user_id, content)
SELECT CASE WHEN i <= 300000 THEN 1 + (i::bigint * 7919) % 5000 ELSE 1 END,
       'post ' || i || ' about nothing in particular'
FROM generate_series(1, 303000) i;
"""


def test_feed_and_user_posts_plans_use_the_author_index(pg):
	"""Both list queries, exactly as the server sends them, read posts
	through posts_user_id (user_id, id DESC) and never scan the posts
	table, for a heavy and a typical reader and for the celebrity and an
	ordinary author, first page and a later 200-post page (sql/FEED.md)."""
	db = "feedplan"
	pg.psql("DROP DATABASE IF EXISTS %s" % db)
	pg.create_database(db)
	try:
		pg.psql(open(os.path.join(SRCDIR, "sql/001_schema.sql")).read(),
		    dbname=db)
		pg.psql(PLAN_SEED, dbname=db)
		pg.psql("VACUUM ANALYZE users, user_followers, posts", dbname=db)
		mid = 150000
		feed = server_sql("posts_feed_sql")
		user = server_sql("posts_user_list_sql")
		# (what, sql, args, whether the authors have more posts than the
		# limit: then posts must be read in order, stopped by LIMIT; an
		# ordinary author's 30 posts below mid may be read all at once by
		# a bitmap scan of posts_user_id and sorted.)
		cases = [("feed", feed, (u, bef, lim), True) for u in (5000, 4999)
		    for bef, lim in ((2 ** 63 - 1, 50), (mid, 200))]
		cases += [("user posts", user, (1, 2 ** 63 - 1, 50), True),
		    ("user posts", user, (1, mid, 200), True),
		    ("user posts", user, (77, 2 ** 63 - 1, 50), True),
		    ("user posts", user, (77, mid, 200), False)]
		for what, q, args, ordered in cases:
			p = plan(pg, db, q, args)
			msg = "%s %r:\n%s" % (what, args, p)
			assert not re.search(r"Seq Scan on posts", p), msg
			assert re.search(r"(Index|Index Only|Bitmap Index) Scan (using|"
			    r"on) posts_user_id", p), msg
			if ordered:
				assert re.search(r"Index (Only )?Scan using posts_user_id "
				    r"on posts", p), msg
				assert "Bitmap Heap Scan on posts" not in p, msg
	finally:
		pg.psql("DROP DATABASE IF EXISTS %s" % db)
