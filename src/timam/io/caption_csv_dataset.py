"""``pandas.CSVDataset`` for raw caption tables: a file not in the expected encoding is named with its
line and byte and the ``load_args`` that read it.

pandas reports a wrongly encoded CSV as a bare ``UnicodeDecodeError`` ("can't decode byte 0xe9 in
position 3"): position in a parser buffer, no file, no line, no fix. The error surfaces while Kedro
loads the dataset, before any node runs, so this is the one place that can say more. Only that
failure is changed: the file is read again as bytes to find the first undecodable byte.
"""

from __future__ import annotations

from typing import Any

import fsspec
import pandas as pd
from kedro.io.core import DatasetError, get_filepath_str, get_protocol_and_path
from kedro_datasets.pandas import CSVDataset

from timam.sources.generic_table import CATALOG_ENCODING_FIX, undecodable_table


class CaptionCSVDataset(CSVDataset):
    """Loads like ``pandas.CSVDataset`` (same arguments); a decoding failure names line, byte and fix."""

    def __init__(
        self,
        *,
        filepath: str,
        load_args: dict[str, Any] | None = None,
        credentials: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(filepath=filepath, load_args=load_args, credentials=credentials, **kwargs)
        self._table_encoding = str((load_args or {}).get("encoding") or "utf-8")
        self._table_protocol, _ = get_protocol_and_path(filepath)
        self._table_credentials = dict(credentials or {})

    def load(self) -> pd.DataFrame:
        try:
            return super().load()
        except DatasetError as error:
            if not isinstance(error.__cause__, UnicodeDecodeError):
                raise
            path = get_filepath_str(self._get_load_path(), self._table_protocol)
            with fsspec.open(path, "rb", **self._table_credentials) as handle:
                data = handle.read()
            found = undecodable_table(path, data, self._table_encoding, CATALOG_ENCODING_FIX)
            if found is None:
                raise
            raise DatasetError(str(found)) from error.__cause__
