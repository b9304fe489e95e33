"""The fan-out write path (README "Performance", DESIGN.md workers/): a
WebSocket's output is written once per loop pass, everything pending in one
writev, and a write event is watched only for what the socket would not
take. What a user would notice if it broke: a burst that reaches some
members and not others, or out of order; a member whose socket filled up
never getting the rest once it reads again; one such member holding up the
room. (A member that never reads is closed 1008: test_chat.py's slow reader
and test_backpressure.py.)"""

import time

from test_chat import (OP_TEXT, assert_increasing, create_room,  # noqa: F401
    decode_frame, encode_frame, join, register, worker_stats, WS)

# Enough to send bursts without the per-socket message limit (SPEC §8).
RATE = dict(ws_msg_rate=100000, ws_msg_burst=100000, register_max=1000)


def burst(ws, tag, n, size=0):
	"""n messages from ws in one TCP write: tag-<i> padded to size."""
	frames = b"".join(encode_frame(OP_TEXT, ("%s-%04d " % (tag, i)).ljust(
	    size, "x")) for i in range(n))
	ws.send_raw(frames)


def pop_frames(buf):
	"""The whole frames at the front of buf, taken out of it."""
	out = []
	f = decode_frame(buf)
	while f is not None:
		del buf[:f[5]]
		out.append(f)
		f = decode_frame(buf)
	return out


def contents(ws, tag):
	return [e["content"].split(" ")[0] for e in ws.messages(history=False)
	    if e["content"].startswith(tag + "-")]


def test_a_burst_reaches_every_member_over_several_workers_whole_and_in_order(
    make_server, redis):
	"""Three senders each write 150 messages in one go into a room of 24
	members spread over three workers: every member gets all 450, each
	once, each sender's in the order sent, and all in the room's one
	order (the same ids in the same order everywhere)."""
	s = make_server(workers=3, **RATE)
	users = [register(s) for _ in range(24)]
	room = create_room(s, users[0])
	members = [join(s, room, u) for u in users]
	# The stats hashes are published once a second.
	deadline = time.monotonic() + 10
	while True:
		spread = [int(h.get("websockets", 0)) for h in worker_stats(s,
		    redis).values()]
		if sum(spread) == len(members) or time.monotonic() > deadline:
			break
		time.sleep(0.2)
	assert sum(1 for n in spread if n > 0) >= 2, \
	    "the members are not spread over the workers: %r" % spread
	per, senders = 150, members[:3]
	for i, ws in enumerate(senders):
		burst(ws, "s%d" % i, per)
	total = per * len(senders)
	ref = None
	for ws in members:
		ws.wait(lambda: sum(len(contents(ws, "s%d" % i)) for i in
		    range(len(senders))) >= total, 30, "all %d messages" % total)
		for i in range(len(senders)):
			got = contents(ws, "s%d" % i)
			want = ["s%d-%04d" % (i, k) for k in range(per)]
			assert got == want, "%s: sender %d's messages lost, repeated " \
			    "or out of order: %r" % (ws.label, i, got[:10])
		ids = [e["id"] for e in ws.messages(history=False)]
		assert_increasing(ids, ws.label)
		if ref is None:
			ref = ids
		assert ids == ref, "%s saw the room in another order" % ws.label


def test_a_member_whose_socket_filled_up_gets_the_rest_in_order_once_it_reads(
    make_server):
	"""A member reads nothing while about 1.2 MB is sent to the room, far
	more than its socket buffers hold (but under ws_output_limit): what the
	socket did not take waits, the other member meanwhile gets everything
	at once, and when the late one reads it gets every message, in order."""
	s = make_server(workers=1, ws_output_limit=8 * 1024 * 1024,
	    max_ws_message=4096, **RATE)
	a, b, c = register(s), register(s), register(s)
	room = create_room(s, a)
	sender = join(s, room, a)
	fast = join(s, room, b)
	late = WS.connect(s, room, token=c["token"], reader=False, rcvbuf=4096,
	    label="reads late")
	fast.wait_presence("join", c)
	n, size = 400, 3000
	for _ in range(n // 50):
		burst(sender, "m", 50, size)	# m-0000 .. m-0049 each time
	want = ["m-%04d" % k for _ in range(n // 50) for k in range(50)]
	fast.wait(lambda: len(contents(fast, "m")) >= n, 30,
	    "the reading member's %d messages" % n)
	assert contents(fast, "m") == want
	# Only now the late one reads: everything, whole frames, in order.
	late.sock.settimeout(10)
	buf, got, deadline = bytearray(late.buf), [], time.monotonic() + 30
	while len(got) < n and time.monotonic() < deadline:
		data = late.sock.recv(1 << 20)
		assert data, "the server closed the late reader after %d " \
		    "messages" % len(got)
		buf += data
		for f in pop_frames(buf):
			if f[2] == OP_TEXT and b'"content":"m-' in f[4]:
				i = f[4].index(b'"content":"m-') + 11
				got.append(f[4][i:i + 6].decode())
	assert got == want, "the late reader got %d of %d messages, or out " \
	    "of order: %r" % (len(got), n, got[:10])
