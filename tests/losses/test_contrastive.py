"""InfoNCE, SDM and SigLIP against references written here from the papers' formulas, and against
open_clip's own ClipLoss and SigLipLoss on the same inputs."""

from __future__ import annotations

import math

import pytest
import torch

from timam.losses import LogitBias, LogitScale, info_nce_loss, sdm_loss, siglip_loss


def _unit(rows: list[list[float]]) -> list[list[float]]:
    return [[v / math.sqrt(sum(x * x for x in row)) for v in row] for row in rows]


def _dot(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


def _naive_info_nce(images: list[list[float]], texts: list[list[float]], scale: float) -> float:
    """CLIP: the mean of the row and column cross-entropies of s * cos against the diagonal."""
    v, t = _unit(images), _unit(texts)
    n = len(v)
    logits = [[scale * _dot(v[i], t[j]) for j in range(n)] for i in range(n)]
    rows = sum(-logits[i][i] + math.log(sum(math.exp(x) for x in logits[i])) for i in range(n)) / n
    cols = sum(-logits[j][j] + math.log(sum(math.exp(logits[i][j]) for i in range(n))) for j in range(n)) / n
    return (rows + cols) / 2


def _naive_sdm_direction(queries, keys, matches, tau, eps=1e-8) -> float:
    """IRRA, one direction: mean_i sum_j p_ij log(p_ij / (q_ij + eps)), p = softmax(cos / tau)."""
    q_unit, k_unit = _unit(queries), _unit(keys)
    n = len(queries)
    total = 0.0
    for i in range(n):
        logits = [_dot(q_unit[i], k_unit[j]) / tau for j in range(n)]
        z = sum(math.exp(x) for x in logits)
        p = [math.exp(x) / z for x in logits]
        q = [(1.0 / sum(matches[i])) if matches[i][j] else 0.0 for j in range(n)]
        total += sum(p[j] * (math.log(p[j]) - math.log(q[j] + eps)) for j in range(n))
    return total / n


def _naive_siglip(images, texts, scale: float, bias: float, matches) -> float:
    """SigLIP Algorithm 1: -(1/n) sum_ij log sigmoid(z_ij (s x_i . y_j + b))."""
    v, t = _unit(images), _unit(texts)
    n = len(v)
    total = 0.0
    for i in range(n):
        for j in range(n):
            z = 1.0 if matches[i][j] else -1.0
            total += math.log(1.0 / (1.0 + math.exp(-z * (scale * _dot(v[i], t[j]) + bias))))
    return -total / n


def _batch(seed: int, n: int = 5, d: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=generator, dtype=torch.float64), torch.randn(
        n, d, generator=generator, dtype=torch.float64
    )


@pytest.mark.parametrize("scale", [1.0, 1 / 0.07, 100.0])
def test_info_nce_matches_the_naive_reference(scale):
    image, text = _batch(0)
    i2t, t2i = info_nce_loss(image, text, torch.tensor(scale, dtype=torch.float64))
    assert (i2t + t2i).item() == pytest.approx(_naive_info_nce(image.tolist(), text.tolist(), scale), rel=1e-10)
    assert i2t.item() != pytest.approx(t2i.item(), rel=1e-6)  # two directions, not one counted twice


def test_info_nce_equals_open_clips_clip_loss():
    from open_clip.loss import ClipLoss

    image, text = _batch(1, n=8, d=6)
    scale = torch.tensor(1 / 0.07, dtype=torch.float64)
    ours = sum(info_nce_loss(image, text, scale))
    unit = torch.nn.functional.normalize
    theirs = ClipLoss()(unit(image, dim=1), unit(text, dim=1), scale)
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-12)


@pytest.mark.parametrize("ids", [[0, 1, 2, 3, 4], [7, 7, 1, 1, 1], [3, 3, 3, 3, 3]])
def test_sdm_matches_the_naive_reference(ids):
    image, text = _batch(2)
    matches = torch.tensor([[a == b for b in ids] for a in ids])
    i2t, t2i = sdm_loss(image, text, matches, temperature=0.02)
    expected_i2t = _naive_sdm_direction(image.tolist(), text.tolist(), matches.tolist(), 0.02)
    expected_t2i = _naive_sdm_direction(text.tolist(), image.tolist(), matches.t().tolist(), 0.02)
    assert i2t.item() == pytest.approx(expected_i2t, rel=1e-9)
    assert t2i.item() == pytest.approx(expected_t2i, rel=1e-9)


