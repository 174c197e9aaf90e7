"""Paths on any fsspec filesystem: the local disk as before, or an object store (``s3://``, ``gs://``, ``abfs://``).

What each kind of storage promises, so callers can say it plainly:

* Local files keep :func:`timam.formats.atomic.atomic_path`: a hidden temporary sibling renamed
  onto the target, so a reader sees the old file or the new one, never a part.
* An object store has no rename, but publishes one object whole: a single PUT (or a multipart
  upload, completed in one call) is all-or-nothing per object, so one file needs no temporary.
* Several objects are never published together. A folder (the image index) is uploaded with its
  manifest last, and readers refuse a folder without one (:func:`publish_folder`).

Credentials and endpoints are fsspec's ``storage_options`` (the catalog's ``credentials`` and
``fs_args``); without them each filesystem reads its usual environment (``AWS_*`` for s3fs).
FAISS, safetensors' memory map and the checkpoint reader need local files: :func:`local_copy` and
:func:`fetch_folder` download into a temporary folder that is removed afterwards.
"""

from __future__ import annotations

import os
import posixpath
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import Any

import fsspec
from fsspec import AbstractFileSystem
from fsspec.implementations.local import LocalFileSystem

LOCAL_PROTOCOLS = (None, "file", "local")


def is_remote(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` names another filesystem than the local disk (it has a protocol such as ``s3://``)."""
    protocol, _ = fsspec.core.split_protocol(os.fspath(path))
    return protocol not in LOCAL_PROTOCOLS


def filesystem(
    path: str | os.PathLike[str], storage_options: Mapping[str, Any] | None = None
) -> tuple[AbstractFileSystem, str]:
    """The filesystem of ``path`` and the path within it; a local path is returned as given (relative stays so)."""
    if not is_remote(path):
        return LocalFileSystem(), os.fspath(path)
    fs, inner = fsspec.core.url_to_fs(os.fspath(path), **dict(storage_options or {}))
    return fs, inner


def is_local(fs: AbstractFileSystem) -> bool:
    return isinstance(fs, LocalFileSystem)


def url(fs: AbstractFileSystem, path: str) -> str:
    """What messages name: the local path, or the full URL (``s3://bucket/key``) of an object."""
    return path if is_local(fs) else fs.unstrip_protocol(path)


def join(path: str, *names: str) -> str:
    """``path/name/...`` with ``/`` whatever the filesystem (fsspec paths are POSIX)."""
    return posixpath.join(path.rstrip("/") or "/", *names)


def version_folders(fs: AbstractFileSystem, root: str, payload: str = "") -> list[str]:
    """Kedro versions of the dataset at ``root`` whose ``<root>/<version>/<name>[/payload]`` exists, oldest first.

    A version folder that lacks it (a run killed before its save finished, an upload still under
    way) is skipped, so whoever picks "the latest" never picks an empty or partial version.
    """
    name = posixpath.basename(root.rstrip("/"))
    depth = len(PurePosixPath(payload).parts)
    fs.invalidate_cache(root)  # another process may have saved a version since this one listed
    hits = fs.glob(join(root, "*", name, payload) if payload else join(root, "*", name))
    found = {PurePosixPath(hit).parents[depth].name for hit in hits}
    return sorted(version for version in found if not version.startswith("."))


@contextmanager
def local_copy(fs: AbstractFileSystem, path: str) -> Iterator[str]:
    """A local file with the content of ``path``: the file itself when local, else a download removed afterwards."""
    if is_local(fs):
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="timam-download-") as folder:
        local = os.path.join(folder, posixpath.basename(path))
        fs.get_file(path, local)
        yield local


def fetch_folder(fs: AbstractFileSystem, path: str, names: Iterable[str], into: Path) -> list[str]:
    """Download ``path/<name>`` for each of ``names`` that exists into the local folder ``into``; the names fetched."""
    present = {posixpath.basename(entry.rstrip("/")) for entry in fs.ls(path, detail=False)}
    fetched = []
    for name in names:
        if name in present:
            fs.get_file(join(path, name), str(into / name))
            fetched.append(name)
    return fetched


def publish_folder(local: Path, fs: AbstractFileSystem, path: str, *, last: str) -> None:
    """Upload every file of ``local`` to the remote folder ``path``, the file ``last`` (the manifest) after the others.

    An existing ``last`` is deleted first: while the other files are being replaced the folder
    has no manifest, so a reader refuses it instead of mixing old and new files. The folder as a
    whole is still not atomic: a reader that opened the old manifest just before may read new files.
    """
    marker = join(path, last)
    if fs.exists(marker):
        fs.rm_file(marker)
    for file in sorted(local.iterdir()):
        if file.name != last:
            fs.put_file(str(file), join(path, file.name))
    fs.put_file(str(local / last), marker)
    fs.invalidate_cache(path)
