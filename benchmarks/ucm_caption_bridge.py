"""A training-free UCM-Captions baseline: score captions through the captions of visual neighbours.

Run: ``.venv/bin/python benchmarks/ucm_caption_bridge.py`` (uses the probe's feature cache, and
builds it on first use as ``benchmarks/ucm_probe.py`` does).

Why: every trained head on the frozen features lands at 47-50 instance mR (benchmarks/RESULTS.md).
If a model that learns nothing reaches the same by looking up the captions of the nearest training
images, the limit is how well the frozen image features tell apart images within a class, not the
heads or the losses. Score of (image i, caption c) = sum over i's k nearest training images n
(cosine on the 8-view mean EfficientNet-Lite0 features, softmax weights at temperature tau) of the
best similarity between c and n's five captions -- MiniLM mean-pooled sentence embeddings
(``max``), or 1 for an identical string and 0 otherwise (``exact``). ``k`` and ``tau`` are chosen on
validation mR; the last line reads ``caption_bridge: mode=.. k=.. tau=.. val_mR=.. test_mR=..``
for each mode.
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F

from timam.retrieval.ranking import ranking_metrics
from ucm_probe import SPLITS, load_features

KS, TAUS = (1, 2, 3, 5, 10, 20, 50), (0.02, 0.05, 0.1)


def sentence_embeddings(f: dict[str, torch.Tensor]) -> torch.Tensor:
    """L2-normalised mean of each distinct caption's MiniLM token states (its sentence-transformer pooling)."""
    states, mask = f["token_states"].float(), f["token_mask"].float()[..., None]
    return F.normalize((states * mask).sum(1) / mask.sum(1), dim=1)


def bridge_mr(f: dict[str, torch.Tensor], split: int, mode: str, k: int, tau: float) -> float:
    """Instance-level mR (expected tie rule, both directions) of the bridged scores on one split."""
    images = (f["image_split"] == split).nonzero().flatten()
    captions = (f["image_split"][f["caption_image"]] == split).nonzero().flatten()
    train = (f["image_split"] == SPLITS["train"]).nonzero().flatten()
    visual = F.normalize(f["pooled"].float().mean(0), dim=1)
    sentences = sentence_embeddings(f)
    strings = f["caption_string"].view(-1, 5)  # each image's five caption strings
    if mode == "exact":
        match = (strings[train][:, None, :] == f["caption_string"][captions][None, :, None]).any(2).float()
    else:
        match = torch.einsum("nfd,cd->ncf", sentences[strings[train]], sentences[f["caption_string"][captions]]).amax(2)
    near = (visual[images] @ visual[train].T).topk(k, dim=1)
    weights = torch.zeros(len(images), len(train)).scatter_(1, near.indices, torch.softmax(near.values / tau, dim=1))
    owner, gallery = f["caption_image"][captions], match.T.contiguous()
    t2i = ranking_metrics(gallery, weights, owner, images, normalize=False, metrics=("R@K",))["expected"]
    i2t = ranking_metrics(weights, gallery, images, owner, normalize=False, metrics=("R@K",))["expected"]
    return sum(t2i[f"R@{n}"] + i2t[f"R@{n}"] for n in (1, 5, 10)) / 6


def main() -> None:
    f = load_features(224)
    for mode in ("max", "exact"):
        val, k, tau = max((bridge_mr(f, SPLITS["val"], mode, k, tau), k, tau) for k, tau in itertools.product(KS, TAUS))
        test = bridge_mr(f, SPLITS["test"], mode, k, tau)
        print(f"caption_bridge: mode={mode} k={k} tau={tau} val_mR={val:.2f} test_mR={test:.2f}")


if __name__ == "__main__":
    main()
