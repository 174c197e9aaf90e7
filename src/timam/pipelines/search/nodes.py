"""Rank the newest image index, or the test split, for a text query, an image file or a file of queries.

:func:`search_request` checks ``params:search`` (:class:`~timam.search.config.SearchConfig`)
before anything heavy is loaded. :func:`search` searches ``search_index`` (the newest index of
``kedro run --pipelines index``; None when there is none), and otherwise the test split
``evaluate`` embedded, wrapped as an in-memory index: both through one :class:`timam.search.Searcher`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

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
from timam.inference.config import embedding_config
from timam.models.checkpoint import Checkpoint
from timam.search import Hit, Searcher, hits_table
from timam.search.config import SearchConfig, search_config
from timam.search.queries import read_queries
from timam.search.split_index import split_searcher
from timam.sources.image_checks import inspect_image
from timam.tokenization import TokenizationConfig, tokenization_config

logger = logging.getLogger(__name__)

USAGE = (
    'kedro run --pipelines search --params "search.query=a woman in a red coat"  (text -> images), '
    'kedro run --pipelines search --params "search.query_image=path/to.jpg"  (image -> images of the index, or the '
    "test captions without one), or "
    'kedro run --pipelines search --params "search.queries_file=queries.txt"  (one query per line -> one table)'
)
FIGURE_QUERIES = 6  # a queries file draws its first six queries


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


def _hit_examples(queries: list[str], hits: list[list[Hit]], target: str | None = None) -> list[TextQueryExample]:
    return [
        TextQueryExample(caption=text, results=[RankedImage(hit.path, hit.score) for hit in found], target_path=target)
        for text, found in list(zip(queries, hits, strict=True))[:FIGURE_QUERIES]
    ]


def _image_examples(hits: list[Hit], query_image: str) -> list[ImageQueryExample]:
    return [ImageQueryExample(path=query_image, results=[RankedCaption(str(hit.caption), hit.score) for hit in hits])]


def run_search(
    searcher: Searcher, request: SearchConfig, title: str, *, image_ranks: str
) -> tuple[pd.DataFrame, Figure]:
    """One request through ``searcher``: the hits table (``[query,] rank, row, path, score[, caption]``) and
    its figure. An image query ranks the searcher's images, or its captions with ``image_ranks="captions"``."""
    k = request.top_k
    if request.query_image is not None:
        if image_ranks == "captions":
            hits = searcher.captions_for_image(request.query_image, k=k)
            figure = image_query_figure(_image_examples(hits, request.query_image), title=f"Top captions -- {title}")
            return hits_table(hits), figure
        found = searcher.by_image(request.query_image, k=k)
        examples = _hit_examples([f"images like {Path(request.query_image).name}"], [found], request.query_image)
        figure = text_query_figure(examples, title=f"Top images -- {title}", columns=max(1, min(len(found), 5)))
        return hits_table(found), figure
    if request.queries_file is None:  # one query: no query column
        queries = [str(request.query)]
        results = [searcher.by_text(queries[0], k)]
        table = hits_table(results[0])
    else:
        queries = read_queries(request.queries_file)
        table = searcher.by_texts(queries, k=k)
        results = [searcher.by_text(text, k) for text in list(dict.fromkeys(queries))[:FIGURE_QUERIES]]
    shown = list(dict.fromkeys(queries))[:FIGURE_QUERIES]  # their embeddings are cached by now
    examples = _hit_examples([f"\u201c{text}\u201d" for text in shown], results)
    figure = text_query_figure(examples, title=f"Top images -- {title}", columns=max(1, min(len(results[0]), 5)))
    return table, figure


def search(
    model_checkpoint: Checkpoint,
    image_embeddings: TensorBundle,
    text_embeddings: TensorBundle,
    search_index: ImageIndex | None,
    request: SearchConfig,
    tokenization: Mapping[str, Any],
    embedding: Mapping[str, Any],
) -> tuple[pd.DataFrame, Figure]:
    """Top ``top_k`` results for a text ``query``, an image ``query_image`` or each query of ``queries_file``.

    ``search_index`` (None when no index has been built; ignored with ``search.use_index: false``)
    is searched when there is one: images for texts and images alike, with the checkpoint that
    built it (another is refused). Otherwise the test split ``evaluate`` embedded, wrapped as an
    in-memory index (:func:`~timam.search.split_index.split_searcher`): images for texts, its
    captions for an image. Queries run on ``embedding.device`` and are embedded as the index (or
    the split) records. ``request`` comes from :func:`search_request`. Returns the table and a figure.
    """
    request = search_config(request)
    tokens, device = tokenization_config(tokenization), embedding_config(embedding).device
    if search_index is not None and request.use_index:
        searcher = _index_searcher(model_checkpoint, search_index, tokens, device)
        title = f"checkpoint {model_checkpoint.version}, index of {searcher.size} images"
        table, figure = run_search(searcher, request, title, image_ranks="images")
    else:
        searcher = split_searcher(
            model_checkpoint,
            image_embeddings,
            text_embeddings,
            device=device,
            tokenizer=tokens.tokenizer,
            max_length=tokens.max_length,
        )
        title = f"checkpoint {model_checkpoint.version}, {image_embeddings.metadata.get('split')} split"
        table, figure = run_search(searcher, request, title, image_ranks="captions")
    logger.info("Search results:\n%s", table.to_string(index=False, max_colwidth=100))
    return table, figure


def _index_searcher(
    model_checkpoint: Checkpoint, search_index: ImageIndex, tokenization: TokenizationConfig, device: str
) -> Searcher:
    name = "search_index (the newest image_index)"
    try:
        return Searcher(
            image_index=search_index,
            checkpoint=model_checkpoint,
            device=device,
            index_name=name,
            tokenizer=tokenization.tokenizer,
            max_length=tokenization.max_length,
        )
    except ValueError as error:
        raise ValueError(f"{error} Or search the test split: --params search.use_index=false.") from error
