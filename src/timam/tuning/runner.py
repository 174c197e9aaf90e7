"""The tuning entry point of one worker: cache once, run this worker's trials, return the study."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import optuna
import torch

from timam.inference.split_data import SplitData
from timam.training.model_setup import EmbeddingConfig
from timam.tuning.objective import TuningWorker
from timam.tuning.study import (
    TuningSettings,
    finished_trials,
    open_study,
    run_trials,
    tuning_settings,
    worker_label,
)

logger = logging.getLogger(__name__)


def run_worker(
    train: SplitData,
    val: SplitData,
    model_config: EmbeddingConfig,
    training: Mapping[str, Any],
    tuning: Mapping[str, Any] | TuningSettings,
    *,
    pruner: optuna.pruners.BasePruner | None = None,
    worker: TuningWorker | None = None,
) -> optuna.Study:
    """Open (or create) the study in ``tuning.storage`` and run ``tuning.n_trials`` trials on it.

    ``training`` is the base ``params:training``; ``tuning.epochs`` replaces its epochs for every
    trial. Pass ``worker`` to reuse the caches of a worker built for the same data, model and base
    training (``train``, ``val``, ``model_config`` and ``training`` are then not used).
    """
    settings = tuning if isinstance(tuning, TuningSettings) else tuning_settings(tuning)
    if settings.torch_threads:
        torch.set_num_threads(settings.torch_threads)
    label = settings.worker or worker_label()
    study = open_study(settings, worker=label, pruner=pruner)
    full = settings.max_total_trials is not None and len(finished_trials(study)) >= settings.max_total_trials
    if settings.n_trials and not full:
        worker = worker or TuningWorker(train, val, model_config, training)
        run_trials(study, worker.objective(settings.knobs, worker=label, epochs=settings.epochs), settings)
    logger.info(
        "Study %r: %d trial(s) in all, best val t2i R@1 %s",
        study.study_name,
        len(study.trials),
        f"{study.best_value:.2f}" if any(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials) else "n/a",
    )
    return study
