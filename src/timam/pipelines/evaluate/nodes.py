"""Embed the test split with a checkpoint, then rank, report and draw the figures of the report."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

import pandas as pd
import torch
from matplotlib.figure import Figure

from timam.evaluation.config import EvaluationConfig, evaluation_config
from timam.evaluation.curves import bidirectional_recall_curves, chance_recall_curve
from timam.evaluation.examples import RankedExamples, best_and_worst, sample_queries
from timam.evaluation.protocols import protocol_metrics
from timam.evaluation.record import CHECKPOINT_SUMMARY, GalleryCost, metrics_record
from timam.evaluation.report import markdown_report
from timam.figures.ranking import image_query_figure, recall_curve_figure, text_query_figure
from timam.figures.style import message_figure
from timam.figures.training import training_curves_figure
from timam.formats.tensor_bundle import TensorBundle
from timam.inference.config import embedding_config
from timam.inference.device import dtype_name, model_to, pick_device
from timam.inference.embedding import image_outputs, text_outputs
from timam.inference.split_data import split_data
from timam.models.checkpoint import Checkpoint
from timam.retrieval.ranking import bidirectional_metrics, per_query_metrics, similarity
from timam.retrieval.relevance import embedded_split_labels

logger = logging.getLogger(__name__)


def embed_test_split(
    model_checkpoint: Checkpoint,
    captions: pd.DataFrame,
    caption_tokens: TensorBundle,
    evaluation: Mapping[str, Any],
    embedding: Mapping[str, Any],
) -> tuple[TensorBundle, TensorBundle]:
    """Embeddings of the split's unique images and of its captions, each naming the checkpoint version.

    The metadata also carries the image paths and caption texts, so figures and ``search`` can show
    what they rank without the caption table, and how queries must be embedded to match (the
    precision, the tokenizer and its length). ``evaluation``: ``params:evaluation``
    (:class:`~timam.evaluation.config.EvaluationConfig`); ``embedding``: ``params:embedding``.
    """
    if model_checkpoint.is_hashing:
        # Its relaxed codes are not the model: ranked by cosine they would disagree with its search.
        raise ValueError(
            f"model_checkpoint {model_checkpoint.version or ''} is an attribute-hashing model: this pipeline "
            "ranks float embeddings by cosine, a hashing model's codes by Hamming distance. Score it with "
            "`kedro run --pipelines families` (its agnet_hash_<K> row), or index and search it "
            "(`--pipelines index`, `timam serve`)"
        )
    config, embed = evaluation_config(evaluation), embedding_config(embedding)
    data = split_data(captions, caption_tokens, config.split)
    rows = captions[captions["split"] == data.split]
    if rows["caption_id"].tolist() != data.caption_ids:  # split_data's row order, checked not assumed
        raise ValueError("caption rows of the split are not in the order of their tokens; re-run the prepare pipeline")
    device = pick_device(embed.device)
    model = model_to(model_checkpoint.embedding_model, device)
    images = image_outputs(
        model,
        data.image_paths,
        project=True,
        batch_size=embed.batch_size,
        device=device,
        desc="embedding images",
        precision=embed.precision,
    )
    texts = text_outputs(
        model,
        data.input_ids,
        data.attention_mask,
        project=True,
        batch_size=embed.batch_size,
        device=device,
        desc="embedding captions",
        precision=embed.precision,
    )
    provenance = {
        "checkpoint_version": model_checkpoint.version,
        "checkpoint": {k: v for k, v in model_checkpoint.metadata.items() if k in CHECKPOINT_SUMMARY},
        "training": model_checkpoint.metadata.get("training", {}),
        "split": data.split,
        "precision": dtype_name(device, embed.precision),
        "tokenizer": caption_tokens.metadata.get("tokenizer"),
        "max_length": caption_tokens.metadata.get("max_length"),
    }
    image_bundle = TensorBundle(
        tensors={"embeddings": images, "identity": data.image_identity},
        metadata={**provenance, "image_ids": data.image_ids, "image_paths": [str(p) for p in data.image_paths]},
    )
    text_bundle = TensorBundle(
        tensors={"embeddings": texts, "identity": data.caption_identity, "image_index": data.caption_image},
        metadata={**provenance, "caption_ids": data.caption_ids, "captions": rows["caption"].astype(str).tolist()},
    )
    return image_bundle, text_bundle


def protocol_results(
    image_embeddings: TensorBundle,
    text_embeddings: TensorBundle,
    image_labels: torch.Tensor,
    text_labels: torch.Tensor,
    evaluation: Mapping[str, Any] | EvaluationConfig,
) -> dict[str, Any] | None:
    """The numbers of the dataset's published protocol (``evaluation.protocol``); None for ``standard``."""
    config = evaluation_config(evaluation)
    return protocol_metrics(
        config.protocol,
        image_emb=image_embeddings.tensors["embeddings"],
        text_emb=text_embeddings.tensors["embeddings"],
        image_labels=image_labels,
        text_labels=text_labels,
        text_image=text_embeddings.tensors["image_index"],
        image_classes=image_embeddings.tensors["identity"],
        text_classes=text_embeddings.tensors["identity"],
        fold_images=config.coco_fold_images,
        zero_shot_depth=config.zero_shot_depth,
        ks=config.ks,
        tie_rules=config.tie_rules,
    )


