"""Tests for CMPM and CMPC against naive loop references."""

from __future__ import annotations

import math

import pytest
import torch

from timam.losses import NormSoftmaxClassifier, cmpc_loss, cmpm_loss, cmpm_loss_from_matches


def _naive_cmpm(queries: list[list[float]], keys: list[list[float]], ids: list[int], eps: float = 1e-8) -> float:
    return _naive_cmpm_of_matches(queries, keys, [[a == b for b in ids] for a in ids], eps)


def _naive_cmpm_of_matches(
    queries: list[list[float]], keys: list[list[float]], matches: list[list[bool]], eps: float = 1e-8
) -> float:
    """``matches[i][j]``: query i matches key j."""
    n = len(matches)
    total = 0.0
    for i in range(n):
        logits = []
        for j in range(n):
            norm = math.sqrt(sum(v * v for v in keys[j]))
            logits.append(sum(a * b / norm for a, b in zip(queries[i], keys[j], strict=True)))
        z = sum(math.exp(v) for v in logits)
        p = [math.exp(v) / z for v in logits]
        q = [(1.0 / sum(matches[i]) if matches[i][j] else 0.0) for j in range(n)]
        total += sum(p[j] * (math.log(p[j]) - math.log(q[j] + eps)) for j in range(n))
    return total / n


@pytest.mark.parametrize("ids", [[7, 7, -2, 100], [0, 1, 2, 3], [5, 5, 5, 5], [3, 1, 3, 1]])
def test_cmpm_matches_naive_reference(ids: list[int]) -> None:
    torch.manual_seed(0)
    image = torch.randn(4, 3, dtype=torch.float64)
    text = torch.randn(4, 3, dtype=torch.float64)
    i2t, t2i = cmpm_loss(image, text, torch.tensor(ids))
    assert i2t.item() == pytest.approx(_naive_cmpm(image.tolist(), text.tolist(), ids), rel=1e-9)
    assert t2i.item() == pytest.approx(_naive_cmpm(text.tolist(), image.tolist(), ids), rel=1e-9)


def test_cmpm_from_an_asymmetric_match_matrix_reads_it_both_ways() -> None:
    torch.manual_seed(1)
    image = torch.randn(4, 3, dtype=torch.float64)
    text = torch.randn(4, 3, dtype=torch.float64)
    matches = torch.eye(4, dtype=torch.bool)
    matches[0, 2] = matches[3, 1] = True  # image 0 also matches text 2, image 3 text 1; not the reverse
    i2t, t2i = cmpm_loss_from_matches(image, text, matches)
    assert i2t.item() == pytest.approx(
        _naive_cmpm_of_matches(image.tolist(), text.tolist(), matches.tolist()), rel=1e-9
    )
    assert t2i.item() == pytest.approx(
        _naive_cmpm_of_matches(text.tolist(), image.tolist(), matches.t().tolist()), rel=1e-9
    )
    assert i2t.item() != pytest.approx(cmpm_loss(image, text, torch.arange(4))[0].item(), rel=1e-6)


def test_cmpm_is_non_negative_on_random_data() -> None:
    gen = torch.Generator().manual_seed(123)
    for _ in range(300):
        batch = int(torch.randint(2, 9, (1,), generator=gen))
        n_ids = int(torch.randint(1, batch + 1, (1,), generator=gen))
        ids = torch.randint(0, n_ids, (batch,), generator=gen) * 17 - 5  # arbitrary id values
        scale = float(torch.rand(1, generator=gen)) * 5.0
        image = torch.randn(batch, 6, generator=gen) * scale
        text = torch.randn(batch, 6, generator=gen) * scale
        i2t, t2i = cmpm_loss(image, text, ids)
        assert i2t.item() >= 0.0 and t2i.item() >= 0.0, (ids, i2t, t2i)


def test_cmpm_uses_sum_normalisation_not_l2() -> None:
    # One identity: q is uniform (0.25). Zero images give a uniform p, so KL is 0;
    # an L2-normalised q (0.5 each) would give log(0.25 / 0.5) < 0 instead.
    image = torch.zeros(4, 3)
    text = torch.randn(4, 3)
    i2t, _ = cmpm_loss(image, text, torch.zeros(4, dtype=torch.long))
    assert abs(i2t.item()) < 1e-6


@pytest.mark.parametrize("ids", [[0, 1, 2, 3], [4, 4, 9, 9]])
def test_cmpm_is_zero_when_perfectly_matched(ids: list[int]) -> None:
    ids_t = torch.tensor(ids)
    basis = torch.eye(4)[torch.unique(ids_t, return_inverse=True)[1]]  # one direction per identity
    image, text = 60.0 * basis, 60.0 * basis
    i2t, t2i = cmpm_loss(image, text, ids_t)
    assert i2t.item() == pytest.approx(0.0, abs=1e-6)
    assert t2i.item() == pytest.approx(0.0, abs=1e-6)
    # and clearly positive when the pairing is wrong
    i2t_wrong, _ = cmpm_loss(image, text.flip(0), torch.tensor([0, 1, 2, 3]))
    assert i2t_wrong.item() > 1.0


