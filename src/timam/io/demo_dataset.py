"""The raw annotation file of the built-in demo data, generated on first load.

It returns exactly what a CUHK-PEDES ``reid_raw.json`` dataset returns, so the demo takes the same
ingestion path as real data.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kedro.io import AbstractDataset, DatasetError


class DemoReidRawDataset(AbstractDataset[None, list[dict[str, Any]]]):
    """Loads ``filepath`` (a reid_raw.json), generating the demo images and file first if absent."""

    def __init__(
        self, *, filepath: str, generator: dict[str, Any] | None = None, metadata: dict[str, Any] | None = None
    ) -> None:
        self._filepath = Path(filepath)
        self._generator = dict(generator or {})
        self.metadata = metadata  # kedro-viz reads its layer here

    def load(self) -> list[dict[str, Any]]:
        if not self._filepath.exists():
            from timam.sources.demo import generate_demo_dataset

            generate_demo_dataset(self._filepath.parent, **self._generator)
        with self._filepath.open(encoding="utf-8") as handle:
            return json.load(handle)

    def save(self, data: None) -> None:
        raise DatasetError("The demo raw data is generated, not saved; delete the folder to regenerate it.")

    def _exists(self) -> bool:
        return self._filepath.exists()

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath), "generator": self._generator}
