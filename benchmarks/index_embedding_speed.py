"""Embedding throughput of the index pipeline (images/s), split into decoding and the model.

Run: ``.venv/bin/python benchmarks/index_embedding_speed.py [--source ucm|demo] [--images N]
[--batch-size B] [--shard-size S] [--device auto|cpu|cuda] [--weights auto|pretrained|random]``.

Measures the ``embed_image_collection`` node's code path (:func:`timam.index.shards.write_shards`:
Pillow decode + eval transform in ``default_workers()`` DataLoader workers, the project's default
image model -- EfficientNet-Lite0 at conf/base's image size, channels_last, bf16 autocast on CUDA --
and one atomic safetensors shard write per ``--shard-size`` images) on real JPEG files:

* ``--source ucm`` (default when present): the 2,100 UCM-Captions 128 px JPEGs of
  ``../shared/data/ucm_captions/ucm_captions_128.parquet``, written once as files to a temporary
  folder (cycled when ``--images`` is larger); ``demo``: the demo data's 80x160 JPEGs.
* ``decode``: the same DataLoader (same workers, batch size) over the files with no model: the most
  images/s decoding can feed. ``decode_1proc``: decoding in this process alone, for the cost per core.
* ``model``: the backbone + projection on batches decoded beforehand: the most images/s the model
  can take.
* ``index``: the whole node path, decode and model overlapping (workers decode the next batch while
  the model runs), shard writes included. Each pass reads the files once before, so the page cache
  serves them (as on a rerun; a cold disk adds its read time to decoding).

The limit is whichever of ``decode`` and ``model`` is slower. The last line is machine-readable.
"""

from __future__ import annotations

import argparse
import atexit
import io
import os
import shutil
import tempfile
import time
from pathlib import Path

import torch

import _common  # noqa: I001  (first: environment, sys.path, torchvision shim)
from _common import rate, result_line

UCM_PARQUET = _common.REPO.parent / "shared" / "data" / "ucm_captions" / "ucm_captions_128.parquet"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", choices=("auto", "ucm", "demo"), default="auto")
    parser.add_argument("--images", type=int, default=2100, help="images per pass (files cycled when fewer)")
    parser.add_argument("--batch-size", type=int, default=64, help="as index.batch_size")
    parser.add_argument("--shard-size", type=int, default=1024, help="as index.shard_size")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--weights", choices=("auto", "pretrained", "random"), default="auto")
    parser.add_argument("--threads", type=int, default=0)
    return parser.parse_args()


def ucm_files(folder: Path) -> list[str]:
    """The UCM 128 px JPEG bytes as files in ``folder`` (written once), sorted."""
    import pandas as pd
    from PIL import Image

    table = pd.read_parquet(UCM_PARQUET, columns=["image_id", "image_jpeg"])
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for image_id, data in zip(table["image_id"], table["image_jpeg"], strict=True):
        path = folder / f"{image_id}.jpg"
        if not path.is_file():
            Image.open(io.BytesIO(data)).verify()
            path.write_bytes(data)
        paths.append(str(path))
    return sorted(paths)


def source_files(source: str, scratch: Path) -> tuple[list[str], str]:
    if source == "ucm" or (source == "auto" and UCM_PARQUET.is_file()):
        if not UCM_PARQUET.is_file():
            raise SystemExit(f"--source ucm needs {UCM_PARQUET}")
        return ucm_files(scratch / "ucm128"), "UCM-Captions 128x128 JPEG q90"
    return _common.image_files(None), "demo 80x160 JPEG"


def read_all(paths: list[str]) -> None:
    for path in dict.fromkeys(paths):
        Path(path).read_bytes()


