"""ImageIndex search (flat = timam's exact ranking, ties by row), atomic save, checked load, checkpoint match."""

from __future__ import annotations

import json

import faiss
import numpy as np
import pandas as pd
import pytest
import torch

from timam.index.faiss_index import build_index, plan_index
from timam.index.store import (
    INDEX_FORMAT,
    ImageIndex,
    IndexFormatError,
    IndexManifest,
    check_index_checkpoint,
    collection_fingerprint,
    load_image_index,
    save_image_index,
)
from timam.retrieval.ranking import similarity, topk_indices

GIB = 2**30


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def make_index(vectors: np.ndarray, *, flat_max: int = 100_000, version: str | None = "2026-12-01T10.00.00.000Z"):
    n, d = vectors.shape
    plan = plan_index(n, d, memory_budget_bytes=GIB, flat_max=flat_max)
    rows = pd.DataFrame(
        {
            "path": [f"imgs/{i:04d}.jpg" for i in range(n)],
            "size": np.arange(100, 100 + n, dtype=np.int64),
            "mtime_ns": np.full(n, 1_700_000_000_000_000_000, dtype=np.int64),
            "caption": [f"caption {i}" for i in range(n)],
        }
    )
    manifest = IndexManifest(
        checkpoint_version=version,
        checkpoint_path="data/06_models/model_checkpoint.safetensors",
        embedding_dim=d,
        image_count=n,
        collection_fingerprint=collection_fingerprint(rows),
        plan=plan,
        created_at="2026-12-02T07:00:00+00:00",
    )
    return ImageIndex(index=build_index(vectors, plan, show_progress=False), manifest=manifest, rows=rows)


def with_ties(n: int, d: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Vectors with planted exact duplicates (a block of 40 copies, pairs, a triple), and queries."""
    rng = np.random.default_rng(seed)
    x = unit(rng.standard_normal((n, d)))
    if n >= 60:
        x[10:50] = x[5]  # 41 copies of row 5: ties straddle the k-th place for every k <= 41
        x[n - 1] = x[n - 2] = x[7]
        x[3] = x[n // 2]
    queries = unit(rng.standard_normal((30, d)))
    a, b = x[min(5, n - 1)], x[min(7, n - 1)]
    queries[0] = a  # the tied block is the top
    queries[1] = unit((a + 0.01 * b)[None, :])[0]
    queries[2] = b
    return x, queries


def naive_topk(queries: np.ndarray, x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Stable argsort of timam's float32 score matrix: score descending, ties by lower row."""
    scores = similarity(torch.from_numpy(queries), torch.from_numpy(x), normalize=False).numpy()
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, order, 1), order


@pytest.mark.parametrize(("n", "d"), [(1, 8), (7, 8), (300, 32), (2000, 64)])
def test_flat_search_is_timams_exact_ranking_with_ties_by_row(n, d):
    x, queries = with_ties(n, d, seed=n)
    image_index = make_index(x)
    assert image_index.manifest.plan.kind == "flat"
    for k in sorted({1, 3, 10, 45, n, n + 5}):
        scores, rows = image_index.search(queries, k)
        assert scores.shape == rows.shape == (len(queries), k)
        assert scores.dtype == np.float32 and rows.dtype == np.int64
        kept = min(k, n)
        ref_scores, ref_rows = naive_topk(queries, x, kept)
        np.testing.assert_array_equal(rows[:, :kept], ref_rows, err_msg=f"n={n} k={k}")
        np.testing.assert_array_equal(scores[:, :kept], ref_scores, err_msg=f"n={n} k={k}")
        timam_scores, timam_rows = topk_indices(torch.from_numpy(queries), torch.from_numpy(x), kept, normalize=False)
        np.testing.assert_array_equal(rows[:, :kept], timam_rows.numpy())
        assert (rows[:, kept:] == -1).all() and np.isneginf(scores[:, kept:]).all()


