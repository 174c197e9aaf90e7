"""Named tensors plus JSON metadata in one safetensors file, as a versioned Kedro dataset.

Embeddings and token caches are plain tensors with a little context (which captions, which
checkpoint version). safetensors stores them without pickle, so loading never executes code.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

import torch
from kedro.io.core import AbstractVersionedDataset, DatasetError, Version, get_filepath_str, get_protocol_and_path
from safetensors import SafetensorError
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes

from timam.io.atomic import atomic_path

_METADATA_KEY = "timam_metadata"


@dataclass
class TensorBundle:
    """Tensors keyed by name, with JSON-serialisable metadata that travels with them."""

    tensors: dict[str, torch.Tensor]
    metadata: dict[str, Any] = field(default_factory=dict)


def save_bundle(bundle: TensorBundle, path: str) -> None:
    """Write ``bundle`` atomically to ``path``."""
    tensors = {name: tensor.detach().cpu().contiguous() for name, tensor in bundle.tensors.items()}
    with atomic_path(path) as temporary:
        temporary.write_bytes(safetensors_bytes(tensors, metadata={_METADATA_KEY: json.dumps(bundle.metadata)}))


def load_bundle(path: str) -> TensorBundle:
    """Read a bundle written by :func:`save_bundle`; a foreign or corrupt file raises DatasetError."""
    try:
        tensors = load_file(path)
        with open(path, "rb") as handle:
            header_size = int.from_bytes(handle.read(8), "little")
            header = json.loads(handle.read(header_size))
    except (SafetensorError, OSError, ValueError) as error:
        raise DatasetError(f"{path} is not a readable safetensors tensor bundle: {error}") from error
    metadata = json.loads(header.get("__metadata__", {}).get(_METADATA_KEY, "{}"))
    return TensorBundle(tensors=tensors, metadata=metadata)


class TensorBundleDataset(AbstractVersionedDataset[TensorBundle, TensorBundle]):
    """Kedro dataset for :class:`TensorBundle` files; on load, ``metadata["version"]`` names the file version."""

    def __init__(self, *, filepath: str, version: Version | None = None) -> None:
        _, path = get_protocol_and_path(filepath, version)
        super().__init__(filepath=PurePosixPath(path), version=version)

    def load(self) -> TensorBundle:
        path = get_filepath_str(self._get_load_path(), "file")
        bundle = load_bundle(path)
        bundle.metadata["version"] = self.resolve_load_version()
        return bundle

    def save(self, data: TensorBundle) -> None:
        save_bundle(data, get_filepath_str(self._get_save_path(), "file"))

    def _exists(self) -> bool:
        try:
            path = self._get_load_path()
        except DatasetError:
            return False
        return os.path.exists(path)

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath), "version": self._version}
