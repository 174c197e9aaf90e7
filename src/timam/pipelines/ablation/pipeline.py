"""`kedro run --pipelines ablation`: TIMAM's loss ablation as namespaced train -> embed -> rank variants.

Each variant lives in its own namespace (``ablation.<variant>``), so kedro-viz shows them side by
side; they share the ingested captions and tokens, and a last node tabulates their test metrics.
Variant overrides are in ``params:ablation.variants``; the names below must match its keys.
"""

from functools import partial, update_wrapper

from kedro.pipeline import Node, Pipeline

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
    space = f"ablation.{variant}"
    return Pipeline(
        [
            Node(select, ["params:model", "params:training", "params:ablation"],
                 [f"{space}.model_parameters", f"{space}.training_parameters"], name=f"{space}.select_parameters"),
            Node(train_model, ["captions", "caption_tokens", f"{space}.model_parameters", f"{space}.training_parameters"],
                 [f"{space}.model_checkpoint", f"{space}.training_history"], name=f"{space}.train_model"),
            Node(embed_test_split, [f"{space}.model_checkpoint", "captions", "caption_tokens", "params:evaluation"],
                 [f"{space}.image_embeddings", f"{space}.text_embeddings"], name=f"{space}.embed_test_split"),
            Node(rank_test_split, [f"{space}.image_embeddings", f"{space}.text_embeddings", "params:evaluation"],
                 [f"{space}.retrieval_metrics", f"{space}.retrieval_report"], name=f"{space}.rank_test_split"),
        ],
    )


def create_pipeline(**kwargs) -> Pipeline:
    variants = sum((_variant_pipeline(v) for v in VARIANTS), Pipeline([]))
    summary = Pipeline(
        [
            Node(summarise_ablation, ["params:ablation", *(f"ablation.{v}.retrieval_metrics" for v in VARIANTS)],
                 ["ablation_summary", "ablation_report"], name="summarise_ablation")
        ]
    )
    return create_prepare_pipeline() + variants + summary
