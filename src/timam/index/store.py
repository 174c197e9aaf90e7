"""An image index on disk: the FAISS index, its manifest and the row table, saved and loaded whole.

A folder holds ``index.faiss`` (``faiss.write_index``), ``manifest.json`` (``INDEX_FORMAT``, the
checkpoint that embedded the images, sizes, the collection fingerprint, the plan) and
``rows.parquet`` (one row per index id: path, size, mtime_ns, optional caption / identity). A save
writes a hidden sibling folder and renames it into place, so a crash never leaves a half index
that a later load would take; a load checks that the three agree and names the folder when not.
The folder may be a URL (``s3://...``): FAISS reads and writes local files only, so a remote index
passes through a local temporary folder, and it is uploaded manifest last (see :func:`save_image_index`).

Search on a flat index returns exactly timam's ranking (``timam.retrieval.ranking.topk_indices``
without normalisation): see :class:`timam.index.faiss_index.ExactFlatSearch`.

A binary index (a hashing model's packed codes, :mod:`timam.index.binary_index`) lives in the same
folder, same files: the manifest's ``code_bits`` says so (and is absent from float manifests), and
``index.faiss`` is then written by ``faiss.write_index_binary``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import faiss
import numpy as np
import pandas as pd

from timam.formats.atomic import temporary_sibling
from timam.formats.storage import fetch_folder, filesystem, is_remote, publish_folder, url
from timam.index.binary_index import BinarySearch, apply_binary_search_params
from timam.index.faiss_index import (
    BINARY_KINDS,
    ExactFlatSearch,
    IndexPlan,
    apply_search_params,
    check_vectors,
    search_index,
    sort_results,
)

INDEX_FORMAT = "timam-image-index/1"
INDEX_FILE = "index.faiss"
MANIFEST_FILE = "manifest.json"
ROWS_FILE = "rows.parquet"
REQUIRED_COLUMNS = ("path", "size", "mtime_ns")


class IndexFormatError(ValueError):
    """An index folder that is incomplete, corrupt or inconsistent; the message names the folder."""


@dataclass(frozen=True)
class IndexManifest:
    """What an index was built from: checkpoint, embedding size, image count, collection, FAISS plan,
    and how its queries must be embedded to land in the same space: the compute dtype of the image
    embeddings (``precision``: "float32" / "bfloat16") and the tokenizer and token length (None in
    indexes written before they were recorded). ``code_bits``: None for float embeddings; K for a
    binary index of packed K-bit codes (then ``embedding_dim`` is K too, FAISS's ``d``)."""

    checkpoint_version: str | None
    checkpoint_path: str | None
    embedding_dim: int
    image_count: int
    collection_fingerprint: str
    plan: IndexPlan
    created_at: str
    precision: str | None = None
    tokenizer: str | None = None
    max_length: int | None = None
    code_bits: int | None = None

    @property
    def is_binary(self) -> bool:
        return self.code_bits is not None

    def to_dict(self) -> dict[str, Any]:
        binary = {} if self.code_bits is None else {"code_bits": int(self.code_bits)}
        return binary | {
            "format": INDEX_FORMAT,
            "checkpoint_version": self.checkpoint_version,
            "checkpoint_path": self.checkpoint_path,
            "embedding_dim": int(self.embedding_dim),
            "image_count": int(self.image_count),
            "collection_fingerprint": self.collection_fingerprint,
            "plan": self.plan.to_dict(),
            "created_at": self.created_at,
            "precision": self.precision,
            "tokenizer": self.tokenizer,
            "max_length": self.max_length,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> IndexManifest:
        keys = ("embedding_dim", "image_count", "collection_fingerprint", "plan", "created_at")
        missing = [key for key in keys if key not in d]
        if missing:
            raise ValueError(f"the index manifest lacks {missing}")
        version, path = d.get("checkpoint_version"), d.get("checkpoint_path")
        return cls(
            checkpoint_version=None if version is None else str(version),
            checkpoint_path=None if path is None else str(path),
            embedding_dim=int(d["embedding_dim"]),
            image_count=int(d["image_count"]),
            collection_fingerprint=str(d["collection_fingerprint"]),
            plan=IndexPlan.from_dict(d["plan"]),
            created_at=str(d["created_at"]),
            precision=d.get("precision"),
            tokenizer=d.get("tokenizer"),
            max_length=None if d.get("max_length") is None else int(d["max_length"]),
            code_bits=None if d.get("code_bits") is None else int(d["code_bits"]),
        )


def collection_fingerprint(rows: pd.DataFrame) -> str:
    """sha256 over ``path``, ``size`` and ``mtime_ns`` of every row, in row order (the manifest's fingerprint)."""
    digest = hashlib.sha256()
    for path, size, mtime_ns in zip(rows["path"], rows["size"], rows["mtime_ns"], strict=True):
        digest.update(f"{path}\t{int(size)}\t{int(mtime_ns)}\n".encode())
    return digest.hexdigest()


@dataclass
class ImageIndex:
    """A FAISS index (float, or binary when ``manifest.code_bits`` is set), its manifest and the rows
    (``rows.iloc[i]`` is index id ``i``)."""

    index: faiss.Index | faiss.IndexBinary
    manifest: IndexManifest
    rows: pd.DataFrame
    _searcher: faiss.Index | None = field(default=None, init=False, repr=False, compare=False)
    _exact: ExactFlatSearch | None = field(default=None, init=False, repr=False, compare=False)
    _binary: BinarySearch | None = field(default=None, init=False, repr=False, compare=False)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """``(scores (q, k) float32, rows (q, k) int64)`` best first; ``-inf`` / ``-1`` past the last hit.

        Inner product of the queries as given (embed and normalise them as the images were). On a
        flat index the result is timam's exact ranking: float32 scores as
        ``timam.retrieval.ranking.similarity`` computes them, ties broken by lower row. On an
        approximate index it is FAISS's answer ordered the same way.

        A binary index takes packed codes (uint8, ``(q, code_bits / 8)``) and scores ``-distance``
        (float32): on ``binary_flat`` the exact Hamming top-k with ties by lower row, the
        evaluation's ranking of ``timam.retrieval.hamming.hamming_scores``; on ``binary_ivf`` its
        candidates in that order (:class:`timam.index.binary_index.BinarySearch`).
        """
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        if self.manifest.is_binary:
            if self._binary is None:
                _check_binary(self, "this image index")
                self._binary = BinarySearch(cast(faiss.IndexBinary, self.index))
            return self._binary(queries, int(k))
        q = np.asarray(queries)
        index = cast(faiss.Index, self.index)
        q = check_vectors(q[None, :] if q.ndim == 1 else q, "queries", index.d)
        if self.manifest.plan.kind == "flat":
            if self._exact is None:
                self._exact = ExactFlatSearch(index)
            return self._exact(q, int(k))
        if self._searcher is None:
            self._searcher = search_index(index)  # a GPU copy where faiss-gpu and CUDA are present
        scores, ids = self._searcher.search(q, min(int(k), max(1, index.ntotal)))
        scores, ids = sort_results(scores, ids)
        return _pad(scores, ids, int(k))


def _pad(scores: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    if scores.shape[1] >= k:
        return scores[:, :k], ids[:, :k]
    extra = k - scores.shape[1]
    pad_scores = np.full((scores.shape[0], extra), -np.inf, dtype=np.float32)
    pad_ids = np.full((ids.shape[0], extra), -1, dtype=np.int64)
    return np.hstack([scores, pad_scores]), np.hstack([ids, pad_ids])


def _check_rows(rows: pd.DataFrame, where: str) -> None:
    missing = [column for column in REQUIRED_COLUMNS if column not in rows.columns]
    if missing:
        raise IndexFormatError(f"{where}: the row table lacks columns {missing} (has {list(rows.columns)})")


def _check_consistent(image_index: ImageIndex, where: str) -> None:
    manifest, ntotal, nrows = image_index.manifest, image_index.index.ntotal, len(image_index.rows)
    if not manifest.image_count == ntotal == nrows:
        raise IndexFormatError(
            f"{where}: the manifest says {manifest.image_count} images, the FAISS index holds {ntotal} vectors "
            f"and the row table {nrows} rows; they must be equal. Rebuild the index (kedro run --pipelines index)."
        )
    if manifest.embedding_dim != image_index.index.d:
        raise IndexFormatError(
            f"{where}: the manifest says dimension {manifest.embedding_dim}, the FAISS index has "
            f"{image_index.index.d}. Rebuild the index (kedro run --pipelines index)."
        )
    _check_binary(image_index, where)


def _check_binary(image_index: ImageIndex, where: str) -> None:
    """A binary manifest, a binary plan and a FAISS binary index go together, or none of them."""
    manifest = image_index.manifest
    said = {
        "the manifest's code_bits": manifest.is_binary,
        f"the plan's kind {manifest.plan.kind!r}": manifest.plan.kind in BINARY_KINDS,
        f"the FAISS index ({type(image_index.index).__name__})": isinstance(image_index.index, faiss.IndexBinary),
    }
    if len(set(said.values())) > 1:
        binary = [name for name, value in said.items() if value]
        rest = [name for name, value in said.items() if not value]
        raise IndexFormatError(
            f"{where}: {' and '.join(binary)} {'say' if len(binary) > 1 else 'says'} binary codes but "
            f"{' and '.join(rest)} {'say' if len(rest) > 1 else 'says'} float vectors. "
            "Rebuild the index (kedro run --pipelines index)."
        )
    if manifest.is_binary and manifest.code_bits != manifest.embedding_dim:
        raise IndexFormatError(
            f"{where}: the manifest says {manifest.code_bits}-bit codes but dimension {manifest.embedding_dim}; "
            "a binary index's dimension is its code length in bits. Rebuild the index."
        )


def save_image_index(
    folder: str | os.PathLike[str], image_index: ImageIndex, *, storage_options: Mapping[str, Any] | None = None
) -> None:
    """Write ``folder/{index.faiss, manifest.json, rows.parquet}``; ``folder`` may be a URL (``s3://...``).

    Local: atomically (a sibling temp folder + rename); an existing ``folder`` is replaced only once
    the new one is complete. Remote (``storage_options`` as fsspec takes them): written to a local
    temporary folder, then uploaded with the manifest last (:func:`timam.formats.storage.publish_folder`);
    each object is all-or-nothing, the folder is not, and a reader refuses it until the manifest is there.
    """
    if is_remote(folder):
        fs, path = filesystem(folder, storage_options)
        _check_rows(image_index.rows, f"cannot save the index to {url(fs, path)}")
        _check_consistent(image_index, f"cannot save the index to {url(fs, path)}")
        with tempfile.TemporaryDirectory(prefix="timam-index-") as staging:
            _write_folder(Path(staging), image_index)
            publish_folder(Path(staging), fs, path, last=MANIFEST_FILE)
        return
    target = Path(folder)
    _check_rows(image_index.rows, f"cannot save the index to {target}")
    _check_consistent(image_index, f"cannot save the index to {target}")
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = temporary_sibling(target)
    try:
        temporary.mkdir()
        _write_folder(temporary, image_index)
        _fsync_folder(temporary)
        _swap_into_place(temporary, target)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)


def _write_folder(folder: Path, image_index: ImageIndex) -> None:
    if image_index.manifest.is_binary:
        faiss.write_index_binary(cast(faiss.IndexBinary, image_index.index), str(folder / INDEX_FILE))
    else:
        faiss.write_index(cast(faiss.Index, image_index.index), str(folder / INDEX_FILE))
    image_index.rows.reset_index(drop=True).to_parquet(folder / ROWS_FILE, index=False)
    manifest = json.dumps(image_index.manifest.to_dict(), indent=2, sort_keys=True)
    (folder / MANIFEST_FILE).write_text(manifest + "\n", encoding="utf-8")


def _fsync_folder(folder: Path) -> None:
    for path in folder.iterdir():
        with open(path, "rb") as handle:
            os.fsync(handle.fileno())


def _swap_into_place(temporary: Path, target: Path) -> None:
    """Rename ``temporary`` onto ``target``; an existing target is moved aside first and removed after."""
    if not target.exists():
        os.replace(temporary, target)
        return
    old = temporary_sibling(target, "old")
    os.replace(target, old)
    try:
        os.replace(temporary, target)
    except OSError:
        os.replace(old, target)  # put the previous index back
        raise
    shutil.rmtree(old, ignore_errors=True)


def load_image_index(folder: str | os.PathLike[str], *, storage_options: Mapping[str, Any] | None = None) -> ImageIndex:
    """The index saved in ``folder`` (a folder or a URL); ``IndexFormatError`` naming it when incomplete or corrupt.

    A remote folder without its manifest is refused before anything is downloaded: the manifest is
    uploaded last, so its absence means an upload that has not finished (or never will).
    """
    if not is_remote(folder):
        return _load_folder(Path(folder), str(Path(folder)))
    fs, path = filesystem(folder, storage_options)
    where = url(fs, path)
    fs.invalidate_cache(path)
    if not fs.isdir(path):
        raise FileNotFoundError(f"no image index at {where}: build one with `kedro run --pipelines index`")
    if not fs.isfile(f"{path.rstrip('/')}/{MANIFEST_FILE}"):
        raise IndexFormatError(
            f"the image index at {where} has no {MANIFEST_FILE}: its upload never finished (the manifest is "
            "written last). Rebuild it with `kedro run --pipelines index`."
        )
    with tempfile.TemporaryDirectory(prefix="timam-index-") as staging:
        fetch_folder(fs, path, (INDEX_FILE, MANIFEST_FILE, ROWS_FILE), Path(staging))
        return _load_folder(Path(staging), where)


def _load_folder(root: Path, where: str) -> ImageIndex:
    """Load the local folder ``root``; messages name ``where`` (the folder, or the URL it was downloaded from)."""
    if not root.is_dir():
        raise FileNotFoundError(f"no image index at {where}: build one with `kedro run --pipelines index`")
    absent = [name for name in (INDEX_FILE, MANIFEST_FILE, ROWS_FILE) if not (root / name).is_file()]
    if absent:
        raise IndexFormatError(
            f"the image index at {where} is incomplete: {', '.join(absent)} missing. "
            "Rebuild it with `kedro run --pipelines index`."
        )
    manifest = _read_manifest(root, where)
    read = faiss.read_index_binary if manifest.is_binary else faiss.read_index
    try:
        index = read(str(root / INDEX_FILE))
    except RuntimeError as error:
        raise IndexFormatError(f"cannot read {where}/{INDEX_FILE}: {_first_line(error)}. Rebuild the index.") from error
    try:
        rows = pd.read_parquet(root / ROWS_FILE)
    except Exception as error:  # pyarrow raises several types for a damaged file
        raise IndexFormatError(f"cannot read {where}/{ROWS_FILE}: {_first_line(error)}. Rebuild the index.") from error
    _check_rows(rows, where)
    image_index = ImageIndex(index=index, manifest=manifest, rows=rows)
    _check_consistent(image_index, where)
    if manifest.is_binary:
        apply_binary_search_params(cast(faiss.IndexBinary, index), manifest.plan.search_params)
    else:
        apply_search_params(cast(faiss.Index, index), manifest.plan.search_params)
    return image_index


def _read_manifest(root: Path, where: str) -> IndexManifest:
    path = f"{where}/{MANIFEST_FILE}"
    try:
        data = json.loads((root / MANIFEST_FILE).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise IndexFormatError(f"{path} is not valid JSON ({error}). Rebuild the index.") from error
    if not isinstance(data, dict) or data.get("format") != INDEX_FORMAT:
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise IndexFormatError(f"{path} has format {found!r}, expected {INDEX_FORMAT!r}. Rebuild the index.")
    try:
        return IndexManifest.from_dict(data)
    except (KeyError, TypeError, ValueError) as error:
        raise IndexFormatError(f"{path} is damaged: {error}. Rebuild the index.") from error


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:300]


def check_index_checkpoint(manifest: IndexManifest, checkpoint_version: str | None, *, index_name: str) -> None:
    """Refuse queries embedded by another checkpoint than the one that embedded the images."""
    if manifest.checkpoint_version == checkpoint_version:
        return
    built, query = manifest.checkpoint_version, checkpoint_version
    raise ValueError(
        f"{index_name} was built with model_checkpoint version {built or 'unversioned'!s}, but the queries would be "
        f"embedded with model_checkpoint version {query or 'unversioned'!s}: their embeddings are not comparable. "
        f"Re-index with this checkpoint (kedro run --pipelines index --load-versions model_checkpoint:{query}) "
        f"or query with the index's checkpoint (--load-versions model_checkpoint:{built})."
    )
