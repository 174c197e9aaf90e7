"""Binary image indexes: hash codes searched by Hamming distance, ranked as the evaluation ranks them.

Codes are :func:`timam.retrieval.hamming.pack_codes`' layout: ``(n, K / 8)`` uint8, ``np.packbits``
order, what FAISS's binary indexes take (FAISS's ``d`` is ``K``, in bits). A score is ``-distance``
(float32), so higher ranks first as for every float index, and ties are broken by lower row.

**Exact** (``binary_flat``, FAISS ``IndexBinaryFlat``): FAISS's counting k-NN
(``faiss.knn_hamming(..., variant="mc")``) over the index's own codes, without a copy. It keeps one
list of rows per distance, filled in scan order and cut at ``k``, so its answer is the ``k`` lowest
distances with ties by lower row, the evaluation's order (``topk_indices`` on ``-distance``), from
one scan and no re-ranking. (FAISS 1.15's heap variant, ``IndexBinaryFlat.search``'s default, also
keeps the lower ids, its heap comparing (distance, id); the counting one is faster here: 1.08 against
1.26-1.44 ns per 64-bit code and query on one core.) The tests compare the answer with a numpy brute
force on codes whose ties straddle the ``k``-th place, so a FAISS that changed the order would show.
The scan is split into contiguous row ranges, one per thread (FAISS parallelises over queries only,
so one query would use one core); each range's answer is exact for its range, and merging them by
(distance, row) is exact for the whole.

**Approximate** (``binary_ivf``, ``IndexBinaryIVF``): an inverted file over binary k-means centroids;
a query scans the ``nprobe`` nearest lists with exact distances, then its candidates are ordered by
(distance, row). Chosen over ``IndexBinaryHash`` / ``IndexBinaryMultiHash`` by measurement on codes
drawn like a trained model's (benchmarks/RESULTS.md, "Hamming search"): at 1M 64-bit codes the IVF
reaches recall@10 1.0 scanning ~2% of the codes, while a single 16-bit hash table needs 3 flipped bits
for 0.98 and multi-hash tables cost 8 bytes per code per table.

**Planner** (:func:`plan_binary_index`, the rule of :func:`timam.index.faiss_index.plan_index` for
codes): exact while the collection is at most ``flat_max`` codes (default: :data:`EXACT_SCAN_BYTES`
of codes, 10M at 64 bits) and fits the budget; above it the IVF when its codes and ids fit; else exact
again when the codes alone fit (the IVF needs 8 bytes more per code for its ids); else refused.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import faiss
import numpy as np

from timam.index.faiss_index import ID_BYTES, IndexPlan, configure_threads, sort_results
from timam.retrieval.hamming import code_bytes

EXACT_SCAN_BYTES = 80_000_000  # 10M 64-bit codes: 1.1 ns a code, ~11 ms a query on one core (RESULTS.md)
MAX_NLIST = 4096  # the flat binary quantizer assigns every code to the nearest of nlist centroids
MIN_POINTS_PER_LIST = 39  # below this FAISS's k-means warns
TRAIN_POINTS_PER_LIST = 64
KMEANS_ITERATIONS = 10
LIST_BYTES = 64  # an inverted list's own bookkeeping (two vectors and their sizes)
LIST_SLACK = 1.3  # lists grow by doubling: 1,978 MiB resident for 1,526 MiB of codes and ids at 100M
MIN_PART_ROWS = 262_144  # rows worth a thread in an exact scan: ~0.3 ms, to a hand-over of ~0.05 ms
SCRATCH_BYTES = 2**26  # the counting k-NN's per-call buffer (rows per distance per query) is kept under this
ADD_CHUNK = 1 << 20


def check_codes(codes: Any, bits: int, name: str = "codes") -> np.ndarray:
    """``codes`` as a C-contiguous ``(n, bits / 8)`` uint8 array (one code may be given 1-D)."""
    array = np.asarray(codes)
    array = array[None, :] if array.ndim == 1 else array
    width = code_bytes(bits)
    if array.dtype != np.uint8 or array.ndim != 2 or array.shape[1] != width:
        raise ValueError(
            f"{name} must be packed {bits}-bit codes: uint8 of shape (count, {width}) as "
            f"timam.retrieval.hamming.pack_codes makes them, got {array.dtype} of shape {array.shape}"
        )
    return np.ascontiguousarray(array)


# ----------------------------------------------------------------------------- planning


def default_flat_max(bits: int) -> int:
    """Codes searched exactly by default: :data:`EXACT_SCAN_BYTES` of them (a scan's cost is its bytes)."""
    return EXACT_SCAN_BYTES // code_bytes(bits)


def _nlist(count: int) -> int:
    """About ``sqrt(count)`` lists (1,024 at 1M), a power of two, at most :data:`MAX_NLIST`, 39+ codes each."""
    target = min(MAX_NLIST, 2 ** round(math.log2(max(1.0, math.sqrt(count)))))
    while target > 1 and count < MIN_POINTS_PER_LIST * target:
        target //= 2
    return target


def _nprobe(nlist: int) -> int:
    """Lists scanned per query: 1/64 of them, at least 16 (recall@10 1.0 at 1M, 10M and 100M; RESULTS.md)."""
    return min(nlist, max(16, nlist // 64))


def flat_plan(count: int, bits: int) -> IndexPlan:
    return IndexPlan(kind="binary_flat", factory="BFlat", estimated_bytes=count * code_bytes(bits))


def ivf_plan(count: int, bits: int) -> IndexPlan:
    nlist = _nlist(count)
    width = code_bytes(bits)
    return IndexPlan(
        kind="binary_ivf",
        factory=f"BIVF{nlist}",
        search_params={"nprobe": _nprobe(nlist)},
        estimated_bytes=int(count * (width + ID_BYTES) * LIST_SLACK) + nlist * (width + LIST_BYTES),
        train_size=min(count, TRAIN_POINTS_PER_LIST * nlist),
    )


def plan_binary_index(count: int, bits: int, *, memory_budget_bytes: int, flat_max: int | None = None) -> IndexPlan:
    """The index for ``count`` packed ``bits``-bit codes within ``memory_budget_bytes`` (module docstring's rule).

    ``flat_max``: exact search up to this many codes (None: :func:`default_flat_max`). Raises
    ``ValueError`` naming the budget that would fit when not even the codes do.
    """
    if count < 1:
        raise ValueError(f"plan_binary_index needs at least one code, got count={count}")
    if memory_budget_bytes <= 0:
        raise ValueError(f"index.memory_budget must be positive, got {memory_budget_bytes} bytes")
    limit = default_flat_max(bits) if flat_max is None else flat_max
    flat = flat_plan(count, bits)
    if count <= limit and flat.estimated_bytes <= memory_budget_bytes:
        return flat
    ivf = ivf_plan(count, bits)  # larger than the flat plan: it fits only where the flat one would
    if ivf.estimated_bytes <= memory_budget_bytes:
        return ivf
    if flat.estimated_bytes <= memory_budget_bytes:
        return flat
    raise ValueError(
        f"index.memory_budget of {memory_budget_bytes / 2**20:,.1f} MiB is too small for {count:,} codes of "
        f"{bits} bits: exact search needs {flat.estimated_bytes / 2**20:,.1f} MiB. Raise index.memory_budget to "
        "at least that, or index fewer images."
    )


# ----------------------------------------------------------------------------- building


def build_binary_index(
    codes: np.ndarray, plan: IndexPlan, *, bits: int, seed: int = 0, threads: int | None = None
) -> faiss.IndexBinary:
    """A FAISS binary index of ``plan`` holding ``codes`` (row ``i`` is id ``i``), built on ``threads``
    FAISS threads (default: the CPUs this process may use, as :func:`~timam.index.faiss_index.build_index`).

    An IVF is trained on ``plan.train_size`` codes sampled with ``seed``; a flat index takes all the
    codes in one ``add``, so it holds exactly their bytes (adding in pieces would grow FAISS's
    vector by doubling, a transient second copy).
    """
    if plan.kind not in ("binary_flat", "binary_ivf"):
        raise ValueError(f"build_binary_index builds binary plans, got kind {plan.kind!r}")
    x = check_codes(codes, bits)
    if x.shape[0] == 0:
        raise ValueError("build_binary_index needs at least one code")
    configure_threads(threads)
    index: Any = faiss.index_binary_factory(bits, plan.factory)  # the stubs lack IndexBinaryIVF.cp
    if plan.kind == "binary_flat":
        index.add(x)
        return index
    index.cp.seed = seed
    index.cp.niter = KMEANS_ITERATIONS
    rng = np.random.default_rng(seed)
    size = min(x.shape[0], plan.train_size or x.shape[0])
    index.train(x if size == x.shape[0] else x[np.sort(rng.choice(x.shape[0], size, replace=False))])
    for start in range(0, x.shape[0], ADD_CHUNK):
        index.add(x[start : start + ADD_CHUNK])
    apply_binary_search_params(index, plan.search_params)
    return index


def binary_flat_from_chunks(chunks: Iterable[np.ndarray], count: int, bits: int) -> faiss.IndexBinaryFlat:
    """An exact index of ``count`` codes taken from ``chunks`` in order, holding just their bytes.

    FAISS's code vector is sized once and filled in place: adding chunk by chunk would grow it by
    doubling (a transient copy of everything so far), and one ``add`` of a whole array needs the
    array beside it. For collections streamed from shards or generated in pieces.
    """
    width = code_bytes(bits)
    index: Any = faiss.IndexBinaryFlat(bits)  # the stubs lack IndexBinaryFlat.xb
    index.xb.resize(count * width)
    view = faiss.rev_swig_ptr(index.xb.data(), count * width).reshape(count, width)
    filled = 0
    for chunk in chunks:
        part = check_codes(chunk, bits, f"chunk at row {filled}")
        if filled + len(part) > count:
            raise ValueError(f"the chunks hold more than the {count:,} codes announced")
        view[filled : filled + len(part)] = part
        filled += len(part)
    if filled != count:
        raise ValueError(f"the chunks hold {filled:,} codes, {count:,} were announced")
    index.ntotal = count
    return index


def apply_binary_search_params(index: faiss.IndexBinary, params: dict[str, int]) -> None:
    """Set search-time parameters (``nprobe`` of an IVF, ``nflip`` of a hash index) on ``index``."""
    for name, value in params.items():
        if not hasattr(index, name):
            raise ValueError(f"{type(index).__name__} has no search parameter {name!r} (the plan gives {params})")
        setattr(index, name, int(value))


# ----------------------------------------------------------------------------- searching


class BinarySearch:
    """Top-k of a binary index: ``(scores (q, k) float32 = -distance, rows (q, k) int64)``, ordered by
    distance with ties by lower row; ``-inf`` / ``-1`` past the last hit.

    On a flat index the answer is exact (the module docstring says how); on an IVF it is FAISS's
    candidates in that order. Every FAISS call runs in this search's own threads with one OpenMP
    thread each, and the parallelism is ours: row ranges of an exact scan, blocks of queries for an
    IVF. FAISS's own OpenMP team for a single query left one thread idle at a barrier, and on a busy
    machine waiting for it to be scheduled cost milliseconds per query (RESULTS.md, "Hamming search").
    ``threads``: default FAISS's thread count; ``min_part_rows``: the fewest rows worth a thread.
    """

    def __init__(self, index: faiss.IndexBinary, *, threads: int | None = None, min_part_rows: int = MIN_PART_ROWS):
        self.index = index
        self.bits = int(index.d)
        self.count = int(index.ntotal)
        self.codes: np.ndarray | None = None  # a flat index's codes, searched exactly
        wanted = threads if threads and threads > 0 else faiss.omp_get_max_threads()
        self.threads = wanted
        if isinstance(index, faiss.IndexBinaryFlat):
            # A view of FAISS's own codes (kept alive by self.index): searched without a copy.
            flat: Any = index  # the stubs lack IndexBinaryFlat.xb
            raw = faiss.rev_swig_ptr(flat.xb.data(), self.count * index.code_size)
            self.codes = raw.reshape(self.count, index.code_size)
            self.threads = max(1, min(wanted, self.count // max(1, min_part_rows)))
        self._bounds = np.linspace(0, self.count, self.threads + 1).astype(np.int64)  # an exact scan's row ranges
        # Its threads end when this object is collected (the executor's workers hold it weakly).
        self._pool = ThreadPoolExecutor(self.threads, initializer=faiss.omp_set_num_threads, initargs=(1,))

    def __call__(self, queries: Any, k: int) -> tuple[np.ndarray, np.ndarray]:
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        q = check_codes(queries, self.bits, "queries")
        scores = np.full((q.shape[0], int(k)), -np.inf, dtype=np.float32)
        rows = np.full((q.shape[0], int(k)), -1, dtype=np.int64)
        kept = min(int(k), self.count)
        if kept == 0 or q.shape[0] == 0:
            return scores, rows
        if self.codes is not None:
            distances, ids = self._exact(q, kept)
            scores[:, :kept], rows[:, :kept] = -distances.astype(np.float32), ids
            return scores, rows
        blocks = np.array_split(np.arange(q.shape[0]), min(self.threads, q.shape[0]))
        found = list(self._pool.map(lambda block: self.index.search(q[block], kept), blocks))
        distances, ids = np.vstack([part[0] for part in found]), np.vstack([part[1] for part in found])
        scores[:, :kept], rows[:, :kept] = sort_results(-distances.astype(np.float32), ids)
        return scores, rows

    def _exact(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        ranges = list(zip(self._bounds[:-1].tolist(), self._bounds[1:].tolist(), strict=True))
        parts = list(self._pool.map(lambda bounds: self._scan(q, k, *bounds), ranges))
        if len(parts) == 1:
            return parts[0]
        distances = np.hstack([part[0] for part in parts])
        ids = np.hstack([part[1] for part in parts])
        order = np.lexsort((ids, distances), axis=1)[:, :k]
        return np.take_along_axis(distances, order, 1), np.take_along_axis(ids, order, 1)

    def _scan(self, q: np.ndarray, k: int, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``min(k, stop - start)`` lowest (distance, row) of rows ``start:stop``, in that order."""
        assert self.codes is not None
        kept = min(k, stop - start)
        gallery = self.codes[start:stop]
        # The counting k-NN holds (bits + 1) * k row ids per query: bound the queries per call by that.
        batch = max(1, SCRATCH_BYTES // ((self.bits + 1) * kept * 12))
        distances = np.empty((q.shape[0], kept), dtype=np.int32)
        ids = np.empty((q.shape[0], kept), dtype=np.int64)
        for lo in range(0, q.shape[0], batch):
            d, i = faiss.knn_hamming(q[lo : lo + batch], gallery, kept, variant="mc")
            distances[lo : lo + batch], ids[lo : lo + batch] = d, i + start
        return distances, ids


def recall_under_ties(found: np.ndarray, exact: np.ndarray) -> np.ndarray:
    """Per-query recall@k of an approximate answer when distances tie (how binary indexes are measured).

    ``found``: ``(q, k)`` true Hamming distances of the rows an index returned (distinct rows; a
    negative value is a missing hit); ``exact``: ``(q, k)`` the exact top-k distances, ascending. With
    ``d`` the exact k-th distance, every exact answer holds every row nearer than ``d`` and some
    ``e = #{exact == d}`` of the rows at ``d``, whichever tie order it used. So the recall is the best
    set recall over all exact answers: ``(#{found < d} + min(#{found == d}, e)) / k``. A returned row
    counts when its distance is below the k-th, or equals it while places at that distance remain;
    ``|{found <= d}| / k`` without the cap would give 1 to ten rows at ``d`` when the answer is nine
    rows at 0 and one at ``d``.
    """
    found, exact = np.asarray(found), np.asarray(exact)
    if found.shape != exact.shape or found.ndim != 2 or found.shape[1] < 1:
        raise ValueError(f"found and exact must both be (queries, k), got {found.shape} and {exact.shape}")
    if (exact < 0).any() or (np.diff(exact, axis=1) < 0).any():
        raise ValueError("exact must hold k ascending distances per query (a gallery of at least k codes)")
    kth = exact[:, -1:]
    valid = found >= 0
    nearer = (valid & (found < kth)).sum(axis=1)
    at_kth = np.minimum((found == kth).sum(axis=1), (exact == kth).sum(axis=1))
    return (nearer + at_kth) / exact.shape[1]
