"""AgNet-style attribute space and hash codes on frozen image and text features (issue 29).

Ji, Sun, Yu, Pang and Han, "Attribute-Guided Network for Cross-Modal Zero-Shot Hashing", TNNLS 2020
(arXiv 1802.01943). AgNet aligns images and texts in one attribute space and lets the attributes
guide the hash codes of both "within the same network". Per item of modality X (image V, text T)::

    z^X = P_X(f^X)                  attribute logits, (V,)     P_X: Linear -> ReLU -> Linear
    a^X = sigmoid(z^X)              the attribute vector       (the attribute space, in [0, 1]^V)
    h^X = tanh(G(a^X))              relaxed code, (K,)         G: three Linear layers, ReLU between
    b^X = sign(h^X)                 the K-bit code at test     (+1 where h > 0, -1 elsewhere)

f^V is the frozen backbone's pooled feature of the image, f^T the mean of the frozen transformer's
token states over the caption's real tokens. The losses (:mod:`timam.losses.hashing`) train z on the
vocabulary's targets, h^V and h^T to preserve cross-modal similarity, and h towards b.

Where this follows the paper and where it differs, and why:

- Follows: an attribute predictor per modality into one attribute space shared by both; hash codes
  generated from the attribute vector, not from the raw features; a three-layer hashing network
  (as the issue quotes the paper); tanh relaxation in training and sign at test.
- Differs: the hashing network's K outputs are batch-normalised (no learned scale or shift) before
  the tanh, so each bit is +1 for about half of a batch. The attribute vectors of different items lie
  close together (all in [0, 1], most terms rare), and without it G mapped them to 1-3 distinct
  codes on UCM-Captions whatever the loss weights (benchmarks/RESULTS.md, attribute family); DCMH's
  bit-balance term ``||F 1||^2`` serves the same purpose.
- ``shared_hash_network`` (default true) maps both modalities' attribute vectors with one network
  G, as the abstract's "within the same network" reads: equal attribute vectors then get equal
  codes. False gives each modality its own G (``G_V``, ``G_T``), the usual cross-modal hashing form.
- The paper's backbones and its text input (zero-shot class descriptions, AwA/SUN/ImageNet) are
  replaced by the project's frozen encoders and captions; the attribute vocabulary comes from the
  dataset's labels or the training captions (:mod:`timam.sources.attributes`).
- The method section of the paper was not available to check layer widths, activations or whether
  the attribute vector fed to G is the probability or the logit; the probability is used, so the
  attribute space is the one the multi-label targets live in, and the float row (cosine of a^V, a^T)
  scores the same vectors the codes are made from.

Packing the codes to bytes for FAISS and Hamming ranking is :func:`timam.retrieval.hamming.pack_codes`
(the retrieval layer; a model module does not import its siblings): it sets bit 1 exactly where
:func:`binary_codes` gives +1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from timam.models.frozen_encoders import FrozenEncodersConfig

__all__ = ["AGNET_FAMILY", "AttributeHashingConfig", "AttributeHashingHeads", "AttributeOutputs", "binary_codes"]

AGNET_FAMILY = "agnet"
CodeBits = Literal[16, 32, 64, 128]


class AttributeHashingConfig(FrozenEncodersConfig):
    """Architecture of an AgNet-style model (``params:model`` of an attribute-hashing run)."""

    family: ClassVar[str] = AGNET_FAMILY

    num_attributes: int = Field(ge=1)
    """the attribute vocabulary's size (from the fitted vocabulary, never a parameter)"""
    code_bits: CodeBits = 64
    """K, the bits of a hash code: 16 | 32 | 64 | 128 (K / 8 bytes per gallery image)"""
    attribute_hidden: int = Field(default=512, ge=1)
    """the hidden layer of each attribute predictor"""
    hash_hidden: int = Field(default=512, ge=1)
    """the two hidden layers of the three-layer hashing network"""
    shared_hash_network: bool = True
    """one hashing network for both modalities (AgNet's "within the same network") | one per modality"""


@dataclass(frozen=True)
class AttributeOutputs:
    """One modality's outputs for a batch: ``logits`` and ``attributes`` ``(n, V)``, ``relaxed`` ``(n, K)``."""

    logits: Tensor
    attributes: Tensor
    relaxed: Tensor


def binary_codes(relaxed: Tensor) -> Tensor:
    """``sign(h)`` as +1 / -1 (an exact 0 maps to -1, as a packed bit 0 does); never differentiated."""
    return torch.where(relaxed.detach() > 0, 1.0, -1.0).to(relaxed.dtype)


def _predictor(in_features: int, hidden: int, attributes: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, attributes))


def _hash_network(attributes: int, hidden: int, bits: int) -> nn.Sequential:
    """Three layers from the attribute space to the K code outputs, each output standardised over the
    batch (running statistics at test time; tanh is applied by the caller)."""
    return nn.Sequential(
        nn.Linear(attributes, hidden),
        nn.ReLU(),
        nn.Linear(hidden, hidden),
        nn.ReLU(),
        nn.Linear(hidden, bits),
        nn.BatchNorm1d(bits, affine=False),
    )


def mean_token_state(states: Tensor, attention_mask: Tensor) -> Tensor:
    """The mean of the token states over each caption's real tokens (padding never counts)."""
    if states.dim() != 3 or tuple(attention_mask.shape) != tuple(states.shape[:2]):
        raise ValueError(
            f"states must be (captions, tokens, hidden) with a (captions, tokens) mask, got "
            f"{tuple(states.shape)} and {tuple(attention_mask.shape)}"
        )
    mask = attention_mask.to(states.dtype)[..., None]
    counts = mask.sum(dim=1)
    if bool((counts == 0).any()):
        raise ValueError("every caption needs at least one real token")
    return (states * mask).sum(dim=1) / counts


class AttributeHashingHeads(nn.Module):
    """The trained part of an AgNet-style model, on frozen features of the sizes given."""

    def __init__(self, config: AttributeHashingConfig, *, image_feature_dim: int, text_state_dim: int) -> None:
        super().__init__()
        self.config = config
        self.image_predictor = _predictor(image_feature_dim, config.attribute_hidden, config.num_attributes)
        self.text_predictor = _predictor(text_state_dim, config.attribute_hidden, config.num_attributes)
        self.image_hash = _hash_network(config.num_attributes, config.hash_hidden, config.code_bits)
        # One module registered under both names would be saved twice in a state dict: the shared
        # network is the image one, and the text side reads it through _text_hash.
        self.text_hash = (
            None
            if config.shared_hash_network
            else _hash_network(config.num_attributes, config.hash_hidden, config.code_bits)
        )

    def _text_hash(self) -> nn.Module:
        return self.image_hash if self.text_hash is None else self.text_hash

    @staticmethod
    def _outputs(features: Tensor, predictor: nn.Module, hash_network: nn.Module) -> AttributeOutputs:
        logits = predictor(features)
        attributes = torch.sigmoid(logits)
        return AttributeOutputs(logits, attributes, torch.tanh(hash_network(attributes)))

    def image_outputs(self, features: Tensor) -> AttributeOutputs:
        """From pooled backbone features ``(images, image_feature_dim)``."""
        return self._outputs(features, self.image_predictor, self.image_hash)

    def text_outputs(self, states: Tensor, attention_mask: Tensor) -> AttributeOutputs:
        """From token states ``(captions, tokens, text_state_dim)`` and their mask (padding ignored)."""
        return self._outputs(mean_token_state(states, attention_mask), self.text_predictor, self._text_hash())
