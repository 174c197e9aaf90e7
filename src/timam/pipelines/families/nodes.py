"""Nodes of the families table: each row's parameters, the pair-score models' training and pair
scores (SCAN-style, ACMM-style), two-stage re-ranking, ranking any score matrix, and the one summary
table. The attribute-hashing rows' nodes are :mod:`timam.pipelines.families.attribute_nodes`."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import pandas as pd
import torch

from timam.evaluation.attribute_accuracy import accuracy_markdown
from timam.evaluation.config import evaluation_config
from timam.evaluation.families_table import families_table
from timam.evaluation.record import CHECKPOINT_SUMMARY, SEARCH_K, GalleryCost, metrics_record
from timam.evaluation.report import markdown_report
from timam.formats.tensor_bundle import TensorBundle
from timam.inference.config import embedding_config
from timam.inference.device import model_to, pick_device
from timam.inference.interaction import pair_scores
from timam.inference.split_data import SplitData, split_data
from timam.models.aligned_memory import AlignedMemoryConfig
from timam.models.checkpoint import Checkpoint
from timam.models.families import PairScoreModel
from timam.models.interaction import InteractionConfig
from timam.retrieval.ranking import score_ranking_metrics, similarity
from timam.retrieval.relevance import relevance_labels
from timam.retrieval.two_stage import topk_candidates, two_stage_scores
from timam.studies.families import families_config
from timam.training.config import training_config
from timam.training.interaction import InteractionSplit, train_interaction
from timam.training.model_setup import check_tokenizer

DIRECTIONS = ("text_to_image", "image_to_text")


def row_parameters(
    model: Mapping[str, Any], training: Mapping[str, Any], families: Mapping[str, Any], row: str, seed: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The model and training parameters of one row and seed: the base ones with its overrides."""
    return families_config(families).row_parameters(row, model, training, seed)


def train_interaction_model(
    captions: pd.DataFrame, caption_tokens: TensorBundle, model: Mapping[str, Any], training: Mapping[str, Any]
) -> tuple[Checkpoint, pd.DataFrame]:
    """Train the pair-score model (SCAN-style, or ACMM-style when ``model.family`` is acmm) on the
    train split, choosing the checkpoint on the val split only."""
    config: InteractionConfig | AlignedMemoryConfig = (
        AlignedMemoryConfig.from_dict(model)
        if AlignedMemoryConfig.is_config_of(model)
        else InteractionConfig.from_dict(model)
    )
    check_tokenizer(config, caption_tokens.metadata.get("tokenizer"))
    checkpoint, history = train_interaction(
        split_data(captions, caption_tokens, "train"),
        split_data(captions, caption_tokens, "val"),
        config,
        training_config(training),
    )
    checkpoint.metadata["model_parameters"] = dict(model)
    return checkpoint, history


def _interaction_model(checkpoint: Checkpoint) -> PairScoreModel:
    if not isinstance(checkpoint.model, PairScoreModel):
        raise ValueError(f"checkpoint {checkpoint.version} is an embedding model; pair scores need an interaction one")
    return checkpoint.model


