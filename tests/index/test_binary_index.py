"""Binary indexes: exact Hamming top-k ranked as the evaluation ranks (ties by lower row), the IVF's
candidates in that order, the planner, save/load with the image index, and recall@k under ties."""

from __future__ import annotations

import json

import faiss
import numpy as np
import pandas as pd
import pytest
import torch

from timam.index.binary_index import (
    BinarySearch,
    apply_binary_search_params,
    binary_flat_from_chunks,
    build_binary_index,
    default_flat_max,
    plan_binary_index,
    recall_under_ties,
)
from timam.index.faiss_index import plan_index
from timam.index.store import (
    ImageIndex,
    IndexFormatError,
    IndexManifest,
    collection_fingerprint,
    load_image_index,
    save_image_index,
)
from timam.retrieval.hamming import hamming_scores

GIB = 2**30


def tied_codes(n: int, bits: int, seed: int) -> np.ndarray:
    """Codes that differ in 4 bit positions only, on two templates: distances 0..4 apart, ties everywhere."""
    rng = np.random.default_rng(seed)
    templates = rng.integers(0, 2, (2, bits), dtype=np.uint8)
    unpacked = templates[rng.integers(0, 2, n)]
    free = rng.choice(bits, 4, replace=False)
    unpacked[:, free] = rng.integers(0, 2, (n, 4), dtype=np.uint8)
    return np.packbits(unpacked, axis=1)


def clustered_codes(n: int, bits: int, seed: int, clusters: int = 20, flip: float = 0.08) -> np.ndarray:
    """Codes near a few centres with per-bit flips, as a trained hashing model's codes lie."""
    rng = np.random.default_rng(seed)
    centres = rng.integers(0, 2, (clusters, bits), dtype=np.uint8)
    unpacked = centres[rng.integers(0, clusters, n)] ^ (rng.random((n, bits)) < flip).astype(np.uint8)
    return np.packbits(unpacked, axis=1)


