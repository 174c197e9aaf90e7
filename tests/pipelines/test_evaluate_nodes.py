"""Evaluation nodes on fake embeddings: mR, paper rows, recall curve, example grids, training curves."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from matplotlib.figure import Figure
from PIL import Image

from timam.formats.tensor_bundle import TensorBundle
from timam.pipelines.evaluate.nodes import (
    plot_best_and_worst_queries,
    plot_recall_curve,
    plot_retrieval_examples,
    plot_training_curves,
    rank_test_split,
)
from timam.retrieval.ranking import bidirectional_metrics, per_query_metrics
from timam.retrieval.relevance import embedded_split_labels

EVALUATION = {
    "dataset": "demo",
    "split": "test",
    "relevance": "identity",
    "ks": [1, 5, 10],
    "tie_rules": ["expected", "index"],
    "curve_max_k": 50,
    "examples": {"queries": 3, "top_k": 4, "seed": 0},
    "paper_results": {"cuhk_pedes": {"rows": [{"method": "TIMAM", "text_to_image": {"R@1": 54.51}}]}},
}


@pytest.fixture(scope="module")
def bundles(tmp_path_factory) -> tuple[TensorBundle, TensorBundle]:
    """12 images of 6 identities, 2 captions each; embeddings close to their identity's prototype."""
    folder = tmp_path_factory.mktemp("imgs")
    g = torch.Generator().manual_seed(0)
    identity = torch.arange(12) // 2
    prototypes = torch.randn(6, 8, generator=g)
    images = prototypes[identity] + 0.5 * torch.randn(12, 8, generator=g)
    image_index = torch.arange(24) // 2
    texts = prototypes[identity[image_index]] + 0.5 * torch.randn(24, 8, generator=g)
    paths = []
    for i in range(12):
        path = folder / f"{i}.png"
        Image.new("RGB", (20, 40), (20 * i, 100, 200)).save(path)
        paths.append(str(path))
    provenance = {
        "checkpoint_version": "2026-01-01T00.00.00.000Z",
        "checkpoint": {"best_epoch": 2, "val_t2i_R@1": 30.0},
        "training": {"epochs": 2},
        "split": "test",
    }
    image_bundle = TensorBundle(
        {"embeddings": images, "identity": identity},
        {**provenance, "image_ids": [f"i{i}" for i in range(12)], "image_paths": paths},
    )
    text_bundle = TensorBundle(
        {"embeddings": texts, "identity": identity[image_index], "image_index": image_index},
        {
            **provenance,
            "caption_ids": [f"c{i}" for i in range(24)],
            "captions": [f"caption {i} of person {int(identity[i // 2])}" for i in range(24)],
        },
    )
    return image_bundle, text_bundle


def test_rank_adds_mr_dataset_and_says_when_no_paper_numbers(bundles):
    metrics, report = rank_test_split(*bundles, EVALUATION)
    results = metrics["results"]
    expected = [results[d]["expected"][f"R@{k}"] for d in ("text_to_image", "image_to_text") for k in (1, 5, 10)]
    assert metrics["mR"]["expected"] == pytest.approx(sum(expected) / 6)
    assert metrics["protocol"]["dataset"] == "demo"
    assert "No published numbers for this dataset." in report


def test_rank_sets_paper_numbers_beside_ours(bundles):
    _, report = rank_test_split(*bundles, {**EVALUATION, "dataset": "cuhk_pedes"})
    assert "| TIMAM | 54.51 |" in report


def test_recall_curve_node_matches_metrics(bundles):
    figure = plot_recall_curve(*bundles, EVALUATION)
    assert isinstance(figure, Figure)
    image_labels, text_labels = embedded_split_labels(*bundles, "identity")
    reference = bidirectional_metrics(
        bundles[0].tensors["embeddings"],
        bundles[1].tensors["embeddings"],
        image_labels,
        text_labels,
        ks=(1, 5, 10),
        metrics=("R@K",),
    )
    lines = {
        line.get_label().split(" (")[0]: line.get_ydata()
        for line in figure.axes[0].lines
        if not line.get_label().startswith("_") and "chance" not in line.get_label()
    }
    for label, direction in (("text \u2192 image", "text_to_image"), ("image \u2192 text", "image_to_text")):
        for k in (1, 5, 10):
            assert lines[label][k - 1] == pytest.approx(reference[direction]["expected"][f"R@{k}"])
    assert len(lines["text \u2192 image"]) == 12 and len(lines["image \u2192 text"]) == 24  # K clipped to the gallery
    legend = [text.get_text() for text in figure.axes[0].get_legend().get_texts()]
    assert f"R@1 {reference['text_to_image']['expected']['R@1']:.1f}" in legend[0]


def test_example_grids_show_top_k_with_hits(bundles):
    t2i, i2t = plot_retrieval_examples(*bundles, EVALUATION)
    assert len(t2i.subfigs) == 3 and len(i2t.subfigs) == 3
    first = t2i.subfigs[0]
    assert first.get_suptitle().startswith("caption")
    labelled = [ax.get_xlabel() for ax in first.axes if ax.get_xlabel()]
    assert labelled[0] == "described image" and len(labelled) == 5  # target + top 4
    assert all(label.startswith(("\u2713", "\u2717")) for label in labelled[1:])


