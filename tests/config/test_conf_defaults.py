"""One home per default: conf/base lists every knob of every parameter block, and each value it gives
equals the model's default, so the YAML and the code cannot drift apart.

A field marked ``set_by_conf`` (a path built from ``globals``, the published numbers of a dataset,
a study's rows) has a neutral model default and a value that conf supplies: conf/base must list it,
and its value is not compared.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Annotated, Any

import pytest
from kedro.config import OmegaConfigLoader
from pydantic import BaseModel, TypeAdapter

from timam.config import is_set_by_conf, is_set_from_data
from timam.hooks import parameter_blocks
from timam.settings import CONFIG_LOADER_ARGS

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def base_parameters(tmp_path_factory) -> dict[str, Any]:
    """conf/base's parameters as Kedro resolves them, without the user's conf/local."""
    root = tmp_path_factory.mktemp("conf") / "conf"
    shutil.copytree(REPO / "conf", root, ignore=shutil.ignore_patterns("local"))
    (root / "local").mkdir()
    return dict(OmegaConfigLoader(str(root), **CONFIG_LOADER_ARGS)["parameters"])


def _value(model: type[BaseModel], name: str, value: Any) -> Any:
    """``value`` as field ``name`` of ``model`` validates it (YAML lists become tuples...)."""
    field = model.model_fields[name]
    annotation = Annotated[field.annotation, *field.metadata] if field.metadata else field.annotation
    return TypeAdapter(annotation).validate_python(value)


def drift(default: BaseModel, listed: dict[str, Any], path: str) -> list[str]:
    """Every field of ``default``'s block that ``listed`` (its YAML) omits, or gives another value."""
    model = type(default)
    problems = []
    for name, field in model.model_fields.items():
        dotted = f"{path}.{name}"
        if is_set_from_data(field):
            continue  # counted from the data (model.num_classes), never a parameter
        if name not in listed:
            problems.append(f"{dotted} is not listed in conf/base")
            continue
        expected = getattr(default, name)
        if isinstance(expected, BaseModel) and isinstance(listed[name], dict):
            problems += drift(expected, listed[name], dotted)
        elif not is_set_by_conf(field) and _value(model, name, listed[name]) != expected:
            problems.append(f"{dotted}: conf/base says {listed[name]!r}, the model's default is {expected!r}")
    return problems


@pytest.mark.parametrize("block", sorted(parameter_blocks()))
def test_conf_base_lists_every_knob_with_the_models_default(base_parameters, block):
    model = parameter_blocks()[block]
    assert block in base_parameters, f"conf/base has no `{block}:` block; list {block}'s knobs with their comments"
    problems = drift(model.model_construct(), base_parameters[block], block)
    assert not problems, "conf/base and the models disagree (one home per default):\n" + "\n".join(problems)


def test_a_drifted_default_is_found():
    """The check itself: a YAML value other than the default, and a missing knob, are both reported."""
    from timam.training.config import TrainingConfig

    listed = TrainingConfig().model_dump()
    listed["discriminator_optimizer"] = {**listed["discriminator_optimizer"], "name": "adam"}
    del listed["grad_clip"]
    assert drift(TrainingConfig(), listed, "training") == [
        "training.grad_clip is not listed in conf/base",
        "training.discriminator_optimizer.name: conf/base says 'adam', the model's default is 'sgd'",
    ]
