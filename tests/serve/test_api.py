"""The JSON API over real HTTP on 127.0.0.1: good answers, a clear 4xx for every bad request, no 500s."""

from __future__ import annotations

import io
import json
import socket
import subprocess
import sys
import time
from urllib.parse import quote

import pytest
from PIL import Image

from tests.search.tiny_index import CHECKPOINT_VERSION, INDEX_VERSION, build_tiny_index
from tests.serve.live_server import live_server, multipart, raw_request, request
from timam.search import Searcher
from timam.serve.app import create_app
from timam.serve.checks import Limits
from timam.serve.cli import main
from timam.serve.thumbs import ThumbnailError, Thumbnails

UPLOAD_CAP = 256 * 1024  # small, so the over-cap uploads stay small too


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_tiny_index(tmp_path_factory.mktemp("serve"))


@pytest.fixture(scope="module")
def searcher(tiny):
    return Searcher.open(tiny.root, device="cpu")


@pytest.fixture(scope="module")
def server(searcher):
    with live_server(create_app(searcher, limits=Limits(max_upload_bytes=UPLOAD_CAP))) as address:
        yield address


def _png(tiny, row: int) -> bytes:
    with open(tiny.images[row], "rb") as handle:
        return handle.read()


def _upload(server: str, data: bytes, query: str = "k=3", name: str = "image", kind: str = "image/png"):
    body, content_type = multipart({name: ("query.png", data, kind)})
    return request(server, "POST", f"/api/search/image?{query}", body, {"Content-Type": content_type})


def _good_search_still_works(server: str, searcher: Searcher) -> None:
    reply = request(server, "GET", "/api/search?q=a+blue+sky&k=2")
    assert reply.status == 200
    assert [hit["row"] for hit in reply.json()["results"]] == [hit.row for hit in searcher.by_text("a blue sky", 2)]


def test_info_names_the_checkpoint_and_index_versions(server):
    info = request(server, "GET", "/api/info").json()
    assert info["checkpoint_version"] == CHECKPOINT_VERSION
    assert info["index_version"] == INDEX_VERSION
    assert info["images"] == 6 and info["has_captions"] and info["limits"]["max_k"] == 100


def test_the_page_and_its_files_are_served_from_this_server_only(server):
    page = request(server, "GET", "/")
    assert page.status == 200 and page.headers["content-type"].startswith("text/html")
    text = page.body.decode()
    assert 'id="query"' in text and 'id="results"' in text and 'id="footer"' in text
    assert "http://" not in text and "https://" not in text  # nothing loads from the internet
    for asset in ("/static/app.js", "/static/style.css"):
        reply = request(server, "GET", asset)
        assert reply.status == 200 and b"http" not in reply.body, asset


def test_text_search_returns_the_searchers_ranking_with_thumbnail_urls(server, searcher):
    reply = request(server, "GET", "/api/search?q=" + quote("two airplanes parked") + "&k=4")
    assert reply.status == 200
    body = reply.json()
    expected = searcher.by_text("two airplanes parked", k=4)
    assert body["query"] == "two airplanes parked" and body["k"] == 4
    assert [(hit["rank"], hit["row"], hit["path"]) for hit in body["results"]] == [
        (hit.rank, hit.row, hit.path) for hit in expected
    ]
    assert [hit["score"] for hit in body["results"]] == pytest.approx([hit.score for hit in expected], abs=1e-5)
    assert [hit["thumb"] for hit in body["results"]] == [f"/thumb/{hit.row}" for hit in expected]
    assert request(server, "GET", "/api/search?q=a+wall").json()["k"] == 10  # the default k
    assert len(request(server, "GET", "/api/search?q=a+wall&k=100").json()["results"]) == 6  # clipped to the index


@pytest.mark.parametrize("row", [1, 4])
def test_an_uploaded_indexed_image_finds_itself_first(server, tiny, row):
    reply = _upload(server, _png(tiny, row))
    assert reply.status == 200, reply.body
    results = reply.json()["results"]
    assert results[0]["row"] == row and results[0]["path"] == tiny.images[row]
    assert results[0]["score"] == pytest.approx(1.0, abs=1e-5)
    raw = request(server, "POST", "/api/search/image?k=2", _png(tiny, row), {"Content-Type": "image/png"})
    assert raw.status == 200 and raw.json()["results"][0]["row"] == row


