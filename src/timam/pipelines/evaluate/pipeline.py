"""`kedro run --pipelines evaluate`: embed the test split with a checkpoint -> rank -> report.

Re-scores any saved checkpoint without retraining:
``kedro run --pipelines evaluate --load-versions model_checkpoint:<version>``.
"""

from kedro.pipeline import Node, Pipeline

from timam.pipelines.evaluate.nodes import embed_test_split, rank_test_split


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                embed_test_split,
                inputs=["model_checkpoint", "captions", "caption_tokens", "params:evaluation"],
                outputs=["image_embeddings", "text_embeddings"],
                name="embed_test_split",
            ),
            Node(
                rank_test_split,
                inputs=["image_embeddings", "text_embeddings", "params:evaluation"],
                outputs=["retrieval_metrics", "retrieval_report"],
                name="rank_test_split",
            ),
        ]
    )
