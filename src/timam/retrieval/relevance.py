"""Which gallery items are relevant to a query: the two relevance rules as integer labels."""

from __future__ import annotations

import torch

RELEVANCE_RULES = ("identity", "instance")


def relevance_labels(
    *, image_identity: torch.Tensor, caption_identity: torch.Tensor, caption_image: torch.Tensor, relevance: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Labels of the images and the captions; a caption and an image match when their labels are equal.

    ``identity``: same person or class (CUHK-PEDES, CUB, class-level UCM). ``instance``: a caption
    and the one image it describes (``caption_image`` indexes the images), as Flickr30K, COCO and
    the published UCM-Captions tables score it.
    """
    if relevance == "identity":
        return image_identity, caption_identity
    if relevance == "instance":
        return torch.arange(len(image_identity), device=caption_image.device), caption_image
    raise ValueError(f"relevance must be one of {list(RELEVANCE_RULES)}, got {relevance!r}")
