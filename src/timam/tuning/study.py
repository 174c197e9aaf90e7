"""Studies shared by any number of workers through one database, and what a study hands back.

Every worker opens the same study (``load_if_exists``) in the same storage -- a SQLite file on one
machine, or any SQLAlchemy database URL (``postgresql://user@host/db``) for workers on several --
and runs ``n_trials`` new trials against it; Optuna's storage gives each trial a unique number.
A rerun of an interrupted worker adds trials to the study instead of starting over. With a
database storage each running trial sends a heartbeat; a trial whose worker died is marked failed
once its heartbeat is ``grace_period`` seconds old and re-queued with the same parameters
(``retry_failed`` times).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import optuna
import pandas as pd
from pydantic import NonNegativeInt, PositiveFloat, PositiveInt

from timam.config import ParameterBlock, build, flatten, set_by_conf
from timam.tuning.space import Knob, nest, parse_search_space

logger = logging.getLogger(__name__)


def worker_label() -> str:
    """host:pid, the default name of a worker."""
    return f"{socket.gethostname()}:{os.getpid()}"


class SamplerSettings(ParameterBlock):
    """TPE. Its seed is mixed with the worker id and the study's trial count at start (see below)."""

    seed: int = 0
    """mixed with the worker id and the study's trial count"""
    n_startup_trials: NonNegativeInt = 5
    """random trials before TPE models the space"""
    multivariate: bool = False
    """TPE over the knobs jointly"""
    constant_liar: bool = True
    """workers running at once avoid proposing the same point"""


class PrunerSettings(ParameterBlock):
    """Stop trials that do worse than the median of earlier trials at the same epoch."""

    name: Literal["median", "none"] = "median"
    """median (Optuna's MedianPruner) | none"""
    n_startup_trials: NonNegativeInt = 3
    """trials that are never pruned"""
    n_warmup_steps: NonNegativeInt = 1
    """epochs of each trial that are never pruned"""
    interval_steps: PositiveInt = 1
    """epochs between pruning checks"""


class HeartbeatSettings(ParameterBlock):
    """Database storages only: detect trials of a dead worker and re-queue them."""

    interval: PositiveInt | None = 60
    """seconds between a running trial's heartbeats (null: none)"""
    grace_period: PositiveInt | None = 180
    """a trial whose heartbeat is this old is failed"""
    retry_failed: NonNegativeInt = 1
    """times a failed trial is re-queued with the same parameters"""


class TuningSettings(ParameterBlock):
    """``kedro run --pipelines tune``: one worker of an Optuna study over ``params:training``."""

    study_name: str = set_by_conf("timam")
    """the study every worker joins (conf/base: timam-<dataset>)"""
    storage: str | None = set_by_conf(None)
    """any SQLAlchemy URL (sqlite:///path, postgresql://...); null: in memory, nothing kept"""
    n_trials: NonNegativeInt = 10
    """new trials this worker runs"""
    max_total_trials: PositiveInt | None = None
    """stop every worker once the study has this many finished trials"""
    timeout: PositiveFloat | None = None
    """seconds this worker may spend on trials"""
    epochs: PositiveInt | None = 8
    """epochs per trial (null: training.epochs); the best-parameters file leaves epochs alone"""
    worker: str | None = None
    """this worker's name (trial user attr, sampler seed); null: host:pid"""
    torch_threads: PositiveInt | None = None
    """CPU threads per worker (set 1 when several workers share a machine); null: torch's default"""
    sampler: SamplerSettings = SamplerSettings()
    pruner: PrunerSettings = PrunerSettings()
    heartbeat: HeartbeatSettings = HeartbeatSettings()
    search_space: dict[str, Any] = set_by_conf(default_factory=dict)
    """knobs by their place in params:training: {low, high[, log, step]}, {choices: [...]}, {fixed:
    value}; `when` limits a knob to some values of another; null switches a knob off"""

    @property
    def knobs(self) -> list[Knob]:
        return parse_search_space(self.search_space)


def tuning_settings(values: Mapping[str, Any] | TuningSettings | None) -> TuningSettings:
    """Build from ``params:tuning``; unknown keys are errors naming their full path and the nearest
    known key, and the search space is checked against the training parameters now."""
    settings = build(TuningSettings, values, "tuning")
    settings.knobs  # noqa: B018  (validates the search space now)
    return settings


def make_storage(url: str | None, heartbeat: HeartbeatSettings | None = None) -> optuna.storages.BaseStorage | None:
    """An RDB storage for ``url`` (the SQLite file's folder is created), or None for in-memory."""
    if not url:
        return None
    heartbeat = heartbeat or HeartbeatSettings()
    engine_kwargs: dict[str, Any]
    if url.startswith("sqlite:"):
        path = url.split(":///", 1)[1] if ":///" in url else ""
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine_kwargs = {"connect_args": {"timeout": 60}}  # wait for a busy file instead of failing
    else:
        engine_kwargs = {"pool_pre_ping": True}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        kwargs: dict[str, Any] = {}
        if heartbeat.interval:
            kwargs = {
                "heartbeat_interval": heartbeat.interval,
                "grace_period": heartbeat.grace_period,
                "heartbeat_stale_trial_callback": optuna.storages.RetryHeartbeatStaleTrialCallback(
                    max_retry=heartbeat.retry_failed
                ),
            }
        return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, **kwargs)


