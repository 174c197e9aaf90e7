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
from timam.pipelines.evaluate.nodes import embed_test_split, rank_test_split
from timam.pipelines.prepare.pipeline import create_pipeline as create_prepare_pipeline
from timam.pipelines.train.nodes import train_model

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


def _variant_pipeline(variant: str, seed: int) -> Pipeline:
    select = update_wrapper(partial(variant_parameters, variant=variant, seed=seed), variant_parameters)
    template = Pipeline(
        [
            Node(select, ["params:model", "params:training", "params:ablation"],
                 ["model_parameters", "training_parameters"], name="select_parameters"),
            Node(train_model, ["captions", "caption_tokens", "model_parameters", "training_parameters"],
                 ["model_checkpoint", "training_history"], name="train_model"),
            Node(embed_test_split, ["model_checkpoint", "captions", "caption_tokens", "params:evaluation"],
                 ["image_embeddings", "text_embeddings"], name="embed_test_split"),
            Node(rank_test_split, ["image_embeddings", "text_embeddings", "params:evaluation"],
                 ["retrieval_metrics", "retrieval_report"], name="rank_test_split"),
        ]
    )
    shared_parameters = {"params:model", "params:training", "params:ablation", "params:evaluation"}
    return pipeline(
        template, namespace=f"ablation.{run_name(variant, seed)}", inputs={"captions", "caption_tokens"}, parameters=shared_parameters
    )


def create_pipeline(**kwargs) -> Pipeline:
    runs = [(variant, seed) for variant in VARIANTS for seed in SEEDS]
    summarise = update_wrapper(
        partial(summarise_ablation, variants=VARIANTS, seeds_per_variant=len(SEEDS)), summarise_ablation
    )
    variants = sum((_variant_pipeline(variant, seed) for variant, seed in runs), Pipeline([]))
    summary = Pipeline(
        [
            Node(summarise, [f"ablation.{run_name(*run)}.retrieval_metrics" for run in runs],
                 ["ablation_summary", "ablation_report"], name="summarise_ablation", namespace="ablation")
        ]
    )
    return create_prepare_pipeline() + variants + summary
