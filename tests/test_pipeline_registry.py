"""Every registered pipeline builds, and every node carries the tag of its stage (kedro viz filters by it)."""

from __future__ import annotations

from timam.pipeline_registry import register_pipelines

STAGES = {
    "prepare", "train", "evaluate", "compare", "search", "ablation", "families", "tune", "index", "index_embed",
    "zero_shot",
}  # fmt: skip


def test_every_node_is_tagged_with_its_stage() -> None:
    pipelines = register_pipelines()
    assert set(pipelines) == STAGES | {"__default__"}
    untagged = sorted({node.name for pipe in pipelines.values() for node in pipe.nodes if not node.tags & STAGES})
    assert untagged == []


def test_the_default_run_is_train_then_evaluate() -> None:
    pipelines = register_pipelines()
    default = {node.name for node in pipelines["__default__"].nodes}
    assert default == {node.name for node in pipelines["train"].nodes + pipelines["evaluate"].nodes}
    assert {node.name for node in pipelines["__default__"].only_nodes_with_tags("evaluate").nodes} == {
        node.name for node in pipelines["evaluate"].nodes
    }
