"""Turns the core's plain file errors into Kedro's ``DatasetError``, keeping their message."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import PurePosixPath

from fsspec import AbstractFileSystem
from kedro.io.core import DatasetError

from timam.formats.atomic import ArtifactWriteError
from timam.formats.storage import url, version_folders


class ArtifactSaveError(DatasetError):
    """A catalog save the user must unblock (permissions, disk space); the previous file is untouched."""


@contextmanager
def as_dataset_error(*errors: type[Exception]) -> Iterator[None]:
    """Re-raise :class:`ArtifactWriteError` (and ``errors``) as a DatasetError with the same message.

    Kedro wraps any other exception in "Failed while saving data to dataset ...", which buries the
    file name and the fix that the core's message leads with.
    """
    try:
        yield
    except ArtifactWriteError as error:
        raise ArtifactSaveError(str(error)) from error
    except errors as error:
        raise DatasetError(str(error)) from error


def missing_version_error(
    fs: AbstractFileSystem, root: PurePosixPath, load_path: PurePosixPath, version: str | None
) -> DatasetError:
    """The error for a load of ``load_path`` (on ``fs``) that is absent, naming its URL and the versions that exist.

    Without it a mistyped ``--load-versions name:<version>`` surfaces as a format error of a file that
    was never there, and an object store's bare "not found" names no bucket.
    """
    existing = version_folders(fs, root.as_posix())[::-1]
    shown = ", ".join(existing[:5]) + (f" (and {len(existing) - 5} older)" if len(existing) > 5 else "")
    if version is None:
        return DatasetError(f"{url(fs, load_path.as_posix())} does not exist; run the pipeline that saves it first.")
    return DatasetError(
        f"Version {version!r} of {url(fs, root.as_posix())} does not exist. "
        + (f"Versions there, newest first: {shown}." if existing else "There are no saved versions yet.")
    )
