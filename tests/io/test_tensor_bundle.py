"""Tensor bundles keep tensors and metadata exactly, and report their version on load."""

import pytest
import torch
from kedro.io.core import DatasetError, Version

from timam.formats.tensor_bundle import TensorBundle
from timam.io.tensor_bundle import TensorBundleDataset


def test_round_trip_with_metadata_and_version(tmp_path):
    dataset = TensorBundleDataset(filepath=str(tmp_path / "emb.safetensors"), version=Version(None, None))
    bundle = TensorBundle(
        tensors={"embeddings": torch.randn(3, 4), "identity": torch.tensor([1, 2, 2])},
        metadata={"caption_ids": ["a", "b", "c"], "checkpoint_version": "v1"},
    )
    dataset.save(bundle)
    loaded = dataset.load()
    assert torch.equal(loaded.tensors["embeddings"], bundle.tensors["embeddings"])
    assert torch.equal(loaded.tensors["identity"], bundle.tensors["identity"])
    assert loaded.metadata["caption_ids"] == ["a", "b", "c"]
    assert loaded.metadata["checkpoint_version"] == "v1"
    assert loaded.metadata["version"] == dataset.resolve_load_version()


def test_corrupt_file_names_the_path(tmp_path):
    path = tmp_path / "broken.safetensors"
    path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(DatasetError, match="broken.safetensors"):
        TensorBundleDataset(filepath=str(path)).load()
