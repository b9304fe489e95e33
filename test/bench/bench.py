#!/usr/bin/python3
"""make bench: GoChat's posts and feed under load, next to PostgreSQL alone.

Standard library only. Starts a private PostgreSQL, Redis and gochat (one
worker per core) with test/harness.py in a temporary directory, registers
one user through the API (for a real scrypt hash), seeds a data set with
test/bench/seed.py, logs the bench users in, then runs each scenario twice
at the same concurrency:

  feed   wrk GET /feed (test/bench/feed.lua, the next user's token on each
         request) | pgbench running the same feed SQL (test/bench/feed.sql)
         for a random bench user
  posts  wrk POST /posts (test/bench/posts.lua) | pgbench running the same
         INSERT ... RETURNING (test/bench/posts.sql)

Prints a table and writes OUT/results.json (figures, reference figures,
their ratio and the exact commands). Everything it started is stopped at
the end, on errors and on Ctrl-C.

Usage:
  bench.py --bin ./gochat --srcdir . --out ./bench [--size small|medium|large]
           [--duration 15] [--connections 16] [--threads 2] [--keep]
Needs wrk (Debian package wrk) and pgbench (postgresql-client); exits 2
when one is missing.
"""

import argparse
import concurrent.futures
import glob
import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
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
BENCH_USERS = 64
PASSWORD = "bench-password-1234"


class Stop(Exception):
	"""SIGINT or SIGTERM arrived."""


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


def run(cmd, what, timeout=None, **kw):
	"""Run cmd, return its stdout; fail with its stderr."""
	t = time.monotonic()
	r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
	    text=True, timeout=timeout, stdin=subprocess.DEVNULL, **kw)
	if r.returncode != 0:
		raise harness.HarnessError("%s failed (exit %d): %s\n%s%s" % (
		    what, r.returncode, " ".join(cmd), r.stdout[-3000:],
		    r.stderr[-3000:]))
	return r.stdout, time.monotonic() - t


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


def main(argv=None):
	ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
	ap.add_argument("--bin", required=True, help="the gochat binary")
	ap.add_argument("--srcdir", required=True, help="the source tree")
	ap.add_argument("--out", required=True, help="where results.json goes")
	ap.add_argument("--size", choices=sorted(SIZES), default="medium",
	    help="data set: small 2k users/20k posts, medium 50k/250k "
	    "(default), large 200k/1M")
	ap.add_argument("--duration", type=int, default=15,
	    help="seconds per run (default 15)")
	ap.add_argument("--connections", type=int, default=16)
	ap.add_argument("--threads", type=int, default=2)
	ap.add_argument("--warmup", type=int, default=3,
	    help="seconds of unrecorded wrk load before each scenario")
	ap.add_argument("--scenarios", default="feed,posts",
	    help="comma-separated subset of feed,posts")
	ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
	ap.add_argument("--keep", action="store_true",
	    help="keep the temporary directory (logs, data)")
	a = ap.parse_args(argv)

	wrk = shutil.which("wrk")
	if not wrk:
		print("bench: wrk not found: apt-get install wrk", file=sys.stderr)
		return 2
	pgbench = pgbench_path()
	if not pgbench:
		print("bench: pgbench not found: apt-get install postgresql-client",
		    file=sys.stderr)
		return 2
	scenarios = [s.strip() for s in a.scenarios.split(",") if s.strip()]
	for s in scenarios:
		if s not in ("feed", "posts"):
			ap.error("unknown scenario %r" % s)
	bin = os.path.abspath(a.bin)
	srcdir = os.path.abspath(a.srcdir)
	out = os.path.abspath(a.out)
	os.makedirs(out, exist_ok=True)

	signal.signal(signal.SIGINT, on_signal)
	signal.signal(signal.SIGTERM, on_signal)
	signal.signal(signal.SIGHUP, on_signal)

	tmp = tempfile.mkdtemp(prefix="gochat-bench-")
	os.chmod(tmp, 0o711)	# PostgreSQL runs as 'postgres' under root
	pg = harness.Postgres(os.path.join(tmp, "pg"), harness.free_port())
	redis = harness.Redis(os.path.join(tmp, "redis"), harness.free_port())
	server = None
	rc = 0
	t_start = time.monotonic()
	try:
		log("temporary directory %s" % tmp)
		pg.start()
		redis.start()
		port = harness.free_port()
		conf = {
			"listen": "127.0.0.1:%d" % port,
			"workers": str(a.workers),
			"database_url": pg.url,
			"redis_url": redis.url,
			"sql_dir": os.path.join(srcdir, "sql"),
			"web_dir": os.path.join(srcdir, "web"),
			"log_level": "warn",
			"log_file": os.path.join(tmp, "gochat-run.log"),
		}
		server = harness.Server(bin, conf, os.path.join(tmp, "gochat"))
		server.start(timeout=60)
		log("PostgreSQL :%d, Redis :%d, gochat :%d (%d workers)" % (
		    pg.port, redis.port, port, a.workers))

		# A real scrypt hash for the bench users: register one user.
		st, body = api("127.0.0.1", port, "POST", "/register",
		    {"username": "benchsrc", "email": "benchsrc@example.test",
		     "password": PASSWORD})
		if st != 201:
			raise harness.HarnessError("POST /register: %s %r" % (st, body))

		users, posts, extra = SIZES[a.size]
		seed_cmd = ["/usr/bin/python3", os.path.join(HERE, "seed.py"),
		    "--dsn", pg.url, "--psql", os.path.join(pg.bindir, "psql"),
		    "--reset", "--users", str(users), "--posts", str(posts),
		    "--bench-users", str(BENCH_USERS),
		    "--hash-from-user", "benchsrc"] + extra
		log("seeding (%s): %s" % (a.size, " ".join(seed_cmd)))
		seed_out, seed_secs = run(seed_cmd, "seed.py", timeout=1800)
		sys.stderr.write(seed_out)
		log("seeded in %.1f s" % seed_secs)
		lo, hi = users + 1, users + BENCH_USERS

		# Log the bench users in, concurrently (scrypt: ~80 ms each).
		def login(i):
			st, body = api("127.0.0.1", port, "POST", "/login",
			    {"username": "bench%d" % i, "password": PASSWORD})
			if st != 200 or "token" not in body:
				raise harness.HarnessError("POST /login bench%d: %s %r"
				    % (i, st, body))
			return body["token"]
		t = time.monotonic()
		with concurrent.futures.ThreadPoolExecutor(8) as ex:
			tokens = list(ex.map(login, range(1, BENCH_USERS + 1)))
		log("%d logins in %.1f s" % (len(tokens), time.monotonic() - t))
		tokfile = os.path.join(tmp, "tokens.txt")
		with open(tokfile, "w") as f:
			f.write("\n".join(tokens) + "\n")

		# Sanity: both endpoints answer as expected before measuring.
		st, body = api("127.0.0.1", port, "GET", "/feed", token=tokens[0])
		if st != 200 or not isinstance(body, list) or not body:
			raise harness.HarnessError("GET /feed: %s %r" % (st, body))
		check_feed_sql(pg, lo, [p["id"] for p in body])

		results = []
		for name in scenarios:
			results.append(scenario(a, name, wrk, pgbench, port, pg, tokfile,
			    lo, hi, tmp))

		doc = {
			"size": a.size, "users": users, "posts": posts,
			"bench_users": BENCH_USERS, "workers": a.workers,
			"cores": os.cpu_count(), "seed_seconds": round(seed_secs, 1),
			"seed_command": " ".join(seed_cmd),
			"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
			"scenarios": results,
		}
		with open(os.path.join(out, "results.json"), "w") as f:
			json.dump(doc, f, indent=2)
			f.write("\n")
		print_table(results)
		print("\nresults: %s (total %.0f s)" % (os.path.join(out,
		    "results.json"), time.monotonic() - t_start))
	except Stop as e:
		log("interrupted (%s): stopping" % e)
		rc = 130
	except (harness.HarnessError, OSError, subprocess.SubprocessError) as e:
		log("error: %s" % e)
		rc = 1
	finally:
		for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
			signal.signal(s, signal.SIG_IGN)
		for what, stop in (("gochat", server.stop if server else None),
		    ("Redis", redis.stop), ("PostgreSQL", pg.stop)):
			if stop is None:
				continue
			try:
				stop()
			except (harness.HarnessError, OSError,
			    subprocess.SubprocessError) as e:
				log("stopping %s: %s" % (what, e))
				rc = rc or 1
		if a.keep or rc not in (0, 130):
			log("kept %s (logs: gochat/gochat.log, gochat-run.log, "
			    "pg/postgres.log)" % tmp)
		else:
			shutil.rmtree(tmp, ignore_errors=True)
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


