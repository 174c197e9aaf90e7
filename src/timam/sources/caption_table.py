"""The canonical caption table every dataset reader produces, and the checks it must pass.

One row per caption: caption_id, image_id, image_path, caption, identity, label, split.
``identity`` is the dataset's own id (kept for evaluation); ``label`` is a contiguous index over
training identities only (-1 elsewhere) for the identification loss.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

logger = logging.getLogger(__name__)

COLUMNS = ["caption_id", "image_id", "image_path", "caption", "identity", "label", "split"]
SPLITS = ("train", "val", "test")


class BadInputError(ValueError):
    """Raw data that would silently change the numbers; the message names the row, file and fix."""


def check_captions(table: pd.DataFrame, source: str) -> None:
    """Refuse empty or whitespace-only captions and duplicate caption ids."""
    empty = table["caption"].isna() | (table["caption"].astype(str).str.strip() == "")
    if empty.any():
        row = table[empty].iloc[0]
        raise BadInputError(
            f"{source}: caption {row['caption_id']!r} of image {row['image_path']} is empty "
            f"({int(empty.sum())} empty caption(s) in all). Fix or remove it in the annotation file."
        )
    duplicated = table["caption_id"].duplicated()
    if duplicated.any():
        raise BadInputError(f"{source}: duplicate caption id {table.loc[duplicated, 'caption_id'].iloc[0]!r}")


def check_image_files(table: pd.DataFrame, source: str) -> None:
    """Refuse rows whose image file is missing or empty, naming the first one."""
    for image_path, caption_id in table.drop_duplicates("image_path")[["image_path", "caption_id"]].itertuples(
        index=False
    ):
        path = Path(image_path)
        if not path.is_file():
            raise BadInputError(
                f"{source}: image file {path} (caption {caption_id!r}) does not exist. "
                "Check params source.image_root or restore the file."
            )
        if path.stat().st_size == 0:
            raise BadInputError(f"{source}: image file {path} (caption {caption_id!r}) is empty (0 bytes).")


def check_splits(table: pd.DataFrame, source: str) -> None:
    unknown = sorted(set(table["split"]) - set(SPLITS), key=str)  # a missing split (None/NaN) sorts too
    if unknown:
        raise BadInputError(f"{source}: unknown split name(s) {unknown}; expected {list(SPLITS)}")
    if not (table["split"] == "train").any():
        raise BadInputError(f"{source}: no training rows; the identification loss needs training identities")


def assign_labels(table: pd.DataFrame) -> pd.DataFrame:
    """Contiguous labels 0..C-1 over training identities in sorted order; -1 for val/test rows."""
    train_identities = sorted(table.loc[table["split"] == "train", "identity"].unique())
    index = {identity: label for label, identity in enumerate(train_identities)}
    labelled = table.copy()
    labelled["label"] = [
        index[identity] if split == "train" else -1
        for identity, split in zip(labelled["identity"], labelled["split"], strict=True)
    ]
    return labelled


def finalise_caption_table(table: pd.DataFrame, source: str) -> pd.DataFrame:
    """Check, label and order a reader's rows; log the counts a user should compare with the paper."""
    check_splits(table, source)
    check_captions(table, source)
    check_image_files(table, source)
    table = assign_labels(table)[COLUMNS].reset_index(drop=True)
    table["identity"] = table["identity"].astype(str)
    table["label"] = table["label"].astype("int64")
    for split in SPLITS:
        rows = table[table["split"] == split]
        logger.info(
            "%s %s: %d images, %d captions, %d identities",
            source,
            split,
            rows["image_id"].nunique(),
            len(rows),
            rows["identity"].nunique(),
        )
    return table


def check_split_sizes(
    table: pd.DataFrame, expected: Mapping[str, int], *, source: str, allow_mismatch: bool = False
) -> dict[str, int]:
    """Compare unique images per split with ``expected``; raise (or warn) on a difference.

    Works on reader rows or on the finalised caption table (needs ``image_id`` and ``split``).
    Splits absent from ``expected`` are not checked.  Returns the counted images per split.
    """
    counts = table.groupby("split")["image_id"].nunique()
    found = {split: int(counts.get(split, 0)) for split in expected}
    differ = {split: (found[split], int(count)) for split, count in expected.items() if found[split] != count}
    if not differ:
        logger.info("%s: images per split %s match the published sizes", source, found)
        return found
    detail = ", ".join(f"{split}: {got} found, {want} expected" for split, (got, want) in differ.items())
    message = (
        f"{source}: images per split differ from the published protocol ({detail}). Check that the "
        "annotation file is the complete, unmodified one, that the restval option matches the protocol "
        "you report, and that no rows were quarantined; pass allow_mismatch=True to go on with a subset."
    )
    if not allow_mismatch:
        raise BadInputError(message)
    logger.warning(message)
    return found
