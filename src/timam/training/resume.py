"""Save the whole training state after every epoch and resume from it after a crash.

A run killed at any moment restarts with the same command and finishes with the same result as an
uninterrupted run (on CPU, same seed): the state holds the trainable weights, the objective's
classifier and discriminator, optimiser and scheduler states, the best model so far, the history,
and every RNG (Python, NumPy, torch's CPU generator and every CUDA device's, and the generator
that orders batches). It is written atomically and loaded with ``weights_only=True`` (no code
runs). A state whose fingerprint (model, training parameters, captions) differs from the current
run is ignored, so a changed configuration never resumes someone else's run. One job, both
halves of it: what a state holds of the trainer (:func:`training_state`,
:func:`restore_training_state`) and of an unfinished epoch (``partial_epoch``, a
:class:`~timam.training.progress.EpochProgress`), and how it is written and read.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import random
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from timam.formats.atomic import atomic_path
from timam.training.freeze import changing_state

if TYPE_CHECKING:
    from timam.training.progress import EpochProgress
    from timam.training.trainer import TimamTrainer

logger = logging.getLogger(__name__)


def run_fingerprint(*parts: Any) -> str:
    """A short hash of JSON-serialisable run inputs."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def rng_state(generator: torch.Generator) -> dict[str, Any]:
    """Every random state a run draws from: Python, NumPy, torch's CPU generator, the batch order and,
    where CUDA is present, every CUDA device's generator (dropout, augmentation on the GPU)."""
    kind, keys, position, has_gauss, cached = np.random.get_state(legacy=True)
    assert isinstance(keys, np.ndarray)  # the legacy MT19937 state: (name, keys, position, gauss flag, gauss)
    return {
        "python": random.getstate(),
        "numpy": [kind, torch.from_numpy(keys.copy()), position, has_gauss, cached],
        "torch": torch.get_rng_state(),
        # CPU byte tensors, one per device: a state saved on a GPU machine loads anywhere.
        "cuda": list(torch.cuda.get_rng_state_all()) if torch.cuda.is_available() else [],
        "batches": generator.get_state(),
    }


def restore_rng(state: dict[str, Any], generator: torch.Generator) -> None:
    """Put back a :func:`rng_state` (one saved before the CUDA states were kept has none to restore)."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy(), position, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    cuda = list(state.get("cuda", []))
    if cuda and torch.cuda.is_available():
        devices = torch.cuda.device_count()
        if len(cuda) != devices:
            logger.warning(
                "The saved state has the random state of %d CUDA device(s), this machine %d: restoring the first %d",
                len(cuda),
                devices,
                min(len(cuda), devices),
            )
        torch.cuda.set_rng_state_all(cuda[:devices])
    elif cuda:
        logger.warning("The saved state holds CUDA random states but torch sees no GPU: they are not restored")
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


def training_state(
    trainer: TimamTrainer,
    run_progress: dict[str, Any],
    generator: torch.Generator,
    partial_epoch: EpochProgress | None = None,
) -> dict[str, Any]:
    """The state to save: the run's progress (fingerprint, epoch, history, best so far) and the
    trainer's changing weights, optimisers, schedulers, RNGs and freeze schedule."""
    return {
        **run_progress,
        "partial_epoch": partial_epoch.to_state() if partial_epoch is not None else None,
        "model": changing_state(trainer.model, trainer.freeze.frozen_throughout),
        "objective": {k: v.detach().cpu() for k, v in trainer.objective.state_dict().items()},
        "optimizers": [o.state_dict() for o in trainer.optimizers.named().values()],
        "schedulers": [s.state_dict() for s in trainer.schedulers.values()],
        "rng": rng_state(generator),
        "freeze": trainer.freeze.to_state(),
    }


def restore_training_state(trainer: TimamTrainer, state: dict[str, Any], generator: torch.Generator) -> None:
    """Put a saved :func:`training_state` back into ``trainer`` and ``generator``."""
    trainer.model.load_state_dict(state["model"], strict=False)
    trainer.objective.load_state_dict(state["objective"])
    for optimizer, saved in zip(trainer.optimizers.named().values(), state["optimizers"], strict=True):
        optimizer.load_state_dict(saved)
    for scheduler, saved in zip(trainer.schedulers.values(), state["schedulers"], strict=True):
        scheduler.load_state_dict(saved)
    restore_rng(state["rng"], generator)
    trainer.freeze.load_state(state["freeze"])
