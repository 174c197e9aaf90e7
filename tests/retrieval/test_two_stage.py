"""Tests for two-stage retrieval scores (``timam.retrieval.two_stage``).

The reference is a naive per-query Python loop over the definition: candidates are the first
``k`` entries of a stable ``argsort(-first_stage)``; they get dense ranks by second-stage score,
the other items dense ranks by first-stage score after them. Score matrices are small integers
(scaled) so that both stages have many exact ties.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from timam.retrieval.ranking import score_ranking_metrics
from timam.retrieval.two_stage import topk_candidates, two_stage_scores

RULES = ("expected", "optimistic", "pessimistic", "index")
KS = (1, 2, 5)


def _tied(gen: torch.Generator, n_q: int, n_g: int, levels: int) -> torch.Tensor:
    return torch.randint(0, levels, (n_q, n_g), generator=gen).float() * 0.37 - 0.5


def _case(seed: int, n_q: int = 12, n_g: int = 20, levels: int = 4):
    """First-stage and full second-stage scores with many ties, and labels (every query relevant)."""
    gen = torch.Generator().manual_seed(seed)
    first, second = _tied(gen, n_q, n_g, levels), _tied(gen, n_q, n_g, levels)
    gl = torch.randint(0, 4, (n_g,), generator=gen)
    ql = gl[torch.randint(0, n_g, (n_q,), generator=gen)]
    return first, second, ql, gl


def _rescore_from(full: torch.Tensor, calls: list[tuple[torch.Tensor, torch.Tensor]] | None = None):
    """The second model as a lookup into its full score matrix (records its calls if asked)."""

    def rescore(rows: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        if calls is not None:
            calls.append((rows.clone(), candidates.clone()))
        return full[rows[:, None], candidates]

    return rescore


def _naive_two_stage(first: np.ndarray, second: np.ndarray, k: int) -> np.ndarray:
    """Negated dense two-stage ranks, one query and one item at a time."""
    out = np.zeros(first.shape, dtype=np.float32)
    for i in range(first.shape[0]):
        order = np.argsort(-first[i], kind="stable")
        candidates, rest = order[:k], order[k:]
        levels = sorted({float(second[i, j]) for j in candidates}, reverse=True)
        for j in candidates:
            out[i, j] = -(levels.index(float(second[i, j])) + 1)
        rest_levels = sorted({float(first[i, j]) for j in rest}, reverse=True)
        for j in rest:
            out[i, j] = -(len(levels) + rest_levels.index(float(first[i, j])) + 1)
    return out


# ----------------------------------------------------------------------------- tests


@pytest.mark.parametrize("k_extra", [0, 5])
def test_full_depth_equals_the_second_model_alone(k_extra: int) -> None:
    """k = gallery size (or more, clipped): the same metrics, under every tie rule, as ranking by
    the second model's full score matrix, ties included."""
    first, second, ql, gl = _case(0)
    k = first.shape[1] + k_extra
    scores = two_stage_scores(first, _rescore_from(second), k, query_chunk=5)
    assert scores.dtype == torch.float32 and scores.shape == first.shape
    ours = score_ranking_metrics(scores, ql, gl, ks=KS, tie_rules=RULES)
    assert ours == score_ranking_metrics(second, ql, gl, ks=KS, tie_rules=RULES)
    # The second model's ties are exact ties of the result, and only those.
    for i in range(first.shape[0]):
        assert torch.equal(scores[i, :, None] == scores[i, None, :], second[i, :, None] == second[i, None, :])
        assert torch.equal(scores[i, :, None] > scores[i, None, :], second[i, :, None] > second[i, None, :])


@pytest.mark.parametrize("k", [1, 3, 7])
def test_top_k_above_the_rest_and_the_rest_in_first_stage_order(k: int) -> None:
    first, second, _, _ = _case(1, levels=3)
    scores = two_stage_scores(first, _rescore_from(second), k)
    candidates = topk_candidates(first, k)
    for i in range(first.shape[0]):
        is_candidate = torch.zeros(first.shape[1], dtype=torch.bool)
        is_candidate[candidates[i]] = True
        top, rest = scores[i, is_candidate], scores[i, ~is_candidate]
        assert float(top.min()) > float(rest.max())  # every top-k item outranks every other item
        f = first[i, ~is_candidate]  # the others keep the first stage's order and its ties exactly
        assert torch.equal(rest[:, None] > rest[None, :], f[:, None] > f[None, :])
        assert torch.equal(rest[:, None] == rest[None, :], f[:, None] == f[None, :])
        s = second[i, is_candidate]  # the candidates take the second stage's order and ties
        assert torch.equal(top[:, None] > top[None, :], s[:, None] > s[None, :])
        assert torch.equal(top[:, None] == top[None, :], s[:, None] == s[None, :])
    np.testing.assert_array_equal(scores.numpy(), _naive_two_stage(first.numpy(), second.numpy(), k))


