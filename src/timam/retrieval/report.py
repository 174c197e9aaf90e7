"""A short Markdown report of retrieval metrics, for people rather than programs."""

from __future__ import annotations

from typing import Any

_DIRECTIONS = {"text_to_image": "text -> image", "image_to_text": "image -> text"}


def metrics_table(results: dict[str, dict[str, dict[str, float]]], rule: str) -> list[str]:
    """Markdown rows: one per direction, one column per metric, for tie rule ``rule``."""
    names = list(next(iter(results.values()))[rule])
    lines = ["| direction | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for direction, label in _DIRECTIONS.items():
        values = results[direction][rule]
        lines.append(f"| {label} | " + " | ".join(f"{values[name]:.2f}" for name in names) + " |")
    return lines


def markdown_report(metrics: dict[str, Any]) -> str:
    """Title, provenance (checkpoint version, protocol, counts) and one table per tie rule."""
    protocol = metrics["protocol"]
    lines = [
        f"# Retrieval on the {protocol['split']} split",
        "",
        f"- checkpoint version: `{metrics['checkpoint_version']}` (best epoch {metrics['checkpoint'].get('best_epoch')},"
        f" val text->image R@1 {metrics['checkpoint'].get('val_t2i_R@1', float('nan')):.2f})",
        f"- relevance: {protocol['relevance']}; gallery: {protocol['gallery']}",
        f"- {metrics['counts']['images']} images, {metrics['counts']['captions']} captions, "
        f"{metrics['counts']['identities']} identities; chance text->image R@1 {metrics['chance_t2i_R@1']:.2f}",
        "",
    ]
    for rule in protocol["tie_rules"]:
        lines += [f"## Tie rule: {rule}", "", *metrics_table(metrics["results"], rule), ""]
    lines.append(
        "Metrics in percent. R@K is the hit rate (any relevant item in the top K). "
        "`expected` is the exact expected value under random order of tied scores."
    )
    return "\n".join(lines) + "\n"
