"""A checkpoint whose safetensors header is damaged is refused naming the file and the entry (issue 27, 10).

Each case starts from a real checkpoint saved by the catalog's dataset and rewrites one header entry,
as a truncated copy, a hand edit or another tool would leave it.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
from kedro.io.core import DatasetError
from safetensors import safe_open
from safetensors.torch import save_file

from tests.tiny_model import random_tiny_model
from timam.io.checkpoint_dataset import ModelCheckpointDataset
from timam.models.checkpoint import Checkpoint, UnreadableCheckpointError, read_checkpoint


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("checkpoint") / "model.safetensors"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # random weights
        model = random_tiny_model()
    ModelCheckpointDataset(filepath=str(path)).save(Checkpoint(model=model, metadata={"best_epoch": 2}))
    return path


def rewritten(saved: Path, folder: Path, **entries: str | None) -> Path:
    """A copy of ``saved`` whose header entries are replaced (None: removed)."""
    with safe_open(str(saved), framework="pt") as handle:
        header = dict(handle.metadata())
        tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    for key, value in entries.items():
        if value is None:
            header.pop(key)
        else:
            header[key] = value
    path = folder / "edited.safetensors"
    save_file(tensors, str(path), metadata=header)
    return path


def test_the_untouched_checkpoint_reads_back(saved: Path) -> None:
    assert read_checkpoint(saved).metadata == {"best_epoch": 2}


@pytest.mark.parametrize(
    ("entries", "says"),
    [
        ({"config": '{"num_classes": 3, "image_backbone": "resn'}, "header entry 'config' is not valid JSON"),
        ({"metadata": "{best_epoch: 2}"}, "header entry 'metadata' is not valid JSON"),
        ({"config": None}, "the safetensors header has no 'config' entry"),
        ({"metadata": None}, "the safetensors header has no 'metadata' entry"),
        ({"config": "[1, 2]"}, "header entry 'config' holds a JSON list, not an object"),
    ],
)
def test_a_damaged_header_entry_names_the_file_and_what_is_wrong(
    saved: Path, tmp_path: Path, entries: dict[str, str | None], says: str
) -> None:
    path = rewritten(saved, tmp_path, **entries)
    with pytest.raises(UnreadableCheckpointError) as caught:
        read_checkpoint(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: ") and says in message
    assert "--load-versions model_checkpoint:<version>" in message
    with pytest.raises(DatasetError) as through_catalog:  # what `kedro run` shows
        ModelCheckpointDataset(filepath=str(path)).load()
    assert str(through_catalog.value) == message
