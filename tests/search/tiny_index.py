"""A tiny real image index for the search and serve tests: a few noise PNGs, a random model, a flat index.

Everything is in the real formats on disk: a Kedro-versioned safetensors checkpoint, and the index
in the catalog's layout ``image_index/<version>/image_index/`` as ``save_image_index`` writes it.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from kedro.io.core import Version
from PIL import Image

from tests.tiny_model import random_tiny_model
from timam.index.embedding import embed_files
from timam.index.faiss_index import build_index, plan_index
from timam.index.store import ImageIndex, IndexManifest, collection_fingerprint, save_image_index
from timam.inference.device import model_to
from timam.io.checkpoint_dataset import ModelCheckpointDataset
from timam.models.checkpoint import Checkpoint

CHECKPOINT_VERSION = "2026-01-01T00.00.00.000Z"
INDEX_VERSION = "2026-01-02T00.00.00.000Z"
CAPTIONS = ["a red square", "a green field", "a blue sky", "a yellow boat", "a grey road", "a white wall"]
CPU = torch.device("cpu")


@dataclass(frozen=True)
class TinyIndex:
    images: list[str]  # the indexed files, row order
    checkpoint: Path  # the checkpoint file
    root: Path  # the index dataset root (image_index/), holding one version
    folder: Path  # that version's index folder (manifest.json ...)


def noise_images(folder: Path, count: int) -> list[str]:
    """``count`` distinct PNGs (lossless, so a file searched for itself embeds identically)."""
    folder.mkdir(parents=True, exist_ok=True)
    generator = np.random.default_rng(0)
    paths = []
    for i in range(count):
        path = folder / f"img{i}.png"
        Image.fromarray(generator.integers(0, 256, (32, 16, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    return paths


def build_tiny_index(base: Path, *, count: int = 6, captions: bool = True) -> TinyIndex:
    images = noise_images(base / "photos", count)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*RANDOM weights.*")
        model = model_to(random_tiny_model(image_size=(32, 16), vocab_size=30522), CPU)  # MiniLM's vocabulary
    checkpoint_root = base / "model_checkpoint.safetensors"
    ModelCheckpointDataset(filepath=str(checkpoint_root), version=Version(None, CHECKPOINT_VERSION)).save(
        Checkpoint(model=model, metadata={})
    )
    embedded = embed_files(model, images, batch_size=16, device=CPU, precision="auto", show_progress=False)
    assert embedded.good == list(range(count)), embedded.bad
    vectors = F.normalize(embedded.embeddings, dim=1).numpy().astype(np.float32)
    stats = [Path(path).stat() for path in images]
    rows = pd.DataFrame(
        {
            "path": images,
            "size": np.array([s.st_size for s in stats], dtype=np.int64),
            "mtime_ns": np.array([s.st_mtime_ns for s in stats], dtype=np.int64),
        }
    )
    if captions:
        rows["caption"] = [CAPTIONS[i % len(CAPTIONS)] for i in range(count)]
    plan = plan_index(count, vectors.shape[1], memory_budget_bytes=1 << 30)
    manifest = IndexManifest(
        checkpoint_version=CHECKPOINT_VERSION,
        checkpoint_path=str(checkpoint_root / CHECKPOINT_VERSION / checkpoint_root.name),
        embedding_dim=vectors.shape[1],
        image_count=count,
        collection_fingerprint=collection_fingerprint(rows),
        plan=plan,
        created_at=datetime.now(UTC).isoformat(),
    )
    root = base / "image_index"
    folder = root / INDEX_VERSION / "image_index"
    index = build_index(vectors, plan, show_progress=False)
    save_image_index(folder, ImageIndex(index=index, manifest=manifest, rows=rows))
    return TinyIndex(
        images=images, checkpoint=checkpoint_root / CHECKPOINT_VERSION / checkpoint_root.name, root=root, folder=folder
    )
