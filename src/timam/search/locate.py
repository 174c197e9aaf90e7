"""Find an index folder and a checkpoint file from what a user types: a folder, a dataset root, a version or a URL.

Kedro stores a versioned dataset ``<root>`` as ``<root>/<version>/<root name>``, so the index
catalog entry ``data/07_model_output/<dataset>/image_index`` keeps each index in
``image_index/<version>/image_index/`` (manifest.json, index.faiss, rows.parquet) and the
checkpoint in ``model_checkpoint.safetensors/<version>/model_checkpoint.safetensors``. Versions are
timestamps, so the newest sorts last; a version folder without its payload (a run killed before
its save, an upload still under way) is never "the newest".

Folders are listed through fsspec, so every form may also be a URL (``s3://bucket/.../image_index``):
then the result is that URL (a ``str``), and credentials come from the filesystem's environment
(for S3: ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_ENDPOINT_URL`` ...). Local results
are ``Path`` objects, spelled as given.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

from fsspec import AbstractFileSystem

from timam.formats.storage import filesystem, is_local, join, url, version_folders

MANIFEST = "manifest.json"
INDEX_GLOB = "data/07_model_output/*/image_index"


def _result(fs: AbstractFileSystem, path: str) -> Path | str:
    return Path(path) if is_local(fs) else url(fs, path)


def version_of(path: str | os.PathLike[str]) -> str | None:
    """The Kedro version of a file or folder stored as ``<name>/<version>/<name>`` (a path or URL), else None."""
    parts = PurePosixPath(os.fspath(path).rstrip("/"))
    return parts.parent.name if parts.parent.parent.name == parts.name else None


def latest_index_folder(root: str | os.PathLike[str]) -> Path | str | None:
    """The newest complete version of the index dataset at ``root``, or None when there is none."""
    fs, path = filesystem(root)
    versions = version_folders(fs, path, MANIFEST)
    return _result(fs, join(path, versions[-1], PurePosixPath(path).name)) if versions else None


def _has_manifest(fs: AbstractFileSystem, folder: str) -> bool:
    return fs.isfile(join(folder, MANIFEST))


def find_index_folder(spec: str | os.PathLike[str] | None, *, project: str | os.PathLike[str] = ".") -> Path | str:
    """The folder holding manifest.json for ``spec``:

    - a folder with manifest.json (one index version),
    - a version folder ``.../image_index/<version>`` or a dataset root ``.../image_index`` (its newest version),
    - a version string, looked up under ``<project>/data/07_model_output/*/image_index/``,
    - None: the newest index version of any dataset under ``<project>``.

    The first two may be URLs (``s3://bucket/.../image_index``).
    """
    project = Path(project)
    if spec is None:
        found = [folder for root in project.glob(INDEX_GLOB) if (folder := latest_index_folder(root))]
        if not found:
            raise FileNotFoundError(
                f"no image index under {project.resolve() / INDEX_GLOB}; build one with "
                "`kedro run --pipelines index`, or give the index folder"
            )
        return max(found, key=lambda folder: PurePosixPath(os.fspath(folder)).parent.name)
    fs, path = filesystem(spec)
    if fs.isdir(path):
        name = PurePosixPath(path).name
        if _has_manifest(fs, path):
            return _result(fs, path)
        version_folder = join(path, PurePosixPath(path).parent.name)  # a version folder <root>/<version>
        if _has_manifest(fs, version_folder):
            return _result(fs, version_folder)
        if latest := latest_index_folder(spec):
            return latest
        raise FileNotFoundError(
            f"{url(fs, path)} holds no image index: no {MANIFEST} there, nor in a version folder <version>/{name}/; "
            "give the folder `kedro run --pipelines index` wrote (data/07_model_output/<dataset>/image_index)"
        )
    if not is_local(fs) or os.sep in str(spec) or "/" in str(spec):
        raise FileNotFoundError(f"index folder {url(fs, path)} does not exist")
    matches = sorted(
        folder for folder in project.glob(f"{INDEX_GLOB}/{spec}/image_index") if (folder / MANIFEST).is_file()
    )
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise ValueError(
            f"index version {spec!r} exists for several datasets: {[str(m) for m in matches]}; give the folder"
        )
    local = filesystem(project)[0]
    known = sorted(
        {version for root in project.glob(INDEX_GLOB) for version in version_folders(local, str(root), MANIFEST)},
        reverse=True,
    )
    raise FileNotFoundError(
        f"no index version {spec!r} under {project.resolve() / INDEX_GLOB}"
        + (f"; versions there, newest first: {', '.join(known[:5])}" if known else "; there is no index yet")
    )


def find_checkpoint_file(spec: str | os.PathLike[str], *, name: str = "checkpoint") -> Path | str:
    """A checkpoint file (a path or URL) from a file, a version folder, or the dataset root (its newest version)."""
    fs, path = filesystem(spec)
    if fs.isfile(path):
        return _result(fs, path)
    if fs.isdir(path):
        version_file = join(path, PurePosixPath(path).parent.name)  # a version folder <root>/<version>
        if fs.isfile(version_file):
            return _result(fs, version_file)
        versions = version_folders(fs, path)
        if versions:
            return _result(fs, join(path, versions[-1], PurePosixPath(path).name))
        raise FileNotFoundError(f"{name} {url(fs, path)} is a folder without a checkpoint version in it")
    if not is_local(fs):
        raise FileNotFoundError(f"{name} {url(fs, path)} does not exist")
    raise FileNotFoundError(
        f"{name} {path} does not exist (relative paths start at {Path.cwd()}); give the checkpoint file, or its "
        "dataset folder data/06_models/<dataset>/model_checkpoint.safetensors for the newest"
    )
