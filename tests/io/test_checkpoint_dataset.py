"""Checkpoints round-trip through safetensors, and anything pickled or mismatched is refused."""

import pickle

import pytest
import torch
from kedro.io.core import DatasetError, Version

from timam.io.checkpoint_dataset import ModelCheckpointDataset
from timam.models.checkpoint import Checkpoint
from timam.models.config import ModelConfig
from timam.models.timam import TimamModel


@pytest.fixture(scope="module")
def small_model() -> TimamModel:
    config = ModelConfig(
        num_classes=3,
        image_backbone="resnet18",
        image_library="torchvision",
        image_weights=None,
        image_size=(32, 16),
        text_encoder="fc_embed",
        vocab_size=50,
        word_embedding_dim=8,
        lstm_hidden=8,
        embedding_dim=16,
    )
    with pytest.warns(UserWarning, match="RANDOM weights"):
        return TimamModel(config)


def test_round_trip_restores_weights_config_metadata_and_version(tmp_path, small_model):
    dataset = ModelCheckpointDataset(filepath=str(tmp_path / "model.safetensors"), version=Version(None, None))
    dataset.save(Checkpoint(model=small_model, metadata={"best_epoch": 3}))
    loaded = dataset.load()
    assert loaded.metadata == {"best_epoch": 3}
    assert loaded.model.config == small_model.config
    assert loaded.version is not None and (tmp_path / "model.safetensors" / loaded.version).is_dir()
    for name, tensor in small_model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[name], tensor), name


class _Exploit:
    def __reduce__(self):
        return (exec, ("import pathlib; pathlib.Path('PWNED').write_text('x')",))


def test_pickled_checkpoint_is_refused_without_running_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.safetensors"
    path.write_bytes(pickle.dumps(_Exploit()))
    with pytest.raises(DatasetError, match="never unpickles"):
        ModelCheckpointDataset(filepath=str(path)).load()
    assert not (tmp_path / "PWNED").exists()


def test_torch_save_archive_is_refused(tmp_path, small_model):
    path = tmp_path / "model.safetensors"
    torch.save(small_model.state_dict(), path)
    with pytest.raises(DatasetError, match="not a safetensors checkpoint"):
        ModelCheckpointDataset(filepath=str(path)).load()


def test_checkpoint_of_other_architecture_names_the_mismatch(tmp_path, small_model):
    path = tmp_path / "model.safetensors"
    ModelCheckpointDataset(filepath=str(path)).save(Checkpoint(model=small_model))
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(path), framework="pt") as handle:
        header = handle.metadata()
        tensors = {k: handle.get_tensor(k) for k in handle.keys()}
    tensors["text_encoder.projection.weight"] = torch.zeros(16, 4)
    save_file(tensors, str(path), metadata=header)
    with pytest.raises(DatasetError, match=r"text_encoder\.projection\.weight: checkpoint \(16, 4\)"):
        ModelCheckpointDataset(filepath=str(path)).load()


def test_crash_during_save_leaves_no_file(tmp_path, small_model, monkeypatch):
    path = tmp_path / "model.safetensors"

    def explode(*args, **kwargs):
        raise OSError("No space left on device")

    monkeypatch.setattr("timam.io.checkpoint_dataset.safetensors_bytes", explode)
    with pytest.raises(DatasetError, match="No space left on device"):
        ModelCheckpointDataset(filepath=str(path)).save(Checkpoint(model=small_model))
    assert list(tmp_path.iterdir()) == []


def test_missing_version_names_it_and_lists_the_saved_ones_newest_first(tmp_path, small_model):
    root = tmp_path / "model.safetensors"
    for version in ("2026-01-01T00.00.00.000Z", "2026-02-01T00.00.00.000Z"):
        ModelCheckpointDataset(filepath=str(root), version=Version(None, version)).save(Checkpoint(model=small_model))
    missing = ModelCheckpointDataset(filepath=str(root), version=Version("2025-12-31T00.00.00.000Z", None))
    message = (
        r"Version '2025-12-31T00.00.00.000Z' of .*model.safetensors does not exist\. "
        r"Versions there, newest first: 2026-02-01T00.00.00.000Z, 2026-01-01T00.00.00.000Z\."
    )
    with pytest.raises(DatasetError, match=message):
        missing.load()
