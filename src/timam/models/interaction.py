"""The interaction family (SCAN, Lee et al., ECCV 2018): image regions and words meet before the score.

There is no image or caption embedding: a pair's score comes from cross-attention between the
cells of the backbone's last feature map (the regions, 8 x 8 = 64 at 256 px for a stride-32
backbone) and the text encoder's token states (the words), each projected to a joint space
(:func:`~timam.models.cross_attention.cross_attention_scores`). As SCAN keeps its detector
features fixed, the backbone and the transformer stay frozen here: their outputs are cached and
only the two projections train.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, cast

import torch
from pydantic import Field
from torch import nn

from timam.models.config import ImageViews
from timam.models.cross_attention import Direction, Pooling, chunked_cross_attention_scores
from timam.models.frozen_encoders import FrozenEncodersConfig
from timam.models.image_encoder import build_backbone, image_view, views_of
from timam.models.text_encoder import build_transformer, transformer_config

# The checkpoint header's config names the family, so a checkpoint rebuilds the right model.
INTERACTION_FAMILY = "interaction"


class InteractionConfig(FrozenEncodersConfig):
    """Architecture of a SCAN-style model (``params:model`` of an interaction run).

    Encoder fields as :class:`~timam.models.frozen_encoders.FrozenEncodersConfig`. ``image_views`` > 1:
    training draws one of those views per caption and step (augmentation); the gallery is scored on
    the image as it is (view 0), since a feature map's cells cannot be averaged across turned views.
    ``direction``: "t2i" (each word attends over the regions) or "i2t" (each region over the words);
    ``lambda_softmax`` the attention temperature, ``pooling`` "lse" (with ``lambda_lse``) or "avg".
    SCAN's Flickr30K single models: t2i AVG with lambda_softmax 9, i2t LSE with 4 and lambda_lse 5.

    Words are every token state the mask keeps, the transformer's [CLS] and [SEP] included (SCAN's
    GRU has no such tokens); they are contextual states, so they carry the sentence.
    """

    family: ClassVar[str] = INTERACTION_FAMILY

    image_views: ImageViews = 1
    """training draws one of this many views per caption and step; the gallery uses view 0"""
    joint_dim: int = Field(default=512, ge=1)
    """the region and word projections' size (SCAN: 1024)"""
    direction: Direction = "t2i"
    """t2i (each word attends over the regions) | i2t (each region over the words)"""
    lambda_softmax: float = Field(default=9.0, gt=0)
    """the attention temperature"""
    pooling: Pooling = "avg"
    """lse (LogSumExp with lambda_lse) | avg"""
    lambda_lse: float = Field(default=6.0, gt=0)
    """the LogSumExp pooling's temperature"""


def is_interaction_config(values: Mapping[str, Any]) -> bool:
    return InteractionConfig.is_config_of(values)


def _resnet_feature_map(backbone: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """A torchvision ResNet's layer4 output (its forward without the pooling and classifier)."""
    net = cast(Any, backbone)
    x = net.maxpool(net.relu(net.bn1(net.conv1(images))))
    return cast(torch.Tensor, net.layer4(net.layer3(net.layer2(net.layer1(x)))))


def backbone_regions(backbone: nn.Module, images: torch.Tensor, view: int = 0) -> torch.Tensor:
    """The last feature map of view ``view`` as regions, ``(batch, cells, channels)``: every pair-score
    family's image input (SCAN-style here, ACMM-style in ``timam.models.attribute_family``)."""
    images = image_view(images, view) if view else images
    if hasattr(backbone, "forward_features"):
        feature_map = cast(Any, backbone).forward_features(images)
    else:
        feature_map = _resnet_feature_map(backbone, images)
    return feature_map.flatten(2).transpose(1, 2)


class InteractionModel(nn.Module):
    """Frozen backbone and transformer, and the two projections into the joint space that train."""

    def __init__(self, config: InteractionConfig, *, pretrained: bool = True) -> None:
        super().__init__()
        self.backbone = build_backbone(
            config.image_backbone, config.image_library, config.image_weights, architecture_only=not pretrained
        )
        self.transformer = build_transformer(config.text_model, None if pretrained else config.transformer_config)
        if not config.transformer_config:
            config = InteractionConfig.from_dict(
                {**config.to_dict(), "transformer_config": transformer_config(self.transformer)}
            )
        self.config = config
        self.views = views_of(config.image_views)
        self.region_projection = nn.Linear(self.feature_dim, config.joint_dim)
        self.word_projection = nn.Linear(self.transformer.config.hidden_size, config.joint_dim)
        self.backbone.requires_grad_(False)
        self.transformer.requires_grad_(False)

    @property
    def feature_dim(self) -> int:
        return cast(int, self.backbone.num_features)

    def heads(self) -> list[nn.Module]:
        """The parts that train."""
        return [self.region_projection, self.word_projection]

    def region_features(self, images: torch.Tensor, view: int = 0) -> torch.Tensor:
        """The backbone's last feature map of view ``view`` as regions, ``(batch, cells, channels)``."""
        return backbone_regions(self.backbone, images, view)

    def word_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        output = self.transformer(input_ids=input_ids.long(), attention_mask=attention_mask.long())
        return cast(torch.Tensor, output.last_hidden_state)

    def scores(
        self,
        regions: torch.Tensor,
        states: torch.Tensor,
        attention_mask: torch.Tensor,
        *,
        image_chunk: int | None = None,
        caption_chunk: int | None = None,
    ) -> torch.Tensor:
        """Pair scores ``(captions, images)`` of frozen region features and token states.

        Without chunks, one block (a training batch, with gradients); with them, block by block
        (a gallery), the same values.
        """
        projected_regions = self.region_projection(regions.float())
        projected_words = self.word_projection(states.float())
        return chunked_cross_attention_scores(
            projected_regions,
            projected_words,
            attention_mask.bool(),
            image_chunk=image_chunk or len(projected_regions),
            caption_chunk=caption_chunk or len(projected_words),
            direction=self.config.direction,
            lambda_softmax=self.config.lambda_softmax,
            pooling=self.config.pooling,
            lambda_lse=self.config.lambda_lse,
        )
