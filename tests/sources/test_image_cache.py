"""Tests for the cache of pre-resized images: written once, reused, and the table pointed at the copies."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

import timam.sources.image_cache as image_cache
from timam.sources.image_cache import cache_resized_images, cached_name

HEIGHT, WIDTH = 32, 16  # (height, width), deliberately not square


def _save(path: Path, image: Image.Image, **kwargs) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **kwargs)
    return str(path)


@pytest.fixture
def originals(tmp_path: Path) -> dict[str, str]:
    """Large-ish originals in the formats datasets ship: RGB JPEG, greyscale JPEG, RGBA PNG."""
    root = tmp_path / "imgs"
    return {
        "rgb": _save(root / "cam_a" / "0001.jpg", Image.new("RGB", (120, 90), (200, 40, 40)), quality=95),
        "grey": _save(root / "cam_b" / "0002.jpg", Image.new("L", (64, 100), 128), quality=95),
        "alpha": _save(root / "cam_b" / "0003.png", Image.new("RGBA", (50, 50), (10, 200, 10, 128))),
    }


@pytest.fixture
def table(originals: dict[str, str]) -> pd.DataFrame:
    """A caption table shaped like finalise_caption_table's output; two captions share the first image."""
    paths = [originals["rgb"], originals["rgb"], originals["grey"], originals["alpha"]]
    return pd.DataFrame(
        {
            "caption_id": ["0001.jpg#0", "0001.jpg#1", "0002.jpg#0", "0003.png#0"],
            "image_id": ["cam_a/0001.jpg", "cam_a/0001.jpg", "cam_b/0002.jpg", "cam_b/0003.png"],
            "image_path": paths,
            "caption": ["a red square", "a square, red", "a grey figure", "a green square"],
            "identity": ["1", "1", "2", "3"],
            "label": [0, 0, 1, -1],
            "split": ["train", "train", "train", "test"],
        }
    )


def _mtimes(directory: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in directory.iterdir()}


def test_cached_copies_are_rgb_jpegs_of_height_by_width(table: pd.DataFrame, tmp_path: Path) -> None:
    cache = tmp_path / "cache" / "224"
    cached = cache_resized_images(table, cache, (HEIGHT, WIDTH))
    files = sorted(cache.iterdir())
    assert len(files) == 3  # one per distinct image, not per caption
    for path in files:
        with Image.open(path) as image:
            assert image.format == "JPEG"
            assert image.mode == "RGB"
            assert image.size == (WIDTH, HEIGHT)  # Pillow sizes are (width, height)
    assert set(cached["image_path"]) == {str(p) for p in files}


