"""The attribute-learning family's whole models: frozen encoders with AgNet-style or ACMM-style heads.

:mod:`timam.models.attribute_hashing` and :mod:`timam.models.aligned_memory` hold the heads that
train; here they sit on the frozen image backbone and transformer their configs name, so that a
checkpoint holds everything an evaluation, an index or ``timam serve`` needs to turn an image or a
sentence into the family's representation.

- :class:`AttributeHashingModel` has the surface of the embedding models (``image_encoder.features``,
  ``text_encoder.word_states`` / ``encode_states``, ``projection``), so the frozen-feature caches, the
  embedding passes, the index shards and the query encoder take it as they take TIMAM's. Its
  "embedding" is the relaxed code ``h = tanh(G(a))``: its sign is the K-bit code (and so is the sign
  of an L2-normalised ``h``), and for codes of +1 / -1 the cosine is ``1 - 2 d_H / K``, a decreasing
  function of the Hamming distance. The attribute space (``a``) is read through the heads
  (:meth:`AttributeHashingModel.image_outputs`, :meth:`~AttributeHashingModel.text_outputs`).
- :class:`AlignedMemoryModel` has the surface of :class:`~timam.models.interaction.InteractionModel`
  (``region_features``, ``word_states``, ``scores``): a pair-score model, scored and re-ranked by the
  same code as SCAN.
"""

from __future__ import annotations

from typing import Any, cast

import torch
from torch import Tensor, nn

from timam.models.aligned_memory import ACMM_CAPTION_CHUNK, ACMM_IMAGE_CHUNK, AlignedMemory, AlignedMemoryConfig
from timam.models.attribute_hashing import AttributeHashingConfig, AttributeHashingHeads, AttributeOutputs
from timam.models.image_encoder import build_backbone, image_view, random_views, views_of
from timam.models.interaction import backbone_regions
from timam.models.text_encoder import build_transformer, transformer_config

__all__ = ["AlignedMemoryModel", "AttributeHashingModel"]

FrozenConfig = AttributeHashingConfig | AlignedMemoryConfig


def _frozen_encoders(config: FrozenConfig, pretrained: bool) -> tuple[nn.Module, Any, FrozenConfig]:
    """The frozen backbone and transformer of ``config`` and the config with the transformer's
    architecture recorded (so the checkpoint rebuilds it without the hub)."""
    backbone = build_backbone(
        config.image_backbone, config.image_library, config.image_weights, architecture_only=not pretrained
    )
    transformer = build_transformer(config.text_model, None if pretrained else config.transformer_config)
    backbone.requires_grad_(False)
    transformer.requires_grad_(False)
    if not config.transformer_config:
        config = config.replace(transformer_config=transformer_config(transformer))
    return backbone, transformer, config


class _ImageCodes:
    """Pooled features -> relaxed codes, as an embedding model's ``image_encoder.projection``.

    Not a module: the weights belong to the model's one ``heads`` (a hashing network shared by both
    modalities, registered under two encoders, would be saved twice).
    """

    def __init__(self, heads: AttributeHashingHeads, in_features: int) -> None:
        self.heads, self.in_features, self.out_features = heads, in_features, heads.config.code_bits

    def __call__(self, features: Tensor) -> Tensor:
        return self.heads.image_outputs(features).relaxed


class _TextCodes:
    """The text side's code size, as an embedding model's ``text_encoder.projection`` reports it."""

    def __init__(self, heads: AttributeHashingHeads, in_features: int) -> None:
        self.in_features, self.out_features = in_features, heads.config.code_bits


class HashingImageEncoder(nn.Module):
    """The frozen backbone with :class:`~timam.models.image_encoder.ImageEncoder`'s surface; its
    ``projection`` gives the relaxed codes."""

    def __init__(self, backbone: nn.Module, views: tuple[int, ...], heads: AttributeHashingHeads) -> None:
        super().__init__()
        self.backbone = backbone
        self.views = views
        self.projection = _ImageCodes(heads, self.feature_dim)

    @property
    def feature_dim(self) -> int:
        return cast(int, self.backbone.num_features)

    def view_features(self, images: Tensor) -> Tensor:
        """Pooled features of every view, ``(views, batch, features)`` (a training cache's form)."""
        return torch.stack([self.backbone(image_view(images, view)) for view in self.views])

    def features(self, images: Tensor) -> Tensor:
        """Pooled features: the mean over the views in eval mode, one random view in training mode."""
        if len(self.views) == 1:
            return cast(Tensor, self.backbone(images))
        if self.training:
            return cast(Tensor, self.backbone(random_views(images, self.views)))
        return self.view_features(images).mean(dim=0)


