"""HTTP conventions (SPEC.md §1) and the two routes of the foundation, `/`
and `/health` (§2), seen by a client: status codes, JSON errors, the /v1
prefix, keep-alive, pipelining, and every limit and timeout of §1 answered
with exactly the spec's status. The server runs with 2 workers and
header_timeout = keepalive_timeout = 2 s (conftest.py)."""

import select
import socket
import struct
import threading
import time

import pytest
import requests

from conftest import HEADER_TIMEOUT, KEEPALIVE_TIMEOUT, needs_own_server

HEALTHY = {"status": "ok", "postgres": "ok", "redis": "ok"}


def url(server, path):
	return server.base + path


def assert_json_error(resp, status):
	"""An error the spec's way: the status, a JSON body with an "error"
	string a person can read. Works for requests' and RawHTTP's responses."""
	code = resp.status_code if hasattr(resp, "status_code") else resp.status
	ctype = (resp.headers.get("Content-Type") if hasattr(resp, "status_code")
	    else resp.header("Content-Type")) or ""
	body = resp.json()
	assert code == status, "expected %d, got %d: %r" % (status, code, body)
	assert ctype.startswith("application/json"), ctype
	assert isinstance(body, dict), body
	assert isinstance(body.get("error"), str) and body["error"].strip(), body


def request_head(method="GET", target="/", version="HTTP/1.1", headers=(),
    host=True):
	lines = ["%s %s %s" % (method, target, version)]
	if host:
		lines.append("Host: 127.0.0.1")
	lines += list(headers)
	return ("\r\n".join(lines) + "\r\n\r\n").encode()


# --- the two routes -------------------------------------------------------------

@pytest.mark.parametrize("path", ["/", "/v1/"])
def test_root_serves_the_web_client_as_html(server, path):
	r = requests.get(url(server, path), timeout=5)
	assert r.status_code == 200
	assert r.headers["Content-Type"].startswith("text/html")
	assert b"<html" in r.content.lower()


@pytest.mark.parametrize("path", ["/health", "/v1/health"])
def test_health_reports_both_dependencies_ok(server, path):
	r = requests.get(url(server, path), timeout=5)
	assert r.status_code == 200
	assert r.headers["Content-Type"].startswith("application/json")
	assert r.json() == HEALTHY


def test_health_body_is_exactly_the_documented_json(server, raw):
	c = raw(server)
	c.send(request_head(target="/health"))
	r = c.read_response()
	assert r.status == 200
	assert r.body.strip() == b'{"status":"ok","postgres":"ok","redis":"ok"}'
	assert int(r.header("Content-Length")) == len(r.body)


@pytest.mark.parametrize("path", ["/", "/health"])
def test_head_answers_the_get_headers_without_a_body(server, raw, path):
	get = requests.get(url(server, path), timeout=5)
	c = raw(server)
	# A HEAD, then a GET on the same connection: if the server wrote a body
	# after the HEAD, the second response would not start where it should.
	c.send(request_head("HEAD", path) + request_head("GET", "/health"))
	head = c.read_response(method="HEAD")
	assert head.status == 200
	assert head.header("Content-Type") == get.headers["Content-Type"]
	assert int(head.header("Content-Length")) == len(get.content)
	after = c.read_response()
	assert after.raw.startswith(b"HTTP/1.1 200"), after.raw[:100]
	assert after.json() == HEALTHY


# --- routing errors ---------------------------------------------------------------

@pytest.mark.parametrize("path", ["/nope", "/v1/nope", "/healthz",
    "/health/extra", "/v2/health", "/v1/v1/health"])
def test_unknown_route_is_404_json(server, path):
	r = requests.get(url(server, path), timeout=5)
	assert_json_error(r, 404)


@pytest.mark.parametrize("method,path", [("POST", "/health"),
    ("DELETE", "/v1/health"), ("PUT", "/health"), ("POST", "/"),
    ("DELETE", "/v1/")])
def test_wrong_method_on_a_known_path_is_405_with_allow(server, method, path):
	r = requests.request(method, url(server, path), timeout=5)
	assert_json_error(r, 405)
	allow = [m.strip() for m in r.headers.get("Allow", "").split(",")]
	assert "GET" in allow, r.headers.get("Allow")
	assert method not in allow


# --- limits --------------------------------------------------------------------------

def test_headers_just_under_8_KiB_are_accepted(server, raw):
	c = raw(server)
	c.send(request_head(target="/health", headers=["X-Pad: " + "a" * 7000]))
	assert c.read_response().status == 200


def test_headers_over_8_KiB_are_431(server, raw):
	c = raw(server)
	c.send(request_head(target="/health", headers=["X-Big: " + "a" * 9000]))
	r = c.read_response()
	assert_json_error(r, 431)
	assert "8192 bytes" in r.json()["error"], r.json()


