r"""SCAN stacked cross-attention similarity between image regions and caption words.

Lee, Chen, Hua, Hu and He, "Stacked Cross Attention for Image-Text Matching", ECCV 2018. The image
regions are the cells of a backbone's last feature map, already projected to the joint space; the
words are a text encoder's token states, projected to the same space. Pure torch.

Notation: in direction ``"t2i"`` the *queries* are the words of a caption and the *context* the
regions of an image (each word attends over the regions); in ``"i2t"`` the queries are the regions and
the context the words (each region attends over the words). For one (image I, caption T) pair, with
queries q_1..q_m and context items c_1..c_n, all l2-normalised along d (SCAN normalises its features):

    s_qc     = cos(q, c) = q^T c                                   cosine of every (query, context) pair
    s̄_qc     = [s_qc]_+ / sqrt(sum_q' [s_q'c]_+^2 + eps)          clipped, normalised over the QUERIES
    α_qc     = exp(λ_1 s̄_qc) / sum_c' exp(λ_1 s̄_qc')              attention of query q over the context
    a_q      = sum_c α_qc c                                        attended context vector
    R_q      = cos(q, a_q)                                         relevance of query q
    S(I, T)  = (1/λ_2) log sum_q exp(λ_2 R_q)      pooling "lse"   (LogSumExp, λ_2 = lambda_lse)
    S(I, T)  = (1/m) sum_q R_q                     pooling "avg"

This is the paper's i-t equation s̄_ij = [s_ij]_+ / sqrt(sum_i [s_ij]_+^2) with the regions i as queries
and the words j as context, and the t-i one with the roles swapped. Padded words never count: as
queries they are left out of the sum in s̄ and out of the pooling (m is the caption's real length), as
context they get α = 0 exactly.

R_q is computed without materialising a_q (which would be captions x images x queries x d): since q and
the c are unit vectors, q^T a_q = sum_c α_qc s_qc and ||a_q||^2 = α_q^T G α_q with G the Gram matrix
c^T c' of the context, so R_q = (sum_c α_qc s_qc) / max(||a_q||, eps). The largest intermediate is then
captions x images x queries x context, which ``chunked_cross_attention_scores`` bounds by computing the
(n_captions, n_images) matrix block by block.

Float64 inputs are computed in float64 (so ``torch.autograd.gradcheck`` works); float32, float16 and
bfloat16 inputs are computed, and scored, in float32.

Bitwise agreement: a block's result may depend on the block's shape (BLAS and cuBLAS may pick their
kernels, thread splits and reduction orders by shape), so ``cross_attention_scores`` itself runs the
same block loop with the default blocks (64 images x 256 captions). It is therefore bitwise equal to
``chunked_cross_attention_scores`` with the default ``image_chunk`` and ``caption_chunk`` on any
device; other block sizes are only promised to agree to float rounding (about 1e-7 in float32).
Inputs that fit in one block (up to 64 images and 256 captions) are computed in one batched shot; there
is never a Python loop over pairs.
"""

from __future__ import annotations

import math
from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor

Direction = Literal["t2i", "i2t"]
Pooling = Literal["lse", "avg"]
DIRECTIONS: tuple[str, ...] = get_args(Direction)
POOLINGS: tuple[str, ...] = get_args(Pooling)

_IMAGE_CHUNK = 64
_CAPTION_CHUNK = 256


