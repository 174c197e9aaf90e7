"""One place that decides the device and the CUDA-only speed settings, so CPU and GPU share code."""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Iterator
from typing import TypeVar

import torch
from torch import nn

from timam import _onednn_isa
from timam.inference.config import PRECISIONS
from timam.inference.images import normalise

logger = logging.getLogger(__name__)


def pick_device(requested: str = "auto") -> torch.device:
    """ "auto" picks CUDA when present; asking for CUDA without one is an error, not a silent CPU run."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(requested)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was requested but torch sees no CUDA GPU; use 'auto' or 'cpu'")
    return device


def compute_dtype(device: torch.device, precision: str) -> torch.dtype:
    """The dtype the encoders' convolutions and transformer layers run in.

    "auto": bfloat16 on CUDA (tensor cores), float32 on CPU, where bf16 is slower; "bfloat16" also
    works on the CPU, so the reduced-precision path can be tested without a GPU, except where
    oneDNN's AMX kernels would compute it (:func:`check_cpu_bfloat16`).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {list(PRECISIONS)}, got {precision!r}")
    if precision == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if precision == "float32":
        return torch.float32
    if device.type == "cpu":
        check_cpu_bfloat16()
    return torch.bfloat16


def dtype_name(device: torch.device, precision: str) -> str:
    """The compute dtype ``precision`` means on ``device``, by name ("float32", "bfloat16"): what an
    embedding records, so its queries are embedded the same way on any machine."""
    return str(compute_dtype(device, precision)).removeprefix("torch.")


@functools.cache
def check_cpu_bfloat16() -> None:
    """Refuse CPU bfloat16 where oneDNN may run it on AMX (NaN, oneDNN issue 5717); log the cap once.

    ``timam`` caps oneDNN below AMX when it is imported (:mod:`timam._onednn_isa`); this catches a
    user's own ``ONEDNN_MAX_CPU_ISA`` that allows AMX again.
    """
    problem = _onednn_isa.cpu_bfloat16_problem()
    if problem is not None:
        raise RuntimeError(problem)
    logger.info("bfloat16 on the CPU: timam %s", _onednn_isa.decision)


@contextlib.contextmanager
def autocast(device: torch.device, precision: str) -> Iterator[None]:
    """Autocast to :func:`compute_dtype` around the encoders' heavy layers (nothing when float32).

    Close it before a projection whose output must be float32: under autocast a Linear returns
    bfloat16 whatever its input dtype, and embeddings, loss inputs and galleries stay float32.
    """
    dtype = compute_dtype(device, precision)
    if dtype == torch.float32:
        yield
        return
    with torch.autocast(device.type, dtype=dtype):
        yield


ModuleT = TypeVar("ModuleT", bound=nn.Module)

# The layout of image batches and convolution weights on every device (part of the feature-cache key).
IMAGE_MEMORY_FORMAT = torch.channels_last


def to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Copy a host tensor to ``device`` without making the host wait: on CUDA through pinned memory.

    A pageable ``.to("cuda")`` returns only once the copy is done, one host-device synchronisation
    per call and several per training step; from pinned memory the copy is queued on the stream.
    Anywhere else (CPU, or a tensor already on the device) it is a plain ``.to``.
    """
    if device.type != "cuda" or tensor.device.type != "cpu":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)


def to_device_images(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Move a batch of images as channels_last, the layout :func:`model_to` gives the convolutions.

    uint8 batches (what the training and embedding loaders send: 4x fewer bytes than float32)
    are normalised on the device after the copy (:func:`~timam.inference.images.normalise`,
    bitwise what the float transforms give); float batches are taken as already normalised.
    """
    moved = images.to(device, non_blocking=device.type == "cuda").contiguous(memory_format=IMAGE_MEMORY_FORMAT)
    return normalise(moved) if moved.dtype == torch.uint8 else moved


def model_to(model: ModuleT, device: torch.device) -> ModuleT:
    """Move a model with its convolution weights channels_last, on every device.

    Why on CPU too: through oneDNN, EfficientNet-Lite0 at 224 px embedded images 2.5x faster and
    ran training steps of the unfrozen backbone 1.7x faster on the 2-core development machine;
    ResNet-18 1.4x and 1.2x (``benchmarks/conv_layout.py``, benchmarks/RESULTS.md). The gallery
    and a search query must be embedded in the same layout, so every path that embeds images
    moves its model here.
    """
    model.to(device, memory_format=IMAGE_MEMORY_FORMAT)  # type: ignore[call-overload]  # torch's stubs omit it
    return model
