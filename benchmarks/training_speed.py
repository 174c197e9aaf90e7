"""Training throughput of the TIMAM train step, in caption-image pairs per second.

Run: ``.venv/bin/python benchmarks/training_speed.py [--config default|paper] [--device auto|cpu|cuda]
[--mode both|cached|uncached] [--steps N] [--batch-size B] [--image-source random|files] [--unfrozen]
[--compile]`` (``--help`` for the rest).

Both modes run the real step, ``timam.training.trainer.TimamTrainer.train_epoch`` (embed_batch,
TimamObjective, optimisers, discriminator steps), on a real ``CachedSplit`` of synthetic captions
(token ids with lengths uniform in [12, 40], two captions per image, four images per identity),
with the training config built by ``timam.training.config.training_config`` from
conf/base/parameters_train.yml; ``--config paper`` adds the paper's settings (identification +
CMPM + adversarial losses, SGD for the image branch and the discriminator, Adam for the text
branch, batch 64). A pair is one caption and its image. Only the number of batches per epoch is
capped (``--steps``), and for "uncached" the caches are switched off.

* cached -- what ``train_timam`` does with frozen pretrained parts and no augmentation: pooled image
  features and token states come from the cache, so a step is FC projections + BiLSTM + losses +
  optimiser steps. The cache holds synthetic values of the real shapes and dtypes (image features
  (images, 1280 EfficientNet-Lite0 / 2048 ResNet-101) float32, token states (captions, 40, 384
  MiniLM / 768 BERT) float16) in host memory, copied to the device per batch as in the loop; a
  step's speed does not depend on the values.
* uncached -- ``image_cached``/``text_cached`` forced off: every step also runs the backbone and the
  transformer forward (channels_last; bf16 autocast on CUDA). Frozen (default) they get no
  backward and stay in eval mode, as the loop keeps frozen parts; with ``--unfrozen`` they train
  from the first epoch (``training.freeze`` 0, the loop's own mechanism) and get a backward pass and
  optimiser updates. Images: ``--image-source random`` takes them from a pool of random tensors in
  device memory (the model step alone); ``files`` uses the loop's own ``image_stream`` -- a
  DataLoader decoding the demo files (or ``--images``) with the training transform, default_workers()
  workers, pinned memory on CUDA -- so input starvation shows; its per-epoch worker start-up is
  inside the timed epoch, as in training (use enough ``--steps`` to amortise it).

``--config default``: the project's model (EfficientNet-Lite0 160x80, MiniLM, BiLSTM 512, FC 512;
offline pretrained weights when installed, else the same architecture with random weights).
``--config paper``: ResNet-101 224x224 + bert-base-sized BERT (random weights; built as
architecture-only, which is why timam's random-init warning does not appear) + BiLSTM 512 + FC 512.
The identification classifier has ``--num-classes`` outputs (11,003: CUHK-PEDES train identities).

``--compile`` applies ``torch.compile`` to the backbone and the transformer (the uncached forward);
the cached step (a cuDNN LSTM over packed sequences plus small layers) runs uncompiled.
``compile_s`` is the warm-up time minus as many steady steps, i.e. roughly the compile cost.

Reading the output: one line per mode (steps, seconds, ms/step, pairs/s, peak memory: CUDA
``max_memory_allocated`` over the timed steps, or on CPU the process's peak RSS so far); the last
line holds ``pairs_per_s`` (uncached when it ran, else cached), both rates and ``cache_speedup``
= cached / uncached. Timings exclude ``--warmup`` steps; on CUDA every step ends synchronised
(the loop reads each loss term as a Python float). Target (benchmarks/README.md): on one H100 the
paper config should reach >= 1,200 pairs/s uncached.

Written against timam.training (cached_split, trainer) as of its CachedSplit (lazy caches), TimamTrainer
(image_cached/text_cached, image_stream, embed_batch(split, captions, images), set_epoch) API.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

import _common  # noqa: I001  (first: environment, sys.path, torchvision shim)
from _common import rate, result_line

CACHED_LENGTH, MIN_LENGTH = 40, 12


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", choices=_common.CONFIGS, default="default")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--mode", choices=("both", "cached", "uncached"), default="both")
    parser.add_argument("--steps", type=int, default=20, help="timed uncached steps (batches)")
    parser.add_argument("--cached-steps", type=int, default=None, help="timed cached steps (default 5 x --steps)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps before each timed run")
    parser.add_argument("--batch-size", type=int, default=None, help="default: the config's (64)")
    parser.add_argument("--unfrozen", action="store_true", help="uncached: train the backbone and transformer too")
    parser.add_argument("--compile", action="store_true", help="torch.compile the backbone and transformer")
    parser.add_argument("--image-source", choices=("files", "random"), default="random")
    parser.add_argument("--images", default=None, help="image folder for --image-source files (default: demo)")
    parser.add_argument("--pool", type=int, default=256, help="distinct images held in device memory (uncached)")
    parser.add_argument("--seq-len", type=int, default=CACHED_LENGTH, help="caption tokens (longest caption)")
    parser.add_argument("--weights", choices=("auto", "pretrained", "random"), default="auto", help="default config")
    parser.add_argument("--num-classes", type=int, default=_common.CUHK_PEDES_TRAIN_IDENTITIES)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


def split_tables(num_captions: int, num_images: int, num_classes: int, generator: torch.Generator):
    """Caption -> image (about two captions per image, shuffled) and caption -> identity (four images each)."""
    caption_image = (torch.arange(num_captions) % num_images)[torch.randperm(num_captions, generator=generator)]
    labels = (caption_image // 4) % num_classes
    return caption_image, labels


def make_split(model, num_captions: int, image_paths: list[str], args, generator: torch.Generator, device):
    """A real ``CachedSplit`` over synthetic captions: token ids of realistic lengths, two captions
    per image, and ``image_paths`` (real files, or placeholders when images never get decoded)."""
    from timam.inference.split_data import SplitData
    from timam.training.cached_split import CachedSplit

    num_images = len(image_paths)
    caption_image, labels = split_tables(num_captions, num_images, args.num_classes, generator)
    ids, mask = _common.synthetic_tokens(num_captions, args.seq_len, min(MIN_LENGTH, args.seq_len), generator)
    data = SplitData(
        split="train",
        caption_ids=[f"c{i}" for i in range(num_captions)],
        image_ids=[f"i{i}" for i in range(num_images)],
        image_paths=list(image_paths),
        caption_image=caption_image,
        caption_identity=labels.clone(),
        image_identity=torch.arange(num_images) // 4,
        caption_labels=labels,
        input_ids=ids,
        attention_mask=mask,
    )
    return CachedSplit(model, data, batch_size=64, device=device)


def fill_cache(split, model, generator: torch.Generator) -> None:
    """Synthetic frozen outputs with the real shapes and dtypes, where the loop would compute them
    on first use: pooled image features float32, token states float16, both in host memory."""
    num_images, (num_captions, length) = len(split.data.image_paths), split.input_ids.shape
    split.image_features = torch.randn(num_images, model.image_encoder.feature_dim, generator=generator)
    split.token_states = torch.randn(
        num_captions, length, model.text_encoder.state_dim, generator=generator, dtype=torch.float16
    )


def random_pool(model, args, device: torch.device, generator: torch.Generator) -> torch.Tensor:
    from timam.inference.device import to_device_images

    height, width = model.config.image_size
    return to_device_images(torch.randn(args.pool, 3, height, width, generator=generator), device)


def make_trainer_classes():
    from timam.training.trainer import TimamTrainer

    class BenchTrainer(TimamTrainer):
        """The real trainer; ``limit`` caps the batches of an epoch (steps of one timed run)."""

        limit: int | None = None

        def batches(self, generator: torch.Generator) -> list[torch.Tensor]:
            return super().batches(generator)[: self.limit]

    class UncachedTrainer(BenchTrainer):
        """The real trainer with both caches off: images and token states are computed every step,
        frozen or not. ``pool`` (images in device memory) replaces the loop's image DataLoader."""

        pool: torch.Tensor | None = None

        @property
        def image_cached(self) -> bool:
            return False

        @property
        def text_cached(self) -> bool:
            return False

        def image_stream(self, shares):
            if self.pool is None:
                yield from super().image_stream(shares)
                return
            for captions in shares:
                yield self.pool[self.train.data.caption_image[captions] % len(self.pool)]

    return BenchTrainer, UncachedTrainer


