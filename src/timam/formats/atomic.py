"""Atomic file writes: a crash never leaves a half-written artifact that a later run would load."""

from __future__ import annotations

import errno
import os
import re
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path


class ArtifactWriteError(OSError):
    """A save the user must unblock (permissions, disk space); the previous file is left untouched."""


def current_host() -> str:
    """This machine's name as temporaries carry it (letters, digits and dashes)."""
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:40] or "localhost"


def temporary_sibling(target: str | os.PathLike[str], kind: str = "tmp") -> Path:
    """A hidden sibling name for a temporary copy of ``target``: ``.<name>.<32 hex>.<pid>@<host>.<kind>``.

    The writer's pid and host are in the name so that :mod:`timam.formats.cleanup` can tell the
    leftovers of a killed writer from the work of one still running; the hex token keeps two
    writers of one process apart. ``kind`` is ``tmp`` (being written) or ``old`` (being replaced).
    """
    target = Path(target)
    return target.with_name(f".{target.name}.{uuid.uuid4().hex}.{os.getpid()}@{current_host()}.{kind}")


@contextmanager
def atomic_path(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; move it onto ``target`` only if the block succeeds.

    The temporary file is a hidden sibling (:func:`temporary_sibling`), so ``os.replace`` is an
    atomic rename on POSIX and Kedro never mistakes it for a version. It is not pre-created, so the
    writer creates it with the usual umask permissions. A permission or disk-space error becomes an
    :class:`ArtifactWriteError` that names the file and the fix; on any failure the temporary file
    (and a folder created for it, such as a new version folder) is removed.
    """
    target = Path(target)
    temporary = temporary_sibling(target)
    created_parent = not target.parent.exists()
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        yield temporary
        os.replace(temporary, target)
    except OSError as error:
        if explained := _explain_write_error(error, target):
            raise explained from error
        raise
    finally:
        temporary.unlink(missing_ok=True)
        if created_parent and not target.exists():
            with suppress(OSError):
                target.parent.rmdir()


def _explain_write_error(error: OSError, target: Path) -> ArtifactWriteError | None:
    """The actionable error for a failed write of ``target``, or None when there is no known fix to name."""
    if isinstance(error, PermissionError):
        directory = _nearest_existing(target.parent)
        return ArtifactWriteError(
            f"Cannot write {target}: {error.strerror or error}. Check write permission on {directory}; "
            "the previous version, if any, is unchanged."
        )
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        mount = _mount_point(_nearest_existing(target.parent))
        return ArtifactWriteError(
            f"Cannot write {target}: {error.strerror or error}. Free disk space on the filesystem mounted at "
            f"{mount} and run again; the previous version, if any, is unchanged."
        )
    return None


def _nearest_existing(directory: Path) -> Path:
    return next(path for path in (directory, *directory.parents) if path.exists())


def _mount_point(directory: Path) -> Path:
    directory = directory.resolve()
    return next(path for path in (directory, *directory.parents) if os.path.ismount(path))
