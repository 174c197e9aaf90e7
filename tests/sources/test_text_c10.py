"""Tests for the CUB-200 / Oxford-102 text_c10 reader."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from PIL import Image

from timam.sources.caption_table import BadInputError, finalise_caption_table
from timam.sources.image_checks import apply_bad_input_policy
from timam.sources.text_c10 import read_text_c10

CLASSES = {
    "001.Black_footed_Albatross": ["Black_Footed_Albatross_0001_796111", "Black_Footed_Albatross_0002_55"],
    "002.Laysan_Albatross": ["Laysan_Albatross_0001_545"],
    "003.Sooty_Albatross": ["Sooty_Albatross_0001_1071"],
    "004.Groove_billed_Ani": ["Groove_Billed_Ani_0002_1670"],
}
TRAINVAL = ["002.Laysan_Albatross", "001.Black_footed_Albatross", "003.Sooty_Albatross"]  # file order, unsorted
TEST = ["004.Groove_billed_Ani"]


def _captions(stem: str) -> str:
    return "".join(f"this bird {stem.lower()} has feature number {n}.\n" for n in range(10))


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "CUB_200_2011"
    for name, stems in CLASSES.items():
        (root / "images" / name).mkdir(parents=True)
        (root / "text_c10" / name).mkdir(parents=True)
        for stem in stems:
            Image.new("RGB", (9, 7), (20, 40, 60)).save(root / "images" / name / f"{stem}.jpg")
            (root / "text_c10" / name / f"{stem}.txt").write_text(_captions(stem), encoding="utf-8")
    (root / "trainvalclasses.txt").write_text("\n".join(TRAINVAL) + "\n", encoding="utf-8")
    (root / "testclasses.txt").write_text("\n".join(TEST) + "\n", encoding="utf-8")
    return root


def test_rows_splits_and_ids(root: Path) -> None:
    rows = read_text_c10(root)
    assert len(rows) == 5 * 10
    first = rows.iloc[0]
    stem = "Black_Footed_Albatross_0001_796111"
    assert first["caption_id"] == f"001.Black_footed_Albatross/{stem}#0"
    assert first["image_id"] == f"001.Black_footed_Albatross/{stem}"
    assert first["image_path"] == str(root / "images" / "001.Black_footed_Albatross" / f"{stem}.jpg")
    assert first["caption"] == f"this bird {stem.lower()} has feature number 0."
    assert first["identity"] == "001.Black_footed_Albatross"
    assert rows["caption_id"].iloc[9].endswith("#9")
    by_class = rows.groupby("identity")["split"].unique().map(list).to_dict()
    assert by_class == {
        "001.Black_footed_Albatross": ["train"], "002.Laysan_Albatross": ["train"],
        "003.Sooty_Albatross": ["train"], "004.Groove_billed_Ani": ["test"],
    }  # fmt: skip
    kept, quarantine = apply_bad_input_policy(rows, policy="error", source="cub", identities_disjoint=True)
    assert quarantine.empty
    table = finalise_caption_table(kept, "cub")
    assert sorted(table.loc[table["split"] == "train", "label"].unique()) == [0, 1, 2]


def test_val_classes_are_the_last_sorted_trainval_classes(root: Path) -> None:
    rows = read_text_c10(root, val_classes=1)
    splits = rows.groupby("identity")["split"].first().to_dict()
    assert splits["003.Sooty_Albatross"] == "val"
    assert splits["001.Black_footed_Albatross"] == splits["002.Laysan_Albatross"] == "train"
    assert splits["004.Groove_billed_Ani"] == "test"
    assert read_text_c10(root, val_classes=2).groupby("split")["identity"].nunique().to_dict() == {
        "train": 1, "val": 2, "test": 1,
    }  # fmt: skip
    for bad in (3, -1):
        with pytest.raises(BadInputError, match=f"val_classes={bad} but there are 3 trainval classes"):
            read_text_c10(root, val_classes=bad)


def test_invalid_utf8_names_the_file(root: Path) -> None:
    path = root / "text_c10" / "003.Sooty_Albatross" / "Sooty_Albatross_0001_1071.txt"
    path.write_bytes("a caf\u00e9 coloured bird\n".encode("latin-1"))
    with pytest.raises(BadInputError) as error:
        read_text_c10(root)
    assert str(path) in str(error.value) and "not valid UTF-8" in str(error.value)
    assert "offset 5" in str(error.value) and "Re-save" in str(error.value)


def test_utf8_with_bom_and_non_ascii_is_read(root: Path) -> None:
    path = root / "text_c10" / "003.Sooty_Albatross" / "Sooty_Albatross_0001_1071.txt"
    path.write_bytes("\ufeffa caf\u00e9 coloured bird\r\nsecond\r\n".encode())
    rows = read_text_c10(root)
    mine = rows[rows["identity"] == "003.Sooty_Albatross"]
    assert mine["caption"].tolist() == ["a caf\u00e9 coloured bird", "second"]


def test_blank_lines(root: Path) -> None:
    path = root / "text_c10" / "002.Laysan_Albatross" / "Laysan_Albatross_0001_545.txt"
    path.write_text("first\n   \nthird\n\n\n", encoding="utf-8")  # trailing blank lines are ignored
    rows = read_text_c10(root)
    mine = rows[rows["identity"] == "002.Laysan_Albatross"]
    assert mine["caption"].tolist() == ["first", "   ", "third"]
    kept, quarantine = apply_bad_input_policy(rows, policy="skip", source="cub")
    assert quarantine[["caption_id", "reason"]].values.tolist() == [
        ["002.Laysan_Albatross/Laysan_Albatross_0001_545#1", "empty caption"]
    ]


def test_image_without_text_file(root: Path, caplog: pytest.LogCaptureFixture) -> None:
    Image.new("RGB", (9, 7)).save(root / "images" / "004.Groove_billed_Ani" / "Groove_Billed_Ani_0003_1.jpg")
    empty = root / "text_c10" / "001.Black_footed_Albatross" / "Black_Footed_Albatross_0002_55.txt"
    empty.write_text("\n", encoding="utf-8")
    with pytest.raises(BadInputError, match=r"2 image\(s\) have no caption: .*Black_Footed_Albatross_0002_55"):
        read_text_c10(root)
    with caplog.at_level(logging.WARNING):
        rows = read_text_c10(root, images_without_captions="skip")
    assert len(rows) == 4 * 10
    assert "004.Groove_billed_Ani/Groove_Billed_Ani_0003_1" in caplog.text


def test_text_without_image_is_a_missing_image(root: Path) -> None:
    (root / "images" / "002.Laysan_Albatross" / "Laysan_Albatross_0001_545.jpg").unlink()
    rows = read_text_c10(root)
    with pytest.raises(BadInputError, match=r"Laysan_Albatross_0001_545\.jpg.*image missing"):
        apply_bad_input_policy(rows, policy="error", source="cub")


def test_class_in_both_lists(root: Path) -> None:
    (root / "testclasses.txt").write_text("004.Groove_billed_Ani\n003.Sooty_Albatross\n", encoding="utf-8")
    with pytest.raises(BadInputError, match=r"\['003.Sooty_Albatross'\] are in both trainvalclasses"):
        read_text_c10(root)


def test_listed_class_without_text_folder(root: Path) -> None:
    (root / "trainvalclasses.txt").write_text("\n".join([*TRAINVAL, "005.Crested_Auklet"]), encoding="utf-8")
    with pytest.raises(BadInputError, match=r"005.Crested_Auklet does not exist but class"):
        read_text_c10(root)


def test_unlisted_class_is_ignored_with_a_warning(root: Path, caplog: pytest.LogCaptureFixture) -> None:
    (root / "trainvalclasses.txt").write_text("\n".join(TRAINVAL[:2]), encoding="utf-8")
    with caplog.at_level(logging.WARNING):
        rows = read_text_c10(root)
    assert "003.Sooty_Albatross" not in set(rows["identity"])
    assert "not in either class list" in caplog.text and "003.Sooty_Albatross" in caplog.text


def test_wrong_or_missing_data_root(root: Path, tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="does not exist; set the data_root"):
        read_text_c10(tmp_path / "missing")
    with pytest.raises(BadInputError, match=r"images/images does not exist; data_root must be the folder holding"):
        read_text_c10(root / "images")  # one level too deep
    (root / "testclasses.txt").unlink()
    with pytest.raises(BadInputError, match=r"testclasses.txt does not exist"):
        read_text_c10(root)
