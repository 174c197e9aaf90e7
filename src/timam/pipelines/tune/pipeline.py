"""`kedro run --pipelines tune`: ingest -> tokenize -> tune (one worker of an Optuna study).

Writes ``best_training_parameters`` (YAML shaped ``training: {...}``), ``tuning_trials`` (CSV) and
two figures, ``tuning_optimisation_history`` and ``tuning_parameter_importance`` (PNG).
"""

from kedro.pipeline import Node, Pipeline

from timam.pipelines.prepare.pipeline import create_pipeline as create_prepare_pipeline
from timam.pipelines.tune.nodes import tune_hyperparameters


def create_pipeline(**kwargs) -> Pipeline:
    return create_prepare_pipeline() + Pipeline(
        [
            Node(
                tune_hyperparameters,
                inputs=["captions", "caption_tokens", "params:model", "params:training", "params:tuning"],
                outputs=[
                    "best_training_parameters",
                    "tuning_trials",
                    "tuning_optimisation_history",
                    "tuning_parameter_importance",
                ],
                name="tune_hyperparameters",
            )
        ],
        tags="tune",
    )
