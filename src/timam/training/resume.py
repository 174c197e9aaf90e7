"""Save the whole training state after every epoch and resume from it after a crash.

A run killed at any moment restarts with the same command and finishes with the same result as an
uninterrupted run (on CPU, same seed): the state holds the trainable weights, the objective's
classifier and discriminator, optimiser and scheduler states, the best model so far, the history,
and every RNG (Python, NumPy, torch's CPU generator and every CUDA device's, and the generator
that orders batches). It is written atomically and loaded with ``weights_only=True`` (no code
runs). A state whose fingerprint (model, training parameters, captions) differs from the current
run is ignored, so a changed configuration never resumes someone else's run; a file that is no
resume state at all is moved aside (:func:`reject_state`). The Kedro node keeps the state until
the catalog has saved the checkpoint (:func:`discard_state_of`), so a kill during that save loses
nothing. One job, both halves of it: what a state holds of the trainer (:func:`training_state`,
:func:`restore_training_state`) and of an unfinished epoch (``partial_epoch``, a
:class:`~timam.training.progress.EpochProgress`), and how it is written and read.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import pickle
import random
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from timam.formats.atomic import atomic_path
from timam.models.checkpoint import Checkpoint

if TYPE_CHECKING:
    from timam.training.epoch import EpochTrainer
    from timam.training.progress import EpochProgress

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


# What torch.load(weights_only=True) raises on a file it cannot read as tensors and plain containers:
# a foreign pickle or random bytes (UnpicklingError), a truncated archive (RuntimeError, or OSError
# EINVAL from torch's zip reader), an empty file (EOFError). A PermissionError is the user's to fix.
_UNREADABLE = (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError)


def load_state(path: str | Path, fingerprint: str) -> dict[str, Any] | None:
    """The saved state for this exact run, or None (absent, from a different configuration, or not a
    resume state at all, which :func:`reject_state` moves aside)."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except PermissionError:
        raise
    except _UNREADABLE as error:
        reject_state(path, f"{type(error).__name__} on reading it")
        return None
    if not isinstance(state, dict) or "fingerprint" not in state:
        reject_state(path, f"it holds a {type(state).__name__} without a run fingerprint")
        return None
    if state.get("fingerprint") != fingerprint:
        logger.warning("Ignoring training state %s: it belongs to a different run configuration", path)
        return None
    partial = state.get("partial_epoch")
    within = f", at step {partial['step']} of epoch {partial['epoch']}" if partial else ""
    logger.info("Resuming training from %s after epoch %d%s", path, state["epoch"], within)
    return state


def reject_state(path: Path, reason: str) -> Path:
    """Move a file that is not a resume state this version wrote (corrupt, truncated, foreign) aside
    to ``<name>.rejected`` (``<name>.<n>.rejected`` when taken), log it loudly, and let training
    start fresh; returns where it went.

    Why not refuse instead: the file sits where training alone writes, it cannot resume anything,
    and every fix a refusal could name (move or delete it) loses nothing that moving it here loses,
    while a refusal would stop every run on this dataset until someone acts. Moved, not deleted, so
    it can still be looked at; never unpickled with ``weights_only=False``, which would run its code.
    """
    target, copies = path.with_name(f"{path.name}.rejected"), 0
    while target.exists():
        copies += 1
        target = path.with_name(f"{path.name}.{copies}.rejected")
    os.replace(path, target)
    logger.warning(
        "%s is not a training state this version of timam wrote (%s): moved to %s, and training starts "
        "from epoch 1. Delete that file once you no longer need it.",
        path,
        reason,
        target,
    )
    return target


def discard_state_of(checkpoint: Checkpoint) -> None:
    """Delete the resume state ``checkpoint`` was trained with (its ``training.state_path``), once
    the caller has saved it and the history: until then a rerun rebuilds it from the state."""
    state_path = checkpoint.metadata.get("training", {}).get("state_path")
    if state_path:
        Path(state_path).unlink(missing_ok=True)
        logger.info("Checkpoint saved: training state %s removed", state_path)


def training_state(
    trainer: EpochTrainer,
    run_progress: dict[str, Any],
    generator: torch.Generator,
    partial_epoch: EpochProgress | None = None,
) -> dict[str, Any]:
    """The state to save: the run's progress (fingerprint, epoch, history, best so far), the
    trainer's (:meth:`~timam.training.epoch.EpochTrainer.state`: changing weights, optimisers,
    schedulers and what its family adds) and every RNG."""
    return {
        **run_progress,
        "partial_epoch": partial_epoch.to_state() if partial_epoch is not None else None,
        **trainer.state(),
        "rng": rng_state(generator),
    }


def restore_training_state(trainer: EpochTrainer, state: dict[str, Any], generator: torch.Generator) -> None:
    """Put a saved :func:`training_state` back into ``trainer`` and ``generator``."""
    trainer.load_state(state)
    restore_rng(state["rng"], generator)
