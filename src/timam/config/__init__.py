"""Typed parameter blocks (pydantic models that refuse unknown keys) and parameter-tree helpers."""

from timam.config.base import (
    ParameterBlock,
    ParameterError,
    build,
    is_set_by_conf,
    is_set_from_data,
    set_by_conf,
    set_from_data,
    unknown_keys_error,
)
from timam.config.merge import deep_merge, flatten

__all__ = [
    "ParameterBlock",
    "ParameterError",
    "build",
    "deep_merge",
    "flatten",
    "is_set_by_conf",
    "is_set_from_data",
    "set_by_conf",
    "set_from_data",
    "unknown_keys_error",
]
