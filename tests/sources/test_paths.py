"""Annotation paths may not climb out of the folder they are relative to, in every reader (issue 27, 8).

Each reader gets its raw format (a CSV table on disk, reid_raw.json, dataset_flickr30k.json, text_c10
class lists) with a row pointing outside its root at a file that really exists, so that before the
rule the row was ingested silently.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from tests.sources.test_karpathy import FLICKR_JSON
from timam.pipelines.prepare.nodes import build_caption_table
from timam.sources.caption_table import BadInputError
from timam.sources.generic_table import load_table, read_caption_table
from timam.sources.karpathy import read_karpathy
from timam.sources.paths import path_under_root
from timam.sources.text_c10 import read_text_c10

ISSUE_ROW = "../../../../../../tmp/outside/secret.jpg"  # the row of issue 27


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """An image outside every root, next to the roots the tests declare."""
    path = tmp_path / "outside" / "secret.jpg"
    path.parent.mkdir()
    Image.new("RGB", (8, 16), (1, 2, 3)).save(path)
    return path


def test_paths_inside_the_root_are_joined_as_before(tmp_path: Path) -> None:
    root = tmp_path / "imgs"
    assert path_under_root(root, "a/b.jpg", where="row 0", setting="image_root") == root / "a" / "b.jpg"
    assert path_under_root(root, "a/../b.jpg", where="row 0", setting="image_root") == root / "a" / ".." / "b.jpg"
    assert path_under_root(Path("."), "b.jpg", where="row 0", setting="image_root") == Path("b.jpg")
    assert path_under_root(root, "/data/x.jpg", where="row 0", setting="image_root") == Path("/data/x.jpg")


@pytest.mark.parametrize("relative", [ISSUE_ROW, "../x.jpg", "a/../../x.jpg", ".."])
@pytest.mark.parametrize("root", ["imgs", ".", "data/imgs"])
def test_a_relative_path_that_leaves_the_root_is_refused_naming_row_and_rule(relative: str, root: str) -> None:
    with pytest.raises(BadInputError) as caught:
        path_under_root(root, relative, where="Caption table row 3", setting="params source.image_root")
    message = str(caught.value)
    assert message.startswith("Caption table row 3: ") and repr(relative) in message
    assert "may not climb out" in message and "params source.image_root" in message


def test_an_absolute_name_is_refused_where_only_names_are_allowed(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="absolute path where a name inside"):
        path_under_root(tmp_path, "/etc", where="Class list x line 2", setting="data_root", absolute_allowed=False)


def test_generic_table_refuses_the_issue_row(tmp_path: Path, outside: Path) -> None:
    root = tmp_path / "imgs"
    root.mkdir()
    Image.new("RGB", (8, 16)).save(root / "ok.jpg")
    csv = tmp_path / "captions.csv"
    csv.write_text(f"image_path,caption\nok.jpg,a man\n../outside/secret.jpg,a secret\n{ISSUE_ROW},x\n")
    with pytest.raises(BadInputError, match=r"Caption table row 1: path '\.\./outside/secret\.jpg' leaves"):
        read_caption_table(load_table(csv), root)
    with pytest.raises(BadInputError, match="Caption table row 0: path '../../../../../../tmp/outside/secret.jpg'"):
        read_caption_table(pd.DataFrame({"image_path": [ISSUE_ROW], "caption": ["x"]}), root)


def test_cuhk_pedes_refuses_a_record_outside_the_image_root(tmp_path: Path, outside: Path) -> None:
    root = tmp_path / "imgs"
    (root / "train").mkdir(parents=True)
    Image.new("RGB", (8, 16)).save(root / "train" / "1.jpg")
    records = [
        {"id": 1, "file_path": "train/1.jpg", "captions": ["a man"], "split": "train"},
        {"id": 2, "file_path": "../outside/secret.jpg", "captions": ["a secret"], "split": "train"},
    ]
    raw = json.loads(json.dumps(records))  # what the reid_raw.json dataset loads
    with pytest.raises(BadInputError, match=r"reid_raw.json record 1: path '\.\./outside/secret\.jpg' leaves"):
        build_caption_table(raw, {"format": "cuhk_pedes", "image_root": str(root), "on_bad_input": "skip"})


def test_karpathy_refuses_a_filename_outside_the_image_root(tmp_path: Path, outside: Path) -> None:
    annotations = json.loads(FLICKR_JSON)
    annotations["images"][1]["filename"] = "../outside/secret.jpg"
    root = tmp_path / "flickr30k-images"
    root.mkdir()
    with pytest.raises(BadInputError, match=r"dataset_flickr30k.json images\[1\]: path '\.\./outside/secret\.jpg'"):
        read_karpathy(annotations, root, dataset="flickr30k")


@pytest.mark.parametrize("name", ["../../outside", "/tmp/outside"])
def test_text_c10_refuses_a_class_name_outside_its_folders(tmp_path: Path, name: str) -> None:
    root = tmp_path / "CUB_200_2011"
    for kind in ("images", "text_c10"):
        for folder in ("001.Albatross", "002.Ani"):
            (root / kind / folder).mkdir(parents=True)
    Image.new("RGB", (9, 7)).save(root / "images" / "001.Albatross" / "a.jpg")
    (root / "text_c10" / "001.Albatross" / "a.txt").write_text("a bird.\n", encoding="utf-8")
    classes = root / "trainvalclasses.txt"
    classes.write_text(f"001.Albatross\n\n{name}\n", encoding="utf-8")
    (root / "testclasses.txt").write_text("002.Ani\n", encoding="utf-8")
    with pytest.raises(BadInputError, match=rf"Class list {classes} line 3: "):
        read_text_c10(root)
