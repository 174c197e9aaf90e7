"""The freeze schedule: in which epochs each pretrained part (image backbone, transformer) trains.

Written once here because three readers depend on it: the trainer (``requires_grad``, which caches
stand in, what DDP wraps), the resume state (what to save, the plateau counter) and tuning
(freezing the parts again between trials). The rule per part, from ``training.freeze``: never
(None), after a fixed epoch (0: from the start), or once validation R@1 has stalled ("plateau").
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from timam.models.families import EmbeddingModel
from timam.training.config import FreezeConfig

# Where each pretrained part's tensors sit in the model's state dict.
PART_PREFIXES = {"image": "image_encoder.backbone.", "text": "text_encoder.transformer."}


def pretrained_parts(model: EmbeddingModel) -> dict[str, nn.Module]:
    """The parts that start from pretrained weights and may be frozen (and then cached)."""
    parts = {"image": model.image_encoder.backbone}
    if model.config.text_encoder == "transformer":
        parts["text"] = model.text_encoder.transformer
    return parts


def is_trainable(part: nn.Module) -> bool:
    return any(parameter.requires_grad for parameter in part.parameters())


def freeze_pretrained(model: EmbeddingModel) -> None:
    """Freeze the image backbone and the transformer; the heads stay trainable."""
    for part in pretrained_parts(model).values():
        part.requires_grad_(False)


def changing_state(model: EmbeddingModel, frozen_throughout: Iterable[str] = ()) -> dict[str, torch.Tensor]:
    """Every tensor training can change, copied to the CPU: the whole state dict but the pretrained
    parts named in ``frozen_throughout`` ("image", "text"), which keep their pretrained weights.

    Parts that may unfreeze are included with their buffers (BatchNorm statistics), so a restored
    best model, a resumed run or a reset tuning trial never mixes tensors from different epochs.
    """
    skipped = tuple(PART_PREFIXES[name] for name in frozen_throughout)
    return {
        name: tensor.detach().cpu().clone()
        for name, tensor in model.state_dict().items()
        if not name.startswith(skipped)
    }


class FreezeSchedule:
    """When each pretrained part trains, and the plateau rule's state (saved for resume).

    ``unfreeze_after[part]`` is the epoch after which the part trains (None: not yet). A "plateau"
    part gets its epoch from :meth:`observe` once validation R@1 has not improved for
    ``plateau_patience`` epochs in a row.
    """

    def __init__(self, config: FreezeConfig, parts: Iterable[str] = tuple(PART_PREFIXES)) -> None:
        settings = {"image": config.image_backbone_epochs, "text": config.text_model_epochs}
        present = set(parts)
        self.patience = config.plateau_patience
        self.unfreeze_after: dict[str, int | None] = {
            name: value if isinstance(value, int) else None
            for name, value in settings.items()  # "plateau": not yet
        }
        self.plateau_parts = sorted(name for name, value in settings.items() if value == "plateau" and name in present)
        self.frozen_throughout = tuple(name for name, value in settings.items() if value is None and name in present)
        self.best, self.stale = float("-inf"), 0

    def trains(self, part: str, epoch: int) -> bool:
        """Whether ``part`` trains in ``epoch``."""
        after = self.unfreeze_after[part]
        return after is not None and epoch > after

    def observe(self, epoch: int, score: float) -> list[str]:
        """Count a non-improving validation score; once ``patience`` of them follow one another, the
        waiting "plateau" parts train from the next epoch. Returns the parts so scheduled."""
        waiting = [name for name in self.plateau_parts if self.unfreeze_after[name] is None]
        if score > self.best:
            self.best, self.stale = score, 0
            return []
        self.stale += 1
        if not waiting or self.stale < self.patience:
            return []
        for name in waiting:
            self.unfreeze_after[name] = epoch
        self.stale = 0
        return waiting

    def to_state(self) -> dict[str, Any]:
        return {"unfreeze_after": dict(self.unfreeze_after), "plateau": {"best": self.best, "stale": self.stale}}

    def load_state(self, state: dict[str, Any]) -> None:
        self.unfreeze_after.update(state["unfreeze_after"])
        self.best, self.stale = state["plateau"]["best"], state["plateau"]["stale"]
