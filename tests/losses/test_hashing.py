"""AgNet's three losses against references written here from their formulas (python loops and math),
and their gradients against finite differences in float64."""

from __future__ import annotations

import math

import pytest
import torch

from timam.losses.hashing import (
    attribute_prediction_loss,
    identity_similarity,
    quantization_loss,
    similarity_preserving_loss,
)


def _rows(tensor: torch.Tensor) -> list[list[float]]:
    return tensor.tolist()


def _naive_bce(logits: list[list[float]], targets: list[list[float]]) -> float:
    """-(1/(N V)) sum [y log sigmoid(z) + (1 - y) log(1 - sigmoid(z))]."""
    total, count = 0.0, 0
    for z_row, y_row in zip(logits, targets, strict=True):
        for z, y in zip(z_row, y_row, strict=True):
            p = 1.0 / (1.0 + math.exp(-z))
            total += y * math.log(p) + (1 - y) * math.log(1 - p)
            count += 1
    return -total / count


def _naive_similarity(image: list[list[float]], text: list[list[float]], s: list[list[float]]) -> float:
    """-log p(S_ij | theta_ij), p = sigmoid(theta) if S_ij else 1 - sigmoid(theta), averaged within the
    similar pairs and within the dissimilar pairs, then the two averages averaged."""
    losses: dict[bool, list[float]] = {True: [], False: []}
    for i, h_v in enumerate(image):
        for j, h_t in enumerate(text):
            theta = 0.5 * sum(a * b for a, b in zip(h_v, h_t, strict=True))
            p = 1.0 / (1.0 + math.exp(-theta))
            losses[bool(s[i][j])].append(-math.log(p if s[i][j] else 1.0 - p))
    return 0.5 * sum(sum(group) / len(group) if group else 0.0 for group in losses.values())


def _naive_quantization(relaxed: list[list[float]]) -> float:
    """(1/(N K)) sum (sign(h) - h)^2, sign(h) = +1 for h > 0 and -1 otherwise."""
    cells = [(1.0 if h > 0 else -1.0) - h for row in relaxed for h in row]
    return sum(c * c for c in cells) / len(cells)


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_attribute_prediction_loss_is_the_mean_binary_cross_entropy() -> None:
    logits = torch.randn(4, 6, generator=_generator(0), dtype=torch.float64) * 3
    targets = (torch.rand(4, 6, generator=_generator(1), dtype=torch.float64) > 0.6).to(torch.float64)
    loss = attribute_prediction_loss(logits, targets)
    assert loss.item() == pytest.approx(_naive_bce(_rows(logits), _rows(targets)), rel=1e-12)


def test_similarity_preserving_loss_is_the_negative_log_likelihood_of_s() -> None:
    image = torch.tanh(torch.randn(3, 8, generator=_generator(2), dtype=torch.float64) * 2)
    text = torch.tanh(torch.randn(5, 8, generator=_generator(3), dtype=torch.float64) * 2)
    similarity = identity_similarity(torch.tensor([0, 1, 2]), torch.tensor([0, 0, 1, 3, 2])).double()
    assert similarity.tolist() == [[1, 1, 0, 0, 0], [0, 0, 1, 0, 0], [0, 0, 0, 0, 1]]
    loss = similarity_preserving_loss(image, text, similarity)
    assert loss.item() == pytest.approx(_naive_similarity(_rows(image), _rows(text), _rows(similarity)), rel=1e-12)


def test_similarity_preserving_loss_is_finite_for_far_apart_codes() -> None:
    """theta = +-100 (long binary codes): softplus keeps log(1 + e^theta) finite and exact."""
    image = torch.full((1, 200), 1.0, dtype=torch.float64)
    text = torch.stack([torch.full((200,), 1.0), torch.full((200,), -1.0)]).double()  # theta = 100, -100
    loss = similarity_preserving_loss(image, text, torch.tensor([[0.0, 1.0]], dtype=torch.float64))
    # pair 1: S = 0, -log(1 - sigmoid(100)) = 100 + log(1 + e^-100); pair 2: S = 1, -log sigmoid(-100) alike;
    # one pair of each kind, so the loss is their mean
    assert loss.item() == pytest.approx(100.0 + math.log1p(math.exp(-100.0)), rel=1e-12)


