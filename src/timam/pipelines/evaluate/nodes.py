"""Embed the test split with a checkpoint, then rank and report."""

from __future__ import annotations

from typing import Any

import pandas as pd
import torch

from timam.io.tensor_bundle import TensorBundle
from timam.models.checkpoint import Checkpoint
from timam.retrieval.ranking import bidirectional_metrics
from timam.retrieval.report import markdown_report
from timam.training.data import split_data
from timam.training.device import pick_device
from timam.training.embedding import image_outputs, text_outputs


def embed_test_split(
    model_checkpoint: Checkpoint, captions: pd.DataFrame, caption_tokens: TensorBundle, evaluation: dict[str, Any]
) -> tuple[TensorBundle, TensorBundle]:
    """Embeddings of the split's unique images and of its captions, each naming the checkpoint version."""
    data = split_data(captions, caption_tokens, evaluation["split"])
    device = pick_device(evaluation.get("device", "auto"))
    model = model_checkpoint.model.to(device)
    batch_size = int(evaluation["batch_size"])
    images = image_outputs(model, data.image_paths, project=True, batch_size=batch_size, device=device, desc="embedding images")
    texts = text_outputs(
        model, data.input_ids, data.attention_mask, project=True, batch_size=batch_size, device=device, desc="embedding captions"
    )
    provenance = {
        "checkpoint_version": model_checkpoint.version,
        "checkpoint": {k: v for k, v in model_checkpoint.metadata.items() if k in ("best_epoch", "val_t2i_R@1")},
        "training": model_checkpoint.metadata.get("training", {}),
        "split": data.split,
    }
    image_bundle = TensorBundle(
        tensors={"embeddings": images, "identity": data.image_identity},
        metadata={**provenance, "image_ids": data.image_ids},
    )
    text_bundle = TensorBundle(
        tensors={"embeddings": texts, "identity": data.caption_identity, "image_index": data.caption_image},
        metadata={**provenance, "caption_ids": data.caption_ids},
    )
    return image_bundle, text_bundle


def rank_test_split(
    image_embeddings: TensorBundle, text_embeddings: TensorBundle, evaluation: dict[str, Any]
) -> tuple[dict[str, Any], str]:
    """R@K, mAP and mINP in both directions over a gallery of unique images, plus a Markdown report."""
    relevance = evaluation["relevance"]
    if relevance == "identity":
        image_labels = image_embeddings.tensors["identity"]
        text_labels = text_embeddings.tensors["identity"]
    elif relevance == "instance":
        image_labels = torch.arange(len(image_embeddings.tensors["embeddings"]))
        text_labels = text_embeddings.tensors["image_index"]
    else:
        raise ValueError(f"params evaluation.relevance must be 'identity' or 'instance', got {relevance!r}")
    tie_rules = tuple(evaluation["tie_rules"])
    results = bidirectional_metrics(
        image_embeddings.tensors["embeddings"],
        text_embeddings.tensors["embeddings"],
        image_labels,
        text_labels,
        ks=tuple(evaluation["ks"]),
        tie_rules=tie_rules,
    )
    relevant_per_caption = (image_labels[None, :] == text_labels[:, None]).sum(dim=1).float()
    metrics = {
        "checkpoint_version": image_embeddings.metadata.get("checkpoint_version"),
        "checkpoint": image_embeddings.metadata.get("checkpoint", {}),
        "training": image_embeddings.metadata.get("training", {}),
        "protocol": {
            "split": image_embeddings.metadata.get("split"),
            "relevance": relevance,
            "gallery": "unique images",
            "tie_rules": list(tie_rules),
        },
        "counts": {
            "images": int(len(image_labels)),
            "captions": int(len(text_labels)),
            "identities": int(len(set(image_embeddings.tensors["identity"].tolist()))),
        },
        "chance_t2i_R@1": float(100 * (relevant_per_caption / len(image_labels)).mean()),
        "results": results,
    }
    return metrics, markdown_report(metrics)
