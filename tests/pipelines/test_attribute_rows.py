"""The attribute family's rows at the node level, on a tiny AgNet-style model trained on the tiny demo:
Hamming-row metrics are the ranking engine's count of the Hamming scores, the float re-rank at full
k is the float row, the vocabulary is a versioned artifact read back, and the accuracy report scores
the predictions against the generator's truth."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision
from kedro.io.core import Version
from matplotlib.figure import Figure

from tests.training.tiny_run import tiny_bert_model, tiny_captions
from timam.inference.embedding import image_outputs, text_outputs
from timam.inference.split_data import split_data
from timam.io.atomic_datasets import AtomicJSONDataset
from timam.io.demo_dataset import DemoReidRawDataset
from timam.pipelines.families.attribute_nodes import (
    attribute_accuracy_report,
    fit_attribute_vocabulary,
    rerank_codes_by_attributes,
    score_attribute_space,
    score_hashing_codes,
    train_hashing_model,
)
from timam.pipelines.families.nodes import rank_pair_scores
from timam.retrieval.hamming import hamming_scores, pack_codes
from timam.retrieval.ranking import TIE_RULES, bidirectional_score_metrics
from timam.retrieval.relevance import relevance_labels
from timam.sources.attributes import AttributeVocabulary

EMBEDDING = {"device": "cpu", "batch_size": 16}
EVALUATION = {"tie_rules": list(TIE_RULES)}
FAMILIES = {"attribute_vocabulary": {"min_count": 1}}


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory):
    """The tiny demo, its vocabulary (the generator's labels) and a 16-bit AgNet-style checkpoint."""
    workdir = tmp_path_factory.mktemp("attribute_rows")
    captions, tokens = tiny_captions(workdir)
    raw = DemoReidRawDataset(filepath=str(workdir / "raw" / "reid_raw.json")).load()
    weights = workdir / "resnet18.pt"
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18().state_dict(), weights)
    model = {
        "family": "agnet",
        "image_backbone": "resnet18",
        "image_library": "torchvision",
        "image_weights": str(weights),
        "image_size": [64, 32],
        "text_model": tiny_bert_model(workdir).text_model,
        "code_bits": 16,
        "attribute_hidden": 32,
        "hash_hidden": 32,
    }
    training = {
        "epochs": 2,
        "batch_size": 16,
        "device": "cpu",
        "feature_cache_dir": str(workdir / "cache"),
        "loss_weights": {
            "identification": 0.0,
            "cmpm": 0.0,
            "adversarial": 0.0,
            "attribute_prediction": 1.0,
            "similarity_preserving": 1.0,
            "quantization": 0.1,
        },
    }
    vocabulary = fit_attribute_vocabulary(captions, raw, FAMILIES)
    tokens.metadata["tokenizer"] = model["text_model"]  # the tiny BERT reads MiniLM's ids
    checkpoint, _ = train_hashing_model(captions, tokens, vocabulary, raw, model, training, FAMILIES)
    checkpoint.version = "2026-01-01T00.00.00.000Z"
    return workdir, captions, tokens, raw, vocabulary, checkpoint


def test_the_vocabulary_is_a_versioned_artifact_read_back_as_the_checkpoint_recorded_it(trained) -> None:
    workdir, *_, vocabulary, checkpoint = trained
    dataset = AtomicJSONDataset(filepath=str(workdir / "attribute_vocabulary.json"), version=Version(None, None))
    dataset.save(vocabulary)
    saved = list((workdir / "attribute_vocabulary.json").iterdir())
    assert len(saved) == 1 and (saved[0] / "attribute_vocabulary.json").is_file()
    read = AttributeVocabulary.from_dict(AtomicJSONDataset(filepath=str(workdir / "attribute_vocabulary.json"),
                                                           version=Version(None, None)).load())  # fmt: skip
    assert read.source == "labels" and list(read.terms) == checkpoint.metadata["attribute_vocabulary"]["terms"]
    assert checkpoint.model.config.num_attributes == len(read)