def test_ties_straddling_the_kth_place_keep_the_lowest_rows():
    x, queries = with_ties(3000, 32, seed=1)
    x[2900:3000] = x[5]  # 141 copies in all, in two blocks
    image_index = make_index(x)
    for k in (1, 10, 41, 42, 60):
        scores, rows = image_index.search(queries[:1], k)
        assert rows[0].tolist() == [5, *range(10, 50), *range(2900, 3000)][:k]  # the lowest rows, in order
        assert len(set(scores[0].tolist())) == 1
        np.testing.assert_array_equal(rows, naive_topk(queries[:1], x, k)[1])


def test_single_query_and_batches_agree():
    x, queries = with_ties(500, 16, seed=3)
    queries = np.vstack([queries] * 40)  # 1,200 queries: more than one chunk of 1,024
    image_index = make_index(x)
    batch = image_index.search(queries, 5)
    np.testing.assert_array_equal(batch[1], naive_topk(queries, x, 5)[1])
    for i in (0, 2, 11, 1100):
        single = image_index.search(queries[i], 5)  # a 1-D query is one query
        np.testing.assert_array_equal(single[1][0], batch[1][i])
        np.testing.assert_array_equal(single[0][0], batch[0][i])


def test_approximate_search_is_ordered_and_padded():
    rng = np.random.default_rng(4)
    x = unit(rng.standard_normal((3000, 16)))
    image_index = make_index(x, flat_max=100)
    assert image_index.manifest.plan.kind == "ivfpq"
    scores, rows = image_index.search(x[:20], 10)
    assert (rows[:, 0] == np.arange(20)).mean() >= 0.9  # a vector finds itself
    assert (np.diff(scores, axis=1) <= 0).all()
    scores, rows = image_index.search(x[:2], 5000)  # k > n
    assert rows.shape == (2, 5000) and (rows[:, 3000:] == -1).all() and np.isneginf(scores[:, 3000:]).all()


def test_bad_queries_are_refused():
    image_index = make_index(with_ties(100, 8, seed=0)[0])
    with pytest.raises(ValueError, match="k must be a positive integer"):
        image_index.search(np.zeros((1, 8), np.float32), 0)
    with pytest.raises(ValueError, match="dimension 9, the index has 8"):
        image_index.search(np.zeros((1, 9), np.float32), 3)
    with pytest.raises(ValueError, match="NaN"):
        image_index.search(np.full((1, 8), np.nan, np.float32), 3)


@pytest.mark.parametrize("flat_max", [100_000, 100])
def test_save_load_round_trip(tmp_path, flat_max):
    x, queries = with_ties(3000, 16, seed=5)
    image_index = make_index(x, flat_max=flat_max)
    folder = tmp_path / "image_index" / "2026-12-02T07.00.00.000Z" / "image_index"
    save_image_index(folder, image_index)
    assert sorted(p.name for p in folder.iterdir()) == ["index.faiss", "manifest.json", "rows.parquet"]
    assert json.loads((folder / "manifest.json").read_text())["format"] == INDEX_FORMAT
    loaded = load_image_index(folder)
    assert loaded.manifest == image_index.manifest
    pd.testing.assert_frame_equal(loaded.rows, image_index.rows)
    assert loaded.rows["size"].dtype == np.int64 and loaded.rows["mtime_ns"].dtype == np.int64
    for got, want in zip(loaded.search(queries, 10), image_index.search(queries, 10), strict=True):
        np.testing.assert_array_equal(got, want)
    if flat_max == 100:  # search parameters are set again on load
        assert faiss.extract_index_ivf(loaded.index).nprobe == image_index.manifest.plan.search_params["nprobe"]


