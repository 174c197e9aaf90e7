"""Train a model and keep the checkpoint that scores best on validation: the run every family shares
(:func:`fit`: resume state, best epoch, checkpoint), TIMAM's (``train_timam``), and the best-epoch
loop (:func:`train_epochs`, :class:`BestEpoch`) that tuning runs too.

While a pretrained part is frozen (``training.freeze``) the heads train on its cached outputs
(``timam.training.cached_split``), which is what makes CPU training practical; a part scheduled to
unfreeze, after a fixed epoch or once validation stalls (``timam.training.freeze``), trains with the
heads from then on, on images decoded every step. The loop is shared so that a tuning trial
(``timam.tuning.objective``) picks its best epoch by exactly the rule a training run uses, and so
that every family (``timam.training.interaction``) resumes and picks its checkpoint by it too.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from timam.inference.device import model_to, pick_device
from timam.inference.split_data import SplitData
from timam.models.checkpoint import Checkpoint
from timam.models.families import AnyModel
from timam.tracking.log import log_epoch
from timam.training.cached_split import train_and_val_splits
from timam.training.config import TrainingConfig
from timam.training.determinism import kernel_settings
from timam.training.distributed import (
    DistributedContext,
    broadcast_from_main,
    check_batch_divides,
    context_from_environment,
    global_batch,
    rank_device,
)
from timam.training.epoch import SCORE, EpochTrainer
from timam.training.model_setup import EmbeddingConfig, build_model
from timam.training.progress import EpochProgress
from timam.training.resume import (
    load_state,
    restore_training_state,
    run_fingerprint,
    save_state,
    training_state,
)
from timam.training.trainer import TimamTrainer

logger = logging.getLogger(__name__)


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; return the generator that orders batches."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


@dataclass
class BestEpoch:
    """The best epoch so far by validation text->image R@1, and (when kept) its changing state
    (``model``; empty when no ``snapshot`` is given).

    Only a strictly higher score replaces it, so of equal scores the earliest epoch stays best.
    """

    score: float = -1.0
    epoch: int = 0
    model: dict[str, torch.Tensor] = field(default_factory=dict)

    def offer(self, epoch: int, score: float, snapshot: Callable[[], dict[str, torch.Tensor]] | None = None) -> bool:
        """Take ``epoch`` if ``score`` beats the best so far (``snapshot``: its state, taken only then)."""
        if score > self.score:
            self.score, self.epoch = score, epoch
            if snapshot is not None:
                self.model = snapshot()
            return True
        return False

    def to_state(self) -> dict[str, Any]:
        return {"best_score": self.score, "best_epoch": self.epoch, "best_model": self.model}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> BestEpoch:
        return cls(score=state["best_score"], epoch=state["best_epoch"], model=state["best_model"])


def train_epochs(
    trainer: EpochTrainer,
    epochs: Iterable[int],
    generator: torch.Generator,
    best: BestEpoch,
    *,
    snapshot: Callable[[], dict[str, torch.Tensor]] | None = None,
    resume: EpochProgress | None = None,
    after_step: Callable[[EpochProgress], None] | None = None,
) -> Iterator[dict[str, Any]]:
    """Run each epoch (freeze schedule, train, validate, schedulers), offer it to ``best``, and yield
    its history row. ``resume`` continues its own epoch where it stopped; ``after_step`` sees every
    step's progress (the mid-epoch saves)."""
    for epoch in epochs:
        row = trainer.run_epoch(epoch, generator, resume if resume and resume.epoch == epoch else None, after_step)
        best.offer(epoch, row[SCORE], snapshot)
        yield row


def train_timam(
    train: SplitData,
    val: SplitData,
    model_config: EmbeddingConfig,
    config: TrainingConfig,
    *,
    state_path: str | Path | None = None,
    context: DistributedContext | None = None,
    keep_state: bool = False,
) -> tuple[Checkpoint, pd.DataFrame]:
    """Train as ``config.freeze`` schedules (heads on cached outputs of frozen parts, unfrozen parts
    with them) and return the best-on-validation checkpoint and the history.

    With ``state_path``, the full training state is saved there after every epoch; a rerun with the
    same inputs resumes from it (see :func:`fit`). Under torchrun (or with ``context``) the ranks
    share each global batch; only rank 0 logs and writes the state. The kernel settings of
    ``config.deterministic`` hold while it runs (``timam.training.determinism``).
    """
    with kernel_settings(config.deterministic):
        return _train_timam(
            train, val, model_config, config, state_path=state_path, context=context, keep_state=keep_state
        )


def _train_timam(
    train: SplitData,
    val: SplitData,
    model_config: EmbeddingConfig,
    config: TrainingConfig,
    *,
    state_path: str | Path | None,
    context: DistributedContext | None,
    keep_state: bool,
) -> tuple[Checkpoint, pd.DataFrame]:
    started = time.perf_counter()
    context = context_from_environment() if context is None else context
    check_batch_divides(config.batch_size, config.samples_per_identity if config.sampler == "identity" else 1, context)
    generator = seed_everything(config.seed)
    device = rank_device(pick_device(config.device), context)
    if context.is_main:
        logger.info(
            "Training on %s x %d: %d train captions, %d val captions",
            device,
            context.world_size,
            train.num_captions,
            val.num_captions,
        )
    model = model_to(build_model(model_config), device)
    cached_train, cached_val = train_and_val_splits(
        model,
        train,
        val,
        batch_size=config.embed_batch_size,
        device=device,
        cache_dir=config.feature_cache_dir,
        precision=config.precision,
        show_progress=context.is_main,
    )
    trainer = TimamTrainer(model, cached_train, cached_val, config, device, context)
    fingerprint = run_fingerprint(
        model_config.to_dict(), outcome_parameters(config), train.caption_ids, val.caption_ids
    )
    return fit(trainer, generator, fingerprint, state_path=state_path, keep_state=keep_state, started=started)