def cross_attention_scores(
    regions: Tensor,
    words: Tensor,
    word_mask: Tensor,
    *,
    direction: str,
    lambda_softmax: float,
    pooling: str,
    lambda_lse: float,
    eps: float = 1e-8,
) -> Tensor:
    r"""SCAN pair scores S(I, T) for every caption x image pair, shape (n_captions, n_images).

    Args:
        regions: (n_images, n_regions, d) float region features (joint space, not yet normalised).
        words: (n_captions, n_words, d) float word features, padded to n_words.
        word_mask: (n_captions, n_words) bool or 0/1, true for real words; every caption needs one.
        direction: ``"t2i"`` (each word attends over the regions, pooled over the words) or ``"i2t"``
            (each region attends over the words, pooled over the regions).
        lambda_softmax: attention temperature λ_1 in α_qc = softmax_c(λ_1 s̄_qc).
        pooling: ``"lse"``, S = (1/λ_2) log Σ_q exp(λ_2 R_q), or ``"avg"``, S = mean_q R_q.
        lambda_lse: λ_2 of the LogSumExp pooling (unused, and not checked, for ``"avg"``).
        eps: added under the square root of s̄'s normaliser, and the floor of the norms.

    With s_qc = cos(q, c) over l2-normalised features, s̄_qc = [s_qc]_+ / sqrt(Σ_q' [s_q'c]_+² + eps)
    (normalised over the queries), a_q = Σ_c α_qc c and R_q = cos(q, a_q); see the module docstring.

    Returns:
        float32 scores (float64 for float64 inputs), differentiable in ``regions`` and ``words``.
        Computed in blocks of 64 images x 256 captions, which makes the result bitwise equal to
        :func:`chunked_cross_attention_scores` with its default blocks.
    """
    return _scores(
        regions,
        words,
        word_mask,
        direction=direction,
        lambda_softmax=lambda_softmax,
        pooling=pooling,
        lambda_lse=lambda_lse,
        eps=eps,
        image_chunk=_IMAGE_CHUNK,
        caption_chunk=_CAPTION_CHUNK,
    )


def chunked_cross_attention_scores(
    regions: Tensor,
    words: Tensor,
    word_mask: Tensor,
    *,
    image_chunk: int = _IMAGE_CHUNK,
    caption_chunk: int = _CAPTION_CHUNK,
    direction: str,
    lambda_softmax: float,
    pooling: str,
    lambda_lse: float,
    eps: float = 1e-8,
) -> Tensor:
    """:func:`cross_attention_scores`, computed in blocks of ``image_chunk`` images x ``caption_chunk`` captions.

    The largest intermediate is caption_chunk x image_chunk x n_words x n_regions elements instead of
    n_captions x n_images x n_words x n_regions. Wrapping the call in ``torch.no_grad()`` (to free each
    block's intermediates as soon as it is scored) is the caller's business. With the default blocks the
    result is bitwise equal to :func:`cross_attention_scores`; with other blocks it agrees to float
    rounding.
    """
    return _scores(
        regions,
        words,
        word_mask,
        direction=direction,
        lambda_softmax=lambda_softmax,
        pooling=pooling,
        lambda_lse=lambda_lse,
        eps=eps,
        image_chunk=image_chunk,
        caption_chunk=caption_chunk,
    )


def _scores(
    regions: Tensor,
    words: Tensor,
    word_mask: Tensor,
    *,
    direction: str,
    lambda_softmax: float,
    pooling: str,
    lambda_lse: float,
    eps: float,
    image_chunk: int,
    caption_chunk: int,
) -> Tensor:
    """The block loop shared by both public functions (same code path, hence bitwise equal results)."""
    mask = _validate(
        regions, words, word_mask, direction, lambda_softmax, pooling, lambda_lse, eps, image_chunk, caption_chunk
    )
    dtype = torch.float64 if torch.float64 in (regions.dtype, words.dtype) else torch.float32
    regions = _normalise(regions.to(dtype), eps)
    # Padded words become zero vectors whatever they held (even inf or nan), so they add exactly 0 anywhere.
    words = _normalise(torch.where(mask[..., None], words.to(dtype), 0.0), eps)
    n_images, n_captions = regions.shape[0], words.shape[0]
    if n_images == 0 or n_captions == 0:
        return regions.new_zeros((n_captions, n_images))
    rows = []
    for c0 in range(0, n_captions, caption_chunk):
        captions = slice(c0, c0 + caption_chunk)
        row = [
            _pair_block(
                regions[i0 : i0 + image_chunk],
                words[captions],
                mask[captions],
                direction=direction,
                lambda_softmax=lambda_softmax,
                pooling=pooling,
                lambda_lse=lambda_lse,
                eps=eps,
            )
            for i0 in range(0, n_images, image_chunk)
        ]
        rows.append(torch.cat(row, dim=1))
    return torch.cat(rows, dim=0)


