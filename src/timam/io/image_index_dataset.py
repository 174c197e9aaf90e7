"""Versioned Kedro dataset for an :class:`~timam.index.store.ImageIndex`: one folder per version.

A version is the folder ``<filepath>/<version>/<name>/`` holding ``index.faiss``, ``manifest.json``
and ``rows.parquet``, written by :func:`~timam.index.store.save_image_index` and read back whole by
:func:`~timam.index.store.load_image_index`, which refuses an incomplete or inconsistent folder.
Locally the folder is written atomically (a hidden sibling folder renamed into place). On an object
store (``filepath: s3://...`` with ``credentials``/``fs_args`` as kedro-datasets take them) there is
no rename: the files are uploaded with the manifest last, and only a version with a manifest counts,
so "the latest" is never a half-uploaded folder and loading one names its URL.

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

from kedro.io.core import DatasetError, Version

from timam.formats.storage import version_folders
from timam.index.store import MANIFEST_FILE, ImageIndex, IndexFormatError, load_image_index, save_image_index
from timam.io.errors import as_dataset_error
from timam.io.fsspec_dataset import FsspecVersionedDataset


class ImageIndexDataset(FsspecVersionedDataset[ImageIndex, ImageIndex | None]):
    """Saves an :class:`ImageIndex` as a versioned folder; loads the newest (or the chosen) version."""

    def __init__(
        self,
        *,
        filepath: str,
        version: Version | None = None,
        optional: bool = False,
        checkpoint_filepath: str | None = None,
        credentials: dict[str, Any] | None = None,
        fs_args: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(
            filepath=filepath, version=version, credentials=credentials, fs_args=fs_args, metadata=metadata
        )
        self.optional = optional
        self.checkpoint_filepath = checkpoint_filepath

    def _saved_versions(self) -> list[str]:
        """Versions with a complete-looking folder (a manifest), newest first."""
        return version_folders(self._fs, self._path(self._filepath), MANIFEST_FILE)[::-1]

    def _load_folder(self) -> PurePosixPath | None:
        """The folder to load: the requested version, else the newest with a manifest (None: there is none)."""
        root = self._filepath
        if self._version is None:
            return root
        if self._version.load is not None:
            return root / self._version.load / root.name
        saved = self._saved_versions()
        return root / saved[0] / root.name if saved else None

    def _target(self, folder: PurePosixPath) -> str:
        """What the core opens: the local path as before, or the folder's URL."""
        return str(Path(self._path(folder))) if self._is_local else self._url(folder)

    def load(self) -> ImageIndex | None:
        folder = self._load_folder()
        if folder is None:
            if self.optional:
                return None
            raise DatasetError(
                f"No image index under {self._url(self._filepath)} yet; build one with `kedro run --pipelines index`."
            )
        if not self._fs.isdir(self._path(folder)):
            shown = ", ".join(self._saved_versions()[:5]) or "none"
            raise DatasetError(
                f"Image index {self._target(folder)} does not exist (versions under {self._url(self._filepath)}, "
                f"newest first: {shown}); build one with `kedro run --pipelines index`, or name an existing version."
            )
        try:
            return load_image_index(self._target(folder), storage_options=self._storage_options)
        except (IndexFormatError, FileNotFoundError) as error:
            raise DatasetError(str(error)) from error

    def save(self, data: ImageIndex) -> None:
        manifest = data.manifest
        if manifest.checkpoint_path is None and manifest.checkpoint_version and self.checkpoint_filepath:
            name = PurePosixPath(self.checkpoint_filepath).name
            path = f"{self.checkpoint_filepath}/{manifest.checkpoint_version}/{name}"
            data = dataclasses.replace(data, manifest=dataclasses.replace(manifest, checkpoint_path=path))
        with as_dataset_error(IndexFormatError):
            save_image_index(self._target(self._get_save_path()), data, storage_options=self._storage_options)
        self._invalidate_cache()

    def _exists(self) -> bool:
        folder = self._load_folder()
        return folder is not None and self._fs.isdir(self._path(folder))

    def _describe(self) -> dict[str, Any]:
        return {**super()._describe(), "optional": self.optional}
