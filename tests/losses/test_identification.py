"""Tests for the norm-softmax classifier and the identification loss."""

from __future__ import annotations

import math

import pytest
import torch

from timam.losses import IdentificationLoss, NormSoftmaxClassifier


def _set_params(clf: NormSoftmaxClassifier, weight: list[list[float]], bias: list[float] | None) -> None:
    with torch.no_grad():
        clf.weight.copy_(torch.tensor(weight))
        if bias is not None:
            clf.bias.copy_(torch.tensor(bias))


def test_logits_match_hand_computation() -> None:
    clf = NormSoftmaxClassifier(2, 2)
    # Class rows (3, 4) and (0, 2) normalise to (0.6, 0.8) and (0, 1).
    _set_params(clf, [[3.0, 4.0], [0.0, 2.0]], [0.5, -1.0])
    x = torch.tensor([[1.0, 2.0], [-2.0, 0.0]])
    expected = torch.tensor([[0.6 + 1.6 + 0.5, 2.0 - 1.0], [-1.2 + 0.5, 0.0 - 1.0]])
    torch.testing.assert_close(clf(x), expected)


def test_input_is_not_normalised_and_weight_scale_is_irrelevant() -> None:
    torch.manual_seed(0)
    clf = NormSoftmaxClassifier(5, 3, bias=False)
    x = torch.randn(4, 5)
    logits = clf(x)
    torch.testing.assert_close(clf(3.0 * x), 3.0 * logits)  # input magnitude is kept
    with torch.no_grad():
        clf.weight.mul_(7.0)
    torch.testing.assert_close(clf(x), logits)  # class vectors are unit-norm


def test_bias_flag() -> None:
    assert NormSoftmaxClassifier(4, 3, bias=False).bias is None
    clf = NormSoftmaxClassifier(4, 3)
    assert clf.bias is not None and clf.bias.shape == (3,)
    assert clf.weight.shape == (3, 4)
    assert torch.allclose(clf.normalized_weight().norm(dim=1), torch.ones(3))


def _naive_ce(logits: torch.Tensor, labels: torch.Tensor) -> float:
    total = 0.0
    for row, label in zip(logits.tolist(), labels.tolist(), strict=True):
        log_z = math.log(sum(math.exp(v) for v in row))
        total += log_z - row[label]
    return total / len(labels)


@pytest.mark.parametrize("shared", [True, False])
def test_loss_values_against_naive_cross_entropy(shared: bool) -> None:
    torch.manual_seed(1)
    loss_fn = IdentificationLoss(6, 4, shared_classifier=shared)
    with torch.no_grad():
        loss_fn.text_classifier.bias.uniform_(-1.0, 1.0)
        loss_fn.image_classifier.bias.uniform_(-1.0, 1.0)
    image, text = torch.randn(3, 6), torch.randn(3, 6)
    labels = torch.tensor([2, 0, 2])
    loss_image, loss_text = loss_fn(image, text, labels)
    with torch.no_grad():
        exp_image = _naive_ce(loss_fn.image_classifier(image), labels)
        exp_text = _naive_ce(loss_fn.text_classifier(text), labels)
    assert loss_image.item() == pytest.approx(exp_image, rel=1e-5)
    assert loss_text.item() == pytest.approx(exp_text, rel=1e-5)


def test_shared_vs_separate_classifier_parameters() -> None:
    dim, classes = 8, 5
    shared = IdentificationLoss(dim, classes)
    separate = IdentificationLoss(dim, classes, shared_classifier=False)
    assert shared.image_classifier is shared.text_classifier
    assert separate.image_classifier is not separate.text_classifier
    per_classifier = dim * classes + classes
    assert sum(p.numel() for p in shared.parameters()) == per_classifier
    assert sum(p.numel() for p in separate.parameters()) == 2 * per_classifier


def test_shared_classifier_receives_gradient_from_both_modalities() -> None:
    torch.manual_seed(2)
    loss_fn = IdentificationLoss(4, 3)
    image, text = torch.randn(2, 4), torch.randn(2, 4)
    labels = torch.tensor([0, 1])
    loss_image, _ = loss_fn(image, text, labels)
    grad_image_only = torch.autograd.grad(loss_image, loss_fn.image_classifier.weight)[0]
    loss_image, loss_text = loss_fn(image, text, labels)
    (loss_image + loss_text).backward()
    assert not torch.allclose(loss_fn.image_classifier.weight.grad, grad_image_only)
