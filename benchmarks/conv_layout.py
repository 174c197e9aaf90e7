"""Image backbone speed on the CPU in the contiguous (NCHW) and the channels_last layout.

Run: ``.venv/bin/python benchmarks/conv_layout.py`` (``--help``). Why: ``timam.inference.device.model_to``
puts every model's convolutions channels_last on every device, not only on CUDA; this measures
what that buys on the machine at hand (random weights: speed does not depend on them). Prints one
line per backbone and layout: ``conv_layout: backbone=.. size=.. layout=.. inference_img_s=..
train_img_s=..`` (best of ``--repeats`` timed calls after one warm-up; inference batch 64 without
gradients, training step batch 32 with Adam).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch

import _common  # noqa: I001  (first: environment, sys.path, torchvision shim)

BACKBONES = {"efficientnet_lite0": "timm", "resnet18": "torchvision"}


def best_seconds(call: Callable[[], None], repeats: int) -> float:
    call()  # warm-up: oneDNN builds its kernels on the first call
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return min(times)


def measure(name: str, size: int, channels_last: bool, repeats: int) -> tuple[float, float]:
    """(inference, training) images per second of one backbone in one layout."""
    from timam.models.image_encoder import build_backbone

    layout = torch.channels_last if channels_last else torch.contiguous_format
    model = build_backbone(name, BACKBONES[name], None, architecture_only=True).to(memory_format=layout)
    images = torch.randn(64, 3, size, size).contiguous(memory_format=layout)

    def infer() -> None:
        with torch.no_grad():
            model(images)

    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)

    def train_step() -> None:
        loss = model(images[:32]).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    model.eval()
    inference = 64 / best_seconds(infer, repeats)
    model.train()
    return inference, 32 / best_seconds(train_step, repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbones", default=",".join(BACKBONES), help="comma-separated, of " + ", ".join(BACKBONES))
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    _common.set_threads(args.threads)
    for name in args.backbones.split(","):
        for channels_last in (False, True):
            inference, train = measure(name, args.size, channels_last, args.repeats)
            layout = "channels_last" if channels_last else "contiguous"
            print(
                f"conv_layout: backbone={name} size={args.size} layout={layout} "
                f"inference_img_s={inference:.1f} train_img_s={train:.1f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
