"""Remove what killed writers left behind: this project's temporaries, and the version folders they emptied.

:func:`timam.formats.atomic.temporary_sibling` names every temporary ``.<name>.<32 hex>.<pid>@<host>.tmp``
(``.old`` for an index folder being replaced); a writer killed before its rename leaves it there for
good. :func:`remove_stale_temporaries` deletes one only when all of these hold:

* its name is this project's (anything else, hidden or not, is never touched);
* it is older than the run that cleans up (``started``): nothing written since then is touched;
* its writer is gone: the pid is not alive on this host, or the temporary is older than
  ``max_age_s`` (a day by default), which is also the only rule for another host's temporaries
  (its pids cannot be checked from here) and for names written before the pid was in them.

A Kedro version folder (``2026-01-02T03.04.05.678Z``) left empty by such a removal is removed
too; an empty version folder that nobody's temporary was in is removed once older than
``max_age_s``. Symbolic links are neither followed nor removed. Local folders only: on an object
store nothing is written under a temporary name.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import shutil
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from timam.formats.atomic import current_host

logger = logging.getLogger(__name__)

DEFAULT_MAX_AGE_S = 24 * 3600
TEMPORARY_NAME = re.compile(
    r"^\.(?P<target>.+)\.(?P<token>[0-9a-f]{32})(?:\.(?P<pid>[0-9]+)@(?P<host>[A-Za-z0-9-]+))?\.(?:tmp|old)$"
)
VERSION_NAME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}\.\d{2}\.\d{2}\.\d{3}Z$")


@dataclass
class Cleanup:
    """What one sweep removed (paths) and kept (live writers' temporaries), and the bytes freed."""

    removed: list[Path] = field(default_factory=list)
    kept: list[Path] = field(default_factory=list)
    freed_bytes: int = 0


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this machine (one of another user counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def is_stale(path: Path, *, started: float, max_age_s: float, host: str | None = None) -> bool | None:
    """True: a temporary of this project whose writer is gone; False: one to keep; None: not one of ours."""
    match = TEMPORARY_NAME.match(path.name)
    if match is None:
        return None
    try:
        modified = path.lstat().st_mtime
    except FileNotFoundError:
        return False  # removed meanwhile by someone else
    if modified >= started:
        return False
    if started - modified > max_age_s:
        return True
    pid, writer_host = match["pid"], match["host"]
    return pid is not None and writer_host == (host or current_host()) and not pid_alive(int(pid))


def remove_stale_temporaries(
    roots: Iterable[str | os.PathLike[str]],
    *,
    shallow: Iterable[str | os.PathLike[str]] = (),
    started: float | None = None,
    max_age_s: float = DEFAULT_MAX_AGE_S,
) -> Cleanup:
    """Remove the stale temporaries in each folder of ``roots`` and below, and directly in each of ``shallow``.

    ``shallow`` is for the folder of a file named somewhere (a catalog entry's parent): its
    temporaries sit beside it, and the rest of that folder may be anything, of any size.
    """
    started = time.time() if started is None else started
    report = Cleanup()
    deep = _distinct(Path(root) for root in roots)
    for root in deep:
        if root.is_dir():
            _sweep(root, started=started, max_age_s=max_age_s, report=report, recursive=True)
    for folder in {Path(folder).resolve() for folder in shallow}:
        if folder.is_dir() and not any(folder.is_relative_to(root) for root in deep):
            _sweep(folder, started=started, max_age_s=max_age_s, report=report, recursive=False)
    if report.removed:
        logger.info(
            "Removed %d file(s) and folder(s) left by killed runs (%.1f MB): %s%s",
            len(report.removed),
            report.freed_bytes / 1e6,
            ", ".join(str(path) for path in report.removed[:3]),
            " ..." if len(report.removed) > 3 else "",
        )
    return report


def _distinct(roots: Iterable[Path]) -> list[Path]:
    """The roots without those inside another root (each folder is walked once)."""
    resolved = sorted({root.resolve() for root in roots}, key=lambda path: len(path.parts))
    kept: list[Path] = []
    for root in resolved:
        if not any(root.is_relative_to(other) for other in kept):
            kept.append(root)
    return kept


def _sweep(folder: Path, *, started: float, max_age_s: float, report: Cleanup, recursive: bool) -> None:
    try:
        entries = list(os.scandir(folder))
    except OSError as error:  # unreadable or vanished: not ours to fix
        logger.debug("Cleanup skipped %s: %s", folder, error)
        return
    removed_here = False
    for entry in entries:
        # Only a hidden .tmp/.old name can be ours: the cheap test first, since data/ may hold millions of images.
        if entry.name.startswith(".") and entry.name.endswith((".tmp", ".old")) and not entry.is_symlink():
            path = Path(entry.path)
            stale = is_stale(path, started=started, max_age_s=max_age_s)
            if stale:
                size = _size(path)
                if _remove_temporary(path):
                    report.removed.append(path)
                    report.freed_bytes += size
                    removed_here = True
                continue
            if stale is False:
                report.kept.append(path)
                continue
        if recursive and entry.is_dir(follow_symlinks=False):  # never a symbolic link
            path = Path(entry.path)
            _sweep(path, started=started, max_age_s=max_age_s, report=report, recursive=True)
            if VERSION_NAME.match(entry.name) and _old(path, started, max_age_s) and _remove_if_empty(path):
                report.removed.append(path)
    # The version folder a killed writer created for its file, now empty again.
    if removed_here and VERSION_NAME.match(folder.name) and _remove_if_empty(folder):
        report.removed.append(folder)


@dataclass(frozen=True)
class ProjectFolders:
    """Where temporaries can be: folders walked whole (``deep``) and folders of named files (``shallow``)."""

    deep: tuple[Path, ...] = ()
    shallow: tuple[Path, ...] = ()


def project_folders(project: Path, catalog: Mapping[str, Any], globals_: Mapping[str, Any]) -> ProjectFolders:
    """The project's ``data/``, every folder in the ``caches`` block of globals, every local catalog path
    (a versioned dataset's root holds its versions) and, shallow, each catalog path's parent folder."""
    named = [path for value in _filepaths(catalog) if (path := local_folder(value, project))]
    caches = globals_.get("caches") or {}
    cache_folders = [path for value in caches.values() if (path := local_folder(value, project))]
    return ProjectFolders(deep=(project / "data", *named, *cache_folders), shallow=tuple(path.parent for path in named))


def _filepaths(config: Any) -> Iterator[str]:
    """Every ``filepath``-like value (``filepath``, ``checkpoint_filepath``) of a catalog config, nested ones too."""
    if isinstance(config, Mapping):
        for key, value in config.items():
            if isinstance(key, str) and key.endswith("filepath") and isinstance(value, str):
                yield value
            else:
                yield from _filepaths(value)


def local_folder(value: object, project: Path) -> Path | None:
    """The local path a config value names (relative to ``project``), cut before any ``{placeholder}``;
    None for a URL (``s3://...``) or a value that is not a path."""
    if not isinstance(value, str) or not value or "://" in value:
        return None
    parts = Path(value).parts
    fixed = [part for part in itertools.takewhile(lambda part: "{" not in part, parts)]
    if not fixed:
        return None
    return project / Path(*fixed)


def _old(folder: Path, started: float, max_age_s: float) -> bool:
    try:
        return started - folder.stat().st_mtime > max_age_s
    except FileNotFoundError:
        return False


def _size(path: Path) -> int:
    try:
        if not path.is_dir():
            return path.lstat().st_size
        return sum(file.lstat().st_size for file in _files(path))
    except OSError:
        return 0


def _files(folder: Path) -> Iterator[Path]:
    for base, _, names in os.walk(folder):
        yield from (Path(base) / name for name in names)


def _remove_temporary(path: Path) -> bool:
    """Remove a temporary file or folder; False when it vanished first or cannot be removed."""
    try:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
    except FileNotFoundError:
        return False
    except OSError as error:
        logger.warning("Could not remove %s, left by a killed run: %s", path, error)
        return False
    return True


def _remove_if_empty(folder: Path) -> bool:
    """``rmdir``: refused by the system when a writer has put anything in the folder meanwhile."""
    try:
        folder.rmdir()
    except OSError:
        return False
    return True
