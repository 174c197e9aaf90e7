"""The ablation pipeline: namespaced variants whose overrides come from parameters_ablation.yml."""

from pathlib import Path

import pandas as pd
import yaml

from timam.pipelines.ablation.nodes import deep_merge, summarise_ablation, variant_parameters
from timam.pipelines.ablation.pipeline import VARIANTS, create_pipeline
from timam.training.config import training_config

CONF = Path(__file__).resolve().parents[2] / "conf" / "base"


def test_every_variant_has_parameters_and_a_namespaced_train_node():
    ablation = yaml.safe_load((CONF / "parameters_ablation.yml").read_text())["ablation"]
    assert list(ablation["variants"]) == list(VARIANTS)
    names = {node.name for node in create_pipeline().nodes}
    for variant in VARIANTS:
        assert f"ablation.{variant}.train_model" in names
        assert f"ablation.{variant}.rank_test_split" in names
    assert "ablation.summarise_ablation" in names


def test_variant_parameters_override_only_what_they_name():
    base = yaml.safe_load((CONF / "parameters_train.yml").read_text())
    ablation = yaml.safe_load((CONF / "parameters_ablation.yml").read_text())["ablation"]
    base["training"]["state_path"] = "data/06_models/demo/training_state.pt"
    model, training = variant_parameters(base["model"], base["training"], ablation, "triplet_baseline")
    assert model == base["model"]
    assert training["loss_weights"] == {"identification": 0.0, "cmpm": 0.0, "cmpc": 0.0, "adversarial": 0.0, "triplet": 1.0}
    assert training["epochs"] == base["training"]["epochs"]
    assert training["state_path"].endswith("training_state_triplet_baseline.pt")
    training_config(training)  # a valid configuration


def test_deep_merge_keeps_inputs_unchanged():
    base = {"a": {"b": 1, "c": 2}, "d": 3}
    assert deep_merge(base, {"a": {"b": 5}}) == {"a": {"b": 5, "c": 2}, "d": 3}
    assert base == {"a": {"b": 1, "c": 2}, "d": 3}


def test_summary_has_one_row_per_variant():
    def metrics(value):
        rule = {"R@1": value, "R@5": value + 1, "R@10": value + 2, "mAP": value}
        return {"checkpoint_version": f"v{value}", "results": {"text_to_image": {"expected": rule}, "image_to_text": {"expected": rule}}}

    table, report = summarise_ablation({"variants": {"x": {}, "y": {}}}, metrics(10.0), metrics(20.0))
    assert isinstance(table, pd.DataFrame)
    assert table["variant"].tolist() == ["x", "y"]
    assert table["t2i R@1"].tolist() == [10.0, 20.0]
    assert "| y | v20.0 |" in report
