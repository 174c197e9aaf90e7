"""The base of every parameter block: a frozen pydantic model that refuses unknown keys, and the
formatter that turns pydantic's errors into messages naming the dotted key and the fix.

``build(TrainingConfig, params["training"], "training")`` validates one block (base, env and
``--params`` merged) and returns the model; each default lives on its model's field (and equals the
YAML of ``conf/base``, a test checks). A misspelt key names its full path, the nearest known key and
every known key::

    Unknown parameter training.epoch; did you mean 'epochs'? Known: ['adversarial', ...]

a bad value names its key, the rule and the value given::

    params training.epochs must be greater than or equal to 1, got 0

``null`` for a key whose type does not allow None (a nested block, a ``{}`` mapping, a number)
means that key's default; for a key typed ``X | None`` it means None.
"""

from __future__ import annotations

import difflib
import types
from collections.abc import Iterable, Mapping
from typing import Any, Self, TypeVar, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic.fields import FieldInfo

__all__ = [
    "ParameterBlock",
    "ParameterError",
    "build",
    "is_set_by_conf",
    "is_set_from_data",
    "set_by_conf",
    "set_from_data",
    "unknown_keys_error",
]

B = TypeVar("B", bound="ParameterBlock")


class ParameterError(ValueError):
    """Parameters that do not build their block; the message names each key and what is wrong."""


def _accepts_none(field: FieldInfo) -> bool:
    annotation = field.annotation
    return annotation is None or (
        get_origin(annotation) in (Union, types.UnionType) and type(None) in get_args(annotation)
    )


def set_by_conf(default: Any = None, **field_args: Any) -> Any:
    """A field whose value the project's conf supplies: a path under the env's data folder (built from
    ``globals``), the published numbers of its datasets, a study's rows. Its model default is the
    neutral one (None, empty), and the YAML-equals-default test checks only that conf/base lists it."""
    return _marked_field("set_by_conf", default, field_args)


def set_from_data(default: Any = None, **field_args: Any) -> Any:
    """A field the run fills in from the data or the checkpoint (a tokenizer's vocabulary size, a
    transformer's architecture): conf/base does not list it."""
    return _marked_field("set_from_data", default, field_args)


def _marked_field(mark: str, default: Any, field_args: dict[str, Any]) -> Any:
    if "default_factory" not in field_args:
        field_args["default"] = default
    return Field(**field_args, json_schema_extra={mark: True})


def _marked(field: FieldInfo, mark: str) -> bool:
    return isinstance(field.json_schema_extra, dict) and bool(field.json_schema_extra.get(mark))


def is_set_by_conf(field: FieldInfo) -> bool:
    return _marked(field, "set_by_conf")


def is_set_from_data(field: FieldInfo) -> bool:
    return field.is_required() or _marked(field, "set_from_data")


class ParameterBlock(BaseModel):
    """A typed parameter block: frozen, unknown keys refused, ``null`` meaning a field's default."""

    model_config = ConfigDict(extra="forbid", frozen=True, coerce_numbers_to_str=True, use_attribute_docstrings=True)

    @model_validator(mode="before")
    @classmethod
    def _null_means_the_default(cls, values: Any) -> Any:
        if not isinstance(values, Mapping):
            return values
        fields = cls.model_fields
        return {
            key: value
            for key, value in values.items()
            if not (
                value is None and key in fields and not fields[key].is_required() and not _accepts_none(fields[key])
            )
        }

    def replace(self, **changes: Any) -> Self:
        """A copy with ``changes``, validated like the parameters it was built from."""
        return build(type(self), {**dict(self), **changes}, "")


def _dotted(path: str, parts: Iterable[object]) -> str:
    """``training.loss_weights.cmpm``; a list position as ``evaluation.ks[1]``."""
    text = path
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


# pydantic's wording for a few error types, as a rule the value must follow.
_RULES = {
    "too_short": "must have at least {min_length} item(s)",
    "too_long": "must have at most {max_length} item(s)",
}


def _nearest(key: str, known: list[str]) -> str | None:
    """The known key most like ``key`` (difflib), else one it abbreviates or extends, else None."""
    close = difflib.get_close_matches(key, known, n=1)
    if close:
        return close[0]
    prefixed = [name for name in known if key and (name.startswith(key) or key.startswith(name))]
    return prefixed[0] if len(prefixed) == 1 else None


