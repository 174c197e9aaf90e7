"""Image queries over real HTTP on 127.0.0.1: decoded no larger than the model needs, a bounded number
at once (then a 503 with Retry-After), the pixel cap on what is decoded, and refusals in plain words.
"""

from __future__ import annotations

import io
import threading

import pytest
from PIL import Image

from tests.search.tiny_index import build_tiny_index
from tests.serve.live_server import live_server, multipart, request
from timam.search import Searcher
from timam.search.images import REDUCING_GAP
from timam.serve.app import create_app
from timam.serve.checks import Limits
from timam.serve.thumbs import ThumbnailError, Thumbnails


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_tiny_index(tmp_path_factory.mktemp("uploads"))


@pytest.fixture(scope="module")
def searcher(tiny):
    return Searcher.open(tiny.root, device="cpu")


@pytest.fixture(scope="module")
def server(searcher):
    limits = Limits(image_queries=1, image_wait_s=0.3, max_upload_bytes=2 * 1024 * 1024)
    with live_server(create_app(searcher, limits=limits)) as address:
        yield address


def _encoded(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _upload(server: str, data: bytes, name: str = "query.png", kind: str = "image/png"):
    body, content_type = multipart({"image": (name, data, kind)})
    return request(server, "POST", "/api/search/image?k=2", body, {"Content-Type": content_type})


@pytest.fixture
def seen_queries(searcher, monkeypatch):
    """What the server hands the searcher for each image query."""
    seen: list = []
    original = searcher.by_image

    def spy(image, k=10):
        seen.append(image)
        return original(image, k)

    monkeypatch.setattr(searcher, "by_image", spy)
    return seen


@pytest.mark.parametrize(("fmt", "kind"), [("PNG", "image/png"), ("JPEG", "image/jpeg")])
def test_a_large_query_is_decoded_no_larger_than_the_model_needs(server, searcher, seen_queries, fmt, kind):
    side = max(searcher.checkpoint.embedding_model.config.image_size)  # 32 for the tiny model
    data = _encoded(Image.radial_gradient("L").resize((2400, 1800)).convert("RGB"), fmt)
    reply = _upload(server, data, f"query.{fmt.lower()}", kind)
    assert reply.status == 200, reply.body
    (query,) = seen_queries
    assert isinstance(query, Image.Image) and query.mode == "RGB"
    assert REDUCING_GAP * side <= min(query.size) < 2 * REDUCING_GAP * side  # 1800 px -> 100 to 191
    assert query.width / query.height == pytest.approx(2400 / 1800, rel=0.05)


def test_the_pixel_cap_counts_what_would_be_decoded(server):
    """The issue's 38 KB PNG of 6300 x 6300 px (270 MB decoded) is refused from its header."""
    bomb = _encoded(Image.new("1", (6300, 6300)), "PNG")
    assert len(bomb) < 100_000
    reply = _upload(server, bomb)
    assert reply.status == 415
    assert "decodes to 6300x6300 pixels, more than the 16,000,000 allowed" in reply.json()["error"]
    # A JPEG of more pixels passes: its decoder reads it at 1/8 scale.
    photo = _encoded(Image.new("L", (6000, 3000), 128), "JPEG")
    assert _upload(server, photo, "photo.jpg", "image/jpeg").status == 200


def test_image_queries_beyond_the_slots_get_a_503_with_retry_after(server, searcher, tiny, monkeypatch):
    inside, release = threading.Event(), threading.Event()
    original = searcher.by_image

    def slow(image, k=10):
        inside.set()
        release.wait(10)
        return original(image, k)

    monkeypatch.setattr(searcher, "by_image", slow)
    data = open(tiny.images[2], "rb").read()
    first: list = []
    worker = threading.Thread(target=lambda: first.append(_upload(server, data)))
    worker.start()
    try:
        assert inside.wait(10)
        threading.Timer(3, release.set).start()  # without the slots the next query would wait for this
        busy = _upload(server, data)
        assert busy.status == 503, busy.body
        assert busy.headers["retry-after"] == "1"
        assert "1 image queries are being searched; try again in a moment" in busy.json()["error"]
    finally:
        release.set()
        worker.join(20)
    assert first[0].status == 200 and first[0].json()["results"][0]["row"] == 2
    assert _upload(server, data).status == 200  # the slot is free again


def test_a_file_that_is_no_image_is_refused_without_naming_a_python_object(server):
    reply = _upload(server, b"# a README\n")
    assert reply.status == 415
    error = reply.json()["error"]
    assert error.startswith("the uploaded file is not an image Pillow can read (not a JPEG, PNG")
    assert "object at 0x" not in error and "BytesIO" not in error


def test_formats_outside_the_upload_list_are_refused(server):
    icon = _encoded(Image.new("RGB", (32, 32), (200, 0, 0)), "ICO")
    reply = _upload(server, icon, "icon.ico", "image/x-icon")
    assert reply.status == 415 and "not a JPEG, PNG, WEBP, GIF, BMP, TIFF image file" in reply.json()["error"]


def test_a_vanished_indexed_image_is_called_an_indexed_image(tmp_path):
    thumbnails = Thumbnails(lambda row: str(tmp_path / "gone.jpg"))
    with pytest.raises(ThumbnailError) as raised:
        thumbnails.get(0)
    assert "indexed image '" in str(raised.value) and "query image" not in str(raised.value)
