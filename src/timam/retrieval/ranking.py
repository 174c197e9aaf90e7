"""Exact, tie-aware, memory-bounded retrieval ranking metrics (R@K, mAP, mINP).

Why this module exists
----------------------
* **Ties are real.** Identical captions get identical scores (UCM-Captions has 377 distinct
  strings among 1,050 test captions), and the published number then depends on how ties were
  broken: image->text R@1 moved from 3.3 to 33.0 between "ties against" and "ties for" the right
  caption in one measured case. Every metric here is therefore reported under an explicit tie
  rule:

  ``"expected"``
      exact expected value when tied items are put in uniformly random order (McSherry and
      Najork, ECIR 2008), computed in closed form from counts, never by sampling;
  ``"optimistic"`` / ``"pessimistic"``
      ties resolved in favour of / against the relevant items (the bounds of the expected value);
  ``"index"``
      ties broken by gallery index, i.e. the order a stable ``argsort(-score)`` gives, which is
      what older per-query NumPy evaluations report.

* **Exact, not approximate.** Scores are float32 cosine similarities and ties are detected by
  exact equality of those float32 values. All derived quantities are computed from integer
  counts (items scored strictly higher / equal, relevant and irrelevant separately) in float64;
  the expected values use closed forms (harmonic-number differences for AP, hypergeometric
  products for R@K) and, for mINP, an exact finite sum over the position of the last relevant
  item (probabilities via ``lgamma`` in float64, ~1e-10 relative). The tests check every rule
  against enumeration of every permutation of the tied items.

* **Bounded memory, no per-query Python loop.** Queries are processed in chunks of
  ``chunk_size``; the largest temporaries are about two ``chunk_size x gallery`` float32
  buffers plus a packed copy of the gallery and the per-query results. Per chunk the work is one matrix
  product plus vectorised comparisons of the chunk's scores against each query's relevant
  scores (no sort of the rows; cost grows with the number of relevant items per query, and only
  the best one is needed for R@K alone, ``metrics=("R@K",)``). Per-query values are averaged
  once at the end, so results are bitwise independent of ``chunk_size``. Everything runs on the
  device of the inputs (CPU or CUDA). On CPU the many small counting operations run on one
  intra-op thread (``torch.set_num_threads`` is lowered to 1 around them and restored): with
  several threads each small operation waits for all of them, which on a busy machine was 20x
  slower; the matrix products keep every thread.

* **The matrix product dominates.** :func:`bidirectional_metrics` with ``metrics=("R@K",)``
  therefore gets both directions from a single pass over the ``image x text`` scores (text->image
  keeps each text's best relevant score and its ``max(ks)`` highest image scores); with mAP or
  mINP each direction needs its own pass, because full-depth ranks need each text's relevant
  score before its column is counted.

* **Shape-independent float32 scores.** BLAS libraries switch to different kernels for very
  small matrices (on MKL a 1-row product can round differently from the same row inside a big
  product, which can even split exact duplicates). On CPU the products therefore go through
  oneDNN with the gallery packed once (its kernels do not depend on the number of query rows,
  and on the AMD AVX-512 development machine it is about twice as fast as MKL, see
  :class:`_GalleryScorer`); elsewhere they are padded to at least ``_MIN_GEMM_ROWS`` rows on both sides. Either way the
  score of a (query, item) pair -- and hence every metric -- does not depend on ``chunk_size``.
  (On CUDA, cuBLAS may choose shape-dependent algorithms; keep
  ``torch.get_float32_matmul_precision() == "highest"`` so scores stay float32.)

Definitions (per query, averaged over queries, reported in percent): R@K is the hit rate (is any
relevant item within the first K), AP the mean over relevant items of the precision at their
rank, INP = #relevant / rank of the last relevant item. Gallery item ``j`` is relevant to query
``i`` iff ``query_labels[i] == gallery_labels[j]``.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "METRICS",
    "TIE_RULES",
    "bidirectional_metrics",
    "per_query_metrics",
    "ranking_metrics",
    "similarity",
    "topk_indices",
]

TIE_RULES: tuple[str, ...] = ("expected", "optimistic", "pessimistic", "index")
METRICS: tuple[str, ...] = ("R@K", "mAP", "mINP")

# Products with fewer rows than this on either side are zero-padded (see module docstring).
_MIN_GEMM_ROWS = 16
# Counts are summed as float32 0/1 masks (much faster than bool->int reductions); exact below 2**24.
_FLOAT_COUNT_LIMIT = 2**24
# On CPU, comparison masks are built for blocks of about this many floats so they stay in cache,
# and those many small operations run on one intra-op thread: a parallel region per block makes
# every block wait for all threads, which on a busy machine costs a scheduler slice (measured 20x
# slower with two threads than with one when another process held a core).
_CACHE_BLOCK_FLOATS = 1 << 22
_CPU_CACHE_BLOCKING = True


# --------------------------------------------------------------------------------------------
# Scores
# --------------------------------------------------------------------------------------------


def prepare_embeddings(emb: Tensor, normalize: bool, name: str) -> Tensor:
    """2-D contiguous float32 embeddings, L2-normalised when asked."""
    if not isinstance(emb, Tensor) or emb.dim() != 2:
        raise ValueError(f"{name} must be a 2-D tensor (items x dim)")
    emb = emb.to(torch.float32).contiguous()
    if not bool(torch.isfinite(emb).all()):
        raise ValueError(f"{name} contains NaN or infinite values")
    if normalize:
        emb = F.normalize(emb, p=2.0, dim=1)
    return emb


def _pad_rows(x: Tensor) -> Tensor:
    """Zero-pad to at least ``_MIN_GEMM_ROWS`` rows so BLAS takes its regular GEMM path."""
    if x.shape[0] >= _MIN_GEMM_ROWS:
        return x
    pad = x.new_zeros(_MIN_GEMM_ROWS - x.shape[0], x.shape[1])
    return torch.cat([x, pad], dim=0)


def _warn_low_precision(device: torch.device) -> None:
    if device.type == "cuda" and torch.get_float32_matmul_precision() != "highest":
        warnings.warn(
            "float32 matmul precision is not 'highest' (TF32 enabled): scores are not exact float32",
            stacklevel=3,
        )


class _Workspace:
    """Chunk-sized buffers reused across chunks.

    A fresh ``chunk x gallery`` allocation per chunk is returned to the OS when freed and
    page-faults again on the next chunk, which costs about as much as the comparisons themselves.
    """

    def __init__(self) -> None:
        self._flat: dict[str, Tensor] = {}

    def get(self, name: str, rows: int, cols: int, like: Tensor) -> Tensor:
        need = rows * cols
        flat = self._flat.get(name)
        if flat is None or flat.numel() < need or flat.device != like.device:
            flat = torch.empty(need, dtype=torch.float32, device=like.device)
            self._flat[name] = flat
        return flat[:need].view(rows, cols)


def _onednn_usable() -> bool:
    """Whether this torch build has oneDNN's packed-weight linear (the CPU fast path)."""
    if not torch.backends.mkldnn.is_available():
        return False
    ops = torch.ops.mkldnn
    return hasattr(ops, "_reorder_linear_weight") and hasattr(ops, "_linear_pointwise")


