r"""ACMM-style aligned cross-modal memory: a pair-score model for the attribute-learning family (issue 29).

Huang and Wang, "ACMM: Aligned Cross-Modal Memory for Few-Shot Image and Sentence Matching", ICCV 2019.
Its abstract: an aligned memory controller produces two sets of semantically comparable interface
vectors through cross-modal alignment; modality-specific read and update operations use them to
interact alternately with shared memory items, which persistently memorise cross-modal shared
semantics and enhance the representations the pair is matched by. For one (image I, caption T) pair,
with regions v_1..v_n (the backbone's feature-map cells, as the SCAN rows use) and words w_1..w_m
(token states), both projected to d dimensions and l2-normalised, and memory items M_1..M_K::

    alignment    a_j = sum_r softmax_r(λ w_j·v_r) v_r          the image content aligned to word j
    interfaces   [k^V_j, e^V_j, c^V_j] = U_V a_j,  [k^T_j, e^T_j, c^T_j] = U_T w_j
                 (key; erase = sigmoid(.); add = tanh(.): one interface vector per word and modality)
    addressing   ω^X_jk = softmax_k(β cos(k^X_j, M_k))         content addressing, X in {V, T}
    update       M^X_k = M_k ⊙ (1 - ē^X_k) + ā^X_k,  ē^X_k = (1/m) sum_j ω^X_jk e^X_j,  ā^X_k alike with c^X
    read         r^T_j = sum_k ω^T_jk M^V_k,  r^V_j = sum_k ω^V_jk M^T_k
    enhanced     h^T_j = w_j + r^T_j,  h^V_j = a_j + r^V_j
    score        S(I, T) = (1/m) sum_j cos(h^V_j, h^T_j)

Sums over j run over the caption's real words (m its length): padded words change nothing.

Where this follows the paper and where it differs, and why:

- Follows (from the abstract; its method section was not available): an aligned controller making
  two comparable sets of interface vectors by cross-modal alignment (word-to-region attention, as
  SCAN's, pairs every word with the image content aligned to it); shared memory items; read and
  update operations that are modality-specific (their own interface maps U_V, U_T); alternate
  interaction (each modality reads the memory as the other one updated it); a score from the
  memory-enhanced representations.
- Read and update follow the Neural Turing Machine / Differentiable Neural Computer conventions the
  word "interface vectors" comes from (content addressing with a sharpness β, erase-then-add
  writes), with one write per word averaged over the words instead of NTM's sequential heads, so
  the result does not depend on word order.
- The memory's persistence across pairs is its learned items M (trained by gradient descent). A
  pair's update is applied to that pair's copy only: a score must depend on the pair alone, or
  ranking would depend on the order the gallery is scored in and chunks would disagree.
- No LSTM controller: the regions and words are the frozen backbone's cells and the frozen
  transformer's contextual token states, projected; the training loss (ACMM trains with a ranking
  loss) is the trainer's choice, as for the SCAN rows.

Chunking follows :mod:`timam.models.cross_attention`: :func:`aligned_memory_scores` runs the block
loop of :func:`chunked_aligned_memory_scores` with the default blocks, so the two are bitwise equal
with those blocks; other blocks agree to float rounding. A block holds captions x images x K x d
floats (the per-pair memories), hence smaller default blocks than SCAN's. Float64 inputs are
computed in float64 (``torch.autograd.gradcheck``), anything else in float32.
"""

from __future__ import annotations

from typing import ClassVar, NamedTuple

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from timam.models.frozen_encoders import FrozenEncodersConfig

__all__ = [
    "ACMM_CAPTION_CHUNK",
    "ACMM_FAMILY",
    "ACMM_IMAGE_CHUNK",
    "AlignedMemory",
    "AlignedMemoryConfig",
    "MemoryWeights",
    "aligned_memory_scores",
]

ACMM_FAMILY = "acmm"
# The largest blocks an ACMM-style model scores at once: a block holds captions x images x words x 3d
# floats of interface vectors (75 MB at these sizes with 24 words and d = 256), so callers' larger
# blocks (SCAN's 64 x 256) are cut down to these; chunks change the scores by float rounding only.
ACMM_IMAGE_CHUNK, ACMM_CAPTION_CHUNK = 16, 64
_EPS = 1e-8