def test_sdm_is_near_zero_when_the_similarities_already_match_the_identities():
    ids = torch.tensor([0, 0, 1, 1])
    basis = torch.eye(2, dtype=torch.float64)[ids]  # same identity: same direction; else orthogonal
    i2t, t2i = sdm_loss(basis, basis, ids[:, None] == ids[None, :], temperature=0.001)
    assert abs(i2t.item()) < 1e-6 and abs(t2i.item()) < 1e-6


@pytest.mark.parametrize("diagonal", [True, False])
def test_siglip_matches_the_naive_reference(diagonal):
    image, text = _batch(3)
    ids = [0, 1, 1, 2, 3]
    matches = torch.eye(5, dtype=torch.bool) if diagonal else torch.tensor([[a == b for b in ids] for a in ids])
    scale, bias = torch.tensor(10.0, dtype=torch.float64), torch.tensor(-10.0, dtype=torch.float64)
    loss = siglip_loss(image, text, scale, bias, None if diagonal else matches)
    assert loss.item() == pytest.approx(_naive_siglip(image.tolist(), text.tolist(), 10.0, -10.0, matches), rel=1e-10)


def test_siglip_equals_open_clips_siglip_loss():
    from open_clip.loss import SigLipLoss

    image, text = _batch(4, n=8, d=6)
    scale, bias = torch.tensor(10.0, dtype=torch.float64), torch.tensor(-10.0, dtype=torch.float64)
    unit = torch.nn.functional.normalize
    theirs = SigLipLoss()(unit(image, dim=1), unit(text, dim=1), scale, bias)
    assert siglip_loss(image, text, scale, bias).item() == pytest.approx(theirs.item(), rel=1e-12)


def test_the_losses_have_exact_gradients():
    image, text = _batch(5, n=4, d=3)
    image.requires_grad_(True)
    text.requires_grad_(True)
    scale = torch.tensor(3.0, dtype=torch.float64, requires_grad=True)
    bias = torch.tensor(-1.0, dtype=torch.float64, requires_grad=True)
    matches = torch.tensor([[1, 0, 0, 1], [0, 1, 0, 0], [0, 0, 1, 0], [1, 0, 0, 1]], dtype=torch.bool)
    assert torch.autograd.gradcheck(lambda v, t, s: sum(info_nce_loss(v, t, s)), (image, text, scale))
    assert torch.autograd.gradcheck(lambda v, t: sum(sdm_loss(v, t, matches, temperature=0.5)), (image, text))
    assert torch.autograd.gradcheck(lambda v, t, s, b: siglip_loss(v, t, s, b, matches), (image, text, scale, bias))


def test_logit_scale_starts_at_clips_temperature_and_is_clamped_after_a_step():
    scale = LogitScale()
    assert scale().item() == pytest.approx(1 / 0.07, rel=1e-6)
    with torch.no_grad():
        scale.log_scale.fill_(10.0)
    assert scale().item() > 100  # forward never clamps: the gradient keeps flowing
    scale.clamp_()
    assert scale().item() == pytest.approx(100.0, rel=1e-6)
    with torch.no_grad():
        scale.log_scale.fill_(-1.0)
    scale.clamp_()
    assert scale().item() == pytest.approx(1.0)
    assert LogitBias()().item() == -10.0
    with pytest.raises(ValueError, match="initial scale"):
        LogitScale(initial=1000.0)


def test_mismatched_shapes_are_refused():
    with pytest.raises(ValueError, match="must be"):
        info_nce_loss(torch.randn(3, 4), torch.randn(4, 4), torch.tensor(1.0))
    with pytest.raises(ValueError, match="temperature must be positive"):
        sdm_loss(torch.randn(3, 4), torch.randn(3, 4), torch.eye(3, dtype=torch.bool), temperature=0.0)
