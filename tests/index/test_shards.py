"""Sharded embedding on a tiny random model: resume after a crash, reuse, invalidation, writers, bad images."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from PIL import Image

from tests.tiny_model import random_tiny_model
from timam.index import embedding
from timam.index.collection import list_collection
from timam.index.config import CollectionConfig, ShardSpec
from timam.index.merge import MissingShardsError, merge_shards
from timam.index.shards import read_shard_header, shard_path, write_shards
from timam.models.timam import TimamModel

CPU = torch.device("cpu")
VERSION = "2026-01-01T00.00.00.000Z"
SHARD_SIZE = 2


@pytest.fixture(scope="module")
def model() -> TimamModel:
    with pytest.warns(UserWarning, match="RANDOM weights"):
        return random_tiny_model()


def write_images(folder, count: int) -> None:
    """``count`` distinct 32 px images, PNG and JPEG, some in a subfolder."""
    for i in range(count):
        path = folder / ("sub" if i % 3 == 2 else ".") / f"img{i:02d}.{'png' if i % 2 else 'jpg'}"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (32, 32), (37 * i % 256, 255 - 29 * i % 256, 90 + 13 * i)).save(path)


@pytest.fixture
def photos(tmp_path):
    write_images(tmp_path / "photos", 5)  # 3 shards of 2, 2, 1
    return tmp_path / "photos"


def listing(folder):
    return list_collection(CollectionConfig(path=str(folder)))


ONE_WRITER = ShardSpec()


def embed(model, collection, folder, writer=ONE_WRITER):
    return write_shards(
        model,
        collection,
        folder=folder,
        checkpoint_version=VERSION,
        shard_size=SHARD_SIZE,
        writer=writer,
        batch_size=4,
        device=CPU,
        precision="auto",
        show_progress=False,
    )


def merge(collection, folder, writers=None):
    return merge_shards(
        collection, folder, shard_size=SHARD_SIZE, checkpoint_version=VERSION, precision="float32", writers=writers
    )


@pytest.fixture
def calls(monkeypatch):
    """The paths of every embedding call, in order."""
    seen: list[list[str]] = []
    real = embedding.embed_files

    def counting(model, paths, **kwargs):
        seen.append(list(paths))
        return real(model, paths, **kwargs)

    monkeypatch.setattr(embedding, "embed_files", counting)
    return seen


def test_a_crash_after_the_first_shard_resumes_at_the_first_missing_one(model, photos, tmp_path, monkeypatch):
    collection, shards = listing(photos), tmp_path / "shards"
    real = embedding.embed_files
    done = []

    def crash_on_the_second_shard(model, paths, **kwargs):
        if done:
            raise RuntimeError("killed mid-run")
        done.append(paths)
        return real(model, paths, **kwargs)

    monkeypatch.setattr(embedding, "embed_files", crash_on_the_second_shard)
    with pytest.raises(RuntimeError, match="killed mid-run"):
        embed(model, collection, shards)
    assert [p.name for p in sorted(shards.iterdir())] == ["shard-000000.safetensors"]  # no partial file left

    seen: list[list[str]] = []
    monkeypatch.setattr(
        embedding, "embed_files", lambda m, paths, **kw: seen.append(list(paths)) or real(m, paths, **kw)
    )
    resumed = embed(model, collection, shards)
    assert (resumed.reused, resumed.embedded) == ([0], [1, 2])
    assert seen == [collection["path"].tolist()[2:4], collection["path"].tolist()[4:]]

    seen.clear()
    again = embed(model, collection, shards)  # same checkpoint, same files: every shard reused
    assert (again.reused, again.embedded, seen) == ([0, 1, 2], [], [])

    monkeypatch.setattr(embedding, "embed_files", real)
    uninterrupted = merge(collection, embed(model, collection, tmp_path / "fresh").folder)
    merged = merge(collection, shards)
    np.testing.assert_array_equal(merged.vectors, uninterrupted.vectors)
    assert merged.rows.equals(uninterrupted.rows)
    np.testing.assert_allclose(np.linalg.norm(merged.vectors, axis=1), 1.0, rtol=1e-6)


def test_a_changed_file_re_embeds_only_its_shard(model, photos, tmp_path, calls):
    shards = tmp_path / "shards"
    before = merge(listing(photos), embed(model, listing(photos), shards).folder)
    changed = listing(photos)["path"].iloc[3]  # shard 1 (rows 2-3)
    Image.new("RGB", (32, 32), (255, 255, 0)).save(changed)
    os.utime(changed, ns=(1_700_000_000_000_000_000, 1_700_000_000_000_000_000))  # a new mtime, whatever the clock
    calls.clear()
    run = embed(model, listing(photos), shards)
    assert (run.embedded, run.reused) == ([1], [0, 2])
    assert calls == [listing(photos)["path"].tolist()[2:4]]
    after = merge(listing(photos), shards)
    unchanged = [0, 1, 2, 4]
    np.testing.assert_array_equal(after.vectors[unchanged], before.vectors[unchanged])
    assert not np.allclose(after.vectors[3], before.vectors[3])


def test_disjoint_writers_merge_to_what_one_writer_embeds(model, photos, tmp_path, calls):
    collection, shared = listing(photos), tmp_path / "shared"
    first = embed(model, collection, shared, ShardSpec(0, 2))
    assert first.embedded == [0, 2]
    with pytest.raises(MissingShardsError) as missing:
        merge(collection, shared, writers=2)
    message = str(missing.value)
    assert "Index shards 1 of 3 are missing" in message and "writer(s) 1/2 have not finished" in message
    assert 'kedro run --pipelines index_embed --params "index.shard=<i>/2"' in message
    assert "`kedro run --pipelines index` with index.shard unset" in message
    assert embed(model, collection, shared, ShardSpec(1, 2)).embedded == [1]
    alone = merge(collection, embed(model, collection, tmp_path / "alone").folder)
    together = merge(collection, shared)
    np.testing.assert_array_equal(together.vectors, alone.vectors)
    assert together.rows.equals(alone.rows) and together.rows["path"].tolist() == collection["path"].tolist()
    assert sorted(path for call in calls[:3] for path in call) == sorted(collection["path"])  # each image once


def test_bad_images_are_skipped_listed_with_their_reason_and_still_listed_when_reused(model, tmp_path, calls):
    photos = tmp_path / "photos"
    write_images(photos, 3)
    (photos / "empty.jpg").write_bytes(b"")
    (photos / "letter.png").write_text("Dear reader, this is not a picture.")
    good_jpeg = photos / "img00.jpg"
    (photos / "truncated.jpg").write_bytes(good_jpeg.read_bytes()[: good_jpeg.stat().st_size // 2])
    collection = listing(photos)
    run = embed(model, collection, tmp_path / "shards")
    assert run.bad_images == 3 and run.embedded == [0, 1, 2]
    merged = merge(collection, tmp_path / "shards")
    reasons = dict(zip((os.path.basename(p) for p in merged.bad["path"]), merged.bad["reason"], strict=True))
    assert reasons["empty.jpg"] == "zero-byte"
    assert reasons["letter.png"].startswith("unreadable/corrupt: UnidentifiedImageError")
    assert (
        reasons["truncated.jpg"].startswith("unreadable/corrupt:") and "truncated" in reasons["truncated.jpg"].lower()
    )
    assert list(merged.bad.columns) == ["path", "size", "mtime_ns", "reason"]
    assert sorted(os.path.basename(p) for p in merged.rows["path"]) == ["img00.jpg", "img01.png", "img02.jpg"]
    assert len(merged.vectors) == 3
    assert not any(path.endswith("empty.jpg") for call in calls for path in call)  # known bad from its size
    calls.clear()
    rerun = embed(model, collection, tmp_path / "shards")
    assert (rerun.embedded, rerun.bad_images, calls) == ([], 3, [])
    assert merge(collection, tmp_path / "shards").bad.equals(merged.bad)


def test_a_table_row_whose_file_is_gone_is_a_missing_image(model, tmp_path):
    write_images(tmp_path / "photos", 2)
    table = tmp_path / "photos" / "list.csv"
    table.write_text("image_path,caption\nimg00.jpg,a first\ngone.png,a lost one\nimg01.png,a second\n")
    collection = list_collection(CollectionConfig(path=str(table)))
    embed(model, collection, tmp_path / "shards")
    merged = merge(collection, tmp_path / "shards")
    assert merged.bad["reason"].tolist() == ["missing"] and merged.bad["path"].iloc[0].endswith("gone.png")
    assert merged.rows["caption"].tolist() == ["a first", "a second"]


def test_a_shard_records_its_key_and_a_foreign_file_counts_as_missing(model, photos, tmp_path):
    collection, shards = listing(photos), tmp_path / "shards"
    embed(model, collection, shards)
    header = read_shard_header(shard_path(shards, 1))
    assert header is not None and header["checkpoint_version"] == VERSION and len(header["key"]) == 64
    assert header["files"] == [
        [p, int(s), int(m)] for p, s, m in collection.iloc[2:4][["path", "size", "mtime_ns"]].values
    ]
    shard_path(shards, 2).write_bytes(b"not a shard")
    with pytest.raises(MissingShardsError, match="Index shards 2 of 3 are missing"):
        merge(collection, shards)
    assert embed(model, collection, shards).embedded == [2]
    other = write_shards(
        model, collection, folder=shards, checkpoint_version="another", shard_size=SHARD_SIZE,
        writer=ShardSpec(), batch_size=4, device=CPU, precision="auto", show_progress=False,
    )  # fmt: skip
    assert other.embedded == [0, 1, 2]  # another checkpoint's key never matches
