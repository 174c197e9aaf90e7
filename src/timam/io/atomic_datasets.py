"""kedro-datasets writers that save atomically, for the catalog's saved artifacts.

The built-in datasets open the target file and write into it, so a crash (or a full disk) mid-write
leaves a truncated CSV, JSON or PNG that the next run loads. These subclasses keep every argument,
the load path and Kedro versioning of their parent, and only move where the bytes land: into a
hidden temporary sibling that :func:`timam.formats.atomic.atomic_path` renames onto the real (possibly
versioned) path once the write succeeded. Permission and disk-space errors name the file and the fix.

Only local files (the ``file`` protocol) go through a temporary and a rename. For other protocols
(``s3://``, ``gs://``, ``abfs://`` ...; ``credentials`` and ``fs_args`` as kedro-datasets document)
the parent's own write is used unchanged: an object store has no rename, and publishes an object
only when its upload completes (one PUT, or a multipart upload completed in one call), so a reader
sees the previous object or the new one, never a part. A folder of figures
(:class:`AtomicMatplotlibDataset` with a list or dict) is atomic per file only, on any storage.
"""

from __future__ import annotations

import inspect
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any

from kedro_datasets.json import JSONDataset
from kedro_datasets.matplotlib import MatplotlibDataset
from kedro_datasets.pandas import CSVDataset, ParquetDataset
from kedro_datasets.text import TextDataset
from kedro_datasets.yaml import YAMLDataset
from matplotlib.figure import Figure

from timam.formats.atomic import atomic_path
from timam.io.errors import as_dataset_error
from timam.io.fsspec_dataset import existing_load_path

if TYPE_CHECKING:
    from kedro.io.core import AbstractVersionedDataset

    _FsspecDataset = AbstractVersionedDataset[Any, Any]
else:
    _FsspecDataset = object


class AtomicLocalSaveMixin(_FsspecDataset):
    """Makes the parent's ``save`` write to a temporary sibling, then renames it onto the save path.

    The parent reads its destination from ``_get_save_path()`` exactly once per save; during a save
    that returns the temporary path, so the parent's own writer (and its ``save_args``) is reused.
    Place before the kedro-datasets class in the bases.
    """

    _protocol: str
    _atomic_save_path: PurePosixPath | None = None

    def load(self) -> Any:
        # A missing file is named by its URL, with the versions there, before the parent opens it.
        existing_load_path(self)
        return inspect.unwrap(super().load)(self)  # type: ignore[safe-super]  # the kedro-datasets class implements it

    def _get_save_path(self) -> PurePosixPath:
        return self._atomic_save_path or super()._get_save_path()

    def save(self, data: Any) -> None:
        # The parent's unwrapped save: its Kedro wrapper would resolve a second save version.
        write = inspect.unwrap(super().save)  # type: ignore[safe-super]  # the kedro-datasets class implements it
        if self._protocol != "file":
            write(self, data)
            return
        with as_dataset_error(), atomic_path(self._get_save_path()) as temporary:
            self._atomic_save_path = PurePosixPath(temporary)
            try:
                write(self, data)
            finally:
                self._atomic_save_path = None


class AtomicCSVDataset(AtomicLocalSaveMixin, CSVDataset):
    """``pandas.CSVDataset`` that saves atomically."""


class AtomicParquetDataset(AtomicLocalSaveMixin, ParquetDataset):
    """``pandas.ParquetDataset`` that saves atomically."""


class AtomicJSONDataset(AtomicLocalSaveMixin, JSONDataset):
    """``json.JSONDataset`` that saves atomically."""


class AtomicTextDataset(AtomicLocalSaveMixin, TextDataset):
    """``text.TextDataset`` that saves atomically."""


class AtomicYAMLDataset(AtomicLocalSaveMixin, YAMLDataset):
    """``yaml.YAMLDataset`` that saves atomically."""


class AtomicMatplotlibDataset(MatplotlibDataset):
    """``matplotlib.MatplotlibDataset`` whose every figure file is written atomically.

    Hooks the per-file writer rather than the save path, because a list or dict of figures is saved
    as a folder of files: each file is atomic, the folder as a whole is not (an unversioned
    ``overwrite: true`` save still empties it first, as the parent does).
    """

    def _save_to_fs(self, full_key_path: str, plot: Figure) -> None:
        if self._protocol != "file":
            super()._save_to_fs(full_key_path, plot)
            return
        with as_dataset_error(), atomic_path(full_key_path) as temporary:
            super()._save_to_fs(str(temporary), plot)