def test_colours_survive_and_greyscale_becomes_rgb(table: pd.DataFrame, tmp_path: Path) -> None:
    cached = cache_resized_images(table, tmp_path / "cache", (HEIGHT, WIDTH))
    by_id = dict(zip(cached["image_id"], cached["image_path"], strict=True))
    with Image.open(by_id["cam_a/0001.jpg"]) as image:
        r, g, b = image.getpixel((WIDTH // 2, HEIGHT // 2))
        assert r > 170 and g < 70 and b < 70
    with Image.open(by_id["cam_b/0002.jpg"]) as image:
        assert image.mode == "RGB"
        r, g, b = image.getpixel((WIDTH // 2, HEIGHT // 2))
        assert max(r, g, b) - min(r, g, b) <= 3 and abs(r - 128) <= 4
    with Image.open(by_id["cam_b/0003.png"]) as image:
        assert image.mode == "RGB"  # alpha dropped
        r, g, b = image.getpixel((WIDTH // 2, HEIGHT // 2))
        assert g > 170 and r < 60 and b < 60


def test_exif_orientation_is_applied_before_resizing(tmp_path: Path) -> None:
    # Stored 40 wide x 20 high: left half red, right half blue. Orientation 6 means "rotate 90 degrees
    # clockwise to display": upright it is 20 wide x 40 high, red on top, blue at the bottom.
    stored = Image.new("RGB", (40, 20), (0, 0, 255))
    stored.paste((255, 0, 0), (0, 0, 20, 20))
    exif = Image.Exif()
    exif[0x0112] = 6
    path = _save(tmp_path / "rotated.jpg", stored, exif=exif, quality=95)
    rows = pd.DataFrame({"caption_id": ["r#0"], "image_path": [path], "caption": ["x"]})
    cached = cache_resized_images(rows, tmp_path / "cache", (40, 20))
    with Image.open(cached["image_path"].iloc[0]) as image:
        assert image.size == (20, 40)
        assert not image.getexif().get(0x0112)  # no orientation left to apply twice
        # top right and bottom left: unrotated (merely squashed) it would be blue and red instead
        top, bottom = image.getpixel((15, 5)), image.getpixel((4, 34))
    assert top[0] > 200 and top[2] < 60  # red on top
    assert bottom[2] > 200 and bottom[0] < 60  # blue below


def test_returned_table_points_at_the_copies_and_the_original_is_unchanged(table: pd.DataFrame, tmp_path: Path) -> None:
    before = table.copy()
    cache = tmp_path / "cache"
    cached = cache_resized_images(table, cache, [HEIGHT, WIDTH])
    pd.testing.assert_frame_equal(table, before)
    pd.testing.assert_frame_equal(cached.drop(columns="image_path"), table.drop(columns="image_path"))
    for original, copy in zip(table["image_path"], cached["image_path"], strict=True):
        copy = Path(copy)
        assert copy.is_file() and copy.parent == cache
        assert copy.name == cached_name(original, (HEIGHT, WIDTH))
    # captions of the same image share one copy; different images get different copies
    assert cached["image_path"].iloc[0] == cached["image_path"].iloc[1]
    assert cached["image_path"].nunique() == table["image_path"].nunique()


def test_a_second_call_writes_nothing(
    table: pd.DataFrame, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    cache = tmp_path / "cache"
    first = cache_resized_images(table, cache, (HEIGHT, WIDTH))
    old = 1_000_000_000
    for path in cache.iterdir():
        os.utime(path, ns=(old, old))
    contents = {p.name: p.read_bytes() for p in cache.iterdir()}

    decoded: list[str] = []
    real_load = image_cache.load_rgb

    def counting_load(path: str) -> Image.Image:
        decoded.append(path)
        return real_load(path)

    monkeypatch.setattr(image_cache, "load_rgb", counting_load)
    with caplog.at_level(logging.INFO, logger="timam.sources.image_cache"):
        second = cache_resized_images(table, cache, (HEIGHT, WIDTH))
    assert decoded == []  # no original decoded again
    assert _mtimes(cache) == dict.fromkeys(contents, old)
    assert {p.name: p.read_bytes() for p in cache.iterdir()} == contents
    pd.testing.assert_frame_equal(first, second)
    assert f"Image cache {cache}: 0 written, 3 reused" in caplog.text


def test_an_interrupted_run_resumes_with_the_missing_images_only(
    table: pd.DataFrame, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    cache = tmp_path / "cache"
    cache_resized_images(table.iloc[:2], cache, (HEIGHT, WIDTH))  # only the first image got done
    assert len(list(cache.iterdir())) == 1
    decoded: list[str] = []
    real_load = image_cache.load_rgb
    monkeypatch.setattr(image_cache, "load_rgb", lambda path: decoded.append(path) or real_load(path))
    with caplog.at_level(logging.INFO, logger="timam.sources.image_cache"):
        cached = cache_resized_images(table, cache, (HEIGHT, WIDTH))
    assert sorted(decoded) == sorted(table["image_path"].iloc[2:].tolist())
    assert "2 written, 1 reused" in caplog.text
    assert all(Path(p).is_file() for p in cached["image_path"])
    assert not [p for p in cache.iterdir() if p.name.startswith(".")]  # no temporary files left


def test_failed_write_leaves_no_file_and_the_rerun_writes_it(
    table: pd.DataFrame, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    real_save = Image.Image.save

    def crash_after_half(self: Image.Image, fp, *args, **kwargs) -> None:
        real_save(self, fp, *args, **kwargs)
        Path(fp).write_bytes(Path(fp).read_bytes()[:100])  # a half-written file, then the process dies
        raise KeyboardInterrupt

    monkeypatch.setattr(Image.Image, "save", crash_after_half)
    with pytest.raises(KeyboardInterrupt):
        cache_resized_images(table, cache, (HEIGHT, WIDTH))
    assert list(cache.iterdir()) == []  # neither the target nor the temporary file
    monkeypatch.setattr(Image.Image, "save", real_save)
    cached = cache_resized_images(table, cache, (HEIGHT, WIDTH))
    for path in cached["image_path"]:
        with Image.open(path) as image:
            image.load()  # complete, decodable JPEGs
            assert image.size == (WIDTH, HEIGHT)


def test_another_size_gets_its_own_copies(table: pd.DataFrame, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    small = cache_resized_images(table, cache, (HEIGHT, WIDTH))
    large = cache_resized_images(table, cache, (48, 24))
    assert set(small["image_path"]).isdisjoint(large["image_path"])
    assert len(list(cache.iterdir())) == 6
    with Image.open(large["image_path"].iloc[0]) as image:
        assert image.size == (24, 48)


def test_cached_name_is_stable_and_tells_same_named_files_apart() -> None:
    a = cached_name("/data/cam_a/0001.jpg", (32, 16))
    assert a == cached_name("/data/cam_a/0001.jpg", [32, 16])
    assert a.startswith("0001_") and a.endswith(".jpg") and len(a) == len("0001_") + 16 + len(".jpg")
    assert cached_name("/data/cam_b/0001.jpg", (32, 16)) != a  # same stem, other folder
    assert cached_name("/data/cam_a/0001.jpg", (16, 32)) != a  # height and width are not interchangeable


def test_the_cache_folder_is_created(table: pd.DataFrame, tmp_path: Path) -> None:
    cache = tmp_path / "a" / "b" / "c"
    cached = cache_resized_images(table, str(cache), (HEIGHT, WIDTH))
    assert cache.is_dir() and all(Path(p).parent == cache for p in cached["image_path"])