def rank_test_split(
    image_embeddings: TensorBundle, text_embeddings: TensorBundle, evaluation: Mapping[str, Any]
) -> tuple[dict[str, Any], str]:
    """R@K, mAP and mINP in both directions over a gallery of unique images, plus a Markdown report.

    ``evaluation.protocol`` adds the dataset's published protocol (``protocol_results``; MSCOCO
    1K folds, CUB/Flowers zero-shot classes). The report sets the numbers beside
    ``evaluation.paper_results`` of this data (``paper_results_key``, else ``dataset``) where those
    use the same protocol.
    """
    config = evaluation_config(evaluation)  # an unknown protocol fails here, before the (long) ranking
    image_labels, text_labels = embedded_split_labels(image_embeddings, text_embeddings, config.relevance)
    image_emb, text_emb = image_embeddings.tensors["embeddings"], text_embeddings.tensors["embeddings"]
    started = time.perf_counter()
    similarity(text_emb, image_emb)  # the cost column: every caption against the gallery, as ranked
    score_seconds = time.perf_counter() - started
    search = GalleryCost.of_float_gallery(image_emb, text_emb)
    results = bidirectional_metrics(
        image_emb, text_emb, image_labels, text_labels, ks=config.ks, tie_rules=config.tie_rules
    )
    metrics = metrics_record(
        image_embeddings.metadata,
        image_embeddings.tensors["identity"],
        results,
        image_labels,
        text_labels,
        config,
        score_seconds=score_seconds,
        search=search,
    )
    extra = protocol_results(image_embeddings, text_embeddings, image_labels, text_labels, config)
    if extra is not None:
        metrics["protocol_results"] = extra
    return metrics, retrieval_report(metrics, config)


def retrieval_report(metrics: dict[str, Any], evaluation: Mapping[str, Any] | EvaluationConfig) -> str:
    """The Markdown report of ``metrics`` beside the published numbers of this data
    (``evaluation.paper_results[paper_results_key or dataset]``, where their protocol matches)."""
    return markdown_report(metrics, evaluation_config(evaluation).published_results())


def _title(image_embeddings: TensorBundle, config: EvaluationConfig, what: str) -> str:
    dataset = config.dataset or "?"
    split = image_embeddings.metadata.get("split", config.split)
    return (
        f"{what} -- {dataset} {split} split, {config.relevance} relevance, "
        f"checkpoint {image_embeddings.metadata.get('checkpoint_version')}"
    )


def plot_recall_curve(
    image_embeddings: TensorBundle, text_embeddings: TensorBundle, evaluation: Mapping[str, Any]
) -> Figure:
    """R@K for K = 1..``evaluation.curve_max_k`` (default 50) both ways, expected tie rule, with chance."""
    config = evaluation_config(evaluation)
    image_labels, text_labels = embedded_split_labels(image_embeddings, text_embeddings, config.relevance)
    max_k = config.curve_max_k
    curves = bidirectional_recall_curves(
        image_embeddings.tensors["embeddings"],
        text_embeddings.tensors["embeddings"],
        image_labels,
        text_labels,
        max_k=max_k,
        tie_rule="expected",
    )
    chance = {
        "text_to_image": chance_recall_curve(text_labels, image_labels, max_k=max_k),
        "image_to_text": chance_recall_curve(image_labels, text_labels, max_k=max_k),
    }
    logger.info(
        "Recall curve: text->image R@1 %.2f, image->text R@1 %.2f",
        curves["text_to_image"][0],
        curves["image_to_text"][0],
    )
    return recall_curve_figure(
        curves, chance=chance, title=_title(image_embeddings, config, "R@K (expected over ties)")
    )


