"""`kedro run --pipelines search`: rank the newest image index, or the test split, for a query.

``--params "search.query=a woman in a red coat"`` ranks images; ``--params "search.query_image=path/to.jpg"``
ranks the index's images (without an index: the test captions); ``--params "search.queries_file=queries.txt"``
ranks images for every query of the file, in one table. ``search.top_k`` (10) sets the length.

``search_index`` is the newest ``image_index`` (``kedro run --pipelines index``), or None when none
has been built: then the test split that ``evaluate`` embedded (``image_embeddings``,
``text_embeddings``) is searched, as before there were indexes; ``search.use_index: false`` forces
that. The query is embedded with ``model_checkpoint`` (latest, or ``--load-versions
model_checkpoint:<v>``), which must be the checkpoint the index (or the embeddings) was made with.
Writes ``search_results`` (CSV) and ``search_grid`` (PNG), both versioned.
"""

from kedro.pipeline import Node, Pipeline

from timam.pipelines.search.nodes import search, search_request


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                search_request,  # fails fast on bad parameters or image files, before the checkpoint is loaded
                inputs="params:search",
                outputs="search_request",
                name="check_search_request",
            ),
            Node(
                search,
                inputs=[
                    "model_checkpoint",
                    "image_embeddings",
                    "text_embeddings",
                    "search_index",
                    "search_request",
                    "params:tokenization",
                    "params:embedding",
                ],
                outputs=["search_results", "search_grid"],
                name="search",
            ),
        ],
        tags="search",
    )
