"""How models run when they embed: the device, the encoders' compute dtype, and the batch.

``params:embedding`` is the one embedding setting of the evaluation, the index, the search
pipeline and ``timam serve`` (an index records the precision it was built with, and its queries
are embedded the same way). Training has its own ``training.precision`` for its steps and
``training.embed_batch_size`` for validation.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal, get_args

import torch
from pydantic import AfterValidator, Field

from timam.config import ParameterBlock, build

Precision = Literal["auto", "float32", "bfloat16"]
"""The dtype the image backbone and the transformer compute in: auto (bfloat16 on CUDA, float32 on
the CPU), float32, or bfloat16 (also on the CPU). Projections, embeddings and scores stay float32."""
PRECISIONS: tuple[str, ...] = get_args(Precision)


def _check_device(name: str) -> str:
    if name != "auto":
        try:
            torch.device(name)
        except (RuntimeError, ValueError):
            raise ValueError("must be auto, cpu, cuda or cuda:<index>") from None
    return name


DeviceName = Annotated[str, AfterValidator(_check_device)]
"""auto (CUDA when present, else the CPU), cpu, cuda, cuda:1 ... (checked before any node runs)."""


class EmbeddingConfig(ParameterBlock):
    """``params:embedding``: how the evaluation, the index, search and serve embed images and text."""

    device: DeviceName = "auto"
    """auto picks CUDA when present | cpu | cuda | cuda:1"""
    precision: Precision = "auto"
    """encoders' compute dtype: auto (bfloat16 on CUDA, float32 on the CPU) | float32 | bfloat16"""
    batch_size: int = Field(default=64, ge=1)
    """images or captions per forward pass"""


def embedding_config(values: Mapping[str, Any] | EmbeddingConfig | None) -> EmbeddingConfig:
    """Build from ``params:embedding``."""
    return build(EmbeddingConfig, values, "embedding")
