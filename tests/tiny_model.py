"""The tiny randomly initialised TIMAM model the index, search and serve tests embed with."""

from __future__ import annotations

import torch

from timam.models.config import ModelConfig
from timam.models.timam import TimamModel


def random_tiny_model(*, image_size: tuple[int, int] = (32, 32), vocab_size: int = 64) -> TimamModel:
    """ResNet-18 (random weights) + FC-Embed text head, 16-d joint space, seeded, in eval mode.

    It warns "RANDOM weights": callers expect the warning (``pytest.warns``) or silence it.
    """
    config = ModelConfig(
        num_classes=3,
        image_backbone="resnet18",
        image_library="torchvision",
        image_weights=None,
        image_size=image_size,
        text_encoder="fc_embed",
        vocab_size=vocab_size,
        word_embedding_dim=8,
        lstm_hidden=8,
        embedding_dim=16,
    )
    torch.manual_seed(0)
    return TimamModel(config).eval()
