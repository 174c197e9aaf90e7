"""Tests for the reader registry: ``source.format`` -> reader, required parameters, split sizes, labels."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from PIL import Image

from timam.sources.caption_table import BadInputError, check_split_sizes
from timam.sources.config import source_config
from timam.sources.cuhk_pedes import read_cuhk_pedes
from timam.sources.generic_table import read_caption_table
from timam.sources.image_checks import READER_COLUMNS
from timam.sources.karpathy import read_karpathy
from timam.sources.registry import (
    CUHK_PEDES_SPLIT_SIZES,
    READERS,
    describe_source,
    published_split_sizes,
    read_source,
)
from timam.sources.text_c10 import read_text_c10
from timam.sources.ucm_captions import UCM_SPLIT_SIZES, read_ucm_karpathy, read_ucm_parquet

FORMATS = ["cuhk_pedes", "karpathy", "table", "text_c10", "ucm_karpathy", "ucm_parquet"]


def _jpeg_bytes(colour: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), colour).save(buffer, format="JPEG")
    return buffer.getvalue()


def _folder(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


# One tiny raw input per format, as the catalog's raw_annotations entry loads it, with its source block.


def _cuhk_pedes(tmp_path: Path) -> tuple[Any, dict[str, Any]]:
    records = [
        {"id": 12, "file_path": "CUHK01/0012001.png", "captions": ["A man in a red coat.", "Red coat."],
         "split": "train"},
        {"id": 40, "file_path": "test_query/p40_s1.jpg", "captions": ["A woman with a bag."], "split": "test"},
    ]  # fmt: skip
    return records, {"format": "cuhk_pedes", "image_root": str(_folder(tmp_path / "imgs"))}


def _karpathy_json() -> dict[str, Any]:
    return {
        "dataset": "flickr30k",
        "images": [
            {"filename": "1000092795.jpg", "imgid": 0, "split": "train", "sentids": [0, 1],
             "sentences": [{"raw": "Two young guys.", "tokens": ["two"], "imgid": 0, "sentid": 0},
                           {"raw": "Two men outside.", "tokens": ["two"], "imgid": 0, "sentid": 1}]},
            {"filename": "10002456.jpg", "imgid": 1, "split": "test", "sentids": [2],
             "sentences": [{"raw": "Men in hard hats.", "tokens": ["men"], "imgid": 1, "sentid": 2}]},
        ],
    }  # fmt: skip


def _karpathy(tmp_path: Path) -> tuple[Any, dict[str, Any]]:
    root = _folder(tmp_path / "flickr30k-images")
    return _karpathy_json(), {"format": "karpathy", "dataset": "flickr30k", "image_root": str(root)}


def _text_c10_root(tmp_path: Path) -> Path:
    root = tmp_path / "CUB_200_2011"
    for name, stem in (("001.Albatross", "Albatross_0001"), ("002.Auklet", "Auklet_0001"), ("003.Ani", "Ani_0001")):
        Image.new("RGB", (9, 7), (20, 40, 60)).save(_folder(root / "images" / name) / f"{stem}.jpg")
        (_folder(root / "text_c10" / name) / f"{stem}.txt").write_text(
            f"this bird {stem} is small.\nit has a short beak.\n", encoding="utf-8"
        )
    (root / "trainvalclasses.txt").write_text("002.Auklet\n001.Albatross\n", encoding="utf-8")
    (root / "testclasses.txt").write_text("003.Ani\n", encoding="utf-8")
    return root


def _text_c10(tmp_path: Path) -> tuple[Any, dict[str, Any]]:
    return None, {"format": "text_c10", "data_root": str(_text_c10_root(tmp_path))}  # no annotation file


def _ucm_table() -> pd.DataFrame:
    return pd.DataFrame(
        [
            {"image_id": "ucm_0001", "class_name": "agricultural", "identity_id": 0, "split": "train",
             "image_jpeg": _jpeg_bytes((10, 200, 10)), "captions": ["green fields", "farmland"], "sent_ids": [0, 1]},
            {"image_id": "ucm_0101", "class_name": "airplane", "identity_id": 1, "split": "test",
             "image_jpeg": _jpeg_bytes((200, 200, 200)), "captions": ["a plane"], "sent_ids": [500]},
        ]
    )  # fmt: skip


def _ucm_parquet(tmp_path: Path) -> tuple[Any, dict[str, Any]]:
    return _ucm_table(), {"format": "ucm_parquet", "image_cache_dir": str(tmp_path / "ucm_images")}


def _ucm_karpathy(tmp_path: Path) -> tuple[Any, dict[str, Any]]:
    document = {
        "images": [
            {"filename": "1.tif", "imgid": 0, "split": "train",
             "sentences": [{"raw": "There is a piece of farmland.", "imgid": 0, "sentid": 0}]},
            {"filename": "101.tif", "imgid": 100, "split": "val",
             "sentences": [{"raw": "An airplane is parked.", "imgid": 100, "sentid": 500}]},
        ]
    }  # fmt: skip
    return document, {"format": "ucm_karpathy", "image_root": str(_folder(tmp_path / "imgs"))}


def _table(tmp_path: Path) -> tuple[Any, dict[str, Any]]:
    table = pd.DataFrame({"file": ["a.jpg", "a.jpg", "b.jpg"], "text": ["one", "two", "three"]})
    columns = {"image_path": "file", "caption": "text"}
    source = {"format": "table", "image_root": str(_folder(tmp_path / "images")), "columns": columns}
    return table, source


CASES = {
    "cuhk_pedes": _cuhk_pedes,
    "karpathy": _karpathy,
    "text_c10": _text_c10,
    "ucm_parquet": _ucm_parquet,
    "ucm_karpathy": _ucm_karpathy,
    "table": _table,
}


def _direct(name: str, raw: Any, source: dict[str, Any]) -> pd.DataFrame:
    """What the format's own reader returns for the same input, called with the registry's defaults."""
    if name == "cuhk_pedes":
        return read_cuhk_pedes(raw, source["image_root"])
    if name == "karpathy":
        return read_karpathy(raw, source["image_root"], dataset=source["dataset"])
    if name == "text_c10":
        return read_text_c10(source["data_root"])
    if name == "ucm_parquet":
        return read_ucm_parquet(raw, source["image_cache_dir"])
    if name == "ucm_karpathy":
        return read_ucm_karpathy(raw, source["image_root"])
    assert name == "table"
    return read_caption_table(raw, source["image_root"], columns=source["columns"])


# --- dispatch ------------------------------------------------------------------------------------


def test_the_registry_knows_exactly_the_documented_formats() -> None:
    assert sorted(READERS) == FORMATS
    assert sorted(CASES) == FORMATS


@pytest.mark.parametrize("name", FORMATS)
def test_each_format_reaches_its_own_reader(name: str, tmp_path: Path) -> None:
    raw, source = CASES[name](tmp_path / "via_registry")
    rows = read_source(raw, source)
    raw_direct, source_direct = CASES[name](tmp_path / "direct")
    expected = _direct(name, raw_direct, source_direct)
    assert len(rows) > 0 and list(rows.columns) == READER_COLUMNS
    # same rows as the reader itself gives (paths differ only by the tmp folder)
    pd.testing.assert_frame_equal(
        rows.drop(columns="image_path"), expected.drop(columns="image_path"), check_dtype=False
    )
    assert [Path(p).name for p in rows["image_path"]] == [Path(p).name for p in expected["image_path"]]
    assert all(str(tmp_path / "via_registry") in p for p in rows["image_path"])


@pytest.mark.parametrize("name", FORMATS)
def test_each_format_reads_through_the_typed_source_block(name: str, tmp_path: Path) -> None:
    """The node passes SourceConfig.reader_parameters() (every default filled in), not the raw YAML block."""
    raw, source = CASES[name](tmp_path)
    parameters = source_config(source).reader_parameters()
    assert parameters["format"] == name
    rows = read_source(raw, parameters)
    pd.testing.assert_frame_equal(rows, read_source(raw, source))


def test_formats_are_told_apart_by_their_rows(tmp_path: Path) -> None:
    """A mix-up in the table (e.g. ucm_karpathy -> karpathy) would give other ids, identities or paths."""
    rows = {name: read_source(*CASES[name](tmp_path / name)) for name in FORMATS}
    assert rows["cuhk_pedes"]["caption_id"].tolist() == [
        "CUHK01/0012001.png#0",
        "CUHK01/0012001.png#1",
        "test_query/p40_s1.jpg#0",
    ]
    assert rows["karpathy"]["identity"].tolist() == ["1000092795.jpg", "1000092795.jpg", "10002456.jpg"]
    assert rows["text_c10"]["identity"].tolist() == ["001.Albatross"] * 2 + ["002.Auklet"] * 2 + ["003.Ani"] * 2
    assert rows["ucm_parquet"]["image_path"].tolist()[0] == str(
        tmp_path / "ucm_parquet" / "ucm_images" / "ucm_0001.jpg"
    )
    assert rows["ucm_karpathy"]["image_id"].tolist() == ["ucm_0001", "ucm_0101"]
    assert rows["ucm_karpathy"]["identity"].tolist() == ["agricultural", "airplane"]
    assert rows["table"]["caption_id"].tolist() == ["a.jpg#0", "a.jpg#1", "b.jpg#0"]


# --- errors --------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["pascal", "CUHK_PEDES", "", None])
def test_unknown_format_names_every_supported_one(bad: Any) -> None:
    with pytest.raises(BadInputError) as raised:
        read_source([], {"format": bad})
    assert str(raised.value) == f"params source.format is {bad!r}; supported formats: {FORMATS}"


def test_missing_format_key_is_an_unknown_format() -> None:
    with pytest.raises(BadInputError, match=r"params source.format is None; supported formats: \['cuhk_pedes'"):
        read_source([], {"image_root": "/data"})


@pytest.mark.parametrize(
    ("name", "key"),
    [("cuhk_pedes", "image_root"), ("karpathy", "image_root"), ("text_c10", "data_root"),
     ("ucm_parquet", "image_cache_dir"), ("ucm_karpathy", "image_root"), ("table", "image_root")],
)  # fmt: skip
def test_missing_location_parameter_is_named(name: str, key: str) -> None:
    with pytest.raises(BadInputError) as raised:
        read_source(None, {"format": name})  # refused before the (absent) data is looked at
    assert str(raised.value) == f"params source.{key} is required for source.format {name!r}"


def test_karpathy_needs_the_dataset_name(tmp_path: Path) -> None:
    raw, source = _karpathy(tmp_path)
    del source["dataset"]
    with pytest.raises(BadInputError, match=r"^params source.dataset is required for source.format 'karpathy'$"):
        read_source(raw, source)


# --- parameters reach the readers ----------------------------------------------------------------


def _coco_json() -> dict[str, Any]:
    def image(imgid: int, folder: str, split: str, sentences: list[str]) -> dict[str, Any]:
        return {
            "filepath": folder,
            "filename": f"COCO_{folder}_{imgid:012d}.jpg",
            "imgid": imgid,
            "split": split,
            "sentences": [{"raw": s, "imgid": imgid, "sentid": imgid * 10 + k} for k, s in enumerate(sentences)],
        }

    return {
        "dataset": "coco",
        "images": [
            image(0, "train2014", "train", ["A dog on a couch."]),
            image(1, "val2014", "restval", ["A cake on a table."]),
            image(2, "val2014", "test", ["A man with a helmet."]),
            image(3, "val2014", "val", []),  # an image without sentences
        ],
    }


def test_karpathy_restval_and_bad_input_policy_are_passed_on(tmp_path: Path) -> None:
    source = {"format": "karpathy", "dataset": "coco", "image_root": str(tmp_path)}
    with pytest.raises(BadInputError, match="1 image\\(s\\) have no caption: val2014/COCO_val2014_000000000003.jpg"):
        read_source(_coco_json(), source)  # on_bad_input defaults to "error"
    kept = read_source(_coco_json(), {**source, "on_bad_input": "skip"})
    assert kept["image_id"].tolist() == [
        "train2014/COCO_train2014_000000000000.jpg",
        "val2014/COCO_val2014_000000000001.jpg",
        "val2014/COCO_val2014_000000000002.jpg",
    ]
    assert kept["split"].tolist() == ["train", "train", "test"]  # restval defaults to train
    skipped = read_source(_coco_json(), {**source, "on_bad_input": "skip", "restval": "skip"})
    assert skipped["split"].tolist() == ["train", "test"]


def test_text_c10_val_classes_is_passed_on_as_an_integer(tmp_path: Path) -> None:
    source = {"format": "text_c10", "data_root": str(_text_c10_root(tmp_path))}
    splits = read_source(None, {**source, "val_classes": "1"}).groupby("identity")["split"].first().to_dict()
    assert splits == {"001.Albatross": "train", "002.Auklet": "val", "003.Ani": "test"}  # last sorted class -> val
    default = read_source(None, source).groupby("identity")["split"].first().to_dict()
    assert default == {"001.Albatross": "train", "002.Auklet": "train", "003.Ani": "test"}


def test_text_c10_bad_input_policy_is_passed_on(tmp_path: Path) -> None:
    root = _text_c10_root(tmp_path)
    Image.new("RGB", (9, 7)).save(root / "images" / "001.Albatross" / "Albatross_0002.jpg")  # no text file
    source = {"format": "text_c10", "data_root": str(root)}
    with pytest.raises(BadInputError, match="001.Albatross/Albatross_0002"):
        read_source(None, source)
    assert len(read_source(None, {**source, "on_bad_input": "skip"})) == 6


def test_ucm_bad_input_policy_is_passed_on(tmp_path: Path) -> None:
    table = _ucm_table()
    table.at[1, "captions"] = []
    table.at[1, "sent_ids"] = []
    source = {"format": "ucm_parquet", "image_cache_dir": str(tmp_path / "cache")}
    with pytest.raises(BadInputError, match="ucm_0101"):
        read_source(table, source)
    assert read_source(table, {**source, "on_bad_input": "skip"})["image_id"].unique().tolist() == ["ucm_0001"]

    document, karpathy_source = _ucm_karpathy(tmp_path)
    document["images"][1]["sentences"] = []
    with pytest.raises(BadInputError, match="ucm_0101"):
        read_source(document, karpathy_source)
    assert len(read_source(document, {**karpathy_source, "on_bad_input": "skip"})) == 1


def test_table_columns_and_default_split_are_passed_on(tmp_path: Path) -> None:
    raw, source = _table(tmp_path)
    assert set(read_source(raw, source)["split"]) == {"train"}
    assert set(read_source(raw, {**source, "default_split": "test"})["split"]) == {"test"}
    with pytest.raises(BadInputError, match="no column 'image_path'"):
        read_source(raw, {key: value for key, value in source.items() if key != "columns"})


# --- published split sizes -----------------------------------------------------------------------


def test_cuhk_pedes_sizes_only_when_asked_for() -> None:
    assert published_split_sizes({"format": "cuhk_pedes"}) is None
    assert published_split_sizes({"format": "cuhk_pedes", "check_split_sizes": False}) is None
    sizes = published_split_sizes({"format": "cuhk_pedes", "check_split_sizes": True})
    assert sizes == CUHK_PEDES_SPLIT_SIZES == {"train": 34054, "val": 3078, "test": 3074}  # the README's protocol


def test_karpathy_sizes_follow_dataset_and_restval() -> None:
    assert published_split_sizes({"format": "karpathy", "dataset": "flickr30k"}) == {
        "train": 29000,
        "val": 1014,
        "test": 1000,
    }
    coco = published_split_sizes({"format": "karpathy", "dataset": "coco"})
    assert coco == {"train": 113287, "val": 5000, "test": 5000}  # restval joins train by default
    assert published_split_sizes({"format": "karpathy", "dataset": "coco", "restval": "skip"}) == {
        "train": 82783,
        "val": 5000,
        "test": 5000,
    }
    assert published_split_sizes({"format": "karpathy"}) is None  # no dataset named


def test_karpathy_flickr8k_sizes_are_checked() -> None:
    assert published_split_sizes({"format": "karpathy", "dataset": "flickr8k"}) == {
        "train": 6000,
        "val": 1000,
        "test": 1000,
    }


@pytest.mark.parametrize("name", ["ucm_parquet", "ucm_karpathy"])
def test_both_ucm_readers_check_the_official_split(name: str) -> None:
    sizes = published_split_sizes({"format": name})
    assert sizes == UCM_SPLIT_SIZES == {"train": 1680, "val": 210, "test": 210}
    assert sum(sizes.values()) == 21 * 100  # 21 classes of 100 images


@pytest.mark.parametrize("name", ["text_c10", "table"])
def test_formats_without_a_fixed_protocol_have_no_sizes(name: str) -> None:
    assert published_split_sizes({"format": name, "check_split_sizes": True}) is None


def test_published_sizes_pass_on_a_complete_dataset_shape() -> None:
    """The sizes are what check_split_sizes compares unique images per split with."""
    expected = published_split_sizes({"format": "ucm_parquet"})
    assert expected is not None
    table = pd.DataFrame(
        [
            {"image_id": f"{split}{n}", "split": split}
            for split, count in expected.items()
            for n in range(count)
            for _ in range(5)
        ]
    )
    assert check_split_sizes(table, expected, source="ucm") == expected


# --- describe_source -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "key"),
    [("cuhk_pedes", "image_root"), ("karpathy", "image_root"), ("text_c10", "data_root"),
     ("ucm_parquet", "image_cache_dir"), ("ucm_karpathy", "image_root"), ("table", "image_root")],
)  # fmt: skip
def test_description_names_the_folder_the_reader_needs(name: str, key: str) -> None:
    source = {"format": name, "image_root": "/r/images", "data_root": "/r/data", "image_cache_dir": "/r/cache"}
    assert describe_source(source) == f"{name} data at {source[key]}"
    with pytest.raises(BadInputError, match=f"params source.{key} is required"):  # the same key as the reader's
        read_source(None, {"format": name})


def test_description_without_a_folder_or_format() -> None:
    assert describe_source({"format": "cuhk_pedes"}) == "cuhk_pedes data at ?"
    assert describe_source({"format": "cuhk_pedes", "image_root": "/data/CUHK-PEDES/imgs"}) == (
        "cuhk_pedes data at /data/CUHK-PEDES/imgs"
    )
    assert describe_source({}) == "None data at ?"
