"""Training throughput of the TIMAM train step, in caption-image pairs per second.

Run: ``.venv/bin/python benchmarks/training_speed.py [--config default|paper] [--device auto|cpu|cuda]
[--mode cached,paper5,uncached,ddp] [--steps N] [--batch-size B] [--image-source random|files]
[--unfrozen] [--compile] [--tiny]`` (``--help`` for the rest).

Every mode runs the real step, ``timam.training.trainer.TimamTrainer.train_epoch`` (embed_batch,
TimamObjective, optimisers, discriminator steps), on a real ``CachedSplit`` of synthetic captions
(token ids with lengths uniform in [12, ``--seq-len``], two captions per image, four images per
identity). Model and training settings are the project's, read through Kedro's config loader
(``_common.project_parameters``): ``--config paper`` is ``--env paper`` -- torchvision ResNet-101 at
384x128, a bert-base-sized BERT (random weights: none offline; speed does not depend on them),
64-token captions (``tokenization.max_length``), flip and padded crop, batch 64, identification +
CMPM + adversarial losses, SGD (image, discriminator) / Adam (text). Only the batches per epoch
(``--steps``) and, per mode, the freeze schedule and caches are set here. A pair is one caption
and its image.

Modes (``--mode``, comma-separated; default ``cached,paper5,uncached``, ``both`` = ``cached,uncached``):

* cached -- both pretrained parts frozen, augmentation off: pooled image features and token states
  come from the caches (synthetic values of the real shapes and dtypes), placed where
  ``training.cache_device`` puts them (``TimamTrainer.place_caches``); a step is FC projections +
  BiLSTM + losses + optimiser steps.
* paper5 -- the paper's first five epochs: the backbone trains (``freeze.image_backbone_epochs`` 0)
  on augmented images, the transformer is frozen and its token states come from the cache.
* uncached -- ``image_cached``/``text_cached`` forced off: every step also runs the backbone and the
  transformer forward (channels_last; bf16 autocast on CUDA); frozen (no backward, eval mode) or,
  with ``--unfrozen``, trained from the first epoch (the paper's epochs 6+).
* ddp -- paper5 under DistributedDataParallel: ``--ranks`` gloo processes on the CPU, always with
  the tiny model (it checks the data-parallel step and its cost on any machine; NCCL throughput is
  gpu_check.py's). Pairs/s count the global batch.

Images (paper5, uncached): ``--image-source random`` takes them from a pool of random uint8 images
in device memory, not augmented, normalised on the device as the loader's are (the model step
alone); ``files`` uses the loop's own loader -- the demo files (or ``--images``) decoded by ``default_workers()``
persistent workers with the training transform, uint8 through pinned memory -- so input
starvation shows. The workers start in the warm-up epoch, as they start once per run in training.

``--tiny``: a ResNet-18 at 32x16 and a 2-layer BERT of width 64, batch 8, 16 tokens, 2 steps: every
mode in seconds on the CPU (the test suite runs it). ``--compile`` applies ``torch.compile`` to the
backbone and the transformer (uncached only); ``compile_s`` is the warm-up time minus as many
steady steps.

Reading the output: one line per mode (steps, seconds, ms/step, pairs/s, peak memory: CUDA
``max_memory_allocated`` over the timed steps, or on CPU the process's peak RSS so far); the last
line holds ``pairs_per_s`` (of paper5, else uncached, else cached), every mode's rate and
``cache_speedup`` = cached / uncached. Timings exclude ``--warmup`` steps; every timed run ends
synchronised. Target (benchmarks/README.md): on one H100/H200 the paper config should reach
>= 1,200 pairs/s.
"""

from __future__ import annotations

import argparse
import socket
import sys
from pathlib import Path

import torch

import _common  # noqa: I001  (first: environment, sys.path, torchvision shim)
from _common import rate, result_line

