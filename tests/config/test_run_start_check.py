"""Every value is checked, with its type and bounds, when the run starts: the message names the key."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from kedro.config import OmegaConfigLoader

from timam.config import deep_merge
from timam.hooks import check_parameters
from timam.settings import CONFIG_LOADER_ARGS

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("conf") / "conf"
    shutil.copytree(REPO / "conf", root, ignore=shutil.ignore_patterns("local"))
    (root / "local").mkdir()
    return dict(OmegaConfigLoader(str(root), **CONFIG_LOADER_ARGS)["parameters"])


def _nested(dotted: str, value: Any) -> dict[str, Any]:
    head, _, rest = dotted.partition(".")
    return {head: _nested(rest, value) if rest else value}


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("training.epochs", "abc", "params training.epochs must be a valid integer, unable to parse string"),
        ("training.epochs", 1.5, "params training.epochs must be a valid integer, got a number with a fractional"),
        ("training.seed", "abc", "params training.seed must be a valid integer"),
        ("training.image_optimizer.lr", -1e-3, "params training.image_optimizer.lr must be greater than 0, got"),
        ("training.device", "tpu", "params training.device must be auto, cpu, cuda or cuda:<index>, got 'tpu'"),
        ("model.embedding_dim", 0, "params model.embedding_dim must be greater than or equal to 1, got 0"),
        ("training.loss_weights.cmpm", -1, "params training.loss_weights.cmpm must be greater than or equal to 0"),
        ("embedding.precision", "half", "params embedding.precision must be one of ['auto', 'float32', 'bfloat16']"),
        ("evaluation.ks", [0, 5], "params evaluation.ks[0] must be greater than 0, got 0"),
        ("index.shard", "3/2", 'params index.shard must read "i/N" with 0 <= i < N'),
    ],
)
def test_a_bad_value_is_refused_before_any_node_naming_its_key(base, key, value, message):
    with pytest.raises(ValueError, match="Parameters rejected before any node ran") as error:
        check_parameters(deep_merge(base, _nested(key, value)))
    assert message in str(error.value)


def test_the_base_parameters_pass(base):
    check_parameters(base)