_ONEDNN_SCORES = _onednn_usable()


class _GalleryScorer:
    """float32 scores of query chunks against one prepared gallery.

    On CPU the gallery is packed once into oneDNN's blocked layout and every chunk is one
    oneDNN product: on the 2-core AVX-512 development machine that is about twice as fast as
    MKL's ``torch.mm`` (0.36 vs 0.72 s for 5,000 x 25,000 x 512). oneDNN's kernels do not depend
    on the number of query rows (checked down to one row in the tests), so a pair's score is the
    same in every chunk size. Elsewhere (CUDA, or torch without oneDNN) products go through
    ``torch.mm`` with both sides padded to ``_MIN_GEMM_ROWS`` rows, which keeps MKL on one kernel.
    """

    def __init__(self, gallery: Tensor, chunk_size: int = 1024) -> None:
        self.n_gallery = gallery.shape[0]
        self._packed: Tensor | None = None
        self._padded = gallery
        if gallery.device.type == "cpu" and _ONEDNN_SCORES and self.n_gallery > 0:
            self._packed = torch.ops.mkldnn._reorder_linear_weight(gallery, max(1, chunk_size))
        else:
            self._padded = _pad_rows(gallery)

    def __call__(self, query: Tensor, workspace: _Workspace | None = None) -> Tensor:
        if self._packed is not None:
            return torch.ops.mkldnn._linear_pointwise(query, self._packed, None, "none", [], "")
        rows = query.shape[0]
        regular = rows >= _MIN_GEMM_ROWS and self._padded.shape[0] == self.n_gallery
        if workspace is None:
            scores = _pad_rows(query) @ self._padded.T
            return scores if regular else scores[:rows, : self.n_gallery].contiguous()
        out = workspace.get("scores", rows, self.n_gallery, query)
        if regular:
            return torch.mm(query, self._padded.T, out=out)
        return out.copy_((_pad_rows(query) @ self._padded.T)[:rows, : self.n_gallery])


def similarity(query_emb: Tensor, gallery_emb: Tensor, *, normalize: bool = True) -> Tensor:
    """float32 (cosine when ``normalize``) score matrix ``query x gallery`` on the inputs' device.

    Uses the same product as :func:`ranking_metrics`, so scores agree bit for bit.
    """
    q = prepare_embeddings(query_emb, normalize, "query_emb")
    g = prepare_embeddings(gallery_emb, normalize, "gallery_emb").to(q.device)
    _warn_low_precision(q.device)
    return _GalleryScorer(g)(q)


# --------------------------------------------------------------------------------------------
# Top-k with deterministic tie-breaking
# --------------------------------------------------------------------------------------------


def _order_by_score_then_index(values: Tensor, indices: Tensor) -> tuple[Tensor, Tensor]:
    """Sort each row by score descending, ties by gallery index ascending."""
    indices, perm = torch.sort(indices, dim=1, stable=True)
    values = values.gather(1, perm)
    values, perm = torch.sort(values, dim=1, descending=True, stable=True)
    return values, indices.gather(1, perm)


def _topk_chunk(scores: Tensor, k: int) -> tuple[Tensor, Tensor]:
    values, indices = torch.topk(scores, k, dim=1, largest=True, sorted=True)
    kth = values[:, -1:]
    n_ge = (scores >= kth).sum(dim=1)
    tied_rows = (n_ge > k).nonzero().flatten()
    if tied_rows.numel():
        # More items tie with the k-th score than fit: keep the lowest indices among them.
        sub = scores[tied_rows]
        sub_kth = kth[tied_rows]
        above = sub > sub_kth
        n_above = above.sum(dim=1, keepdim=True)
        tied = sub == sub_kth
        keep = above | (tied & (torch.cumsum(tied, dim=1) <= k - n_above))
        cols = keep.nonzero()[:, 1].view(-1, k)
        indices[tied_rows] = cols
        values[tied_rows] = sub.gather(1, cols)
    return _order_by_score_then_index(values, indices)


