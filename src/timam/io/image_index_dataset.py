"""Versioned Kedro dataset for an :class:`~timam.index.store.ImageIndex`: one folder per version.

A version is the folder ``<filepath>/<version>/<name>/`` holding ``index.faiss``, ``manifest.json``
and ``rows.parquet``, written atomically by :func:`~timam.index.store.save_image_index` (a hidden
sibling folder renamed into place) and read back whole by
:func:`~timam.index.store.load_image_index`, which refuses an incomplete or inconsistent folder.

``optional: true`` (the ``search_index`` entry) makes a load with no saved version return None, so
a pipeline can fall back to something else when no index has been built yet; a version asked for
with ``--load-versions`` that does not exist is still an error.

``checkpoint_filepath`` (the ``model_checkpoint`` entry's filepath): on save, a manifest that names
its checkpoint version but no file gets ``<checkpoint_filepath>/<version>/<file name>``, the file
that Kedro keeps that version in, so :class:`timam.search.Searcher` can load the model without Kedro.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path, PurePosixPath
from typing import Any

from kedro.io.core import AbstractVersionedDataset, DatasetError, Version, get_filepath_str, get_protocol_and_path

from timam.index.store import ImageIndex, IndexFormatError, load_image_index, save_image_index
from timam.io.errors import as_dataset_error


class ImageIndexDataset(AbstractVersionedDataset[ImageIndex, ImageIndex | None]):
    """Saves an :class:`ImageIndex` as a versioned folder; loads the newest (or the chosen) version."""

    def __init__(
        self,
        *,
        filepath: str,
        version: Version | None = None,
        optional: bool = False,
        checkpoint_filepath: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        protocol, path = get_protocol_and_path(filepath, version)
        if protocol != "file":
            raise DatasetError(f"ImageIndexDataset writes local folders only; {filepath} is on {protocol!r}")
        super().__init__(filepath=PurePosixPath(path), version=version)
        self.optional = optional
        self.checkpoint_filepath = checkpoint_filepath
        self.metadata = metadata  # kedro-viz reads its layer here

    def _saved_versions(self) -> list[str]:
        """Versions with a complete-looking folder (a manifest), newest first."""
        root = Path(self._filepath)
        if not root.is_dir():
            return []
        found = [entry.name for entry in root.iterdir() if (entry / root.name / "manifest.json").is_file()]
        return sorted(found, reverse=True)

    def _load_folder(self) -> Path | None:
        """The folder to load: the requested version, else the newest with a manifest (None: there is none)."""
        root = Path(self._filepath)
        if self._version is None:
            return root
        if self._version.load is not None:
            return root / self._version.load / root.name
        saved = self._saved_versions()
        return root / saved[0] / root.name if saved else None

    def load(self) -> ImageIndex | None:
        folder = self._load_folder()
        if folder is None:
            if self.optional:
                return None
            raise DatasetError(
                f"No image index under {self._filepath} yet; build one with `kedro run --pipelines index`."
            )
        if not folder.is_dir():
            shown = ", ".join(self._saved_versions()[:5]) or "none"
            raise DatasetError(
                f"Image index {folder} does not exist (versions under {self._filepath}, newest first: {shown}); "
                "build one with `kedro run --pipelines index`, or name an existing version."
            )
        try:
            return load_image_index(folder)
        except (IndexFormatError, FileNotFoundError) as error:
            raise DatasetError(str(error)) from error

    def save(self, data: ImageIndex) -> None:
        manifest = data.manifest
        if manifest.checkpoint_path is None and manifest.checkpoint_version and self.checkpoint_filepath:
            name = PurePosixPath(self.checkpoint_filepath).name
            path = f"{self.checkpoint_filepath}/{manifest.checkpoint_version}/{name}"
            data = dataclasses.replace(data, manifest=dataclasses.replace(manifest, checkpoint_path=path))
        with as_dataset_error(IndexFormatError):
            save_image_index(get_filepath_str(self._get_save_path(), "file"), data)

    def _exists(self) -> bool:
        folder = self._load_folder()
        return folder is not None and folder.is_dir()

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath), "version": self._version, "optional": self.optional}
