"""A tiny generated demo (12 identities, resnet18 random at 32x16, fc_embed text) for tuning tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]

MODEL = {
    "image_backbone": "resnet18",
    "image_library": "torchvision",
    "image_weights": None,
    "image_size": [32, 16],
    "text_encoder": "fc_embed",
    "word_embedding_dim": 16,
    "lstm_hidden": 16,
    "embedding_dim": 16,
}
TRAINING = {"epochs": 2, "batch_size": 8, "embed_batch_size": 8, "device": "cpu"}


def shipped_search_space() -> dict[str, Any]:
    """The search space of conf/base/parameters_tune.yml, as shipped."""
    return yaml.safe_load((REPO / "conf" / "base" / "parameters_tune.yml").read_text())["tuning"]["search_space"]
