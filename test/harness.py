#!/usr/bin/python3
"""Run GoChat with a private PostgreSQL and Redis: the integration tests'
harness and the engine of `make run`. Standard library only.

As a module (test/integration/conftest.py imports it):
    Postgres(dir, port)   initdb + postgres on 127.0.0.1:port, database gochat
    PgBouncer(dir, port, pg)  pgbouncer in transaction mode in front of
                          Postgres pg (pg.pooler = it: pg.url leads there)
    Redis(dir, port)      redis-server on 127.0.0.1:port with an AOF
                          (appendonly yes, appendfsync everysec), no RDB
                          snapshots (password= adds --requirepass,
                          appendonly=False turns the AOF off, replicaof=
                          PORT makes it a replica of 127.0.0.1:PORT)
    Sentinel(dir, port, master_port)  redis-sentinel on 127.0.0.1:port
                          watching the master "mymaster" (quorum 2, down
                          after 1 s) from a config file of its own
    Server(bin, conf, dir)  gochat -c dir/gochat.conf in the foreground
    redis_cmd(port, *args)  one Redis command over a socket (no redis-cli)
    RawHTTP(host, port)   exact bytes over a socket, for malformed, slow and
                          pipelined requests
    free_port(), wait_for(), proc_info(), proc_alive()

PostgreSQL refuses to run as root: when euid is 0, initdb and postgres run
as the `postgres` system user in a directory chowned to it, so that
directory's parents must be traversable by that user. The postmaster is a
child of the harness (no pg_ctl): it is reaped, and killed with it.

As a command (what `make run` runs):
    harness.py run --dir DIR --bin BIN --srcdir SRCDIR [--port 8080]
    [--redis-port 6390]
keeps PostgreSQL and Redis data under DIR (reused next time), starts
PostgreSQL on a free port and Redis (with its AOF) on 127.0.0.1:REDIS_PORT
(so that `redis-cli -p REDIS_PORT` reaches it), runs the server on
127.0.0.1:PORT, or on what GOCHAT_LISTEN says, and stops all three cleanly
on Ctrl-C or SIGTERM.

Environment knobs for the integration tests:
    GOCHAT_TEST_KEEP=1     keep the temporary directory (configs, logs, the
                           PostgreSQL and Redis data) and print its path
    GOCHAT_TEST_VERBOSE=1  on failure print the whole server log (and the
                           PostgreSQL and Redis logs), not only its tail
    GOCHAT_TEST_URL=http://127.0.0.1:8080
                           test an already-running server (one started by
                           hand, under gdb say); tests that need to start,
                           signal or kill processes, or that rely on the test
                           configuration's short timeouts, are skipped
    GOCHAT_BIN, GOCHAT_SRCDIR  the binary and the source tree (make check
                           sets both)
    GOCHAT_TEST_PGBOUNCER=1  the shared PostgreSQL of the tests (the pg
                           fixture) is reached through a PgBouncer in
                           transaction mode, and every server runs with
                           db_prepare = no (test/integration/pgbouncer.tap)
    GOCHAT_PG_BINDIR       where initdb, postgres and psql are (default:
                           pg_config --bindir, then /usr/lib/postgresql/*/bin)
The server never sees the caller's GOCHAT_* variables: they would override
its configuration keys (see Server).
"""

import argparse
import collections
import glob
import http.client
import json
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse

KEEP = os.environ.get("GOCHAT_TEST_KEEP", "") not in ("", "0")
VERBOSE = os.environ.get("GOCHAT_TEST_VERBOSE", "") not in ("", "0")
EXTERNAL_URL = os.environ.get("GOCHAT_TEST_URL", "")
PGBOUNCER = os.environ.get("GOCHAT_TEST_PGBOUNCER", "") not in ("", "0")


class HarnessError(Exception):
	"""Something the harness could not do; the message says what and why."""


# --- small helpers ----------------------------------------------------------

def free_port():
	"""A TCP port on 127.0.0.1 that nobody listens on right now."""
	with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
		s.bind(("127.0.0.1", 0))
		return s.getsockname()[1]


def port_in_use(port, host="127.0.0.1"):
	with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
		s.settimeout(1)
		return s.connect_ex((host, port)) == 0


def wait_for(predicate, timeout, interval=0.05, what=None):
	"""Call predicate until it returns something true or timeout seconds
	pass. Returns that value; on timeout returns the last (false) value, or
	raises HarnessError when what (a description) is given."""
	deadline = time.monotonic() + timeout
	while True:
		value = predicate()
		if value:
			return value
		if time.monotonic() >= deadline:
			if what:
				raise HarnessError("timed out after %.1f s waiting for %s"
				    % (timeout, what))
			return value
		time.sleep(interval)


def tail(path, lines=60):
	"""The last lines of a text file, or a note that it does not exist."""
	try:
		with open(path, "rb") as f:
			f.seek(0, os.SEEK_END)
			size = f.tell()
			f.seek(max(0, size - 256 * 1024))
			data = f.read()
	except OSError as e:
		return "(no log: %s)" % e
	text = data.decode("utf-8", "replace").splitlines()
	return "\n".join(text[-lines:]) if lines else "\n".join(text)


def proc_info(pid):
	"""(ppid, state, cmdline) of a process from /proc, or None if it is
	gone. cmdline is what ps -o args shows: NULs as spaces, trimmed."""
	try:
		with open("/proc/%d/stat" % pid, "rb") as f:
			stat = f.read().decode("utf-8", "replace")
		with open("/proc/%d/cmdline" % pid, "rb") as f:
			raw = f.read()
	except (FileNotFoundError, ProcessLookupError):
		return None
	except OSError:
		return None
	# "pid (comm) state ppid ...": comm may hold spaces and parentheses.
	rest = stat[stat.rfind(")") + 2:].split()
	state, ppid = rest[0], int(rest[1])
	cmdline = raw.replace(b"\0", b" ").decode("utf-8", "replace").strip()
	return ppid, state, cmdline


def proc_cpu_seconds(pid):
	"""User and system CPU time pid has used so far."""
	with open("/proc/%d/stat" % pid) as f:
		rest = f.read().rpartition(")")[2].split()
	return (int(rest[11]) + int(rest[12])) / os.sysconf("SC_CLK_TCK")


def proc_alive(pid):
	"""True while pid exists and is not a zombie (a zombie has exited)."""
	info = proc_info(pid)
	return info is not None and info[1] not in ("Z", "X")


