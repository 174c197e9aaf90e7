"""The versioned Kedro dataset for :class:`~timam.formats.tensor_bundle.TensorBundle` files."""

from __future__ import annotations

import os
from pathlib import PurePosixPath
from typing import Any

from kedro.io.core import AbstractVersionedDataset, DatasetError, Version, get_filepath_str, get_protocol_and_path

from timam.formats.tensor_bundle import TensorBundle, UnreadableBundleError, load_bundle, save_bundle
from timam.io.errors import as_dataset_error, missing_version_error


class TensorBundleDataset(AbstractVersionedDataset[TensorBundle, TensorBundle]):
    """Kedro dataset for tensor bundles; on load, ``metadata["version"]`` names the file version."""

    def __init__(
        self, *, filepath: str, version: Version | None = None, metadata: dict[str, Any] | None = None
    ) -> None:
        _, path = get_protocol_and_path(filepath, version)
        super().__init__(filepath=PurePosixPath(path), version=version)
        self.metadata = metadata  # kedro-viz reads its layer here

    def load(self) -> TensorBundle:
        load_path = self._get_load_path()
        if not os.path.exists(load_path):
            raise missing_version_error(self._filepath, load_path, self._version.load if self._version else None)
        path = get_filepath_str(load_path, "file")
        with as_dataset_error(UnreadableBundleError):
            bundle = load_bundle(path)
        bundle.metadata["version"] = self.resolve_load_version()
        return bundle

    def save(self, data: TensorBundle) -> None:
        with as_dataset_error():
            save_bundle(data, get_filepath_str(self._get_save_path(), "file"))

    def _exists(self) -> bool:
        try:
            path = self._get_load_path()
        except DatasetError:
            return False
        return os.path.exists(path)

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath), "version": self._version}
