"""How well an attribute model predicts attributes: per group against the data's truth, and per term.

The demo draws each person from attributes (``gender=female``, ``upper_colour=red``...: exactly one
value per group and person), so a group's prediction is the value with the highest predicted
probability among its columns, and its accuracy is measured against the generator's truth beside
the majority baseline (always answering the group's most frequent test value). Every vocabulary,
mined caption terms included, also gets per-term precision, recall and F1 of the predictions above
one half. The image branch predicts from the image, the text branch from one caption (the caption's
truth is its image's labels, or its own terms for a caption vocabulary).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

THRESHOLD = 0.5


def _check(probabilities: Tensor, truth: Tensor, terms: Sequence[str]) -> None:
    if probabilities.dim() != 2 or probabilities.shape != truth.shape or probabilities.shape[1] != len(terms):
        raise ValueError(
            f"probabilities and truth must both be (items, {len(terms)} terms), got "
            f"{tuple(probabilities.shape)} and {tuple(truth.shape)}"
        )


def group_accuracy(probabilities: Tensor, truth: Tensor, groups: Mapping[str, Sequence[int]]) -> dict[str, Any]:
    """Per group: ``accuracy`` (%) of the argmax over its columns, the ``majority`` baseline (%) and
    the ``items`` counted -- those whose truth holds exactly one of the group's values (a value too
    rare in training has no column, and the item is left out of that group)."""
    results: dict[str, Any] = {}
    for group, columns in groups.items():
        index = torch.as_tensor(list(columns), dtype=torch.long)
        values = truth[:, index] > 0
        labelled = values.sum(dim=1) == 1
        count = int(labelled.sum())
        if count == 0:
            results[group] = {"accuracy": None, "majority": None, "items": 0}
            continue
        true = values[labelled].float().argmax(dim=1)
        predicted = probabilities[labelled][:, index].argmax(dim=1)
        majority = torch.bincount(true, minlength=len(index)).max()
        results[group] = {
            "accuracy": 100.0 * float((predicted == true).float().mean()),
            "majority": 100.0 * float(majority) / count,
            "items": count,
        }
    return results


def term_scores(probabilities: Tensor, truth: Tensor, terms: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Per term: ``precision``, ``recall``, ``f1`` (%) of predictions above :data:`THRESHOLD`, and its
    ``support`` (items whose truth holds it); None where a ratio has nothing to divide by."""
    _check(probabilities, truth, terms)
    predicted, actual = probabilities > THRESHOLD, truth > 0
    hits = (predicted & actual).sum(dim=0)
    results = {}
    for column, term in enumerate(terms):
        tp, claimed, support = int(hits[column]), int(predicted[:, column].sum()), int(actual[:, column].sum())
        precision = 100.0 * tp / claimed if claimed else None
        recall = 100.0 * tp / support if support else None
        f1 = 2 * precision * recall / (precision + recall) if precision and recall else (0.0 if support else None)
        results[term] = {"precision": precision, "recall": recall, "f1": f1, "support": support}
    return results


def attribute_accuracy(
    branches: Mapping[str, tuple[Tensor, Tensor]], terms: Sequence[str], groups: Mapping[str, Sequence[int]] | None
) -> dict[str, Any]:
    """``{branch: {"groups": group_accuracy or absent, "terms": term_scores, "mean_f1": ..}}`` for each
    branch's ``(probabilities, truth)``; ``groups`` only for a label vocabulary whose groups are categorical."""
    record: dict[str, Any] = {}
    for branch, (probabilities, truth) in branches.items():
        _check(probabilities, truth, terms)
        scores = term_scores(probabilities, truth, terms)
        f1 = [value["f1"] for value in scores.values() if value["f1"] is not None]
        record[branch] = {"terms": scores, "mean_f1": sum(f1) / len(f1) if f1 else None}
        if groups:
            record[branch]["groups"] = group_accuracy(probabilities, truth, groups)
    return record


def _mean_std(values: Sequence[float | None]) -> str:
    numbers = [value for value in values if value is not None]
    if not numbers:
        return "–"
    mean = sum(numbers) / len(numbers)
    std = math.sqrt(sum((value - mean) ** 2 for value in numbers) / len(numbers))
    return f"{mean:.1f} ± {std:.1f}"


def accuracy_markdown(records: Sequence[Mapping[str, Any]], *, title: str) -> list[str]:
    """Markdown lines: per-group accuracy of each branch (mean ± std over ``records``, one per seed:
    :func:`attribute_accuracy`'s) beside the majority baseline, and each branch's mean per-term F1."""
    if not records:
        return []
    branches = list(records[0])
    lines = [f"## {title}", ""]
    groups = list(records[0][branches[0]].get("groups", {}))
    if groups:
        header = " | ".join(f"{branch} accuracy %" for branch in branches)
        lines += [f"| group | {header} | majority % |", "|---|" + "---|" * (len(branches) + 1)]
        for group in groups:
            cells = [_mean_std([r[branch]["groups"][group]["accuracy"] for r in records]) for branch in branches]
            majority = _mean_std([records[0][branches[0]]["groups"][group]["majority"]])
            lines.append(f"| {group} | " + " | ".join(cells) + f" | {majority} |")
        lines.append("")
    f1 = ", ".join(f"{branch} {_mean_std([r[branch]['mean_f1'] for r in records])}" for branch in branches)
    lines += [f"Mean per-term F1 (%, predictions above {THRESHOLD}): {f1}.", ""]
    return lines