def main() -> None:
    args = parse_args()
    _common.set_threads(args.threads)
    from torch.utils.data import DataLoader

    from timam.index.collection import list_collection
    from timam.index.config import CollectionConfig, ShardSpec
    from timam.index.embedding import CheckedImageFiles
    from timam.index.shards import write_shards
    from timam.inference.device import autocast, model_to, to_device_images
    from timam.inference.embedding import default_workers

    device = _common.pick(args.device)
    model, weights = _common.build_model("default", weights=args.weights)
    model = model_to(model, device).eval()
    size = model.config.image_size
    preprocessing = model.config.preprocessing
    workers = default_workers()
    scratch = Path(tempfile.mkdtemp(prefix="timam_index_bench_"))  # the collection and its shards, removed at exit
    atexit.register(shutil.rmtree, scratch, ignore_errors=True)
    files, described = source_files(args.source, Path(tempfile.gettempdir()) / "timam_index_bench_images")
    # a collection of args.images files: links to the real files, cycled (the index keys files by path)
    collection_dir = scratch / "collection"
    collection_dir.mkdir()
    for i, target in enumerate(_common.cycle(files, args.images)):
        os.symlink(target, collection_dir / f"{i:07d}.jpg")
    collection = list_collection(CollectionConfig(path=str(collection_dir)))
    paths = collection["path"].tolist()
    print(_common.device_info(device))
    print(
        f"model: default {model.config.image_backbone} {size[0]}x{size[1]}, weights {weights}; batch "
        f"{args.batch_size}; shard {args.shard_size}; decoding workers {workers}"
    )
    print(f"data: {len(paths)} images ({described}, {len(set(files))} distinct files)")
    read_all(paths)

    def loader(num_workers: int) -> DataLoader:
        return DataLoader(
            CheckedImageFiles(paths, preprocessing),
            batch_size=args.batch_size,
            num_workers=num_workers,
            pin_memory=device.type == "cuda",
        )

    start = time.perf_counter()
    batches = [images for images, _, _ in loader(workers)]
    decode_s = time.perf_counter() - start
    one = min(len(paths), 512)
    start = time.perf_counter()
    for _ in DataLoader(CheckedImageFiles(paths[:one], preprocessing), batch_size=args.batch_size, num_workers=0):
        pass
    decode_1proc_s = time.perf_counter() - start

    encoder = model.image_encoder

    @torch.no_grad()
    def forward_all(decoded: list[torch.Tensor]) -> None:
        for images in decoded:
            with autocast(device, "auto"):
                features = encoder.features(to_device_images(images, device))
            encoder.projection(features.float()).float().cpu()

    with torch.no_grad():  # warm-up
        with autocast(device, "auto"):
            encoder.features(to_device_images(batches[0], device))
    model_s, _ = _common.timed(lambda: forward_all(batches), device)
    batches.clear()  # free the decoded images before the end-to-end pass

    read_all(paths)
    _common.reset_peak(device)
    index_s, run = _common.timed(
        lambda: write_shards(
            model,
            collection,
            folder=scratch / "shards",
            checkpoint_version="bench",
            shard_size=args.shard_size,
            writer=ShardSpec(),
            batch_size=args.batch_size,
            device=device,
            precision="auto",
            show_progress=False,
        ),
        device,
    )
    assert run.embedded == list(range(run.shards)) and run.bad_images == 0
    peak = _common.peak_memory_mb(device)
    decode_per_s, model_per_s, index_per_s = (
        rate(len(paths), decode_s),
        rate(len(paths), model_s),
        rate(len(paths), index_s),
    )
    limit = "decode" if decode_per_s < model_per_s else "model"
    print(
        f"decode: {decode_per_s:.1f} images/s with {workers} worker(s) (no model); "
        f"{rate(one, decode_1proc_s):.1f} images/s in one process ({1000 * decode_1proc_s / one:.2f} ms/image)"
    )
    print(f"model:  {model_per_s:.1f} images/s (backbone + projection on decoded batches)")
    print(f"index:  {index_per_s:.1f} images/s end to end ({run.shards} shards written, {index_s:.1f} s)")
    print(f"limit:  {limit} ({min(decode_per_s, model_per_s):.1f} images/s; the index path reaches "
          f"{100 * index_per_s / min(decode_per_s, model_per_s):.0f}% of it); peak memory {peak:.0f} MiB "
          f"({_common.peak_memory_kind(device)})")  # fmt: skip
    print(
        result_line(
            "index_embedding",
            device=device.type,
            weights=weights,
            images=len(paths),
            image_size=f"{size[0]}x{size[1]}",
            batch_size=args.batch_size,
            workers=workers,
            decode_per_s=decode_per_s,
            decode_1proc_ms=1000 * decode_1proc_s / one,
            model_per_s=model_per_s,
            index_per_s=index_per_s,
            limit=limit,
            peak_mem_mb=peak,
        )
    )


if __name__ == "__main__":
    main()
