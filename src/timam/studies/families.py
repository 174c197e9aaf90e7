"""``params:families``: the rows of the families table and how each row's parameters are made.

The survey sorts image-text matching into families; the table trains each row on the same data,
split, protocol and seeds. A row is an ``embedding`` model (pairwise CMPM or VSE++, adversarial
TIMAM and its ablation rows: :class:`~timam.models.config.ModelConfig`), an ``interaction`` one
(SCAN-style cross-attention: :class:`~timam.models.interaction.InteractionConfig`) or one of the
attribute family's: ``agnet`` (AgNet-style attribute hashing:
:class:`~timam.models.attribute_hashing.AttributeHashingConfig`) and ``acmm`` (ACMM-style aligned
memory: :class:`~timam.models.aligned_memory.AlignedMemoryConfig`), each the base ``params:model`` /
``params:training`` with the row's overrides. Every row but an embedding one keeps the base model's
frozen encoders (backbone and text model: an env's image size and views hold for every row) and
takes the rest from its family's block (``interaction_model``, ``agnet_model``, ``acmm_model``).
``two_stage.k``: how many of the embedding row's top items per query the interaction row re-scores;
``hash_rerank.k``: how many of the Hamming ranking's top items the attribute space re-scores.
``attribute_vocabulary``: the attribute rows' vocabulary (:mod:`timam.studies.attributes`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, PositiveInt

from timam.config import ParameterBlock, build, deep_merge, set_by_conf
from timam.models.aligned_memory import AlignedMemoryConfig
from timam.models.attribute_hashing import AttributeHashingConfig
from timam.models.config import check_model_parameters
from timam.models.interaction import InteractionConfig
from timam.studies.attributes import AttributeVocabularyConfig
from timam.training.config import TrainingConfig, training_config
from timam.training.hashing import check_hashing_training
from timam.training.interaction import check_interaction_training

# The base model's keys an interaction row inherits: the frozen encoders it shares with the rest.
SHARED_MODEL_KEYS = ("image_backbone", "image_library", "image_weights", "image_size", "image_views", "text_model")


class FamilyRow(ParameterBlock):
    """One row: its family, the survey's family name for the table, and parameter overrides."""

    family: Literal["embedding", "interaction", "agnet", "acmm"]
    """embedding (params:model is a ModelConfig) | interaction (an InteractionConfig) | agnet (an
    AttributeHashingConfig) | acmm (an AlignedMemoryConfig)"""
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
    """The rows of the families table, each family's shared model, the two-stage rows, the vocabulary."""

    rows: dict[str, FamilyRow] = set_by_conf(default_factory=dict)
    """row name -> its family and overrides (names match the families pipeline's rows)"""
    interaction_model: dict[str, Any] = set_by_conf(default_factory=dict)
    """keys of every interaction row's model (InteractionConfig) before the row's own"""
    agnet_model: dict[str, Any] = set_by_conf(default_factory=dict)
    """keys of every agnet row's model (AttributeHashingConfig; num_attributes follows the vocabulary)"""
    acmm_model: dict[str, Any] = set_by_conf(default_factory=dict)
    """keys of every acmm row's model (AlignedMemoryConfig) before the row's own"""
    two_stage: TwoStageConfig = TwoStageConfig()
    hash_rerank: TwoStageConfig = TwoStageConfig()
    """the Hamming ranking's top k per query (both directions) re-scored in the same model's attribute space"""
    attribute_vocabulary: AttributeVocabularyConfig = AttributeVocabularyConfig()

    def row(self, name: str) -> FamilyRow:
        if name not in self.rows:
            raise ValueError(f"params families.rows has no entry {name!r}; it must list {name!r}")
        return self.rows[name]

    def row_parameters(
        self, name: str, model: Mapping[str, Any], training: Mapping[str, Any], seed: int
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Row ``name``'s model and training parameters for ``seed``, checked."""
        row = self.row(name)
        where = f"families.rows.{name}"
        if row.family == "embedding":
            row_model = deep_merge(model, row.model)
            check_model_parameters(row_model, f"{where}.model")
        else:
            shared = {key: model[key] for key in SHARED_MODEL_KEYS if key in model}
            family_model = {"interaction": self.interaction_model, "agnet": self.agnet_model, "acmm": self.acmm_model}
            row_model = deep_merge(deep_merge(shared, family_model[row.family]), row.model)
            if row.family != "interaction":  # the config a checkpoint rebuilds names its family
                row_model["family"] = row.family
            _check_heads_model(row.family, row_model, f"{where}.model")
        row_training = deep_merge(training, row.training)
        row_training["seed"] = seed
        if row.family != "embedding":
            row_training["state_path"] = None  # a heads-only run on cached features keeps no resume state
            _check_heads_training(row.family, training_config(row_training, f"{where}.training"))
        elif row_training.get("state_path"):
            # Each row and seed resumes from its own state file, never from another's.
            state = Path(row_training["state_path"])
            row_training["state_path"] = str(state.with_name(f"{state.stem}_families_{name}_seed{seed}{state.suffix}"))
        training_config(row_training, f"families.rows.{name}.training")
        return row_model, row_training


def _check_heads_model(family: str, values: dict[str, Any], path: str) -> None:
    if family == "interaction":
        InteractionConfig.from_dict(values, path)
    elif family == "acmm":
        AlignedMemoryConfig.from_dict(values, path)
    else:  # the vocabulary's size is known once it is fitted: any size checks the rest
        AttributeHashingConfig.from_dict({"num_attributes": 1, **values}, path)


def _check_heads_training(family: str, config: TrainingConfig) -> None:
    if family == "agnet":
        check_hashing_training(config)
    else:  # interaction and acmm train on the same pair-score path
        check_interaction_training(config)


def families_config(values: Mapping[str, Any] | FamiliesConfig | None) -> FamiliesConfig:
    """Build from ``params:families``, naming any misspelt key with its full path."""
    return build(FamiliesConfig, values, "families")