def children_of(ppid):
	"""[(pid, cmdline)] of the live processes whose parent is ppid."""
	out = []
	for name in os.listdir("/proc"):
		if not name.isdigit():
			continue
		info = proc_info(int(name))
		if info and info[0] == ppid and info[1] not in ("Z", "X"):
			out.append((int(name), info[2]))
	return sorted(out)


try:
	import ctypes
	_LIBC = ctypes.CDLL(None, use_errno=True)
except (ImportError, OSError):
	_LIBC = None


def _pdeathsig(sig=signal.SIGTERM):
	"""A preexec_fn that has the kernel send sig to the child when the
	harness dies, so an interrupted run leaves no server, redis-server or
	postgres behind. (Linux only; elsewhere a no-op.)"""
	def preexec():
		if _LIBC is not None and sys.platform.startswith("linux"):
			_LIBC.prctl(1, int(sig), 0, 0, 0)	# PR_SET_PDEATHSIG
	return preexec


def _clean_env(extra=None):
	"""The caller's environment without GOCHAT_*: the server reads
	GOCHAT_<KEY> as configuration overrides, and make check's GOCHAT_BIN or
	a debugging GOCHAT_TEST_URL are none of its business."""
	env = {k: v for k, v in os.environ.items() if not k.startswith("GOCHAT_")}
	env.update(extra or {})
	return env


# --- PostgreSQL -------------------------------------------------------------

def pg_bindir():
	"""The directory holding initdb, postgres and psql."""
	cands = []
	if os.environ.get("GOCHAT_PG_BINDIR"):
		cands.append(os.environ["GOCHAT_PG_BINDIR"])
	try:
		out = subprocess.run(["pg_config", "--bindir"], capture_output=True,
		    text=True, timeout=10)
		if out.returncode == 0:
			cands.append(out.stdout.strip())
	except (OSError, subprocess.SubprocessError):
		pass

	def version(p):
		m = re.search(r"/postgresql/(\d+)(?:\.(\d+))?/bin", p)
		return (int(m.group(1)), int(m.group(2) or 0)) if m else (0, 0)
	cands += sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version,
	    reverse=True)
	cands += ["/usr/local/pgsql/bin", "/usr/local/bin", "/usr/bin"]
	for d in cands:
		if all(os.access(os.path.join(d, b), os.X_OK)
		    for b in ("initdb", "postgres", "psql")):
			return d
	raise HarnessError("PostgreSQL server binaries (initdb, postgres, psql) "
	    "not found: install Debian's postgresql or set GOCHAT_PG_BINDIR")


