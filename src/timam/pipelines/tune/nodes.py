"""The tuning node: caption table + tokens + parameters -> best training parameters, trials, plots.

One ``kedro run --pipelines tune`` is one worker: it caches the frozen features of the train and
val splits once, runs ``tuning.n_trials`` trials of the study ``tuning.study_name`` in
``tuning.storage`` (created, or resumed when it exists), and writes what the whole study -- every
worker's trials so far -- says. Several workers, on one machine or many, are several such runs
against one database URL. Scores are validation text->image R@1; the test split is never read.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from timam.figures.tuning import optimisation_history_figure, parameter_importance_figure
from timam.formats.tensor_bundle import TensorBundle
from timam.inference.split_data import split_data
from timam.training.model_setup import model_config_from_data
from timam.tuning.runner import run_worker
from timam.tuning.study import best_training_parameters, trials_table


def tune_hyperparameters(
    captions: pd.DataFrame,
    caption_tokens: TensorBundle,
    model: Mapping[str, Any],
    training: Mapping[str, Any],
    tuning: Mapping[str, Any],
) -> tuple[dict[str, Any], pd.DataFrame, Figure, Figure]:
    """Run this worker's trials; return ``{"training": best knobs}``, the trials table and two figures."""
    model_config = model_config_from_data(model, captions, caption_tokens.metadata)
    study = run_worker(
        split_data(captions, caption_tokens, "train"),
        split_data(captions, caption_tokens, "val"),
        model_config,
        training,
        tuning,
    )
    return (
        best_training_parameters(study),
        trials_table(study),
        optimisation_history_figure(study),
        parameter_importance_figure(study),
    )
