"""Which gallery items are relevant to a query: the two relevance rules as integer labels."""

from __future__ import annotations

from typing import Literal, get_args

import torch

from timam.formats.tensor_bundle import TensorBundle

# identity: every item of the query's identity (person, class); instance: a caption's own image only.
Relevance = Literal["identity", "instance"]
RELEVANCE_RULES: tuple[str, ...] = get_args(Relevance)


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


def embedded_split_labels(
    image_embeddings: TensorBundle, text_embeddings: TensorBundle, relevance: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`relevance_labels` of a split as the evaluate pipeline embeds it (its identity and
    image-index tensors)."""
    return relevance_labels(
        image_identity=image_embeddings.tensors["identity"],
        caption_identity=text_embeddings.tensors["identity"],
        caption_image=text_embeddings.tensors["image_index"],
        relevance=relevance,
    )
