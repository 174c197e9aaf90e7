"""Tests for image inspection and the bad-input policy (error / skip with quarantine)."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from timam.inference.images import load_rgb
from timam.sources.caption_table import BadInputError, finalise_caption_table
from timam.sources.image_checks import (
    apply_bad_input_policy,
    find_bad_rows,
    inspect_image,
    report_images_without_captions,
)


def _image(path: Path, mode: str = "RGB", size: tuple[int, int] = (12, 8), **save: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    colour = {"L": 128, "P": 3, "1": 1, "CMYK": (0, 128, 255, 0), "RGBA": (10, 20, 30, 128), "LA": (40, 200)}
    Image.new(mode, size, colour.get(mode, (200, 30, 40))).save(path, **save)
    return path


def _rows(tmp_path: Path, specs: list[tuple[str, str, str, str, str]]) -> pd.DataFrame:
    """(caption_id, image file name, caption, identity, split) -> reader rows; images must exist or not."""
    return pd.DataFrame(
        [
            {
                "caption_id": caption_id,
                "image_id": name,
                "image_path": str(tmp_path / name),
                "caption": caption,
                "identity": identity,
                "split": split,
            }
            for caption_id, name, caption, identity, split in specs
        ]
    )


# --- inspect_image -------------------------------------------------------------------------------


def test_good_rgb_jpeg_is_accepted(tmp_path: Path) -> None:
    assert inspect_image(_image(tmp_path / "a.jpg")) is None


def test_missing_file(tmp_path: Path) -> None:
    assert inspect_image(tmp_path / "nope.jpg") == "missing"


def test_directory_is_not_an_image(tmp_path: Path) -> None:
    assert inspect_image(tmp_path) == "not a file"


def test_zero_byte_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    assert inspect_image(path) == "zero-byte"


def test_truncated_jpeg_is_corrupt(tmp_path: Path) -> None:
    full = _image(tmp_path / "full.jpg", size=(64, 64), quality=95)
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(full.read_bytes()[: len(full.read_bytes()) // 2])
    reason = inspect_image(truncated)
    assert reason is not None and reason.startswith("unreadable/corrupt:")
    assert "truncated" in reason.lower()


def test_non_image_bytes_are_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "fake.jpg"
    path.write_bytes(b"this is not an image at all")
    reason = inspect_image(path)
    assert reason is not None and reason.startswith("unreadable/corrupt: UnidentifiedImageError")


def test_png_with_broken_checksum_is_corrupt(tmp_path: Path) -> None:
    path = _image(tmp_path / "a.png")
    data = bytearray(path.read_bytes())
    idat = data.index(b"IDAT")
    data[idat + 6] ^= 0xFF  # flip a compressed byte: the chunk CRC no longer matches
    path.write_bytes(bytes(data))
    assert inspect_image(path).startswith("unreadable/corrupt:")


@pytest.mark.parametrize(
    ("mode", "name"),
    [("L", "grey.jpg"), ("CMYK", "cmyk.jpg"), ("P", "palette.png"), ("RGBA", "alpha.png"), ("LA", "grey_alpha.png"),
     ("1", "bilevel.png"), ("RGB", "plain.tif")],
)  # fmt: skip
def test_other_colour_modes_are_good_and_load_as_rgb(tmp_path: Path, mode: str, name: str) -> None:
    path = _image(tmp_path / name, mode=mode)
    with Image.open(path) as image:
        assert image.mode == mode
    assert inspect_image(path) is None
    rgb = load_rgb(str(path))
    assert rgb.mode == "RGB" and rgb.size == (12, 8)


def test_exif_rotated_jpeg_is_good_and_loads_upright(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    path = _image(tmp_path / "rotated.jpg", size=(40, 20), exif=exif)
    with Image.open(path) as image:
        assert image.size == (40, 20) and image.getexif()[0x0112] == 6
    assert inspect_image(path) is None
    rgb = load_rgb(str(path))
    assert rgb.mode == "RGB" and rgb.size == (20, 40)


# --- apply_bad_input_policy ----------------------------------------------------------------------


@pytest.fixture
def clean(tmp_path: Path) -> pd.DataFrame:
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        _image(tmp_path / name)
    return _rows(
        tmp_path,
        [
            ("1", "a.jpg", "a red coat", "p1", "train"),
            ("2", "a.jpg", "red coat, black shoes", "p1", "train"),
            ("3", "b.jpg", "a blue bag", "p2", "train"),
            ("4", "c.jpg", "green hat", "p3", "test"),
        ],
    )


def test_clean_rows_pass_both_policies(clean: pd.DataFrame) -> None:
    kept, quarantine = apply_bad_input_policy(clean, policy="error", source="s", identities_disjoint=True)
    pd.testing.assert_frame_equal(kept, clean)
    assert quarantine.empty and "reason" in quarantine.columns
    kept, quarantine = apply_bad_input_policy(clean, policy="skip", source="s", identities_disjoint=True)
    assert len(kept) == 4 and quarantine.empty


def test_unknown_policy_is_refused(clean: pd.DataFrame) -> None:
    with pytest.raises(ValueError, match="on_bad_input"):
        apply_bad_input_policy(clean, policy="ignore", source="s")


def test_rows_lacking_columns_are_refused(clean: pd.DataFrame) -> None:
    with pytest.raises(BadInputError, match="identity"):
        apply_bad_input_policy(clean.drop(columns="identity"), policy="skip", source="s")


def test_missing_image_errors_with_file_and_fix(tmp_path: Path, clean: pd.DataFrame) -> None:
    (tmp_path / "b.jpg").unlink()
    with pytest.raises(BadInputError) as error:
        apply_bad_input_policy(clean, policy="error", source="demo")
    message = str(error.value)
    assert "row 2" in message and str(tmp_path / "b.jpg") in message and "'3'" in message
    assert "image missing" in message and "data_root" in message


def test_zero_byte_and_corrupt_images_are_quarantined(tmp_path: Path, clean: pd.DataFrame) -> None:
    (tmp_path / "a.jpg").write_bytes(b"")
    (tmp_path / "b.jpg").write_bytes((tmp_path / "c.jpg").read_bytes()[:100])
    kept, quarantine = apply_bad_input_policy(clean, policy="skip", source="demo")
    assert kept["caption_id"].tolist() == ["4"]
    assert quarantine["caption_id"].tolist() == ["1", "2", "3"]
    assert quarantine["reason"].tolist()[:2] == ["image zero-byte", "image zero-byte"]
    assert quarantine["reason"].iloc[2].startswith("image unreadable/corrupt:")
    with pytest.raises(BadInputError, match=r"row 0 .*image zero-byte.*Re-download"):
        apply_bad_input_policy(clean, policy="error", source="demo")


@pytest.mark.parametrize("caption", ["", "   ", "\t\n", None])
def test_empty_and_whitespace_captions(clean: pd.DataFrame, caption: str | None) -> None:
    clean.loc[1, "caption"] = caption
    with pytest.raises(BadInputError, match=r"row 1 \(caption '2'.*empty caption.*annotation file"):
        apply_bad_input_policy(clean, policy="error", source="demo")
    kept, quarantine = apply_bad_input_policy(clean, policy="skip", source="demo")
    assert kept["caption_id"].tolist() == ["1", "3", "4"]
    assert quarantine[["caption_id", "reason"]].values.tolist() == [["2", "empty caption"]]


def test_conflicting_duplicate_caption_ids_quarantine_every_copy(clean: pd.DataFrame) -> None:
    clean.loc[2, "caption_id"] = "1"  # same id, different caption and image
    reasons = find_bad_rows(clean)
    assert reasons.tolist() == ["duplicate caption_id", "", "duplicate caption_id", ""]
    with pytest.raises(BadInputError, match=r"row 0 .*duplicate caption_id.*its own id"):
        apply_bad_input_policy(clean, policy="error", source="demo")


def test_exact_duplicate_row_keeps_the_first_copy(clean: pd.DataFrame) -> None:
    table = pd.concat([clean, clean.iloc[[1]]], ignore_index=True)
    kept, quarantine = apply_bad_input_policy(table, policy="skip", source="demo")
    pd.testing.assert_frame_equal(kept, clean)
    assert quarantine[["caption_id", "reason"]].values.tolist() == [["2", "duplicate row"]]


def test_identity_in_train_and_test(clean: pd.DataFrame) -> None:
    clean.loc[3, "identity"] = "p2"
    kept, _ = apply_bad_input_policy(clean, policy="skip", source="demo", identities_disjoint=False)
    assert len(kept) == 4  # allowed where the protocol shares identities (UCM-Captions)
    kept, quarantine = apply_bad_input_policy(clean, policy="skip", source="demo", identities_disjoint=True)
    assert kept["caption_id"].tolist() == ["1", "2", "4"]  # the test split keeps its size
    assert quarantine[["caption_id", "reason"]].values.tolist() == [["3", "identity also in test"]]
    with pytest.raises(BadInputError, match=r"identity also in test.*disjoint"):
        apply_bad_input_policy(clean, policy="error", source="demo", identities_disjoint=True)


def test_several_reasons_are_joined_and_logged(
    tmp_path: Path, clean: pd.DataFrame, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "c.jpg").unlink()
    clean.loc[3, "caption"] = " "
    with caplog.at_level(logging.WARNING):
        kept, quarantine = apply_bad_input_policy(clean, policy="skip", source="demo")
    assert quarantine["reason"].tolist() == ["image missing; empty caption"]
    assert "quarantined 1 of 4 caption rows" in caplog.text
    assert "empty caption: 1" in caplog.text and "image missing: 1" in caplog.text
    assert len(kept) + len(quarantine) == len(clean)


def test_kept_rows_pass_finalise(tmp_path: Path, clean: pd.DataFrame) -> None:
    (tmp_path / "b.jpg").write_bytes(b"")
    with pytest.raises(BadInputError, match="empty"):
        finalise_caption_table(clean, "demo")
    kept, _ = apply_bad_input_policy(clean, policy="skip", source="demo")
    table = finalise_caption_table(kept, "demo")
    assert table["label"].tolist() == [0, 0, -1]


def test_report_images_without_captions(caplog: pytest.LogCaptureFixture) -> None:
    report_images_without_captions([], source="s", policy="error", fix="x")
    with pytest.raises(BadInputError, match=r"s: 7 image\(s\) have no caption: a, b, c, d, e and 2 more\. Fix it"):
        report_images_without_captions(list("abcdefg"), source="s", policy="error", fix="Fix it")
    with caplog.at_level(logging.WARNING):
        report_images_without_captions(["a"], source="s", policy="skip", fix="x")
    assert "left out 1 image(s) without captions: a" in caplog.text
    with pytest.raises(ValueError, match="images_without_captions"):
        report_images_without_captions(["a"], source="s", policy="drop", fix="x")
