#!/usr/bin/python3
"""make bench: GoChat under load, each figure next to a reference run in
the same run on the same machine.

Standard library only. Starts a private PostgreSQL, Redis and gochat (one
worker per core) with test/harness.py in a temporary directory, registers
one user through the API (for a real scrypt hash), seeds a data set with
test/bench/seed.py, adds the load users lg0..lgN-1 (rows inserted straight
into PostgreSQL with that hash) and writes every session into Redis the way
workers/auth.c does (no scrypt per user), then runs:

  feed    wrk GET /feed (feed.lua)            | pgbench feed.sql
          as the 64 bench users (each follows ~100 authors)
  feed_heavy  wrk GET /feed as seed.py's heavy reader (5,000 follows at
          --size large, 2,000 at medium) | pgbench feed.sql's query with
          -D uid=<that user>
  posts   wrk POST /posts (posts.lua)         | pgbench posts.sql
  tiny    loadgen http GET / (the web client from memory), 64 connections
                                              | nginx serving the same file
                                                (nginx.conf.in), same workers
  api     loadgen http GET /me, 64 connections | pgbench me.sql, -c 64
          (and redis-benchmark GET of a session key: the session lookup)
          loadgen http POST /follow + /unfollow | pgbench follow.sql +
                                                unfollow.sql, -c 64
  chat    loadgen chat: rooms of 100 and 1,000 clients, 10 senders, closed
          loop (deliveries/s), then open loop at fixed rates into the
          1,000-client room (latency percentiles; plot.gp draws
          OUT/chat-latency.png) | redis-benchmark PUBLISH (the Redis hop's
          ceiling); the floor (test/bench/floor, same load) and the
          storing floor (floor -S: inbox, store, PUBLISH), closed loop
          and at 200 messages/s
  login   loadgen chat, 100 clients at 200 messages/s, alone and during a
          storm of POST /login (loadgen http): chat p99 with / without
  idle    loadgen idle: 10,000 and 100,000 joined WebSockets in rooms of
          ~30, a small chat flowing; server memory per connection (sum of
          PSS of every gochat process, after - before, / N). 100,000 needs
          more file descriptors than 2 workers have (20,000 each here):
          the server is restarted with enough workers for it.
  intake  loadgen chat, every client a sender, closed loop: 2,000 clients
          in rooms of 10, 1,000 in rooms of 2 (messages/s accepted and
          delivered, nothing lost, repeated or reordered per room and
          sender, every echoed message stored in PostgreSQL), then 5,000
          messages/s in rooms of 10 (p50, p99, p99.9); per-process CPU of
          each run (workers, hub, Redis, PostgreSQL, loadgen) and CPU-us
          per message | pgbench inserting the hub's batches (the hub's
          statement, 256 rows, -M prepared, 2 connections like its store
          pool), redis-benchmark XADD of a worker's entry and XREADGROUP
          COUNT 256, and the storing floor (floor -S) on the closed loops'
          load. Then rooms of 10 with partitions = 16 on one instance
          and on two sharing PostgreSQL and Redis (skipped when gochat -t
          does not know the key partitions).

Prints a table (with the targets, met or missed) and writes
OUT/results.json: one object per measured comparison with the figures, the
reference figures, their ratio, the target and the exact commands.
Everything it started is stopped at the end, on errors and on Ctrl-C.

Usage:
  bench.py --bin ./gochat --srcdir . --out ./bench [--loadgen PATH]
           [--only tiny,api,chat,idle,login,feed,feed_heavy,posts,intake]
           [--quick]
           [--size small|medium|large] [--duration 8] [--keep]
--quick: 3 s runs, small data set, three open-loop rates, 10,000 idle only.
Needs wrk, pgbench, redis-benchmark, nginx and gnuplot (the plot is skipped
without it) and test/bench/loadgen (make test/bench/loadgen); exits 2 when
one that a chosen scenario needs is missing.
"""

import argparse
import glob
import hashlib
import http.client
import json
import math
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))	# test/, for harness
import harness  # noqa: E402

SIZES = {
	# users, posts, extra seed.py arguments
	"small": (2000, 20000, ["--celebrity-followers", "1000",
	    "--heavy-follows", "500"]),
	"medium": (50000, 250000, ["--celebrity-followers", "25000",
	    "--heavy-follows", "2000"]),
	"large": (200000, 1000000, []),
}
ALL = ("feed", "feed_heavy", "posts", "tiny", "api", "chat", "login", "idle",
    "intake")
BENCH_USERS = 64
PASSWORD = "bench-password-1234"
SESSION_TTL = 86400
PREFIX = "gochat:"
FD_LIMIT_HEADROOM = 0.75	# use at most this share of a process's fds

# Targets of the issue: reported as met or missed, never asserted.
T_TINY = 0.9		# GET / req/s >= 0.9 x nginx
T_DB = 0.8		# DB-bound API req/s >= 0.8 x pgbench on the same SQL
T_DELIV = 1000000	# 1,000-client room, closed loop: deliveries/s
T_RATE = 200		# messages/s into the 1,000-client room ...
T_P99, T_P999 = 10.0, 25.0	# ... p99 and p99.9 (ms) at that rate
# The same scenarios against the fan-out floor (test/bench/floor.c), in
# the same run: GoChat / floor.
T_FLOOR_DELIV = 0.7	# closed loop, 1,000-client room: deliveries/s >= 0.7 x
T_FLOOR_P99, T_FLOOR_P999 = 1.5, 2.0	# at T_RATE: p99 <= 1.5 x, p99.9 <= 2 x
T_IDLE_B = 4096		# server bytes per idle WebSocket
T_LOGIN = 1.2		# chat p99 during a login storm / alone
T_INTAKE_2 = 66000	# rooms of 2, all senders, closed loop: messages/s
T_INTAKE_10 = 45000	# rooms of 10, the same
T_INTAKE_RATE = 5000	# messages/s into rooms of 10 ...
T_INTAKE_P99 = 10.0	# ... p99 (ms) at that rate

# The intake scenario's references copy the hub's store (hub/store.c):
# its statement (the id and inbox id made unique per pgbench transaction,
# one addition and one concatenation per row more), its batch (hub.c's
# HUB_BATCH entries per XREADGROUP) and its pool (STORE_POOL_SIZE).
INTAKE_BATCH = 256
INTAKE_STORE_CONNS = 2
# The storing floor (test/bench/floor.c -S) runs the intake's closed loops
# and the chat's target rate too, with this many hub threads, each one
# batch in flight: two came out ahead of one (a batch is read while the
# last is stored) and level with four in rooms of 2.
STORE_FLOOR_HUBS = 2
INTAKE_MSG = 64		# loadgen's message size (-l default)
INTAKE_PIPELINE = 64	# XADDs in flight per connection in the reference
INTAKE_DRAIN = 5	# s after a run for the messages still in flight: one
			# echoed to its sender and not yet to the others of its
			# room when loadgen stops counts as lost
# The reference runs the statement hub/store.c writes a batch of plain
# messages with (store_insert_plain_fast_sql, the first try; else
# store_insert_plain_sql, else store_insert_sql), read from the source
# (c_string()): $N become pgbench variables :pN, and the message
# id and the inbox id are made unique per transaction (one addition and
# one concatenation per row more than the hub's). Two shapes are known:
# the first edition's, one JSON array, and issue 13's, one array per
# column ($1 partition, $2 epoch, $3.. room, id, user, username, content,
# inbox id, ms) fenced by the partition's epoch in hub_partitions;
# partition INTAKE_REF_PARTITION is the reference's own row. Any other
# statement: the first edition's is run, with a note.
INTAKE_STORE_FIRST = (
    "INSERT INTO messages (room_id, id, user_id, username, content, "
    "inbox_id, created_at) SELECT room_id, id, user_id, username, content, "
    "inbox_id, created_at FROM json_populate_recordset(NULL::messages, "
    "$1::json) ON CONFLICT (inbox_id) DO NOTHING RETURNING inbox_id")
INTAKE_SHAPES = (
    # kind, the hub's text, what makes it unique, what it must hold
    ("json", "SELECT room_id, id, user_id, username, content, inbox_id, "
     "created_at FROM", "SELECT room_id, id + :base::bigint, user_id, "
     "username, content, inbox_id || '-' || :base, created_at FROM",
     "json_populate_recordset(NULL::messages, $1::json)"),
    ("unnest", "SELECT v.r, v.m, v.u, v.n, v.c, v.x,", "SELECT v.r, "
     "v.m + :base::bigint, v.u, v.n, v.c, v.x || '-' || :base,",
     "unnest($3::text[], $4::bigint[], $5::bigint[], $6::text[], "
     "$7::text[], $8::text[], $9::bigint[])"),
    ("unnest", "SELECT b.r, b.m, b.u, b.n, b.c, b.x,", "SELECT b.r, "
     "b.m + :base::bigint, b.u, b.n, b.c, b.x || '-' || :base,",
     "$11::bigint[], $12::text[]"),
)
INTAKE_REF_PARTITION = 1023
# Two instances: the keys both get (SPEC section 11; gochat -t must know
# them, else the run is skipped), and how long the hubs get to share the
# partitions after the second one starts.
INTAKE_PARTITIONS = 16
INTAKE_PARTITIONS_KEYS = (("partitions", str(INTAKE_PARTITIONS)),)
INTAKE_SETTLE = 8


class Stop(Exception):
	"""SIGINT or SIGTERM arrived."""


def c_string(src, name):
	"""The text of C's `static const char name[] = ...;`: adjacent string
	literals and macros #defined as such, with one parameter or none
	(hub/store.c's statements are made of them), or None."""
	macros = {}
	for m in re.finditer(r'^#define\s+(\w+)(?:\((\w+)\))?[ \t]+'
	    r'((?:[^\n]*\\\n)*[^\n]*)', src, re.M):
		macros[m.group(1)] = (m.group(2), m.group(3).replace("\\\n", " "))
	m = re.search(r'\b%s\[\]\s*=([^;]*);' % re.escape(name), src)
	if m is None:
		return None
	token = re.compile(r'\s*(?:"((?:[^"\\]|\\.)*)"|(\w+)|(\()|(\)))')

	def seq(text, pos, env, depth):
		"""(parts, position after them): literals up to ')' or the end."""
		parts = []
		while True:
			t = token.match(text, pos)
			if t is None or t.group(4) is not None:
				return parts, pos
			pos = t.end()
			lit, ident = t.group(1), t.group(2)
			if lit is not None:
				parts.append(lit)
				continue
			if ident is None or depth > 8:
				raise ValueError(ident)
			if ident in env:
				parts += env[ident]
				continue
			if ident not in macros:
				raise ValueError(ident)
			param, body = macros[ident]
			sub = {}
			if param is not None:
				t = token.match(text, pos)
				if t is None or t.group(3) is None:
					raise ValueError(ident)
				arg, pos = seq(text, t.end(), env, depth + 1)
				t = token.match(text, pos)
				if t is None or t.group(4) is None:
					raise ValueError(ident)
				pos = t.end()
				sub = {param: arg}
			got, end = seq(body, 0, sub, depth + 1)
			if body[end:].strip():
				raise ValueError(ident)
			parts += got
	try:
		parts, end = seq(m.group(1), 0, {}, 0)
	except ValueError:
		return None
	if m.group(1)[end:].strip():
		return None
	return "".join(parts).replace('\\"', '"')


def on_signal(sig, frame):
	raise Stop(signal.Signals(sig).name)


def log(msg):
	print("bench: " + msg, file=sys.stderr, flush=True)


def pgbench_path():
	for p in (shutil.which("pgbench"),
	    "/usr/lib/postgresql/15/bin/pgbench",
	    *sorted(glob.glob("/usr/lib/postgresql/*/bin/pgbench"), reverse=True)):
		if p and os.access(p, os.X_OK):
			return p
	return None


def api(base_host, port, method, path, body=None, token=None, timeout=30):
	c = http.client.HTTPConnection(base_host, port, timeout=timeout)
	try:
		headers = {}
		data = None
		if body is not None:
			data = json.dumps(body).encode()
			headers["Content-Type"] = "application/json"
		if token:
			headers["Authorization"] = "Bearer " + token
		c.request(method, path, body=data, headers=headers)
		r = c.getresponse()
		raw = r.read()
		try:
			return r.status, json.loads(raw)
		except ValueError:
			return r.status, raw.decode("utf-8", "replace")
	finally:
		c.close()


def cmdline(cmd):
	return " ".join(shlex.quote(c) for c in cmd)


def run(cmd, what, timeout=None, ok=(0,), **kw):
	"""Run cmd, return (stdout, seconds, stderr); fail with its stderr."""
	t = time.monotonic()
	try:
		r = subprocess.run(cmd, stdout=subprocess.PIPE,
		    stderr=subprocess.PIPE, text=True, timeout=timeout,
		    stdin=subprocess.DEVNULL, **kw)
	except subprocess.TimeoutExpired:
		raise harness.HarnessError("%s took more than %s s: %s" % (what,
		    timeout, cmdline(cmd)))
	if r.returncode not in ok:
		raise harness.HarnessError("%s failed (exit %d): %s\n%s%s" % (
		    what, r.returncode, cmdline(cmd), r.stdout[-3000:],
		    r.stderr[-3000:]))
	return r.stdout, time.monotonic() - t, r.stderr


def parse_wrk(out):
	m = re.search(r"^BENCH_JSON (.*)$", out, re.M)
	if not m:
		raise harness.HarnessError("no BENCH_JSON line in wrk's output:\n"
		    + out)
	d = json.loads(m.group(1))
	secs = d["duration_us"] / 1e6
	m = re.search(r"Requests/sec:\s*([\d.]+)", out)
	rps = float(m.group(1)) if m else d["requests"] / secs
	lat = d["latency_us"]
	return {
		"requests": d["requests"],
		"seconds": round(secs, 2),
		"req_per_s": round(rps, 1),
		"latency_ms": {k: round(v / 1000.0, 3) for k, v in lat.items()},
		"errors": d["errors"],
		"non_2xx": d["errors"]["status"],
	}


def percentile(sorted_vals, p):
	if not sorted_vals:
		return None
	i = min(len(sorted_vals) - 1, max(0, int(round(p / 100.0 *
	    len(sorted_vals) + 0.5)) - 1))
	return sorted_vals[i]