def sampler_seed(seed: int, worker: str, existing_trials: int) -> int:
    """Distinct per worker and per restart, so concurrent or resumed workers do not replay each
    other's random start-up points; reproducible given the same worker name and study state."""
    digest = hashlib.sha256(f"{seed}:{worker}:{existing_trials}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


def open_study(
    settings: TuningSettings, *, worker: str | None = None, pruner: optuna.pruners.BasePruner | None = None
) -> optuna.Study:
    """Create the study, or load it when it exists; TPE seeded, median pruner unless one is given.

    The sampler's seed mixes ``tuning.sampler.seed`` with the worker's name (``tuning.worker``, or
    host:pid when unnamed) and the number of trials the study already holds: name the workers for
    a reproducible sequence of suggestions.
    """
    if pruner is None:
        pruner = (
            optuna.pruners.NopPruner()
            if settings.pruner.name == "none"
            else optuna.pruners.MedianPruner(
                n_startup_trials=settings.pruner.n_startup_trials,
                n_warmup_steps=settings.pruner.n_warmup_steps,
                interval_steps=settings.pruner.interval_steps,
            )
        )
    study = optuna.create_study(
        storage=make_storage(settings.storage, settings.heartbeat),
        study_name=settings.study_name,
        direction="maximize",
        load_if_exists=True,
        pruner=pruner,
    )
    existing = len(study.trials)
    study.sampler = optuna.samplers.TPESampler(
        seed=sampler_seed(settings.sampler.seed, worker or settings.worker or worker_label(), existing),
        n_startup_trials=settings.sampler.n_startup_trials,
        multivariate=settings.sampler.multivariate,
        constant_liar=settings.sampler.constant_liar,
    )
    if existing:
        logger.info("Study %r has %d trial(s) already: adding to it", settings.study_name, existing)
    return study


def finished_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED))


def run_trials(study: optuna.Study, objective: Any, settings: TuningSettings) -> optuna.Study:
    """Run this worker's ``n_trials`` (fewer if ``max_total_trials`` or ``timeout`` stops it)."""
    callbacks = []
    if settings.max_total_trials is not None:
        if len(finished_trials(study)) >= settings.max_total_trials:
            logger.info(
                "Study %r already has %d finished trials: nothing to run", study.study_name, settings.max_total_trials
            )
            return study
        callbacks.append(
            optuna.study.MaxTrialsCallback(
                settings.max_total_trials, states=(optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
            )
        )
    if settings.n_trials:
        # A diverging trial (non-finite loss) fails alone; configuration errors still stop the run.
        study.optimize(
            objective,
            n_trials=settings.n_trials,
            timeout=settings.timeout,
            catch=(FloatingPointError,),
            callbacks=callbacks,
            gc_after_trial=True,
        )
    return study


def trials_table(study: optuna.Study) -> pd.DataFrame:
    """One row per trial: number, state, value, worker, timings, every parameter (``params_*``)."""
    attrs = ("number", "state", "value", "datetime_start", "datetime_complete", "duration", "params", "user_attrs")
    table = study.trials_dataframe(attrs=attrs)
    if table.empty:
        return pd.DataFrame(columns=["number", "state", "value"])
    if "duration" in table:
        table["duration"] = table["duration"].dt.total_seconds()
        table = table.rename(columns={"duration": "duration_seconds"})
    for column in table.columns:
        if table[column].map(lambda v: isinstance(v, dict | list)).any():
            table[column] = table[column].map(lambda v: json.dumps(v) if isinstance(v, dict | list) else v)
    table.columns = [c.replace("user_attrs_", "") for c in table.columns]
    return table.sort_values("number").reset_index(drop=True)


def best_training_parameters(study: optuna.Study) -> dict[str, Any]:
    """``{"training": {...}}``: the best completed trial's tuned (and fixed) knobs, nested like
    ``params:training``, ready to merge over it (conf/local/parameters_tuned.yml or --params)."""
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if not complete:
        raise ValueError(
            f"Study {study.study_name!r} has no completed trial yet ({len(study.trials)} trial(s) in all): "
            "run more trials (tuning.n_trials) before asking for its best parameters"
        )
    best = study.best_trial
    overrides = best.user_attrs.get("training_overrides")
    if overrides is None:  # a trial written by something else: rebuild from its parameters
        overrides = nest(best.params)
    return {"training": overrides}


def _format(value: Any) -> str:
    if isinstance(value, float):
        text = repr(value)
        mantissa, _, exponent = text.partition("e")
        return f"{mantissa}.0e{exponent}" if exponent and "." not in mantissa else text
    if isinstance(value, bool):
        return str(value).lower()
    if value is None:
        return "null"
    return str(value)


def params_argument(parameters: Mapping[str, Any]) -> str:
    """The same parameters as one ``kedro run --params`` value (dotted keys, comma-separated)."""
    items = flatten(parameters)
    for path, value in items.items():
        if isinstance(value, str) and "," in value:
            raise ValueError(f"{path}={value!r} contains a comma, which --params cannot carry")
    return ",".join(f"{path}={_format(value)}" for path, value in items.items())
