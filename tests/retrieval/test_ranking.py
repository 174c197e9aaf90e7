"""Tests for the exact, tie-aware ranking metrics in ``timam.retrieval.ranking``.

References are deliberately naive: a per-query NumPy loop over stable ``argsort(-score)``
(the "index" rule) and, on tiny galleries with deliberate ties, brute-force enumeration of every
ordering of the tied items (expected = mean over orderings, optimistic = max, pessimistic = min).
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from timam.retrieval import ranking
from timam.retrieval.ranking import bidirectional_metrics, counting, ranking_metrics, scoring, similarity, topk_indices

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
    """Per-query loop, stable argsort of -score: the index tie rule, in percent."""
    per_query = []
    for i in range(scores.shape[0]):
        order = np.argsort(-scores[i], kind="stable")
        per_query.append(_metrics_of_order(gl[order] == ql[i], ks))
    return {key: 100.0 * float(np.mean([m[key] for m in per_query])) for key in per_query[0]}


def _brute_force(
    scores: np.ndarray, ql: np.ndarray, gl: np.ndarray, ks: tuple[int, ...]
) -> dict[str, dict[str, float]]:
    """Every ordering of every tie group, per query; expected/optimistic/pessimistic/index."""
    acc: dict[str, dict[str, list[float]]] = {rule: {} for rule in RULES}
    for i in range(scores.shape[0]):
        row = scores[i]
        groups = [np.flatnonzero(row == value) for value in np.unique(row)[::-1]]  # index order
        outcomes = []
        for perms in itertools.product(*(itertools.permutations(g) for g in groups)):
            order = np.concatenate([np.asarray(p, dtype=np.int64) for p in perms])
            outcomes.append(_metrics_of_order(gl[order] == ql[i], ks))
        index_rule = _metrics_of_order(gl[np.argsort(-row, kind="stable")] == ql[i], ks)
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


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(params=["cache-blocked", "tiny-blocks", "per-threshold"])
def count_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test through each counting path (CPU cache blocks of default / one-row size, and
    the full-chunk pass per threshold used on GPUs)."""
    if request.param == "tiny-blocks":
        monkeypatch.setattr(counting, "_CACHE_BLOCK_FLOATS", 1)
    if request.param == "per-threshold":
        monkeypatch.setattr(counting, "_CPU_CACHE_BLOCKING", False)
    return request.param


def _random_case(seed: int, n_q: int = 40, n_g: int = 300, dim: int = 16, n_labels: int = 25):
    gen = torch.Generator().manual_seed(seed)
    gl = torch.randint(0, n_labels, (n_g,), generator=gen)
    ql = gl[torch.randint(0, n_g, (n_q,), generator=gen)]  # every query has >= 1 relevant item
    centres = torch.randn(n_labels, dim, generator=gen)
    g = centres[gl] + 1.5 * torch.randn(n_g, dim, generator=gen)
    q = centres[ql] + 1.5 * torch.randn(n_q, dim, generator=gen)
    return q, g, ql, gl


def _tied_case(seed: int, n_q: int = 6, n_g: int = 7):
    """Small integer embeddings with duplicates: many exact ties, exact scores (normalize=False)."""
    gen = torch.Generator().manual_seed(seed)
    palette = torch.randint(0, 3, (3, 4), generator=gen).float()
    g = palette[torch.randint(0, 3, (n_g,), generator=gen)]
    q = torch.randint(0, 3, (n_q, 4), generator=gen).float()
    gl = torch.randint(0, 3, (n_g,), generator=gen)
    ql = gl[torch.randint(0, n_g, (n_q,), generator=gen)]
    return q, g, ql, gl


# ----------------------------------------------------------------------------- tests


def test_scores_do_not_depend_on_the_number_of_query_rows() -> None:
    """A pair's float32 score is the same whatever chunk its query is scored in (duplicates stay
    exact ties), and agrees with float64 to float32 rounding."""
    gen = torch.Generator().manual_seed(7)
    q = F.normalize(torch.randn(70, 64, generator=gen))
    g = F.normalize(torch.randn(300, 64, generator=gen))
    g[11] = g[250]
    q[40] = q[2]
    scorer = scoring._GalleryScorer(g)
    full = scorer(q)
    for rows in (1, 5, 16, 33):
        parts = torch.cat([scorer(q[lo : lo + rows]) for lo in range(0, q.shape[0], rows)])
        assert torch.equal(parts, full), rows
    assert torch.equal(full[:, 11], full[:, 250]) and torch.equal(full[40], full[2])
    ref = q.double() @ g.double().T
    assert float((full.double() - ref).abs().max()) < 1e-6


