"""Published evaluation protocols that differ from ranking the whole test split once.

``evaluation.protocol`` (set per dataset environment) picks one of :data:`PROTOCOLS`; its numbers
are reported beside the standard ones of :mod:`timam.retrieval.ranking`, never instead of them.

``"standard"``
    nothing extra: every caption queries every test image and vice versa.
``"coco_1k_folds"``
    MSCOCO 1K: the 5K test images are cut, in test-split order, into consecutive folds of 1,000
    (images 0-999, 1000-1999, ...), each with its own captions. Every fold is ranked on its own
    (queries and gallery restricted to the fold) and each metric is the mean of the per-fold
    values, as in VSE++ and SCAN: ``M_1K = (1/F) * sum_f M(fold f)``.
``"zero_shot_classes"``
    CUB-200 / Oxford-102 zero-shot retrieval (Reed et al., CVPR 2016; TIMAM Table 3). Each test
    class c gets one text query ``q_c = normalize(mean_{t in c} normalize(tau(t)))``.
    Text->image "AP@50" is Reed et al.'s definition (Reed, Akata, Lee and Schiele, "Learning Deep
    Representations of Fine-Grained Visual Descriptions", CVPR 2016, section 5.2; TIMAM, Sarafianos
    et al., ICCV 2019, Table 3, uses it unchanged), the precision of the top 50 images averaged
    over classes: ``AP@50 = (1/C) sum_c hits_c(50) / 50``
    with ``hits_c(50)`` the images of class c among the 50 best-scored for ``q_c`` (their code
    averages the 0/1 matches of the first 50 ranks). It is not the mean of the precision at each
    hit: a class with n < 50 test images scores at most n/50. Image->text is top-1 accuracy: an
    image is right when its own class query scores highest, averaged over images (Reed et al.'s
    released evaluation code divides correct images by all images).
    Reed et al. average unnormalised text features and score by dot product; here captions are
    L2-normalised before the mean and scores are cosine, as everywhere in this project.

Scores are float32 cosine similarities from :func:`~timam.retrieval.ranking.similarity`, and every
number carries the tie rules of :data:`~timam.retrieval.ranking.TIE_RULES`: ``expected`` is exact
under random order of tied scores, ``optimistic``/``pessimistic`` its bounds, ``index`` the order
of a stable ``argsort(-score)`` (ties by ascending gallery index; for accuracy, by class id).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor

from timam.retrieval.ranking import (
    bidirectional_metrics,
    check_labels,
    check_tie_rules,
    prepare_embeddings,
    ranking_metrics,
    similarity,
)

__all__ = [
    "PROTOCOLS",
    "ap_at_depth",
    "class_mean_queries",
    "fold_bounds",
    "fold_metrics",
    "mean_over_folds",
    "protocol_metrics",
    "top1_accuracy",
    "zero_shot_metrics",
]

Protocol = Literal["standard", "coco_1k_folds", "zero_shot_classes"]
PROTOCOLS: tuple[str, ...] = get_args(Protocol)

Results = dict[str, dict[str, dict[str, float]]]  # {direction: {tie rule: {metric: percent}}}


# --------------------------------------------------------------------------------------------
# MSCOCO 1K folds
# --------------------------------------------------------------------------------------------


def fold_bounds(n_images: int, fold_images: int) -> list[tuple[int, int]]:
    """``[lo, hi)`` image ranges of consecutive folds; a partial last fold would be another protocol."""
    if fold_images < 1 or n_images < fold_images or n_images % fold_images:
        raise ValueError(
            f"{n_images} test images do not split into folds of {fold_images}; the fold protocol needs a "
            "whole number of folds (MSCOCO 1K: the 5K test split, evaluation.coco_fold_images 1000)"
        )
    return [(lo, lo + fold_images) for lo in range(0, n_images, fold_images)]


def mean_over_folds(per_fold: Sequence[Results]) -> Results:
    """Each metric averaged over folds (not pooled over queries: folds weigh the same)."""
    first = per_fold[0]
    return {
        direction: {
            rule: {key: sum(fold[direction][rule][key] for fold in per_fold) / len(per_fold) for key in values}
            for rule, values in rules.items()
        }
        for direction, rules in first.items()
    }


def fold_metrics(
    image_emb: Tensor,
    text_emb: Tensor,
    image_labels: Tensor,
    text_labels: Tensor,
    text_image: Tensor,
    *,
    fold_images: int = 1000,
    ks: Sequence[int] = (1, 5, 10),
    tie_rules: Sequence[str] = ("expected",),
) -> dict[str, Any]:
    """Both directions ranked inside each fold of ``fold_images`` images, and their mean.

    A caption belongs to the fold of its image (``text_image``: index into ``image_emb``), so
    captions need not be stored in image order. Returns ``{"counts", "results", "per_fold"}``;
    ``results`` is :func:`mean_over_folds` of the per-fold :func:`bidirectional_metrics`.
    """
    text_image = check_labels(text_image, text_emb.shape[0], "text_image", torch.device("cpu"))
    image_labels = check_labels(image_labels, image_emb.shape[0], "image_labels", torch.device("cpu"))
    text_labels = check_labels(text_labels, text_emb.shape[0], "text_labels", torch.device("cpu"))
    per_fold = []
    for lo, hi in fold_bounds(image_emb.shape[0], fold_images):
        captions = ((text_image >= lo) & (text_image < hi)).nonzero().flatten()
        per_fold.append(
            bidirectional_metrics(
                image_emb[lo:hi],
                text_emb[captions.to(text_emb.device)],
                image_labels[lo:hi],
                text_labels[captions],
                ks=ks,
                tie_rules=tie_rules,
            )
        )
    counts = {"folds": len(per_fold), "fold_images": fold_images, "images": int(image_emb.shape[0])}
    return {"counts": counts, "results": mean_over_folds(per_fold), "per_fold": per_fold}


# --------------------------------------------------------------------------------------------
# CUB / Flowers zero-shot
# --------------------------------------------------------------------------------------------


def class_mean_queries(text_emb: Tensor, text_labels: Tensor) -> tuple[Tensor, Tensor]:
    """One unit-norm query per class (the mean of its normalised captions), and the class ids, ascending.

    A plain loop over classes: a scatter-add would sum in a nondeterministic order on CUDA.
    """
    texts = prepare_embeddings(text_emb, True, "text_emb")
    labels = check_labels(text_labels, texts.shape[0], "text_labels", texts.device)
    if texts.shape[0] == 0:
        raise ValueError("need at least one caption")
    classes = torch.unique(labels, sorted=True)
    means = torch.stack([texts[labels == c].mean(dim=0) for c in classes])
    return F.normalize(means, p=2.0, dim=1), classes


def _hits_in_top(scores: Tensor, relevant: Tensor, depth: int, rule: str) -> Tensor:
    """Relevant items among the first ``depth`` ranks of each row (float64), under tie ``rule``.

    Items scored above the ``depth``-th score are all in; of the ``slots`` places left, items tied
    with it fill them in random order (expected: hypergeometric mean), relevant first
    (optimistic), irrelevant first (pessimistic) or by ascending index (index).
    """
    kth = torch.topk(scores, depth, dim=1).values[:, -1:]
    above, tied = scores > kth, scores == kth
    rel_above = (above & relevant).sum(dim=1).to(torch.float64)
    n_tied = tied.sum(dim=1).to(torch.float64)
    rel_tied = (tied & relevant).sum(dim=1).to(torch.float64)
    slots = depth - above.sum(dim=1).to(torch.float64)  # >= 1: the depth-th item itself is tied
    if rule == "expected":
        return rel_above + slots * rel_tied / n_tied
    if rule == "optimistic":
        return rel_above + torch.minimum(slots, rel_tied)
    if rule == "pessimistic":
        return rel_above + (slots - (n_tied - rel_tied)).clamp(min=0.0)
    first_tied = tied & (torch.cumsum(tied, dim=1) <= slots[:, None])
    return rel_above + (first_tied & relevant).sum(dim=1).to(torch.float64)


def ap_at_depth(
    query_emb: Tensor,
    gallery_emb: Tensor,
    query_labels: Tensor,
    gallery_labels: Tensor,
    *,
    depth: int = 50,
    tie_rules: Sequence[str] = ("expected",),
) -> dict[str, float]:
    """Reed et al.'s AP@``depth`` (percent): relevant share of the top ``depth`` items, mean over queries.

    That is precision at ``depth`` with denominator ``depth`` even when fewer relevant items exist
    (see the module docstring). The dense ``queries x gallery`` scores are kept: one query per class.
    """
    tie_rules = check_tie_rules(tie_rules)
    scores = similarity(query_emb, gallery_emb)
    if not 1 <= depth <= scores.shape[1]:
        raise ValueError(f"depth must be in [1, {scores.shape[1]}] (the gallery size), got {depth}")
    ql = check_labels(query_labels, scores.shape[0], "query_labels", scores.device)
    gl = check_labels(gallery_labels, scores.shape[1], "gallery_labels", scores.device)
    relevant = ql[:, None] == gl[None, :]
    return {rule: 100.0 * float(_hits_in_top(scores, relevant, depth, rule).mean()) / depth for rule in tie_rules}


def top1_accuracy(
    image_emb: Tensor,
    class_emb: Tensor,
    image_labels: Tensor,
    class_labels: Tensor,
    *,
    tie_rules: Sequence[str] = ("expected",),
) -> dict[str, float]:
    """Images whose most similar class query is their own class (percent of images).

    With one gallery item per class this is image->class R@1, so :func:`ranking_metrics` gives it
    under every tie rule.
    """
    tie_rules = check_tie_rules(tie_rules)
    if torch.unique(torch.as_tensor(class_labels)).numel() != len(class_labels):
        raise ValueError("class_labels must name each class once")
    found = ranking_metrics(
        image_emb, class_emb, image_labels, class_labels, ks=(1,), tie_rules=tie_rules, metrics=("R@K",)
    )
    return {rule: found[rule]["R@1"] for rule in tie_rules}


def zero_shot_metrics(
    image_emb: Tensor,
    text_emb: Tensor,
    image_labels: Tensor,
    text_labels: Tensor,
    *,
    depth: int = 50,
    tie_rules: Sequence[str] = ("expected",),
) -> dict[str, Any]:
    """Class-mean text queries: text->image AP@``depth`` and image->text top-1 accuracy.

    Labels are classes. Every image class needs captions and every caption class images (test
    classes of a zero-shot split). Returns ``{"counts", "results"}`` with ``results`` shaped like
    :func:`bidirectional_metrics` (``AP@50`` for text->image, ``top1_accuracy`` for image->text).
    """
    queries, classes = class_mean_queries(text_emb, text_labels)
    image_labels = check_labels(image_labels, image_emb.shape[0], "image_labels", classes.device)
    image_classes = set(torch.unique(image_labels).tolist())
    if image_classes != set(classes.tolist()):
        raise ValueError(
            f"image and caption classes differ: {len(image_classes - set(classes.tolist()))} image classes "
            f"without captions, {len(set(classes.tolist()) - image_classes)} caption classes without images"
        )
    ap = ap_at_depth(queries, image_emb, classes, image_labels, depth=depth, tie_rules=tie_rules)
    accuracy = top1_accuracy(image_emb, queries, image_labels, classes, tie_rules=tie_rules)
    counts = {"classes": int(classes.numel()), "images": int(image_emb.shape[0]), "captions": int(text_emb.shape[0])}
    results = {
        "text_to_image": {rule: {f"AP@{depth}": value} for rule, value in ap.items()},
        "image_to_text": {rule: {"top1_accuracy": value} for rule, value in accuracy.items()},
    }
    return {"counts": counts, "results": results}


# --------------------------------------------------------------------------------------------
# Dispatch
# --------------------------------------------------------------------------------------------


def protocol_metrics(
    protocol: str,
    *,
    image_emb: Tensor,
    text_emb: Tensor,
    image_labels: Tensor,
    text_labels: Tensor,
    text_image: Tensor,
    image_classes: Tensor,
    text_classes: Tensor,
    fold_images: int = 1000,
    zero_shot_depth: int = 50,
    ks: Sequence[int] = (1, 5, 10),
    tie_rules: Sequence[str] = ("expected",),
) -> dict[str, Any] | None:
    """The numbers of ``protocol`` (one of :data:`PROTOCOLS`) with its name; None for ``standard``.

    ``coco_1k_folds`` ranks the folds under the run's relevance labels; ``zero_shot_classes``
    always works on classes (``image_classes``/``text_classes``), whatever the run's relevance.
    """
    if protocol == "coco_1k_folds":
        found = fold_metrics(
            image_emb,
            text_emb,
            image_labels,
            text_labels,
            text_image,
            fold_images=fold_images,
            ks=ks,
            tie_rules=tie_rules,
        )
    elif protocol == "zero_shot_classes":
        found = zero_shot_metrics(
            image_emb, text_emb, image_classes, text_classes, depth=zero_shot_depth, tie_rules=tie_rules
        )
    elif protocol == "standard":
        return None
    else:
        raise ValueError(f"protocol must be one of {list(PROTOCOLS)}, got {protocol!r}")
    return {"name": protocol, **found}
