"""GET /metrics: the Prometheus text format (version 0.0.4) of the whole
instance, summed over every worker and the hub from their shared memory.

The output is read by a strict parser of the text format of our own (every
sample line `name{labels} value`, a # TYPE before a family's samples, a
family's lines together, no series twice, label values escaped, histogram
buckets cumulative), and the counters are checked to move with traffic
whichever worker answers: HTTP requests by route and status class, chat
messages in and out, the WebSocket gauge, PostgreSQL queries; to never go
backwards when a worker is killed and replaced or all are replaced by a
reload; and to agree with the gochat:stats:* hashes that redis-cli shows."""

import itertools
import math
import os
import re
import signal
import time

import requests

import harness
from conftest import wait_for
from test_chat import (call, close_websockets, create_room,  # noqa: F401
    join, register)

CTYPE = "text/plain; version=0.0.4; charset=utf-8"
TYPES = {"counter", "gauge", "histogram", "summary", "untyped"}
NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
LABEL = r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"'
SAMPLE_RE = re.compile(r"^(%s)(?:\{(.*)\})? (\S+)(?: (-?\d+))?$" % NAME)
LABEL_RE = re.compile(LABEL)
SUFFIXES = {"histogram": ("_bucket", "_sum", "_count"),
    "summary": ("_sum", "_count")}


class Metrics:
	"""A parsed exposition: families {name: {"type", "help"}} and series
	{(name, frozenset of (label, value))}: float."""

	def __init__(self, families, series):
		self.families = families
		self.series = series

	def get(self, name, default=None, **labels):
		return self.series.get((name, frozenset(labels.items())), default)

	def value(self, name, **labels):
		v = self.get(name, **labels)
		assert v is not None, "no series %s%r in /metrics" % (name, labels)
		return v

	def total(self, name, **labels):
		"""The sum of every series of name whose labels include labels."""
		want = set(labels.items())
		return sum(v for (n, ls), v in self.series.items()
		    if n == name and want <= ls)


def unescape(v):
	return re.sub(r"\\(.)", lambda m: {"n": "\n"}.get(m.group(1),
	    m.group(1)), v)


def parse_labels(text, where):
	"""The labels of a sample, checking the whole text is well formed."""
	labels, pos = {}, 0
	while pos < len(text):
		m = LABEL_RE.match(text, pos)
		assert m, "%s: bad labels at %r" % (where, text[pos:])
		assert m.group(1) not in labels, "%s: label %s twice" % (where,
		    m.group(1))
		labels[m.group(1)] = unescape(m.group(2))
		pos = m.end()
		if pos < len(text):
			assert text[pos] == ",", "%s: expected ',' at %r" % (where,
			    text[pos:])
			pos += 1
			assert pos < len(text), "%s: trailing comma" % where
	return labels


def parse(text):
	"""Parse strictly; any departure from the text format fails."""
	assert text.endswith("\n"), "the exposition must end with a newline"
	families, series = {}, {}
	done = set()		# families whose lines are over
	current = None
	for no, line in enumerate(text[:-1].split("\n"), 1):
		where = "line %d %r" % (no, line)
		assert line.strip() == line and line, "%s: blank or padded" % where
		if line.startswith("#"):
			m = re.fullmatch(r"# (HELP|TYPE) (%s) (.*)" % NAME, line)
			if not m:
				assert not line.startswith(("# HELP", "# TYPE")), \
				    "%s: malformed" % where
				continue
			kind, name, rest = m.groups()
			assert name not in done, "%s: family %s is split" % (where, name)
			if current != name and current is not None:
				done.add(current)
			current = name
			fam = families.setdefault(name, {"type": None, "help": None,
			    "samples": 0})
			if kind == "TYPE":
				assert rest in TYPES, "%s: unknown type" % where
				assert fam["type"] is None, "%s: TYPE twice" % where
				assert fam["samples"] == 0, "%s: TYPE after samples" % where
				fam["type"] = rest
			else:
				assert fam["help"] is None, "%s: HELP twice" % where
				fam["help"] = rest
			continue
		m = SAMPLE_RE.match(line)
		assert m, "%s: not `name{labels} value`" % where
		name, ltext, value = m.group(1), m.group(2), m.group(3)
		fname = name
		for fam_name, fam in families.items():
			for suffix in SUFFIXES.get(fam["type"], ()):
				if name == fam_name + suffix:
					fname = fam_name
		assert fname in families and families[fname]["type"], \
		    "%s: no # TYPE before the samples of %s" % (where, fname)
		assert fname == current, "%s: sample of %s inside family %s" % (
		    where, fname, current)
		labels = parse_labels(ltext, where) if ltext else {}
		try:
			v = float(value)
		except ValueError:
			raise AssertionError("%s: value %r is not a number" % (where,
			    value))
		key = (name, frozenset(labels.items()))
		assert key not in series, "%s: series twice" % where
		series[key] = v
		families[fname]["samples"] += 1
		ftype = families[fname]["type"]
		if ftype == "counter":
			assert v >= 0 and not math.isnan(v), "%s: counter < 0" % where
	metrics = Metrics(families, series)
	for name, fam in families.items():
		if fam["type"] == "histogram":
			check_histogram(metrics, name)
	return metrics