def parse_pgbench(out, logprefix):
	def num(rx):
		m = re.search(rx, out, re.M)
		return float(m.group(1)) if m else None
	res = {
		"transactions": int(num(r"number of transactions actually "
		    r"processed:\s*(\d+)") or 0),
		"failed": int(num(r"number of failed transactions:\s*(\d+)") or 0),
		"tps": num(r"^tps = ([\d.]+)"),
		"latency_avg_ms": num(r"^latency average = ([\d.]+) ms"),
		"latency_stddev_ms": num(r"^latency stddev = ([\d.]+) ms"),
	}
	# Per-transaction log (-l): 3rd column is the latency in microseconds.
	lat = []
	files = glob.glob(logprefix + ".*")
	for f in files:
		with open(f) as fh:
			for line in fh:
				parts = line.split()
				if len(parts) >= 3 and parts[2].isdigit():
					lat.append(int(parts[2]))
		os.unlink(f)
	lat.sort()
	if lat:
		res["latency_ms"] = {
			"p50": percentile(lat, 50) / 1000.0,
			"p90": percentile(lat, 90) / 1000.0,
			"p99": percentile(lat, 99) / 1000.0,
			"p99.9": percentile(lat, 99.9) / 1000.0,
			"max": lat[-1] / 1000.0,
		}
	if res["tps"] is None:
		raise harness.HarnessError("no tps in pgbench's output:\n" + out)
	return res


def parse_redis_benchmark(out):
	"""redis-benchmark --csv: a header line and one line per test."""
	rows = [l for l in out.splitlines() if l.startswith('"')]
	if len(rows) < 2:
		raise harness.HarnessError("no CSV from redis-benchmark:\n" + out)
	keys = [k.strip('"') for k in rows[0].split('","')]
	vals = [v.strip('"') for v in rows[1].split('","')]
	d = dict(zip(keys, vals))
	return {
		"test": d.get("test"),
		"req_per_s": float(d["rps"]),
		"latency_ms": {"mean": float(d["avg_latency_ms"]),
		    "p50": float(d["p50_latency_ms"]),
		    "p95": float(d["p95_latency_ms"]),
		    "p99": float(d["p99_latency_ms"]),
		    "max": float(d["max_latency_ms"])},
	}


# --- processes and measurements ----------------------------------------------

def descendants(root):
	"""root and every live process below it."""
	parent = {}
	for name in os.listdir("/proc"):
		if name.isdigit():
			info = harness.proc_info(int(name))
			if info and info[1] not in ("Z", "X"):
				parent[int(name)] = info[0]
	out, todo = [], [root]
	while todo:
		p = todo.pop()
		if p in parent or p == root:
			out.append(p)
			todo.extend(c for c, pp in parent.items() if pp == p)
	return sorted(set(out))


def smaps_kb(pid, field="Pss"):
	try:
		with open("/proc/%d/smaps_rollup" % pid) as f:
			for line in f:
				if line.startswith(field + ":"):
					return int(line.split()[1])
	except OSError:
		return 0
	return 0


def server_memory(server):
	"""Sum of PSS and of RSS (kB) of the master and all its descendants."""
	pids = descendants(server.master_pid)
	procs = []
	for p in pids:
		info = harness.proc_info(p)
		procs.append({"pid": p, "title": info[2] if info else "?",
		    "pss_kb": smaps_kb(p, "Pss"), "rss_kb": smaps_kb(p, "Rss")})
	return {"pss_kb": sum(p["pss_kb"] for p in procs),
	    "rss_kb": sum(p["rss_kb"] for p in procs), "processes": procs}


def worker_stats(redis):
	"""{pid: stats hash} of every gochat process that published stats."""
	out = {}
	try:
		for key in harness.redis_keys(redis.port, PREFIX + "stats:*"):
			h = harness.redis_hash(redis.port, key)
			if h.get("pid"):
				out[int(h["pid"])] = h
	except (OSError, ConnectionError, harness.RedisError):
		pass
	return out


class Sampler:
	"""Polls the workers' stats hashes while a load runs: the most
	WebSockets each worker held (how the clients spread over workers)."""

	def __init__(self, redis, period=0.5, timeline=False):
		self.redis, self.period = redis, period
		self.max_ws = {}
		self.timeline = [] if timeline else None	# (time, websockets)
		self._stop = threading.Event()
		self._t = threading.Thread(target=self._loop, daemon=True)

	def _loop(self):
		while not self._stop.wait(self.period):
			total = 0
			for pid, h in worker_stats(self.redis).items():
				if h.get("role") != "worker":
					continue
				n = int(h.get("websockets", 0) or 0)
				total += n
				if n > self.max_ws.get(pid, 0):
					self.max_ws[pid] = n
			if self.timeline is not None:
				self.timeline.append((time.monotonic(), total))

	def __enter__(self):
		self._t.start()
		return self

	def __exit__(self, *exc):
		self._stop.set()
		self._t.join(5)

	def spread(self):
		return [self.max_ws[p] for p in sorted(self.max_ws)]


def stat_fields(pid):
	"""The fields of /proc/pid/stat after "(comm)" (state first), or None
	if it has gone."""
	try:
		with open("/proc/%d/stat" % pid) as f:
			st = f.read()
	except OSError:
		return None
	return st[st.rfind(")") + 2:].split()


def proc_table():
	"""{pid: (ppid, cpu seconds)} of every live process (one /proc scan)."""
	hz = os.sysconf("SC_CLK_TCK")
	out = {}
	for name in os.listdir("/proc"):
		if not name.isdigit():
			continue
		fl = stat_fields(int(name))
		if fl is None or fl[0] in ("Z", "X"):
			continue
		out[int(name)] = (int(fl[1]), (int(fl[11]) + int(fl[12])) / hz)
	return out


def machine_busy():
	"""Seconds the machine's CPUs have been busy (all of them, summed)."""
	hz = os.sysconf("SC_CLK_TCK")
	with open("/proc/stat") as f:
		v = [int(x) for x in f.readline().split()[1:]]
	return (sum(v) - v[3] - (v[4] if len(v) > 4 else 0)) / hz


class CpuSampler:
	"""CPU seconds used by groups of processes (gochat's workers, its hubs,
	Redis, PostgreSQL, the load generator), sampled while a load runs, so
	that a window of it (the measured phase) can be cut out afterwards.
	roots() gives {root pid: group}: each root and everything below it is
	counted in that group, unless a more specific root claims it (a
	worker inside an instance's master). A process that exits keeps the
	CPU it had at its last sample."""

	def __init__(self, roots, period=0.25):
		self.roots, self.period = roots, period
		self.samples = []	# (monotonic time, machine busy, {group: s})
		self._last = {}		# pid: (group, cpu seconds)
		self._stop = threading.Event()
		self._t = threading.Thread(target=self._loop, daemon=True)

	def sample(self):
		t, busy = time.monotonic(), machine_busy()
		tab = proc_table()
		roots = self.roots()
		kids = {}
		for pid, (ppid, _) in tab.items():
			kids.setdefault(ppid, []).append(pid)
		for root, group in roots.items():
			todo = [root]
			while todo:
				p = todo.pop()
				if p not in tab:
					continue
				if p == root or p not in roots:
					self._last[p] = (group, tab[p][1])
					todo.extend(kids.get(p, ()))
		by = {}
		for group, cpu in self._last.values():
			by[group] = by.get(group, 0.0) + cpu
		self.samples.append((t, busy, by))

	def _loop(self):
		while not self._stop.wait(self.period):
			try:
				self.sample()
			except (OSError, ValueError, IndexError):
				pass

	def __enter__(self):
		self.sample()
		self._t.start()
		return self

	def __exit__(self, *exc):
		self._stop.set()
		self._t.join(5)
		self.sample()

	def window(self, t0, t1):
		"""{group: cores used}, cores busy in all, seconds, between the
		first sample at or after t0 and the last at or before t1."""
		inside = [s for s in self.samples if t0 <= s[0] <= t1]
		if len(inside) < 2 or inside[-1][0] - inside[0][0] < 0.2:
			return None
		a, b = inside[0], inside[-1]
		secs = b[0] - a[0]
		cores = {g: round((b[2].get(g, 0.0) - a[2].get(g, 0.0)) / secs, 3)
		    for g in b[2]}
		busy = (b[1] - a[1]) / secs
		ours = sum(cores.values())
		return {"seconds": round(secs, 2), "cores": cores,
		    "cores_ours": round(ours, 3),
		    "cores_others": round(max(0.0, busy - ours), 3),
		    "machine_cores_busy": round(busy, 3),
		    "cores_total": os.cpu_count() or 1}

class PerfProfile:
	"""perf record -a -g around a run (--perf), then per process group
	(the pids CpuSampler saw) the share of each group's samples by
	symbol: where a message's CPU-microseconds go. The report goes to
	OUT/perf-NAME.txt; perf's data stays in the temporary directory."""

	def __init__(self, bench, name):
		self.b, self.name, self.p = bench, name, None
		self.data = os.path.join(bench.tmp, "perf-%s.data" % name)

	def __enter__(self):
		if self.b.a.perf:
			self.p = subprocess.Popen(["perf", "record", "-q", "-F",
			    "499", "-a", "-g", "-o", self.data],
			    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
			    stderr=subprocess.DEVNULL)
		return self

	def __exit__(self, *exc):
		if self.p is not None:
			self.p.send_signal(signal.SIGINT)
			try:
				self.p.wait(60)
			except subprocess.TimeoutExpired:
				self.p.kill()

	def report(self, pid_groups, us_per_msg, top=12):
		"""{group: [[symbol, share of the group, us per message]]}."""
		if self.p is None or not os.path.exists(self.data):
			return None
		out = subprocess.run(["perf", "report", "-i", self.data, "--stdio",
		    "--no-children", "-g", "none", "--sort", "pid,sym",
		    "--percent-limit", "0.05"], capture_output=True, text=True,
		    timeout=300).stdout
		by = {}
		for line in out.splitlines():
			m = re.match(r"\s*([0-9.]+)%\s+(\d+):.*?\s+\[.\]\s+(.+)$",
			    line)
			if not m:
				continue
			g = pid_groups.get(int(m.group(2)))
			if g is None:
				continue
			sym = m.group(3).strip()
			by.setdefault(g, {})
			by[g][sym] = by[g].get(sym, 0.0) + float(m.group(1))
		res = {}
		for g, syms in by.items():
			total = sum(syms.values())
			rows = sorted(syms.items(), key=lambda kv: -kv[1])[:top]
			res[g] = [[sym, round(v / total, 3), round(v / total *
			    us_per_msg[g], 2) if us_per_msg.get(g) else None]
			    for sym, v in rows]
		path = os.path.join(self.b.a.out, "perf-%s.txt" % self.name)
		with open(path, "w") as f:
			for g in sorted(res):
				f.write("%s (%s CPU-us per accepted message)\n" % (g,
				    us_per_msg.get(g)))
				for sym, share, us in res[g]:
					f.write("  %5.1f%%  %6s us  %s\n" % (share * 100,
					    us, sym))
		log("    perf: %s" % path)
		return res


def rate_between(timeline, f0, f1):
	"""Joins/s while the held count went from f0 to f1 of its last value."""
	if len(timeline) < 2 or not timeline[-1][1]:
		return None
	top = timeline[-1][1]
	pts = [p for p in timeline if f0 * top <= p[1] <= f1 * top]
	if len(pts) < 2 or pts[-1][0] <= pts[0][0]:
		return None
	return round((pts[-1][1] - pts[0][1]) / (pts[-1][0] - pts[0][0]))


def cpu_snapshot():
	"""(machine busy seconds, seconds used by this process's tree, loadavg):
	the difference of two tells how much CPU other processes on the machine
	took meanwhile (a noisy neighbour makes every figure worse)."""
	hz = os.sysconf("SC_CLK_TCK")
	busy = machine_busy()
	ours = 0
	for pid in descendants(os.getpid()):
		fl = stat_fields(pid)
		if fl is None:
			continue
		ours += sum(int(x) for x in fl[11:15])	# utime stime cutime cstime
	with open("/proc/loadavg") as f:
		la = float(f.read().split()[0])
	return busy, ours / hz, la


def cpu_others(c0, c1, wall):
	"""Share of the machine's CPU that processes outside the bench used."""
	ncpu = os.cpu_count() or 1
	other = max(0.0, (c1[0] - c0[0]) - (c1[1] - c0[1]))
	return {"other_cpu_share": round(other / (wall * ncpu), 3) if wall > 0
	    else None, "loadavg_end": c1[2]}


def fmt_int(x):
	return "{:,}".format(int(round(x))) if x is not None else "-"


def fmt_ratio(x):
	return "%.2f" % x if x is not None else "-"


def ratio(a, b):
	return round(a / b, 3) if a is not None and b else None


def judge(desc, met):
	return {"target": desc, "met": bool(met) if met is not None else None}


# --- the bench ---------------------------------------------------------------