def test_save_replaces_an_index_whole_and_leaves_nothing_behind(tmp_path, monkeypatch):
    folder = tmp_path / "idx"
    save_image_index(folder, make_index(with_ties(50, 8, seed=0)[0]))
    save_image_index(folder, make_index(with_ties(80, 8, seed=1)[0]))
    assert load_image_index(folder).manifest.image_count == 80
    assert [p.name for p in tmp_path.iterdir()] == ["idx"]  # no temporary or old folders
    # a save that fails half way leaves the previous index as it was
    monkeypatch.setattr(pd.DataFrame, "to_parquet", lambda *a, **k: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError, match="disk full"):
        save_image_index(folder, make_index(with_ties(60, 8, seed=2)[0]))
    assert load_image_index(folder).manifest.image_count == 80
    assert [p.name for p in tmp_path.iterdir()] == ["idx"]


def test_save_refuses_an_inconsistent_index(tmp_path):
    image_index = make_index(with_ties(50, 8, seed=0)[0])
    image_index.rows = image_index.rows.iloc[:49]
    with pytest.raises(IndexFormatError, match="49 rows"):
        save_image_index(tmp_path / "idx", image_index)
    assert not (tmp_path / "idx").exists()


@pytest.fixture
def saved(tmp_path):
    folder = tmp_path / "idx"
    save_image_index(folder, make_index(with_ties(100, 8, seed=0)[0]))
    return folder


def test_missing_folder_or_file_is_named(saved, tmp_path):
    with pytest.raises(FileNotFoundError, match="no image index at .*nowhere"):
        load_image_index(tmp_path / "nowhere")
    (saved / "rows.parquet").unlink()
    with pytest.raises(IndexFormatError, match=rf"{saved}.* is incomplete: rows.parquet missing"):
        load_image_index(saved)


@pytest.mark.parametrize("name", ["index.faiss", "rows.parquet", "manifest.json"])
def test_truncated_files_are_refused_naming_the_file(saved, name):
    path = saved / name
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    with pytest.raises(IndexFormatError, match=str(path)):
        load_image_index(saved)


def test_a_foreign_format_or_mismatched_counts_are_refused(saved):
    manifest = json.loads((saved / "manifest.json").read_text())
    (saved / "manifest.json").write_text(json.dumps({**manifest, "format": "timam-image-index/0"}))
    with pytest.raises(IndexFormatError, match="timam-image-index/0.*expected 'timam-image-index/1'"):
        load_image_index(saved)
    (saved / "manifest.json").write_text(json.dumps({**manifest, "image_count": 101}))
    with pytest.raises(IndexFormatError, match=r"says 101 images, the FAISS index holds 100 vectors and the row"):
        load_image_index(saved)
    del manifest["plan"]
    (saved / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(IndexFormatError, match=r"damaged.*plan"):
        load_image_index(saved)


def test_checkpoint_mismatch_names_both_versions_and_the_fix():
    manifest = make_index(with_ties(20, 8, seed=0)[0], version="2026-12-01T10.00.00.000Z").manifest
    check_index_checkpoint(manifest, "2026-12-01T10.00.00.000Z", index_name="image_index")
    with pytest.raises(ValueError) as info:
        check_index_checkpoint(manifest, "2026-12-02T09.30.00.000Z", index_name="image_index")
    message = str(info.value)
    assert "image_index" in message
    assert "2026-12-01T10.00.00.000Z" in message and "2026-12-02T09.30.00.000Z" in message
    assert "--load-versions model_checkpoint:2026-12-02T09.30.00.000Z" in message  # re-index
    assert "--load-versions model_checkpoint:2026-12-01T10.00.00.000Z" in message  # or query with the index's
    with pytest.raises(ValueError, match="unversioned"):
        check_index_checkpoint(manifest, None, index_name="image_index")


def test_fingerprint_changes_with_any_file():
    rows = make_index(with_ties(20, 8, seed=0)[0]).rows
    base = collection_fingerprint(rows)
    assert base == collection_fingerprint(rows.copy())
    for column, value in (("path", "imgs/other.jpg"), ("size", 1), ("mtime_ns", 5)):
        changed = rows.copy()
        changed.loc[3, column] = value
        assert collection_fingerprint(changed) != base, column