def check_histogram(metrics, name):
	"""Buckets cumulative, ending in +Inf, which equals _count."""
	buckets = sorted((float(dict(ls)["le"]), v) for (n, ls), v in
	    metrics.series.items() if n == name + "_bucket")
	assert buckets and buckets[-1][0] == math.inf, "%s: no +Inf bucket" % name
	counts = [v for _, v in buckets]
	assert counts == sorted(counts), "%s: buckets not cumulative: %r" % (
	    name, buckets)
	assert metrics.value(name + "_count") == counts[-1], name
	assert metrics.value(name + "_sum") >= 0, name


def scrape(srv):
	"""GET /metrics on a new connection (so any worker may answer)."""
	r = requests.get(srv.base + "/metrics", timeout=10,
	    headers={"Connection": "close"})
	assert r.status_code == 200, (r.status_code, r.text)
	assert r.headers.get("Content-Type") == CTYPE, r.headers
	return parse(r.text)


def scrapes(srv, n=8):
	return [scrape(srv) for _ in range(n)]


def counters(m):
	"""Every counter series, and every histogram's, of a scrape."""
	out = {}
	for (name, ls), v in m.series.items():
		fam = name
		for suffix in ("_bucket", "_sum", "_count"):
			if name.endswith(suffix) and name[:-len(suffix)] in m.families:
				fam = name[:-len(suffix)]
		if m.families[fam]["type"] in ("counter", "histogram"):
			out[(name, ls)] = v
	return out


def assert_no_counter_went_back(before, after, what):
	b, a = counters(before), counters(after)
	back = {k: (v, a.get(k, 0)) for k, v in b.items() if a.get(k, 0) < v}
	assert not back, "%s: counters went backwards: %r" % (what, back)


# --- the format --------------------------------------------------------------------

def test_parser_rejects_what_the_format_forbids():
	good = "# HELP a_total A.\n# TYPE a_total counter\na_total{x=\"1\"} 2\n"
	parse(good)
	for bad in [
	    good[:-1],						# no final newline
	    "a_total 1\n",					# no TYPE
	    good + "a_total{x=\"1\"} 3\n",			# series twice
	    good.replace("{x=\"1\"}", "{x=1}"),		# unquoted label
	    good.replace("{x=\"1\"}", "{x=\"a\"b\"}"),	# unescaped quote
	    good.replace(" 2\n", " two\n"),			# not a number
	    good + "# TYPE b gauge\nb 1\na_total{x=\"2\"} 1\n",	# split family
	    good.replace("# TYPE a_total counter\n", "") + \
	        "# TYPE a_total counter\n",			# TYPE after samples
	    ]:
		try:
			parse(bad)
		except AssertionError:
			continue
		raise AssertionError("parsed: %r" % bad)


