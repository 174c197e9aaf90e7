"""Combine the shards of a collection into the index's vectors, rows table and bad-image table.

Every shard must be present with the key of the files it covers now (:mod:`timam.index.shards`);
otherwise :class:`MissingShardsError` names the missing ones, the writer each belongs to, and the
commands that finish the job. Vectors come out L2-normalised float32 (FAISS inner product is then
the cosine similarity timam ranks by), row i of the vectors is row i of the rows table.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from timam.index.collection import FILE_COLUMNS, file_keys
from timam.index.shards import load_shard, shard_count, shard_key, shard_path, shard_rows, valid_shard

BAD_COLUMNS = ["path", "size", "mtime_ns", "reason"]


class MissingShardsError(RuntimeError):
    """The shard folder lacks shards of the collection as it is now; the message says how to finish."""


@dataclass
class MergedShards:
    """L2-normalised ``vectors`` (n, d) aligned with ``rows``; ``bad`` lists the images left out."""

    vectors: np.ndarray
    rows: pd.DataFrame
    bad: pd.DataFrame


def _ranges(numbers: list[int]) -> str:
    shown = ", ".join(str(n) for n in numbers[:12])
    return shown + (f" and {len(numbers) - 12} more" if len(numbers) > 12 else "")


def missing_shards(collection: pd.DataFrame, folder: str | Path, shard_size: int, checkpoint_version: str | None):
    """``(metadata per shard or None)`` for every shard of ``collection``, checked against its files."""
    found = []
    for shard in range(shard_count(len(collection), shard_size)):
        key = shard_key(checkpoint_version, file_keys(shard_rows(collection, shard, shard_size)))
        found.append(valid_shard(shard_path(folder, shard), key))
    return found


def missing_message(missing: list[int], total: int, folder: str | Path, writers: int | None) -> str:
    writers_text = ""
    if writers and writers > 1:
        owners = sorted({shard % writers for shard in missing})
        writers_text = (
            f" With {writers} writers, shard j belongs to writer j % {writers}: writer(s) "
            f"{', '.join(f'{owner}/{writers}' for owner in owners)} have not finished; rerun each with "
            f'`kedro run --pipelines index_embed --params "index.shard=<i>/{writers}"` (it resumes), then merge.'
        )
    return (
        f"Index shards {_ranges(missing)} of {total} are missing in {folder} (or were made from files that "
        f"have changed since).{writers_text} To embed every missing shard in one process and merge, run "
        "`kedro run --pipelines index` with index.shard unset (it reuses the finished shards)."
    )


def merge_shards(
    collection: pd.DataFrame,
    folder: str | Path,
    *,
    shard_size: int,
    checkpoint_version: str | None,
    precision: str,
    writers: int | None = None,
) -> MergedShards:
    """Vectors and rows of the collection's good images in collection order, and its bad images.

    Every shard must have been embedded in ``precision`` (a dtype name, as the shards record it):
    an index whose rows were embedded in two precisions would not give its own image score 1.
    """
    headers = missing_shards(collection, folder, shard_size, checkpoint_version)
    missing = [shard for shard, header in enumerate(headers) if header is None]
    if missing:
        raise MissingShardsError(missing_message(missing, len(headers), folder, writers))
    other = [shard for shard, header in enumerate(headers) if header is not None and header["precision"] != precision]
    if other:
        raise MissingShardsError(
            f"Index shards {_ranges(other)} in {folder} were embedded in "
            f"{headers[other[0]]['precision']} (first of them), this run in {precision}: delete those shard files "
            "(or the folder) and run the index pipeline again, or set params embedding.precision to match them"
        )
    good_total = sum(len(header["good"]) for header in headers if header is not None)
    dims = {int(header["embedding_dim"]) for header in headers if header is not None}
    if len(dims) != 1:
        raise MissingShardsError(f"Index shards in {folder} disagree on the embedding size {sorted(dims)}")
    vectors = np.empty((good_total, dims.pop()), dtype=np.float32)
    good_rows: list[np.ndarray] = []
    bad_rows: list[np.ndarray] = []
    reasons: list[str] = []
    filled = 0
    for shard, header in enumerate(headers):
        assert header is not None
        start = shard * shard_size
        good = np.asarray(header["good"], dtype=np.int64)
        if len(good):
            embeddings = load_shard(shard_path(folder, shard)).tensors["embeddings"]
            if len(embeddings) != len(good):
                raise MissingShardsError(
                    f"{shard_path(folder, shard)} holds {len(embeddings)} embeddings for {len(good)} good images; "
                    "delete the file and run the index pipeline again"
                )
            vectors[filled : filled + len(good)] = F.normalize(embeddings.to(torch.float32), dim=1).numpy()
            filled += len(good)
        good_rows.append(start + good)
        bad_rows.append(start + np.asarray([position for position, _ in header["bad"]], dtype=np.int64))
        reasons += [str(reason) for _, reason in header["bad"]]
    columns = [column for column in collection.columns if column in (*FILE_COLUMNS, "caption", "identity")]
    rows = collection.iloc[np.concatenate(good_rows)][columns].reset_index(drop=True)
    bad = collection.iloc[np.concatenate(bad_rows)][FILE_COLUMNS].reset_index(drop=True)
    bad["reason"] = reasons
    return MergedShards(vectors=vectors, rows=rows.astype({"size": "int64", "mtime_ns": "int64"}), bad=bad)
