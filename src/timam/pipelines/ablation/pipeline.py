"""`kedro run --pipelines ablation`: TIMAM's loss ablation as namespaced train -> embed -> rank variants.

Each variant and seed lives in its own namespace (``ablation.<variant>_seed<k>``), so kedro-viz shows
them side by side; they share the ingested captions and tokens, and a last node tabulates the mean
and spread of their test metrics over the seeds. Variant overrides are in
``params:ablation.variants``; the names below must match its keys. Seeds are fixed here because a
pipeline's shape cannot depend on parameters.
"""

from functools import partial, update_wrapper

from kedro.pipeline import Node, Pipeline, pipeline

from timam.pipelines.ablation.nodes import summarise_ablation, variant_parameters
from timam.pipelines.evaluate.pipeline import create_pipeline as create_evaluate_pipeline
from timam.pipelines.prepare.pipeline import create_pipeline as create_prepare_pipeline
from timam.pipelines.train.pipeline import create_pipeline as create_train_pipeline

VARIANTS = (
    "identification",
    "cmpm",
    "identification_cmpm",
    "identification_cmpm_adversarial",
    "identification_cmpm_adversarial_fc_embed",
    "triplet_baseline",
)
SEEDS = (0, 1, 2)


def run_name(variant: str, seed: int) -> str:
    return f"{variant}_seed{seed}"


# The train node's parameter blocks that a variant replaces with its own (select_parameters' outputs).
_VARIANT_INPUTS = {"params:model": "model_parameters", "params:training": "training_parameters"}


def _with_inputs(node: Node, renamed: dict[str, str]) -> Node:
    """``node`` reading ``renamed[name]`` instead of each input ``name`` it lists."""
    return Node(
        node.func, [renamed.get(name, name) for name in node.inputs], node.outputs, name=node.name, tags=node.tags
    )


def _run_template() -> Pipeline:
    """One run: the train pipeline's training node and the evaluate pipeline's embed and rank nodes,
    taken from those pipelines so that a change to them reaches the ablation too."""
    train = create_train_pipeline().only_nodes("train_model")
    evaluate = create_evaluate_pipeline().only_nodes("embed_test_split", "rank_test_split")
    return Pipeline([_with_inputs(node, _VARIANT_INPUTS) for node in train.nodes]) + evaluate


def _variant_pipeline(variant: str, seed: int) -> Pipeline:
    select = update_wrapper(partial(variant_parameters, variant=variant, seed=seed), variant_parameters)
    template = _run_template() + Pipeline(
        [
            Node(
                select,
                ["params:model", "params:training", "params:ablation"],
                list(_VARIANT_INPUTS.values()),
                name="select_parameters",
            )
        ]
    )
    shared_parameters = {name for node in template.nodes for name in node.inputs if name.startswith("params:")}
    return pipeline(
        template,
        namespace=f"ablation.{run_name(variant, seed)}",
        inputs={"captions", "caption_tokens"},
        parameters=shared_parameters,
        tags="ablation",
    )


def create_pipeline(**kwargs) -> Pipeline:
    runs = [(variant, seed) for variant in VARIANTS for seed in SEEDS]
    summarise = update_wrapper(
        partial(summarise_ablation, variants=VARIANTS, seeds_per_variant=len(SEEDS)), summarise_ablation
    )
    variants = sum((_variant_pipeline(variant, seed) for variant, seed in runs), Pipeline([]))
    summary = Pipeline(
        [
            Node(
                summarise,
                [f"ablation.{run_name(*run)}.retrieval_metrics" for run in runs],
                ["ablation_summary", "ablation_report"],
                name="summarise_ablation",
                namespace="ablation",
                tags="ablation",
            )
        ]
    )
    return create_prepare_pipeline() + variants + summary
