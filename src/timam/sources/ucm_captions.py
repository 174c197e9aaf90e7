"""Readers for UCM-Captions (Qu et al. 2016): the Parquet copies (256 or 128 px) and the original ``dataset.json``.

Identity is the scene class (21 UC Merced Land Use classes, 100 images each); the official split is
per image, so **all 21 identities appear in train, val and test** (call the row checks with
``identities_disjoint=False``).  Published counts: 2,100 images / 10,500 captions; 1,680 / 210 / 210
images per split (``UCM_SPLIT_SIZES``, for ``caption_table.check_split_sizes``).

``read_ucm_parquet`` reads ``shared/data/ucm_captions/ucm_captions_256.parquet`` (the original
images, mostly 256x256; the ``ucm_captions`` env's default) or its 128x128 twin
``ucm_captions_128.parquet``: the same rows, one per image (``image_id`` ``ucm_0001``..,
``class_name``, ``identity_id``, ``split``, ``image_jpeg`` bytes, ``captions`` and ``sent_ids``
lists).  The embedded JPEGs are written as they are, whatever their size, once to
``image_cache_dir/<image_id>.jpg`` (atomically; a file of the same size is kept), so the rest of the
pipeline reads image paths; give each copy its own folder.  ``caption_id`` = ``str(sent_id)``.

``read_ucm_karpathy`` reads the original Karpathy-style ``dataset.json`` (``images[]`` with
``filename`` ``1.tif``..``2100.tif``, ``imgid``, ``split``, ``sentences[]`` with ``raw``, ``sentid``)
and the ``imgs/`` folder of TIFFs.  The class is not in the file: image ``N.tif`` is class
``UCM_CLASSES[(N - 1) // 100]`` (alphabetical order; see the data README).  Its rows use the same
``image_id`` (``ucm_NNNN``), ``caption_id`` and identities as the Parquet reader.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from timam.formats.atomic import atomic_path
from timam.sources.caption_table import SPLITS, BadInputError
from timam.sources.image_checks import READER_COLUMNS, report_images_without_captions
from timam.sources.karpathy import annotation_images, karpathy_rows, require_image_root
from timam.sources.paths import path_under_root

logger = logging.getLogger(__name__)

UCM_CLASSES = (
    "agricultural", "airplane", "baseballdiamond", "beach", "buildings", "chaparral", "denseresidential",
    "forest", "freeway", "golfcourse", "harbor", "intersection", "mediumresidential", "mobilehomepark",
    "overpass", "parkinglot", "river", "runway", "sparseresidential", "storagetanks", "tenniscourt",
)  # fmt: skip
IMAGES_PER_CLASS = 100
UCM_SPLIT_SIZES = {"train": 1680, "val": 210, "test": 210}
UCM_CAPTIONS = 10500
PARQUET_COLUMNS = ("image_id", "class_name", "split", "image_jpeg", "captions", "sent_ids")
_FILENAME = re.compile(r"^(\d+)\.tif$")


def write_once(data: bytes, path: Path) -> bool:
    """Write ``data`` to ``path`` atomically unless a file of the same size is there; return whether it wrote."""
    if path.is_file() and path.stat().st_size == len(data):
        return False
    with atomic_path(path) as temporary:
        temporary.write_bytes(data)
    return True


def read_ucm_parquet(
    table: pd.DataFrame, image_cache_dir: str | Path, *, images_without_captions: str = "error"
) -> pd.DataFrame:
    """Caption rows of the UCM-Captions Parquet table; its images are cached as JPEG files."""
    source = "ucm_captions parquet"
    missing = [column for column in PARQUET_COLUMNS if column not in table.columns]
    if missing:
        raise BadInputError(
            f"{source} lacks column(s) {missing}; it holds {list(table.columns)}. "
            "Point the dataset at shared/data/ucm_captions/ucm_captions_256.parquet (or its 128 px copy)."
        )
    image_cache_dir = Path(image_cache_dir)
    image_cache_dir.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    without_captions: list[str] = []
    written = 0
    for position, record in enumerate(table.itertuples(index=False)):
        image_id = str(record.image_id)
        where = f"{source} row {position} ({image_id})"
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", image_id):
            raise BadInputError(f"{where}: image_id is not a plain file name; the file is not the UCM copy.")
        class_name = str(record.class_name)
        if class_name not in UCM_CLASSES:
            raise BadInputError(f"{where}: class_name {class_name!r} is not one of the 21 UCM classes")
        identity_id = getattr(record, "identity_id", None)
        if identity_id is not None and not 0 <= int(identity_id) < len(UCM_CLASSES):
            raise BadInputError(f"{where}: identity_id {identity_id} is outside 0..{len(UCM_CLASSES) - 1}")
        if identity_id is not None and UCM_CLASSES[int(identity_id)] != class_name:
            raise BadInputError(
                f"{where}: identity_id {identity_id} is {UCM_CLASSES[int(identity_id)]!r} but class_name is "
                f"{class_name!r}; the file is inconsistent, re-download it and check its sha256."
            )
        if record.split not in SPLITS:
            raise BadInputError(f"{where}: split {record.split!r} is not one of {list(SPLITS)}")
        captions = [] if record.captions is None else list(record.captions)
        sent_ids = [] if record.sent_ids is None else list(record.sent_ids)
        if len(captions) != len(sent_ids):
            raise BadInputError(
                f"{where}: {len(captions)} captions but {len(sent_ids)} sent_ids; the file is damaged, "
                "re-download it and check its sha256."
            )
        data = record.image_jpeg
        if data is None or len(data) == 0:
            raise BadInputError(f"{where}: no image bytes; the file is damaged, re-download it and check its sha256.")
        if not captions:
            without_captions.append(image_id)
            continue
        image_path = image_cache_dir / f"{image_id}.jpg"
        written += write_once(bytes(data), image_path)
        for caption, sent_id in zip(captions, sent_ids, strict=True):
            rows.append(
                {
                    "caption_id": str(int(sent_id)),
                    "image_id": image_id,
                    "image_path": str(image_path),
                    "caption": caption,
                    "identity": class_name,
                    "split": str(record.split),
                }
            )
    logger.info("%s: wrote %d new image file(s) to %s", source, written, image_cache_dir)
    report_images_without_captions(
        without_captions, source=source, policy=images_without_captions, fix="Re-download the file"
    )
    return pd.DataFrame(rows, columns=READER_COLUMNS)


def ucm_class_of(number: int) -> str:
    """Scene class of UCM-Captions image ``<number>.tif`` (1..2100)."""
    if not 1 <= number <= len(UCM_CLASSES) * IMAGES_PER_CLASS:
        raise ValueError(f"UCM-Captions image numbers run 1..{len(UCM_CLASSES) * IMAGES_PER_CLASS}, got {number}")
    return UCM_CLASSES[(number - 1) // IMAGES_PER_CLASS]


def read_ucm_karpathy(
    annotations: Mapping[str, Any], image_root: str | Path, *, images_without_captions: str = "error"
) -> pd.DataFrame:
    """Caption rows of the original UCM-Captions ``dataset.json``; ``image_root`` holds ``1.tif``.."""
    file_label = "UCM-Captions dataset.json"
    images = annotation_images(annotations, file_label)
    image_root = require_image_root(image_root, file_label)

    def locate(position: int, image: Mapping[str, Any]) -> tuple[str, str, str]:
        filename = str(image.get("filename", ""))
        match = _FILENAME.match(filename)
        number = int(match.group(1)) if match else 0
        if not 1 <= number <= len(UCM_CLASSES) * IMAGES_PER_CLASS:
            raise BadInputError(
                f"{file_label} images[{position}] has filename {filename!r}; UCM-Captions names its images "
                "1.tif..2100.tif, and the class is derived from that number. Use the original dataset.json."
            )
        where = f"{file_label} images[{position}]"
        image_path = path_under_root(image_root, filename, where=where, setting="params source.image_root")
        return f"ucm_{number:04d}", str(image_path), ucm_class_of(number)

    return karpathy_rows(
        images,
        file_label=file_label,
        locate=locate,
        restval="train",
        images_without_captions=images_without_captions,
    )
