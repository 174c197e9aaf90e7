"""Image decoding and transforms with Pillow (torchvision.io is unusable beside the CPU torch wheel).

The loaders' workers send uint8 tensors (:func:`eval_pixels`, :func:`train_pixels`), a quarter of
the bytes of float32 (a batch of 64 at 384x128: 9.4 MB instead of 38 MB through shared and pinned
memory), and :func:`normalise` runs on the device after the copy. It does what torchvision's
``ToTensor`` + ``Normalize`` do, in the same order and dtype, so the result is bitwise the same as
the float transforms (:func:`eval_transform`, :func:`train_transform`) that search and indexing use.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import torch
from PIL import Image, ImageOps
from torch.utils.data import Dataset
from torchvision import transforms

from timam.models.preprocessing import IMAGENET_MEAN, IMAGENET_STD, ImagePreprocessing

_INTERPOLATION = {
    "bilinear": transforms.InterpolationMode.BILINEAR,
    "bicubic": transforms.InterpolationMode.BICUBIC,
}


def load_rgb(path: str) -> Image.Image:
    """Decode ``path`` with its EXIF orientation applied, as RGB (greyscale, CMYK, palette, alpha)."""
    with Image.open(path) as image:
        return ImageOps.exif_transpose(image).convert("RGB")


def _float_steps() -> list:
    return [transforms.ToTensor(), transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)]


def _resize_steps(preprocessing: ImagePreprocessing) -> list:
    """The model's resize: to (height, width), or its shorter side to the size and the centre crop."""
    interpolation = _INTERPOLATION[preprocessing.interpolation]
    if preprocessing.resize == "squash":
        return [transforms.Resize(tuple(preprocessing.size), interpolation=interpolation)]
    return [
        transforms.Resize(min(preprocessing.size), interpolation=interpolation),
        transforms.CenterCrop(tuple(preprocessing.size)),
    ]


def _augmentation_steps(
    preprocessing: ImagePreprocessing, *, flip: bool, crop_padding: int, colour_jitter: float
) -> list:
    steps = _resize_steps(preprocessing)
    if flip:
        steps.append(transforms.RandomHorizontalFlip())
    if crop_padding > 0:
        steps.append(transforms.RandomCrop(tuple(preprocessing.size), padding=crop_padding, padding_mode="edge"))
    if colour_jitter > 0:
        steps.append(transforms.ColorJitter(colour_jitter, colour_jitter, colour_jitter))
    return steps


def eval_transform(preprocessing: ImagePreprocessing) -> Callable[[Image.Image], torch.Tensor]:
    """The model's deterministic resize and ImageNet normalisation (a model trained with other
    statistics re-normalises inside, see :class:`~timam.models.dual_encoder.DualImageEncoder`)."""
    return transforms.Compose([*_resize_steps(preprocessing), *_float_steps()])


def eval_pixels(preprocessing: ImagePreprocessing) -> Callable[[Image.Image], torch.Tensor]:
    """:func:`eval_transform` without its normalisation: uint8 (3, height, width), for :func:`normalise`."""
    return transforms.Compose([*_resize_steps(preprocessing), transforms.PILToTensor()])


def train_transform(preprocessing: ImagePreprocessing, *, flip: bool, crop_padding: int, colour_jitter: float):
    """Training augmentation: horizontal flip, padded random crop and colour jitter, each optional."""
    steps = _augmentation_steps(preprocessing, flip=flip, crop_padding=crop_padding, colour_jitter=colour_jitter)
    return transforms.Compose([*steps, *_float_steps()])


def train_pixels(preprocessing: ImagePreprocessing, *, flip: bool, crop_padding: int, colour_jitter: float):
    """:func:`train_transform` without its normalisation: the same draws, uint8 out."""
    steps = _augmentation_steps(preprocessing, flip=flip, crop_padding=crop_padding, colour_jitter=colour_jitter)
    return transforms.Compose([*steps, transforms.PILToTensor()])


@functools.cache
def _statistics(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The mean and std as (1, 3, 1, 1) float32 on ``device``: copied there once, not every batch
    (a pageable copy to CUDA would make the host wait)."""
    return tuple(  # type: ignore[return-value]
        torch.tensor(values, dtype=torch.float32).view(1, 3, 1, 1).to(device)
        for values in (IMAGENET_MEAN, IMAGENET_STD)
    )


def normalise(images: torch.Tensor) -> torch.Tensor:
    """uint8 images (N, 3, H, W) -> ImageNet-normalised float32 on their device, in their layout.

    The operations of ``ToTensor`` (float32, then divide by 255) and ``Normalize`` (subtract the
    float32 mean, divide by the float32 std): each an exactly rounded IEEE operation, so the
    result is bitwise that of the float transforms, not merely close.
    """
    mean, std = _statistics(images.device)
    return images.to(torch.float32).div_(255).sub_(mean).div_(std)


def seeded(transform: Callable[[Image.Image], torch.Tensor], image: Image.Image, seed: int) -> torch.Tensor:
    """``transform(image)`` with its random draws (torchvision's draw from torch's CPU generator)
    made from ``seed`` alone, and that generator left as it was.

    Why: a DataLoader worker's draws depend on which worker got the item and what it drew
    before, so augmentation would change with ``num_workers``; and in the main process
    (``num_workers=0``) the draws would consume the generator that dropout and view draws use.
    Only the CPU generator is touched: CUDA's (dropout on the GPU) is never reseeded.
    """
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        return transform(image)


class ImageFileDataset(Dataset):
    """Images by path, transformed; the index is returned so batches can be scattered back in order."""

    def __init__(self, paths: Sequence[str], transform: Callable[[Image.Image], torch.Tensor]) -> None:
        self.paths = list(paths)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.transform(load_rgb(self.paths[index])), index
