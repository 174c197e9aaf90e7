"""``params:tracking``: what MLflow records beyond kedro-mlflow's ``mlflow.yml`` (which forbids extra keys)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from timam.config_tree import build_config


@dataclass(frozen=True)
class TrackingConfig:
    # Upload each trained checkpoint's weights as a run artifact. Off: they live in the catalog
    # (data/06_models/), and the run's checkpoint_version tag names the file.
    log_checkpoint: bool = False


def tracking_config(values: Mapping[str, Any] | TrackingConfig | None) -> TrackingConfig:
    """Build from ``params:tracking``."""
    return build_config(TrackingConfig, values, "tracking")