_LEGEND = "green = relevant, red = not"


def plot_retrieval_examples(
    image_embeddings: TensorBundle, text_embeddings: TensorBundle, evaluation: Mapping[str, Any]
) -> tuple[Figure, Figure]:
    """Ranked examples both ways: sample caption queries with their top images, image queries with their top captions.

    ``evaluation.examples``: ``queries`` (default 6), ``top_k`` (5), ``seed`` (0). Hits follow the
    evaluation's relevance rule; ties are broken by gallery index (as in ``topk_indices``).
    """
    config = evaluation_config(evaluation)
    count, k, seed = config.examples.queries, config.examples.top_k, config.examples.seed
    data = RankedExamples.of(image_embeddings, text_embeddings, config.relevance)
    text_examples = data.text_examples(sample_queries(len(data.texts), count, seed), k)
    image_examples = data.image_examples(sample_queries(len(data.images), count, seed), k)
    return (
        text_query_figure(
            text_examples,
            title=_title(image_embeddings, config, f"Text -> image top-{k} ({_LEGEND}; blue = described image)"),
        ),
        image_query_figure(
            image_examples, title=_title(image_embeddings, config, f"Image -> text top-{k} ({_LEGEND})")
        ),
    )


def plot_best_and_worst_queries(
    image_embeddings: TensorBundle, text_embeddings: TensorBundle, evaluation: Mapping[str, Any]
) -> tuple[Figure, Figure]:
    """The queries the model gets most and least right, both ways, with their top-K results.

    Queries are ordered by their own average precision under the expected tie rule (for a caption
    with one relevant image that is the expected 1 / rank of it); ``evaluation.examples.best_worst``
    (default 3) of each end are shown, best first. Where sampled examples show what is typical,
    these show where the model fails: read them before trusting a mean.
    """
    config = evaluation_config(evaluation)
    count, k = config.examples.best_worst, config.examples.top_k
    if count < 1:
        empty = message_figure("evaluation.examples.best_worst is 0: no best and worst queries drawn")
        return empty, empty
    data = RankedExamples.of(image_embeddings, text_embeddings, config.relevance)
    t2i_ap = per_query_metrics(data.texts, data.images, data.text_labels, data.image_labels, metrics=("mAP",))
    i2t_ap = per_query_metrics(data.images, data.texts, data.image_labels, data.text_labels, metrics=("mAP",))
    text_queries, text_notes = best_and_worst(t2i_ap["mAP"], count)
    image_queries, image_notes = best_and_worst(i2t_ap["mAP"], count)
    what = f"best and worst {count} queries by average precision, top-{k} ({_LEGEND})"
    return (
        text_query_figure(
            data.text_examples(text_queries, k, text_notes),
            title=_title(image_embeddings, config, f"Text -> image, {what}; blue = described image"),
        ),
        image_query_figure(
            data.image_examples(image_queries, k, image_notes),
            title=_title(image_embeddings, config, f"Image -> text, {what}"),
        ),
    )


def plot_training_curves(training_history_versions: dict[str, pd.DataFrame], image_embeddings: TensorBundle) -> Figure:
    """Loss terms, validation R@1 and learning rate of the run that trained the evaluated checkpoint.

    A training run saves its checkpoint and its history under one version, so the history of
    checkpoint version V is version V of ``training_history``. When that one is missing (a
    checkpoint from elsewhere, a deleted history), the latest history is drawn and the title says so.
    """
    checkpoint_version = image_embeddings.metadata.get("checkpoint_version")
    pretrained = image_embeddings.metadata.get("checkpoint", {}).get("pretrained")
    if pretrained:
        what = f"{pretrained['library']} {pretrained['model_name']} ({pretrained['source']})"
        return message_figure(f"Not trained: {what} evaluated zero-shot.", title="Training history")
    if checkpoint_version in training_history_versions:
        return training_curves_figure(
            training_history_versions[checkpoint_version],
            title=f"Training history of checkpoint {checkpoint_version}",
        )
    if not training_history_versions:
        return message_figure(f"No training history saved (checkpoint {checkpoint_version}).", title="Training history")
    latest = max(training_history_versions)
    logger.warning("No training history of checkpoint %s; plotting the latest one (%s)", checkpoint_version, latest)
    return training_curves_figure(
        training_history_versions[latest],
        title=f"LATEST training history ({latest}) -- none saved with the evaluated checkpoint {checkpoint_version}",
    )
