"""The contrastive objectives of today's dual encoders: CLIP's InfoNCE, IRRA's SDM and SigLIP's sigmoid loss.

Each takes the embeddings of the whole batch (under DDP the trainer gathers every rank's share with
gradients before calling, so the negatives are the global batch's) and returns loss terms; the
learnable temperature and bias live in :class:`LogitScale` and :class:`LogitBias`, which the model
owns and the optimiser trains.

- InfoNCE (Radford et al., "Learning Transferable Visual Models From Natural Language Supervision",
  ICML 2021; as open_clip's ``ClipLoss``): ``logits = s * norm(I) norm(T)^T`` with ``s = exp(t)``,
  ``t`` learnable from ``log(1/0.07)``; the loss is the mean of the cross-entropies of the rows
  (image -> text) and the columns (text -> image) against the diagonal.
- SDM, similarity distribution matching (Jiang and Ye, "Cross-Modal Implicit Relation Reasoning and
  Aligning for Text-to-Image Person Retrieval", CVPR 2023, IRRA): ``p_i = softmax_j(cos(v_i, t_j) /
  tau)``, ``q_i`` the row of the identity-match matrix normalised to sum 1, ``KL(p_i || q_i)`` with
  an epsilon inside the log, in both directions. CMPM's shape on normalised embeddings with a
  temperature (IRRA: tau = 0.02, fixed).
- SigLIP (Zhai et al., "Sigmoid Loss for Language Image Pre-Training", ICCV 2023, Algorithm 1):
  ``-(1/n) sum_ij log sigmoid(z_ij (s x_i . y_j + b))`` over all n^2 pairs of unit embeddings,
  ``z = +1`` for a match and ``-1`` otherwise, ``s = exp(t')`` from ``t' = log 10`` and ``b`` from
  ``-10``. The sum is divided by the batch size n as the paper's pseudo-code does (not by n^2).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["LogitBias", "LogitScale", "info_nce_loss", "sdm_loss", "siglip_loss"]


class LogitScale(nn.Module):
    """A learnable temperature ``s = exp(t)``, kept at most ``max_scale`` as CLIP does.

    CLIP clips ``t`` to ``log(100)`` after each optimiser step (open_clip: ``logit_scale.clamp_(0,
    log(100))``); :meth:`clamp_` is that step. A clamp inside ``forward`` instead would zero the
    gradient above the limit and leave ``t`` stuck there.
    """

    def __init__(self, initial: float = 1 / 0.07, max_scale: float = 100.0) -> None:
        super().__init__()
        if not 0 < initial <= max_scale:
            raise ValueError(f"the initial scale must be in (0, {max_scale}], got {initial}")
        self.log_scale = nn.Parameter(torch.tensor(math.log(initial)))
        self.max_log_scale = math.log(max_scale)

    def forward(self) -> Tensor:
        return self.log_scale.exp()

    @torch.no_grad()
    def clamp_(self) -> None:
        """Keep ``t`` in ``[0, log(max_scale)]`` (call after each optimiser step)."""
        self.log_scale.clamp_(0.0, self.max_log_scale)


class LogitBias(nn.Module):
    """SigLIP's learnable bias ``b`` (initial -10: at the start most pairs are negatives)."""

    def __init__(self, initial: float = -10.0) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.tensor(float(initial)))

    def forward(self) -> Tensor:
        return self.bias


def _cosines(image_emb: Tensor, text_emb: Tensor) -> Tensor:
    """``(B, B)`` cosine similarities, image rows against text columns."""
    if image_emb.dim() != 2 or image_emb.shape != text_emb.shape:
        raise ValueError(f"image_emb {tuple(image_emb.shape)} and text_emb {tuple(text_emb.shape)} must be (B, D)")
    return F.normalize(image_emb, dim=1) @ F.normalize(text_emb, dim=1).t()


def info_nce_loss(image_emb: Tensor, text_emb: Tensor, logit_scale: Tensor) -> tuple[Tensor, Tensor]:
    """CLIP's symmetric InfoNCE: ``(image_to_text, text_to_image)`` cross-entropies against the diagonal.

    Row ``i`` of each embedding is one pair. As in CLIP, only the diagonal is a positive: another
    caption of the same image or identity in the batch counts as a negative (SDM treats identities).
    Each term is half its cross-entropy, so their sum is CLIP's loss (open_clip's ``ClipLoss``).
    """
    logits = logit_scale * _cosines(image_emb, text_emb)
    targets = torch.arange(logits.shape[0], device=logits.device)
    return F.cross_entropy(logits, targets) / 2, F.cross_entropy(logits.t(), targets) / 2


def sdm_loss(
    image_emb: Tensor, text_emb: Tensor, matches: Tensor, *, temperature: float = 0.02, eps: float = 1e-8
) -> tuple[Tensor, Tensor]:
    """IRRA's similarity distribution matching: ``(image_to_text, text_to_image)`` KL divergences.

    ``matches[i, j]``: image ``i`` and text ``j`` share an identity (every row and column needs one).
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    logits = _cosines(image_emb, text_emb) / temperature
    matches = matches.to(logits.dtype)
    image_to_text = _kl_to_matches(logits, matches, eps)
    text_to_image = _kl_to_matches(logits.t(), matches.t(), eps)
    return image_to_text, text_to_image


def _kl_to_matches(logits: Tensor, matches: Tensor, eps: float) -> Tensor:
    """``mean_i sum_j p_ij (log p_ij - log(q_ij + eps))``: p the softmax of the logits, q the normalised matches."""
    log_p = F.log_softmax(logits, dim=1)
    log_q = torch.log(matches / matches.sum(dim=1, keepdim=True) + eps)
    return (log_p.exp() * (log_p - log_q)).sum(dim=1).mean()


def siglip_loss(
    image_emb: Tensor, text_emb: Tensor, logit_scale: Tensor, logit_bias: Tensor, matches: Tensor | None = None
) -> Tensor:
    """SigLIP's pairwise sigmoid loss over every pair of the batch, divided by the batch size.

    ``matches``: ``(B, B)`` booleans, ``matches[i, j]`` when image ``i`` and text ``j`` are a positive
    pair; None: the diagonal only, as in the paper.
    """
    logits = logit_scale * _cosines(image_emb, text_emb) + logit_bias
    if matches is None:
        matches = torch.eye(logits.shape[0], dtype=torch.bool, device=logits.device)
    signs = matches.to(logits.dtype) * 2 - 1
    return -F.logsigmoid(signs * logits).sum() / logits.shape[0]