class HashingTextEncoder(nn.Module):
    """The frozen transformer with :class:`~timam.models.text_encoder.TextEncoder`'s surface;
    ``encode_states`` gives the relaxed codes from the mean of the real tokens' states."""

    def __init__(self, transformer: Any, heads: AttributeHashingHeads) -> None:
        super().__init__()
        self.transformer = transformer
        self.projection = _TextCodes(heads, self.state_dim)
        self._heads = [heads]  # a list: the model registers the heads once, not here too

    @property
    def state_dim(self) -> int:
        return int(self.transformer.config.hidden_size)

    def word_states(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        output = self.transformer(input_ids=input_ids.long(), attention_mask=attention_mask.long())
        return cast(Tensor, output.last_hidden_state)

    def encode_states(
        self, states: Tensor, attention_mask: Tensor, lengths: Tensor | list[int] | None = None
    ) -> Tensor:
        return self._heads[0].text_outputs(states.float(), attention_mask).relaxed


class AttributeHashingModel(nn.Module):
    """Frozen backbone and transformer, and the AgNet-style heads that train on their outputs."""

    def __init__(self, config: AttributeHashingConfig, *, pretrained: bool = True) -> None:
        super().__init__()
        backbone, transformer, full = _frozen_encoders(config, pretrained)
        self.config = cast(AttributeHashingConfig, full)
        self.heads = AttributeHashingHeads(
            self.config,
            image_feature_dim=cast(int, backbone.num_features),
            text_state_dim=int(transformer.config.hidden_size),
        )
        self.image_encoder = HashingImageEncoder(backbone, views_of(config.image_views), self.heads)
        self.text_encoder = HashingTextEncoder(transformer, self.heads)

    def image_outputs(self, features: Tensor) -> AttributeOutputs:
        """Attribute logits, attributes and relaxed codes of pooled image features."""
        return self.heads.image_outputs(features.float())

    def text_outputs(self, states: Tensor, attention_mask: Tensor) -> AttributeOutputs:
        """Attribute logits, attributes and relaxed codes of token states (padding ignored)."""
        return self.heads.text_outputs(states.float(), attention_mask)


class AlignedMemoryModel(nn.Module):
    """Frozen backbone and transformer, and the ACMM-style aligned memory that trains on their outputs."""

    def __init__(self, config: AlignedMemoryConfig, *, pretrained: bool = True) -> None:
        super().__init__()
        self.backbone, self.transformer, full = _frozen_encoders(config, pretrained)
        self.config = cast(AlignedMemoryConfig, full)
        self.views = views_of(config.image_views)
        self.memory = AlignedMemory(
            self.config, region_dim=self.feature_dim, word_dim=int(self.transformer.config.hidden_size)
        )

    @property
    def feature_dim(self) -> int:
        return cast(int, self.backbone.num_features)

    def heads(self) -> list[nn.Module]:
        """The parts that train."""
        return [self.memory]

    def region_features(self, images: Tensor, view: int = 0) -> Tensor:
        """The backbone's last feature map of view ``view`` as regions, ``(batch, cells, channels)``."""
        return backbone_regions(self.backbone, images, view)

    def word_states(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        output = self.transformer(input_ids=input_ids.long(), attention_mask=attention_mask.long())
        return cast(Tensor, output.last_hidden_state)

    def scores(
        self,
        regions: Tensor,
        states: Tensor,
        attention_mask: Tensor,
        *,
        image_chunk: int | None = None,
        caption_chunk: int | None = None,
    ) -> Tensor:
        """Pair scores ``(captions, images)``, in blocks of at most ``ACMM_IMAGE_CHUNK`` x
        ``ACMM_CAPTION_CHUNK`` whatever the caller asks (see :mod:`timam.models.aligned_memory`)."""
        return self.memory.scores(
            regions,
            states,
            attention_mask,
            image_chunk=min(image_chunk or ACMM_IMAGE_CHUNK, ACMM_IMAGE_CHUNK),
            caption_chunk=min(caption_chunk or ACMM_CAPTION_CHUNK, ACMM_CAPTION_CHUNK),
        )