def scenario(a, name, wrk, pgbench, port, pg, tokfile, lo, hi, tmp):
	path = {"feed": "/feed", "posts": "/posts"}[name]
	lua = os.path.join(HERE, name + ".lua")
	sql = os.path.join(HERE, name + ".sql")
	url = "http://127.0.0.1:%d%s" % (port, path)
	c, t = str(a.connections), str(a.threads)
	if a.warmup > 0:
		run([wrk, "-t", t, "-c", c, "-d", "%ds" % a.warmup, "-s", lua, url,
		    "--", tokfile], "wrk warm-up", timeout=a.warmup + 60)
	wrk_cmd = [wrk, "-t", t, "-c", c, "-d", "%ds" % a.duration,
	    "--latency", "-s", lua, url, "--", tokfile]
	log("%s: %s" % (name, " ".join(wrk_cmd)))
	wout, _ = run(wrk_cmd, "wrk", timeout=a.duration + 60)
	g = parse_wrk(wout)
	if g["non_2xx"] or g["requests"] == 0:
		log("%s: %d non-2xx answers out of %d" % (name, g["non_2xx"],
		    g["requests"]))

	logprefix = os.path.join(tmp, "pgbench_" + name)
	pgb_cmd = [pgbench, "-n", "-M", "extended", "-c", c, "-j", t,
	    "-T", str(a.duration), "-D", "lo=%d" % lo, "-D", "hi=%d" % hi,
	    "-f", sql, "-l", "--log-prefix", logprefix, pg.url]
	log("%s reference: %s" % (name, " ".join(pgb_cmd)))
	pout, _ = run(pgb_cmd, "pgbench", timeout=a.duration + 60)
	r = parse_pgbench(pout, logprefix)
	ratio = (g["req_per_s"] / r["tps"]) if r["tps"] else None
	return {
		"scenario": name,
		"gochat": g,
		"reference": r,
		"ratio": round(ratio, 3) if ratio is not None else None,
		"commands": {
			"gochat": " ".join(wrk_cmd),
			"reference": " ".join(pgb_cmd),
		},
		"output": {"gochat": wout, "reference": pout},
	}


def print_table(results):
	hdr = ("scenario", "gochat req/s", "p50 ms", "p99 ms", "non-2xx",
	    "ref tps", "ref avg ms", "ratio")
	rows = []
	for s in results:
		g, r = s["gochat"], s["reference"]
		rows.append((s["scenario"], "%.1f" % g["req_per_s"],
		    "%.2f" % g["latency_ms"]["p50"], "%.2f" % g["latency_ms"]["p99"],
		    str(g["non_2xx"]), "%.1f" % r["tps"],
		    "%.2f" % (r["latency_avg_ms"] or 0),
		    "%.2f" % s["ratio"] if s["ratio"] is not None else "-"))
	w = [max(len(x[i]) for x in [hdr] + rows) for i in range(len(hdr))]
	line = lambda x: "| " + " | ".join(v.rjust(w[i]) if i else v.ljust(w[i])
	    for i, v in enumerate(x)) + " |"
	print(line(hdr))
	print("|" + "|".join("-" * (n + 2) for n in w) + "|")
	for x in rows:
		print(line(x))


if __name__ == "__main__":
	sys.exit(main())