class Postgres:
	"""A throwaway (or, for make run, a kept) PostgreSQL cluster.

	dir holds data/ (the cluster), postgres.log and the Unix socket; it is
	created if missing. The cluster is initialised on the first start() if
	dir/data holds none yet, so data survives stop()/start() and runs. The
	postmaster is a direct child of the harness (no pg_ctl), so it is reaped
	even where PID 1 reaps nothing."""

	def __init__(self, dir, port, dbname="gochat"):
		self.dir = os.path.abspath(str(dir))
		self.port = int(port)
		self.dbname = dbname
		self.datadir = os.path.join(self.dir, "data")
		self.logfile = os.path.join(self.dir, "postgres.log")
		self.bindir = pg_bindir()
		self.as_postgres = os.geteuid() == 0
		self.sockdir = self.dir
		self._tmp_sockdir = None
		self.proc = None
		self.pooler = None	# a PgBouncer in front of it, once started

	@property
	def url(self):
		return self.url_for(self.dbname)

	def url_for(self, dbname):
		"""The URL of database dbname: through the PgBouncer started in
		front of this PostgreSQL, if any (see PgBouncer)."""
		if self.pooler is not None:
			return self.pooler.url_for(dbname)
		return self.direct_url_for(dbname)

	@property
	def direct_url(self):
		return self.direct_url_for(self.dbname)

	def direct_url_for(self, dbname):
		return "postgresql://postgres@127.0.0.1:%d/%s" % (self.port, dbname)

	def _user_kw(self):
		"""Popen arguments that drop root for the server-side programs."""
		if not self.as_postgres:
			return {}
		return {"user": "postgres", "group": "postgres", "extra_groups": []}

	def _run(self, argv, timeout=60):
		argv = [os.path.join(self.bindir, argv[0])] + list(argv[1:])
		try:
			r = subprocess.run(argv, cwd=self.dir, capture_output=True,
			    text=True, timeout=timeout, stdin=subprocess.DEVNULL,
			    env=_clean_env({"LC_ALL": "C"}), **self._user_kw())
		except subprocess.TimeoutExpired:
			raise HarnessError("%s took more than %d s" % (" ".join(argv),
			    timeout))
		if r.returncode != 0:
			raise HarnessError("%s failed (exit %d):\n%s%s" % (
			    " ".join(argv), r.returncode, r.stdout, r.stderr))
		return r

	def _prepare_dir(self):
		os.makedirs(self.dir, exist_ok=True)
		if self.as_postgres:
			pw = pwd.getpwnam("postgres")
			for root, dirs, files in os.walk(self.dir):
				for n in [root] + [os.path.join(root, x) for x in dirs + files]:
					try:
						os.lchown(n, pw.pw_uid, pw.pw_gid)
					except OSError:
						pass
			os.chmod(self.dir, 0o700)
			r = subprocess.run(["test", "-w", self.dir, "-a", "-x", self.dir],
			    **self._user_kw())
			if r.returncode != 0:
				raise HarnessError(
				    "PostgreSQL refuses to run as root, so it runs as the "
				    "user 'postgres', which cannot reach %s: make its parent "
				    "directories traversable (chmod o+x) or pick another "
				    "directory" % self.dir)
		# A Unix socket path must fit in sun_path (108 bytes).
		if len(os.path.join(self.dir, ".s.PGSQL.%d.lock" % self.port)) > 100:
			self._tmp_sockdir = tempfile.mkdtemp(prefix="gcpg-")
			if self.as_postgres:
				pw = pwd.getpwnam("postgres")
				os.chown(self._tmp_sockdir, pw.pw_uid, pw.pw_gid)
			self.sockdir = self._tmp_sockdir

	def initialized(self):
		return os.path.exists(os.path.join(self.datadir, "PG_VERSION"))

	def init(self):
		"""initdb: trust authentication, UTF8, superuser postgres."""
		self._prepare_dir()
		if os.path.exists(self.datadir):
			shutil.rmtree(self.datadir)	# a half-finished initdb
		self._run(["initdb", "-D", self.datadir, "-U", "postgres",
		    "--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync"],
		    timeout=120)

	def _ready(self):
		"""True once postmaster.pid names our postmaster and says ready."""
		try:
			with open(os.path.join(self.datadir, "postmaster.pid")) as f:
				lines = f.read().splitlines()
		except OSError:
			return False
		return (len(lines) >= 8 and lines[0].strip() == str(self.proc.pid)
		    and lines[7].strip() == "ready")

	def start(self, timeout=60):
		"""Start (initdb first if needed), wait until it accepts
		connections, make sure database dbname exists."""
		if self.running():
			return self
		if not self.initialized():
			self.init()
		else:
			self._prepare_dir()
		argv = [os.path.join(self.bindir, "postgres"), "-D", self.datadir,
		    "-k", self.sockdir, "-c", "listen_addresses=127.0.0.1",
		    "-p", str(self.port), "-c", "fsync=off",
		    "-c", "full_page_writes=off"]
		log = open(self.logfile, "ab")
		try:
			# SIGINT is PostgreSQL's fast shutdown.
			self.proc = subprocess.Popen(argv, cwd=self.dir, stdout=log,
			    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
			    start_new_session=True, env=_clean_env({"LC_ALL": "C"}),
			    preexec_fn=_pdeathsig(signal.SIGINT), **self._user_kw())
		finally:
			log.close()
		deadline = time.monotonic() + timeout
		while not self._ready():
			if self.proc.poll() is not None:
				raise HarnessError("postgres exited with code %d:\n%s" % (
				    self.proc.returncode, tail(self.logfile, 30)))
			if time.monotonic() > deadline:
				self.kill()
				raise HarnessError("postgres was not ready within %d s:\n%s"
				    % (timeout, tail(self.logfile, 30)))
			time.sleep(0.05)
		self.create_database(self.dbname, exist_ok=True)
		return self

	def psql(self, sql, dbname="postgres", check=True):
		"""Run SQL with psql over TCP; returns its output (-tA)."""
		argv = [os.path.join(self.bindir, "psql"), "-X", "-q", "-tA",
		    "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p", str(self.port),
		    "-U", "postgres", "-d", dbname, "-c", sql]
		r = subprocess.run(argv, capture_output=True, text=True, timeout=30,
		    stdin=subprocess.DEVNULL, env=_clean_env())
		if check and r.returncode != 0:
			raise HarnessError("psql -c %r failed: %s" % (sql, r.stderr))
		return r.stdout.strip()

	def create_database(self, dbname, exist_ok=False):
		"""CREATE DATABASE dbname; returns its URL."""
		if not re.fullmatch(r"[a-z_][a-z0-9_]*", dbname):
			raise HarnessError("bad database name %r" % dbname)
		found = self.psql("SELECT 1 FROM pg_database WHERE datname = '%s'"
		    % dbname)
		if found != "1":
			self.psql("CREATE DATABASE %s" % dbname)
		elif not exist_ok:
			raise HarnessError("database %s exists" % dbname)
		return self.url_for(dbname)

	def pid(self):
		return self.proc.pid if self.running() else None

	def running(self):
		return self.proc is not None and self.proc.poll() is None

	def stop(self, timeout=60):
		"""Fast shutdown: sessions are ended, data is kept."""
		if self.running():
			self.proc.send_signal(signal.SIGINT)
			try:
				self.proc.wait(timeout)
			except subprocess.TimeoutExpired:
				self.kill()
				raise HarnessError("postgres ignored a fast shutdown for "
				    "%d s:\n%s" % (timeout, tail(self.logfile, 30)))
		self._cleanup_sockdir()

	def kill(self):
		"""SIGKILL the postmaster and its backends (a crash)."""
		if not self.running():
			return
		try:
			os.killpg(self.proc.pid, signal.SIGKILL)	# its own session
		except ProcessLookupError:
			pass
		self.proc.wait(10)

	def restart(self):
		self.stop()
		return self.start()

	def _cleanup_sockdir(self):
		if self._tmp_sockdir:
			shutil.rmtree(self._tmp_sockdir, ignore_errors=True)
			self._tmp_sockdir = None
			self.sockdir = self.dir

	def log_text(self):
		return tail(self.logfile, 0)


# --- PgBouncer --------------------------------------------------------------

