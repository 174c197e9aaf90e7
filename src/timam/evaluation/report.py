"""A short Markdown report of retrieval metrics, for people rather than programs."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

_DIRECTIONS = {"text_to_image": "text -> image", "image_to_text": "image -> text"}
_SHORT = {"text_to_image": "t2i", "image_to_text": "i2t"}
MR_KS = (1, 5, 10)


def metrics_table(results: dict[str, dict[str, dict[str, float]]], rule: str) -> list[str]:
    """Markdown rows: one per direction, one column per metric, for tie rule ``rule``."""
    names = list(next(iter(results.values()))[rule])
    lines = ["| direction | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for direction, label in _DIRECTIONS.items():
        values = results[direction][rule]
        lines.append(f"| {label} | " + " | ".join(f"{values[name]:.2f}" for name in names) + " |")
    return lines


def mean_recall(results: Mapping[str, Mapping[str, Mapping[str, float]]], rule: str) -> float | None:
    """mR: the mean of R@1, R@5 and R@10 in both directions (remote-sensing tables); None if one is missing."""
    values = [results.get(direction, {}).get(rule, {}).get(f"R@{k}") for direction in _DIRECTIONS for k in MR_KS]
    numbers = [value for value in values if value is not None]
    if len(numbers) < len(values):
        return None
    return sum(numbers) / len(numbers)


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{float(value):.2f}"


def _not_comparable(source: str, problems: list[str]) -> str:
    return f"Published numbers ({source}) are not comparable with this run: " + "; ".join(problems) + "."


def _count_problems(paper: Mapping[str, Any], ours: Mapping[str, Any]) -> list[str]:
    """Test-split counts (images, captions, classes, ...) that differ from the published ones."""
    problems = []
    for name, expected in (paper.get("counts") or {}).items():
        value = ours.get(name)
        if value is not None and int(value) != int(expected):
            problems.append(f"their test split has {expected} {name}, this run {value}")
    return problems


def paper_comparison(metrics: Mapping[str, Any], paper: Mapping[str, Any] | None) -> list[str]:
    """Our numbers beside published ones, only where those use this dataset's protocol.

    ``paper``: ``{source, relevance, protocol, counts: {images, captions}, tie_rule, rows: [{method,
    text_to_image: {R@1..}, image_to_text: {..}, mR}]}`` -- the entry of
    ``evaluation.paper_results`` for this dataset. A different relevance rule or a different test
    gallery/query count means a different protocol: the section says so instead of a table.
    Entries of another ``protocol`` than ``standard`` belong to :func:`protocol_section`.
    """
    lines = ["## Published results", ""]
    if not paper or not paper.get("rows"):
        return lines + ["No published numbers for this dataset.", ""]
    protocol = metrics["protocol"]
    source = paper.get("source", "published tables")
    theirs = paper.get("protocol", "standard")
    if theirs != "standard":
        where = (
            "are in the protocol section above, where comparable"
            if theirs == protocol.get("name")
            else f"need `evaluation.protocol: {theirs}` (this run: {protocol.get('name', 'standard')})"
        )
        return lines + [f"Published numbers ({source}) use the {theirs} protocol; they {where}.", ""]
    problems = []
    if paper.get("relevance") and paper["relevance"] != protocol["relevance"]:
        problems.append(f"they use {paper['relevance']} relevance, this run {protocol['relevance']}")
    problems += _count_problems(paper, metrics.get("counts", {}))
    if problems:
        return lines + [_not_comparable(source, problems), ""]
    columns = [(direction, f"R@{k}") for direction in _DIRECTIONS for k in MR_KS]
    header = "| method | " + " | ".join(f"{_SHORT[d]} {m}" for d, m in columns) + " | mR |"
    lines += [f"Source: {source}.", "", header, "|---|" + "---|" * (len(columns) + 1)]
    results = metrics["results"]
    for rule in protocol["tie_rules"]:
        if rule not in ("expected", "index"):
            continue
        cells = [results.get(d, {}).get(rule, {}).get(m) for d, m in columns]
        lines.append(
            f"| **this run** ({rule} ties) | "
            + " | ".join(_cell(c) for c in cells)
            + f" | {_cell(mean_recall(results, rule))} |"
        )
    for row in paper["rows"]:
        cells = [(row.get(d) or {}).get(m) for d, m in columns]
        mr = row.get("mR")
        if mr is None and all(c is not None for c in cells):
            mr = sum(cells) / len(cells)
        lines.append(f"| {row.get('method', '?')} | " + " | ".join(_cell(c) for c in cells) + f" | {_cell(mr)} |")
    tie_note = paper.get("tie_rule", "index")
    lines += [
        "",
        f"Published numbers break ties by an arbitrary order ({tie_note}); compare them with the `index` row, "
        "and read the `expected` row as the tie-independent value. – = not published.",
        "",
    ]
    return lines


_PROTOCOL_TITLES = {
    "coco_1k_folds": "Protocol coco_1k_folds: mean over {folds} folds of {fold_images} images",
    "zero_shot_classes": "Protocol zero_shot_classes: {classes} classes, {images} images, {captions} captions",
}
_PROTOCOL_NOTES = {
    "coco_1k_folds": (
        "MSCOCO 1K: each fold of consecutive test images is ranked on its own (its images and their "
        "captions); the table is the mean of the per-fold metrics (VSE++/SCAN), per-fold values are in "
        "retrieval_metrics.json. The tables above rank the whole test split at once (the 5K numbers on MSCOCO)."
    ),
    "zero_shot_classes": (
        "Zero-shot classes (Reed et al. 2016): one text query per test class, the re-normalised mean of "
        "its L2-normalised caption embeddings. AP@K is their definition, the share of class images among "
        "the top K images, averaged over classes (a class with n < K images scores at most n/K); top-1 "
        "accuracy is the share of test images whose own class query scores highest, averaged over images."
    ),
}


def protocol_section(metrics: Mapping[str, Any], paper: Mapping[str, Any] | None = None) -> list[str]:
    """The ``protocol_results`` of the run, one row per tie rule, with published rows of the same protocol.

    Published rows are shown when ``paper["protocol"]`` names this protocol and its ``counts``
    (e.g. ``{classes: 50}``) match the section's counts.
    """
    section = metrics.get("protocol_results")
    if not section:
        return []
    results = section["results"]
    columns = [(d, m) for d in _DIRECTIONS if d in results for m in next(iter(results[d].values()))]
    lines = [
        "## " + _PROTOCOL_TITLES[section["name"]].format(**section["counts"]),
        "",
        "| method | " + " | ".join(f"{_SHORT[d]} {m}" for d, m in columns) + " |",
        "|---|" + "---|" * len(columns),
    ]
    for rule in metrics["protocol"]["tie_rules"]:
        cells = [results[d].get(rule, {}).get(m) for d, m in columns]
        lines.append(f"| **this run** ({rule} ties) | " + " | ".join(_cell(c) for c in cells) + " |")
    notes = [_PROTOCOL_NOTES[section["name"]]]
    if paper and paper.get("rows") and paper.get("protocol") == section["name"]:
        problems = _count_problems(paper, section["counts"])
        source = paper.get("source", "published tables")
        if problems:
            notes.append(_not_comparable(source, problems))
        else:
            for row in paper["rows"]:
                cells = [(row.get(d) or {}).get(m) for d, m in columns]
                lines.append(f"| {row.get('method', '?')} | " + " | ".join(_cell(c) for c in cells) + " |")
            notes.append(
                f"Published rows: {source}. They break ties by an arbitrary order "
                f"({paper.get('tie_rule', 'index')}); compare them with the `index` row. – = not published."
            )
    return [*lines, "", *(line for note in notes for line in (note, ""))]


def markdown_report(metrics: dict[str, Any], paper: Mapping[str, Any] | None = None) -> str:
    """Title, provenance, one table per tie rule, mR, and published numbers for the same protocol."""
    protocol = metrics["protocol"]
    dataset = protocol.get("dataset")
    lines = [
        f"# Retrieval on the {protocol['split']} split" + (f" of {dataset}" if dataset else ""),
        "",
        f"- checkpoint version: `{metrics['checkpoint_version']}` "
        f"(best epoch {metrics['checkpoint'].get('best_epoch')},"
        f" val text->image R@1 {_cell(metrics['checkpoint'].get('val_t2i_R@1'))})",
        f"- relevance: {protocol['relevance']}; gallery: {protocol['gallery']}; "
        f"protocol: {protocol.get('name', 'standard')}",
        f"- {metrics['counts']['images']} images, {metrics['counts']['captions']} captions, "
        f"{metrics['counts']['identities']} identities; chance text->image R@1 {metrics['chance_t2i_R@1']:.2f}",
        "",
    ]
    for rule in protocol["tie_rules"]:
        lines += [f"## Tie rule: {rule}", "", *metrics_table(metrics["results"], rule), ""]
    mr = metrics.get("mR") or {}
    if mr:
        lines += [
            "mR (mean of R@1/5/10 in both directions): "
            + ", ".join(f"{_cell(value)} ({rule})" for rule, value in mr.items()),
            "",
        ]
    lines += protocol_section(metrics, paper)
    lines += paper_comparison(metrics, paper)
    lines.append(
        "Metrics in percent. R@K is the hit rate (any relevant item in the top K). "
        "`expected` is the exact expected value under random order of tied scores. "
        "The figures of this run (recall_curve.png, example_grid.png, example_grid_image_to_text.png, "
        "best_worst_text_to_image.png, best_worst_image_to_text.png, training_curves.png) are saved "
        "beside this report, in version folders of the same name."
    )
    return "\n".join(lines) + "\n"


def comparison_markdown(
    table: Sequence[Mapping[str, Any]], columns: Sequence[str], *, title: str, notes: Sequence[str] = ()
) -> str:
    """A Markdown table of ``table`` rows restricted to ``columns`` (numbers with two decimals)."""
    lines = [f"# {title}", "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in table:
        cells = []
        for column in columns:
            value = row.get(column)
            if isinstance(value, float):
                cells.append(_cell(value))
            elif value is None:
                cells.append("–")
            else:
                cells.append(str(value).replace("|", "\\|"))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join([*lines, "", *notes]) + ("\n" if notes else "")
