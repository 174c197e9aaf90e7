"""`kedro run --pipelines families`: one table of the survey's families, as namespaced runs.

Each row and seed lives in its own namespace (``families.<row>_seed<k>``), so kedro-viz shows them
side by side: embedding rows are the train pipeline's training node and the evaluate pipeline's
embed and rank nodes (as the ablation); interaction rows train the SCAN-style model and rank its
pair scores; ``two_stage_seed<k>`` re-ranks that seed's TIMAM top-k with its SCAN model. The
attribute family (issue 29): ``agnet_hash_<K>`` rows train AgNet-style heads with K-bit codes and
rank by Hamming distance; ``attributes_float`` ranks the same seed's ``agnet_hash_64`` model by
cosine in its attribute space, ``agnet_hash_64_rerank`` re-ranks its Hamming top-k there, and its
accuracy report (``attribute_accuracy``, ``attribute_examples``) scores its attribute predictions;
``acmm`` trains the ACMM-style aligned memory on the interaction rows' path. The attribute rows
read the ``attribute_vocabulary``, fitted by the node in namespace ``families.attributes``. A last
node tabulates mean and spread over the seeds. Rows are fixed here (and must be keys of
``params:families.rows``) because a pipeline's shape cannot depend on parameters.

``--namespaces`` runs only the nodes of the namespaces named: run ``--pipelines prepare`` first, and
name ``families.attributes`` with the first attribute rows (or once before them).
"""

from functools import partial, update_wrapper

from kedro.pipeline import Node, Pipeline, pipeline

from timam.pipelines.evaluate.pipeline import create_pipeline as create_evaluate_pipeline
from timam.pipelines.families.attribute_nodes import (
    attribute_accuracy_report,
    fit_attribute_vocabulary,
    rerank_codes_by_attributes,
    score_attribute_space,
    score_hashing_codes,
    train_hashing_model,
)
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
HASHING_ROWS = ("agnet_hash_16", "agnet_hash_32", "agnet_hash_64", "agnet_hash_128")
# The hashing row whose model the attribute-space rows score and whose attribute accuracy is reported.
ATTRIBUTE_MODEL = "agnet_hash_64"
ATTRIBUTE_SPACE_ROWS = ("attributes_float", f"{ATTRIBUTE_MODEL}_rerank")
MEMORY_ROWS = ("acmm",)
ROWS = (*EMBEDDING_ROWS, *INTERACTION_ROWS, "two_stage", *HASHING_ROWS, *ATTRIBUTE_SPACE_ROWS, *MEMORY_ROWS)
# Rows that re-score other rows' models: no parameters of their own, their family named here.
DERIVED_LABELS = {"two_stage": "two-stage", **dict.fromkeys(ATTRIBUTE_SPACE_ROWS, "attribute")}
SEEDS = (0, 1, 2)
VOCABULARY_NAMESPACE = "families.attributes"

_ROW_INPUTS = {"params:model": "model_parameters", "params:training": "training_parameters"}
_SHARED = {"captions", "caption_tokens"}
_ATTRIBUTE_SHARED = {*_SHARED, "attribute_vocabulary", "raw_annotations"}


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


def _hashing_template(with_accuracy: bool) -> Pipeline:
    nodes = [
        Node(
            train_hashing_model,
            [
                "captions",
                "caption_tokens",
                "attribute_vocabulary",
                "raw_annotations",
                "model_parameters",
                "training_parameters",
                "params:families",
            ],
            ["model_checkpoint", "training_history"],
            name="train_hashing_model",
        ),
        Node(
            score_hashing_codes,
            ["model_checkpoint", "captions", "caption_tokens", "params:evaluation", "params:embedding"],
            "pair_scores",
            name="score_hashing_codes",
        ),
        _rank_node(),
    ]
    if with_accuracy:
        nodes.append(
            Node(
                attribute_accuracy_report,
                [
                    "model_checkpoint",
                    "captions",
                    "caption_tokens",
                    "attribute_vocabulary",
                    "raw_annotations",
                    "params:families",
                    "params:evaluation",
                    "params:embedding",
                ],
                ["attribute_accuracy", "attribute_examples"],
                name="attribute_accuracy_report",
            )
        )
    return Pipeline(nodes)


def _row_pipeline(row: str, seed: int) -> Pipeline:
    if row in EMBEDDING_ROWS:
        template, shared = _embedding_template(), _SHARED
    elif row in HASHING_ROWS:
        template, shared = _hashing_template(with_accuracy=row == ATTRIBUTE_MODEL), _ATTRIBUTE_SHARED
    else:  # SCAN-style and ACMM-style rows train and score on one path
        template, shared = _interaction_template(), _SHARED
    return _namespaced(template + Pipeline([_select(row, seed)]), run_name(row, seed), shared)


def _attribute_space_pipeline(row: str, seed: int) -> Pipeline:
    """``attributes_float`` or the re-rank row: the seed's :data:`ATTRIBUTE_MODEL` scored in its attribute space."""
    parameters = ["params:families"] if row.endswith("_rerank") else []
    score = rerank_codes_by_attributes if row.endswith("_rerank") else score_attribute_space
    template = Pipeline(
        [
            Node(
                score,
                [
                    "model_checkpoint",
                    "captions",
                    "caption_tokens",
                    *parameters,
                    "params:evaluation",
                    "params:embedding",
                ],
                "pair_scores",
                name=score.__name__,
            ),
            _rank_node(),
        ]
    )
    inputs = {"model_checkpoint": f"families.{run_name(ATTRIBUTE_MODEL, seed)}.model_checkpoint"}
    return _namespaced(template, run_name(row, seed), {**inputs, **{name: name for name in _SHARED}})


def _vocabulary_node() -> Node:
    return Node(
        fit_attribute_vocabulary,
        ["captions", "raw_annotations", "params:families"],
        "attribute_vocabulary",
        name="fit_attribute_vocabulary",
        namespace=VOCABULARY_NAMESPACE,
        tags="families",
    )


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
    trained_rows = (*EMBEDDING_ROWS, *INTERACTION_ROWS, *HASHING_ROWS, *MEMORY_ROWS)
    trained = [_row_pipeline(row, seed) for row in trained_rows for seed in SEEDS]
    two_stage = [_two_stage_pipeline(seed) for seed in SEEDS]
    attribute_space = [_attribute_space_pipeline(row, seed) for row in ATTRIBUTE_SPACE_ROWS for seed in SEEDS]
    summarise = update_wrapper(
        partial(
            summarise_families,
            rows=ROWS,
            seeds_per_row=len(SEEDS),
            derived_labels=DERIVED_LABELS,
            accuracy_of=ATTRIBUTE_MODEL,
        ),
        summarise_families,
    )
    accuracy = [f"families.{run_name(ATTRIBUTE_MODEL, seed)}.attribute_accuracy" for seed in SEEDS]
    summary = Pipeline(
        [
            Node(
                summarise,
                ["params:families", *(f"families.{run_name(*run)}.retrieval_metrics" for run in runs), *accuracy],
                ["families_summary", "families_report"],
                name="summarise_families",
                namespace="families",
                tags="families",
            )
        ]
    )
    rows = sum([*trained, *two_stage, *attribute_space], Pipeline([]))
    return create_prepare_pipeline() + Pipeline([_vocabulary_node()]) + rows + summary