def test_similarity_matches_numpy_float64() -> None:
    q, g, _, _ = _random_case(0)
    qn = q.numpy().astype(np.float64)
    gn = g.numpy().astype(np.float64)
    ref = (qn / np.linalg.norm(qn, axis=1, keepdims=True)) @ (gn / np.linalg.norm(gn, axis=1, keepdims=True)).T
    s = similarity(q, g)
    assert s.dtype == torch.float32 and s.shape == (40, 300)
    np.testing.assert_allclose(s.numpy(), ref, atol=1e-6)
    np.testing.assert_allclose(similarity(q, g, normalize=False).numpy(), qn @ gn.T, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_index_rule_matches_naive_numpy(seed: int, count_path: str) -> None:
    q, g, ql, gl = _random_case(seed)
    g[5] = g[17]  # a few exact duplicates on top of random data
    g[200] = g[17]
    ours = ranking_metrics(q, g, ql, gl, ks=KS, tie_rules=RULES)
    ref = _naive_index_rule(similarity(q, g).numpy(), ql.numpy(), gl.numpy(), KS)
    _assert_close(ours["index"], ref)
    # No irrelevant ties in continuous random data except the duplicates: rules nearly agree.
    assert ours["optimistic"]["mAP"] >= ours["expected"]["mAP"] >= ours["pessimistic"]["mAP"]


@pytest.mark.parametrize("seed", range(8))
def test_all_rules_match_permutation_enumeration(seed: int, count_path: str) -> None:
    q, g, ql, gl = _tied_case(seed)
    ours = ranking_metrics(q, g, ql, gl, ks=KS, tie_rules=RULES, normalize=False)
    ref = _brute_force((q @ g.T).numpy(), ql.numpy(), gl.numpy(), KS)
    for rule in RULES:
        _assert_close(ours[rule], ref[rule])


@pytest.mark.parametrize("seed", range(3))
def test_rules_match_enumeration_with_duplicate_embeddings_normalized(seed: int, count_path: str) -> None:
    gen = torch.Generator().manual_seed(100 + seed)
    base = torch.randn(3, 8, generator=gen)
    g = base[torch.tensor([0, 1, 0, 2, 1, 0, 2])]  # exact duplicate rows (rescaled ones would not be)
    q = torch.randn(5, 8, generator=gen)
    gl = torch.tensor([0, 1, 2, 0, 1, 1, 2])
    ql = torch.tensor([0, 1, 2, 1, 0])
    ours = ranking_metrics(q, g, ql, gl, ks=KS, tie_rules=RULES)
    scores = similarity(q, g).numpy()
    assert (scores[:, 0] == scores[:, 2]).all() and (scores[:, 3] == scores[:, 6]).all()
    ref = _brute_force(scores, ql.numpy(), gl.numpy(), KS)
    for rule in RULES:
        _assert_close(ours[rule], ref[rule])


def test_chunk_size_independence(count_path: str) -> None:
    q, g, ql, gl = _random_case(3, n_q=23, n_g=150)
    g[10:20] = g[0]  # a block of exact duplicates
    q[3] = g[0]
    base = ranking_metrics(q, g, ql, gl, ks=KS, tie_rules=RULES, chunk_size=10_000)
    for chunk in (1, 3, 7):
        assert ranking_metrics(q, g, ql, gl, ks=KS, tie_rules=RULES, chunk_size=chunk) == base


def test_missing_relevant_raises() -> None:
    q, g, _, _ = _random_case(4, n_q=5, n_g=20)
    gl = torch.zeros(20, dtype=torch.long)
    ql = torch.tensor([0, 0, 7, 0, 9])
    with pytest.raises(ValueError, match="query 2"):
        ranking_metrics(q, g, ql, gl)


def test_bad_arguments_raise() -> None:
    q, g, ql, gl = _random_case(5, n_q=4, n_g=20)
    with pytest.raises(ValueError):
        ranking_metrics(q, g, ql, gl, tie_rules=("random",))
    with pytest.raises(ValueError):
        ranking_metrics(q, g, ql, gl, metrics=("R@K", "nDCG"))
    with pytest.raises(TypeError):
        ranking_metrics(q, g, ql.float(), gl)
    with pytest.raises(ValueError):
        ranking_metrics(q, g, ql[:2], gl)
    with pytest.raises(ValueError, match="NaN"):
        ranking_metrics(q * float("nan"), g, ql, gl)


def test_normalize_on_and_off() -> None:
    q, g, ql, gl = _random_case(6, n_q=30, n_g=120)
    scale = torch.rand(120, generator=torch.Generator().manual_seed(0))[:, None] * 5 + 0.1
    cosine = ranking_metrics(q, g, ql, gl, ks=KS, tie_rules=("index",))
    assert ranking_metrics(q, g * scale, ql, gl, ks=KS, tie_rules=("index",)) == cosine
    raw = ranking_metrics(q, g * scale, ql, gl, ks=KS, tie_rules=("index",), normalize=False)
    ref_raw = _naive_index_rule(similarity(q, g * scale, normalize=False).numpy(), ql.numpy(), gl.numpy(), KS)
    _assert_close(raw["index"], ref_raw)
    assert raw != cosine


def test_all_scores_tied_closed_form() -> None:
    n_g, n_rel = 12, 3
    q = torch.ones(4, 6)
    g = torch.ones(n_g, 6)
    gl = torch.tensor([1] * n_rel + [0] * (n_g - n_rel))
    ql = torch.ones(4, dtype=torch.long)
    out = ranking_metrics(q, g, ql, gl, ks=(1, 5, 10), tie_rules=RULES)
    # Expected values by enumerating the C(12, 3) equally likely position sets of the relevant items.
    samples = []
    for pos in itertools.combinations(range(n_g), n_rel):
        flags = np.zeros(n_g, dtype=bool)
        flags[list(pos)] = True
        samples.append(_metrics_of_order(flags, (1, 5, 10)))
    expected = {k: 100.0 * float(np.mean([s[k] for s in samples])) for k in samples[0]}
    _assert_close(out["expected"], expected)
    assert out["expected"]["R@1"] == pytest.approx(100.0 * n_rel / n_g)
    assert out["expected"]["R@5"] == pytest.approx(100.0 * (1 - math.comb(9, 5) / math.comb(12, 5)))
    assert out["optimistic"] == {"R@1": 100.0, "R@5": 100.0, "R@10": 100.0, "mAP": 100.0, "mINP": 100.0}
    assert out["pessimistic"]["R@1"] == 0.0 and out["pessimistic"]["R@10"] == 100.0
    assert out["index"] == out["optimistic"]  # relevant items come first by index


def test_metric_subsets_agree_with_full(count_path: str) -> None:
    q, g, ql, gl = _tied_case(11, n_q=12, n_g=40)
    full = ranking_metrics(q, g, ql, gl, ks=KS, tie_rules=RULES, normalize=False)
    recall = ranking_metrics(q, g, ql, gl, ks=KS, tie_rules=RULES, normalize=False, metrics=("R@K",))
    ap = ranking_metrics(q, g, ql, gl, ks=KS, tie_rules=RULES, normalize=False, metrics=("mAP",))
    for rule in RULES:
        assert recall[rule] == {k: v for k, v in full[rule].items() if k.startswith("R@")}
        assert ap[rule] == {"mAP": full[rule]["mAP"]}
    only_opt = ranking_metrics(q, g, ql, gl, ks=KS, tie_rules=("optimistic",), normalize=False)
    assert only_opt["optimistic"] == full["optimistic"]


def test_default_keys_and_percent_range() -> None:
    q, g, ql, gl = _random_case(7)
    out = ranking_metrics(q, g, ql, gl)
    assert list(out) == ["expected"]
    assert list(out["expected"]) == ["R@1", "R@5", "R@10", "mAP", "mINP"]
    assert all(0.0 <= v <= 100.0 for v in out["expected"].values())


def test_bidirectional_matches_two_calls() -> None:
    gen = torch.Generator().manual_seed(8)
    images = torch.randn(30, 16, generator=gen)
    texts = images.repeat_interleave(5, dim=0) + 0.8 * torch.randn(150, 16, generator=gen)
    texts[7] = texts[12]  # duplicate caption of another image: a cross-label tie
    image_labels = torch.arange(30)
    text_labels = image_labels.repeat_interleave(5)
    out = bidirectional_metrics(images, texts, image_labels, text_labels, tie_rules=RULES)
    assert set(out) == {"image_to_text", "text_to_image"}
    assert out["image_to_text"] == ranking_metrics(images, texts, image_labels, text_labels, tie_rules=RULES)
    assert out["text_to_image"] == ranking_metrics(texts, images, text_labels, image_labels, tie_rules=RULES)
    # The duplicate caption ties for its own and for the other image.
    assert out["image_to_text"]["optimistic"]["mAP"] >= out["image_to_text"]["pessimistic"]["mAP"]


def _paired_tied_case(seed: int, n_images: int, per_image: int, n_classes: int | None):
    """Integer image/text embeddings (exact scores, many ties); labels by image or by class."""
    gen = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 3, (n_images, 3), generator=gen).float()
    owner = torch.arange(n_images).repeat_interleave(per_image)
    texts = images[owner] + torch.randint(-1, 2, (owner.numel(), 3), generator=gen).float()
    image_labels = torch.arange(n_images) if n_classes is None else torch.arange(n_images) % n_classes
    return images, texts, image_labels, image_labels[owner]


