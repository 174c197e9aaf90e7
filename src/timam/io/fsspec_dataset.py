"""The fsspec plumbing that kedro-datasets' own file datasets share, for timam's versioned datasets.

``filepath`` may carry a protocol (``s3://bucket/key``, ``gs://``, ``abfs://``, ``memory://``; none
means the local disk); ``credentials`` and ``fs_args`` go to ``fsspec.filesystem(protocol,
**credentials, **fs_args)``, ``fs_args.open_args_load`` / ``open_args_save`` to ``fs.open``, exactly
as in ``kedro_datasets.json.JSONDataset``. Versions are found with the filesystem's ``glob``, so the
latest version is the newest folder that holds the file: an empty version folder (a run killed
before its save) is never chosen. Errors for a missing file name its full URL.
"""

from __future__ import annotations

from copy import deepcopy
from pathlib import PurePosixPath
from typing import Any, TypeVar

import fsspec
from kedro.io.core import (
    AbstractVersionedDataset,
    DatasetError,
    Version,
    VersionNotFoundError,
    get_filepath_str,
    get_protocol_and_path,
)

from timam.formats.storage import url
from timam.io.errors import missing_version_error

_DI = TypeVar("_DI")
_DO = TypeVar("_DO")


def existing_load_path(dataset: AbstractVersionedDataset[Any, Any]) -> str:
    """The path ``dataset`` loads from; a DatasetError naming its URL (and the versions there) when absent.

    For timam's datasets and the kedro-datasets subclasses in :mod:`timam.io.atomic_datasets`, which
    share the attributes read here (``_fs``, ``_protocol``, ``_filepath``, ``_version``). Without it
    an object store's "not found" names a bare key, and a mistyped ``--load-versions`` a file format error.
    """
    fs, protocol, root = dataset._fs, dataset._protocol, dataset._filepath  # type: ignore[attr-defined]
    try:
        load_path = dataset._get_load_path()
    except VersionNotFoundError as error:
        shown = url(fs, get_filepath_str(root, protocol))
        raise DatasetError(f"No saved version of {shown} yet; run the pipeline that saves it first.") from error
    path = get_filepath_str(load_path, protocol)
    if not fs.exists(path):
        version = dataset._version.load if dataset._version else None
        raise missing_version_error(fs, root, load_path, version)
    return path


class FsspecVersionedDataset(AbstractVersionedDataset[_DI, _DO]):
    """Base of timam's versioned file datasets: the filesystem, its open arguments, URLs for messages."""

    def __init__(
        self,
        *,
        filepath: str,
        version: Version | None = None,
        credentials: dict[str, Any] | None = None,
        fs_args: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        _fs_args = deepcopy(fs_args) or {}
        self._fs_open_args_load: dict[str, Any] = _fs_args.pop("open_args_load", {})
        self._fs_open_args_save: dict[str, Any] = _fs_args.pop("open_args_save", {})
        _credentials = deepcopy(credentials) or {}
        protocol, path = get_protocol_and_path(filepath, version)
        self._protocol = protocol
        self._storage_options = {**_credentials, **_fs_args}  # for the core, which opens its own filesystem
        if protocol == "file":
            _fs_args.setdefault("auto_mkdir", True)
        self._fs = fsspec.filesystem(protocol, **_credentials, **_fs_args)
        self.metadata = metadata  # kedro-viz reads its layer here
        super().__init__(
            filepath=PurePosixPath(path),
            version=version,
            exists_function=self._fs.exists,
            glob_function=self._fs.glob,
        )

    @property
    def _is_local(self) -> bool:
        return self._protocol == "file"

    def _path(self, path: PurePosixPath) -> str:
        """``path`` as the filesystem takes it."""
        return get_filepath_str(path, self._protocol)

    def _url(self, path: PurePosixPath) -> str:
        """``path`` as messages name it: the local path as configured, or ``s3://bucket/key``."""
        return url(self._fs, self._path(path))

    def _existing_load_path(self) -> str:
        """The file to load; a DatasetError naming its URL (and the versions there) when it does not exist."""
        return existing_load_path(self)

    def _exists(self) -> bool:
        try:
            self._existing_load_path()
        except DatasetError:
            return False
        return True

    def _describe(self) -> dict[str, Any]:
        return {"filepath": self._filepath, "protocol": self._protocol, "version": self._version}

    def _release(self) -> None:
        super()._release()
        self._invalidate_cache()

    def _invalidate_cache(self) -> None:
        """Forget the filesystem's cached listings (another process may have written since)."""
        self._fs.invalidate_cache(self._path(self._filepath))
