"""The server's edge over real HTTP on 127.0.0.1: who may ask (Host, Origin), the headers every answer
carries, and requests that are not HTTP, too slow, or abandoned halfway.
"""

from __future__ import annotations

import logging
import re
import socket
import time
from html.parser import HTMLParser

import pytest

from tests.search.tiny_index import build_tiny_index
from tests.serve.live_server import live_server, multipart, raw_request, request
from timam.search import Searcher
from timam.serve.app import STATIC, create_app
from timam.serve.checks import Limits
from timam.serve.guard import CONTENT_SECURITY_POLICY, HostPolicy

BODY_TIMEOUT_S = 1.5


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_tiny_index(tmp_path_factory.mktemp("edge"))


@pytest.fixture(scope="module")
def server(tiny):
    app = create_app(Searcher.open(tiny.root, device="cpu"), limits=Limits(body_timeout_s=BODY_TIMEOUT_S))
    with live_server(app) as address:
        yield address


def _png(tiny) -> bytes:
    with open(tiny.images[1], "rb") as handle:
        return handle.read()


@pytest.mark.parametrize("path", ["/", "/static/app.js", "/api/info", "/api/search?q=sky", "/thumb/0", "/openapi.json"])
def test_a_page_that_rebinds_its_own_name_to_this_server_reads_nothing(server, path):
    """DNS rebinding: the browser sends the attacker's name as Host; every route refuses it, in JSON."""
    port = server.split(":")[1]
    reply = request(server, "GET", path, headers={"Host": f"evil.example:{port}"})
    assert reply.status == 400
    error = reply.json()["error"]
    assert "Host 'evil.example:" in error and "not a name of this server" in error
    assert "127.0.0.1, ::1, localhost" in error and "--allow-host" in error


@pytest.mark.parametrize(
    "host", ["127.0.0.1:{port}", "localhost:{port}", "LOCALHOST:{port}", "[::1]:{port}", "localhost"]
)
def test_the_names_of_a_loopback_server_are_answered(server, host):
    reply = request(server, "GET", "/api/info", headers={"Host": host.format(port=server.split(":")[1])})
    assert reply.status == 200


@pytest.mark.parametrize("host", ["", "127.0.0.1@evil.example", "evil.example#127.0.0.1", "127.0.0.1:http"])
def test_a_malformed_host_is_refused(server, host):
    assert request(server, "GET", "/api/info", headers={"Host": host}).status == 400


def test_host_policies_for_each_kind_of_bind():
    loopback = HostPolicy.for_bind("127.0.0.1")
    assert loopback.names == {"127.0.0.1", "localhost", "::1"}
    assert not loopback.allows("192.168.1.5") and not loopback.allows("evil.example")
    lan = HostPolicy.for_bind("192.168.1.5", ["photos.lan"])
    assert lan.allows("192.168.1.5") and lan.allows("photos.lan") and lan.allows("PHOTOS.LAN.")
    assert not lan.allows("localhost") and not lan.allows("10.0.0.1")
    everywhere = HostPolicy.for_bind("0.0.0.0")
    assert everywhere.allows("10.1.2.3") and everywhere.allows("fe80::1") and everywhere.allows("localhost")
    assert everywhere.allows(socket.gethostname()) and not everywhere.allows("evil.example")
    assert "any IP address" in everywhere.describe()
    assert HostPolicy.for_bind("::", ["*"]).allows("evil.example")


def test_a_post_from_another_sites_page_is_refused(server, tiny):
    body, content_type = multipart({"image": ("q.png", _png(tiny), "image/png")})
    sent = {"Content-Type": content_type}
    for origin in ("http://evil.example", "null", f"http://{server}.evil.example", "https://localhost"):
        reply = request(server, "POST", "/api/search/image?k=2", body, {**sent, "Origin": origin})
        assert reply.status == 403, origin
        assert "only this server's own page may send one" in reply.json()["error"]
    own = request(server, "POST", "/api/search/image?k=2", body, {**sent, "Origin": f"http://{server}"})
    assert own.status == 200 and own.json()["results"][0]["row"] == 1
    assert request(server, "POST", "/api/search/image?k=2", body, sent).status == 200  # curl sends no Origin


