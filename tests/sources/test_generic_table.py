"""Tests for the generic CSV / Parquet caption-table reader."""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from timam.pipelines.prepare.nodes import build_caption_table
from timam.sources.caption_table import BadInputError, finalise_caption_table
from timam.sources.encoding import decode_problem
from timam.sources.generic_table import load_table, read_caption_table
from timam.sources.image_checks import apply_bad_input_policy

CSV = """file,text,person,subset
cam1/0001.jpg,a woman in a red coat,7,train
cam1/0001.jpg,red coat and black boots,7,Train
cam2/0002.png,"a man, blue jeans",8,dev
cam2/0003.jpg,a man carrying a bag,9, test
"""


@pytest.fixture
def image_root(tmp_path: Path) -> Path:
    root = tmp_path / "imgs"
    for name in ("cam1/0001.jpg", "cam2/0002.png", "cam2/0003.jpg"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (6, 12), (1, 2, 3)).save(root / name)
    return root


@pytest.fixture
def csv_path(tmp_path: Path) -> Path:
    path = tmp_path / "captions.csv"
    path.write_text(CSV, encoding="utf-8")
    return path


MAPPING = {"image_path": "file", "caption": "text", "identity": "person", "split": "subset"}


def test_mapped_csv(csv_path: Path, image_root: Path) -> None:
    rows = read_caption_table(pd.read_csv(csv_path), image_root, columns=MAPPING)
    assert list(rows.columns) == ["caption_id", "image_id", "image_path", "caption", "identity", "split"]
    assert rows["caption_id"].tolist() == ["cam1/0001.jpg#0", "cam1/0001.jpg#1", "cam2/0002.png#0", "cam2/0003.jpg#0"]
    assert rows["image_id"].tolist()[2] == "cam2/0002.png"
    assert rows["image_path"].tolist()[0] == str(image_root / "cam1" / "0001.jpg")
    assert rows["caption"].tolist()[2] == "a man, blue jeans"
    assert rows["identity"].tolist() == ["7", "7", "8", "9"]  # integers in the CSV, strings here
    assert rows["split"].tolist() == ["train", "train", "val", "test"]  # case, spaces and 'dev' normalised
    kept, _ = apply_bad_input_policy(rows, policy="error", source="csv", identities_disjoint=True)
    table = finalise_caption_table(kept, "csv")
    assert table["label"].tolist() == [0, 0, -1, -1]


def test_defaults_one_identity_per_image_and_default_split(image_root: Path) -> None:
    table = pd.DataFrame(
        {"image_path": ["cam1/0001.jpg", "cam2/0002.png", "cam1/0001.jpg"], "caption": ["a", "b", "c"]}
    )
    rows = read_caption_table(table, image_root)
    assert rows["identity"].tolist() == ["cam1/0001.jpg", "cam2/0002.png", "cam1/0001.jpg"]
    assert rows["caption_id"].tolist() == ["cam1/0001.jpg#0", "cam2/0002.png#0", "cam1/0001.jpg#1"]
    assert set(rows["split"]) == {"train"}
    assert set(read_caption_table(table, image_root, default_split="test")["split"]) == {"test"}
    with pytest.raises(BadInputError, match="default_split is 'dev'"):
        read_caption_table(table, image_root, default_split="dev")


def test_caption_id_column_is_used(image_root: Path) -> None:
    table = pd.DataFrame({"path": ["cam1/0001.jpg"], "sentence": ["x"], "sid": [17]})
    rows = read_caption_table(
        table, image_root, columns={"image_path": "path", "caption": "sentence", "caption_id": "sid"}
    )
    assert rows["caption_id"].tolist() == ["17"]


def test_parquet_round_trip_and_load_table(csv_path: Path, image_root: Path, tmp_path: Path) -> None:
    from_csv = load_table(csv_path)
    parquet = tmp_path / "captions.parquet"
    from_csv.to_parquet(parquet)
    a = read_caption_table(from_csv, image_root, columns=MAPPING)
    b = read_caption_table(load_table(parquet), image_root, columns=MAPPING)
    pd.testing.assert_frame_equal(a, b)
    tsv = tmp_path / "captions.tsv"
    tsv.write_text("image_path\tcaption\ncam1/0001.jpg\ta, b\n", encoding="utf-8")
    assert read_caption_table(load_table(tsv), image_root)["caption"].tolist() == ["a, b"]
    with pytest.raises(BadInputError, match="unknown file type '.json'"):
        load_table(csv_path.rename(tmp_path / "captions.json"))
    with pytest.raises(BadInputError, match="does not exist"):
        load_table(tmp_path / "none.csv")


def test_missing_required_column_lists_available(csv_path: Path, image_root: Path) -> None:
    table = pd.read_csv(csv_path)
    with pytest.raises(BadInputError) as error:
        read_caption_table(table, image_root)
    message = str(error.value)
    assert "no column 'image_path' for image_path" in message
    assert "['file', 'text', 'person', 'subset']" in message and "columns={'image_path'" in message


def test_mapping_to_absent_column_and_unknown_name(csv_path: Path, image_root: Path) -> None:
    table = pd.read_csv(csv_path)
    with pytest.raises(BadInputError, match=r"no column 'who' for identity; it holds \['file'"):
        read_caption_table(table, image_root, columns={**MAPPING, "identity": "who"})
    with pytest.raises(BadInputError, match=r"unknown name\(s\) \['label'\]"):
        read_caption_table(table, image_root, columns={**MAPPING, "label": "person"})


