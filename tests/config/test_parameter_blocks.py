"""build: typed parameter blocks (pydantic) from nested dicts, misspelt keys named with the nearest known
key, bad values named with their key and rule; and every typed block of the project rejects a misspelt
key, naming the valid ones."""

from __future__ import annotations

import pytest
from pydantic import Field

from timam.config import ParameterBlock, build, unknown_keys_error
from timam.evaluation.config import compare_config, evaluation_config
from timam.models.config import ModelConfig, check_model_parameters, model_config
from timam.search.config import search_config
from timam.sources.config import source_config
from timam.studies.ablation import ablation_config
from timam.tokenization import tokenization_config
from timam.tracking.config import tracking_config
from timam.training.config import training_config
from timam.tuning.study import tuning_settings


class Leaf(ParameterBlock):
    size: int = Field(default=3, ge=1)
    name: str = "leaf"


class Tree(ParameterBlock):
    epochs: int = 15
    leaf: Leaf = Leaf()
    maybe: Leaf | None = None
    many: dict[str, Leaf] = Field(default_factory=dict)
    extra: dict[str, int] = Field(default_factory=dict)


def test_nested_blocks_are_built_with_defaults_for_what_is_not_given():
    tree = build(Tree, {"leaf": {"size": 5}, "maybe": {"name": "m"}, "many": {"a": {}, "b": {"size": 1}}}, "tree")
    assert tree == Tree(leaf=Leaf(size=5), maybe=Leaf(name="m"), many={"a": Leaf(), "b": Leaf(size=1)})
    assert build(Tree, None, "tree") == Tree()
    assert build(Tree, {}, "tree") == Tree()


def test_null_means_the_default_of_a_block_and_none_of_an_optional_one():
    tree = build(Tree, {"leaf": None, "maybe": None, "many": None, "extra": None}, "tree")
    assert tree == Tree()


def test_an_instance_is_returned_as_it_is():
    tree = Tree(epochs=2)
    assert build(Tree, tree, "tree") is tree


def test_a_misspelt_key_names_its_path_the_nearest_key_and_every_known_key():
    with pytest.raises(ValueError) as error:
        build(Tree, {"epoch": 1}, "training")
    assert str(error.value) == (
        "Unknown parameter training.epoch; did you mean 'epochs'? Known: ['epochs', 'extra', 'leaf', 'many', 'maybe']"
    )
    with pytest.raises(
        ValueError, match=r"Unknown parameter tree\.leaf\.sise; did you mean 'size'\? Known: \['name', 'size'\]"
    ):
        build(Tree, {"leaf": {"sise": 1}}, "tree")
    with pytest.raises(ValueError, match=r"Unknown parameter tree\.many\.b\.nam; did you mean 'name'"):
        build(Tree, {"many": {"b": {"nam": "x"}}}, "tree")


def test_several_unknown_keys_and_keys_like_no_known_one():
    with pytest.raises(ValueError) as error:
        build(Tree, {"epoch": 1, "zzz": 2}, "t")
    assert str(error.value).startswith("Unknown parameters t.epoch (did you mean 'epochs'?), t.zzz. Known: ['epochs'")
    assert str(unknown_keys_error("", ["qqq"], ["model"])) == "Unknown parameter qqq. Known: ['model']"


def test_a_block_that_is_not_a_mapping_is_refused():
    with pytest.raises(ValueError, match=r"params tree.leaf must be a mapping with keys \['name', 'size'\], got 3"):
        build(Tree, {"leaf": 3}, "tree")
    with pytest.raises(ValueError, match="params tree.many must be a mapping of names to blocks"):
        build(Tree, {"many": [1]}, "tree")


