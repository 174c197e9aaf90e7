"""``retrieval_metrics``: what a ranked split records, whichever model made its scores.

The evaluate pipeline (embeddings) and the families pipeline (pair scores, two-stage) write the
same record, so ``compare``, the families table and MLflow read one layout.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from timam.evaluation.config import EvaluationConfig
from timam.evaluation.report import mean_recall
from timam.retrieval.ranking import GalleryTopK

# The top-k a search returns per query in the cost column (a result page).
SEARCH_K = 10


@dataclass(frozen=True)
class GalleryCost:
    """What searching a gallery costs: ``bytes_per_image`` of the stored representation (packed code,
    float32 vector, cached regions) and ``search_seconds`` to return the :data:`SEARCH_K` best images
    of every caption query (over all of them; the record gives it per query)."""

    bytes_per_image: float
    search_seconds: float

    def to_dict(self, queries: int) -> dict[str, float]:
        return {
            "bytes_per_image": float(self.bytes_per_image),
            "search_ms_per_query": 1000 * self.search_seconds / max(1, queries),
        }

    @classmethod
    def of_float_gallery(cls, image_emb: torch.Tensor, text_emb: torch.Tensor) -> GalleryCost:
        """Timed: every caption's exact top :data:`SEARCH_K` over the images stored as unit float32
        vectors, as an exact float index holds them."""
        gallery = GalleryTopK(image_emb)
        started = time.perf_counter()
        gallery.topk(text_emb, min(SEARCH_K, len(gallery)))
        return cls(bytes_per_image=4 * image_emb.shape[1], search_seconds=time.perf_counter() - started)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | None) -> GalleryCost | None:
        """From a scores bundle's ``metadata["search"]``; None when it has none."""
        if not values:
            return None
        return cls(bytes_per_image=float(values["bytes_per_image"]), search_seconds=float(values["search_seconds"]))


# What of the checkpoint's metadata every scored split carries into its metrics.
# What the metrics record of each checkpoint: how it was chosen, or ("pretrained") where its weights came from.
CHECKPOINT_SUMMARY = ("best_epoch", "val_t2i_R@1", "train_seconds", "pretrained")


def metrics_record(
    metadata: Mapping[str, Any],
    image_identity: torch.Tensor,
    results: dict[str, Any],
    image_labels: torch.Tensor,
    text_labels: torch.Tensor,
    config: EvaluationConfig,
    *,
    score_seconds: float,
    search: GalleryCost | None = None,
) -> dict[str, Any]:
    """``retrieval_metrics`` of ranked ``results``, whichever model made the scores: provenance (the
    scored bundle's ``metadata``), protocol, counts, chance, mR per tie rule and the cost (training
    time, the milliseconds per caption query of scoring it against the whole gallery and, with
    ``search``, the gallery's bytes per image and the milliseconds of one query's top-k search)."""
    relevant_per_caption = (image_labels[None, :] == text_labels[:, None]).sum(dim=1).float()
    checkpoint = metadata.get("checkpoint", {})
    metrics: dict[str, Any] = {
        "checkpoint_version": metadata.get("checkpoint_version"),
        "checkpoint": checkpoint,
        "training": metadata.get("training", {}),
        "protocol": {
            "name": config.protocol,
            "dataset": config.dataset,
            "split": metadata.get("split"),
            "relevance": config.relevance,
            "gallery": "unique images",
            "tie_rules": list(config.tie_rules),
        },
        "counts": {
            "images": int(len(image_labels)),
            "captions": int(len(text_labels)),
            "identities": int(len(set(image_identity.tolist()))),
        },
        "chance_t2i_R@1": float(100 * (relevant_per_caption / len(image_labels)).mean()),
        "results": results,
        "cost": {
            "train_seconds": checkpoint.get("train_seconds"),
            "score_ms_per_query": 1000 * score_seconds / max(1, len(text_labels)),
            **(search.to_dict(len(text_labels)) if search is not None else {}),
        },
    }
    mr = {rule: mean_recall(results, rule) for rule in config.tie_rules}
    if all(value is not None for value in mr.values()):
        metrics["mR"] = mr
    return metrics
