"""ImageIndexDataset: a versioned folder round trip, the optional load, and the catalog entries."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from kedro.io import DataCatalog
from kedro.io.core import DatasetError, Version

from timam.index.faiss_index import build_index, plan_index
from timam.index.store import ImageIndex, IndexManifest, collection_fingerprint
from timam.io.image_index_dataset import ImageIndexDataset

CHECKPOINT_VERSION = "2026-01-01T00.00.00.000Z"


def tiny_index(count: int = 12, dim: int = 8, seed: int = 0) -> tuple[ImageIndex, np.ndarray]:
    vectors = np.random.default_rng(seed).standard_normal((count, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    rows = pd.DataFrame(
        {
            "path": [f"photos/{i}.jpg" for i in range(count)],
            "size": np.arange(count, dtype=np.int64) + 100,
            "mtime_ns": np.arange(count, dtype=np.int64) * 10**9,
            "caption": [f"photo {i}" for i in range(count)],
        }
    )
    plan = plan_index(count, dim, memory_budget_bytes=2**30)
    manifest = IndexManifest(
        checkpoint_version=CHECKPOINT_VERSION,
        checkpoint_path=None,
        embedding_dim=dim,
        image_count=count,
        collection_fingerprint=collection_fingerprint(rows),
        plan=plan,
        created_at="2026-01-02T00:00:00+00:00",
    )
    index = build_index(vectors, plan, show_progress=False)
    return ImageIndex(index=index, manifest=manifest, rows=rows), vectors


def test_a_saved_version_loads_back_whole_and_names_its_checkpoint_file(tmp_path):
    root = tmp_path / "image_index"
    image_index, vectors = tiny_index()
    ImageIndexDataset(
        filepath=str(root),
        version=Version(None, "2026-01-03T00.00.00.000Z"),
        checkpoint_filepath="data/06_models/demo/model_checkpoint.safetensors",
    ).save(image_index)
    folder = root / "2026-01-03T00.00.00.000Z" / "image_index"
    assert sorted(p.name for p in folder.iterdir()) == ["index.faiss", "manifest.json", "rows.parquet"]
    assert [p.name for p in root.iterdir()] == ["2026-01-03T00.00.00.000Z"]  # no temporary folder left

    loaded = ImageIndexDataset(filepath=str(root), version=Version(None, None)).load()
    assert loaded is not None
    assert loaded.manifest.checkpoint_version == CHECKPOINT_VERSION
    assert loaded.manifest.checkpoint_path == (
        f"data/06_models/demo/model_checkpoint.safetensors/{CHECKPOINT_VERSION}/model_checkpoint.safetensors"
    )
    assert loaded.manifest.plan == image_index.manifest.plan and loaded.manifest.image_count == 12
    pd.testing.assert_frame_equal(loaded.rows, image_index.rows)
    for got, want in zip(loaded.search(vectors[:3], 4), image_index.search(vectors[:3], 4), strict=True):
        np.testing.assert_array_equal(got, want)
    assert loaded.search(vectors[:3], 1)[1][:, 0].tolist() == [0, 1, 2]


def test_the_newest_complete_version_loads_and_a_chosen_one_can(tmp_path):
    root = tmp_path / "image_index"
    first, _ = tiny_index(count=5)
    second, _ = tiny_index(count=7, seed=1)
    ImageIndexDataset(filepath=str(root), version=Version(None, "2026-01-01T00.00.00.000Z")).save(first)
    ImageIndexDataset(filepath=str(root), version=Version(None, "2026-01-02T00.00.00.000Z")).save(second)
    (root / "2026-01-03T00.00.00.000Z" / "image_index").mkdir(parents=True)  # a build killed before its rename
    latest = ImageIndexDataset(filepath=str(root), version=Version(None, None))
    assert latest.load().manifest.image_count == 7 and latest.exists()
    chosen = ImageIndexDataset(filepath=str(root), version=Version("2026-01-01T00.00.00.000Z", None))
    assert chosen.load().manifest.image_count == 5
    with pytest.raises(DatasetError, match=r"2026-01-02T00\.00\.00\.000Z, 2026-01-01T00\.00\.00\.000Z"):
        ImageIndexDataset(filepath=str(root), version=Version("2025-12-31T00.00.00.000Z", None)).load()
    with pytest.raises(DatasetError, match="incomplete"):
        ImageIndexDataset(filepath=str(root), version=Version("2026-01-03T00.00.00.000Z", None)).load()


def test_an_optional_index_with_no_version_loads_as_none_a_required_one_says_how_to_build_it(tmp_path):
    root = tmp_path / "image_index"
    optional = ImageIndexDataset(filepath=str(root), version=Version(None, None), optional=True)
    assert optional.load() is None and not optional.exists()
    with pytest.raises(DatasetError, match=r"No image index under .*kedro run --pipelines index"):
        ImageIndexDataset(filepath=str(root), version=Version(None, None)).load()
    with pytest.raises(DatasetError, match="does not exist"):  # a version asked for is never silently None
        ImageIndexDataset(filepath=str(root), version=Version("2026-01-01T00.00.00.000Z", None), optional=True).load()


def test_the_catalog_entries_save_one_and_read_it_through_the_other(tmp_path):
    filepath = str(tmp_path / "data/07_model_output/demo/image_index")
    entry = {"type": "timam.io.image_index_dataset.ImageIndexDataset", "filepath": filepath, "versioned": True}
    catalog = DataCatalog.from_config({"image_index": entry, "search_index": {**entry, "optional": True}})
    assert catalog.load("search_index") is None
    image_index, _ = tiny_index()
    catalog.save("image_index", image_index)
    again = DataCatalog.from_config({"search_index": {**entry, "optional": True}})
    loaded = again.load("search_index")
    assert loaded is not None and loaded.manifest.collection_fingerprint == image_index.manifest.collection_fingerprint
    assert len(list(Path(filepath).iterdir())) == 1
