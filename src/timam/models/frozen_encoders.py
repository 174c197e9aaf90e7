"""The frozen image backbone and transformer a family's heads sit on, as config fields a checkpoint keeps.

The attribute-learning family (AgNet-style hashing heads, ACMM-style aligned memory) trains heads on
the outputs of a frozen backbone and a frozen transformer, which are computed once and cached
(:mod:`timam.training.feature_cache` keys its entries by exactly these field names). A family's
config inherits them so its checkpoint names the encoders that made its features and rebuilds them
(``transformer_config``) without the hub, as :class:`~timam.models.interaction.InteractionConfig` does.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Literal, Self

from pydantic import model_validator

from timam.config import ParameterBlock, build, set_from_data
from timam.models.config import (
    OFFLINE_IMAGE_WEIGHTS,
    OFFLINE_TEXT_MODEL,
    ImageSize,
    ImageViews,
    check_square_for_turns,
)
from timam.models.preprocessing import ImagePreprocessing

__all__ = ["FrozenEncodersConfig"]


class FrozenEncodersConfig(ParameterBlock):
    """Encoder fields shared by the families whose heads train on frozen, cached features."""

    family: ClassVar[str] = ""

    image_backbone: str = "efficientnet_lite0"
    """as ModelConfig: the frozen backbone whose features the heads read"""
    image_library: Literal["timm", "torchvision"] = "timm"
    """timm | torchvision"""
    image_weights: str | None = OFFLINE_IMAGE_WEIGHTS
    """as ModelConfig"""
    image_size: ImageSize = (256, 256)
    """[height, width]"""
    image_views: ImageViews = 1
    """as ModelConfig: features of 1 view, 2 (and mirrored) or 8 (quarter turns x mirror)"""
    text_model: str = OFFLINE_TEXT_MODEL
    """the frozen transformer whose token states the text heads read"""
    transformer_config: dict[str, Any] = set_from_data(default_factory=dict)
    """the transformer's architecture, written into checkpoints so they rebuild without the hub"""

    @model_validator(mode="after")
    def _square_for_turns(self) -> Self:
        check_square_for_turns(self.image_views, self.image_size)
        return self

    @property
    def text_encoder(self) -> str:
        """Always a transformer: its token states are the text features (the cache keys read this)."""
        return "transformer"

    @property
    def preprocessing(self) -> ImagePreprocessing:
        """Resize to ``image_size`` and ImageNet's statistics, as the backbone was trained."""
        return ImagePreprocessing(size=self.image_size)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values with the family's name: a checkpoint header rebuilds the right model."""
        return {"family": self.family, **self.model_dump(mode="json")}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], path: str = "model") -> Self:
        """From parameters or a checkpoint header; unknown keys are an error, and so is another family's."""
        family = values.get("family", cls.family)
        if family != cls.family:
            raise ValueError(f"params {path}.family is {family!r}, but this is the {cls.family!r} family's config")
        return build(cls, {key: value for key, value in values.items() if key != "family"}, path)

    @classmethod
    def is_config_of(cls, values: Mapping[str, Any]) -> bool:
        """Whether checkpoint config ``values`` belong to this family."""
        return values.get("family") == cls.family
