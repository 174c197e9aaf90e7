"""The training image loader: one per run with persistent workers, uint8 out, and augmentation
drawn per caption, so the images are the same with 0, 1 or 2 workers."""

from __future__ import annotations

import pytest
import torch

import timam.training.cached_split as cached_split
from tests.training.test_trainer_step import make_trainer
from timam.training.cached_split import augmentation_seed

AUGMENTED = {"augmentation": {"flip": True, "crop_padding": 4, "colour_jitter": 0.1}}


def epoch_images(trainer, generator, epoch: int, steps: int = 3) -> list[torch.Tensor]:
    trainer.set_epoch(epoch)
    shares = trainer.batches(generator)[:steps]
    return list(trainer.image_stream(shares))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("loader")


def test_augmented_images_do_not_depend_on_the_worker_count(workdir, monkeypatch):
    seen = {}
    for workers in (0, 1, 2):
        monkeypatch.setattr(cached_split, "default_workers", lambda workers=workers: workers)
        trainer, generator = make_trainer(workdir, AUGMENTED, bert=False)
        state = torch.get_rng_state()
        seen[workers] = epoch_images(trainer, generator, epoch=1)
        # Not even in the main process do the draws consume the generator dropout and views use.
        assert torch.equal(torch.get_rng_state(), state)
    assert all(batch.dtype == torch.uint8 for batch in seen[0])
    for workers in (1, 2):
        assert all(torch.equal(a, b) for a, b in zip(seen[0], seen[workers], strict=True)), workers


def test_the_loader_is_built_once_per_run_and_its_workers_persist(workdir, monkeypatch):
    built = []
    original = cached_split.DataLoader

    def counting(*args, **kwargs):
        built.append(kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(cached_split, "DataLoader", counting)
    monkeypatch.setattr(cached_split, "default_workers", lambda: 1)
    trainer, generator = make_trainer(workdir, AUGMENTED, bert=False)
    first = epoch_images(trainer, generator, epoch=1, steps=2)
    loader = trainer.image_loader
    workers = loader._iterator._workers if loader._iterator is not None else []
    second = epoch_images(trainer, generator, epoch=2, steps=2)
    assert len(built) == 1 and built[0]["persistent_workers"] is True
    assert trainer.image_loader is loader and loader._iterator._workers == workers  # the same processes
    assert not all(torch.equal(a, b) for a, b in zip(first, second, strict=True)), "each epoch draws anew"


def test_augmentation_seeds_differ_by_epoch_caption_and_run_seed():
    seeds = {augmentation_seed(seed, epoch, caption) for seed in (0, 1) for epoch in (1, 2) for caption in range(50)}
    assert len(seeds) == 200 and all(0 <= seed < 2**64 for seed in seeds)  # what manual_seed takes
    assert augmentation_seed(0, 1, 3) == augmentation_seed(0, 1, 3)
