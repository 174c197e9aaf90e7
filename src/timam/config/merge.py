"""Parameter trees as plain dicts: dotted keys for tables and ``--params``, and nested overrides.

The ablation, the families table and tuning derive each run's parameters from the base blocks
with :func:`deep_merge`; reports and MLflow show them flattened.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested parameters as ``{"a.b.c": leaf}``: the dotted keys of ``--params`` and of tables."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{path}."))
        else:
            flat[path] = value
    return flat


def deep_merge(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``overrides`` merged in, nested dictionaries key by key (neither is changed)."""
    merged = copy.deepcopy(dict(base))
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged
