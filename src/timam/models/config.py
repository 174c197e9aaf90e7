"""Everything needed to rebuild a TIMAM model, as plain values that travel inside a checkpoint."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from timam.config_tree import build_config

OFFLINE_TEXT_MODEL = "offline:minilm"
OFFLINE_IMAGE_WEIGHTS = "offline"
IMAGE_VIEWS = (1, 2, 8)


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of a TIMAM model.

    ``image_weights``: "offline" (packaged ImageNet weights, timm efficientnet_lite0, _lite1 or
    _lite2 only, or their tf_ variants; native sizes 224, 240 and 260 px), "imagenet" (the
    library's hub weights, needs a network or cache), a path to a state dict, or None (random
    init, warned loudly). ``image_size`` is (height, width). ``image_views``: image
    features are the mean over this many views of the image -- 1 (as it is), 2 (and mirrored) or
    8 (the four quarter turns, each also mirrored; square images only) -- for data whose
    orientation means nothing, such as aerial photographs.
    """

    num_classes: int
    image_backbone: str = "efficientnet_lite0"
    image_library: str = "timm"
    image_weights: str | None = OFFLINE_IMAGE_WEIGHTS
    image_size: tuple[int, int] = (160, 80)
    text_encoder: str = "transformer"
    text_model: str = OFFLINE_TEXT_MODEL
    vocab_size: int = 30522
    word_embedding_dim: int = 300
    lstm_hidden: int = 512
    embedding_dim: int = 512
    image_views: int = 1
    transformer_config: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.image_library not in {"timm", "torchvision"}:
            raise ValueError(f"image_library must be 'timm' or 'torchvision', got {self.image_library!r}")
        if self.text_encoder not in {"transformer", "fc_embed"}:
            raise ValueError(f"text_encoder must be 'transformer' or 'fc_embed', got {self.text_encoder!r}")
        if self.num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {self.num_classes}")
        object.__setattr__(self, "image_size", tuple(self.image_size))
        if self.image_views not in IMAGE_VIEWS:
            raise ValueError(f"image_views must be one of {IMAGE_VIEWS}, got {self.image_views!r}")
        if self.image_views == 8 and self.image_size[0] != self.image_size[1]:
            raise ValueError(
                f"image_views 8 turns images by quarter turns, which needs a square image_size, got "
                f"{list(self.image_size)}; use image_views 2 (mirrored only) or a square size"
            )

    def to_dict(self) -> dict[str, Any]:
        values = asdict(self)
        values["image_size"] = list(self.image_size)
        return values

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], path: str = "model") -> ModelConfig:
        """Build from parameters or a checkpoint header; unknown keys are an error, not ignored."""
        return build_config(cls, values, path)


# Counted from the data (the train split's classes), never set as a parameter.
DATA_FIELDS = ("num_classes",)


def model_config(values: Mapping[str, Any] | None, *, num_classes: int, path: str = "model") -> ModelConfig:
    """``params:model`` plus what the data fixes; ``model.num_classes`` is refused (the data counts it)."""
    values = dict(values or {})
    for name in DATA_FIELDS:
        if name in values:
            raise ValueError(f"params {path}.{name} is counted from the train split; remove it from the parameters")
    return ModelConfig.from_dict({**values, "num_classes": num_classes}, path)


def check_model_parameters(values: Mapping[str, Any] | None, path: str = "model") -> None:
    """Check ``params:model`` before any data is read (keys and values; the class count is a stand-in)."""
    model_config(values, num_classes=1, path=path)
