"""Tests for the UCM-Captions readers (compact Parquet copy and original dataset.json)."""

from __future__ import annotations

import io
import json
import logging
import os
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from timam.sources.caption_table import BadInputError, check_split_sizes, finalise_caption_table
from timam.sources.image_checks import apply_bad_input_policy
from timam.sources.ucm_captions import (
    UCM_CAPTIONS,
    UCM_CLASSES,
    UCM_SPLIT_SIZES,
    read_ucm_karpathy,
    read_ucm_parquet,
    ucm_class_of,
    write_once,
)

REAL_PARQUET = Path("/work/shared/data/ucm_captions/ucm_captions_128.parquet")


def _jpeg(colour: tuple[int, int, int], size: int = 16) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def _parquet_rows() -> list[dict]:
    specs = [(1, "agricultural", "train"), (101, "airplane", "val"), (2100, "tenniscourt", "test")]
    return [
        {
            "image_id": f"ucm_{n:04d}",
            "caption_image_file": f"{n}.tif",
            "source_file": f"{name}/{name}{(n - 1) % 100:02d}.tif",
            "identity_id": UCM_CLASSES.index(name),
            "class_name": name,
            "split": split,
            "image_jpeg": _jpeg((n % 256, 50, 100)),
            "orig_width": 256,
            "orig_height": 256,
            "captions": [f"{name} caption {k}" for k in range(5)],
            "sent_ids": [5 * (n - 1) + k for k in range(5)],
        }
        for n, name, split in specs
    ]


@pytest.fixture
def parquet_table(tmp_path: Path) -> pd.DataFrame:
    path = tmp_path / "tiny.parquet"
    pd.DataFrame(_parquet_rows()).to_parquet(path, compression="zstd")
    return pd.read_parquet(path)


def test_parquet_rows_and_cached_images(parquet_table: pd.DataFrame, tmp_path: Path) -> None:
    cache = tmp_path / "cache" / "ucm"
    rows = read_ucm_parquet(parquet_table, cache)
    assert len(rows) == 15
    assert rows["caption_id"].tolist()[:6] == ["0", "1", "2", "3", "4", "500"]
    assert rows["identity"].unique().tolist() == ["agricultural", "airplane", "tenniscourt"]
    assert rows["split"].unique().tolist() == ["train", "val", "test"]
    assert rows["image_path"].iloc[5] == str(cache / "ucm_0101.jpg")
    assert sorted(p.name for p in cache.iterdir()) == ["ucm_0001.jpg", "ucm_0101.jpg", "ucm_2100.jpg"]
    assert (cache / "ucm_2100.jpg").read_bytes() == parquet_table["image_jpeg"].iloc[2]
    kept, _ = apply_bad_input_policy(rows, policy="error", source="ucm")
    table = finalise_caption_table(kept, "ucm")
    assert table.loc[table["split"] == "train", "label"].unique().tolist() == [0]


