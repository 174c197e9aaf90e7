"""Every saved version of a versioned Kedro dataset at once, keyed by version (read-only).

A versioned dataset ``path/name.json`` keeps one folder per run: ``path/name.json/<version>/name.json``.
Kedro loads one version (the latest, or ``--load-versions``); comparing runs, or picking the
training history that belongs to a given checkpoint version, needs all of them. Version names are
Kedro's UTC timestamps, so sorting them sorts by time.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, NoReturn

from kedro.io import AbstractDataset, DatasetError

logger = logging.getLogger(__name__)


class VersionHistoryDataset(AbstractDataset[NoReturn, dict[str, Any]]):
    """Loads ``{version: data}`` for every version folder of the versioned dataset at ``filepath``.

    ``dataset`` is the Kedro type of one version's file (e.g. ``json.JSONDataset``,
    ``pandas.CSVDataset``), with optional ``load_args``. Version folders without the file (a run
    that stopped before saving it) are skipped with a warning; a file that exists but cannot be
    read raises, naming it. Versions are returned oldest first.
    """

    def __init__(
        self,
        *,
        filepath: str,
        dataset: str = "json.JSONDataset",
        load_args: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        self._filepath = Path(filepath)
        self._dataset_type = dataset
        self._load_args = dict(load_args or {})
        self.metadata = metadata

    def versions(self) -> list[str]:
        """Version folder names, oldest first (empty when nothing was saved yet)."""
        if not self._filepath.is_dir():
            return []
        return sorted(p.name for p in self._filepath.iterdir() if p.is_dir() and not p.name.startswith("."))

    def load(self) -> dict[str, Any]:
        loaded: dict[str, Any] = {}
        for version in self.versions():
            path = self._filepath / version / self._filepath.name
            if not path.exists():
                logger.warning("Version %s of %s has no file %s: skipped", version, self._filepath, path.name)
                continue
            config: dict[str, Any] = {"type": self._dataset_type, "filepath": str(path)}
            if self._load_args:
                config["load_args"] = self._load_args
            dataset = AbstractDataset.from_config(f"{self._filepath.name}@{version}", config)
            try:
                loaded[version] = dataset.load()
            except DatasetError as error:
                raise DatasetError(f"Version {version} of {self._filepath} is unreadable ({path}): {error}") from error
        return loaded

    def save(self, data: Any) -> None:
        raise DatasetError(f"{type(self).__name__} is read-only: it loads the versions other datasets saved")

    def _exists(self) -> bool:
        return bool(self.versions())

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath), "dataset": self._dataset_type}


class MetricsHistoryDataset(VersionHistoryDataset):
    """Every version of a versioned JSON metrics dataset (``retrieval_metrics``), oldest first."""

    def __init__(
        self, *, filepath: str, load_args: dict[str, Any] | None = None, metadata: dict[str, Any] | None = None
    ) -> None:
        super().__init__(filepath=filepath, dataset="json.JSONDataset", load_args=load_args, metadata=metadata)
