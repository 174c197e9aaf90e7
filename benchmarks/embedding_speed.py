"""Gallery-image and caption embedding throughput of the evaluation path (the embed_test_split node).

Run: ``.venv/bin/python benchmarks/embedding_speed.py [--config default|paper] [--images N]
[--captions N] [--batch-size B] [--device auto|cpu|cuda] [--weights auto|pretrained|random]``.

Times ``timam.inference.embedding.image_outputs(project=True)`` -- decode with Pillow in a DataLoader
(``default_workers()``: none on <= 2 cores, else cores - 1 up to 8), eval transform, backbone +
FC channels_last (bf16 autocast on CUDA) -- and ``text_outputs(project=True)`` -- transformer
+ BiLSTM + FC on token ids. Default sizes are the CUHK-PEDES test split: 3,074 gallery images and
6,156 caption queries. Images are paths cycled from the demo data (``--images-dir`` to use
another folder; read through the page cache after the first pass). Captions are the demo captions
tokenised with the model's tokenizer to ``--max-length`` (64, the project's setting) when the
tokenizer is available, else synthetic ids of realistic lengths; tokenising is not timed.

``--config default`` is the project's model (EfficientNet-Lite0 160x80 + MiniLM), with the offline
pretrained weights when installed, else the same architecture with random weights (same speed);
``paper`` is ResNet-101 224x224 + bert-base-sized BERT with random weights.

Reading the output: images/s and captions/s for the whole pass (one untimed warm-up batch of each
first), seconds for the full gallery and queries, peak memory (CUDA max allocated over both, or
the process's peak RSS on CPU). The last line holds ``image_per_s`` and ``caption_per_s``.
"""

from __future__ import annotations

import argparse

import torch

import _common  # noqa: I001  (first: environment, sys.path, torchvision shim)
from _common import rate, result_line


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", choices=_common.CONFIGS, default="default")
    parser.add_argument("--images", type=int, default=3074, help="gallery images to embed")
    parser.add_argument("--captions", type=int, default=6156, help="captions to embed")
    parser.add_argument("--images-dir", default=None, help="image folder (default: the demo data)")
    parser.add_argument("--batch-size", type=int, default=64, help="as evaluation.batch_size")
    parser.add_argument("--max-length", type=int, default=64, help="token padding length (tokenization.max_length)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--weights", choices=("auto", "pretrained", "random"), default="auto")
    parser.add_argument("--tokens", choices=("auto", "real", "synthetic"), default="auto")
    parser.add_argument("--threads", type=int, default=0)
    return parser.parse_args()


def caption_tokens(model, count: int, max_length: int, kind: str) -> tuple[torch.Tensor, torch.Tensor, str]:
    """Token ids and masks for ``count`` captions: demo captions tokenised, or synthetic."""
    if kind in ("auto", "real"):
        try:
            from transformers import AutoTokenizer

            from timam.models.text_encoder import resolve_text_model

            tokenizer = AutoTokenizer.from_pretrained(resolve_text_model(model.config.text_model))
            captions = _common.cycle(_common.demo_captions(), count)
            encoded = tokenizer(
                captions, padding="max_length", truncation=True, max_length=max_length, return_tensors="pt"
            )
            return (
                encoded["input_ids"].to(torch.int32),
                encoded["attention_mask"].to(torch.int8),
                f"demo captions, {type(tokenizer).__name__}",
            )
        except Exception as error:  # noqa: BLE001  (no tokenizer offline: fall back, say so)
            if kind == "real":
                raise
            note = f"synthetic (tokenizer unavailable: {type(error).__name__})"
    else:
        note = "synthetic"
    # Demo captions run about 20-30 tokens, CUHK-PEDES ones 15-60: real lengths uniform in [16, 48].
    generator = torch.Generator().manual_seed(0)
    ids, _ = _common.synthetic_tokens(count, max_length, max_length, generator)
    lengths = torch.randint(min(16, max_length), min(48, max_length) + 1, (count,), generator=generator)
    mask = (torch.arange(max_length)[None, :] < lengths[:, None]).to(torch.int8)
    return ids * mask, mask, note


def main() -> None:
    args = parse_args()
    _common.set_threads(args.threads)
    from timam.inference.device import model_to
    from timam.inference.embedding import default_workers, image_outputs, text_outputs

    device = _common.pick(args.device)
    model, weights = _common.build_model(args.config, weights=args.weights)
    model = model_to(model, device).eval()  # channels_last, as the evaluate node has it
    paths = _common.cycle(_common.image_files(args.images_dir), args.images)
    ids, mask, token_note = caption_tokens(model, args.captions, args.max_length, args.tokens)
    mean_length = float(mask.float().sum(1).mean())
    mc = model.config
    print(_common.device_info(device))
    print(
        f"model: config={args.config} {mc.image_backbone} {mc.image_size[0]}x{mc.image_size[1]} + "
        f"{model.text_encoder.transformer.config.num_hidden_layers}-layer {model.text_encoder.state_dim}-d "
        f"transformer; weights {weights}; batch {args.batch_size}; image loader workers {default_workers()}"
    )
    print(
        f"data: {len(paths)} gallery images (cycled demo files), {len(ids)} captions ({token_note}, "
        f"padded to {args.max_length}, mean {mean_length:.1f} real tokens)"
    )
    common = {"batch_size": args.batch_size, "device": device, "precision": "auto"}
    image_outputs(model, paths[: args.batch_size], project=True, desc="warm-up", **common)
    text_outputs(model, ids[: args.batch_size], mask[: args.batch_size], project=True, desc="warm-up", **common)
    _common.reset_peak(device)
    image_s, image_emb = _common.timed(
        lambda: image_outputs(model, paths, project=True, desc="images", **common), device
    )
    text_s, text_emb = _common.timed(
        lambda: text_outputs(model, ids, mask, project=True, desc="captions", **common), device
    )
    peak = _common.peak_memory_mb(device)
    assert image_emb.shape == (len(paths), mc.embedding_dim) and text_emb.shape == (len(ids), mc.embedding_dim)
    image_per_s, caption_per_s = rate(len(paths), image_s), rate(len(ids), text_s)
    print(f"images: {len(paths)} in {image_s:.2f} s = {image_per_s:.1f} images/s (decode + transform + backbone + FC)")
    print(f"captions: {len(ids)} in {text_s:.2f} s = {caption_per_s:.1f} captions/s (transformer + BiLSTM + FC)")
    print(f"peak memory {peak:.0f} MiB ({_common.peak_memory_kind(device)})")
    print(
        result_line(
            "embedding",
            config=args.config,
            device=device.type,
            weights=weights,
            images=len(paths),
            captions=len(ids),
            batch_size=args.batch_size,
            workers=default_workers(),
            image_per_s=image_per_s,
            caption_per_s=caption_per_s,
            image_s=image_s,
            caption_s=text_s,
            peak_mem_mb=peak,
        )
    )


if __name__ == "__main__":
    main()