def test_candidates_break_first_stage_ties_by_lower_gallery_index() -> None:
    first = torch.tensor(
        [
            [0.1, 0.9, 0.5, 0.5, 0.5, 0.9, 0.5],  # 0.5 ties straddle the k-th place
            [0.2, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2],  # all tied
            [0.7, 0.1, 0.3, 0.3, 0.6, 0.3, 0.8],
        ]
    )
    expected = np.argsort(-first.numpy(), axis=1, kind="stable")[:, :4]
    np.testing.assert_array_equal(expected[:2], [[1, 5, 2, 3], [0, 1, 2, 3]])
    np.testing.assert_array_equal(topk_candidates(first, 4).numpy(), expected)
    calls: list[tuple[torch.Tensor, torch.Tensor]] = []
    # A constant second stage: candidates all tie above the rest, which keep first-stage order.
    scores = two_stage_scores(first, lambda rows, c: torch.zeros(c.shape), 4, query_chunk=2)
    two_stage_scores(first, _rescore_from(torch.zeros_like(first), calls), 4, query_chunk=2)
    assert [r.tolist() for r, _ in calls] == [[0, 1], [2]]
    np.testing.assert_array_equal(torch.cat([c for _, c in calls]).numpy(), expected)
    assert scores[0].tolist() == [-3.0, -1.0, -1.0, -1.0, -2.0, -1.0, -2.0]  # items 4 and 6: tied 0.5, outside
    assert scores[1].tolist() == [-1.0] * 4 + [-2.0] * 3
    assert topk_candidates(first, 100).shape == (3, 7)


@pytest.mark.parametrize("seed", range(6))
def test_random_property_against_naive_reference(seed: int) -> None:
    gen = torch.Generator().manual_seed(100 + seed)
    n_q, n_g = int(torch.randint(1, 15, (1,), generator=gen)), int(torch.randint(1, 30, (1,), generator=gen))
    levels = int(torch.randint(1, 6, (1,), generator=gen))
    first, second = _tied(gen, n_q, n_g, levels), _tied(gen, n_q, n_g, levels)
    k = int(torch.randint(1, n_g + 3, (1,), generator=gen))
    chunk = int(torch.randint(1, 6, (1,), generator=gen))
    scores = two_stage_scores(first, _rescore_from(second), k, query_chunk=chunk)
    np.testing.assert_array_equal(scores.numpy(), _naive_two_stage(first.numpy(), second.numpy(), min(k, n_g)))
    # Chunking does not change anything; neither do float64 inputs of float32 values.
    assert torch.equal(two_stage_scores(first.double(), _rescore_from(second.double()), k, query_chunk=1000), scores)
    # Ranks: integers 1..n_gallery, dense (every level used), in float32.
    ranks = -scores
    assert torch.equal(ranks, ranks.round()) and float(ranks.min()) == 1.0 and float(ranks.max()) <= n_g
    for row in ranks:
        assert torch.equal(torch.unique(row), torch.arange(1, int(row.max()) + 1, dtype=torch.float32))


def test_input_is_not_modified_and_candidates_are_a_copy() -> None:
    first, second, _, _ = _case(3)
    before = first.clone()

    def scribbling(rows: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        out = second[rows[:, None], candidates]
        candidates.zero_()  # a careless second model must not corrupt the result
        return out

    assert torch.equal(two_stage_scores(first, scribbling, 4), two_stage_scores(first, _rescore_from(second), 4))
    assert torch.equal(first, before)


def test_no_queries_gives_an_empty_matrix() -> None:
    def never(rows: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        raise AssertionError("no queries: nothing to re-score")

    assert two_stage_scores(torch.zeros(0, 5), never, 3).shape == (0, 5)
    assert topk_candidates(torch.zeros(0, 5), 3).shape == (0, 3)


def test_bad_arguments_raise() -> None:
    first, second, _, _ = _case(4, n_q=3, n_g=6)
    rescore = _rescore_from(second)
    for k in (0, -1, 2.5, True, None):
        with pytest.raises(ValueError, match="k must be a positive integer"):
            two_stage_scores(first, rescore, k)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="k must be a positive integer"):
            topk_candidates(first, k)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="query_chunk"):
        two_stage_scores(first, rescore, 2, query_chunk=0)
    with pytest.raises(ValueError, match=r"shape \(3, 4\)"):
        two_stage_scores(first, lambda rows, c: torch.zeros(c.shape[0], c.shape[1] + 1), 4)
    with pytest.raises(ValueError, match=r"shape \(3, 4\)"):
        two_stage_scores(first, lambda rows, c: torch.zeros(c.shape[0] * c.shape[1]), 4)
    with pytest.raises(ValueError, match=r"shape \(3, 6\)"):  # k clipped to the gallery size
        two_stage_scores(first, lambda rows, c: torch.zeros(3, 9), 9)
    with pytest.raises(ValueError, match=r"shape \(3, 2\)"):
        two_stage_scores(first, lambda rows, c: c.float().numpy(), 2)  # type: ignore[arg-type, return-value]
    with pytest.raises(ValueError, match="NaN or infinite"):
        two_stage_scores(first, lambda rows, c: torch.full(c.shape, float("nan")), 2)
    broken = first.clone()
    broken[1, 2] = float("inf")
    with pytest.raises(ValueError, match="first_stage contains NaN or infinite"):
        two_stage_scores(broken, rescore, 2)
    with pytest.raises(ValueError, match="2-D"):
        two_stage_scores(first[0], rescore, 2)
    with pytest.raises(ValueError, match="at least one gallery item"):
        two_stage_scores(first[:, :0], rescore, 2)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu() -> None:
    first, second, _, _ = _case(5, n_q=40, n_g=60, levels=3)
    cpu = two_stage_scores(first, _rescore_from(second), 9, query_chunk=16)
    gpu = two_stage_scores(first.cuda(), _rescore_from(second.cuda()), 9, query_chunk=16)
    assert gpu.device.type == "cuda" and torch.equal(gpu.cpu(), cpu)
    assert torch.equal(topk_candidates(first.cuda(), 9).cpu(), topk_candidates(first, 9))
