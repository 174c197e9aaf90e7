"""Find an index folder and a checkpoint file from what a user types: a folder, a dataset root or a version.

Kedro stores a versioned dataset ``<root>`` as ``<root>/<version>/<root name>``, so the index
catalog entry ``data/07_model_output/<dataset>/image_index`` keeps each index in
``image_index/<version>/image_index/`` (manifest.json, index.faiss, rows.parquet) and the
checkpoint in ``model_checkpoint.safetensors/<version>/model_checkpoint.safetensors``. Versions are
timestamps, so the newest sorts last.
"""

from __future__ import annotations

import os
from pathlib import Path

MANIFEST = "manifest.json"
INDEX_GLOB = "data/07_model_output/*/image_index"


def _versions(root: Path, is_complete) -> list[Path]:
    """The version folders of a Kedro dataset root whose payload passes ``is_complete``, oldest first."""
    if not root.is_dir():
        return []
    return sorted(
        (entry for entry in root.iterdir() if entry.is_dir() and is_complete(entry / root.name)),
        key=lambda entry: entry.name,
    )


def _has_manifest(folder: Path) -> bool:
    return (folder / MANIFEST).is_file()


def version_of(path: str | os.PathLike[str]) -> str | None:
    """The Kedro version of a file or folder stored as ``<name>/<version>/<name>``, else None."""
    path = Path(path)
    return path.parent.name if path.parent.parent.name == path.name else None


def latest_index_folder(root: Path) -> Path | None:
    """The newest complete version of the index dataset at ``root``, or None when there is none."""
    versions = _versions(root, _has_manifest)
    return versions[-1] / root.name if versions else None


def find_index_folder(spec: str | os.PathLike[str] | None, *, project: str | os.PathLike[str] = ".") -> Path:
    """The folder holding manifest.json for ``spec``:

    - a folder with manifest.json (one index version),
    - a version folder ``.../image_index/<version>`` or a dataset root ``.../image_index`` (its newest version),
    - a version string, looked up under ``<project>/data/07_model_output/*/image_index/``,
    - None: the newest index version of any dataset under ``<project>``.
    """
    project = Path(project)
    if spec is None:
        found = [folder for root in project.glob(INDEX_GLOB) if (folder := latest_index_folder(root))]
        if not found:
            raise FileNotFoundError(
                f"no image index under {project.resolve() / INDEX_GLOB}; build one with "
                "`kedro run --pipelines index`, or give the index folder"
            )
        return max(found, key=lambda folder: folder.parent.name)
    path = Path(spec)
    if path.is_dir():
        if _has_manifest(path):
            return path
        if _has_manifest(path / path.parent.name):  # a version folder <root>/<version>
            return path / path.parent.name
        if latest := latest_index_folder(path):
            return latest
        raise FileNotFoundError(
            f"{path} holds no image index: no {MANIFEST} there, nor in a version folder <version>/{path.name}/; "
            "give the folder `kedro run --pipelines index` wrote (data/07_model_output/<dataset>/image_index)"
        )
    if os.sep in str(spec) or "/" in str(spec):
        raise FileNotFoundError(f"index folder {path} does not exist")
    matches = sorted(folder for folder in project.glob(f"{INDEX_GLOB}/{spec}/image_index") if _has_manifest(folder))
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise ValueError(
            f"index version {spec!r} exists for several datasets: {[str(m) for m in matches]}; give the folder"
        )
    known = sorted(
        {
            folder.parent.name
            for root in project.glob(INDEX_GLOB)
            for folder in [v / root.name for v in _versions(root, _has_manifest)]
        },
        reverse=True,
    )
    raise FileNotFoundError(
        f"no index version {spec!r} under {project.resolve() / INDEX_GLOB}"
        + (f"; versions there, newest first: {', '.join(known[:5])}" if known else "; there is no index yet")
    )


def find_checkpoint_file(spec: str | os.PathLike[str], *, name: str = "checkpoint") -> Path:
    """A checkpoint file from a file path, a version folder, or the dataset root (its newest version)."""
    path = Path(spec)
    if path.is_file():
        return path
    if path.is_dir():
        if (path / path.parent.name).is_file():  # a version folder <root>/<version>
            return path / path.parent.name
        versions = _versions(path, Path.is_file)
        if versions:
            return versions[-1] / path.name
        raise FileNotFoundError(f"{name} {path} is a folder without a checkpoint version in it")
    raise FileNotFoundError(
        f"{name} {path} does not exist (relative paths start at {Path.cwd()}); give the checkpoint file, or its "
        "dataset folder data/06_models/<dataset>/model_checkpoint.safetensors for the newest"
    )
