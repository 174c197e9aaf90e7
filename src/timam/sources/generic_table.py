"""Reader for any caption table (CSV or Parquet, loaded as a DataFrame): one row per caption.

``columns`` maps *our* names to the table's column names; a name left out of ``columns`` is looked
up under its own name.  Example for a CSV with ``file,text,person`` columns::

    read_caption_table(table, "data/01_raw/imgs", columns={"image_path": "file", "caption": "text",
                                                           "identity": "person"})

=============  ========  ======================================================================
our name       needed    meaning and default when the table has no such column
=============  ========  ======================================================================
``image_path`` required  image file, relative to ``image_root`` (an absolute path is kept as is;
                         a relative one may not leave ``image_root`` with ``..``: see
                         ``sources.paths``); ``image_id`` is this value as written in the table
``caption``    required  the caption text (an empty cell is an empty caption for the row checks)
``identity``   optional  identity used for evaluation and labels; default: one per image
                         (the ``image_path`` value)
``split``      optional  ``train``/``val``/``test`` (``dev``, ``valid``, ``validation`` mean
                         ``val``; case and surrounding spaces are ignored); default:
                         ``default_split`` for every row
``caption_id`` optional  unique caption id; default: ``<image_path>#<n>``, n counting the
                         image's distinct captions from 0 in table order: a row that repeats
                         an image's caption text gets the same id, so the row checks report
                         it as a duplicate (an error, or quarantined with ``on_bad_input:
                         skip``); give a ``caption_id`` column to keep repeated captions
=============  ========  ======================================================================

A missing required column, a mapping to a column the table lacks, or an unknown key in ``columns``
raises :class:`BadInputError` listing the table's columns.  Empty cells in ``image_path``,
``identity`` or ``split`` raise, naming the row.  ``load_table(path)`` reads ``.csv``, ``.tsv`` or
``.parquet`` files for use outside the Kedro catalog.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from timam.sources.caption_table import SPLITS, BadInputError
from timam.sources.encoding import decode_problem
from timam.sources.image_checks import READER_COLUMNS
from timam.sources.paths import path_under_root

REQUIRED = ("image_path", "caption")
OPTIONAL = ("identity", "split", "caption_id")
SPLIT_ALIASES = {"dev": "val", "valid": "val", "validation": "val"}
_ROOT_SETTING = "params source.image_root"


def load_table(path: str | Path) -> pd.DataFrame:
    """Load a caption table from ``.csv``, ``.tsv`` or ``.parquet``; cells stay strings where text."""
    path = Path(path)
    if not path.is_file():
        raise BadInputError(f"Caption table {path} does not exist; set the annotations path parameter to it.")
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return pd.read_parquet(path)
    if suffix in (".csv", ".tsv"):
        try:
            return pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",", dtype=str, keep_default_na=False)
        except UnicodeDecodeError as error:
            found = undecodable_table(str(path), path.read_bytes(), "utf-8", "Re-save it as UTF-8 (iconv -t utf-8).")
            if found is None:
                raise
            raise found from error
    raise BadInputError(f"Caption table {path}: unknown file type {suffix!r}; use .csv, .tsv or .parquet")


# What to do about a raw table the catalog reads (raw_annotations, a pandas.CSVDataset) in another encoding.
CATALOG_ENCODING_FIX = (
    "Read it in its own encoding with load_args: {encoding: <name>} (often latin-1 or cp1252) on its "
    "entry in the catalog (raw_annotations in conf/<env>/catalog.yml), or re-save it as UTF-8."
)


def undecodable_table(label: str, data: bytes, encoding: str, fix: str) -> BadInputError | None:
    """The error for a table whose bytes ``encoding`` cannot decode, naming line and byte; None if they decode."""
    problem = decode_problem(data, encoding)
    if problem is None:
        return None
    return BadInputError(f"Caption table {label} is not valid {encoding}: {problem} (the header is line 1). {fix}")


def _blank(values: pd.Series) -> pd.Series:
    return values.isna() | (values.astype(str).str.strip() == "")


def read_caption_table(
    table: pd.DataFrame,
    image_root: str | Path,
    *,
    columns: dict[str, str] | None = None,
    default_split: str = "train",
) -> pd.DataFrame:
    """Caption rows from a generic table; see the module docstring for ``columns``."""
    columns = dict(columns or {})
    available = [str(column) for column in table.columns]
    unknown = sorted(set(columns) - set(REQUIRED) - set(OPTIONAL))
    if unknown:
        raise BadInputError(
            f"columns maps unknown name(s) {unknown}; the names are {[*REQUIRED, *OPTIONAL]} "
            f"(the table holds {available})"
        )
    if default_split not in SPLITS:
        raise BadInputError(f"default_split is {default_split!r}; expected one of {list(SPLITS)}")
    image_root = Path(image_root)
    if not image_root.is_dir():
        raise BadInputError(f"Image folder {image_root} does not exist; set the data_root parameter to it.")

    found: dict[str, str] = {}
    for name in (*REQUIRED, *OPTIONAL):
        column = columns.get(name, name)
        if column in table.columns:
            found[name] = column
        elif name in REQUIRED or name in columns:
            raise BadInputError(
                f"The caption table has no column {column!r} for {name}; it holds {available}. "
                f"Map it with columns={{'{name}': '<column name>'}}."
            )

    def required_cells(name: str) -> pd.Series:
        values = table[found[name]]
        blank = _blank(values)
        if blank.any():
            position = int(blank.to_numpy().nonzero()[0][0])
            raise BadInputError(
                f"Caption table row {position}: column {found[name]!r} ({name}) is empty "
                f"({int(blank.sum())} empty cell(s) in all); fill it in or remove the row."
            )
        return values.astype(str).str.strip()

    image_ids = required_cells("image_path")
    captions = table[found["caption"]]
    captions = captions.where(captions.notna(), "").astype(str)
    identities = required_cells("identity") if "identity" in found else image_ids
    if "split" in found:
        splits = required_cells("split").str.lower().replace(SPLIT_ALIASES)
        unknown_splits = sorted(set(splits) - set(SPLITS))
        if unknown_splits:
            position = int((~splits.isin(SPLITS)).to_numpy().nonzero()[0][0])
            raise BadInputError(
                f"Caption table row {position}: split {splits.iloc[position]!r} in column {found['split']!r} is "
                f"not one of {list(SPLITS)} (unknown values {unknown_splits}); fix the split column."
            )
    else:
        splits = pd.Series(default_split, index=table.index)
    if "caption_id" in found:
        caption_ids = required_cells("caption_id")
    else:
        # n numbers an image's distinct captions, so an exact repeat shares its first copy's id and the
        # row checks report it as a duplicate (error or quarantine) instead of keeping it twice.
        # (the (image, caption) groups are numbered in order of first appearance; ranked per image)
        pairs = pd.DataFrame({"image": image_ids, "caption": captions}).groupby(["image", "caption"], sort=False)
        numbers = pairs.ngroup().groupby(image_ids).rank(method="dense").astype("int64") - 1
        caption_ids = image_ids + "#" + numbers.astype(str)

    rows = pd.DataFrame(
        {
            "caption_id": caption_ids.to_numpy(),
            "image_id": image_ids.to_numpy(),
            "image_path": [
                str(path_under_root(image_root, path, where=f"Caption table row {position}", setting=_ROOT_SETTING))
                for position, path in enumerate(image_ids)
            ],
            "caption": captions.to_numpy(),
            "identity": identities.to_numpy(),
            "split": splits.to_numpy(),
        },
        columns=READER_COLUMNS,
    )
    return rows.astype({"caption_id": str, "identity": str, "split": str})