def topk_indices(
    query_emb: Tensor,
    gallery_emb: Tensor,
    k: int,
    *,
    chunk_size: int = 1024,
    normalize: bool = True,
) -> tuple[Tensor, Tensor]:
    """Top-``k`` gallery items per query: ``(scores, indices)``, both ``queries x k``.

    Rows are ordered by float32 score descending with ties broken by ascending gallery index,
    i.e. exactly the first ``k`` entries of a stable ``argsort(-score)``.
    """
    q = prepare_embeddings(query_emb, normalize, "query_emb")
    g = prepare_embeddings(gallery_emb, normalize, "gallery_emb").to(q.device)
    if not 1 <= k <= g.shape[0]:
        raise ValueError(f"k must be in [1, {g.shape[0]}], got {k}")
    if chunk_size < 1:
        raise ValueError("chunk_size must be >= 1")
    _warn_low_precision(q.device)
    scorer = _GalleryScorer(g, chunk_size)
    out_v, out_i = [], []
    for lo in range(0, q.shape[0], chunk_size):
        v, i = _topk_chunk(scorer(q[lo : lo + chunk_size]), k)
        out_v.append(v)
        out_i.append(i)
    if not out_v:
        return q.new_zeros(0, k), torch.zeros(0, k, dtype=torch.long, device=q.device)
    return torch.cat(out_v), torch.cat(out_i)


# --------------------------------------------------------------------------------------------
# Relevance structure
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Relevance:
    """Relevant gallery items per query as ranges of a label-sorted gallery order."""

    order: Tensor  # gallery indices sorted by label; ascending index within a label
    start: Tensor  # per query: first position in ``order`` of its relevant items
    count: Tensor  # per query: number of relevant items (>= 1)


def check_labels(labels: Tensor, n: int, name: str, device: torch.device) -> Tensor:
    labels = torch.as_tensor(labels, device=device)
    if labels.dim() != 1 or labels.shape[0] != n:
        raise ValueError(f"{name} must be 1-D with {n} entries, got shape {tuple(labels.shape)}")
    if labels.is_floating_point() or labels.is_complex():
        raise TypeError(f"{name} must be an integer tensor, got {labels.dtype}")
    return labels.to(torch.int64)


def _relevance(query_labels: Tensor, gallery_labels: Tensor) -> _Relevance:
    sorted_labels, order = torch.sort(gallery_labels, stable=True)
    start = torch.searchsorted(sorted_labels, query_labels, right=False)
    count = torch.searchsorted(sorted_labels, query_labels, right=True) - start
    missing = (count == 0).nonzero().flatten()
    if missing.numel():
        first = int(missing[0])
        raise ValueError(
            f"query {first} (label {int(query_labels[first])}) has no relevant gallery item"
            f" ({missing.numel()} such queries in total)"
        )
    return _Relevance(order=order, start=start, count=count)


def _relevant_slots(rel: _Relevance, lo: int, hi: int) -> tuple[Tensor, Tensor, Tensor]:
    """Gallery indices of each chunk query's relevant items, padded: ``(idx, valid, count)``."""
    count = rel.count[lo:hi]
    width = int(count.max())
    slot = torch.arange(width, device=count.device)
    valid = slot < count[:, None]
    pos = (rel.start[lo:hi, None] + slot).clamp_(max=rel.order.shape[0] - 1)
    return rel.order[pos], valid, count


# --------------------------------------------------------------------------------------------
# Per-chunk counts
# --------------------------------------------------------------------------------------------


@dataclass
class _SlotCounts:
    """Per query (rows) and relevant item (slots, sorted by score desc then index) counts.

    ``gt``: items (any relevance) scored strictly higher; ``eq``: items scored equal (itself
    included); ``above``: relevant items strictly higher; ``tied_rel``: relevant items tied with
    it (itself included); ``rel_before``: tied relevant items with a smaller gallery index;
    ``irr_before``: tied irrelevant items with a smaller gallery index (only for the index rule).
    """

    gt: Tensor
    eq: Tensor
    above: Tensor
    tied_rel: Tensor
    rel_before: Tensor
    irr_before: Tensor | None
    valid: Tensor
    count: Tensor


def _tie_groups(values: Tensor) -> tuple[Tensor, Tensor]:
    """For rows sorted descending: (#strictly greater in row, size of own tie group)."""
    width = values.shape[1]
    pos = torch.arange(width, device=values.device).expand_as(values)
    differs = values[:, 1:] != values[:, :-1]
    first = torch.cat([torch.ones_like(values[:, :1], dtype=torch.bool), differs], dim=1)
    last = torch.cat([differs, torch.ones_like(values[:, :1], dtype=torch.bool)], dim=1)
    start = torch.cummax(torch.where(first, pos, 0), dim=1).values
    end = torch.where(last, pos, width).flip(1).cummin(dim=1).values.flip(1)
    return start, end - start + 1