def brute_force(queries: np.ndarray, gallery: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Every distance by unpacking the XOR; the k lowest by a stable sort: ties by lower row."""
    distances = np.unpackbits(queries[:, None, :] ^ gallery[None, :, :], axis=2).sum(axis=2)
    order = np.argsort(distances, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(distances, order, 1), order


def flat(codes: np.ndarray, bits: int) -> faiss.IndexBinary:
    return build_binary_index(codes, plan_binary_index(len(codes), bits, memory_budget_bytes=GIB), bits=bits)


@pytest.mark.parametrize(
    ("n", "bits", "threads"), [(1, 8, 1), (7, 16, 3), (500, 16, 1), (500, 16, 3), (3000, 64, 2), (3000, 64, 5)]
)
def test_exact_search_is_the_brute_force_ranking_with_ties_by_lower_row(n, bits, threads):
    gallery = tied_codes(n, bits, seed=n) if bits == 16 else clustered_codes(n, bits, seed=n)
    queries = tied_codes(20, bits, seed=n + 1) if bits == 16 else clustered_codes(20, bits, seed=n + 1)
    queries[0] = gallery[0]  # a query that is in the gallery: its duplicates tie at distance 0
    search = BinarySearch(flat(gallery, bits), threads=threads, min_part_rows=1)  # ranges even of 1 row
    for k in sorted({1, 3, 10, 37, n, n + 5}):
        scores, rows = search(queries, k)
        kept = min(k, n)
        ref_distances, ref_rows = brute_force(queries, gallery, kept)
        np.testing.assert_array_equal(rows[:, :kept], ref_rows)
        np.testing.assert_array_equal(scores[:, :kept], -ref_distances.astype(np.float32))
        assert (rows[:, kept:] == -1).all() and np.isneginf(scores[:, kept:]).all()


def test_the_ranking_is_the_evaluations_on_hamming_scores():
    gallery, queries = tied_codes(400, 32, seed=1), tied_codes(30, 32, seed=2)
    scores = hamming_scores(torch.from_numpy(queries), torch.from_numpy(gallery)).numpy()
    evaluation = np.argsort(-scores, axis=1, kind="stable")[:, :25]  # the engine's "index" order
    found_scores, rows = BinarySearch(flat(gallery, 32), threads=2, min_part_rows=150)(queries, 25)
    np.testing.assert_array_equal(rows, evaluation)
    np.testing.assert_array_equal(found_scores, np.take_along_axis(scores, evaluation, 1))


def test_ties_straddling_the_kth_place_across_thread_ranges_keep_the_lowest_rows():
    gallery, queries = tied_codes(500, 16, seed=3), tied_codes(40, 16, seed=4)
    ref_distances, ref_rows = brute_force(queries, gallery, 10)
    distances = np.unpackbits(queries[:, None, :] ^ gallery[None, :, :], axis=2).sum(axis=2)
    at_kth = distances == ref_distances[:, -1:]
    assert (at_kth.sum(axis=1) > (ref_distances == ref_distances[:, -1:]).sum(axis=1)).all()  # more tied than fit
    assert (at_kth[:, 250:].any(axis=1)).all()  # and tied rows lie in every half of the gallery
    for threads in (1, 2, 4):
        rows = BinarySearch(flat(gallery, 16), threads=threads, min_part_rows=1)(queries, 10)[1]
        np.testing.assert_array_equal(rows, ref_rows)


def test_single_queries_batches_and_one_dimensional_codes_agree():
    gallery, queries = clustered_codes(2000, 64, seed=5), clustered_codes(9, 64, seed=6)
    search = BinarySearch(flat(gallery, 64), threads=2, min_part_rows=500)
    batch = search(queries, 12)
    for i in range(len(queries)):
        one = search(queries[i], 12)
        np.testing.assert_array_equal(one[1][0], batch[1][i])
        np.testing.assert_array_equal(one[0][0], batch[0][i])
    assert search(queries[:0], 5)[0].shape == (0, 5)


def test_the_ivf_returns_true_distances_ordered_by_distance_then_row_with_high_recall():
    gallery, queries = clustered_codes(20_000, 64, seed=7), clustered_codes(60, 64, seed=8)
    plan = plan_binary_index(len(gallery), 64, memory_budget_bytes=GIB, flat_max=1000)
    assert plan.kind == "binary_ivf"
    scores, rows = BinarySearch(build_binary_index(gallery, plan, bits=64, threads=1))(queries, 10)
    assert (rows >= 0).all()
    true = np.unpackbits(queries[:, None, :] ^ gallery[rows], axis=2).sum(axis=2)
    np.testing.assert_array_equal(-scores, true)  # exact distances of the candidates
    distance_then_row = np.lexsort((rows, true), axis=1)
    np.testing.assert_array_equal(distance_then_row, np.broadcast_to(np.arange(10), rows.shape))
    exact = brute_force(queries, gallery, 10)[0]
    assert recall_under_ties(true, exact).mean() >= 0.95


def test_an_ivf_short_of_k_hits_is_padded():
    gallery = clustered_codes(2000, 64, seed=9)
    plan = plan_binary_index(len(gallery), 64, memory_budget_bytes=GIB, flat_max=10)
    index = build_binary_index(gallery, plan, bits=64, threads=1)
    index.nprobe = 1
    scores, rows = BinarySearch(index)(gallery[:3], 1999)
    for query_scores, query_rows in zip(scores, rows, strict=True):
        hits = query_rows >= 0
        assert not hits.all() and hits[: hits.sum()].all()  # the hits first, then the padding
        assert np.isneginf(query_scores[~hits]).all() and (np.diff(query_scores[hits]) <= 0).all()


def test_an_exact_index_filled_from_chunks_holds_the_codes_in_order():
    codes = clustered_codes(2500, 64, seed=15)
    index = binary_flat_from_chunks((codes[i : i + 1000] for i in range(0, 2500, 1000)), 2500, 64)
    assert index.ntotal == 2500
    np.testing.assert_array_equal(BinarySearch(index).codes, codes)
    queries = clustered_codes(5, 64, seed=16)
    np.testing.assert_array_equal(BinarySearch(index)(queries, 9)[1], brute_force(queries, codes, 9)[1])
    with pytest.raises(ValueError, match="hold 2,500 codes, 3,000 were announced"):
        binary_flat_from_chunks([codes], 3000, 64)
    with pytest.raises(ValueError, match="more than the 2,000 codes announced"):
        binary_flat_from_chunks([codes], 2000, 64)
    with pytest.raises(ValueError, match=r"chunk at row 0 must be packed 64-bit codes"):
        binary_flat_from_chunks([codes[:, :4]], 2500, 64)
    with pytest.raises(ValueError, match="IndexBinaryFlat has no search parameter 'nprobe'"):
        apply_binary_search_params(index, {"nprobe": 4})


def test_the_planner_goes_exact_then_ivf_by_count_and_budget():
    assert default_flat_max(64) == 10_000_000 and default_flat_max(128) == 5_000_000
    small = plan_binary_index(1000, 64, memory_budget_bytes=GIB)
    assert (small.kind, small.factory, small.estimated_bytes) == ("binary_flat", "BFlat", 8000)
    at = plan_binary_index(10_000_000, 64, memory_budget_bytes=GIB)
    assert at.kind == "binary_flat"
    above = plan_binary_index(10_000_001, 64, memory_budget_bytes=GIB)
    assert above.kind == "binary_ivf" and above.factory == "BIVF4096" and above.search_params == {"nprobe": 64}
    assert 10_000_001 * 16 * 1.3 <= above.estimated_bytes <= GIB  # codes and int64 ids, in lists grown by doubling
    million = plan_binary_index(1_000_000, 64, memory_budget_bytes=GIB, flat_max=0)
    assert (million.factory, million.search_params, million.train_size) == ("BIVF1024", {"nprobe": 16}, 65536)
    assert plan_binary_index(100, 64, memory_budget_bytes=GIB, flat_max=0).factory == "BIVF2"  # 39+ codes a list


def test_a_budget_too_small_for_the_ivf_keeps_exact_search_and_one_too_small_for_the_codes_is_refused():
    hundred_million = plan_binary_index(100_000_000, 64, memory_budget_bytes=GIB)
    assert hundred_million.kind == "binary_flat" and hundred_million.estimated_bytes == 800_000_000
    ivf_mib = 100_000_000 * 16 * 1.3 / 2**20  # codes and ids in lists grown by doubling: 1,984 MiB
    assert plan_binary_index(100_000_000, 64, memory_budget_bytes=int(0.99 * ivf_mib * 2**20)).kind == "binary_flat"
    assert plan_binary_index(100_000_000, 64, memory_budget_bytes=2 * GIB).kind == "binary_ivf"
    with pytest.raises(ValueError, match=r"too small for 100,000,000 codes of 64 bits.*762\.9 MiB"):
        plan_binary_index(100_000_000, 64, memory_budget_bytes=700 * 2**20)
    with pytest.raises(ValueError, match="multiple of 8"):
        plan_binary_index(10, 12, memory_budget_bytes=GIB)


def _image_index(codes: np.ndarray, bits: int, *, flat_max: int | None = None) -> ImageIndex:
    n = len(codes)
    plan = plan_binary_index(n, bits, memory_budget_bytes=GIB, flat_max=flat_max)
    rows = pd.DataFrame(
        {"path": [f"imgs/{i:05d}.jpg" for i in range(n)], "size": np.full(n, 10), "mtime_ns": np.arange(n)}
    )
    manifest = IndexManifest(
        checkpoint_version="2026-12-20T10.00.00.000Z",
        checkpoint_path="data/06_models/model_checkpoint.safetensors",
        embedding_dim=bits,
        image_count=n,
        collection_fingerprint=collection_fingerprint(rows),
        plan=plan,
        created_at="2026-12-20T11:00:00+00:00",
        code_bits=bits,
    )
    return ImageIndex(index=build_binary_index(codes, plan, bits=bits, threads=1), manifest=manifest, rows=rows)


@pytest.mark.parametrize("flat_max", [None, 100])
def test_a_binary_image_index_round_trips_and_searches_with_packed_codes(tmp_path, flat_max):
    codes = clustered_codes(3000, 64, seed=10)
    image_index = _image_index(codes, 64, flat_max=flat_max)
    save_image_index(tmp_path / "index", image_index)
    stored = json.loads((tmp_path / "index" / "manifest.json").read_text())
    assert stored["code_bits"] == 64 and stored["embedding_dim"] == 64
    loaded = load_image_index(tmp_path / "index")
    assert loaded.manifest == image_index.manifest and isinstance(loaded.index, faiss.IndexBinary)
    if flat_max is not None:
        assert loaded.index.nprobe == image_index.manifest.plan.search_params["nprobe"] > 1
    queries = clustered_codes(15, 64, seed=11)
    before, after = image_index.search(queries, 10), loaded.search(queries, 10)
    np.testing.assert_array_equal(before[1], after[1])
    np.testing.assert_array_equal(before[0], after[0])
    if flat_max is None:
        np.testing.assert_array_equal(after[1], brute_force(queries, codes, 10)[1])
    with pytest.raises(ValueError, match=r"packed 64-bit codes: uint8 of shape \(count, 8\)"):
        loaded.search(np.zeros((2, 64), dtype=np.float32), 5)


def test_a_remote_folder_round_trips_a_binary_index_through_the_generic_upload(tmp_path):
    """fsspec's memory filesystem is remote to the store: the same publish (manifest last) and fetch as s3://."""
    image_index = _image_index(clustered_codes(500, 32, seed=12), 32)
    folder = f"memory://binidx-{tmp_path.name}/image_index"
    save_image_index(folder, image_index)
    loaded = load_image_index(folder)
    assert loaded.manifest == image_index.manifest
    queries = clustered_codes(4, 32, seed=13)
    np.testing.assert_array_equal(loaded.search(queries, 7)[1], image_index.search(queries, 7)[1])


def test_float_manifests_carry_no_code_bits():
    plan = plan_index(10, 8, memory_budget_bytes=GIB)
    manifest = IndexManifest(None, None, 8, 10, "f", plan, "now")
    assert "code_bits" not in manifest.to_dict() and not manifest.is_binary
    assert IndexManifest.from_dict(manifest.to_dict()) == manifest


def test_a_binary_manifest_with_a_float_index_or_another_code_length_is_refused(tmp_path):
    image_index = _image_index(clustered_codes(50, 64, seed=14), 64)
    manifest = image_index.manifest
    floats = faiss.IndexFlatIP(64)
    floats.add(np.zeros((50, 64), dtype=np.float32))
    with pytest.raises(
        IndexFormatError, match=r"the manifest's code_bits and the plan's kind 'binary_flat'.*IndexFlat"
    ):
        save_image_index(tmp_path / "a", ImageIndex(index=floats, manifest=manifest, rows=image_index.rows))
    float_plan = IndexManifest.from_dict({**manifest.to_dict(), "code_bits": None})
    with pytest.raises(
        IndexFormatError,
        match=r"and the FAISS index \(IndexBinaryFlat\) say binary codes but the manifest.s code_bits says float",
    ):
        save_image_index(
            tmp_path / "b", ImageIndex(index=image_index.index, manifest=float_plan, rows=image_index.rows)
        )
    with pytest.raises(IndexFormatError, match="this image index: the manifest's code_bits"):
        ImageIndex(index=floats, manifest=manifest, rows=image_index.rows).search(clustered_codes(1, 64, 0), 3)
    wrong = IndexManifest.from_dict({**manifest.to_dict(), "code_bits": 32})
    with pytest.raises(IndexFormatError, match="32-bit codes but dimension 64"):
        save_image_index(tmp_path / "c", ImageIndex(index=image_index.index, manifest=wrong, rows=image_index.rows))


def test_recall_under_ties_counts_rows_at_the_kth_distance_only_while_places_remain():
    exact = np.array([[0, 0, 1, 1, 1, 2, 2, 2, 2, 3]])
    assert recall_under_ties(exact, exact)[0] == 1.0
    assert recall_under_ties(np.array([[0, 0, 1, 1, 1, 2, 2, 2, 2, 2]]), exact)[0] == 1.0  # another tie order
    assert recall_under_ties(np.array([[3] * 10]), exact)[0] == 0.1  # one place at distance 3, not ten
    assert recall_under_ties(np.array([[0, 1, 1, 1, 2, 2, 2, 2, 3, 3]]), exact)[0] == 0.9  # missed one 0
    assert recall_under_ties(np.array([[0, 0, 1, 1, 1, 2, 2, 2, -1, -1]]), exact)[0] == 0.8  # two missing hits
    assert recall_under_ties(np.array([[4, 4], [1, 3]]), np.array([[0, 4], [1, 1]])).tolist() == [0.5, 0.5]
    with pytest.raises(ValueError, match="ascending"):
        recall_under_ties(np.array([[0, 1]]), np.array([[1, 0]]))
