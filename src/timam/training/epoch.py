"""The epoch every model family trains with: its batches, the step, the loss sums, the schedulers.

A family (TIMAM's embedding model, the SCAN-style interaction model, the ones to come) subclasses
:class:`EpochTrainer` and supplies how to compute one batch's loss terms (:meth:`~EpochTrainer.loss_terms`),
how to score validation (:meth:`~EpochTrainer.validate`) and its named optimisers; the rest is written
once here, so every family draws its batches, steps, checks for NaN, clips, sums its losses, resumes
mid-epoch and lowers its learning rates by the same rules. The run around the epochs (best epoch,
resume state, checkpoint) is :func:`timam.training.loop.fit`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from timam.models.families import AnyModel
from timam.training.batches import epoch_batches
from timam.training.cached_split import CachedCaptions
from timam.training.config import TrainingConfig
from timam.training.distributed import DistributedContext, local_share
from timam.training.progress import EpochProgress

# The validation score that picks the best epoch, steps the plateau schedulers (and that tuning maximises).
SCORE = "val_t2i_R@1"


def check_finite(terms: dict[str, torch.Tensor], epoch: int, step: int) -> None:
    """Stop on a NaN or infinite loss term, naming it: one host synchronisation for all the terms."""
    values = torch.stack([value.detach().float() for value in terms.values()])
    if bool(torch.isfinite(values).all()):
        return
    name, value = next((name, float(v)) for name, v in zip(terms, values.tolist(), strict=True) if not math.isfinite(v))
    raise FloatingPointError(f"Loss term {name!r} is {value} at epoch {epoch}, step {step}")


def weighted_total(terms: Mapping[str, torch.Tensor], weights: object) -> torch.Tensor:
    """The sum of each term times its weight in ``training.loss_weights`` (the attribute of its name)."""
    return sum(getattr(weights, name) * value for name, value in terms.items())


class EpochTrainer:
    """One family's model, splits and optimisers, and the epoch loop they share.

    A family implements :meth:`loss_terms`, :meth:`validate` and :meth:`named_optimizers` (branch
    names; the history's ``lr`` column is the "text" branch's), sets ``self.schedulers`` with
    :func:`~timam.training.optimizers.plateau_schedulers`, and overrides the other methods only where
    it differs: which optimisers the weighted total steps, what a batch reads besides its captions
    (:meth:`batch_inputs`), updates after the backward pass (:meth:`after_backward`), which modules
    train (:meth:`set_train_mode`), what a resume state holds (:meth:`state`).
    """

    schedulers: dict[str, torch.optim.lr_scheduler.ReduceLROnPlateau]

    def __init__(
        self,
        model: AnyModel,
        train: CachedCaptions,
        val: CachedCaptions,
        config: TrainingConfig,
        device: torch.device,
        context: DistributedContext | None = None,
    ) -> None:
        self.model, self.train, self.val, self.config, self.device = model, train, val, config, device
        self.context = context if context is not None else DistributedContext()
        self.epoch = 0

    # ---- what a family supplies

    def loss_terms(self, batch: torch.Tensor, inputs: Any, epoch: int) -> dict[str, torch.Tensor]:
        """The unweighted loss terms of one global batch of caption indices, keyed by their names in
        ``training.loss_weights``; ``inputs`` is what :meth:`batch_inputs` gave for it."""
        raise NotImplementedError

    def validate(self) -> dict[str, float]:
        """Validation scores with the current weights, :data:`SCORE` among them (the same on every rank)."""
        raise NotImplementedError

    def named_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """Every optimiser by branch name, in the order of the resume state's lists."""
        raise NotImplementedError

    def changing_state(self) -> dict[str, torch.Tensor]:
        """Every model tensor training can change, copied to the CPU (best epoch, resume state)."""
        return {name: tensor.detach().cpu().clone() for name, tensor in self.model.state_dict().items()}

    # ---- where families differ, with the common case as default

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def set_train_mode(self) -> None:
        self.model.train()

    def prepare_caches(self) -> None:
        """Compute the frozen outputs the run reads before its first epoch (default: on first use)."""

    def stepped_optimizers(self) -> Sequence[torch.optim.Optimizer]:
        """The optimisers stepped on the weighted total (default: all of them)."""
        return list(self.named_optimizers().values())

    def batch_inputs(self, shares: list[torch.Tensor], generator: torch.Generator) -> Iterator[Any]:
        """What each batch reads besides its captions, given this rank's share of each batch, drawn
        lazily in step order (decoded images, random views); default: nothing."""
        for _ in shares:
            yield None

    def after_backward(self, terms: dict[str, torch.Tensor]) -> None:
        """Updates that follow the backward pass of the weighted total (a discriminator's), which may
        add their detached terms to ``terms`` for the step's check and the epoch's sums."""

    def state(self) -> dict[str, Any]:
        """What a resume state holds of the trainer (optimiser and scheduler lists in branch order)."""
        return {
            "model": self.changing_state(),
            "optimizers": [optimizer.state_dict() for optimizer in self.named_optimizers().values()],
            "schedulers": [scheduler.state_dict() for scheduler in self.schedulers.values()],
        }

    def load_state(self, state: dict[str, Any]) -> None:
        """Put back a :meth:`state`."""
        self.model.load_state_dict(state["model"], strict=False)
        for optimizer, saved in zip(self.named_optimizers().values(), state["optimizers"], strict=True):
            optimizer.load_state_dict(saved)
        for scheduler, saved in zip(self.schedulers.values(), state["schedulers"], strict=True):
            scheduler.load_state_dict(saved)

    # ---- the loop, written once

    def batches(self, generator: torch.Generator) -> list[torch.Tensor]:
        """The epoch's global batches, the same on every rank (same generator), trimmed to equal shares."""
        return epoch_batches(self.train.data.caption_labels, self.config, generator, self.context)

    def backward(self, terms: dict[str, torch.Tensor]) -> torch.Tensor:
        """The weighted total's gradients, the stepped optimisers' old ones cleared first."""
        total = weighted_total(terms, self.config.loss_weights)
        for optimizer in self.stepped_optimizers():
            optimizer.zero_grad(set_to_none=True)
        total.backward()
        return total

    def clip_and_step(self) -> None:
        """Clip the stepped parameters' gradient norm to ``training.grad_clip`` (when above 0), then step."""
        optimizers = self.stepped_optimizers()
        if self.config.grad_clip > 0:
            parameters = [p for optimizer in optimizers for group in optimizer.param_groups for p in group["params"]]
            nn.utils.clip_grad_norm_([p for p in parameters if p.grad is not None], self.config.grad_clip)
        for optimizer in optimizers:
            optimizer.step()

    def train_epoch(
        self,
        epoch: int,
        generator: torch.Generator,
        progress: EpochProgress | None = None,
        after_step: Callable[[EpochProgress], None] | None = None,
    ) -> dict[str, float]:
        """Train on the epoch's batches from ``progress`` (a resumed epoch) or from the start.

        ``after_step`` sees the progress after every step (the mid-epoch saves). The loss terms
        are checked for NaN and infinity once per step, all at once, before the optimisers step;
        the loss sums stay on the device until the epoch ends.
        """
        self.set_train_mode()
        progress = progress or EpochProgress(epoch=epoch, batches=self.batches(generator))
        remaining = progress.batches[progress.step :]
        shares = [local_share(batch, self.context) for batch in remaining]
        for batch, inputs in zip(remaining, self.batch_inputs(shares, generator), strict=True):
            terms = self.loss_terms(batch, inputs, epoch)
            total = self.backward(terms)
            self.after_backward(terms)
            check_finite(terms, epoch, progress.step)
            self.clip_and_step()
            progress.add(terms, total)
            if after_step is not None:
                after_step(progress)
        return progress.mean_losses()

    def run_epoch(
        self,
        epoch: int,
        generator: torch.Generator,
        progress: EpochProgress | None = None,
        after_step: Callable[[EpochProgress], None] | None = None,
    ) -> dict[str, Any]:
        """One epoch: train, validate, step the plateau schedulers on :data:`SCORE`.

        Returns the history row (epoch, lr, loss terms, validation scores, seconds).
        """
        self.set_epoch(epoch)
        started = time.perf_counter()
        row: dict[str, Any] = {"epoch": epoch, "lr": self.learning_rate()}
        row.update(self.train_epoch(epoch, generator, progress, after_step))
        row.update(self.validate())
        row["seconds"] = time.perf_counter() - started
        for scheduler in self.schedulers.values():
            scheduler.step(row[SCORE])
        return row

    def learning_rate(self) -> float:
        """The text branch's learning rate (the history's ``lr`` column)."""
        return self.named_optimizers()["text"].param_groups[0]["lr"]
