"""``params:index``, typed: which collection to index, how it is sharded and embedded, the index budget.

Built by the parameter hook at the start of every run, so nothing here touches the disk: whether the
collection exists is checked by the node that lists it. Each default lives here, once.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from timam.config_tree import build_config
from timam.inference.device import PRECISIONS

TABLE_SUFFIXES = (".csv", ".tsv", ".parquet")
COLLECTION_COLUMNS = ("image_path", "caption", "identity")


def memory_budget_bytes(value: str | int | float) -> int:
    """``index.memory_budget`` in bytes, read as the index planner reads it (``"1GB"`` is 2**30)."""
    from timam.index.faiss_index import parse_bytes  # here: FAISS loads only when an index block is built

    try:
        size = parse_bytes(value)
    except ValueError as error:
        raise ValueError(f"params index.memory_budget: {error}") from error
    if size <= 0:
        raise ValueError(f'params index.memory_budget must be a positive size such as "1GB", got {value!r}')
    return size


@dataclass(frozen=True)
class ShardSpec:
    """Writer ``index`` of ``count`` disjoint writers: it embeds the shards j with j % count == index."""

    index: int = 0
    count: int = 1

    def owns(self, shard: int) -> bool:
        return shard % self.count == self.index

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def parse_shard(value: Any, environ: Mapping[str, str] | None = None) -> ShardSpec:
    """``"i/N"`` -> writer i of N; unset -> torchrun's ``RANK``/``WORLD_SIZE`` when set, else the one writer 0/1."""
    if value is None or str(value).strip() == "":
        environ = os.environ if environ is None else environ
        if "RANK" in environ and "WORLD_SIZE" in environ:
            value = f"{environ['RANK']}/{environ['WORLD_SIZE']}"
        else:
            return ShardSpec()
    text = str(value).strip()
    parts = text.split("/")
    try:
        index, count = (int(part) for part in parts) if len(parts) == 2 else (-1, 0)
    except ValueError:
        index, count = -1, 0
    if count < 1 or not 0 <= index < count:
        raise ValueError(
            f'params index.shard must read "i/N" with 0 <= i < N (writer i of N disjoint writers), got {value!r}; '
            'e.g. --params "index.shard=0/2" and "index.shard=1/2" in two processes'
        )
    return ShardSpec(index, count)


@dataclass(frozen=True)
class CollectionConfig:
    """The images to index: ``path`` is a folder (every image below it, any depth) or a ``.csv``,
    ``.tsv`` or ``.parquet`` table with one image path per row (``columns`` maps ``image_path`` and the
    optional ``caption`` and ``identity`` to the table's names, as for the generic caption table;
    ``image_root``: the folder the table's relative paths start from, default the table's folder)."""

    path: str | None = None
    image_root: str | None = None
    columns: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = sorted(set(self.columns) - set(COLLECTION_COLUMNS))
        if unknown:
            raise ValueError(
                f"params index.collection.columns maps unknown name(s) {unknown}; the names are "
                f"{list(COLLECTION_COLUMNS)} (our name: your column)"
            )

    @property
    def is_table(self) -> bool:
        return str(self.path or "").lower().endswith(TABLE_SUFFIXES)


@dataclass(frozen=True)
class IndexConfig:
    """``kedro run --pipelines index``: embed ``collection`` in shards of ``shard_size`` images under
    ``shard_dir/<checkpoint version>/`` (writer ``shard``, "i/N"), then build a FAISS index within
    ``memory_budget`` (exact flat search up to ``flat_max`` images; None: the planner's default)."""

    collection: CollectionConfig = field(default_factory=CollectionConfig)
    shard_size: int = 2048
    shard: str | None = None
    shard_dir: str = "data/07_model_output/index_shards"
    batch_size: int = 64
    device: str = "auto"
    precision: str = "auto"
    memory_budget: str = "1GB"
    flat_max: int | None = None
    seed: int = 0
    show_progress: bool = True

    def __post_init__(self) -> None:
        for name in ("shard_size", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"params index.{name} must be a positive integer, got {getattr(self, name)!r}")
        if self.flat_max is not None and int(self.flat_max) < 0:
            raise ValueError(f"params index.flat_max must be >= 0 or null, got {self.flat_max!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"params index.precision must be one of {list(PRECISIONS)}, got {self.precision!r}")
        memory_budget_bytes(self.memory_budget)
        parse_shard(self.shard, environ={})  # the torchrun fallback is read where the shards are written

    @property
    def budget_bytes(self) -> int:
        return memory_budget_bytes(self.memory_budget)

    @property
    def writer(self) -> ShardSpec:
        """This process's share of the shards (``shard``, else torchrun's rank, else all)."""
        return parse_shard(self.shard)


def index_config(values: Mapping[str, Any] | IndexConfig | None) -> IndexConfig:
    """Build from ``params:index``."""
    return build_config(IndexConfig, values, "index")
