"""The retrieval parameter blocks, typed: ``params:evaluation``, ``params:search`` and ``params:compare``.

Each default lives here, once; the nodes build a block at their boundary (``evaluation_config``...)
and read attributes, never ``.get(key, default)``. Unknown keys are errors naming the nearest known
key (:func:`timam.config_tree.build_config`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from timam.config_tree import build_config
from timam.retrieval.protocols import PROTOCOLS
from timam.retrieval.ranking import TIE_RULES
from timam.retrieval.relevance import RELEVANCE_RULES


def _check_tie_rules(rules: tuple[str, ...], path: str) -> None:
    if not rules or set(rules) - set(TIE_RULES):
        raise ValueError(f"params {path} must be a non-empty subset of {list(TIE_RULES)}, got {list(rules)}")


@dataclass(frozen=True)
class ExamplesConfig:
    """The example figures: ``queries`` sampled queries (with ``seed``) each way with their ``top_k``
    results (example_grid*.png), and the ``best_worst`` highest- and lowest-AP queries each way
    (best_worst_*.png; 0 draws none)."""

    queries: int = 6
    top_k: int = 5
    seed: int = 0
    best_worst: int = 3

    def __post_init__(self) -> None:
        if self.queries < 1 or self.top_k < 1 or self.best_worst < 0:
            raise ValueError(
                "params evaluation.examples needs queries >= 1, top_k >= 1 and best_worst >= 0, got "
                f"queries={self.queries}, top_k={self.top_k}, best_worst={self.best_worst}"
            )


@dataclass(frozen=True)
class EvaluationConfig:
    """How the test split is embedded, ranked and reported."""

    # Names the dataset in reports; also the entry of paper_results, unless paper_results_key names another.
    dataset: str | None = None
    split: str = "test"
    relevance: str = "identity"  # identity (person search) | instance (a caption's own image)
    # The dataset's published protocol, computed beside the standard numbers (timam.retrieval.protocols):
    # standard | coco_1k_folds (folds of coco_fold_images images) | zero_shot_classes (AP@zero_shot_depth).
    protocol: str = "standard"
    coco_fold_images: int = 1000
    zero_shot_depth: int = 50
    ks: tuple[int, ...] = (1, 5, 10)
    tie_rules: tuple[str, ...] = ("expected", "index", "optimistic", "pessimistic")
    batch_size: int = 64
    device: str = "auto"
    curve_max_k: int = 50  # recall_curve.png: R@K for K = 1..curve_max_k
    examples: ExamplesConfig = field(default_factory=ExamplesConfig)
    # Published numbers per dataset, set beside ours where relevance and test counts match.
    paper_results: dict[str, dict[str, Any]] = field(default_factory=dict)
    # The paper_results entry of this data when its dataset name is another (a preset of a dataset).
    paper_results_key: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "ks", tuple(int(k) for k in self.ks))
        object.__setattr__(self, "tie_rules", tuple(self.tie_rules))
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"params evaluation.protocol must be one of {list(PROTOCOLS)}, got {self.protocol!r}")
        if self.relevance not in RELEVANCE_RULES:
            raise ValueError(
                f"params evaluation.relevance must be one of {list(RELEVANCE_RULES)}, got {self.relevance!r}"
            )
        if not self.ks or min(self.ks) < 1:
            raise ValueError(f"params evaluation.ks must be positive ranks, got {list(self.ks)}")
        _check_tie_rules(self.tie_rules, "evaluation.tie_rules")
        for name in ("coco_fold_images", "zero_shot_depth", "batch_size", "curve_max_k"):
            if getattr(self, name) < 1:
                raise ValueError(f"params evaluation.{name} must be >= 1, got {getattr(self, name)}")
        if self.paper_results_key is not None and self.paper_results_key not in self.paper_results:
            raise ValueError(
                f"params evaluation.paper_results_key {self.paper_results_key!r} is not an entry of "
                f"evaluation.paper_results; known: {sorted(self.paper_results)}"
            )

    @property
    def published_as(self) -> str | None:
        """The name of this data in ``paper_results``."""
        return self.paper_results_key or self.dataset

    def published_results(self) -> dict[str, Any] | None:
        """The published numbers to set beside this run's, or None when there are none for this data."""
        return self.paper_results.get(self.published_as) if self.published_as else None


def _given(value: Any) -> str | None:
    """A parameter as a stripped string, or None when unset/empty (``--params`` may parse numbers)."""
    if value is None:
        return None
    text = str(value).strip()
    return text or None


@dataclass(frozen=True)
class SearchConfig:
    """``kedro run --pipelines search``: a text ``query``, a ``query_image`` path or a ``queries_file``
    (one text query per line, or a table with a ``query`` column), and how many results to keep.

    With an image index (``kedro run --pipelines index``) and ``use_index`` the newest index is
    searched: texts and images rank its images. Without one, the test split is searched: a text
    ranks the test images, an image the test captions. The search pipeline needs exactly one of the
    three queries; other pipelines ignore the block."""

    query: str | None = None
    query_image: str | None = None
    queries_file: str | None = None
    top_k: int = 10
    use_index: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "query", _given(self.query))
        object.__setattr__(self, "query_image", _given(self.query_image))
        object.__setattr__(self, "queries_file", _given(self.queries_file))
        if not isinstance(self.use_index, bool):
            raise ValueError(f"params search.use_index must be true or false, got {self.use_index!r}")
        try:
            top_k = int(str(self.top_k).strip())
        except ValueError:
            top_k = 0
        if top_k < 1:
            raise ValueError(f"params search.top_k must be a positive integer, got {self.top_k!r}")
        object.__setattr__(self, "top_k", top_k)


@dataclass(frozen=True)
class CompareConfig:
    """``kedro run --pipelines compare``: the tie rule of the numbers in the comparison table."""

    tie_rule: str = "expected"

    def __post_init__(self) -> None:
        _check_tie_rules((self.tie_rule,), "compare.tie_rule")


def evaluation_config(values: Mapping[str, Any] | EvaluationConfig | None) -> EvaluationConfig:
    """Build from ``params:evaluation``."""
    return build_config(EvaluationConfig, values, "evaluation")


def search_config(values: Mapping[str, Any] | SearchConfig | None) -> SearchConfig:
    """Build from ``params:search``."""
    return build_config(SearchConfig, values, "search")


def compare_config(values: Mapping[str, Any] | CompareConfig | None) -> CompareConfig:
    """Build from ``params:compare``."""
    return build_config(CompareConfig, values, "compare")
