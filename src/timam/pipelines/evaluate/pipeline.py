"""`kedro run --pipelines evaluate`: embed the test split with a checkpoint -> rank -> report and figures.

Re-scores any saved checkpoint without retraining:
``kedro run --pipelines evaluate --load-versions model_checkpoint:<version>``.
"""

from kedro.pipeline import Node, Pipeline

from timam.pipelines.evaluate.nodes import (
    embed_test_split,
    plot_best_and_worst_queries,
    plot_recall_curve,
    plot_retrieval_examples,
    plot_training_curves,
    rank_test_split,
)


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                embed_test_split,
                inputs=["model_checkpoint", "captions", "caption_tokens", "params:evaluation", "params:embedding"],
                outputs=["image_embeddings", "text_embeddings"],
                name="embed_test_split",
            ),
            Node(
                rank_test_split,
                inputs=["image_embeddings", "text_embeddings", "params:evaluation"],
                outputs=["retrieval_metrics", "retrieval_report"],
                name="rank_test_split",
            ),
            Node(
                plot_recall_curve,
                inputs=["image_embeddings", "text_embeddings", "params:evaluation"],
                outputs="recall_curve",
                name="plot_recall_curve",
            ),
            Node(
                plot_retrieval_examples,
                inputs=["image_embeddings", "text_embeddings", "params:evaluation"],
                outputs=["example_grid", "example_grid_image_to_text"],
                name="plot_retrieval_examples",
            ),
            Node(
                plot_best_and_worst_queries,
                inputs=["image_embeddings", "text_embeddings", "params:evaluation"],
                outputs=["best_worst_text_to_image", "best_worst_image_to_text"],
                name="plot_best_and_worst_queries",
            ),
            Node(
                plot_training_curves,
                # every saved version of training_history: the one saved with the evaluated checkpoint is drawn
                inputs=["training_history_versions", "image_embeddings"],
                outputs="training_curves",
                name="plot_training_curves",
            ),
        ],
        tags="evaluate",
    )
