"""An image collection as a table of files: a folder tree of images, or a CSV/Parquet table of paths.

:func:`list_collection` returns one row per image, in a deterministic order, with the columns
``path`` (as listed: below the folder, or the table's root joined with the table's cell), ``size``
(bytes) and ``mtime_ns`` (the file's key: a change to either re-embeds the file's shard), plus
``caption`` and ``identity`` when a table has them. A listed path that is missing (a table row whose
file was deleted) keeps ``size = mtime_ns = -1``; it is reported as a bad image, not an error.

* A folder: every file below it, at any depth, whose suffix is one Pillow opens (the formats
  registered in ``PIL.Image.OPEN``, without the stub formats Pillow cannot decode itself); hidden
  files and folders (``.name``) are skipped, symlinked folders are not followed. Sorted by the path
  below the folder, folder by folder, so the order never depends on the file system.
* A table: read by :func:`timam.sources.generic_table.load_table`; ``columns`` maps our names
  ``image_path`` (required), ``caption`` and ``identity`` (optional) to the table's, with the rules
  and errors of :func:`timam.sources.generic_table.read_caption_table`. Table order; a path that
  appears in several rows (one row per caption) is indexed once, with its first row's caption.
"""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path

import pandas as pd
from PIL import Image, ImageFile

from timam.index.config import CollectionConfig
from timam.sources.caption_table import BadInputError
from timam.sources.generic_table import load_table, read_caption_table

FILE_COLUMNS = ["path", "size", "mtime_ns"]
_NO_CAPTION = "__timam_no_caption__"


@cache
def image_suffixes() -> frozenset[str]:
    """Lower-case suffixes of the formats Pillow can open and decode (``.jpg``, ``.png``, ``.tif`` ...)."""
    Image.init()
    decodable = {
        name
        for name, (factory, _) in Image.OPEN.items()
        if not (isinstance(factory, type) and issubclass(factory, ImageFile.StubImageFile))
    }
    return frozenset(suffix.lower() for suffix, name in Image.registered_extensions().items() if name in decodable)


def _file_key(path: str) -> tuple[int, int]:
    try:
        stat = os.stat(path)
    except OSError:
        return -1, -1
    return stat.st_size, stat.st_mtime_ns


def folder_images(folder: str | Path) -> list[str]:
    """Every image file below ``folder`` (any depth), sorted by its path below the folder."""
    root = Path(folder)
    if not root.is_dir():
        raise BadInputError(
            f"Image collection folder {root} does not exist (relative paths start at {Path.cwd()}). "
            "Run `make run` first for the demo images, or point params index.collection.path at your folder "
            "or at a .csv/.parquet table of image paths."
        )
    suffixes = image_suffixes()
    found: list[tuple[tuple[str, ...], str]] = []
    for directory, folders, files in os.walk(root, followlinks=False):
        folders[:] = [name for name in folders if not name.startswith(".")]
        below = Path(directory).relative_to(root).parts
        for name in files:
            if not name.startswith(".") and os.path.splitext(name)[1].lower() in suffixes:
                found.append(((*below, name), os.path.join(directory, name)))
    found.sort()
    return [path for _, path in found]


def table_images(config: CollectionConfig) -> pd.DataFrame:
    """``path`` plus ``caption``/``identity`` where the table has them: one row per distinct path."""
    table_path = Path(str(config.path))
    table = load_table(table_path)
    optional = [name for name in ("caption", "identity") if name in config.columns or name in table.columns]
    columns: dict[str, str] = {str(name): column for name, column in config.columns.items()}
    mapped = {name: columns.get(name, name) for name in ("image_path", *optional)}
    absent = {name: column for name, column in mapped.items() if column not in table.columns}
    if absent:
        name, column = next(iter(absent.items()))
        raise BadInputError(
            f"Collection table {table_path} has no column {column!r} for {name}; it holds "
            f"{[str(c) for c in table.columns]}. Map it with params index.collection.columns.{name}: <column name>."
        )
    if "caption" not in optional:  # the caption reader requires one; an index does not
        table = table.assign(**{_NO_CAPTION: ""})
        mapped["caption"] = _NO_CAPTION
    # Only our columns: a split or caption_id column of the table means nothing to an index.
    table = table[[column for column in dict.fromkeys(mapped.values()) if column in table.columns]]
    root = Path(config.image_root) if config.image_root else table_path.parent
    try:
        rows = read_caption_table(table, root, columns=mapped)
    except BadInputError as error:
        raise BadInputError(
            f"Collection table {table_path}: {error} (for an index, set the mapping in params "
            "index.collection.columns, and the folder of relative paths in index.collection.image_root)"
        ) from error
    first = ~rows["image_path"].duplicated(keep="first")
    listed = pd.DataFrame({"path": rows.loc[first, "image_path"].astype(str).to_numpy()})
    for name in optional:
        listed[name] = rows.loc[first, name].astype(str).to_numpy()
    return listed


def list_collection(config: CollectionConfig) -> pd.DataFrame:
    """The collection's images in order, with ``path, size, mtime_ns`` (and ``caption``, ``identity``)."""
    if config.path is None or not str(config.path).strip():
        raise BadInputError(
            "params index.collection.path is not set: give a folder of images or a .csv/.parquet table of "
            'image paths, e.g. --params "index.collection.path=data/01_raw/photos"'
        )
    if config.is_table:
        listed = table_images(config)
    else:
        if config.columns or config.image_root:
            raise BadInputError(
                f"params index.collection.columns and image_root apply to a table; {config.path} is a folder "
                "(a table's file name ends in .csv, .tsv or .parquet)"
            )
        listed = pd.DataFrame({"path": folder_images(str(config.path))})
    keys = [_file_key(path) for path in listed["path"]]
    listed.insert(1, "size", pd.array([size for size, _ in keys], dtype="int64"))
    listed.insert(2, "mtime_ns", pd.array([mtime for _, mtime in keys], dtype="int64"))
    if listed.empty:
        raise BadInputError(
            f"Image collection {config.path} lists no images (a folder: no file with an image suffix such as "
            ".jpg or .png below it; a table: no rows). Point params index.collection.path at your images."
        )
    return listed.reset_index(drop=True)


def file_keys(rows: pd.DataFrame) -> list[list[object]]:
    """``[path, size, mtime_ns]`` per row: what identifies a file's content without reading it."""
    return [[str(p), int(s), int(m)] for p, s, m in zip(rows["path"], rows["size"], rows["mtime_ns"], strict=True)]
