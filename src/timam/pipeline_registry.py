"""Project pipelines: each user-facing pipeline is a package under ``timam.pipelines``."""

from kedro.pipeline import Pipeline

from timam.pipelines.evaluate.pipeline import create_pipeline as create_evaluate_pipeline
from timam.pipelines.prepare.pipeline import create_pipeline as create_prepare_pipeline
from timam.pipelines.train.pipeline import create_pipeline as create_train_pipeline


def register_pipelines() -> dict[str, Pipeline]:
    train = create_train_pipeline()
    evaluate = create_evaluate_pipeline()
    return {
        "prepare": create_prepare_pipeline(),
        "train": train,
        "evaluate": evaluate,
        "__default__": train + evaluate,
    }