def test_more_than_64_header_fields_are_431_saying_so(server, raw):
	c = raw(server)
	# 65 fields, well under 8 KiB: the count is the limit, not the size.
	c.send(request_head(target="/health",
	    headers=["X-H%d: v" % i for i in range(64)]))	# + Host = 65
	r = c.read_response()
	assert_json_error(r, 431)
	assert "more than 64 header fields" in r.json()["error"], r.json()


def test_64_header_fields_are_accepted(server, raw):
	c = raw(server)
	c.send(request_head(target="/health",
	    headers=["X-H%d: v" % i for i in range(63)]))
	assert c.read_response().status == 200


def test_many_headers_totalling_over_8_KiB_are_431(server, raw):
	c = raw(server)
	c.send(request_head(target="/health",
	    headers=["X-H%d: %s" % (i, "b" * 90) for i in range(100)]))
	assert_json_error(c.read_response(), 431)


def test_request_line_over_8_KiB_is_431(server, raw):
	c = raw(server)
	c.send(request_head(target="/health?x=" + "c" * 9000))
	assert_json_error(c.read_response(), 431)


def test_body_over_64_KiB_is_413_without_waiting_for_the_body(server, raw):
	c = raw(server)
	# Only the head: the answer must come from Content-Length alone.
	c.send(request_head("POST", "/register", headers=[
	    "Content-Type: application/json", "Content-Length: 70000"]))
	t0 = time.monotonic()
	r = c.read_response(timeout=HEADER_TIMEOUT - 0.5)
	assert_json_error(r, 413)
	assert time.monotonic() - t0 < HEADER_TIMEOUT - 0.5


def _assert_answered_then_closed(c, status):
	"""status with a JSON error and Connection: close, then the close with
	nothing more: what followed the head was never read as a request."""
	r = c.read_response()
	assert_json_error(r, status)
	assert (r.header("Connection") or "").lower() == "close"
	closed, extra = c.wait_closed(3)
	assert closed, "connection left open after a %d" % status
	assert extra == b"", "more was answered: %r" % extra[:200]


@pytest.mark.parametrize("coding", ["chunked", "gzip, chunked", "gzip"])
def test_a_transfer_encoded_body_is_411_and_the_connection_closed(server,
    raw, coding):
	c = raw(server)
	c.send(request_head("POST", "/register", headers=[
	    "Content-Type: application/json", "Transfer-Encoding: " + coding])
	    + b"2\r\n{}\r\n0\r\n\r\n")
	_assert_answered_then_closed(c, 411)


@pytest.mark.parametrize("path", ["/login", "/v1/register", "/posts",
    "/ws/createRoom"])
def test_a_body_without_content_length_is_411_not_a_second_request(server,
    raw, path):
	# Without Content-Length the request has no body (RFC 9112 6.3), so
	# the JSON after the head would be parsed as the next request: 411 and
	# close, before it can be.
	c = raw(server)
	c.send(request_head("POST", path, headers=[
	    "Content-Type: application/json"])
	    + b'GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n')
	_assert_answered_then_closed(c, 411)


def test_a_post_route_without_a_body_needs_no_content_length(server, raw):
	c = raw(server)
	c.send(request_head("POST", "/logout"))
	assert_json_error(c.read_response(), 401)	# no token, not 411


def test_an_http_1_1_request_without_host_is_400_and_closed(server, raw):
	c = raw(server)
	c.send(request_head(target="/health", host=False))
	_assert_answered_then_closed(c, 400)


def test_two_host_headers_are_400(server, raw):
	c = raw(server)
	c.send(request_head(target="/health", headers=["Host: other"]))
	_assert_answered_then_closed(c, 400)


def test_expect_100_continue_is_answered_before_the_body(server, raw):
	c = raw(server)
	body = b'{"email": "nobody@example.com", "password": "wrong-one"}'
	c.send(request_head("POST", "/login", headers=[
	    "Content-Type: application/json", "Expect: 100-continue",
	    "Content-Length: %d" % len(body)]))
	# Nothing of the body is sent until the interim answer has come.
	interim = c.read_response(timeout=HEADER_TIMEOUT - 0.5)
	assert interim.status == 100 and interim.raw == \
	    b"HTTP/1.1 100 Continue\r\n\r\n", interim.raw
	c.send(body)
	r = c.read_response()
	assert r.status in (400, 401), r.raw[:200]
	assert_json_error(r, r.status)


def test_expect_100_continue_gets_no_interim_answer_for_a_413(server, raw):
	c = raw(server)
	c.send(request_head("POST", "/login", headers=[
	    "Expect: 100-continue", "Content-Length: 70000"]))
	r = c.read_response(timeout=HEADER_TIMEOUT - 0.5)
	assert_json_error(r, 413)
	assert b"100 Continue" not in r.raw


