"""A Redis that wants a password (requirepass, ACL users): redis_url
carries "[user]:password@", sent as AUTH on every connection. A refused
AUTH (or SELECT) is a Redis outage (/health 503), retried, never fatal, and
no log line or error message shows the password."""

import subprocess
import uuid

import pytest
import requests

import harness
from conftest import BIN, own_service, wait_for

PASSWORD = "secret"
# 2 workers x (commands, subscriptions, heartbeat) + the hub's two.
BUSES = 2 * 3 + 2


@pytest.fixture(scope="module")
def auth_redis(workdir):
	yield from own_service(harness.Redis(workdir / "auth-redis",
	    harness.free_port(), password=PASSWORD))


def url(redis, userinfo):
	return "redis://%s@127.0.0.1:%d/0" % (userinfo, redis.port)


def register_and_login(srv):
	"""Register a fresh user, log in, and check the token works: each step
	needs its session in Redis. Returns the token."""
	u = "u_" + uuid.uuid4().hex[:12]
	pw = "pw-" + uuid.uuid4().hex
	r = requests.post(srv.base + "/register", json={"username": u,
	    "email": u + "@example.org", "password": pw}, timeout=10)
	assert r.status_code == 201, r.text
	r = requests.post(srv.base + "/login", json={"username": u,
	    "password": pw}, timeout=10)
	assert r.status_code == 200, r.text
	token = r.json()["token"]
	r = requests.get(srv.base + "/me", timeout=10,
	    headers={"Authorization": "Bearer " + token})
	assert r.status_code == 200, r.text
	return token


def sessions(redis):
	return harness.redis_keys(redis.port, "gochat:session:*",
	    password=redis.password)


def test_a_password_in_the_url_is_sent_as_auth(make_server, auth_redis):
	assert ":%s@" % PASSWORD in auth_redis.url
	s = make_server(redis=auth_redis)	# waits for /health 200
	assert s.health()[0] == 200
	before = sessions(auth_redis)
	register_and_login(s)
	assert len(sessions(auth_redis)) >= len(before) + 2, \
	    "register and login made no session in the password-protected Redis"
	assert PASSWORD not in s.log_text(), "the password is in the log"


def test_the_password_may_come_from_the_environment(make_server,
    auth_redis):
	s = make_server(redis=auth_redis, redis_url="redis://127.0.0.1:%d/0" %
	    auth_redis.port, env={"GOCHAT_REDIS_PASSWORD": PASSWORD})
	assert s.health()[0] == 200
	register_and_login(s)
	assert PASSWORD not in s.log_text(), "the password is in the log"


def test_a_wrong_password_is_a_redis_outage_not_a_crash(make_server,
    auth_redis):
	s = make_server(redis=auth_redis, redis_url=url(auth_redis,
	    ":wrong" + PASSWORD), start=False)
	s.start(wait=False)
	status, body = s.wait_ready(statuses=(503,))
	assert body["redis"] == "down" and body["postgres"] == "ok", body
	# Several back-off rounds later: still up, still down, logged once
	# per connection rather than once per attempt.
	assert not wait_for(lambda: s.health()[0] != 503, 3)
	assert s.running(), "the master exited"
	log = s.log_text()
	failed = [l for l in log.splitlines() if "authentication failed" in l]
	assert failed, "no 'authentication failed' line:\n%s" % log
	assert all("WRONGPASS" in l for l in failed), failed
	assert len(failed) <= BUSES, "logged on every retry:\n%s" % \
	    "\n".join(failed)
	assert PASSWORD not in log, "a password is in the log:\n%s" % log


def test_a_refused_select_is_a_redis_outage_not_a_crash(make_server, redis):
	"""A db the server does not have (16 by default) refuses SELECT: each
	connection says why once, /health answers 503, the server stays up."""
	s = make_server(redis=redis, redis_url="redis://127.0.0.1:%d/99" %
	    redis.port, start=False)
	s.start(wait=False)
	status, body = s.wait_ready(statuses=(503,))
	assert body["redis"] == "down" and body["postgres"] == "ok", body
	assert not wait_for(lambda: s.health()[0] != 503, 3)
	assert s.running(), "the master exited"
	failed = [l for l in s.log_text().splitlines() if "SELECT 99: " in l]
	assert failed and all("out of range" in l for l in failed), \
	    s.log_tail()
	assert len(failed) <= BUSES, "logged on every retry:\n%s" % \
	    "\n".join(failed)


def test_an_acl_user_logs_in_once_it_exists(make_server, auth_redis):
	user = "gochat" + uuid.uuid4().hex[:6]
	s = make_server(redis=auth_redis, redis_url=url(auth_redis,
	    user + ":pw"), start=False)
	s.start(wait=False)
	s.wait_ready(statuses=(503,))
	assert wait_for(lambda: any(user in l and "authentication failed" in l
	    for l in s.log_text().splitlines()), 5), s.log_tail()
	auth_redis.cmd("ACL", "SETUSER", user, "on", ">pw", "~*", "&*",
	    "+@all")
	try:
		# Retried with the back-off, each connection on its own: wait
		# for all of them, not just the one /health happened to ask.
		assert wait_for(lambda: s.log_text().count(
		    "connected to 127.0.0.1:%d" % auth_redis.port) >= BUSES, 5), \
		    s.log_tail()
		s.wait_ready(timeout=5)
		register_and_login(s)
		assert " user=%s " % user in auth_redis.cmd("CLIENT", "LIST"), \
		    "no client connected as %s" % user
	finally:
		auth_redis.cmd("ACL", "DELUSER", user)


def test_check_flag_hides_the_password_of_a_bad_url(make_server,
    auth_redis):
	s = make_server(redis=auth_redis, start=False,
	    redis_url="redis://gochat:%s@127.0.0.1:nope/0" % PASSWORD)
	p = subprocess.run([str(BIN), "-t", "-c", s.write_conf()],
	    capture_output=True, text=True, timeout=10)
	out = p.stdout + p.stderr
	assert p.returncode == 1, out
	assert "redis_url" in out and "redis://gochat:***@127.0.0.1:nope/0" \
	    in out, out
	assert PASSWORD not in out, out