def _validate(
    regions: Tensor,
    words: Tensor,
    word_mask: Tensor,
    direction: str,
    lambda_softmax: float,
    pooling: str,
    lambda_lse: float,
    eps: float,
    image_chunk: int,
    caption_chunk: int,
) -> Tensor:
    """Check every argument, with a ValueError that names the problem; return the mask as bool."""
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    if not math.isfinite(lambda_softmax) or lambda_softmax <= 0:
        raise ValueError(f"lambda_softmax must be a finite positive number, got {lambda_softmax!r}")
    if pooling == "lse" and (not math.isfinite(lambda_lse) or lambda_lse <= 0):
        raise ValueError(f"lambda_lse must be a finite positive number for pooling 'lse', got {lambda_lse!r}")
    if not math.isfinite(eps) or eps <= 0:
        raise ValueError(f"eps must be a finite positive number, got {eps!r}")
    for name, chunk in (("image_chunk", image_chunk), ("caption_chunk", caption_chunk)):
        if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
            raise ValueError(f"{name} must be a positive int, got {chunk!r}")
    if regions.ndim != 3 or words.ndim != 3:
        raise ValueError(
            "regions must be (n_images, n_regions, d) and words (n_captions, n_words, d), "
            f"got shapes {tuple(regions.shape)} and {tuple(words.shape)}"
        )
    if not regions.is_floating_point() or not words.is_floating_point():
        raise ValueError(f"regions and words must be floating point, got {regions.dtype} and {words.dtype}")
    if regions.shape[1] < 1 or regions.shape[2] < 1:
        raise ValueError(f"regions need at least one region and one feature, got shape {tuple(regions.shape)}")
    if regions.shape[2] != words.shape[2]:
        raise ValueError(
            f"regions and words must share the feature size d, got {regions.shape[2]} and {words.shape[2]}"
        )
    if tuple(word_mask.shape) != tuple(words.shape[:2]):
        raise ValueError(
            f"word_mask must be (n_captions, n_words) = {tuple(words.shape[:2])}, got {tuple(word_mask.shape)}"
        )
    if regions.device != words.device or word_mask.device != words.device:
        raise ValueError(
            f"regions, words and word_mask must be on one device, got {regions.device}, {words.device} "
            f"and {word_mask.device}"
        )
    if word_mask.dtype != torch.bool and not bool(((word_mask == 0) | (word_mask == 1)).all()):
        raise ValueError("word_mask must be bool or hold only 0 and 1")
    mask = word_mask.bool() if word_mask.dtype != torch.bool else word_mask
    empty = (~mask.any(dim=1)).nonzero().flatten()
    if empty.numel():
        raise ValueError(f"every caption needs at least one real word; captions {empty[:10].tolist()} have none")
    return mask


def _pair_block(
    regions: Tensor,
    words: Tensor,
    mask: Tensor,
    *,
    direction: str,
    lambda_softmax: float,
    pooling: str,
    lambda_lse: float,
    eps: float,
) -> Tensor:
    """(captions, images) scores of one block of normalised features, in either direction."""
    if direction == "t2i":  # words attend over regions: queries are the captions' words
        return _block_scores(words, mask, regions, None, lambda_softmax, pooling, lambda_lse, eps).T
    return _block_scores(regions, None, words, mask, lambda_softmax, pooling, lambda_lse, eps)


