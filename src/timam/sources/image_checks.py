"""Row-level checks of a reader's caption rows, and what to do with the rows that fail them.

``inspect_image(path)`` decodes one image file exactly the way training will (Pillow: open,
verify, reopen, load, EXIF transpose, convert to RGB) and returns ``None`` for a usable image or a
short reason.  Greyscale, CMYK, palette, alpha and EXIF-rotated images are *good*:
``timam.inference.images.load_rgb`` converts them to upright RGB.

``apply_bad_input_policy(table, policy=..., source=...)`` runs every check over a reader's rows
(columns ``caption_id, image_id, image_path, caption, identity, split``):

========================  ==================================================================
reason                    rows it marks
========================  ==================================================================
``image missing``         the image file does not exist (wrong data root, deleted file)
``image zero-byte``       the file is empty
``image unreadable/...``  Pillow cannot open, verify or fully decode it (truncated JPEG, ...)
``empty caption``         caption is missing, empty or whitespace only
``duplicate row``         a later exact copy of an earlier row (the first copy is kept)
``duplicate caption_id``  every row of an id shared by rows with different content
``identity also in X``    a *train* row whose identity also appears in split X (val or test),
                          only with ``identities_disjoint=True`` (zero-shot / person-ReID
                          protocols); the train row is quarantined so the published evaluation
                          split keeps its size
========================  ==================================================================

``policy="error"`` raises :class:`BadInputError` for the first failing row, naming the row, the file
and the fix.  ``policy="skip"`` returns ``(kept, quarantine)``: the quarantine holds the failing rows
with an extra ``reason`` column, and the counts per reason are logged as a warning.

Images that have *no* caption never become a row, so they cannot be seen here.  Each reader finds
them in its own raw format and passes them to :func:`report_images_without_captions` (argument
``images_without_captions="error"`` raises, ``"skip"`` drops them with a warning):

* ``karpathy.read_karpathy`` / ``ucm_captions.read_ucm_karpathy``: an ``images[]`` entry with an
  empty ``sentences`` list;
* ``text_c10.read_text_c10``: an image under ``images/<class>/`` without a ``text_c10`` file, or a
  text file with no line at all;
* ``ucm_captions.read_ucm_parquet``: a row whose ``captions`` list is empty;
* ``generic_table.read_caption_table``: cannot occur (the table has one row per caption); an empty
  caption cell is an ``empty caption`` row here.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
from PIL import Image, ImageOps

from timam.sources.caption_table import BadInputError

logger = logging.getLogger(__name__)

READER_COLUMNS = ["caption_id", "image_id", "image_path", "caption", "identity", "split"]
POLICIES = ("error", "skip")
MISSING_CAPTION_POLICIES = ("error", "skip")

_FIXES = {
    "image missing": "Check the data_root / image_root parameter, or restore the file",
    "image zero-byte": "Re-download the image, or run with params source.on_bad_input: skip to quarantine it",
    "image unreadable/corrupt": "Re-download the image, or run with params source.on_bad_input: skip to quarantine it",
    "image not a file": "Point image_root at the folder the annotation paths are relative to",
    "empty caption": "Fix or remove the caption in the annotation file, or run with params source.on_bad_input: skip",
    "duplicate row": "Remove the repeated entry from the annotation file, or run with params source.on_bad_input: skip",
    "duplicate caption_id": "Give every caption its own id in the annotation file",
    "identity also in": "Fix the split assignment so that train identities are disjoint from val/test",
}


def inspect_image(path: str | Path) -> str | None:
    """``None`` when ``path`` decodes to an RGB image as in training; otherwise the reason it does not."""
    path = Path(path)
    if not path.exists():
        return "missing"
    if not path.is_file():
        return "not a file"
    if path.stat().st_size == 0:
        return "zero-byte"
    try:
        with Image.open(path) as image:
            image.verify()  # structure and checksums (PNG CRCs); the image must be reopened afterwards
        with Image.open(path) as image:
            image.load()  # full decode: truncated JPEG data fails here
            upright = ImageOps.exif_transpose(image)
            rgb = upright.convert("RGB")
            width, height = rgb.size
    except Exception as error:  # noqa: BLE001 -- any decoder failure makes the file unusable
        return f"unreadable/corrupt: {type(error).__name__}: {error}"
    if width == 0 or height == 0:
        return f"unreadable/corrupt: empty image {width}x{height}"
    return None


def report_images_without_captions(images: Sequence[str], *, source: str, policy: str, fix: str) -> None:
    """Raise (``policy="error"``) or warn (``"skip"``) about images that have no caption at all."""
    if policy not in MISSING_CAPTION_POLICIES:
        raise ValueError(f"images_without_captions is {policy!r}; expected one of {list(MISSING_CAPTION_POLICIES)}")
    if not images:
        return
    shown = ", ".join(str(image) for image in list(images)[:5])
    more = f" and {len(images) - 5} more" if len(images) > 5 else ""
    if policy == "error":
        raise BadInputError(
            f"{source}: {len(images)} image(s) have no caption: {shown}{more}. {fix}, "
            "or pass images_without_captions='skip' to leave them out."
        )
    logger.warning("%s: left out %d image(s) without captions: %s%s", source, len(images), shown, more)


def _reason_kind(reason: str) -> str:
    for kind in _FIXES:
        if reason.startswith(kind):
            return kind
    return reason


def _is_empty(caption: object) -> bool:
    if caption is None or (isinstance(caption, float) and caption != caption):
        return True
    if caption is pd.NA:
        return True
    return str(caption).strip() == ""


def find_bad_rows(table: pd.DataFrame, *, identities_disjoint: bool = False) -> pd.Series:
    """Per row, ``"; "``-joined reasons it fails (empty string for a good row); index as ``table``."""
    missing = [column for column in READER_COLUMNS if column not in table.columns]
    if missing:
        raise BadInputError(f"caption rows lack column(s) {missing}; they hold {list(table.columns)}")
    reasons: list[list[str]] = [[] for _ in range(len(table))]

    image_reason = {path: inspect_image(path) for path in pd.unique(table["image_path"].astype(str))}
    for position, path in enumerate(table["image_path"].astype(str)):
        if image_reason[path] is not None:
            reasons[position].append(f"image {image_reason[path]}")

    for position, caption in enumerate(table["caption"]):
        if _is_empty(caption):
            reasons[position].append("empty caption")

    ids = table["caption_id"].astype(str)
    content = table[READER_COLUMNS].astype(str)
    exact_copy = content.duplicated(keep="first").to_numpy()
    distinct = content.drop_duplicates()
    conflicting = set(distinct.loc[distinct["caption_id"].duplicated(keep=False), "caption_id"])
    for position, caption_id in enumerate(ids):
        if caption_id in conflicting:
            reasons[position].append("duplicate caption_id")
        elif exact_copy[position]:
            reasons[position].append("duplicate row")

    if identities_disjoint:
        identities = table["identity"].astype(str)
        splits = table["split"].astype(str)
        by_split = {split: set(identities[splits == split]) for split in ("val", "test")}
        for position, (identity, split) in enumerate(zip(identities, splits, strict=True)):
            if split != "train":
                continue
            for other, members in by_split.items():
                if identity in members:
                    reasons[position].append(f"identity also in {other}")

    return pd.Series(["; ".join(r) for r in reasons], index=table.index, dtype=object)


def apply_bad_input_policy(
    table: pd.DataFrame, *, policy: str, source: str, identities_disjoint: bool = False
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Check every row; raise on the first bad one (``"error"``) or split off a quarantine (``"skip"``)."""
    if policy not in POLICIES:
        raise ValueError(f"source.on_bad_input is {policy!r}; expected one of {list(POLICIES)}")
    reasons = find_bad_rows(table, identities_disjoint=identities_disjoint)
    bad = reasons != ""
    counts = Counter(_reason_kind(part) for reason in reasons[bad] for part in reason.split("; "))
    if policy == "error" and bad.any():
        position = int(bad.to_numpy().nonzero()[0][0])
        row = table.iloc[position]
        reason = reasons.iloc[position]
        fix = _FIXES.get(_reason_kind(reason.split("; ")[0]), "Fix the row in the raw data")
        summary = ", ".join(f"{kind}: {count}" for kind, count in sorted(counts.items()))
        raise BadInputError(
            f"{source}: row {position} (caption {row['caption_id']!r}, image {row['image_path']}, "
            f"split {row['split']!r}, identity {row['identity']!r}) is bad: {reason}. {fix}. "
            f"Problems in all: {summary}."
        )
    kept = table[~bad].reset_index(drop=True)
    quarantine = table[bad].copy()
    quarantine["reason"] = reasons[bad]
    quarantine = quarantine.reset_index(drop=True)
    if bad.any():
        logger.warning(
            "%s: quarantined %d of %d caption rows (%d images): %s",
            source,
            int(bad.sum()),
            len(table),
            quarantine["image_path"].nunique(),
            ", ".join(f"{kind}: {count}" for kind, count in sorted(counts.items())),
        )
    else:
        logger.info("%s: all %d caption rows passed the input checks", source, len(table))
    return kept, quarantine