def test_cached_images_are_written_once(parquet_table: pd.DataFrame, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    read_ucm_parquet(parquet_table, cache)
    first = cache / "ucm_0001.jpg"
    os.utime(first, ns=(1_000_000_000, 1_000_000_000))
    stale = cache / "ucm_0101.jpg"
    stale.write_bytes(b"partial")  # e.g. left over by an older, non-atomic writer
    read_ucm_parquet(parquet_table, cache)
    assert first.stat().st_mtime_ns == 1_000_000_000  # same size: kept, not rewritten
    assert stale.read_bytes() == parquet_table["image_jpeg"].iloc[1]  # other size: replaced
    assert sorted(p.name for p in cache.iterdir()) == ["ucm_0001.jpg", "ucm_0101.jpg", "ucm_2100.jpg"]


def test_write_once_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "x.jpg"
    assert write_once(b"abc", target) is True
    assert write_once(b"xyz", target) is False  # same size is taken as the same file
    assert target.read_bytes() == b"abc"
    assert write_once(b"abcd", target) is True and target.read_bytes() == b"abcd"

    def half_then_crash(self: Path, data: bytes) -> int:
        with open(self, "wb") as handle:
            handle.write(data[:2])
        raise OSError("simulated crash mid-write")

    monkeypatch.setattr(Path, "write_bytes", half_then_crash)
    with pytest.raises(OSError, match="simulated crash"):
        write_once(b"abcdef", target)
    monkeypatch.undo()
    assert target.read_bytes() == b"abcd"  # the previous file is untouched
    assert [p.name for p in tmp_path.iterdir()] == ["x.jpg"]  # no temporary files left behind


def test_parquet_corrupt_image_bytes_reach_the_checks(parquet_table: pd.DataFrame, tmp_path: Path) -> None:
    parquet_table.at[1, "image_jpeg"] = parquet_table["image_jpeg"].iloc[1][:60]
    rows = read_ucm_parquet(parquet_table, tmp_path / "cache")
    kept, quarantine = apply_bad_input_policy(rows, policy="skip", source="ucm")
    assert quarantine["image_id"].unique().tolist() == ["ucm_0101"] and len(quarantine) == 5
    assert quarantine["reason"].str.startswith("image unreadable/corrupt").all()


def test_parquet_missing_columns(parquet_table: pd.DataFrame, tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match=r"lacks column\(s\) \['captions'\]; it holds \['image_id'"):
        read_ucm_parquet(parquet_table.drop(columns="captions"), tmp_path)


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [
        ("sent_ids", [1, 2], r"row 0 \(ucm_0001\): 5 captions but 2 sent_ids"),
        ("class_name", "airplane", r"identity_id 0 is 'agricultural' but class_name is 'airplane'"),
        ("class_name", "lake", r"class_name 'lake' is not one of the 21"),
        ("split", "dev", r"split 'dev'"),
        ("image_jpeg", b"", r"row 0 \(ucm_0001\): no image bytes"),
        ("image_id", "../evil", r"not a plain file name"),
    ],
)
def test_parquet_bad_rows(parquet_table: pd.DataFrame, tmp_path: Path, column: str, value, message: str) -> None:
    parquet_table.at[0, column] = value
    with pytest.raises(BadInputError, match=message):
        read_ucm_parquet(parquet_table, tmp_path / "cache")