@pytest.mark.parametrize(
    ("seed", "n_images", "per_image", "n_classes", "chunk"),
    [(0, 40, 5, None, 7), (1, 40, 5, None, 1024), (2, 30, 3, 6, 4), (3, 6, 2, None, 1), (4, 50, 2, 10, 16)],
)
def test_bidirectional_recall_single_pass_matches_two_calls(
    seed: int, n_images: int, per_image: int, n_classes: int | None, chunk: int, count_path: str
) -> None:
    images, texts, il, tl = _paired_tied_case(seed, n_images, per_image, n_classes)
    ks = (1, 2, 5, 10)
    kwargs = {"ks": ks, "tie_rules": RULES, "normalize": False, "metrics": ("R@K",), "chunk_size": chunk}
    out = bidirectional_metrics(images, texts, il, tl, **kwargs)
    assert out["image_to_text"] == ranking_metrics(images, texts, il, tl, **kwargs)
    ref = ranking_metrics(texts, images, tl, il, **kwargs)
    for rule in RULES:
        _assert_close(out["text_to_image"][rule], ref[rule], tol=1e-12)
    only_opt = bidirectional_metrics(images, texts, il, tl, **{**kwargs, "tie_rules": ("optimistic",)})
    assert only_opt["text_to_image"]["optimistic"] == out["text_to_image"]["optimistic"]


