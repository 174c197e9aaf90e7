"""Which reader handles which ``source.format``, with the parameters each one needs.

Every reader takes what the catalog's ``raw_annotations`` entry loaded (a JSON document, a table)
plus the ``source`` parameters, and returns caption rows; the ingest node does the rest.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pandas as pd

from timam.sources.caption_table import BadInputError
from timam.sources.cuhk_pedes import read_cuhk_pedes
from timam.sources.generic_table import read_caption_table
from timam.sources.karpathy import KARPATHY_SPLIT_SIZES, karpathy_split_sizes, read_karpathy
from timam.sources.text_c10 import read_text_c10
from timam.sources.ucm_captions import UCM_SPLIT_SIZES, read_ucm_karpathy, read_ucm_parquet

CUHK_PEDES_SPLIT_SIZES = {"train": 34054, "val": 3078, "test": 3074}


def _required(source: dict[str, Any], key: str) -> Any:
    if key not in source:
        raise BadInputError(f"params source.{key} is required for source.format {source['format']!r}")
    return source[key]


def _cuhk_pedes(raw: Any, source: dict[str, Any]) -> pd.DataFrame:
    return read_cuhk_pedes(raw, _required(source, "image_root"))


def _karpathy(raw: Any, source: dict[str, Any]) -> pd.DataFrame:
    return read_karpathy(
        raw,
        _required(source, "image_root"),
        dataset=_required(source, "dataset"),
        restval=source.get("restval", "train"),
        images_without_captions=source.get("on_bad_input", "error"),
    )


def _text_c10(raw: Any, source: dict[str, Any]) -> pd.DataFrame:
    return read_text_c10(
        _required(source, "data_root"),
        val_classes=int(source.get("val_classes", 0)),
        images_without_captions=source.get("on_bad_input", "error"),
    )


def _ucm_parquet(raw: Any, source: dict[str, Any]) -> pd.DataFrame:
    return read_ucm_parquet(
        raw, _required(source, "image_cache_dir"), images_without_captions=source.get("on_bad_input", "error")
    )


def _ucm_karpathy(raw: Any, source: dict[str, Any]) -> pd.DataFrame:
    return read_ucm_karpathy(
        raw, _required(source, "image_root"), images_without_captions=source.get("on_bad_input", "error")
    )


def _table(raw: Any, source: dict[str, Any]) -> pd.DataFrame:
    return read_caption_table(
        raw,
        _required(source, "image_root"),
        columns=source.get("columns"),
        default_split=source.get("default_split", "train"),
    )


READERS: dict[str, Callable[[Any, dict[str, Any]], pd.DataFrame]] = {
    "cuhk_pedes": _cuhk_pedes,
    "karpathy": _karpathy,
    "text_c10": _text_c10,
    "ucm_parquet": _ucm_parquet,
    "ucm_karpathy": _ucm_karpathy,
    "table": _table,
}


def published_split_sizes(source: dict[str, Any]) -> dict[str, int] | None:
    """Image counts per split that the dataset's protocol fixes, or None where none are known."""
    name = source["format"]
    if name == "cuhk_pedes" and source.get("check_split_sizes", False):
        return CUHK_PEDES_SPLIT_SIZES
    if name == "karpathy" and source.get("dataset") in KARPATHY_SPLIT_SIZES:
        return karpathy_split_sizes(source["dataset"], restval=source.get("restval", "train"))
    if name in {"ucm_parquet", "ucm_karpathy"}:
        return UCM_SPLIT_SIZES
    return None


_LOCATION_KEY = {"text_c10": "data_root", "ucm_parquet": "image_cache_dir"}


def describe_source(source: dict[str, Any]) -> str:
    """How log lines and errors name the data, e.g. "cuhk_pedes data at /data/CUHK-PEDES/imgs"."""
    name = str(source.get("format"))
    return f"{name} data at {source.get(_LOCATION_KEY.get(name, 'image_root'), '?')}"


def read_source(raw: Any, source: dict[str, Any]) -> pd.DataFrame:
    name = source.get("format")
    if name not in READERS:
        raise BadInputError(f"params source.format is {name!r}; supported formats: {sorted(READERS)}")
    return READERS[name](raw, source)
