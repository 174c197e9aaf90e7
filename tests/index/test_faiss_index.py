"""Which index a collection gets (flat below the threshold, IVF-PQ above, within the memory budget),
and building it."""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from timam.index.faiss_index import (
    DEFAULT_FLAT_MAX,
    IndexPlan,
    build_index,
    check_vectors,
    parse_bytes,
    plan_index,
)

GIB = 2**30


def clustered(count: int, dim: int, clusters: int, seed: int = 0, spread: float = 0.3) -> np.ndarray:
    """Unit vectors in Gaussian clusters (the structure of real embeddings, at toy size)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim))
    x = centres[rng.integers(0, clusters, count)] + spread * rng.standard_normal((count, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_flat_up_to_the_threshold_approximate_above_it():
    at = plan_index(DEFAULT_FLAT_MAX, 512, memory_budget_bytes=GIB)
    assert (at.kind, at.factory, at.search_params) == ("flat", "Flat", {})
    assert at.estimated_bytes == DEFAULT_FLAT_MAX * 512 * 4  # the vectors, scored in place
    above = plan_index(DEFAULT_FLAT_MAX + 1, 512, memory_budget_bytes=GIB)
    assert above.kind == "ivfpq" and above.factory.startswith("IVF")
    assert plan_index(5000, 64, memory_budget_bytes=GIB, flat_max=4999).kind == "ivfpq"
    assert plan_index(5000, 64, memory_budget_bytes=GIB, flat_max=5000).kind == "flat"


def test_a_million_512_d_vectors_get_refined_ivfpq_within_one_gib():
    plan = plan_index(1_000_000, 512, memory_budget_bytes=GIB)
    assert plan.factory.endswith(",Refine(SQ8)") and plan.factory.startswith("IVF")
    assert plan.estimated_bytes <= GIB
    assert plan.estimated_bytes >= 1_000_000 * (512 + 8)  # the SQ8 copy and the ids at least
    nlist = int(plan.factory.split(",")[0].removeprefix("IVF"))
    assert nlist & (nlist - 1) == 0 and 1 <= plan.search_params["nprobe"] <= nlist
    assert plan.search_params["k_factor_rf"] >= 1
    assert 39 * nlist <= plan.train_size <= 1_000_000


@pytest.mark.parametrize("budget_mib", [300, 400, 800, 1600])
def test_the_plan_respects_the_budget_and_takes_the_largest_code_that_fits(budget_mib):
    budget = budget_mib * 2**20
    plan = plan_index(10_000_000, 512, memory_budget_bytes=budget)
    assert plan.kind == "ivfpq" and plan.estimated_bytes <= budget
    m = int(plan.factory.split(",PQ")[1].split("x")[0])
    fixed = plan.estimated_bytes - 10_000_000 * (m + 8)  # centroids and codebooks
    assert 0 < fixed < 200 * 2**20
    larger = [size for size in range(m + 1, 65) if 512 % size == 0]
    if larger:  # the next larger PQ code would not have fitted
        assert 10_000_000 * (larger[0] + 8) + fixed > budget


def test_a_collection_that_does_not_fit_flat_goes_approximate():
    plan = plan_index(50_000, 512, memory_budget_bytes=50 * 2**20)  # flat would need 2 x 97.7 MiB
    assert plan.kind == "ivfpq" and plan.estimated_bytes <= 50 * 2**20


def test_an_impossible_budget_is_refused_with_the_size_that_would_fit():
    with pytest.raises(ValueError, match=r"index\.memory_budget of 1,024\.0 MiB is too small") as info:
        plan_index(100_000_000, 512, memory_budget_bytes=GIB)
    assert "100,000,000 vectors of dimension 512" in str(info.value)
    needed = float(str(info.value).split("at least ")[1].split(" MiB")[0].replace(",", ""))
    assert plan_index(100_000_000, 512, memory_budget_bytes=int(needed * 2**20) + 2**20).kind == "ivfpq"
    with pytest.raises(ValueError, match="must be positive"):
        plan_index(10, 8, memory_budget_bytes=0)
    with pytest.raises(ValueError, match="count=0"):
        plan_index(0, 8, memory_budget_bytes=GIB)


def test_the_estimate_matches_the_built_index():
    x = clustered(12_000, 32, 50)
    refined = plan_index(12_000, 32, memory_budget_bytes=GIB, flat_max=1000)
    pq8 = plan_index(12_000, 32, memory_budget_bytes=400_000, flat_max=1000)
    assert "Refine" in refined.factory and "Refine" not in pq8.factory
    for plan in (refined, pq8):
        index = build_index(x, plan, show_progress=False)
        actual = len(faiss.serialize_index(index))
        assert abs(actual - plan.estimated_bytes) <= 0.15 * actual, (plan.factory, actual, plan.estimated_bytes)


def test_plan_round_trips_through_a_dict():
    plan = plan_index(300_000, 256, memory_budget_bytes=GIB)
    assert IndexPlan.from_dict(plan.to_dict()) == plan
    assert IndexPlan.from_dict({"kind": "flat", "factory": "Flat"}) == IndexPlan("flat", "Flat", {}, 0)
    with pytest.raises(ValueError, match="kind must be one of"):
        IndexPlan(kind="lsh", factory="LSH")
    with pytest.raises(ValueError, match="lacks"):
        IndexPlan.from_dict({"kind": "flat"})


def test_parse_bytes():
    assert parse_bytes(123) == 123
    assert parse_bytes("1GB") == parse_bytes("1 GiB") == parse_bytes("1g") == GIB
    assert parse_bytes("512MiB") == 512 * 2**20
    assert parse_bytes("2.5K") == 2560
    with pytest.raises(ValueError, match="as a size in bytes"):
        parse_bytes("lots")


def test_flat_build_keeps_every_vector_at_its_row():
    x = clustered(500, 16, 5)
    index = build_index(x, plan_index(500, 16, memory_budget_bytes=GIB), show_progress=False)
    assert index.ntotal == 500 and index.metric_type == faiss.METRIC_INNER_PRODUCT
    assert np.array_equal(index.reconstruct_n(0, 500), x)


def test_approximate_index_recall_on_a_clustered_set():
    x = clustered(12_000, 32, 60, seed=1)
    rng = np.random.default_rng(7)
    queries = x[rng.choice(len(x), 200, replace=False)] + 0.05 * rng.standard_normal((200, 32)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    plan = plan_index(len(x), 32, memory_budget_bytes=GIB, flat_max=1000)
    assert plan.kind == "ivfpq"
    index = build_index(x, plan, seed=0, show_progress=False)
    assert faiss.extract_index_ivf(index).nprobe == plan.search_params["nprobe"]  # search params applied
    _, truth = faiss.knn(queries, x, 10, metric=faiss.METRIC_INNER_PRODUCT)
    _, found = index.search(queries, 10)
    recall = np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found, truth, strict=True)])
    assert recall >= 0.9, recall
    again = build_index(x, plan, seed=0, show_progress=False)
    assert np.array_equal(again.search(queries, 10)[1], found)  # the same seed builds the same index


def test_vectors_are_checked():
    with pytest.raises(ValueError, match="2-D"):
        check_vectors(np.zeros(4, np.float32))
    with pytest.raises(ValueError, match="NaN"):
        check_vectors(np.array([[np.nan, 1.0]]))
    with pytest.raises(ValueError, match="dimension 3, the index has 4"):
        check_vectors(np.zeros((2, 3)), "queries", 4)
    assert check_vectors(np.zeros((2, 3), np.float64)).dtype == np.float32
