"""Which FAISS index a collection gets, and building it: exact up to a size, IVF-PQ above it.

The choice follows autofaiss (which does not install beside our pins: it pins numpy<2 and pandas<3):
exact inner product (``Flat``) while the collection is small enough to scan and fits the memory
budget; above that an inverted file (about ``2 * sqrt(n)`` lists, a power of two; see ``_nlist``)
whose codes are the most accurate that fit the budget:

1. ``IVF{nlist},PQ{d/4}x4fs,Refine(SQ8)`` -- 4-bit fast-scan PQ picks ``k_factor_rf * k`` candidates,
   which are re-ranked on 8-bit scalar-quantised copies of the vectors (``d + d/8 + 8`` bytes per
   vector: 563 MiB at 1M x 512). The 1M measurement is in benchmarks/RESULTS.md (index_speed.py).
2. ``IVF{nlist},PQ{m}x8np`` with the largest ``m`` (dividing ``d``, at most ``d/8``) that fits
   (``m + 8`` bytes per vector) -- the path to 100M vectors (docs/index-at-scale.md).

A budget that not even ``PQ4x8`` fits is refused with the amount that would fit.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import faiss
import numpy as np
import torch

# timam's scorer and top-k themselves (not re-implemented), so flat search is timam's ranking bit for bit.
from timam.retrieval.ranking import GalleryTopK

FLOAT_KINDS = ("flat", "ivfpq", "hnsw")
BINARY_KINDS = ("binary_flat", "binary_ivf")  # packed hash codes: timam.index.binary_index
KINDS = FLOAT_KINDS + BINARY_KINDS
DEFAULT_FLAT_MAX = 100_000  # exact search at 100k x 512: ~10 ms a query on 2 cores (RESULTS.md)
ID_BYTES = 8  # an int64 row id per vector in the inverted lists
TRAIN_POINTS_PER_LIST = 64  # k-means sample per inverted list (faiss warns below 39)
MIN_POINTS_PER_LIST = 39
KMEANS_ITERATIONS = 10  # FAISS's default is 25; 10 keeps training at 1M within minutes on 2 cores
K_FACTOR_RF = 32  # candidates re-ranked per result; vs 8: +1.5-2 points recall@10 for ~0.1 ms (RESULTS.md)
HNSW_COARSE_FROM = 10_000_000
FLAT_COPIES = 1  # a flat index searched exactly scores its own vectors in place (no second copy)
ADD_CHUNK = 65_536
RANKING_CHUNK = 1024  # queries per product, topk_indices' default chunk_size


@dataclass(frozen=True)
class IndexPlan:
    """A FAISS index to build: ``kind``, the ``index_factory`` string, search-time parameters, bytes."""

    kind: str
    factory: str
    search_params: dict[str, int] = field(default_factory=dict)
    estimated_bytes: int = 0
    train_size: int = 0  # vectors sampled to train the index (0: no training, e.g. flat)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"IndexPlan.kind must be one of {KINDS}, got {self.kind!r}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "factory": self.factory,
            "search_params": dict(self.search_params),
            "estimated_bytes": int(self.estimated_bytes),
            "train_size": int(self.train_size),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> IndexPlan:
        missing = [key for key in ("kind", "factory") if key not in d]
        if missing:
            raise ValueError(f"index plan lacks {missing}: got keys {sorted(d)}")
        return cls(
            kind=str(d["kind"]),
            factory=str(d["factory"]),
            search_params={str(k): int(v) for k, v in dict(d.get("search_params") or {}).items()},
            estimated_bytes=int(d.get("estimated_bytes", 0)),
            train_size=int(d.get("train_size", 0)),
        )


def _nlist(count: int) -> int:
    """About ``2 * sqrt(count)`` inverted lists (2,048 at 1M), a power of two, enough points to train each.

    autofaiss takes 4-16 * sqrt(n); half the low end keeps k-means at 1M under two minutes on two
    cores, and fast-scan codes make the longer lists cheap to scan. From 10M on, 2^16 to 2^18 lists
    with an HNSW coarse quantizer (see :func:`_coarse`), as autofaiss and the FAISS guidelines use.
    """
    target = 2 ** round(math.log2(max(1.0, 2.0 * math.sqrt(count))))
    if count >= HNSW_COARSE_FROM:
        target = min(max(target, 2**16), 2**18)
    while target > 1 and count < MIN_POINTS_PER_LIST * target:
        target //= 2
    return max(1, target)


def _coarse(count: int, nlist: int, dim: int) -> tuple[str, int]:
    """The factory prefix of the coarse quantizer and its bytes (centroids, plus HNSW links when used)."""
    if count >= HNSW_COARSE_FROM:
        return f"IVF{nlist}_HNSW32", nlist * (dim * 4 + 2 * 32 * 4 + 16)
    return f"IVF{nlist}", nlist * dim * 4


def _nprobe(nlist: int) -> int:
    """Lists visited per query: 1/16 of them (128 of 2,048 at 1M), at least 8, at most 256 (or all)."""
    return min(nlist, max(8, min(256, nlist // 16)))


def _pq_sizes(dim: int) -> list[int]:
    """PQ sub-quantiser counts to try, most accurate first: divisors of ``dim`` from ``dim/8`` down to 4.

    Sub-vectors of 8 dimensions or more: FAISS's k-means is ~10x slower per point below that.
    """
    return [m for m in range(max(1, dim // 8), 3, -1) if dim % m == 0] or [1]


def _train_size(count: int, nlist: int, codebook: int) -> int:
    return min(count, max(TRAIN_POINTS_PER_LIST * nlist, MIN_POINTS_PER_LIST * codebook))


def _refined_fastscan_plan(count: int, dim: int, nlist: int) -> IndexPlan | None:
    m = dim // 4
    if dim % 4 or m % 2 or m < 2:
        return None
    coarse, coarse_bytes = _coarse(count, nlist, dim)
    per_vector = m // 2 + dim + ID_BYTES  # 4-bit PQ codes + SQ8 copy + id
    extra = coarse_bytes + 16 * dim * 4 + 2 * dim * 4  # centroids, PQ4 codebooks, SQ ranges
    return IndexPlan(
        kind="ivfpq",
        factory=f"{coarse},PQ{m}x4fs,Refine(SQ8)",
        search_params={"nprobe": _nprobe(nlist), "k_factor_rf": K_FACTOR_RF},
        estimated_bytes=count * per_vector + extra,
        train_size=_train_size(count, nlist, 16),
    )


def _pq8_plan(count: int, dim: int, nlist: int, m: int) -> IndexPlan:
    coarse, coarse_bytes = _coarse(count, nlist, dim)
    return IndexPlan(
        kind="ivfpq",
        factory=f"{coarse},PQ{m}x8np",  # np: no polysemous training (5x the training time, unused)
        search_params={"nprobe": _nprobe(nlist)},
        estimated_bytes=count * (m + ID_BYTES) + coarse_bytes + 256 * dim * 4,  # codes, ids, centroids, codebooks
        train_size=_train_size(count, nlist, 256),
    )


def plan_index(count: int, dim: int, *, memory_budget_bytes: int, flat_max: int = DEFAULT_FLAT_MAX) -> IndexPlan:
    """The index for ``count`` vectors of ``dim`` floats within ``memory_budget_bytes`` (autofaiss's rule).

    Flat (exact) when ``count <= flat_max`` and ``count * dim * 4`` bytes fit (exact search scores the
    vectors in place); otherwise the most accurate IVF code that fits (see the module
    docstring). Raises ``ValueError`` naming the budget that would fit when nothing does.
    """
    if count < 1 or dim < 1:
        raise ValueError(
            f"plan_index needs at least one vector of at least one dimension, got count={count}, dim={dim}"
        )
    if memory_budget_bytes <= 0:
        raise ValueError(f"index.memory_budget must be positive, got {memory_budget_bytes} bytes")
    flat = IndexPlan(kind="flat", factory="Flat", estimated_bytes=FLAT_COPIES * count * dim * 4)
    if count <= flat_max and flat.estimated_bytes <= memory_budget_bytes:
        return flat
    nlist = _nlist(count)
    candidates: list[IndexPlan] = []
    if count > flat_max:  # a small collection that does not fit flat has no room for SQ8 copies either
        refined = _refined_fastscan_plan(count, dim, nlist)
        candidates += [refined] if refined else []
    candidates += [_pq8_plan(count, dim, nlist, m) for m in _pq_sizes(dim)]
    for plan in candidates:
        if plan.estimated_bytes <= memory_budget_bytes:
            return plan
    smallest = min((plan.estimated_bytes for plan in candidates), default=flat.estimated_bytes)
    raise ValueError(
        f"index.memory_budget of {_mb(memory_budget_bytes)} is too small for {count:,} vectors of dimension {dim}: "
        f"the smallest index ({candidates[-1].factory if candidates else 'Flat'}) needs about {_mb(smallest)}. "
        f"Raise index.memory_budget to at least {_mb(smallest)}, or index fewer images."
    )


def _mb(count: int) -> str:
    return f"{count / 2**20:,.1f} MiB"


def parse_bytes(value: int | float | str) -> int:
    """``1073741824``, ``"1GB"``, ``"512MiB"`` or ``"2.5G"`` as bytes (for ``index.memory_budget``)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return int(value)
    text = str(value).strip().upper().replace(" ", "")
    units = {"": 1, "B": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
    number = text.rstrip("BI")
    unit = number[-1:] if number[-1:] in units else ""
    number = number[: len(number) - len(unit)]
    try:
        return int(float(number) * units[unit])
    except ValueError as error:
        raise ValueError(
            f"cannot read {value!r} as a size in bytes (for example 1073741824, '1GB', '512MiB')"
        ) from error


def configure_threads(threads: int | None = None) -> int:
    """Set FAISS's OpenMP threads to ``threads`` (default: the CPUs this process may use); returns it."""
    count = threads if threads and threads > 0 else len(os.sched_getaffinity(0))
    faiss.omp_set_num_threads(count)
    return count


def check_vectors(vectors: np.ndarray, name: str = "vectors", dim: int | None = None) -> np.ndarray:
    """``vectors`` as a C-contiguous 2-D float32 array of finite values (of width ``dim`` when given)."""
    array = np.asarray(vectors)
    if array.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (count x dim), got shape {array.shape}")
    if dim is not None and array.shape[1] != dim:
        raise ValueError(f"{name} have dimension {array.shape[1]}, the index has {dim}")
    array = np.ascontiguousarray(array, dtype=np.float32)
    if not np.isfinite(array).all():
        raise ValueError(f"{name} contain NaN or infinite values")
    return array


def apply_search_params(index: faiss.Index, params: dict[str, int]) -> None:
    """Set search-time parameters (``nprobe``, ``k_factor_rf``, ``efSearch``) on ``index`` and its parts."""
    space = faiss.ParameterSpace()
    for name, value in params.items():
        space.set_index_parameter(index, name, int(value))


def _chunks(count: int, size: int) -> Iterator[tuple[int, int]]:
    for start in range(0, count, size):
        yield start, min(count, start + size)


def build_index(vectors: np.ndarray, plan: IndexPlan, *, seed: int = 0, show_progress: bool = True) -> faiss.Index:
    """A CPU FAISS index of ``plan`` holding ``vectors`` ((n, d) float32, L2-normalised; inner product).

    Trains on ``plan.train_size`` rows sampled with ``seed`` (all rows when smaller), then adds the
    rows in chunks so row ``i`` of ``vectors`` is id ``i``. On a machine with faiss-gpu and CUDA the
    training and adding run on the GPUs when FAISS supports the index there.
    """
    x = check_vectors(vectors)
    if x.shape[0] == 0:
        raise ValueError("build_index needs at least one vector")
    configure_threads()
    index = faiss.index_factory(x.shape[1], plan.factory, faiss.METRIC_INNER_PRODUCT)
    _set_kmeans(index, seed)
    working = _to_gpu(index)
    if not working.is_trained:
        rng = np.random.default_rng(seed)
        size = min(x.shape[0], plan.train_size or x.shape[0])
        sample = x if size == x.shape[0] else x[np.sort(rng.choice(x.shape[0], size, replace=False))]
        working.train(sample)
    bar = _progress(x.shape[0], show_progress)
    for start, stop in _chunks(x.shape[0], ADD_CHUNK):
        working.add(x[start:stop])
        bar.update(stop - start)
    bar.close()
    index = working if working is index else faiss.index_gpu_to_cpu(working)
    apply_search_params(index, plan.search_params)
    return index


def _set_kmeans(index: faiss.Index, seed: int) -> None:
    try:
        ivf = faiss.extract_index_ivf(index)
    except RuntimeError:  # not an IVF index
        return
    ivf.cp.seed = seed
    ivf.cp.niter = KMEANS_ITERATIONS


def _progress(total: int, show: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="adding to the index", unit="vec", disable=not show)


def gpu_available() -> bool:
    """FAISS was built with GPU support and torch sees a CUDA device."""
    if not hasattr(faiss, "index_cpu_to_all_gpus") or faiss.get_num_gpus() < 1:
        return False
    return bool(torch.cuda.is_available())


def _to_gpu(index: faiss.Index) -> faiss.Index:
    """``index`` on all GPUs when :func:`gpu_available` and FAISS supports it there, else ``index``."""
    if not gpu_available():
        return index
    try:
        return faiss.index_cpu_to_all_gpus(index)
    except (RuntimeError, AttributeError):  # e.g. fast-scan PQ or Refine have no GPU version
        return index


def search_index(index: faiss.Index) -> faiss.Index:
    """The index to run queries on: a GPU copy where available (see :func:`_to_gpu`), else ``index``."""
    return _to_gpu(index)


# ----------------------------------------------------------------------------- exact flat search


def sort_results(scores: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row by score descending, ties by lower id, missing hits (id -1) last with score ``-inf``."""
    ids = np.asarray(ids, dtype=np.int64)
    scores = np.where(ids < 0, -np.inf, np.asarray(scores, dtype=np.float32)).astype(np.float32)
    key = np.where(ids < 0, np.iinfo(np.int64).max, ids)
    order = np.lexsort((key, -scores), axis=1) if scores.size else np.zeros(scores.shape, dtype=np.int64)
    return np.take_along_axis(scores, order, 1), np.take_along_axis(ids, order, 1)


class ExactFlatSearch:
    """Top-k of a flat index equal to ``timam.retrieval.ranking.topk_indices(q, vectors, k, normalize=False)``.

    The search runs timam's own scorer and top-k over the flat index's vectors, so the result is
    timam's exact ranking by construction (float32 scores, ties by lower row), not an approximation
    of it: FAISS's flat kernels sum in another order and differ in the last bits, which reorders
    near-ties. The gallery is prepared once and scored in place (``GalleryTopK`` is ``topk_indices``
    with the gallery prepared once); benchmarks/RESULTS.md has the per-query costs.
    """

    def __init__(self, index: faiss.Index) -> None:
        flat: Any = faiss.downcast_index(index)
        if not isinstance(flat, faiss.IndexFlat):
            raise TypeError(f"ExactFlatSearch needs a flat FAISS index, got {type(flat).__name__}")
        self.count, dim = index.ntotal, index.d
        self.index = index  # keeps the vectors (a view into FAISS's memory) alive
        vectors = faiss.rev_swig_ptr(flat.get_xb(), self.count * dim).reshape(self.count, dim)
        self._gallery = (
            GalleryTopK(torch.from_numpy(vectors), chunk_size=RANKING_CHUNK, normalize=False) if self.count else None
        )

    def __call__(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        out_scores = np.full((queries.shape[0], k), -np.inf, dtype=np.float32)
        out_ids = np.full((queries.shape[0], k), -1, dtype=np.int64)
        if self._gallery is None:
            return out_scores, out_ids
        kept = min(k, self.count)
        values, ids = self._gallery.topk(torch.from_numpy(queries), kept, normalize=False)
        out_scores[:, :kept] = values.numpy()
        out_ids[:, :kept] = ids.numpy()
        return out_scores, out_ids
