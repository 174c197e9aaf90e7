"""A study's figures: optimisation history and parameter importance (Optuna's matplotlib plots).

Optuna draws with pyplot and switches the global style to ggplot; both plots run inside
``matplotlib.rc_context`` so the rest of the process keeps its style, and each figure is closed in
pyplot's registry before it is returned (it can still be saved). A study without enough finished
trials gives a figure that says so instead of failing the run.
"""

from __future__ import annotations

import logging
import warnings

import matplotlib
import optuna
from matplotlib.figure import Figure

from timam.figures.style import message_figure

logger = logging.getLogger(__name__)

TARGET = "val text->image R@1"


def _completed(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)))


def _draw(plot, study: optuna.Study, **kwargs) -> Figure:
    import matplotlib.pyplot as plt

    with matplotlib.rc_context(), warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        axes = plot(study, target_name=TARGET, **kwargs)
        figure = axes.figure
        figure.set_size_inches(8, 4.5)
        figure.suptitle(
            f"study {study.study_name!r}: {len(study.trials)} trial(s), {_completed(study)} completed", fontsize=10
        )
        figure.tight_layout()
    plt.close(figure)
    return figure


def optimisation_history_figure(study: optuna.Study) -> Figure:
    """Every completed trial's value in order, and the best so far."""
    if not _completed(study):
        return message_figure("No completed trial yet: nothing to plot.", title="Optimisation history")
    return _draw(optuna.visualization.matplotlib.plot_optimization_history, study)


def parameter_importance_figure(study: optuna.Study) -> Figure:
    """PED-ANOVA importance (Optuna's default: conditional knobs included, no scikit-learn) of each
    tuned parameter for the objective; needs at least 2 completed trials."""
    completed = _completed(study)
    if completed < 2:
        return message_figure(
            f"Parameter importance needs at least 2 completed trials; this study has {completed}.",
            title="Parameter importance",
        )
    try:
        return _draw(optuna.visualization.matplotlib.plot_param_importances, study)
    except (RuntimeError, ValueError, ZeroDivisionError) as error:  # e.g. no parameter varied
        logger.warning("Parameter importance could not be computed: %s", error)
        return message_figure(f"Parameter importance could not be computed: {error}", title="Parameter importance")
