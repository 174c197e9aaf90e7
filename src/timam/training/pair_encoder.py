"""The trainable forward of one training batch, as one module so DistributedDataParallel can wrap it."""

from __future__ import annotations

import torch
from torch import nn

from timam.inference.device import autocast
from timam.models.families import EmbeddingModel


class PairEncoder(nn.Module):
    """Images (or their cached pooled features) and captions (or cached token states) -> embeddings.

    Cached inputs skip the frozen part they stand for; the heads always run. It holds the model's
    encoders, not copies, so training it trains the model. The backbone and the transformer run in
    ``precision`` (``training.precision``, see :func:`~timam.inference.device.autocast`); the
    projections run after the autocast block closes, so both embeddings are float32.
    """

    def __init__(self, model: EmbeddingModel, device: torch.device, precision: str = "auto") -> None:
        super().__init__()
        self.image_encoder, self.text_encoder, self.device = model.image_encoder, model.text_encoder, device
        self.precision = precision

    def forward(
        self,
        image_input: torch.Tensor,
        text_input: torch.Tensor,
        attention_mask: torch.Tensor,
        *,
        image_features_given: bool,
        token_states_given: bool,
        lengths: list[int] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``lengths``: each caption's token count, read on the host (no device synchronisation)."""
        with autocast(self.device, self.precision):
            features = image_input if image_features_given else self.image_encoder.features(image_input)
        image_emb = self.image_encoder.projection(features.float())
        text_emb = self.texts(text_input, attention_mask, token_states_given=token_states_given, lengths=lengths)
        return image_emb, text_emb

    def texts(
        self,
        text_input: torch.Tensor,
        attention_mask: torch.Tensor,
        *,
        token_states_given: bool,
        lengths: list[int] | None = None,
    ) -> torch.Tensor:
        """Caption embeddings alone (validation embeds captions without images)."""
        with autocast(self.device, self.precision):
            states = text_input if token_states_given else self.text_encoder.word_states(text_input, attention_mask)
        return self.text_encoder.encode_states(states, attention_mask, lengths)
