"""Tests for the canonical caption table: row checks, labels, finalising and the split-size check."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from timam.sources.caption_table import (
    COLUMNS,
    SPLITS,
    BadInputError,
    assign_labels,
    check_captions,
    check_image_files,
    check_split_sizes,
    check_splits,
    finalise_caption_table,
)
from timam.sources.image_checks import READER_COLUMNS


def _image(path: Path) -> str:
    Image.new("RGB", (12, 8), (200, 30, 60)).save(path)
    return str(path)


def _rows(root: Path, spec: list[tuple[str, str, str, str, str]]) -> pd.DataFrame:
    """Reader rows (the columns every reader returns) from (caption_id, image file, caption, identity, split)."""
    return pd.DataFrame(
        [
            {
                "caption_id": caption_id,
                "image_id": name,
                "image_path": str(root / name),
                "caption": caption,
                "identity": identity,
                "split": split,
            }
            for caption_id, name, caption, identity, split in spec
        ],
        columns=READER_COLUMNS,
    )


@pytest.fixture
def rows(tmp_path: Path) -> pd.DataFrame:
    for name in ("a.jpg", "b.jpg", "c.jpg", "d.jpg", "e.jpg"):
        _image(tmp_path / name)
    return _rows(
        tmp_path,
        [
            ("a#0", "a.jpg", "a woman in a red coat", "p7", "train"),
            ("a#1", "a.jpg", "red coat and black boots", "p7", "train"),
            ("b#0", "b.jpg", "a man with a blue bag", "p10", "train"),
            ("c#0", "c.jpg", "a child in a green hat", "p2", "train"),
            ("d#0", "d.jpg", "a man in grey trousers", "p31", "val"),
            ("e#0", "e.jpg", "a woman with a yellow umbrella", "p2", "test"),
        ],
    )


def test_columns_and_splits_are_the_documented_ones() -> None:
    assert COLUMNS == ["caption_id", "image_id", "image_path", "caption", "identity", "label", "split"]
    assert SPLITS == ("train", "val", "test")
    assert READER_COLUMNS == [column for column in COLUMNS if column != "label"]
    assert issubclass(BadInputError, ValueError)


# --- finalise_caption_table ----------------------------------------------------------------------


def test_finalise_orders_columns_labels_train_identities_and_keeps_rows(rows: pd.DataFrame) -> None:
    before = rows.copy()
    table = finalise_caption_table(rows, "demo")
    assert list(table.columns) == COLUMNS
    assert table.index.tolist() == list(range(6))
    assert table["caption_id"].tolist() == rows["caption_id"].tolist()  # row order kept
    # training identities sorted as strings: p10 < p2 < p7
    assert table["label"].tolist() == [2, 2, 0, 1, -1, -1]
    assert table["label"].dtype == "int64"
    # p2 is a training identity, but its test row is not labelled: labels are for training rows only
    assert table.loc[table["split"] == "test", "identity"].tolist() == ["p2"]
    pd.testing.assert_frame_equal(rows, before)  # the reader's rows are not modified


def test_finalise_drops_extra_columns_resets_the_index_and_casts_identity(tmp_path: Path) -> None:
    _image(tmp_path / "x.jpg")
    _image(tmp_path / "y.jpg")
    rows = pd.DataFrame(
        {
            "caption_id": ["1", "2", "3"],
            "image_id": ["x", "y", "y"],
            "image_path": [str(tmp_path / "x.jpg"), str(tmp_path / "y.jpg"), str(tmp_path / "y.jpg")],
            "caption": ["one", "two", "three"],
            "identity": [5, 3, 3],  # numeric identities, e.g. CUHK-PEDES ids not yet stringified
            "split": ["train", "train", "test"],
            "reason": ["", "", ""],  # e.g. a column left over from the quarantine step
        },
        index=[10, 4, 7],  # as after dropping quarantined rows
    )
    table = finalise_caption_table(rows, "table")
    assert list(table.columns) == COLUMNS
    assert table.index.tolist() == [0, 1, 2]
    assert table["identity"].tolist() == ["5", "3", "3"]
    assert table["label"].tolist() == [1, 0, -1]  # 3 < 5


def test_finalise_logs_images_captions_and_identities_per_split(
    rows: pd.DataFrame, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="timam.sources.caption_table"):
        finalise_caption_table(rows, "demo")
    messages = [record.getMessage() for record in caplog.records]
    assert "demo train: 3 images, 4 captions, 3 identities" in messages
    assert "demo val: 1 images, 1 captions, 1 identities" in messages
    assert "demo test: 1 images, 1 captions, 1 identities" in messages


def test_finalise_runs_every_check(rows: pd.DataFrame, tmp_path: Path) -> None:
    no_train = rows.assign(split="test")
    with pytest.raises(BadInputError, match="no training rows"):
        finalise_caption_table(no_train, "demo")
    empty = rows.copy()
    empty.loc[3, "caption"] = "   "
    with pytest.raises(BadInputError, match="caption 'c#0'"):
        finalise_caption_table(empty, "demo")
    (tmp_path / "d.jpg").unlink()
    with pytest.raises(BadInputError, match="d.jpg"):
        finalise_caption_table(rows, "demo")


# --- assign_labels -------------------------------------------------------------------------------


def test_assign_labels_is_contiguous_over_sorted_training_identities(rows: pd.DataFrame) -> None:
    labelled = assign_labels(rows)
    assert "label" not in rows.columns  # a copy is labelled
    train = labelled[labelled["split"] == "train"]
    assert sorted(train["label"].unique().tolist()) == list(range(train["identity"].nunique()))
    assert dict(zip(train["identity"], train["label"], strict=True)) == {"p10": 0, "p2": 1, "p7": 2}
    assert (labelled.loc[labelled["split"] != "train", "label"] == -1).all()


def test_assign_labels_identity_only_in_val_gets_no_label(rows: pd.DataFrame) -> None:
    labelled = assign_labels(rows)
    assert labelled.loc[labelled["identity"] == "p31", "label"].tolist() == [-1]
    assert labelled["label"].max() == 2  # p31 does not take a training index


# --- check_captions ------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["", "   ", "\t\n", None, math.nan])
def test_empty_caption_names_caption_image_and_count(rows: pd.DataFrame, bad: object) -> None:
    rows = rows.astype({"caption": object})
    rows.loc[2, "caption"] = bad
    rows.loc[4, "caption"] = ""
    with pytest.raises(BadInputError) as raised:
        check_captions(rows, "demo")
    message = str(raised.value)
    assert message.startswith("demo: caption 'b#0' of image ")
    assert rows.loc[2, "image_path"] in message
    assert "(2 empty caption(s) in all)" in message


def test_duplicate_caption_id_is_named(rows: pd.DataFrame) -> None:
    rows.loc[4, "caption_id"] = "a#1"
    with pytest.raises(BadInputError, match=r"^demo: duplicate caption id 'a#1'$"):
        check_captions(rows, "demo")


def test_good_captions_pass(rows: pd.DataFrame) -> None:
    check_captions(rows, "demo")  # no exception


# --- check_image_files ---------------------------------------------------------------------------


def test_missing_image_names_the_file_the_caption_and_the_parameter(rows: pd.DataFrame, tmp_path: Path) -> None:
    (tmp_path / "c.jpg").unlink()
    (tmp_path / "e.jpg").unlink()
    with pytest.raises(BadInputError) as raised:
        check_image_files(rows, "demo")
    message = str(raised.value)
    assert f"image file {tmp_path / 'c.jpg'} (caption 'c#0') does not exist" in message  # the first one
    assert "source.image_root" in message
    assert "e.jpg" not in message


def test_zero_byte_image_is_refused(rows: pd.DataFrame, tmp_path: Path) -> None:
    (tmp_path / "b.jpg").write_bytes(b"")
    with pytest.raises(BadInputError, match=r"b\.jpg \(caption 'b#0'\) is empty \(0 bytes\)"):
        check_image_files(rows, "demo")


def test_existing_images_pass(rows: pd.DataFrame) -> None:
    check_image_files(rows, "demo")


# --- check_splits --------------------------------------------------------------------------------


def test_unknown_split_names_are_listed(rows: pd.DataFrame) -> None:
    rows.loc[4, "split"] = "dev"
    rows.loc[5, "split"] = "holdout"
    with pytest.raises(BadInputError) as raised:
        check_splits(rows, "demo")
    assert str(raised.value) == "demo: unknown split name(s) ['dev', 'holdout']; expected ['train', 'val', 'test']"


def test_a_table_without_training_rows_is_refused(rows: pd.DataFrame) -> None:
    with pytest.raises(BadInputError, match="no training rows; the identification loss needs training identities"):
        check_splits(rows[rows["split"] != "train"], "demo")


def test_only_train_is_enough(rows: pd.DataFrame) -> None:
    check_splits(rows[rows["split"] == "train"], "demo")


def test_missing_and_unknown_split_together_are_a_bad_input(rows: pd.DataFrame) -> None:
    rows = rows.astype({"split": object})
    rows.loc[4, "split"] = None  # e.g. "split": null in a damaged reid_raw.json record
    rows.loc[5, "split"] = "dev"
    with pytest.raises(BadInputError, match="unknown split name"):
        check_splits(rows, "demo")


# --- check_split_sizes ---------------------------------------------------------------------------


def _images_per_split(train: int, val: int, test: int, captions_per_image: int = 2) -> pd.DataFrame:
    records = []
    for split, count in (("train", train), ("val", val), ("test", test)):
        for n in range(count):
            for k in range(captions_per_image):
                records.append({"caption_id": f"{split}{n}#{k}", "image_id": f"{split}{n}", "split": split})
    return pd.DataFrame(records)


def test_matching_sizes_count_images_not_captions(caplog: pytest.LogCaptureFixture) -> None:
    table = _images_per_split(4, 2, 3, captions_per_image=5)
    with caplog.at_level(logging.INFO, logger="timam.sources.caption_table"):
        found = check_split_sizes(table, {"train": 4, "val": 2, "test": 3}, source="demo")
    assert found == {"train": 4, "val": 2, "test": 3}
    assert "match the published sizes" in caplog.text


def test_mismatch_names_each_differing_split(caplog: pytest.LogCaptureFixture) -> None:
    table = _images_per_split(4, 1, 3)
    with pytest.raises(BadInputError) as raised:
        check_split_sizes(table, {"train": 4, "val": 2, "test": 5}, source="flickr30k")
    message = str(raised.value)
    assert message.startswith("flickr30k: images per split differ from the published protocol")
    assert "(val: 1 found, 2 expected, test: 3 found, 5 expected)" in message
    assert "train:" not in message  # the matching split is not reported
    assert "allow_mismatch=True" in message


def test_allow_mismatch_warns_and_returns_the_counts(caplog: pytest.LogCaptureFixture) -> None:
    table = _images_per_split(3, 1, 1)
    with caplog.at_level(logging.WARNING, logger="timam.sources.caption_table"):
        found = check_split_sizes(table, {"train": 5, "val": 1, "test": 1}, source="demo", allow_mismatch=True)
    assert found == {"train": 3, "val": 1, "test": 1}
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "train: 3 found, 5 expected" in warnings[0].getMessage()


def test_only_expected_splits_are_checked_and_absent_splits_count_zero() -> None:
    table = _images_per_split(2, 0, 7)
    assert check_split_sizes(table, {"train": 2}, source="demo") == {"train": 2}  # test's 7 is not checked
    with pytest.raises(BadInputError, match=r"val: 0 found, 3 expected"):
        check_split_sizes(table, {"train": 2, "val": 3}, source="demo")


def test_split_sizes_on_the_finalised_table(rows: pd.DataFrame) -> None:
    table = finalise_caption_table(rows, "demo")
    assert check_split_sizes(table, {"train": 3, "val": 1, "test": 1}, source="demo") == {
        "train": 3,
        "val": 1,
        "test": 1,
    }
