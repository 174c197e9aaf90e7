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
from safetensors.torch import save as safetensors_bytes

from timam.formats.atomic import atomic_path
from timam.io.errors import as_dataset_error, missing_version_error
from timam.models.checkpoint import (
    CHECKPOINT_FORMAT,
    Checkpoint,
    UnreadableCheckpointError,
    checkpoint_tensors,
    read_checkpoint,
)


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
            return read_checkpoint(path, version=self.resolve_load_version())
        except UnreadableCheckpointError as error:
            raise DatasetError(str(error)) from error

    def _exists(self) -> bool:
        try:
            return os.path.exists(self._get_load_path())
        except DatasetError:
            return False

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath), "version": self._version}
