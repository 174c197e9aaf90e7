"""Attribute accuracy against a hand-counted reference: per group (argmax over a group's columns, items
with exactly one true value), per term (precision, recall and F1 above one half), and its report."""

from __future__ import annotations

import pytest
import torch

from timam.evaluation.attribute_accuracy import accuracy_markdown, attribute_accuracy, group_accuracy, term_scores

TERMS = ["gender=female", "gender=male", "colour=red", "colour=blue", "colour=green"]
GROUPS = {"gender": [0, 1], "colour": [2, 3, 4]}
# Four images: truth, and probabilities whose argmax per group is given in the comments.
TRUTH = torch.tensor(
    [
        [1, 0, 1, 0, 0],  # female red
        [0, 1, 0, 1, 0],  # male blue
        [0, 1, 0, 0, 0],  # male, colour too rare to have a column: left out of the colour group
        [1, 0, 0, 0, 1],  # female green
    ],
    dtype=torch.float32,
)
PROBABILITIES = torch.tensor(
    [
        [0.9, 0.2, 0.6, 0.3, 0.1],  # female (right), red (right)
        [0.4, 0.7, 0.8, 0.2, 0.1],  # male (right), red (wrong)
        [0.6, 0.3, 0.1, 0.1, 0.9],  # female (wrong), green (not counted)
        [0.8, 0.1, 0.2, 0.3, 0.4],  # female (right), green (right)
    ]
)


def test_group_accuracy_counts_the_argmax_of_each_group_over_items_with_one_true_value() -> None:
    result = group_accuracy(PROBABILITIES, TRUTH, GROUPS)
    assert result["gender"] == {"accuracy": 75.0, "majority": 50.0, "items": 4}
    # colour: items 0, 1 and 3 (item 2 has no true colour); right on 0 and 3; each colour once.
    assert result["colour"]["items"] == 3
    assert result["colour"]["accuracy"] == pytest.approx(200 / 3)
    assert result["colour"]["majority"] == pytest.approx(100 / 3)


def test_term_scores_are_precision_recall_and_f1_above_one_half() -> None:
    scores = term_scores(PROBABILITIES, TRUTH, TERMS)
    # gender=female: predicted on 0, 2, 3; true on 0, 3 -> precision 2/3, recall 1.
    female = scores["gender=female"]
    assert female["precision"] == pytest.approx(200 / 3) and female["recall"] == 100.0
    assert female["f1"] == pytest.approx(80.0) and female["support"] == 2
    # colour=blue: never predicted, true once -> no precision, recall 0, F1 0.
    assert scores["colour=blue"] == {"precision": None, "recall": 0.0, "f1": 0.0, "support": 1}
    # colour=red: predicted on 0 and 1, true on 0 -> 50 / 100 -> F1 66.7.
    assert scores["colour=red"]["f1"] == pytest.approx(200 / 3)


def test_the_record_holds_each_branch_and_the_report_gives_mean_and_spread_over_seeds() -> None:
    record = attribute_accuracy({"image": (PROBABILITIES, TRUTH), "text": (TRUTH, TRUTH)}, TERMS, GROUPS)
    assert record["text"]["groups"]["gender"]["accuracy"] == 100.0
    assert record["text"]["mean_f1"] == 100.0
    no_groups = attribute_accuracy({"image": (PROBABILITIES, TRUTH)}, TERMS, None)
    assert "groups" not in no_groups["image"]
    lines = accuracy_markdown([record, record], title="Attributes")
    assert "| gender | 75.0 ± 0.0 | 100.0 ± 0.0 | 50.0 ± 0.0 |" in lines
    with pytest.raises(ValueError, match="5 terms"):
        attribute_accuracy({"image": (PROBABILITIES[:, :4], TRUTH[:, :4])}, TERMS, GROUPS)
