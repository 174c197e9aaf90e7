"""Nodes that turn a raw dataset into the canonical caption table and its cached token ids."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

from timam.formats.tensor_bundle import TensorBundle
from timam.sources.caption_table import check_split_sizes, finalise_caption_table
from timam.sources.config import source_config
from timam.sources.image_cache import cache_resized_images
from timam.sources.image_checks import apply_bad_input_policy
from timam.sources.registry import describe_source, published_split_sizes, read_source
from timam.tokenization import cached_tokenize, tokenization_config


def build_caption_table(raw_annotations: Any, source: Mapping[str, Any]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read with the reader named by ``source.format``; check every row; label; check split sizes.

    ``source.on_bad_input``: "error" (default) stops at the first bad row naming it and the fix;
    "skip" drops bad rows into the returned quarantine table with the reason for each.
    ``source.resized_image_cache: {directory, size: [height, width]}`` points the table at
    pre-resized copies of the images (written once), for datasets whose originals are large.
    Every key and default: :class:`timam.sources.config.SourceConfig`.
    """
    config = source_config(source)
    reader_parameters = config.reader_parameters()
    label = describe_source(reader_parameters)
    rows = read_source(raw_annotations, reader_parameters)
    kept, quarantine = apply_bad_input_policy(
        rows,
        policy=config.on_bad_input,
        source=label,
        identities_disjoint=config.identities_disjoint,
    )
    table = finalise_caption_table(kept, source=label)
    expected = published_split_sizes(reader_parameters)
    if expected is not None:
        check_split_sizes(table, expected, source=label, allow_mismatch=config.allow_split_mismatch)
    cache = config.resized_image_cache
    if cache is not None:
        assert cache.directory is not None and cache.size is not None  # ResizedImageCacheConfig checks both
        table = cache_resized_images(table, cache.directory, list(cache.size))
    return table, quarantine


def tokenize_captions(captions: pd.DataFrame, tokenization: Mapping[str, Any]) -> TensorBundle:
    """Token ids for every caption, reused from the cache while captions and tokenizer are unchanged."""
    config = tokenization_config(tokenization)
    return cached_tokenize(
        captions["caption_id"].tolist(),
        captions["caption"].tolist(),
        tokenizer_name=config.tokenizer,
        max_length=config.max_length,
        cache_dir=config.cache_dir,
    )