MIN_LENGTH = 12
MODES = ("cached", "paper5", "uncached", "ddp")
DEFAULT_MODES = "cached,paper5,uncached"
# What --tiny sets (flags given explicitly still win).
TINY = {"steps": 2, "cached_steps": 2, "warmup": 1, "batch_size": 8, "pool": 16, "seq_len": 16, "num_classes": 32}
NO_AUGMENTATION = {"flip": False, "crop_padding": 0, "colour_jitter": 0.0}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", choices=_common.CONFIGS, default="default")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (ddp: always the CPU)")
    parser.add_argument("--mode", default=DEFAULT_MODES, help=f"comma-separated, of {', '.join(MODES)} (or both)")
    parser.add_argument("--steps", type=int, default=20, help="timed steps (batches) of paper5, uncached, ddp")
    parser.add_argument("--cached-steps", type=int, default=None, help="timed cached steps (default 5 x --steps)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps before each timed run")
    parser.add_argument("--batch-size", type=int, default=None, help="default: the config's (64)")
    parser.add_argument("--unfrozen", action="store_true", help="uncached: train the backbone and transformer too")
    parser.add_argument("--compile", action="store_true", help="uncached: torch.compile the backbone and transformer")
    parser.add_argument("--image-source", choices=("files", "random"), default="random")
    parser.add_argument("--images", default=None, help="image folder for --image-source files (default: demo)")
    parser.add_argument("--pool", type=int, default=256, help="distinct random images held in device memory")
    parser.add_argument("--seq-len", type=int, default=None, help="caption tokens (default: tokenization.max_length)")
    parser.add_argument("--weights", choices=("auto", "pretrained", "random"), default="auto", help="default config")
    parser.add_argument("--num-classes", type=int, default=_common.CUHK_PEDES_TRAIN_IDENTITIES)
    parser.add_argument("--ranks", type=int, default=2, help="ddp: gloo processes")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tiny", action="store_true", help="tiny models and runs: every mode in seconds")
    if "--tiny" in argv:
        parser.set_defaults(**TINY)
    args = parser.parse_args(argv)
    modes = args.mode.replace("both", "cached,uncached").split(",")
    if unknown := sorted(set(modes) - set(MODES)):
        parser.error(f"--mode: unknown {unknown}; choose from {', '.join(MODES)}")
    args.modes = list(dict.fromkeys(modes))
    if args.seq_len is None:
        args.seq_len = int(_common.project_parameters(args.config)["tokenization"]["max_length"])
    args.cached_steps = args.cached_steps or 5 * args.steps
    return args


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
    on first use: pooled image features float32, token states float16, both in host memory (the
    trainer's ``place_caches`` moves them where ``training.cache_device`` says)."""
    num_images, (num_captions, length) = len(split.data.image_paths), split.input_ids.shape
    split.image_features = torch.randn(num_images, model.image_encoder.feature_dim, generator=generator)
    split.token_states = torch.randn(
        num_captions, length, model.text_encoder.state_dim, generator=generator, dtype=torch.float16
    )


def random_pool(model, args, device: torch.device, generator: torch.Generator) -> torch.Tensor:
    """``args.pool`` random uint8 images in device memory: each step normalises its slice on the
    device, as it does the loader's batches."""
    from timam.inference.device import to_device

    height, width = model.config.image_size
    pixels = torch.randint(0, 256, (args.pool, 3, height, width), generator=generator, dtype=torch.uint8)
    return to_device(pixels, device)


def make_trainer_classes():
    from timam.inference.device import to_device
    from timam.training.trainer import TimamTrainer

    class BenchTrainer(TimamTrainer):
        """The real trainer; ``limit`` caps the batches of an epoch (steps of one timed run), and
        ``pool`` (images in device memory), when set, replaces the loop's image loader."""

        limit: int | None = None
        pool: torch.Tensor | None = None

        def batches(self, generator: torch.Generator) -> list[torch.Tensor]:
            return super().batches(generator)[: self.limit]

        def image_stream(self, shares):
            if self.pool is None or self.image_cached:
                yield from super().image_stream(shares)
                return
            for captions in shares:
                rows = to_device(self.train.data.caption_image[captions] % len(self.pool), self.pool.device)
                yield self.pool[rows]

    class UncachedTrainer(BenchTrainer):
        """The real trainer with both caches off: images and token states are computed every step."""

        @property
        def image_cached(self) -> bool:
            return False

        @property
        def text_cached(self) -> bool:
            return False

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


def mode_config(values: dict, mode: str, unfrozen: bool):
    """The training config of ``mode``: the project's, with that mode's freeze schedule."""
    from timam.training.config import training_config

    if mode == "cached":  # the loop caches the images only when nothing augments them
        frozen = {"image_backbone_epochs": None, "text_model_epochs": None}
        return training_config({**values, "freeze": frozen, "augmentation": NO_AUGMENTATION})
    if mode in ("paper5", "ddp"):
        return training_config({**values, "freeze": {"image_backbone_epochs": 0, "text_model_epochs": None}})
    both = 0 if unfrozen else None
    return training_config({**values, "freeze": {"image_backbone_epochs": both, "text_model_epochs": both}})


def build(args, device: torch.device):
    """The model (``--tiny``: its tiny version), on ``device``, and a word for its weights."""
    from timam.inference.device import model_to

    if args.tiny:
        model, weights = _common.build_tiny_model(args.config, num_classes=args.num_classes)
    else:
        model, weights = _common.build_model(args.config, weights=args.weights, num_classes=args.num_classes)
    return model_to(model, device), weights  # channels_last convolutions, as the training loop has them


def training_values(args) -> dict:
    values = _common.training_values(args.config)
    if args.batch_size:
        values["batch_size"] = args.batch_size
    return values


def run_mode(mode: str, args, model, device: torch.device, generator: torch.Generator) -> dict:
    """One mode's timed run on its own split and trainer: steps, seconds, peak memory, losses."""
    bench_trainer, uncached_trainer = make_trainer_classes()
    config = mode_config(training_values(args), mode, args.unfrozen)
    batch = config.batch_size
    steps = args.cached_steps if mode == "cached" else args.steps
    num_captions = max(steps, args.warmup) * batch
    files = mode != "cached" and args.image_source == "files"
    if files:
        found = _common.image_files(args.images)
        paths = _common.cycle(found, max(1, num_captions // 2))
        source = f"{len(found)} files under {Path(found[0]).parents[1]}, the loop's loader"
    else:
        paths = [f"i{i}.jpg" for i in range(max(1, num_captions // 2))]
        source = f"{args.pool} random uint8 images in device memory" if mode != "cached" else "cached features"
    split = make_split(model, num_captions, paths, args, generator, device)
    fill_cache(split, model, generator)
    trainer = (uncached_trainer if mode == "uncached" else bench_trainer)(model, split, split, config, device)
    trainer.set_epoch(1)
    expected = {"cached": (True, True), "paper5": (False, True), "uncached": (False, False)}[mode]
    assert (trainer.image_cached, trainer.text_cached) == expected, f"{mode}: the step would not cache as meant"
    cache_device = trainer.place_caches()
    if not files and mode != "cached":
        trainer.pool = random_pool(model, args, device, generator)
    if args.compile and mode == "uncached":
        model.image_encoder.backbone.compile()
        model.text_encoder.transformer.compile()
    trainable_m = sum(p.numel() for p in model.parameters() if p.requires_grad) / 1e6
    print(
        f"{mode}: images {source}; {trainable_m:.1f} M trainable model parameters; caches "
        f"{trainer.cached_parts() or 'none'} on {cache_device}; augmentation {config.augmentation}"
    )
    warmup_s, seconds, losses = run_epochs(trainer, steps, args.warmup, device, generator)
    result = {"steps": steps, "batch": batch, "seconds": seconds, "peak": _common.peak_memory_mb(device)}
    if args.compile and mode == "uncached" and args.warmup:
        result["compile_s"] = max(0.0, warmup_s - args.warmup * seconds / steps)
    return {**result, "losses": losses, "cache_device": str(cache_device)}


def ddp_rank(rank: int, args, port: int, results) -> None:
    """One gloo rank of the ddp mode: the tiny model, paper5's schedule, this rank's share of each batch."""
    import torch.distributed as dist

    from timam.training.distributed import DistributedContext
    from timam.training.loop import seed_everything

    torch.set_num_threads(max(1, torch.get_num_threads() // args.ranks))
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=args.ranks)
    try:
        device = torch.device("cpu")
        generator = seed_everything(args.seed)  # the same weights and batches on every rank
        args.tiny = True
        model, _ = build(args, device)
        config = mode_config(training_values(args), "ddp", unfrozen=False)
        num_captions = max(args.steps, args.warmup) * config.batch_size
        split = make_split(
            model, num_captions, [f"i{i}.jpg" for i in range(num_captions // 2)], args, generator, device
        )
        fill_cache(split, model, generator)
        bench_trainer, _ = make_trainer_classes()
        context = DistributedContext(rank=rank, world_size=args.ranks, local_rank=rank)
        trainer = bench_trainer(model, split, split, config, device, context)
        trainer.set_epoch(1)
        trainer.pool = random_pool(model, args, device, generator)
        _, seconds, losses = run_epochs(trainer, args.steps, args.warmup, device, generator)
        if rank == 0:
            results.put({"steps": args.steps, "batch": config.batch_size, "seconds": seconds, "losses": losses})
    finally:
        dist.destroy_process_group()


def run_ddp(args) -> dict:
    import torch.multiprocessing as mp

    with socket.socket() as probe:  # a free port for the rendezvous
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    context = mp.get_context("spawn")
    results = context.SimpleQueue()
    print(f"ddp: {args.ranks} gloo ranks on the CPU, tiny model, paper5 schedule, random uint8 images")
    mp.start_processes(ddp_rank, args=(args, port, results), nprocs=args.ranks, start_method="spawn")
    return {**results.get(), "peak": float("nan"), "cache_device": "cpu"}


def main() -> None:
    args = parse_args()
    _common.set_threads(args.threads)
    from timam.training.loop import seed_everything

    device = _common.pick(args.device)
    generator = seed_everything(args.seed)
    model, weights = build(args, device)
    mc, text_config = model.config, model.text_encoder.transformer.config
    print(_common.device_info(device))
    print(
        f"model: config={args.config}{' (tiny)' if args.tiny else ''} {mc.image_library} {mc.image_backbone} "
        f"{mc.image_size[0]}x{mc.image_size[1]} (features {model.image_encoder.feature_dim}), text "
        f"{text_config.hidden_size}-d x {text_config.num_hidden_layers} layers, BiLSTM {mc.lstm_hidden}, FC "
        f"{mc.embedding_dim}, {mc.num_classes} classes; weights {weights}; captions up to {args.seq_len} tokens"
    )
    base = mode_config(training_values(args), "paper5", False)
    active = {k: v for k, v in vars(base.loss_weights).items() if v}
    print(
        f"step: batch {base.batch_size}, sampler {base.sampler}, losses {active}, optimisers image "
        f"{base.image_optimizer.name} / text {base.text_optimizer.name} / discriminator "
        f"{base.discriminator_optimizer.name}; precision {base.precision}, cache_device {base.cache_device}"
    )
    results = {
        mode: run_ddp(args) if mode == "ddp" else run_mode(mode, args, model, device, generator) for mode in args.modes
    }
    kind = _common.peak_memory_kind(device)
    for mode, r in results.items():
        r["pairs_per_s"] = rate(r["steps"] * r["batch"], r["seconds"])
        print(
            f"{mode}: {r['steps']} steps x {r['batch']} pairs in {r['seconds']:.2f} s = "
            f"{1000 * r['seconds'] / r['steps']:.1f} ms/step, {r['pairs_per_s']:.1f} pairs/s, "
            f"peak memory {r['peak']:.0f} MiB ({kind if mode != 'ddp' else 'not measured'}); last losses: "
            + ", ".join(f"{k}={v:.3f}" for k, v in r["losses"].items())
        )
    rates = {mode: r["pairs_per_s"] for mode, r in results.items()}
    speedup = rates["cached"] / rates["uncached"] if "cached" in rates and "uncached" in rates else None
    if speedup:
        print(f"caching the frozen outputs speeds the step up {speedup:.1f}x")
    main_mode = next(mode for mode in ("paper5", "uncached", "cached", "ddp") if mode in results)
    compile_s = results.get("uncached", {}).get("compile_s")
    if compile_s is not None:
        print(f"torch.compile: about {compile_s:.1f} s (warm-up minus {args.warmup} steady steps)")
    print(
        result_line(
            "training",
            config=args.config,
            tiny=args.tiny,
            device=device.type,
            mode=",".join(args.modes),
            main_mode=main_mode,
            batch_size=results[main_mode]["batch"],
            image_size="x".join(map(str, model.config.image_size)),
            tokens=args.seq_len,
            image_source=args.image_source,
            unfrozen=args.unfrozen,
            compile=args.compile,
            pairs_per_s=rates[main_mode],
            **{f"{mode}_pairs_per_s": rates.get(mode) for mode in MODES},
            cache_speedup=speedup,
            cache_device=results[main_mode]["cache_device"],
            peak_mem_mb=results[main_mode]["peak"],
            peak_mem_kind=kind,
            compile_s=compile_s,
            steps=results[main_mode]["steps"],
            weights=weights,
        )
    )


if __name__ == "__main__":
    main()
