"""Identification loss (L_I): norm-softmax classification of each modality over training identities.

Why: TIMAM (and CMPM/CMPC before it) supervise each embedding with the identity it belongs to.
The classifier is a *norm-softmax*: every class's weight vector is L2-normalised before the dot
product (the bias is kept and the input embedding is not normalised), so the class prototypes all
live on the unit sphere and the logit of a class depends only on the embedding's projection on
that direction. This keeps classes from "winning" by weight magnitude and pushes the embeddings
themselves to carry the identity, which is what retrieval by cosine similarity needs.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["IdentificationLoss", "NormSoftmaxClassifier"]


class NormSoftmaxClassifier(nn.Module):
    """Linear classifier whose per-class weight vectors are L2-normalised at every call.

    ``logits = x @ normalize(W, dim=1).T + b`` with ``W`` of shape ``(num_classes, embedding_dim)``
    (one row per class, i.e. one column per class in the paper's ``d x C`` notation). The input
    ``x`` is *not* normalised.
    """

    def __init__(self, embedding_dim: int, num_classes: int, *, bias: bool = True) -> None:
        super().__init__()
        if embedding_dim <= 0 or num_classes <= 0:
            raise ValueError("embedding_dim and num_classes must be positive")
        self.embedding_dim = embedding_dim
        self.num_classes = num_classes
        self.weight = nn.Parameter(torch.empty(num_classes, embedding_dim))
        self.bias: nn.Parameter | None
        if bias:
            self.bias = nn.Parameter(torch.zeros(num_classes))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Initialise weights like ``nn.Linear`` (the scale is irrelevant after normalisation)
        and the bias to zero."""
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def normalized_weight(self) -> Tensor:
        """The class weight vectors, each of unit L2 norm, shape ``(num_classes, embedding_dim)``."""
        return F.normalize(self.weight, p=2, dim=1)

    def forward(self, x: Tensor) -> Tensor:
        """Class logits, shape ``(..., num_classes)``, for embeddings ``x`` of shape ``(..., embedding_dim)``."""
        return F.linear(x, self.normalized_weight(), self.bias)

    def extra_repr(self) -> str:
        return f"embedding_dim={self.embedding_dim}, num_classes={self.num_classes}, bias={self.bias is not None}"


class IdentificationLoss(nn.Module):
    """Norm-softmax cross-entropy on the image and on the text embeddings (L_I^V, L_I^T).

    By default one classifier is *shared* by the two modalities (``shared_classifier=True``).
    A shared classifier ties image and text embeddings of an identity to the same class
    prototype, so classification is itself a cross-modal alignment signal (both modalities must
    point at the same direction on the sphere), as in the CMPC / TIMAM reference code. With
    ``shared_classifier=False`` each modality gets its own classifier and L_I only shapes each
    embedding space separately, leaving all alignment to the matching / adversarial losses.

    Attributes ``image_classifier`` and ``text_classifier`` are the same object when shared.
    """

    def __init__(self, embedding_dim: int, num_classes: int, *, shared_classifier: bool = True) -> None:
        super().__init__()
        self.shared_classifier = shared_classifier
        self.image_classifier = NormSoftmaxClassifier(embedding_dim, num_classes)
        if shared_classifier:
            # Same module registered under both names: parameters() de-duplicates it.
            self.text_classifier = self.image_classifier
        else:
            self.text_classifier = NormSoftmaxClassifier(embedding_dim, num_classes)

    def forward(self, image_emb: Tensor, text_emb: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        """Return ``(loss_image, loss_text)``, mean cross-entropies of each modality.

        ``labels`` are class indices in ``[0, num_classes)``, one per row of both embeddings.
        """
        loss_image = F.cross_entropy(self.image_classifier(image_emb), labels)
        loss_text = F.cross_entropy(self.text_classifier(text_emb), labels)
        return loss_image, loss_text
