"""Input pipeline speed (images decoded + transformed per second) next to the model's consumption rate.

Run: ``.venv/bin/python benchmarks/data_loading.py [--config default|paper] [--images DIR]
[--size HxW] [--workers 0,2,4,8] [--num-images N] [--transform eval|train] [--device auto|cpu|cuda]``.

Loader: ``torch.utils.data.DataLoader`` over ``timam.inference.images.ImageFileDataset`` (Pillow
``load_rgb`` + the eval transform, or with ``--transform train`` the training augmentation: flip,
10-pixel padded crop, colour jitter 0.1) at each worker count, ``pin_memory`` on CUDA, each batch
moved to the device as the loop does (``to_device_images``: channels_last, non-blocking on CUDA).
Images are ``--num-images`` paths cycled from ``--images`` (default: the demo data; generated into
/tmp when the project has none). Files are read through the OS page cache after the first pass, so
this is decode + transform speed, not disk speed. Demo images are 80x160 JPEGs like CUHK-PEDES crops;
larger source images (COCO, Flickr30K) decode several times slower.

Model: the image backbone of the config (architecture only, random weights: speed does not depend
on them) on random input at the same size and batch, channels_last, bf16 autocast on CUDA:
``forward`` (frozen backbone: feature caching, embedding, uncached frozen training) and
``train`` (forward + backward, an unfrozen backbone; no optimiser step).

Reading the output: one line per worker count (images/s over the whole pass, and the start-up time
to the first batch), then the model rates. The pipeline keeps up when the best loader rate is at
least the forward rate (``keeps_up=true``); if not, the GPU waits for images: add workers, or cache
features. ``--workers`` default: 0, 1, 2, 4, ... up to the CPU count (at most 16).
"""

from __future__ import annotations

import argparse
import os
import time

import torch
from torch.utils.data import DataLoader

import _common  # noqa: I001  (first: environment, sys.path, torchvision shim)
from _common import rate, result_line

SIZES = {"default": (160, 80), "paper": (224, 224)}
BACKBONES = {"default": ("efficientnet_lite0", "timm"), "paper": ("resnet101", "torchvision")}


def default_workers() -> str:
    cores = min(os.cpu_count() or 1, 16)
    counts, n = [0], 1
    while n <= cores:
        counts.append(n)
        n *= 2
    return ",".join(map(str, counts))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", choices=_common.CONFIGS, default="default")
    parser.add_argument("--images", default=None, help="image folder (default: the demo data)")
    parser.add_argument("--size", default=None, help="HxW (default: the config's, 160x80 or 224x224)")
    parser.add_argument("--workers", default=default_workers(), help="comma-separated worker counts")
    parser.add_argument("--num-images", type=int, default=2048, help="images per loader pass (paths cycled)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--transform", choices=("eval", "train"), default="eval")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--model-steps", type=int, default=10, help="timed backbone batches per rate")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads in the main process")
    return parser.parse_args()


def make_transform(kind: str, size: tuple[int, int]):
    from timam.inference.images import eval_transform, train_transform
    from timam.models.preprocessing import ImagePreprocessing

    preprocessing = ImagePreprocessing(size=size)
    if kind == "eval":
        return eval_transform(preprocessing)
    return train_transform(preprocessing, flip=True, crop_padding=10, colour_jitter=0.1)


def loader_rate(paths, transform, workers: int, batch: int, device: torch.device) -> tuple[float, float]:
    """(images/s over the whole pass including start-up, seconds to the first batch)."""
    from timam.inference.device import to_device_images
    from timam.inference.images import ImageFileDataset

    loader = DataLoader(
        ImageFileDataset(paths, transform),
        batch_size=batch,
        shuffle=False,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        persistent_workers=False,
    )
    _common.sync(device)
    start = time.perf_counter()
    first, count = None, 0
    for images, _ in loader:
        to_device_images(images, device)
        count += len(images)
        if first is None:
            first = time.perf_counter() - start
    _common.sync(device)
    return rate(count, time.perf_counter() - start), first or 0.0


def model_rates(config: str, size, batch: int, steps: int, device: torch.device) -> tuple[float, float]:
    """Images/s of the backbone: frozen forward, and forward + backward."""
    from timam.inference.device import autocast, model_to, to_device_images
    from timam.models.image_encoder import build_backbone

    name, library = BACKBONES[config]
    backbone = model_to(build_backbone(name, library, None, architecture_only=True), device)
    images = to_device_images(torch.randn(batch, 3, *size), device)

    def forward() -> None:
        with torch.no_grad(), autocast(device, "auto"):
            backbone(images)

    def train_step() -> None:
        backbone.zero_grad(set_to_none=True)
        with autocast(device, "auto"):
            out = backbone(images)
        out.float().square().mean().backward()

    rates = []
    for mode, fn in (("eval", forward), ("train", train_step)):
        backbone.train(mode == "train")
        fn()  # warm-up (cuDNN algorithm choice, allocator)
        seconds, _ = _common.timed(lambda fn=fn: [fn() for _ in range(steps)], device)
        rates.append(rate(steps * batch, seconds))
    return rates[0], rates[1]


def main() -> None:
    args = parse_args()
    _common.set_threads(args.threads)
    device = _common.pick(args.device)
    size = tuple(int(v) for v in args.size.lower().split("x")) if args.size else SIZES[args.config]
    files = _common.image_files(args.images)
    paths = _common.cycle(files, args.num_images)
    transform = make_transform(args.transform, size)
    workers = [int(w) for w in args.workers.split(",") if w.strip()]
    print(_common.device_info(device))
    print(
        f"loader: {len(paths)} images per pass ({len(files)} distinct files under "
        f"{os.path.commonpath(files)}), {args.transform} transform to {size[0]}x{size[1]}, batch "
        f"{args.batch_size}, pin_memory {device.type == 'cuda'}"
    )
    for file in files:  # warm the page cache so the first worker count is not penalised
        with open(file, "rb") as handle:
            handle.read()
    from timam.inference.images import load_rgb

    transform(load_rgb(files[0]))  # one-off costs (Pillow plugins, transform set-up) outside the timings
    loader: dict[int, float] = {}
    for count in workers:
        images_per_s, first_s = loader_rate(paths, transform, count, args.batch_size, device)
        loader[count] = images_per_s
        print(f"  workers={count:2d}: {images_per_s:8.1f} images/s (first batch after {first_s:.2f} s)")
    forward, train = model_rates(args.config, size, args.batch_size, args.model_steps, device)
    name, library = BACKBONES[args.config]
    print(
        f"model: {library} {name} at {size[0]}x{size[1]}, batch {args.batch_size}: forward {forward:.1f} "
        f"images/s, forward+backward {train:.1f} images/s"
    )
    best = max(loader, key=loader.get)
    keeps_up = loader[best] >= forward
    print(
        f"best loader {loader[best]:.1f} images/s with {best} workers = {loader[best] / forward:.2f}x the "
        f"frozen forward rate, {loader[best] / train:.2f}x the forward+backward rate: "
        + ("the input pipeline keeps up" if keeps_up else "the input pipeline is the bottleneck")
    )
    print(
        result_line(
            "data_loading",
            config=args.config,
            device=device.type,
            size=f"{size[0]}x{size[1]}",
            transform=args.transform,
            batch_size=args.batch_size,
            best_workers=best,
            loader_img_per_s=loader[best],
            **{f"workers_{k}_img_per_s": v for k, v in loader.items()},
            model_forward_img_per_s=forward,
            model_train_img_per_s=train,
            keeps_up=keeps_up,
            keeps_up_train=loader[best] >= train,
        )
    )


if __name__ == "__main__":
    main()