def outcome_parameters(config: TrainingConfig) -> dict[str, Any]:
    """The training parameters that change what a run computes, for its fingerprint: where and how
    often it saves, and where its caches live, do not (a state saved with other such settings resumes)."""
    run_only = {"state_path", "save_every_steps", "feature_cache_dir", "cache_device"}
    return {key: value for key, value in config.model_dump().items() if key not in run_only}


def fit(
    trainer: EpochTrainer,
    generator: torch.Generator,
    fingerprint: str,
    *,
    state_path: str | Path | None,
    keep_state: bool,
    started: float,
) -> tuple[Checkpoint, pd.DataFrame]:
    """The run around the epochs, the same for every family: epochs 1 to ``training.epochs`` of
    ``trainer`` (drawing batches from ``generator``), each offered to the best epoch, and the
    best-on-validation checkpoint and the history.

    With ``state_path``, the whole state (:func:`~timam.training.resume.training_state`) is saved
    there after every epoch, and every ``save_every_steps`` steps; a rerun whose inputs have the
    same ``fingerprint`` resumes from it, mid-epoch if need be. A state that already holds every
    epoch (a run stopped after training, before its checkpoint was saved) gives the checkpoint
    without training again. The state is deleted once the checkpoint is built, or, with
    ``keep_state``, left for the caller to delete once it has saved the checkpoint and history
    (:func:`~timam.training.resume.discard_state_of`): a kill during that save then loses nothing.
    """
    config, context = trainer.config, trainer.context
    trainer.set_epoch(1)
    run_progress: dict[str, Any] = {"fingerprint": fingerprint, "epoch": 0, "history": []}
    best = BestEpoch(model=trainer.changing_state())
    # Rank 0 reads the state and hands it to the others, so all ranks resume from the same point.
    saved = load_state(state_path, fingerprint) if state_path and context.is_main else None
    saved = broadcast_from_main(saved, context)
    partial = None
    if saved is not None:
        restore_training_state(trainer, saved, generator)
        trainer.set_epoch(saved["epoch"])
        run_progress = {key: saved[key] for key in run_progress}
        best = BestEpoch.from_state(saved)
        if saved.get("partial_epoch"):
            partial = EpochProgress.from_state(saved["partial_epoch"])
            partial.batches = [global_batch(batch, context) for batch in partial.batches]  # another world size
        if run_progress["epoch"] >= config.epochs and context.is_main:
            logger.warning(
                "Training state %s holds all %d epochs: the run stopped before its checkpoint was saved; "
                "saving the checkpoint of epoch %d from it, without training again",
                state_path,
                run_progress["epoch"],
                best.epoch,
            )
    trainer.prepare_caches()

    def state(epoch_progress: EpochProgress | None = None) -> dict[str, Any]:
        return training_state(trainer, {**run_progress, **best.to_state()}, generator, epoch_progress)

    def save_mid_epoch(epoch_progress: EpochProgress) -> None:
        every = config.save_every_steps
        last = epoch_progress.step == len(epoch_progress.batches)  # the epoch-end save follows
        if state_path and context.is_main and every and epoch_progress.step % every == 0 and not last:
            save_state(state_path, state(epoch_progress))

    bar = tqdm(
        range(run_progress["epoch"] + 1, config.epochs + 1),
        desc="training epochs",
        initial=run_progress["epoch"],
        total=config.epochs,
        disable=not context.is_main,
    )
    snapshot = trainer.changing_state
    rows = train_epochs(trainer, bar, generator, best, snapshot=snapshot, resume=partial, after_step=save_mid_epoch)
    for row in rows:
        epoch, score = row["epoch"], row[SCORE]
        run_progress["history"].append(row)
        run_progress["epoch"] = epoch
        if state_path and context.is_main:
            save_state(state_path, state())
        if not context.is_main:
            continue
        log_epoch(row, epoch=epoch)  # into the active MLflow run, if any, as each epoch ends
        bar.set_postfix(loss=f"{row['loss_total']:.3f}", val_r1=f"{score:.1f}", best=f"{best.score:.1f}")
        logger.info(
            "epoch %d: loss %.4f, val t2i R@1 %.2f (best %.2f at epoch %d)",
            epoch,
            row["loss_total"],
            score,
            best.score,
            best.epoch,
        )
    # train_seconds: this process's share when a run resumed
    checkpoint = best_checkpoint(trainer.model, best, config, trainer.train.data, started)
    if state_path and context.is_main and not keep_state:
        Path(state_path).unlink(missing_ok=True)
    return checkpoint, pd.DataFrame(run_progress["history"])


def best_checkpoint(
    model: AnyModel, best: BestEpoch, config: TrainingConfig, train: SplitData, started: float
) -> Checkpoint:
    """``model`` on the CPU with the best epoch's state, in eval mode, and what produced it."""
    model = model.cpu()
    model.load_state_dict(best.model, strict=False)
    model.eval()
    metadata = {
        "best_epoch": best.epoch,
        "val_t2i_R@1": best.score,
        "training": config.model_dump(),
        "train_captions": train.num_captions,
        "train_images": len(train.image_paths),
        "train_seconds": time.perf_counter() - started,
    }
    return Checkpoint(model=model, metadata=metadata)
