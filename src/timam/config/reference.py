"""The configuration reference, rendered from the parameter blocks' models so that it cannot drift.

:func:`reference_markdown` turns ``{name: model}`` (``timam.hooks.parameter_blocks()``) into one
Markdown table per block: every key dotted from the block's name, its type and bounds, its
default, and its docstring. Nested blocks are walked, with the defaults their parent gives them
(``training.discriminator_optimizer.name`` is ``"sgd"``, not ``OptimizerConfig``'s ``"adam"``);
the entries of a mapping of blocks (``ablation.variants.<name>``) are listed once, under ``<name>``.
A field the environment's conf supplies (``set_by_conf``) or the run fills in from the data
(``set_from_data``) says so instead of showing its neutral model default. The docs site builds the
page with this at build time (``docs/hooks/reference.py``).
"""

from __future__ import annotations

import inspect
import json
import re
import types
from collections.abc import Iterator, Mapping
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import annotated_types
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import to_jsonable_python

from timam.config.base import is_set_by_conf, is_set_from_data

__all__ = ["FROM_CONF", "FROM_DATA", "REQUIRED", "reference_markdown"]

FROM_CONF = "set by the environment's conf"
FROM_DATA = "filled from the data"
REQUIRED = "required"
_HEADER = "| key | type | default | description |\n|---|---|---|---|"
_BOUNDS = (
    (annotated_types.Ge, "ge", "≥ {}"),
    (annotated_types.Gt, "gt", "> {}"),
    (annotated_types.Le, "le", "≤ {}"),
    (annotated_types.Lt, "lt", "< {}"),
    (annotated_types.MinLen, "min_length", "at least {} long"),
    (annotated_types.MaxLen, "max_length", "at most {} long"),
)


def _escaped(text: str) -> str:
    """``text`` with ``<`` outside code spans written as ``&lt;``, so that ``<column>`` is not read as HTML."""
    parts = text.split("`")
    return "`".join(part if i % 2 else part.replace("<", "&lt;") for i, part in enumerate(parts))


def _cell(text: str) -> str:
    """``text`` safe in a table cell: pipes escaped, no HTML."""
    return _escaped(text.replace("|", "\\|"))


def _prose(text: str | None) -> str:
    """A docstring as one table cell: reStructuredText literals as Markdown code, on one line."""
    return _cell(" ".join(inspect.cleandoc(text or "").split()).replace("``", "`"))


def _bounds(metadata: list[Any]) -> list[str]:
    """``≥ 1``, ``< 1``...: the bounds in a field's (or a nested ``Field``'s) metadata."""
    items = [inner for item in metadata for inner in (item.metadata if isinstance(item, FieldInfo) else [item])]
    return [
        template.format(getattr(item, attribute))
        for item in items
        for kind, attribute, template in _BOUNDS
        if isinstance(item, kind)
    ]


def _type_text(annotation: Any, metadata: list[Any] | None = None) -> str:
    """A reader's name for ``annotation`` (``int ≥ 1``, ``"sgd" | "adam"``, ``[int > 0, int > 0]``...)."""
    origin, args = get_origin(annotation), get_args(annotation)
    bounds = _bounds(metadata or [])
    if origin is Annotated:
        return _type_text(args[0], [*args[1:], *(metadata or [])])
    if annotation is None or annotation is type(None):
        text = "null"
    elif annotation is Any:
        text = "any"
    elif origin is Literal:
        text = " | ".join(json.dumps(value) for value in args)
    elif origin in (Union, types.UnionType):
        text = " | ".join(_type_text(arg) for arg in args)
    elif origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        text = f"list of {_type_text(args[0])}"
    elif origin is tuple:
        text = "[" + ", ".join(_type_text(arg) for arg in args) + "]"
    elif origin in (list, set, frozenset):
        text = f"list of {_type_text(args[0])}" if args else "list"
    elif origin in (dict, Mapping):
        text = "mapping" if not args or args[1] is Any else f"mapping of {_type_text(args[0])} to {_type_text(args[1])}"
    elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
        text = "block"
    else:
        text = getattr(annotation, "__name__", str(annotation))
    return f"{text} {', '.join(bounds)}" if bounds else text


def _block_of(annotation: Any) -> tuple[type[BaseModel] | None, bool]:
    """The block a field holds (itself, or the value of a mapping of blocks), and whether it is such a mapping."""
    if get_origin(annotation) in (dict, Mapping):
        value = get_args(annotation)[1]
        return (value, True) if isinstance(value, type) and issubclass(value, BaseModel) else (None, False)
    for arg in (annotation, *get_args(annotation)):  # the block itself, or ``Block | None``
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg, False
    return None, False


def _code(value: Any) -> str:
    return _cell("`" + json.dumps(to_jsonable_python(value)) + "`")


def _rows(model: type[BaseModel], prefix: str, defaults: BaseModel | None, top: bool) -> Iterator[str]:
    """One row per field of ``model``, then the rows of its nested blocks.

    ``defaults``: the instance holding this block's defaults (None for a block that exists only when
    given: an optional block or a mapping's entry, whose own required keys are then ``required``).
    ``top``: a top-level block, where a required field is one the run fills in.
    """
    for name, field in model.model_fields.items():
        key = f"{prefix}.{name}"
        block, entries = _block_of(field.annotation)
        kind = _cell(_type_text(field.annotation, field.metadata))
        about = _prose(field.description or (block.__doc__ if block else ""))
        yield f"| `{key}` | {kind} | {_default(field, name, defaults, top)} | {about} |"
        if block is None:
            continue
        if entries:
            yield from _rows(block, f"{key}.<name>", None, False)
        else:
            value = _value(field, name, defaults)
            yield from _rows(block, key, value if isinstance(value, BaseModel) else None, False)


def _value(field: FieldInfo, name: str, defaults: BaseModel | None) -> Any:
    return getattr(defaults, name) if defaults is not None else field.get_default(call_default_factory=True)


def _default(field: FieldInfo, name: str, defaults: BaseModel | None, top: bool) -> str:
    if is_set_by_conf(field):
        return FROM_CONF
    if field.is_required():
        return FROM_DATA if top else REQUIRED
    if is_set_from_data(field):
        return FROM_DATA
    value = _value(field, name, defaults)
    return "(the keys below)" if isinstance(value, BaseModel) else _code(value)


def reference_markdown(blocks: Mapping[str, type[BaseModel]]) -> str:
    """A section per block (``## `name```, its docstring, a table of every key), in ``blocks``' order."""
    sections = []
    for name, model in blocks.items():
        rows = "\n".join(_rows(model, name, None, True))
        doc = _escaped(re.sub(r"``([^`]+)``", r"`\1`", inspect.cleandoc(model.__doc__ or "")))
        sections.append(f"## `{name}`\n\n{doc}\n\n{_HEADER}\n{rows}\n")
    return "\n".join(sections)
