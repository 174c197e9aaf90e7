"""Rank the newest image index, or the test split, for a text query, an image file or a file of queries.

:func:`search_request` checks ``params:search`` (:class:`~timam.evaluation.config.SearchConfig`)
before anything heavy is loaded. :func:`search` searches ``search_index`` (the newest index of
``kedro run --pipelines index``; None when there is none) through :class:`timam.search.Searcher`
(:func:`index_search`), and otherwise the test split ``evaluate`` embedded: :func:`images_for_text`
or :func:`captions_for_image`, one function per direction.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from matplotlib.figure import Figure

from timam.evaluation.config import evaluation_config
from timam.figures.ranking import (
    ImageQueryExample,
    RankedCaption,
    RankedImage,
    TextQueryExample,
    image_query_figure,
    text_query_figure,
)
from timam.formats.tensor_bundle import TensorBundle
from timam.index.store import ImageIndex
from timam.inference.device import model_to, pick_device
from timam.inference.embedding import image_outputs, text_outputs
from timam.models.checkpoint import Checkpoint
from timam.retrieval.ranking import topk_indices
from timam.search import Hit, Searcher, hits_table
from timam.search.config import SearchConfig, search_config
from timam.search.queries import read_queries
from timam.sources.image_checks import inspect_image
from timam.tokenization import TokenizationConfig, load_tokenizer, tokenization_config
from timam.training.model_setup import check_tokenizer

logger = logging.getLogger(__name__)

USAGE = (
    'kedro run --pipelines search --params "search.query=a woman in a red coat"  (text -> images), '
    'kedro run --pipelines search --params "search.query_image=path/to.jpg"  (image -> images of the index, or the '
    "test captions without one), or "
    'kedro run --pipelines search --params "search.queries_file=queries.txt"  (one query per line -> one table)'
)
FIGURE_QUERIES = 6  # a queries file draws its first six queries


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
    """Check ``params:search`` before anything heavy is loaded: exactly one query, readable files, top_k >= 1."""
    config = search_config(search)
    given = [name for name in ("query", "query_image", "queries_file") if getattr(config, name) is not None]
    if len(given) != 1:
        found = {
            0: "neither search.query nor search.query_image nor search.queries_file was given",
            2: f"both {' and '.join('search.' + name for name in given)} were given",
            3: "search.query, search.query_image and search.queries_file were all given",
        }[len(given)]
        raise ValueError(f"search needs exactly one query, but {found}. Use: {USAGE}")
    if config.query_image is not None:
        check_image_file(config.query_image)
    if config.queries_file is not None:
        read_queries(config.queries_file)
    return config


def _embed_texts(
    model_checkpoint: Checkpoint, queries: list[str], tokenization: TokenizationConfig, device: torch.device
) -> torch.Tensor:
    config = model_checkpoint.embedding_model.config
    check_tokenizer(
        config,
        tokenization.tokenizer,
        tokens="params tokenization.tokenizer is",
        model=f"checkpoint {model_checkpoint.version} has text model",
        fix="set the tokenizer the checkpoint was trained with",
    )
    tokens = load_tokenizer(tokenization.tokenizer)(
        queries, padding="max_length", truncation=True, max_length=tokenization.max_length, return_tensors="pt"
    )
    if config.text_encoder == "fc_embed" and int(tokens["input_ids"].max()) >= config.vocab_size:
        raise ValueError(
            f"tokenizer {tokenization.tokenizer!r} gives ids beyond the checkpoint's vocabulary ({config.vocab_size})"
        )
    return text_outputs(
        model_to(model_checkpoint.embedding_model, device),
        tokens["input_ids"].to(torch.int32),
        tokens["attention_mask"].to(torch.int8),
        project=True,
        batch_size=64,
        device=device,
        desc="embedding the queries",
        show_progress=len(queries) > 64,
    )


def images_for_text(
    model_checkpoint: Checkpoint,
    image_embeddings: TensorBundle,
    query: str | list[str],
    top_k: int,
    tokenization: TokenizationConfig,
    device: torch.device,
    title: str,
) -> tuple[pd.DataFrame, Figure]:
    """The ``top_k`` gallery images for a text query: table (rank, path, image_id, score) and figure.

    A list of queries gives one table with a leading ``query`` column, queries in the given order.
    """
    paths = image_embeddings.metadata.get("image_paths")
    if paths is None:
        raise ValueError("image_embeddings have no image paths (older timam); re-run `kedro run --pipelines evaluate`")
    queries = [query] if isinstance(query, str) else list(query)
    gallery = image_embeddings.tensors["embeddings"]
    k = min(top_k, len(gallery))
    scores, found = topk_indices(_embed_texts(model_checkpoint, queries, tokenization, device).cpu(), gallery, k)
    ids = image_embeddings.metadata.get("image_ids") or [None] * len(paths)
    tables = []
    for text, query_scores, query_found in zip(queries, scores, found, strict=True):
        table = pd.DataFrame(
            {
                "rank": range(1, k + 1),
                "path": [paths[int(j)] for j in query_found],
                "image_id": [ids[int(j)] for j in query_found],
                "score": query_scores.tolist(),
            }
        )
        tables.append(table if isinstance(query, str) else table.assign(query=text)[["query", *table.columns]])
    examples = [
        TextQueryExample(
            caption=f"\u201c{text}\u201d",
            results=[RankedImage(p, s) for p, s in zip(table["path"], table["score"], strict=True)],
        )
        for text, table in list(dict(zip(queries, tables, strict=True)).items())[:FIGURE_QUERIES]
    ]
    figure = text_query_figure(examples, title=f"Top {k} images -- {title}", columns=min(k, 5))
    return pd.concat(tables, ignore_index=True), figure


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
        model_to(model_checkpoint.embedding_model, device),
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


def _hit_examples(queries: list[str], hits: list[list[Hit]], target: str | None = None) -> list[TextQueryExample]:
    return [
        TextQueryExample(caption=text, results=[RankedImage(hit.path, hit.score) for hit in found], target_path=target)
        for text, found in list(zip(queries, hits, strict=True))[:FIGURE_QUERIES]
    ]


def index_search(searcher: Searcher, request: SearchConfig, title: str) -> tuple[pd.DataFrame, Figure]:
    """Search the image index: the table (``[query,] rank, row, path, score[, caption]``) and the grid figure."""
    k = min(request.top_k, searcher.size)
    if request.query_image is not None:
        hits = searcher.by_image(request.query_image, k=k)
        examples = _hit_examples([f"images like {Path(request.query_image).name}"], [hits], request.query_image)
        return hits_table(hits), text_query_figure(examples, title=f"Top {k} images -- {title}", columns=min(k, 5))
    if request.queries_file is not None:
        queries = read_queries(request.queries_file)
        table = searcher.by_texts(queries, k=k)
        shown = list(dict.fromkeys(queries))[:FIGURE_QUERIES]  # their embeddings are cached by now
        examples = _hit_examples([f"\u201c{text}\u201d" for text in shown], [searcher.by_text(t, k) for t in shown])
        figure = text_query_figure(examples, title=f"Top {k} images -- {title}", columns=min(k, 5))
        return table, figure
    assert request.query is not None  # exactly one of the three (search_request)
    hits = searcher.by_text(request.query, k=k)
    examples = _hit_examples([f"\u201c{request.query}\u201d"], [hits])
    return hits_table(hits), text_query_figure(examples, title=f"Top {k} images -- {title}", columns=min(k, 5))


def _index_searcher(
    model_checkpoint: Checkpoint, search_index: ImageIndex, tokenization: TokenizationConfig, device: str
) -> Searcher:
    name = "search_index (the newest image_index)"
    try:
        return Searcher(
            image_index=search_index,
            checkpoint=model_checkpoint,
            index_name=name,
            tokenizer=tokenization.tokenizer,
            max_length=tokenization.max_length,
            device=device,
        )
    except ValueError as error:
        raise ValueError(f"{error} Or search the test split: --params search.use_index=false.") from error


def search(
    model_checkpoint: Checkpoint,
    image_embeddings: TensorBundle,
    text_embeddings: TensorBundle,
    search_index: ImageIndex | None,
    request: SearchConfig,
    tokenization: Mapping[str, Any],
    evaluation: Mapping[str, Any],
) -> tuple[pd.DataFrame, Figure]:
    """Top ``top_k`` images for a text ``query``, an image ``query_image`` or each query of ``queries_file``.

    ``search_index`` (None when no index has been built; ignored with ``search.use_index: false``)
    is searched when there is one: images for texts and images alike, with the checkpoint that
    built it (another is refused). Otherwise the test split: images for texts, test captions for an image,
    scored by the cosine similarities the evaluation ranks by (on ``evaluation.device``); ties are
    broken by gallery index. ``request`` comes from :func:`search_request`. Returns the table and a figure.
    """
    request = search_config(request)
    tokens = tokenization_config(tokenization)
    device_name = evaluation_config(evaluation).device
    if search_index is not None and request.use_index:
        searcher = _index_searcher(model_checkpoint, search_index, tokens, device_name)
        title = f"checkpoint {model_checkpoint.version}, index of {searcher.size} images"
        table, figure = index_search(searcher, request, title)
    else:
        table, figure = _test_split_search(
            model_checkpoint, image_embeddings, text_embeddings, request, tokens, device_name
        )
    shown = table.drop(columns=[c for c in ("image_id", "caption_id", "image_path") if c in table])
    logger.info("Search results:\n%s", shown.to_string(index=False, max_colwidth=100))
    return table, figure


def _test_split_search(
    model_checkpoint: Checkpoint,
    image_embeddings: TensorBundle,
    text_embeddings: TensorBundle,
    request: SearchConfig,
    tokenization: TokenizationConfig,
    device_name: str,
) -> tuple[pd.DataFrame, Figure]:
    check_same_checkpoint(
        model_checkpoint, ("image_embeddings", image_embeddings), ("text_embeddings", text_embeddings)
    )
    device = pick_device(device_name)
    title = f"checkpoint {model_checkpoint.version}, {image_embeddings.metadata.get('split')} split"
    if request.query_image is not None:
        return captions_for_image(
            model_checkpoint, image_embeddings, text_embeddings, request.query_image, request.top_k, device, title
        )
    query: str | list[str] = read_queries(request.queries_file) if request.queries_file else str(request.query)
    return images_for_text(model_checkpoint, image_embeddings, query, request.top_k, tokenization, device, title)