class Bench:
	def __init__(self, a):
		self.a = a
		self.tmp = None
		self.pg = self.redis = self.server = None
		self.bg = []		# background Popen objects to stop at the end
		self.results = []
		self.notes = []

	# -- lifecycle ------------------------------------------------------------

	def server_conf(self, port, workers):
		"""The configuration of an instance listening on port."""
		return {
			"listen": "127.0.0.1:%d" % port,
			"workers": str(workers),
			"database_url": self.pg.url,
			"redis_url": self.redis.url,
			"sql_dir": os.path.join(self.a.srcdir, "sql"),
			"web_dir": os.path.join(self.a.srcdir, "web"),
			"log_level": "warn",
			"log_file": os.path.join(self.tmp, "gochat-run.log"),
			# Every load comes from 127.0.0.1, and a login in flight
			# holds one attempt of its address's budget: the login
			# storm must measure scrypt, not the limiter's 429s.
			"login_max_failures": "1000000",
			# The abuse limits (SPEC section 8) are not what is
			# measured: chat floods, sign-up and room storms from
			# one address must reach the server, not a 429 or 1008.
			"ws_msg_rate": "100000",
			"ws_msg_burst": "1000000",
			"register_max": "1000000",
			"rooms_max_per_hour": "1000000",
		}

	def start_server(self, workers, extra=None):
		"""(Re)start the instance with workers workers; extra: more
		configuration keys."""
		if self.server is not None:
			self.server.stop(timeout=60)
			self.server = None
		self.port = harness.free_port()
		self.workers = workers
		d = os.path.join(self.tmp, "gochat-%dw" % workers)
		self.server = harness.Server(self.a.bin, dict(self.server_conf(
		    self.port, workers), **(extra or {})), d)
		self.server.start(timeout=60)
		# every worker accepting (the gate waits for PostgreSQL)
		harness.wait_for(lambda: len(self.server.workers()) >= workers, 30)
		log("gochat :%d, %d workers (pid %d)" % (self.port, workers,
		    self.server.master_pid))

	def popen_bg(self, cmd, **kw):
		p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL,
		    start_new_session=True, preexec_fn=harness._pdeathsig(), **kw)
		self.bg.append(p)
		return p

	def stop_bg(self):
		for p in self.bg:
			if p.poll() is None:
				try:
					os.killpg(p.pid, signal.SIGTERM)
				except ProcessLookupError:
					pass
		for p in self.bg:
			try:
				p.wait(10)
			except subprocess.TimeoutExpired:
				try:
					os.killpg(p.pid, signal.SIGKILL)
				except ProcessLookupError:
					pass
				p.wait(5)
		self.bg = []

	def psql(self, sql, capture=True):
		r = subprocess.run([os.path.join(self.pg.bindir, "psql"), "-X", "-q",
		    "-At", "-v", "ON_ERROR_STOP=1", "-d", self.pg.url], input=sql,
		    capture_output=True, text=True, timeout=600)
		if r.returncode != 0:
			raise harness.HarnessError("psql: %s\n%s" % (r.stderr, sql[:500]))
		return r.stdout.strip()

	# -- data -----------------------------------------------------------------

	def seed(self):
		a = self.a
		st, body = api("127.0.0.1", self.port, "POST", "/register",
		    {"username": "benchsrc", "email": "benchsrc@example.test",
		     "password": PASSWORD})
		if st != 201:
			raise harness.HarnessError("POST /register: %s %r" % (st, body))
		users, posts, extra = SIZES[a.size]
		self.seed_cmd = ["/usr/bin/python3", os.path.join(HERE, "seed.py"),
		    "--dsn", self.pg.url, "--psql", os.path.join(self.pg.bindir,
		    "psql"), "--reset", "--users", str(users), "--posts", str(posts),
		    "--bench-users", str(BENCH_USERS),
		    "--hash-from-user", "benchsrc"] + extra
		log("seeding (%s): %s" % (a.size, cmdline(self.seed_cmd)))
		out, self.seed_secs, _ = run(self.seed_cmd, "seed.py", timeout=1800)
		sys.stderr.write(out)
		self.users, self.posts = users, posts
		self.lo, self.hi = users + 1, users + BENCH_USERS

		# Load users lg0..lgN-1 (ids hi+1..): the bench users' real hash,
		# no follows, no posts; rooms come later, per scenario.
		t = time.monotonic()
		n = self.nload
		self.load_base = self.hi + 1
		h = self.psql("SELECT password_hash FROM users WHERE id = %d"
		    % self.lo)
		self.psql("""SET synchronous_commit = off;
INSERT INTO users (id, username, email, password_hash) OVERRIDING SYSTEM VALUE
SELECT %d + i, 'lg' || i, 'lg' || i || '@example.test', '%s'
FROM generate_series(0, %d) i;
SELECT setval(pg_get_serial_sequence('users', 'id'), %d) \\g /dev/null
ANALYZE users;
""" % (self.load_base, h.replace("'", "''"), n - 1, self.load_base + n - 1))

		# Sessions, written as auth_session_create() does (SET key uid EX
		# ttl, SADD the user's index, EXPIRE it), pipelined.
		ids = list(range(self.lo, self.hi + 1)) + list(range(self.load_base,
		    self.load_base + n))
		toks = [secrets.token_urlsafe(32) for _ in ids]
		self.write_sessions(list(zip(toks, ids)))
		self.bench_tokens = os.path.join(self.tmp, "tokens-bench.txt")
		with open(self.bench_tokens, "w") as f:
			for tok, uid in zip(toks[:BENCH_USERS], ids[:BENCH_USERS]):
				f.write("%s %d\n" % (tok, uid))
		self.load_tokens = os.path.join(self.tmp, "tokens-load.txt")
		with open(self.load_tokens, "w") as f:
			for tok, uid in zip(toks[BENCH_USERS:], ids[BENCH_USERS:]):
				f.write("%s %d\n" % (tok, uid))
		# wrk's lua scripts want bare tokens
		self.bench_tokens_bare = os.path.join(self.tmp, "tokens.txt")
		with open(self.bench_tokens_bare, "w") as f:
			f.write("\n".join(toks[:BENCH_USERS]) + "\n")
		self.token0 = toks[0]

		# seed.py's heavy reader is userN (id N): one session of its own.
		self.heavy = users
		htok = secrets.token_urlsafe(32)
		self.write_sessions([(htok, self.heavy)])
		self.heavy_tokens = os.path.join(self.tmp, "tokens-heavy.txt")
		with open(self.heavy_tokens, "w") as f:
			f.write(htok + "\n")
		self.heavy_token = htok
		self.heavy_follows = int(self.psql("SELECT count(*) FROM "
		    "user_followers WHERE follower_id = %d" % self.heavy))
		self.session_key0 = PREFIX + "session:" + hashlib.sha256(
		    toks[0].encode()).hexdigest()
		self.load_secs = time.monotonic() - t
		log("%d load users and %d sessions in %.1f s" % (n, len(ids),
		    self.load_secs))

		# The sessions work: GET /me as the first bench user and a load user.
		for tok, uid in ((toks[0], ids[0]), (toks[-1], ids[-1])):
			st, body = api("127.0.0.1", self.port, "GET", "/me", token=tok)
			if st != 200 or body.get("id") != uid:
				raise harness.HarnessError("GET /me with a written session: "
				    "%s %r (want id %d)" % (st, body, uid))

	def write_sessions(self, pairs):
		with socket.create_connection(("127.0.0.1", self.redis.port),
		    timeout=60) as s:
			f = s.makefile("rb")
			for i in range(0, len(pairs), 5000):
				chunk = pairs[i:i + 5000]
				buf = []
				for tok, uid in chunk:
					key = PREFIX + "session:" + hashlib.sha256(
					    tok.encode()).hexdigest()
					idx = "%suser:%d:sessions" % (PREFIX, uid)
					buf.append(harness._resp_encode(["SET", key, uid, "EX",
					    SESSION_TTL]))
					buf.append(harness._resp_encode(["SADD", idx, key]))
					buf.append(harness._resp_encode(["EXPIRE", idx,
					    SESSION_TTL]))
				s.sendall(b"".join(buf))
				for _ in range(3 * len(chunk)):
					harness._resp_read(f)

	def create_rooms(self, names=(), prefix=None, count=0):
		sql = "SET synchronous_commit = off;\n"
		if names:
			sql += "INSERT INTO rooms (id, name) VALUES %s ON CONFLICT DO " \
			    "NOTHING;\n" % ", ".join("('%s', '%s')" % (n, n) for n in names)
		if prefix:
			sql += ("INSERT INTO rooms (id, name) SELECT '%s' || i, '%s' || i "
			    "FROM generate_series(0, %d) i ON CONFLICT DO NOTHING;\n"
			    % (prefix, prefix, count - 1))
		self.psql(sql)

	# -- tools ------------------------------------------------------------------

	def target(self, port=None):
		return "127.0.0.1:%d" % (port or self.port)

	def loadgen(self, mode, args, timeout, port=None):
		"""Run loadgen; (its JSON, command line, stderr)."""
		cmd = [self.a.loadgen, mode] + [str(x) for x in args] + [
		    self.target(port)]
		log("  " + cmdline(cmd))
		out, secs, err = run(cmd, "loadgen " + mode, timeout=timeout,
		    ok=(0, 1))
		lines = [l for l in out.splitlines() if l.startswith("{")]
		if not lines:
			raise harness.HarnessError("no JSON from loadgen:\n%s\n%s" % (
			    out[-2000:], err[-2000:]))
		d = json.loads(lines[-1])
		return d, cmdline(cmd), err

	def pgbench(self, name, scripts, clients, threads, duration, mode,
	    defs, shown=None):
		"""Run pgbench; shown: {-D name: what the logged command line says
		instead of its value} (a long value)."""
		logprefix = os.path.join(self.tmp, "pgbench_" + name)
		cmd = [self.pgbench_bin, "-n", "-M", mode, "-c", str(clients), "-j",
		    str(threads), "-T", str(duration)]
		for k, v in defs.items():
			cmd += ["-D", "%s=%s" % (k, v)]
		for s in scripts:
			cmd += ["-f", s]
		cmd += ["-l", "--log-prefix", logprefix, self.pg.url]
		shown_cmd = cmdline(["%s=%s" % (c.split("=", 1)[0], shown[c.split(
		    "=", 1)[0]]) if shown and c.split("=", 1)[0] in shown else c
		    for c in cmd])
		log("  " + shown_cmd)
		out, _, err = run(cmd, "pgbench", timeout=duration + 60)
		return parse_pgbench(out, logprefix), shown_cmd, out

	def redis_benchmark(self, clients, n, *command):
		cmd = [self.redis_bench, "-h", "127.0.0.1", "-p",
		    str(self.redis.port), "-c", str(clients), "-n", str(n), "--csv"] \
		    + list(command)
		log("  " + cmdline(cmd))
		out, _, _ = run(cmd, "redis-benchmark", timeout=120)
		return parse_redis_benchmark(out), cmdline(cmd)

	def http_figures(self, d):
		return {
			"req_per_s": d["req_per_s"],
			"requests": d["requests"],
			"seconds": d["duration_s"],
			"latency_ms": d["latency_ms"],
			"status": d["status"],
			"status_codes": d["status_codes"],
			"errors": d["errors"],
			"non_2xx": d["requests"] - d["status"]["2xx"],
		}

	def wait_quiet(self, timeout=30):
		"""Until no worker holds a WebSocket (the previous run's clients
		have left), so runs do not overlap."""
		def quiet():
			st = worker_stats(self.redis)
			return all(int(h.get("websockets", 0) or 0) == 0
			    for h in st.values() if h.get("role") == "worker")
		time.sleep(1.2)		# stats are published once a second
		harness.wait_for(quiet, timeout, interval=0.5)

	# -- scenarios ------------------------------------------------------------------

	def sc_feed(self):
		return [self.wrk_vs_pgbench("feed")]

	def sc_feed_heavy(self):
		"""GET /feed of the reader following the most authors, against
		feed.sql's query (its \\set lines dropped) with -D uid=that user."""
		script = os.path.join(self.tmp, "feed_heavy.sql")
		with open(os.path.join(HERE, "feed.sql")) as f, \
		    open(script, "w") as out:
			out.write("".join(l for l in f if not l.startswith("\\")))
		r = self.wrk_vs_pgbench("feed_heavy", path="/feed",
		    lua=os.path.join(HERE, "feed.lua"), sql=script,
		    tokens=self.heavy_tokens, defs={"uid": self.heavy})
		r["what"] += ", as user%d (follows %d authors)" % (self.heavy,
		    self.heavy_follows)
		r["reader"] = {"id": self.heavy, "follows": self.heavy_follows}
		return [r]

	def sc_posts(self):
		return [self.wrk_vs_pgbench("posts")]

	def wrk_vs_pgbench(self, name, path=None, lua=None, sql=None,
	    tokens=None, defs=None):
		a = self.a
		path = path or {"feed": "/feed", "posts": "/posts"}[name]
		lua = lua or os.path.join(HERE, name + ".lua")
		sql = sql or os.path.join(HERE, name + ".sql")
		tokens = tokens or self.bench_tokens_bare
		defs = defs or {"lo": self.lo, "hi": self.hi}
		url = "http://127.0.0.1:%d%s" % (self.port, path)
		c, t = str(a.connections), str(a.threads)
		if a.warmup > 0:
			run([self.wrk, "-t", t, "-c", c, "-d", "%ds" % a.warmup, "-s", lua,
			    url, "--", tokens], "wrk warm-up",
			    timeout=a.warmup + 60)
		wrk_cmd = [self.wrk, "-t", t, "-c", c, "-d", "%ds" % a.duration,
		    "--latency", "-s", lua, url, "--", tokens]
		log("  " + cmdline(wrk_cmd))
		wout, _, _ = run(wrk_cmd, "wrk", timeout=a.duration + 60)
		g = parse_wrk(wout)
		r, pcmd, pout = self.pgbench(name, [sql], a.connections, a.threads,
		    a.duration, "extended", defs)
		rt = ratio(g["req_per_s"], r["tps"])
		return {
			"scenario": name,
			"what": "%s %s, wrk %s connections" % ("POST" if name == "posts"
			    else "GET", path, c),
			"gochat": g,
			"reference": dict(r, tool="pgbench -M extended",
			    req_per_s=r["tps"]),
			"ratio": rt,
			"unit": "req/s",
			"judge": judge(">= %.1f x pgbench on the same SQL" % T_DB,
			    rt is not None and rt >= T_DB),
			"commands": {"gochat": cmdline(wrk_cmd), "reference": pcmd},
			"output": {"gochat": wout, "reference": pout},
		}

	def sc_tiny(self):
		a = self.a
		ndir = os.path.join(self.tmp, "nginx")
		os.makedirs(ndir, exist_ok=True)
		nport = harness.free_port()
		with open(os.path.join(HERE, "nginx.conf.in")) as f:
			conf = f.read()
		for k, v in (("@WORKERS@", str(self.workers)), ("@PORT@", str(nport)),
		    ("@ROOT@", os.path.join(a.srcdir, "web")), ("@DIR@", ndir)):
			conf = conf.replace(k, v)
		confpath = os.path.join(ndir, "nginx.conf")
		with open(confpath, "w") as f:
			f.write(conf)
		ncmd = [self.nginx, "-p", ndir, "-c", confpath, "-e",
		    os.path.join(ndir, "error.log")]
		log("  " + cmdline(ncmd))
		nlog = open(os.path.join(ndir, "nginx.out"), "ab")
		np_ = self.popen_bg(ncmd, stdout=nlog, stderr=subprocess.STDOUT)
		nlog.close()
		try:
			harness.wait_for(lambda: np_.poll() is not None or
			    harness.port_in_use(nport), 15, what="nginx on :%d" % nport)
			if np_.poll() is not None:
				raise harness.HarnessError("nginx exited: %s" % harness.tail(
				    os.path.join(ndir, "error.log"), 20))
			# Same bytes from both.
			bodies = []
			for p in (self.port, nport):
				c = http.client.HTTPConnection("127.0.0.1", p, timeout=10)
				c.request("GET", "/")
				r = c.getresponse()
				bodies.append((r.status, r.read()))
				c.close()
			if bodies[0] != bodies[1] or bodies[0][0] != 200:
				raise harness.HarnessError("GET / differs: gochat %s %d bytes, "
				    "nginx %s %d bytes" % (bodies[0][0], len(bodies[0][1]),
				    bodies[1][0], len(bodies[1][1])))
			args = ["-c", 64, "-t", a.lg_threads, "-q", "-u", "/"]
			figs = {}
			for who, port in (("gochat", self.port), ("nginx", nport)):
				if a.warmup > 0:
					self.loadgen("http", args + ["-d", a.warmup],
					    a.warmup + 60, port)
				d, cmd, err = self.loadgen("http", args + ["-d", a.duration],
				    a.duration + 60, port)
				figs[who] = (self.http_figures(d), cmd, err)
		finally:
			np_.send_signal(signal.SIGQUIT)	# graceful
			try:
				np_.wait(10)
			except subprocess.TimeoutExpired:
				np_.kill()
				np_.wait(5)
		g, r = figs["gochat"][0], figs["nginx"][0]
		rt = ratio(g["req_per_s"], r["req_per_s"])
		return [{
			"scenario": "tiny",
			"what": "GET / (%d-byte web client), 64 connections, closed loop"
			    % len(bodies[0][1]),
			"gochat": g,
			"reference": dict(r, tool="nginx %d workers" % self.workers),
			"ratio": rt,
			"unit": "req/s",
			"judge": judge(">= %.1f x nginx" % T_TINY,
			    rt is not None and rt >= T_TINY),
			"commands": {"gochat": figs["gochat"][1],
			    "reference": figs["nginx"][1], "nginx": cmdline(ncmd),
			    "nginx_conf": confpath},
			"output": {"gochat": figs["gochat"][2],
			    "reference": figs["nginx"][2]},
		}]

	def sc_api(self):
		a = self.a
		out = []
		c = 64
		base = ["-c", c, "-t", a.lg_threads, "-q", "-T", self.bench_tokens]
		# GET /me
		if a.warmup > 0:
			self.loadgen("http", base + ["-d", a.warmup, "-u", "/me"],
			    a.warmup + 60)
		d, gcmd, gerr = self.loadgen("http", base + ["-d", a.duration, "-u",
		    "/me"], a.duration + 60)
		g = self.http_figures(d)
		r, pcmd, pout = self.pgbench("me", [os.path.join(HERE, "me.sql")],
		    c, 2, a.duration, a.pg_mode, {"lo": self.lo, "hi": self.hi})
		# gochat sends unnamed statements (PQsendQueryParams): the same
		# protocol in pgbench is -M extended, parsed and planned each time.
		rx, xcmd, _ = self.pgbench("me_x", [os.path.join(HERE, "me.sql")],
		    c, 2, a.duration, "extended", {"lo": self.lo, "hi": self.hi}) \
		    if a.pg_mode != "extended" else (None, None, None)
		rb, rcmd = self.redis_benchmark(c, a.redis_n, "GET",
		    self.session_key0)
		rt = ratio(g["req_per_s"], r["tps"])
		out.append({
			"scenario": "api_me",
			"what": "GET /me, 64 connections (a Redis GET, then one SELECT)",
			"gochat": g,
			"reference": dict(r, tool="pgbench -M " + a.pg_mode,
			    req_per_s=r["tps"]),
			"reference_redis": dict(rb, tool="redis-benchmark"),
			"reference_extended": dict(rx, tool="pgbench -M extended",
			    req_per_s=rx["tps"]) if rx else None,
			"ratio": rt,
			"ratio_redis": ratio(g["req_per_s"], rb["req_per_s"]),
			"ratio_extended": ratio(g["req_per_s"], rx["tps"]) if rx
			    else None,
			"unit": "req/s",
			"judge": judge(">= %.1f x pgbench on the same SQL" % T_DB,
			    rt is not None and rt >= T_DB),
			"commands": {"gochat": gcmd, "reference": pcmd,
			    "reference_redis": rcmd, "reference_extended": xcmd},
			"output": {"gochat": gerr, "reference": pout},
		})
		# POST /follow, /unfollow of the next bench user, alternately
		fargs = base + ["-r", "POST /follow?toFollowId=%PEER%", "-r",
		    "POST /unfollow?toUnfollowId=%PEER%"]
		if a.warmup > 0:
			self.loadgen("http", fargs + ["-d", a.warmup], a.warmup + 60)
		d, gcmd, gerr = self.loadgen("http", fargs + ["-d", a.duration],
		    a.duration + 60)
		g = self.http_figures(d)
		r, pcmd, pout = self.pgbench("follow", [os.path.join(HERE,
		    "follow.sql"), os.path.join(HERE, "unfollow.sql")], c, 2,
		    a.duration, a.pg_mode, {"lo": self.lo, "n": BENCH_USERS})
		rt = ratio(g["req_per_s"], r["tps"])
		out.append({
			"scenario": "api_follow",
			"what": "POST /follow and /unfollow alternately, 64 connections",
			"gochat": g,
			"reference": dict(r, tool="pgbench -M " + a.pg_mode,
			    req_per_s=r["tps"]),
			"ratio": rt,
			"unit": "req/s",
			"judge": judge(">= %.1f x pgbench on the same SQL" % T_DB,
			    rt is not None and rt >= T_DB),
			"commands": {"gochat": gcmd, "reference": pcmd},
			"output": {"gochat": gerr, "reference": pout},
		})
		return out

	def chat_run(self, room, clients, duration, rate=0, senders=10,
	    threads=None, extra=()):
		self.create_rooms([room])
		args = ["-c", clients, "-s", senders, "-d", duration, "-T",
		    self.load_tokens, "-r", room, "-t", threads or self.a.lg_threads,
		    "--join-timeout", 60, "-q"]
		if rate:
			args += ["-R", rate]
		args += list(extra)
		with Sampler(self.redis) as smp:
			d, cmd, err = self.loadgen("chat", args, duration + 120)
		self.wait_quiet()
		d["workers_websockets_max"] = smp.spread()
		return d, cmd, err

	def floor_start(self, store=False):
		"""The fan-out floor, as many threads as GoChat has workers. With
		store, the storing floor (floor -S): every message through an
		inbox in this run's Redis, STORE_FLOOR_HUBS hub threads storing
		it in this run's PostgreSQL, and a PUBLISH, before delivery."""
		port = harness.free_port()
		cmd = [self.a.floor, "-t", str(self.workers), "-p", str(port)]
		if store:
			cmd += ["-S", self.pg.url, "-r", "127.0.0.1:%d" %
			    self.redis.port, "-H", str(STORE_FLOOR_HUBS)]
		log("  " + cmdline(cmd))
		name = "store-floor" if store else "floor"
		# A session of its own, as GoChat, Redis and PostgreSQL have
		# (harness): with the kernel's autogroups (Linux, on by
		# default) a session is a scheduling group, and a server in the
		# load generator's group is scheduled against it otherwise than
		# one in a group of its own. Every server measured must be in
		# the same position.
		with open(os.path.join(self.tmp, name + ".log"), "a") as errf:
			proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL,
			    stderr=errf, stdin=subprocess.DEVNULL,
			    start_new_session=True,
			    preexec_fn=harness._pdeathsig())

		def up():
			if proc.poll() is not None:
				raise harness.HarnessError("%s exited (%d): %s" % (name,
				    proc.returncode, harness.tail(os.path.join(self.tmp,
				    name + ".log"), 5)))
			try:
				socket.create_connection(("127.0.0.1", port), 1).close()
				return True
			except OSError:
				return False
		harness.wait_for(up, 10)
		if store:
			self.sfloor_proc, self.sfloor_port = proc, port
		else:
			self.floor_proc, self.floor_port = proc, port
		return port

	def floor_stop(self, store=False):
		attr = "sfloor_proc" if store else "floor_proc"
		p = getattr(self, attr, None)
		if p is not None:
			p.terminate()
			try:
				p.wait(10)
			except subprocess.TimeoutExpired:
				p.kill()
				p.wait()
			setattr(self, attr, None)
		if store:
			# Its inboxes are never trimmed (floor.c): left in Redis,
			# they would make every later AOF rewrite and its fork
			# slower for the runs after this one, GoChat's included.
			self.redis.cmd("UNLINK", *["floor:inbox:%d" % i
			    for i in range(STORE_FLOOR_HUBS)])

	def floor_run(self, room, clients, duration, rate=0, senders=10,
	    store=False):
		"""The same load as chat_run, against the floor (store: the
		storing floor)."""
		args = ["-c", clients, "-s", senders, "-d", duration, "-T",
		    self.load_tokens, "-r", room, "-t", self.a.lg_threads,
		    "--join-timeout", 60, "-q"]
		if rate:
			args += ["-R", rate]
		d, cmd, _ = self.loadgen("chat", args, duration + 120,
		    port=self.sfloor_port if store else self.floor_port)
		return d, cmd

	def chat_figures(self, d):
		keys = ("joined", "join_s", "sent", "sent_per_s", "deliveries",
		    "deliveries_per_s", "latency_ms", "losses", "duplicates",
		    "order_violations", "unacked", "receivers_checked", "disconnects",
		    "duration_s", "rate", "loop", "workers_websockets_max",
		    "send_blocked", "send_skipped", "echo_timeouts", "close_codes")
		return {k: d.get(k) for k in keys}

	def sc_chat(self):
		a = self.a
		out = []
		payload = "x" * 64
		rb, rcmd = self.redis_benchmark(10, a.redis_n, "PUBLISH",
		    PREFIX + "room:bench-ceiling", payload)
		ref = dict(rb, tool="redis-benchmark PUBLISH (no subscribers)")
		run_tag = secrets.token_hex(3)
		self.floor_start()
		try:
			self.floor_start(store=True)
			return self.chat_scenarios(out, ref, rb, rcmd, run_tag)
		finally:
			self.floor_stop(store=True)
			self.floor_stop()

	def chat_scenarios(self, out, ref, rb, rcmd, run_tag):
		a = self.a
		for n in a.chat_sizes:
			room = "c%d-%s" % (n, run_tag)
			d, cmd, err = self.chat_run(room, n, a.duration)
			g = self.chat_figures(d)
			fd, fcmd = self.floor_run("f" + room, n, a.duration)
			fl = self.chat_figures(fd)
			rf = ratio(d["deliveries_per_s"], fd["deliveries_per_s"])
			log("    %d clients: gochat %s deliveries/s, floor %s (%s)" % (
			    n, fmt_int(d["deliveries_per_s"]),
			    fmt_int(fd["deliveries_per_s"]), fmt_ratio(rf)))
			rt = ratio(d["sent_per_s"], rb["req_per_s"])
			ent = {
				"scenario": "chat_closed_%d" % n,
				"what": "room of %d, 10 senders, closed loop: messages/s x "
				    "receivers" % n,
				"gochat": g,
				"reference": ref,
				"ratio": rt,
				"ratio_note": "messages/s accepted and fanned out / "
				    "PUBLISH/s through the same Redis",
				"floor": fl,
				"ratio_floor": rf,
				"ratio_floor_note": "deliveries/s: gochat / the fan-out "
				    "floor (test/bench/floor.c), same load, same run",
				"unit": "deliveries/s",
				"commands": {"gochat": cmd, "reference": rcmd,
				    "floor": fcmd},
				"output": {"gochat": err},
			}
			self.chat_closed_store_floor(ent, room, n)
			if n == 1000:
				ent["judge"] = judge(">= %.1f x the floor's deliveries/s"
				    % T_FLOOR_DELIV, rf is not None and rf >= T_FLOOR_DELIV)
				ent["judge_absolute"] = judge(">= %s deliveries/s" %
				    fmt_int(T_DELIV), d["deliveries_per_s"] >= T_DELIV)
			out.append(ent)
		# Open loop into a 1,000-client room: latency against offered load.
		n = max(a.chat_sizes)
		series, cmds = [], []
		series, fseries, fcmds = self.chat_open(n, a.rates, run_tag, cmds)
		plot = self.plot(series, n)
		ent = self.chat_open_entry(n, a.rates, series, fseries, ref,
		    cmds, fcmds, rcmd, plot)
		# The hub path alone: in a 10-client room a message's first and
		# last deliveries are the same moment, so its latency is the
		# sender -> worker -> Redis -> hub -> Redis -> worker -> client
		# path without the fan-out; the 1,000-client room adds the
		# fan-out (first delivery to last) on top.
		room = "h10-%d-%s" % (T_RATE, run_tag)
		d, cmd, _ = self.chat_run(room, 10, a.ol_duration, rate=T_RATE)
		sd, scmd = self.floor_run("s" + room, 10, a.ol_duration,
		    rate=T_RATE, store=True)
		ent["hub_path"] = {"clients": 10, "rate": T_RATE,
		    "latency_ms": d["latency_ms"], "command": cmd,
		    "store_floor_latency_ms": sd["latency_ms"],
		    "store_floor_command": scmd}
		log("    hub path (10 clients, %d msg/s): p50 %.2f p99 %.2f ms; "
		    "storing floor p50 %.2f p99 %.2f ms" % (T_RATE,
		    d["latency_ms"]["p50"], d["latency_ms"]["p99"],
		    sd["latency_ms"]["p50"], sd["latency_ms"]["p99"]))
		out.append(ent)
		# The 100-client room at the target rate, next to the floor too.
		cmds = []
		series, fseries, fcmds = self.chat_open(100, [T_RATE], run_tag, cmds)
		out.append(self.chat_open_entry(100, [T_RATE], series, fseries, ref,
		    cmds, fcmds, rcmd, None))
		return out

	def chat_closed_store_floor(self, ent, room, n):
		"""The same closed loop against the storing floor: what the way
		SPEC fixes for a message (inbox, hub, store, channel) reaches
		when ten senders each send again as soon as their echo is back.
		Under judge_store_floor, a miss means that nothing taking that
		way meets the target in this run."""
		sd, scmd = self.floor_run("s" + room, n, self.a.duration,
		    store=True)
		sf = self.chat_figures(sd)
		ent["store_floor"] = sf
		ent["ratio_store_floor"] = ratio(ent["gochat"]["deliveries_per_s"],
		    sf["deliveries_per_s"])
		ent["ratio_store_floor_note"] = "deliveries/s: gochat / the " \
		    "storing floor (floor -S), same load, same run"
		sff = ratio(sf["deliveries_per_s"], ent["floor"]["deliveries_per_s"])
		ent["store_floor_over_floor"] = sff
		ent["commands"]["store_floor"] = scmd
		log("    %d clients: storing floor %s deliveries/s (%s of the "
		    "floor), gochat %s of it" % (n, fmt_int(sf["deliveries_per_s"]),
		    fmt_ratio(sff), fmt_ratio(ent["ratio_store_floor"])))
		if n == 1000:
			ent["judge_store_floor"] = judge(">= %.1f x the floor's "
			    "deliveries/s (the storing floor, same run)" %
			    T_FLOOR_DELIV, sff is not None and sff >= T_FLOOR_DELIV)

	def chat_open(self, n, rates, run_tag, cmds):
		"""Open loop into an n-client room at each rate, GoChat then the
		floor: (gochat's series, the floor's, the floor's commands)."""
		a = self.a
		series, fseries, fcmds = [], [], []
		for rate in rates:
			room = "o%d-%d-%s" % (n, rate, run_tag)
			d, cmd, err = self.chat_run(room, n, a.ol_duration, rate=rate)
			lat = d["latency_ms"]
			series.append({"rate": rate, "offered_deliveries_per_s":
			    rate * n, "deliveries_per_s": d["deliveries_per_s"],
			    "sent_per_s": d["sent_per_s"], "latency_ms": lat,
			    "losses": d["losses"], "duplicates": d.get("duplicates"),
			    "order_violations": d.get("order_violations"),
			    "joined": d["joined"],
			    "send_blocked": d.get("send_blocked"),
			    "workers_websockets_max": d["workers_websockets_max"]})
			cmds.append(cmd)
			fd, fcmd = self.floor_run("f" + room, n, a.ol_duration, rate=rate)
			fl = fd["latency_ms"]
			fseries.append({"rate": rate, "deliveries_per_s":
			    fd["deliveries_per_s"], "latency_ms": fl,
			    "losses": fd["losses"], "joined": fd["joined"]})
			fcmds.append(fcmd)
			log("    %d clients, %d msg/s: %s deliveries/s, p50 %.2f p99 %.2f "
			    "p99.9 %.2f ms; floor p50 %.2f p99 %.2f p99.9 %.2f ms" % (n,
			    rate, fmt_int(d["deliveries_per_s"]), lat["p50"], lat["p99"],
			    lat["p99.9"], fl["p50"], fl["p99"], fl["p99.9"]))
			if rate != T_RATE:
				continue
			# The storing floor at the target rate: what anything
			# taking the way SPEC fixes (inbox, hub, store, channel)
			# pays here. sc_chat() started it.
			sd, scmd = self.floor_run("s" + room, n, a.ol_duration,
			    rate=rate, store=True)
			sl = sd["latency_ms"]
			fseries[-1]["store_floor"] = {"deliveries_per_s":
			    sd["deliveries_per_s"], "latency_ms": sl,
			    "losses": sd["losses"], "duplicates": sd.get("duplicates"),
			    "order_violations": sd.get("order_violations"),
			    "joined": sd["joined"], "command": scmd}
			log("    %d clients, %d msg/s, storing floor: p50 %.2f p99 %.2f "
			    "p99.9 %.2f ms" % (n, rate, sl["p50"], sl["p99"],
			    sl["p99.9"]))
		return series, fseries, fcmds

	def chat_open_entry(self, n, rates, series, fseries, ref, cmds, fcmds,
	    rcmd, plot):
		for s, f in zip(series, fseries):
			s["floor_latency_ms"] = f["latency_ms"]
			s["ratio_floor_p99"] = ratio(s["latency_ms"]["p99"],
			    f["latency_ms"]["p99"])
			s["ratio_floor_p999"] = ratio(s["latency_ms"]["p99.9"],
			    f["latency_ms"]["p99.9"])
			sf = f.get("store_floor")
			if sf:
				# the storing floor against the floor: at or above the
				# target's ratio, the target is out of this machine's
				# reach for anything taking the way SPEC fixes
				s["store_floor_latency_ms"] = sf["latency_ms"]
				s["ratio_store_floor_p99"] = ratio(s["latency_ms"]["p99"],
				    sf["latency_ms"]["p99"])
				s["store_floor_over_floor_p99"] = ratio(
				    sf["latency_ms"]["p99"], f["latency_ms"]["p99"])
				s["store_floor_over_floor_p999"] = ratio(
				    sf["latency_ms"]["p99.9"], f["latency_ms"]["p99.9"])
		at = [s for s in series if s["rate"] == T_RATE]
		met = met_abs = None
		if at:
			x = at[0]
			# A run that delivered nothing has no latency to judge.
			got = x.get("deliveries_per_s", 0) > 0
			met_abs = got and (x["latency_ms"]["p99"] <= T_P99 and
			    x["latency_ms"]["p99.9"] <= T_P999)
			met = got and x["ratio_floor_p99"] is not None and \
			    x["ratio_floor_p99"] <= T_FLOOR_P99
			if n == 1000:
				met = met and x["ratio_floor_p999"] is not None and \
				    x["ratio_floor_p999"] <= T_FLOOR_P999
		want = "at %d msg/s: p99 <= %.1f x the floor's" % (T_RATE,
		    T_FLOOR_P99)
		if n == 1000:
			want += ", p99.9 <= %.1f x" % T_FLOOR_P999
		# Does the storing floor itself meet the target? (None: not run)
		sf_met = None
		if at and at[0].get("store_floor_over_floor_p99") is not None:
			sf_met = at[0]["store_floor_over_floor_p99"] <= T_FLOOR_P99
			if n == 1000:
				sf_met = sf_met and at[0]["store_floor_over_floor_p999"] \
				    is not None and \
				    at[0]["store_floor_over_floor_p999"] <= T_FLOOR_P999
		return {
			"scenario": "chat_open_%d" % n,
			"what": "room of %d, 10 senders, open loop at %s messages/s"
			    % (n, ",".join(map(str, rates))),
			"gochat": {"series": series},
			"reference": ref,
			"floor": {"series": fseries},
			"ratio": at[0]["ratio_floor_p99"] if at else None,
			"ratio_note": "p99 at %d msg/s: gochat / the fan-out floor "
			    "(test/bench/floor.c), same load, same run" % T_RATE,
			"unit": "ms",
			"judge": judge(want, met),
			"judge_absolute": judge("at %d msg/s: p99 <= %g ms, p99.9 <= "
			    "%g ms" % (T_RATE, T_P99, T_P999), met_abs),
			# the same target applied to the storing floor: "missed"
			# means nothing taking the way SPEC fixes meets it on
			# this machine in this run
			"judge_store_floor": judge(want + " (the storing floor, "
			    "test/bench/floor.c -S)", sf_met),
			"ratio_store_floor": at[0].get("ratio_store_floor_p99") if at
			    else None,
			"ratio_store_floor_note": "p99 at %d msg/s: gochat / the "
			    "storing floor (floor -S: inbox, store, PUBLISH), same "
			    "load, same run" % T_RATE,
			"plot": plot,
			"commands": {"gochat": cmds, "reference": rcmd, "floor": fcmds},
		}

	def plot(self, series, n):
		if not series:
			return None
		data = os.path.join(self.a.out, "chat-latency.dat")
		png = os.path.join(self.a.out, "chat-latency.png")
		with open(data, "w") as f:
			f.write("# rate offered_deliveries/s deliveries/s p50 p90 p99 "
			    "p99.9 max (ms)\n")
			for s in series:
				l = s["latency_ms"]
				f.write("%d %d %.1f %.3f %.3f %.3f %.3f %.3f\n" % (s["rate"],
				    s["offered_deliveries_per_s"], s["deliveries_per_s"],
				    max(l["p50"], 0.001), max(l["p90"], 0.001),
				    max(l["p99"], 0.001), max(l["p99.9"], 0.001),
				    max(l["max"], 0.001)))
		if not self.gnuplot:
			self.notes.append("gnuplot not found: no chat-latency.png")
			return {"data": data, "png": None}
		term = "pngcairo" if "pngcairo" in self.gnuplot_terms else "png"
		sub = "room of %d clients, 10 senders, %d workers on %d cores, " \
		    "load generator on the same machine" % (n, self.workers,
		    os.cpu_count() or 1)
		cmd = [self.gnuplot, "-e", "data='%s'; out='%s'; term='%s'; "
		    "subtitle='%s'; mark=%d" % (data, png, term, sub, T_RATE * n),
		    os.path.join(HERE, "plot.gp")]
		try:
			run(cmd, "gnuplot", timeout=60)
		except harness.HarnessError as e:
			self.notes.append("gnuplot failed: %s" % e)
			return {"data": data, "png": None, "command": cmdline(cmd)}
		return {"data": data, "png": png, "command": cmdline(cmd)}

	# -- intake: many small rooms, every client a sender (issue 13) -------------

	def cpu_roots(self, servers, loadgen_pid, more=None):
		"""{root pid: group} for CpuSampler: each instance's workers and
		hub, its master, Redis, PostgreSQL and the load generator (and
		more: {pid: group})."""
		def roots():
			m = dict(more or {})
			for s in servers:
				if s.master_pid:
					m[s.master_pid] = "master"
				for pid, title in s.children():
					m[pid] = "hub" if title == "gochat: hub" else \
					    "workers" if title.startswith("gochat: worker") \
					    else "master"
			if self.redis.proc:
				m[self.redis.proc.pid] = "redis"
			if self.pg.pid():
				m[self.pg.pid()] = "postgres"
			if loadgen_pid[0]:
				m[loadgen_pid[0]] = "loadgen"
			return m
		return roots

	def intake_run(self, clients, room_size, duration, rate=0,
	    servers=None, store_floor=False):
		"""One loadgen chat run: clients in rooms of room_size, every
		client a sender (closed loop, or rate messages/s in all), spread
		over servers (store_floor: the storing floor instead). Per-process
		CPU is sampled meanwhile and cut to the measured phase; afterwards
		the rows the hubs stored in those rooms are counted: every message
		echoed to its sender must be stored, and nothing more than was
		sent."""
		a = self.a
		servers = [] if store_floor else servers or [self.server]
		nrooms = clients // room_size
		prefix = "n%d-%s-" % (room_size, secrets.token_hex(3))
		if not store_floor:
			self.create_rooms(prefix=prefix, count=nrooms)
		args = ["-c", clients, "-s", clients, "-d", duration, "-T",
		    self.load_tokens, "-r", prefix, "--rooms", nrooms, "-t",
		    a.lg_threads, "--join-timeout", 60, "--drain", INTAKE_DRAIN, "-q"]
		if rate:
			args += ["-R", rate]
		for s in servers[1:]:
			args += ["--also", self.target(s.port)]
		cmd = [a.loadgen, "chat"] + [str(x) for x in args] + [
		    self.target(self.sfloor_port if store_floor else
		    servers[0].port)]
		log("  " + cmdline(cmd))
		lg = [None]
		name = "intake_%d%s%s%s" % (room_size, "_fixed" if rate else "",
		    "_x%d" % len(servers) if len(servers) > 1 else "",
		    "_store_floor" if store_floor else "")
		roots = self.cpu_roots(servers, lg,
		    {self.sfloor_proc.pid: "floor"} if store_floor else {})
		with CpuSampler(roots) as smp, \
		    PerfProfile(self, name) as prof:
			t_launch = time.monotonic()
			p = self.popen_bg(cmd, stdout=subprocess.PIPE,
			    stderr=subprocess.PIPE, text=True)
			lg[0] = p.pid
			try:
				out, err = p.communicate(timeout=duration + 180)
			except subprocess.TimeoutExpired:
				raise harness.HarnessError("loadgen chat took more than "
				    "%d s: %s" % (duration + 180, cmdline(cmd)))
		js = [l for l in out.splitlines() if l.startswith("{")]
		if p.returncode not in (0, 1) or not js:
			raise harness.HarnessError("loadgen chat failed (exit %d):\n%s"
			    % (p.returncode, err[-3000:]))
		d = json.loads(js[-1])
		self.wait_quiet()
		t_run = t_launch + d["join_s"]
		cpu = smp.window(t_run + 0.2, t_run + d["duration_s"])
		stored = int(self.psql("SELECT count(*) FROM messages WHERE "
		    "room_id LIKE '%s%%'" % prefix))
		# Accepted while the run lasted: in a closed loop each client's
		# first message, and every message resent after an echo timeout,
		# was sent without an echo; every other send followed one. (acked
		# also counts the echoes of the drain.) In an open loop the rate
		# is chosen: what came back, drain included.
		if rate:
			accepted = d["acked"]
		else:
			accepted = d["sent"] - d["joined"] - d.get("echo_timeouts", 0)
		acked_per_s = max(0, accepted) / d["duration_s"] if \
		    d["duration_s"] else 0
		g = {k: d.get(k) for k in ("joined", "join_s", "duration_s", "sent",
		    "sent_per_s", "acked", "unacked", "deliveries",
		    "deliveries_per_s", "latency_ms", "losses", "duplicates",
		    "order_violations", "receivers_checked", "disconnects",
		    "echo_timeouts", "send_blocked", "send_skipped",
		    "close_codes", "rate", "loop")}
		# loadgen's deliveries include the drain's; with nothing lost each
		# accepted message reached its whole room
		g["deliveries_incl_drain"] = g.pop("deliveries")
		g.pop("deliveries_per_s")
		g.update({"clients": clients, "room_size": room_size,
		    "rooms": nrooms, "instances": len(servers),
		    "server": "storing floor (test/bench/floor.c -S)" if
		    store_floor else "gochat",
		    "workers_per_instance": self.workers,
		    "accepted_per_s": round(acked_per_s, 1), "stored": stored,
		    "stored_ok": d["acked"] <= stored <= d["sent"]})
		if cpu:
			# CPU-microseconds per accepted message, per process group
			cpu["us_per_msg"] = {k: round(v * 1e6 / acked_per_s, 1)
			    if acked_per_s else None for k, v in cpu["cores"].items()}
			cpu["us_per_msg_all"] = round(cpu["cores_ours"] * 1e6
			    / acked_per_s, 1) if acked_per_s else None
			cpu["cores_bound"] = cpu["machine_cores_busy"] >= 0.95 * \
			    cpu["cores_total"]
			g["perf"] = prof.report({pid: grp for pid, (grp, _) in
			    smp._last.items()}, cpu["us_per_msg"])
		g["cpu"] = cpu
		g["intact"] = (d["losses"] == 0 and d["duplicates"] == 0 and
		    d["order_violations"] == 0 and g["stored_ok"])
		g["deliveries_per_s"] = round(acked_per_s * room_size, 1) if \
		    g["intact"] else None
		log("    %s msg/s accepted, %s deliveries/s, lost %d, dup %d, "
		    "reordered %d, stored %d of %d sent%s" % (fmt_int(acked_per_s),
		    fmt_int(g["deliveries_per_s"]), d["losses"], d["duplicates"],
		    d["order_violations"], stored, d["sent"], "; cores busy %.2f "
		    "of %d" % (cpu["machine_cores_busy"], cpu["cores_total"])
		    if cpu else ""))
		return g, cmdline(cmd), err

	def intake_batch(self, rooms, kind):
		"""pgbench -D definitions (p1, p2, ...) of a batch as hub/store.c's
		store_write() sends it: INTAKE_BATCH messages of loadgen's size
		over rooms, as one JSON array (kind "json") or one array literal
		per column ("unnest")."""
		ms = int(time.time() * 1000)
		ts = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(ms / 1000))
		rows = []
		for i in range(INTAKE_BATCH):
			uid = self.load_base + i % self.nload
			content = "b1 %08x %d %d %d" % (0xbe4c4, i, i + 1,
			    time.monotonic_ns())
			content += " " + "x" * (INTAKE_MSG - len(content) - 1)
			rows.append((rooms[i % len(rooms)], i + 1, uid, "lg%d" % (uid -
			    self.load_base), content, "%d-%d" % (ms, i)))
		if kind == "json":
			return {"p1": "[" + ",".join('{"room_id":"%s","id":%d,'
			    '"user_id":%d,"username":"%s","content":"%s","inbox_id":'
			    '"%s","created_at":"%s"}' % (r + (ts,)) for r in rows) + "]"}
		arr = lambda vals, q: "{" + ",".join('"%s"' % v if q else str(v)
		    for v in vals) + "}"
		cols = list(zip(*rows))
		return {"p1": INTAKE_REF_PARTITION, "p2": 1,
		    "p3": arr(cols[0], True), "p4": arr(cols[1], False),
		    "p5": arr(cols[2], False), "p6": arr(cols[3], True),
		    "p7": arr(cols[4], True), "p8": arr(cols[5], True),
		    "p9": arr([ms] * INTAKE_BATCH, False),
		    # gochat.v2's columns (sql/004): plain messages, no cid
		    "p10": arr([0] * INTAKE_BATCH, False),
		    "p11": arr(["NULL"] * INTAKE_BATCH, False),
		    "p12": arr(["NULL"] * INTAKE_BATCH, False)}

	def intake_store_sql(self):
		"""(kind, the hub's statement, the reference's, notes)."""
		notes = []
		try:
			with open(os.path.join(self.a.srcdir, "hub", "store.c")) as f:
				src = f.read()
		except OSError as e:
			src = ""
			notes.append("cannot read hub/store.c (%s)" % e)
		# The plain statement when there is one: loadgen's messages are
		# section 5's (no cid), which is what the hub stores with it.
		hub = c_string(src, "store_insert_plain_fast_sql") or \
		    c_string(src, "store_insert_plain_sql") or \
		    c_string(src, "store_insert_sql")
		for kind, plain, unique, must in INTAKE_SHAPES:
			if hub and plain in hub and must in hub:
				sql = hub.replace(plain, unique)
				break
		else:
			if src:
				notes.append("hub/store.c's statement has neither known "
				    "shape (INTAKE_SHAPES): the store reference runs the "
				    "first edition's")
			kind, hub = "json", INTAKE_STORE_FIRST
			sql = hub.replace(INTAKE_SHAPES[0][1], INTAKE_SHAPES[0][2])
		sql = re.sub(r"\$(\d+)", r":p\1", sql)
		return kind, hub, sql, notes

	def intake_references(self):
		"""The store and the inbox on their own, same run: pgbench inserting
		INTAKE_BATCH-row batches with the hub's statement over
		INTAKE_STORE_CONNS connections (-M prepared: one parse, as the hub
		prepares), and redis-benchmark XADD of a worker's entry and
		XREADGROUP COUNT INTAKE_BATCH of them."""
		a = self.a
		# the statement of the hub being measured
		kind, hub_sql, sql, notes = self.intake_store_sql()
		prefix = "nref-%s-" % secrets.token_hex(3)
		nrooms = INTAKE_BATCH // 2
		self.create_rooms(prefix=prefix, count=nrooms)
		defs = self.intake_batch(["%s%d" % (prefix, i)
		    for i in range(nrooms)], kind)
		if kind == "unnest":
			self.psql("INSERT INTO hub_partitions (partition, epoch, "
			    "holder) VALUES (%d, 1, 'bench') ON CONFLICT (partition) "
			    "DO UPDATE SET epoch = 1" % INTAKE_REF_PARTITION)
		script = os.path.join(self.tmp, "intake_store.sql")
		with open(script, "w") as f:
			f.write("\\set base random(1, 1000000000000) * 1000\n")
			f.write(sql + ";\n")
		shown = {k: "<%d values, %d bytes>" % (INTAKE_BATCH, len(str(v)))
		    for k, v in defs.items() if len(str(v)) > 100}
		pgpid = self.pg.pid()
		with CpuSampler(lambda: {pgpid: "postgres"}) as smp:
			t0 = time.monotonic()
			pg, pcmd, pout = self.pgbench("intake_store", [script],
			    INTAKE_STORE_CONNS, INTAKE_STORE_CONNS, a.duration,
			    "prepared", defs, shown=shown)
		# PostgreSQL's CPU per row stored, to hold against its share of
		# an intake run
		cpu = smp.window(t0 + 0.5, t0 + a.duration)
		if cpu and pg["tps"]:
			cpu["us_per_row"] = round(cpu["cores"].get("postgres", 0) *
			    1e6 / (pg["tps"] * INTAKE_BATCH), 1)
		pg_ref = dict(pg, tool="pgbench -M prepared -c %d, %d-row batches"
		    % (INTAKE_STORE_CONNS, INTAKE_BATCH), rows_per_s=round(
		    pg["tps"] * INTAKE_BATCH, 1), req_per_s=round(pg["tps"] *
		    INTAKE_BATCH, 1), batch_bytes=sum(len(str(v)) for v in
		    defs.values()), statement=kind, hub_statement=hub_sql,
		    cpu=cpu)
		self.psql("DELETE FROM messages WHERE room_id LIKE '%s%%';\n"
		    "DELETE FROM rooms WHERE id LIKE '%s%%';%s" % (prefix, prefix,
		    "\nDELETE FROM hub_partitions WHERE partition = %d;" %
		    INTAKE_REF_PARTITION if kind == "unnest" else ""))
		# A worker's XADD of a section 5 message (chat.c's fields:
		# no worker or conn, loadgen's message size), from as many
		# connections as there are workers, pipelined: the workers
		# send their XADDs without waiting for the answers.
		key = PREFIX + "bench:inbox-" + secrets.token_hex(3)
		content = "b1 000be4c4 1234 56 %d" % time.monotonic_ns()
		content += " " + "x" * (INTAKE_MSG - len(content) - 1)
		n = a.redis_n
		xadd, xcmd = self.redis_benchmark(self.workers, n, "-P",
		    str(INTAKE_PIPELINE), "XADD", key, "*", "op", "broadcast",
		    "room", prefix + "17", "user", str(self.load_base + 17),
		    "username", "lg17", "content", content)
		self.redis.cmd("XGROUP", "CREATE", key, "g", "0")
		entries = int(self.redis.cmd("XLEN", key))
		reads = max(1, entries // INTAKE_BATCH)
		xr, rcmd = self.redis_benchmark(1, reads, "XREADGROUP", "GROUP",
		    "g", "c", "COUNT", str(INTAKE_BATCH), "STREAMS", key, ">")
		self.redis.cmd("DEL", key)
		xr_ref = dict(xr, tool="redis-benchmark XREADGROUP COUNT %d, 1 "
		    "connection" % INTAKE_BATCH, entries_per_s=round(
		    xr["req_per_s"] * INTAKE_BATCH, 1), calls=reads)
		xadd_ref = dict(xadd, tool="redis-benchmark XADD -c %d -P %d" % (
		    self.workers, INTAKE_PIPELINE))
		log("    references: %s rows/s stored (pgbench, batch p50 %s ms), "
		    "%s XADD/s, %s entries/s by XREADGROUP" % (
		    fmt_int(pg_ref["rows_per_s"]), (pg.get("latency_ms") or
		    {}).get("p50"), fmt_int(xadd["req_per_s"]),
		    fmt_int(xr_ref["entries_per_s"])))
		return {"store": pg_ref, "xadd": xadd_ref, "xreadgroup": xr_ref,
		    "commands": {"store": pcmd, "store_script": sql,
		    "xadd": xcmd, "xreadgroup": rcmd}, "notes": notes}

	def intake_entry(self, name, what, g, refs, cmd, err, judgement):
		acc = g["accepted_per_s"]
		return {
			"scenario": name,
			"what": what,
			"gochat": g,
			"reference": refs["store"],
			"reference_xadd": refs["xadd"],
			"reference_xreadgroup": refs["xreadgroup"],
			# an open-loop run's rate is chosen, not measured
			"ratio": ratio(acc, refs["store"]["rows_per_s"]) if
			    g["loop"] == "closed" else None,
			"ratio_xadd": ratio(acc, refs["xadd"]["req_per_s"]) if
			    g["loop"] == "closed" else None,
			"ratio_xreadgroup": ratio(acc,
			    refs["xreadgroup"]["entries_per_s"]) if g["loop"] ==
			    "closed" else None,
			"ratio_note": "messages/s accepted (echoed to their sender, "
			    "so stored and published) / rows/s the same store "
			    "statement inserts in pgbench; / XADD/s; / entries/s "
			    "XREADGROUP reads",
			"unit": "messages/s",
			"judge": judgement,
			"commands": dict(refs["commands"], gochat=cmd),
			"output": {"gochat": err},
		}

	def sc_intake(self):
		a = self.a
		out = []
		refs = self.intake_references()
		self.notes.extend(refs["notes"])
		for clients, size, target in ((2000, 10, T_INTAKE_10),
		    (1000, 2, T_INTAKE_2)):
			g, cmd, err = self.intake_run(clients, size, a.duration)
			met = g["accepted_per_s"] >= target and g["intact"]
			ent = self.intake_entry("intake_%d" % size,
			    "%s clients in rooms of %d, all senders, closed loop"
			    % (fmt_int(clients), size), g, refs, cmd, err,
			    judge(">= %s msg/s, nothing lost, repeated or reordered"
			    % fmt_int(target), met))
			self.intake_store_floor(ent, clients, size, target)
			out.append(ent)
		g, cmd, err = self.intake_run(2000, 10, a.duration,
		    rate=T_INTAKE_RATE)
		lat = g["latency_ms"]
		met = lat["p99"] <= T_INTAKE_P99 and g["intact"]
		out.append(self.intake_entry("intake_fixed_10", "2,000 clients in "
		    "rooms of 10, %s messages/s in all (open loop)" % fmt_int(
		    T_INTAKE_RATE), g, refs, cmd, err, judge("at %s msg/s: p99 <= "
		    "%g ms, nothing lost" % (fmt_int(T_INTAKE_RATE), T_INTAKE_P99),
		    met)))
		out.append(self.intake_partitions(refs))
		return out

	def intake_store_floor(self, ent, clients, size, target):
		"""The same closed loop against the storing floor, same run: the
		rate the way SPEC fixes (inbox, hub, store, channel), with nothing
		else, reaches on this machine, with its CPU per message; "missed"
		under judge_store_floor means that nothing taking that way meets
		the target here."""
		self.floor_start(store=True)
		try:
			f, fcmd, ferr = self.intake_run(clients, size, self.a.duration,
			    store_floor=True)
		finally:
			self.floor_stop(store=True)
		ent["store_floor"] = f
		ent["ratio_store_floor"] = ratio(ent["gochat"]["accepted_per_s"],
		    f["accepted_per_s"])
		ent["ratio_store_floor_note"] = "messages/s accepted: gochat / the " \
		    "storing floor (floor -S: inbox, store, PUBLISH), same load, " \
		    "same run"
		ent["judge_store_floor"] = judge(">= %s msg/s (the storing floor "
		    "itself)" % fmt_int(target), f["accepted_per_s"] >= target and
		    f["intact"])
		ent["commands"]["store_floor"] = fcmd
		ent["output"]["store_floor"] = ferr

	def partitions_known(self):
		"""Does the binary know the key partitions? (gochat -t)"""
		d = os.path.join(self.tmp, "partitions-check")
		os.makedirs(d, exist_ok=True)
		conf = dict(self.server_conf(harness.free_port(), 1),
		    partitions=str(INTAKE_PARTITIONS))
		path = harness.Server(self.a.bin, conf, d).write_conf()
		r = subprocess.run([self.a.bin, "-t", "-c", path],
		    capture_output=True, text=True, timeout=30)
		return r.returncode == 0, (r.stdout + r.stderr).strip()

	def intake_partitions(self, refs):
		"""Rooms of 10, closed loop: one instance with partitions = 16,
		then two instances sharing PostgreSQL and Redis (every room's
		members spread over both), INTAKE_PARTITIONS_KEYS in each."""
		a = self.a
		name = "intake_partitions"
		ok, msg = self.partitions_known()
		if not ok:
			log("  %s skipped: this gochat does not know the key "
			    "partitions (gochat -t: %s)" % (name, msg.splitlines()[-1]
			    if msg else "?"))
			return {"scenario": name, "skipped": "this gochat does not "
			    "know the key 'partitions' (gochat -t: %s)" % (
			    msg.splitlines()[-1] if msg else "?")}
		extra = dict(INTAKE_PARTITIONS_KEYS)
		runs = {}
		second = None
		try:
			# instance names apart: each hub's lease value and stats
			# key name its instance
			self.start_server(a.workers, extra=dict(extra,
			    instance="bench-1"))
			runs["one"] = self.intake_run(2000, 10, a.duration)
			port2 = harness.free_port()
			conf2 = dict(self.server_conf(port2, a.workers), **extra)
			conf2["log_file"] = os.path.join(self.tmp, "gochat-run-2.log")
			conf2["instance"] = "bench-2"
			second = harness.Server(a.bin, conf2, os.path.join(self.tmp,
			    "gochat-second"))
			second.start(timeout=60)
			harness.wait_for(lambda: len(second.workers()) >= a.workers, 30)
			time.sleep(INTAKE_SETTLE)	# the hubs share the partitions
			log("  second instance :%d (pid %d)" % (port2,
			    second.master_pid))
			runs["two"] = self.intake_run(2000, 10, a.duration,
			    servers=[self.server, second])
		finally:
			if second is not None:
				second.stop(timeout=60)
			self.start_server(a.workers)
		g1, g2 = runs["one"][0], runs["two"][0]
		ent = self.intake_entry(name, "2,000 clients in rooms of 10, closed "
		    "loop, partitions = %d: two instances / one" % INTAKE_PARTITIONS,
		    g2, refs, runs["two"][1], runs["two"][2], judge("nothing lost, "
		    "repeated or reordered with two instances", g2["intact"]))
		ent["one_instance"] = g1
		ent["ratio_two_over_one"] = ratio(g2["accepted_per_s"],
		    g1["accepted_per_s"])
		ent["config"] = extra
		ent["commands"]["one_instance"] = runs["one"][1]
		return ent

	def sc_login(self):
		a = self.a
		tag = secrets.token_hex(3)
		clients, rate = 100, 200
		alone, cmd1, err1 = self.chat_run("la-" + tag, clients, a.duration,
		    rate=rate)
		# The storm: POST /login as lg<N>, with the right password, from
		# 64 connections, for longer than the chat lasts.
		body = '{"username":"lg%%N%%","password":"%s"}' % PASSWORD
		storm_d = a.duration + 25
		scmd = [self.a.loadgen, "http", "-c", "64", "-t", "1", "-d",
		    str(storm_d), "--timeout", "30", "-q", "-r",
		    "POST /login " + body, self.target()]
		log("  " + cmdline(scmd) + " &")
		sp = self.popen_bg(scmd, stdout=subprocess.PIPE,
		    stderr=subprocess.PIPE, text=True)
		time.sleep(3)		# the scrypt queues fill up
		try:
			storm, cmd2, err2 = self.chat_run("lb-" + tag, clients,
			    a.duration, rate=rate)
		finally:
			try:
				os.killpg(sp.pid, signal.SIGINT)	# report now
			except ProcessLookupError:
				pass
			sout, serr = sp.communicate(timeout=60)
		sj = [l for l in sout.splitlines() if l.startswith("{")]
		sd = json.loads(sj[-1]) if sj else {}
		p99a, p99s = alone["latency_ms"]["p99"], storm["latency_ms"]["p99"]
		rt = ratio(p99s, p99a)
		return [{
			"scenario": "login",
			"what": "chat p99, %d clients at %d msg/s, with / without a storm "
			    "of POST /login (64 connections)" % (clients, rate),
			"gochat": dict(self.chat_figures(storm), storm={
			    "logins_per_s": sd.get("req_per_s"),
			    "status": sd.get("status"),
			    "latency_ms": sd.get("latency_ms"),
			    "errors": sd.get("errors")}),
			"reference": dict(self.chat_figures(alone),
			    tool="the same chat without the storm"),
			"ratio": rt,
			"ratio_note": "chat p99 with the storm / without",
			"unit": "ms p99",
			"judge": judge("p99 with the storm <= %.1f x without" % T_LOGIN,
			    rt is not None and rt <= T_LOGIN),
			"commands": {"gochat": cmd2, "reference": cmd1,
			    "storm": cmdline(scmd)},
			"output": {"gochat": err2, "reference": err1, "storm": serr},
		}]

	def sc_idle(self):
		out = []
		for n in self.a.idle_counts:
			out.append(self.idle_one(n))
		return out

	def idle_one(self, n):
		a = self.a
		room_size, chat_k, senders, rate = 30, 100, 10, 100
		# File descriptors: 20,000 a process here (the hard limit).
		soft, hard = __import__("resource").getrlimit(
		    __import__("resource").RLIMIT_NOFILE)
		per = int(hard * FD_LIMIT_HEADROOM) if hard > 0 else 15000
		need_workers = max(os.cpu_count() or 1, math.ceil(n / per))
		note = None
		if need_workers != (os.cpu_count() or 1):
			note = ("%d workers (not %d = cores): %d WebSockets need %d "
			    "file descriptors and a process may hold %d here" % (
			    need_workers, os.cpu_count() or 1, n, n, hard))
			log("idle %d: %s" % (n, note))
		# A fresh server: freed heap that earlier scenarios left in the
		# workers (glibc keeps it) would hide the connections' memory.
		self.start_server(need_workers)
		procs = max(1, math.ceil(n / per))
		# 5,000 connections per source address: the kernel looks for a
		# free ephemeral port at each connect(), and that search slows
		# down sharply as a 28k port range fills (at 20,000 per address
		# it took most of the CPU, and the joins fell to 300/s).
		naddr = max(1, math.ceil(n / 5000))
		nrooms = 1 + math.ceil((n - chat_k) / room_size)
		prefix = "i%d-%s-" % (n, secrets.token_hex(2))
		self.create_rooms(prefix=prefix, count=nrooms)
		hold = a.idle_hold
		args = ["-c", n, "-P", procs, "-t", 1, "-d", hold, "-T",
		    self.load_tokens, "-r", prefix, "--rooms", nrooms, "-K", chat_k,
		    "-s", senders, "-R", rate, "--join-timeout", a.idle_join_timeout,
		    "--max-pending", a.idle_pending, "-q"]
		if naddr > 1:
			args += ["-b", ",".join("127.0.0.%d" % (i + 1)
			    for i in range(naddr))]
		cmd = [a.loadgen, "idle"] + [str(x) for x in args] + [self.target()]
		time.sleep(1.5)
		before = server_memory(self.server)
		log("  " + cmdline(cmd))
		t0 = time.monotonic()
		p = self.popen_bg(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
		    text=True)
		joined = None
		with Sampler(self.redis, period=2.0, timeline=True) as smp:
			for line in p.stdout:
				m = re.match(r"joined (\d+)", line)
				if m:
					joined = int(m.group(1))
					break
		join_s = time.monotonic() - t0
		timeline = [(round(t - t0, 1), w) for t, w in smp.timeline]
		if joined is None:
			_, err = p.communicate(timeout=60)
			raise harness.HarnessError("loadgen idle ended before joining:\n"
			    + err[-3000:])
		time.sleep(min(3, max(1, hold / 3)))	# the small chat flows
		after = server_memory(self.server)
		mine = set(descendants(self.server.master_pid))
		wst = {pid: h for pid, h in worker_stats(self.redis).items()
		    if h.get("role") == "worker" and pid in mine}
		rest, err = p.communicate(timeout=hold + 120)
		js = [l for l in rest.splitlines() if l.startswith("{")]
		if not js:
			raise harness.HarnessError("no JSON from loadgen idle:\n"
			    + err[-3000:])
		d = json.loads(js[-1])
		per_conn = (after["pss_kb"] - before["pss_kb"]) * 1024.0 / max(1,
		    joined)
		held = d["joined"] - d.get("disconnects", 0)
		flowing = d.get("deliveries", 0) > 0
		met = per_conn <= T_IDLE_B and joined >= n and held >= n and flowing
		self.wait_quiet(timeout=120)
		g = {
			"connections": n, "joined": joined, "join_s": round(join_s, 1),
			"held_to_end": held, "bytes_per_connection": round(per_conn),
			"pss_kb_before": before["pss_kb"], "pss_kb_after": after["pss_kb"],
			"rss_kb_before": before["rss_kb"], "rss_kb_after": after["rss_kb"],
			"processes_after": after["processes"],
			"workers": self.workers,
			"workers_websockets": [int(h.get("websockets", 0) or 0)
			    for _, h in sorted(wst.items())],
			"loadgen_processes": procs, "source_addresses": naddr,
			"rooms": nrooms, "room_size": room_size,
			"join_timeline": timeline,
			"join_rate_first_per_s": rate_between(timeline, 0, 0.25),
			"join_rate_last_per_s": rate_between(timeline, 0.75, 1.0),
			"chat": {"clients": chat_k, "senders": senders, "rate": rate,
			    "deliveries_per_s": d.get("deliveries_per_s"),
			    "latency_ms": d.get("latency_ms"), "losses": d.get("losses")},
			"disconnects": d.get("disconnects"),
			"join_timeouts": d.get("join_timeouts"),
			"connect_errors": d.get("connect_errors"),
			"handshake_errors": d.get("handshake_errors"),
			"handshake_status": d.get("handshake_status"),
		}
		if note:
			g["note"] = note
		return {
			"scenario": "idle_%d" % n,
			"what": "%s joined WebSockets held (rooms of %d), a chat of %d "
			    "clients at %d msg/s" % (fmt_int(n), room_size, chat_k, rate),
			"gochat": g,
			"reference": {"tool": "target", "bytes_per_connection":
			    T_IDLE_B},
			"ratio": ratio(per_conn, T_IDLE_B),
			"ratio_note": "bytes per connection / 4 KiB",
			"unit": "B/conn",
			"judge": judge("<= 4 KiB per connection, all %s held with chat "
			    "flowing" % fmt_int(n), met),
			"commands": {"gochat": cmdline(cmd)},
			"output": {"gochat": err},
		}

	# -- main ----------------------------------------------------------------------

	def main(self):
		a = self.a
		t_start = time.monotonic()
		self.tmp = tempfile.mkdtemp(prefix="gochat-bench-")
		os.chmod(self.tmp, 0o711)	# PostgreSQL runs as 'postgres' under root
		self.pg = harness.Postgres(os.path.join(self.tmp, "pg"),
		    harness.free_port())
		self.redis = harness.Redis(os.path.join(self.tmp, "redis"),
		    harness.free_port())
		rc = 0
		try:
			log("temporary directory %s" % self.tmp)
			self.pg.start()
			self.redis.start()
			log("PostgreSQL :%d, Redis :%d" % (self.pg.port, self.redis.port))
			self.start_server(a.workers)
			self.seed()
			for sc, tok, uid in (("feed", self.token0, self.lo),
			    ("feed_heavy", self.heavy_token, self.heavy)):
				if sc not in a.only:
					continue
				st, body = api("127.0.0.1", self.port, "GET", "/feed",
				    token=tok)
				if st != 200 or not isinstance(body, list) or not body:
					raise harness.HarnessError("GET /feed: %s %r" % (st, body))
				check_feed_sql(self.pg, uid, [p["id"] for p in body])
			for name in ALL:
				if name not in a.only:
					continue
				if name != "idle" and self.workers != a.workers:
					self.start_server(a.workers)
				log("%s (%.0f s so far)" % (name, time.monotonic() - t_start))
				t = time.monotonic()
				c0 = cpu_snapshot()
				try:
					res = getattr(self, "sc_" + name)()
				except (harness.HarnessError, OSError,
				    subprocess.SubprocessError, KeyError, ValueError) as e:
					log("%s failed: %s" % (name, e))
					res = [{"scenario": name, "error": str(e)}]
					rc = 1
					self.stop_bg()
				wall = time.monotonic() - t
				machine = cpu_others(c0, cpu_snapshot(), wall)
				if (machine["other_cpu_share"] or 0) > 0.10:
					self.notes.append("during %s, processes outside the bench "
					    "used %.0f%% of the CPU (load average %.1f): its "
					    "figures are pessimistic" % (name, 100 *
					    machine["other_cpu_share"], machine["loadavg_end"]))
				for r in res:
					r.setdefault("seconds_wall", round(wall, 1))
					r.setdefault("machine", machine)
				self.results.extend(res)
			total = time.monotonic() - t_start
			doc = {
				"size": a.size, "users": self.users, "posts": self.posts,
				"heavy_reader": {"id": self.heavy,
				    "follows": self.heavy_follows},
				"bench_users": BENCH_USERS, "load_users": self.nload,
				"workers": a.workers, "cores": os.cpu_count(),
				"quick": a.quick, "duration_s": a.duration,
				"seed_seconds": round(self.seed_secs, 1),
				"seed_command": cmdline(self.seed_cmd),
				"loadgen": a.loadgen,
				"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
				"wall_seconds": round(total, 1),
				"notes": self.notes,
				"scenarios": self.results,
			}
			with open(os.path.join(a.out, "results.json"), "w") as f:
				json.dump(doc, f, indent=2)
				f.write("\n")
			print_table(self.results, a)
			for n in self.notes:
				print("note: " + n)
			print("\nresults: %s (total %.0f s)" % (os.path.join(a.out,
			    "results.json"), total))
		except Stop as e:
			log("interrupted (%s): stopping" % e)
			rc = 130
		except (harness.HarnessError, OSError, subprocess.SubprocessError) as e:
			log("error: %s" % e)
			rc = 1
		finally:
			for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
				signal.signal(s, signal.SIG_IGN)
			self.stop_bg()
			for what, stop in (("gochat", self.server.stop if self.server
			    else None), ("Redis", self.redis.stop),
			    ("PostgreSQL", self.pg.stop)):
				if stop is None:
					continue
				try:
					stop()
				except (harness.HarnessError, OSError,
				    subprocess.SubprocessError) as e:
					log("stopping %s: %s" % (what, e))
					rc = rc or 1
			if a.keep or rc not in (0, 130):
				log("kept %s (logs: gochat-*/gochat.log, gochat-run.log, "
				    "pg/postgres.log, nginx/)" % self.tmp)
			else:
				shutil.rmtree(self.tmp, ignore_errors=True)
		return rc


def check_feed_sql(pg, uid, api_ids):
	"""feed.sql (without its \\set lines) for user uid must give the post
	ids GET /feed gave that user: the reference runs the same query."""
	with open(os.path.join(HERE, "feed.sql")) as f:
		sql = "".join(l for l in f if not l.startswith("\\"))
	r = subprocess.run([os.path.join(pg.bindir, "psql"), "-X", "-q", "-At",
	    "-v", "ON_ERROR_STOP=1", "-v", "uid=%d" % uid, "-d", pg.url],
	    input=sql, capture_output=True, text=True, timeout=60)
	if r.returncode != 0:
		raise harness.HarnessError("feed.sql in psql: %s" % r.stderr)
	ids = [int(l.split("|", 1)[0]) for l in r.stdout.splitlines() if l]
	if ids != api_ids:
		raise harness.HarnessError("feed.sql gives other posts than GET "
		    "/feed for user %d: %r... vs %r..." % (uid, ids[:5], api_ids[:5]))


# --- the table ---------------------------------------------------------------

def table_rows(s):
	"""(scenario, gochat, reference, ratio, p50, p99, target, status)."""
	name = s["scenario"]
	if "skipped" in s:
		return [(name, "skipped", "-", "-", "-", "-", "-",
		    s["skipped"][:60])]
	if "error" in s:
		return [(name, "ERROR", "-", "-", "-", "-", "-",
		    s["error"].splitlines()[0][:60])]
	g, r, j = s["gochat"], s.get("reference", {}), s.get("judge")
	status = "-" if not j else ("met" if j["met"] else
	    "missed" if j["met"] is not None else "n/a")
	tgt = j["target"] if j else "-"
	lat = lambda d, k: "%.2f" % d[k] if d and d.get(k) is not None else "-"
	if name in ("feed", "feed_heavy", "posts", "tiny", "api_me",
	    "api_follow"):
		bad = g.get("non_2xx", 0)
		rows = [(name, "%s req/s%s" % (fmt_int(g["req_per_s"]), " (%d non-2xx)"
		    % bad if bad else ""), "%s %s" % (fmt_int(r["req_per_s"]),
		    r["tool"]), fmt_ratio(s["ratio"]), lat(g["latency_ms"], "p50"),
		    lat(g["latency_ms"], "p99"), tgt, status)]
		if name in ("feed", "feed_heavy", "posts"):
			rows.append(("  same SQL, pgbench", "", "", "",
			    lat(r.get("latency_ms"), "p50"), lat(r.get("latency_ms"),
			    "p99"), "-", "-"))
		if name == "api_me" and s.get("reference_extended"):
			rx = s["reference_extended"]
			rows.append(("  same SQL", "", "%s pgbench -M extended" %
			    fmt_int(rx["req_per_s"]), fmt_ratio(s["ratio_extended"]),
			    lat(rx.get("latency_ms"), "p50"), lat(rx.get("latency_ms"),
			    "p99"), "-", "-"))
		if name == "api_me":
			rr = s["reference_redis"]
			rows.append(("  session lookup", "", "%s redis-benchmark GET"
			    % fmt_int(rr["req_per_s"]), fmt_ratio(s["ratio_redis"]),
			    lat(rr["latency_ms"], "p50"), lat(rr["latency_ms"], "p99"),
			    "-", "-"))
		return rows
	if name.startswith("chat_closed"):
		extra = ""
		if g.get("losses"):
			extra = " (%d lost)" % g["losses"]
		fl = s.get("floor") or {}
		rows = [(name, "%s deliv/s = %s msg/s x %d%s" % (
		    fmt_int(g["deliveries_per_s"]), fmt_int(g["sent_per_s"]),
		    int(name.rsplit("_", 1)[1]), extra), "floor %s deliv/s" %
		    fmt_int(fl.get("deliveries_per_s") or 0), fmt_ratio(
		    s.get("ratio_floor")), lat(g["latency_ms"], "p50"),
		    lat(g["latency_ms"], "p99"), tgt, status)]
		sf = s.get("store_floor")
		if sf:
			js = s.get("judge_store_floor")
			rows.append(("", "  vs the storing floor", "floor -S %s "
			    "deliv/s (x%s the floor's)" % (fmt_int(
			    sf["deliveries_per_s"]), fmt_ratio(s.get(
			    "store_floor_over_floor"))), fmt_ratio(s.get(
			    "ratio_store_floor")), lat(sf["latency_ms"], "p50"),
			    lat(sf["latency_ms"], "p99"), "the same, by the storing "
			    "floor" if js else "", ("met" if js["met"] else "missed")
			    if js else ""))
		return rows
	if name.startswith("chat_open"):
		rows = []
		for i, x in enumerate(g["series"]):
			l = x["latency_ms"]
			fl = x.get("floor_latency_ms") or {}
			rows.append((name if i == 0 else "", "%d msg/s: %s deliv/s, "
			    "p99.9 %.2f" % (x["rate"], fmt_int(x["deliveries_per_s"]),
			    l["p99.9"]), "floor p99 %s p99.9 %s" % (lat(fl, "p99"),
			    lat(fl, "p99.9")), fmt_ratio(x.get("ratio_floor_p99")),
			    lat(l, "p50"), lat(l, "p99"),
			    tgt if x["rate"] == T_RATE else "",
			    status if x["rate"] == T_RATE else ""))
			sl = x.get("store_floor_latency_ms")
			if sl:
				rows.append(("", "  vs the storing floor", "floor -S "
				    "p99 %s p99.9 %s (x%s the floor's p99)" % (lat(sl,
				    "p99"), lat(sl, "p99.9"), fmt_ratio(x.get(
				    "store_floor_over_floor_p99"))), fmt_ratio(
				    x.get("ratio_store_floor_p99")), lat(sl, "p50"),
				    lat(sl, "p99"), "the same, by the storing floor",
				    "met" if s.get("judge_store_floor", {}).get("met")
				    else "missed"))
		hp = s.get("hub_path")
		if hp:
			rows.append(("", "hub path (10 clients): p50 %s p99 %s" % (
			    lat(hp["latency_ms"], "p50"), lat(hp["latency_ms"], "p99")),
			    "storing floor p50 %s p99 %s" % (lat(hp.get(
			    "store_floor_latency_ms"), "p50"), lat(hp.get(
			    "store_floor_latency_ms"), "p99")), "", "", "", "", ""))
		return rows
	if name.startswith("intake"):
		return intake_rows(s, tgt, status, lat)
	if name == "login":
		st = g.get("storm", {})
		return [(name, "chat p99 %.2f ms during %s logins/s" % (
		    g["latency_ms"]["p99"], fmt_int(st.get("logins_per_s") or 0)),
		    "p99 %.2f ms alone" % r["latency_ms"]["p99"], fmt_ratio(
		    s["ratio"]), lat(g["latency_ms"], "p50"), lat(g["latency_ms"],
		    "p99"), tgt, status)]
	if name.startswith("idle"):
		c = g["chat"]
		return [(name, "%s B/conn, %s/%s held (%d workers)" % (
		    fmt_int(g["bytes_per_connection"]), fmt_int(g["held_to_end"]),
		    fmt_int(g["connections"]), g["workers"]), "4,096 B target",
		    fmt_ratio(s["ratio"]), lat(c.get("latency_ms"), "p50"),
		    lat(c.get("latency_ms"), "p99"), tgt, status)]
	return [(name, "?", "-", "-", "-", "-", tgt, status)]


def intake_rows(s, tgt, status, lat):
	"""The intake scenarios: the run, its references, where the CPU went."""
	g, rows = s["gochat"], []

	def run_row(label, g, first):
		bad = ", ".join("%d %s" % (g[k], k.replace("_", " ")) for k in
		    ("losses", "duplicates", "order_violations") if g.get(k))
		if not g["stored_ok"]:
			bad += (", " if bad else "") + "stored %d" % g["stored"]
		return (label, "%s msg/s, %s deliv/s%s" % (fmt_int(
		    g["accepted_per_s"]), fmt_int(g["deliveries_per_s"]),
		    " (%s)" % bad if bad else ""), "%s rows/s %s" % (fmt_int(
		    s["reference"]["rows_per_s"]), "pgbench") if first else "",
		    fmt_ratio(ratio(g["accepted_per_s"], s["reference"][
		    "rows_per_s"]) if g["loop"] == "closed" else None),
		    lat(g["latency_ms"], "p50"),
		    lat(g["latency_ms"], "p99"), tgt if first else "",
		    status if first else "")

	def cpu_row(g):
		c = g.get("cpu")
		if not c:
			return ("  CPU", "not sampled", "", "", "", "", "", "")
		us = c["us_per_msg"]
		return ("  CPU us/msg", ", ".join("%s %.1f" % (k, us[k]) for k in
		    ("workers", "hub", "redis", "postgres", "loadgen", "master")
		    if us.get(k) is not None) + ("; all %.1f" % c["us_per_msg_all"]
		    if c.get("us_per_msg_all") is not None else ""),
		    "%.2f of %d cores busy%s, others %.2f" % (
		    c["machine_cores_busy"], c["cores_total"], " (bound)" if
		    c["cores_bound"] else "", c["cores_others"]), "", "", "", "",
		    "")

	if "one_instance" in s:
		rows.append(run_row(s["scenario"] + " (1)", s["one_instance"],
		    True))
		rows.append(cpu_row(s["one_instance"]))
		rows.append(run_row("  2 instances", g, False))
		rows[-1] = rows[-1][:3] + ("x%s vs 1" % fmt_ratio(s[
		    "ratio_two_over_one"]),) + rows[-1][4:6] + (tgt, status)
	else:
		rows.append(run_row(s["scenario"], g, True))
	rows.append(cpu_row(g))
	sf = s.get("store_floor")
	if sf:
		rows.append(("  storing floor", "", "%s msg/s floor -S" % fmt_int(
		    sf["accepted_per_s"]), fmt_ratio(s.get("ratio_store_floor")),
		    lat(sf["latency_ms"], "p50"), lat(sf["latency_ms"], "p99"),
		    "the same, by the storing floor", "met" if s[
		    "judge_store_floor"]["met"] else "missed"))
		c = sf.get("cpu")
		if c:
			us = c["us_per_msg"]
			rows.append(("  CPU us/msg", ", ".join("%s %.1f" % (k, us[k])
			    for k in ("floor", "redis", "postgres", "loadgen") if
			    us.get(k) is not None) + ("; all %.1f" %
			    c["us_per_msg_all"] if c.get("us_per_msg_all") is not None
			    else ""), "%.2f of %d cores busy" % (
			    c["machine_cores_busy"], c["cores_total"]), "", "", "", "",
			    ""))
	if s["scenario"] == "intake_fixed_10":
		rows.append(("  p99.9 %s ms" % lat(g["latency_ms"], "p99.9"), "", "",
		    "", "", "", "", ""))
	if s["scenario"] != "intake_10":	# the same references: once
		return rows
	rx, rr = s["reference_xadd"], s["reference_xreadgroup"]
	pc = s["reference"].get("cpu")
	if pc and pc.get("us_per_row") is not None:
		rows.append(("  store", "", "PostgreSQL %.1f CPU-us/row in pgbench"
		    % pc["us_per_row"], "", "", "", "", ""))
	rows.append(("  inbox", "", "%s XADD/s" % fmt_int(rx["req_per_s"]),
	    fmt_ratio(s["ratio_xadd"]), "", "", "", ""))
	rows.append(("", "", "%s entries/s XREADGROUP" % fmt_int(
	    rr["entries_per_s"]), fmt_ratio(s["ratio_xreadgroup"]), "", "", "",
	    ""))
	return rows


def print_table(results, a):
	hdr = ("scenario", "gochat", "reference", "ratio", "p50 ms", "p99 ms",
	    "target", "")
	rows = []
	for s in results:
		rows.extend(table_rows(s))
	w = [max(len(x[i]) for x in [hdr] + rows) for i in range(len(hdr))]
	line = lambda x: "| " + " | ".join(v.rjust(w[i]) if i in (3, 4, 5) else
	    v.ljust(w[i]) for i, v in enumerate(x)) + " |"
	print(line(hdr))
	print("|" + "|".join("-" * (n + 2) for n in w) + "|")
	for x in rows:
		print(line(x))
	print("p50/p99: gochat's latency (chat: send to delivery; idle: the small "
	    "chat; rows \"same SQL\": pgbench's; storing floor rows: the "
	    "storing floor's). Ratios: gochat / reference (login: p99 with / "
	    "without the storm; idle: bytes / 4 KiB).")


def main(argv=None):
	ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
	ap.add_argument("--bin", required=True, help="the gochat binary")
	ap.add_argument("--srcdir", required=True, help="the source tree")
	ap.add_argument("--out", required=True, help="where results.json goes")
	ap.add_argument("--loadgen", help="test/bench/loadgen (default: next "
	    "to --bin in the build directory)")
	ap.add_argument("--floor", help="test/bench/floor, the fan-out floor "
	    "of the chat scenarios (default: next to the load generator)")
	ap.add_argument("--only", "--scenarios", dest="only",
	    default=",".join(ALL), help="comma-separated subset of " +
	    ",".join(ALL))
	ap.add_argument("--quick", action="store_true", help="short runs, small "
	    "data set, three open-loop rates, 10,000 idle connections only")
	ap.add_argument("--size", choices=sorted(SIZES), help="data set: small "
	    "2k users/20k posts, medium 50k/250k (default; --quick: small), "
	    "large 200k/1M")
	ap.add_argument("--duration", type=int, help="seconds per measured run "
	    "(default 8; --quick 3)")
	ap.add_argument("--connections", type=int, default=16,
	    help="wrk connections of feed and posts (16)")
	ap.add_argument("--threads", type=int, default=2,
	    help="wrk and pgbench threads of feed and posts (2)")
	ap.add_argument("--warmup", type=int, help="seconds of unrecorded load "
	    "before each HTTP measurement (default 2; --quick 1)")
	ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
	ap.add_argument("--rates", help="open-loop messages/s into the "
	    "1,000-client room (default 50,100,200,400,800; --quick 100,200,400)")
	ap.add_argument("--idle", dest="idle_counts", help="idle WebSocket "
	    "counts (default 10000,100000; --quick 10000)")
	ap.add_argument("--pgbench-mode", dest="pg_mode", default="prepared",
	    choices=("simple", "extended", "prepared"), help="pgbench -M of the "
	    "api scenario (default prepared; feed/posts use extended)")
	ap.add_argument("--perf", action="store_true", help="profile the "
	    "intake runs with perf record -a (OUT/perf-*.txt: per process "
	    "group, CPU-us per message by symbol)")
	ap.add_argument("--keep", action="store_true",
	    help="keep the temporary directory (logs, data)")
	a = ap.parse_args(argv)

	a.only = [s.strip() for s in a.only.split(",") if s.strip()]
	for s in a.only:
		if s not in ALL:
			ap.error("unknown scenario %r (choose from %s)" % (s,
			    ",".join(ALL)))
	q = a.quick
	a.size = a.size or ("small" if q else "medium")
	a.duration = a.duration or (3 if q else 8)
	a.warmup = a.warmup if a.warmup is not None else (1 if q else 2)
	a.ol_duration = 2 if q else 5
	a.rates = [int(x) for x in (a.rates or ("100,200,400" if q else
	    "50,100,200,400,800")).split(",")]
	a.idle_counts = [int(x) for x in (a.idle_counts or ("10000" if q else
	    "10000,100000")).split(",")]
	a.idle_hold = 6 if q else 10
	a.idle_join_timeout = 300
	a.idle_pending = 512
	a.chat_sizes = [100, 1000]
	a.lg_threads = 2
	a.redis_n = 100000 if q else 300000
	a.bin = os.path.abspath(a.bin)
	a.srcdir = os.path.abspath(a.srcdir)
	a.out = os.path.abspath(a.out)
	a.loadgen = os.path.abspath(a.loadgen or os.path.join(
	    os.path.dirname(a.bin), "test", "bench", "loadgen"))
	a.floor = os.path.abspath(a.floor or os.path.join(
	    os.path.dirname(a.loadgen), "floor"))
	os.makedirs(a.out, exist_ok=True)

	b = Bench(a)
	need = {"wrk": {"feed", "feed_heavy", "posts"},
	    "pgbench": {"feed", "feed_heavy", "posts", "api"},
	    "redis-benchmark": {"api", "chat"}, "nginx": {"tiny"},
	    "loadgen": {"tiny", "api", "chat", "login", "idle", "intake"},
	    "floor": {"chat", "intake"}}
	paths = {"wrk": shutil.which("wrk"), "pgbench": pgbench_path(),
	    "redis-benchmark": shutil.which("redis-benchmark"),
	    "nginx": shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",)
	    if os.access(p, os.X_OK)), None),
	    "loadgen": a.loadgen if os.access(a.loadgen, os.X_OK) else None,
	    "floor": a.floor if os.access(a.floor, os.X_OK) else None}
	hints = {"wrk": "apt-get install wrk", "pgbench": "apt-get install "
	    "postgresql-client", "redis-benchmark": "apt-get install redis-tools",
	    "nginx": "apt-get install nginx-light", "loadgen": "make "
	    "test/bench/loadgen, or give --loadgen", "floor": "make "
	    "test/bench/floor, or give --floor"}
	for tool, users in need.items():
		if users & set(a.only) and not paths[tool]:
			print("bench: %s not found (%s): %s" % (tool, a.loadgen if tool ==
			    "loadgen" else "", hints[tool]), file=sys.stderr)
			return 2
	b.wrk, b.pgbench_bin = paths["wrk"], paths["pgbench"]
	b.redis_bench, b.nginx = paths["redis-benchmark"], paths["nginx"]
	b.gnuplot = shutil.which("gnuplot")
	b.gnuplot_terms = ""
	if b.gnuplot:
		r = subprocess.run([b.gnuplot, "-e", "set terminal"],
		    capture_output=True, text=True)
		b.gnuplot_terms = r.stdout + r.stderr
	b.nload = max([1000] + (a.idle_counts if "idle" in a.only else []))
	if "intake" in a.only:
		for tool in ("pgbench", "redis-benchmark", "loadgen"):
			if not paths[tool]:
				print("bench: intake needs %s: %s" % (tool, hints[tool]),
				    file=sys.stderr)
				return 2
		# one user per client: a user's second connection in a room
		# brings no join event of its own
		b.nload = max(b.nload, 2000)

	signal.signal(signal.SIGINT, on_signal)
	signal.signal(signal.SIGTERM, on_signal)
	signal.signal(signal.SIGHUP, on_signal)
	return b.main()


if __name__ == "__main__":
	sys.exit(main())