def test_an_upload_ranks_captions_when_asked(server, searcher, tiny):
    reply = _upload(server, _png(tiny, 2), "k=3&target=captions")
    assert reply.status == 200
    expected = searcher.captions_for_image(tiny.images[2], k=3)
    assert [hit["caption"] for hit in reply.json()["results"]] == [hit.caption for hit in expected]


def test_a_thumbnail_is_a_small_jpeg_of_that_row(server, tiny):
    reply = request(server, "GET", "/thumb/3")
    assert reply.status == 200 and reply.headers["content-type"] == "image/jpeg"
    thumb = Image.open(io.BytesIO(reply.body))
    assert thumb.format == "JPEG" and max(thumb.size) <= 256
    assert thumb.size == Image.open(tiny.images[3]).size  # 16x32 is already small: kept, not enlarged
    assert request(server, "GET", "/thumb/3").body == reply.body  # from the cache


def test_thumbnails_are_resized_and_a_vanished_file_is_named(tmp_path):
    big = tmp_path / "big.jpg"
    Image.new("RGB", (1200, 600), (200, 30, 30)).save(big)
    thumbnails = Thumbnails(lambda row: str(big if row == 0 else tmp_path / "gone.jpg"), size=256)
    assert Image.open(io.BytesIO(thumbnails.get(0))).size == (256, 128)
    with pytest.raises(ThumbnailError, match=r"the image of row 1 cannot be shown: .*gone.jpg' does not exist"):
        thumbnails.get(1)


BIG_PNG = io.BytesIO()
Image.new("1", (9000, 5000)).save(BIG_PNG, format="PNG")  # 45 MP in a few kB: a decompression bomb
BAD_REQUESTS = [
    # (method, path, body, content type, status, message)
    ("GET", "/api/search", None, None, 400, "give a query"),
    ("GET", "/api/search?q=", None, None, 400, "the query q is empty"),
    ("GET", "/api/search?q=%20%20%20", None, None, 400, "the query q is empty"),
    ("GET", "/api/search?q=" + "a" * 501, None, None, 400, "501 characters long; at most 500"),
    ("GET", "/api/search?q=%FF%FEcar", None, None, 400, "not valid UTF-8"),
    ("GET", "/api/search?q=%C3", None, None, 400, "not valid UTF-8"),
    ("GET", "/api/search?q=a%00car", None, None, 400, "control characters"),
    ("GET", "/api/search?q=car&k=0", None, None, 400, "k must be from 1 to 100, got 0"),
    ("GET", "/api/search?q=car&k=101", None, None, 400, "k must be from 1 to 100, got 101"),
    ("GET", "/api/search?q=car&k=-3", None, None, 400, "k must be a whole number"),
    ("GET", "/api/search?q=car&k=ten", None, None, 400, "k must be a whole number"),
    ("GET", "/api/search?q=car&k=1e3", None, None, 400, "k must be a whole number"),
    ("GET", "/api/search?q=car&k=" + "9" * 40, None, None, 400, "k must be a whole number"),
    ("POST", "/api/search", b"", None, 405, "Method Not Allowed"),
    ("GET", "/api/search/image", None, None, 405, "Method Not Allowed"),
    ("GET", "/api/nothing", None, None, 404, "Not Found"),
    ("POST", "/api/search/image?k=0", b"x", "image/png", 400, "k must be from 1 to 100"),
    ("POST", "/api/search/image?target=faces", b"x", "image/png", 400, "target must be one of"),
    ("POST", "/api/search/image", b"", "image/png", 400, "the uploaded file is empty"),
    ("POST", "/api/search/image", b"hello", "text/plain", 415, "send the image as multipart/form-data"),
    ("POST", "/api/search/image", b"# a README\n", "image/png", 415, "not an image Pillow can read"),
    ("POST", "/api/search/image", "truncated", "image/png", 415, "not an image Pillow can read"),
    ("POST", "/api/search/image", BIG_PNG.getvalue(), "image/png", 415, "9000x5000 pixels, more than"),
    ("POST", "/api/search/image", b"a" * (UPLOAD_CAP + 70_000), "image/png", 413, "larger than"),
    ("POST", "/api/search/image", b"--x\r\nbroken", "multipart/form-data", 400, "not a valid multipart form"),
    ("POST", "/api/search/image", "form without image", None, 400, "the form has no image file"),
    ("POST", "/api/search/image", "form with text", None, 415, "not an image Pillow can read"),
    ("GET", "/thumb/abc", None, None, 400, "asked for by row number"),
    ("GET", "/thumb/-1", None, None, 400, "asked for by row number"),
    ("GET", "/thumb/1.5", None, None, 400, "asked for by row number"),
    ("GET", "/thumb/6", None, None, 404, "row 6 is not in the index, which has 6 rows"),
    ("GET", "/thumb/" + "9" * 30, None, None, 400, "asked for by row number"),
    ("GET", "/thumb/0%00", None, None, 400, "asked for by row number"),
    ("GET", "/thumb/%2Fetc%2Fpasswd", None, None, 404, "Not Found"),
    ("GET", "/thumb/..%2F..%2F..%2Fetc%2Fpasswd", None, None, 404, "Not Found"),
    ("GET", "/thumb/../../../etc/passwd", None, None, 404, "Not Found"),
    ("GET", "/thumb/%2e%2e%2f%2e%2e%2fpyproject.toml", None, None, 404, "Not Found"),
    ("GET", "/static/../../../../pyproject.toml", None, None, 404, "Not Found"),
    ("GET", "/static/%2e%2e/%2e%2e/search/searcher.py", None, None, 404, "Not Found"),
]


