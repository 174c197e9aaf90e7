"""Wherever "the latest version" is chosen, a version folder a killed run left empty (or holding only a
temporary) is skipped: the checkpoint and tensor datasets, the version history, and search's locate."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from kedro.io.core import DatasetError, Version
from kedro_datasets.json import JSONDataset

from tests.tiny_model import random_tiny_model
from timam.formats.atomic import temporary_sibling
from timam.formats.tensor_bundle import TensorBundle
from timam.io.checkpoint_dataset import ModelCheckpointDataset
from timam.io.metrics_history import MetricsHistoryDataset
from timam.io.tensor_bundle import TensorBundleDataset
from timam.models.checkpoint import Checkpoint
from timam.search.locate import find_checkpoint_file, latest_index_folder

SAVED, KILLED_EMPTY, KILLED_MID_WRITE = (
    "2026-01-01T00.00.00.000Z",
    "2026-01-02T00.00.00.000Z",
    "2026-01-03T00.00.00.000Z",
)


def leave_killed_versions(root: Path) -> None:
    """What two killed saves leave: an empty version folder, and one with only a temporary in it."""
    (root / KILLED_EMPTY).mkdir(parents=True)
    (root / KILLED_MID_WRITE).mkdir()
    temporary_sibling(root / KILLED_MID_WRITE / root.name).write_bytes(b"half")


@pytest.fixture(scope="module")
def checkpoint() -> Checkpoint:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*RANDOM weights.*")
        return Checkpoint(model=random_tiny_model(), metadata={"best_epoch": 1})


def test_the_checkpoint_dataset_loads_the_newest_saved_version(tmp_path: Path, checkpoint: Checkpoint) -> None:
    root = tmp_path / "model_checkpoint.safetensors"
    ModelCheckpointDataset(filepath=str(root), version=Version(None, SAVED)).save(checkpoint)
    leave_killed_versions(root)
    latest = ModelCheckpointDataset(filepath=str(root), version=Version(None, None))
    assert latest.load().version == SAVED and latest.exists()
    assert find_checkpoint_file(root) == root / SAVED / root.name  # what `timam serve --checkpoint <root>` opens


def test_a_checkpoint_folder_with_only_killed_versions_says_none_was_saved(tmp_path: Path) -> None:
    root = tmp_path / "model_checkpoint.safetensors"
    leave_killed_versions(root)
    latest = ModelCheckpointDataset(filepath=str(root), version=Version(None, None))
    assert not latest.exists()
    with pytest.raises(DatasetError, match=rf"No saved version of {root} yet; run the pipeline that saves it"):
        latest.load()
    with pytest.raises(FileNotFoundError, match="without a checkpoint version"):
        find_checkpoint_file(root)


def test_the_tensor_dataset_loads_the_newest_saved_version(tmp_path: Path) -> None:
    root = tmp_path / "image_embeddings.safetensors"
    TensorBundleDataset(filepath=str(root), version=Version(None, SAVED)).save(TensorBundle({"x": torch.ones(2)}))
    leave_killed_versions(root)
    assert TensorBundleDataset(filepath=str(root), version=Version(None, None)).load().metadata["version"] == SAVED


def test_the_version_history_lists_only_versions_that_hold_the_file(tmp_path: Path) -> None:
    root = tmp_path / "retrieval_metrics.json"
    leave_killed_versions(root)
    history = MetricsHistoryDataset(filepath=str(root))
    assert history.versions() == [] and not history.exists() and history.load() == {}
    JSONDataset(filepath=str(root), version=Version(None, SAVED)).save({"r@1": 1.0})
    assert history.versions() == [SAVED] and history.exists()
    assert history.load() == {SAVED: {"r@1": 1.0}}


def test_locate_skips_index_versions_without_a_manifest(tmp_path: Path) -> None:
    root = tmp_path / "image_index"
    (root / SAVED / "image_index").mkdir(parents=True)
    (root / SAVED / "image_index" / "manifest.json").write_text("{}")
    leave_killed_versions(root)
    (root / "2026-01-04T00.00.00.000Z" / "image_index").mkdir(parents=True)  # files but no manifest yet
    (root / "2026-01-04T00.00.00.000Z" / "image_index" / "index.faiss").write_bytes(b"\0")
    assert latest_index_folder(root) == root / SAVED / "image_index"