class PgBouncer:
	"""Debian's pgbouncer on 127.0.0.1:port in front of a harness Postgres,
	in transaction mode (each transaction may run on another server
	connection: what GoChat must survive with db_prepare = no). Every
	database name is passed through to that PostgreSQL; auth_type trust, as
	the harness PostgreSQL itself. Its files (pgbouncer.ini, userlist.txt,
	pgbouncer.log) are in dir. pgbouncer refuses to run as root: it then
	runs as the postgres user, as PostgreSQL does.

	url and url_for() name databases through the pooler. Set pg.pooler to
	it to have pg.url and pg.url_for() lead through it as well
	(pg.direct_url still names PostgreSQL itself); stop() undoes that."""

	BINARIES = ("/usr/sbin/pgbouncer", "/usr/local/sbin/pgbouncer",
	    "/usr/local/bin/pgbouncer")

	def __init__(self, dir, port, pg, pool_size=40):
		self.dir = os.path.abspath(str(dir))
		self.port = int(port)
		self.pg = pg
		self.pool_size = int(pool_size)
		self.logfile = os.path.join(self.dir, "pgbouncer.log")
		self.conffile = os.path.join(self.dir, "pgbouncer.ini")
		self.proc = None
		self.binary = shutil.which("pgbouncer") or next(
		    (b for b in self.BINARIES if os.access(b, os.X_OK)), None)

	@staticmethod
	def available():
		return shutil.which("pgbouncer") is not None or any(
		    os.access(b, os.X_OK) for b in PgBouncer.BINARIES)

	@property
	def url(self):
		return self.url_for(self.pg.dbname)

	def url_for(self, dbname):
		return "postgresql://postgres@127.0.0.1:%d/%s" % (self.port, dbname)

	def _write_conf(self):
		os.makedirs(self.dir, exist_ok=True)
		with open(os.path.join(self.dir, "userlist.txt"), "w") as f:
			f.write('"postgres" ""\n')
		with open(self.conffile, "w") as f:
			f.write("\n".join([
			    "; written by test/harness.py",
			    "[databases]",
			    "* = host=127.0.0.1 port=%d" % self.pg.port,
			    "[pgbouncer]",
			    "listen_addr = 127.0.0.1",
			    "listen_port = %d" % self.port,
			    "unix_socket_dir =",
			    "auth_type = trust",
			    "auth_file = %s" % os.path.join(self.dir, "userlist.txt"),
			    "pool_mode = transaction",
			    "max_client_conn = 2000",
			    "default_pool_size = %d" % self.pool_size,
			    # Transactions spread over the server connections
			    # (not the last one used first), several of which
			    # are always open: what a busy pooler does, so that
			    # relying on one session's state fails every time,
			    # not now and then.
			    "server_round_robin = 1",
			    "min_pool_size = 4",
			    "logfile = %s" % self.logfile,
			    "pidfile = %s" % os.path.join(self.dir, "pgbouncer.pid"),
			    ""]))
		if os.geteuid() == 0:
			pw = pwd.getpwnam("postgres")
			for n in [self.dir] + [os.path.join(self.dir, x)
			    for x in os.listdir(self.dir)]:
				os.lchown(n, pw.pw_uid, pw.pw_gid)

	def start(self, timeout=15):
		if self.running():
			return self
		if self.binary is None:
			raise HarnessError("pgbouncer not found: install Debian's "
			    "pgbouncer")
		self._write_conf()
		kw = {}
		if os.geteuid() == 0:
			kw = {"user": "postgres", "group": "postgres",
			    "extra_groups": []}
		self.proc = subprocess.Popen([self.binary, self.conffile],
		    cwd=self.dir, stdout=subprocess.DEVNULL,
		    stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
		    start_new_session=True, preexec_fn=_pdeathsig(),
		    env=_clean_env(), **kw)

		def ready():
			if self.proc.poll() is not None:
				raise HarnessError("pgbouncer exited with code %d:\n%s" % (
				    self.proc.returncode, tail(self.logfile, 30)))
			return port_in_use(self.port)
		if not wait_for(ready, timeout):
			self.kill()
			raise HarnessError("pgbouncer did not listen on port %d within "
			    "%d s:\n%s" % (self.port, timeout, tail(self.logfile, 30)))
		return self

	def running(self):
		return self.proc is not None and self.proc.poll() is None

	def stop(self, timeout=15):
		"""SIGINT: pgbouncer's safe shutdown (waits for transactions)."""
		if self.pg.pooler is self:
			self.pg.pooler = None
		if not self.running():
			return
		self.proc.send_signal(signal.SIGINT)
		try:
			self.proc.wait(timeout)
		except subprocess.TimeoutExpired:
			self.kill()
			raise HarnessError("pgbouncer ignored SIGINT for %d s" % timeout)

	def kill(self):
		if self.running():
			self.proc.kill()
			self.proc.wait(10)

	def log_text(self):
		return tail(self.logfile, 0)


# --- Redis ------------------------------------------------------------------

class RedisError(Exception):
	"""An error reply (-ERR ...) from Redis."""


def _resp_encode(args):
	out = [b"*%d\r\n" % len(args)]
	for a in args:
		if isinstance(a, bytes):
			b = a
		else:
			b = str(a).encode()
		out.append(b"$%d\r\n%s\r\n" % (len(b), b))
	return b"".join(out)


def _resp_read(f):
	line = f.readline()
	if not line.endswith(b"\r\n"):
		raise ConnectionError("connection to Redis closed mid-reply")
	kind, rest = line[:1], line[1:-2]
	if kind == b"+":
		return rest.decode("utf-8", "replace")
	if kind == b"-":
		raise RedisError(rest.decode("utf-8", "replace"))
	if kind == b":":
		return int(rest)
	if kind == b"$":
		n = int(rest)
		if n < 0:
			return None
		data = f.read(n + 2)
		if len(data) != n + 2:
			raise ConnectionError("connection to Redis closed mid-reply")
		return data[:-2].decode("utf-8", "surrogateescape")
	if kind == b"*":
		n = int(rest)
		return None if n < 0 else [_resp_read(f) for _ in range(n)]
	raise ConnectionError("bad reply from Redis: %r" % line)


def redis_cmd(port, *args, host="127.0.0.1", db=0, timeout=5,
    password=None):
	"""Send one command to Redis and return its reply: str, int, None or a
	list; an error reply raises RedisError. Example:
	redis_cmd(port, "HGETALL", "gochat:hub:leader"). password: AUTH first."""
	with socket.create_connection((host, int(port)), timeout=timeout) as s:
		f = s.makefile("rb")
		if password:
			s.sendall(_resp_encode(["AUTH", password]))
			_resp_read(f)
		if db:
			s.sendall(_resp_encode(["SELECT", db]))
			_resp_read(f)
		s.sendall(_resp_encode(args))
		return _resp_read(f)


def redis_hash(port, key, **kw):
	"""HGETALL as a dict."""
	flat = redis_cmd(port, "HGETALL", key, **kw) or []
	return dict(zip(flat[0::2], flat[1::2]))


def redis_keys(port, pattern, **kw):
	"""Every key matching pattern (SCAN, not KEYS), sorted."""
	cursor, keys = "0", set()
	while True:
		cursor, batch = redis_cmd(port, "SCAN", cursor, "MATCH", pattern,
		    "COUNT", 1000, **kw)
		keys.update(batch)
		if cursor == "0":
			return sorted(keys)


def stats_hashes(port, pids, prefix="gochat:", **kw):
	"""{pid: its <prefix>stats:<host>:<pid> hash as a dict} of those pids
	that have one (SPEC section 7)."""
	out = {}
	for k in redis_keys(port, prefix + "stats:*", **kw):
		m = re.fullmatch(re.escape(prefix) + r"stats:(.+):(\d+)", k)
		if m and int(m.group(2)) in pids:
			out[int(m.group(2))] = redis_hash(port, k, **kw)
	return out


