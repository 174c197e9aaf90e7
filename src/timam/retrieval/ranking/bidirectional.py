"""Image->text and text->image metrics together, sharing one pass over the scores for R@K.

The matrix product dominates the cost, so :func:`bidirectional_metrics` with ``metrics=("R@K",)``
gets both directions from a single pass over the ``image x text`` scores: text->image keeps each
text's best relevant score and its ``max(ks)`` highest image scores across the image chunks. With
mAP or mINP each direction needs its own pass, because full-depth ranks need each text's relevant
score before its column is counted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from timam.retrieval.ranking.api import (
    _chunk_values,
    _Inputs,
    _inputs,
    _per_query,
    _Plan,
    _plan,
    _query_block_values,
    _summarise,
)
from timam.retrieval.ranking.counting import _relevance, _relevant_slots, _SlotCounts
from timam.retrieval.ranking.scoring import _GalleryScorer, _Workspace
from timam.retrieval.ranking.tie_rules import METRICS


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
        self.first = torch.minimum(torch.where(keep_old, self.first, n_images), torch.where(take_new, cfirst, n_images))
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

    Image->text uses the blocks exactly as :func:`~timam.retrieval.ranking.ranking_metrics` does.
    Text->image keeps, per text, the running best relevant score and the ``max(ks)`` largest scores
    over the image chunks seen so far, which decides every hit@K exactly (ambiguous ties are recounted).
    """
    ws = _Workspace()
    img, txt = images.query, images.gallery
    n_img, n_txt = img.shape[0], txt.shape[0]
    depth = max(plan.ks)
    t_items, t_valid, t_count = _relevant_slots(texts.relevance, 0, n_txt)
    best = _ColumnBest.empty(n_txt, n_img, img.device)
    top_v = txt.new_zeros(0, n_txt)
    top_i = torch.zeros(0, n_txt, dtype=torch.long, device=img.device)
    i2t = {rule: torch.empty(len(plan.keys), n_img, dtype=torch.float64, device=img.device) for rule in plan.tie_rules}
    scorer = _GalleryScorer(txt)
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
    """:func:`~timam.retrieval.ranking.ranking_metrics` in both directions.

    Returns ``{"image_to_text": .., "text_to_image": ..}``. Image->text ranks all texts for each
    image; text->image ranks the (unique) images for each text. With ``metrics=("R@K",)`` both
    directions come from a single pass over the score matrix (the matrix product dominates the
    cost), otherwise each direction is ranked on its own.
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
