"""A file of text queries: one per line (.txt), or a ``query`` column of a CSV/TSV/Parquet table."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

TABLE_SUFFIXES = {".csv": ",", ".tsv": "\t"}


def read_queries(path: str | os.PathLike[str], *, column: str = "query") -> list[str]:
    """The non-blank queries of ``path``, in file order; a text file skips blank lines and ``#`` comments."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"queries file {path} does not exist (relative paths start at {Path.cwd()}); give a .txt file with "
            "one query per line, or a .csv/.tsv/.parquet table with a 'query' column"
        )
    suffix = path.suffix.lower()
    if suffix in TABLE_SUFFIXES or suffix == ".parquet":
        table = (
            pd.read_parquet(path)
            if suffix == ".parquet"
            else pd.read_csv(path, sep=TABLE_SUFFIXES[suffix], dtype=str, keep_default_na=False)
        )
        if column not in table.columns:
            raise ValueError(f"queries file {path} has no {column!r} column; its columns are {list(table.columns)}")
        values = [str(value) for value in table[column].tolist() if isinstance(value, str)]
    else:
        try:
            values = path.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError as error:
            raise ValueError(f"queries file {path} is not UTF-8 text ({error}); save it as UTF-8") from error
        values = [line for line in values if not line.lstrip().startswith("#")]
    queries = [value.strip() for value in values if value.strip()]
    if not queries:
        raise ValueError(f"queries file {path} holds no queries")
    return queries