class AlignedMemoryConfig(FrozenEncodersConfig):
    """Architecture of an ACMM-style model (``params:model`` of an aligned-memory run)."""

    family: ClassVar[str] = ACMM_FAMILY

    joint_dim: int = Field(default=256, ge=1)
    """d: the region and word projections, interface keys and memory items"""
    memory_items: int = Field(default=32, ge=1)
    """K: the shared memory items both modalities read and update"""
    lambda_softmax: float = Field(default=9.0, gt=0)
    """λ: the temperature of the word-to-region alignment (SCAN's t2i value)"""
    memory_sharpness: float = Field(default=10.0, gt=0)
    """β: the sharpness of content addressing over the memory items"""


class MemoryWeights(NamedTuple):
    """The learned tensors of the memory: items ``(K, d)`` and each modality's interface map ``d -> 3d``."""

    memory: Tensor
    image_interface: Tensor
    image_bias: Tensor
    text_interface: Tensor
    text_bias: Tensor


def _interfaces(raw: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Split ``(..., 3d)`` into key, erase (in [0, 1]) and add (in [-1, 1]) vectors."""
    key, erase, add = raw.chunk(3, dim=-1)
    return key, torch.sigmoid(erase), torch.tanh(add)


def _addressing(keys: Tensor, memory: Tensor, sharpness: float) -> Tensor:
    """ω_jk = softmax over the K items of β cos(k_j, M_k)."""
    cosine = F.normalize(keys, dim=-1, eps=_EPS) @ F.normalize(memory, dim=-1, eps=_EPS).T
    return torch.softmax(sharpness * cosine, dim=-1)


def _updated(memory: Tensor, weights: Tensor, erase: Tensor, add: Tensor, lengths: Tensor) -> Tensor:
    """M ⊙ (1 - ē) + ā with ē, ā the addressing-weighted means over the words (weights of padding are 0)."""
    scaled = (weights / lengths[..., None, None]).transpose(-1, -2)  # (..., K, m)
    return memory * (1 - scaled @ erase) + scaled @ add


def _block(
    regions: Tensor, words: Tensor, mask: Tensor, weights: MemoryWeights, lambda_softmax: float, sharpness: float
) -> Tensor:
    """Scores ``(captions, images)`` of one block of normalised regions ``(I, n, d)`` and words ``(C, m, d)``."""
    real = mask.to(words.dtype)  # (C, m)
    lengths = real.sum(dim=1)  # (C,)
    similarity = torch.einsum("cjd,ird->cijr", words, regions)
    alpha = torch.softmax(lambda_softmax * similarity, dim=-1)  # (C, I, m, n)
    aligned = alpha @ regions[None]  # (C, I, m, d)
    # U_V a_j = sum_r α_jr (U_V v_r) + b_V, since the α of a word sum to 1: project each region once.
    image_raw = alpha @ (regions @ weights.image_interface.T)[None] + weights.image_bias
    image_key, image_erase, image_add = _interfaces(image_raw)
    text_key, text_erase, text_add = _interfaces(words @ weights.text_interface.T + weights.text_bias)
    image_weights = _addressing(image_key, weights.memory, sharpness) * real[:, None, :, None]  # (C, I, m, K)
    text_weights = _addressing(text_key, weights.memory, sharpness) * real[..., None]  # (C, m, K)
    image_memory = _updated(weights.memory, image_weights, image_erase, image_add, lengths[:, None])
    text_memory = _updated(weights.memory, text_weights, text_erase, text_add, lengths)  # (C, K, d)
    text_read = text_weights[:, None] @ image_memory  # the text reads what the image wrote
    image_read = image_weights @ text_memory[:, None]  # and the image what the text wrote
    cosine = F.cosine_similarity(aligned + image_read, words[:, None] + text_read, dim=-1, eps=_EPS)
    return (cosine * real[:, None]).sum(dim=-1) / lengths[:, None]


def _checked_mask(regions: Tensor, words: Tensor, word_mask: Tensor, chunks: tuple[int, int]) -> Tensor:
    """Check shapes, dtypes and chunks (a ValueError naming the problem); the mask as bool."""
    if regions.dim() != 3 or words.dim() != 3 or regions.shape[-1] != words.shape[-1]:
        raise ValueError(
            "regions must be (images, regions, d) and words (captions, words, d) with one d, got "
            f"{tuple(regions.shape)} and {tuple(words.shape)}"
        )
    if not regions.is_floating_point() or not words.is_floating_point():
        raise ValueError(f"regions and words must be floating point, got {regions.dtype} and {words.dtype}")
    if tuple(word_mask.shape) != tuple(words.shape[:2]):
        raise ValueError(f"word_mask must be {tuple(words.shape[:2])}, got {tuple(word_mask.shape)}")
    if any(isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1 for chunk in chunks):
        raise ValueError(f"image_chunk and caption_chunk must be positive ints, got {chunks}")
    mask = word_mask.bool()
    empty = (~mask.any(dim=1)).nonzero().flatten()
    if empty.numel():
        raise ValueError(f"every caption needs at least one real word; captions {empty[:10].tolist()} have none")
    return mask


def chunked_aligned_memory_scores(
    regions: Tensor,
    words: Tensor,
    word_mask: Tensor,
    weights: MemoryWeights,
    *,
    lambda_softmax: float,
    sharpness: float,
    image_chunk: int = ACMM_IMAGE_CHUNK,
    caption_chunk: int = ACMM_CAPTION_CHUNK,
) -> Tensor:
    """S(I, T) of every caption x image pair, ``(captions, images)``, block by block (see the module).

    ``regions`` ``(images, n, d)`` and ``words`` ``(captions, m, d)`` are projected, not yet normalised;
    ``word_mask`` ``(captions, m)`` is true for real words.
    """
    mask = _checked_mask(regions, words, word_mask, (image_chunk, caption_chunk))
    dtype = torch.float64 if torch.float64 in (regions.dtype, words.dtype) else torch.float32
    weights = MemoryWeights(*(tensor.to(dtype) for tensor in weights))
    regions = F.normalize(regions.to(dtype), dim=-1, eps=_EPS)
    words = F.normalize(torch.where(mask[..., None], words.to(dtype), 0.0), dim=-1, eps=_EPS)
    if len(regions) == 0 or len(words) == 0:
        return regions.new_zeros((len(words), len(regions)))
    rows = []
    for c0 in range(0, len(words), caption_chunk):
        captions = slice(c0, c0 + caption_chunk)
        row = [
            _block(regions[i0 : i0 + image_chunk], words[captions], mask[captions], weights, lambda_softmax, sharpness)
            for i0 in range(0, len(regions), image_chunk)
        ]
        rows.append(torch.cat(row, dim=1))
    return torch.cat(rows)


def aligned_memory_scores(
    regions: Tensor,
    words: Tensor,
    word_mask: Tensor,
    weights: MemoryWeights,
    *,
    lambda_softmax: float,
    sharpness: float,
) -> Tensor:
    """:func:`chunked_aligned_memory_scores` with the default blocks: bitwise equal to it."""
    return chunked_aligned_memory_scores(
        regions, words, word_mask, weights, lambda_softmax=lambda_softmax, sharpness=sharpness
    )


class AlignedMemory(nn.Module):
    """The trained part of an ACMM-style model: projections, memory items and interface maps.

    ``scores`` has :meth:`~timam.models.interaction.InteractionModel.scores`' signature, so the
    chunked pair scoring, two-stage re-ranking and tie-aware ranking take it as they take SCAN.
    """

    def __init__(self, config: AlignedMemoryConfig, *, region_dim: int, word_dim: int) -> None:
        super().__init__()
        self.config = config
        d = config.joint_dim
        self.region_projection = nn.Linear(region_dim, d)
        self.word_projection = nn.Linear(word_dim, d)
        self.memory = nn.Parameter(torch.randn(config.memory_items, d) / d**0.5)
        self.image_interface = nn.Linear(d, 3 * d)
        self.text_interface = nn.Linear(d, 3 * d)

    def weights(self) -> MemoryWeights:
        return MemoryWeights(
            self.memory,
            self.image_interface.weight,
            self.image_interface.bias,
            self.text_interface.weight,
            self.text_interface.bias,
        )

    def scores(
        self,
        regions: Tensor,
        states: Tensor,
        attention_mask: Tensor,
        *,
        image_chunk: int | None = None,
        caption_chunk: int | None = None,
    ) -> Tensor:
        """Pair scores ``(captions, images)`` of frozen region features and token states."""
        return chunked_aligned_memory_scores(
            self.region_projection(regions.float()),
            self.word_projection(states.float()),
            attention_mask,
            self.weights(),
            lambda_softmax=self.config.lambda_softmax,
            sharpness=self.config.memory_sharpness,
            image_chunk=image_chunk or ACMM_IMAGE_CHUNK,
            caption_chunk=caption_chunk or ACMM_CAPTION_CHUNK,
        )