def _labels(bundle):
    tensors = bundle.tensors
    return relevance_labels(
        image_identity=tensors["image_identity"],
        caption_identity=tensors["caption_identity"],
        caption_image=tensors["caption_image"],
        relevance="identity",
    )


def test_hamming_row_metrics_are_the_ranking_engines_count_of_the_packed_codes(trained) -> None:
    _, captions, tokens, _, _, checkpoint = trained
    bundle = score_hashing_codes(checkpoint, captions, tokens, EVALUATION, EMBEDDING)
    metrics, report = rank_pair_scores(bundle, EVALUATION)
    # The codes again, through the embedding path the index and the evaluate pipeline take.
    test = split_data(captions, tokens, "test")
    model, cpu = checkpoint.model, torch.device("cpu")
    common = {"batch_size": 5, "device": cpu, "desc": "x", "show_progress": False, "precision": "auto"}
    images = image_outputs(model, test.image_paths, project=True, **common)
    texts = text_outputs(model, test.input_ids, test.attention_mask, project=True, **common)
    scores = hamming_scores(pack_codes(texts), pack_codes(images))
    assert torch.equal(bundle.tensors["text_to_image"], scores)
    assert bool((scores == scores.round()).all()) and len(scores.unique()) <= 17  # integer distances: ties
    image_labels, text_labels = _labels(bundle)
    direct = bidirectional_score_metrics(scores, image_labels, text_labels, tie_rules=TIE_RULES)
    assert metrics["results"] == direct
    assert metrics["cost"]["bytes_per_image"] == 2.0 and metrics["cost"]["search_ms_per_query"] > 0
    assert metrics["checkpoint"]["val_t2i_R@1"] == checkpoint.metadata["val_t2i_R@1"]


def test_the_hamming_top_k_re_ranked_at_full_k_is_the_float_attribute_row(trained) -> None:
    _, captions, tokens, _, _, checkpoint = trained
    floats, _ = rank_pair_scores(score_attribute_space(checkpoint, captions, tokens, EVALUATION, EMBEDDING), EVALUATION)
    everything = {"hash_rerank": {"k": 1000}}
    rerank = rerank_codes_by_attributes(checkpoint, captions, tokens, everything, EVALUATION, EMBEDDING)
    reranked, _ = rank_pair_scores(rerank, EVALUATION)
    assert reranked["results"] == floats["results"]
    # A short list keeps the Hamming order below it: another ranking, with the codes' and the vectors' bytes.
    short, _ = rank_pair_scores(
        rerank_codes_by_attributes(checkpoint, captions, tokens, {"hash_rerank": {"k": 1}}, EVALUATION, EMBEDDING),
        EVALUATION,
    )
    assert short["cost"]["bytes_per_image"] == 2 + 4 * checkpoint.model.config.num_attributes
    assert floats["cost"]["bytes_per_image"] == 4 * checkpoint.model.config.num_attributes


def test_attribute_accuracy_is_scored_against_the_generators_truth(trained, tmp_path: Path) -> None:
    _, captions, tokens, raw, vocabulary, checkpoint = trained
    record, figure = attribute_accuracy_report(
        checkpoint, captions, tokens, vocabulary, raw, FAMILIES, EVALUATION, EMBEDDING
    )
    groups = record["branches"]["image"]["groups"]
    assert {"gender", "hair_colour", "upper", "upper_colour", "lower", "bag", "glasses"} <= set(groups)
    test_images = len(split_data(captions, tokens, "test").image_paths)
    assert groups["gender"]["items"] == test_images and 0 <= groups["gender"]["accuracy"] <= 100
    assert record["checkpoint_version"] == checkpoint.version and record["vocabulary"]["source"] == "labels"
    assert isinstance(figure, Figure) and len(figure.axes) >= 2
    other = AttributeVocabulary.from_dict(vocabulary)
    changed = {**vocabulary, "terms": list(reversed(other.terms))}
    with pytest.raises(ValueError, match="differs from the one the checkpoint was trained with"):
        attribute_accuracy_report(checkpoint, captions, tokens, changed, raw, FAMILIES, EVALUATION, EMBEDDING)
