"""Operating it (issue 8): privileges (`user`, `allow_root`), the access
log and its rotation, and the log line's instance, role and pid. These
tests run the server as root, as CI does."""

import os
import pathlib
import pwd
import re
import signal
import shutil
import subprocess
import tempfile

import pytest
import requests

import harness
from conftest import BIN
from test_chat import create_room, join, register

pytestmark = pytest.mark.skipif(os.geteuid() != 0,
    reason="privilege dropping needs the tests to run as root")

NOBODY = pwd.getpwnam("nobody")


def uids(pid):
	"""(real, effective) uid of pid from /proc."""
	with open("/proc/%d/status" % pid) as f:
		for line in f:
			if line.startswith("Uid:"):
				real, eff = line.split()[1:3]
				return int(real), int(eff)
	raise AssertionError("no Uid line for %d" % pid)


def wait_exit(s, timeout=15):
	try:
		return s.proc.wait(timeout)
	except subprocess.TimeoutExpired:
		raise AssertionError("gochat did not exit:\n" + s.log_tail())


# --- privileges -----------------------------------------------------------------------

def test_root_without_a_user_is_refused(make_server):
	s = make_server(allow_root="no", start=False)
	s.start(wait=False)
	assert wait_exit(s) == 2
	log = s.log_tail()
	assert "refusing to run the workers and the hub as root" in log, log
	assert not s.children()


def test_config_check_reports_the_refusal(make_server):
	s = make_server(allow_root="no", start=False)
	s.write_conf()
	p = subprocess.run([BIN, "-t", "-c", s.conf_path], capture_output=True,
	    text=True, timeout=10, env={"PATH": os.environ.get("PATH", "")})
	assert p.returncode == 1
	assert "user" in p.stderr and "root" in p.stderr, p.stderr


def test_an_unknown_user_stops_the_start_with_the_reason(make_server):
	s = make_server(user="no-such-user-gochat", start=False)
	s.start(wait=False)
	assert wait_exit(s) == 2
	assert "no such user 'no-such-user-gochat'" in s.log_tail()


def test_children_run_as_the_user_and_the_master_as_root(make_server,
    redis):
	redis.cmd("FLUSHALL")
	# A directory the user can reach (pytest's tmp_path is root's alone).
	log = pathlib.Path(tempfile.mkdtemp(prefix="gochat-logs-"))
	os.chmod(log, 0o711)
	s = make_server(user="nobody", log_file=str(log / "gochat.log"),
	    access_log=str(log / "access.log"))
	kids = s.children()
	assert len(kids) == 3, kids
	assert uids(s.proc.pid) == (0, 0)
	for pid, title in kids:
		assert uids(pid) == (NOBODY.pw_uid, NOBODY.pw_uid), title
	# ps shows it too.
	ps = subprocess.run(["ps", "-o", "user=,args=", "--ppid",
	    str(s.proc.pid)], capture_output=True, text=True).stdout
	assert re.search(r"^nobody\s+gochat: hub$", ps, re.M), ps
	assert re.search(r"^nobody\s+gochat: worker 1$", ps, re.M), ps
	# And they work: chat goes through PostgreSQL, Redis and the hub.
	a = register(s)
	room = create_room(s, a)
	w = join(s, room, a)
	w.send("as nobody")
	w.wait_content("as nobody")
	w.close()
	# The master made the log files for the user, so a rotation works:
	# move them away, USR1, and every process writes to new files.
	for name in ("gochat.log", "access.log"):
		assert os.stat(log / name).st_uid == NOBODY.pw_uid, name
		os.rename(log / name, log / (name + ".1"))
	s.signal(signal.SIGUSR1)
	assert harness.wait_for(lambda: (log / "gochat.log").exists() and
	    "reopened" in (log / "gochat.log").read_text(), 5)
	assert harness.wait_for(lambda: requests.get(s.base + "/health",
	    timeout=5).status_code == 200 and (log / "access.log").exists() and
	    '"GET /health" 200' in (log / "access.log").read_text(), 5), \
	    "a worker did not write to the reopened access log"
	assert "cannot reopen" not in (log / "gochat.log").read_text()
	shutil.rmtree(log, ignore_errors=True)


