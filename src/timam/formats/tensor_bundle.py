"""Named tensors plus JSON metadata in one safetensors file.

Embeddings and token caches are plain tensors with a little context (which captions, which
checkpoint version). safetensors stores them without pickle, so loading never executes code.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes

from timam.formats.atomic import atomic_path

_METADATA_KEY = "timam_metadata"


@dataclass
class TensorBundle:
    """Tensors keyed by name, with JSON-serialisable metadata that travels with them."""

    tensors: dict[str, torch.Tensor]
    metadata: dict[str, Any] = field(default_factory=dict)


class UnreadableBundleError(ValueError):
    """A file that is not a tensor bundle written by :func:`save_bundle` (foreign, truncated, corrupt)."""


def bundle_bytes(bundle: TensorBundle) -> bytes:
    """The safetensors file of ``bundle``, as :func:`save_bundle` writes it (for an upload in one piece)."""
    tensors = {name: tensor.detach().cpu().contiguous() for name, tensor in bundle.tensors.items()}
    return safetensors_bytes(tensors, metadata={_METADATA_KEY: json.dumps(bundle.metadata)})


def save_bundle(bundle: TensorBundle, path: str) -> None:
    """Write ``bundle`` atomically to the local file ``path``."""
    data = bundle_bytes(bundle)
    with atomic_path(path) as temporary:
        temporary.write_bytes(data)


def load_bundle(path: str) -> TensorBundle:
    """Read a bundle written by :func:`save_bundle`; a foreign or corrupt file raises UnreadableBundleError."""
    try:
        tensors = load_file(path)
        with open(path, "rb") as handle:
            header_size = int.from_bytes(handle.read(8), "little")
            header = json.loads(handle.read(header_size))
    except (SafetensorError, OSError, ValueError) as error:
        raise UnreadableBundleError(f"{path} is not a readable safetensors tensor bundle: {error}") from error
    return TensorBundle(tensors=tensors, metadata=_metadata(header))


def bundle_from_bytes(data: bytes, source: str) -> TensorBundle:
    """A bundle from the bytes of its file (a download); ``source`` (its URL) names it in errors."""
    try:
        tensors = load_safetensors_bytes(data)
        header_size = int.from_bytes(data[:8], "little")
        header = json.loads(data[8 : 8 + header_size])
    except (SafetensorError, ValueError) as error:
        raise UnreadableBundleError(f"{source} is not a readable safetensors tensor bundle: {error}") from error
    return TensorBundle(tensors=tensors, metadata=_metadata(header))


def _metadata(header: dict[str, Any]) -> dict[str, Any]:
    return json.loads(header.get("__metadata__", {}).get(_METADATA_KEY, "{}"))
