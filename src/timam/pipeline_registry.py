"""Project pipelines: each user-facing pipeline is a package under ``timam.pipelines``."""

from kedro.pipeline import Pipeline

from timam.pipelines.ablation.pipeline import create_pipeline as create_ablation_pipeline
from timam.pipelines.compare.pipeline import create_pipeline as create_compare_pipeline
from timam.pipelines.evaluate.pipeline import create_pipeline as create_evaluate_pipeline
from timam.pipelines.families.pipeline import create_pipeline as create_families_pipeline
from timam.pipelines.index.pipeline import create_embed_pipeline as create_index_embed_pipeline
from timam.pipelines.index.pipeline import create_pipeline as create_index_pipeline
from timam.pipelines.prepare.pipeline import create_pipeline as create_prepare_pipeline
from timam.pipelines.search.pipeline import create_pipeline as create_search_pipeline
from timam.pipelines.train.pipeline import create_pipeline as create_train_pipeline
from timam.pipelines.tune.pipeline import create_pipeline as create_tune_pipeline
from timam.pipelines.zero_shot.pipeline import create_pipeline as create_zero_shot_pipeline


def register_pipelines() -> dict[str, Pipeline]:
    train = create_train_pipeline()
    evaluate = create_evaluate_pipeline()
    return {
        "prepare": create_prepare_pipeline(),
        "train": train,
        "evaluate": evaluate,
        "compare": create_compare_pipeline(),
        "search": create_search_pipeline(),
        "ablation": create_ablation_pipeline(),
        "families": create_families_pipeline(),
        "tune": create_tune_pipeline(),
        "index": create_index_pipeline(),
        "index_embed": create_index_embed_pipeline(),
        "zero_shot": create_zero_shot_pipeline(),
        "__default__": train + evaluate,
    }