def test_a_replaced_worker_runs_as_the_user_too(make_server):
	s = make_server(user="nobody")
	old = s.workers()[1]
	os.kill(old, signal.SIGKILL)
	assert harness.wait_for(lambda: s.workers().get(1) not in (None, old),
	    10)
	assert uids(s.workers()[1]) == (NOBODY.pw_uid, NOBODY.pw_uid)


def test_a_reload_that_would_run_children_as_root_is_refused(make_server):
	s = make_server(user="nobody")
	before = set(s.workers().values())
	s.conf.pop("user")
	s.conf["allow_root"] = "no"
	s.write_conf()
	s.signal(signal.SIGHUP)
	assert harness.wait_for(lambda: "keeping the running configuration"
	    in s.log_tail(), 5), s.log_tail()
	assert set(s.workers().values()) == before
	assert requests.get(s.base + "/health", timeout=5).status_code == 200


# --- the access log -----------------------------------------------------------------

LINE = re.compile(r"^(\S+Z) (\S+) (\S+) \"(\S+) (\S+)\" (\d{3}) (\d+) (\d+)$")


def access_lines(path):
	out = []
	for line in path.read_text().splitlines():
		m = LINE.match(line)
		assert m, "malformed access log line: %r" % line
		out.append(m.groups())
	return out


def test_every_request_gets_one_access_log_line(make_server, tmp_path):
	path = tmp_path / "access.log"
	s = make_server(access_log=str(path))
	u = register(s)
	h = {"Authorization": "Bearer " + u["token"]}
	me = requests.get(s.base + "/me", headers=h, timeout=5)
	requests.get(s.base + "/nope?x=1", timeout=5)
	requests.get(s.base + "/users/abc", headers=h, timeout=5)
	room = create_room(s, u)
	join(s, room, u).close()

	def lines():
		return access_lines(path) if path.exists() else []
	assert harness.wait_for(lambda: len(lines()) >= 6, 5), lines()
	by = {(l[3], l[4]): l for l in lines()}
	reg = by[("POST", "/register")]
	assert reg[5] == "201" and reg[2] == "-" and reg[1] == "127.0.0.1"
	got = by[("GET", "/me")]
	assert got[5] == "200" and got[2] == str(u["id"])
	assert int(got[6]) == len(me.content)
	assert by[("GET", "/nope?x=1")][5] == "404"
	assert by[("GET", "/users/abc")][5] == "400"
	up = by[("GET", "/ws/joinRoom/%s" % room)]
	assert up[5] == "101" and up[2] == str(u["id"])
	for l in lines():
		assert int(l[7]) < 10000, l


def test_hostile_targets_are_escaped_in_the_access_log(make_server, raw,
    tmp_path):
	path = tmp_path / "access.log"
	s = make_server(access_log=str(path))
	c = raw(s)
	c.send(b'GET /x\x7f"\\y HTTP/1.1\r\nHost: a\r\n\r\n')
	c.read_response()
	c2 = raw(s)
	c2.send(b'GET /a\\b"c HTTP/1.1\r\nHost: a\r\n\r\n')
	c2.read_response()

	def mine():
		return [l for l in (path.read_text().splitlines() if
		    path.exists() else []) if '"GET /health"' not in l]
	assert harness.wait_for(lambda: len(mine()) == 2, 5), mine()
	for line in mine():
		assert LINE.match(line), line
		assert "\x7f" not in line and line.count('"') == 2, line
	assert any('"GET /a\\x5cb\\x22c" 404' in l for l in mine()), mine()


def test_no_access_log_by_default(make_server):
	s = make_server()
	requests.get(s.base + "/health", timeout=5)
	assert '"GET /health"' not in s.log_tail()


def test_log_lines_name_instance_role_and_pid(make_server):
	s = make_server(instance="web7")
	pid = s.workers()[1]
	assert harness.wait_for(lambda: re.search(r"\[info\] web7 worker "
	    r"1\[%d\]: " % pid, s.log_tail(200)), 5), s.log_tail()
	assert re.search(r"\[info\] web7 master\[%d\]: " % s.proc.pid,
	    s.log_tail(200))


def test_the_open_files_limit_is_raised_and_logged(make_server):
	s = make_server()
	m = re.search(r"(\d+) open files per process", s.log_tail(200))
	assert m, s.log_tail()
	with open("/proc/%d/limits" % s.workers()[1]) as f:
		soft, hard = re.search(r"Max open files\s+(\d+)\s+(\d+)",
		    f.read()).groups()
	assert soft == hard == m.group(1)
