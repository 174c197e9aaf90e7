"""Example selection: sampled queries, and the best and worst by average precision, each shown once."""

from __future__ import annotations

import torch

from timam.evaluation.examples import best_and_worst, sample_queries


def test_sampled_queries_are_distinct_sorted_and_reproducible():
    first = sample_queries(100, 6, seed=3)
    assert first == sorted(set(first)) and len(first) == 6 and first == sample_queries(100, 6, seed=3)
    assert sample_queries(4, 6, seed=0) == [0, 1, 2, 3]  # never more queries than there are


def test_best_and_worst_show_each_query_once_when_many_share_an_ap():
    queries, notes = best_and_worst(torch.tensor([1.0, 1, 1, 1, 0.5, 1, 1, 0.2], dtype=torch.float64), 3)
    assert queries == [0, 1, 2, 7, 4, 3]  # best by index among the ties; worst from the rest
    assert notes[3].startswith("[worst 1, AP 0.200]") and notes[5] == "[worst 3, AP 1.000]"
    queries, _ = best_and_worst(torch.ones(5, dtype=torch.float64), 3)
    assert queries == [0, 1, 2, 3]  # 2 best and 2 worst of 5 equal queries, none twice
