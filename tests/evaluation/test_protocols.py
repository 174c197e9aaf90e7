"""MSCOCO 1K folds and CUB/Flowers zero-shot metrics against naive per-query references.

References are plain loops: class means in float64, ranked lists by stable ``argsort(-score)``
(index rule), by Python sorts that put tied relevant items last / first (pessimistic /
optimistic), and every ordering of the tied items (expected). Scores come from
``ranking.similarity`` in the orientation the code under test uses, so exact ties agree.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from timam.evaluation.protocols import (
    ap_at_depth,
    class_mean_queries,
    fold_bounds,
    fold_metrics,
    protocol_metrics,
    top1_accuracy,
    zero_shot_metrics,
)
from timam.retrieval.ranking import TIE_RULES, bidirectional_metrics, similarity

# ----------------------------------------------------------------------------- references


def _naive_class_means(texts: torch.Tensor, labels: torch.Tensor) -> np.ndarray:
    rows = texts.double().numpy()
    means = []
    for c in sorted(set(labels.tolist())):
        unit = [row / np.linalg.norm(row) for row, label in zip(rows, labels.tolist(), strict=True) if label == c]
        mean = np.mean(unit, axis=0)
        means.append(mean / np.linalg.norm(mean))
    return np.stack(means)


def _orders(row: list[float], relevant: list[bool], rule: str) -> list[list[int]]:
    """Ranked lists of one query under ``rule`` (all of them for ``expected``)."""
    n = len(row)
    if rule == "index":
        return [sorted(range(n), key=lambda j: (-row[j], j))]
    if rule == "optimistic":
        return [sorted(range(n), key=lambda j: (-row[j], not relevant[j]))]
    if rule == "pessimistic":
        return [sorted(range(n), key=lambda j: (-row[j], relevant[j]))]
    groups = [[j for j in range(n) if row[j] == value] for value in sorted(set(row), reverse=True)]
    return [sum(map(list, perms), []) for perms in itertools.product(*(itertools.permutations(g) for g in groups))]


def _naive_ap(scores: torch.Tensor, query_labels: list[int], gallery_labels: list[int], depth: int, rule: str) -> float:
    per_query = []
    for i, label in enumerate(query_labels):
        row = scores[i].tolist()
        relevant = [g == label for g in gallery_labels]
        hits = [sum(relevant[j] for j in order[:depth]) / depth for order in _orders(row, relevant, rule)]
        per_query.append(sum(hits) / len(hits))
    return 100.0 * sum(per_query) / len(per_query)


def _naive_accuracy(scores: torch.Tensor, image_labels: list[int], classes: list[int], rule: str) -> float:
    """``scores``: images x classes (classes ascending)."""
    right = 0.0
    for i, label in enumerate(image_labels):
        row = scores[i].tolist()
        tied = [classes[c] for c in range(len(classes)) if row[c] == max(row)]
        right += {
            "expected": (label in tied) / len(tied),
            "optimistic": float(label in tied),
            "pessimistic": float(tied == [label]),
            "index": float(tied[0] == label),
        }[rule]
    return 100.0 * right / len(image_labels)


def _naive_ranked_metrics(scores: torch.Tensor, query_labels: list[int], gallery_labels: list[int]) -> dict[str, float]:
    """R@1/5/10, mAP, mINP (percent) with ties by gallery index: stable argsort per query."""
    sums = dict.fromkeys(("R@1", "R@5", "R@10", "mAP", "mINP"), 0.0)
    for i, label in enumerate(query_labels):
        order = np.argsort(-scores[i].numpy(), kind="stable")
        ranks = [r + 1 for r, j in enumerate(order) if gallery_labels[j] == label]
        for k in (1, 5, 10):
            sums[f"R@{k}"] += ranks[0] <= k
        sums["mAP"] += sum((n + 1) / r for n, r in enumerate(ranks)) / len(ranks)
        sums["mINP"] += len(ranks) / ranks[-1]
    return {key: 100.0 * value / len(query_labels) for key, value in sums.items()}


# ----------------------------------------------------------------------------- data


def _zero_shot_case(seed: int, n_images: int, n_classes: int, dim: int = 4):
    """Images drawn from a small palette (exact duplicates tie) and 1-4 captions per image."""
    gen = torch.Generator().manual_seed(seed)
    image_labels = torch.arange(n_images) % n_classes  # every class has images
    palette = torch.randn(max(2, n_images // 2), dim, generator=gen)
    images = palette[torch.randint(0, len(palette), (n_images,), generator=gen)]
    per_image = torch.randint(1, 5, (n_images,), generator=gen)
    text_labels = image_labels.repeat_interleave(per_image)
    texts = images.repeat_interleave(per_image, dim=0) + 0.8 * torch.randn(len(text_labels), dim, generator=gen)
    texts = texts * torch.rand(len(text_labels), 1, generator=gen).add(0.2)  # norms differ: normalise first
    return images, texts, image_labels, text_labels


def _angle(degrees: float) -> list[float]:
    return [math.cos(math.radians(degrees)), math.sin(math.radians(degrees))]


# ----------------------------------------------------------------------------- class-mean queries


def test_class_means_normalise_each_caption_then_the_mean() -> None:
    texts = torch.tensor([[0.0, 3.0], [1.0, 0.0], [2.0, 0.0], [1.0, 0.0]])
    queries, classes = class_mean_queries(texts, torch.tensor([7, 7, 3, 3]))
    assert classes.tolist() == [3, 7]
    expected = torch.tensor([[1.0, 0.0], [2**-0.5, 2**-0.5]])  # not (1, 3)/sqrt(10): captions count equally
    torch.testing.assert_close(queries, expected)
    assert queries.dtype == torch.float32


@pytest.mark.parametrize("seed", [0, 1])
def test_class_means_match_naive_float64(seed: int) -> None:
    _, texts, _, text_labels = _zero_shot_case(seed, n_images=30, n_classes=5, dim=8)
    queries, classes = class_mean_queries(texts, text_labels)
    assert classes.tolist() == sorted(set(text_labels.tolist()))
    np.testing.assert_allclose(queries.double().numpy(), _naive_class_means(texts, text_labels), atol=1e-6)


# ----------------------------------------------------------------------------- AP@depth and top-1 accuracy


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_ap_and_accuracy_match_enumeration_of_ties(seed: int) -> None:
    images, texts, image_labels, text_labels = _zero_shot_case(seed, n_images=8, n_classes=3)
    queries, classes = class_mean_queries(texts, text_labels)
    ap = ap_at_depth(queries, images, classes, image_labels, depth=3, tie_rules=TIE_RULES)
    accuracy = top1_accuracy(images, queries, image_labels, classes, tie_rules=TIE_RULES)
    t2i, i2t = similarity(queries, images), similarity(images, queries)
    assert any(len(set(row.tolist())) < len(row) for row in t2i)  # the palette makes ties
    for rule in TIE_RULES:
        assert ap[rule] == pytest.approx(_naive_ap(t2i, classes.tolist(), image_labels.tolist(), 3, rule), abs=1e-9)
        assert accuracy[rule] == pytest.approx(
            _naive_accuracy(i2t, image_labels.tolist(), classes.tolist(), rule), abs=1e-9
        )
    assert ap["pessimistic"] <= ap["expected"] <= ap["optimistic"]


@pytest.mark.parametrize("seed", [0, 1])
def test_zero_shot_matches_naive_with_small_classes(seed: int) -> None:
    """Deterministic rules on a larger gallery; classes hold 15-16 images, fewer than the depth 20."""
    images, texts, image_labels, text_labels = _zero_shot_case(seed, n_images=94, n_classes=6, dim=6)
    found = zero_shot_metrics(images, texts, image_labels, text_labels, depth=20, tie_rules=TIE_RULES)
    assert found["counts"] == {"classes": 6, "images": 94, "captions": len(texts)}
    queries, classes = class_mean_queries(texts, text_labels)
    t2i, i2t = similarity(queries, images), similarity(images, queries)
    for rule in ("index", "optimistic", "pessimistic"):
        reference = _naive_ap(t2i, classes.tolist(), image_labels.tolist(), 20, rule)
        assert found["results"]["text_to_image"][rule]["AP@20"] == pytest.approx(reference, abs=1e-9)
        reference = _naive_accuracy(i2t, image_labels.tolist(), classes.tolist(), rule)
        assert found["results"]["image_to_text"][rule]["top1_accuracy"] == pytest.approx(reference, abs=1e-9)
    assert found["results"]["text_to_image"]["optimistic"]["AP@20"] <= 100.0 * 16 / 20  # capped at n/depth


def test_hand_computed_ap50_and_accuracy() -> None:
    """Two classes on the unit circle, no ties, default depth 50.

    Class 0: 27 images at 0..26 degrees and 3 at 86..88; class 1: 40 images at 50..85 (0.9 apart).
    Query 0 = (1, 0): its 27 near images first, the 3 far ones last -> 27 of the top 50 (54 %).
    Query 1 = (0, 1): the 3 far class-0 images first, then all 40 of class 1 -> 40/50 (80 %).
    AP@50 = (54 + 80) / 2 = 67. Only the 3 far class-0 images are misclassified: 67/70 images
    (95.71 %, over images; per class it would be (27/30 + 40/40) / 2 = 95 %).
    """
    angles = [float(a) for a in range(27)] + [86.0, 87.0, 88.0] + [50 + 0.9 * i for i in range(40)]
    images = torch.tensor([_angle(a) for a in angles])
    image_labels = torch.tensor([0] * 30 + [1] * 40)
    texts = torch.tensor([[1.0, 0.0], [5.0, 0.0], [0.0, 0.5], [0.0, 2.0], [0.0, 1.0]])
    text_labels = torch.tensor([0, 0, 1, 1, 1])
    found = zero_shot_metrics(images, texts, image_labels, text_labels, tie_rules=TIE_RULES)
    for rule in TIE_RULES:
        assert found["results"]["text_to_image"][rule]["AP@50"] == pytest.approx(67.0)
        assert found["results"]["image_to_text"][rule]["top1_accuracy"] == pytest.approx(100 * 67 / 70)


def test_hand_computed_ties_at_the_cut_and_between_classes() -> None:
    """Depth 2. Images a (class 0) at (1, 0); b (class 0) and c (class 1) both at (0.6, 0.8);
    d (class 1) at (-1, -1)/sqrt(2), equally far from both class queries (1, 0) and (0, 1).

    Query 0 ranks a, then b and c tied for the last place: 2 hits (index, optimistic), 1
    (pessimistic), 1.5 expected -> 100 / 100 / 50 / 75 %. Query 1 ranks b, c first: 1 hit, 50 %.
    AP@2: index 75, optimistic 75, pessimistic 50, expected 62.5.
    Accuracy: a right, b wrong, c right, d tied between classes 0 and 1 (its class is 1): expected
    (2 + 1/2) / 4 = 62.5, optimistic 75, pessimistic 50, index (class 0 wins) 50.
    """
    images = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.6, 0.8], [-1.0, -1.0]])
    image_labels = torch.tensor([0, 0, 1, 1])
    texts = torch.tensor([[1.0, 0.0], [2.0, 0.0], [0.0, 3.0], [0.0, 1.0]])
    text_labels = torch.tensor([0, 0, 1, 1])
    found = zero_shot_metrics(images, texts, image_labels, text_labels, depth=2, tie_rules=TIE_RULES)["results"]
    assert {rule: found["text_to_image"][rule]["AP@2"] for rule in TIE_RULES} == pytest.approx(
        {"expected": 62.5, "optimistic": 75.0, "pessimistic": 50.0, "index": 75.0}
    )
    assert {rule: found["image_to_text"][rule]["top1_accuracy"] for rule in TIE_RULES} == pytest.approx(
        {"expected": 62.5, "optimistic": 75.0, "pessimistic": 50.0, "index": 50.0}
    )


def test_zero_shot_rejects_bad_inputs() -> None:
    images, texts, image_labels, text_labels = _zero_shot_case(0, n_images=8, n_classes=3)
    with pytest.raises(ValueError, match="classes differ"):
        zero_shot_metrics(images, texts[text_labels != 2], image_labels, text_labels[text_labels != 2], depth=3)
    with pytest.raises(ValueError, match="depth must be in"):
        zero_shot_metrics(images, texts, image_labels, text_labels, depth=9)
    with pytest.raises(ValueError, match="tie_rules"):
        zero_shot_metrics(images, texts, image_labels, text_labels, depth=3, tie_rules=("random",))
    with pytest.raises(ValueError, match="each class once"):
        top1_accuracy(images, images[:2], image_labels, torch.tensor([0, 0]))


# ----------------------------------------------------------------------------- MSCOCO 1K folds


def _coco_case(seed: int, n_images: int = 35):
    """5 captions per image (two images with 6 and 7), one repeated caption, caption rows shuffled."""
    gen = torch.Generator().manual_seed(seed)
    images = torch.randn(n_images, 8, generator=gen)
    per_image = torch.full((n_images,), 5)
    per_image[3], per_image[20] = 6, 7
    text_image = torch.arange(n_images).repeat_interleave(per_image)
    texts = images[text_image] + 1.2 * torch.randn(len(text_image), 8, generator=gen)
    texts[5] = texts[0]  # a caption of image 1 repeats one of image 0: they tie
    shuffle = torch.randperm(len(text_image), generator=gen)
    return images, texts[shuffle], text_image[shuffle]


def test_fold_bounds_are_consecutive_and_complete() -> None:
    assert fold_bounds(5000, 1000) == [(0, 1000), (1000, 2000), (2000, 3000), (3000, 4000), (4000, 5000)]
    with pytest.raises(ValueError, match="do not split into folds"):
        fold_bounds(4999, 1000)
    with pytest.raises(ValueError, match="do not split into folds"):
        fold_bounds(500, 1000)


@pytest.mark.parametrize("seed", [0, 1])
def test_fold_mean_matches_separately_ranked_folds(seed: int) -> None:
    images, texts, text_image = _coco_case(seed)
    found = fold_metrics(
        images, texts, torch.arange(35), text_image, text_image, fold_images=7, tie_rules=("expected", "index")
    )
    assert found["counts"] == {"folds": 5, "fold_images": 7, "images": 35}
    naive: dict[str, list[dict[str, float]]] = {"image_to_text": [], "text_to_image": []}
    separate = []
    for lo in range(0, 35, 7):
        keep = [j for j in range(len(text_image)) if lo <= int(text_image[j]) < lo + 7]
        fold_texts, fold_labels = texts[keep], text_image[keep].tolist()
        image_labels = list(range(lo, lo + 7))
        naive["image_to_text"].append(
            _naive_ranked_metrics(similarity(images[lo : lo + 7], fold_texts), image_labels, fold_labels)
        )
        naive["text_to_image"].append(
            _naive_ranked_metrics(similarity(fold_texts, images[lo : lo + 7]), fold_labels, image_labels)
        )
        separate.append(
            bidirectional_metrics(
                images[lo : lo + 7],
                fold_texts,
                torch.tensor(image_labels),
                torch.tensor(fold_labels),
                tie_rules=("expected",),
            )
        )
    for direction, folds in naive.items():
        for key, ours in found["results"][direction]["index"].items():
            assert ours == pytest.approx(sum(fold[key] for fold in folds) / 5, abs=1e-9), (direction, key)
        for key, ours in found["results"][direction]["expected"].items():
            assert ours == pytest.approx(sum(fold[direction]["expected"][key] for fold in separate) / 5, abs=1e-9)
    assert [fold["text_to_image"]["expected"] for fold in found["per_fold"]] == [
        fold["text_to_image"]["expected"] for fold in separate
    ]
    whole = bidirectional_metrics(images, texts, torch.arange(35), text_image)
    for direction in ("image_to_text", "text_to_image"):
        assert found["results"][direction]["expected"]["R@1"] > whole[direction]["expected"]["R@1"]  # 7 vs 35 images


def test_protocol_dispatch_names_its_protocol_and_refuses_an_unknown_one():
    images, texts = torch.eye(4), torch.eye(4)
    labels = torch.arange(4)
    common = dict(
        image_emb=images,
        text_emb=texts,
        image_labels=labels,
        text_labels=labels,
        text_image=labels,
        image_classes=labels,
        text_classes=labels,
    )
    assert protocol_metrics("standard", **common) is None
    folds = protocol_metrics("coco_1k_folds", fold_images=2, ks=(1,), **common)
    assert folds["name"] == "coco_1k_folds" and folds["results"]["text_to_image"]["expected"]["R@1"] == 100.0
    with pytest.raises(
        ValueError, match=r"protocol must be one of \['standard', 'coco_1k_folds', 'zero_shot_classes'\]"
    ):
        protocol_metrics("coco_5k", **common)
