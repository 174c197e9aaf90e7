"""Thumbnails of index rows, made on the server and kept in memory.

A thumbnail is asked for by row number, never by path: the file opened is always the path stored in
that row of the index, so no URL can reach any other file. Made once per row (JPEG, at most
``size`` pixels a side) and kept in a bounded LRU cache, so a page of results costs one decode per
image the first time and none after. Each is decoded no larger than it needs (a JPEG at reduced
scale), and at most ``decodes`` at once, so a burst of thumbnail requests cannot stack up large
decodes in memory.
"""

from __future__ import annotations

import io
import threading
from collections import OrderedDict
from collections.abc import Callable

from PIL import Image

from timam.search.images import UnusableImageError, decode_image_file

# Indexed images were decoded once already; a large photo of the collection still gets its thumbnail.
INDEXED_MAX_PIXELS = 160_000_000


class ThumbnailError(Exception):
    """A row whose image cannot be shown (the file went missing or became unreadable since indexing)."""


class Thumbnails:
    """JPEG thumbnails by row; ``path_of(row)`` maps a row (already checked) to its file."""

    def __init__(
        self, path_of: Callable[[int], str], *, size: int = 256, cache_size: int = 1024, decodes: int = 2
    ) -> None:
        self.path_of = path_of
        self.size = size
        self.cache_size = cache_size
        self._cache: OrderedDict[int, bytes] = OrderedDict()
        self._lock = threading.Lock()
        self._decoding = threading.BoundedSemaphore(decodes)

    def get(self, row: int) -> bytes:
        with self._lock:
            if row in self._cache:
                self._cache.move_to_end(row)
                return self._cache[row]
        data = self._make(row)
        with self._lock:
            self._cache[row] = data
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return data

    def _make(self, row: int) -> bytes:
        try:
            with self._decoding:
                image = decode_image_file(
                    self.path_of(row), max_pixels=INDEXED_MAX_PIXELS, fit=self.size, what="indexed image"
                )
        except UnusableImageError as error:
            raise ThumbnailError(f"the image of row {row} cannot be shown: {error}") from error
        image.thumbnail((self.size, self.size), Image.Resampling.LANCZOS)
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=85)
        return buffer.getvalue()
