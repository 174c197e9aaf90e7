"""The prepare stage's parameter blocks, typed: ``params:source`` (which reader, where the data is) and
``params:tokenization`` (tokenizer, length, token cache). Each default lives here, once."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from timam.config_tree import build_config
from timam.sources.caption_table import BadInputError
from timam.sources.image_checks import POLICIES
from timam.sources.karpathy import RESTVAL_CHOICES
from timam.sources.registry import READERS


@dataclass(frozen=True)
class ResizedImageCacheConfig:
    """Pre-resized copies of the images, written once to ``directory`` at ``size`` (height, width)."""

    directory: str | None = None
    size: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if not self.directory or self.size is None or len(self.size) != 2:
            raise ValueError(
                "params source.resized_image_cache needs {directory: <folder>, size: [height, width]}, "
                f"got directory={self.directory!r}, size={self.size!r}"
            )
        object.__setattr__(self, "size", tuple(int(v) for v in self.size))


@dataclass(frozen=True)
class SourceConfig:
    """Which reader turns ``raw_annotations`` into the caption table, and the folders it needs.

    Each reader uses some of the location keys: ``image_root`` (cuhk_pedes, karpathy, ucm_karpathy,
    table), ``data_root`` (text_c10), ``image_cache_dir`` (ucm_parquet).
    """

    format: str = "cuhk_pedes"
    image_root: str | None = None
    data_root: str | None = None
    image_cache_dir: str | None = None
    # karpathy: which Karpathy split file (flickr30k, coco, ...) and what to do with COCO's restval
    dataset: str | None = None
    restval: str = "train"
    # text_c10: the last N train+val classes (sorted) become the validation split
    val_classes: int = 0
    # table: our column name -> yours, and the split of rows without one
    columns: dict[str, str] = field(default_factory=dict)
    default_split: str = "train"
    on_bad_input: str = "error"  # error: stop naming the row | skip: quarantine bad rows
    identities_disjoint: bool = False  # an identity in train and val/test is an error
    check_split_sizes: bool = False  # cuhk_pedes: the published split sizes are checked
    allow_split_mismatch: bool = False  # warn instead of stopping when they differ
    resized_image_cache: ResizedImageCacheConfig | None = None

    def __post_init__(self) -> None:
        if self.format not in READERS:  # the registry's own error, raised before any data is read
            raise BadInputError(f"params source.format is {self.format!r}; supported formats: {sorted(READERS)}")
        if self.on_bad_input not in POLICIES:
            raise ValueError(f"params source.on_bad_input must be one of {list(POLICIES)}, got {self.on_bad_input!r}")
        if self.restval not in RESTVAL_CHOICES:
            raise ValueError(f"params source.restval must be one of {list(RESTVAL_CHOICES)}, got {self.restval!r}")
        if self.val_classes < 0:
            raise ValueError(f"params source.val_classes must be >= 0, got {self.val_classes}")

    def reader_parameters(self) -> dict[str, Any]:
        """The block as the readers of :mod:`timam.sources.registry` take it: the keys that are set."""
        return {name: value for name, value in asdict(self).items() if value is not None}


@dataclass(frozen=True)
class TokenizationConfig:
    """``tokenizer``: "offline:minilm" (packaged) or any hub name / directory; keep it equal to
    ``model.text_model``. Token ids are cached under ``cache_dir``, keyed by the captions."""

    tokenizer: str = "offline:minilm"
    max_length: int = 64
    cache_dir: str = "data/04_feature/token_cache"

    def __post_init__(self) -> None:
        if self.max_length < 2:
            raise ValueError(f"params tokenization.max_length must be >= 2, got {self.max_length}")


def source_config(values: Mapping[str, Any] | SourceConfig | None) -> SourceConfig:
    """Build from ``params:source``; unknown keys are errors naming the nearest known key."""
    return build_config(SourceConfig, values, "source")


def tokenization_config(values: Mapping[str, Any] | TokenizationConfig | None) -> TokenizationConfig:
    """Build from ``params:tokenization``."""
    return build_config(TokenizationConfig, values, "tokenization")