def test_parquet_image_without_captions(
    parquet_table: pd.DataFrame, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    parquet_table.at[2, "captions"] = []
    parquet_table.at[2, "sent_ids"] = []
    with pytest.raises(BadInputError, match=r"1 image\(s\) have no caption: ucm_2100"):
        read_ucm_parquet(parquet_table, tmp_path / "cache")
    with caplog.at_level(logging.WARNING):
        rows = read_ucm_parquet(parquet_table, tmp_path / "cache", images_without_captions="skip")
    assert "ucm_2100" not in set(rows["image_id"]) and "without captions: ucm_2100" in caplog.text


@pytest.mark.skipif(not REAL_PARQUET.is_file(), reason="shared UCM-Captions parquet not present")
def test_real_parquet_has_the_published_counts(tmp_path: Path) -> None:
    rows = read_ucm_parquet(pd.read_parquet(REAL_PARQUET), tmp_path / "ucm_images")
    assert rows["image_id"].nunique() == 2100 and len(rows) == UCM_CAPTIONS == 10500
    assert rows["identity"].nunique() == 21 and set(rows["identity"]) == set(UCM_CLASSES)
    assert check_split_sizes(rows, UCM_SPLIT_SIZES, source="ucm") == {"train": 1680, "val": 210, "test": 210}
    per_split = rows.groupby("split").agg(captions=("caption_id", "size"), identities=("identity", "nunique"))
    assert per_split.to_dict() == {
        "captions": {"test": 1050, "train": 8400, "val": 1050},
        "identities": {"test": 21, "train": 21, "val": 21},
    }
    assert len(list((tmp_path / "ucm_images").iterdir())) == 2100
    kept, quarantine = apply_bad_input_policy(rows, policy="error", source="ucm")
    assert quarantine.empty
    table = finalise_caption_table(kept, "ucm")
    assert sorted(table.loc[table["split"] == "train", "label"].unique()) == list(range(21))
    assert (table.loc[table["split"] != "train", "label"] == -1).all()


# --- original dataset.json ------------------------------------------------------------------------

UCM_JSON = """{"images": [
 {"filename": "1.tif", "imgid": 0, "split": "train", "sentids": [0, 1],
  "sentences": [{"tokens": ["there", "is"], "raw": "There is a piece of farmland .", "imgid": 0, "sentid": 0},
                {"tokens": ["there", "is"], "raw": "There is a piece of cropland .", "imgid": 0, "sentid": 1}]},
 {"filename": "105.tif", "imgid": 104, "split": "val", "sentids": [520],
  "sentences": [{"tokens": ["two"], "raw": "Two airplanes are parked .", "imgid": 104, "sentid": 520}]},
 {"filename": "2100.tif", "imgid": 2099, "split": "test", "sentids": [10499],
  "sentences": [{"tokens": ["four"], "raw": "Four tennis courts .", "imgid": 2099, "sentid": 10499}]}
], "dataset": "ucm"}"""


@pytest.fixture
def ucm_json(tmp_path: Path) -> tuple[dict, Path]:
    annotations = json.loads(UCM_JSON)
    root = tmp_path / "imgs"
    root.mkdir()
    for image in annotations["images"]:
        Image.new("RGB", (16, 16), (10, 80, 10)).save(root / image["filename"])  # TIFF, as distributed
    return annotations, root


def test_karpathy_style_dataset_json(ucm_json: tuple[dict, Path]) -> None:
    annotations, root = ucm_json
    rows = read_ucm_karpathy(annotations, root)
    assert rows["image_id"].tolist() == ["ucm_0001", "ucm_0001", "ucm_0105", "ucm_2100"]
    assert rows["identity"].tolist() == ["agricultural", "agricultural", "airplane", "tenniscourt"]
    assert rows["caption_id"].tolist() == ["0", "1", "520", "10499"]
    assert rows["image_path"].iloc[2] == str(root / "105.tif")
    kept, _ = apply_bad_input_policy(rows, policy="error", source="ucm")
    finalise_caption_table(kept, "ucm")


@pytest.mark.parametrize("filename", ["0.tif", "2101.tif", "airplane05.tif", "12.jpg"])
def test_karpathy_style_bad_filename(ucm_json: tuple[dict, Path], filename: str) -> None:
    annotations, root = ucm_json
    annotations["images"][1]["filename"] = filename
    with pytest.raises(BadInputError, match=r"images\[1\] has filename .*1.tif..2100.tif"):
        read_ucm_karpathy(annotations, root)


def test_karpathy_style_image_without_sentences_and_missing_root(ucm_json: tuple[dict, Path], tmp_path: Path) -> None:
    annotations, root = ucm_json
    with pytest.raises(BadInputError, match="does not exist; set the data_root"):
        read_ucm_karpathy(annotations, tmp_path / "nowhere")
    annotations["images"][0]["sentences"] = []
    with pytest.raises(BadInputError, match=r"have no caption: ucm_0001"):
        read_ucm_karpathy(annotations, root)


def test_class_numbering() -> None:
    assert [ucm_class_of(n) for n in (1, 100, 101, 1901, 2100)] == [
        "agricultural", "agricultural", "airplane", "storagetanks", "tenniscourt",
    ]  # fmt: skip
    assert len(UCM_CLASSES) == 21 and list(UCM_CLASSES) == sorted(UCM_CLASSES)
    with pytest.raises(ValueError):
        ucm_class_of(0)
