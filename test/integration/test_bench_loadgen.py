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


FLOOR = BIN.parent / "test" / "bench" / "floor"


def test_the_storing_floor_stores_every_message_before_it_delivers_it(
    make_server, pg, redis, loadgen, tmp_path):
	"""make bench's storing floor (floor -S) is the reference GoChat's
	intake and latency are held against: it must really store every
	message it delivers, number each room's messages in order, and lose,
	repeat or reorder nothing (else its figures flatter it)."""
	if not FLOOR.exists():
		pytest.skip("no %s (make test/bench/floor)" % FLOOR)
	make_server()	# GoChat's schema: the floor stores into messages
	port = harness.free_port()
	log = open(tmp_path / "floor.log", "w")
	fl = subprocess.Popen([str(FLOOR), "-t", "2", "-p", str(port), "-S",
	    pg.url, "-r", "127.0.0.1:%d" % redis.port, "-H", "2"],
	    stdout=subprocess.DEVNULL, stderr=log)
	try:
		assert wait_for(lambda: harness.port_in_use(port), 10), \
		    (tmp_path / "floor.log").read_text()
		tokens = tmp_path / "tokens.txt"
		tokens.write_text("".join("t%d\n" % i for i in range(CLIENTS)))
		prefix = "sf%s-" % uuid.uuid4().hex[:8]
		r = subprocess.run([loadgen, "chat", "-c", str(CLIENTS), "-s",
		    str(CLIENTS), "-d", "2", "-T", str(tokens), "-r", prefix,
		    "--rooms", str(ROOMS), "--drain", "2", "-q",
		    "127.0.0.1:%d" % port], capture_output=True, text=True,
		    timeout=60)
		d = json.loads(r.stdout.splitlines()[-1])
	finally:
		fl.terminate()
		fl.wait(10)	# it stops on SIGTERM
		log.close()
	# nothing on stderr: no error, and no sanitizer report (--enable-asan)
	assert (tmp_path / "floor.log").read_text() == ""
	assert d["joined"] == CLIENTS and d["acked"] > 0, r.stderr
	assert d["losses"] == 0 and d["duplicates"] == 0, r.stderr
	assert d["order_violations"] == 0, r.stderr
	assert d["deliveries"] >= d["acked"] * (CLIENTS // ROOMS), r.stderr
	# every echoed message is stored, none twice; each room's ids are
	# 1..n with no gap
	rows = pg.psql("SELECT room_id, count(*), count(DISTINCT id), max(id), "
	    "count(DISTINCT inbox_id) FROM messages WHERE room_id LIKE "
	    "'%s%%' GROUP BY room_id ORDER BY 1" % prefix, dbname="gochat")
	got = [l.split("|") for l in rows.split()]
	assert len(got) == ROOMS, rows
	stored = sum(int(x[1]) for x in got)
	assert d["acked"] <= stored <= d["sent"], (rows, d["acked"], d["sent"])
	for room, n, distinct, top, inbox in got:
		assert n == distinct == top == inbox, rows
