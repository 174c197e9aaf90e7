"""A figure of attribute predictions: a few images, each with its predicted and its true attributes.

Inputs are plain values (a path, the predicted and the true attribute lists), so the figure draws any
attribute model's predictions and is tested on tiny fake data. A predicted attribute that is true is
drawn green, one that is not red; the true attributes the model missed are listed under them.
Images that cannot be read are drawn as a labelled placeholder rather than failing a report.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from PIL import Image, ImageOps, UnidentifiedImageError

from timam.figures.style import DPI, NEUTRAL, message_figure

__all__ = ["AttributeExample", "attribute_examples_figure"]

RIGHT = "#2ca02c"
WRONG = "#d62728"
_COLUMNS = 4
_THUMBNAIL = 256


@dataclass(frozen=True)
class AttributeExample:
    """One image and its attributes: ``predicted`` (what the model says) and ``true`` (the data's)."""

    path: str
    predicted: Sequence[str]
    true: Sequence[str]


def _pixels(path: str) -> np.ndarray | None:
    try:
        with Image.open(path) as image:
            upright = ImageOps.exif_transpose(image).convert("RGB")
            upright.thumbnail((_THUMBNAIL, _THUMBNAIL))
            return np.asarray(upright)
    except (OSError, UnidentifiedImageError, ValueError):
        return None


def attribute_examples_figure(examples: Sequence[AttributeExample], *, title: str) -> Figure:
    """One panel per example: the image, then its predicted attributes (green right, red wrong) and
    the true ones it missed (grey)."""
    if not examples:
        return message_figure("No test images to show.", title=title)
    rows = math.ceil(len(examples) / _COLUMNS)
    lines = max(len(example.predicted) + len(set(example.true) - set(example.predicted)) for example in examples)
    fig = Figure(figsize=(3.2 * _COLUMNS, rows * (3.2 + 0.17 * lines)), dpi=DPI, layout="constrained")
    fig.suptitle(title, fontsize=11)
    grid = fig.add_gridspec(rows * 2, _COLUMNS, height_ratios=[3.0, 0.17 * lines + 0.3] * rows)
    for number, example in enumerate(examples):
        row, column = divmod(number, _COLUMNS)
        image_ax = fig.add_subplot(grid[2 * row, column])
        pixels = _pixels(example.path)
        if pixels is None:
            image_ax.text(0.5, 0.5, f"image not found\n{Path(example.path).name}", ha="center", va="center", fontsize=7)
        else:
            image_ax.imshow(pixels)
        image_ax.set_xticks([])
        image_ax.set_yticks([])
        image_ax.set_title(Path(example.path).name, fontsize=7)
        text_ax = fig.add_subplot(grid[2 * row + 1, column])
        text_ax.axis("off")
        truth = set(example.true)
        entries = [(name, RIGHT if name in truth else WRONG) for name in example.predicted]
        entries += [(f"missed: {name}", NEUTRAL) for name in example.true if name not in set(example.predicted)]
        for line, (text, colour) in enumerate(entries):
            text_ax.text(0.0, 1.0 - line / max(1, lines), text, color=colour, fontsize=7, va="top",
                         transform=text_ax.transAxes)  # fmt: skip
    return fig
