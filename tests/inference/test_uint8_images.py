"""Loaders send uint8 and the device normalises: bitwise the float transforms' tensors and embeddings.

Bitwise (``torch.equal``), not merely close: ``normalise`` runs ToTensor's and Normalize's own
operations (float32, /255, -mean, /std), each exactly rounded, so nothing may differ.
"""

import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from tests.training.tiny_run import TINY_MODEL
from timam.inference import embedding
from timam.inference.device import model_to, to_device_images
from timam.inference.images import eval_pixels, eval_transform, seeded, train_pixels, train_transform
from timam.models.preprocessing import ImagePreprocessing
from timam.models.timam import TimamModel

CPU = torch.device("cpu")
SIZE = ImagePreprocessing(size=(32, 16))


@pytest.fixture
def image_paths(tmp_path) -> list[str]:
    """Random RGB images of several sizes and shapes, as JPEG and PNG."""
    generator = np.random.default_rng(0)
    paths = []
    for index, (height, width) in enumerate([(40, 20), (33, 17), (64, 64), (20, 50), (32, 16)]):
        pixels = generator.integers(0, 256, (height, width, 3), dtype=np.uint8)
        path = tmp_path / f"{index}.{'jpg' if index % 2 else 'png'}"
        Image.fromarray(pixels).save(path)
        paths.append(str(path))
    return paths


def images(paths: list[str]) -> list[Image.Image]:
    return [Image.open(path).convert("RGB") for path in paths]


def test_uint8_eval_images_normalised_on_the_device_are_bitwise_the_float_transform(image_paths):
    uint8 = torch.stack([eval_pixels(SIZE)(image) for image in images(image_paths)])
    floats = torch.stack([eval_transform(SIZE)(image) for image in images(image_paths)])
    assert uint8.dtype == torch.uint8 and uint8.element_size() * 4 == floats.element_size()
    moved = to_device_images(uint8, CPU)
    assert moved.dtype == torch.float32 and moved.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(moved, to_device_images(floats, CPU))


def test_uint8_training_augmentation_is_bitwise_the_float_one_for_the_same_seed(image_paths):
    options = {"flip": True, "crop_padding": 4, "colour_jitter": 0.2}
    pixels, floats = train_pixels(SIZE, **options), train_transform(SIZE, **options)
    for seed, image in enumerate(images(image_paths) * 3):
        expected = seeded(floats, image, seed)
        got = to_device_images(seeded(pixels, image, seed)[None], CPU)[0]
        assert torch.equal(got, expected), seed
    drawn = {seeded(pixels, images(image_paths)[2], seed).sum().item() for seed in range(8)}
    assert len(drawn) > 1, "the seeds draw different augmentations"


def test_seeded_draws_leave_the_global_generator_alone(image_paths):
    transform = train_pixels(SIZE, flip=True, crop_padding=4, colour_jitter=0.0)
    image = images(image_paths)[0]
    state = torch.get_rng_state()
    first = seeded(transform, image, 7)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(seeded(transform, image, 7), first)


def test_image_embeddings_of_a_tiny_model_are_those_of_the_float_path(image_paths, monkeypatch):
    monkeypatch.setattr(embedding, "default_workers", lambda ranks=None: 0)
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # random weights
        model = model_to(TimamModel(TINY_MODEL), CPU).eval()
    options = {"batch_size": len(image_paths), "device": CPU, "desc": "t", "show_progress": False, "precision": "auto"}
    embedded = embedding.image_outputs(model, image_paths, project=True, **options)
    features = embedding.image_outputs(model, image_paths, project=False, **options)
    floats = to_device_images(torch.stack([eval_transform(SIZE)(image) for image in images(image_paths)]), CPU)
    with torch.no_grad():
        expected_features = model.image_encoder.features(floats)
        expected = model.image_encoder.projection(expected_features)
    assert torch.equal(features, expected_features) and torch.equal(embedded, expected)