def test_bidirectional_recall_single_pass_random_normalized() -> None:
    gen = torch.Generator().manual_seed(13)
    images = torch.randn(64, 32, generator=gen)
    texts = images.repeat_interleave(5, dim=0) + 1.2 * torch.randn(320, 32, generator=gen)
    texts[[3, 40, 41, 200]] = texts[100].clone()  # identical captions of different images
    il = torch.arange(64)
    tl = il.repeat_interleave(5)
    out = bidirectional_metrics(images, texts, il, tl, tie_rules=RULES, metrics=("R@K",), chunk_size=20)
    full = bidirectional_metrics(images, texts, il, tl, tie_rules=RULES)
    for direction in out:
        for rule in RULES:
            _assert_close(out[direction][rule], {k: v for k, v in full[direction][rule].items() if k.startswith("R@")})


def test_topk_indices_stable_tie_breaking() -> None:
    q, g, _, _ = _random_case(9, n_q=13, n_g=60)
    g[[4, 9, 33, 50]] = g[20].clone()  # ties, some straddling the k-th position
    q[0] = g[20]
    scores, idx = topk_indices(q, g, 6, chunk_size=5)
    full = similarity(q, g).numpy()
    ref_idx = np.argsort(-full, axis=1, kind="stable")[:, :6]
    np.testing.assert_array_equal(idx.numpy(), ref_idx)
    np.testing.assert_array_equal(scores.numpy(), np.take_along_axis(full, ref_idx, axis=1))
    with pytest.raises(ValueError):
        topk_indices(q, g, 61)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu() -> None:
    q, g, ql, gl = _tied_case(12, n_q=12, n_g=40)
    cpu = ranking_metrics(q, g, ql, gl, ks=KS, tie_rules=RULES, normalize=False)
    gpu = ranking_metrics(q.cuda(), g.cuda(), ql.cuda(), gl.cuda(), ks=KS, tie_rules=RULES, normalize=False)
    for rule in RULES:
        _assert_close(gpu[rule], cpu[rule])


def test_per_query_metrics_average_to_ranking_metrics() -> None:
    q, g, ql, gl = _random_case(11)
    g[7] = g[3]  # ties
    per_query = ranking.per_query_metrics(q, g, ql, gl, ks=KS, tie_rule="expected")
    means = ranking_metrics(q, g, ql, gl, ks=KS, tie_rules=("expected",))["expected"]
    assert set(per_query) == set(means)
    for key, values in per_query.items():
        assert values.shape == (40,)
        assert float(values.mean()) * 100.0 == pytest.approx(means[key], abs=1e-9)
    scores, qn, gn = similarity(q, g).numpy(), ql.numpy(), gl.numpy()
    index_rule = ranking.per_query_metrics(q, g, ql, gl, ks=KS, tie_rule="index")
    for i in range(scores.shape[0]):  # query by query against the naive stable argsort
        naive = _metrics_of_order(gn[np.argsort(-scores[i], kind="stable")] == qn[i], KS)
        for key, value in naive.items():
            assert float(index_rule[key][i]) == pytest.approx(value, abs=1e-12), (i, key)


def test_similarity_with_an_empty_gallery_is_empty() -> None:
    assert similarity(torch.randn(3, 8), torch.zeros(0, 8)).shape == (3, 0)
