"""Query images from a file, bytes or an upload, decoded with guards: a query never reaches the model half-read.

Why a guard of its own: an uploaded file is untrusted. Pillow reads the header first, so the pixel
count is checked before any pixel is decoded (a decompression bomb is refused without allocating
it); then ``verify`` checks the structure and a second open fully decodes the image, so a truncated
file is refused here, not inside the model.

Memory: a query is decoded no larger than the model needs. Given ``fit`` (the model's input side),
a JPEG is decoded at 1/2, 1/4 or 1/8 scale by its own decoder (Pillow's ``draft``) and any other
format is shrunk by an integer box filter (``reduce``) right after decoding, both keeping every side
at least ``REDUCING_GAP`` times ``fit``, so the model's own resize gives what a full decode would
(Pillow's ``reducing_gap`` rule). The pixel cap applies to what is actually decoded: a 50-megapixel
phone JPEG decodes at 1/4 scale and passes; a PNG, which can only be decoded whole, may have at most
``MAX_PIXELS``.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

# 16 megapixels decoded: a 4K or 5K screenshot, a 16 MP camera PNG. At 4 bytes a pixel (RGB, RGBA,
# 32-bit) that is 64 MB while decoding, 96 MB for 16-bit grey; JPEGs count at their reduced size.
MAX_PIXELS = 16_000_000
# Decoded sides stay >= 3x the model's input: the final resize then matches a full decode.
REDUCING_GAP = 3
# Without a model at hand (a path or bytes given to ``query_image``): the largest input of this
# project's models (conf/paper: 384 x 128).
DEFAULT_FIT = 384
# What an untrusted upload may be: the common photo and screenshot formats (JPEG includes MPO). Pillow's other plugins
# (EPS runs Ghostscript, and a long tail of rarely used decoders) stay closed to uploads.
UPLOAD_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")
# Modes whose bands are not intensities: averaging palette indices or bits would be meaningless.
_CONVERT_BEFORE_REDUCE = ("1", "P", "PA")

ImageSource = str | os.PathLike[str] | bytes | Image.Image


class UnusableImageError(ValueError):
    """A query image that is missing, empty, not an image, truncated or too large to decode."""


def _drafted(image: Image.Image, fit: int | None) -> Image.Image:
    """Ask a JPEG decoder for the smallest scale whose sides stay >= ``REDUCING_GAP * fit`` (others ignore it)."""
    if fit is not None:
        image.draft(image.mode, (REDUCING_GAP * fit, REDUCING_GAP * fit))
    return image


def _shrunk(image: Image.Image, fit: int | None) -> Image.Image:
    """``image`` reduced by the largest integer factor that keeps both sides >= ``REDUCING_GAP * fit``."""
    factor = min(image.size) // (REDUCING_GAP * fit) if fit is not None else 1
    if factor < 2:
        return image
    if image.mode in _CONVERT_BEFORE_REDUCE or image.mode.startswith("I;16"):
        image = image.convert("RGB")
    return image.reduce(factor)


def _decode(
    opener: Callable[[], Image.Image], name: str, max_pixels: int, fit: int | None, formats: Sequence[str] | None
) -> Image.Image:
    try:
        with _drafted(opener(), fit) as image:  # reads the header only
            width, height = image.size
            if width * height > max_pixels:
                raise UnusableImageError(
                    f"{name} decodes to {width}x{height} pixels, more than the {max_pixels:,} allowed; "
                    "resize it before searching with it"
                )
            image.verify()  # structure and checksums; the image must be reopened afterwards
        with _drafted(opener(), fit) as image:
            image.load()  # full decode: truncated data fails here
            rgb = ImageOps.exif_transpose(_shrunk(image, fit)).convert("RGB")
    except UnusableImageError:
        raise
    except Image.DecompressionBombError as error:  # Pillow's own limit, beyond ours unless max_pixels is raised
        raise UnusableImageError(f"{name} is too large to decode safely ({error})") from error
    except UnidentifiedImageError as error:  # its message names a Python object, not the file
        known = f"{', '.join(formats)} " if formats else ""
        raise UnusableImageError(
            f"{name} is not an image Pillow can read (not a {known}image file); give a JPEG, PNG or another image file"
        ) from error
    except Exception as error:  # noqa: BLE001 -- any decoder failure makes the query unusable
        raise UnusableImageError(
            f"{name} is not an image Pillow can read ({type(error).__name__}: {error}); give a JPEG, PNG or "
            "another image file Pillow opens"
        ) from error
    if rgb.width == 0 or rgb.height == 0:
        raise UnusableImageError(f"{name} is an empty image ({rgb.width}x{rgb.height})")
    return rgb


def decode_image_bytes(
    data: bytes,
    *,
    name: str = "the uploaded file",
    max_pixels: int = MAX_PIXELS,
    fit: int | None = DEFAULT_FIT,
    formats: Sequence[str] | None = UPLOAD_FORMATS,
) -> Image.Image:
    """Upright RGB image from ``data`` (one of ``formats``), or :class:`UnusableImageError` saying what is wrong."""
    if not data:
        raise UnusableImageError(f"{name} is empty (0 bytes), not an image")
    formats = tuple(formats) if formats else None
    return _decode(lambda: Image.open(io.BytesIO(data), formats=formats), name, max_pixels, fit, formats)


def decode_image_file(
    path: str | os.PathLike[str],
    *,
    max_pixels: int = MAX_PIXELS,
    fit: int | None = DEFAULT_FIT,
    what: str = "query image",
) -> Image.Image:
    """Upright RGB image from the file at ``path``; errors name it as ``what`` (relative paths start at the cwd)."""
    path = Path(path)
    name = f"{what} {str(path)!r}"
    if not path.exists():
        raise UnusableImageError(f"{name} does not exist (relative paths start at {Path.cwd()})")
    if not path.is_file():
        raise UnusableImageError(f"{name} is a folder, not an image file; give the path of one image")
    if path.stat().st_size == 0:
        raise UnusableImageError(f"{name} is an empty file (0 bytes), not an image")
    return _decode(lambda: Image.open(path), name, max_pixels, fit, None)


def query_image(source: ImageSource, *, max_pixels: int = MAX_PIXELS, fit: int | None = DEFAULT_FIT) -> Image.Image:
    """Any query image source -- a path, encoded bytes, or a decoded PIL image -- as upright RGB.

    ``fit``: the model's input side (its longer one); the image is decoded no larger than needs.
    """
    if isinstance(source, Image.Image):
        return source.convert("RGB")
    if isinstance(source, bytes | bytearray):
        return decode_image_bytes(bytes(source), max_pixels=max_pixels, fit=fit)
    return decode_image_file(source, max_pixels=max_pixels, fit=fit)
