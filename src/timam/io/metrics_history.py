"""Every saved version of a versioned Kedro dataset at once, keyed by version (read-only), on any fsspec filesystem.

A versioned dataset ``path/name.json`` keeps one folder per run: ``path/name.json/<version>/name.json``.
Kedro loads one version (the latest, or ``--load-versions``); comparing runs, or picking the
training history that belongs to a given checkpoint version, needs all of them. Version names are
Kedro's UTC timestamps, so sorting them sorts by time. ``filepath`` may be a URL (``s3://...``);
``credentials`` and ``fs_args`` are passed on to the filesystem and to each version's dataset.
"""

from __future__ import annotations

from copy import deepcopy
from pathlib import PurePosixPath
from typing import Any, NoReturn

import fsspec
from kedro.io import AbstractDataset, DatasetError
from kedro.io.core import get_filepath_str, get_protocol_and_path

from timam.formats.storage import url, version_folders


class VersionHistoryDataset(AbstractDataset[NoReturn, dict[str, Any]]):
    """Loads ``{version: data}`` for every version folder of the versioned dataset at ``filepath``.

    ``dataset`` is the Kedro type of one version's file (e.g. ``json.JSONDataset``,
    ``pandas.CSVDataset``), with optional ``load_args``. Version folders without the file (a run
    that stopped before saving it) are not versions and are skipped; a file that exists but cannot
    be read raises, naming it. Versions are returned oldest first.
    """

    def __init__(
        self,
        *,
        filepath: str,
        dataset: str = "json.JSONDataset",
        load_args: dict[str, Any] | None = None,
        credentials: dict[str, Any] | None = None,
        fs_args: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        protocol, path = get_protocol_and_path(filepath)
        self._protocol = protocol
        self._filepath = PurePosixPath(path)
        self._credentials = deepcopy(credentials or {})
        self._fs_args = deepcopy(fs_args or {})
        fs_options = {key: value for key, value in self._fs_args.items() if not key.startswith("open_args_")}
        self._fs = fsspec.filesystem(protocol, **self._credentials, **fs_options)
        self._dataset_type = dataset
        self._load_args = dict(load_args or {})
        self.metadata = metadata

    def _url(self, path: PurePosixPath) -> str:
        return url(self._fs, get_filepath_str(path, self._protocol))

    def versions(self) -> list[str]:
        """Names of the version folders that hold the file, oldest first (empty when nothing was saved yet)."""
        return version_folders(self._fs, get_filepath_str(self._filepath, self._protocol))

    def load(self) -> dict[str, Any]:
        loaded: dict[str, Any] = {}
        for version in self.versions():
            path = self._url(self._filepath / version / self._filepath.name)
            config: dict[str, Any] = {"type": self._dataset_type, "filepath": path}
            if self._load_args:
                config["load_args"] = self._load_args
            if self._credentials:
                config["credentials"] = self._credentials
            if self._fs_args:
                config["fs_args"] = self._fs_args
            dataset = AbstractDataset.from_config(f"{self._filepath.name}@{version}", config)
            try:
                loaded[version] = dataset.load()
            except DatasetError as error:
                raise DatasetError(
                    f"Version {version} of {self._url(self._filepath)} is unreadable ({path}): {error}"
                ) from error
        return loaded

    def save(self, data: Any) -> None:
        raise DatasetError(f"{type(self).__name__} is read-only: it loads the versions other datasets saved")

    def _exists(self) -> bool:
        return bool(self.versions())

    def _describe(self) -> dict[str, Any]:
        return {"filepath": self._filepath, "protocol": self._protocol, "dataset": self._dataset_type}


class MetricsHistoryDataset(VersionHistoryDataset):
    """Every version of a versioned JSON metrics dataset (``retrieval_metrics``), oldest first."""

    def __init__(
        self,
        *,
        filepath: str,
        load_args: dict[str, Any] | None = None,
        credentials: dict[str, Any] | None = None,
        fs_args: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(
            filepath=filepath,
            dataset="json.JSONDataset",
            load_args=load_args,
            credentials=credentials,
            fs_args=fs_args,
            metadata=metadata,
        )
