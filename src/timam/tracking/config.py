"""``params:tracking``: what MLflow records beyond kedro-mlflow's ``mlflow.yml`` (which forbids extra keys)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from timam.config import ParameterBlock, build


class TrackingConfig(ParameterBlock):
    """What a tracked run records besides its parameters, epoch curves, test metrics, reports and figures."""

    log_checkpoint: bool = False
    """true: upload each trained checkpoint's weights as a run artifact (off: they live in the catalog,
    data/06_models/, and the run's checkpoint_version tag names the file)"""


def tracking_config(values: Mapping[str, Any] | TrackingConfig | None) -> TrackingConfig:
    """Build from ``params:tracking``."""
    return build(TrackingConfig, values, "tracking")
