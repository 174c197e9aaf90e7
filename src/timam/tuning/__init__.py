"""Hyperparameter search for TIMAM training with Optuna, shareable across worker processes.

- :mod:`timam.tuning.space`: the search space (``params:tuning.search_space``) -> trial overrides
- :mod:`timam.tuning.objective`: :class:`TuningWorker` (frozen caches once, trials on top)
- :mod:`timam.tuning.study`: settings, storage, study, trials table, best parameters
- :mod:`timam.tuning.runner`: :func:`run_worker`, the entry point of one worker

``python -m timam.tuning params FILE`` prints a best-parameters file as a ``kedro run --params`` value.
"""

from timam.tuning.objective import TuningWorker
from timam.tuning.runner import run_worker
from timam.tuning.space import Knob, parse_search_space, suggest_overrides
from timam.tuning.study import (
    TuningSettings,
    best_training_parameters,
    open_study,
    params_argument,
    trials_table,
    tuning_settings,
)

__all__ = [
    "Knob",
    "TuningSettings",
    "TuningWorker",
    "best_training_parameters",
    "open_study",
    "params_argument",
    "parse_search_space",
    "run_worker",
    "suggest_overrides",
    "trials_table",
    "tuning_settings",
]