def test_blank_required_cells_and_unknown_split(image_root: Path) -> None:
    table = pd.read_csv(io.StringIO(CSV))
    table.loc[2, "file"] = " "
    with pytest.raises(BadInputError, match=r"row 2: column 'file' \(image_path\) is empty"):
        read_caption_table(table, image_root, columns=MAPPING)
    table = pd.read_csv(io.StringIO(CSV))
    table.loc[1, "person"] = None
    with pytest.raises(BadInputError, match=r"row 1: column 'person' \(identity\) is empty"):
        read_caption_table(table, image_root, columns=MAPPING)
    table = pd.read_csv(io.StringIO(CSV))
    table.loc[3, "subset"] = "holdout"
    with pytest.raises(BadInputError, match=r"row 3: split 'holdout'"):
        read_caption_table(table, image_root, columns=MAPPING)


def test_empty_caption_cells_reach_the_checks(csv_path: Path, image_root: Path) -> None:
    table = load_table(csv_path)  # dtype=str, empty cells stay ""
    table.loc[0, "text"] = ""
    table.loc[3, "text"] = "   "
    rows = read_caption_table(table, image_root, columns=MAPPING)
    kept, quarantine = apply_bad_input_policy(rows, policy="skip", source="csv")
    assert quarantine["caption_id"].tolist() == ["cam1/0001.jpg#0", "cam2/0003.jpg#0"]
    assert set(quarantine["reason"]) == {"empty caption"}
    table = pd.read_csv(io.StringIO(CSV))
    table.loc[1, "text"] = None  # NaN in a normally read CSV
    rows = read_caption_table(table, image_root, columns=MAPPING)
    with pytest.raises(BadInputError, match=r"row 1 .*empty caption"):
        apply_bad_input_policy(rows, policy="error", source="csv")


def test_missing_image_root(csv_path: Path, tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="does not exist; set the data_root"):
        read_caption_table(pd.read_csv(csv_path), tmp_path / "nope", columns=MAPPING)


DUPLICATED_CSV = """image_path,caption,identity,split
cam1/0001.jpg,a woman in a red coat,7,train
cam2/0002.png,a man in blue jeans,8,train
cam1/0001.jpg,a woman in a red coat,7,train
cam1/0001.jpg,red coat and black boots,7,train
"""


def test_an_exact_duplicate_row_without_caption_ids_stops_the_run_naming_it(tmp_path: Path, image_root: Path) -> None:
    """Issue 27, item 5: the generated ids used to differ (#0, #1), so the repeat was kept twice."""
    csv = tmp_path / "captions.csv"
    csv.write_text(DUPLICATED_CSV, encoding="utf-8")
    source = {"format": "table", "image_root": str(image_root)}
    with pytest.raises(BadInputError, match=r"row 2 \(caption 'cam1/0001.jpg#0'.*duplicate row. Remove the repeated"):
        build_caption_table(pd.read_csv(csv), source)


def test_an_exact_duplicate_row_is_quarantined_with_skip_and_kept_once(tmp_path: Path, image_root: Path) -> None:
    csv = tmp_path / "captions.csv"
    csv.write_text(DUPLICATED_CSV, encoding="utf-8")
    source = {"format": "table", "image_root": str(image_root), "on_bad_input": "skip"}
    captions, quarantine = build_caption_table(pd.read_csv(csv), source)
    assert captions["caption"].tolist().count("a woman in a red coat") == 1
    assert captions["caption_id"].tolist() == ["cam1/0001.jpg#0", "cam2/0002.png#0", "cam1/0001.jpg#1"]
    assert quarantine["reason"].tolist() == ["duplicate row"]
    assert quarantine["caption"].tolist() == ["a woman in a red coat"]


def test_repeated_captions_with_their_own_ids_are_kept(image_root: Path) -> None:
    """UCM-Captions repeats a caption for one image under different sentence ids: legitimate."""
    table = pd.DataFrame(
        {"image_path": ["cam1/0001.jpg"] * 2, "caption": ["a red coat"] * 2, "caption_id": ["s1", "s2"]}
    )
    kept, quarantine = apply_bad_input_policy(read_caption_table(table, image_root), policy="error", source="t")
    assert kept["caption_id"].tolist() == ["s1", "s2"] and quarantine.empty


LATIN1_CSV = "image_path,caption\ncam1/0001.jpg,a woman in a red coat\ncam2/0002.png,a caf\u00e9 au lait shirt\n"


def test_a_latin1_csv_names_the_line_and_byte_instead_of_a_bare_unicode_error(tmp_path: Path) -> None:
    path = tmp_path / "captions.csv"
    path.write_bytes(LATIN1_CSV.encode("latin-1"))
    with pytest.raises(BadInputError) as caught:
        load_table(path)
    message = str(caught.value)
    assert f"Caption table {path} is not valid utf-8: line 3, byte 0xe9 at offset" in message
    assert "(the header is line 1)" in message and "Re-save it as UTF-8" in message


def test_decode_problem_counts_lines_from_one_and_names_the_byte() -> None:
    assert decode_problem(b"ok\n", "utf-8") is None
    assert decode_problem(b"a\nb\nc\xe9d", "utf-8") == "line 3, byte 0xe9 at offset 5 (invalid continuation byte)"
    assert decode_problem(b"\xff", "ascii") == "line 1, byte 0xff at offset 0 (ordinal not in range(128))"