def test_similar_and_dissimilar_pairs_weigh_the_same_however_rare_the_similar_ones() -> None:
    """One similar pair per row of 16: codes that agree on it and are orthogonal elsewhere must beat
    every image taking one code and every caption its opposite. Under the plain mean over pairs the
    collapse scores lower (about 8 / 16 = 0.5 against 15 / 16 log 2 = 0.65), which is what training found."""
    identities = torch.arange(16)
    similarity = identity_similarity(identities, identities).double()
    good = torch.eye(16, dtype=torch.float64) * 8.0  # theta 32 on the diagonal, 0 elsewhere
    collapsed = torch.ones(16, 16, dtype=torch.float64)  # theta -8 for every pair
    plain = {
        name: (torch.nn.functional.softplus(t) - similarity * t).mean()
        for name, t in (("good", 0.5 * good @ good.T), ("collapsed", -0.5 * collapsed @ collapsed.T))
    }
    assert plain["collapsed"] < plain["good"]  # the trap
    assert similarity_preserving_loss(good, good, similarity) < similarity_preserving_loss(
        collapsed, -collapsed, similarity
    )


def test_the_similarity_term_rewards_similar_pairs_with_agreeing_codes() -> None:
    code = torch.tensor([[1.0, -1.0, 1.0, 1.0]])
    same, opposite = (
        similarity_preserving_loss(code, code, torch.ones(1, 1)),
        similarity_preserving_loss(code, -code, torch.ones(1, 1)),
    )
    assert same < opposite
    assert similarity_preserving_loss(code, -code, torch.zeros(1, 1)) < similarity_preserving_loss(
        code, code, torch.zeros(1, 1)
    )


def test_quantization_loss_is_the_mean_squared_distance_to_the_signs() -> None:
    relaxed = torch.tensor([[0.9, -0.2, 0.0], [-0.99, 0.5, -0.7]], dtype=torch.float64)
    assert quantization_loss(relaxed).item() == pytest.approx(_naive_quantization(_rows(relaxed)), rel=1e-12)
    assert quantization_loss(torch.tensor([[1.0, -1.0]])).item() == 0.0


def test_gradients_match_finite_differences_in_float64() -> None:
    logits = torch.randn(3, 4, generator=_generator(4), dtype=torch.float64, requires_grad=True)
    targets = torch.tensor([[1, 0, 0, 1], [0, 0, 1, 1], [1, 1, 1, 0]], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda z: attribute_prediction_loss(z, targets), (logits,))
    image = torch.randn(3, 6, generator=_generator(5), dtype=torch.float64, requires_grad=True)
    text = torch.randn(4, 6, generator=_generator(6), dtype=torch.float64, requires_grad=True)
    similarity = identity_similarity(torch.tensor([0, 1, 2]), torch.tensor([2, 0, 0, 1])).double()
    assert torch.autograd.gradcheck(lambda a, b: similarity_preserving_loss(a, b, similarity), (image, text))
    # away from 0, where sign(h) is constant under the finite-difference step
    relaxed = (torch.rand(3, 5, generator=_generator(7), dtype=torch.float64) * 0.8 + 0.1) * torch.tensor(
        [1.0, -1.0, 1.0, -1.0, 1.0], dtype=torch.float64
    )
    assert torch.autograd.gradcheck(quantization_loss, (relaxed.requires_grad_(),))


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: attribute_prediction_loss(torch.zeros(2, 3), torch.zeros(2, 4)), "logits and targets"),
        (lambda: similarity_preserving_loss(torch.zeros(2, 8), torch.zeros(3, 16), torch.zeros(2, 3)), "one length"),
        (lambda: similarity_preserving_loss(torch.zeros(2, 8), torch.zeros(3, 8), torch.zeros(3, 2)), "(2, 3)"),
        (lambda: similarity_preserving_loss(torch.zeros(1, 8), torch.zeros(1, 8), torch.full((1, 1), 0.5)), "0 and 1"),
        (lambda: quantization_loss(torch.zeros(8)), "items, bits"),
        (lambda: identity_similarity(torch.zeros(2, 1), torch.zeros(2)), "1-D"),
    ],
)
def test_bad_shapes_and_values_are_refused(call, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        call()
