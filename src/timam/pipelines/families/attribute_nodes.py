"""Nodes of the attribute family's hashing rows: the vocabulary, AgNet-style training, Hamming ranking of
packed codes, the float attribute space, the Hamming top-k re-ranked in it, and attribute accuracy.

Every score matrix goes to :func:`~timam.pipelines.families.nodes.rank_pair_scores`, the same
tie-aware ranking as every other row. The test split's outputs come from the frozen features the
checkpoint's training cached (its ``training.feature_cache_dir``), so the rows that score one model
(its Hamming row, ``attributes_float``, the re-rank, the accuracy report) compute them once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure

from timam.evaluation.attribute_accuracy import attribute_accuracy
from timam.evaluation.config import evaluation_config
from timam.evaluation.record import SEARCH_K, GalleryCost
from timam.figures.attributes import AttributeExample, attribute_examples_figure
from timam.formats.tensor_bundle import TensorBundle
from timam.index.binary_index import BinarySearch, build_binary_index, flat_plan
from timam.inference.config import embedding_config
from timam.inference.device import model_to, pick_device
from timam.inference.split_data import SplitData, split_data
from timam.models.attribute_family import AttributeHashingModel
from timam.models.attribute_hashing import AttributeHashingConfig, AttributeOutputs
from timam.models.checkpoint import Checkpoint
from timam.pipelines.families.nodes import scores_bundle
from timam.retrieval.hamming import code_bytes, hamming_scores, pack_codes
from timam.retrieval.ranking import similarity
from timam.retrieval.two_stage import two_stage_scores
from timam.sources.attributes import AttributeVocabulary, attribute_groups
from timam.studies.attributes import check_vocabulary_of, dataset_labels, fit_vocabulary, split_targets
from timam.studies.families import families_config
from timam.training.cached_split import CachedSplit
from timam.training.config import training_config
from timam.training.hashing import split_outputs, train_attribute_hashing
from timam.training.model_setup import check_tokenizer

logger = logging.getLogger(__name__)

# Test images drawn in the accuracy figure (the first image of each of the first identities).
FIGURE_IMAGES = 8


def _vocabulary(values: Mapping[str, Any]) -> AttributeVocabulary:
    return AttributeVocabulary.from_dict(values, "attribute_vocabulary")


def fit_attribute_vocabulary(
    captions: pd.DataFrame, raw_annotations: Any, families: Mapping[str, Any]
) -> dict[str, Any]:
    """The attribute vocabulary of the training split (``families.attribute_vocabulary``), as JSON values."""
    config = families_config(families).attribute_vocabulary
    vocabulary = fit_vocabulary(captions, dataset_labels(raw_annotations, config), config)
    logger.info("Attribute vocabulary: %d terms from the training %s", len(vocabulary), vocabulary.source)
    return vocabulary.to_dict()


def _labels(vocabulary: AttributeVocabulary, raw_annotations: Any, families: Mapping[str, Any]):
    if vocabulary.source != "labels":
        return None
    return dataset_labels(raw_annotations, families_config(families).attribute_vocabulary)


def train_hashing_model(
    captions: pd.DataFrame,
    caption_tokens: TensorBundle,
    attribute_vocabulary: Mapping[str, Any],
    raw_annotations: Any,
    model: Mapping[str, Any],
    training: Mapping[str, Any],
    families: Mapping[str, Any],
) -> tuple[Checkpoint, pd.DataFrame]:
    """Train the AgNet-style heads on the vocabulary's targets of the train split (checkpoint chosen
    on the val split only); the checkpoint records the vocabulary's terms."""
    vocabulary = _vocabulary(attribute_vocabulary)
    given = model.get("num_attributes")
    if given is not None and int(given) != len(vocabulary):
        raise ValueError(
            f"params model.num_attributes is {given} but the attribute vocabulary has {len(vocabulary)} terms; "
            "remove it (it follows the vocabulary)"
        )
    config = AttributeHashingConfig.from_dict({**model, "num_attributes": len(vocabulary)})
    check_tokenizer(config, caption_tokens.metadata.get("tokenizer"))
    train, val = split_data(captions, caption_tokens, "train"), split_data(captions, caption_tokens, "val")
    targets = split_targets(vocabulary, captions, train, _labels(vocabulary, raw_annotations, families))
    checkpoint, history = train_attribute_hashing(train, val, config, training_config(training), targets)
    checkpoint.metadata["model_parameters"] = dict(model)
    checkpoint.metadata["attribute_vocabulary"] = {"source": vocabulary.source, "terms": list(vocabulary.terms)}
    return checkpoint, history


@dataclass(frozen=True)
class _TestOutputs:
    data: SplitData
    image: AttributeOutputs
    text: AttributeOutputs
    code_bits: int


