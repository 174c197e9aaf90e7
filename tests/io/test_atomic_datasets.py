"""Saved artifacts are written atomically: a failed save leaves the previous file intact and nothing else.

A crash is simulated at the lowest common layer, fsspec's local file handle, which every
kedro-datasets writer (pandas, pyarrow, json, yaml, matplotlib) writes through: half of the first
chunk really reaches the disk, then the write dies.
"""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib
import pandas as pd
import pytest
import torch
import yaml
from fsspec.implementations.local import LocalFileOpener
from kedro.io.core import AbstractVersionedDataset, DatasetError, Version
from matplotlib.figure import Figure
from PIL import Image

from timam.formats.atomic import ArtifactWriteError, atomic_path
from timam.formats.tensor_bundle import TensorBundle
from timam.io.atomic_datasets import (
    AtomicCSVDataset,
    AtomicJSONDataset,
    AtomicMatplotlibDataset,
    AtomicParquetDataset,
    AtomicTextDataset,
    AtomicYAMLDataset,
)
from timam.io.errors import ArtifactSaveError
from timam.io.tensor_bundle import TensorBundleDataset
from timam.pipeline_registry import register_pipelines

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
FIRST, SECOND = "2024-01-01T00.00.00.000Z", "2024-01-02T00.00.00.000Z"

# Catalog entries that may keep a plain kedro-datasets type: raw inputs, loaded and never saved.
RAW_INPUTS = {"raw_annotations"}


@pytest.fixture(autouse=True)
def _close_figures() -> Iterator[None]:
    yield
    plt.close("all")  # a failed save never reaches MatplotlibDataset's own close


def _figure(height: float) -> Figure:
    figure, axes = plt.subplots(figsize=(2, height), dpi=50)
    axes.plot([0, 1], [0, height])
    return figure


def _png_size(dataset: AbstractVersionedDataset, version: str | None) -> tuple[int, int]:
    """MatplotlibDataset cannot load; read back the size of the PNG it wrote instead."""
    path = dataset._get_load_path() if version is None else dataset._get_versioned_path(version)
    with Image.open(path) as image:
        assert image.format == "PNG"
        return image.size


@dataclass
class Case:
    dataset: type[AbstractVersionedDataset]
    name: str
    first: Callable[[], Any]
    second: Callable[[], Any]
    read: Callable[[AbstractVersionedDataset, str | None], Any]


def _load(dataset: AbstractVersionedDataset, version: str | None) -> Any:
    if version is None:
        return dataset.load()
    return type(dataset)(filepath=str(dataset._filepath), version=Version(version, None)).load()


def _table(n: int) -> pd.DataFrame:
    return pd.DataFrame({"caption": [f"a person {i}" for i in range(n)], "score": [i / 4 for i in range(n)]})


CASES = [
    pytest.param(Case(AtomicCSVDataset, "table.csv", lambda: _table(3), lambda: _table(5), _load), id="csv"),
    pytest.param(
        Case(AtomicParquetDataset, "table.parquet", lambda: _table(3), lambda: _table(5), _load), id="parquet"
    ),
    pytest.param(
        Case(AtomicJSONDataset, "metrics.json", lambda: {"r@1": 0.5}, lambda: {"r@1": 0.75, "r@5": 1.0}, _load),
        id="json",
    ),
    pytest.param(
        Case(AtomicTextDataset, "report.md", lambda: "# first\n", lambda: "# second report\n" * 50, _load), id="text"
    ),
    pytest.param(
        Case(
            AtomicYAMLDataset,
            "best.yml",
            lambda: {"training": {"lr": 0.1}},
            lambda: {"training": {"lr": 0.01, "margin": 0.2}},
            _load,
        ),
        id="yaml",
    ),
    pytest.param(
        Case(AtomicMatplotlibDataset, "curve.png", lambda: _figure(2), lambda: _figure(3), _png_size), id="matplotlib"
    ),
]


def _expected(data: Any) -> Any:
    """What ``Case.read`` returns for saved ``data``: the data itself, or a figure's PNG size in pixels."""
    if isinstance(data, Figure):
        return round(data.get_figwidth() * data.dpi), round(data.get_figheight() * data.dpi)
    return data


def _assert_same(actual: Any, expected: Any) -> None:
    if isinstance(expected, pd.DataFrame):
        pd.testing.assert_frame_equal(actual, expected)
    else:
        assert actual == expected


def _files(root: Path) -> list[str]:
    return sorted(str(path.relative_to(root)) for path in root.rglob("*") if path.is_file())


