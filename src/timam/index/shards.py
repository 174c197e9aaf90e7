"""Embedding a collection in shards that survive a crash and are reused while their files are unchanged.

Shard j holds the collection's rows ``[j * shard_size, (j + 1) * shard_size)``. It is one tensor
bundle (safetensors), ``<folder>/shard-<j:06d>.safetensors``, written atomically when the shard is
finished, with the embeddings of its good images and, in its header, its **key**: a sha256 over the
checkpoint version and the ``[path, size, mtime_ns]`` of each of its files. The folder belongs to one
checkpoint version (``<shard_dir>/<version>/``).

* Resume: a crash or ``kill -9`` loses at most the shard being embedded; the rerun finds every
  finished shard by its key and starts at the first one missing.
* Reuse: an unchanged collection and checkpoint reuse every shard; a changed, added or removed file
  changes the key of its shard only (an insertion shifts the files of every later shard, so those
  are re-embedded too). Device and precision are not part of the key.
* Disjoint writers: writer ``i/N`` embeds only the shards j with ``j % N == i``, so N processes (or
  torchrun ranks) can write one folder at once; :mod:`timam.index.merge` combines them.
* Bad images are recorded in their shard (position and reason), so a reused shard still reports
  them; they never stop a run.
* Shared storage: ``shard_dir`` may be a URL (``s3://bucket/shards``), so writers on several
  machines fill one folder; each shard is one PUT, whole or absent. Credentials come from the
  filesystem's environment (``AWS_*`` for S3): parameters are no place for secrets.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from safetensors import safe_open
from tqdm.auto import tqdm

from timam.formats.storage import filesystem, is_remote, join
from timam.formats.tensor_bundle import TensorBundle, bundle_bytes, bundle_from_bytes, load_bundle, save_bundle
from timam.index import embedding
from timam.index.collection import file_keys
from timam.index.config import ShardSpec
from timam.inference.device import dtype_name
from timam.models.families import EmbeddingModel

logger = logging.getLogger(__name__)

SHARD_FORMAT = "timam-index-shard/1"


def shard_count(images: int, shard_size: int) -> int:
    return -(-images // shard_size)


def _child(folder: str | Path, name: str) -> Path | str:
    """``folder/name``: a Path for a local folder, a URL string for a remote one (``s3://...``)."""
    return join(os.fspath(folder), name) if is_remote(folder) else Path(folder) / name


def shard_path(folder: str | Path, shard: int) -> Path | str:
    return _child(folder, f"shard-{shard:06d}.safetensors")


def checkpoint_folder(shard_dir: str | Path, checkpoint_version: str | None) -> Path | str:
    """The shard folder of one checkpoint version (``unversioned`` for a checkpoint without one)."""
    return _child(shard_dir, checkpoint_version or "unversioned")


def shard_rows(collection: pd.DataFrame, shard: int, shard_size: int) -> pd.DataFrame:
    return collection.iloc[shard * shard_size : (shard + 1) * shard_size]


def shard_key(checkpoint_version: str | None, files: list[list[Any]]) -> str:
    """sha256 over the checkpoint version and each file's ``[path, size, mtime_ns]``, in order."""
    text = json.dumps({"format": SHARD_FORMAT, "checkpoint": checkpoint_version, "files": files}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def read_shard_header(path: str | Path) -> dict[str, Any] | None:
    """The metadata of a shard file without reading its tensors; None when absent or unreadable."""
    try:
        if is_remote(path):
            header = _remote_header(os.fspath(path))
        else:
            with safe_open(str(path), framework="pt") as handle:
                header = handle.metadata() or {}
        metadata = json.loads(header.get("timam_metadata", "{}"))
    except Exception:  # noqa: BLE001 -- a foreign or damaged file is a missing shard, re-embedded
        return None
    return metadata if metadata.get("format") == SHARD_FORMAT else None


def _remote_header(path: str) -> dict[str, str]:
    """The safetensors ``__metadata__`` of a remote file, from two ranged reads (not the whole object)."""
    fs, inner = filesystem(path)
    with fs.open(inner, "rb") as handle:
        size = int.from_bytes(handle.read(8), "little")
        return json.loads(handle.read(size)).get("__metadata__") or {}


def valid_shard(path: str | Path, key: str) -> dict[str, Any] | None:
    """The shard's metadata when ``path`` holds a finished shard with ``key``, else None."""
    metadata = read_shard_header(path)
    return metadata if metadata is not None and metadata.get("key") == key else None


def load_shard(path: str | Path) -> TensorBundle:
    if is_remote(path):
        fs, inner = filesystem(path)
        return bundle_from_bytes(fs.cat_file(inner), os.fspath(path))
    return load_bundle(str(path))


def save_shard(bundle: TensorBundle, path: str | Path) -> None:
    """Write a finished shard: atomically on the local disk, as one PUT (whole or nothing) on an object store."""
    if is_remote(path):
        fs, inner = filesystem(path)
        fs.pipe_file(inner, bundle_bytes(bundle))
    else:
        save_bundle(bundle, str(path))


@dataclass
class ShardRun:
    """What one writer did: the folder, how many shards the collection has, and which this writer
    embedded, reused or owns (``writer``: "i/N")."""

    folder: str
    checkpoint_version: str | None
    shard_size: int
    shards: int
    writer: str
    embedded: list[int] = field(default_factory=list)
    reused: list[int] = field(default_factory=list)
    bad_images: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def embed_shard(
    model: EmbeddingModel,
    rows: pd.DataFrame,
    *,
    shard: int,
    key: str,
    checkpoint_version: str | None,
    batch_size: int,
    device: torch.device,
    precision: str,
    show_progress: bool,
    desc: str,
) -> TensorBundle:
    """One shard's bundle: good embeddings, their positions in the shard, and each bad file's reason."""
    paths = [str(path) for path in rows["path"]]
    # Missing and empty files are known from the listing; only the rest reach the decoder.
    bad = {p: ("missing" if size < 0 else "zero-byte") for p, size in enumerate(rows["size"]) if size <= 0}
    todo = [p for p in range(len(paths)) if p not in bad]
    embedded = embedding.embed_files(
        model,
        [paths[p] for p in todo],
        batch_size=batch_size,
        device=device,
        precision=precision,
        desc=desc,
        show_progress=show_progress,
    )
    bad.update({todo[p]: reason for p, reason in embedded.bad.items()})
    good = [todo[p] for p in embedded.good]
    metadata = {
        "format": SHARD_FORMAT,
        "shard": shard,
        "key": key,
        "checkpoint_version": checkpoint_version,
        "files": file_keys(rows),
        "good": good,
        "bad": [[p, bad[p]] for p in sorted(bad)],
        "embedding_dim": int(embedded.embeddings.shape[1]),
        "device": device.type,
        "precision": dtype_name(device, precision),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    return TensorBundle(tensors={"embeddings": embedded.embeddings.contiguous()}, metadata=metadata)


def write_shards(
    model: EmbeddingModel,
    collection: pd.DataFrame,
    *,
    folder: str | Path,
    checkpoint_version: str | None,
    shard_size: int,
    writer: ShardSpec,
    batch_size: int,
    device: torch.device,
    precision: str,
    show_progress: bool = True,
) -> ShardRun:
    """Embed this writer's shards of ``collection`` that ``folder`` lacks (``model`` is on ``device``)."""
    started = time.perf_counter()
    total = shard_count(len(collection), shard_size)
    run = ShardRun(str(folder), checkpoint_version, shard_size, total, str(writer))
    owned = [j for j in range(total) if writer.owns(j)]
    todo = []
    for shard in owned:
        rows = shard_rows(collection, shard, shard_size)
        key = shard_key(checkpoint_version, file_keys(rows))
        metadata = valid_shard(shard_path(folder, shard), key)
        if metadata is None:
            todo.append((shard, rows, key))
        else:
            run.reused.append(shard)
            run.bad_images += len(metadata["bad"])
    logger.info(
        "Index shards in %s: %d in all, writer %s owns %d: %d reused, %d to embed (%d images)",
        folder,
        total,
        writer,
        len(owned),
        len(run.reused),
        len(todo),
        sum(len(rows) for _, rows, _ in todo),
    )
    images = tqdm(
        total=sum(len(rows) for _, rows, _ in todo), desc="index images", unit="img", disable=not show_progress
    )
    for number, (shard, rows, key) in enumerate(todo, start=1):
        bundle = embed_shard(
            model,
            rows,
            shard=shard,
            key=key,
            checkpoint_version=checkpoint_version,
            batch_size=batch_size,
            device=device,
            precision=precision,
            show_progress=show_progress,
            desc=f"index shard {shard} ({number}/{len(todo)})",
        )
        save_shard(bundle, shard_path(folder, shard))
        run.embedded.append(shard)
        bad = bundle.metadata["bad"]
        run.bad_images += len(bad)
        if bad:
            logger.warning(
                "Index shard %d: skipped %d bad image(s), e.g. %s: %s", shard, len(bad), *_first_bad(rows, bad)
            )
        images.update(len(rows))
    images.close()
    run.seconds = time.perf_counter() - started
    return run


def _first_bad(rows: pd.DataFrame, bad: list[list[Any]]) -> tuple[str, str]:
    position, reason = bad[0]
    return str(rows["path"].iloc[int(position)]), str(reason)
