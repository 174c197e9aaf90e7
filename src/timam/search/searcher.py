"""``Searcher``: text or image queries against a saved image index, with the checkpoint that built it.

>>> s = Searcher.open("data/07_model_output/demo/image_index")      # newest index version
>>> s.by_text("two airplanes parked", k=10)                         # [Hit(rank, row, path, score), ...]
>>> s.by_image("photo.jpg", k=10)                                   # images like this one
>>> s.captions_for_image("photo.jpg", k=5)                          # when the collection has captions
>>> s.by_texts(["a red car", "a beach"], k=5)                       # one table for many queries

No Kedro: the index is read with :func:`timam.index.store.load_image_index` and the checkpoint with
:func:`timam.models.checkpoint.read_checkpoint`, so a notebook or the web server
(:mod:`timam.serve`) can search without a project session. An index is only ever queried with the
checkpoint that embedded it (:func:`timam.index.store.check_index_checkpoint`): other embeddings
live in another space and their scores would mean nothing. Queries are embedded as the index
records (its manifest's precision, tokenizer and token length), so an indexed image searched for
itself scores 1 whatever machine serves it. The search pipeline wraps the test split the same way
(:mod:`timam.search.split_index`), so there is one search path.

A hashing checkpoint's index holds packed K-bit codes (``manifest.code_bits``): queries are embedded
the same way (their relaxed codes), packed the same way (:func:`timam.retrieval.hamming.pack_codes`)
and searched by Hamming distance; a hit's ``score`` is then ``-distance`` (an indexed image searched
for itself scores 0), ties broken by lower row as the evaluation breaks them.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from timam.formats.storage import filesystem, is_local, is_remote, local_copy, url
from timam.index.store import ImageIndex, check_index_checkpoint, load_image_index
from timam.models.checkpoint import Checkpoint, read_checkpoint
from timam.retrieval.hamming import hamming_scores, pack_codes
from timam.retrieval.ranking import topk_indices
from timam.retrieval.two_stage import topk_candidates
from timam.search.encoder import QueryEncoder
from timam.search.images import ImageSource, query_image
from timam.search.locate import find_checkpoint_file, find_index_folder, version_of
from timam.search.results import Hit, hits_table
from timam.tokenization import TokenizationConfig


@dataclass(frozen=True)
class CaptionGallery:
    """The captions an image query ranks: each caption's text, the index row of the image it
    describes, and their unit embeddings when already computed with the index's checkpoint (else
    the searcher embeds them on first use)."""

    texts: list[str]
    rows: np.ndarray
    vectors: torch.Tensor | None = None

    @classmethod
    def of_rows(cls, rows: pd.DataFrame) -> CaptionGallery:
        """The captions of an index's rows (a table with a caption column); blank and missing ones left out."""
        captions = rows["caption"].tolist() if "caption" in rows else []
        kept = [row for row, text in enumerate(captions) if isinstance(text, str) and text.strip()]
        return cls(texts=[captions[row] for row in kept], rows=np.asarray(kept, dtype=np.int64))


def _read_checkpoint(path: Path | str) -> Checkpoint:
    """The checkpoint at a local path or a URL (read from a temporary local copy), versioned by its Kedro folder."""
    fs, inner = filesystem(path)
    with local_copy(fs, inner) as local:
        try:
            return read_checkpoint(local, version=version_of(path))
        except ValueError as error:
            if is_local(fs):
                raise
            raise type(error)(str(error).replace(local, url(fs, inner))) from error  # name the object, not the copy


