"""Versioned Kedro dataset for model checkpoints stored as safetensors: loading never runs code.

A checkpoint is the model's tensors plus, in the safetensors header, the model config that rebuilds
the architecture and the training metadata. Anything that is not a safetensors file (a pickle, a
``torch.save`` archive) is refused rather than unpickled.

Storage: any fsspec filesystem (``filepath: s3://bucket/...`` with ``credentials``/``fs_args``, as
kedro-datasets take them). A local save is atomic (a temporary sibling renamed into place); on an
object store the file is one PUT, published whole or not at all. A remote checkpoint is read from
a temporary local copy, since the safetensors reader maps a local file.
"""

from __future__ import annotations

import json

from kedro.io.core import DatasetError
from safetensors.torch import save as safetensors_bytes

from timam.formats.atomic import atomic_path
from timam.formats.storage import local_copy
from timam.io.errors import as_dataset_error
from timam.io.fsspec_dataset import FsspecVersionedDataset
from timam.models.checkpoint import (
    CHECKPOINT_FORMAT,
    Checkpoint,
    UnreadableCheckpointError,
    checkpoint_tensors,
    read_checkpoint,
)


class ModelCheckpointDataset(FsspecVersionedDataset[Checkpoint, Checkpoint]):
    """Saves a :class:`Checkpoint` atomically; loads it back with ``version`` set to the file version."""

    def save(self, data: Checkpoint) -> None:
        path = self._path(self._get_save_path())
        header = {
            "format": CHECKPOINT_FORMAT,
            "config": json.dumps(data.model.config.to_dict()),
            "metadata": json.dumps(data.metadata),
        }
        with as_dataset_error():
            if self._is_local:
                with atomic_path(path) as temporary:
                    temporary.write_bytes(safetensors_bytes(checkpoint_tensors(data.model), metadata=header))
            else:
                contents = safetensors_bytes(checkpoint_tensors(data.model), metadata=header)
                with self._fs.open(path, "wb", **self._fs_open_args_save) as handle:
                    handle.write(contents)
        self._invalidate_cache()

    def load(self) -> Checkpoint:
        path = self._existing_load_path()
        with local_copy(self._fs, path) as local:
            try:
                return read_checkpoint(local, version=self.resolve_load_version())
            except ValueError as error:
                # A downloaded copy's messages name the temporary file: name the object instead.
                message = str(error).replace(local, self._url(self._get_load_path()))
                if isinstance(error, UnreadableCheckpointError):
                    raise DatasetError(message) from error
                raise ValueError(message) from error  # an architecture mismatch: Kedro adds the dataset's name
