"""Kedro project settings."""

from timam.hooks import NodeTimingHook, ParameterCheckHook, TrainingStateHook
from timam.io.cleanup_hook import StaleTemporaryCleanupHook
from timam.tracking_hooks import TimamMlflowHook

# ParameterCheckHook: every typed parameter block is built when the run starts, before any node.
# TimamMlflowHook replaces kedro-mlflow's auto-registered hook (disabled below): it is that hook,
# plus checkpoint-aware runs, test metrics and artifacts, and never breaking a run.
# TrainingStateHook deletes a run's resume state only once its checkpoint is saved;
# StaleTemporaryCleanupHook removes the temporaries of writers that died, when a run starts.
HOOKS = (
    ParameterCheckHook(),
    NodeTimingHook(),
    TimamMlflowHook(),
    TrainingStateHook(),
    StaleTemporaryCleanupHook(),
)
DISABLE_HOOKS_FOR_PLUGINS = ("kedro_mlflow",)

# Dataset environments (conf/<env>/) override single parameters, not whole blocks: with "soft"
# merging, `model: {image_size: [224, 224]}` in an env keeps every other model parameter of base,
# and `caches: {frozen_features: /scratch}` in an env's globals.yml keeps the other cache folders.
CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
    "merge_strategy": {"parameters": "soft", "globals": "soft"},
}