class Searcher:
    """Queries against one :class:`~timam.index.store.ImageIndex` with its checkpoint.

    Build it with :meth:`open` (from disk) or directly from loaded objects (the Kedro search node
    does). ``index_name`` and ``index_version`` only word messages and the web page's footer.
    ``tokenizer`` and ``max_length`` are used only for an index that does not record its own
    (written before manifests did); ``captions``: what an image query's caption search ranks
    (default: the rows' captions).
    """

    def __init__(
        self,
        *,
        image_index: ImageIndex,
        checkpoint: Checkpoint,
        device: str,
        index_name: str = "the image index",
        index_version: str | None = None,
        tokenizer: str | None = None,
        max_length: int | None = None,
        captions: CaptionGallery | None = None,
    ) -> None:
        check_index_checkpoint(image_index.manifest, checkpoint.version, index_name=index_name)
        manifest = image_index.manifest
        self.encoder = QueryEncoder(
            checkpoint,
            tokenizer=manifest.tokenizer or tokenizer,
            max_length=manifest.max_length or max_length or TokenizationConfig().max_length,
            precision=manifest.precision or "auto",
            device=device,
        )
        if checkpoint.is_hashing != manifest.is_binary:
            held = "packed hash codes" if manifest.is_binary else "float embeddings"
            raise ValueError(
                f"{index_name} holds {held}, but checkpoint {checkpoint.version} "
                f"{'makes hash codes' if checkpoint.is_hashing else 'embeds into floats'}; query it with the "
                "checkpoint that built it"
            )
        if self.encoder.dim != image_index.manifest.embedding_dim:
            raise ValueError(
                f"{index_name} holds {image_index.manifest.embedding_dim}-d embeddings but checkpoint "
                f"{checkpoint.version} embeds into {self.encoder.dim} dimensions; query it with the checkpoint "
                "that built it"
            )
        self.image_index = image_index
        self.checkpoint = checkpoint
        self.index_name = index_name
        self.index_version = index_version
        self._paths = [str(path) for path in image_index.rows["path"].tolist()]
        own = CaptionGallery.of_rows(image_index.rows)
        self._row_captions = dict(zip(own.rows.tolist(), own.texts, strict=True))
        self._gallery = captions or own
        self._caption_lock = threading.Lock()

    @classmethod
    def open(
        cls,
        index: str | os.PathLike[str] | None = None,
        checkpoint: str | os.PathLike[str] | Checkpoint | None = None,
        *,
        project: str | os.PathLike[str] = ".",
        tokenizer: str | None = None,
        max_length: int | None = None,
        device: str = "auto",
    ) -> Searcher:
        """Open an index folder, dataset root or version (:func:`~timam.search.locate.find_index_folder`).

        ``checkpoint``: a checkpoint file (or its dataset folder, for the newest), or a loaded
        :class:`Checkpoint`; by default the file the index's manifest names. Relative paths start
        at ``project`` (the project folder).
        """
        folder = find_index_folder(index, project=project)
        image_index = load_image_index(folder)
        if not isinstance(checkpoint, Checkpoint):
            checkpoint = _read_checkpoint(
                find_checkpoint_file(cls._checkpoint_path(image_index, folder, checkpoint, project))
            )
        return cls(
            image_index=image_index,
            checkpoint=checkpoint,
            index_name=f"index {folder}",
            index_version=version_of(folder),
            tokenizer=tokenizer,
            max_length=max_length,
            device=device,
        )

    @staticmethod
    def _checkpoint_path(
        image_index: ImageIndex,
        folder: Path | str,
        given: str | os.PathLike[str] | None,
        project: str | os.PathLike[str],
    ) -> Path | str:
        if given is not None:
            if is_remote(given):
                return os.fspath(given)
            path = Path(given)
            return path if path.is_absolute() or path.exists() else Path(project) / path
        named = image_index.manifest.checkpoint_path
        if not named:
            raise ValueError(
                f"index {folder} does not name the checkpoint file that built it (checkpoint version "
                f"{image_index.manifest.checkpoint_version}); pass checkpoint=<that checkpoint file>"
            )
        if is_remote(named):
            return named  # find_checkpoint_file names the URL when it is missing
        path = Path(named)
        if not path.is_absolute() and not path.exists():
            path = Path(project) / path
        if not path.exists():
            raise FileNotFoundError(
                f"index {folder} was built with checkpoint {named} (version "
                f"{image_index.manifest.checkpoint_version}), which does not exist here; run from the project "
                "folder, or pass checkpoint=<that checkpoint file>"
            )
        return path

    @property
    def size(self) -> int:
        """The number of indexed images."""
        return len(self._paths)

    @property
    def has_captions(self) -> bool:
        return bool(self._gallery.texts)

    @property
    def checkpoint_version(self) -> str | None:
        return self.checkpoint.version

    def path(self, row: int) -> str:
        """The image path of index row ``row`` (IndexError outside 0..size-1)."""
        if not 0 <= row < self.size:
            raise IndexError(f"row {row} is not a row of {self.index_name} (0..{self.size - 1})")
        return self._paths[row]

    @staticmethod
    def _check_k(k: int) -> int:
        """``k`` checked once, where a caller hands it in; each gallery then keeps at most its size."""
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        return int(k)

    def _hits(self, scores: np.ndarray, rows: np.ndarray, captions: Sequence[str | None] | None = None) -> list[Hit]:
        """Hits of the found ``rows`` (-1: none) with their ``captions`` (default: each row's own, if any)."""
        if captions is None:
            captions = [self._row_captions.get(int(row)) for row in rows]
        found = [
            (int(row), float(score), caption)
            for score, row, caption in zip(scores, rows, captions, strict=True)
            if row >= 0
        ]
        return [
            Hit(rank=rank, row=row, path=self._paths[row], score=score, caption=caption)
            for rank, (row, score, caption) in enumerate(found, start=1)
        ]

    def _queries(self, vectors: np.ndarray) -> np.ndarray:
        """What the index takes: the unit vectors, or their packed sign codes for a binary index."""
        if not self.image_index.manifest.is_binary:
            return vectors
        return pack_codes(torch.from_numpy(vectors)).numpy()

    def _search(self, vectors: np.ndarray, k: int) -> list[list[Hit]]:
        k = min(self._check_k(k), self.size)
        if self.size == 0 or len(vectors) == 0:
            return [[] for _ in range(len(vectors))]
        scores, rows = self.image_index.search(self._queries(vectors), k)
        return [self._hits(scores[i], rows[i]) for i in range(len(vectors))]

    def by_text(self, text: str, k: int = 10) -> list[Hit]:
        """The ``k`` indexed images closest to ``text``, best first (the text is embedded once, then cached)."""
        return self._search(self.encoder.texts([self._check_text(text)]), k)[0]

    def by_texts(self, texts: Sequence[str], k: int = 10) -> pd.DataFrame:
        """One table for many queries: ``query, rank, row, path, score[, caption]``, queries in the given order."""
        texts = [self._check_text(text) for text in texts]
        results = self._search(self.encoder.texts(texts), k)
        tables = [hits_table(hits, query=text) for text, hits in zip(texts, results, strict=True)]
        return pd.concat(tables, ignore_index=True) if tables else hits_table([], query="")

    def by_image(self, image: ImageSource, k: int = 10) -> list[Hit]:
        """The ``k`` indexed images closest to ``image`` (a path, encoded bytes or a PIL image)."""
        return self._search(self.encoder.images([query_image(image)]), k)[0]

    def captions_for_image(self, image: ImageSource, k: int = 10) -> list[Hit]:
        """The ``k`` captions closest to ``image``; each hit names the row of the image the caption describes.

        Captions without embeddings are embedded once, on first use, and kept. Ties are broken by
        the caption's position in the gallery.
        """
        if not self.has_captions:
            raise ValueError(f"{self.index_name} has no captions; index a table with a caption column to rank them")
        k = min(self._check_k(k), len(self._gallery.texts))
        query = torch.from_numpy(self.encoder.images([query_image(image)]))
        if self.image_index.manifest.is_binary:  # Hamming distances of the packed codes, ties by position
            distances = hamming_scores(pack_codes(query), pack_codes(self._caption_vectors()))
            found = topk_candidates(distances, k)
            scores = distances.gather(1, found)
        else:
            scores, found = topk_indices(query, self._caption_vectors(), k, normalize=False)
        positions = found[0].numpy()
        return self._hits(scores[0].numpy(), self._gallery.rows[positions], [self._gallery.texts[p] for p in positions])

    def _caption_vectors(self) -> torch.Tensor:
        with self._caption_lock:
            if self._gallery.vectors is None:
                texts = self._gallery.texts
                distinct = list(dict.fromkeys(texts))
                vectors = self.encoder.texts(distinct, cache=False)
                position = {text: i for i, text in enumerate(distinct)}
                embedded = torch.from_numpy(vectors[[position[text] for text in texts]])
                self._gallery = CaptionGallery(texts=texts, rows=self._gallery.rows, vectors=embedded)
            assert self._gallery.vectors is not None
            return self._gallery.vectors

    @staticmethod
    def _check_text(text: str) -> str:
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"a text query must be a non-empty string, got {text!r}")
        return text.strip()

    def describe(self) -> dict[str, object]:
        """What the web page's footer and ``/api/info`` show."""
        manifest = self.image_index.manifest
        return {
            "index": self.index_name,
            "index_version": self.index_version,
            "checkpoint_version": self.checkpoint_version,
            "images": self.size,
            "embedding_dim": manifest.embedding_dim,
            "index_kind": manifest.plan.kind,
            "has_captions": self.has_captions,
            "created_at": manifest.created_at,
        }
