"""Tests for the built-in CUHK-PEDES-shaped demo data."""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from pathlib import Path

import pytest
from PIL import Image

from timam.formats import atomic
from timam.sources.demo import generate_demo_dataset, generator
from timam.sources.demo.people import sample_people

SMALL = dict(num_identities=12, images_per_identity=3, captions_per_image=2, split_identities=(6, 3, 3))


def _hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict]]:
    root = tmp_path_factory.mktemp("demo")
    path = generate_demo_dataset(root, **SMALL)
    return path, json.loads(path.read_text(encoding="utf-8"))


def test_returns_reid_raw_json_with_cuhk_pedes_shape(small: tuple[Path, list[dict]]) -> None:
    path, records = small
    assert path.name == "reid_raw.json"
    assert isinstance(records, list) and len(records) == 12 * 3
    for r in records:
        assert set(r) == {"split", "captions", "file_path", "processed_tokens", "id", "attributes"}
        assert r["split"] in {"train", "val", "test"}
        assert isinstance(r["id"], int) and 1 <= r["id"] <= 12
        assert r["file_path"] == f"{r['split']}/{r['id']:04d}_{r['file_path'].rsplit('_', 1)[1]}"
        assert r["file_path"].endswith(".jpg")
    assert {r["id"] for r in records} == set(range(1, 13))


def test_images_exist_as_rgb_of_requested_size(small: tuple[Path, list[dict]]) -> None:
    path, records = small
    for r in records:
        with Image.open(path.parent / "imgs" / r["file_path"]) as img:
            assert img.format == "JPEG"
            assert img.mode == "RGB"
            assert img.size == (80, 160)


def test_image_size_is_width_height(tmp_path: Path) -> None:
    path = generate_demo_dataset(tmp_path, **{**SMALL, "image_size": (64, 128)})
    first = json.loads(path.read_text())[0]
    with Image.open(tmp_path / "imgs" / first["file_path"]) as img:
        assert img.size == (64, 128)


def test_captions_per_image_tokens_and_length(small: tuple[Path, list[dict]]) -> None:
    _, records = small
    for r in records:
        assert len(r["captions"]) == 2
        assert len(r["processed_tokens"]) == len(r["captions"])
        for caption, tokens in zip(r["captions"], r["processed_tokens"], strict=True):
            assert caption.strip() and caption[0].isupper() and caption.endswith(".")
            assert 0 < len(caption.split()) <= 60
            assert tokens and all(t == t.lower() and t.isascii() for t in tokens)
            assert tokens == [w for w in tokens if w.strip(".,")]  # no punctuation tokens
        assert r["captions"][0] != r["captions"][1]


def test_split_is_by_identity(small: tuple[Path, list[dict]]) -> None:
    _, records = small
    splits_of: dict[int, set[str]] = defaultdict(set)
    for r in records:
        splits_of[r["id"]].add(r["split"])
        assert r["file_path"].startswith(r["split"] + "/")
    assert all(len(s) == 1 for s in splits_of.values())
    counts = defaultdict(int)
    for s in splits_of.values():
        counts[next(iter(s))] += 1
    assert dict(counts) == {"train": 6, "val": 3, "test": 3}


def test_identities_are_distinguishable_by_their_captions(small: tuple[Path, list[dict]]) -> None:
    _, records = small
    captions: dict[int, set[str]] = defaultdict(set)
    for r in records:
        captions[r["id"]].update(r["captions"])
    ids = sorted(captions)
    for i, a in enumerate(ids):
        for b in ids[i + 1 :]:
            assert not captions[a] & captions[b], (a, b)
    # images of one identity are mostly described differently
    for pid, texts in captions.items():
        assert len(texts) >= 0.75 * 3 * 2, pid


def test_attribute_combinations_are_unique() -> None:
    import random

    people = sample_people(random.Random(1), 300)
    assert len({p.key() for p in people}) == 300
    assert len(set(people)) == 300


def test_same_seed_is_byte_identical(tmp_path: Path) -> None:
    generate_demo_dataset(tmp_path / "a", **SMALL, seed=7)
    generate_demo_dataset(tmp_path / "b", **SMALL, seed=7)
    a, b = _hashes(tmp_path / "a"), _hashes(tmp_path / "b")
    assert a == b
    assert len(a) == 12 * 3 + 1


def test_different_seed_differs(tmp_path: Path) -> None:
    generate_demo_dataset(tmp_path / "a", **SMALL, seed=0)
    generate_demo_dataset(tmp_path / "b", **SMALL, seed=1)
    a, b = _hashes(tmp_path / "a"), _hashes(tmp_path / "b")
    assert a["reid_raw.json"] != b["reid_raw.json"]
    shared = set(a) & set(b)
    assert sum(a[k] != b[k] for k in shared) >= len(shared) - 1


@pytest.mark.parametrize(
    "kwargs",
    [
        {"split_identities": (6, 3, 2)},
        {"split_identities": (6, 3, 4)},
        {"split_identities": (12, 0, 0)},
        {"split_identities": (7, -1, 6)},
        {"num_identities": 0, "split_identities": (0, 0, 0)},
        {"images_per_identity": 0},
        {"captions_per_image": 0},
        {"image_size": (0, 160)},
    ],
)
def test_bad_arguments_raise(tmp_path: Path, kwargs: dict) -> None:
    with pytest.raises(ValueError):
        generate_demo_dataset(tmp_path, **{**SMALL, **kwargs})
    assert not (tmp_path / "reid_raw.json").exists()


def test_json_is_written_last_and_atomically(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def failing_replace(src: str, dst: str) -> None:
        raise OSError("simulated crash while publishing the JSON")

    monkeypatch.setattr(atomic.os, "replace", failing_replace)
    with pytest.raises(OSError, match="simulated crash"):
        generate_demo_dataset(tmp_path, **SMALL)
    # all images were written before the JSON, and nothing looks complete or is left behind
    assert len(list((tmp_path / "imgs").rglob("*.jpg"))) == 12 * 3
    assert not (tmp_path / "reid_raw.json").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["imgs"]


def test_regeneration_removes_a_stale_json_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    generate_demo_dataset(tmp_path, **SMALL)
    assert (tmp_path / "reid_raw.json").exists()

    def failing_render(*args: object, **kwargs: object) -> None:
        raise RuntimeError("simulated crash while drawing")

    monkeypatch.setattr(generator, "render_person", failing_render)
    with pytest.raises(RuntimeError):
        generate_demo_dataset(tmp_path, **SMALL)
    assert not (tmp_path / "reid_raw.json").exists()
