"""The ranking metrics of a precomputed score matrix, for models that score pairs, not embeddings.

An interaction model (cross-attention between a caption and an image, SCAN-style) gives one score
per (caption, image) pair and no embeddings, so :func:`~timam.retrieval.ranking.ranking_metrics`
cannot compute its products. The entry points here take the ``queries x gallery`` score matrix
itself and count it with exactly the code the embedding path uses (:func:`.api._block_values`), so
the metrics do not know, or depend on, which model made the scores: the float32 matrix of
:func:`~timam.retrieval.ranking.similarity` gives bit for bit the results of the embedding entry
points, under every tie rule.

Scores are cast to float32 (ties are exact float32 equality, as everywhere in this package) and
must be finite. The matrix is only read: chunks of ``chunk_size`` rows are counted in turn (the
image->text direction of :func:`bidirectional_score_metrics` copies one chunk of the transpose at a
time), so beyond the matrix the memory is the same few ``chunk_size x gallery`` buffers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from timam.retrieval.ranking.api import _block_values, _Plan, _plan, _summarise
from timam.retrieval.ranking.counting import _Relevance, _relevance, check_labels
from timam.retrieval.ranking.scoring import _Workspace
from timam.retrieval.ranking.tie_rules import METRICS


def _check_scores(scores: Tensor, name: str) -> Tensor:
    """``scores`` as a 2-D, non-empty, finite float32 tensor (the caller's tensor is not modified)."""
    if not isinstance(scores, Tensor) or scores.dim() != 2:
        shape = tuple(scores.shape) if isinstance(scores, Tensor) else type(scores).__name__
        raise ValueError(f"{name} must be a 2-D tensor (queries x gallery), got {shape}")
    if scores.is_complex():
        raise ValueError(f"{name} must be real-valued, got {scores.dtype}")
    if scores.shape[0] == 0 or scores.shape[1] == 0:
        raise ValueError(f"{name} must have at least one query and one gallery item, got {tuple(scores.shape)}")
    scores = scores.to(torch.float32)
    if not bool(torch.isfinite(scores).all()):
        raise ValueError(f"{name} contains NaN or infinite values")
    return scores


def _labels(labels: Tensor, n: int, name: str, what: str, device: torch.device) -> Tensor:
    """``labels`` checked by :func:`check_labels`, with the score matrix named when the count is off."""
    shape = tuple(torch.as_tensor(labels).shape)
    if shape != (n,):
        raise ValueError(f"{name} must be 1-D with {n} entries (one per {what}), got shape {shape}")
    return check_labels(labels, n, name, device)


@dataclass(frozen=True)
class _ScoreInputs:
    """A checked float32 score matrix (``queries x gallery``, possibly a transposed view) and labels."""

    scores: Tensor
    query_labels: Tensor
    gallery_labels: Tensor
    relevance: _Relevance


def _score_inputs(
    scores: Tensor,
    query_labels: Tensor,
    gallery_labels: Tensor,
    *,
    name: str = "scores",
    names: tuple[str, str] = ("query_labels", "gallery_labels"),
    what: tuple[str, str] = ("row (query)", "column (gallery item)"),
) -> _ScoreInputs:
    s = _check_scores(scores, name)
    n_query, n_gallery = s.shape
    ql = _labels(query_labels, n_query, names[0], f"{what[0]} of {name} {tuple(s.shape)}", s.device)
    gl = _labels(gallery_labels, n_gallery, names[1], f"{what[1]} of {name} {tuple(s.shape)}", s.device)
    return _ScoreInputs(s, ql, gl, _relevance(ql, gl))


def _score_values(inp: _ScoreInputs, plan: _Plan, chunk_size: int, ws: _Workspace) -> dict[str, Tensor]:
    """Per-query values of every row of ``inp.scores``, chunk by chunk (the embedding path's loop)."""
    scores = inp.scores

    def chunk_scores(lo: int, hi: int) -> Tensor:
        return scores[lo:hi].contiguous()  # a view when ``scores`` is contiguous, else one chunk's copy

    n_query, n_gallery = scores.shape
    return _block_values(chunk_scores, n_query, n_gallery, inp.relevance, plan, chunk_size, ws, scores.device)


def score_ranking_metrics(
    scores: Tensor,
    query_labels: Tensor,
    gallery_labels: Tensor,
    *,
    ks: Sequence[int] = (1, 5, 10),
    tie_rules: Sequence[str] = ("expected",),
    chunk_size: int = 1024,
    metrics: Sequence[str] = METRICS,
) -> dict[str, dict[str, float]]:
    """:func:`~timam.retrieval.ranking.ranking_metrics` of a ``queries x gallery`` score matrix.

    ``scores[i, j]`` is the score of gallery item ``j`` for query ``i`` (higher ranks first); it is
    cast to float32 and must be finite, 2-D and match the labels (``ValueError`` otherwise). Returns
    ``{rule: {"R@1": .., "mAP": .., "mINP": ..}}`` in percent, as ``ranking_metrics`` does; with
    ``scores = similarity(query_emb, gallery_emb)`` the two agree bit for bit.
    """
    plan = _plan(ks, tie_rules, metrics, chunk_size)
    inp = _score_inputs(scores, query_labels, gallery_labels)
    return _summarise(_score_values(inp, plan, chunk_size, _Workspace()), plan)


def per_query_score_metrics(
    scores: Tensor,
    query_labels: Tensor,
    gallery_labels: Tensor,
    *,
    ks: Sequence[int] = (1, 5, 10),
    tie_rule: str = "expected",
    chunk_size: int = 1024,
    metrics: Sequence[str] = METRICS,
) -> dict[str, Tensor]:
    """:func:`~timam.retrieval.ranking.per_query_metrics` of a ``queries x gallery`` score matrix.

    Each query's own R@K / AP / INP (fractions in [0, 1], float64, ``(queries,)`` each) under one
    tie rule: the values :func:`score_ranking_metrics` averages.
    """
    plan = _plan(ks, (tie_rule,), metrics, chunk_size)
    inp = _score_inputs(scores, query_labels, gallery_labels)
    values = _score_values(inp, plan, chunk_size, _Workspace())[tie_rule]
    return dict(zip(plan.keys, values, strict=True))


def bidirectional_score_metrics(
    text_to_image_scores: Tensor,
    image_labels: Tensor,
    text_labels: Tensor,
    *,
    ks: Sequence[int] = (1, 5, 10),
    tie_rules: Sequence[str] = ("expected",),
    chunk_size: int = 1024,
    metrics: Sequence[str] = METRICS,
) -> dict[str, dict[str, dict[str, float]]]:
    """:func:`~timam.retrieval.ranking.bidirectional_metrics` of one ``captions x images`` score matrix.

    ``text_to_image_scores[t, i]`` is the score of image ``i`` for caption ``t``: text->image ranks
    its rows, image->text ranks the rows of its transpose (one chunk copied at a time). Returns
    ``{"image_to_text": {rule: {key: ..}}, "text_to_image": ..}``; with the scores of
    ``similarity(text_emb, image_emb)`` it equals ``bidirectional_metrics(image_emb, text_emb, ...)``
    (each direction is counted on its own: without a matrix product to share, one pass per
    direction costs no more than a shared one).
    """
    plan = _plan(ks, tie_rules, metrics, chunk_size)
    texts = _score_inputs(
        text_to_image_scores,
        text_labels,
        image_labels,
        name="text_to_image_scores",
        names=("text_labels", "image_labels"),
        what=("row (caption)", "column (image)"),
    )
    images = _ScoreInputs(
        scores=texts.scores.T,
        query_labels=texts.gallery_labels,
        gallery_labels=texts.query_labels,
        relevance=_relevance(texts.gallery_labels, texts.query_labels),
    )
    ws = _Workspace()
    return {
        "image_to_text": _summarise(_score_values(images, plan, chunk_size, ws), plan),
        "text_to_image": _summarise(_score_values(texts, plan, chunk_size, ws), plan),
    }
