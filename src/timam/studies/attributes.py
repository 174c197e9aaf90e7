"""``params:families.attribute_vocabulary``: the attribute family's vocabulary, its targets and its truth.

The vocabulary (:mod:`timam.sources.attributes`) is fitted once per dataset on the training split
and saved as a versioned catalog artifact (``attribute_vocabulary``); every attribute-hashing row
trains on its targets and records its terms in the checkpoint, so an evaluation, an accuracy report
or a search reads the vocabulary its model was trained with. Where it comes from (``source``):

- ``labels``: the dataset's own attributes -- the demo's (``attributes`` of each ``reid_raw.json``
  record, the generator's truth) or CUB-200-2011's (``cub_root``);
- ``captions``: mined from the training captions (``size`` terms counted ``min_count`` times or more);
- ``auto``: the labels when the data has them, else the captions.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import pandas as pd
from pydantic import PositiveInt

from timam.config import ParameterBlock
from timam.inference.split_data import SplitData
from timam.sources.attributes import (
    AttributeVocabulary,
    caption_targets,
    fit_caption_vocabulary,
    fit_label_vocabulary,
    image_targets,
    label_targets,
    reid_raw_attributes,
)
from timam.sources.cub_attributes import cub_labels_present, read_cub_attributes
from timam.training.hashing import AttributeTargets

logger = logging.getLogger(__name__)

Labels = Mapping[str, Sequence[str]]


class AttributeVocabularyConfig(ParameterBlock):
    """How the attribute vocabulary is fitted on the training split."""

    source: Literal["auto", "labels", "captions"] = "auto"
    """auto (the dataset's labels when it has them, else mined captions) | labels | captions"""
    size: PositiveInt = 64
    """captions: the most frequent terms kept (labels keep every label counted min_count times)"""
    min_count: PositiveInt = 5
    """a term (captions) or label (labels) must occur in this many training captions or images"""
    pairs: bool = True
    """captions: adjacent content-word pairs ("red coat") are terms too"""
    cub_root: str | None = None
    """labels of CUB-200-2011: its CUB_200_2011 folder (attributes/image_attribute_labels.txt)"""


def dataset_labels(raw_annotations: Any, config: AttributeVocabularyConfig) -> dict[str, list[str]] | None:
    """Each image's attribute labels, by the caption table's ``image_id``; None when the data has none.

    The demo's ``reid_raw.json`` records carry ``attributes``; CUB's come from ``cub_root`` (with
    ``source: auto``, only when its labels file is there: the cub env points at it by default); other
    raw data (CUHK-PEDES, UCM-Captions tables, Karpathy files) has none.
    """
    if config.cub_root is not None:
        if config.source == "labels" or cub_labels_present(config.cub_root):
            return read_cub_attributes(config.cub_root)
        logger.info("no CUB-200-2011 attribute labels under %s: the vocabulary is mined from captions", config.cub_root)
    records = raw_annotations if isinstance(raw_annotations, list) else []
    if records and all(isinstance(record, dict) and "attributes" in record for record in records):
        return reid_raw_attributes(records)
    return None


def fit_vocabulary(
    captions: pd.DataFrame, labels: Labels | None, config: AttributeVocabularyConfig
) -> AttributeVocabulary:
    """The vocabulary ``config`` asks for, fitted on the training rows of the caption table."""
    if config.source == "labels" and labels is None:
        raise ValueError(
            "params families.attribute_vocabulary.source is labels, but the raw data has no attribute labels "
            "(the demo's reid_raw.json records carry them; set cub_root for CUB-200-2011); use source captions"
        )
    if labels is not None and config.source != "captions":
        return fit_label_vocabulary(captions, labels, min_count=config.min_count)
    return fit_caption_vocabulary(captions, size=config.size, min_count=config.min_count, pairs=config.pairs)


def _split_captions(captions: pd.DataFrame, data: SplitData) -> list[str]:
    rows = captions[captions["caption_id"].isin(set(data.caption_ids))]
    if rows["caption_id"].tolist() != data.caption_ids:
        raise ValueError(f"the caption table's {data.split!r} rows do not match the split's captions; re-run prepare")
    return rows["caption"].astype(str).tolist()


def _image_labels(labels: Labels | None, data: SplitData) -> list[Sequence[str]]:
    if labels is None:
        raise ValueError("a label vocabulary needs the dataset's labels; the raw data given has none")
    missing = [image for image in data.image_ids if image not in labels]
    if missing:
        raise ValueError(f"{len(missing)} {data.split} image(s) have no attribute labels, e.g. {missing[:3]}")
    return [labels[image] for image in data.image_ids]


def split_targets(
    vocabulary: AttributeVocabulary, captions: pd.DataFrame, data: SplitData, labels: Labels | None
) -> AttributeTargets:
    """The multi-hot targets of a split's images and captions over ``vocabulary``.

    Labels: an image's are its labels, a caption's its image's (AgNet gives each text the attributes
    of its class). Captions: a caption's are its own terms, an image's the union over its captions.
    Also the truth that the test split's attribute predictions are scored against.
    """
    if vocabulary.source == "labels":
        images = label_targets(vocabulary, _image_labels(labels, data))
        return AttributeTargets(images=images, captions=images[data.caption_image])
    texts = _split_captions(captions, data)
    caption_images = [data.image_ids[int(i)] for i in data.caption_image]
    return AttributeTargets(
        images=image_targets(vocabulary, data.image_ids, texts, caption_images),
        captions=caption_targets(vocabulary, texts),
    )


def check_vocabulary_of(checkpoint_metadata: Mapping[str, Any], vocabulary: AttributeVocabulary, where: str) -> None:
    """Refuse a vocabulary other than the one the checkpoint was trained with (its recorded terms)."""
    recorded = checkpoint_metadata.get("attribute_vocabulary", {}).get("terms")
    if recorded is None:
        raise ValueError(f"{where}: the checkpoint records no attribute vocabulary; it is not an attribute model")
    if list(recorded) != list(vocabulary.terms):
        raise ValueError(
            f"{where}: the attribute vocabulary differs from the one the checkpoint was trained with "
            f"({len(recorded)} terms recorded, {len(vocabulary)} given); load the attribute_vocabulary version "
            "saved with it (--load-versions attribute_vocabulary:<version>)"
        )
