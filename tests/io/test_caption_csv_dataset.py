"""The raw caption table of ``--env table`` in another encoding: the catalog's error names the file,
the line, the byte and the ``load_args`` that read it (issue 27, item 11), and those load_args work."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from kedro.io import DataCatalog
from kedro.io.core import DatasetError

REPO = Path(__file__).resolve().parents[2]
TABLE = "image_path,caption\ncam1/0001.jpg,a woman in a red coat\ncam2/0002.jpg,a caf\u00e9 au lait shirt\n"


def catalog_entry(path: Path, **extra: object) -> DataCatalog:
    """``raw_annotations`` exactly as conf/table/catalog.yml declares it, pointed at ``path``."""
    entry = yaml.safe_load((REPO / "conf" / "table" / "catalog.yml").read_text(encoding="utf-8"))["raw_annotations"]
    return DataCatalog.from_config({"raw_annotations": {**entry, "filepath": str(path), **extra}})


def test_a_latin1_table_names_line_byte_and_the_load_args_fix(tmp_path: Path) -> None:
    path = tmp_path / "captions.csv"
    path.write_bytes(TABLE.encode("latin-1"))
    with pytest.raises(DatasetError) as caught:
        catalog_entry(path).load("raw_annotations")
    message = str(caught.value)
    assert f"Caption table {path} is not valid utf-8: line 3, byte 0xe9 at offset" in message
    assert "load_args: {encoding: <name>}" in message and "raw_annotations" in message
    causes, error = [], caught.value
    while error is not None:
        causes.append(type(error))
        error = error.__cause__
    assert UnicodeDecodeError in causes  # pandas' own error stays in the chain


def test_the_load_args_the_message_names_read_the_table(tmp_path: Path) -> None:
    path = tmp_path / "captions.csv"
    path.write_bytes(TABLE.encode("latin-1"))
    table = catalog_entry(path, load_args={"encoding": "latin-1"}).load("raw_annotations")
    assert table["caption"].tolist() == ["a woman in a red coat", "a caf\u00e9 au lait shirt"]
    path.write_bytes(TABLE.encode("utf-8"))  # and UTF-8 reads as before, with no load_args
    assert catalog_entry(path).load("raw_annotations")["caption"].tolist()[1] == "a caf\u00e9 au lait shirt"
