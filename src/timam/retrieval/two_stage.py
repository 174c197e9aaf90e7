"""Two-stage retrieval: an embedding model's top-k per query, re-scored by an interaction model.

An interaction model (cross-attention over a caption and an image, SCAN-style) scores one pair at
a time, far too slowly to score every pair of a large gallery. At scale it re-ranks the ``k`` best
candidates of a cheap embedding model: the first stage picks the candidates, the second orders
them, and every item outside the top-k stays below all of them, in the first stage's order.

:func:`two_stage_scores` turns that into a ``queries x gallery`` score matrix, which the ranking
metrics (:func:`~timam.retrieval.ranking.score_ranking_metrics`) count like any other: they need
not know that two models, or any model, made it.

Why the scores are ranks. The two models' scores are on unrelated scales, so they cannot simply be
put in one matrix, and shifting the re-scored values above the rest (``rescored + offset``) rounds
them in float32: distinct second-stage scores can become equal and equal ones stay equal only by
luck, so ties -- which every tie rule counts exactly -- would change. Instead each query's items
get dense ranks: the candidates by second-stage score descending (equal scores share a rank), then
the other items by first-stage score descending, continuing the count (equal first-stage scores
share a rank). The score is ``-rank`` as float32, a small integer, exact for ranks below ``2**24``:
the matrix has exactly the order and exactly the ties of the two-stage ranking, so every metric
and every tie rule sees what it would see on the two models' own scores.
"""

from __future__ import annotations

import operator
from collections.abc import Callable

import torch
from torch import Tensor

from timam.retrieval.ranking.topk import _topk_chunk

# ``rescore(query_rows, candidates) -> scores``: query indices ``(c,)``, gallery indices ``(c, k)``
# and the second model's ``(c, k)`` scores of those pairs.
Rescore = Callable[[Tensor, Tensor], Tensor]

# Integers up to 2**24 are exact in float32, so are the negated ranks 1..n_gallery.
_EXACT_RANK_LIMIT = 2**24


def _check_first_stage(first_stage: Tensor) -> Tensor:
    if not isinstance(first_stage, Tensor) or first_stage.dim() != 2:
        shape = tuple(first_stage.shape) if isinstance(first_stage, Tensor) else type(first_stage).__name__
        raise ValueError(f"first_stage must be a 2-D tensor (queries x gallery), got {shape}")
    if first_stage.is_complex():
        raise ValueError(f"first_stage must be real-valued, got {first_stage.dtype}")
    n_gallery = first_stage.shape[1]
    if n_gallery == 0:
        raise ValueError("first_stage must have at least one gallery item (column)")
    if n_gallery > _EXACT_RANK_LIMIT:
        raise ValueError(f"at most {_EXACT_RANK_LIMIT} gallery items (ranks stay exact in float32), got {n_gallery}")
    first = first_stage.to(torch.float32)
    if not bool(torch.isfinite(first).all()):
        raise ValueError("first_stage contains NaN or infinite values")
    return first


def _positive_int(value: int, name: str) -> int:
    try:
        number = operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be a positive integer, got {value!r}") from None
    if isinstance(value, bool) or number < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return number


def _check_k(k: int, n_gallery: int) -> int:
    return min(_positive_int(k, "k"), n_gallery)


def _check_chunk(query_chunk: int) -> int:
    return _positive_int(query_chunk, "query_chunk")


def _candidates(first: Tensor, k: int) -> Tensor:
    """Gallery indices of each row's ``k`` best first-stage scores, ties to the lower index."""
    return _topk_chunk(first, k)[1]


def topk_candidates(first_stage: Tensor, k: int, *, query_chunk: int = 256) -> Tensor:
    """The candidates :func:`two_stage_scores` re-scores: ``(queries, min(k, gallery))`` int64.

    Row ``i`` holds the gallery indices of query ``i``'s ``k`` highest float32 first-stage scores in
    rank order, ties broken by the lower gallery index -- the first ``k`` entries of a stable
    ``argsort(-first_stage[i])``, as :func:`~timam.retrieval.ranking.topk_indices` orders them.
    ``k`` above the gallery size is clipped to it; for callers that batch the second model
    themselves.
    """
    first = _check_first_stage(first_stage)
    k = _check_k(k, first.shape[1])
    query_chunk = _check_chunk(query_chunk)
    parts = [_candidates(first[lo : lo + query_chunk], k) for lo in range(0, first.shape[0], query_chunk)]
    if not parts:
        return torch.zeros(0, k, dtype=torch.long, device=first.device)
    return torch.cat(parts)