class Redis:
	"""A private redis-server on 127.0.0.1:port with its files in dir.

	Always appendonly yes with appendfsync everysec (SPEC §8: what make
	run and the tests run, and what the README recommends), unless
	appendonly=False: then Redis keeps chat messages in memory only and
	gochat warns at start-up. Redis write()s the AOF before it answers, so
	start() after kill() normally finds every acknowledged write: the fsync
	once a second matters when the machine crashes, and a write Redis
	postpones behind a slow fsync (at most 2 s) when it is killed. A dir
	left with dump.rdb and no AOF is switched over without losing the
	snapshot. persist=False (tests): no
	RDB snapshots. persist=True (make run): Redis' default snapshots in dir
	as well, saved on a clean stop. password: started with --requirepass,
	which url and cmd() then use."""

	def __init__(self, dir, port, persist=False, password=None,
	    appendonly=True, replicaof=None):
		self.dir = os.path.abspath(str(dir))
		self.port = int(port)
		self.persist = persist
		self.password = password
		self.appendonly = appendonly
		self.replicaof = replicaof
		self.logfile = os.path.join(self.dir, "redis.log")
		self.proc = None
		self.binary = shutil.which("redis-server") or "/usr/bin/redis-server"

	@property
	def url(self):
		auth = ""
		if self.password:
			auth = ":%s@" % urllib.parse.quote(self.password, safe="")
		return "redis://%s127.0.0.1:%d/0" % (auth, self.port)

	def cmd(self, *args, **kw):
		kw.setdefault("password", self.password)
		return redis_cmd(self.port, *args, **kw)

	def start(self, timeout=15):
		if self.running():
			return self
		if not os.access(self.binary, os.X_OK):
			raise HarnessError("redis-server not found: install Debian's "
			    "redis-server")
		os.makedirs(self.dir, exist_ok=True)
		# A dir an older make run left with RDB snapshots only: started
		# with appendonly yes, Redis would begin an empty AOF and ignore
		# dump.rdb. Load the snapshot first, then switch the AOF on.
		migrate = self.appendonly and \
		    os.path.exists(os.path.join(self.dir, "dump.rdb")) and \
		    not os.path.exists(os.path.join(self.dir, "appendonlydir"))
		argv = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1",
		    "--dir", ".", "--daemonize", "no", "--logfile", "",
		    "--appendonly", "yes" if self.appendonly and not migrate
		    else "no",
		    "--appendfsync", "everysec"]
		if not self.persist:
			argv += ["--save", ""]
		if self.password:
			argv += ["--requirepass", self.password,
			    "--masterauth", self.password]
		if self.replicaof:
			argv += ["--replicaof", "127.0.0.1", str(self.replicaof)]
		log = open(self.logfile, "ab")
		try:
			self.proc = subprocess.Popen(argv, cwd=self.dir, stdout=log,
			    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
			    start_new_session=True, preexec_fn=_pdeathsig(),
			    env=_clean_env())
		finally:
			log.close()

		def ready():
			if self.proc.poll() is not None:
				raise HarnessError("redis-server exited with code %d:\n%s"
				    % (self.proc.returncode, tail(self.logfile, 30)))
			try:
				return self.cmd("PING", timeout=1) == "PONG"
			except (OSError, ConnectionError, RedisError):
				return False
		if not wait_for(ready, timeout):
			self.kill()
			raise HarnessError("redis-server did not answer PING on port %d "
			    "within %d s:\n%s" % (self.port, timeout,
			    tail(self.logfile, 30)))
		if migrate:
			self._enable_aof(timeout)
		return self

	def _enable_aof(self, timeout):
		"""CONFIG SET appendonly yes and wait for the AOF's first rewrite."""
		self.cmd("CONFIG", "SET", "appendonly", "yes")

		def written():
			info = self.cmd("INFO", "persistence")
			return "aof_rewrite_in_progress:0" in info and \
			    "aof_rewrite_scheduled:0" in info and os.path.exists(
			    os.path.join(self.dir, "appendonlydir"))
		if not wait_for(written, timeout):
			raise HarnessError("redis-server did not write its AOF within "
			    "%d s:\n%s" % (timeout, tail(self.logfile, 30)))

	def running(self):
		return self.proc is not None and self.proc.poll() is None

	def stop(self, timeout=15):
		"""SIGTERM (Redis saves first when persist is set) and wait."""
		if not self.running():
			return
		self.proc.send_signal(signal.SIGTERM)
		try:
			self.proc.wait(timeout)
		except subprocess.TimeoutExpired:
			self.kill()
			raise HarnessError("redis-server ignored SIGTERM for %d s" % timeout)

	def kill(self):
		if self.running():
			self.proc.kill()
			self.proc.wait(10)

	def restart(self):
		self.stop()
		return self.start()

	def log_text(self):
		return tail(self.logfile, 0)


class Sentinel(Redis):
	"""redis-sentinel on 127.0.0.1:port watching the master named name at
	127.0.0.1:master_port: quorum 2 (of the three sentinels a test runs),
	the master down after down_after_ms without an answer, a failover
	retried after failover_timeout_ms. Its config file (which Sentinel
	rewrites) is dir/sentinel.conf."""

	def __init__(self, dir, port, master_port, name="mymaster", quorum=2,
	    down_after_ms=1000, failover_timeout_ms=3000):
		super().__init__(dir, port)
		self.master_port, self.name = int(master_port), name
		self.quorum, self.down_after_ms = quorum, down_after_ms
		self.failover_timeout_ms = failover_timeout_ms
		self.binary = shutil.which("redis-sentinel") or \
		    "/usr/bin/redis-sentinel"

	def start(self, timeout=15):
		if self.running():
			return self
		if not os.access(self.binary, os.X_OK):
			raise HarnessError("redis-sentinel not found: install Debian's "
			    "redis-sentinel")
		os.makedirs(self.dir, exist_ok=True)
		conf = os.path.join(self.dir, "sentinel.conf")
		with open(conf, "w") as f:
			f.write("port %d\nbind 127.0.0.1\ndaemonize no\nlogfile \"\"\n"
			    "dir %s\n"
			    "sentinel monitor %s 127.0.0.1 %d %d\n"
			    "sentinel down-after-milliseconds %s %d\n"
			    "sentinel failover-timeout %s %d\n"
			    "sentinel parallel-syncs %s 1\n" % (self.port, self.dir,
			    self.name, self.master_port, self.quorum, self.name,
			    self.down_after_ms, self.name, self.failover_timeout_ms,
			    self.name))
		log = open(self.logfile, "ab")
		try:
			self.proc = subprocess.Popen([self.binary, conf], cwd=self.dir,
			    stdout=log, stderr=subprocess.STDOUT,
			    stdin=subprocess.DEVNULL, start_new_session=True,
			    preexec_fn=_pdeathsig(), env=_clean_env())
		finally:
			log.close()

		def ready():
			if self.proc.poll() is not None:
				raise HarnessError("redis-sentinel exited with code %d:\n%s"
				    % (self.proc.returncode, tail(self.logfile, 30)))
			try:
				return self.cmd("PING", timeout=1) == "PONG"
			except (OSError, ConnectionError, RedisError):
				return False
		if not wait_for(ready, timeout):
			self.kill()
			raise HarnessError("redis-sentinel did not answer PING on port "
			    "%d within %d s:\n%s" % (self.port, timeout,
			    tail(self.logfile, 30)))
		return self

	def master_addr(self):
		"""(host, port) this sentinel names as the master, or None."""
		try:
			a = self.cmd("SENTINEL", "get-master-addr-by-name", self.name,
			    timeout=2)
		except (OSError, ConnectionError, RedisError):
			return None
		return (a[0], int(a[1])) if a else None


