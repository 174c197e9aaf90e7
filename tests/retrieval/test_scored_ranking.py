"""Tests for the score-matrix entry points of ``timam.retrieval.ranking`` (``scored.py``).

The embedding entry points are the reference: with the float32 matrix of ``similarity`` (the very
product ``ranking_metrics`` computes chunk by chunk, see ``scoring._GalleryScorer``) the results must
be bit for bit equal under every tie rule, duplicates included. Independently, a naive per-query
stable ``argsort(-score)`` checks the index rule and enumeration of every ordering of the tied
items checks every rule on score matrices that no embedding made.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from timam.retrieval import ranking
from timam.retrieval.ranking import (
    bidirectional_metrics,
    bidirectional_score_metrics,
    counting,
    per_query_metrics,
    per_query_score_metrics,
    ranking_metrics,
    score_ranking_metrics,
    scoring,
    similarity,
)

KS = (1, 2, 3, 5)
RULES = ("expected", "optimistic", "pessimistic", "index")


# ----------------------------------------------------------------------------- references


def _metrics_of_order(relevant_in_order: np.ndarray, ks: tuple[int, ...]) -> dict[str, float]:
    """R@K (hit), AP and INP of one ranked list given as relevance flags in rank order."""
    ranks = np.flatnonzero(relevant_in_order) + 1
    out = {f"R@{k}": float(ranks[0] <= k) for k in ks}
    out["mAP"] = float(np.mean(np.arange(1, ranks.size + 1) / ranks))
    out["mINP"] = float(ranks.size / ranks[-1])
    return out


def _naive_index_rule(scores: np.ndarray, ql: np.ndarray, gl: np.ndarray, ks: tuple[int, ...]) -> dict[str, float]:
    """One query at a time: stable argsort of -score (the index tie rule), mean in percent."""
    per_query = [
        _metrics_of_order(gl[np.argsort(-row, kind="stable")] == q, ks) for row, q in zip(scores, ql, strict=True)
    ]
    return {key: 100.0 * float(np.mean([m[key] for m in per_query])) for key in per_query[0]}


def _enumerated(scores: np.ndarray, ql: np.ndarray, gl: np.ndarray, ks: tuple[int, ...]) -> dict[str, dict[str, float]]:
    """Every ordering of every tie group per query: mean (expected), max (optimistic), min (pessimistic)."""
    acc: dict[str, dict[str, list[float]]] = {rule: {} for rule in RULES}
    for row, q in zip(scores, ql, strict=True):
        groups = [np.flatnonzero(row == value) for value in np.unique(row)[::-1]]
        outcomes = [
            _metrics_of_order(gl[np.concatenate([np.asarray(p, dtype=np.int64) for p in perms])] == q, ks)
            for perms in itertools.product(*(itertools.permutations(g) for g in groups))
        ]
        index_rule = _metrics_of_order(gl[np.argsort(-row, kind="stable")] == q, ks)
        for key in outcomes[0]:
            values = np.array([o[key] for o in outcomes])
            acc["expected"].setdefault(key, []).append(values.mean())
            acc["optimistic"].setdefault(key, []).append(values.max())
            acc["pessimistic"].setdefault(key, []).append(values.min())
            acc["index"].setdefault(key, []).append(index_rule[key])
    return {rule: {k: 100.0 * float(np.mean(v)) for k, v in d.items()} for rule, d in acc.items()}


def _assert_close(ours: dict[str, float], ref: dict[str, float], tol: float = 1e-9) -> None:
    assert set(ours) == set(ref)
    for key in ref:
        assert ours[key] == pytest.approx(ref[key], abs=tol), (key, ours[key], ref[key])


# ----------------------------------------------------------------------------- fixtures and data


@pytest.fixture(params=["cache-blocked", "per-threshold"])
def count_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both counting paths: CPU cache blocks, and the full-chunk pass per threshold used on GPUs."""
    if request.param == "per-threshold":
        monkeypatch.setattr(counting, "_CPU_CACHE_BLOCKING", False)
    return request.param


