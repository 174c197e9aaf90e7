"""Nodes of the ablation study: one training configuration per variant, then one summary table."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pandas as pd


def deep_merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``overrides`` applied key by key, recursively (neither input is changed)."""
    merged = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def variant_parameters(
    model: dict[str, Any], training: dict[str, Any], ablation: dict[str, Any], variant: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The model and training parameters of one variant: the base ones with its overrides."""
    overrides = ablation["variants"][variant]
    variant_training = deep_merge(training, overrides.get("training", {}))
    if variant_training.get("state_path"):
        # Each variant resumes from its own state file, never from another variant's.
        state = Path(variant_training["state_path"])
        variant_training["state_path"] = str(state.with_name(f"{state.stem}_{variant}{state.suffix}"))
    return deep_merge(model, overrides.get("model", {})), variant_training


def summarise_ablation(ablation: dict[str, Any], *variant_metrics: dict[str, Any]) -> tuple[pd.DataFrame, str]:
    """One row per variant (R@1/5/10 and mAP in both directions, expected tie rule) as CSV and Markdown."""
    rows = []
    for name, metrics in zip(ablation["variants"], variant_metrics, strict=True):
        row: dict[str, Any] = {"variant": name, "checkpoint_version": metrics["checkpoint_version"]}
        for direction, short in (("text_to_image", "t2i"), ("image_to_text", "i2t")):
            for metric, value in metrics["results"][direction]["expected"].items():
                row[f"{short} {metric}"] = round(value, 2)
        rows.append(row)
    table = pd.DataFrame(rows)
    header = "| " + " | ".join(table.columns) + " |"
    lines = [
        "# Ablation (test split, expected value under random tie order)",
        "",
        header,
        "|" + "---|" * len(table.columns),
        *("| " + " | ".join(str(v) for v in row) + " |" for row in table.itertuples(index=False)),
        "",
    ]
    return table, "\n".join(lines)