# --- the server -------------------------------------------------------------

class Server:
	"""gochat -c DIR/gochat.conf in the foreground, as a child of the harness.

	conf is a dict of configuration keys written as `key = value` lines; it
	must hold listen. env adds environment variables (GOCHAT_<KEY>
	overrides); the caller's own GOCHAT_* variables are never passed on.
	stdout and stderr go to DIR/gochat.log, or to the terminal when console
	is true (make run). Run as root (CI, containers), allow_root = yes is
	added unless conf names a user or allow_root itself: the tests' files
	live in root's temporary directories."""

	def __init__(self, bin, conf, dir, env=None, console=False,
	    conf_name="gochat.conf"):
		self.bin = os.path.abspath(str(bin))
		self.conf = dict(conf)
		if os.geteuid() == 0 and "user" not in self.conf and \
		    "allow_root" not in self.conf:
			self.conf["allow_root"] = "yes"
		self.dir = os.path.abspath(str(dir))
		self.env = dict(env or {})
		self.console = console
		self.conf_path = os.path.join(self.dir, conf_name)
		self.logfile = os.path.join(self.dir, "gochat.log")
		self.proc = None
		self._seen = set()	# every child pid children() has returned
		listen = self.env.get("GOCHAT_LISTEN", self.conf.get("listen", ""))
		host, _, port = str(listen).rpartition(":")
		if not host or not port.isdigit():
			raise HarnessError("listen must be host:port, not %r" % listen)
		self.host = host.strip("[]")
		self.port = int(port)
		self.base = "http://%s:%d" % (listen.rpartition(":")[0], self.port)

	@property
	def master_pid(self):
		return self.proc.pid if self.proc else None

	def write_conf(self):
		os.makedirs(self.dir, exist_ok=True)
		lines = ["# written by test/harness.py"]
		for k, v in self.conf.items():
			lines.append("%s = %s" % (k, v))
		with open(self.conf_path, "w") as f:
			f.write("\n".join(lines) + "\n")
		return self.conf_path

	def start(self, wait=True, timeout=20):
		"""Write the config and start the master; with wait, return once
		GET /health answers 200."""
		if not os.access(self.bin, os.X_OK):
			raise HarnessError("no gochat binary at %s: build it first (make)"
			    % self.bin)
		self.write_conf()
		out = None if self.console else open(self.logfile, "ab")
		try:
			self.proc = subprocess.Popen([self.bin, "-c", self.conf_path],
			    cwd=self.dir, stdout=out,
			    stderr=None if out is None else subprocess.STDOUT,
			    stdin=subprocess.DEVNULL, start_new_session=True,
			    preexec_fn=_pdeathsig(), env=_clean_env(self.env))
		finally:
			if out:
				out.close()
		self.started_at = time.monotonic()
		if wait:
			self.wait_ready(timeout=timeout)
		return self

	def health(self, timeout=2):
		"""(status, parsed JSON body or raw text) of GET /health, or
		(None, error) when nothing answered."""
		c = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
		try:
			c.request("GET", "/health")
			r = c.getresponse()
			body = r.read()
			try:
				return r.status, json.loads(body)
			except ValueError:
				return r.status, body.decode("utf-8", "replace")
		except (OSError, http.client.HTTPException) as e:
			return None, e
		finally:
			c.close()

	def wait_ready(self, timeout=20, statuses=(200,)):
		"""Wait until /health answers with one of statuses; fail at once if
		the master exits, with the log's tail."""
		deadline = time.monotonic() + timeout
		last = None
		while time.monotonic() < deadline:
			if self.proc.poll() is not None:
				raise HarnessError("gochat exited with code %d before "
				    "answering /health\n%s" % (self.proc.returncode,
				    self.log_tail()))
			status, body = self.health(timeout=1)
			if status in statuses:
				return status, body
			last = (status, body)
			time.sleep(0.1)
		raise HarnessError("gochat did not answer GET /health with %s within "
		    "%d s (last: %r)\n%s" % ("/".join(map(str, statuses)), timeout,
		    last, self.log_tail()))

	def running(self):
		return self.proc is not None and self.proc.poll() is None

	def children(self):
		"""[(pid, title)] of the master's live children, titles as ps
		shows them ("gochat: worker 1", "gochat: hub")."""
		if not self.running():
			return []
		kids = children_of(self.proc.pid)
		self._seen.update(pid for pid, _ in kids)
		return kids

	def title(self):
		info = proc_info(self.proc.pid) if self.proc else None
		return info[2] if info else None

	def workers(self):
		"""{n: pid} of the children titled "gochat: worker <n>"."""
		out = {}
		for pid, title in self.children():
			m = re.fullmatch(r"gochat: worker (\d+)", title)
			if m:
				out[int(m.group(1))] = pid
		return out

	def hubs(self):
		return [pid for pid, title in self.children() if title == "gochat: hub"]

	def signal(self, sig):
		os.kill(self.proc.pid, sig)

	def stop(self, timeout=15):
		"""SIGTERM the master and wait for it and its children. If they
		are not all gone within timeout, SIGKILL them and raise
		HarnessError (a graceful stop that hangs is a bug). Returns the
		master's exit code."""
		if self.proc is None:
			return None
		if self.proc.poll() is not None:
			orphans = [p for p in self._seen if proc_alive(p)
			    and proc_info(p)[2].startswith("gochat")]
			for pid in orphans:
				os.kill(pid, signal.SIGKILL)
			if orphans:
				raise HarnessError("children %s outlived the master (killed "
				    "now)\n%s" % (orphans, self.log_tail()))
			return self.proc.returncode
		kids = [pid for pid, _ in self.children()]
		self.signal(signal.SIGTERM)
		deadline = time.monotonic() + timeout
		try:
			self.proc.wait(timeout)
			left = max(0.5, deadline - time.monotonic())
			stuck = [p for p in kids if not wait_for(
			    lambda p=p: not proc_alive(p), left)]
		except subprocess.TimeoutExpired:
			stuck = [self.proc.pid] + kids
		if not stuck:
			self.check_sanitizers()
			return self.proc.returncode
		kids = [pid for pid, _ in self.children()] + stuck
		for pid in set(kids):
			try:
				os.kill(pid, signal.SIGKILL)
			except ProcessLookupError:
				pass
		try:
			self.proc.wait(5)
		except subprocess.TimeoutExpired:
			pass
		raise HarnessError("gochat did not stop within %d s of SIGTERM "
		    "(killed: %s)\n%s" % (timeout, sorted(set(kids)), self.log_tail()))

	SANITIZER_MARKS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer",
	    "runtime error:")

	def check_sanitizers(self):
		"""Under --enable-asan every process reports memory errors, leaks
		and undefined behaviour to its log as it exits: any such report
		fails the test that owned the server."""
		text = self.log_text()
		for mark in self.SANITIZER_MARKS:
			i = text.find(mark)
			if i != -1:
				raise HarnessError("sanitizer report in the server log:\n%s"
				    % text[max(0, i - 200):i + 3000])

	def kill(self):
		"""SIGKILL the master and every child, no questions asked."""
		if not self.running():
			return
		for pid in [pid for pid, _ in self.children()] + [self.proc.pid]:
			try:
				os.kill(pid, signal.SIGKILL)
			except ProcessLookupError:
				pass
		self.proc.wait(10)

	def log_text(self):
		"""Everything the server wrote: its stdout/stderr and, if the
		config names one, its log_file."""
		parts = [tail(self.logfile, 0)] if not self.console else []
		lf = self.conf.get("log_file") or self.env.get("GOCHAT_LOG_FILE")
		if lf and os.path.exists(lf):
			parts.append("--- %s ---\n%s" % (lf, tail(lf, 0)))
		return "\n".join(parts)

	def log_tail(self, lines=60):
		if self.console:
			return "(the server's output is above)"
		text = self.log_text().splitlines()
		if VERBOSE or not lines:
			return "--- gochat log %s ---\n%s" % (self.logfile, "\n".join(text))
		return "--- gochat log %s (last %d lines) ---\n%s" % (
		    self.logfile, lines, "\n".join(text[-lines:]))


