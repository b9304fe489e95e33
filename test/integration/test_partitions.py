"""The hub past one leader (SPEC.md §11, issue 13): fencing by epoch in
PostgreSQL. Taking the lease raises the partition's epoch in
hub_partitions, and a store is conditional on it in the same statement, so
a hub that lost its lease (paused, cut off) can store nothing once its
successor has raised the epoch, whatever its own clock says.

Driven through Redis and PostgreSQL as in test_hub.py."""

import os
import subprocess
import time

import pytest

import harness
from conftest import wait_for
from test_hub import (INBOX, P, Sub, after_renewal, entry, hub_pid,
    new_room, pending, pipeline, sql, start, stored)

pytestmark = pytest.mark.usefixtures("own_server_only")


@pytest.fixture
def own_server_only():
	from conftest import needs_own_server
	needs_own_server()


class Session:
	"""One psql session kept open (a transaction that holds locks across
	steps of a test): statements go to its stdin; wait() reads up to a
	marker it \\echo-es."""

	def __init__(self, pg):
		argv = [os.path.join(harness.pg_bindir(), "psql"), "-X", "-q",
		    "-tA", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p",
		    str(pg.port), "-U", "postgres", "-d", "gochat"]
		self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE,
		    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
		    env=harness._clean_env())
		self.n = 0

	def run(self, statements):
		"""Send statements and wait until psql has run them."""
		self.n += 1
		mark = "done-%d" % self.n
		self.proc.stdin.write(statements + "\n\\echo " + mark + "\n")
		self.proc.stdin.flush()
		out = []
		while True:
			line = self.proc.stdout.readline()
			assert line, "psql ended: %s" % "".join(out)
			if line.strip() == mark:
				return "".join(out)
			out.append(line)

	def close(self):
		if self.proc.poll() is None:
			self.proc.stdin.close()
			try:
				self.proc.wait(10)
			except subprocess.TimeoutExpired:
				self.proc.kill()
				self.proc.wait()


def epoch(pg, partition=0):
	row = sql(pg, "SELECT epoch, holder FROM hub_partitions WHERE "
	    "partition = %d" % partition)
	e, holder = row.split("|")
	return int(e), holder


def test_taking_the_lease_raises_the_epoch(make_server, redis, pg):
	"""Each time a hub takes the lease the partition's epoch goes up and
	names it; with partitions = 1 the §7 keys are unchanged."""
	srv = start(make_server, redis, pg, instance="host-epoch")
	pid = hub_pid(srv)
	assert wait_for(lambda: "leading with epoch" in srv.log_text(), 10)
	e1, holder = epoch(pg)
	assert holder == "host-epoch:%d" % pid
	assert redis.cmd("GET", P + "hub:leader") == holder
	assert redis.cmd("TYPE", INBOX) == "stream"
	# The lease goes and comes back: a new epoch.
	redis.cmd("SET", P + "hub:leader", "host-elsewhere:1", "PX", "1500")
	assert wait_for(lambda: epoch(pg)[0] > e1, 10), srv.log_tail()
	assert epoch(pg)[1] == holder


def test_a_hub_whose_epoch_was_raised_stores_nothing(make_server, redis, pg):
	"""The leading hub is deposed while a batch of its is on its way to
	PostgreSQL: the lease goes to another holder and the epoch is raised
	(as a successor does on taking over) while the hub, by its own clock,
	still leads and then sends its INSERT. Nothing may be stored or
	published; once the lease is free again the hub leads again (a new
	epoch) and the message is stored and published exactly once."""
	srv = start(make_server, redis, pg, instance="host-deposed")
	warm, room = new_room(pg), new_room(pg)
	wch, ch = P + "room:" + warm, P + "room:" + room
	watch = Sub(redis.port, wch, ch)
	lock = Session(pg)
	try:
		pipeline(redis.port, [entry("broadcast", warm, username="ops",
		    content="warm-up")])
		assert wait_for(lambda: watch.of(wch), 10), "no warm-up message"
		e0, _ = epoch(pg)
		# Loading `room` (unknown to the hub) waits for this lock, so the
		# batch's INSERT goes out only when it is released.
		lock.run("BEGIN; LOCK TABLE rooms IN ACCESS EXCLUSIVE MODE;")
		after_renewal(redis)
		pipeline(redis.port, [entry("broadcast", room, username="ops",
		    content="fenced")])
		time.sleep(0.2)
		# A successor takes the lease and raises the epoch; then the
		# hub's load goes on, and its INSERT comes with the old epoch.
		redis.cmd("SET", P + "hub:leader", "host-elsewhere:1", "PX",
		    "30000")
		lock.run("UPDATE hub_partitions SET epoch = epoch + 1, holder = "
		    "'host-elsewhere:1' WHERE partition = 0; COMMIT;")
		assert wait_for(lambda: stored(pg, room) or "another hub "
		    "raised the epoch" in srv.log_text(), 5), srv.log_tail()
		time.sleep(1)
		assert stored(pg, room) == {}, "stored under a stale epoch"
		assert "another hub raised the epoch" in srv.log_text()
		assert watch.of(ch) == [], "published by a deposed hub"
		assert pending(redis) == 1
		assert epoch(pg) == (e0 + 1, "host-elsewhere:1")
		# The lease is free again: this hub leads with a new epoch.
		redis.cmd("DEL", P + "hub:leader")
		assert wait_for(lambda: len(watch.of(ch, "message")) == 1, 10), \
		    "not published once the lease was free\n" + srv.log_tail()
		time.sleep(0.5)
		events = watch.of(ch, "message")
		assert [e["content"] for e in events] == ["fenced"]
		assert stored(pg, room) == {"fenced": (events[0]["id"],
		    events[0]["ts"])}
		assert epoch(pg)[0] == e0 + 2
		assert wait_for(lambda: pending(redis) == 0, 5)
	finally:
		lock.close()
		watch.close()


