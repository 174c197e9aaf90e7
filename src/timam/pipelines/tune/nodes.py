"""The tuning node: caption table + tokens + parameters -> best training parameters, trials, plots.

One ``kedro run --pipelines tune`` is one worker: it caches the frozen features of the train and
val splits once, runs ``tuning.n_trials`` trials of the study ``tuning.study_name`` in
``tuning.storage`` (created, or resumed when it exists), and writes what the whole study -- every
worker's trials so far -- says. Several workers, on one machine or many, are several such runs
against one database URL. Scores are validation text->image R@1; the test split is never read.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from timam.formats.tensor_bundle import TensorBundle
from timam.models.config import ModelConfig
from timam.inference.split_data import split_data
from timam.tuning.plots import optimisation_history_figure, parameter_importance_figure
from timam.tuning.runner import run_worker
from timam.tuning.study import best_training_parameters, trials_table


def tune_hyperparameters(
    captions: pd.DataFrame,
    caption_tokens: TensorBundle,
    model: dict[str, Any],
    training: dict[str, Any],
    tuning: dict[str, Any],
) -> tuple[dict[str, Any], pd.DataFrame, Figure, Figure]:
    """Run this worker's trials; return ``{"training": best knobs}``, the trials table and two figures."""
    num_classes = int(captions.loc[captions["split"] == "train", "label"].max()) + 1
    model_config = ModelConfig.from_dict({**model, "num_classes": num_classes})
    tokenizer = caption_tokens.metadata.get("tokenizer")
    if model_config.text_encoder == "transformer" and tokenizer != model_config.text_model:
        raise ValueError(
            f"caption_tokens were made by tokenizer {tokenizer!r} but the text model is "
            f"{model_config.text_model!r}; set params tokenization.tokenizer to the same name"
        )
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
