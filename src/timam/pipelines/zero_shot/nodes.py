"""A pretrained CLIP-family model as a checkpoint: what the evaluation, the index and search read."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import pandas as pd

from timam.formats.tensor_bundle import TensorBundle
from timam.models.checkpoint import Checkpoint
from timam.models.dual_encoder import DualEncoderConfig, DualEncoderModel, weights_identity
from timam.training.model_setup import model_config_from_data

logger = logging.getLogger(__name__)


def pretrained_checkpoint(captions: pd.DataFrame, caption_tokens: TensorBundle, model: Mapping[str, Any]) -> Checkpoint:
    """``params:model`` (``family: dual_encoder``) with its pretrained weights, untrained here.

    Saved as a new ``model_checkpoint`` version, so its evaluation, an evaluate-only rerun, the
    index and ``timam serve`` treat it as any checkpoint; its metadata names the weights it holds
    (source and sha256) instead of a best epoch. The identity heads leave the library's embeddings
    as they are: the numbers are the checkpoint's zero-shot ones.
    """
    config = model_config_from_data(model, captions, caption_tokens.metadata)
    if not isinstance(config, DualEncoderConfig):
        raise ValueError(
            "zero-shot evaluation needs a pretrained joint image-text model: set params model.family: dual_encoder "
            "and model.dual_encoder (library, model_name, pretrained); a TIMAM model has untrained heads"
        )
    identity = weights_identity(config)
    logger.info("Zero-shot: %s %s from %s", config.library, config.model_name, identity["source"])
    network = DualEncoderModel(config).eval()
    return Checkpoint(model=network, metadata={"pretrained": identity, "model_parameters": dict(model)})
