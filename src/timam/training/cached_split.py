"""A split's frozen outputs, computed once and reused every epoch, and its images for the loader.

With the image backbone and the transformer frozen and the images not augmented, their outputs do
not change between epochs, so they are computed once (pooled image features, token states) and the
heads train on this cache: an epoch then costs a BiLSTM pass, not a backbone pass, which is what
makes CPU training practical. When a part trains (or augmentation is on), the trainer reads the
images through :class:`CaptionImageDataset` instead.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

import torch
from torch.utils.data import Dataset

from timam.inference.embedding import image_outputs, text_outputs
from timam.inference.images import load_rgb
from timam.inference.split_data import SplitData
from timam.models.timam import TimamModel
from timam.training.feature_cache import cached_tensor, image_feature_key, token_state_key


class CachedSplit:
    """One split with its frozen outputs, computed on first use and then reused every epoch:
    pooled image features and float16 token states trimmed to the longest caption. With a
    ``cache_dir`` they are also kept on disk for later runs over the same data and encoders.
    ``per_view`` (the training split of a model with several ``image_views``) keeps every view's
    features, ``(views, images, features)``, so that each step can draw one; otherwise their mean.
    The frozen parts run in ``precision`` (``training.precision``), as they do when they train."""

    def __init__(
        self,
        model: TimamModel,
        data: SplitData,
        *,
        batch_size: int,
        device: torch.device,
        show_progress: bool = True,
        cache_dir: str | Path | None = None,
        per_view: bool = False,
        precision: str = "auto",
    ) -> None:
        self.model, self.data, self.batch_size, self.device = model, data, batch_size, device
        self.show_progress, self.cache_dir, self.precision = show_progress, cache_dir, precision
        self.per_view = per_view and model.config.image_views > 1
        lengths = data.attention_mask.sum(dim=1)
        longest = int(lengths.max())
        self.input_ids = data.input_ids[:, :longest]
        self.attention_mask = data.attention_mask[:, :longest]
        # Each caption's token count, on the host: what the BiLSTM packs by (at least 1 token).
        self.lengths = lengths.clamp(min=1)

    def lengths_of(self, captions: torch.Tensor) -> list[int]:
        """The token counts of these captions, read on the host (no device synchronisation)."""
        return self.lengths[captions].tolist()

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
        """The cached features of these captions' images, in the given views when ``per_view``."""
        images = self.data.caption_image[captions]
        if not self.per_view:
            return self.image_features[images]
        if views is None or len(views) != len(images):
            raise ValueError("a per-view feature cache needs one view index per caption (draw_views)")
        return self.image_features[views, images]

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


class CaptionImageDataset(Dataset):
    """The image of each caption, transformed; the caption index comes back with it."""

    def __init__(self, data: SplitData, transform) -> None:
        self.data, self.transform = data, transform

    def __len__(self) -> int:
        return self.data.num_captions

    def __getitem__(self, caption: int) -> tuple[torch.Tensor, int]:
        path = self.data.image_paths[int(self.data.caption_image[caption])]
        return self.transform(load_rgb(path)), caption
