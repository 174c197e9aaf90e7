"""How a model wants its images: size, resize rule, interpolation and normalisation statistics.

A model config says it (``config.preprocessing``) and the loaders follow it, so an image reaches a
CLIP tower as CLIP's own transform would have made it (open_clip users report silently wrong
preprocessing as a recurring bug). TIMAM's models resize to (height, width) and normalise with
ImageNet's statistics; a CLIP-family tower resizes its shorter side, crops the centre and uses
the statistics its checkpoint was trained with.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
ResizeRule = Literal["squash", "shortest"]
Interpolation = Literal["bilinear", "bicubic"]


@dataclass(frozen=True)
class ImagePreprocessing:
    """``size``: (height, width) of the model's input. ``resize``: "squash" (resize to ``size``,
    aspect ratio not kept) or "shortest" (shorter side to the size, then the centre crop, as CLIP).
    ``mean``/``std``: the per-channel statistics the model was trained with."""

    size: tuple[int, int]
    resize: ResizeRule = "squash"
    interpolation: Interpolation = "bilinear"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    @property
    def is_imagenet(self) -> bool:
        """Whether the loaders' ImageNet normalisation is already the model's."""
        return self.mean == IMAGENET_MEAN and self.std == IMAGENET_STD
