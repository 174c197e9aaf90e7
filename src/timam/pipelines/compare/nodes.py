"""One table of every saved evaluation: which checkpoint, which protocol, which numbers."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import pandas as pd

from timam.config import flatten
from timam.evaluation.config import compare_config
from timam.evaluation.report import comparison_markdown, mean_recall

_DIRECTIONS = {"text_to_image": "t2i", "image_to_text": "i2t"}
_METRICS = ("R@1", "R@5", "R@10", "mAP")
_PROVENANCE = ("best_epoch", "val_t2i_R@1")


def metrics_row(version: str, metrics: dict[str, Any], rule: str) -> dict[str, Any]:
    """The comparison row of one retrieval_metrics version under tie rule ``rule`` (NaN where absent)."""
    protocol = metrics.get("protocol", {})
    counts = metrics.get("counts", {})
    row: dict[str, Any] = {
        "metrics_version": version,
        "checkpoint_version": metrics.get("checkpoint_version"),
        "dataset": protocol.get("dataset"),
        "split": protocol.get("split"),
        "relevance": protocol.get("relevance"),
        "tie_rule": rule,
        "images": counts.get("images"),
        "captions": counts.get("captions"),
    }
    results = metrics.get("results", {})
    for direction, short in _DIRECTIONS.items():
        values = results.get(direction, {}).get(rule, {})
        for name in _METRICS:
            row[f"{short}_{name}"] = float(values.get(name, float("nan")))
    mr = mean_recall(results, rule)
    row["mR"] = float("nan") if mr is None else mr
    checkpoint = metrics.get("checkpoint", {})
    for name in _PROVENANCE:
        row[name] = checkpoint.get(name)
    training = flatten(metrics.get("training", {}), "training.")
    row.update({name: json.dumps(value) if isinstance(value, list) else value for name, value in training.items()})
    return row


def compare_metrics(
    retrieval_metrics_history: dict[str, dict[str, Any]], compare: Mapping[str, Any]
) -> tuple[str, pd.DataFrame]:
    """One row per saved ``retrieval_metrics`` version, oldest first: Markdown and CSV.

    The CSV keeps every training parameter; the Markdown shows only those that differ between
    rows (what changed from run to run). ``compare.tie_rule`` (default ``expected``) picks the
    tie rule of the numbers.
    """
    rule = compare_config(compare).tie_rule
    if not retrieval_metrics_history:
        raise ValueError(
            "No saved retrieval_metrics to compare: run `kedro run --pipelines evaluate` first "
            "(each run adds one version under data/08_reporting/<dataset>/retrieval_metrics.json/)"
        )
    rows = [metrics_row(version, metrics, rule) for version, metrics in sorted(retrieval_metrics_history.items())]
    table = pd.DataFrame(rows)
    fixed = ["metrics_version", "checkpoint_version", "dataset", "split", "relevance", "images", "captions"]
    numbers = [f"{short}_{name}" for short in _DIRECTIONS.values() for name in _METRICS] + ["mR", *_PROVENANCE]
    training = [c for c in table.columns if c.startswith("training.")]
    varying = [c for c in training if table[c].astype(str).nunique(dropna=False) > 1]
    notes = [
        f"Numbers in percent, tie rule `{rule}`; t2i = text -> image, i2t = image -> text; "
        "mR = mean of R@1/5/10 both ways. Rows with different dataset, split, relevance or counts "
        "are different protocols: do not compare their numbers.",
    ]
    if training:
        notes.append(
            (
                "Training parameters that differ between rows are shown; "
                if varying
                else "All rows share their training parameters; "
            )
            + "the CSV (metrics_comparison_table) has all of them."
        )
    markdown = comparison_markdown(
        table.to_dict("records"),
        [*fixed, *numbers, *varying],
        title=f"Retrieval metrics of {len(table)} evaluation run(s)",
        notes=notes,
    )
    return markdown, table
