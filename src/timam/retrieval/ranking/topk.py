"""Top-k gallery items per query, ordered by score with ties broken by ascending gallery index."""

from __future__ import annotations

import torch
from torch import Tensor

from timam.retrieval.ranking.scoring import _GalleryScorer, prepare_embeddings


def _order_by_score_then_index(values: Tensor, indices: Tensor) -> tuple[Tensor, Tensor]:
    """Sort each row by score descending, ties by gallery index ascending."""
    indices, perm = torch.sort(indices, dim=1, stable=True)
    values = values.gather(1, perm)
    values, perm = torch.sort(values, dim=1, descending=True, stable=True)
    return values, indices.gather(1, perm)


def _topk_chunk(scores: Tensor, k: int) -> tuple[Tensor, Tensor]:
    values, indices = torch.topk(scores, k, dim=1, largest=True, sorted=True)
    kth = values[:, -1:]
    n_ge = (scores >= kth).sum(dim=1)
    tied_rows = (n_ge > k).nonzero().flatten()
    if tied_rows.numel():
        # More items tie with the k-th score than fit: keep the lowest indices among them.
        sub = scores[tied_rows]
        sub_kth = kth[tied_rows]
        above = sub > sub_kth
        n_above = above.sum(dim=1, keepdim=True)
        tied = sub == sub_kth
        keep = above | (tied & (torch.cumsum(tied, dim=1) <= k - n_above))
        cols = keep.nonzero()[:, 1].view(-1, k)
        indices[tied_rows] = cols
        values[tied_rows] = sub.gather(1, cols)
    return _order_by_score_then_index(values, indices)


class GalleryTopK:
    """Top-k queries against one gallery prepared once (validated, normalised if asked, packed for
    the scorer): what :func:`topk_indices` does per call, for a gallery queried many times (an
    image index), where preparing it again for every query would cost more than the query."""

    def __init__(
        self,
        gallery_emb: Tensor,
        *,
        chunk_size: int = 1024,
        normalize: bool = True,
        device: torch.device | None = None,
    ) -> None:
        gallery = prepare_embeddings(gallery_emb, normalize, "gallery_emb")
        self.gallery = gallery if device is None else gallery.to(device)
        if chunk_size < 1:
            raise ValueError("chunk_size must be >= 1")
        self.chunk_size = chunk_size
        self._scorer = _GalleryScorer(self.gallery)

    def __len__(self) -> int:
        return self.gallery.shape[0]

    def topk(self, query_emb: Tensor, k: int, *, normalize: bool = True) -> tuple[Tensor, Tensor]:
        """``(scores, indices)``, both ``queries x k``, ordered as :func:`topk_indices` orders them."""
        return self._ranked(prepare_embeddings(query_emb, normalize, "query_emb"), k)

    def _ranked(self, q: Tensor, k: int) -> tuple[Tensor, Tensor]:
        if not 1 <= k <= len(self):
            raise ValueError(f"k must be in [1, {len(self)}], got {k}")
        out_v: list[Tensor] = []
        out_i: list[Tensor] = []
        for lo in range(0, q.shape[0], self.chunk_size):
            v, i = _topk_chunk(self._scorer(q[lo : lo + self.chunk_size]), k)
            out_v.append(v)
            out_i.append(i)
        if not out_v:
            return q.new_zeros(0, k), torch.zeros(0, k, dtype=torch.long, device=q.device)
        return torch.cat(out_v), torch.cat(out_i)


def topk_indices(
    query_emb: Tensor,
    gallery_emb: Tensor,
    k: int,
    *,
    chunk_size: int = 1024,
    normalize: bool = True,
) -> tuple[Tensor, Tensor]:
    """Top-``k`` gallery items per query: ``(scores, indices)``, both ``queries x k``.

    Rows are ordered by float32 score descending with ties broken by ascending gallery index,
    i.e. exactly the first ``k`` entries of a stable ``argsort(-score)``.
    """
    q = prepare_embeddings(query_emb, normalize, "query_emb")
    gallery = GalleryTopK(gallery_emb, chunk_size=chunk_size, normalize=normalize, device=q.device)
    return gallery._ranked(q, k)