def _test_outputs(
    checkpoint: Checkpoint,
    captions: pd.DataFrame,
    caption_tokens: TensorBundle,
    evaluation: Mapping[str, Any],
    embedding: Mapping[str, Any],
) -> _TestOutputs:
    """The evaluated split's image and caption outputs, from the frozen features as the checkpoint's
    training cached them (its cache folder and precision)."""
    if not isinstance(checkpoint.model, AttributeHashingModel):
        raise ValueError(f"checkpoint {checkpoint.version} is not an attribute-hashing (agnet) model")
    config, embed = evaluation_config(evaluation), embedding_config(embedding)
    data = split_data(captions, caption_tokens, config.split)
    device = pick_device(embed.device)
    training = training_config({**checkpoint.metadata.get("training", {}), "embed_batch_size": embed.batch_size})
    model = model_to(checkpoint.model, device)
    split = CachedSplit(
        model,
        data,
        batch_size=training.embed_batch_size,
        device=device,
        cache_dir=training.feature_cache_dir,
        precision=training.precision,
    )
    image, text = split_outputs(model, split, device)
    return _TestOutputs(data, image, text, checkpoint.model.config.code_bits)


def _codes(outputs: _TestOutputs) -> tuple[torch.Tensor, torch.Tensor]:
    """The packed codes of the gallery images and of the caption queries."""
    return pack_codes(outputs.image.relaxed), pack_codes(outputs.text.relaxed)


def _hamming_search(image_codes: torch.Tensor, text_codes: torch.Tensor, k: int) -> tuple[np.ndarray, float]:
    """Every caption's exact Hamming top-``k`` (FAISS's exact binary index, ties by lower row, as the
    image index searches it): the rows and the seconds the searches took."""
    bits = 8 * image_codes.shape[1]
    index = build_binary_index(image_codes.numpy(), flat_plan(len(image_codes), bits), bits=bits)
    search = BinarySearch(index)
    queries = text_codes.numpy()
    started = time.perf_counter()
    _, rows = search(queries, min(k, len(image_codes)))
    return rows, time.perf_counter() - started


def score_hashing_codes(
    model_checkpoint: Checkpoint,
    captions: pd.DataFrame,
    caption_tokens: TensorBundle,
    evaluation: Mapping[str, Any],
    embedding: Mapping[str, Any],
) -> TensorBundle:
    """``-Hamming distance`` of every caption's packed code to every image's, both directions."""
    outputs = _test_outputs(model_checkpoint, captions, caption_tokens, evaluation, embedding)
    image_codes, text_codes = _codes(outputs)
    started = time.perf_counter()
    scores = hamming_scores(text_codes, image_codes)
    seconds = time.perf_counter() - started
    _, search_seconds = _hamming_search(image_codes, text_codes, SEARCH_K)
    bits = outputs.code_bits
    return scores_bundle(
        outputs.data,
        model_checkpoint,
        {"text_to_image": scores, "image_to_text": scores.t().contiguous()},
        seconds,
        {"code_bits": bits},
        search=GalleryCost(code_bytes(bits), search_seconds),
    )


def score_attribute_space(
    model_checkpoint: Checkpoint,
    captions: pd.DataFrame,
    caption_tokens: TensorBundle,
    evaluation: Mapping[str, Any],
    embedding: Mapping[str, Any],
) -> TensorBundle:
    """Cosine of every caption's attribute vector with every image's (the same model, no hashing)."""
    outputs = _test_outputs(model_checkpoint, captions, caption_tokens, evaluation, embedding)
    image, text = outputs.image.attributes, outputs.text.attributes
    started = time.perf_counter()
    scores = similarity(text, image)
    seconds = time.perf_counter() - started
    search = GalleryCost.of_float_gallery(image, text)
    return scores_bundle(
        outputs.data,
        model_checkpoint,
        {"text_to_image": scores, "image_to_text": scores.t().contiguous()},
        seconds,
        {"attribute_space": True},
        search=search,
    )


