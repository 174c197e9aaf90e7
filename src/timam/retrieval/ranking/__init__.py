"""Exact, tie-aware, memory-bounded retrieval ranking metrics (R@K, mAP, mINP).

* **Tie rules.** Identical captions get identical scores, so every metric is reported under an
  explicit rule (:data:`TIE_RULES`): ``"expected"`` (exact expected value under a uniformly random
  order of tied items, McSherry and Najork, ECIR 2008, in closed form), ``"optimistic"`` /
  ``"pessimistic"`` (its bounds) and ``"index"`` (a stable ``argsort(-score)``).
* **Exact.** Scores are float32 and do not depend on ``chunk_size``; ties are exact float32
  equality; every metric comes from integer counts in float64, and the tests check each rule
  against enumeration of every permutation of the tied items.
* **Bounded memory.** Queries are processed in chunks (about two ``chunk_size x gallery`` float32
  buffers plus a packed copy of the gallery), with no per-query Python loop; per-query values are
  averaged once at the end, so results are bitwise independent of ``chunk_size``. Everything runs
  on the device of the inputs (CPU or CUDA).

Gallery item ``j`` is relevant to query ``i`` iff ``query_labels[i] == gallery_labels[j]``.

Layers, imported one way: :mod:`.scoring` (float32 products), :mod:`.topk`, :mod:`.counting`
(per-chunk counts) and :mod:`.tie_rules` (the closed forms) at the bottom; :mod:`.api`
(:func:`ranking_metrics`, :func:`per_query_metrics`) and :mod:`.bidirectional` above them;
:mod:`.scored` (:func:`score_ranking_metrics`, :func:`per_query_score_metrics`,
:func:`bidirectional_score_metrics`) counts a precomputed score matrix -- an interaction model's,
which has no embeddings -- with the same chunk loop, so the metrics do not depend on the model.

Why the kernels are shaped as they are, with the measurements behind each choice:
``benchmarks/RESULTS.md``, section "Ranking: why the kernels are shaped as they are".
"""

from __future__ import annotations

from timam.retrieval.ranking.api import check_tie_rules, per_query_metrics, ranking_metrics
from timam.retrieval.ranking.bidirectional import bidirectional_metrics
from timam.retrieval.ranking.counting import check_labels
from timam.retrieval.ranking.scored import bidirectional_score_metrics, per_query_score_metrics, score_ranking_metrics
from timam.retrieval.ranking.scoring import prepare_embeddings, similarity
from timam.retrieval.ranking.tie_rules import METRICS, TIE_RULES, TieRule
from timam.retrieval.ranking.topk import GalleryTopK, topk_indices

__all__ = [
    "GalleryTopK",
    "METRICS",
    "TIE_RULES",
    "TieRule",
    "bidirectional_metrics",
    "bidirectional_score_metrics",
    "check_labels",
    "check_tie_rules",
    "per_query_metrics",
    "per_query_score_metrics",
    "prepare_embeddings",
    "ranking_metrics",
    "score_ranking_metrics",
    "similarity",
    "topk_indices",
]