class ExternalServer:
	"""A server started by someone else (GOCHAT_TEST_URL): HTTP only."""

	def __init__(self, url):
		url = url.rstrip("/")
		m = re.fullmatch(r"http://(\[[^\]]+\]|[^:/]+)(?::(\d+))?", url)
		if not m:
			raise HarnessError("GOCHAT_TEST_URL must be http://host[:port], "
			    "not %r" % url)
		self.base = url
		self.host = m.group(1).strip("[]")
		self.port = int(m.group(2) or 80)
		self.conf = {}
		self.proc = None

	def log_tail(self, lines=60):
		return "(external server at %s: see its own log)" % self.base


# --- raw HTTP over a socket ---------------------------------------------------

class Response(collections.namedtuple("Response",
    "version status reason headers body raw")):
	"""A parsed response: headers is [(name, value)] as received, body the
	bytes after the head, raw every byte of the response."""
	__slots__ = ()

	def header(self, name):
		"""The first header called name (any case), or None."""
		for k, v in self.headers:
			if k.lower() == name.lower():
				return v
		return None

	def json(self):
		return json.loads(self.body.decode("utf-8"))


class RawHTTP:
	"""One TCP connection that sends exactly the bytes given and parses the
	responses that come back, keeping whatever follows one response for the
	next (pipelining)."""

	def __init__(self, host, port, timeout=5):
		self.sock = socket.create_connection((host, port), timeout=timeout)
		self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
		self.timeout = timeout
		self.buf = b""
		self.eof = False

	def __enter__(self):
		return self

	def __exit__(self, *exc):
		self.close()

	def close(self):
		self.sock.close()

	def send(self, data):
		if isinstance(data, str):
			data = data.encode()
		self.sock.sendall(data)

	def _fill(self, deadline):
		"""Read more into buf; False at EOF (or reset). socket.timeout
		when deadline passes."""
		if self.eof:
			return False
		left = deadline - time.monotonic()
		if left <= 0:
			raise socket.timeout("no complete response in time")
		self.sock.settimeout(left)
		try:
			data = self.sock.recv(65536)
		except ConnectionResetError:
			data = b""
		if not data:
			self.eof = True
			return False
		self.buf += data
		return True

	def read_response(self, method="GET", timeout=None):
		"""The next complete response. Raises socket.timeout when none
		arrives in time, ConnectionError when the connection ends first."""
		deadline = time.monotonic() + (timeout or self.timeout)
		while b"\r\n\r\n" not in self.buf:
			if not self._fill(deadline):
				raise ConnectionError("connection closed before a response "
				    "head (got %r)" % self.buf[:200])
		end = self.buf.index(b"\r\n\r\n") + 4
		head = self.buf[:end].decode("iso-8859-1")
		lines = head.split("\r\n")
		m = re.fullmatch(r"(HTTP/\d\.\d) (\d{3})(?: (.*))?", lines[0])
		if not m:
			raise ValueError("bad status line %r" % lines[0])
		headers = []
		for line in lines[1:]:
			if not line:
				continue
			k, _, v = line.partition(":")
			headers.append((k.strip(), v.strip()))
		status = int(m.group(2))
		hdrs = {k.lower(): v for k, v in headers}
		no_body = method == "HEAD" or status in (204, 304) or status < 200
		if no_body:
			blen = 0
		elif "content-length" in hdrs:
			blen = int(hdrs["content-length"])
		elif "chunked" in hdrs.get("transfer-encoding", "").lower():
			raise ValueError("chunked responses are not expected from gochat")
		else:
			while self._fill(deadline):
				pass
			blen = len(self.buf) - end
		while len(self.buf) < end + blen:
			if not self._fill(deadline):
				raise ConnectionError("connection closed after %d of %d body "
				    "bytes" % (len(self.buf) - end, blen))
		raw = self.buf[:end + blen]
		self.buf = self.buf[end + blen:]
		return Response(m.group(1), status, m.group(3) or "", headers,
		    raw[end:], raw)

	def wait_closed(self, timeout):
		"""Wait until the peer closes. Returns (closed, bytes received
		meanwhile, including any not yet parsed)."""
		deadline = time.monotonic() + timeout
		try:
			while self._fill(deadline):
				pass
		except socket.timeout:
			return False, self.buf
		return True, self.buf


