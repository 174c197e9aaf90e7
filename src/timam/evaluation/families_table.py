"""The families table: every row's test metrics as mean ± std over its seeds, with its cost.

Expected-tie numbers are the ones to compare; mR under the index rule (a stable argsort, what
published tables use without saying so) sits beside them. The cost: training wall time (including
the frozen features for whichever run computed them first; the others load them from disk), the
milliseconds to score one caption query against the whole test gallery from stored representations
(a matrix product for embeddings, cross-attention for the interaction family, the product plus
top-k re-scoring for two-stage, XOR and popcount of packed codes for hashing), the bytes each
gallery image costs in that stored form (a float32 vector, a K-bit code, cached float16 regions) and
the milliseconds of one caption's top-10 search over it (an exact search: FAISS's exact Hamming
search for codes, timam's exact top-k for vectors, every pair scored for the pair-score models).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from timam.evaluation.report import mean_recall

_DIRECTIONS = (("text_to_image", "t2i"), ("image_to_text", "i2t"))
_METRICS = ("R@1", "R@5", "R@10", "mAP")


def _number(value: Any) -> float:
    return float("nan") if value is None else float(value)


def run_row(metrics: Mapping[str, Any]) -> dict[str, float]:
    """One run's columns, from its ``retrieval_metrics``."""
    results = metrics["results"]
    row = {
        f"{short} {metric}": results[direction]["expected"][metric]
        for direction, short in _DIRECTIONS
        for metric in _METRICS
    }
    row["mR"] = _number(mean_recall(results, "expected"))
    row["mR index ties"] = _number(mean_recall(results, "index"))
    row["val t2i R@1"] = _number(metrics.get("checkpoint", {}).get("val_t2i_R@1"))
    cost = metrics.get("cost", {})
    row["train s"] = _number(cost.get("train_seconds"))
    row["score ms/query"] = _number(cost.get("score_ms_per_query"))
    row["bytes/image"] = _number(cost.get("bytes_per_image"))
    row["search ms/query"] = _number(cost.get("search_ms_per_query"))
    return row


def _cell(mean: float, std: float) -> str:
    return "–" if math.isnan(mean) else f"{mean:.2f} ± {std:.2f}"


def families_table(
    run_metrics: Sequence[Mapping[str, Any]], *, rows: Sequence[str], labels: Mapping[str, str], seeds_per_row: int
) -> tuple[pd.DataFrame, str]:
    """``(table, markdown)``; ``run_metrics`` in order: every seed of the first row, then the next row."""
    if len(run_metrics) != len(rows) * seeds_per_row:
        raise ValueError(f"{len(run_metrics)} runs for {len(rows)} rows x {seeds_per_row} seeds")
    runs = pd.DataFrame(
        [{"row": rows[index // seeds_per_row], **run_row(metrics)} for index, metrics in enumerate(run_metrics)]
    )
    grouped = runs.groupby("row", sort=False)
    table = grouped.mean().add_suffix(" mean").join(grouped.std(ddof=0).add_suffix(" std")).round(3)
    table.insert(0, "seeds", grouped.size())
    table.insert(0, "family", [labels.get(name, "") for name in table.index])
    table = table.reset_index()
    columns = [column for column in runs.columns if column != "row"]
    lines = [
        f"# Families (test split, expected value under random tie order; mean ± std over {seeds_per_row} seeds)",
        "",
        "mR: mean of R@1/5/10 both ways; mR index ties: the same under a stable argsort (published tables).",
        "val t2i R@1: the validation score that chose each checkpoint. train s: training wall time;",
        "score ms/query: one caption scored against the whole test gallery from stored representations;",
        "bytes/image: each gallery image's stored form; search ms/query: one caption's exact top-10 over it.",
        "",
        "| family | row | " + " | ".join(columns) + " |",
        "|---|---|" + "---|" * len(columns),
    ]
    for _, line in table.iterrows():
        cells = [_cell(line[f"{column} mean"], line[f"{column} std"]) for column in columns]
        lines.append(f"| {line['family']} | {line['row']} | " + " | ".join(cells) + " |")
    lines.append("")
    return table, "\n".join(lines)
