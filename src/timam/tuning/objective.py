"""The objective: train the heads on cached frozen features, report validation R@1 every epoch.

A :class:`TuningWorker` pays once for what no tuned knob changes -- building the model and caching
the frozen encoders' outputs for the train and val splits -- and then trains any number of trials
on that cache. Each trial starts from the state :func:`timam.training.loop.train_timam` starts
from with the same seed: the heads' initial weights and every RNG are snapshotted right after the
model is built and restored before each trial, and the epochs run the same trainer steps
(``set_epoch``, ``train_epoch``, ``validate``, plateau schedulers) in the same best-epoch loop,
:func:`timam.training.loop.train_epochs`. So a trial is the first ``epochs`` epochs of the
``train`` run its parameters would give (bit for bit on the CPU while no
augmentation is on: cached features spare a trial the RNG draws that building them costs the
training run). A trial that unfreezes a pretrained encoder (``training.freeze``) changes its
weights; they are put back before the next trial.

The score is text->image R@1 on the **validation** split (the test split is never read), the best
over the trial's epochs, as the training run keeps its best-on-validation checkpoint.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping
from typing import Any

import optuna
import torch

from timam.config import deep_merge
from timam.inference.device import model_to, pick_device
from timam.inference.split_data import SplitData
from timam.tracking.log import log_epoch, log_params, nested_run, set_tags
from timam.training.cached_split import CachedSplit
from timam.training.config import TrainingConfig, training_config
from timam.training.freeze import changing_state, freeze_pretrained, pretrained_parts
from timam.training.loop import SCORE, BestEpoch, seed_everything, train_epochs
from timam.training.model_setup import EmbeddingConfig, build_model
from timam.training.resume import restore_rng, rng_state
from timam.training.trainer import TimamTrainer
from timam.tuning.space import Knob, suggest_overrides
from timam.tuning.study import worker_label

logger = logging.getLogger(__name__)

# Called after every epoch with (epoch, validation score); may raise optuna.TrialPruned.
EpochCallback = Callable[[int, float], None]


def _may_unfreeze(config: TrainingConfig) -> bool:
    return config.freeze.image_backbone_epochs is not None or config.freeze.text_model_epochs is not None


class TuningWorker:
    """Frozen caches built once; :meth:`train` runs one configuration of the heads on them."""

    def __init__(
        self, train: SplitData, val: SplitData, model_config: EmbeddingConfig, base_training: Mapping[str, Any]
    ) -> None:
        if val.split != "val":
            raise ValueError(f"Tuning scores on the validation split only, got the {val.split!r} split")
        self.base_training = dict(base_training)
        base = training_config(self.base_training)  # a bad base configuration fails here, not per trial
        started = time.perf_counter()
        generator = seed_everything(base.seed)
        self.device = pick_device(base.device)
        self.model = model_to(build_model(model_config), self.device)
        freeze_pretrained(self.model)
        self.initial_heads = changing_state(self.model, pretrained_parts(self.model))  # the heads
        self.rng = rng_state(generator)
        self.pristine: dict[str, dict[str, torch.Tensor]] | None = None  # pretrained weights, once needed
        self.dirty = False
        self.seed, self.embed_batch_size = base.seed, base.embed_batch_size
        self.train_cache = CachedSplit(
            self.model, train, batch_size=base.embed_batch_size, device=self.device, per_view=True
        )
        self.val_cache = CachedSplit(self.model, val, batch_size=base.embed_batch_size, device=self.device)
        for cache in (self.train_cache, self.val_cache):  # now, once, rather than inside the first trial
            if base.freeze.image_backbone_epochs != 0:
                cache.image_features  # noqa: B018
            if "text" in pretrained_parts(self.model) and base.freeze.text_model_epochs != 0:
                cache.token_states  # noqa: B018
        self.cache_seconds = time.perf_counter() - started
        logger.info(
            "Tuning worker ready on %s in %.1f s: %d train / %d val captions cached",
            self.device,
            self.cache_seconds,
            train.num_captions,
            val.num_captions,
        )

    def config(self, overrides: Mapping[str, Any]) -> TrainingConfig:
        """The base training parameters with a trial's overrides merged in, checked."""
        config = training_config(deep_merge(self.base_training, overrides))
        # The caches were made with these; a trial that changed them would not be what it claims.
        if config.seed != self.seed or config.embed_batch_size != self.embed_batch_size:
            raise ValueError("seed and embed_batch_size are fixed per worker and cannot be tuned")
        if pick_device(config.device) != self.device:
            raise ValueError("device is fixed per worker and cannot be tuned")
        return config

    def reset(self) -> torch.Generator:
        """Heads back to their seeded initial weights, pretrained parts frozen and (if a trial
        trained them) pristine again, every RNG back to its post-build state."""
        if self.dirty and self.pristine is not None:
            for name, part in pretrained_parts(self.model).items():
                part.load_state_dict(self.pristine[name])
            self.dirty = False
        freeze_pretrained(self.model)
        self.model.load_state_dict(self.initial_heads, strict=False)
        for parameter in self.model.parameters():
            parameter.grad = None
        generator = torch.Generator()
        restore_rng(self.rng, generator)
        return generator

    def train(self, config: TrainingConfig, on_epoch: EpochCallback | None = None) -> dict[str, Any]:
        """Train ``config.epochs`` epochs from the initial state; the best validation R@1 and history."""
        if _may_unfreeze(config) and self.pristine is None:  # no trial has trained them yet
            self.pristine = {
                name: {k: v.detach().cpu().clone() for k, v in part.state_dict().items()}
                for name, part in pretrained_parts(self.model).items()
            }
        generator = self.reset()
        trainer = TimamTrainer(self.model, self.train_cache, self.val_cache, config, self.device)
        trainer.set_epoch(1)
        self.dirty = _may_unfreeze(config)
        best, history = BestEpoch(), []
        for row in train_epochs(trainer, range(1, config.epochs + 1), generator, best):
            history.append(row)
            log_epoch(row, epoch=row["epoch"])  # into the trial's MLflow run, if tracking is on
            if on_epoch is not None:
                on_epoch(row["epoch"], row[SCORE])
        return {"score": best.score, "best_epoch": best.epoch, "history": history}

    def objective(
        self, knobs: list[Knob], *, worker: str | None = None, epochs: int | None = None
    ) -> Callable[[optuna.Trial], float]:
        """An Optuna objective: suggest overrides, train, report R@1 per epoch, prune when told.

        ``epochs`` (the tuning budget) replaces ``training.epochs`` in every trial; it is not one of
        the trial's ``training_overrides``, which are what the best-parameters file holds.
        """
        label = worker or worker_label()

        def run(trial: optuna.Trial) -> float:
            overrides = suggest_overrides(trial, knobs, self.base_training)
            trial.set_user_attr("worker", label)
            trial.set_user_attr("pid", os.getpid())
            trial.set_user_attr("training_overrides", overrides)
            config = self.config(deep_merge(overrides, {"epochs": epochs}) if epochs else overrides)
            scores: list[float] = []

            def on_epoch(epoch: int, score: float) -> None:
                scores.append(score)
                trial.report(score, step=epoch)
                if trial.should_prune():
                    trial.set_user_attr("val_history", scores)
                    logger.info("Trial %d pruned after epoch %d (val t2i R@1 %.2f)", trial.number, epoch, score)
                    raise optuna.TrialPruned(f"pruned after epoch {epoch}")

            started = time.perf_counter()
            tags = {"optuna.trial": trial.number, "optuna.worker": label}
            with nested_run(f"trial {trial.number}", tags=tags, stopped_by=(optuna.TrialPruned,)) as run_id:
                log_params(overrides, prefix="training", run_id=run_id)
                try:
                    result = self.train(config, on_epoch)
                except optuna.TrialPruned:
                    set_tags({"optuna.state": "PRUNED"}, run_id=run_id)
                    raise
                set_tags({"optuna.state": "COMPLETE", "best_epoch": result["best_epoch"]}, run_id=run_id)
            trial.set_user_attr("val_history", scores)
            trial.set_user_attr("best_epoch", result["best_epoch"])
            trial.set_user_attr("train_seconds", round(time.perf_counter() - started, 3))
            logger.info(
                "Trial %d (%s): best val t2i R@1 %.2f at epoch %d",
                trial.number,
                label,
                result["score"],
                result["best_epoch"],
            )
            return result["score"]

        return run
