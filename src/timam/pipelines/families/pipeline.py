"""`kedro run --pipelines families`: one table of the survey's families, as namespaced runs.

Each row and seed lives in its own namespace (``families.<row>_seed<k>``), so kedro-viz shows them
side by side: embedding rows are the train pipeline's training node and the evaluate pipeline's
embed and rank nodes (as the ablation); interaction rows train the SCAN-style model and rank its
pair scores; ``two_stage_seed<k>`` re-ranks that seed's TIMAM top-k with its SCAN model. A last
node tabulates mean and spread over the seeds. Rows are fixed here (and must be keys of
``params:families.rows``) because a pipeline's shape cannot depend on parameters.
"""

from functools import partial, update_wrapper

from kedro.pipeline import Node, Pipeline, pipeline

from timam.pipelines.evaluate.pipeline import create_pipeline as create_evaluate_pipeline
from timam.pipelines.families.nodes import (
    rank_pair_scores,
    row_parameters,
    score_test_pairs,
    summarise_families,
    train_interaction_model,
    two_stage_test_pairs,
)
from timam.pipelines.prepare.pipeline import create_pipeline as create_prepare_pipeline
from timam.pipelines.train.pipeline import create_pipeline as create_train_pipeline

EMBEDDING_ROWS = ("cmpm", "vsepp", "infonce", "sdm", "timam_identification_cmpm", "timam")
INTERACTION_ROWS = ("scan_t2i", "scan_i2t")
# The two-stage row: the first row's top-k re-scored by the second's.
TWO_STAGE = ("timam", "scan_t2i")
ROWS = (*EMBEDDING_ROWS, *INTERACTION_ROWS, "two_stage")
SEEDS = (0, 1, 2)

_ROW_INPUTS = {"params:model": "model_parameters", "params:training": "training_parameters"}
_SHARED = {"captions", "caption_tokens"}


def run_name(row: str, seed: int) -> str:
    return f"{row}_seed{seed}"


def _select(row: str, seed: int) -> Node:
    select = update_wrapper(partial(row_parameters, row=row, seed=seed), row_parameters)
    inputs = ["params:model", "params:training", "params:families"]
    return Node(select, inputs, list(_ROW_INPUTS.values()), name="row_parameters")


def _renamed(node: Node) -> Node:
    return Node(node.func, [_ROW_INPUTS.get(i, i) for i in node.inputs], node.outputs, name=node.name, tags=node.tags)


def _embedding_template() -> Pipeline:
    train = create_train_pipeline().only_nodes("train_model")
    evaluate = create_evaluate_pipeline().only_nodes("embed_test_split", "rank_test_split")
    return Pipeline([_renamed(node) for node in train.nodes]) + evaluate


def _rank_node() -> Node:
    return Node(
        rank_pair_scores, ["pair_scores", "params:evaluation"], ["retrieval_metrics", "retrieval_report"],
        name="rank_pair_scores",
    )  # fmt: skip


def _interaction_template() -> Pipeline:
    return Pipeline(
        [
            Node(
                train_interaction_model,
                ["captions", "caption_tokens", "model_parameters", "training_parameters"],
                ["model_checkpoint", "training_history"],
                name="train_interaction_model",
            ),
            Node(
                score_test_pairs,
                ["model_checkpoint", "captions", "caption_tokens", "params:evaluation", "params:embedding"],
                "pair_scores",
                name="score_test_pairs",
            ),
            _rank_node(),
        ]
    )


def _namespaced(template: Pipeline, namespace: str, inputs: set[str] | dict[str, str]) -> Pipeline:
    parameters = {name for node in template.nodes for name in node.inputs if name.startswith("params:")}
    return pipeline(template, namespace=f"families.{namespace}", inputs=inputs, parameters=parameters, tags="families")


def _row_pipeline(row: str, seed: int) -> Pipeline:
    template = _embedding_template() if row in EMBEDDING_ROWS else _interaction_template()
    return _namespaced(template + Pipeline([_select(row, seed)]), run_name(row, seed), _SHARED)


def _two_stage_pipeline(seed: int) -> Pipeline:
    first, second = (f"families.{run_name(row, seed)}" for row in TWO_STAGE)
    template = Pipeline(
        [
            Node(
                two_stage_test_pairs,
                [
                    "first_image_embeddings",
                    "first_text_embeddings",
                    "second_checkpoint",
                    "captions",
                    "caption_tokens",
                    "params:families",
                    "params:evaluation",
                    "params:embedding",
                ],
                "pair_scores",
                name="two_stage_test_pairs",
            ),
            _rank_node(),
        ]
    )
    inputs = {
        "first_image_embeddings": f"{first}.image_embeddings",
        "first_text_embeddings": f"{first}.text_embeddings",
        "second_checkpoint": f"{second}.model_checkpoint",
        **{name: name for name in _SHARED},
    }
    return _namespaced(template, run_name("two_stage", seed), inputs)


def create_pipeline(**kwargs) -> Pipeline:
    runs = [(row, seed) for row in ROWS for seed in SEEDS]
    trained = [_row_pipeline(row, seed) for row in ROWS[:-1] for seed in SEEDS]
    two_stage = [_two_stage_pipeline(seed) for seed in SEEDS]
    summarise = update_wrapper(partial(summarise_families, rows=ROWS, seeds_per_row=len(SEEDS)), summarise_families)
    summary = Pipeline(
        [
            Node(
                summarise,
                ["params:families", *(f"families.{run_name(*run)}.retrieval_metrics" for run in runs)],
                ["families_summary", "families_report"],
                name="summarise_families",
                namespace="families",
                tags="families",
            )
        ]
    )
    return create_prepare_pipeline() + sum([*trained, *two_stage], Pipeline([])) + summary