def test_an_orphaned_entry_is_published_before_later_ones(make_server,
    redis, pg):
	"""Every hub reads the inbox as the same consumer, so a hub deposed
	while its blocking XREADGROUP was out can be handed an entry after
	the new leader replayed the pending ones (made here by reading it as
	that hub would). A later message of the same sender, read live by the
	leader, must not overtake it: both are published in the order sent,
	with increasing ids, once each."""
	srv = start(make_server, redis, pg, instance="host-order")
	room = new_room(pg)
	ch = P + "room:" + room
	watch = Sub(redis.port, ch)
	try:
		send = lambda content: entry("broadcast", room, user="5",
		    username="sender", content=content)
		got = pipeline(redis.port, [["MULTI"], send("first"),
		    ["XREADGROUP", "GROUP", "hub", "hub", "COUNT", "1", "STREAMS",
		    INBOX, ">"], send("second"), ["EXEC"]])
		assert got[-1][1], "the entry was not read as a deposed hub's"
		assert wait_for(lambda: len(watch.of(ch, "message")) >= 2, 15), \
		    "not both published\n" + srv.log_tail()
		time.sleep(1)
		events = watch.of(ch, "message")
		assert [e["content"] for e in events] == ["first", "second"], \
		    "a later message overtook an orphaned one: %r" % events
		assert events[0]["id"] < events[1]["id"]
		assert "handed to a deposed hub" in srv.log_text()
		assert wait_for(lambda: pending(redis) == 0, 5)
	finally:
		watch.close()


def test_a_deleted_room_loses_its_messages_and_gets_no_more(make_server,
    redis, pg):
	"""messages has no foreign key to rooms (the hub's store looks up each
	room of a batch once instead of checking every row): deleting a room
	still deletes its messages, and a message to a room deleted after the
	hub loaded it is dropped, neither stored nor published."""
	srv = start(make_server, redis, pg, instance="host-rooms")
	room = new_room(pg)
	ch = P + "room:" + room
	watch = Sub(redis.port, ch)
	try:
		pipeline(redis.port, [entry("broadcast", room, username="ops",
		    content="before")])
		assert wait_for(lambda: watch.of(ch, "message"), 10)
		assert list(stored(pg, room)) == ["before"]
		sql(pg, "DELETE FROM rooms WHERE id = '%s'" % room)
		assert stored(pg, room) == {}, "the room's messages outlived it"
		pipeline(redis.port, [entry("broadcast", room, username="ops",
		    content="after")])
		count = lambda: sql(pg, "SELECT count(*) FROM messages WHERE "
		    "room_id = '%s'" % room)
		assert wait_for(lambda: pending(redis) == 0 and (count() != "0" or
		    "neither stored nor found" in srv.log_text()), 10), \
		    srv.log_tail()
		time.sleep(0.5)
		assert count() == "0", "stored for a deleted room"
		assert [e["content"] for e in watch.of(ch, "message")] == [
		    "before"]
	finally:
		watch.close()


def waiting(pg, query_start):
	"""How many sessions wait for a lock in a statement that begins so."""
	return int(sql(pg, "SELECT count(*) FROM pg_stat_activity WHERE "
	    "wait_event_type = 'Lock' AND query LIKE '%s%%'" % query_start))


