"""Versioned Kedro dataset for model checkpoints stored as safetensors: loading never runs code.

A checkpoint is the model's tensors plus, in the safetensors header, the model config that rebuilds
the architecture and the training metadata. Anything that is not a safetensors file (a pickle, a
``torch.save`` archive) is refused rather than unpickled.
"""

from __future__ import annotations

import json
import os
from pathlib import PurePosixPath
from typing import Any

from kedro.io.core import AbstractVersionedDataset, DatasetError, Version, get_filepath_str, get_protocol_and_path
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as safetensors_bytes

from timam.formats.atomic import atomic_path
from timam.io.errors import as_dataset_error, missing_version_error
from timam.models.checkpoint import CHECKPOINT_FORMAT, Checkpoint, checkpoint_tensors, restore_model


class ModelCheckpointDataset(AbstractVersionedDataset[Checkpoint, Checkpoint]):
    """Saves a :class:`Checkpoint` atomically; loads it back with ``version`` set to the file version."""

    def __init__(
        self, *, filepath: str, version: Version | None = None, metadata: dict[str, Any] | None = None
    ) -> None:
        _, path = get_protocol_and_path(filepath, version)
        super().__init__(filepath=PurePosixPath(path), version=version)
        self.metadata = metadata  # kedro-viz reads its layer here

    def save(self, data: Checkpoint) -> None:
        path = get_filepath_str(self._get_save_path(), "file")
        header = {
            "format": CHECKPOINT_FORMAT,
            "config": json.dumps(data.model.config.to_dict()),
            "metadata": json.dumps(data.metadata),
        }
        with as_dataset_error(), atomic_path(path) as temporary:
            temporary.write_bytes(safetensors_bytes(checkpoint_tensors(data.model), metadata=header))

    def load(self) -> Checkpoint:
        load_path = self._get_load_path()
        if not os.path.exists(load_path):
            raise missing_version_error(self._filepath, load_path, self._version.load if self._version else None)
        path = get_filepath_str(load_path, "file")
        try:
            with safe_open(path, framework="pt") as handle:
                header = handle.metadata() or {}
                tensors = {name: handle.get_tensor(name) for name in handle.keys()}
        except (SafetensorError, OSError) as error:
            raise DatasetError(
                f"{path} is not a safetensors checkpoint ({error}). timam never unpickles checkpoints; "
                "convert trusted weights with safetensors.torch.save_file."
            ) from error
        if header.get("format") != CHECKPOINT_FORMAT:
            raise DatasetError(f"{path} has format {header.get('format')!r}, expected {CHECKPOINT_FORMAT!r}")
        model = restore_model(json.loads(header["config"]), tensors, source=path)
        return Checkpoint(model=model, metadata=json.loads(header["metadata"]), version=self.resolve_load_version())

    def _exists(self) -> bool:
        try:
            return os.path.exists(self._get_load_path())
        except DatasetError:
            return False

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath), "version": self._version}
