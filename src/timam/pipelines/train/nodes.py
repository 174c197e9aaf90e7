"""The training node: caption table + tokens + parameters -> best checkpoint and history."""

from __future__ import annotations

from typing import Any

import pandas as pd

from timam.formats.tensor_bundle import TensorBundle
from timam.models.checkpoint import Checkpoint
from timam.models.config import ModelConfig
from timam.training.config import training_config
from timam.inference.split_data import split_data
from timam.training.loop import train_timam


def train_model(
    captions: pd.DataFrame, caption_tokens: TensorBundle, model: dict[str, Any], training: dict[str, Any]
) -> tuple[Checkpoint, pd.DataFrame]:
    """Train TIMAM on the train split, selecting the checkpoint on the val split only."""
    num_classes = int(captions.loc[captions["split"] == "train", "label"].max()) + 1
    # FC-Embed learns one vector per tokenizer entry, so its table follows the tokenizer used.
    vocab_size = int(caption_tokens.metadata.get("vocab_size", model.get("vocab_size", 30522)))
    model_config = ModelConfig.from_dict({"vocab_size": vocab_size, **model, "num_classes": num_classes})
    tokenizer = caption_tokens.metadata.get("tokenizer")
    if model_config.text_encoder == "transformer" and tokenizer != model_config.text_model:
        raise ValueError(
            f"caption_tokens were made by tokenizer {tokenizer!r} but the text model is "
            f"{model_config.text_model!r}; set params tokenization.tokenizer to the same name"
        )
    config = training_config(training)
    checkpoint, history = train_timam(
        split_data(captions, caption_tokens, "train"),
        split_data(captions, caption_tokens, "val"),
        model_config,
        config,
        state_path=config.state_path,
    )
    checkpoint.metadata["model_parameters"] = model
    return checkpoint, history
