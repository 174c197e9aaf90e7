"""Adversarial modality alignment (TIMAM's L_D): a modality discriminator and its two losses.

Why: TIMAM trains a discriminator D to tell image embeddings (label 1) from text embeddings
(label 0), and trains the encoders to fool it, so that the two modalities become
indistinguishable in the shared space. The two players are optimised with separate losses:

* :func:`discriminator_loss` trains D only (it detaches the embeddings itself);
* :func:`encoder_adversarial_loss` trains the encoders only (D's parameters are detached, so
  D's ``.grad`` is never touched by it), either with flipped labels (``"flip"``, the usual
  non-saturating GAN generator loss) or through a gradient-reversal layer (``"reverse"``).

Keeping the two strictly separate lets a training loop use different optimisers, learning rates
and update ratios for D and for the encoders (the GAN balancing tricks of the paper) without
one player's loss leaking gradients into the other.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

__all__ = [
    "ModalityDiscriminator",
    "discriminator_loss",
    "encoder_adversarial_loss",
    "grad_reverse",
]

ADVERSARIAL_MODES = ("flip", "reverse")


class ModalityDiscriminator(nn.Module):
    """Two fully-connected layers from an embedding to one modality logit (image=1, text=0).

    ``Linear(embedding_dim, hidden_dim) -> LeakyReLU(0.2) -> Linear(hidden_dim, 1)``; the forward
    returns the logits with the trailing singleton dimension removed, shape ``(N,)`` for input
    ``(N, embedding_dim)``.
    """

    def __init__(self, embedding_dim: int = 512, hidden_dim: int = 256) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(embedding_dim, hidden_dim),
            nn.LeakyReLU(0.2),
            nn.Linear(hidden_dim, 1),
        )

    def forward(self, embeddings: Tensor) -> Tensor:
        """Logit of "this embedding comes from an image", shape ``embeddings.shape[:-1]``."""
        return self.net(embeddings).squeeze(-1)


class _GradReverse(torch.autograd.Function):
    """Identity in the forward pass, ``-scale * grad`` in the backward pass."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, scale: float) -> Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Tensor, None]:
        return grad_output.neg() * ctx.scale, None


def grad_reverse(x: Tensor, scale: float = 1.0) -> Tensor:
    """Gradient-reversal layer (Ganin & Lempitsky): returns ``x``; backpropagates ``-scale * grad``."""
    return _GradReverse.apply(x, float(scale))


def _bce(logits: Tensor, target: float) -> Tensor:
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))


def _frozen_call(discriminator: nn.Module, embeddings: Tensor) -> Tensor:
    """Run ``discriminator`` with its parameters detached: gradients reach ``embeddings`` only."""
    params = {name: p.detach() for name, p in discriminator.named_parameters()}
    return functional_call(discriminator, params, (embeddings,))


def discriminator_loss(
    discriminator: nn.Module,
    image_emb: Tensor,
    text_emb: Tensor,
    *,
    label_smoothing: float = 0.0,
) -> Tensor:
    """Binary cross-entropy of D on true modality labels; trains D only.

    The embeddings are detached here, so calling ``backward`` on this loss never reaches the
    encoders. Targets are ``1 - label_smoothing`` for images and ``0`` for texts: one-sided label
    smoothing (Salimans et al., 2016), which keeps D from becoming over-confident on the real
    class without rewarding it for putting mass on the other one. The result is the mean of the
    per-modality mean BCEs, i.e. half of the paper's ``L_D = -E[log D(V)] - E[log(1 - D(T))]``
    (the two weigh equally even if the batches differ in size).
    """
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError("label_smoothing must be in [0, 1)")
    image_logits = discriminator(image_emb.detach())
    text_logits = discriminator(text_emb.detach())
    return 0.5 * (_bce(image_logits, 1.0 - label_smoothing) + _bce(text_logits, 0.0))


def encoder_adversarial_loss(
    discriminator: nn.Module,
    image_emb: Tensor,
    text_emb: Tensor,
    *,
    mode: str = "flip",
) -> Tensor:
    """Loss that trains the encoders to fool ``discriminator``; D's parameters get no gradient.

    D is evaluated with its parameters detached (``torch.func.functional_call``), so D's
    ``.grad`` stays untouched and D is trained only by :func:`discriminator_loss`.

    Modes:
        ``"flip"``: BCE with flipped targets (images labelled text = 0, texts labelled image = 1),
            mean of the two modalities. Non-saturating: strong gradients while D wins. Value
            ``>= 0``; it falls as the encoders succeed.
        ``"reverse"``: the true-label BCE of D (as in :func:`discriminator_loss`, no smoothing)
            computed on ``grad_reverse(embeddings)``. The gradient reaching the encoders is
            ``-grad(BCE_true)``, so minimising this loss makes the encoders *maximise* D's error,
            i.e. they follow ``-(BCE with true labels)`` (the minimax objective). The returned
            value is the BCE itself (it rises as the encoders succeed); only its gradient is
            reversed.

    Raises:
        ValueError: for any other ``mode``.
    """
    if mode == "flip":
        image_logits = _frozen_call(discriminator, image_emb)
        text_logits = _frozen_call(discriminator, text_emb)
        return 0.5 * (_bce(image_logits, 0.0) + _bce(text_logits, 1.0))
    if mode == "reverse":
        image_logits = _frozen_call(discriminator, grad_reverse(image_emb))
        text_logits = _frozen_call(discriminator, grad_reverse(text_emb))
        return 0.5 * (_bce(image_logits, 1.0) + _bce(text_logits, 0.0))
    raise ValueError(f"mode must be one of {ADVERSARIAL_MODES}, got {mode!r}")
