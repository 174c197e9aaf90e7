"""Tests for the Karpathy caption_datasets reader (Flickr30K / COCO) and the split-size check."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from timam.sources.caption_table import BadInputError, check_split_sizes, finalise_caption_table
from timam.sources.image_checks import apply_bad_input_policy
from timam.sources.karpathy import karpathy_split_sizes, read_karpathy

# A trimmed dataset_flickr30k.json, written as the raw text the real file holds.
FLICKR_JSON = """{"images": [
 {"sentids": [0, 1], "imgid": 0, "split": "train", "filename": "1000092795.jpg",
  "sentences": [{"tokens": ["two", "young", "guys"], "raw": "Two young guys with shaggy hair.",
                 "imgid": 0, "sentid": 0},
                {"tokens": ["two", "men"], "raw": "Two men in green shirts.", "imgid": 0, "sentid": 1}]},
 {"sentids": [2], "imgid": 1, "split": "val", "filename": "10002456.jpg",
  "sentences": [{"tokens": ["workers"], "raw": "Several men in hard hats.", "imgid": 1, "sentid": 2}]},
 {"sentids": [3, 4], "imgid": 2, "split": "test", "filename": "1000268201.jpg",
  "sentences": [{"tokens": ["a", "child"], "raw": "A child in a pink dress.", "imgid": 2, "sentid": 3},
                {"tokens": ["a", "girl"], "raw": "A little girl climbing.", "imgid": 2, "sentid": 4}]}
], "dataset": "flickr30k"}"""

COCO_JSON = """{"images": [
 {"filepath": "val2014", "sentids": [770337], "filename": "COCO_val2014_000000391895.jpg", "imgid": 0,
  "split": "test", "sentences": [{"tokens": ["a", "man"], "raw": "A man with a red helmet.", "imgid": 0,
  "sentid": 770337}], "cocoid": 391895},
 {"filepath": "val2014", "sentids": [788656], "filename": "COCO_val2014_000000522418.jpg", "imgid": 1,
  "split": "restval", "sentences": [{"tokens": ["a", "woman"], "raw": "A woman cutting cake.", "imgid": 1,
  "sentid": 788656}], "cocoid": 522418},
 {"filepath": "train2014", "sentids": [787980, 789366], "filename": "COCO_train2014_000000057870.jpg",
  "imgid": 2, "split": "train", "sentences": [{"tokens": ["a"], "raw": "A restaurant with tables.", "imgid": 2,
  "sentid": 787980}, {"tokens": ["a"], "raw": "A long restaurant table.", "imgid": 2, "sentid": 789366}],
  "cocoid": 57870},
 {"filepath": "val2014", "sentids": [1], "filename": "COCO_val2014_000000000042.jpg", "imgid": 3,
  "split": "val", "sentences": [{"tokens": ["a"], "raw": "A dog.", "imgid": 3, "sentid": 1}], "cocoid": 42}
], "dataset": "coco"}"""


def _write_images(root: Path, relative_paths: list[str]) -> None:
    for relative in relative_paths:
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (10, 8), (90, 120, 30)).save(path)


@pytest.fixture
def flickr(tmp_path: Path) -> tuple[dict, Path]:
    annotations = json.loads(FLICKR_JSON)
    root = tmp_path / "flickr30k-images"
    _write_images(root, [image["filename"] for image in annotations["images"]])
    return annotations, root


@pytest.fixture
def coco(tmp_path: Path) -> tuple[dict, Path]:
    annotations = json.loads(COCO_JSON)
    root = tmp_path / "coco"
    _write_images(root, [f"{image['filepath']}/{image['filename']}" for image in annotations["images"]])
    return annotations, root


def test_flickr_rows(flickr: tuple[dict, Path]) -> None:
    annotations, root = flickr
    rows = read_karpathy(annotations, root, dataset="flickr30k")
    assert list(rows.columns) == ["caption_id", "image_id", "image_path", "caption", "identity", "split"]
    assert rows["caption_id"].tolist() == ["0", "1", "2", "3", "4"]
    assert rows["image_id"].tolist()[:2] == ["1000092795.jpg"] * 2
    assert rows["image_path"].iloc[0] == str(root / "1000092795.jpg")
    assert rows["caption"].iloc[2] == "Several men in hard hats."
    assert rows["identity"].tolist() == rows["image_id"].tolist()  # one identity per image
    assert rows["split"].tolist() == ["train", "train", "val", "test", "test"]
    table = finalise_caption_table(rows, "flickr30k")
    assert table["label"].tolist() == [0, 0, -1, -1, -1]
    assert check_split_sizes(table, {"train": 1, "val": 1, "test": 1}, source="flickr30k") == {
        "train": 1, "val": 1, "test": 1,
    }  # fmt: skip


def test_coco_paths_and_restval_to_train(coco: tuple[dict, Path]) -> None:
    annotations, root = coco
    rows = read_karpathy(annotations, root, dataset="coco")
    assert rows["image_path"].iloc[0] == str(root / "val2014" / "COCO_val2014_000000391895.jpg")
    assert rows["image_id"].iloc[0] == "val2014/COCO_val2014_000000391895.jpg"
    assert rows["caption_id"].tolist() == ["770337", "788656", "787980", "789366", "1"]
    assert rows["split"].tolist() == ["test", "train", "train", "train", "val"]
    finalise_caption_table(rows, "coco")


def test_coco_restval_skip(coco: tuple[dict, Path]) -> None:
    annotations, root = coco
    rows = read_karpathy(annotations, root, dataset="coco", restval="skip")
    assert "788656" not in set(rows["caption_id"])
    assert rows.groupby("split")["image_id"].nunique().to_dict() == {"test": 1, "train": 1, "val": 1}
    with pytest.raises(ValueError, match="restval"):
        read_karpathy(annotations, root, dataset="coco", restval="val")


def test_coco_entry_without_filepath(coco: tuple[dict, Path]) -> None:
    annotations, root = coco
    del annotations["images"][2]["filepath"]
    with pytest.raises(BadInputError, match=r"dataset_coco.json images\[2\] lacks \['filepath'\]"):
        read_karpathy(annotations, root, dataset="coco")


def test_wrong_dataset_file(flickr: tuple[dict, Path]) -> None:
    annotations, root = flickr
    with pytest.raises(BadInputError, match="says dataset 'flickr30k' but dataset='coco'"):
        read_karpathy(annotations, root, dataset="coco")
    with pytest.raises(BadInputError, match="'images' list"):
        read_karpathy([{"filename": "x.jpg"}], root, dataset="flickr30k")  # a reid_raw.json-like list
    with pytest.raises(ValueError, match="dataset is 'f30k'"):
        read_karpathy(annotations, root, dataset="f30k")


def test_missing_data_root(flickr: tuple[dict, Path], tmp_path: Path) -> None:
    annotations, _ = flickr
    with pytest.raises(BadInputError, match=r"does not exist; set the data_root"):
        read_karpathy(annotations, tmp_path / "nowhere", dataset="flickr30k")


def test_wrong_data_root_is_caught_by_image_checks(flickr: tuple[dict, Path], tmp_path: Path) -> None:
    annotations, _ = flickr
    rows = read_karpathy(annotations, tmp_path, dataset="flickr30k")  # exists, but holds no images
    with pytest.raises(BadInputError, match=r"1000092795\.jpg.*image missing.*data_root"):
        apply_bad_input_policy(rows, policy="error", source="flickr30k")


def test_image_without_sentences(flickr: tuple[dict, Path], caplog: pytest.LogCaptureFixture) -> None:
    annotations, root = flickr
    annotations["images"][1]["sentences"] = []
    with pytest.raises(BadInputError, match=r"1 image\(s\) have no caption: 10002456\.jpg"):
        read_karpathy(annotations, root, dataset="flickr30k")
    with caplog.at_level(logging.WARNING):
        rows = read_karpathy(annotations, root, dataset="flickr30k", images_without_captions="skip")
    assert "10002456.jpg" not in set(rows["image_id"]) and len(rows) == 4
    assert "without captions: 10002456.jpg" in caplog.text


def test_empty_caption_in_raw_file_reaches_the_checks(flickr: tuple[dict, Path]) -> None:
    annotations, root = flickr
    annotations["images"][2]["sentences"][1]["raw"] = "  "
    rows = read_karpathy(annotations, root, dataset="flickr30k")
    kept, quarantine = apply_bad_input_policy(rows, policy="skip", source="flickr30k")
    assert quarantine[["caption_id", "reason"]].values.tolist() == [["4", "empty caption"]]
    assert len(kept) == 4


def test_duplicate_sentid_reaches_the_checks(flickr: tuple[dict, Path]) -> None:
    annotations, root = flickr
    annotations["images"][1]["sentences"][0]["sentid"] = 0
    rows = read_karpathy(annotations, root, dataset="flickr30k")
    with pytest.raises(BadInputError, match="duplicate caption_id"):
        apply_bad_input_policy(rows, policy="error", source="flickr30k")


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda a: a["images"][0].update(split="dev"), r"images\[0\] has split 'dev'"),
        (lambda a: a["images"][1].pop("sentences"), r"images\[1\] lacks \['sentences'\]"),
        (lambda a: a["images"][1].pop("filename"), r"images\[1\] lacks \['filename'\]"),
        (lambda a: a["images"][2]["sentences"][0].pop("raw"), r"images\[2\] \(1000268201.jpg\) sentences\[0\] lacks"),
        (lambda a: a["images"][2]["sentences"][0].update(imgid=7), r"belongs to imgid 7 but sits under imgid 2"),
        (lambda a: a["images"].append(dict(a["images"][0])), r"'1000092795.jpg' is listed twice"),
    ],
)
def test_malformed_entries(flickr: tuple[dict, Path], edit, message: str) -> None:
    annotations, root = flickr
    edit(annotations)
    with pytest.raises(BadInputError, match=message):
        read_karpathy(annotations, root, dataset="flickr30k")


def test_published_split_sizes() -> None:
    assert karpathy_split_sizes("flickr30k") == {"train": 29000, "val": 1014, "test": 1000}
    assert karpathy_split_sizes("coco", restval="train") == {"train": 113287, "val": 5000, "test": 5000}
    assert karpathy_split_sizes("coco", restval="skip")["train"] == 82783


def test_split_size_mismatch(flickr: tuple[dict, Path], caplog: pytest.LogCaptureFixture) -> None:
    rows = read_karpathy(*flickr, dataset="flickr30k")
    expected = karpathy_split_sizes("flickr30k")
    with pytest.raises(BadInputError, match=r"train: 1 found, 29000 expected, val: 1 found, 1014 expected"):
        check_split_sizes(rows, expected, source="flickr30k")
    with caplog.at_level(logging.WARNING):
        found = check_split_sizes(rows, expected, source="flickr30k", allow_mismatch=True)
    assert found == {"train": 1, "val": 1, "test": 1}
    assert "test: 1 found, 1000 expected" in caplog.text
    empty = pd.DataFrame({"image_id": [], "split": []})
    with pytest.raises(BadInputError, match="test: 0 found, 5 expected"):
        check_split_sizes(empty, {"test": 5}, source="x")