def _rescored_by_attributes(queries: torch.Tensor, gallery: torch.Tensor):
    """Two-stage ``rescore``: the attribute space's cosines of the candidates, the very values of
    ``similarity(queries, gallery)`` (so at k = gallery size the ranking is the float row's, ties included)."""

    def rescore(rows: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        return similarity(queries[rows], gallery).gather(1, candidates)

    return rescore


def _rerank_search_seconds(outputs: _TestOutputs, k: int) -> float:
    """Seconds of every caption's search as it would run: the exact Hamming top-``k`` (FAISS), those
    candidates' cosines in the attribute space, and their top :data:`SEARCH_K`."""
    image_codes, text_codes = _codes(outputs)
    rows, hamming_seconds = _hamming_search(image_codes, text_codes, k)
    images = F.normalize(outputs.image.attributes, dim=1)
    started = time.perf_counter()
    texts = F.normalize(outputs.text.attributes, dim=1)
    candidates = torch.from_numpy(rows)
    cosines = torch.einsum("qkd,qd->qk", images[candidates], texts)
    torch.topk(cosines, min(SEARCH_K, cosines.shape[1]), dim=1)
    return hamming_seconds + time.perf_counter() - started


def rerank_codes_by_attributes(
    model_checkpoint: Checkpoint,
    captions: pd.DataFrame,
    caption_tokens: TensorBundle,
    families: Mapping[str, Any],
    evaluation: Mapping[str, Any],
    embedding: Mapping[str, Any],
) -> TensorBundle:
    """The Hamming ranking's top ``families.hash_rerank.k`` per query (both directions) re-ranked by
    the same model's attribute-space cosines; the rest stays below in Hamming order."""
    k = families_config(families).hash_rerank.k
    outputs = _test_outputs(model_checkpoint, captions, caption_tokens, evaluation, embedding)
    image_codes, text_codes = _codes(outputs)
    image, text = outputs.image.attributes, outputs.text.attributes
    started = time.perf_counter()
    hamming = hamming_scores(text_codes, image_codes)
    text_to_image = two_stage_scores(hamming, _rescored_by_attributes(text, image), k)
    seconds = time.perf_counter() - started
    image_to_text = two_stage_scores(hamming.t().contiguous(), _rescored_by_attributes(image, text), k)
    bits = outputs.code_bits
    search = GalleryCost(code_bytes(bits) + 4 * image.shape[1], _rerank_search_seconds(outputs, k))
    return scores_bundle(
        outputs.data,
        model_checkpoint,
        {"text_to_image": text_to_image, "image_to_text": image_to_text},
        seconds,
        {"code_bits": bits, "k": k},
        search=search,
    )


def _predicted_terms(
    probabilities: torch.Tensor, truth: torch.Tensor, vocabulary: AttributeVocabulary, groups
) -> list[str]:
    """One image's predicted attributes: the most probable value of each group the image has a true
    value of (as the accuracy counts them: no ``bag_colour`` without a bag), or every term above 1/2."""
    if groups:
        return [
            vocabulary.terms[max(columns, key=lambda c: float(probabilities[c]))]
            for columns in groups.values()
            if int(truth[columns].sum()) == 1
        ]
    return [term for term, p in zip(vocabulary.terms, probabilities.tolist(), strict=True) if p > 0.5]


def attribute_accuracy_report(
    model_checkpoint: Checkpoint,
    captions: pd.DataFrame,
    caption_tokens: TensorBundle,
    attribute_vocabulary: Mapping[str, Any],
    raw_annotations: Any,
    families: Mapping[str, Any],
    evaluation: Mapping[str, Any],
    embedding: Mapping[str, Any],
) -> tuple[dict[str, Any], Figure]:
    """Per-group (labels) and per-term accuracy of the attribute predictions on the evaluated split,
    against the data's attributes (the demo generator's truth), and a figure of a few test images."""
    vocabulary = _vocabulary(attribute_vocabulary)
    check_vocabulary_of(model_checkpoint.metadata, vocabulary, "attribute_vocabulary")
    outputs = _test_outputs(model_checkpoint, captions, caption_tokens, evaluation, embedding)
    data = outputs.data
    labels = _labels(vocabulary, raw_annotations, families)
    truth = split_targets(vocabulary, captions, data, labels)
    groups = attribute_groups(vocabulary) if vocabulary.source == "labels" else None
    branches = {"image": (outputs.image.attributes, truth.images), "text": (outputs.text.attributes, truth.captions)}
    record = {
        "checkpoint_version": model_checkpoint.version,
        "split": data.split,
        "vocabulary": {"source": vocabulary.source, "terms": len(vocabulary)},
        "branches": attribute_accuracy(branches, vocabulary.terms, groups),
    }
    first_of_identity = list(dict.fromkeys(data.image_identity.tolist()))[:FIGURE_IMAGES]
    shown = [data.image_identity.tolist().index(identity) for identity in first_of_identity]
    examples = [
        AttributeExample(
            path=str(data.image_paths[row]),
            predicted=_predicted_terms(outputs.image.attributes[row], truth.images[row], vocabulary, groups),
            true=list(labels[data.image_ids[row]]) if labels is not None else
            [term for term, on in zip(vocabulary.terms, truth.images[row].tolist(), strict=True) if on],
        )
        for row in shown
    ]  # fmt: skip
    title = f"Attributes predicted from the image (checkpoint {model_checkpoint.version}) against the data's"
    return record, attribute_examples_figure(examples, title=title)