def test_content_length_with_transfer_encoding_is_400_and_closed(server,
    raw):
	# The request-smuggling guard of RFC 9112 6.3: which of the two framed
	# the body is ambiguous, so neither is trusted and nothing after the
	# head is read.
	c = raw(server)
	c.send(request_head("POST", "/login", headers=[
	    "Content-Type: application/json", "Content-Length: 48",
	    "Transfer-Encoding: chunked"])
	    + b"0\r\n\r\nGET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
	_assert_answered_then_closed(c, 400)


def test_invalid_content_length_is_400(server, raw):
	c = raw(server)
	c.send(request_head("POST", "/register",
	    headers=["Content-Length: lots"]))
	assert_json_error(c.read_response(), 400)


# --- malformed input ---------------------------------------------------------------

MALFORMED = {
	"bad_protocol_name": b"GET / HTXP/1.1\r\nHost: x\r\n\r\n",
	"space_in_target": b"GET /a b HTTP/1.1\r\nHost: x\r\n\r\n",
	"bad_version_digits": b"GET / HTTP/1.x\r\nHost: x\r\n\r\n",
	"header_without_colon": b"GET / HTTP/1.1\r\nHost: x\r\nNoColon\r\n\r\n",
	"control_char_in_header": b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x01b\r\n\r\n",
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_request_is_400_and_the_connection_closed(server, raw, name):
	c = raw(server)
	c.send(MALFORMED[name])
	assert_json_error(c.read_response(), 400)
	closed, extra = c.wait_closed(3)
	assert closed, "connection left open after a 400"
	assert extra == b"", extra[:200]


def test_the_server_survives_binary_garbage(server, raw):
	c = raw(server)
	c.send(bytes(range(256)) * 4 + b"\r\n\r\n")
	closed, data = c.wait_closed(HEADER_TIMEOUT + 3)
	assert closed, "garbage left the connection open"
	if data:	# an answer is optional, but if there is one it is an error
		assert data.startswith(b"HTTP/1.1 4") or data.startswith(b"HTTP/1.1 5")
	assert requests.get(url(server, "/health"), timeout=5).status_code == 200


def test_http_2_request_line_is_505(server, raw):
	c = raw(server)
	c.send(request_head(target="/health", version="HTTP/2.0"))
	assert_json_error(c.read_response(), 505)


# --- connections ----------------------------------------------------------------------

def test_pipelined_requests_are_answered_in_order_on_one_connection(server, raw):
	c = raw(server)
	c.send(request_head(target="/health") + request_head(target="/nope")
	    + request_head(target="/"))
	first, second, third = (c.read_response() for _ in range(3))
	assert first.status == 200 and first.json() == HEALTHY
	assert_json_error(second, 404)
	assert third.status == 200
	assert third.header("Content-Type").startswith("text/html")


def test_pipelined_requests_split_across_packets_are_all_answered(server, raw):
	c = raw(server)
	data = request_head(target="/health") * 3
	for i in range(0, len(data), 7):
		c.send(data[i:i + 7])
		time.sleep(0.005)
	for _ in range(3):
		assert c.read_response().json() == HEALTHY


def test_keep_alive_serves_sequential_requests_on_one_connection(server, raw):
	c = raw(server)
	for path in ("/health", "/", "/v1/health"):
		c.send(request_head(target=path))
		r = c.read_response()
		assert r.status == 200, path
		assert (r.header("Connection") or "").lower() != "close"


def test_http_1_0_without_keep_alive_is_closed_after_the_response(server, raw):
	c = raw(server)
	c.send(b"GET /health HTTP/1.0\r\n\r\n")
	r = c.read_response()
	assert r.status == 200 and r.json() == HEALTHY
	closed, extra = c.wait_closed(2)
	assert closed and extra == b""


def test_connection_close_is_honoured(server, raw):
	c = raw(server)
	c.send(request_head(target="/health", headers=["Connection: close"]))
	r = c.read_response()
	assert r.status == 200
	assert (r.header("Connection") or "").lower() == "close"
	closed, extra = c.wait_closed(2)
	assert closed and extra == b""


# --- slow clients ----------------------------------------------------------------------

def _assert_timed_out(c, t0, limit):
	"""A 408 with a JSON error, then the close, about limit seconds after
	t0 and not before (SPEC §1: header read timeout is a 408)."""
	closed, data = c.wait_closed(limit + 3)
	elapsed = time.monotonic() - t0
	assert closed, "still open %.1f s after a %d s timeout" % (elapsed, limit)
	assert elapsed >= limit - 0.5, "closed after %.1f s, before the %d s " \
	    "timeout" % (elapsed, limit)
	assert data, "closed silently: no 408 response"
	r = c.read_response()
	assert_json_error(r, 408)
	assert (r.header("Connection") or "").lower() == "close"


def test_half_a_request_head_times_out_while_others_are_served(server, raw):
	needs_own_server()
	# More stalled clients than workers: none of them may hold a worker up.
	stalled = [raw(server) for _ in range(4)]
	t0 = time.monotonic()
	for c in stalled:
		c.send(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
	for _ in range(6):
		t = time.monotonic()
		r = requests.get(url(server, "/health"), timeout=5)
		assert r.status_code == 200
		assert time.monotonic() - t < 1, "a stalled client delayed others"
	for c in stalled:
		_assert_timed_out(c, t0, HEADER_TIMEOUT)


def test_a_head_trickled_byte_by_byte_still_times_out(server, raw):
	needs_own_server()
	# header_timeout bounds the whole head, not the gap between two bytes.
	c = raw(server)
	t0 = time.monotonic()
	data = b"GET /health HTTP/1.1\r\nX-Slow: " + b"a" * 1000
	for i in range(len(data)):
		if time.monotonic() - t0 > HEADER_TIMEOUT + 3:
			break
		if select.select([c.sock], [], [], 0.2)[0]:
			break	# the server answered or closed
		try:
			c.send(data[i:i + 1])
		except (BrokenPipeError, ConnectionResetError):
			break
	_assert_timed_out(c, t0, HEADER_TIMEOUT)


def test_a_body_that_does_not_arrive_within_header_timeout_is_a_408(server,
    raw):
	needs_own_server()
	# header_timeout bounds the whole request, head and body, from its
	# first byte: a body trickled or cut short cannot hold a connection.
	c = raw(server)
	t0 = time.monotonic()
	c.send(request_head(method="POST", target="/login", headers=[
	    "Content-Type: application/json", "Content-Length: 200"]))
	body = b'{"email": "slow@example.com", "password": "' + b"x" * 150
	for i in range(len(body)):
		if time.monotonic() - t0 > HEADER_TIMEOUT + 3:
			break
		if select.select([c.sock], [], [], 0.1)[0]:
			break	# the server answered or closed
		try:
			c.send(body[i:i + 1])
		except (BrokenPipeError, ConnectionResetError):
			break
	_assert_timed_out(c, t0, HEADER_TIMEOUT)


def test_a_connection_that_sends_nothing_is_closed(server, raw):
	needs_own_server()
	c = raw(server)
	t0 = time.monotonic()
	limit = max(HEADER_TIMEOUT, KEEPALIVE_TIMEOUT)
	closed, data = c.wait_closed(limit + 3)
	assert closed, "an idle new connection is never closed"
	assert time.monotonic() - t0 >= min(HEADER_TIMEOUT, KEEPALIVE_TIMEOUT) - 0.5
	if data:
		c.buf, c.eof = data, True
		assert_json_error(c.read_response(), 408)


def test_idle_keep_alive_connection_is_closed_after_keepalive_timeout(server, raw):
	needs_own_server()
	c = raw(server)
	c.send(request_head(target="/health"))
	assert c.read_response().status == 200
	t0 = time.monotonic()
	closed, data = c.wait_closed(KEEPALIVE_TIMEOUT + 3)
	elapsed = time.monotonic() - t0
	assert closed, "idle keep-alive connection still open after %.1f s" % elapsed
	assert elapsed >= KEEPALIVE_TIMEOUT - 0.5, "closed after %.1f s" % elapsed
	assert data == b"" or data.startswith(b"HTTP/1.1 408"), data[:100]


def test_a_keep_alive_connection_used_within_the_timeout_stays_open(server, raw):
	needs_own_server()
	c = raw(server)
	for _ in range(3):
		c.send(request_head(target="/health"))
		assert c.read_response().status == 200
		time.sleep(KEEPALIVE_TIMEOUT * 0.6)
	c.send(request_head(target="/health"))
	assert c.read_response().status == 200


def test_many_concurrent_connections_are_all_answered(server):
	errors = []

	def client():
		try:
			with requests.Session() as s:
				for _ in range(10):
					r = s.get(url(server, "/health"), timeout=5)
					if r.status_code != 200:
						errors.append(r.status_code)
		except requests.RequestException as e:
			errors.append(repr(e))
	threads = [threading.Thread(target=client) for _ in range(20)]
	for t in threads:
		t.start()
	for t in threads:
		t.join(30)
	assert not errors, errors[:5]


def test_a_client_that_disconnects_mid_request_does_not_hurt_the_server(server):
	for data in (b"GET /health HTTP/1.1\r\nHo",
	    request_head("POST", "/register", headers=["Content-Length: 100"])
	    + b"{\"a\":"):
		s = socket.create_connection((server.host, server.port), timeout=5)
		s.sendall(data)
		s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
		s.close()	# with an RST
	assert requests.get(url(server, "/health"), timeout=5).status_code == 200