def test_a_store_racing_a_room_deletion_leaves_no_orphan(make_server, redis,
    pg):
	"""The hub's store locks no room (sql/005_room_deletes.sql): a room
	deleted while its batch is being stored still loses every message, and
	the batch's other rooms lose none. Here the deletion holds on (its
	transaction open) while the store waits for it: the store inserts
	nothing, sees its epoch still holds, and stores the batch again
	without the deleted room's message."""
	srv = start(make_server, redis, pg, instance="host-race1")
	gone, kept = new_room(pg), new_room(pg)
	watch = Sub(redis.port, P + "room:" + kept)
	d = Session(pg)
	try:
		# the hub knows both rooms: loaded, then one is deleted under it
		pipeline(redis.port, [entry("broadcast", r, username="ops",
		    content="first") for r in (gone, kept)])
		assert wait_for(lambda: len(stored(pg, gone)) == 1 and
		    len(stored(pg, kept)) == 1, 10), srv.log_tail()
		d.run("BEGIN; DELETE FROM rooms WHERE id = '%s';" % gone)
		pipeline(redis.port, [entry("broadcast", r, username="ops",
		    content="second") for r in (gone, kept)])
		assert wait_for(lambda: waiting(pg, "WITH f AS") == 1, 10), \
		    "the store did not wait for the deletion"
		d.run("COMMIT;")
		assert wait_for(lambda: "second" in stored(pg, kept) and
		    pending(redis) == 0, 10), srv.log_tail()
		assert stored(pg, gone) == {}, "a message outlived its room"
		assert [e["content"] for e in watch.of(P + "room:" + kept,
		    "message")] == ["first", "second"]
		log = srv.log_text()
		assert "a room was deleted while a batch was stored" in log
		assert "neither stored nor found (room %s deleted?)" % gone in log
		assert "another hub raised the epoch" not in log
	finally:
		d.close()
		watch.close()


def test_a_room_deletion_waits_for_the_store_in_flight(make_server, redis,
    pg):
	"""The other order: the store holds its partition's row when the
	deletion comes. The deletion waits for the store's commit, then
	deletes what it stored too. Here the store is held in the middle by
	an uncommitted row with the (room, id) its message gets."""
	srv = start(make_server, redis, pg, instance="host-race2")
	room = new_room(pg)
	x, d = Session(pg), Session(pg)
	try:
		x.run("BEGIN; INSERT INTO messages (room_id, id, user_id, "
		    "username, content, inbox_id) VALUES ('%s', 1, 1, 'x', "
		    "'blocker', 'race2-blocker');" % room)
		pipeline(redis.port, [entry("broadcast", room, username="ops",
		    content="in flight")])
		assert wait_for(lambda: waiting(pg, "WITH f AS") == 1, 10), \
		    "the store did not wait for the blocker"
		d.proc.stdin.write("DELETE FROM rooms WHERE id = '%s';\n" % room)
		d.proc.stdin.flush()
		assert wait_for(lambda: waiting(pg, "DELETE FROM rooms") == 1,
		    10), "the deletion did not wait for the store"
		x.run("ROLLBACK;")
		d.run("")	# the DELETE has returned
		assert wait_for(lambda: pending(redis) == 0, 10), srv.log_tail()
		assert sql(pg, "SELECT count(*) FROM rooms WHERE id = '%s'" %
		    room) == "0"
		assert stored(pg, room) == {}, "a message outlived its room"
	finally:
		x.close()
		d.close()


def test_a_room_is_deleted_in_read_committed_only(pg):
	"""Under REPEATABLE READ the trigger's DELETE of the messages would
	not see a store that committed while it waited: the deletion is
	refused there, and the room and its messages stay."""
	room = new_room(pg)
	sql(pg, "INSERT INTO messages (room_id, id, user_id, username, "
	    "content, inbox_id) VALUES ('%s', 1, 1, 'x', 'kept', 'rr-%s')" %
	    (room, room))
	with pytest.raises(harness.HarnessError) as e:
		sql(pg, "BEGIN ISOLATION LEVEL REPEATABLE READ; DELETE FROM "
		    "rooms WHERE id = '%s'; COMMIT;" % room)
	assert "rooms are deleted in READ COMMITTED only" in str(e.value)
	assert sql(pg, "SELECT count(*) FROM rooms WHERE id = '%s'" %
	    room) == "1"
	assert list(stored(pg, room)) == ["kept"]
	sql(pg, "DELETE FROM rooms WHERE id = '%s'" % room)
	assert stored(pg, room) == {}