@pytest.mark.parametrize(("method", "path", "body", "content_type", "status", "message"), BAD_REQUESTS)
def test_every_bad_request_gets_its_4xx_and_the_server_keeps_serving(
    server, searcher, tiny, method, path, body, content_type, status, message
):
    headers = {"Content-Type": content_type} if content_type else {}
    if body == "truncated":
        body = _png(tiny, 0)[:-40]
    elif body == "form without image":
        body, headers["Content-Type"] = multipart({"other": ("a.png", _png(tiny, 0), "image/png")})
        body = body.replace(b'filename="a.png"\r\n', b"\r\n")  # a plain field, not a file
    elif body == "form with text":
        body, headers["Content-Type"] = multipart({"image": ("notes.png", b"plain text", "image/png")})
    reply = request(server, method, path, body, headers)
    assert reply.status == status, reply.body
    assert message in reply.json()["error"]
    _good_search_still_works(server, searcher)


def test_an_upload_declared_too_large_is_refused_before_it_is_read(server, searcher):
    head = (
        b"POST /api/search/image HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n"
        + f"Content-Length: {50 * 1024 * 1024}\r\n\r\n".encode()
    )
    answer = raw_request(server, head, b"\x89PNG" + b"\0" * 1000)  # the rest of the 50 MB never comes
    assert answer.startswith(b"HTTP/1.1 413")
    assert b"larger than" in answer
    _good_search_still_works(server, searcher)


def test_a_chunked_upload_is_counted_while_read(server, searcher):
    reply = request(
        server,
        "POST",
        "/api/search/image",
        b"\0" * (3 * UPLOAD_CAP),
        {"Content-Type": "image/png", "Transfer-Encoding": "chunked"},
    )
    assert reply.status == 413 and "larger than" in reply.json()["error"]
    _good_search_still_works(server, searcher)


def test_a_bug_is_a_500_with_json_and_the_server_survives(server, searcher, monkeypatch, caplog):
    def broken(text, k):
        raise RuntimeError("a bug")

    monkeypatch.setattr(searcher, "by_text", broken)
    reply = request(server, "GET", "/api/search?q=anything")
    assert reply.status == 500
    assert json.loads(reply.body) == {"error": "internal error (RuntimeError); the server log has the details"}
    monkeypatch.undo()
    _good_search_still_works(server, searcher)


def test_timam_serve_starts_on_the_given_port_and_answers(tiny, tmp_path):
    """``python -m timam.serve`` (what the ``timam serve`` console script runs) in its own process."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "timam.serve", "--index", str(tiny.root), "--port", str(port), "--device", "cpu"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                info = request(f"127.0.0.1:{port}", "GET", "/api/info").json()
                break
            except (ConnectionRefusedError, OSError):
                assert process.poll() is None, process.stdout.read() if process.stdout else ""
                assert time.monotonic() < deadline, "timam serve did not answer within 60 s"
                time.sleep(0.2)
        assert info["index_version"] == INDEX_VERSION and info["checkpoint_version"] == CHECKPOINT_VERSION
    finally:
        process.terminate()
        process.wait(timeout=20)


def test_timam_serve_without_an_index_says_how_to_build_one(tmp_path, capsys):
    assert main(["serve", "--project", str(tmp_path)]) == 2
    error = capsys.readouterr().err
    assert "no image index under" in error and "kedro run --pipelines index" in error
