"""Integer counts per (query, relevant item) from one chunk of scores: who is above, who ties.

Gallery item ``j`` is relevant to query ``i`` iff ``query_labels[i] == gallery_labels[j]``; the
relevant items of each query are a range of a label-sorted gallery order (:class:`_Relevance`).
For each relevant item of each query in a chunk, :func:`_chunk_counts` counts the items scored
strictly higher and equal, relevant and irrelevant separately (:class:`_SlotCounts`) -- by
vectorised comparisons of the chunk's scores against each query's relevant scores, with no sort
of the rows and no per-query Python loop. Ties are exact equality of the float32 scores. The tie
rules turn these counts into metrics (:mod:`timam.retrieval.ranking.tie_rules`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor

from timam.retrieval.ranking.scoring import _Workspace

# Counts are summed as float32 0/1 masks (much faster than bool->int reductions); exact below 2**24.
_FLOAT_COUNT_LIMIT = 2**24
# On CPU, comparison masks are built for blocks of about this many floats so they stay in cache,
# and those many small operations run on one intra-op thread: a parallel region per block makes
# every block wait for all threads, which on a busy machine costs a scheduler slice (measured 20x
# slower with two threads than with one when another process held a core).
_CACHE_BLOCK_FLOATS = 1 << 22
_CPU_CACHE_BLOCKING = True


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
    """``labels`` as 1-D int64 with ``n`` entries on ``device``; ``ValueError``/``TypeError`` otherwise."""
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
