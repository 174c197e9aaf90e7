"""Search results as small records, and as a table for many queries."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import pandas as pd


@dataclass(frozen=True)
class Hit:
    """One result: its ``rank`` (1 = best), the index ``row``, the image ``path`` and its ``score`` (the
    cosine; ``-Hamming distance`` in an index of hash codes).

    ``caption``: the row's caption when the collection has captions (the ranked caption for
    image-to-caption search), else None.
    """

    rank: int
    row: int
    path: str
    score: float
    caption: str | None = None

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def hits_table(hits: Sequence[Hit], *, query: str | None = None) -> pd.DataFrame:
    """Columns ``[query,] rank, row, path, score[, caption]``; caption only when some hit has one."""
    table = pd.DataFrame(
        {
            "rank": pd.Series([hit.rank for hit in hits], dtype="int64"),
            "row": pd.Series([hit.row for hit in hits], dtype="int64"),
            "path": pd.Series([hit.path for hit in hits], dtype=object),
            "score": pd.Series([hit.score for hit in hits], dtype="float64"),
        }
    )
    if any(hit.caption is not None for hit in hits):
        table["caption"] = [hit.caption for hit in hits]
    if query is not None:
        table.insert(0, "query", query)
    return table