def _paired(seed: int, n_images: int = 24, per_image: int = 5, dim: int = 16):
    """Image/caption embeddings, each caption labelled by its image, with duplicated captions
    (exact ties, some across images) and a duplicated image."""
    gen = torch.Generator().manual_seed(seed)
    images = torch.randn(n_images, dim, generator=gen)
    texts = images.repeat_interleave(per_image, dim=0) + 0.9 * torch.randn(n_images * per_image, dim, generator=gen)
    texts[[3, 40, 41, 77]] = texts[100].clone()  # the same caption written for different images
    texts[6] = texts[5].clone()  # a duplicated caption of one image
    images[9] = images[2].clone()  # two identical images
    image_labels = torch.arange(n_images)
    return images, texts, image_labels, image_labels.repeat_interleave(per_image)


def _tied_scores(seed: int, n_q: int = 6, n_g: int = 7, levels: int = 3):
    """A small score matrix with many exact ties that no embedding produced."""
    gen = torch.Generator().manual_seed(seed)
    scores = torch.randint(0, levels, (n_q, n_g), generator=gen).float() * 0.25 - 0.1
    gl = torch.randint(0, 3, (n_g,), generator=gen)
    ql = gl[torch.randint(0, n_g, (n_q,), generator=gen)]
    return scores, ql, gl


# ----------------------------------------------------------------------------- tests


def test_similarity_is_the_matrix_the_embedding_path_ranks() -> None:
    """``similarity`` is ``_GalleryScorer(gallery)(queries)``, the product ``ranking_metrics`` runs
    per chunk; a pair's score does not depend on the chunk, so the matrix is the one it ranks."""
    images, texts, _, _ = _paired(0)
    q, g = F.normalize(texts), F.normalize(images)
    full = similarity(texts, images)
    assert full.dtype == torch.float32
    scorer = scoring._GalleryScorer(g)
    assert torch.equal(torch.cat([scorer(q[lo : lo + 7]) for lo in range(0, q.shape[0], 7)]), full)
    assert torch.equal(full[:, 9], full[:, 2]) and torch.equal(full[3], full[100])  # exact ties


@pytest.mark.parametrize("chunk", [7, 1024])
def test_equals_ranking_metrics_bit_for_bit(chunk: int, count_path: str) -> None:
    images, texts, il, tl = _paired(1)
    kwargs = {"ks": KS, "tie_rules": RULES, "chunk_size": chunk}
    for q, g, ql, gl in ((texts, images, tl, il), (images, texts, il, tl)):
        ours = score_ranking_metrics(similarity(q, g), ql, gl, **kwargs)
        assert ours == ranking_metrics(q, g, ql, gl, **kwargs)
        recall = score_ranking_metrics(similarity(q, g), ql, gl, metrics=("R@K",), **kwargs)
        assert recall == ranking_metrics(q, g, ql, gl, metrics=("R@K",), **kwargs)
    # The ties are real: they separate the optimistic and pessimistic bounds.
    i2t = score_ranking_metrics(similarity(images, texts), il, tl, **kwargs)
    assert i2t["optimistic"]["mAP"] > i2t["pessimistic"]["mAP"]


def test_unnormalized_scores_equal_the_unnormalized_embedding_path() -> None:
    images, texts, il, tl = _paired(2)
    ours = score_ranking_metrics(similarity(texts, images, normalize=False), tl, il, ks=KS, tie_rules=RULES)
    assert ours == ranking_metrics(texts, images, tl, il, ks=KS, tie_rules=RULES, normalize=False)


@pytest.mark.parametrize("rule", RULES)
def test_per_query_equals_per_query_metrics_bit_for_bit(rule: str) -> None:
    images, texts, il, tl = _paired(3)
    ours = per_query_score_metrics(similarity(texts, images), tl, il, ks=KS, tie_rule=rule, chunk_size=16)
    ref = per_query_metrics(texts, images, tl, il, ks=KS, tie_rule=rule, chunk_size=16)
    assert list(ours) == list(ref)
    for key in ref:
        assert ours[key].dtype == torch.float64 and torch.equal(ours[key], ref[key]), key


