"""Recall curves (R@K for every K in one pass) agree with the ranking module and with brute force."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from timam.evaluation.curves import bidirectional_recall_curves, chance_recall_curve, recall_curve
from timam.retrieval.ranking import bidirectional_metrics, ranking_metrics

RULES = ("expected", "optimistic", "pessimistic", "index")


def _tied_problem(seed: int, n_gallery: int = 40, n_query: int = 60, noise: bool = True):
    """Embeddings drawn from a few prototypes (many exact ties), labels with several relevant items."""
    g = torch.Generator().manual_seed(seed)
    prototypes = torch.randn(7, 6, generator=g)
    gallery = prototypes[torch.randint(0, 7, (n_gallery,), generator=g)]
    if noise:
        gallery[: n_gallery // 2] += 0.3 * torch.randn(n_gallery // 2, 6, generator=g)
    query = prototypes[torch.randint(0, 7, (n_query,), generator=g)]
    gallery_labels = torch.randint(0, 6, (n_gallery,), generator=g)
    gallery_labels[:6] = torch.arange(6)
    query_labels = torch.randint(0, 6, (n_query,), generator=g)
    return query, gallery, query_labels, gallery_labels


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_curve_equals_ranking_metrics_at_1_5_10(rule, seed):
    query, gallery, ql, gl = _tied_problem(seed, noise=seed != 2)
    curve = recall_curve(query, gallery, ql, gl, max_k=50, tie_rule=rule, chunk_size=7)
    reference = ranking_metrics(query, gallery, ql, gl, ks=(1, 5, 10, 25), tie_rules=(rule,), metrics=("R@K",))[rule]
    assert len(curve) == 40  # clipped to the gallery size
    for k in (1, 5, 10, 25):
        assert curve[k - 1] == pytest.approx(reference[f"R@{k}"], abs=1e-9)
    assert all(a <= b + 1e-12 for a, b in zip(curve, curve[1:], strict=False))
    assert curve[-1] == pytest.approx(100.0)


def test_bidirectional_curves_match_bidirectional_metrics():
    query, gallery, ql, gl = _tied_problem(3)
    curves = bidirectional_recall_curves(gallery, query, gl, ql, max_k=10)
    reference = bidirectional_metrics(gallery, query, gl, ql, ks=(1, 5, 10), metrics=("R@K",))
    for direction in ("text_to_image", "image_to_text"):
        for k in (1, 5, 10):
            assert curves[direction][k - 1] == pytest.approx(reference[direction]["expected"][f"R@{k}"], abs=1e-9)


def test_expected_rule_equals_enumeration_of_tie_orders():
    """One query, all scores tied except one: the mean over every order of the tied items."""
    gallery = torch.tensor([[1.0, 0.0]] * 5 + [[0.0, 1.0]])
    query = torch.tensor([[1.0, 0.2]])
    gl = torch.tensor([0, 1, 0, 1, 1, 1])  # items 0 and 2 relevant, tied with 1, 3, 4
    curve = recall_curve(query, gallery, torch.tensor([0]), gl, max_k=6)
    tied = [0, 1, 2, 3, 4]
    hits = np.zeros(6)
    orders = list(itertools.permutations(tied))
    for order in orders:
        first = next(i for i, item in enumerate(order) if gl[item] == 0) + 1
        hits += np.arange(1, 7) >= first
    np.testing.assert_allclose(curve, 100 * hits / len(orders), atol=1e-9)


def test_chance_curve_is_the_hypergeometric_hit_rate():
    gl = torch.tensor([0, 0, 1, 1, 1, 2])
    ql = torch.tensor([0, 2])
    curve = chance_recall_curve(ql, gl, max_k=3)
    # label 0: 2 of 6 relevant -> P(hit@1) = 1/3; label 2: 1 of 6 -> 1/6
    assert curve[0] == pytest.approx(100 * (1 / 3 + 1 / 6) / 2)
    assert curve[1] == pytest.approx(100 * ((1 - (4 / 6) * (3 / 5)) + 2 / 6) / 2)


def test_query_without_relevant_item_is_named():
    with pytest.raises(ValueError, match="query 1 .label 9. has no relevant gallery item"):
        recall_curve(torch.randn(2, 3), torch.randn(4, 3), torch.tensor([0, 9]), torch.tensor([0, 1, 2, 3]))


def test_unknown_tie_rule_is_refused():
    with pytest.raises(ValueError, match="tie_rule"):
        recall_curve(
            torch.randn(2, 3), torch.randn(4, 3), torch.tensor([0, 1]), torch.tensor([0, 1, 2, 3]), tie_rule="random"
        )
