"""CUHK-PEDES reid_raw.json -> canonical caption table, and the errors that stop a bad run."""

import json
from pathlib import Path

import pytest
from PIL import Image

from timam.pipelines.prepare.nodes import build_caption_table
from timam.sources.caption_table import COLUMNS, BadInputError


def _write_dataset(root, records):
    for record in records:
        path = root / "imgs" / record["file_path"]
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 16), (200, 10, 10)).save(path)
    (root / "reid_raw.json").write_text(json.dumps(records))
    return json.loads((root / "reid_raw.json").read_text())


RECORDS = [
    {
        "id": 11,
        "file_path": "CUHK01/0011001.png",
        "captions": ["A man in a red coat.", "Red coat, black jeans."],
        "split": "train",
    },
    {
        "id": 11,
        "file_path": "CUHK01/0011002.png",
        "captions": ["The man wears red.", "He is in a red jacket."],
        "split": "train",
    },
    {
        "id": 5,
        "file_path": "CUHK01/0005001.png",
        "captions": ["A woman with a bag.", "She carries a bag."],
        "split": "train",
    },
    {"id": 7, "file_path": "test_query/p7_s1.jpg", "captions": ["A child in blue.", "Blue shirt."], "split": "test"},
    {"id": 9, "file_path": "val/p9.jpg", "captions": ["Grey hoodie.", "A grey hoodie and shorts."], "split": "val"},
]


def test_table_has_one_row_per_caption_and_contiguous_train_labels(tmp_path):
    records = _write_dataset(tmp_path, RECORDS)
    table, quarantine = build_caption_table(records, {"format": "cuhk_pedes", "image_root": str(tmp_path / "imgs")})
    assert quarantine.empty
    assert list(table.columns) == COLUMNS
    assert len(table) == 10
    train = table[table["split"] == "train"]
    assert sorted(train["label"].unique()) == [0, 1]
    assert dict(zip(train["identity"], train["label"], strict=True)) == {"11": 0, "5": 1}
    assert (table.loc[table["split"] != "train", "label"] == -1).all()
    assert table["caption_id"].is_unique
    assert table.loc[0, "image_path"].endswith("imgs/CUHK01/0011001.png")


def test_missing_image_names_the_file_and_caption(tmp_path):
    records = _write_dataset(tmp_path, RECORDS)
    (tmp_path / "imgs" / "val" / "p9.jpg").unlink()
    with pytest.raises(BadInputError, match=r"caption 'val/p9\.jpg#0', image .*p9\.jpg.* image missing"):
        build_caption_table(records, {"format": "cuhk_pedes", "image_root": str(tmp_path / "imgs")})


def test_empty_caption_names_the_row(tmp_path):
    records = _write_dataset(tmp_path, RECORDS)
    records[2]["captions"][1] = "   "
    with pytest.raises(BadInputError, match=r"caption 'CUHK01/0005001\.png#1', image .*0005001\.png.* empty caption"):
        build_caption_table(records, {"format": "cuhk_pedes", "image_root": str(tmp_path / "imgs")})


def test_wrong_image_root_says_which_parameter_to_fix(tmp_path):
    records = _write_dataset(tmp_path, RECORDS)
    with pytest.raises(BadInputError, match="source.image_root"):
        build_caption_table(records, {"format": "cuhk_pedes", "image_root": str(tmp_path / "nowhere")})


def test_unknown_format_lists_supported_ones(tmp_path):
    with pytest.raises(ValueError, match=r"source.format must be one of the supported formats \['cuhk_pedes'"):
        build_caption_table([], {"format": "pascal", "image_root": str(tmp_path)})


def test_skip_policy_quarantines_bad_rows_with_reasons(tmp_path):
    records = _write_dataset(tmp_path, RECORDS)
    (tmp_path / "imgs" / "val" / "p9.jpg").unlink()
    source = {"format": "cuhk_pedes", "image_root": str(tmp_path / "imgs"), "on_bad_input": "skip"}
    table, quarantine = build_caption_table(records, source)
    assert len(table) == 8 and "val" not in set(table["split"])
    assert sorted(quarantine["caption_id"]) == ["val/p9.jpg#0", "val/p9.jpg#1"]
    assert quarantine["reason"].str.contains("missing").all()


def test_resized_image_cache_points_the_table_at_small_copies_written_once(tmp_path):
    records = _write_dataset(tmp_path, RECORDS)
    big = tmp_path / "imgs" / "CUHK01" / "0011001.png"
    Image.new("RGB", (300, 600), (10, 200, 10)).save(big)
    source = {
        "format": "cuhk_pedes",
        "image_root": str(tmp_path / "imgs"),
        "resized_image_cache": {"directory": str(tmp_path / "cache"), "size": [32, 16]},
    }
    table, _ = build_caption_table(records, source)
    paths = table["image_path"].unique()
    assert len(paths) == 5 and all(path.startswith(str(tmp_path / "cache")) for path in paths)
    first = table.loc[table["image_id"] == "CUHK01/0011001.png", "image_path"].iloc[0]
    with Image.open(first) as image:
        assert image.size == (16, 32) and image.getpixel((8, 16))[1] > 150
    stamp = {p: Path(p).stat().st_mtime_ns for p in paths}
    again, _ = build_caption_table(records, source)
    assert again["image_path"].tolist() == table["image_path"].tolist()
    assert {p: Path(p).stat().st_mtime_ns for p in paths} == stamp