@contextmanager
def _one_intra_op_thread() -> Iterator[None]:
    """Run the enclosed torch CPU operations on a single intra-op thread."""
    previous = torch.get_num_threads()
    if previous == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _dense_counts(scores: Tensor, thresholds: Tensor, need_eq: bool, ws: _Workspace) -> tuple[Tensor, Tensor]:
    """#scores > t and #scores == t for each row and each of its threshold columns.

    Counts are row sums of float 0/1 masks (exact below 2**24 items). On CPU the rows are taken
    a few at a time and compared with all their thresholds at once, so the masks stay in cache
    (about 2.5x less CPU time than full-chunk passes); on other devices one full pass per threshold.
    """
    rows, n_gallery = scores.shape
    slots = thresholds.shape[1]
    gt = torch.empty(rows, slots, dtype=torch.float64, device=scores.device)
    eq = torch.zeros_like(gt)
    if n_gallery >= _FLOAT_COUNT_LIMIT:  # float32 sums would no longer be exact
        for k in range(slots):
            t = thresholds[:, k : k + 1]
            gt[:, k] = (scores > t).sum(dim=1).to(torch.float64)
            if need_eq:
                eq[:, k] = (scores == t).sum(dim=1).to(torch.float64)
        return gt, eq
    if scores.device.type == "cpu" and _CPU_CACHE_BLOCKING:
        block = max(1, _CACHE_BLOCK_FLOATS // (slots * n_gallery))
        buf = ws.get("mask", min(block, rows) * slots, n_gallery, scores).view(-1, slots, n_gallery)
        with _one_intra_op_thread():
            for lo in range(0, rows, block):
                hi = min(lo + block, rows)
                s, t, b = scores[lo:hi, None, :], thresholds[lo:hi, :, None], buf[: hi - lo]
                gt[lo:hi] = torch.gt(s, t, out=b).sum(dim=2)
                if need_eq:
                    eq[lo:hi] = torch.ge(s, t, out=b).sum(dim=2) - gt[lo:hi]
        return gt, eq
    buf = ws.get("mask", rows, n_gallery, scores)
    for k in range(slots):
        t = thresholds[:, k : k + 1]
        gt[:, k] = torch.gt(scores, t, out=buf).sum(dim=1)
        if need_eq:
            eq[:, k] = torch.ge(scores, t, out=buf).sum(dim=1) - gt[:, k]
    return gt, eq


def _index_ties(scores: Tensor, thresholds: Tensor, items: Tensor, pairs: Tensor) -> Tensor:
    """Tied items (any relevance) with a smaller gallery index, for the (row, slot) ``pairs``.

    Only pairs where an irrelevant item ties with a relevant one need this; they are few, so
    they are processed as a list (in blocks of at most one chunk of rows).
    """
    out = torch.zeros(thresholds.shape, dtype=torch.float64, device=scores.device)
    rows, slots = pairs.nonzero(as_tuple=True)
    col = torch.arange(scores.shape[1], device=scores.device)
    step = max(1, scores.shape[0])
    for lo in range(0, rows.numel(), step):
        r, k = rows[lo : lo + step], slots[lo : lo + step]
        tied = scores[r] == thresholds[r, k][:, None]
        out[r, k] = (tied & (col < items[r, k][:, None])).sum(dim=1).to(torch.float64)
    return out


def _chunk_counts(
    scores: Tensor,
    items: Tensor,
    valid: Tensor,
    count: Tensor,
    *,
    all_slots: bool,
    need_eq: bool,
    need_index: bool,
    ws: _Workspace,
) -> _SlotCounts:
    """Counts for each relevant item of each query in one score chunk (no loop over queries)."""
    values = scores.gather(1, items).masked_fill(~valid, float("-inf"))
    # Relevant slots arrive in ascending gallery index; a stable sort keeps that among ties.
    values, perm = torch.sort(values, dim=1, descending=True, stable=True)
    items = items.gather(1, perm)
    above, tied_rel = _tie_groups(values)
    rel_before = torch.arange(values.shape[1], device=values.device) - above
    if not all_slots:  # R@K only needs the best-ranked relevant item (slot 0)
        values, items, valid = values[:, :1], items[:, :1], valid[:, :1]
        above, tied_rel, rel_before = above[:, :1], tied_rel[:, :1], rel_before[:, :1]
    above, tied_rel, rel_before = (x.to(torch.float64) for x in (above, tied_rel, rel_before))
    thresholds = torch.where(valid, values, values[:, :1])  # padded slots: harmless duplicate

    gt, eq = _dense_counts(scores, thresholds, need_eq or need_index, ws)

    irr_before = None
    if need_index:  # only where an irrelevant item ties with a relevant one is more work needed
        irrelevant_ties = ((eq - tied_rel) > 0) & valid
        irr_before = _index_ties(scores, thresholds, items, irrelevant_ties) - rel_before
        irr_before = torch.where(irrelevant_ties, irr_before, torch.zeros_like(irr_before))
    return _SlotCounts(gt, eq, above, tied_rel, rel_before, irr_before, valid, count)


# --------------------------------------------------------------------------------------------
# Metrics from counts
# --------------------------------------------------------------------------------------------


def _row_sum(x: Tensor) -> Tensor:
    """Row sums added column by column, so trailing zero padding cannot change the rounding."""
    total = x[:, 0].clone()
    for k in range(1, x.shape[1]):
        total += x[:, k]
    return total


def _harmonic(n: int, device: torch.device) -> Tensor:
    """H[0..n] in float64: H[i] = sum_{j<=i} 1/j."""
    steps = torch.arange(1, n + 1, dtype=torch.float64, device=device)
    return torch.cat([torch.zeros(1, dtype=torch.float64, device=device), torch.cumsum(1.0 / steps, 0)])


def _deterministic_ranks(c: _SlotCounts, rule: str) -> Tensor:
    """1-based rank of each relevant slot under a deterministic tie rule."""
    irrelevant_above = c.gt - c.above
    if rule == "optimistic":
        irr = irrelevant_above
    elif rule == "pessimistic":
        irr = irrelevant_above + (c.eq - c.tied_rel)
    else:  # "index"
        assert c.irr_before is not None
        irr = irrelevant_above + c.irr_before
    return irr + c.above + c.rel_before + 1.0


def _deterministic_metrics(
    c: _SlotCounts, rule: str, ks: Sequence[int], metrics: Sequence[str]
) -> dict[str, Tensor]:
    ranks = _deterministic_ranks(c, rule)
    out: dict[str, Tensor] = {}
    if "R@K" in metrics:
        first = ranks.masked_fill(~c.valid, float("inf")).amin(dim=1)
        for k in ks:
            out[f"R@{k}"] = (first <= k).to(torch.float64)
    m = c.count.to(torch.float64)
    if "mAP" in metrics:
        precision = (c.above + c.rel_before + 1.0) / ranks
        out["mAP"] = _row_sum(torch.where(c.valid, precision, 0.0)) / m
    if "mINP" in metrics:
        out["mINP"] = m / ranks.masked_fill(~c.valid, 0.0).amax(dim=1)
    return out


def _expected_hits(a: Tensor, n: Tensor, r: Tensor, ks: Sequence[int]) -> dict[str, Tensor]:
    """P(first relevant within K) when the first tie group with relevant items is shuffled.

    ``a`` irrelevant items precede the group, which holds ``r`` relevant and ``n`` irrelevant
    items. The first relevant lands at ``a + 1 + X`` with
    ``P(X >= x) = prod_{t<x} (n - t) / (n + r - t)``.
    """
    k_max = max(ks)
    t = torch.arange(k_max, dtype=torch.float64, device=a.device)
    num = (n[:, None] - t).clamp(min=0.0)
    den = (n[:, None] + r[:, None] - t).clamp(min=1.0)
    tail = torch.cumprod(num / den, dim=1)  # tail[:, x-1] = P(X >= x)
    out = {}
    for k in ks:
        x = k - a  # need X <= x - 1
        p_miss = torch.where(
            x <= 0,
            torch.ones_like(a),
            tail.gather(1, (x.clamp(1, k_max) - 1).to(torch.int64)[:, None]).squeeze(1),
        )
        out[f"R@{k}"] = 1.0 - p_miss
    return out


def _expected_precision(
    before: Tensor, rel_before_group: Tensor, size: Tensor, rel: Tensor, harmonic: Tensor
) -> Tensor:
    """Expected precision at one relevant item of a shuffled tie group.

    The group holds ``size`` items, ``rel`` of them relevant, after ``before`` items of which
    ``rel_before_group`` are relevant. Slot p of the group is relevant with probability
    rel/size and then has (p-1)(rel-1)/(size-1) relevant group members before it on average, so
    the expected precision sum of the group divided by ``rel`` is
    ``((h+1) D + (rel-1)/(size-1) * (size - (before+1) D)) / size`` with ``D = H(before+size) -
    H(before)`` and ``h = rel_before_group``.
    """
    before_i = before.to(torch.int64)
    d = harmonic[before_i + size.to(torch.int64)] - harmonic[before_i]
    spread = torch.where(size > 1, (rel - 1.0) / (size - 1.0).clamp(min=1.0), 0.0)
    return ((rel_before_group + 1.0) * d + spread * (size - (before + 1.0) * d)) / size


def _expected_inp(before: Tensor, size: Tensor, rel: Tensor, m: Tensor) -> Tensor:
    """E[m / (before + L)], L = position of the last of ``rel`` relevant among ``size`` shuffled.

    P(L = p) = C(p-1, rel-1) / C(size, rel) for p in [rel, size]; rows without irrelevant ties
    (size == rel) have L = size.
    """
    out = m / (before + size)
    rows = (size > rel).nonzero().flatten()
    if rows.numel() == 0:
        return out
    b, t, r, mm = before[rows], size[rows], rel[rows], m[rows]
    lengths = (t - r + 1).to(torch.int64)
    owner = torch.repeat_interleave(torch.arange(rows.numel(), device=rows.device), lengths)
    offsets = torch.cumsum(lengths, 0) - lengths
    step = torch.arange(owner.numel(), device=rows.device) - offsets[owner]
    p = r[owner] + step.to(torch.float64)
    log_norm = torch.lgamma(t + 1) - torch.lgamma(r + 1) - torch.lgamma(t - r + 1)
    log_choose = torch.lgamma(p) - torch.lgamma(r[owner]) - torch.lgamma(p - r[owner] + 1)
    log_prob = log_choose - log_norm[owner]
    terms = torch.exp(log_prob) * mm[owner] / (b[owner] + p)
    out[rows] = torch.zeros_like(b).index_add_(0, owner, terms)
    return out


def _expected_metrics(
    c: _SlotCounts, ks: Sequence[int], metrics: Sequence[str], harmonic: Tensor
) -> dict[str, Tensor]:
    out: dict[str, Tensor] = {}
    tied_irr = c.eq - c.tied_rel
    if "R@K" in metrics:
        out.update(_expected_hits(c.gt[:, 0], tied_irr[:, 0], c.tied_rel[:, 0], ks))
    m = c.count.to(torch.float64)
    if "mAP" in metrics:
        contrib = _expected_precision(c.gt, c.above, c.eq, c.tied_rel, harmonic)
        out["mAP"] = _row_sum(torch.where(c.valid, contrib, 0.0)) / m
    if "mINP" in metrics:
        last = (c.count - 1)[:, None]
        before, size, rel = (x.gather(1, last).squeeze(1) for x in (c.gt, c.eq, c.tied_rel))
        out["mINP"] = _expected_inp(before, size, rel, m)
    return out


# --------------------------------------------------------------------------------------------
# Public entry points
# --------------------------------------------------------------------------------------------


def check_tie_rules(tie_rules: Sequence[str]) -> tuple[str, ...]:
    """``tie_rules`` as a tuple, after checking it is a non-empty subset of :data:`TIE_RULES`."""
    if not tie_rules or set(tie_rules) - set(TIE_RULES):
        raise ValueError(f"tie_rules must be a non-empty subset of {TIE_RULES}, got {tie_rules!r}")
    return tuple(tie_rules)


def _check_options(
    ks: Sequence[int], tie_rules: Sequence[str], metrics: Sequence[str], chunk_size: int
) -> None:
    if not ks or any(int(k) != k or k < 1 for k in ks):
        raise ValueError(f"ks must be positive integers, got {ks!r}")
    check_tie_rules(tie_rules)
    unknown = set(metrics) - set(METRICS)
    if not metrics or unknown:
        raise ValueError(f"metrics must be a non-empty subset of {METRICS}, got {metrics!r}")
    if chunk_size < 1:
        raise ValueError("chunk_size must be >= 1")


def _metric_keys(ks: Sequence[int], metrics: Sequence[str]) -> list[str]:
    keys = [f"R@{k}" for k in ks] if "R@K" in metrics else []
    return keys + [name for name in ("mAP", "mINP") if name in metrics]


@dataclass(frozen=True)
class _Inputs:
    """Prepared embeddings (float32, normalised if asked, same device) and relevance ranges."""

    query: Tensor
    gallery: Tensor
    query_labels: Tensor
    gallery_labels: Tensor
    relevance: _Relevance


def _inputs(
    query_emb: Tensor, gallery_emb: Tensor, query_labels: Tensor, gallery_labels: Tensor, normalize: bool
) -> _Inputs:
    q = prepare_embeddings(query_emb, normalize, "query_emb")
    device = q.device
    g = prepare_embeddings(gallery_emb, normalize, "gallery_emb").to(device)
    if q.shape[1] != g.shape[1]:
        raise ValueError(f"embedding sizes differ: {q.shape[1]} vs {g.shape[1]}")
    if q.shape[0] == 0 or g.shape[0] == 0:
        raise ValueError("need at least one query and one gallery item")
    ql = check_labels(query_labels, q.shape[0], "query_labels", device)
    gl = check_labels(gallery_labels, g.shape[0], "gallery_labels", device)
    _warn_low_precision(device)
    return _Inputs(q, g, ql, gl, _relevance(ql, gl))


@dataclass(frozen=True)
class _Plan:
    """What to compute: cut-offs, tie rules, metric families and the counts they need."""

    ks: tuple[int, ...]
    tie_rules: tuple[str, ...]
    metrics: tuple[str, ...]
    keys: tuple[str, ...]

    @property
    def all_slots(self) -> bool:  # mAP / mINP need every relevant item, R@K only the best one
        return "mAP" in self.metrics or "mINP" in self.metrics

    @property
    def need_eq(self) -> bool:  # only the optimistic rule can ignore tied irrelevant items
        return bool(set(self.tie_rules) - {"optimistic"})

    @property
    def need_index(self) -> bool:
        return "index" in self.tie_rules


def _plan(ks: Sequence[int], tie_rules: Sequence[str], metrics: Sequence[str], chunk_size: int) -> _Plan:
    ks, tie_rules, metrics = tuple(int(k) for k in ks), tuple(tie_rules), tuple(metrics)
    _check_options(ks, tie_rules, metrics, chunk_size)
    return _Plan(ks, tie_rules, metrics, tuple(_metric_keys(ks, metrics)))


def _per_query(counts: _SlotCounts, plan: _Plan, harmonic: Tensor | None) -> dict[str, Tensor]:
    """``{rule: (metrics x queries) float64}`` for one block of queries."""
    out = {}
    for rule in plan.tie_rules:
        if rule == "expected":
            values = _expected_metrics(counts, plan.ks, plan.metrics, harmonic)
        else:
            values = _deterministic_metrics(counts, rule, plan.ks, plan.metrics)
        out[rule] = torch.stack([values[key] for key in plan.keys])
    return out


def _chunk_values(
    scores: Tensor,
    slots: tuple[Tensor, Tensor, Tensor],
    plan: _Plan,
    all_slots: bool,
    harmonic: Tensor | None,
    ws: _Workspace,
) -> dict[str, Tensor]:
    """Counts and per-query values for one score chunk.

    On CPU this runs on one intra-op thread: it is many small operations (the matrix product,
    which dominates, keeps all threads), see ``_CACHE_BLOCK_FLOATS``.
    """
    items, valid, count = slots
    context = _one_intra_op_thread() if scores.device.type == "cpu" else nullcontext()
    with context:
        counts = _chunk_counts(
            scores,
            items,
            valid,
            count,
            all_slots=all_slots,
            need_eq=plan.need_eq,
            need_index=plan.need_index,
            ws=ws,
        )
        return _per_query(counts, plan, harmonic)


def _summarise(per_query: dict[str, Tensor], plan: _Plan) -> dict[str, dict[str, float]]:
    """Mean over queries in percent (one reduction at the end: independent of chunking)."""
    result = {}
    for rule in plan.tie_rules:
        n = per_query[rule].shape[1]
        sums = per_query[rule].sum(dim=1).tolist()
        result[rule] = {key: v * 100.0 / n for key, v in zip(plan.keys, sums)}
    return result


def _query_block_values(
    inp: _Inputs, plan: _Plan, rows: Tensor | None, chunk_size: int, ws: _Workspace
) -> dict[str, Tensor]:
    """Per-query values for all queries (or the listed ``rows``), chunk by chunk."""
    q, ql = (inp.query, inp.query_labels) if rows is None else (inp.query[rows], inp.query_labels[rows])
    rel = inp.relevance if rows is None else _relevance(ql, inp.gallery_labels)
    n_gallery = inp.gallery.shape[0]
    harmonic = None
    if "expected" in plan.tie_rules and "mAP" in plan.metrics:
        harmonic = _harmonic(n_gallery, q.device)
    scorer = _GalleryScorer(inp.gallery, chunk_size)
    out = {
        rule: torch.empty(len(plan.keys), q.shape[0], dtype=torch.float64, device=q.device)
        for rule in plan.tie_rules
    }
    for lo in range(0, q.shape[0], chunk_size):
        hi = min(lo + chunk_size, q.shape[0])
        scores = scorer(q[lo:hi], ws)
        values = _chunk_values(scores, _relevant_slots(rel, lo, hi), plan, plan.all_slots, harmonic, ws)
        del scores  # the next product allocates its own: keep one chunk of scores alive, not two
        for rule in plan.tie_rules:
            out[rule][:, lo:hi] = values[rule]
    return out


def ranking_metrics(
    query_emb: Tensor,
    gallery_emb: Tensor,
    query_labels: Tensor,
    gallery_labels: Tensor,
    *,
    ks: Sequence[int] = (1, 5, 10),
    tie_rules: Sequence[str] = ("expected",),
    chunk_size: int = 1024,
    normalize: bool = True,
    metrics: Sequence[str] = METRICS,
) -> dict[str, dict[str, float]]:
    """Tie-aware R@K / mAP / mINP (percent) of queries against a gallery.

    Returns ``{rule: {"R@1": .., "R@5": .., "R@10": .., "mAP": .., "mINP": ..}}`` for each rule
    in ``tie_rules`` (only the families listed in ``metrics``; ``("R@K",)`` alone is cheaper).
    Gallery item ``j`` is relevant to query ``i`` iff ``query_labels[i] == gallery_labels[j]``;
    a query without any relevant item raises ``ValueError`` naming it. Memory is bounded by a
    few ``chunk_size x gallery`` float32 buffers; results do not depend on ``chunk_size``.
    """
    plan = _plan(ks, tie_rules, metrics, chunk_size)
    inp = _inputs(query_emb, gallery_emb, query_labels, gallery_labels, normalize)
    return _summarise(_query_block_values(inp, plan, None, chunk_size, _Workspace()), plan)


def per_query_metrics(
    query_emb: Tensor,
    gallery_emb: Tensor,
    query_labels: Tensor,
    gallery_labels: Tensor,
    *,
    ks: Sequence[int] = (1, 5, 10),
    tie_rule: str = "expected",
    chunk_size: int = 1024,
    normalize: bool = True,
    metrics: Sequence[str] = METRICS,
) -> dict[str, Tensor]:
    """Each query's own R@K / AP / INP (fractions in [0, 1], float64) under one tie rule.

    The values :func:`ranking_metrics` averages, for finding the queries a model gets most and
    least right: ``{"R@1": (queries,), ..., "mAP": (queries,), "mINP": (queries,)}``.
    """
    plan = _plan(ks, (tie_rule,), metrics, chunk_size)
    inp = _inputs(query_emb, gallery_emb, query_labels, gallery_labels, normalize)
    values = _query_block_values(inp, plan, None, chunk_size, _Workspace())[tie_rule]
    return dict(zip(plan.keys, values, strict=True))


# --------------------------------------------------------------------------------------------
# Both directions from one score matrix (R@K only)
# --------------------------------------------------------------------------------------------


@dataclass
class _ColumnBest:
    """Running best relevant score per text column over image chunks: value, #ties, first index."""

    value: Tensor
    ties: Tensor
    first: Tensor

    @classmethod
    def empty(cls, n: int, n_images: int, device: torch.device) -> _ColumnBest:
        return cls(
            torch.full((n,), float("-inf"), device=device),
            torch.zeros(n, dtype=torch.float64, device=device),
            torch.full((n,), n_images, dtype=torch.long, device=device),
        )

    def update(self, scores: Tensor, items: Tensor, valid: Tensor, lo: int, n_images: int) -> None:
        """Fold in the relevant images of rows ``lo..lo+len(scores)`` (``items``: texts x slots)."""
        hi = lo + scores.shape[0]
        inside = valid & (items >= lo) & (items < hi)
        if not bool(inside.any()):
            return
        local = (items - lo).clamp(0, scores.shape[0] - 1)
        vals = scores.gather(0, local.T.contiguous()).T.masked_fill(~inside, float("-inf"))
        cmax = vals.amax(dim=1)
        at_max = inside & (vals == cmax[:, None])
        cties = at_max.sum(dim=1).to(torch.float64)
        cfirst = torch.where(at_max, items, n_images).amin(dim=1)
        new = torch.maximum(self.value, cmax)
        keep_old = self.value == new
        take_new = (cmax == new) & (cties > 0)
        self.ties = torch.where(keep_old, self.ties, 0.0) + torch.where(take_new, cties, 0.0)
        self.first = torch.minimum(
            torch.where(keep_old, self.first, n_images), torch.where(take_new, cfirst, n_images)
        )
        self.value = new


def _merge_top(top_v: Tensor, top_i: Tensor, scores: Tensor, lo: int, depth: int) -> tuple[Tensor, Tensor]:
    """Keep the ``depth`` largest scores (and image indices) per text column."""
    v, i = torch.topk(scores, min(depth, scores.shape[0]), dim=0)
    top_v, top_i = torch.cat([top_v, v]), torch.cat([top_i, i + lo])
    if top_v.shape[0] > depth:
        top_v, sel = torch.topk(top_v, depth, dim=0)
        top_i = top_i.gather(0, sel)
    return top_v, top_i


def _column_counts(
    best: _ColumnBest, top_v: Tensor, top_i: Tensor, n_images: int, plan: _Plan, count: Tensor
) -> tuple[_SlotCounts, Tensor]:
    """Text->image R@K counts from the per-column top buffer; also the rows that need a recount.

    All images scored above the best relevant one are in the buffer unless the buffer's last
    (smallest) value is above it -- then at least ``depth >= max(ks)`` images precede it and every
    rule gives a miss. If the last value equals it, tied images may be cut off: recount.
    """
    s = best.value
    complete = top_v.shape[0] == n_images
    boundary = torch.full_like(s, float("-inf")) if complete else top_v[-1]
    above = (top_v > s).sum(dim=0).to(torch.float64)
    tied = top_v == s
    exact = boundary < s
    n_tied = torch.where(exact, tied.sum(dim=0).to(torch.float64) - best.ties, 0.0)
    irr_before = torch.where(exact, (tied & (top_i < best.first)).sum(dim=0).to(torch.float64), 0.0)
    recount = (boundary == s).nonzero().flatten() if plan.need_eq else s.new_zeros(0, dtype=torch.long)
    zeros = torch.zeros_like(above)[:, None]
    counts = _SlotCounts(
        gt=above[:, None],
        eq=(n_tied + best.ties)[:, None],
        above=zeros,
        tied_rel=best.ties[:, None],
        rel_before=zeros,
        irr_before=irr_before[:, None] if plan.need_index else None,
        valid=torch.ones_like(zeros, dtype=torch.bool),
        count=count,
    )
    return counts, recount


def _shared_recall(
    images: _Inputs, texts: _Inputs, plan: _Plan, chunk_size: int
) -> dict[str, dict[str, dict[str, float]]]:
    """R@K both ways from one pass over ``image chunk x all texts`` score blocks.

    Image->text uses the blocks exactly as :func:`ranking_metrics` does. Text->image keeps, per
    text, the running best relevant score and the ``max(ks)`` largest scores over the image
    chunks seen so far, which decides every hit@K exactly (ambiguous ties are recounted).
    """
    ws = _Workspace()
    img, txt = images.query, images.gallery
    n_img, n_txt = img.shape[0], txt.shape[0]
    depth = max(plan.ks)
    t_items, t_valid, t_count = _relevant_slots(texts.relevance, 0, n_txt)
    best = _ColumnBest.empty(n_txt, n_img, img.device)
    top_v = txt.new_zeros(0, n_txt)
    top_i = torch.zeros(0, n_txt, dtype=torch.long, device=img.device)
    i2t = {
        rule: torch.empty(len(plan.keys), n_img, dtype=torch.float64, device=img.device)
        for rule in plan.tie_rules
    }
    scorer = _GalleryScorer(txt, chunk_size)
    for lo in range(0, n_img, chunk_size):
        hi = min(lo + chunk_size, n_img)
        scores = scorer(img[lo:hi], ws)
        values = _chunk_values(scores, _relevant_slots(images.relevance, lo, hi), plan, False, None, ws)
        for rule in plan.tie_rules:
            i2t[rule][:, lo:hi] = values[rule]
        best.update(scores, t_items, t_valid, lo, n_img)
        top_v, top_i = _merge_top(top_v, top_i, scores, lo, depth)
        del scores  # keep one chunk of scores alive, not two
    counts, recount = _column_counts(best, top_v, top_i, n_img, plan, t_count)
    t2i = _per_query(counts, plan, None)
    if recount.numel():
        redo = _query_block_values(texts, plan, recount, chunk_size, ws)
        for rule in plan.tie_rules:
            t2i[rule][:, recount] = redo[rule]
    return {"image_to_text": _summarise(i2t, plan), "text_to_image": _summarise(t2i, plan)}


def bidirectional_metrics(
    image_emb: Tensor,
    text_emb: Tensor,
    image_labels: Tensor,
    text_labels: Tensor,
    *,
    ks: Sequence[int] = (1, 5, 10),
    tie_rules: Sequence[str] = ("expected",),
    chunk_size: int = 1024,
    normalize: bool = True,
    metrics: Sequence[str] = METRICS,
) -> dict[str, dict[str, dict[str, float]]]:
    """:func:`ranking_metrics` in both directions: ``{"image_to_text": .., "text_to_image": ..}``.

    Image->text ranks all texts for each image; text->image ranks the (unique) images for each
    text. With ``metrics=("R@K",)`` both directions come from a single pass over the score
    matrix (the matrix product dominates the cost), otherwise each direction is ranked on its own.
    """
    plan = _plan(ks, tie_rules, metrics, chunk_size)
    images = _inputs(image_emb, text_emb, image_labels, text_labels, normalize)
    texts = _Inputs(
        query=images.gallery,
        gallery=images.query,
        query_labels=images.gallery_labels,
        gallery_labels=images.query_labels,
        relevance=_relevance(images.gallery_labels, images.query_labels),
    )
    if not plan.all_slots:
        return _shared_recall(images, texts, plan, chunk_size)
    ws = _Workspace()
    return {
        "image_to_text": _summarise(_query_block_values(images, plan, None, chunk_size, ws), plan),
        "text_to_image": _summarise(_query_block_values(texts, plan, None, chunk_size, ws), plan),
    }
