"""Tests for the VSE++ hardest-negative triplet loss."""

from __future__ import annotations

import math

import pytest
import torch

from timam.losses import hardest_negative_triplet_loss


def _naive(image: torch.Tensor, text: torch.Tensor, ids: list[int] | None, margin: float) -> float:
    img = [[v / math.sqrt(sum(x * x for x in row)) for v in row] for row in image.tolist()]
    txt = [[v / math.sqrt(sum(x * x for x in row)) for v in row] for row in text.tolist()]
    n = len(img)
    s = [[sum(a * b for a, b in zip(img[i], txt[j], strict=True)) for j in range(n)] for i in range(n)]

    def negative(i: int, j: int) -> bool:
        return i != j and (ids is None or ids[i] != ids[j])

    total = 0.0
    for i in range(n):
        i2t = [max(0.0, margin + s[i][j] - s[i][i]) for j in range(n) if negative(i, j)]
        t2i = [max(0.0, margin + s[j][i] - s[i][i]) for j in range(n) if negative(j, i)]
        total += max(i2t, default=0.0) + max(t2i, default=0.0)
    return total / n


def test_hand_computed_value() -> None:
    image = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    text = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    # s = [[1, .7071], [0, .7071]]; only text 1 vs image 0 violates: 0.2 + .7071 - .7071 = 0.2
    loss = hardest_negative_triplet_loss(image, text)
    assert loss.item() == pytest.approx(0.1, abs=1e-6)
    same_identity = hardest_negative_triplet_loss(image, text, identities=torch.tensor([5, 5]))
    assert same_identity.item() == pytest.approx(0.0, abs=1e-7)


@pytest.mark.parametrize("ids", [None, [0, 1, 2, 3], [0, 0, 1, 1], [9, 2, 9, 9]])
@pytest.mark.parametrize("margin", [0.2, 1.0])
def test_matches_naive_reference(ids: list[int] | None, margin: float) -> None:
    torch.manual_seed(0)
    image, text = torch.randn(4, 5), torch.randn(4, 5)
    id_tensor = None if ids is None else torch.tensor(ids)
    loss = hardest_negative_triplet_loss(image, text, identities=id_tensor, margin=margin)
    assert loss.item() == pytest.approx(_naive(image, text, ids, margin), rel=1e-5, abs=1e-7)


def test_identities_mask_a_same_identity_hardest_negative() -> None:
    # Pairs 0 and 1 are the same person and caption 1 resembles image 0 more than image 1:
    # without identities that same-identity pair is the hardest negative in both directions
    # (0.2 + 0.874 - 1 for image 0, 0.2 + 0.874 - 0.486 for text 1); nothing else violates.
    image = torch.eye(3)
    text = torch.tensor([[1.0, 0.0, 0.0], [0.9, 0.5, 0.0], [0.0, 0.0, 1.0]])
    unmasked = hardest_negative_triplet_loss(image, text)
    masked = hardest_negative_triplet_loss(image, text, identities=torch.tensor([4, 4, 8]))
    assert unmasked.item() > 0.1
    assert masked.item() == pytest.approx(0.0, abs=1e-7)
    assert unmasked.item() == pytest.approx(_naive(image, text, None, 0.2), rel=1e-5)


def test_scale_invariant_and_zero_when_well_separated() -> None:
    torch.manual_seed(1)
    image, text = torch.randn(3, 4), torch.randn(3, 4)
    base = hardest_negative_triplet_loss(image, text)
    torch.testing.assert_close(hardest_negative_triplet_loss(5.0 * image, 0.1 * text), base)
    eye = torch.eye(3)
    assert hardest_negative_triplet_loss(eye, 2.0 * eye).item() == 0.0  # margin 0.2 < 1


def test_gradient_flows_only_through_violating_pairs() -> None:
    image = torch.tensor([[1.0, 0.0], [0.0, 1.0]], requires_grad=True)
    text = torch.tensor([[1.0, 0.0], [1.0, 1.0]], requires_grad=True)
    hardest_negative_triplet_loss(image, text).backward()
    # The only active term is text 1 vs image 0 (positive text 1 vs image 1).
    assert image.grad[0].abs().sum() > 0 and image.grad[1].abs().sum() > 0
    assert text.grad[1].abs().sum() > 0
    torch.testing.assert_close(text.grad[0], torch.zeros(2))


def test_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError):
        hardest_negative_triplet_loss(torch.randn(3, 4), torch.randn(2, 4))


def test_score_matrix_entry_equals_the_embedding_loss_and_needs_a_square_matrix() -> None:
    from timam.losses import hardest_negative_triplet_from_scores

    torch.manual_seed(3)
    image, text = torch.randn(6, 5), torch.randn(6, 5)
    ids = torch.tensor([0, 1, 1, 2, 3, 3])
    scores = torch.nn.functional.normalize(image, dim=1) @ torch.nn.functional.normalize(text, dim=1).t()
    expected = hardest_negative_triplet_loss(image, text, identities=ids, margin=0.3)
    assert hardest_negative_triplet_from_scores(scores, identities=ids, margin=0.3).item() == pytest.approx(
        expected.item(), abs=1e-7
    )
    assert hardest_negative_triplet_from_scores(scores, margin=0.2).item() == pytest.approx(
        _naive(image, text, None, 0.2), abs=1e-6
    )
    with pytest.raises(ValueError, match="square"):
        hardest_negative_triplet_from_scores(torch.zeros(3, 4))
