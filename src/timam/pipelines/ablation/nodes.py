"""Nodes of the ablation study: one training configuration per variant, then one summary table."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from timam.evaluation.report import mean_recall
from timam.studies.ablation import ablation_config


def variant_parameters(
    model: Mapping[str, Any], training: Mapping[str, Any], ablation: Mapping[str, Any], variant: str, seed: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The model and training parameters of one variant and seed: the base ones with its overrides."""
    variant_model, variant_training = ablation_config(ablation).variant_parameters(variant, model, training)
    variant_training["seed"] = seed
    if variant_training.get("state_path"):
        # Each variant resumes from its own state file, never from another variant's.
        state = Path(variant_training["state_path"])
        variant_training["state_path"] = str(state.with_name(f"{state.stem}_{variant}_seed{seed}{state.suffix}"))
    return variant_model, variant_training


def summarise_ablation(
    *run_metrics: dict[str, Any], variants: tuple[str, ...], seeds_per_variant: int
) -> tuple[pd.DataFrame, str]:
    """Mean and spread over seeds of R@1/5/10 and mAP both ways and mR (expected tie rule), and of
    the validation R@1 that chose each checkpoint, per variant.

    ``run_metrics`` come in pipeline order: every seed of the first variant, then the next variant.
    """
    if len(run_metrics) != len(variants) * seeds_per_variant:
        raise ValueError(f"{len(run_metrics)} ablation runs for {len(variants)} variants x {seeds_per_variant} seeds")
    rows = []
    for index, metrics in enumerate(run_metrics):
        row: dict[str, Any] = {"variant": variants[index // seeds_per_variant]}
        for direction, short in (("text_to_image", "t2i"), ("image_to_text", "i2t")):
            for metric in ("R@1", "R@5", "R@10", "mAP"):
                row[f"{short} {metric}"] = metrics["results"][direction]["expected"][metric]
        row["mR"] = mean_recall(metrics["results"], "expected")
        row["val t2i R@1"] = metrics.get("checkpoint", {}).get("val_t2i_R@1", float("nan"))
        rows.append(row)
    runs = pd.DataFrame(rows)
    grouped = runs.groupby("variant", sort=False)
    table = grouped.mean().round(2).add_suffix(" mean").join(grouped.std(ddof=0).round(2).add_suffix(" std"))
    table.insert(0, "seeds", grouped.size())
    table = table.reset_index()
    metric_columns = [c for c in runs.columns if c != "variant"]
    lines = [
        f"# Ablation (test split, expected value under random tie order; mean ± std over {seeds_per_variant} seeds)",
        "",
        "mR: mean of R@1/5/10 both ways. val t2i R@1: the validation score that chose each checkpoint.",
        "",
        "| variant | " + " | ".join(metric_columns) + " |",
        "|---|" + "---|" * len(metric_columns),
    ]
    for _, row in table.iterrows():
        cells = [f"{row[f'{column} mean']:.2f} ± {row[f'{column} std']:.2f}" for column in metric_columns]
        lines.append(f"| {row['variant']} | " + " | ".join(cells) + " |")
    lines.append("")
    return table, "\n".join(lines)