def test_metrics_is_prometheus_text_with_every_family(server):
	r = requests.get(server.base + "/metrics", timeout=10)
	assert r.status_code == 200
	assert r.headers["Content-Type"] == CTYPE
	assert "Set-Cookie" not in r.headers
	m = parse(r.text)
	want = {
	    "gochat_build_info": "gauge",
	    "gochat_start_time_seconds": "gauge",
	    "gochat_uptime_seconds": "gauge",
	    "gochat_processes": "gauge",
	    "gochat_process_start_time_seconds": "gauge",
	    "gochat_connections": "gauge",
	    "gochat_websockets": "gauge",
	    "gochat_rooms": "gauge",
	    "gochat_messages_in_total": "counter",
	    "gochat_messages_out_total": "counter",
	    "gochat_hub_leader": "gauge",
	    "gochat_hub_rooms": "gauge",
	    "gochat_hub_messages_total": "counter",
	    "gochat_hub_events_published_total": "counter",
	    "gochat_hub_inbox_entries_total": "counter",
	    "gochat_hub_inbox_lag_seconds": "gauge",
	    "gochat_hub_partition_leader": "gauge",
	    "gochat_hub_inbox_length": "gauge",
	    "gochat_hub_inbox_pending": "gauge",
	    "gochat_http_requests_total": "counter",
	    "gochat_db_queries_total": "counter",
	    "gochat_db_errors_total": "counter",
	    "gochat_db_query_duration_seconds": "histogram",
	    "gochat_redis_commands_total": "counter",
	    "gochat_redis_errors_total": "counter",
	    "gochat_redis_command_duration_seconds": "histogram",
	    "gochat_redis_shard_connections": "gauge",
	    "gochat_redis_failovers_total": "counter",
	}
	got = {n: f["type"] for n, f in m.families.items()}
	assert got == want, got
	for name, fam in m.families.items():
		assert fam["help"], "%s has no HELP" % name
	(build,) = [ls for (n, ls) in m.series if n == "gochat_build_info"]
	assert re.fullmatch(r"\d+\.\d+\.\d+.*", dict(build)["version"]), build
	assert m.value("gochat_processes", role="worker") == 2
	# One partition (the default), led by this instance's hub (the
	# hub's gauges move every second).
	led = lambda: parse(requests.get(server.base + "/metrics",
	    timeout=10).text)
	assert wait_for(lambda: led().value("gochat_hub_leader") == 1, 5)
	assert led().value("gochat_hub_partition_leader", partition="0") == 1
	def sampled():
		m = led()
		return m if [n for n, ls in m.series if n ==
		    "gochat_hub_inbox_pending"] else None
	m = wait_for(sampled, 5)
	assert m, "no inbox sample in /metrics"
	assert m.value("gochat_hub_inbox_pending", partition="0") == 0
	assert m.value("gochat_hub_inbox_length", partition="0") >= 0
	assert m.value("gochat_processes", role="hub") == 1
	# One Redis: shard 0, up for every process, no failover seen.
	for role, n in (("worker", 2), ("hub", 1)):
		assert m.value("gochat_redis_shard_connections", shard="0",
		    role=role, state="up") == n
		assert m.value("gochat_redis_shard_connections", shard="0",
		    role=role, state="down") == 0
		assert m.value("gochat_redis_failovers_total", shard="0",
		    role=role) == 0
	procs = [dict(ls) for (n, ls) in m.series
	    if n == "gochat_process_start_time_seconds"]
	assert sorted((p["role"], p["id"]) for p in procs) == [("hub", "0"),
	    ("worker", "1"), ("worker", "2")], procs
	now = time.time()
	assert now - 3600 < m.value("gochat_start_time_seconds") <= now + 1
	assert m.value("gochat_uptime_seconds") >= 0
	assert wait_for(lambda: scrape(server).value("gochat_hub_leader") == 1,
	    5), "the hub never became leader"


def test_head_metrics_has_the_headers_and_no_body(server):
	r = requests.head(server.base + "/metrics", timeout=10)
	assert r.status_code == 200 and r.text == ""
	assert r.headers["Content-Type"] == CTYPE
	assert requests.post(server.base + "/metrics", timeout=10).status_code \
	    == 405


# --- counters move with traffic -----------------------------------------------------

def test_health_requests_raise_the_2xx_count_whichever_worker_answers(server):
	before = scrape(server).value("gochat_http_requests_total",
	    route="/health", code="2xx")
	n = 20
	for _ in range(n):
		assert requests.get(server.base + "/health", timeout=10,
		    headers={"Connection": "close"}).status_code == 200
	# Each scrape is a new connection: the two workers answer some each.
	for m in scrapes(server):
		got = m.value("gochat_http_requests_total", route="/health",
		    code="2xx")
		assert got >= before + n, (before, got)


def test_v1_prefix_counts_under_the_same_route(server):
	user = register(server)
	key = dict(route="/users/{id}", code="2xx")
	before = scrape(server).get("gochat_http_requests_total", 0, **key)
	for path in ("/users/%d", "/v1/users/%d"):
		assert call(server, "GET", path % user["id"], user).status_code == 200
	assert scrape(server).value("gochat_http_requests_total", **key) >= \
	    before + 2


def test_a_404_counts_under_no_route_and_4xx(server):
	key = dict(route="none", code="4xx")
	before = scrape(server).get("gochat_http_requests_total", 0, **key)
	for i in range(5):
		r = requests.get(server.base + "/no/such/route/%d" % i, timeout=10)
		assert r.status_code == 404
	for m in scrapes(server, 4):
		assert m.value("gochat_http_requests_total", **key) >= before + 5