def raw_exchange(host, port, data, responses=1, method="GET", timeout=5):
	"""Send data on a new connection and read that many responses."""
	with RawHTTP(host, port, timeout) as c:
		c.send(data)
		return [c.read_response(method=method) for _ in range(responses)]


# --- make run -----------------------------------------------------------------

def cmd_run(args):
	run_dir = os.path.abspath(args.dir)
	bin = os.path.abspath(args.bin)
	srcdir = os.path.abspath(args.srcdir)
	if not os.access(bin, os.X_OK):
		raise HarnessError("no gochat binary at %s: run make first" % bin)
	# GOCHAT_LISTEN=host:port make run: the server's own override, honoured
	# here too (the server never sees the caller's GOCHAT_*: see Server).
	host, port = "127.0.0.1", args.port
	listen = os.environ.get("GOCHAT_LISTEN")
	if listen:
		host, _, p = listen.rpartition(":")
		host = host.strip("[]")
		if not host or not p.isdigit() or not 0 < int(p) < 65536:
			raise HarnessError("GOCHAT_LISTEN must be host:port, not %r"
			    % listen)
		port = int(p)
	for what, p, knob in (("HTTP", port, "GOCHAT_LISTEN=127.0.0.1:PORT "
	    "or RUN_PORT=PORT"), ("Redis", args.redis_port, "RUN_REDIS_PORT=PORT")):
		if port_in_use(p):
			raise HarnessError("port %d (%s) is already in use on "
			    "127.0.0.1: stop what listens there or choose another "
			    "port (make run %s)" % (p, what, knob))
	os.makedirs(run_dir, exist_ok=True)

	stopping = []

	def on_signal(sig, frame):
		stopping.append(sig)
	signal.signal(signal.SIGINT, on_signal)
	signal.signal(signal.SIGTERM, on_signal)
	signal.signal(signal.SIGHUP, on_signal)

	pg = Postgres(os.path.join(run_dir, "pg"), free_port())
	redis = Redis(os.path.join(run_dir, "redis"), args.redis_port,
	    persist=True)
	server = None
	rc = 0
	try:
		fresh = not pg.initialized()
		print("gochat run: %s PostgreSQL in %s (port %d)" % (
		    "creating" if fresh else "starting", pg.dir, pg.port), flush=True)
		pg.start()
		print("gochat run: starting Redis in %s (port %d, appendonly yes: "
		    "redis-cli -p %d)" % (redis.dir, redis.port, redis.port),
		    flush=True)
		redis.start()
		conf = {
			"listen": "%s:%d" % ("[%s]" % host if ":" in host else host,
			    port),
			"workers": "auto",
			"database_url": pg.url,
			"redis_url": redis.url,
			"sql_dir": os.path.join(srcdir, "sql"),
			"web_dir": os.path.join(srcdir, "web"),
			"log_level": "info",
		}
		server = Server(bin, conf, run_dir, console=True)
		print("gochat run: starting %s -c %s" % (bin, server.conf_path),
		    flush=True)
		server.start(wait=False)
		while True:
			if stopping:
				break
			if server.proc.poll() is not None:
				raise HarnessError("gochat exited with code %d before "
				    "answering /health (its output is above)"
				    % server.proc.returncode)
			if server.health(timeout=1)[0] == 200:
				break
			if time.monotonic() - server.started_at > 30:
				raise HarnessError("gochat did not answer GET /health with "
				    "200 within 30 s (its output is above)")
			time.sleep(0.1)
		if not stopping:
			print("\nGoChat is running: open %s/ — Ctrl-C stops it\n"
			    % server.base, flush=True)
		while not stopping and server.proc.poll() is None:
			time.sleep(0.2)
		if not stopping:
			print("gochat run: the server exited with code %d" %
			    server.proc.returncode, file=sys.stderr)
			rc = 1
	except HarnessError as e:
		print("gochat run: %s" % e, file=sys.stderr)
		rc = 1
	finally:
		signal.signal(signal.SIGINT, signal.SIG_IGN)
		signal.signal(signal.SIGTERM, signal.SIG_IGN)
		print("gochat run: stopping", flush=True)
		for what, stop in (("gochat", server.stop if server else None),
		    ("Redis", redis.stop), ("PostgreSQL", pg.stop)):
			if stop is None:
				continue
			try:
				stop()
			except (HarnessError, OSError, subprocess.SubprocessError) as e:
				print("gochat run: stopping %s: %s" % (what, e),
				    file=sys.stderr)
				rc = 1
	print("gochat run: stopped; data kept in %s" % run_dir, flush=True)
	return rc


def main(argv=None):
	ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
	sub = ap.add_subparsers(dest="cmd", required=True)
	r = sub.add_parser("run", help="run gochat with a private PostgreSQL and "
	    "Redis (make run)")
	r.add_argument("--dir", required=True, help="where PostgreSQL and Redis "
	    "keep their data, reused on the next run")
	r.add_argument("--bin", required=True, help="the gochat binary")
	r.add_argument("--srcdir", required=True, help="the source tree (sql/, web/)")
	r.add_argument("--port", type=int, default=8080,
	    help="HTTP port on 127.0.0.1 (default 8080); GOCHAT_LISTEN=host:port "
	    "in the environment wins")
	r.add_argument("--redis-port", type=int, default=6390,
	    help="Redis' port on 127.0.0.1 (default 6390), fixed so that "
	    "redis-cli -p finds it")
	args = ap.parse_args(argv)
	try:
		return cmd_run(args)
	except HarnessError as e:
		print("gochat run: %s" % e, file=sys.stderr)
		return 1


if __name__ == "__main__":
	sys.exit(main())
