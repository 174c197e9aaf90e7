"""Hit rate R@K for every K = 1..max_k in one pass: the data of a recall curve.

:func:`timam.retrieval.ranking.ranking_metrics` answers a few K exactly; a curve needs fifty. Both
share the definitions: R@K is the hit rate (any relevant item within the first K), scores are the
same float32 cosine similarities (the scores come from :func:`timam.retrieval.ranking.similarity`
on embeddings normalised exactly as the ranking module normalises them, so ties agree bit for bit),
and the result is stated under a tie rule:

* ``expected``: exact expectation under a uniformly random order of tied scores. With ``a`` items
  scored strictly above the best relevant score and a tie group of ``t`` items of which ``r`` are
  relevant, the first relevant item of the group is beyond position ``m = K - a`` of the group with
  probability ``prod_{i<m} (t - r - i) / (t - i)`` (hypergeometric; a product of at most ``max_k``
  float64 ratios, no sampling);
* ``optimistic`` / ``pessimistic``: ties resolved for / against the relevant items;
* ``index``: ties broken by gallery index (a stable ``argsort(-score)``).

Per query only four counts are needed, so the pass is one matrix product per chunk of queries plus
a few comparisons; memory is a few ``chunk_size x gallery`` buffers.
"""

from __future__ import annotations

import torch
from torch import Tensor

from timam.retrieval.ranking import TIE_RULES, check_labels, prepare_embeddings, similarity

__all__ = ["bidirectional_recall_curves", "chance_recall_curve", "recall_curve"]


def _hits(
    above: Tensor, tied: Tensor, tied_relevant: Tensor, irrelevant_before: Tensor | None, ks: Tensor, rule: str
) -> Tensor:
    """Per query (rows) and K (columns): probability (0/1 for deterministic rules) of a hit at K."""
    a = above[:, None]
    if rule == "optimistic":
        return (ks[None, :] > a).to(torch.float64)
    if rule == "pessimistic":
        return (ks[None, :] >= a + (tied - tied_relevant)[:, None] + 1).to(torch.float64)
    if rule == "index":
        assert irrelevant_before is not None  # counted whenever the index rule is asked for
        return (ks[None, :] >= a + irrelevant_before[:, None] + 1).to(torch.float64)
    # expected: P(miss at K) = P(the first m = K - a draws of the tie group are all irrelevant)
    depth = int(ks.max())
    i = torch.arange(depth, dtype=torch.float64, device=ks.device)
    irrelevant = (tied - tied_relevant).to(torch.float64)[:, None]
    ratio = (irrelevant - i).clamp(min=0.0) / (tied.to(torch.float64)[:, None] - i).clamp(min=1.0)
    miss_after = torch.cat([torch.ones_like(ratio[:, :1]), torch.cumprod(ratio, dim=1)], dim=1)  # m = 0..depth
    m = (ks[None, :] - a).clamp(min=0, max=depth)
    return 1.0 - miss_after.gather(1, m)


def recall_curve(
    query_emb: Tensor,
    gallery_emb: Tensor,
    query_labels: Tensor,
    gallery_labels: Tensor,
    *,
    max_k: int = 50,
    tie_rule: str = "expected",
    chunk_size: int = 1024,
    normalize: bool = True,
) -> list[float]:
    """R@K in percent for K = 1..min(max_k, gallery size), queries against a gallery.

    Gallery item ``j`` is relevant to query ``i`` iff ``query_labels[i] == gallery_labels[j]``; a
    query without a relevant item raises ``ValueError``. Values at K = 1, 5, 10 equal
    :func:`~timam.retrieval.ranking.ranking_metrics` under the same tie rule.
    """
    if tie_rule not in TIE_RULES:
        raise ValueError(f"tie_rule must be one of {TIE_RULES}, got {tie_rule!r}")
    if chunk_size < 1:
        raise ValueError("chunk_size must be >= 1")
    q = prepare_embeddings(query_emb, normalize, "query_emb")
    g = prepare_embeddings(gallery_emb, normalize, "gallery_emb").to(q.device)
    if max_k < 1:
        raise ValueError(f"max_k must be >= 1, got {max_k}")
    query_labels = check_labels(query_labels, q.shape[0], "query_labels", q.device)
    gallery_labels = check_labels(gallery_labels, g.shape[0], "gallery_labels", q.device)
    n_gallery = g.shape[0]
    ks = torch.arange(1, min(max_k, n_gallery) + 1, device=q.device)
    total = torch.zeros(len(ks), dtype=torch.float64, device=q.device)
    position = torch.arange(n_gallery, device=q.device)
    for lo in range(0, q.shape[0], chunk_size):
        scores = similarity(q[lo : lo + chunk_size], g, normalize=False)
        relevant = query_labels[lo : lo + chunk_size, None] == gallery_labels[None, :]
        without = (~relevant.any(dim=1)).nonzero().flatten()
        if without.numel():
            first = lo + int(without[0])
            raise ValueError(
                f"query {first} (label {int(query_labels[first])}) has no relevant gallery item"
                f" ({without.numel()} such queries in this chunk)"
            )
        best = scores.masked_fill(~relevant, float("-inf")).amax(dim=1, keepdim=True)
        above = (scores > best).sum(dim=1)
        tied_mask = scores == best
        tied = tied_mask.sum(dim=1)
        tied_relevant_mask = tied_mask & relevant
        tied_relevant = tied_relevant_mask.sum(dim=1)
        irrelevant_before = None
        if tie_rule == "index":
            first_relevant = torch.where(tied_relevant_mask, position, n_gallery).amin(dim=1, keepdim=True)
            irrelevant_before = (tied_mask & ~relevant & (position < first_relevant)).sum(dim=1)
        total += _hits(above, tied, tied_relevant, irrelevant_before, ks, tie_rule).sum(dim=0)
    if q.shape[0] == 0:
        return [float("nan")] * len(ks)
    return (100.0 * total / q.shape[0]).tolist()


def chance_recall_curve(query_labels: Tensor, gallery_labels: Tensor, *, max_k: int = 50) -> list[float]:
    """R@K in percent of a random ranking (the expected hit rate when every score ties)."""
    query_labels = torch.as_tensor(query_labels).to(torch.int64)
    gallery_labels = torch.as_tensor(gallery_labels).to(torch.int64)
    n_gallery = gallery_labels.shape[0]
    relevant = (query_labels[:, None] == gallery_labels[None, :]).sum(dim=1)
    ks = torch.arange(1, min(max_k, n_gallery) + 1)
    zeros = torch.zeros_like(relevant)
    hits = _hits(zeros, torch.full_like(relevant, n_gallery), relevant, None, ks, "expected")
    return (100.0 * hits.mean(dim=0)).tolist()


def bidirectional_recall_curves(
    image_emb: Tensor,
    text_emb: Tensor,
    image_labels: Tensor,
    text_labels: Tensor,
    *,
    max_k: int = 50,
    tie_rule: str = "expected",
    chunk_size: int = 1024,
) -> dict[str, list[float]]:
    """:func:`recall_curve` both ways: ``{"text_to_image": [...], "image_to_text": [...]}``."""
    return {
        "text_to_image": recall_curve(
            text_emb, image_emb, text_labels, image_labels, max_k=max_k, tie_rule=tie_rule, chunk_size=chunk_size
        ),
        "image_to_text": recall_curve(
            image_emb, text_emb, image_labels, text_labels, max_k=max_k, tie_rule=tie_rule, chunk_size=chunk_size
        ),
    }
