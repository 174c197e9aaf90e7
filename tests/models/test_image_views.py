"""Image features averaged over views: the mean of the views, invariant to turning the image."""

import warnings

import pytest
import torch

from tests.training.tiny_run import TINY_MODEL
from timam.models.config import ModelConfig
from timam.models.image_encoder import ImageEncoder, apply_views, image_view

SQUARE = TINY_MODEL.replace(image_size=(32, 32))


def encoder(views: int) -> ImageEncoder:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # random weights are fine here
        torch.manual_seed(0)
        return ImageEncoder(SQUARE.replace(image_views=views)).eval()


def test_eight_views_are_every_quarter_turn_and_its_mirror():
    image = torch.arange(4.0).view(1, 1, 2, 2)  # [[0, 1], [2, 3]]
    seen = {tuple(image_view(image, view).flatten().tolist()) for view in range(8)}
    assert len(seen) == 8  # the dihedral group of the square: all distinct
    assert image_view(image, 4).flatten().tolist() == [1.0, 0.0, 3.0, 2.0]  # mirrored left-right
    assert torch.equal(image_view(image, 0), image)
    batch = torch.arange(12.0).view(3, 1, 2, 2)
    views = torch.tensor([5, 0, 5])
    by_image = torch.cat([image_view(batch[i : i + 1], int(v)) for i, v in enumerate(views)])
    assert torch.equal(apply_views(batch, views), by_image)  # each image in its own view


@torch.no_grad()
def test_features_are_the_mean_over_the_views_and_ignore_orientation():
    images = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    eight = encoder(8)
    by_hand = torch.stack([eight.backbone(image_view(images, v)) for v in range(8)]).mean(0)
    assert torch.allclose(eight.features(images), by_hand, atol=1e-6)
    turned = torch.rot90(images, 1, dims=(2, 3)).flip(3)
    assert torch.allclose(eight.features(turned), eight.features(images), atol=1e-5)
    one = encoder(1)
    assert not torch.allclose(one.features(turned), one.features(images), atol=1e-3)  # one view does see it
    two = encoder(2)
    assert torch.allclose(two.features(images.flip(3)), two.features(images), atol=1e-5)


def test_bad_view_counts_name_the_fix():
    with pytest.raises(ValueError, match="image_views must be one of"):
        SQUARE.replace(image_views=4)
    with pytest.raises(ValueError, match="square image_size"):
        ModelConfig(num_classes=2, image_size=(160, 80), image_views=8)
    assert ModelConfig.from_dict({**SQUARE.to_dict(), "image_views": 8}).image_views == 8


@torch.no_grad()
def test_training_mode_draws_one_view_per_image():
    images = torch.randn(6, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    eight = encoder(8).train()
    eight.backbone.eval()  # as the trainer keeps a frozen backbone: BatchNorm statistics fixed
    torch.manual_seed(5)
    drawn = eight.features(images)
    per_view = eight.view_features(images)  # (8, 6, features)
    for row in range(len(images)):
        distances = (per_view[:, row] - drawn[row]).abs().amax(dim=1)
        assert float(distances.min()) < 1e-5, row  # exactly one of the eight views
    torch.manual_seed(5)
    assert torch.equal(eight.features(images), drawn)  # the draws follow torch's seed
    assert not torch.allclose(eight.eval().features(images), drawn)  # eval mode: the mean instead
