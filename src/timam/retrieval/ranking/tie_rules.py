"""The tie rules: per-query R@K, AP and INP in closed form from the counts of one chunk.

Identical captions get identical scores (UCM-Captions has 377 distinct strings among 1,050 test
captions), and a published number then depends on how ties were broken: image->text R@1 moved from
3.3 to 33.0 between "ties against" and "ties for" the right caption in one measured case. Every
metric is therefore reported under an explicit rule (the names in :data:`TIE_RULES`):

``"expected"``
    the exact expected value when tied items are put in uniformly random order (McSherry, F. and
    Najork, M., "Computing Information Retrieval Performance Measures Efficiently in the Presence
    of Tied Scores", ECIR 2008), computed in closed form from counts, never by sampling;
``"optimistic"`` / ``"pessimistic"``
    ties resolved in favour of / against the relevant items (the bounds of the expected value);
``"index"``
    ties broken by gallery index, i.e. the order a stable ``argsort(-score)`` gives, which is what
    older per-query NumPy evaluations report.

Definitions (per query; averaged over queries and reported in percent by the callers): R@K is the
hit rate (is any relevant item within the first K), AP the mean over relevant items of the
precision at their rank, INP = #relevant / rank of the last relevant item.

Inputs are the integer counts of :class:`~timam.retrieval.ranking.counting._SlotCounts` held in
float64. The deterministic rules compute each relevant item's rank from them. The expected rule
uses hypergeometric products for R@K (:func:`_expected_hits`), harmonic-number differences for AP
(:func:`_expected_precision`) and, for INP, an exact finite sum over the position of the last
relevant item with probabilities via ``lgamma`` in float64, ~1e-10 relative (:func:`_expected_inp`).
The tests check every rule against enumeration of every permutation of the tied items.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, get_args

import torch
from torch import Tensor

from timam.retrieval.ranking.counting import _SlotCounts

TieRule = Literal["expected", "optimistic", "pessimistic", "index"]
TIE_RULES: tuple[str, ...] = get_args(TieRule)
METRICS: tuple[str, ...] = ("R@K", "mAP", "mINP")


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


# --------------------------------------------------------------------------------------------
# Deterministic rules: optimistic, pessimistic, index
# --------------------------------------------------------------------------------------------


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


def _deterministic_metrics(c: _SlotCounts, rule: str, ks: Sequence[int], metrics: Sequence[str]) -> dict[str, Tensor]:
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


# --------------------------------------------------------------------------------------------
# Expected rule: uniformly random order within each tie group
# --------------------------------------------------------------------------------------------


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
    out: dict[str, Tensor] = {}
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
    out[rows] = _segment_sums(terms, owner, step, rows.numel())
    return out


def _segment_sums(values: Tensor, owner: Tensor, position: Tensor, segments: int) -> Tensor:
    """Per-``owner`` sums of ``values`` (``position``: index within its segment), added in order.

    On CPU ``index_add_`` adds sequentially. On CUDA it adds with atomics in no fixed order, so
    float64 sums (and the metrics) could change between runs; there the values are laid out one
    segment per row and added column by column, which gives the CPU's bits on every device.
    """
    if values.device.type == "cpu":
        return torch.zeros(segments, dtype=values.dtype).index_add_(0, owner, values)
    return _padded_segment_sums(values, owner, position, segments)


def _padded_segment_sums(values: Tensor, owner: Tensor, position: Tensor, segments: int) -> Tensor:
    width = int(position.max()) + 1
    padded = values.new_zeros(segments, width).index_put_((owner, position), values)  # no accumulation
    return _row_sum(padded)


def _expected_metrics(
    c: _SlotCounts, ks: Sequence[int], metrics: Sequence[str], harmonic: Tensor | None
) -> dict[str, Tensor]:
    out: dict[str, Tensor] = {}
    tied_irr = c.eq - c.tied_rel
    if "R@K" in metrics:
        out.update(_expected_hits(c.gt[:, 0], tied_irr[:, 0], c.tied_rel[:, 0], ks))
    m = c.count.to(torch.float64)
    if "mAP" in metrics:
        assert harmonic is not None  # the plan computes harmonic numbers whenever mAP is asked for
        contrib = _expected_precision(c.gt, c.above, c.eq, c.tied_rel, harmonic)
        out["mAP"] = _row_sum(torch.where(c.valid, contrib, 0.0)) / m
    if "mINP" in metrics:
        last = (c.count - 1)[:, None]
        before, size, rel = (x.gather(1, last).squeeze(1) for x in (c.gt, c.eq, c.tied_rel))
        out["mINP"] = _expected_inp(before, size, rel, m)
    return out
