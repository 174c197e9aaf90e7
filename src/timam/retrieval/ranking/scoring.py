"""float32 query x gallery scores whose values do not depend on how the queries are chunked.

BLAS libraries switch to different kernels for very small matrices (on MKL a 1-row product can
round differently from the same row inside a big product, which can even split exact duplicates).
Both sides of every product are therefore padded to at least ``_MIN_GEMM_ROWS`` rows, so the score
of a (query, item) pair -- and hence every metric -- does not depend on ``chunk_size``. (A oneDNN
packed-gallery product was twice as fast on CPU, but only through torch's private
``torch.ops.mkldnn._linear_pointwise``; benchmarks/RESULTS.md has both timings.) On CUDA, cuBLAS
may choose shape-dependent algorithms; keep ``torch.get_float32_matmul_precision() == "highest"``
so scores stay float32.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor

# Products with fewer rows than this on either side are zero-padded (see the module docstring).
_MIN_GEMM_ROWS = 16


def prepare_embeddings(emb: Tensor, normalize: bool, name: str) -> Tensor:
    """2-D contiguous float32 embeddings, L2-normalised when asked."""
    if not isinstance(emb, Tensor) or emb.dim() != 2:
        raise ValueError(f"{name} must be a 2-D tensor (items x dim)")
    emb = emb.to(torch.float32).contiguous()
    if not bool(torch.isfinite(emb).all()):
        raise ValueError(f"{name} contains NaN or infinite values")
    if normalize:
        emb = F.normalize(emb, p=2.0, dim=1)
    return emb


def _pad_rows(x: Tensor) -> Tensor:
    """Zero-pad to at least ``_MIN_GEMM_ROWS`` rows so BLAS takes its regular GEMM path."""
    if x.shape[0] >= _MIN_GEMM_ROWS:
        return x
    pad = x.new_zeros(_MIN_GEMM_ROWS - x.shape[0], x.shape[1])
    return torch.cat([x, pad], dim=0)


_MATMUL_BACKENDS = (torch.backends.cuda.matmul, torch.backends.mkldnn.matmul)  # type: ignore[attr-defined]


@contextmanager
def exact_float32_products() -> Iterator[None]:
    """Run float32 matrix products as exact float32 ("ieee"), whatever the caller enabled.

    TF32 on CUDA (or bf16 in oneDNN) rounds the inputs to 10 mantissa bits: scores stop being
    float32, exact ties are missed and the results no longer equal a reference. torch 2.13 has two
    APIs for it, and once a caller sets the new one (``torch.backends.cuda.matmul.fp32_precision``)
    the legacy getter raises ("mix of legacy and new APIs"), so the setting is set and restored
    through the new per-backend one only, which reads correctly whichever API the caller used.
    """
    previous = [backend.fp32_precision for backend in _MATMUL_BACKENDS]
    for backend in _MATMUL_BACKENDS:
        backend.fp32_precision = "ieee"
    try:
        yield
    finally:
        for backend, value in zip(_MATMUL_BACKENDS, previous, strict=True):
            backend.fp32_precision = value


class _Workspace:
    """Chunk-sized buffers reused across chunks.

    A fresh ``chunk x gallery`` allocation per chunk is returned to the OS when freed and
    page-faults again on the next chunk, which costs about as much as the comparisons themselves.
    """

    def __init__(self) -> None:
        self._flat: dict[str, Tensor] = {}

    def get(self, name: str, rows: int, cols: int, like: Tensor) -> Tensor:
        need = rows * cols
        flat = self._flat.get(name)
        if flat is None or flat.numel() < need or flat.device != like.device:
            flat = torch.empty(need, dtype=torch.float32, device=like.device)
            self._flat[name] = flat
        return flat[:need].view(rows, cols)


class _GalleryScorer:
    """float32 scores of query chunks against one prepared gallery: ``torch.mm`` with both sides
    padded to ``_MIN_GEMM_ROWS`` rows, which keeps BLAS on one kernel whatever the chunk's size."""

    def __init__(self, gallery: Tensor) -> None:
        self.n_gallery = gallery.shape[0]
        self._padded = _pad_rows(gallery)

    def __call__(self, query: Tensor, workspace: _Workspace | None = None) -> Tensor:
        with exact_float32_products():
            return self._product(query, workspace)

    def _product(self, query: Tensor, workspace: _Workspace | None) -> Tensor:
        rows = query.shape[0]
        regular = rows >= _MIN_GEMM_ROWS and self._padded.shape[0] == self.n_gallery
        if workspace is None:
            scores = _pad_rows(query) @ self._padded.T
            return scores if regular else scores[:rows, : self.n_gallery].contiguous()
        out = workspace.get("scores", rows, self.n_gallery, query)
        if regular:
            return torch.mm(query, self._padded.T, out=out)
        return out.copy_((_pad_rows(query) @ self._padded.T)[:rows, : self.n_gallery])


def similarity(query_emb: Tensor, gallery_emb: Tensor, *, normalize: bool = True) -> Tensor:
    """float32 (cosine when ``normalize``) score matrix ``query x gallery`` on the inputs' device.

    Uses the same product as :func:`~timam.retrieval.ranking.ranking_metrics`, so scores agree bit for bit.
    """
    q = prepare_embeddings(query_emb, normalize, "query_emb")
    g = prepare_embeddings(gallery_emb, normalize, "gallery_emb").to(q.device)
    return _GalleryScorer(g)(q)
