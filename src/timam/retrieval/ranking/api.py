"""Public one-direction entry points: option checks, the chunk loop, and averaging over queries.

:func:`ranking_metrics` (mean R@K / mAP / mINP in percent per tie rule) and
:func:`per_query_metrics` (each query's own values) check their options into a :class:`_Plan`,
score the queries chunk by chunk, count each chunk, apply the tie rules, and average once at the
end, so results are bitwise independent of ``chunk_size``. The helpers here are shared with
:mod:`timam.retrieval.ranking.bidirectional`. The chunk loop (:func:`_block_values`) takes its
scores from a :data:`_ChunkScores` source, so precomputed score matrices (:mod:`.scored`) are
counted by exactly the same code as embedding products.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass

import torch
from torch import Tensor

from timam.retrieval.ranking.counting import (
    _chunk_counts,
    _one_intra_op_thread,
    _Relevance,
    _relevance,
    _relevant_slots,
    _SlotCounts,
    check_labels,
)
from timam.retrieval.ranking.scoring import _GalleryScorer, _Workspace, prepare_embeddings
from timam.retrieval.ranking.tie_rules import (
    METRICS,
    TIE_RULES,
    _deterministic_metrics,
    _expected_metrics,
    _harmonic,
)


def check_tie_rules(tie_rules: Sequence[str]) -> tuple[str, ...]:
    """``tie_rules`` as a tuple, after checking it is a non-empty subset of :data:`TIE_RULES`."""
    if not tie_rules or set(tie_rules) - set(TIE_RULES):
        raise ValueError(f"tie_rules must be a non-empty subset of {TIE_RULES}, got {tie_rules!r}")
    return tuple(tie_rules)


def _check_options(ks: Sequence[int], tie_rules: Sequence[str], metrics: Sequence[str], chunk_size: int) -> None:
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
    out: dict[str, Tensor] = {}
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
    which dominates, keeps all threads), see ``counting._CACHE_BLOCK_FLOATS``.
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
    result: dict[str, dict[str, float]] = {}
    for rule in plan.tie_rules:
        n = per_query[rule].shape[1]
        sums = per_query[rule].sum(dim=1).tolist()
        result[rule] = {key: v * 100.0 / n for key, v in zip(plan.keys, sums, strict=True)}
    return result


# Scores of query rows ``lo..hi`` against the whole gallery (float32, ``(hi - lo) x gallery``):
# a chunk of embedding products, or a slice of a precomputed score matrix (:mod:`.scored`).
_ChunkScores = Callable[[int, int], Tensor]


def _block_values(
    chunk_scores: _ChunkScores,
    n_query: int,
    n_gallery: int,
    rel: _Relevance,
    plan: _Plan,
    chunk_size: int,
    ws: _Workspace,
    device: torch.device,
) -> dict[str, Tensor]:
    """Per-query values for ``n_query`` queries whose scores ``chunk_scores`` gives chunk by chunk."""
    harmonic: Tensor | None = None
    if "expected" in plan.tie_rules and "mAP" in plan.metrics:
        harmonic = _harmonic(n_gallery, device)
    out = {rule: torch.empty(len(plan.keys), n_query, dtype=torch.float64, device=device) for rule in plan.tie_rules}
    for lo in range(0, n_query, chunk_size):
        hi = min(lo + chunk_size, n_query)
        scores = chunk_scores(lo, hi)
        values = _chunk_values(scores, _relevant_slots(rel, lo, hi), plan, plan.all_slots, harmonic, ws)
        del scores  # the next product allocates its own: keep one chunk of scores alive, not two
        for rule in plan.tie_rules:
            out[rule][:, lo:hi] = values[rule]
    return out


def _query_block_values(
    inp: _Inputs, plan: _Plan, rows: Tensor | None, chunk_size: int, ws: _Workspace
) -> dict[str, Tensor]:
    """Per-query values for all queries (or the listed ``rows``), chunk by chunk."""
    q, ql = (inp.query, inp.query_labels) if rows is None else (inp.query[rows], inp.query_labels[rows])
    rel = inp.relevance if rows is None else _relevance(ql, inp.gallery_labels)
    scorer = _GalleryScorer(inp.gallery)

    def chunk_scores(lo: int, hi: int) -> Tensor:
        return scorer(q[lo:hi], ws)

    return _block_values(chunk_scores, q.shape[0], inp.gallery.shape[0], rel, plan, chunk_size, ws, q.device)


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