def test_a_405_counts_under_its_route(server):
	key = dict(route="/health", code="4xx")
	before = scrape(server).get("gochat_http_requests_total", 0, **key)
	assert requests.delete(server.base + "/health", timeout=10).status_code \
	    == 405
	assert scrape(server).value("gochat_http_requests_total", **key) >= \
	    before + 1


def test_chat_messages_in_and_out_rise_with_a_room_of_two(server):
	a, b = register(server), register(server)
	room = create_room(server, a)
	before = scrape(server)
	wa, wb = join(server, room, a), join(server, room, b)
	n = 5
	for i in range(n):
		wa.send("hello %d" % i)
	for i in range(n):
		wb.wait_content("hello %d" % i)
		wa.wait_content("hello %d" % i)

	def moved():
		m = scrape(server)
		ok = (m.value("gochat_messages_in_total") >=
		    before.value("gochat_messages_in_total") + n and
		    # each message reached both clients
		    m.value("gochat_messages_out_total") >=
		    before.value("gochat_messages_out_total") + 2 * n and
		    m.value("gochat_hub_messages_total") >=
		    before.value("gochat_hub_messages_total") + n and
		    m.value("gochat_hub_inbox_entries_total") >=
		    before.value("gochat_hub_inbox_entries_total") + n + 2)
		return m if ok else None
	m = wait_for(moved, 3)
	assert m, "message counters did not move: before %r, after %r" % (
	    counters(before), counters(scrape(server)))
	assert m.value("gochat_hub_events_published_total") >= \
	    before.value("gochat_hub_events_published_total") + n + 2
	assert m.value("gochat_rooms") >= 1 and m.value("gochat_hub_rooms") >= 1


def test_websocket_gauge_is_up_while_joined_and_down_after_close(server):
	a, b = register(server), register(server)
	room = create_room(server, a)
	base = scrape(server).value("gochat_websockets")
	wa, wb = join(server, room, a), join(server, room, b)
	for m in scrapes(server, 4):
		assert m.value("gochat_websockets") >= base + 2
		assert m.value("gochat_connections") >= m.value("gochat_websockets")
	wa.close()
	wb.abort()
	assert wait_for(lambda: scrape(server).value("gochat_websockets") <=
	    base, 3), "websockets gauge still %r (was %r)" % (
	    scrape(server).value("gochat_websockets"), base)


def test_a_query_raises_the_postgresql_counts(server):
	user = register(server)
	before = scrape(server)
	for _ in range(3):
		assert call(server, "GET", "/me", user).status_code == 200
	after = scrape(server)
	assert after.value("gochat_db_queries_total") >= \
	    before.value("gochat_db_queries_total") + 3
	assert after.value("gochat_db_query_duration_seconds_count") >= \
	    before.value("gochat_db_query_duration_seconds_count") + 3
	assert after.value("gochat_db_query_duration_seconds_sum") > \
	    before.value("gochat_db_query_duration_seconds_sum")
	# Sessions live in Redis: each request asked it.
	assert after.value("gochat_redis_commands_total") >= \
	    before.value("gochat_redis_commands_total") + 3
	assert after.value("gochat_redis_command_duration_seconds_count") > \
	    before.value("gochat_redis_command_duration_seconds_count")


def test_a_refused_query_counts_as_an_sql_error(server):
	a = register(server)
	room = create_room(server, a)
	before = scrape(server).value("gochat_db_errors_total", kind="sql")
	# A taken room id: the INSERT is refused by the unique constraint.
	r = call(server, "POST", "/ws/createRoom", a, json={"id": room})
	assert r.status_code == 409
	assert scrape(server).value("gochat_db_errors_total", kind="sql") >= \
	    before + 1


# --- counters never go backwards -----------------------------------------------------

_prefixes = itertools.count(1)


def own_server(make_server):
	"""A server of the test's own, with a Redis prefix of its own: the
	module's server shares the Redis, and its hub must not take this one's
	inbox (nor this one's hub the module server's)."""
	srv = make_server(redis_prefix="gm%d_%d:" % (os.getpid(),
	    next(_prefixes)))
	assert wait_for(lambda: len(srv.workers()) == 2 and srv.hubs(), 5)
	return srv


