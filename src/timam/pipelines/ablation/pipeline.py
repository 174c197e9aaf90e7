"""`kedro run --pipelines ablation`: TIMAM's loss ablation as namespaced train -> embed -> rank variants.

Each variant lives in its own namespace (``ablation.<variant>``), so kedro-viz shows them side by
side; they share the ingested captions and tokens, and a last node tabulates their test metrics.
Variant overrides are in ``params:ablation.variants``; the names below must match its keys.
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
    "triplet_baseline",
)


def _variant_pipeline(variant: str) -> Pipeline:
    select = update_wrapper(partial(variant_parameters, variant=variant), variant_parameters)
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
        template, namespace=f"ablation.{variant}", inputs={"captions", "caption_tokens"}, parameters=shared_parameters
    )


def create_pipeline(**kwargs) -> Pipeline:
    variants = sum((_variant_pipeline(v) for v in VARIANTS), Pipeline([]))
    summary = Pipeline(
        [
            Node(summarise_ablation, ["params:ablation", *(f"ablation.{v}.retrieval_metrics" for v in VARIANTS)],
                 ["ablation_summary", "ablation_report"], name="summarise_ablation", namespace="ablation")
        ]
    )
    return create_prepare_pipeline() + variants + summary
