"""Rank the test gallery for a free-text query, or the test captions for an image file.

:func:`search_request` checks ``params:search`` (:class:`~timam.retrieval.config.SearchConfig`)
before anything heavy is loaded; :func:`search` embeds the query with the checkpoint and hands it to
:func:`images_for_text` or :func:`captions_for_image`, one function per direction.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from matplotlib.figure import Figure

from timam.formats.tensor_bundle import TensorBundle
from timam.inference.device import model_to, pick_device
from timam.inference.embedding import image_outputs, text_outputs
from timam.models.checkpoint import Checkpoint
from timam.retrieval.config import SearchConfig, evaluation_config, search_config
from timam.retrieval.plots import (
    ImageQueryExample,
    RankedCaption,
    RankedImage,
    TextQueryExample,
    image_query_figure,
    text_query_figure,
)
from timam.retrieval.ranking import topk_indices
from timam.sources.config import TokenizationConfig, tokenization_config
from timam.sources.image_checks import inspect_image
from timam.tokenization import load_tokenizer
from timam.training.model_setup import check_tokenizer

logger = logging.getLogger(__name__)

USAGE = (
    'kedro run --pipelines search --params "search.query=a woman in a red coat"  (text -> images), or '
    'kedro run --pipelines search --params "search.query_image=path/to.jpg"  (image -> captions)'
)


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


def check_image_file(path: str, name: str = "search.query_image") -> None:
    """Stop with the file and what is wrong with it unless ``path`` is an image Pillow can decode.

    Checked at the node boundary, so a bad file never reaches a DataLoader worker.
    """
    reason = inspect_image(path)
    if reason is None:
        return
    where = f"params {name} {path!r}"
    if reason == "missing":
        raise FileNotFoundError(f"{where} does not exist (relative paths start at the project folder {Path.cwd()})")
    if reason == "not a file":
        raise IsADirectoryError(f"{where} is a folder, not an image file; give the path of one image")
    if reason == "zero-byte":
        raise ValueError(f"{where} is an empty file (0 bytes), not an image")
    detail = reason.removeprefix("unreadable/corrupt: ")
    raise ValueError(
        f"{where} is not an image Pillow can read ({detail}); give a JPEG, PNG or another image file Pillow opens"
    )


def search_request(search: Mapping[str, Any]) -> SearchConfig:
    """Check ``params:search`` before anything heavy is loaded: exactly one query, a readable image, top_k >= 1."""
    config = search_config(search)
    if (config.query is None) == (config.query_image is None):
        given = (
            "both search.query and search.query_image were given"
            if config.query
            else "neither search.query nor search.query_image was given"
        )
        raise ValueError(f"search needs exactly one of them, {given}. Use: {USAGE}")
    if config.query_image is not None:
        check_image_file(config.query_image)
    return config


def _embed_text(
    model_checkpoint: Checkpoint, query: str, tokenization: TokenizationConfig, device: torch.device
) -> torch.Tensor:
    config = model_checkpoint.model.config
    check_tokenizer(
        config,
        tokenization.tokenizer,
        tokens="params tokenization.tokenizer is",
        model=f"checkpoint {model_checkpoint.version} has text model",
        fix="set the tokenizer the checkpoint was trained with",
    )
    tokens = load_tokenizer(tokenization.tokenizer)(
        [query], padding="max_length", truncation=True, max_length=tokenization.max_length, return_tensors="pt"
    )
    if config.text_encoder == "fc_embed" and int(tokens["input_ids"].max()) >= config.vocab_size:
        raise ValueError(
            f"tokenizer {tokenization.tokenizer!r} gives ids beyond the checkpoint's vocabulary ({config.vocab_size})"
        )
    return text_outputs(
        model_to(model_checkpoint.model, device),
        tokens["input_ids"].to(torch.int32),
        tokens["attention_mask"].to(torch.int8),
        project=True,
        batch_size=1,
        device=device,
        desc="embedding the query",
    )


def images_for_text(
    model_checkpoint: Checkpoint,
    image_embeddings: TensorBundle,
    query: str,
    top_k: int,
    tokenization: TokenizationConfig,
    device: torch.device,
    title: str,
) -> tuple[pd.DataFrame, Figure]:
    """The ``top_k`` gallery images for a text query: table (rank, path, image_id, score) and figure."""
    paths = image_embeddings.metadata.get("image_paths")
    if paths is None:
        raise ValueError("image_embeddings have no image paths (older timam); re-run `kedro run --pipelines evaluate`")
    gallery = image_embeddings.tensors["embeddings"]
    k = min(top_k, len(gallery))
    scores, found = topk_indices(_embed_text(model_checkpoint, query, tokenization, device).cpu(), gallery, k)
    ids = image_embeddings.metadata.get("image_ids") or [None] * len(paths)
    table = pd.DataFrame(
        {
            "rank": range(1, k + 1),
            "path": [paths[int(j)] for j in found[0]],
            "image_id": [ids[int(j)] for j in found[0]],
            "score": scores[0].tolist(),
        }
    )
    example = TextQueryExample(
        caption=f"\u201c{query}\u201d",
        results=[RankedImage(p, s) for p, s in zip(table["path"], table["score"], strict=True)],
    )
    return table, text_query_figure([example], title=f"Top {k} images -- {title}", columns=min(k, 5))


def captions_for_image(
    model_checkpoint: Checkpoint,
    image_embeddings: TensorBundle,
    text_embeddings: TensorBundle,
    query_image: str,
    top_k: int,
    device: torch.device,
    title: str,
) -> tuple[pd.DataFrame, Figure]:
    """The ``top_k`` test captions for an image file: table (rank, caption, caption_id, image_path,
    score; image_path is the captioned image) and figure."""
    captions = text_embeddings.metadata.get("captions")
    if captions is None:
        raise ValueError("text_embeddings have no caption texts (older timam); re-run `kedro run --pipelines evaluate`")
    gallery = text_embeddings.tensors["embeddings"]
    k = min(top_k, len(gallery))
    embedded = image_outputs(
        model_to(model_checkpoint.model, device),
        [query_image],
        project=True,
        batch_size=1,
        device=device,
        desc="embedding the query image",
    )
    scores, found = topk_indices(embedded, gallery, k)
    caption_ids = text_embeddings.metadata.get("caption_ids") or [None] * len(captions)
    image_paths = image_embeddings.metadata.get("image_paths")
    image_index = text_embeddings.tensors["image_index"]
    table = pd.DataFrame(
        {
            "rank": range(1, k + 1),
            "caption": [captions[int(j)] for j in found[0]],
            "caption_id": [caption_ids[int(j)] for j in found[0]],
            "image_path": [image_paths[int(image_index[j])] if image_paths else None for j in found[0]],
            "score": scores[0].tolist(),
        }
    )
    example = ImageQueryExample(
        path=query_image, results=[RankedCaption(c, s) for c, s in zip(table["caption"], table["score"], strict=True)]
    )
    return table, image_query_figure([example], title=f"Top {k} captions -- {title}", caption_lines=3)


def search(
    model_checkpoint: Checkpoint,
    image_embeddings: TensorBundle,
    text_embeddings: TensorBundle,
    request: SearchConfig,
    tokenization: Mapping[str, Any],
    evaluation: Mapping[str, Any],
) -> tuple[pd.DataFrame, Figure]:
    """Top ``top_k`` gallery images for a text ``query``, or top captions for the image at ``query_image``.

    ``request`` comes from :func:`search_request`. Scores are the cosine similarities the
    evaluation ranks by (on ``evaluation.device``); ties are broken by gallery index. Returns the
    table and a figure.
    """
    request = search_config(request)
    check_same_checkpoint(
        model_checkpoint, ("image_embeddings", image_embeddings), ("text_embeddings", text_embeddings)
    )
    device = pick_device(evaluation_config(evaluation).device)
    title = f"checkpoint {model_checkpoint.version}, {image_embeddings.metadata.get('split')} split"
    if request.query is not None:
        table, figure = images_for_text(
            model_checkpoint,
            image_embeddings,
            request.query,
            request.top_k,
            tokenization_config(tokenization),
            device,
            title,
        )
    else:
        assert request.query_image is not None  # exactly one of query and query_image (checked above)
        table, figure = captions_for_image(
            model_checkpoint, image_embeddings, text_embeddings, request.query_image, request.top_k, device, title
        )
    shown = table.drop(columns=[c for c in ("image_id", "caption_id", "image_path") if c in table])
    logger.info("Search results:\n%s", shown.to_string(index=False, max_colwidth=100))
    return table, figure
