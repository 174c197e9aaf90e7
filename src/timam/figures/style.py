"""Figure basics shared by every report: the common palette, text wrapping, a figure that only says something.

Figures are built without pyplot (no GUI backend, no global registry); Kedro's Matplotlib datasets
render them with Agg.
"""

from __future__ import annotations

import textwrap

from matplotlib.figure import Figure

NEUTRAL = "#7f7f7f"
DPI = 100


def wrap_text(text: str, width: int, max_lines: int | None = None) -> str:
    """``text`` wrapped at ``width`` characters, cut with an ellipsis after ``max_lines`` lines."""
    lines = textwrap.wrap(" ".join(str(text).split()), width=width) or [""]
    if max_lines is not None and len(lines) > max_lines:
        lines = lines[:max_lines]
        lines[-1] = lines[-1][: max(0, width - 1)].rstrip() + "\u2026"
    return "\n".join(lines)


def message_figure(message: str, *, title: str = "", size: tuple[float, float] = (8, 3)) -> Figure:
    """A figure that only says something (no data to plot), so a report never silently lacks a file."""
    fig = Figure(figsize=size, dpi=DPI, layout="constrained")
    ax = fig.add_subplot()
    ax.axis("off")
    ax.text(0.5, 0.5, wrap_text(message, 90), ha="center", va="center", fontsize=11)
    if title:
        fig.suptitle(title, fontsize=11)
    return fig