def unknown_keys_error(path: str, unknown: Iterable[object], known: Iterable[str]) -> ParameterError:
    """The error for keys of ``path`` that are not among ``known``, each with its nearest known key."""
    return ParameterError(_unknown_keys_message(path, unknown, known))


def _unknown_keys_message(path: str, unknown: Iterable[object], known: Iterable[str]) -> str:
    known = sorted(known)
    parts = [(_dotted(path, [key]), _nearest(str(key), known)) for key in unknown]
    if len(parts) == 1:
        name, nearest = parts[0]
        hint = f"; did you mean {nearest!r}?" if nearest else "."
        return f"Unknown parameter {name}{hint} Known: {known}"
    listed = ", ".join(f"{name} (did you mean {nearest!r}?)" if nearest else name for name, nearest in parts)
    return f"Unknown parameters {listed}. Known: {known}"


def _strip_optional(annotation: Any) -> Any:
    if get_origin(annotation) in (Union, types.UnionType):
        args = [arg for arg in get_args(annotation) if arg is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def _block_at(cls: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The block class found by following ``loc`` from ``cls`` through nested blocks and named entries."""
    current: Any = cls
    for part in loc:
        if isinstance(current, type) and issubclass(current, BaseModel):
            field = current.model_fields.get(str(part))
            if field is None:
                return None
            current = _strip_optional(field.annotation)
        elif get_origin(current) in (dict, Mapping) and len(get_args(current)) == 2:
            current = get_args(current)[1]
        else:
            return None
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _value_message(cls: type[BaseModel], path: str, error: Mapping[str, Any]) -> str:
    """One value's problem: ``params a.b must be ..., got x``."""
    loc = tuple(part for part in error["loc"] if part != "[key]")  # a mapping's key: named by the entry
    name = _dotted(path, loc) or "(top level)"
    if error["type"] in ("model_type", "model_attributes_type", "dict_type"):
        block = _block_at(cls, loc)
        keys = f" with keys {sorted(block.model_fields)}" if block is not None else " of names to blocks"
        return f"params {name} must be a mapping{keys}, got {error['input']!r}"
    if error["type"] == "missing":
        return f"params {name} is required"
    message = str(error["msg"]).removeprefix("Value error, ").removeprefix("Assertion failed, ")
    if error["type"] == "literal_error":
        message = f"must be one of [{error['ctx']['expected'].replace(' or ', ', ')}]"
    elif error["type"] in _RULES:
        message = _RULES[error["type"]].format(**error.get("ctx", {}))
    elif message.startswith("Input should be "):
        message = "must be " + message.removeprefix("Input should be ")
    if error["type"] == "value_error" and message.startswith("params "):
        return message  # a check that names its key itself
    if error["type"] == "value_error" and not message.startswith("must "):
        return f"params {name}: {message}"
    return f"params {name} {message}, got {error['input']!r}"


def format_errors(error: ValidationError, cls: type[BaseModel], path: str) -> str:
    """Every problem of one block, one line each; unknown keys grouped by the block they are in."""
    unknown: dict[tuple[Any, ...], list[str]] = {}
    lines: list[str] = []
    for item in error.errors():
        loc = tuple(item["loc"])
        if item["type"] == "extra_forbidden":
            unknown.setdefault(loc[:-1], []).append(str(loc[-1]))
        else:
            lines.append(_value_message(cls, path, item))
    for parent, keys in unknown.items():
        block = _block_at(cls, parent)
        known = sorted(block.model_fields) if block is not None else []
        lines.insert(0, _unknown_keys_message(_dotted(path, parent), keys, known))
    return "\n".join(lines)


def build(cls: type[B], values: Mapping[str, Any] | B | None, path: str) -> B:
    """``cls`` built from ``values`` (the parameters found at dotted ``path``), defaults for the rest.

    An instance of ``cls`` is returned as it is; None means every default.
    """
    if isinstance(values, cls):
        return values
    if values is None:
        values = {}
    if not isinstance(values, Mapping):
        raise ParameterError(
            f"params {path or '(top level)'} must be a mapping with keys {sorted(cls.model_fields)}, got {values!r}"
        )
    try:
        return cls.model_validate(dict(values))
    except ValidationError as error:
        raise ParameterError(format_errors(error, cls, path)) from None