def test_best_and_worst_queries_are_the_extremes_of_average_precision(bundles):
    t2i, i2t = plot_best_and_worst_queries(*bundles, {**EVALUATION, "examples": {"top_k": 4, "best_worst": 2}})
    assert len(t2i.subfigs) == 4 and len(i2t.subfigs) == 4  # 2 best + 2 worst each way
    images, texts = bundles[0].tensors["embeddings"], bundles[1].tensors["embeddings"]
    image_labels, text_labels = embedded_split_labels(*bundles, "identity")
    ap = per_query_metrics(texts, images, text_labels, image_labels, metrics=("mAP",))["mAP"]
    titles = [sub.get_suptitle() for sub in t2i.subfigs]
    assert titles[0].startswith(f"[best 1, AP {float(ap.max()):.3f}]")
    assert titles[2].startswith(f"[worst 1, AP {float(ap.min()):.3f}]")
    worst_caption = bundles[1].metadata["captions"][int(ap.argmin())]
    assert worst_caption in titles[2]
    assert float(ap.min()) < float(ap.max())  # the fixture has both easy and hard queries
    i2t_ap = per_query_metrics(images, texts, image_labels, text_labels, metrics=("mAP",))["mAP"]
    labels = [sub.axes[0].get_xlabel() for sub in i2t.subfigs]
    assert labels[0] == f"[best 1, AP {float(i2t_ap.max()):.3f}]"
    assert labels[3].startswith("[worst 2, AP")
    # every shown result is marked hit or miss, and a worst query's top result is a miss
    worst_results = [ax.get_xlabel() for ax in t2i.subfigs[2].axes if ax.get_xlabel()][1:]
    assert len(worst_results) == 4 and worst_results[0].startswith("\u2717")


def test_example_grids_need_paths_from_a_current_evaluation(bundles):
    images, texts = bundles
    old = TensorBundle(images.tensors, {k: v for k, v in images.metadata.items() if k != "image_paths"})
    with pytest.raises(ValueError, match="re-run `kedro run --pipelines evaluate`"):
        plot_retrieval_examples(old, texts, EVALUATION)


def _history(value: float) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "epoch": [1, 2],
            "lr": [1e-3, 1e-4],
            "loss_total": [value, value / 2],
            "val_t2i_R@1": [1.0, 2.0],
            "val_i2t_R@1": [1.5, 2.5],
            "seconds": [1.0, 1.0],
        }
    )


def test_training_curves_of_the_evaluated_checkpoint(bundles):
    images = bundles[0]
    versions = {"2026-01-01T00.00.00.000Z": _history(4.0), "2026-02-01T00.00.00.000Z": _history(9.0)}
    figure = plot_training_curves(versions, images)
    assert figure.get_suptitle() == "Training history of checkpoint 2026-01-01T00.00.00.000Z"
    assert figure.axes[0].lines[0].get_ydata()[0] == 4.0


def test_training_curves_fall_back_to_the_latest_and_say_so(bundles):
    figure = plot_training_curves({"2026-02-01T00.00.00.000Z": _history(9.0)}, bundles[0])
    assert figure.get_suptitle().startswith("LATEST training history (2026-02-01T00.00.00.000Z)")
    assert "No training history" in plot_training_curves({}, bundles[0]).axes[0].texts[0].get_text()


@pytest.mark.parametrize("protocol", ["standard", "coco_1k_folds", "zero_shot_classes"])
def test_rank_emits_the_section_of_each_protocol(bundles, protocol):
    evaluation = {**EVALUATION, "protocol": protocol, "coco_fold_images": 4, "zero_shot_depth": 4}
    metrics, report = rank_test_split(*bundles, evaluation)
    assert metrics["protocol"]["name"] == protocol
    assert f"protocol: {protocol}" in report
    if protocol == "standard":
        assert "protocol_results" not in metrics and "## Protocol" not in report
        return
    section = metrics["protocol_results"]
    assert section["name"] == protocol
    assert set(section["results"]) == {"text_to_image", "image_to_text"}
    assert all(set(values) == {"expected", "index"} for values in section["results"].values())
    assert f"## Protocol {protocol}" in report and "| **this run** (index ties) |" in report
    if protocol == "coco_1k_folds":
        assert section["counts"] == {"folds": 3, "fold_images": 4, "images": 12}
        folds = [fold["text_to_image"]["expected"]["R@1"] for fold in section["per_fold"]]
        assert section["results"]["text_to_image"]["expected"]["R@1"] == pytest.approx(sum(folds) / 3)
    else:
        assert section["counts"] == {"classes": 6, "images": 12, "captions": 24}
        assert set(section["results"]["text_to_image"]["expected"]) == {"AP@4"}
        assert set(section["results"]["image_to_text"]["expected"]) == {"top1_accuracy"}
        assert "per_fold" not in section


def test_rank_sets_zero_shot_paper_numbers_in_the_protocol_section(bundles):
    paper = {
        "source": "TIMAM Table 3",
        "protocol": "zero_shot_classes",
        "counts": {"classes": 6},
        "rows": [{"method": "TIMAM", "text_to_image": {"AP@4": 70.3}, "image_to_text": {"top1_accuracy": 67.7}}],
    }
    evaluation = {
        **EVALUATION,
        "dataset": "cub",
        "protocol": "zero_shot_classes",
        "zero_shot_depth": 4,
        "paper_results": {"cub": paper},
    }
    _, report = rank_test_split(*bundles, evaluation)
    assert "| TIMAM | 70.30 | 67.70 |" in report
    assert "use the zero_shot_classes protocol; they are in the protocol section above, where comparable" in report
    _, report = rank_test_split(*bundles, {**evaluation, "protocol": "standard"})
    assert "| TIMAM |" not in report and "need `evaluation.protocol: zero_shot_classes`" in report
    wrong = {**paper, "counts": {"classes": 50}}
    _, report = rank_test_split(*bundles, {**evaluation, "paper_results": {"cub": wrong}})
    assert "| TIMAM |" not in report and "their test split has 50 classes, this run 6" in report


def test_rank_refuses_an_unknown_protocol(bundles):
    with pytest.raises(ValueError, match="evaluation.protocol must be one of"):
        rank_test_split(*bundles, {**EVALUATION, "protocol": "coco_1k"})
