"""Tests for the modality discriminator, gradient reversal and the two adversarial losses."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from timam.losses import (
    ModalityDiscriminator,
    discriminator_loss,
    encoder_adversarial_loss,
    grad_reverse,
)


def _bce(logits: list[float], target: float) -> float:
    total = 0.0
    for z in logits:
        p = 1.0 / (1.0 + math.exp(-z))
        total -= target * math.log(p) + (1.0 - target) * math.log(1.0 - p)
    return total / len(logits)


@pytest.fixture
def setup() -> tuple[ModalityDiscriminator, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    disc = ModalityDiscriminator(embedding_dim=6, hidden_dim=5)
    image = torch.randn(3, 6, requires_grad=True)
    text = torch.randn(3, 6, requires_grad=True)
    return disc, image, text


def test_discriminator_architecture() -> None:
    disc = ModalityDiscriminator()
    linears = [m for m in disc.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(512, 256), (256, 1)]
    acts = [m for m in disc.modules() if isinstance(m, nn.LeakyReLU)]
    assert len(acts) == 1 and acts[0].negative_slope == pytest.approx(0.2)
    assert disc(torch.randn(4, 512)).shape == (4,)


def test_discriminator_forward_by_hand() -> None:
    disc = ModalityDiscriminator(embedding_dim=2, hidden_dim=2)
    with torch.no_grad():
        disc.net[0].weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
        disc.net[0].bias.zero_()
        disc.net[2].weight.copy_(torch.tensor([[1.0, 1.0]]))
        disc.net[2].bias.fill_(0.5)
    # (2, -3) -> hidden (2, -0.6) -> 2 - 0.6 + 0.5
    torch.testing.assert_close(disc(torch.tensor([[2.0, -3.0]])), torch.tensor([1.9]))


def test_grad_reverse_identity_forward_negated_backward() -> None:
    x = torch.tensor([1.0, -2.0, 3.0], requires_grad=True)
    y = grad_reverse(x, scale=0.5)
    torch.testing.assert_close(y, x.detach())
    (y * torch.tensor([1.0, 2.0, 3.0])).sum().backward()
    torch.testing.assert_close(x.grad, torch.tensor([-0.5, -1.0, -1.5]))


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_discriminator_loss_value(setup, smoothing: float) -> None:
    disc, image, text = setup
    loss = discriminator_loss(disc, image, text, label_smoothing=smoothing)
    with torch.no_grad():
        expected = 0.5 * (_bce(disc(image).tolist(), 1.0 - smoothing) + _bce(disc(text).tolist(), 0.0))
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_discriminator_loss_trains_only_the_discriminator(setup) -> None:
    disc, image, text = setup
    discriminator_loss(disc, image, text).backward()
    assert image.grad is None and text.grad is None
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in disc.parameters())


def test_flip_mode_value_and_gradients(setup) -> None:
    disc, image, text = setup
    loss = encoder_adversarial_loss(disc, image, text, mode="flip")
    with torch.no_grad():
        expected = 0.5 * (_bce(disc(image).tolist(), 0.0) + _bce(disc(text).tolist(), 1.0))
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    loss.backward()
    assert all(p.grad is None for p in disc.parameters())
    assert image.grad is not None and image.grad.abs().sum() > 0
    assert text.grad is not None and text.grad.abs().sum() > 0
    # A small step against the gradient makes images look more like text to D.
    with torch.no_grad():
        before = disc(image).mean()
        after = disc(image - 0.1 * image.grad).mean()
    assert after < before


def test_reverse_mode_negates_true_label_gradients(setup) -> None:
    disc, image, text = setup
    loss = encoder_adversarial_loss(disc, image, text, mode="reverse")
    grads_reverse = torch.autograd.grad(loss, (image, text))
    reference = 0.5 * (
        nn.functional.binary_cross_entropy_with_logits(disc(image), torch.ones(3))
        + nn.functional.binary_cross_entropy_with_logits(disc(text), torch.zeros(3))
    )
    assert loss.item() == pytest.approx(reference.item(), rel=1e-6)
    grads_reference = torch.autograd.grad(reference, (image, text))
    for got, ref in zip(grads_reverse, grads_reference, strict=True):
        assert ref.abs().sum() > 0
        torch.testing.assert_close(got, -ref)


def test_reverse_mode_leaves_discriminator_grads_none_and_fools_it(setup) -> None:
    disc, image, text = setup
    encoder_adversarial_loss(disc, image, text, mode="reverse").backward()
    assert all(p.grad is None for p in disc.parameters())
    with torch.no_grad():
        before = discriminator_loss(disc, image, text)
        after = discriminator_loss(disc, image - 0.1 * image.grad, text - 0.1 * text.grad)
    assert after > before  # the encoders' step raises D's error


def test_unknown_mode_raises(setup) -> None:
    disc, image, text = setup
    with pytest.raises(ValueError):
        encoder_adversarial_loss(disc, image, text, mode="wgan")
