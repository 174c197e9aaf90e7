"""Query images from a file, bytes or an upload, decoded with guards: a query never reaches the model half-read.

Why a guard of its own: an uploaded file is untrusted. Pillow reads the header first, so the pixel
count is checked before any pixel is decoded (a decompression bomb is refused without allocating
it); then ``verify`` checks the structure and a second open fully decodes the image, so a truncated
file is refused here, not inside the model.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

from PIL import Image, ImageOps

# 40 megapixels: a large phone photo is 12-50 MP; Pillow's own bomb threshold is 89 MP.
MAX_PIXELS = 40_000_000

ImageSource = str | os.PathLike[str] | bytes | Image.Image


class UnusableImageError(ValueError):
    """A query image that is missing, empty, not an image, truncated or too large to decode."""


def _decode(opener, name: str, max_pixels: int) -> Image.Image:
    try:
        with opener() as image:  # reads the header only
            width, height = image.size
            if width * height > max_pixels:
                raise UnusableImageError(
                    f"{name} is {width}x{height} pixels, more than the {max_pixels:,} allowed; "
                    "resize it before searching with it"
                )
            image.verify()  # structure and checksums; the image must be reopened afterwards
            with opener() as image:
                image.load()  # full decode: truncated data fails here
                rgb = ImageOps.exif_transpose(image).convert("RGB")
    except UnusableImageError:
        raise
    except Image.DecompressionBombError as error:  # Pillow's own limit, beyond ours unless max_pixels is raised
        raise UnusableImageError(f"{name} is too large to decode safely ({error})") from error
    except Exception as error:  # noqa: BLE001 -- any decoder failure makes the query unusable
        raise UnusableImageError(
            f"{name} is not an image Pillow can read ({type(error).__name__}: {error}); give a JPEG, PNG or "
            "another image file Pillow opens"
        ) from error
    if rgb.width == 0 or rgb.height == 0:
        raise UnusableImageError(f"{name} is an empty image ({rgb.width}x{rgb.height})")
    return rgb


def decode_image_bytes(data: bytes, *, name: str = "the uploaded file", max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Upright RGB image from ``data``, or :class:`UnusableImageError` saying what is wrong with it."""
    if not data:
        raise UnusableImageError(f"{name} is empty (0 bytes), not an image")
    return _decode(lambda: Image.open(io.BytesIO(data)), name, max_pixels)


def decode_image_file(path: str | os.PathLike[str], *, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Upright RGB image from the file at ``path``; errors name the file (relative paths start at the cwd)."""
    path = Path(path)
    name = f"query image {str(path)!r}"
    if not path.exists():
        raise UnusableImageError(f"{name} does not exist (relative paths start at {Path.cwd()})")
    if not path.is_file():
        raise UnusableImageError(f"{name} is a folder, not an image file; give the path of one image")
    if path.stat().st_size == 0:
        raise UnusableImageError(f"{name} is an empty file (0 bytes), not an image")
    return _decode(lambda: Image.open(path), name, max_pixels)


def query_image(source: ImageSource, *, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Any query image source -- a path, encoded bytes, or a decoded PIL image -- as upright RGB."""
    if isinstance(source, Image.Image):
        return source.convert("RGB")
    if isinstance(source, bytes | bytearray):
        return decode_image_bytes(bytes(source), max_pixels=max_pixels)
    return decode_image_file(source, max_pixels=max_pixels)
