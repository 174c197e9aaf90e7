"""A tiny generated demo (12 identities, resnet18 random at 32x16, fc_embed text) for tuning tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

import timam  # noqa: F401  (torchvision guard before transformers)
from timam.io.demo_dataset import DemoReidRawDataset
from timam.pipelines.prepare.nodes import build_caption_table, tokenize_captions

REPO = Path(__file__).resolve().parents[2]

MODEL = {
    "image_backbone": "resnet18", "image_library": "torchvision", "image_weights": None, "image_size": [32, 16],
    "text_encoder": "fc_embed", "word_embedding_dim": 16, "lstm_hidden": 16, "embedding_dim": 16,
}
TRAINING = {"epochs": 2, "batch_size": 8, "embed_batch_size": 8, "device": "cpu"}


def tiny_captions(workdir: Path):
    """The caption table and its tokens for a 12-identity demo (6 train, 3 val, 3 test)."""
    raw = DemoReidRawDataset(
        filepath=str(workdir / "raw" / "reid_raw.json"),
        generator={"num_identities": 12, "split_identities": [6, 3, 3], "seed": 3, "image_size": [16, 32]},
    ).load()
    captions, _ = build_caption_table(raw, {"format": "cuhk_pedes", "image_root": str(workdir / "raw" / "imgs")})
    tokens = tokenize_captions(captions, {"tokenizer": "offline:minilm", "max_length": 24, "cache_dir": str(workdir / "tok")})
    return captions, tokens


def shipped_search_space() -> dict[str, Any]:
    """The search space of conf/base/parameters_tune.yml, as shipped."""
    return yaml.safe_load((REPO / "conf" / "base" / "parameters_tune.yml").read_text())["tuning"]["search_space"]

