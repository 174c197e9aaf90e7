"""The raw annotation file of the built-in demo data, generated on first load.

It returns exactly what a CUHK-PEDES ``reid_raw.json`` dataset returns, so the demo takes the same
ingestion path as real data. The file is read through fsspec like any catalog file, but the demo is
generated on the local disk only: its images are read from local paths by ingestion and training,
so a remote ``filepath`` must already hold a ``reid_raw.json`` (and its images must be local).
"""

from __future__ import annotations

import json
from copy import deepcopy
from pathlib import Path
from typing import Any

import fsspec
from kedro.io import AbstractDataset, DatasetError
from kedro.io.core import get_protocol_and_path

from timam.formats.storage import url


class DemoReidRawDataset(AbstractDataset[None, list[dict[str, Any]]]):
    """Loads ``filepath`` (a reid_raw.json), generating the demo images and file first if absent (locally)."""

    def __init__(
        self,
        *,
        filepath: str,
        generator: dict[str, Any] | None = None,
        credentials: dict[str, Any] | None = None,
        fs_args: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        self._protocol, self._path = get_protocol_and_path(filepath)
        self._fs = fsspec.filesystem(self._protocol, **(deepcopy(credentials) or {}), **(deepcopy(fs_args) or {}))
        self._filepath = Path(filepath) if self._protocol == "file" else None
        self._generator = dict(generator or {})
        self.metadata = metadata  # kedro-viz reads its layer here

    def load(self) -> list[dict[str, Any]]:
        if not self._fs.exists(self._path):
            if self._filepath is None:
                raise DatasetError(
                    f"{url(self._fs, self._path)} does not exist, and the demo is generated on the local disk only "
                    "(its images must be local files): give raw_annotations a local filepath."
                )
            from timam.sources.demo import generate_demo_dataset

            generate_demo_dataset(self._filepath.parent, **self._generator)
        with self._fs.open(self._path, "r", encoding="utf-8") as handle:
            return json.load(handle)

    def save(self, data: None) -> None:
        raise DatasetError("The demo raw data is generated, not saved; delete the folder to regenerate it.")

    def _exists(self) -> bool:
        return self._fs.exists(self._path)

    def _describe(self) -> dict[str, Any]:
        return {"filepath": self._path, "protocol": self._protocol, "generator": self._generator}
