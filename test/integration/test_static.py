"""The web client's files (issue 6): every regular file of web_dir served
at /<name> (index.html also at /) from memory, with its content type,
validators (ETag, Last-Modified, 304), the security headers, HEAD, 405 for
other methods, and no way to reach anything else on disk."""

import os
import re
import signal

import pytest
import requests

import harness
from conftest import SRCDIR
from test_http import assert_json_error, request_head

FILES = {
	"index.html": (b"<!doctype html><html><head><script src=\"/app.js\">"
	    b"</script></head><body>hi</body></html>\n", "text/html"),
	"app.js": (b"console.log('gochat');\n", "text/javascript"),
	"style.css": (b"body { color: #222; }\n", "text/css"),
	"favicon.svg": (b"<svg xmlns=\"http://www.w3.org/2000/svg\"/>\n",
	    "image/svg+xml"),
	"logo.png": (b"\x89PNG\r\n\x1a\n" + bytes(range(256)), "image/png"),
}


@pytest.fixture
def web(make_server, tmp_path):
	"""A server whose web_dir holds FILES, a dot file, a subdirectory and
	a secret next to the directory."""
	d = tmp_path / "web"
	(d / "sub").mkdir(parents=True)
	for name, (data, _) in FILES.items():
		(d / name).write_bytes(data)
	(d / ".hidden").write_bytes(b"dot file\n")
	(d / "sub" / "inner.txt").write_bytes(b"in a subdirectory\n")
	(tmp_path / "secret.txt").write_bytes(b"not for the web\n")
	s = make_server(web_dir=str(d))
	s.webdir = d
	return s


@pytest.mark.parametrize("name", sorted(FILES))
def test_each_file_is_served_with_its_type_and_headers(web, name):
	data, ctype = FILES[name]
	r = requests.get(web.base + "/" + name, timeout=5)
	assert r.status_code == 200
	assert r.content == data
	assert r.headers["Content-Type"].startswith(ctype), r.headers
	assert int(r.headers["Content-Length"]) == len(data)
	assert re.fullmatch(r'"[0-9a-f]{16}"', r.headers["ETag"]), r.headers
	assert r.headers["Last-Modified"].endswith(" GMT")
	assert r.headers["Cache-Control"] == "no-cache"
	assert r.headers["X-Content-Type-Options"] == "nosniff"
	csp = r.headers["Content-Security-Policy"]
	assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp


def test_root_is_index_html(web):
	a = requests.get(web.base + "/", timeout=5)
	b = requests.get(web.base + "/index.html", timeout=5)
	assert a.status_code == b.status_code == 200
	assert a.content == b.content == FILES["index.html"][0]
	assert a.headers["ETag"] == b.headers["ETag"]


def test_etags_differ_between_files_and_follow_the_content(web):
	tags = {requests.get(web.base + "/" + n, timeout=5).headers["ETag"]
	    for n in FILES}
	assert len(tags) == len(FILES)


@pytest.mark.parametrize("validator", ["etag", "list", "weak", "star",
    "date"])
def test_a_matching_validator_gets_304_without_a_body(web, raw, validator):
	r = requests.get(web.base + "/app.js", timeout=5)
	tag, date = r.headers["ETag"], r.headers["Last-Modified"]
	header = {
		"etag": "If-None-Match: %s" % tag,
		"list": "If-None-Match: \"0000000000000000\", %s" % tag,
		"weak": "If-None-Match: W/%s" % tag,
		"star": "If-None-Match: *",
		"date": "If-Modified-Since: %s" % date,
	}[validator]
	c = raw(web)
	# The 304 and then a GET on the same connection: a body after the 304
	# would corrupt the second response.
	c.send(request_head(target="/app.js", headers=[header]) +
	    request_head(target="/style.css"))
	first = c.read_response()
	assert first.status == 304
	assert first.header("ETag") == tag
	assert first.body == b""
	second = c.read_response()
	assert second.status == 200
	assert second.body == FILES["style.css"][0]


@pytest.mark.parametrize("header", ['If-None-Match: "0123456789abcdef"',
    "If-Modified-Since: Mon, 01 Jan 2001 00:00:00 GMT"])
def test_a_stale_validator_gets_the_file(web, header):
	name, value = header.split(": ", 1)
	r = requests.get(web.base + "/app.js", headers={name: value}, timeout=5)
	assert r.status_code == 200
	assert r.content == FILES["app.js"][0]


