"""Embed image files that may be bad: a file that fails to decode is reported, never stops the run.

The evaluation's :func:`timam.inference.embedding.image_outputs` trusts its files (the prepare stage
checked them). A user's collection is not checked, and checking every file first would decode it
twice; here each DataLoader worker decodes a file once and, when that fails, returns a blank image
and the reason (:func:`timam.sources.image_checks.inspect_image`'s words: ``missing``,
``zero-byte``, ``unreadable/corrupt: <error>``). Batching, workers, device, channels_last layout
and precision are the evaluation's (same helpers), so an index row and a query image embed alike.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from timam.inference.device import autocast, to_device_images
from timam.inference.embedding import default_workers, evaluation_mode
from timam.inference.images import eval_transform, load_rgb
from timam.models.families import EmbeddingModel
from timam.models.preprocessing import ImagePreprocessing
from timam.sources.image_checks import inspect_image


def decode_failure(path: str, error: Exception) -> str:
    """Why ``path`` could not be used: :func:`inspect_image`'s reason, else the decoder's error."""
    try:
        reason = inspect_image(path)
    except Exception:  # noqa: BLE001 -- the first error is the one to report
        reason = None
    return reason or f"unreadable/corrupt: {type(error).__name__}: {error}"


class CheckedImageFiles(Dataset):
    """``(image, position, reason)`` per path; ``reason`` is "" for a good image, else why it is bad."""

    def __init__(self, paths: Sequence[str], preprocessing: ImagePreprocessing) -> None:
        self.paths = list(paths)
        self.transform: Callable = eval_transform(preprocessing)
        self.blank = torch.zeros(3, *(int(side) for side in preprocessing.size))

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, position: int) -> tuple[torch.Tensor, int, str]:
        path = self.paths[position]
        try:
            return self.transform(load_rgb(path)), position, ""
        except Exception as error:  # noqa: BLE001 -- any decoder failure makes the file a bad image
            return self.blank, position, decode_failure(path, error)


@dataclass
class EmbeddedFiles:
    """Embeddings of the good files (float32, in order) and the reason of each bad one by position."""

    embeddings: torch.Tensor
    good: list[int]
    bad: dict[int, str]


@torch.no_grad()
def embed_files(
    model: EmbeddingModel,
    paths: Sequence[str],
    *,
    batch_size: int,
    device: torch.device,
    precision: str,
    desc: str = "embedding images",
    show_progress: bool = True,
) -> EmbeddedFiles:
    """Embed ``paths`` with ``model`` (already on ``device``); bad files are left out and reported."""
    encoder = model.image_encoder
    loader = DataLoader(
        CheckedImageFiles(paths, model.config.preprocessing),
        batch_size=batch_size,
        shuffle=False,
        num_workers=default_workers() if len(paths) > batch_size else 0,
        pin_memory=device.type == "cuda",
    )
    outputs: list[torch.Tensor] = []
    good: list[int] = []
    bad: dict[int, str] = {}
    with evaluation_mode(model):
        for images, positions, reasons in tqdm(loader, desc=desc, disable=not show_progress, unit="batch", leave=False):
            keep = torch.tensor([reason == "" for reason in reasons], dtype=torch.bool)
            bad.update({int(p): r for p, r in zip(positions, reasons, strict=True) if r})
            if not keep.any():
                continue
            images = to_device_images(images[keep], device)
            with autocast(device, precision):
                features = encoder.features(images)
            outputs.append(encoder.projection(features.float()).float().cpu())
            good.extend(int(p) for p in positions[keep])
    dim = encoder.projection.out_features
    embeddings = torch.cat(outputs) if outputs else torch.empty(0, dim)
    return EmbeddedFiles(embeddings=embeddings, good=good, bad=bad)