def _block_scores(
    queries: Tensor,
    query_mask: Tensor | None,
    context: Tensor,
    context_mask: Tensor | None,
    lambda_softmax: float,
    pooling: str,
    lambda_lse: float,
    eps: float,
) -> Tensor:
    """S for every (context set, query set) pair of one block, shape (n_context_sets, n_query_sets).

    queries (n_q_sets, m, d) and context (n_c_sets, n, d) are unit vectors, padded words zero vectors; the
    masks are (sets, items). The intermediates are laid out (n_c_sets, n, n_q_sets, m): the matmul writes
    them so, with no copy, and the sums over the context items run over a dimension with a long
    contiguous inner stride.
    """
    s = _similarities(queries, context)
    s_bar = _clipped_normalised(s, eps)
    alpha = _attend(s_bar, context_mask, lambda_softmax)
    relevance = _relevance(s, alpha, context, eps)
    return _pool(relevance, query_mask, pooling, lambda_lse)


def _normalise(x: Tensor, eps: float) -> Tensor:
    """l2-normalise along the feature dimension d (zero vectors stay zero)."""
    return F.normalize(x, p=2.0, dim=-1, eps=eps)


def _similarities(queries: Tensor, context: Tensor) -> Tensor:
    """s_qc = q^T c for every pair of sets, laid out (n_c_sets, n, n_q_sets, m), in one matmul."""
    n_q_sets, m, d = queries.shape
    n_c_sets, n, _ = context.shape
    flat = context.reshape(n_c_sets * n, d) @ queries.reshape(n_q_sets * m, d).T
    return flat.view(n_c_sets, n, n_q_sets, m)


def _clipped_normalised(s: Tensor, eps: float) -> Tensor:
    """s̄_qc = [s_qc]_+ / sqrt(Σ_q [s_qc]_+² + eps): for each context item c, normalised over the queries.

    Padded words are zero vectors, so as queries their [s_qc]_+ is exactly 0 and adds nothing to the sum.
    """
    clipped = s.clamp_min(0.0)
    return clipped / torch.sqrt(clipped.square().sum(dim=-1, keepdim=True) + eps)


def _attend(s_bar: Tensor, context_mask: Tensor | None, lambda_softmax: float) -> Tensor:
    """α_qc = softmax over the real context items c of λ_1 s̄_qc (padded words get exactly 0)."""
    logits = lambda_softmax * s_bar
    if context_mask is not None:
        logits = logits.masked_fill(~context_mask[:, :, None, None], float("-inf"))
    return torch.softmax(logits, dim=1)


def _relevance(s: Tensor, alpha: Tensor, context: Tensor, eps: float) -> Tensor:
    """R_q = cos(q, a_q) with a_q = Σ_c α_qc c, from q^T a_q = Σ_c α_qc s_qc and ||a_q||² = α_q^T G α_q.

    Returns (n_c_sets, n_q_sets, m).
    """
    n_c_sets, n, n_q_sets, m = alpha.shape
    gram = context @ context.transpose(1, 2)  # (n_c_sets, n, n): c^T c'
    gram_alpha = torch.bmm(gram, alpha.reshape(n_c_sets, n, n_q_sets * m)).view_as(alpha)
    squared_norm = (gram_alpha * alpha).sum(dim=1)
    dot = (alpha * s).sum(dim=1)
    return dot / squared_norm.clamp_min(eps * eps).sqrt()  # ||a_q|| floored at eps, no nan gradient at 0


def _pool(relevance: Tensor, query_mask: Tensor | None, pooling: str, lambda_lse: float) -> Tensor:
    """Pool R_q over the real queries: (1/λ_2) log Σ_q exp(λ_2 R_q) for "lse", the mean for "avg"."""
    if pooling == "lse":
        scaled = lambda_lse * relevance
        if query_mask is not None:
            scaled = scaled.masked_fill(~query_mask[None], float("-inf"))
        return torch.logsumexp(scaled, dim=-1) / lambda_lse
    if query_mask is None:
        return relevance.mean(dim=-1)
    real = query_mask[None].to(relevance.dtype)
    return (relevance * real).sum(dim=-1) / real.sum(dim=-1)
