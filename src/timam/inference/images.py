"""Image decoding and transforms with Pillow (torchvision.io is unusable beside the CPU torch wheel)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from PIL import Image, ImageOps
from torch.utils.data import Dataset
from torchvision import transforms

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def load_rgb(path: str) -> Image.Image:
    """Decode ``path`` with its EXIF orientation applied, as RGB (greyscale, CMYK, palette, alpha)."""
    with Image.open(path) as image:
        return ImageOps.exif_transpose(image).convert("RGB")


def eval_transform(image_size: Sequence[int]) -> Callable[[Image.Image], torch.Tensor]:
    """Deterministic resize to (height, width) and ImageNet normalisation."""
    return transforms.Compose(
        [
            transforms.Resize(tuple(image_size)),
            transforms.ToTensor(),
            transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )


def train_transform(image_size: Sequence[int], *, flip: bool, crop_padding: int, colour_jitter: float):
    """Training augmentation: horizontal flip, padded random crop and colour jitter, each optional."""
    steps: list = [transforms.Resize(tuple(image_size))]
    if flip:
        steps.append(transforms.RandomHorizontalFlip())
    if crop_padding > 0:
        steps.append(transforms.RandomCrop(tuple(image_size), padding=crop_padding, padding_mode="edge"))
    if colour_jitter > 0:
        steps.append(transforms.ColorJitter(colour_jitter, colour_jitter, colour_jitter))
    steps += [transforms.ToTensor(), transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    return transforms.Compose(steps)


class ImageFileDataset(Dataset):
    """Images by path, transformed; the index is returned so batches can be scattered back in order."""

    def __init__(self, paths: Sequence[str], transform: Callable[[Image.Image], torch.Tensor]) -> None:
        self.paths = list(paths)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.transform(load_rgb(self.paths[index])), index
