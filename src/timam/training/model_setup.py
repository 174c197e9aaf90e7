"""The model a run trains, from ``params:model`` and the data: one function for training and tuning.

The data fixes two things the parameters do not: the number of classes (the train split's labels)
and, for FC-Embed, the vocabulary (one learned vector per entry of the tokenizer that made the
tokens). ``model.family`` picks the architecture: TIMAM's, or a CLIP-family dual encoder whose
towers come from ``model.dual_encoder``. :func:`check_tokenizer` is the one check that tokens and
text model agree, also used when ``search`` embeds a query with a trained checkpoint.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

from timam.models.config import ModelConfig, model_config
from timam.models.dual_encoder import DualEncoderConfig, DualEncoderModel
from timam.models.families import ObjectiveModel
from timam.models.frozen_encoders import FrozenEncodersConfig
from timam.models.timam import TimamModel

# The architecture of an embedding model a run builds.
EmbeddingConfig = ModelConfig | DualEncoderConfig


def train_classes(captions: pd.DataFrame) -> int:
    """Classes of the identification loss: the train split's labels are 0..N-1."""
    return int(captions.loc[captions["split"] == "train", "label"].max()) + 1


def check_tokenizer(
    config: ModelConfig | DualEncoderConfig | FrozenEncodersConfig,
    tokenizer: str | None,
    *,
    tokens: str = "caption_tokens were made by tokenizer",
    model: str = "the text model is",
    fix: str = "set params tokenization.tokenizer to the same name",
) -> None:
    """A transformer text encoder reads the ids of its own tokenizer: refuse any other.

    ``tokens``, ``model`` and ``fix`` word the error for the caller: "<tokens> 'x' but <model> 'y'; <fix>".
    """
    if config.text_encoder == "transformer" and tokenizer != config.text_model:
        raise ValueError(f"{tokens} {tokenizer!r} but {model} {config.text_model!r}; {fix}")


def build_model(config: EmbeddingConfig) -> ObjectiveModel:
    """The untrained model of ``config``, its pretrained parts loaded (a dual encoder reads its checkpoint)."""
    return DualEncoderModel(config) if isinstance(config, DualEncoderConfig) else TimamModel(config)


def model_config_from_data(
    model: Mapping[str, Any] | None, captions: pd.DataFrame, token_metadata: Mapping[str, Any]
) -> EmbeddingConfig:
    """``params:model`` with the class count of the train split and the vocabulary of the tokens.

    ``token_metadata`` is ``caption_tokens.metadata`` (``tokenizer``, ``vocab_size``). A
    ``model.vocab_size`` that differs from the tokenizer's is refused: FC-Embed's table follows
    the tokenizer that made the ids.
    """
    values = dict(model or {})
    vocab_size = token_metadata.get("vocab_size")
    if vocab_size is not None:
        given = values.get("vocab_size")
        if given is not None and int(given) != int(vocab_size):
            raise ValueError(
                f"params model.vocab_size is {given} but caption_tokens come from a tokenizer with {vocab_size} "
                "entries; remove model.vocab_size (it follows the tokenizer)"
            )
        values["vocab_size"] = int(vocab_size)
    config = model_config(values, num_classes=train_classes(captions))
    architecture: EmbeddingConfig = config
    if config.family == "dual_encoder":
        architecture = DualEncoderConfig(**config.dual_encoder.model_dump(), num_classes=config.num_classes)
    check_tokenizer(architecture, token_metadata.get("tokenizer"))
    return architecture
