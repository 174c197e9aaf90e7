"""The training-curves figure renders one panel per curve, from a real history table."""

from __future__ import annotations

import pandas as pd

from tests.png import figure_size, save_png
from timam.figures.training import training_curves_figure


def test_training_curvessave_png(tmp_path):
    history = pd.DataFrame(
        {
            "epoch": [1, 2, 3],
            "lr": [1e-3, 1e-3, 1e-4],
            "loss_identification": [3.0, 2.0, 1.5],
            "loss_cmpm": [5.0, 4.0, 3.5],
            "loss_total": [8.0, 6.0, 5.0],
            "val_t2i_R@1": [10.0, 20.0, 18.0],
            "val_i2t_R@1": [12.0, 22.0, 25.0],
            "seconds": [1.0, 1.0, 1.0],
        }
    )
    figure = training_curves_figure(history, title="history")
    assert save_png(figure, tmp_path).size == figure_size(figure) == (1260, 640)  # 3 loss + R@1 + lr panels, 3 columns
    titles = [ax.get_title() for ax in figure.axes if ax.get_title()]
    assert titles == ["total", "cmpm", "identification", "validation R@1 (%)", "learning rate"]
    assert figure.axes[4].get_yscale() == "log"


def test_empty_history_still_gives_a_figure(tmp_path):
    save_png(training_curves_figure(pd.DataFrame(), title="x"), tmp_path)
