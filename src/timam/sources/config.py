"""``params:source``, typed: which reader turns the raw annotations into the caption table, and the
folders and rules it needs. Each default lives here, once, and equals ``conf/base`` (a test checks)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, NonNegativeInt, PositiveInt

from timam.config import ParameterBlock, build, set_by_conf
from timam.sources.registry import READERS


class ResizedImageCacheConfig(ParameterBlock):
    """Pre-resized copies of the images, written once to ``directory`` at ``size`` (height, width)."""

    directory: str = Field(min_length=1)
    """the folder the resized copies are written to"""
    size: tuple[PositiveInt, PositiveInt]
    """[height, width] of the copies"""


def _known_format(name: str) -> str:
    if name not in READERS:
        raise ValueError(f"must be one of the supported formats {sorted(READERS)}")
    return name


class SourceConfig(ParameterBlock):
    """Which reader turns ``raw_annotations`` into the caption table, and the folders it needs.

    Each reader uses some of the location keys: ``image_root`` (cuhk_pedes, karpathy, ucm_karpathy,
    table), ``data_root`` (text_c10), ``image_cache_dir`` (ucm_parquet).
    """

    format: Annotated[str, AfterValidator(_known_format)] = "cuhk_pedes"
    """the raw format: cuhk_pedes | karpathy | text_c10 | table | ucm_karpathy | ucm_parquet"""
    image_root: str | None = set_by_conf(None)
    """the folder relative image paths start from (cuhk_pedes, karpathy, ucm_karpathy, table)"""
    data_root: str | None = None
    """text_c10: the dataset folder (images/, text_c10/, the class lists)"""
    image_cache_dir: str | None = None
    """ucm_parquet: the folder the Parquet's image bytes are written to as JPEG, once"""
    dataset: str | None = None
    """karpathy: which Karpathy split file (flickr30k, coco, ...)"""
    restval: Literal["train", "skip"] = "train"
    """karpathy: what COCO's restval images become: train | skip"""
    val_classes: NonNegativeInt = 0
    """text_c10: the last N train+val classes (sorted) become the validation split"""
    columns: dict[str, str] = Field(default_factory=dict)
    """table: our column name -> yours, e.g. {image_path: file, caption: text, identity: person}"""
    default_split: str = "train"
    """table: the split of rows without one"""
    on_bad_input: Literal["error", "skip"] = "error"
    """error: stop naming the row and the fix | skip: quarantine bad rows"""
    identities_disjoint: bool = True
    """an identity in train and in val/test is an error (person search; false where classes are shared)"""
    check_split_sizes: bool = False
    """cuhk_pedes: the published split sizes are checked"""
    allow_split_mismatch: bool = False
    """cuhk_pedes: warn instead of stopping when the split sizes differ"""
    resized_image_cache: ResizedImageCacheConfig | None = None
    """{directory, size: [height, width]}: pre-resized copies written once (null: read the originals)"""

    def reader_parameters(self) -> dict[str, Any]:
        """The block as the readers of :mod:`timam.sources.registry` take it: the keys that are set."""
        return {name: value for name, value in self.model_dump().items() if value is not None}


def source_config(values: Mapping[str, Any] | SourceConfig | None) -> SourceConfig:
    """Build from ``params:source``; unknown keys are errors naming the nearest known key."""
    return build(SourceConfig, values, "source")
