"""The load generator's --also (test/bench/loadgen.c): make bench's intake
scenario runs it against two instances sharing PostgreSQL and Redis. Every
room's members must be spread over the instances (a message then crosses
from one to the other), and the generator's counts of losses, repeats and
order must hold across them."""

import json
import subprocess
import time
import uuid

import pytest
import requests

import harness
from conftest import BIN, wait_for

LOADGEN = BIN.parent / "test" / "bench" / "loadgen"
CLIENTS = 8
ROOMS = 2


@pytest.fixture
def loadgen():
	if not LOADGEN.exists():
		pytest.skip("no %s (make test/bench/loadgen)" % LOADGEN)
	return str(LOADGEN)


def users_file(srv, tmp_path, n):
	"""n users registered through srv, as loadgen's -T file: "token id"."""
	lines = []
	for _ in range(n):
		name = "lg_" + uuid.uuid4().hex[:12]
		r = requests.post(srv.base + "/register", json={
		    "username": name, "email": name + "@example.org",
		    "password": "correct horse"}, timeout=10)
		assert r.status_code == 201, r.text
		u = r.json()
		lines.append("%s %d" % (u["token"], u["id"]))
	path = tmp_path / "tokens.txt"
	path.write_text("\n".join(lines) + "\n")
	return str(path)


def new_rooms(pg, n):
	"""Rooms <prefix>0 .. <prefix>n-1: loadgen's --rooms names."""
	prefix = "lg%s-" % uuid.uuid4().hex[:8]
	pg.psql("INSERT INTO rooms (id, name) SELECT '%s' || i, '%s' || i "
	    "FROM generate_series(0, %d) i" % (prefix, prefix, n - 1),
	    dbname="gochat")
	return prefix


def websockets_of(srv, redis):
	"""WebSockets srv's workers hold, from their stats hashes."""
	st = harness.stats_hashes(redis.port, set(srv.workers().values()))
	return sum(int(h.get("websockets", 0) or 0) for h in st.values())


def test_also_spreads_every_room_over_the_instances(make_server, pg, redis,
    loadgen, tmp_path):
	a, b = make_server(), make_server()
	tokens = users_file(a, tmp_path, CLIENTS)
	prefix = new_rooms(pg, ROOMS)
	# held until SIGTERM, every client sending (40 messages/s in all)
	p = subprocess.Popen([loadgen, "idle", "-c", str(CLIENTS), "-d", "0",
	    "-s", str(CLIENTS), "-R", "40", "-T", tokens, "-r", prefix,
	    "--rooms", str(ROOMS), "--also", "127.0.0.1:%d" % b.port, "-q",
	    "127.0.0.1:%d" % a.port], stdout=subprocess.PIPE,
	    stderr=subprocess.PIPE, text=True)
	try:
		assert p.stdout.readline().strip() == "joined %d" % CLIENTS
		# clients gi = r, r + ROOMS, ... of room r alternate: half on
		# each instance
		half = (CLIENTS // 2, CLIENTS // 2)
		assert wait_for(lambda: (websockets_of(a, redis),
		    websockets_of(b, redis)) == half, 10), (websockets_of(a,
		    redis), websockets_of(b, redis))
		# and every room has members on both: the hub's presence
		# hash ("<room> <instance>:<worker pid> <conn>") names workers
		# of both instances in each room
		pres = harness.redis_hash(redis.port, "gochat:hub:presence")
		pids = {r: {f.split(" ")[1].rsplit(":", 1)[-1] for f in pres
		    if f.split(" ")[0] == "%s%d" % (prefix, r)} for r in
		    range(ROOMS)}
		for srv in (a, b):
			mine = {str(pid) for pid in srv.workers().values()}
			bad = [r for r in range(ROOMS) if not pids[r] & mine]
			assert not bad, "rooms %r: none on :%d: %r" % (bad,
			    srv.port, pres)
		time.sleep(1.5)	# messages flow between the instances
	finally:
		p.terminate()
		out, err = p.communicate(timeout=30)
	d = json.loads(out.splitlines()[-1])
	assert d["joined"] == CLIENTS and d["receivers_checked"] == CLIENTS, err
	assert d["acked"] > 0, err
	# every echoed message reached the 4 members of its room, half of them
	# on the other instance, once and in order
	assert d["losses"] == 0 and d["duplicates"] == 0, err
	assert d["order_violations"] == 0, err
	assert d["deliveries"] >= d["acked"] * (CLIENTS // ROOMS), err
