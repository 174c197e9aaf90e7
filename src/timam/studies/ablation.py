"""``params:ablation``: the paper's loss and text-encoder ablation as named variants of the base run.

Each variant overrides the base ``params:model`` / ``params:training``; the ablation pipeline trains
and scores every variant on the same data and seeds (its names: the pipeline's ``VARIANTS``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import Field

from timam.config import ParameterBlock, build, deep_merge, set_by_conf
from timam.models.config import check_model_parameters
from timam.training.config import training_config


class AblationVariant(ParameterBlock):
    """One variant: overrides of the base ``model`` and ``training`` parameters."""

    model: dict[str, Any] = Field(default_factory=dict)
    """keys of params:model to override"""
    training: dict[str, Any] = Field(default_factory=dict)
    """keys of params:training to override"""


class AblationConfig(ParameterBlock):
    """The variants by name (they must match the ablation pipeline's VARIANTS)."""

    variants: dict[str, AblationVariant] = set_by_conf(default_factory=dict)
    """name -> {model: ..., training: ...}"""

    def variant_parameters(
        self, name: str, model: Mapping[str, Any], training: Mapping[str, Any]
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """The base ``model`` and ``training`` parameters with variant ``name``'s overrides merged in."""
        if name not in self.variants:
            raise ValueError(f"params ablation.variants has no entry {name!r}; it must list {name!r}")
        variant = self.variants[name]
        return deep_merge(model, variant.model), deep_merge(training, variant.training)


def ablation_config(
    values: Mapping[str, Any] | AblationConfig | None,
    *,
    model: Mapping[str, Any] | None = None,
    training: Mapping[str, Any] | None = None,
) -> AblationConfig:
    """Build from ``params:ablation``; with the base ``model`` and ``training`` blocks, also check that
    every variant's merged parameters build (an override's misspelt key names the variant)."""
    config = build(AblationConfig, values, "ablation")
    if training is not None:
        for name in config.variants:
            merged_model, merged_training = config.variant_parameters(name, model or {}, training)
            training_config(merged_training, f"ablation.variants.{name}.training")
            check_model_parameters(merged_model, f"ablation.variants.{name}.model")
    return config
