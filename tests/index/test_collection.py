"""Listing a collection: a folder tree in a fixed order, or a CSV/Parquet table; and ``params:index``."""

from __future__ import annotations

import os

import pandas as pd
import pytest
from PIL import Image

from timam.index.collection import file_keys, list_collection
from timam.index.config import CollectionConfig, index_config, parse_shard
from timam.sources.caption_table import BadInputError


def _image(path, colour=(200, 30, 60), fmt=None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (32, 32), colour).save(path, format=fmt)


def test_a_folder_tree_lists_every_image_pillow_reads_at_any_depth_in_a_fixed_order(tmp_path):
    root = tmp_path / "photos"
    for relative in ("b/deep/er/z.png", "b/a.JPG", "a.jpg", "c.bmp", "b/d.gif", "b/e.tiff", "b/f.webp"):
        _image(root / relative)
    (root / "notes.txt").write_text("not an image")
    (root / "b" / "model.safetensors").write_bytes(b"\0" * 8)
    _image(root / ".hidden.png")
    _image(root / ".cache" / "x.png")
    listed = list_collection(CollectionConfig(path=str(root)))
    below = [os.path.relpath(path, root) for path in listed["path"]]
    assert below == ["a.jpg", "b/a.JPG", "b/d.gif", "b/deep/er/z.png", "b/e.tiff", "b/f.webp", "c.bmp"]
    assert list(listed.columns) == ["path", "size", "mtime_ns"]
    assert listed["path"].iloc[0] == str(root / "a.jpg")  # as listed: below the folder as given
    stat = os.stat(root / "a.jpg")
    assert (listed["size"].iloc[0], listed["mtime_ns"].iloc[0]) == (stat.st_size, stat.st_mtime_ns)
    assert str(listed["size"].dtype) == "int64" and str(listed["mtime_ns"].dtype) == "int64"
    # the same files listed again give the same keys, in the same order
    assert file_keys(list_collection(CollectionConfig(path=str(root)))) == file_keys(listed)


def test_a_missing_or_empty_folder_says_what_to_do(tmp_path):
    with pytest.raises(BadInputError, match=r"does not exist .*`make run` first .*index\.collection\.path"):
        list_collection(CollectionConfig(path=str(tmp_path / "nowhere")))
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.md").write_text("#")
    with pytest.raises(BadInputError, match="lists no images"):
        list_collection(CollectionConfig(path=str(tmp_path / "empty")))
    with pytest.raises(BadInputError, match="apply to a table"):
        list_collection(CollectionConfig(path=str(tmp_path / "empty"), columns={"caption": "text"}))
    with pytest.raises(BadInputError, match="index.collection.path is not set"):
        list_collection(CollectionConfig())


def test_a_csv_table_maps_its_columns_like_the_generic_caption_table(tmp_path):
    images = tmp_path / "images"
    _image(images / "one.png")
    _image(images / "sub" / "two.jpg")
    table = pd.DataFrame(
        {
            "file": ["one.png", "sub/two.jpg", "one.png", "gone.jpg", str(images / "one.png")],
            "text": ["a red square", "a second red square", "another caption of one", "lost", "absolute"],
            "person": ["p1", "p2", "p1", "p3", "p1"],
            "split": ["nonsense", "train", "test", "val", "train"],  # ignored: an index has no splits
        }
    )
    table.to_csv(tmp_path / "collection.csv", index=False)
    config = CollectionConfig(
        path=str(tmp_path / "collection.csv"),
        image_root=str(images),
        columns={"image_path": "file", "caption": "text", "identity": "person"},
    )
    listed = list_collection(config)
    assert list(listed.columns) == ["path", "size", "mtime_ns", "caption", "identity"]
    # one row per distinct path with its first caption; an absolute cell is kept as it is
    assert listed["path"].tolist() == [str(images / "one.png"), str(images / "sub/two.jpg"), str(images / "gone.jpg")]
    assert listed["caption"].tolist() == ["a red square", "a second red square", "lost"]
    assert listed["identity"].tolist() == ["p1", "p2", "p3"]
    assert listed["size"].iloc[2] == -1 and listed["mtime_ns"].iloc[2] == -1  # missing: a bad image later
    assert listed["size"].iloc[0] == os.stat(images / "one.png").st_size


def test_a_parquet_table_of_paths_alone_starts_from_its_own_folder(tmp_path):
    _image(tmp_path / "x.png")
    _image(tmp_path / "y.png", colour=(0, 0, 255))
    pd.DataFrame({"image_path": ["y.png", "x.png"]}).to_parquet(tmp_path / "list.parquet")
    listed = list_collection(CollectionConfig(path=str(tmp_path / "list.parquet")))
    assert list(listed.columns) == ["path", "size", "mtime_ns"]
    assert listed["path"].tolist() == [str(tmp_path / "y.png"), str(tmp_path / "x.png")]  # table order


def test_a_table_without_its_path_column_names_the_columns_and_the_parameter(tmp_path):
    pd.DataFrame({"file": ["a.png"]}).to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(BadInputError, match=r"no column 'image_path'.*\['file'\].*index\.collection\.columns"):
        list_collection(CollectionConfig(path=str(tmp_path / "t.csv")))
    with pytest.raises(BadInputError, match=r"no column .words. for caption.*index.collection.columns.caption"):
        list_collection(
            CollectionConfig(path=str(tmp_path / "t.csv"), columns={"image_path": "file", "caption": "words"})
        )


def test_the_index_block_rejects_unknown_keys_and_bad_values():
    with pytest.raises(ValueError, match=r"index\.shard_sise; did you mean 'shard_size'"):
        index_config({"shard_sise": 10})
    with pytest.raises(ValueError, match=r"index\.collection\.colums; did you mean 'columns'"):
        index_config({"collection": {"colums": {}}})
    with pytest.raises(
        ValueError, match=r"index.collection.columns.split must be one of \[.image_path., .caption., .identity.\]"
    ):
        index_config({"collection": {"columns": {"split": "s"}}})
    with pytest.raises(ValueError, match="memory_budget"):
        index_config({"memory_budget": "lots"})
    with pytest.raises(ValueError, match=r'"i/N"'):
        index_config({"shard": "2/2"})
    assert index_config({"memory_budget": "512MiB"}).budget_bytes == 512 * 2**20
    assert index_config({"collection": {"path": "t.parquet"}}).collection.is_table


def test_the_writer_comes_from_the_shard_parameter_else_torchruns_rank():
    assert str(parse_shard("1/3", environ={})) == "1/3"
    assert parse_shard(None, environ={}).count == 1
    writer = parse_shard(None, environ={"RANK": "2", "WORLD_SIZE": "4"})
    assert (writer.index, writer.count) == (2, 4) and writer.owns(6) and not writer.owns(5)
    for bad in ("a/b", "3", "-1/2", "0/0"):
        with pytest.raises(ValueError, match="index.shard"):
            parse_shard(bad, environ={})
