"""Query image decoding (search/images.py): no larger than the model needs, the same picture as a
full decode once resized to the model's input, upright, and the pixel cap on what is decoded.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from timam.search.images import (
    MAX_PIXELS,
    REDUCING_GAP,
    UnusableImageError,
    decode_image_bytes,
    decode_image_file,
    query_image,
)

FIT = 128


def _encoded(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _photo(width: int, height: int) -> Image.Image:
    """Smooth shapes plus fine noise: a picture whose downscaling shows any aliasing."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    noise = np.random.default_rng(0).normal(0, 12, (height, width, 3))
    pixels = np.stack([x / width * 255, y / height * 255, 128 + 100 * np.sin(x / 37) * np.cos(y / 23)], axis=-1)
    return Image.fromarray(np.clip(pixels + noise, 0, 255).astype(np.uint8))


def _at_model_size(image: Image.Image) -> np.ndarray:
    return np.asarray(image.resize((FIT, FIT), Image.Resampling.BILINEAR), dtype=np.float32)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_a_large_image_decodes_small_and_matches_a_full_decode_at_the_models_size(fmt):
    data = _encoded(_photo(1600, 1200), fmt, **({"quality": 95} if fmt != "PNG" else {}))
    reduced = decode_image_bytes(data, fit=FIT)
    full = decode_image_bytes(data, fit=None)
    assert full.size == (1600, 1200)
    assert REDUCING_GAP * FIT <= min(reduced.size) < 2 * REDUCING_GAP * FIT
    difference = np.abs(_at_model_size(reduced) - _at_model_size(full))
    assert difference.mean() < 1.5 and np.percentile(difference, 99) < 8  # of 255: the same picture


def test_a_small_image_is_decoded_exactly_as_before():
    image = _photo(200, 150)
    data = _encoded(image, "PNG")
    assert np.array_equal(np.asarray(decode_image_bytes(data, fit=FIT)), np.asarray(image))


@pytest.mark.parametrize("mode", ["P", "1", "I;16", "RGBA", "LA"])
def test_every_mode_is_reduced_to_rgb(mode):
    image = _photo(1200, 900).convert("L").convert(mode) if mode != "I;16" else Image.new("I;16", (1200, 900), 300)
    decoded = decode_image_bytes(_encoded(image, "PNG"), fit=FIT)
    assert decoded.mode == "RGB" and REDUCING_GAP * FIT <= min(decoded.size) < 2 * REDUCING_GAP * FIT


def test_a_reduced_photo_stays_upright():
    exif = Image.Exif()
    exif[0x0112] = 6  # taken rotated: display turned by 90 degrees
    data = _encoded(_photo(1600, 800), "JPEG", exif=exif)
    assert decode_image_bytes(data, fit=FIT).height > decode_image_bytes(data, fit=FIT).width
    assert decode_image_bytes(data, fit=None).size == (800, 1600)


def test_the_pixel_cap_counts_pixels_decoded_not_pixels_in_the_header(tmp_path):
    photo = _encoded(Image.new("L", (6000, 3000), 90), "JPEG")  # 18 MP, above the 16 MP cap
    assert 6000 * 3000 > MAX_PIXELS
    assert decode_image_bytes(photo, fit=FIT).size == (1500, 750)  # decoded at 1/4 scale: sides stay >= 384
    with pytest.raises(UnusableImageError, match="decodes to 6000x3000 pixels, more than the 16,000,000 allowed"):
        decode_image_bytes(photo, fit=None)
    png = _encoded(Image.new("1", (5000, 4000)), "PNG")  # a PNG can only be decoded whole
    with pytest.raises(UnusableImageError, match="decodes to 5000x4000 pixels, more than"):
        decode_image_bytes(png, fit=FIT)
    path = tmp_path / "photo.jpg"
    path.write_bytes(photo)
    assert query_image(path).size == (3000, 1500)  # without a model at hand: decoded for inputs up to 384 px


def test_uploads_are_limited_to_common_formats_but_own_files_are_not(tmp_path):
    icon = _encoded(Image.new("RGB", (32, 32), (0, 90, 200)), "ICO")
    with pytest.raises(UnusableImageError) as raised:
        decode_image_bytes(icon)
    assert "not a JPEG, PNG, WEBP, GIF, BMP, TIFF image file" in str(raised.value)
    assert "object at 0x" not in str(raised.value)
    path = tmp_path / "icon.ico"
    path.write_bytes(icon)
    assert decode_image_file(path).size == (32, 32)


def test_an_indexed_file_is_named_as_the_caller_says(tmp_path):
    with pytest.raises(UnusableImageError, match=r"^indexed image '.*gone.png' does not exist"):
        decode_image_file(tmp_path / "gone.png", what="indexed image")
