"""Readers for Karpathy's ``caption_datasets`` JSON files and a check of the published split sizes.

Format (``dataset_flickr30k.json``, ``dataset_flickr8k.json``, ``dataset_coco.json``)::

    {"dataset": "flickr30k",
     "images": [{"filename": "1000092795.jpg", "imgid": 0, "split": "train",
                 "sentids": [0, 1, 2, 3, 4],
                 "sentences": [{"raw": "Two young guys ...", "tokens": [...], "imgid": 0, "sentid": 0},
                               ...]},
                ...]}

COCO entries also carry ``"filepath": "val2014"`` (or ``train2014``) and ``"cocoid"``, and a fourth
split name ``restval`` (the part of val2014 outside Karpathy's 5K val / 5K test).

Rows (see ``caption_table``; ``label`` is added by ``finalise_caption_table``):

* ``caption_id`` = ``str(sentid)``;
* ``image_id`` = ``filename`` (Flickr) or ``filepath/filename`` (COCO); one identity per image, so
  ``identity`` = ``image_id``;
* ``image_path`` = ``image_root/filename`` (Flickr) or ``image_root/filepath/filename`` (COCO);
* ``split``: ``train``/``val``/``test``; COCO ``restval`` becomes ``train`` (``restval="train"``,
  the 113,287-image training set of most retrieval papers) or is left out (``restval="skip"``,
  82,783 images).

Image entries with an empty ``sentences`` list are reported by
``image_checks.report_images_without_captions`` (error by default, or skipped with a warning).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from timam.sources.caption_table import SPLITS, BadInputError
from timam.sources.image_checks import READER_COLUMNS, report_images_without_captions
from timam.sources.paths import path_under_root

logger = logging.getLogger(__name__)

DATASETS = ("flickr8k", "flickr30k", "coco")
RESTVAL_CHOICES = ("train", "skip")

# Unique images per split of Karpathy's files (caption_datasets.zip); 5 captions per image
# (a few COCO images have 6 or 7).  Flickr30K's val holds 1,014 images (5,070 captions); papers
# quote it as "1,000".  COCO restval holds 30,504 images: 82,783 + 30,504 = 113,287.
KARPATHY_SPLIT_SIZES: dict[str, dict[str, int]] = {
    "flickr8k": {"train": 6000, "val": 1000, "test": 1000},
    "flickr30k": {"train": 29000, "val": 1014, "test": 1000},
    "coco": {"train": 82783, "val": 5000, "test": 5000},
}
COCO_RESTVAL_IMAGES = 30504
_ROOT_SETTING = "params source.image_root"


def karpathy_split_sizes(dataset: str, *, restval: str = "train") -> dict[str, int]:
    """Expected images per split for ``read_karpathy(..., dataset=dataset, restval=restval)``."""
    if dataset not in KARPATHY_SPLIT_SIZES:
        raise ValueError(f"dataset is {dataset!r}; expected one of {list(KARPATHY_SPLIT_SIZES)}")
    sizes = dict(KARPATHY_SPLIT_SIZES[dataset])
    if dataset == "coco" and restval == "train":
        sizes["train"] += COCO_RESTVAL_IMAGES
    return sizes


def annotation_images(annotations: Any, file_label: str) -> list[Any]:
    if not isinstance(annotations, Mapping) or "images" not in annotations:
        held = sorted(annotations) if isinstance(annotations, Mapping) else type(annotations).__name__
        raise BadInputError(
            f"{file_label} must be an object with an 'images' list (Karpathy caption_datasets format); "
            f"it holds {held}. Point the annotations at the right file."
        )
    images = annotations["images"]
    if not isinstance(images, list):
        raise BadInputError(f"{file_label}: 'images' is a {type(images).__name__}, not a list")
    return images


def require_image_root(image_root: str | Path, what: str) -> Path:
    image_root = Path(image_root)
    if not image_root.is_dir():
        raise BadInputError(f"Image folder {image_root} for {what} does not exist; set the data_root parameter to it.")
    return image_root


Locate = Callable[[int, Mapping[str, Any]], tuple[str, str, str]]


def karpathy_rows(
    images: list[Any],
    *,
    file_label: str,
    locate: Locate,
    restval: str,
    images_without_captions: str,
) -> pd.DataFrame:
    """Caption rows from Karpathy-style ``images`` entries; ``locate`` gives (image_id, path, identity)."""
    if restval not in RESTVAL_CHOICES:
        raise ValueError(f"restval is {restval!r}; expected one of {list(RESTVAL_CHOICES)}")
    rows: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    without_captions: list[str] = []
    skipped_restval = 0
    for position, image in enumerate(images):
        if not isinstance(image, Mapping):
            raise BadInputError(f"{file_label} images[{position}] is a {type(image).__name__}, not an object")
        missing = [key for key in ("split", "sentences") if key not in image]
        if missing:
            raise BadInputError(f"{file_label} images[{position}] lacks {missing}; it holds {sorted(image)}")
        split = image["split"]
        if split == "restval":
            if restval == "skip":
                skipped_restval += 1
                continue
            split = "train"
        elif split not in SPLITS:
            raise BadInputError(
                f"{file_label} images[{position}] has split {split!r}; expected one of "
                f"{[*SPLITS, 'restval']}. Fix the entry or use the original file."
            )
        image_id, image_path, identity = locate(position, image)
        if image_id in seen:
            raise BadInputError(
                f"{file_label}: image {image_id!r} is listed twice (images[{seen[image_id]}] and "
                f"images[{position}]); remove the repeated entry."
            )
        seen[image_id] = position
        sentences = image["sentences"]
        if not isinstance(sentences, list):
            raise BadInputError(f"{file_label} images[{position}] ({image_id}): 'sentences' is not a list")
        if not sentences:
            without_captions.append(image_id)
            continue
        for index, sentence in enumerate(sentences):
            where = f"{file_label} images[{position}] ({image_id}) sentences[{index}]"
            if not isinstance(sentence, Mapping):
                raise BadInputError(f"{where} is a {type(sentence).__name__}, not an object")
            lacking = [key for key in ("raw", "sentid") if key not in sentence]
            if lacking:
                raise BadInputError(f"{where} lacks {lacking}; it holds {sorted(sentence)}")
            if "imgid" in sentence and "imgid" in image and sentence["imgid"] != image["imgid"]:
                raise BadInputError(
                    f"{where} belongs to imgid {sentence['imgid']} but sits under imgid {image['imgid']}; "
                    "the file is inconsistent, use the original one."
                )
            rows.append(
                {
                    "caption_id": str(sentence["sentid"]),
                    "image_id": image_id,
                    "image_path": image_path,
                    "caption": sentence["raw"],
                    "identity": identity,
                    "split": split,
                }
            )
    if skipped_restval:
        logger.info("%s: left out %d restval images (restval='skip')", file_label, skipped_restval)
    report_images_without_captions(
        without_captions,
        source=file_label,
        policy=images_without_captions,
        fix="Restore their sentences from the original file",
    )
    return pd.DataFrame(rows, columns=READER_COLUMNS)


def read_karpathy(
    annotations: dict[str, Any],
    image_root: str | Path,
    *,
    dataset: str,
    restval: str = "train",
    images_without_captions: str = "error",
) -> pd.DataFrame:
    """Caption rows from a loaded ``dataset_<dataset>.json``; ``image_root`` holds the images.

    For COCO, ``image_root`` is the folder holding ``train2014/`` and ``val2014/``; for Flickr it
    is the folder of the image files (``flickr30k-images/``).
    """
    if dataset not in DATASETS:
        raise ValueError(f"dataset is {dataset!r}; expected one of {list(DATASETS)}")
    file_label = f"dataset_{dataset}.json"
    images = annotation_images(annotations, file_label)
    declared = annotations.get("dataset")
    if declared is not None and declared != dataset:
        raise BadInputError(
            f"The annotation file says dataset {declared!r} but dataset={dataset!r} was asked for; "
            f"point the annotations at dataset_{dataset}.json or change the dataset parameter."
        )
    image_root = require_image_root(image_root, file_label)
    keys = ("filepath", "filename") if dataset == "coco" else ("filename",)

    def locate(position: int, image: Mapping[str, Any]) -> tuple[str, str, str]:
        missing = [key for key in keys if key not in image]
        if missing:
            raise BadInputError(f"{file_label} images[{position}] lacks {missing}; it holds {sorted(image)}")
        relative = "/".join(str(image[key]) for key in keys)
        where = f"{file_label} images[{position}]"
        return relative, str(path_under_root(image_root, relative, where=where, setting=_ROOT_SETTING)), relative

    return karpathy_rows(
        images,
        file_label=file_label,
        locate=locate,
        restval=restval,
        images_without_captions=images_without_captions,
    )
