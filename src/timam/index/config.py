"""``params:index``, typed: which collection to index, how it is sharded and embedded, the index budget.

Built by the parameter hook at the start of every run, so nothing here touches the disk: whether the
collection exists is checked by the node that lists it. Each default lives here, once.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, NonNegativeInt, PositiveInt

from timam.config import ParameterBlock, build, set_by_conf

TABLE_SUFFIXES = (".csv", ".tsv", ".parquet")
CollectionColumn = Literal["image_path", "caption", "identity"]


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


class CollectionConfig(ParameterBlock):
    """The images to index: ``path`` is a folder (every image below it, any depth) or a ``.csv``,
    ``.tsv`` or ``.parquet`` table with one image path per row (``columns`` maps ``image_path`` and the
    optional ``caption`` and ``identity`` to the table's names, as for the generic caption table;
    ``image_root``: the folder the table's relative paths start from, default the table's folder)."""

    path: str | None = set_by_conf(None)
    """a folder (every image below it, any depth, the formats Pillow reads) or a .csv/.tsv/.parquet
    table with one image path per row (conf/base: the demo images)"""
    image_root: str | None = None
    """a table: the folder its relative paths start from (default: the table's folder)"""
    columns: dict[CollectionColumn, str] = Field(default_factory=dict)
    """a table: {image_path: <column>, caption: <column>, identity: <column>}"""

    @property
    def is_table(self) -> bool:
        return str(self.path or "").lower().endswith(TABLE_SUFFIXES)


def _check_budget(value: str) -> str:
    memory_budget_bytes(value)
    return value


def _check_shard(value: str | None) -> str | None:
    parse_shard(value, environ={})  # the torchrun fallback is read where the shards are written
    return value


class IndexConfig(ParameterBlock):
    """``kedro run --pipelines index``: embed ``collection`` in shards of ``shard_size`` images under
    ``shard_dir/<checkpoint version>/`` (writer ``shard``, "i/N"), then build a FAISS index within
    ``memory_budget`` (exact flat search up to ``flat_max`` images; None: the planner's default).
    How the images are embedded (device, precision, batch) is ``params:embedding``."""

    collection: CollectionConfig = CollectionConfig()
    shard_size: PositiveInt = 2048
    """images per shard: a crash loses at most one shard's work"""
    shard: Annotated[str | None, AfterValidator(_check_shard)] = None
    """"i/N": this writer embeds shards j with j % N == i (default: torchrun's RANK/WORLD_SIZE, else
    every shard); then `kedro run --pipelines index` merges"""
    shard_dir: str = set_by_conf("data/07_model_output/index_shards")
    """<this>/<checkpoint version>/shard-*.safetensors (conf/base: under the dataset's folder)"""
    memory_budget: Annotated[str, AfterValidator(_check_budget)] = "1GB"
    """the FAISS index must fit in this (1GB = 2**30 bytes)"""
    flat_max: NonNegativeInt | None = None
    """exact (flat) search up to this many images; null: the planner's default (100000)"""
    seed: int = 0
    """sample and k-means seed of an approximate index"""
    show_progress: bool = True
    """a progress bar while embedding"""

    @property
    def budget_bytes(self) -> int:
        return memory_budget_bytes(self.memory_budget)

    @property
    def writer(self) -> ShardSpec:
        """This process's share of the shards (``shard``, else torchrun's rank, else all)."""
        return parse_shard(self.shard)


def index_config(values: Mapping[str, Any] | IndexConfig | None) -> IndexConfig:
    """Build from ``params:index``."""
    return build(IndexConfig, values, "index")
