"""An interaction model's frozen inputs and its pair scores over a whole split (no gradients).

Regions are kept in float16: a feature map is 64 cells x 1,280 channels per image and view for
EfficientNet at 256 px (160 kB), so the 8 views of UCM-Captions' 1,680 training images take 2.2 GB
in half precision against 4.4 GB in float32. The projections read them back in float32.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
from tqdm.auto import tqdm

from timam.inference.device import autocast, to_device, to_device_images
from timam.inference.embedding import distinct_captions, evaluation_mode, image_loader
from timam.models.families import PairScoreModel

logger = logging.getLogger(__name__)


@torch.no_grad()
def region_outputs(
    model: PairScoreModel,
    paths: Sequence[str],
    *,
    views: Sequence[int],
    batch_size: int,
    device: torch.device,
    desc: str,
    show_progress: bool = True,
    precision: str,
) -> torch.Tensor:
    """Each image's regions in each of ``views``: ``(views, images, cells, channels)`` float16 on the CPU."""
    outputs: list[torch.Tensor] = []
    loader = image_loader(paths, model.config.preprocessing, batch_size=batch_size, device=device)
    with evaluation_mode(model):
        for images, _ in tqdm(loader, desc=desc, disable=not show_progress):
            images = to_device_images(images, device)
            with autocast(device, precision):
                per_view = [model.region_features(images, view) for view in views]
            outputs.append(torch.stack(per_view).to(torch.float16).cpu())
    if not outputs:
        return torch.empty(len(views), 0, 0, model.feature_dim, dtype=torch.float16)
    regions = torch.cat(outputs, dim=1)
    logger.info("%s: %.2f GB of float16 regions %s", desc, regions.numel() * 2 / 1e9, tuple(regions.shape))
    return regions


@torch.no_grad()
def pair_scores(
    model: PairScoreModel,
    regions: torch.Tensor,
    states: torch.Tensor,
    attention_mask: torch.Tensor,
    *,
    device: torch.device,
    image_chunk: int = 64,
    caption_chunk: int = 256,
    show_progress: bool = False,
) -> torch.Tensor:
    """Scores ``(captions, images)`` of every caption with every image, block by block on ``device``.

    ``regions``: ``(images, cells, channels)``; ``states``: ``(captions, tokens, hidden)`` with its
    ``attention_mask``. A caption block's scores against all images come from image blocks of
    ``image_chunk``, so memory holds ``caption_chunk x image_chunk x cells x tokens`` floats at most.
    Each distinct caption is scored once and copied to its repeats: scored in another block (another
    matrix shape) a repeat could come out a rounding error apart, and its ties would go uncounted.
    """
    first, inverse = distinct_captions(states.flatten(1).float(), attention_mask)
    states, attention_mask = states[first], attention_mask[first]
    with evaluation_mode(model):
        region_rows = to_device(regions, device)
        blocks = []
        starts = range(0, len(states), caption_chunk)
        for start in tqdm(starts, desc="scoring caption-image pairs", disable=not show_progress):
            rows = slice(start, start + caption_chunk)
            block = model.scores(
                region_rows,
                to_device(states[rows], device),
                to_device(attention_mask[rows], device),
                image_chunk=image_chunk,
                caption_chunk=caption_chunk,
            )
            blocks.append(block.float().cpu())
    return torch.cat(blocks)[inverse] if blocks else torch.empty(0, len(regions))
