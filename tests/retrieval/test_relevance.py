"""The two relevance rules give the labels that make exactly the right pairs relevant."""

from __future__ import annotations

import pytest
import torch

from timam.retrieval.relevance import relevance_labels

# Three images: images 0 and 1 show identity 7, image 2 identity 9; captions 0-1 describe image 0,
# caption 2 image 1, caption 3 image 2.
IMAGE_IDENTITY = torch.tensor([7, 7, 9])
CAPTION_IMAGE = torch.tensor([0, 0, 1, 2])
CAPTION_IDENTITY = IMAGE_IDENTITY[CAPTION_IMAGE]


def _relevant(relevance: str) -> torch.Tensor:
    images, captions = relevance_labels(
        image_identity=IMAGE_IDENTITY,
        caption_identity=CAPTION_IDENTITY,
        caption_image=CAPTION_IMAGE,
        relevance=relevance,
    )
    return captions[:, None] == images[None, :]


def test_identity_relevance_matches_every_image_of_the_same_identity() -> None:
    expected = torch.tensor([[1, 1, 0], [1, 1, 0], [1, 1, 0], [0, 0, 1]], dtype=torch.bool)
    assert torch.equal(_relevant("identity"), expected)


def test_instance_relevance_matches_only_the_described_image() -> None:
    expected = torch.tensor([[1, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=torch.bool)
    assert torch.equal(_relevant("instance"), expected)


def test_unknown_rule_names_the_valid_ones() -> None:
    with pytest.raises(ValueError, match=r"one of \['identity', 'instance'\], got 'class'"):
        _relevant("class")
