"""Ingest -> tokenize: the stages every training or tuning pipeline starts with."""

from kedro.pipeline import Node, Pipeline

from timam.pipelines.prepare.nodes import build_caption_table, tokenize_captions


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                build_caption_table,
                inputs=["raw_annotations", "params:source"],
                outputs=["captions", "quarantined_captions"],
                name="ingest_captions",
            ),
            Node(
                tokenize_captions,
                inputs=["captions", "params:tokenization"],
                outputs="caption_tokens",
                name="tokenize_captions",
            ),
        ],
        tags="prepare",
    )
