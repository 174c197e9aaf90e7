"""``params:families``: the rows of the families table and how each row's parameters are made.

The survey sorts image-text matching into families; the table trains each row on the same data,
split, protocol and seeds. A row is an ``embedding`` model (pairwise CMPM or VSE++, adversarial
TIMAM and its ablation rows: :class:`~timam.models.config.ModelConfig`) or an ``interaction`` one
(SCAN-style cross-attention: :class:`~timam.models.interaction.InteractionConfig`), each the base
``params:model`` / ``params:training`` with the row's overrides. An interaction row keeps the base
model's backbone and text model (so an env's image size and views hold for every row) and takes
the rest from ``families.interaction_model``. ``two_stage.k``: how many of the embedding row's
top items per query the interaction row re-scores.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, PositiveInt

from timam.config import ParameterBlock, build, deep_merge, set_by_conf
from timam.models.config import check_model_parameters
from timam.models.interaction import InteractionConfig
from timam.training.config import training_config
from timam.training.interaction import check_interaction_training

# The base model's keys an interaction row inherits: the frozen encoders it shares with the rest.
SHARED_MODEL_KEYS = ("image_backbone", "image_library", "image_weights", "image_size", "image_views", "text_model")


class FamilyRow(ParameterBlock):
    """One row: its family, the survey's family name for the table, and parameter overrides."""

    family: Literal["embedding", "interaction"]
    """embedding (params:model is a ModelConfig) | interaction (an InteractionConfig)"""
    label: str = ""
    """the survey's family name shown in the table (pairwise, adversarial, interaction...)"""
    model: dict[str, Any] = Field(default_factory=dict)
    """keys of the row's model to override"""
    training: dict[str, Any] = Field(default_factory=dict)
    """keys of params:training to override"""


class TwoStageConfig(ParameterBlock):
    """Re-rank the embedding row's top ``k`` per query (both directions) by the interaction row's
    scores (which rows: the families pipeline's ``TWO_STAGE``)."""

    k: PositiveInt = 50
    """how many of the embedding row's top items per query are re-scored"""


class FamiliesConfig(ParameterBlock):
    """The rows of the families table, the interaction rows' shared model, the two-stage row."""

    rows: dict[str, FamilyRow] = set_by_conf(default_factory=dict)
    """row name -> its family and overrides (names match the families pipeline's rows)"""
    interaction_model: dict[str, Any] = set_by_conf(default_factory=dict)
    """keys of every interaction row's model (InteractionConfig) before the row's own"""
    two_stage: TwoStageConfig = TwoStageConfig()

    def row(self, name: str) -> FamilyRow:
        if name not in self.rows:
            raise ValueError(f"params families.rows has no entry {name!r}; it must list {name!r}")
        return self.rows[name]

    def row_parameters(
        self, name: str, model: Mapping[str, Any], training: Mapping[str, Any], seed: int
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Row ``name``'s model and training parameters for ``seed``, checked."""
        row = self.row(name)
        if row.family == "interaction":
            shared = {key: model[key] for key in SHARED_MODEL_KEYS if key in model}
            row_model = deep_merge(deep_merge(shared, self.interaction_model), row.model)
            InteractionConfig.from_dict(row_model, f"families.rows.{name}.model")
        else:
            row_model = deep_merge(model, row.model)
            check_model_parameters(row_model, f"families.rows.{name}.model")
        row_training = deep_merge(training, row.training)
        row_training["seed"] = seed
        if row.family == "interaction":
            row_training["state_path"] = None  # an interaction run keeps no resume state
            check_interaction_training(training_config(row_training, f"families.rows.{name}.training"))
        elif row_training.get("state_path"):
            # Each row and seed resumes from its own state file, never from another's.
            state = Path(row_training["state_path"])
            row_training["state_path"] = str(state.with_name(f"{state.stem}_families_{name}_seed{seed}{state.suffix}"))
        training_config(row_training, f"families.rows.{name}.training")
        return row_model, row_training


def families_config(values: Mapping[str, Any] | FamiliesConfig | None) -> FamiliesConfig:
    """Build from ``params:families``, naming any misspelt key with its full path."""
    return build(FamiliesConfig, values, "families")
