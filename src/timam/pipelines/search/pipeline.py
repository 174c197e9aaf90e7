"""`kedro run --pipelines search`: rank the test gallery for a text query, or the captions for an image.

``--params "search.query=a woman in a red coat"`` ranks the gallery images (``image_embeddings``);
``--params "search.query_image=path/to.jpg"`` ranks the captions (``text_embeddings``);
``search.top_k`` (10) sets the length. The query is embedded with ``model_checkpoint`` (latest, or
``--load-versions model_checkpoint:<v>``), which must be the checkpoint the embeddings were made with. Writes
``search_results`` (CSV) and ``search_grid`` (PNG), both versioned.
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
                    "search_request",
                    "params:tokenization",
                    "params:evaluation",
                ],
                outputs=["search_results", "search_grid"],
                name="search",
            ),
        ],
        tags="search",
    )
