"""Typed parameter blocks: build a tree of frozen dataclasses from a nested dict, rejecting unknown keys.

``build_config(TrainingConfig, params["training"], "training")`` returns the dataclass with every
key the mapping gives and the field defaults for the rest. Fields typed as a dataclass (or
``X | None``, or ``dict[str, X]``) are built from nested mappings the same way, so each default
lives in one place: its dataclass field. A misspelt key is an error that names its full path, the
nearest known key and every known key::

    Unknown parameter training.epoch; did you mean 'epochs'? Known: ['adversarial', ...]

``null`` for a block whose default is built by a factory (a nested dataclass, ``{}``) means its
defaults; for a field typed ``X | None`` it means None. Values are checked by each dataclass's
own ``__post_init__``.
"""

from __future__ import annotations

import difflib
import types
from collections.abc import Iterable, Mapping
from dataclasses import MISSING, Field, fields, is_dataclass
from typing import Any, TypeVar, Union, get_args, get_origin, get_type_hints

T = TypeVar("T")

__all__ = ["build_config", "unknown_keys_error"]


def _dotted(path: str, key: object) -> str:
    return f"{path}.{key}" if path else str(key)


def _nearest(key: str, known: list[str]) -> str | None:
    """The known key most like ``key`` (difflib), else one it abbreviates or extends, else None."""
    close = difflib.get_close_matches(key, known, n=1)
    if close:
        return close[0]
    prefixed = [name for name in known if key and (name.startswith(key) or key.startswith(name))]
    return prefixed[0] if len(prefixed) == 1 else None


def unknown_keys_error(path: str, unknown: Iterable[object], known: Iterable[str]) -> ValueError:
    """The error for keys of ``path`` that are not among ``known``, each with its nearest known key."""
    known = sorted(known)
    parts = []
    for key in unknown:
        parts.append((_dotted(path, key), _nearest(str(key), known)))
    if len(parts) == 1:
        name, nearest = parts[0]
        hint = f"; did you mean {nearest!r}?" if nearest else "."
        return ValueError(f"Unknown parameter {name}{hint} Known: {known}")
    listed = ", ".join(f"{name} (did you mean {nearest!r}?)" if nearest else name for name, nearest in parts)
    return ValueError(f"Unknown parameters {listed}. Known: {known}")


def _split_optional(hint: Any) -> tuple[Any, bool]:
    """``X | None`` -> (X, True); anything else -> (hint, False)."""
    if get_origin(hint) in (Union, types.UnionType):
        args = [arg for arg in get_args(hint) if arg is not type(None)]
        if len(args) == 1 and len(args) < len(get_args(hint)):
            return args[0], True
    return hint, False


def _dict_of_dataclass(hint: Any) -> type | None:
    """X for ``dict[str, X]`` / ``Mapping[str, X]`` with a dataclass X, else None."""
    if get_origin(hint) in (dict, Mapping):
        args = get_args(hint)
        if len(args) == 2 and isinstance(args[1], type) and is_dataclass(args[1]):
            return args[1]
    return None


def _build_value(hint: Any, spec: Field, value: Any, path: str) -> Any:
    inner, optional = _split_optional(hint)
    if value is None:
        if optional or spec.default_factory is MISSING:
            return None
        return spec.default_factory()  # null block: its defaults
    if isinstance(inner, type) and is_dataclass(inner):
        return build_config(inner, value, path)
    element = _dict_of_dataclass(inner)
    if element is not None:
        if not isinstance(value, Mapping):
            raise ValueError(f"params {path} must be a mapping of names to blocks, got {value!r}")
        return {key: build_config(element, item, _dotted(path, key)) for key, item in value.items()}
    return value


def build_config(cls: type[T], values: Mapping[str, Any] | T | None, path: str) -> T:
    """``cls`` built from ``values`` (the parameters found at dotted ``path``), defaults for the rest.

    An instance of ``cls`` is returned as it is; None means every default.
    """
    if isinstance(values, cls):
        return values
    known = {spec.name: spec for spec in fields(cls) if spec.init}  # type: ignore[arg-type]
    if values is None:
        values = {}
    if not isinstance(values, Mapping):
        raise ValueError(f"params {path or '(top level)'} must be a mapping with keys {sorted(known)}, got {values!r}")
    unknown = [key for key in values if key not in known]
    if unknown:
        raise unknown_keys_error(path, unknown, known)
    hints = get_type_hints(cls)
    built = {name: _build_value(hints[name], known[name], value, _dotted(path, name)) for name, value in values.items()}
    return cls(**built)
