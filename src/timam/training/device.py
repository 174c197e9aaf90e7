"""One place that decides the device and the CUDA-only speed settings, so CPU and GPU share code."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


def pick_device(requested: str = "auto") -> torch.device:
    """"auto" picks CUDA when present; asking for CUDA without one is an error, not a silent CPU run."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(requested)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was requested but torch sees no CUDA GPU; use 'auto' or 'cpu'")
    return device


@contextlib.contextmanager
def autocast(device: torch.device) -> Iterator[None]:
    """bf16 autocast on CUDA (tensor cores); full float32 on CPU, where bf16 is slower."""
    if device.type == "cuda":
        with torch.autocast("cuda", dtype=torch.bfloat16):
            yield
    else:
        yield


def to_device_images(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Move a batch of images, channels_last on CUDA where convolutions run faster that way."""
    if device.type == "cuda":
        return images.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
    return images.to(device)
