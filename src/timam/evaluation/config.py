"""The evaluation's parameter blocks, typed: ``params:evaluation`` and ``params:compare``.

Each default lives here, once, and equals ``conf/base/parameters_evaluate.yml`` (a test checks);
the nodes build a block at their boundary (``evaluation_config``...) and read attributes, never
``.get(key, default)``. Unknown keys are errors naming the nearest known key.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import Field, PositiveInt, model_validator

from timam.config import ParameterBlock, build, set_by_conf
from timam.evaluation.protocols import Protocol
from timam.retrieval.ranking import TieRule
from timam.retrieval.relevance import Relevance

TieRules = Annotated[tuple[TieRule, ...], Field(min_length=1)]


class ExamplesConfig(ParameterBlock):
    """The example figures: ``queries`` sampled queries (with ``seed``) each way with their ``top_k``
    results (example_grid*.png), and the ``best_worst`` highest- and lowest-AP queries each way
    (best_worst_*.png; 0 draws none)."""

    queries: PositiveInt = 6
    """sampled test queries each way (example_grid*.png)"""
    top_k: PositiveInt = 5
    """results shown per query"""
    seed: int = 0
    """which queries are sampled"""
    best_worst: int = Field(default=3, ge=0)
    """best_worst_*.png: the highest- and lowest-AP queries each way (0: none)"""


class EvaluationConfig(ParameterBlock):
    """How the test split is ranked and reported (how it is embedded: ``params:embedding``)."""

    dataset: str | None = set_by_conf(None)
    """names the dataset in reports and picks its paper_results entry (conf/base: globals dataset)"""
    paper_results_key: str | None = None
    """the paper_results entry of this data when its dataset name is another (a preset of a dataset)"""
    split: str = "test"
    """the split that is ranked"""
    relevance: Relevance = "identity"
    """identity (person search: any item of the query's identity) | instance (a caption's own image)"""
    protocol: Protocol = "standard"
    """a published protocol computed beside the standard numbers: standard (none) | coco_1k_folds (mean
    over folds of coco_fold_images test images) | zero_shot_classes (one class-mean text query per
    test class: text->image AP@zero_shot_depth as Reed et al. 2016 define it, image->text top-1)"""
    coco_fold_images: PositiveInt = 1000
    """images per fold of coco_1k_folds"""
    zero_shot_depth: PositiveInt = 50
    """the depth of zero_shot_classes' text->image AP"""
    ks: Annotated[tuple[PositiveInt, ...], Field(min_length=1)] = (1, 5, 10)
    """the K of the reported R@K"""
    tie_rules: TieRules = ("expected", "index", "optimistic", "pessimistic")
    """tie rules reported (expected: exact expectation over random tie order; index: ties to the lower
    index, as published tables break them; optimistic; pessimistic)"""
    curve_max_k: PositiveInt = 50
    """recall_curve.png: R@K for K = 1..curve_max_k (expected over ties)"""
    examples: ExamplesConfig = ExamplesConfig()
    paper_results: dict[str, dict[str, Any]] = set_by_conf(default_factory=dict)
    """published numbers per dataset, set beside ours in retrieval_report.md only when relevance and
    test counts match (rows: method, text_to_image / image_to_text {R@K}, or mR alone)"""

    @model_validator(mode="after")
    def _paper_results_key_is_an_entry(self) -> EvaluationConfig:
        if self.paper_results_key is not None and self.paper_results_key not in self.paper_results:
            raise ValueError(
                f"paper_results_key {self.paper_results_key!r} is not an entry of "
                f"evaluation.paper_results; known: {sorted(self.paper_results)}"
            )
        return self

    @property
    def published_as(self) -> str | None:
        """The name of this data in ``paper_results``."""
        return self.paper_results_key or self.dataset

    def published_results(self) -> dict[str, Any] | None:
        """The published numbers to set beside this run's, or None when there are none for this data."""
        return self.paper_results.get(self.published_as) if self.published_as else None


class CompareConfig(ParameterBlock):
    """``kedro run --pipelines compare``: the tie rule of the numbers in the comparison table."""

    tie_rule: TieRule = "expected"
    """expected | index | optimistic | pessimistic"""


def evaluation_config(values: Mapping[str, Any] | EvaluationConfig | None) -> EvaluationConfig:
    """Build from ``params:evaluation``."""
    return build(EvaluationConfig, values, "evaluation")


def compare_config(values: Mapping[str, Any] | CompareConfig | None) -> CompareConfig:
    """Build from ``params:compare``."""
    return build(CompareConfig, values, "compare")
