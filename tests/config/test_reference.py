"""The configuration reference names every key of every parameter block with its default.

The expected keys and defaults are found here independently of the generator: the keys by walking
each model's fields, the defaults from ``model_construct().model_dump(mode="json")`` (which holds a
nested block's defaults as its parent gives them), the markers from each field's JSON-schema extra.
"""

from __future__ import annotations

import json
import re
import types
from collections.abc import Iterator
from typing import Any, Literal, Union, get_args, get_origin

import pytest
from pydantic import BaseModel, Field

from timam.config import ParameterBlock, set_by_conf, set_from_data
from timam.config.reference import FROM_CONF, FROM_DATA, REQUIRED, reference_markdown
from timam.hooks import parameter_blocks


def table_rows(markdown: str) -> dict[str, list[str]]:
    """Each table row of the reference by its key: [key, type, default, description] (escaped pipes kept)."""
    rows = {}
    for line in markdown.splitlines():
        if line.startswith("| `"):
            cells = [cell.strip() for cell in re.split(r"(?<!\\)\|", line)[1:-1]]
            assert len(cells) == 4, f"a row with {len(cells)} cells instead of 4 (an unescaped pipe?): {line}"
            rows[cells[0].strip("`")] = cells
    return rows


def _model_in(annotation: Any) -> tuple[type[BaseModel] | None, bool]:
    """The model a field holds directly (or as ``X | None``), or as the values of a dict."""
    if get_origin(annotation) is dict:
        value = get_args(annotation)[1]
        return (value, True) if isinstance(value, type) and issubclass(value, BaseModel) else (None, False)
    candidates = get_args(annotation) if get_origin(annotation) in (Union, types.UnionType) else (annotation,)
    models = [arg for arg in candidates if isinstance(arg, type) and issubclass(arg, BaseModel)]
    return (models[0], False) if models else (None, False)


def _mark(field: Any, name: str) -> bool:
    extra = field.json_schema_extra
    return isinstance(extra, dict) and extra.get(name) is True


def expected_rows(model: type[BaseModel], prefix: str, defaults: dict | None, top: bool) -> Iterator[tuple[str, str]]:
    """(dotted key, the default cell it must show); a nested block's own row only has to be named ("")."""
    for name, field in model.model_fields.items():
        key = f"{prefix}.{name}"
        nested, entries = _model_in(field.annotation)
        if _mark(field, "set_by_conf"):
            yield key, FROM_CONF
        elif field.is_required():
            yield key, FROM_DATA if top else REQUIRED
        elif _mark(field, "set_from_data"):
            yield key, FROM_DATA
        elif nested is not None and not entries and isinstance(_default(field, name, defaults), dict):
            yield key, ""
        else:
            yield key, "`" + json.dumps(_default(field, name, defaults)) + "`"
        if nested is None:
            continue
        if entries:
            yield from expected_rows(nested, f"{key}.<name>", None, False)
        else:
            value = _default(field, name, defaults)
            yield from expected_rows(nested, key, value if isinstance(value, dict) else None, False)


def _default(field: Any, name: str, defaults: dict | None) -> Any:
    if defaults is not None:
        return defaults[name]
    value = field.get_default(call_default_factory=True)
    return value.model_dump(mode="json") if isinstance(value, BaseModel) else json.loads(json.dumps(value))


@pytest.fixture(scope="module")
def reference() -> dict[str, list[str]]:
    return table_rows(reference_markdown(parameter_blocks()))


@pytest.mark.parametrize("block", list(parameter_blocks()))
def test_every_key_of_every_block_is_listed_with_its_default(reference, block):
    model = parameter_blocks()[block]
    defaults = model.model_construct().model_dump(mode="json")
    expected = list(expected_rows(model, block, defaults, True))
    assert expected, f"block {block} has no fields"
    missing = [key for key, _ in expected if key not in reference]
    assert not missing, f"the reference does not name {missing}"
    wrong = {key: (reference[key][2], cell) for key, cell in expected if cell and reference[key][2] != cell}
    assert not wrong, f"defaults shown vs expected: {wrong}"
    listed = {key for key in reference if key == block or key.startswith(f"{block}.")}
    assert listed == {key for key, _ in expected}, (
        f"rows for keys that do not exist: {listed - {k for k, _ in expected}}"
    )


def test_a_nested_default_is_the_one_its_parent_gives(reference):
    """TrainingConfig gives its discriminator optimiser sgd at 2e-4; OptimizerConfig's own default is adam."""
    assert reference["training.discriminator_optimizer.name"][2] == '`"sgd"`'
    assert reference["training.discriminator_optimizer.lr"][2] == "`0.0002`"
    assert reference["training.image_optimizer.name"][2] == '`"adam"`'


def test_descriptions_come_from_the_field_docstrings(reference):
    assert reference["training.epochs"][3] == "training epochs (the best on validation is kept)"
    assert reference["embedding.precision"][1] == '"auto" \\| "float32" \\| "bfloat16"'
    assert reference["training.batch_size"][1] == "int ≥ 2"


class _Inner(ParameterBlock):
    """An inner block."""

    size: int = Field(default=3, ge=1)
    """how big"""


class _Entry(ParameterBlock):
    kind: Literal["a", "b"]
    """which kind: a | b"""
    note: str = ""
    """a <tag> outside code, `<kept>` inside"""


class _Toy(ParameterBlock):
    """The toy block."""

    inner: _Inner = _Inner(size=7)
    folder: str | None = set_by_conf(None)
    """a path the env's globals build"""
    counted: int = set_from_data(5)
    """counted from the data"""
    entries: dict[str, _Entry] = Field(default_factory=dict)
    """name -> entry"""
    optional: _Inner | None = None
    """off unless given"""


def test_each_kind_of_field_renders_its_own_way():
    rows = table_rows(reference_markdown({"toy": _Toy}))
    assert rows["toy.inner"][1:3] == ["block", "(the keys below)"]
    assert rows["toy.inner.size"] == ["`toy.inner.size`", "int ≥ 1", "`7`", "how big"]
    assert rows["toy.folder"][2] == FROM_CONF
    assert rows["toy.counted"][2] == FROM_DATA
    assert rows["toy.entries"][1:3] == ["mapping of str to block", "`{}`"]
    assert rows["toy.entries.<name>.kind"][1:] == ['"a" \\| "b"', REQUIRED, "which kind: a \\| b"]
    assert rows["toy.entries.<name>.note"][3] == "a &lt;tag> outside code, `<kept>` inside"
    assert rows["toy.optional"][1:3] == ["block \\| null", "`null`"]
    assert rows["toy.optional.size"][2] == "`3`"
    assert "## `toy`\n\nThe toy block." in reference_markdown({"toy": _Toy})