def _test_inputs(
    checkpoint: Checkpoint, data: SplitData, batch_size: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The test split's regions (view 0), token states and mask, as the checkpoint's training cached
    its splits (its ``feature_cache_dir`` and precision): scoring and two-stage compute them once."""
    model = _interaction_model(checkpoint)
    training = training_config({**checkpoint.metadata.get("training", {}), "embed_batch_size": batch_size})
    split = InteractionSplit(model, data, (0,), training, device)
    return split.regions[0], split.token_states, split.attention_mask


def regions_bytes(regions: torch.Tensor) -> int:
    """Bytes per image of cached regions ``(images, cells, channels)``: what a pair-score gallery stores."""
    return int(regions.shape[1] * regions.shape[2] * regions.element_size())


def scores_bundle(
    data: SplitData,
    checkpoint: Checkpoint,
    scores: dict[str, torch.Tensor],
    score_seconds: float,
    extra: Mapping[str, Any] | None = None,
    *,
    search: GalleryCost | None = None,
) -> TensorBundle:
    """The score matrices of a split with what ranks them (identities, each caption's image) and
    their provenance and cost, for :func:`rank_pair_scores`."""
    summary = {k: v for k, v in checkpoint.metadata.items() if k in CHECKPOINT_SUMMARY}
    return TensorBundle(
        tensors={
            **scores,
            "image_identity": data.image_identity,
            "caption_identity": data.caption_identity,
            "caption_image": data.caption_image,
        },
        metadata={
            "checkpoint_version": checkpoint.version,
            "checkpoint": {**summary, **(extra or {})},
            "training": checkpoint.metadata.get("training", {}),
            "split": data.split,
            "score_seconds": score_seconds,
            **(
                {"search": {"bytes_per_image": search.bytes_per_image, "search_seconds": search.search_seconds}}
                if search is not None
                else {}
            ),
        },
    )


def score_test_pairs(
    model_checkpoint: Checkpoint,
    captions: pd.DataFrame,
    caption_tokens: TensorBundle,
    evaluation: Mapping[str, Any],
    embedding: Mapping[str, Any],
) -> TensorBundle:
    """Every test caption scored with every test image by the interaction model, both directions."""
    config, embed = evaluation_config(evaluation), embedding_config(embedding)
    data = split_data(captions, caption_tokens, config.split)
    device = pick_device(embed.device)
    model = model_to(_interaction_model(model_checkpoint), device)
    regions, states, mask = _test_inputs(model_checkpoint, data, embed.batch_size, device)
    started = time.perf_counter()
    scores = pair_scores(model, regions, states, mask, device=device, show_progress=True)
    seconds = time.perf_counter() - started
    started = time.perf_counter()
    topk_candidates(scores, SEARCH_K)
    # A pair-score search scores every pair, then keeps the top k.
    search = GalleryCost(regions_bytes(regions), seconds + time.perf_counter() - started)
    return scores_bundle(
        data,
        model_checkpoint,
        {"text_to_image": scores, "image_to_text": scores.t().contiguous()},
        seconds,
        search=search,
    )


def two_stage_test_pairs(
    image_embeddings: TensorBundle,
    text_embeddings: TensorBundle,
    interaction_checkpoint: Checkpoint,
    captions: pd.DataFrame,
    caption_tokens: TensorBundle,
    families: Mapping[str, Any],
    evaluation: Mapping[str, Any],
    embedding: Mapping[str, Any],
) -> TensorBundle:
    """The embedding model's top-k per query (both directions) re-scored by the interaction model."""
    k = families_config(families).two_stage.k
    config, embed = evaluation_config(evaluation), embedding_config(embedding)
    data = split_data(captions, caption_tokens, config.split)
    if (
        text_embeddings.metadata.get("caption_ids") != data.caption_ids
        or image_embeddings.metadata.get("image_ids") != data.image_ids
    ):
        raise ValueError("the first stage's embeddings are not of this split's captions and images; re-run its row")
    device = pick_device(embed.device)
    model = model_to(_interaction_model(interaction_checkpoint), device)
    regions, states, mask = _test_inputs(interaction_checkpoint, data, embed.batch_size, device)
    regions, states, mask = regions.to(device), states.to(device), mask.to(device)

    @torch.no_grad()
    def captions_rescored(rows: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        return torch.stack(
            [
                model.scores(regions[c], states[r : r + 1], mask[r : r + 1])[0].cpu()
                for r, c in zip(rows, candidates, strict=True)
            ]
        )

    @torch.no_grad()
    def images_rescored(rows: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        return torch.stack(
            [
                model.scores(regions[r : r + 1], states[c], mask[c])[:, 0].cpu()
                for r, c in zip(rows, candidates, strict=True)
            ]
        )

    started = time.perf_counter()
    first = similarity(text_embeddings.tensors["embeddings"], image_embeddings.tensors["embeddings"])
    text_to_image = two_stage_scores(first, captions_rescored, k)
    seconds = time.perf_counter() - started
    image_to_text = two_stage_scores(first.t().contiguous(), images_rescored, k)
    first_training = image_embeddings.metadata.get("checkpoint", {}).get("train_seconds")
    second_training = interaction_checkpoint.metadata.get("train_seconds")
    extra = {
        "first_stage_checkpoint": image_embeddings.metadata.get("checkpoint_version"),
        "k": k,
        "train_seconds": (first_training or 0.0) + (second_training or 0.0),
        "val_t2i_R@1": None,  # two checkpoints, each chosen on validation; no score of its own
    }
    stored = 4 * image_embeddings.tensors["embeddings"].shape[1] + regions_bytes(regions)
    return scores_bundle(
        data,
        interaction_checkpoint,
        {"text_to_image": text_to_image, "image_to_text": image_to_text},
        seconds,
        extra,
        search=GalleryCost(stored, seconds),  # every caption's whole two-stage ranking: its top k is a prefix
    )


def rank_pair_scores(pair_scores_bundle: TensorBundle, evaluation: Mapping[str, Any]) -> tuple[dict[str, Any], str]:
    """R@K, mAP and mINP both ways from score matrices, by the same tie-aware ranking as embeddings."""
    config = evaluation_config(evaluation)
    tensors = pair_scores_bundle.tensors
    image_labels, text_labels = relevance_labels(
        image_identity=tensors["image_identity"],
        caption_identity=tensors["caption_identity"],
        caption_image=tensors["caption_image"],
        relevance=config.relevance,
    )
    queries = {"text_to_image": (text_labels, image_labels), "image_to_text": (image_labels, text_labels)}
    results = {
        direction: score_ranking_metrics(
            tensors[direction], *queries[direction], ks=config.ks, tie_rules=config.tie_rules
        )
        for direction in DIRECTIONS
    }
    metrics = metrics_record(
        pair_scores_bundle.metadata,
        tensors["image_identity"],
        results,
        image_labels,
        text_labels,
        config,
        score_seconds=pair_scores_bundle.metadata["score_seconds"],
        search=GalleryCost.from_dict(pair_scores_bundle.metadata.get("search")),
    )
    return metrics, markdown_report(metrics, config.published_results())


def summarise_families(
    families: Mapping[str, Any],
    *outputs: dict[str, Any],
    rows: tuple[str, ...],
    seeds_per_row: int,
    derived_labels: Mapping[str, str],
    accuracy_of: str | None = None,
) -> tuple[pd.DataFrame, str]:
    """Mean ± std over the seeds of every row (pipeline order: every seed of a row, then the next
    row), then, with ``accuracy_of``, the attribute accuracy records of that row's seeds (the
    outputs after the metrics) as their own section. ``derived_labels``: the family of each row
    that re-scores other rows' models (two-stage, the attribute space) and so has no parameters."""
    config = families_config(families)
    labels = {name: config.rows[name].label or config.rows[name].family for name in config.rows}
    labels.update(derived_labels)
    runs = len(rows) * seeds_per_row
    table, report = families_table(outputs[:runs], rows=rows, labels=labels, seeds_per_row=seeds_per_row)
    if accuracy_of is not None:
        title = f"Attribute prediction on the test split ({accuracy_of}; mean ± std over {seeds_per_row} seeds)"
        report += "\n" + "\n".join(accuracy_markdown([record["branches"] for record in outputs[runs:]], title=title))
    return table, report
