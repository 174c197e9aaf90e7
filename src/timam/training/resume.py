"""Save the whole training state after every epoch and resume from it after a crash.

A run killed at any moment restarts with the same command and finishes with the same result as an
uninterrupted run (on CPU, same seed): the state holds the trainable weights, the objective's
classifier and discriminator, optimiser and scheduler states, the best model so far, the history,
and every RNG (Python, NumPy, torch, and the generator that orders batches). It is written
atomically and loaded with ``weights_only=True`` (no code runs). A state whose fingerprint (model,
training parameters, captions) differs from the current run is ignored, so a changed configuration
never resumes someone else's run.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from timam.formats.atomic import atomic_path

logger = logging.getLogger(__name__)


def run_fingerprint(*parts: Any) -> str:
    """A short hash of JSON-serialisable run inputs."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def trainable_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """Only the parameters that training changes; frozen pretrained weights are rebuilt, not saved."""
    return {name: p.detach().cpu().clone() for name, p in module.named_parameters() if p.requires_grad}


def rng_state(generator: torch.Generator) -> dict[str, Any]:
    kind, keys, position, has_gauss, cached = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": [kind, torch.from_numpy(keys.copy()), position, has_gauss, cached],
        "torch": torch.get_rng_state(),
        "batches": generator.get_state(),
    }


def restore_rng(state: dict[str, Any], generator: torch.Generator) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy(), position, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    generator.set_state(state["batches"])


def save_state(path: str | Path, state: dict[str, Any]) -> None:
    # Serialised in memory first: torch.save reports a full disk as an opaque RuntimeError, a plain
    # write as OSError(ENOSPC), which atomic_path turns into an error naming the fix.
    buffer = io.BytesIO()
    torch.save(state, buffer)
    with atomic_path(path) as temporary:
        temporary.write_bytes(buffer.getbuffer())


def load_state(path: str | Path, fingerprint: str) -> dict[str, Any] | None:
    """The saved state for this exact run, or None (absent, or from a different configuration)."""
    path = Path(path)
    if not path.exists():
        return None
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state.get("fingerprint") != fingerprint:
        logger.warning("Ignoring training state %s: it belongs to a different run configuration", path)
        return None
    partial = state.get("partial_epoch")
    within = f", at step {partial['step']} of epoch {partial['epoch']}" if partial else ""
    logger.info("Resuming training from %s after epoch %d%s", path, state["epoch"], within)
    return state
