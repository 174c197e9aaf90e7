"""Figures of a ranking for people: recall curves, ranked examples, search results.

Every function returns a :class:`matplotlib.figure.Figure` built without pyplot: no GUI backend and
no global figure registry, so nothing depends on the session's backend; saving to PNG renders with
Agg. Kedro datasets (``matplotlib.MatplotlibDataset``) save them. Inputs are plain values -- paths,
captions, scores, hit flags -- so the figures can be drawn from any ranking, and tested on tiny
fake data. Images that cannot be read are drawn as a labelled placeholder rather than failing a
report.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure, SubFigure
from PIL import Image, ImageOps, UnidentifiedImageError

from timam.figures.style import DPI, NEUTRAL, message_figure, wrap_text

__all__ = [
    "RankedCaption",
    "RankedImage",
    "ImageQueryExample",
    "TextQueryExample",
    "image_query_figure",
    "recall_curve_figure",
    "text_query_figure",
]

HIT = "#2ca02c"
MISS = "#d62728"
TARGET = "#1f77b4"
_DIRECTION_LABELS = {"text_to_image": "text \u2192 image", "image_to_text": "image \u2192 text"}
_THUMBNAIL = 320


@dataclass(frozen=True)
class RankedImage:
    """One retrieved image: its path, score and whether it is relevant (``None``: unknown)."""

    path: str
    score: float
    hit: bool | None = None


@dataclass(frozen=True)
class RankedCaption:
    """One retrieved caption: its text, score and whether it is relevant (``None``: unknown)."""

    caption: str
    score: float
    hit: bool | None = None


@dataclass(frozen=True)
class TextQueryExample:
    """A caption query, its ranked images and (optionally) the image the caption describes."""

    caption: str
    results: Sequence[RankedImage]
    target_path: str | None = None


@dataclass(frozen=True)
class ImageQueryExample:
    """An image query and its ranked captions (``label`` under the image; default: its file name)."""

    path: str
    results: Sequence[RankedCaption]
    label: str = ""


def _stacked_subfigures(fig: Figure, heights: list[float]) -> list[SubFigure]:
    """One subfigure per height, top to bottom (matplotlib returns a bare SubFigure for one row)."""
    found = fig.subfigures(len(heights), 1, height_ratios=heights)
    return list(np.ravel(found)) if isinstance(found, np.ndarray) else [found]


def _colour(hit: bool | None) -> str:
    return NEUTRAL if hit is None else (HIT if hit else MISS)


def _mark(hit: bool | None) -> str:
    return "" if hit is None else ("\u2713 " if hit else "\u2717 ")


def _thumbnail(path: str) -> np.ndarray | None:
    try:
        with Image.open(path) as image:
            upright = ImageOps.exif_transpose(image).convert("RGB")
            upright.thumbnail((_THUMBNAIL, _THUMBNAIL))
            return np.asarray(upright)
    except (OSError, UnidentifiedImageError, ValueError):
        return None


def _show_image(ax, path: str, *, border: str, label: str = "", fontsize: float = 8) -> None:
    """Draw ``path`` in ``ax`` with a thick coloured border and a label underneath."""
    pixels = _thumbnail(path)
    if pixels is None:
        ax.set_facecolor("#eeeeee")
        ax.text(
            0.5,
            0.5,
            f"image not found\n{Path(path).name}",
            ha="center",
            va="center",
            fontsize=6,
            wrap=True,
            transform=ax.transAxes,
        )
    else:
        ax.imshow(pixels)
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_edgecolor(border)
        spine.set_linewidth(4)
    if label:
        ax.set_xlabel(label, fontsize=fontsize, color=border if border != NEUTRAL else "black")


# --------------------------------------------------------------------------------------------
# Recall curve
# --------------------------------------------------------------------------------------------


def recall_curve_figure(
    curves: Mapping[str, Sequence[float]],
    *,
    chance: Mapping[str, Sequence[float]] | None = None,
    title: str = "",
    marks: Sequence[int] = (1, 5, 10),
) -> Figure:
    """R@K against K for each direction, dashed chance curves; the values at ``marks`` in the legend."""
    fig = Figure(figsize=(8, 5), dpi=DPI, layout="constrained")
    ax = fig.add_subplot()
    colours = {"text_to_image": "#1f77b4", "image_to_text": "#ff7f0e"}
    for k in marks:
        ax.axvline(k, color=NEUTRAL, linestyle=":", linewidth=0.8, alpha=0.6)
    for direction, values in curves.items():
        ks = np.arange(1, len(values) + 1)
        colour = colours.get(direction)
        label = _DIRECTION_LABELS.get(direction, direction)
        shown = [k for k in marks if k <= len(values)]
        summary = ", ".join(f"R@{k} {values[k - 1]:.1f}" for k in shown)
        line = ax.plot(
            ks,
            values,
            marker="o",
            markersize=2.5,
            linewidth=1.8,
            color=colour,
            label=f"{label} ({summary})" if summary else label,
        )[0]
        ax.plot(
            shown,
            [values[k - 1] for k in shown],
            linestyle="none",
            marker="o",
            markersize=7,
            markerfacecolor="white",
            markeredgewidth=1.8,
            color=line.get_color(),
        )
        if chance and direction in chance:
            ax.plot(
                ks,
                chance[direction][: len(values)],
                linestyle="--",
                linewidth=1,
                color=line.get_color(),
                alpha=0.6,
                label=f"{label}, chance",
            )
    longest = max((len(v) for v in curves.values()), default=1)
    ax.set_xlim(0.5, longest + 0.5)
    ax.set_ylim(0, 101)
    ax.set_xlabel("K")
    ax.set_ylabel("R@K (%): queries with a relevant item in the top K")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right", fontsize=9)
    if title:
        ax.set_title(wrap_text(title, 100), fontsize=10)
    return fig


# --------------------------------------------------------------------------------------------
# Ranked examples
# --------------------------------------------------------------------------------------------


def text_query_figure(
    examples: Sequence[TextQueryExample], *, title: str = "", columns: int | None = None, caption_width: int = 110
) -> Figure:
    """One block per caption query: the caption as its title, then its ranked images in rank order.

    Borders: green = relevant, red = not relevant, grey = unknown (free-text search); when an
    example names its ``target_path`` (the caption's own image) it is shown first, in blue.
    Results wrap onto further rows after ``columns`` images (default: all on one row).
    """
    if not examples:
        return message_figure("no queries to show", title=title)
    has_target = any(e.target_path for e in examples)
    width = columns or max(len(e.results) for e in examples)
    width = max(1, width)
    cells = width + (1 if has_target else 0)
    result_rows = [max(1, math.ceil(len(e.results) / width)) for e in examples]
    caption_lines = [wrap_text(e.caption, caption_width).count("\n") + 1 for e in examples]
    cell_height = 2.3
    heights = [r * cell_height + 0.2 * lines + 0.3 for r, lines in zip(result_rows, caption_lines, strict=True)]
    fig = Figure(figsize=(max(6.0, 1.6 * cells), sum(heights) + (0.5 if title else 0)), dpi=DPI, layout="constrained")
    subfigs = _stacked_subfigures(fig, heights)
    for subfig, example, rows in zip(subfigs, examples, result_rows, strict=True):
        subfig.suptitle(wrap_text(example.caption, caption_width), fontsize=9, ha="left", x=0.01)
        axes = np.atleast_2d(subfig.subplots(rows, cells, squeeze=False))
        for ax in axes.flat:
            ax.axis("off")
        offset = 1 if has_target else 0
        if has_target:
            ax = axes[0, 0]
            ax.axis("on")
            if example.target_path:
                _show_image(ax, example.target_path, border=TARGET, label="described image")
            else:
                ax.axis("off")
        for rank, result in enumerate(example.results, start=1):
            ax = axes[(rank - 1) // width, offset + (rank - 1) % width]
            ax.axis("on")
            _show_image(
                ax, result.path, border=_colour(result.hit), label=f"{_mark(result.hit)}#{rank}  {result.score:.3f}"
            )
    if title:
        fig.suptitle(wrap_text(title, int(fig.get_figwidth() * 11)), fontsize=11)
    return fig


def image_query_figure(
    examples: Sequence[ImageQueryExample], *, title: str = "", caption_width: int = 100, caption_lines: int = 2
) -> Figure:
    """One row per image query: the image, then its ranked captions (green = relevant, red = not)."""
    if not examples:
        return message_figure("no queries to show", title=title)
    line_height = 0.17
    heights = [
        max(
            2.2,
            sum(min(caption_lines, wrap_text(r.caption, caption_width).count("\n") + 1) for r in e.results)
            * line_height
            + 0.12 * len(e.results)
            + 0.3,
        )
        for e in examples
    ]
    fig = Figure(figsize=(10, sum(heights) + (0.5 if title else 0)), dpi=DPI, layout="constrained")
    subfigs = _stacked_subfigures(fig, heights)
    for subfig, example in zip(subfigs, examples, strict=True):
        image_ax, text_ax = subfig.subplots(1, 2, width_ratios=[1, 6])
        _show_image(image_ax, example.path, border=TARGET, label=example.label or Path(example.path).name, fontsize=7)
        text_ax.axis("off")
        y = 1.0
        step = 1.0 / max(
            1,
            sum(min(caption_lines, wrap_text(r.caption, caption_width).count("\n") + 1) + 0.7 for r in example.results),
        )
        for rank, result in enumerate(example.results, start=1):
            text = wrap_text(result.caption, caption_width, caption_lines)
            text_ax.text(
                0.0,
                y,
                f"{_mark(result.hit)}#{rank}  {result.score:.3f}  {text}",
                va="top",
                ha="left",
                fontsize=8,
                color=_colour(result.hit) if result.hit is not None else "black",
                transform=text_ax.transAxes,
                family="sans-serif",
            )
            y -= step * (text.count("\n") + 1.7)
    if title:
        fig.suptitle(wrap_text(title, int(fig.get_figwidth() * 11)), fontsize=11)
    return fig
