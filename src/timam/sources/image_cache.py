"""An optional cache of pre-resized images, so JPEG decoding of large originals does not starve a GPU.

Each distinct image is decoded once (EXIF orientation applied, RGB), resized to the model's input
size and written as a small JPEG; the caption table then points at the cached copies. Files are
written atomically and skipped when already present, so an interrupted run resumes.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
from PIL import Image
from tqdm.auto import tqdm

from timam.formats.atomic import atomic_path
from timam.inference.images import load_rgb

logger = logging.getLogger(__name__)


def cached_name(image_path: str, size: Sequence[int]) -> str:
    """A stable file name per (original path, size): same input, same cache entry."""
    digest = hashlib.sha1(f"{image_path}|{size[0]}x{size[1]}".encode()).hexdigest()[:16]
    return f"{Path(image_path).stem}_{digest}.jpg"


def cache_resized_images(
    table: pd.DataFrame, directory: str | Path, size: Sequence[int], *, quality: int = 95
) -> pd.DataFrame:
    """A copy of ``table`` whose ``image_path`` points at (height, width) ``size`` copies in ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    height, width = int(size[0]), int(size[1])
    mapping, written = {}, 0
    for original in tqdm(table["image_path"].unique(), desc=f"resizing images to {height}x{width}"):
        target = directory / cached_name(original, (height, width))
        if not target.exists():
            image = load_rgb(original).resize((width, height), Image.Resampling.BILINEAR)
            with atomic_path(target) as temporary:
                image.save(temporary, format="JPEG", quality=quality)
            written += 1
        mapping[original] = str(target)
    logger.info("Image cache %s: %d written, %d reused", directory, written, len(mapping) - written)
    cached = table.copy()
    cached["image_path"] = cached["image_path"].map(mapping)
    return cached