def _check_rescored(scores: object, rows: int, k: int, device: torch.device) -> Tensor:
    expected = (rows, k)
    if not isinstance(scores, Tensor) or tuple(scores.shape) != expected:
        got = tuple(scores.shape) if isinstance(scores, Tensor) else type(scores).__name__
        raise ValueError(f"rescore must return a tensor of shape {expected} (query rows x candidates), got {got}")
    if scores.is_complex():
        raise ValueError(f"rescore must return real-valued scores, got {scores.dtype}")
    out = scores.to(device=device, dtype=torch.float32)
    if not bool(torch.isfinite(out).all()):
        raise ValueError("rescore returned NaN or infinite scores")
    return out


def _dense_ranks(sorted_values: Tensor) -> Tensor:
    """1-based dense ranks of rows sorted descending: equal neighbours share a rank (int64)."""
    new = torch.ones_like(sorted_values, dtype=torch.bool)
    new[:, 1:] = sorted_values[:, 1:] != sorted_values[:, :-1]
    return torch.cumsum(new, dim=1)


def _rank_scores(first: Tensor, candidates: Tensor, rescored: Tensor) -> Tensor:
    """``-(dense two-stage rank)`` as float32 for one chunk of queries (see the module docstring)."""
    k = candidates.shape[1]
    values, order = torch.sort(rescored, dim=1, descending=True)
    ranks = _dense_ranks(values)
    out = torch.empty(first.shape, dtype=torch.int64, device=first.device)
    out.scatter_(1, candidates.gather(1, order), ranks)
    if k < first.shape[1]:
        # The candidates (finite scores set to +inf) sort first; the rest follow in first-stage order.
        rest = first.scatter(1, candidates, float("inf"))
        values, order = torch.sort(rest, dim=1, descending=True)
        out.scatter_(1, order[:, k:], ranks[:, -1:] + _dense_ranks(values[:, k:]))
    return out.neg_().to(torch.float32)


def two_stage_scores(
    first_stage: Tensor,
    rescore: Rescore,
    k: int,
    *,
    query_chunk: int = 256,
) -> Tensor:
    """``queries x gallery`` float32 scores of the two-stage ranking: top-``k`` re-scored, rest below.

    ``first_stage`` holds the embedding model's scores (cast to float32, finite). For each chunk of
    ``query_chunk`` queries, the ``k`` best first-stage items per query (ties to the lower gallery
    index, see :func:`topk_candidates`) are passed to ``rescore(query_rows, candidates)``: the
    queries' indices ``(c,)`` and the candidates' gallery indices ``(c, k)`` in first-stage order
    (a copy), on ``first_stage``'s device. It returns the second model's ``(c, k)`` scores of those pairs
    (cast to float32, finite; ``ValueError`` naming the expected shape otherwise).

    The result ranks each query's candidates by second-stage score and all other items below them
    by first-stage score, as exact negated dense ranks: equal scores at either stage stay exactly
    tied, so :func:`~timam.retrieval.ranking.score_ranking_metrics` applies its tie rules to the
    two-stage ranking itself (module docstring: why ranks, not offsets). ``k >= 1``; a ``k`` above
    the gallery size is clipped to it, and then the ranking is the second model's alone.
    """
    first = _check_first_stage(first_stage)
    k = _check_k(k, first.shape[1])
    query_chunk = _check_chunk(query_chunk)
    out = torch.empty_like(first)
    for lo in range(0, first.shape[0], query_chunk):
        hi = min(lo + query_chunk, first.shape[0])
        chunk = first[lo:hi]
        candidates = _candidates(chunk, k)
        rows = torch.arange(lo, hi, device=first.device)
        rescored = _check_rescored(rescore(rows, candidates.clone()), hi - lo, k, first.device)
        out[lo:hi] = _rank_scores(chunk, candidates, rescored)
    return out
