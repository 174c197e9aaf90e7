"""Nodes that turn a raw dataset into the canonical caption table and its cached token ids."""

from __future__ import annotations

from typing import Any

import pandas as pd

from timam.formats.tensor_bundle import TensorBundle
from timam.sources.caption_table import finalise_caption_table
from timam.sources.image_cache import cache_resized_images
from timam.sources.image_checks import apply_bad_input_policy
from timam.sources.caption_table import check_split_sizes
from timam.sources.registry import describe_source, published_split_sizes, read_source
from timam.tokenization import cached_tokenize


def build_caption_table(raw_annotations: Any, source: dict[str, Any]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read with the reader named by ``source.format``; check every row; label; check split sizes.

    ``source.on_bad_input``: "error" (default) stops at the first bad row naming it and the fix;
    "skip" drops bad rows into the returned quarantine table with the reason for each.
    ``source.resized_image_cache: {directory, size: [height, width]}`` points the table at
    pre-resized copies of the images (written once), for datasets whose originals are large.
    """
    label = describe_source(source)
    rows = read_source(raw_annotations, source)
    kept, quarantine = apply_bad_input_policy(
        rows, policy=source.get("on_bad_input", "error"), source=label,
        identities_disjoint=bool(source.get("identities_disjoint", False)),
    )
    table = finalise_caption_table(kept, source=label)
    expected = published_split_sizes(source)
    if expected is not None:
        check_split_sizes(table, expected, source=label, allow_mismatch=bool(source.get("allow_split_mismatch", False)))
    cache = source.get("resized_image_cache")
    if cache:
        table = cache_resized_images(table, cache["directory"], cache["size"])
    return table, quarantine


def tokenize_captions(captions: pd.DataFrame, tokenization: dict[str, Any]) -> TensorBundle:
    """Token ids for every caption, reused from the cache while captions and tokenizer are unchanged."""
    return cached_tokenize(
        captions["caption_id"].tolist(),
        captions["caption"].tolist(),
        tokenizer_name=tokenization["tokenizer"],
        max_length=int(tokenization["max_length"]),
        cache_dir=tokenization["cache_dir"],
    )
