"""Guarded MLflow calls: log into the active run if there is one, warn once if tracking fails.

``mlflow`` is imported only when a run may be active (someone imported it already): importing it
costs about two seconds, which a test or a run without tracking should not pay.
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
import sys
import time
from collections.abc import Iterator, Mapping
from typing import Any

logger = logging.getLogger(__name__)

WHERE_THE_NUMBERS_ARE = (
    "every number is still in the catalog (data/08_reporting/<dataset>/: training_history.csv, retrieval_metrics.json)"
)
PARAM_VALUE_LIMIT = 6000  # MLflow's longest parameter value; longer ones are cut here, not refused
_INVALID = re.compile(r"[^/\w.\- :]")
_warned = False


def metric_name(name: str) -> str:
    """An MLflow-valid key: ``val_t2i_R@1`` -> ``val_t2i_R1`` (MLflow refuses ``@``), others -> ``_``."""
    return _INVALID.sub("_", name.replace("@", ""))


def warn_once(what: str, error: BaseException) -> None:
    """One warning per process: a tracking store that fails once usually fails on every call."""
    global _warned
    if not _warned:
        _warned = True
        logger.warning(
            "MLflow tracking failed (%s: %s); the run goes on untracked, %s", what, error, WHERE_THE_NUMBERS_ARE
        )
    else:
        logger.debug("MLflow tracking failed again (%s: %s)", what, error)


@contextlib.contextmanager
def guarded(what: str) -> Iterator[None]:
    """Run a tracking call; a failure warns (once) instead of stopping training or evaluation."""
    try:
        yield
    except Exception as error:  # any store, network or validation error: tracking never breaks a run
        warn_once(what, error)


def active_run_id() -> str | None:
    """The active MLflow run's id, or None (also when mlflow was never imported)."""
    if "mlflow" not in sys.modules:
        return None
    import mlflow

    run = mlflow.active_run()
    return run.info.run_id if run is not None else None


def numeric_leaves(tree: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """Every finite int/float leaf of a nested mapping as ``{"a.b.c": value}`` with MLflow-valid names."""
    return {
        metric_name(name): float(value)
        for name, value in flat_values(tree, prefix).items()
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    }


def log_metrics(metrics: Mapping[str, float], *, step: int | None = None, run_id: str | None = None) -> None:
    """Log into ``run_id``, else into the active run; nothing when neither exists."""
    target = run_id or active_run_id()
    if target is None or not metrics:
        return
    with guarded("log_metrics"):
        import mlflow
        from mlflow.entities import Metric

        timestamp = int(time.time() * 1000)
        entries = [Metric(key, value, timestamp, step or 0) for key, value in metrics.items()]
        mlflow.tracking.MlflowClient().log_batch(target, metrics=entries, synchronous=True)


def log_epoch(row: Mapping[str, Any], *, epoch: int) -> None:
    """One training-history row as metrics at ``step = epoch``: loss terms, validation R@1, lr, seconds."""
    log_metrics(numeric_leaves({key: value for key, value in row.items() if key != "epoch"}), step=epoch)


def set_tags(tags: Mapping[str, Any], *, run_id: str | None = None) -> None:
    target = run_id or active_run_id()
    if target is None:
        return
    with guarded("set_tags"):
        import mlflow

        client = mlflow.tracking.MlflowClient()
        for key, value in tags.items():
            client.set_tag(target, key, str(value))


@contextlib.contextmanager
def nested_run(
    name: str, *, tags: Mapping[str, Any] | None = None, stopped_by: tuple[type[BaseException], ...] = ()
) -> Iterator[str | None]:
    """A child run of the active run while the block runs (its id, or None without tracking).

    Its status says how the block ended: FINISHED; KILLED when it raised one of ``stopped_by`` (a
    pruned trial is stopped, not broken); FAILED for any other exception, which always propagates.
    """
    if active_run_id() is None:
        yield None
        return
    import mlflow

    run_id = None
    with guarded("start nested run"):
        run_tags = {key: str(value) for key, value in (tags or {}).items()}
        run_id = mlflow.start_run(run_name=name, nested=True, tags=run_tags).info.run_id
    status = "FAILED"
    try:
        yield run_id
        status = "FINISHED"
    except stopped_by:
        status = "KILLED"
        raise
    finally:
        if run_id is not None:
            with guarded("end nested run"):
                mlflow.end_run(status)


def flat_values(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Every leaf of a nested mapping as ``{"a.b.c": value}`` (lists and None kept as values)."""
    found: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping) and value:
            found.update(flat_values(value, name))
        else:
            found[name] = value
    return found


def log_params(params: Mapping[str, Any], *, prefix: str = "", run_id: str | None = None) -> None:
    """Flattened parameters (``training.lr`` ...) into ``run_id`` or the active run; MLflow keeps values as text."""
    target = run_id or active_run_id()
    if target is None or not params:
        return
    with guarded("log_params"):
        import mlflow
        from mlflow.entities import Param

        entries = [
            Param(metric_name(key), str(value)[:PARAM_VALUE_LIMIT])
            for key, value in flat_values(params, prefix).items()
        ]
        mlflow.tracking.MlflowClient().log_batch(target, params=entries, synchronous=True)
