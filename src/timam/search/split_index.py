"""The split the evaluation embedded, as an in-memory image index: the search pipeline's fallback
when no index has been built, searched through the same :class:`~timam.search.Searcher` as any index.

The gallery is the split's unique images (exact flat search, the evaluation's own cosine scores and
tie order); an image query ranks the split's captions, with the embeddings the evaluation saved.
"""

from __future__ import annotations

from datetime import UTC, datetime

import faiss
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from timam.formats.tensor_bundle import TensorBundle
from timam.index.binary_index import build_binary_index, flat_plan
from timam.index.faiss_index import build_index, plan_index
from timam.index.store import ImageIndex, IndexManifest, collection_fingerprint
from timam.models.attribute_family import AttributeHashingModel
from timam.models.checkpoint import Checkpoint
from timam.retrieval.hamming import pack_codes
from timam.search.searcher import CaptionGallery, Searcher


def check_same_checkpoint(model_checkpoint: Checkpoint, *bundles: tuple[str, TensorBundle]) -> None:
    """Embeddings must come from the checkpoint that embeds the query, or the scores mean nothing."""
    for name, bundle in bundles:
        made_with = bundle.metadata.get("checkpoint_version")
        if made_with != model_checkpoint.version:
            raise ValueError(
                f"{name} (version {bundle.metadata.get('version')}) were made with checkpoint {made_with}, but the "
                f"loaded model_checkpoint is {model_checkpoint.version}. Re-run the evaluation with this checkpoint "
                f"(`kedro run --pipelines evaluate --load-versions model_checkpoint:{model_checkpoint.version}`), "
                f"or search with the checkpoint of the embeddings (`--load-versions model_checkpoint:{made_with}`)."
            )


def _required(bundle: TensorBundle, name: str, key: str) -> list:
    value = bundle.metadata.get(key)
    if value is None:
        raise ValueError(f"{name} have no {key} (older timam); re-run `kedro run --pipelines evaluate`")
    return list(value)


def split_index(image_embeddings: TensorBundle, code_bits: int | None = None) -> ImageIndex:
    """The split's unique images as an exact (flat) index over their unit embeddings, or with
    ``code_bits`` (a hashing checkpoint's) over their packed sign codes."""
    paths = _required(image_embeddings, "image_embeddings", "image_paths")
    vectors = np.ascontiguousarray(F.normalize(image_embeddings.tensors["embeddings"].float(), dim=1).numpy())
    count, dim = vectors.shape
    faiss_index: faiss.Index | faiss.IndexBinary
    if code_bits is not None:
        plan = flat_plan(count, code_bits)
        faiss_index = build_binary_index(pack_codes(torch.from_numpy(vectors)).numpy(), plan, bits=code_bits)
    else:
        plan = plan_index(count, dim, memory_budget_bytes=max(1, vectors.nbytes) * 4, flat_max=max(count, 1))
        faiss_index = build_index(vectors, plan, show_progress=False)
    rows = pd.DataFrame(
        {"path": paths, "size": np.zeros(count, dtype=np.int64), "mtime_ns": np.zeros(count, dtype=np.int64)}
    )
    manifest = IndexManifest(
        checkpoint_version=image_embeddings.metadata.get("checkpoint_version"),
        checkpoint_path=None,
        embedding_dim=int(dim),
        image_count=int(count),
        collection_fingerprint=collection_fingerprint(rows),
        plan=plan,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        precision=image_embeddings.metadata.get("precision"),
        tokenizer=image_embeddings.metadata.get("tokenizer"),
        max_length=image_embeddings.metadata.get("max_length"),
        code_bits=code_bits,
    )
    return ImageIndex(index=faiss_index, manifest=manifest, rows=rows)


def split_searcher(
    model_checkpoint: Checkpoint,
    image_embeddings: TensorBundle,
    text_embeddings: TensorBundle,
    *,
    device: str,
    tokenizer: str | None = None,
    max_length: int | None = None,
) -> Searcher:
    """A searcher over the split ``evaluate`` embedded: texts rank its images, an image its captions.

    ``tokenizer`` and ``max_length`` stand in for embeddings saved before they recorded their own.
    """
    check_same_checkpoint(
        model_checkpoint, ("image_embeddings", image_embeddings), ("text_embeddings", text_embeddings)
    )
    captions = CaptionGallery(
        texts=[str(text) for text in _required(text_embeddings, "text_embeddings", "captions")],
        rows=text_embeddings.tensors["image_index"].numpy().astype(np.int64),
        vectors=F.normalize(text_embeddings.tensors["embeddings"].float(), dim=1),
    )
    model = model_checkpoint.model
    code_bits = model.config.code_bits if isinstance(model, AttributeHashingModel) else None
    return Searcher(
        image_index=split_index(image_embeddings, code_bits),
        checkpoint=model_checkpoint,
        device=device,
        index_name=f"the {image_embeddings.metadata.get('split')} split",
        tokenizer=tokenizer,
        max_length=max_length,
        captions=captions,
    )
