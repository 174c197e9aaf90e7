"""`kedro run --pipelines train`: ingest -> tokenize -> train."""

from kedro.pipeline import Node, Pipeline

from timam.pipelines.prepare.pipeline import create_pipeline as create_prepare_pipeline
from timam.pipelines.train.nodes import train_model


def create_pipeline(**kwargs) -> Pipeline:
    return create_prepare_pipeline() + Pipeline(
        [
            Node(
                train_model,
                inputs=["captions", "caption_tokens", "params:model", "params:training"],
                outputs=["model_checkpoint", "training_history"],
                name="train_model",
            )
        ],
        tags="train",
    )
