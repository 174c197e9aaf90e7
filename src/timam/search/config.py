"""``params:search``, typed: the query of ``kedro run --pipelines search`` and how many results to keep."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import BeforeValidator, PositiveInt

from timam.config import ParameterBlock, build


def _given(value: Any) -> str | None:
    """A parameter as a stripped string, or None when unset/empty (``--params`` may parse numbers)."""
    if value is None:
        return None
    text = str(value).strip()
    return text or None


OptionalText = Annotated[str | None, BeforeValidator(_given)]


class SearchConfig(ParameterBlock):
    """``kedro run --pipelines search``: a text ``query``, a ``query_image`` path or a ``queries_file``
    (one text query per line, or a table with a ``query`` column), and how many results to keep.

    With an image index (``kedro run --pipelines index``) and ``use_index`` the newest index is
    searched: texts and images rank its images. Without one, the test split is searched: a text
    ranks the test images, an image the test captions. The search pipeline needs exactly one of the
    three queries; other pipelines ignore the block."""

    query: OptionalText = None
    """free text: ranks the images"""
    query_image: OptionalText = None
    """an image file (relative to the project folder)"""
    queries_file: OptionalText = None
    """a file of text queries (one per line, or a .csv/.tsv/.parquet table with a 'query' column)"""
    top_k: PositiveInt = 10
    """results kept per query"""
    use_index: bool = True
    """false: search the test split even when an index exists"""


def search_config(values: Mapping[str, Any] | SearchConfig | None) -> SearchConfig:
    """Build from ``params:search``."""
    return build(SearchConfig, values, "search")
