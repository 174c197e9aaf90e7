"""Frozen-encoder outputs kept on disk, so runs that share the data and the backbones compute them once.

An ablation trains many variants over the same frozen EfficientNet and MiniLM outputs; on UCM those
take minutes to compute and seconds to load. A cache entry is named by a hash of everything the
outputs depend on (encoder names and weights, image size, each image file's path, size and
modification time, the token ids), so a changed input is a miss, never a stale hit.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from timam.io.atomic import atomic_path
from timam.models.config import ModelConfig

logger = logging.getLogger(__name__)


def _file_stamp(path: str) -> tuple[str, int, int]:
    stat = os.stat(path)
    return path, stat.st_size, stat.st_mtime_ns


def image_feature_key(config: ModelConfig, paths: Sequence[str]) -> str:
    weights = config.image_weights
    weight_stamp = _file_stamp(weights) if weights and os.path.isfile(weights) else weights
    parts = ["image", config.image_backbone, config.image_library, weight_stamp, list(config.image_size),
             [_file_stamp(path) for path in paths]]
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:24]


def token_state_key(config: ModelConfig, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> str:
    digest = hashlib.sha256(json.dumps(["text", config.text_model, config.transformer_config], default=str).encode())
    digest.update(input_ids.contiguous().numpy().tobytes())
    digest.update(attention_mask.contiguous().numpy().tobytes())
    return digest.hexdigest()[:24]


def cached_tensor(cache_dir: str | Path | None, key: str, compute: Callable[[], torch.Tensor]) -> torch.Tensor:
    """``compute()``'s result, read from ``cache_dir/<key>.safetensors`` when it was saved before."""
    if cache_dir is None:
        return compute()
    path = Path(cache_dir) / f"{key}.safetensors"
    if path.exists():
        logger.info("Frozen features loaded from %s", path)
        return load_file(path)["tensor"]
    tensor = compute()
    with atomic_path(path) as temporary:
        save_file({"tensor": tensor.contiguous()}, str(temporary))
    return tensor
