"""Rank the test gallery for a free-text query, or the test captions for an image file."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from matplotlib.figure import Figure

from timam.formats.tensor_bundle import TensorBundle
from timam.models.checkpoint import Checkpoint
from timam.retrieval.plots import ImageQueryExample, RankedCaption, RankedImage, TextQueryExample, image_query_figure, text_query_figure
from timam.retrieval.ranking import topk_indices
from timam.tokenization import load_tokenizer
from timam.inference.device import model_to, pick_device
from timam.inference.embedding import image_outputs, text_outputs

logger = logging.getLogger(__name__)

USAGE = (
    'kedro run --pipelines search --params "query=a woman in a red coat"  (text -> images), or '
    'kedro run --pipelines search --params "query_image=path/to.jpg"  (image -> captions)'
)


def _given(value: Any) -> str | None:
    """A parameter as a stripped string, or None when unset/empty (``--params`` may parse numbers)."""
    if value is None:
        return None
    text = str(value).strip()
    return text or None


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


def _embed_text(model_checkpoint: Checkpoint, query: str, tokenization: dict[str, Any], device: torch.device) -> torch.Tensor:
    config = model_checkpoint.model.config
    tokenizer_name = tokenization["tokenizer"]
    if config.text_encoder == "transformer" and tokenizer_name != config.text_model:
        raise ValueError(
            f"params tokenization.tokenizer is {tokenizer_name!r} but checkpoint {model_checkpoint.version} has text "
            f"model {config.text_model!r}; set the tokenizer the checkpoint was trained with"
        )
    tokens = load_tokenizer(tokenizer_name)(
        [query], padding="max_length", truncation=True, max_length=int(tokenization["max_length"]), return_tensors="pt"
    )
    if config.text_encoder == "fc_embed" and int(tokens["input_ids"].max()) >= config.vocab_size:
        raise ValueError(f"tokenizer {tokenizer_name!r} gives ids beyond the checkpoint's vocabulary ({config.vocab_size})")
    return text_outputs(
        model_to(model_checkpoint.model, device), tokens["input_ids"].to(torch.int32), tokens["attention_mask"].to(torch.int8),
        project=True, batch_size=1, device=device, desc="embedding the query",
    )


def search_request(query: Any, query_image: Any, top_k: Any) -> dict[str, Any]:
    """Check the parameters before anything heavy is loaded: exactly one query, an existing image, top_k >= 1."""
    query, query_image = _given(query), _given(query_image)
    if (query is None) == (query_image is None):
        given = "both query and query_image were given" if query else "neither query nor query_image was given"
        raise ValueError(f"search needs exactly one of them, {given}. Use: {USAGE}")
    try:
        k = int(str(top_k).strip())
    except ValueError:
        k = 0
    if k < 1:
        raise ValueError(f"params top_k must be a positive integer, got {top_k!r}")
    if query_image is not None and not Path(query_image).is_file():
        raise FileNotFoundError(
            f"query_image {query_image!r} does not exist (relative paths start at the project folder {Path.cwd()})"
        )
    return {"query": query, "query_image": query_image, "top_k": k}


def search(
    model_checkpoint: Checkpoint,
    image_embeddings: TensorBundle,
    text_embeddings: TensorBundle,
    request: dict[str, Any],
    tokenization: dict[str, Any],
    evaluation: dict[str, Any],
) -> tuple[pd.DataFrame, Figure]:
    """Top ``top_k`` gallery images for a text ``query``, or top captions for the image at ``query_image``.

    ``request`` comes from :func:`search_request`. Scores are the cosine similarities the
    evaluation ranks by; ties are broken by gallery index. Returns the table (rank, path or
    caption, score) and a figure.
    """
    query, query_image, top_k = request["query"], request["query_image"], request["top_k"]
    check_same_checkpoint(model_checkpoint, ("image_embeddings", image_embeddings), ("text_embeddings", text_embeddings))
    device = pick_device(evaluation.get("device", "auto"))
    title = f"checkpoint {model_checkpoint.version}, {image_embeddings.metadata.get('split')} split"

    if query is not None:
        paths = image_embeddings.metadata.get("image_paths")
        if paths is None:
            raise ValueError("image_embeddings have no image paths (older timam); re-run `kedro run --pipelines evaluate`")
        gallery = image_embeddings.tensors["embeddings"]
        k = min(top_k, len(gallery))
        scores, found = topk_indices(_embed_text(model_checkpoint, query, tokenization, device).cpu(), gallery, k)
        ids = image_embeddings.metadata.get("image_ids") or [None] * len(paths)
        table = pd.DataFrame({
            "rank": range(1, k + 1),
            "path": [paths[int(j)] for j in found[0]],
            "image_id": [ids[int(j)] for j in found[0]],
            "score": scores[0].tolist(),
        })
        example = TextQueryExample(caption=f"\u201c{query}\u201d",
                                   results=[RankedImage(p, s) for p, s in zip(table["path"], table["score"], strict=True)])
        figure = text_query_figure([example], title=f"Top {k} images -- {title}", columns=min(k, 5))
    else:
        captions = text_embeddings.metadata.get("captions")
        if captions is None:
            raise ValueError("text_embeddings have no caption texts (older timam); re-run `kedro run --pipelines evaluate`")
        gallery = text_embeddings.tensors["embeddings"]
        k = min(top_k, len(gallery))
        embedded = image_outputs(model_to(model_checkpoint.model, device), [query_image], project=True, batch_size=1,
                                 device=device, desc="embedding the query image")
        scores, found = topk_indices(embedded, gallery, k)
        caption_ids = text_embeddings.metadata.get("caption_ids") or [None] * len(captions)
        image_paths = image_embeddings.metadata.get("image_paths")
        image_index = text_embeddings.tensors["image_index"]
        table = pd.DataFrame({
            "rank": range(1, k + 1),
            "caption": [captions[int(j)] for j in found[0]],
            "caption_id": [caption_ids[int(j)] for j in found[0]],
            "image_path": [image_paths[int(image_index[j])] if image_paths else None for j in found[0]],
            "score": scores[0].tolist(),
        })
        example = ImageQueryExample(path=query_image,
                                    results=[RankedCaption(c, s) for c, s in zip(table["caption"], table["score"], strict=True)])
        figure = image_query_figure([example], title=f"Top {k} captions -- {title}", caption_lines=3)
    shown = table.drop(columns=[c for c in ("image_id", "caption_id", "image_path") if c in table])
    logger.info("Search results:\n%s", shown.to_string(index=False, max_colwidth=100))
    return table, figure
