"""Checkpoint contents: a model's tensors plus the config that rebuilds it, with no pickled code."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from torch import nn

from timam.models.aligned_memory import AlignedMemoryConfig
from timam.models.attribute_family import AlignedMemoryModel, AttributeHashingModel
from timam.models.attribute_hashing import AttributeHashingConfig
from timam.models.config import ModelConfig
from timam.models.dual_encoder import DualEncoderConfig, DualEncoderModel, is_dual_encoder_config
from timam.models.families import AnyModel, EmbeddingModel
from timam.models.interaction import InteractionConfig, InteractionModel, is_interaction_config
from timam.models.timam import TimamModel

CHECKPOINT_FORMAT = "timam-checkpoint/1"
# Weights that checkpoints written before the text encoder dropped its unused pooler still carry.
_UNUSED_PREFIXES = ("text_encoder.transformer.pooler.",)


class UnreadableCheckpointError(ValueError):
    """A file that is not a timam safetensors checkpoint (a pickle, another format, a broken header)."""


@dataclass
class Checkpoint:
    """A trained model with what produced it (training parameters, validation metric, epoch)."""

    model: AnyModel
    metadata: dict[str, Any] = field(default_factory=dict)
    version: str | None = None

    @property
    def embedding_model(self) -> EmbeddingModel:
        """The model, when it embeds images and captions; an interaction model has no embeddings."""
        if isinstance(self.model, InteractionModel | AlignedMemoryModel):
            kind = "an interaction (SCAN-style)" if isinstance(self.model, InteractionModel) else "an ACMM-style"
            raise ValueError(
                f"checkpoint {self.version or ''} is {kind} model: it scores caption-image "
                "pairs and has no embeddings to index or search; score it with `kedro run --pipelines families` "
                "or use an embedding checkpoint (model_checkpoint of `--pipelines train`)"
            )
        return self.model

    @property
    def is_hashing(self) -> bool:
        """Whether the model makes hash codes (indexed and searched as packed bits by Hamming distance)."""
        return isinstance(self.model, AttributeHashingModel)


def checkpoint_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """State dict as contiguous CPU tensors (safetensors refuses shared or strided storage)."""
    return {name: tensor.detach().cpu().contiguous().clone() for name, tensor in model.state_dict().items()}


def _architecture(config_values: dict[str, Any], source: str) -> AnyModel:
    """The untrained architecture the checkpoint config declares (its ``family``, else TIMAM's)."""
    try:
        if AttributeHashingConfig.is_config_of(config_values):
            return AttributeHashingModel(AttributeHashingConfig.from_dict(config_values), pretrained=False)
        if AlignedMemoryConfig.is_config_of(config_values):
            return AlignedMemoryModel(AlignedMemoryConfig.from_dict(config_values), pretrained=False)
        if is_interaction_config(config_values):
            return InteractionModel(InteractionConfig.from_dict(config_values), pretrained=False)
        if is_dual_encoder_config(config_values):
            return DualEncoderModel(DualEncoderConfig.from_dict(config_values), pretrained=False)
        return TimamModel(ModelConfig.from_dict(config_values), pretrained=False)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{source}: checkpoint config is not valid for this version of timam: {error}") from error


def restore_model(config_values: dict[str, Any], tensors: dict[str, torch.Tensor], source: str) -> AnyModel:
    """Rebuild the architecture from ``config_values`` and load ``tensors``, naming any mismatch."""
    model = _architecture(config_values, source)
    expected = model.state_dict()
    tensors = {name: tensor for name, tensor in tensors.items() if not name.startswith(_UNUSED_PREFIXES)}
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    wrong_shape = [
        f"{name}: checkpoint {tuple(tensors[name].shape)} vs model {tuple(expected[name].shape)}"
        for name in sorted(set(expected) & set(tensors))
        if tensors[name].shape != expected[name].shape
    ]
    if missing or unexpected or wrong_shape:
        raise ValueError(
            f"{source} does not match the architecture it declares ({type(model).__name__}): missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}, shapes {wrong_shape[:5]}"
        )
    model.load_state_dict(tensors)
    model.eval()
    return model


def checkpoint_version_of(path: str | os.PathLike[str]) -> str | None:
    """The Kedro version of a checkpoint file stored as ``<name>/<version>/<name>``, else None."""
    path = Path(path)
    return path.parent.name if path.parent.parent.name == path.name else None


def read_checkpoint(path: str | os.PathLike[str], *, version: str | None = None) -> Checkpoint:
    """Load a checkpoint file without Kedro; loading never runs code (safetensors only, nothing unpickled).

    ``version`` defaults to the folder of a Kedro-versioned file (``<name>/<version>/<name>``), so a
    checkpoint read here names the same version as one the catalog loads.
    """
    path = str(path)
    try:
        with safe_open(path, framework="pt") as handle:
            header = handle.metadata() or {}
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    except (SafetensorError, OSError) as error:
        raise UnreadableCheckpointError(
            f"{path} is not a safetensors checkpoint ({error}). timam never unpickles checkpoints; "
            "convert trusted weights with safetensors.torch.save_file."
        ) from error
    if header.get("format") != CHECKPOINT_FORMAT:
        raise UnreadableCheckpointError(f"{path} has format {header.get('format')!r}, expected {CHECKPOINT_FORMAT!r}")
    config, metadata = (_header_object(header, key, path) for key in ("config", "metadata"))
    model = restore_model(config, tensors, source=path)
    return Checkpoint(model=model, metadata=metadata, version=version or checkpoint_version_of(path))


def _header_object(header: dict[str, str], key: str, path: str) -> dict[str, Any]:
    """The JSON object stored under ``key`` in the safetensors header, or an error naming file and entry."""
    fix = (
        "The file is damaged or was not written by timam's checkpoint dataset: load another version "
        "(--load-versions model_checkpoint:<version>) or train again."
    )
    if key not in header:
        raise UnreadableCheckpointError(
            f"{path}: the safetensors header has no {key!r} entry (it holds {sorted(header)}). {fix}"
        )
    try:
        value = json.loads(header[key])
    except json.JSONDecodeError as error:
        raise UnreadableCheckpointError(
            f"{path}: header entry {key!r} is not valid JSON ({error.msg} at character {error.pos}). {fix}"
        ) from error
    if not isinstance(value, dict):
        raise UnreadableCheckpointError(
            f"{path}: header entry {key!r} holds a JSON {type(value).__name__}, not an object. {fix}"
        )
    return value
