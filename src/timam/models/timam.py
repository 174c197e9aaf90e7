"""The TIMAM retrieval model: an image encoder and a text encoder into one 512-d space."""

from __future__ import annotations

from torch import nn

from timam.models.config import ModelConfig
from timam.models.image_encoder import ImageEncoder
from timam.models.text_encoder import TextEncoder, transformer_config


class TimamModel(nn.Module):
    """Both encoders; ``pretrained=False`` builds the architecture only (checkpoint restore)."""

    def __init__(self, config: ModelConfig, *, pretrained: bool = True) -> None:
        super().__init__()
        self.image_encoder = ImageEncoder(config, pretrained=pretrained)
        self.text_encoder = TextEncoder(config, pretrained=pretrained)
        if config.text_encoder == "transformer" and not config.transformer_config:
            values = config.to_dict()
            values["transformer_config"] = transformer_config(self.text_encoder.transformer)
            config = ModelConfig.from_dict(values)
        self.config = config