def _crash_mid_write(monkeypatch: pytest.MonkeyPatch, error: BaseException) -> None:
    real_write = LocalFileOpener.write

    def write(self: LocalFileOpener, data: Any, *args: Any, **kwargs: Any) -> int:
        real_write(self, data[: max(1, len(data) // 2)])
        self.flush()
        raise error

    monkeypatch.setattr(LocalFileOpener, "write", write)


def _save_first(case: Case, tmp_path: Path, versioned: bool) -> tuple[AbstractVersionedDataset, Path]:
    """Save ``case.first`` and return a dataset that saves the next version, plus the first file."""
    path = tmp_path / "out" / case.name
    case.dataset(filepath=str(path), version=Version(None, FIRST) if versioned else None).save(case.first())
    saved = path / FIRST / case.name if versioned else path
    return case.dataset(filepath=str(path), version=Version(None, SECOND) if versioned else None), saved


@pytest.mark.parametrize("case", CASES)
def test_round_trip_unversioned(case: Case, tmp_path: Path) -> None:
    dataset = case.dataset(filepath=str(tmp_path / case.name))
    for make in (case.first, case.second):  # the second save replaces the first
        data = make()
        dataset.save(data)
        _assert_same(case.read(dataset, None), _expected(data))
    assert _files(tmp_path) == [case.name]


@pytest.mark.parametrize("case", CASES)
def test_round_trip_versioned_loads_latest_or_pinned(case: Case, tmp_path: Path) -> None:
    path = tmp_path / case.name
    first, second = case.first(), case.second()
    case.dataset(filepath=str(path), version=Version(None, FIRST)).save(first)
    case.dataset(filepath=str(path), version=Version(None, SECOND)).save(second)
    latest = case.dataset(filepath=str(path), version=Version(None, None))
    assert latest.resolve_load_version() == SECOND
    _assert_same(case.read(latest, None), _expected(second))
    _assert_same(case.read(latest, FIRST), _expected(first))  # what --load-versions does
    assert _files(tmp_path) == [f"{case.name}/{FIRST}/{case.name}", f"{case.name}/{SECOND}/{case.name}"]


def test_versioned_save_with_generated_version(tmp_path: Path) -> None:
    dataset = AtomicCSVDataset(filepath=str(tmp_path / "table.csv"), version=Version(None, None))
    dataset.save(_table(2))
    version = dataset.resolve_load_version()
    assert _files(tmp_path) == [f"table.csv/{version}/table.csv"]
    _assert_same(dataset.load(), _table(2))


def test_versioning_a_plain_file_keeps_kedros_message(tmp_path: Path) -> None:
    path = tmp_path / "table.csv"
    AtomicCSVDataset(filepath=str(path)).save(_table(2))
    with pytest.raises(DatasetError, match="a file with the same name already exists"):
        AtomicCSVDataset(filepath=str(path), version=Version(None, None)).save(_table(3))
    _assert_same(AtomicCSVDataset(filepath=str(path)).load(), _table(2))


def test_matplotlib_dict_and_list_of_figures(tmp_path: Path) -> None:
    folder = tmp_path / "figures"
    AtomicMatplotlibDataset(filepath=str(folder)).save({"a.png": _figure(2), "b.png": _figure(3)})
    assert _files(folder) == ["a.png", "b.png"]
    AtomicMatplotlibDataset(filepath=str(folder), overwrite=True).save([_figure(2)])
    assert _files(folder) == ["0.png"]


@pytest.mark.parametrize("versioned", [False, True], ids=["unversioned", "versioned"])
@pytest.mark.parametrize("case", CASES)
def test_crash_mid_write_keeps_previous_file_and_leaves_nothing(
    case: Case, versioned: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dataset, saved = _save_first(case, tmp_path, versioned)
    before, files = saved.read_bytes(), _files(tmp_path)
    _crash_mid_write(monkeypatch, RuntimeError("simulated crash mid-write"))
    with pytest.raises(DatasetError, match="simulated crash mid-write"):
        dataset.save(case.second())
    monkeypatch.undo()
    assert saved.read_bytes() == before
    assert _files(tmp_path) == files  # no partial target, no temporary file
    if versioned:
        assert not (saved.parent.parent / SECOND).exists()  # nor an empty version folder


@pytest.mark.parametrize("case", CASES)
def test_disk_full_names_file_and_fix(case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dataset, saved = _save_first(case, tmp_path, versioned=False)
    before = saved.read_bytes()
    _crash_mid_write(monkeypatch, OSError(errno.ENOSPC, "No space left on device"))
    with pytest.raises(
        ArtifactSaveError,
        match=rf"Cannot write {re.escape(str(saved))}: No space left on device\. "
        r"Free disk space on the filesystem mounted at /",
    ):
        dataset.save(case.second())
    monkeypatch.undo()
    assert saved.read_bytes() == before
    assert _files(tmp_path) == [f"out/{case.name}"]


@pytest.mark.parametrize("case", CASES)
def test_permission_error_names_file_and_fix(case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dataset, saved = _save_first(case, tmp_path, versioned=True)
    before = saved.read_bytes()
    _crash_mid_write(monkeypatch, PermissionError(errno.EACCES, "Permission denied"))
    message = rf"Cannot write .*{re.escape(f'{SECOND}/{case.name}')}: Permission denied\. Check write permission on "
    with pytest.raises(ArtifactSaveError, match=message):
        dataset.save(case.second())
    monkeypatch.undo()
    assert saved.read_bytes() == before
    assert _files(tmp_path) == [f"out/{case.name}/{FIRST}/{case.name}"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file permissions")
@pytest.mark.parametrize("versioned", [False, True], ids=["unversioned", "versioned"])
@pytest.mark.parametrize("case", CASES)
def test_read_only_directory_names_file_and_fix(case: Case, versioned: bool, tmp_path: Path) -> None:
    dataset, saved = _save_first(case, tmp_path, versioned)
    before = saved.read_bytes()
    locked = saved.parent.parent if versioned else saved.parent
    locked.chmod(0o500)
    try:
        message = rf"Permission denied\. Check write permission on {re.escape(str(locked))};"
        with pytest.raises(ArtifactSaveError, match=message):
            dataset.save(case.second())
    finally:
        locked.chmod(0o700)
    assert saved.read_bytes() == before
    assert len(_files(tmp_path)) == 1


def test_remote_protocol_falls_back_to_direct_write() -> None:
    dataset = AtomicCSVDataset(filepath="memory://timam-tests/table.csv")
    dataset.save(_table(2))
    _assert_same(dataset.load(), _table(2))


# Our own writers (tensor bundles, checkpoints) share atomic_path and its error policy.


def test_tensor_bundle_crash_keeps_previous_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "emb.safetensors"
    dataset = TensorBundleDataset(filepath=str(path))
    dataset.save(TensorBundle(tensors={"x": torch.ones(2)}))
    before = path.read_bytes()

    def half_then_full_disk(self: Path, data: bytes) -> int:
        with open(self, "wb") as handle:
            handle.write(data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", half_then_full_disk)
    message = rf"Cannot write {re.escape(str(path))}: No space left on device\. Free disk space"
    with pytest.raises(ArtifactSaveError, match=message):
        dataset.save(TensorBundle(tensors={"x": torch.zeros(64)}))
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert _files(tmp_path) == ["emb.safetensors"]


def test_atomic_path_files_get_umask_permissions(tmp_path: Path) -> None:
    previous = os.umask(0o022)
    try:
        with atomic_path(tmp_path / "a.bin") as temporary:
            temporary.write_bytes(b"x")
    finally:
        os.umask(previous)
    assert (tmp_path / "a.bin").stat().st_mode & 0o777 == 0o644


def test_atomic_path_leaves_other_errors_unchanged(tmp_path: Path) -> None:
    with pytest.raises(OSError, match="Input/output error") as raised:
        with atomic_path(tmp_path / "new" / "a.bin") as temporary:
            temporary.write_bytes(b"x")
            raise OSError(errno.EIO, "Input/output error")
    assert not isinstance(raised.value, ArtifactWriteError)
    assert _files(tmp_path) == [] and not (tmp_path / "new").exists()


# The catalogs: every saved entry uses an atomic type.


def test_every_saved_catalog_entry_is_atomic() -> None:
    outputs = set().union(*(pipeline.all_outputs() for pipeline in register_pipelines().values()))
    assert not RAW_INPUTS & outputs, "a raw input is saved by a pipeline: give it an atomic type"
    catalogs = sorted(REPO.glob("conf/*/catalog*.yml"))
    assert len(catalogs) >= 10
    offenders = []
    for catalog in catalogs:
        for name, entry in (yaml.safe_load(catalog.read_text()) or {}).items():
            in_memory = isinstance(entry, dict) and entry["type"] == "MemoryDataset"  # writes no file
            if (
                isinstance(entry, dict)
                and not entry["type"].startswith("timam.")
                and not in_memory
                and name not in RAW_INPUTS
            ):
                offenders.append(f"{catalog.relative_to(REPO)}: {name} ({entry['type']})")
    assert not offenders, "saved with a non-atomic writer; use timam.io.atomic_datasets:\n" + "\n".join(offenders)
