"""The training-curves figure: each loss term, validation R@1 both ways and the learning rate per epoch."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from timam.figures.style import DPI, NEUTRAL, message_figure


def training_curves_figure(history: pd.DataFrame, *, title: str = "") -> Figure:
    """One panel per ``loss_<term>`` column, one for validation R@1, one for the learning rate (log)."""
    if history is None or history.empty or "epoch" not in history:
        return message_figure("no training history to plot", title=title)
    epochs = history["epoch"].to_numpy()
    losses = [c for c in history.columns if c.startswith("loss_")]
    losses.sort(key=lambda c: (c != "loss_total", c))  # the total first
    validation = [c for c in history.columns if c.startswith("val_")]
    panels: list[tuple[str, list[str], bool]] = [(c.removeprefix("loss_"), [c], False) for c in losses]
    if validation:
        panels.append(("validation R@1 (%)", validation, False))
    if "lr" in history:
        panels.append(("learning rate", ["lr"], True))
    columns = min(3, len(panels))
    rows = math.ceil(len(panels) / columns)
    fig = Figure(figsize=(4.2 * columns, 3.0 * rows + (0.4 if title else 0)), dpi=DPI, layout="constrained")
    axes = list(fig.subplots(rows, columns, squeeze=False).flat)
    for ax, (name, names, log) in zip(axes, panels, strict=False):
        for column in names:
            values = pd.to_numeric(history[column], errors="coerce").to_numpy(dtype=float)
            label = {"val_t2i_R@1": "text \u2192 image", "val_i2t_R@1": "image \u2192 text"}.get(column, column)
            ax.plot(epochs, values, marker="o", markersize=3, label=label)
        if log and np.all(pd.to_numeric(history[names[0]], errors="coerce").to_numpy(dtype=float) > 0):
            ax.set_yscale("log")
        if len(names) > 1:
            ax.legend(fontsize=8)
        if names[0].startswith("val_") and "val_t2i_R@1" in names:
            best = int(np.nanargmax(history["val_t2i_R@1"].to_numpy(dtype=float)))
            ax.axvline(epochs[best], color=NEUTRAL, linestyle=":", linewidth=1)
            right_half = best >= len(epochs) / 2
            ax.annotate(
                f"best t2i {history['val_t2i_R@1'].iloc[best]:.1f} @ epoch {epochs[best]}",
                (epochs[best], 0),
                xycoords=("data", "axes fraction"),
                xytext=(-3 if right_half else 3, 4),
                textcoords="offset points",
                fontsize=8,
                ha="right" if right_half else "left",
            )
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("epoch")
        ax.grid(True, alpha=0.3)
    for ax in axes[len(panels) :]:
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=11)
    return fig
