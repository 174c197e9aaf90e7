"""Hardest-negative (max-violation) triplet loss of VSE++ (Faghri et al., BMVC 2018).

Why: the pairwise baseline the TIMAM survey compares against. Summing the hinge over all
negatives lets many easy negatives drown the signal; VSE++ keeps only the hardest negative of
each query, which gives a much stronger gradient for retrieval R@1.

Scores are cosine similarities of L2-normalised embeddings. Row i of the image batch and row i
of the text batch are the positive pair. With ``identities`` given, pairs sharing an identity are
not negatives (another photo or caption of the same person is not a mistake to be pushed away).
For each image the hardest negative caption, and for each caption the hardest negative image,
contribute ``max(0, margin + s_neg - s_pos)``; the two directions are summed and averaged over the
batch (the original VSE++ sums over the batch; the mean keeps the scale independent of batch size).
A query with no valid negative contributes 0.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["hardest_negative_triplet_loss", "hardest_negative_triplet_from_scores"]


def hardest_negative_triplet_loss(
    image_emb: Tensor,
    text_emb: Tensor,
    *,
    identities: Tensor | None = None,
    margin: float = 0.2,
) -> Tensor:
    """VSE++ max-violation loss, both directions, mean over the batch.

    Args:
        image_emb: ``(B, D)`` image embeddings.
        text_emb: ``(B, D)`` text embeddings; row i is the positive of image row i.
        identities: optional ``(B,)`` ids; same-identity pairs are excluded from the negatives.
        margin: hinge margin on cosine similarity.

    Returns:
        Scalar ``mean_i [max_{j neg} h(i->j) + max_{j neg} h(j->i)]`` with
        ``h = max(0, margin + s_neg - s_pos)``.
    """
    if image_emb.dim() != 2 or image_emb.shape != text_emb.shape:
        raise ValueError("image_emb and text_emb must be 2-D with the same shape")
    scores = F.normalize(image_emb, p=2, dim=1) @ F.normalize(text_emb, p=2, dim=1).t()
    return hardest_negative_triplet_from_scores(scores, identities=identities, margin=margin)


def hardest_negative_triplet_from_scores(
    scores: Tensor, *, identities: Tensor | None = None, margin: float = 0.2
) -> Tensor:
    """The same loss from a ``(B, B)`` score matrix, ``scores[i, j]``: image i with caption j.

    Why its own entry: an interaction model (SCAN) scores each pair directly, with no embeddings
    to take cosines of; SCAN trains with this loss on its pair scores (summed over the batch there).
    """
    if scores.dim() != 2 or scores.shape[0] != scores.shape[1]:
        raise ValueError(f"scores must be a square (B, B) matrix, got {tuple(scores.shape)}")
    batch = scores.shape[0]
    positives = scores.diagonal()

    not_negative = torch.eye(batch, dtype=torch.bool, device=scores.device)
    if identities is not None:
        identities = identities.reshape(-1).to(scores.device)
        if identities.numel() != batch:
            raise ValueError("identities must hold one id per pair")
        not_negative = not_negative | (identities.unsqueeze(1) == identities.unsqueeze(0))

    # Hinge is monotone in the negative's score, so the max of the masked hinges is the hinge
    # of the hardest negative; masked entries are 0, the hinge's own floor.
    cost_image_to_text = (margin + scores - positives.unsqueeze(1)).clamp_min(0.0)
    cost_text_to_image = (margin + scores - positives.unsqueeze(0)).clamp_min(0.0)
    cost_image_to_text = cost_image_to_text.masked_fill(not_negative, 0.0)
    cost_text_to_image = cost_text_to_image.masked_fill(not_negative, 0.0)
    hardest = cost_image_to_text.max(dim=1).values + cost_text_to_image.max(dim=0).values
    return hardest.mean()
