"""How far one epoch got: its batches, the steps done and the loss sums so far (resumable mid-epoch)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class EpochProgress:
    """How far an epoch got: its batches, the steps done and the loss sums so far.

    Saved inside the training state every ``save_every_steps`` steps, so a resumed run skips the
    steps already taken instead of repeating the epoch.
    """

    epoch: int
    batches: list[torch.Tensor]
    step: int = 0
    # Each term's sum over the steps so far: float64 tensors on the loss's device (no host
    # synchronisation per step), plain floats as read back from a saved state.
    sums: dict[str, float | torch.Tensor] = field(default_factory=dict)

    def add(self, terms: dict[str, torch.Tensor], total: torch.Tensor) -> None:
        # float64, in step order: the same sums as adding Python floats, read only when needed.
        for name, value in {**terms, "total": total}.items():
            self.sums[name] = self.sums.get(name, 0.0) + value.detach().double()
        self.step += 1

    def read_sums(self) -> dict[str, float]:
        """The sums as floats, read from the device in one transfer."""
        tensors = [value for value in self.sums.values() if isinstance(value, torch.Tensor)]
        read = iter(torch.stack(tensors).tolist() if tensors else [])
        return {name: next(read) if isinstance(value, torch.Tensor) else value for name, value in self.sums.items()}

    def mean_losses(self) -> dict[str, float]:
        return {f"loss_{name}": value / max(1, len(self.batches)) for name, value in self.read_sums().items()}

    def to_state(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "batches": self.batches, "step": self.step, "sums": self.read_sums()}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> EpochProgress:
        return cls(epoch=state["epoch"], batches=list(state["batches"]), step=state["step"], sums=dict(state["sums"]))
