r"""The losses of AgNet-style attribute hashing (:mod:`timam.models.attribute_hashing`), one function each.

With a batch of n images and m captions, attribute logits Z (items x V) and their multi-hot targets
Y, relaxed codes H^V (n x K) and H^T (m x K) in (-1, 1), and S (n x m) with S_ij = 1 when image i
and caption j share an identity:

- attribute prediction, multi-label binary cross-entropy on the logits, per modality:
  ``L_a = -(1 / (N V)) sum_i sum_v [Y_iv log sigmoid(Z_iv) + (1 - Y_iv) log(1 - sigmoid(Z_iv))]``;
- cross-modal similarity preservation over code inner products: with ``theta_ij = 1/2 <h^V_i, h^T_j>``
  the likelihood of S is ``p(S_ij | theta_ij) = sigmoid(theta_ij)`` if S_ij = 1, ``1 - sigmoid(theta_ij)``
  otherwise, and the loss is its negative log-likelihood, the similar and the dissimilar pairs
  weighted equally: with ``l_ij = log(1 + exp(theta_ij)) - S_ij theta_ij``, P the similar pairs and N
  the others, ``L_s = 1/2 [(1 / |P|) sum_P l_ij + (1 / |N|) sum_N l_ij]`` (an empty set counts 0);
- quantisation, per modality: ``L_q = (1 / (N K)) ||B - H||_F^2`` with ``B = sign(H)`` held constant.

Where this follows AgNet (Ji et al., TNNLS 2020) and where it differs:

- The three terms are the ones AgNet names: attributes predicted per modality, codes that preserve
  the cross-modal similarity, and codes pushed to binary values.
- The method section of the paper was not available to check its exact formulas. L_s is the
  inner-product likelihood of DCMH (Jiang and Li, "Deep Cross-Modal Hashing", CVPR 2017, which AgNet
  cites and compares with), itself DPSH's (Li, Wang and Kang, IJCAI 2016) across modalities. L_q is
  DCMH's quantisation term ``||B - F||_F^2`` with the code of each item taken from its own
  modality, ``B = sign(H)``, as the codes are made at test time, rather than DCMH's one code B shared
  by an image and its text (our images have several captions and the gallery is coded alone).
- DCMH sums over pairs and items; here each term is a mean (over pairs, items x bits), so a term's
  size does not change with the batch or the code length and loss weights carry over between them.
- L_s weights the two kinds of pair equally, as HashNet's weighted maximum likelihood does for
  imbalanced similarity (Cao, Long, Wang and Yu, ICCV 2017: w_ij = |S| / |P| or |S| / |N|, the same up
  to a constant): with identities or single images as the similarity, a batch of 64 holds about one
  similar pair per row, and the plain mean was minimised by every image taking one code and every
  caption its opposite (the codes collapsed to 1-3 distinct values on UCM-Captions;
  benchmarks/RESULTS.md, attribute family).

``theta`` is not bounded: ``log(1 + exp(theta))`` is computed as softplus, stable for any size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["attribute_prediction_loss", "identity_similarity", "quantization_loss", "similarity_preserving_loss"]


def attribute_prediction_loss(logits: Tensor, targets: Tensor) -> Tensor:
    """L_a: the mean binary cross-entropy of ``(items, V)`` logits against 0/1 (or soft) targets."""
    if logits.shape != targets.shape or logits.dim() != 2:
        raise ValueError(
            f"logits and targets must both be (items, attributes), got {tuple(logits.shape)} and {tuple(targets.shape)}"
        )
    return F.binary_cross_entropy_with_logits(logits, targets.to(logits.dtype))


def identity_similarity(image_identities: Tensor, text_identities: Tensor) -> Tensor:
    """S, ``(n, m)`` float32: 1 where image i and caption j share an identity, else 0."""
    if image_identities.dim() != 1 or text_identities.dim() != 1:
        raise ValueError("identities must be 1-D label tensors, one per image and one per caption")
    return (image_identities[:, None] == text_identities[None, :]).to(torch.float32)


def similarity_preserving_loss(image_codes: Tensor, text_codes: Tensor, similarity: Tensor) -> Tensor:
    """L_s: the negative log-likelihood of S under ``sigmoid(1/2 <h^V_i, h^T_j>)``, the mean over the
    similar pairs and the mean over the dissimilar pairs averaged (see the module)."""
    if image_codes.dim() != 2 or text_codes.dim() != 2 or image_codes.shape[1] != text_codes.shape[1]:
        raise ValueError(
            f"codes must be (items, bits) of one length, got {tuple(image_codes.shape)} and {tuple(text_codes.shape)}"
        )
    expected = (image_codes.shape[0], text_codes.shape[0])
    if tuple(similarity.shape) != expected:
        raise ValueError(f"similarity must be (images, captions) = {expected}, got {tuple(similarity.shape)}")
    if not bool(((similarity == 0) | (similarity == 1)).all()):
        raise ValueError("similarity must hold only 0 and 1")
    theta = 0.5 * image_codes @ text_codes.T
    similar = similarity.to(theta.dtype)
    pair_losses = F.softplus(theta) - similar * theta
    return 0.5 * (_mean_over(pair_losses, similar) + _mean_over(pair_losses, 1 - similar))


def _mean_over(values: Tensor, mask: Tensor) -> Tensor:
    """The mean of ``values`` where ``mask`` is 1 (0 where it is 0 everywhere)."""
    return (values * mask).sum() / mask.sum().clamp(min=1)


def quantization_loss(relaxed: Tensor) -> Tensor:
    """L_q: the mean squared distance of relaxed codes ``(items, K)`` to their signs (+1 where h > 0, else -1)."""
    if relaxed.dim() != 2:
        raise ValueError(f"relaxed codes must be (items, bits), got shape {tuple(relaxed.shape)}")
    codes = torch.where(relaxed.detach() > 0, 1.0, -1.0).to(relaxed.dtype)
    return (codes - relaxed).square().mean()