@pytest.mark.parametrize(
    ("build", "values", "message"),
    [
        (
            training_config,
            {"epoch": 1},
            "Unknown parameter training.epoch; did you mean 'epochs'? Known: ['adversarial'",
        ),
        (training_config, {"adversarial": {"warmup": 1}}, "training.adversarial.warmup; did you mean 'warmup_epochs'"),
        (evaluation_config, {"tie_rule": ["expected"]}, "evaluation.tie_rule; did you mean 'tie_rules'? Known: ["),
        (evaluation_config, {"examples": {"querys": 2}}, "evaluation.examples.querys; did you mean 'queries'"),
        (
            search_config,
            {"querry": "a hat"},
            "search.querry; did you mean 'query'? "
            "Known: ['queries_file', 'query', 'query_image', 'top_k', 'use_index']",
        ),
        (compare_config, {"tie": "index"}, "compare.tie; did you mean 'tie_rule'? Known: ['tie_rule']"),
        (source_config, {"image_roots": "x"}, "source.image_roots; did you mean 'image_root'"),
        (tokenization_config, {"max_len": 8}, "tokenization.max_len; did you mean 'max_length'"),
        (check_model_parameters, {"embeding_dim": 8}, "model.embeding_dim; did you mean 'embedding_dim'"),
        (tuning_settings, {"n_trails": 3}, "tuning.n_trails; did you mean 'n_trials'"),
        (tracking_config, {"log_checkpoints": True}, "tracking.log_checkpoints; did you mean 'log_checkpoint'"),
        (ablation_config, {"variant": {}}, "ablation.variant; did you mean 'variants'? Known: ['variants']"),
    ],
)
def test_every_typed_block_rejects_a_misspelt_key_naming_the_valid_ones(build, values, message):
    with pytest.raises(ValueError) as error:
        build(values)
    assert message in str(error.value)


def test_ablation_variants_are_checked_against_the_base_blocks():
    ablation = {"variants": {"a": {"training": {"loss_weights": {"cmpn": 1.0}}}}}
    with pytest.raises(ValueError, match=r"ablation\.variants\.a\.training\.loss_weights\.cmpn; did you mean 'cmpm'"):
        ablation_config(ablation, model={}, training={})
    with pytest.raises(ValueError, match=r"ablation\.variants\.b\.model\.text_encoders; did you mean 'text_encoder'"):
        ablation_config({"variants": {"b": {"model": {"text_encoders": "fc_embed"}}}}, model={}, training={})
    config = ablation_config({"variants": {"a": {"training": {"epochs": 3}}}}, model={}, training={"epochs": 9})
    assert config.variant_parameters("a", {}, {"epochs": 9, "seed": 1}) == ({}, {"epochs": 3, "seed": 1})
    with pytest.raises(ValueError, match="params ablation.variants has no entry 'c'"):
        config.variant_parameters("c", {}, {})


def test_values_are_checked_where_the_block_is_built():
    with pytest.raises(
        ValueError,
        match=r"evaluation.protocol must be one of \['standard', 'coco_1k_folds', 'zero_shot_cl.*got 'coco_1k'",
    ):
        evaluation_config({"protocol": "coco_1k"})
    with pytest.raises(
        ValueError,
        match=r"evaluation.tie_rules\[1\] must be one of \['expected', 'optimistic', 'pessimistic', 'index'\]",
    ):
        evaluation_config({"tie_rules": ["expected", "random"]})
    with pytest.raises(ValueError, match=r"evaluation.tie_rules must have at least 1 item\(s\), got \[\]"):
        evaluation_config({"tie_rules": []})
    with pytest.raises(
        ValueError,
        match=r"compare.tie_rule must be one of \['expected', 'optimistic', 'pessimistic', 'index'\].*'best'",
    ):
        compare_config({"tie_rule": "best"})
    with pytest.raises(ValueError, match=r"source.format must be one of the supported formats \['cuhk_pedes',"):
        source_config({"format": "coco"})
    with pytest.raises(ValueError, match=r"params source.resized_image_cache.size is required"):
        source_config({"resized_image_cache": {"directory": "x"}})
    with pytest.raises(ValueError, match="params model.num_classes is counted from the train split"):
        check_model_parameters({"num_classes": 3})
    assert evaluation_config({"ks": [1, 5]}).ks == (1, 5)
    assert model_config({"image_size": [32, 16]}, num_classes=4) == ModelConfig(num_classes=4, image_size=(32, 16))


def test_model_config_round_trips_through_its_dict():
    config = ModelConfig(num_classes=3, image_size=(64, 32), text_encoder="fc_embed", vocab_size=100)
    assert ModelConfig.from_dict(config.to_dict()) == config