@pytest.mark.parametrize("metrics", [ranking.METRICS, ("R@K",), ("mAP", "mINP")])
def test_bidirectional_equals_bidirectional_metrics(metrics: tuple[str, ...]) -> None:
    images, texts, il, tl = _paired(4)
    t2i = similarity(texts, images)
    kwargs = {"ks": KS, "tie_rules": RULES, "chunk_size": 10, "metrics": metrics}
    ours = bidirectional_score_metrics(t2i, il, tl, **kwargs)
    assert list(ours) == ["image_to_text", "text_to_image"]
    # Each direction is exactly the one-direction entry point on the matrix or its transpose.
    assert ours["image_to_text"] == score_ranking_metrics(t2i.T, il, tl, **kwargs)
    assert ours["text_to_image"] == score_ranking_metrics(t2i, tl, il, **kwargs)
    ref = bidirectional_metrics(images, texts, il, tl, **kwargs)
    assert ours["image_to_text"] == ranking_metrics(images, texts, il, tl, **kwargs)
    if torch.equal(t2i.T, similarity(images, texts)):  # the product is symmetric on this backend
        assert ours["image_to_text"] == ref["image_to_text"]
    for rule in RULES:
        # Without mAP/mINP the embedding path shares one pass, whose text->image closed forms
        # are evaluated from differently shaped counts: equal up to float64 rounding.
        _assert_close(ours["text_to_image"][rule], ref["text_to_image"][rule], tol=1e-12)
    if metrics != ("R@K",):
        assert ours["text_to_image"] == ref["text_to_image"]


@pytest.mark.parametrize("seed", range(3))
def test_index_rule_matches_naive_argsort(seed: int, count_path: str) -> None:
    gen = torch.Generator().manual_seed(20 + seed)
    scores = torch.randn(30, 90, generator=gen)
    scores[:, 10:20] = scores[:, :1]  # a block of tied items in every row
    scores = (scores * 4).round() / 4  # and many more ties from rounding
    gl = torch.randint(0, 12, (90,), generator=gen)
    ql = gl[torch.randint(0, 90, (30,), generator=gen)]
    ours = score_ranking_metrics(scores, ql, gl, ks=KS, tie_rules=RULES, chunk_size=8)
    _assert_close(ours["index"], _naive_index_rule(scores.numpy(), ql.numpy(), gl.numpy(), KS))
    per_query = per_query_score_metrics(scores, ql, gl, ks=KS, tie_rule="index", chunk_size=8)
    for i in range(scores.shape[0]):
        naive = _metrics_of_order(gl.numpy()[np.argsort(-scores[i].numpy(), kind="stable")] == ql.numpy()[i], KS)
        for key, value in naive.items():
            assert float(per_query[key][i]) == pytest.approx(value, abs=1e-12), (i, key)


@pytest.mark.parametrize("seed", range(4))
def test_all_rules_match_enumeration_on_tied_scores(seed: int) -> None:
    scores, ql, gl = _tied_scores(seed)
    ours = score_ranking_metrics(scores, ql, gl, ks=KS, tie_rules=RULES, chunk_size=4)
    ref = _enumerated(scores.numpy(), ql.numpy(), gl.numpy(), KS)
    for rule in RULES:
        _assert_close(ours[rule], ref[rule])


def test_scores_are_cast_to_float32_and_not_modified() -> None:
    scores, ql, gl = _tied_scores(5, n_q=8, n_g=9)
    before = scores.clone()
    ref = score_ranking_metrics(scores, ql, gl, ks=KS, tie_rules=RULES)
    assert torch.equal(scores, before)
    assert score_ranking_metrics(scores.double(), ql, gl, ks=KS, tie_rules=RULES) == ref
    # Non-contiguous input (a transposed view) is counted like its contiguous copy.
    assert score_ranking_metrics(scores.T.contiguous().T, ql, gl, ks=KS, tie_rules=RULES) == ref
    # float64 values that differ only below float32 resolution become exact ties.
    near = torch.tensor([[0.5, 0.5 + 1e-12, 0.1]], dtype=torch.float64)
    tied = score_ranking_metrics(near, torch.tensor([1]), torch.tensor([0, 1, 2]), ks=(1,), tie_rules=RULES)
    assert tied["optimistic"]["R@1"] == 100.0 and tied["pessimistic"]["R@1"] == 0.0


