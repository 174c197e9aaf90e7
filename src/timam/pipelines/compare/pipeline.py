"""`kedro run --pipelines compare`: every saved retrieval_metrics version side by side.

Reads all versions from disk (``retrieval_metrics_history``), writes ``metrics_comparison``
(Markdown) and ``metrics_comparison_table`` (CSV), both versioned.
"""

from kedro.pipeline import Node, Pipeline

from timam.pipelines.compare.nodes import compare_metrics


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                compare_metrics,
                inputs=["retrieval_metrics_history", "params:compare"],
                outputs=["metrics_comparison", "metrics_comparison_table"],
                name="compare_metrics",
            )
        ],
        tags="compare",
    )
