"""The training node: caption table + tokens + parameters -> best checkpoint and history."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

from timam.formats.tensor_bundle import TensorBundle
from timam.inference.split_data import split_data
from timam.models.checkpoint import Checkpoint
from timam.training.config import training_config
from timam.training.loop import train_timam
from timam.training.model_setup import model_config_from_data


def train_model(
    captions: pd.DataFrame, caption_tokens: TensorBundle, model: Mapping[str, Any], training: Mapping[str, Any]
) -> tuple[Checkpoint, pd.DataFrame]:
    """Train TIMAM on the train split, selecting the checkpoint on the val split only.

    The resume state outlives the node: the catalog saves the checkpoint after the node returns,
    and ``timam.hooks.TrainingStateHook`` (``timam.launch`` under torchrun) deletes the state only
    once the checkpoint and the history are saved, so a kill during that save loses no training.
    """
    model_config = model_config_from_data(model, captions, caption_tokens.metadata)
    config = training_config(training)
    checkpoint, history = train_timam(
        split_data(captions, caption_tokens, "train"),
        split_data(captions, caption_tokens, "val"),
        model_config,
        config,
        state_path=config.state_path,
        keep_state=True,
    )
    checkpoint.metadata["model_parameters"] = dict(model)
    return checkpoint, history
