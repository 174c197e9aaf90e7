"""Nodes that turn a raw dataset into the canonical caption table and its cached token ids."""

from __future__ import annotations

from typing import Any

import pandas as pd

from timam.io.tensor_bundle import TensorBundle
from timam.sources.caption_table import BadInputError, finalise_caption_table
from timam.sources.cuhk_pedes import read_cuhk_pedes
from timam.tokenization import cached_tokenize

READERS = {"cuhk_pedes": read_cuhk_pedes}


def build_caption_table(raw_annotations: Any, source: dict[str, Any]) -> pd.DataFrame:
    """Read ``raw_annotations`` with the reader named by ``source.format``; check and label the rows."""
    name = source.get("format")
    if name not in READERS:
        raise BadInputError(f"params source.format is {name!r}; supported formats: {sorted(READERS)}")
    rows = READERS[name](raw_annotations, source["image_root"])
    return finalise_caption_table(rows, source=f"{name} data at {source['image_root']}")


def tokenize_captions(captions: pd.DataFrame, tokenization: dict[str, Any]) -> TensorBundle:
    """Token ids for every caption, reused from the cache while captions and tokenizer are unchanged."""
    return cached_tokenize(
        captions["caption_id"].tolist(),
        captions["caption"].tolist(),
        tokenizer_name=tokenization["tokenizer"],
        max_length=int(tokenization["max_length"]),
        cache_dir=tokenization["cache_dir"],
    )