def test_cmpm_gradcheck() -> None:
    torch.manual_seed(3)
    image = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    text = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    ids = torch.tensor([1, 1, 2])
    assert torch.autograd.gradcheck(lambda a, b: sum(cmpm_loss(a, b, ids)), (image, text))


def test_cmpm_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError):
        cmpm_loss(torch.randn(3, 4), torch.randn(2, 4), torch.arange(3))
    with pytest.raises(ValueError):
        cmpm_loss(torch.randn(3, 4), torch.randn(3, 4), torch.arange(2))


def test_cmpc_projection_by_hand() -> None:
    seen: list[torch.Tensor] = []

    def recorder(z: torch.Tensor) -> torch.Tensor:
        seen.append(z.detach().clone())
        return torch.zeros(z.shape[0], 2)

    image = torch.tensor([[2.0, 0.0]])
    text = torch.tensor([[1.0, 1.0]])
    image_loss, text_loss = cmpc_loss(image, text, torch.tensor([0]), recorder)
    # image on unit text (1,1)/sqrt2: (2/sqrt2) * (1,1)/sqrt2 = (1, 1)
    torch.testing.assert_close(seen[0], torch.tensor([[1.0, 1.0]]))
    # text on unit image (1,0): (1, 0)
    torch.testing.assert_close(seen[1], torch.tensor([[1.0, 0.0]]))
    assert image_loss.item() == pytest.approx(math.log(2.0))
    assert text_loss.item() == pytest.approx(math.log(2.0))


def test_cmpc_matches_naive_reference() -> None:
    torch.manual_seed(4)
    clf = NormSoftmaxClassifier(3, 4).double()
    with torch.no_grad():
        clf.bias.uniform_(-1.0, 1.0)
    image = torch.randn(3, 3, dtype=torch.float64)
    text = torch.randn(3, 3, dtype=torch.float64)
    labels = torch.tensor([3, 0, 3])
    image_loss, text_loss = cmpc_loss(image, text, labels, clf)

    w = clf.normalized_weight().tolist()
    b = clf.bias.tolist()

    def naive(a: list[list[float]], c: list[list[float]]) -> float:
        total = 0.0
        for row_a, row_c, label in zip(a, c, labels.tolist(), strict=True):
            norm_c = math.sqrt(sum(v * v for v in row_c))
            unit = [v / norm_c for v in row_c]
            coef = sum(x * u for x, u in zip(row_a, unit, strict=True))
            proj = [coef * u for u in unit]
            logits = [sum(p * wk for p, wk in zip(proj, w[k], strict=True)) + b[k] for k in range(len(w))]
            total += math.log(sum(math.exp(v) for v in logits)) - logits[label]
        return total / len(a)

    assert image_loss.item() == pytest.approx(naive(image.tolist(), text.tolist()), rel=1e-9)
    assert text_loss.item() == pytest.approx(naive(text.tolist(), image.tolist()), rel=1e-9)


def test_cmpm_from_scores_is_a_kl_divergence_of_tempered_scores() -> None:
    """Against a naive per-row KL(softmax(s / t) || q); near zero when the scores already match."""
    from timam.losses import cmpm_loss_from_scores

    torch.manual_seed(0)
    scores = torch.rand(5, 5) * 2 - 1
    matches = torch.eye(5, dtype=torch.bool)
    matches[1, 2] = matches[2, 1] = True
    image_to_text, text_to_image = cmpm_loss_from_scores(scores, matches, temperature=0.1)

    def naive(s: torch.Tensor, m: torch.Tensor) -> float:
        total = 0.0
        for row, match in zip(s.tolist(), m.tolist(), strict=True):
            exps = [math.exp(v / 0.1) for v in row]
            p = [e / sum(exps) for e in exps]
            q = [float(x) / sum(match) for x in match]
            total += sum(pi * (math.log(pi) - math.log(qi + 1e-8)) for pi, qi in zip(p, q, strict=True))
        return total / len(row)

    assert image_to_text.item() == pytest.approx(naive(scores, matches), rel=1e-5)
    assert text_to_image.item() == pytest.approx(naive(scores.t(), matches.t()), rel=1e-5)
    perfect = torch.where(torch.eye(5, dtype=torch.bool), 1.0, -1.0)
    low, _ = cmpm_loss_from_scores(perfect, torch.eye(5, dtype=torch.bool), temperature=0.05)
    assert abs(low.item()) < 1e-6 < image_to_text.item()
    with pytest.raises(ValueError, match="temperature"):
        cmpm_loss_from_scores(scores, matches, temperature=0.0)
