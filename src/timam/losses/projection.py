"""Cross-modal projection losses: CMPM (matching, L_M) and CMPC (classification).

Why: Zhang & Lu (ECCV 2018) align the two modalities by projecting one embedding on the
normalised other one. TIMAM uses CMPM in both directions as its matching loss L_M.

CMPM: ``p_ij = softmax_j(img_i . txt_j / ||txt_j||)`` over the batch, the true matching
distribution ``q_ij = Y_ij / sum_k Y_ik`` (``Y_ij = 1`` when i and j share an identity), and
``L = mean_i sum_j p_ij (log p_ij - log(q_ij + eps))``, i.e. KL(p_i || q_i). ``q`` is normalised
by its SUM, as in the official CMPM code; several PyTorch ports divide by the L2 norm instead,
which is no longer a KL divergence and can go negative. There is no temperature: the
un-normalised embedding is projected on the normalised other one.

CMPC: the image embedding is projected on the normalised text embedding of the same pair
(``(img . t_hat) t_hat``), and that projection is classified with the norm-softmax identity
classifier; and the other way round.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["cmpc_loss", "cmpm_loss", "cmpm_loss_from_matches", "cmpm_loss_from_scores"]


def _check_pairs(image_emb: Tensor, text_emb: Tensor) -> None:
    if image_emb.dim() != 2 or text_emb.dim() != 2:
        raise ValueError("image_emb and text_emb must be 2-D (batch, dim)")
    if image_emb.shape != text_emb.shape:
        raise ValueError(
            f"image_emb {tuple(image_emb.shape)} and text_emb {tuple(text_emb.shape)} must have the same shape"
        )


def _projection_kl(queries: Tensor, keys: Tensor, log_q: Tensor) -> Tensor:
    """mean_i KL(softmax_j(queries_i . keys_j/||keys_j||) || q_i), with ``log_q = log(q + eps)``."""
    return _kl_of_logits(queries @ F.normalize(keys, p=2, dim=1).t(), log_q)


def _log_q(matches: Tensor, eps: float) -> Tensor:
    """``log(q + eps)`` with ``q`` the matches of each row sum-normalised to a distribution."""
    return torch.log(matches / matches.sum(dim=1, keepdim=True) + eps)


def cmpm_loss(image_emb: Tensor, text_emb: Tensor, identities: Tensor, *, eps: float = 1e-8) -> tuple[Tensor, Tensor]:
    """Cross-modal projection matching loss in both directions.

    Args:
        image_emb: ``(B, D)`` image embeddings (not normalised).
        text_emb: ``(B, D)`` text embeddings; row i is paired with image row i.
        identities: ``(B,)`` integer identity ids (any values); all same-identity pairs in the
            batch count as matches.
        eps: added to ``q`` inside the log so that non-matching pairs (``q = 0``) stay finite.

    Returns:
        ``(image_to_text, text_to_image)``. Each is a KL divergence, hence non-negative up to
        the ``eps`` term: the exact lower bound is ``-log(1 + B * eps)`` (about ``-B * 1e-8``),
        reached only when ``p`` already equals ``q``.
    """
    _check_pairs(image_emb, text_emb)
    identities = identities.reshape(-1)
    if identities.numel() != image_emb.shape[0]:
        raise ValueError("identities must hold one id per pair")
    same = identities.unsqueeze(1) == identities.unsqueeze(0)
    return cmpm_loss_from_matches(image_emb, text_emb, same, eps=eps)


def cmpm_loss_from_matches(
    image_emb: Tensor, text_emb: Tensor, matches: Tensor, *, eps: float = 1e-8
) -> tuple[Tensor, Tensor]:
    """CMPM with the true matches given as a ``(B, B)`` boolean matrix, ``matches[i, j]``: image
    ``i`` matches text ``j`` (every row and column needs one). :func:`cmpm_loss` builds it from
    identities; a caller with another notion of a match (e.g. identical caption strings) passes
    its own. Returns ``(image_to_text, text_to_image)``."""
    _check_pairs(image_emb, text_emb)
    matches = matches.to(image_emb.dtype)
    image_to_text = _projection_kl(image_emb, text_emb, _log_q(matches, eps))
    text_to_image = _projection_kl(text_emb, image_emb, _log_q(matches.t(), eps))
    return image_to_text, text_to_image


def cmpm_loss_from_scores(
    scores: Tensor, matches: Tensor, *, temperature: float, eps: float = 1e-8
) -> tuple[Tensor, Tensor]:
    """CMPM's KL(p || q) on a ``(B, B)`` pair-score matrix (``scores[i, j]``: image i, text j), with
    ``p = softmax(scores / temperature)`` per row (image->text) and per column (text->image).

    Why: an interaction model has no embeddings to project; its scores are bounded (cosines
    pooled over regions or words), so a temperature stands in for the embedding norm that sharpens
    CMPM's softmax. ``matches`` as in :func:`cmpm_loss_from_matches`.
    """
    if scores.dim() != 2 or scores.shape != matches.shape:
        raise ValueError(f"scores {tuple(scores.shape)} and matches {tuple(matches.shape)} must be the same (B, B)")
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    matches = matches.to(scores.dtype)
    logits = scores / temperature
    image_to_text = _kl_of_logits(logits, _log_q(matches, eps))
    text_to_image = _kl_of_logits(logits.t(), _log_q(matches.t(), eps))
    return image_to_text, text_to_image


def _kl_of_logits(logits: Tensor, log_q: Tensor) -> Tensor:
    log_p = F.log_softmax(logits, dim=1)
    return (log_p.exp() * (log_p - log_q)).sum(dim=1).mean()


def cmpc_loss(
    image_emb: Tensor,
    text_emb: Tensor,
    labels: Tensor,
    classifier: Callable[[Tensor], Tensor],
) -> tuple[Tensor, Tensor]:
    """Cross-modal projection classification loss in both directions.

    Args:
        image_emb: ``(B, D)`` image embeddings.
        text_emb: ``(B, D)`` text embeddings, row-paired with the images.
        labels: ``(B,)`` class indices for ``classifier``.
        classifier: usually the (shared) :class:`~timam.losses.identification.NormSoftmaxClassifier`.

    Returns:
        ``(image_loss, text_loss)``: cross-entropy of the image projected on its normalised
        text, and of the text projected on its normalised image.
    """
    _check_pairs(image_emb, text_emb)
    text_unit = F.normalize(text_emb, p=2, dim=1)
    image_unit = F.normalize(image_emb, p=2, dim=1)
    image_proj = (image_emb * text_unit).sum(dim=1, keepdim=True) * text_unit
    text_proj = (text_emb * image_unit).sum(dim=1, keepdim=True) * image_unit
    image_loss = F.cross_entropy(classifier(image_proj), labels)
    text_loss = F.cross_entropy(classifier(text_proj), labels)
    return image_loss, text_loss
