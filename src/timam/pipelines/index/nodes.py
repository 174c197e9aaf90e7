"""List a collection, embed it in shards, merge the shards, build the FAISS index (see pipeline.py).

A hashing checkpoint (the families pipeline's AgNet-style rows) embeds each image into its relaxed
code, whose signs are its K-bit hash code: the shards and the merge treat it as any embedding, and
the index holds the codes packed to K / 8 bytes in a FAISS binary index searched by Hamming distance
(:mod:`timam.index.binary_index`: exact, ties by lower row as the evaluation breaks them; an IVF at
scale), planned within the same ``index.memory_budget``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import faiss
import numpy as np
import pandas as pd
import torch

from timam.index.binary_index import build_binary_index, plan_binary_index
from timam.index.collection import list_collection
from timam.index.config import index_config
from timam.index.faiss_index import DEFAULT_FLAT_MAX, build_index, plan_index
from timam.index.merge import merge_shards
from timam.index.shards import checkpoint_folder, write_shards
from timam.index.store import ImageIndex, IndexManifest, collection_fingerprint
from timam.inference.config import embedding_config
from timam.inference.device import dtype_name, model_to, pick_device
from timam.models.attribute_family import AttributeHashingModel
from timam.models.checkpoint import Checkpoint
from timam.retrieval.hamming import pack_codes
from timam.tokenization import tokenization_config

logger = logging.getLogger(__name__)


def list_image_collection(index: Mapping[str, Any]) -> pd.DataFrame:
    """The collection's images (``path, size, mtime_ns`` and caption/identity of a table), checked
    before the checkpoint is loaded: a wrong folder or column stops the run at once."""
    config = index_config(index)
    collection = list_collection(config.collection)
    logger.info("Image collection %s: %d images", config.collection.path, len(collection))
    return collection


def embed_image_collection(
    model_checkpoint: Checkpoint, image_collection: pd.DataFrame, index: Mapping[str, Any], embedding: Mapping[str, Any]
) -> dict[str, Any]:
    """Embed this writer's shards that are missing or stale; returns what was done, for the merge
    (with ``precision``, the compute dtype the images were embedded in: the queries' too, and
    ``code_bits``, K for a hashing checkpoint, whose index holds packed codes; else None).

    Shards live in ``index.shard_dir/<checkpoint version>/`` (:mod:`timam.index.shards`); each is
    written as soon as it is finished, so a rerun after a crash resumes at the first missing one.
    They are a side folder (like the training resume state), not a catalog dataset: a catalog save
    happens only after the node returns, which is too late to survive a crash mid-node.
    """
    config, embed = index_config(index), embedding_config(embedding)
    device = pick_device(embed.device)
    run = write_shards(
        model_to(model_checkpoint.embedding_model, device),
        image_collection,
        folder=checkpoint_folder(config.shard_dir, model_checkpoint.version),
        checkpoint_version=model_checkpoint.version,
        shard_size=config.shard_size,
        writer=config.writer,
        batch_size=embed.batch_size,
        device=device,
        precision=embed.precision,
        show_progress=config.show_progress,
    )
    logger.info(
        "Index shards: %d embedded, %d reused of %d (writer %s, %.1f s), %d bad image(s) skipped",
        len(run.embedded),
        len(run.reused),
        run.shards,
        run.writer,
        run.seconds,
        run.bad_images,
    )
    model = model_checkpoint.model
    code_bits = model.config.code_bits if isinstance(model, AttributeHashingModel) else None
    return {**run.to_dict(), "precision": dtype_name(device, embed.precision), "code_bits": code_bits}


def merge_image_shards(
    image_collection: pd.DataFrame, index_shards: Mapping[str, Any]
) -> tuple[np.ndarray, pd.DataFrame, pd.DataFrame]:
    """L2-normalised vectors, the rows table aligned with them, and the bad images with their reasons.

    Every shard must be there: a missing one (a writer still running or killed) stops the run with
    the shard numbers, their writers and the commands that finish them.
    """
    writers = int(str(index_shards["writer"]).split("/")[1])
    merged = merge_shards(
        image_collection,
        index_shards["folder"],
        shard_size=int(index_shards["shard_size"]),
        checkpoint_version=index_shards["checkpoint_version"],
        precision=index_shards["precision"],
        writers=writers,
    )
    if len(merged.bad):
        counts = merged.bad["reason"].str.split(":").str[0].value_counts()
        logger.warning(
            "Left %d bad image(s) out of the index (listed in index_bad_images): %s",
            len(merged.bad),
            ", ".join(f"{reason}: {count}" for reason, count in counts.items()),
        )
    if not len(merged.rows):
        raise ValueError(
            f"None of the {len(image_collection)} images of the collection could be decoded (see the reasons in "
            "index_bad_images); check params index.collection.path"
        )
    return merged.vectors, merged.rows, merged.bad


def build_image_index(
    index_vectors: np.ndarray,
    index_rows: pd.DataFrame,
    index_shards: Mapping[str, Any],
    index: Mapping[str, Any],
    tokenization: Mapping[str, Any],
) -> ImageIndex:
    """The FAISS index of the vectors, planned from their count and ``index.memory_budget``, with its
    manifest: checkpoint version, embedding size, image count, collection fingerprint, plan, and how
    queries must be embedded (the images' precision, the tokenizer and its token length). For a
    hashing checkpoint (``index_shards["code_bits"]``) the vectors' signs are packed into a binary index."""
    config, tokens = index_config(index), tokenization_config(tokenization)
    count, dim = index_vectors.shape
    code_bits = index_shards.get("code_bits")
    faiss_index: faiss.Index | faiss.IndexBinary
    if code_bits is not None:
        plan = plan_binary_index(
            count, int(code_bits), memory_budget_bytes=config.budget_bytes, flat_max=config.flat_max
        )
        codes = pack_codes(torch.from_numpy(index_vectors)).numpy()
        faiss_index = build_binary_index(codes, plan, bits=int(code_bits), seed=config.seed)
    else:
        plan = plan_index(
            count,
            dim,
            memory_budget_bytes=config.budget_bytes,
            flat_max=DEFAULT_FLAT_MAX if config.flat_max is None else int(config.flat_max),
        )
        faiss_index = build_index(index_vectors, plan, seed=config.seed, show_progress=config.show_progress)
    logger.info(
        "Index plan for %d x %d %s: %s (about %.1f MiB)",
        count,
        dim,
        "bits" if code_bits is not None else "vectors",
        plan.factory,
        plan.estimated_bytes / 2**20,
    )
    manifest = IndexManifest(
        checkpoint_version=index_shards["checkpoint_version"],
        checkpoint_path=None,  # the catalog's ImageIndexDataset names the file of that version
        embedding_dim=int(dim),
        image_count=int(count),
        collection_fingerprint=collection_fingerprint(index_rows),
        plan=plan,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        precision=index_shards["precision"],
        tokenizer=tokens.tokenizer,
        max_length=tokens.max_length,
        code_bits=None if code_bits is None else int(code_bits),
    )
    return ImageIndex(index=faiss_index, manifest=manifest, rows=index_rows)