def traffic(srv, n=10):
	for i in range(n):
		requests.get(srv.base + "/health", timeout=10,
		    headers={"Connection": "close"})
		requests.get(srv.base + "/nope%d" % i, timeout=10,
		    headers={"Connection": "close"})


def test_counters_survive_a_killed_worker(make_server):
	srv = own_server(make_server)
	traffic(srv)
	before = scrapes(srv, 4)
	top = before[0]
	for m in before[1:]:
		for k, v in counters(m).items():
			if v > counters(top).get(k, 0):
				top = m
	old = srv.workers()
	os.kill(old[1], signal.SIGKILL)
	new = wait_for(lambda: (lambda w: w if w.get(1) not in (None, old[1])
	    and len(w) == 2 else None)(srv.workers()), 5)
	assert new, "worker 1 not replaced: %r" % srv.children()
	for m in before:
		for after in scrapes(srv, 4):
			assert_no_counter_went_back(m, after, "after SIGKILL")
	assert wait_for(lambda: scrape(srv).value("gochat_processes",
	    role="worker") == 2, 5)
	# And it goes on counting.
	h = scrape(srv).value("gochat_http_requests_total", route="/health",
	    code="2xx")
	traffic(srv, 3)
	assert scrape(srv).value("gochat_http_requests_total", route="/health",
	    code="2xx") >= h + 3


def test_counters_survive_a_reload_and_a_killed_hub(make_server):
	srv = own_server(make_server)
	traffic(srv)
	before = scrape(srv)
	old = set(srv.workers().values()) | set(srv.hubs())
	srv.signal(signal.SIGHUP)
	# The reload replaces the hub last; wait for all of it, reading the
	# process table once per try (it changes between two reads).
	assert wait_for(lambda: (lambda w, h: not old & set(w + h) and
	    len(w) == 2 and len(h) == 1)(list(srv.workers().values()),
	    srv.hubs()), 15), "workers and hub not replaced on HUP"
	for after in scrapes(srv, 4):
		assert_no_counter_went_back(before, after, "after HUP")
	before = scrape(srv)
	hub = srv.hubs()[0]
	os.kill(hub, signal.SIGKILL)
	assert wait_for(lambda: (lambda h: len(h) == 1 and h[0] != hub)(
	    srv.hubs()), 5), "killed hub not replaced"
	for after in scrapes(srv, 4):
		assert_no_counter_went_back(before, after, "after the hub's SIGKILL")
	# One slot per live process, however many came and went.
	assert wait_for(lambda: (lambda m: m.value("gochat_processes",
	    role="worker") == 2 and m.value("gochat_processes", role="hub") ==
	    1)(scrape(srv)), 5)


# --- /metrics and redis-cli agree ---------------------------------------------------

def stats_hashes(srv, redis, pids):
	"""{pid: <prefix>stats:<host>:<pid> as a dict} of those pids."""
	return harness.stats_hashes(redis.port, pids, srv.conf["redis_prefix"])


def test_metrics_and_the_stats_hashes_agree(make_server, redis):
	srv = own_server(make_server)
	a, b = register(srv), register(srv)
	room = create_room(srv, a)
	wa, wb = join(srv, room, a), join(srv, room, b)
	for i in range(7):
		(wa if i % 2 else wb).send("m%d" % i)
	for i in range(7):
		wa.wait_content("m%d" % i)
		wb.wait_content("m%d" % i)

	seen = []

	def agree():
		st = stats_hashes(srv, redis, set(srv.workers().values()))
		hub = stats_hashes(srv, redis, set(srv.hubs()))
		m = scrape(srv)
		if len(st) != 2 or len(hub) != 1:
			seen.append((st, hub))
			return None
		hub = list(hub.values())[0]
		pairs = [
		    (m.value("gochat_messages_in_total"),
		     sum(int(h["messages_in"]) for h in st.values())),
		    (m.value("gochat_messages_out_total"),
		     sum(int(h["messages_out"]) for h in st.values())),
		    (m.value("gochat_websockets"),
		     sum(int(h["websockets"]) for h in st.values())),
		    (m.value("gochat_hub_messages_total"), int(hub["messages_in"])),
		    (m.value("gochat_hub_events_published_total"),
		     int(hub["messages_out"])),
		]
		seen.append(pairs)
		return pairs if all(x == y for x, y in pairs) else None
	got = wait_for(agree, 5, 0.3)
	assert got, "/metrics and the stats hashes disagree: (metrics, " \
	    "hashes) %r" % seen[-1]
	assert got[0][0] >= 7 and got[2][0] == 2, got
	wa.close()
	wb.close()
