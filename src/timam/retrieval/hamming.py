"""Binary codes: sign bits packed into bytes, and Hamming distances as scores for the ranking engine.

A hashing model's K-bit code is the sign of its K real outputs; packed eight bits to a byte
(``np.packbits``'s order, the layout FAISS's binary indexes take: ``d / 8`` uint8 per code) it costs
K / 8 bytes per image. Two codes are compared by the Hamming distance, the number of differing
bits: an integer in [0, K]. Ties are therefore the rule, not the exception, so the distances go
through the same tie-aware ranking as every other model (:mod:`timam.retrieval.ranking`), as the
score ``-distance`` (exact in float32 for any K below 2**24): the expected rule is what makes a
hashing row comparable with a float row.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

__all__ = ["code_bytes", "hamming_distances", "hamming_scores", "pack_codes", "unpack_codes"]

# Bits set in each byte value: the popcount of XORed codes, byte by byte.
_POPCOUNT = torch.tensor([bin(value).count("1") for value in range(256)], dtype=torch.int32)


def code_bytes(bits: int) -> int:
    """Bytes per code of ``bits`` bits (a positive multiple of 8, as FAISS's binary indexes need)."""
    if bits < 8 or bits % 8:
        raise ValueError(f"a code length must be a positive multiple of 8 bits, got {bits}")
    return bits // 8


def pack_codes(outputs: Tensor) -> Tensor:
    """``(n, K)`` real outputs -> ``(n, K / 8)`` uint8: bit 1 where the output is positive (sign(0) = 0)."""
    if outputs.dim() != 2:
        raise ValueError(f"outputs must be (codes, bits), got shape {tuple(outputs.shape)}")
    code_bytes(outputs.shape[1])
    bits = (outputs.detach() > 0).cpu().numpy()
    return torch.from_numpy(np.packbits(bits, axis=1))


def unpack_codes(codes: Tensor) -> Tensor:
    """``(n, K / 8)`` uint8 -> ``(n, K)`` of +1 / -1 (float32): the codes as the signs they were packed from."""
    bits = np.unpackbits(codes.cpu().numpy(), axis=1)
    return torch.from_numpy(bits.astype(np.float32) * 2 - 1)


def hamming_distances(queries: Tensor, gallery: Tensor, *, chunk_size: int = 1024) -> Tensor:
    """``(q, n)`` int32 Hamming distances between packed codes (uint8, the same number of bytes)."""
    if queries.dtype != torch.uint8 or gallery.dtype != torch.uint8:
        raise ValueError(f"packed codes must be uint8, got {queries.dtype} and {gallery.dtype}")
    if queries.dim() != 2 or gallery.dim() != 2 or queries.shape[1] != gallery.shape[1]:
        raise ValueError(
            f"codes must be (count, bytes) of one length, got {tuple(queries.shape)}, {tuple(gallery.shape)}"
        )
    table = _POPCOUNT.to(gallery.device)
    out = torch.empty(queries.shape[0], gallery.shape[0], dtype=torch.int32, device=gallery.device)
    for start in range(0, queries.shape[0], chunk_size):
        block = queries[start : start + chunk_size].to(gallery.device)
        differing = torch.bitwise_xor(block[:, None, :], gallery[None, :, :])
        out[start : start + len(block)] = table[differing.long()].sum(dim=2, dtype=torch.int32)
    return out


def hamming_scores(queries: Tensor, gallery: Tensor, *, chunk_size: int = 1024) -> Tensor:
    """``-distance`` as float32: the score matrix the tie-aware ranking takes (higher ranks first)."""
    return -hamming_distances(queries, gallery, chunk_size=chunk_size).to(torch.float32)