def test_bad_inputs_raise() -> None:
    scores, ql, gl = _tied_scores(6)  # 6 queries x 7 gallery items
    with pytest.raises(ValueError, match="2-D"):
        score_ranking_metrics(scores[0], ql, gl)
    with pytest.raises(ValueError, match="2-D"):
        score_ranking_metrics(scores.numpy(), ql, gl)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="2-D"):
        score_ranking_metrics(scores[None], ql, gl)
    for bad in (float("nan"), float("inf"), float("-inf")):
        broken = scores.clone()
        broken[2, 3] = bad
        with pytest.raises(ValueError, match="NaN or infinite"):
            score_ranking_metrics(broken, ql, gl)
    with pytest.raises(ValueError, match="at least one"):
        score_ranking_metrics(scores[:0], ql[:0], gl)
    with pytest.raises(ValueError, match="at least one"):
        score_ranking_metrics(scores[:, :0], ql, gl[:0])
    with pytest.raises(ValueError, match="real-valued"):
        score_ranking_metrics(scores.to(torch.complex64), ql, gl)
    with pytest.raises(ValueError, match=r"query_labels must be 1-D with 6 entries.*\(6, 7\)"):
        score_ranking_metrics(scores, ql[:5], gl)
    with pytest.raises(ValueError, match=r"gallery_labels must be 1-D with 7 entries"):
        score_ranking_metrics(scores, ql, gl[:6])
    with pytest.raises(ValueError, match=r"gallery_labels must be 1-D with 7 entries"):
        score_ranking_metrics(scores, ql, gl[None])
    with pytest.raises(ValueError, match="has no relevant gallery item"):
        score_ranking_metrics(scores, torch.full((6,), 99), gl)
    with pytest.raises(TypeError, match="integer"):
        score_ranking_metrics(scores, ql.float(), gl)
    with pytest.raises(ValueError, match="tie_rules"):
        score_ranking_metrics(scores, ql, gl, tie_rules=("median",))
    with pytest.raises(ValueError, match="ks"):
        score_ranking_metrics(scores, ql, gl, ks=(0,))
    with pytest.raises(ValueError, match="chunk_size"):
        per_query_score_metrics(scores, ql, gl, chunk_size=0)
    with pytest.raises(ValueError, match="metrics"):
        per_query_score_metrics(scores, ql, gl, metrics=("NDCG",))
    # Bidirectional: rows are captions (text_labels), columns images (image_labels).
    t2i, tl, il = scores, torch.arange(6) % 3, torch.arange(7) % 3
    bidirectional_score_metrics(t2i, il, tl, ks=(1,))
    with pytest.raises(ValueError, match=r"text_labels must be 1-D with 6 entries \(one per row \(caption\)"):
        bidirectional_score_metrics(t2i, tl, il)  # labels swapped
    with pytest.raises(ValueError, match=r"image_labels must be 1-D with 7 entries"):
        bidirectional_score_metrics(t2i, il[:3], tl)
    with pytest.raises(ValueError, match="text_to_image_scores contains NaN"):
        bidirectional_score_metrics(torch.full_like(t2i, float("nan")), il, tl)


def test_exported_from_the_package() -> None:
    for name in ("score_ranking_metrics", "per_query_score_metrics", "bidirectional_score_metrics"):
        assert name in ranking.__all__ and callable(getattr(ranking, name))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_scores_match_cpu() -> None:
    scores, ql, gl = _tied_scores(7, n_q=12, n_g=40)
    cpu = score_ranking_metrics(scores, ql, gl, ks=KS, tie_rules=RULES)
    gpu = score_ranking_metrics(scores.cuda(), ql, gl, ks=KS, tie_rules=RULES)  # labels follow the scores
    for rule in RULES:
        _assert_close(gpu[rule], cpu[rule])