def test_if_none_match_wins_over_if_modified_since(web):
	r = requests.get(web.base + "/app.js", timeout=5)
	r2 = requests.get(web.base + "/app.js", headers={
	    "If-None-Match": '"0123456789abcdef"',
	    "If-Modified-Since": r.headers["Last-Modified"]}, timeout=5)
	assert r2.status_code == 200


def test_head_gives_the_headers_without_the_body(web, raw):
	c = raw(web)
	c.send(request_head("HEAD", "/style.css") +
	    request_head("GET", "/favicon.svg"))
	head = c.read_response(method="HEAD")
	assert head.status == 200
	assert int(head.header("Content-Length")) == len(FILES["style.css"][0])
	nxt = c.read_response()
	assert nxt.status == 200 and nxt.body == FILES["favicon.svg"][0]


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE"])
def test_other_methods_on_a_file_are_405_with_allow(web, method):
	r = requests.request(method, web.base + "/app.js", timeout=5)
	assert_json_error(r, 405)
	assert r.headers["Allow"] == "GET, HEAD"


@pytest.mark.parametrize("target", [
	"/../secret.txt", "/%2e%2e/secret.txt", "/..%2fsecret.txt",
	"/sub/inner.txt", "/sub", "/sub/", "/.hidden", "/web/app.js",
	"//app.js", "/app.js/", "/app.js%00.png", "/nope.js", "/APP.JS",
	"/%2fetc%2fpasswd",
])
def test_nothing_outside_the_files_is_reachable(web, raw, target):
	c = raw(web)
	c.send(request_head(target=target))
	r = c.read_response()
	assert r.status in (400, 404), (target, r.status)
	assert b"not for the web" not in r.body
	assert b"in a subdirectory" not in r.body
	assert b"dot file" not in r.body
	assert b"root:" not in r.body


def test_files_are_read_once_and_reread_on_reload(web):
	before = requests.get(web.base + "/app.js", timeout=5)
	(web.webdir / "app.js").write_bytes(b"console.log('v2');\n")
	# Still the copy in memory: a half-written file never reaches a client.
	for _ in range(4):
		r = requests.get(web.base + "/app.js", timeout=5)
		assert r.content == FILES["app.js"][0]
	old = set(web.workers().values())
	web.signal(signal.SIGHUP)
	assert harness.wait_for(lambda: old.isdisjoint(web.workers().values())
	    and len(web.workers()) == 2, 15), "the workers were not replaced"
	assert harness.wait_for(lambda: requests.get(web.base + "/app.js",
	    timeout=5).content == b"console.log('v2');\n", 5)
	r = requests.get(web.base + "/app.js", timeout=5)
	assert r.headers["ETag"] != before.headers["ETag"]


def test_an_api_route_is_not_shadowed_by_a_file(make_server, tmp_path):
	d = tmp_path / "web"
	d.mkdir()
	(d / "health").write_bytes(b"a file named health\n")
	(d / "index.html").write_bytes(b"<html></html>\n")
	s = make_server(web_dir=str(d))
	r = requests.get(s.base + "/health", timeout=5)
	assert r.status_code == 200 and r.json()["status"] == "ok"


def test_a_missing_web_dir_answers_404_and_the_api_still_works(make_server,
    tmp_path):
	s = make_server(web_dir=str(tmp_path / "absent"))
	assert_json_error(requests.get(s.base + "/", timeout=5), 404)
	assert requests.get(s.base + "/health", timeout=5).status_code == 200


# --- the real client ---------------------------------------------------------------

def test_every_asset_the_page_references_is_served(server):
	"""index.html of web/ loads only its own files, and each is served
	with a fitting type."""
	page = requests.get(server.base + "/", timeout=5)
	assert page.status_code == 200
	refs = re.findall(r'(?:src|href)="([^"]+)"', page.text)
	assert refs, "index.html references no script or stylesheet"
	types = {".js": "text/javascript", ".css": "text/css",
	    ".svg": "image/svg+xml", ".png": "image/png"}
	for ref in refs:
		assert ref.startswith("/") and not ref.startswith("//"), \
		    "%s is not the server's own" % ref
		r = requests.get(server.base + ref, timeout=5)
		assert r.status_code == 200, ref
		ext = os.path.splitext(ref)[1]
		assert r.headers["Content-Type"].startswith(types[ext]), ref
	assert sorted(os.listdir(SRCDIR / "web")) == sorted(
	    ["index.html", "app.js", "style.css", "favicon.svg"])
