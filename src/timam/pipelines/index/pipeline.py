"""`kedro run --pipelines index`: embed an image collection with a checkpoint and build its FAISS index.

Two pipelines share the nodes:

* ``index`` = list the collection -> embed the missing shards -> merge every shard -> build the
  index. Saves ``image_index`` (the FAISS index, its manifest and the rows table; versioned) and
  ``index_bad_images`` (each image left out, with its reason; versioned CSV).
* ``index_embed`` = list -> embed only, for several writers at once: run
  ``kedro run --pipelines index_embed --params "index.shard=i/N"`` for i = 0 .. N-1 (or under
  ``torchrun --no-python kedro run --pipelines index_embed``, whose RANK/WORLD_SIZE stand in for
  ``index.shard``); writer i embeds the shards j with ``j % N == i``. Then one
  ``kedro run --pipelines index`` merges: it finds every shard finished and embeds nothing.

The checkpoint is ``model_checkpoint`` (the latest, or ``--load-versions model_checkpoint:<v>``).
The collection is ``index.collection.path``: a folder (images at any depth, every format Pillow
reads) or a CSV/Parquet table of image paths with optional caption and identity columns
(``index.collection.columns``, as the generic caption table maps them); by default the demo images
that ``make run`` generates. Shards of ``index.shard_size`` images go to
``index.shard_dir/<checkpoint version>/``, each written atomically when finished and keyed by the
checkpoint version and its files' path, size and mtime: a rerun after a crash or ``kill -9``
resumes at the first missing shard, an unchanged collection reuses every shard, a changed file
re-embeds its own shard only. Bad images (missing, zero bytes, truncated, not an image) are skipped
and listed; a run never stops on one. The merge refuses to build from an incomplete folder and names
the missing shards, their writers and the commands that finish them. The index type (exact flat, or
IVF-PQ above ``index.flat_max`` images) is planned within ``index.memory_budget``.
"""

from kedro.pipeline import Node, Pipeline

from timam.pipelines.index.nodes import (
    build_image_index,
    embed_image_collection,
    list_image_collection,
    merge_image_shards,
)

EMBED_NODES = ("list_image_collection", "embed_image_collection")


def create_pipeline(**kwargs) -> Pipeline:
    """The ``index`` pipeline: list, embed, merge, build."""
    return Pipeline(
        [
            Node(
                list_image_collection,  # fails fast on a wrong folder or table, before the checkpoint loads
                inputs="params:index",
                outputs="image_collection",
                name="list_image_collection",
                tags="index_embed",
            ),
            Node(
                embed_image_collection,
                inputs=["model_checkpoint", "image_collection", "params:index", "params:embedding"],
                outputs="index_shards",
                name="embed_image_collection",
                tags="index_embed",
            ),
            Node(
                merge_image_shards,
                inputs=["image_collection", "index_shards"],
                outputs=["index_vectors", "index_rows", "index_bad_images"],
                name="merge_image_shards",
            ),
            Node(
                build_image_index,
                inputs=["index_vectors", "index_rows", "index_shards", "params:index", "params:tokenization"],
                outputs="image_index",
                name="build_image_index",
            ),
        ],
        tags="index",
    )


def create_embed_pipeline(**kwargs) -> Pipeline:
    """The ``index_embed`` pipeline: list and embed this writer's shards, no merge."""
    return create_pipeline().only_nodes(*EMBED_NODES)