@pytest.mark.parametrize(
    ("path", "status"),
    [("/", 200), ("/static/app.js", 200), ("/api/info", 200), ("/thumb/0", 200), ("/api/search", 400), ("/x", 404)],
)
def test_every_answer_carries_the_headers_of_a_local_page(server, path, status):
    reply = request(server, "GET", path)
    assert reply.status == status
    assert reply.headers["x-content-type-options"] == "nosniff"
    assert reply.headers["x-frame-options"] == "DENY"
    assert reply.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert "default-src 'none'" in CONTENT_SECURITY_POLICY and "http" not in CONTENT_SECURITY_POLICY
    assert "'unsafe-inline'" not in CONTENT_SECURITY_POLICY and "'unsafe-eval'" not in CONTENT_SECURITY_POLICY
    assert reply.headers["cross-origin-resource-policy"] == "same-origin"
    assert "server" not in reply.headers  # no banner naming the server software


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.inline_script = False

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        if self.tags and self.tags[-1][0] in ("script", "style") and data.strip():
            self.inline_script = True


def test_the_page_has_nothing_inline_that_its_policy_would_block():
    """The CSP allows only files from /static: no inline script, style, handler or foreign URL on the page."""
    parser = _Tags()
    parser.feed((STATIC / "index.html").read_text())
    assert not parser.inline_script
    for tag, attrs in parser.tags:
        assert tag != "style" and "style" not in attrs, tag
        assert not any(name.startswith("on") for name in attrs), (tag, attrs)
        for name in ("src", "href"):
            if attrs.get(name):
                assert attrs[name].startswith("/static/"), (tag, attrs)
    assert {attrs.get("src") for tag, attrs in parser.tags if tag == "script"} == {"/static/app.js"}
    script = (STATIC / "app.js").read_text()
    assert not re.search(r"\beval\(|new Function|\.style\s*=|setAttribute\(\s*['\"]style", script)


@pytest.mark.parametrize(
    "head",
    [
        b"THIS IS NOT HTTP\r\n\r\n",
        b"GET /api/info HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: abc\r\n\r\n",
        b"GET /api/info HTTP/1.1\r\nHost: 127.0.0.1\r\nBad Header Name: x\r\n\r\n",
    ],
)
def test_a_request_uvicorn_cannot_parse_gets_a_json_400(server, head):
    answer = raw_request(server, head)
    status, _, rest = answer.partition(b"\r\n")
    assert status == b"HTTP/1.1 400 Bad Request"
    headers, _, body = rest.partition(b"\r\n\r\n")
    assert b"content-type: application/json" in headers.lower() and b"x-content-type-options: nosniff" in headers
    assert b'"error": "the request is not valid HTTP (' in body


def test_a_body_that_does_not_arrive_in_time_is_a_408_and_frees_the_connection(server):
    head = (
        b"POST /api/search/image HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n"
        + f"Content-Length: {5 * 1024 * 1024}\r\n\r\n".encode()
    )
    started = time.monotonic()
    answer = raw_request(server, head, b"\x89PNG" + b"\0" * 1020)  # 1 KB of the declared 5 MB, then nothing
    assert answer.startswith(b"HTTP/1.1 408")
    assert b"did not arrive within 1.5 s (1,024 bytes came)" in answer
    assert b"connection: close" in answer.lower()
    assert time.monotonic() - started < BODY_TIMEOUT_S + 5


def test_a_client_that_leaves_mid_upload_is_one_line_in_the_log(server, caplog):
    uvicorn_records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = uvicorn_records.append  # type: ignore[method-assign]
    logging.getLogger("uvicorn.error").addHandler(handler)
    caplog.set_level(logging.INFO, logger="timam.serve")
    try:
        host, port = server.split(":")
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(
                b"POST /api/search/image HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n"
                b"Content-Length: 100000\r\n\r\n" + b"\x89PNG" + b"\0" * 996
            )
            time.sleep(0.3)
        deadline = time.monotonic() + 5
        while not any("disconnected" in record.getMessage() for record in caplog.records):
            assert time.monotonic() < deadline, [record.getMessage() for record in caplog.records]
            time.sleep(0.05)
        time.sleep(0.3)  # anything else the disconnect would log comes now
    finally:
        logging.getLogger("uvicorn.error").removeHandler(handler)
    server_records = [record for record in caplog.records if record.name.startswith("timam.serve")]
    assert [(record.levelname, record.exc_info) for record in server_records] == [("INFO", None)]
    assert re.fullmatch(
        r"127\.0\.0\.1:\d+ disconnected during the body of POST /api/search/image \(1000 bytes received\)",
        server_records[0].getMessage(),
    )
    assert [record for record in uvicorn_records if record.levelno >= logging.ERROR] == []