def run_epochs(trainer, steps: int, warmup: int, device: torch.device, generator: torch.Generator):
    """(warm-up seconds, timed seconds, last losses) for ``warmup`` then ``steps`` steps."""
    epoch = 10**6  # past the adversarial warm-up epochs, so every weighted term is on
    warmup_s = 0.0
    if warmup:
        trainer.limit = warmup
        warmup_s, _ = _common.timed(lambda: trainer.train_epoch(epoch, generator), device)
    trainer.limit = steps
    _common.reset_peak(device)
    seconds, losses = _common.timed(lambda: trainer.train_epoch(epoch, generator), device)
    return warmup_s, seconds, losses


def main() -> None:
    args = parse_args()
    _common.set_threads(args.threads)
    from timam.inference.device import model_to
    from timam.inference.embedding import default_workers
    from timam.training.config import training_config
    from timam.training.loop import seed_everything

    device = _common.pick(args.device)
    values = _common.training_values(args.config)
    if args.batch_size:
        values["batch_size"] = args.batch_size
    frozen_config = training_config({**values, "freeze": {"image_backbone_epochs": None, "text_model_epochs": None}})
    uncached_config = training_config(
        {**values, "freeze": {"image_backbone_epochs": 0, "text_model_epochs": 0}}
        if args.unfrozen
        else {**values, "freeze": {"image_backbone_epochs": None, "text_model_epochs": None}}
    )
    batch = frozen_config.batch_size
    cached_steps = args.cached_steps or 5 * args.steps
    generator = seed_everything(args.seed)

    model, weights = _common.build_model(args.config, weights=args.weights, num_classes=args.num_classes)
    model = model_to(model, device)  # channels_last convolutions, as the training loop has them
    mc, text_config = model.config, model.text_encoder.transformer.config
    print(_common.device_info(device))
    print(
        f"model: config={args.config} {mc.image_library} {mc.image_backbone} {mc.image_size[0]}x{mc.image_size[1]} "
        f"(features {model.image_encoder.feature_dim}), text {text_config.hidden_size}-d x "
        f"{text_config.num_hidden_layers} layers, BiLSTM {mc.lstm_hidden}, FC {mc.embedding_dim}, "
        f"{mc.num_classes} classes; weights {weights}"
    )
    active = {k: v for k, v in vars(frozen_config.loss_weights).items() if v}
    print(
        f"step: batch {batch}, sampler {frozen_config.sampler}, losses {active}, optimisers image "
        f"{frozen_config.image_optimizer.name} / text {frozen_config.text_optimizer.name} / discriminator "
        f"{frozen_config.discriminator_optimizer.name}; autocast {'bf16' if device.type == 'cuda' else 'off (fp32)'}"
    )
    BenchTrainer, UncachedTrainer = make_trainer_classes()
    results: dict[str, dict] = {}

    if args.mode in ("both", "cached"):
        placeholders = [f"i{i}.jpg" for i in range(max(1, cached_steps * batch // 2))]
        split = make_split(model, cached_steps * batch, placeholders, args, generator, device)
        fill_cache(split, model, generator)
        trainer = BenchTrainer(model, split, split, frozen_config, device)
        trainer.set_epoch(1)
        assert trainer.image_cached and trainer.text_cached, "the cached step would not use the caches"
        print(
            f"cached: features {tuple(split.image_features.shape)} {split.image_features.dtype}, token states "
            f"{tuple(split.token_states.shape)} {split.token_states.dtype}, on the host"
        )
        _, seconds, losses = run_epochs(trainer, cached_steps, args.warmup, device, generator)
        results["cached"] = {"steps": cached_steps, "seconds": seconds, "peak": _common.peak_memory_mb(device)}
        del trainer, split

    compile_s = None
    if args.mode in ("both", "uncached"):
        steps = args.steps
        num_captions = max(steps, args.warmup) * batch
        if args.image_source == "files":
            files = _common.image_files(args.images)
            paths = _common.cycle(files, max(1, num_captions // 2))
            source = (
                f"decoded every step by the loop's DataLoader ({default_workers()} workers, "
                f"{len(files)} distinct files under {Path(files[0]).parents[1]})"
            )
        else:
            paths = [f"i{i}.jpg" for i in range(max(1, num_captions // 2))]
            source = f"{args.pool} random tensors in device memory (model step only)"
        split = make_split(model, num_captions, paths, args, generator, device)
        trainer = UncachedTrainer(model, split, split, uncached_config, device)
        trainer.set_epoch(1)
        if args.image_source == "random":
            trainer.pool = random_pool(model, args, device, generator)
        if args.compile:
            model.image_encoder.backbone.compile()
            model.text_encoder.transformer.compile()
        trainable_m = sum(p.numel() for p in model.parameters() if p.requires_grad) / 1e6
        print(
            f"uncached: images {source}; {trainable_m:.1f} M trainable model parameters "
            f"({'backbone and transformer trainable' if args.unfrozen else 'backbone and transformer frozen'})"
            f"{', torch.compile' if args.compile else ''}"
        )
        warmup_s, seconds, losses = run_epochs(trainer, steps, args.warmup, device, generator)
        if args.compile and args.warmup:
            compile_s = max(0.0, warmup_s - args.warmup * seconds / steps)
        results["uncached"] = {"steps": steps, "seconds": seconds, "peak": _common.peak_memory_mb(device)}

    kind = _common.peak_memory_kind(device)
    for mode, r in results.items():
        r["pairs_per_s"] = rate(r["steps"] * batch, r["seconds"])
        print(
            f"{mode}: {r['steps']} steps x {batch} pairs in {r['seconds']:.2f} s = "
            f"{1000 * r['seconds'] / r['steps']:.1f} ms/step, {r['pairs_per_s']:.1f} pairs/s, "
            f"peak memory {r['peak']:.0f} MiB ({kind})"
        )
    print("last losses: " + ", ".join(f"{k}={v:.3f}" for k, v in losses.items()))
    if compile_s is not None:
        print(f"torch.compile: about {compile_s:.1f} s (warm-up minus {args.warmup} steady steps)")
    cached = results.get("cached", {}).get("pairs_per_s")
    uncached = results.get("uncached", {}).get("pairs_per_s")
    speedup = cached / uncached if cached and uncached else None
    if speedup:
        print(f"caching the frozen outputs speeds the step up {speedup:.1f}x")
    main_mode = "uncached" if "uncached" in results else "cached"
    print(
        result_line(
            "training",
            config=args.config,
            device=device.type,
            mode=args.mode,
            batch_size=batch,
            image_source=args.image_source if "uncached" in results else None,
            unfrozen=args.unfrozen,
            compile=args.compile,
            pairs_per_s=results[main_mode]["pairs_per_s"],
            cached_pairs_per_s=cached,
            uncached_pairs_per_s=uncached,
            cache_speedup=speedup,
            peak_mem_mb=results[main_mode]["peak"],
            cached_peak_mem_mb=results.get("cached", {}).get("peak"),
            peak_mem_kind=kind,
            compile_s=compile_s,
            steps=results[main_mode]["steps"],
            weights=weights,
        )
    )


if __name__ == "__main__":
    main()
