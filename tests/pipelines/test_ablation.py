"""The ablation pipeline: namespaced variants whose overrides come from parameters_ablation.yml."""

from pathlib import Path

import pandas as pd
import pytest
import yaml

from timam.config import deep_merge
from timam.pipelines.ablation.nodes import summarise_ablation, variant_parameters
from timam.pipelines.ablation.pipeline import SEEDS, VARIANTS, create_pipeline
from timam.training.config import training_config

CONF = Path(__file__).resolve().parents[2] / "conf" / "base"


def test_every_variant_has_parameters_and_a_namespaced_train_node():
    ablation = yaml.safe_load((CONF / "parameters_ablation.yml").read_text())["ablation"]
    assert list(ablation["variants"]) == list(VARIANTS)
    names = {node.name for node in create_pipeline().nodes}
    for variant in VARIANTS:
        for seed in SEEDS:
            assert f"ablation.{variant}_seed{seed}.train_model" in names
            assert f"ablation.{variant}_seed{seed}.rank_test_split" in names
    assert "ablation.summarise_ablation" in names


def test_each_run_is_the_train_and_evaluate_pipelines_own_nodes_on_its_variant_parameters():
    """Built from those pipelines, not re-declared: the same functions and datasets, namespaced."""
    from timam.pipelines.evaluate.pipeline import create_pipeline as create_evaluate_pipeline
    from timam.pipelines.train.pipeline import create_pipeline as create_train_pipeline

    originals = {node.name: node for node in create_train_pipeline().nodes + create_evaluate_pipeline().nodes}
    run = "ablation.cmpm_seed1"
    nodes = {node.name.removeprefix(f"{run}."): node for node in create_pipeline().nodes if node.name.startswith(run)}
    assert set(nodes) == {"select_parameters", "train_model", "embed_test_split", "rank_test_split"}
    renamed = {"params:model": f"{run}.model_parameters", "params:training": f"{run}.training_parameters"}
    shared = {"captions", "caption_tokens", "params:evaluation", "params:embedding"}
    for name in ("train_model", "embed_test_split", "rank_test_split"):
        original, variant = originals[name], nodes[name]
        assert variant.func is original.func
        expected_inputs = [renamed.get(i, i if i in shared else f"{run}.{i}") for i in original.inputs]
        assert variant.inputs == expected_inputs
        assert variant.outputs == [f"{run}.{o}" for o in original.outputs]
    assert nodes["select_parameters"].outputs == list(renamed.values())


def test_variant_parameters_override_only_what_they_name():
    base = yaml.safe_load((CONF / "parameters_train.yml").read_text())
    ablation = yaml.safe_load((CONF / "parameters_ablation.yml").read_text())["ablation"]
    base["training"]["state_path"] = "data/06_models/demo/training_state.pt"
    model, training = variant_parameters(base["model"], base["training"], ablation, "triplet_baseline", 2)
    assert model == base["model"]
    assert training["loss_weights"] == {
        "identification": 0.0,
        "cmpm": 0.0,
        "cmpc": 0.0,
        "adversarial": 0.0,
        "triplet": 1.0,
        "infonce": 0.0,
        "sdm": 0.0,
        "siglip": 0.0,
        "attribute_prediction": 0.0,
        "similarity_preserving": 0.0,
        "quantization": 0.0,
    }
    assert training["epochs"] == base["training"]["epochs"]
    assert training["seed"] == 2
    assert training["state_path"].endswith("training_state_triplet_baseline_seed2.pt")
    training_config(training)  # a valid configuration


def test_deep_merge_keeps_inputs_unchanged():
    base = {"a": {"b": 1, "c": 2}, "d": 3}
    assert deep_merge(base, {"a": {"b": 5}}) == {"a": {"b": 5, "c": 2}, "d": 3}
    assert base == {"a": {"b": 1, "c": 2}, "d": 3}


def test_summary_gives_mean_and_spread_over_seeds():
    def metrics(value):
        rule = {"R@1": value, "R@5": value + 1, "R@10": value + 2, "mAP": value}
        return {
            "checkpoint_version": "v",
            "checkpoint": {"val_t2i_R@1": value / 2},
            "results": {"text_to_image": {"expected": rule}, "image_to_text": {"expected": rule}},
        }

    table, report = summarise_ablation(
        metrics(10.0), metrics(20.0), metrics(30.0), metrics(30.0), variants=("x", "y"), seeds_per_variant=2
    )
    assert isinstance(table, pd.DataFrame)
    assert table["variant"].tolist() == ["x", "y"]
    assert table["seeds"].tolist() == [2, 2]
    assert table["t2i R@1 mean"].tolist() == [15.0, 30.0]
    assert table["t2i R@1 std"].tolist() == [5.0, 0.0]
    assert "| x | 15.00 ± 5.00 |" in report
    assert table["mR mean"].tolist() == [16.0, 31.0]  # mean of R@1, R@1+1, R@1+2 both ways
    assert table["val t2i R@1 mean"].tolist() == [7.5, 15.0]
    with pytest.raises(ValueError, match="3 ablation runs for 2 variants x 2 seeds"):
        summarise_ablation(metrics(1.0), metrics(2.0), metrics(3.0), variants=("x", "y"), seeds_per_variant=2)


def test_fc_embed_variant_switches_the_text_encoder():
    base = yaml.safe_load((CONF / "parameters_train.yml").read_text())
    ablation = yaml.safe_load((CONF / "parameters_ablation.yml").read_text())["ablation"]
    model, _ = variant_parameters(
        base["model"], base["training"], ablation, "identification_cmpm_adversarial_fc_embed", 0
    )
    assert model["text_encoder"] == "fc_embed"
