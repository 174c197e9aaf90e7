"""A split's frozen outputs, computed once and reused every epoch, and its images for the loader.

With the image backbone and the transformer frozen and the images not augmented, their outputs do
not change between epochs, so they are computed once (pooled image features, token states) and the
heads train on this cache: an epoch then costs a BiLSTM pass, not a backbone pass, which is what
makes CPU training practical. When a part trains (or augmentation is on), the trainer reads the
images through :class:`CaptionImageDataset` instead. The captions' half (:class:`CachedCaptions`)
is every family's; each adds its images' own form (pooled features here, regions for pair scores).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from functools import cached_property
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from timam.inference.device import to_device
from timam.inference.embedding import default_workers, image_outputs, text_outputs
from timam.inference.images import load_rgb, seeded
from timam.inference.split_data import SplitData
from timam.models.families import AnyModel, EmbeddingModel
from timam.training.feature_cache import cached_tensor, image_feature_key, token_state_key


class CachedCaptions:
    """One split's captions, trimmed to its longest, and the frozen transformer's token states over
    them (float16), computed on first use and then reused every epoch; with a ``cache_dir`` also kept
    on disk for later runs over the same tokens and transformer. The part of a split's cache every
    family shares: an embedding model adds its images' pooled features (:class:`CachedSplit`), a
    pair-score model their regions (``timam.training.interaction.InteractionSplit``). The frozen
    parts run in ``precision`` (``training.precision``), as they do when they train."""

    def __init__(
        self,
        model: AnyModel,
        data: SplitData,
        *,
        batch_size: int,
        device: torch.device,
        show_progress: bool = True,
        cache_dir: str | Path | None = None,
        precision: str = "auto",
    ) -> None:
        self.model, self.data, self.batch_size, self.device = model, data, batch_size, device
        self.show_progress, self.cache_dir, self.precision = show_progress, cache_dir, precision
        lengths = data.attention_mask.sum(dim=1)
        longest = int(lengths.max())
        self.input_ids = data.input_ids[:, :longest]
        self.attention_mask = data.attention_mask[:, :longest]
        # Each caption's token count, on the host: what the BiLSTM packs by (at least 1 token).
        self.lengths = lengths.clamp(min=1)
        self._host_caches: dict[str, torch.Tensor] = {}

    def lengths_of(self, captions: torch.Tensor) -> list[int]:
        """The token counts of these captions, read on the host (no device synchronisation)."""
        return self.lengths[captions].tolist()

    @cached_property
    def token_states(self) -> torch.Tensor:
        key = token_state_key(self.model.config, self.input_ids, self.attention_mask, self.device, self.precision)
        return cached_tensor(
            self.cache_dir,
            key,
            lambda: text_outputs(
                self.model,
                self.input_ids,
                self.attention_mask,
                project=False,
                batch_size=self.batch_size,
                device=self.device,
                desc=f"{self.data.split} token states",
                show_progress=self.show_progress,
                precision=self.precision,
            ),
        )

    def keep_on(self, device: torch.device, names: Iterable[str]) -> None:
        """Move the caches ``names`` ("image_features", "token_states") to ``device``, keeping their
        host tensors for :meth:`back_to_host`."""
        for name in names:
            tensor = getattr(self, name)
            if tensor.device != device:
                self._host_caches.setdefault(name, tensor)
                setattr(self, name, tensor.to(device))

    def back_to_host(self, name: str) -> None:
        """Free the device copy of cache ``name`` (a part that now trains no longer reads it)."""
        if name in self._host_caches:
            setattr(self, name, self._host_caches.pop(name))


class CachedSplit(CachedCaptions):
    """A split of an embedding model with its frozen outputs: the token states of
    :class:`CachedCaptions` and its images' pooled features. ``per_view`` (the training split of a
    model with several ``image_views``) keeps every view's features, ``(views, images, features)``,
    so that each step can draw one; otherwise their mean."""

    model: EmbeddingModel

    def __init__(
        self,
        model: EmbeddingModel,
        data: SplitData,
        *,
        batch_size: int,
        device: torch.device,
        show_progress: bool = True,
        cache_dir: str | Path | None = None,
        per_view: bool = False,
        precision: str = "auto",
    ) -> None:
        super().__init__(
            model,
            data,
            batch_size=batch_size,
            device=device,
            show_progress=show_progress,
            cache_dir=cache_dir,
            precision=precision,
        )
        self.per_view = per_view and model.config.image_views > 1

    @cached_property
    def image_features(self) -> torch.Tensor:
        key = image_feature_key(
            self.model.config, self.data.image_paths, self.device, per_view=self.per_view, precision=self.precision
        )
        return cached_tensor(
            self.cache_dir,
            key,
            lambda: image_outputs(
                self.model,
                self.data.image_paths,
                project=False,
                batch_size=self.batch_size,
                device=self.device,
                desc=f"{self.data.split} image features",
                show_progress=self.show_progress,
                per_view=self.per_view,
                precision=self.precision,
            ),
        )

    def draw_views(self, count: int) -> torch.Tensor | None:
        """One random view index for each of ``count`` captions (torch's global generator, which
        the resume state saves); None without ``per_view``. Drawn for a whole global batch, the
        same on every rank, so that each rank takes its share as it does of the captions."""
        if not self.per_view:
            return None
        return torch.randint(self.image_features.shape[0], (count,))

    def image_features_of(self, captions: torch.Tensor, views: torch.Tensor | None = None) -> torch.Tensor:
        """The cached features of these captions' images, in the given views when ``per_view``,
        gathered where the cache lives (only the row indices travel to a cache on the GPU)."""
        features = self.image_features
        images = to_device(self.data.caption_image[captions], features.device)
        if not self.per_view:
            return features[images]
        if views is None or len(views) != len(images):
            raise ValueError("a per-view feature cache needs one view index per caption (draw_views)")
        return features[to_device(views, features.device), images]


def train_and_val_splits(
    model: EmbeddingModel,
    train: SplitData,
    val: SplitData,
    *,
    batch_size: int,
    device: torch.device,
    cache_dir: str | Path | None,
    precision: str,
    show_progress: bool = True,
) -> tuple[CachedSplit, CachedSplit]:
    """The training split with every view's features (each step draws one) and the validation split
    with their mean, both through the feature cache."""
    train_split, val_split = (
        CachedSplit(
            model,
            split,
            batch_size=batch_size,
            device=device,
            show_progress=show_progress,
            cache_dir=cache_dir,
            per_view=per_view,
            precision=precision,
        )
        for split, per_view in ((train, True), (val, False))
    )
    return train_split, val_split


class CaptionImageDataset(Dataset):
    """The image of each caption, transformed with its own augmentation seed: items are
    ``(caption, seed)`` pairs (see :func:`augmentation_seed`), and the caption index comes back with
    its image, so the draws depend on neither the worker that decodes it nor the worker count."""

    def __init__(self, data: SplitData, transform) -> None:
        self.data, self.transform = data, transform

    def __len__(self) -> int:
        return self.data.num_captions

    def __getitem__(self, item: tuple[int, int]) -> tuple[torch.Tensor, int]:
        caption, seed = item
        path = self.data.image_paths[int(self.data.caption_image[caption])]
        return seeded(self.transform, load_rgb(path), seed), caption


def augmentation_seed(seed: int, epoch: int, caption: int) -> int:
    """The seed of one caption's image augmentation in one epoch of a run seeded ``seed``.

    Neither the worker count, the world size nor a mid-epoch resume changes it. A caption that a
    batch holds twice (the identity sampler draws with replacement from small identities) gets
    the same augmentation twice.
    """
    mixed = seed
    for part in (epoch, caption):
        mixed = _splitmix64(_splitmix64(mixed) ^ part)
    return mixed


def _splitmix64(value: int) -> int:
    """SplitMix64's finaliser: nearby inputs give unrelated 64-bit outputs, in about a microsecond
    (numpy's SeedSequence took 60 us, 4 ms of the main process per batch of 64)."""
    value = (value + 0x9E3779B97F4A7C15) & _U64
    value = ((value ^ (value >> 30)) * 0xBF58476D1CE4E5B9) & _U64
    value = ((value ^ (value >> 27)) * 0x94D049BB133111EB) & _U64
    return value ^ (value >> 31)


_U64 = 2**64 - 1


class EpochBatches:
    """The batch sampler of a run's one training image loader: the current epoch's batches of
    ``(caption, seed)`` items, replaced before each epoch. The sampler runs in the main process,
    so persistent workers serve every epoch without being started again."""

    def __init__(self) -> None:
        self.batches: list[list[tuple[int, int]]] = []

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def caption_image_loader(
    dataset: CaptionImageDataset, batches: EpochBatches, *, device: torch.device, seed: int
) -> DataLoader:
    """One loader for a whole run: its ``default_workers()`` workers persist between epochs
    (started once, not every epoch) and serve whatever ``batches`` holds; pinned memory on CUDA."""
    workers = default_workers()
    return DataLoader(
        dataset,
        batch_sampler=batches,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        persistent_workers=workers > 0,
        # The workers' base seed from its own generator: the global one stays untouched.
        generator=torch.Generator().manual_seed(seed),
    )


# The share of the GPU's free memory the caches may take; the rest is left to the training steps'
# activations (ResNet-101 at 384x128 with BERT trainable, batch 64, takes tens of GB).
CACHE_MEMORY_FRACTION = 0.25


def cache_device_for(
    requested: str, device: torch.device, cache_bytes: int, free_bytes: int, fraction: float = CACHE_MEMORY_FRACTION
) -> torch.device:
    """Where the caches live (``training.cache_device``): "cpu" the host, "cuda" the training GPU,
    "auto" the training GPU when ``cache_bytes`` fit in ``fraction`` of its ``free_bytes``, else the
    host. On a CPU run "auto" is the host: the training device itself, so nothing changes."""
    if requested == "cpu" or (requested == "auto" and device.type != "cuda"):
        return torch.device("cpu")
    if device.type != "cuda":
        raise ValueError(
            f"training.cache_device {requested!r} needs a CUDA training device; this run trains on {device}"
        )
    if requested == "cuda" or cache_bytes <= fraction * free_bytes:
        return device
    return torch.device("cpu")
