"""training.cache_device: where the frozen outputs' caches live while training, and what it changes.

On the CPU "auto" is the host (the training device): nothing changes. On CUDA the caches go to the
GPU when they fit in a quarter of its free memory; the rule is a pure function, tested here with
fake sizes. The "meta" device stands in for a GPU to follow the caches' moves on the CPU.
"""

from __future__ import annotations

import pytest
import torch

import timam.training.trainer as trainer_module
from tests.training.test_trainer_step import make_trainer
from timam.training.cached_split import CACHE_MEMORY_FRACTION, cache_device_for
from timam.training.config import training_config

CPU, GPU = torch.device("cpu"), torch.device("cuda:0")
GB = 10**9


def test_auto_keeps_the_caches_on_the_gpu_when_they_fit_in_a_share_of_its_free_memory():
    # CUHK-PEDES: 6.7 GB of token states + 0.3 GB of features on an H200 with ~130 GB free
    assert cache_device_for("auto", GPU, 7 * GB, 130 * GB) == GPU
    assert cache_device_for("auto", GPU, 7 * GB, 20 * GB) == CPU  # a 24 GB card: the host
    assert cache_device_for("auto", GPU, int(CACHE_MEMORY_FRACTION * 40 * GB), 40 * GB) == GPU  # the boundary fits
    assert cache_device_for("auto", GPU, 7 * GB, 20 * GB, fraction=0.5) == GPU
    assert cache_device_for("cuda", GPU, 7 * GB, 1 * GB) == GPU  # asked for: no fit rule
    assert cache_device_for("cpu", GPU, 1, 130 * GB) == CPU


def test_on_the_cpu_auto_is_the_host_and_cuda_is_an_error():
    assert cache_device_for("auto", CPU, 7 * GB, 0) == CPU
    assert cache_device_for("cpu", CPU, 7 * GB, 0) == CPU
    with pytest.raises(ValueError, match="needs a CUDA training device"):
        cache_device_for("cuda", CPU, 1, 0)


def test_the_setting_is_checked():
    assert training_config({"cache_device": "cuda"}).cache_device == "cuda"
    with pytest.raises(ValueError, match="cache_device must be one of"):
        training_config({"cache_device": "gpu"})


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("cache_device")


def test_training_results_are_those_of_the_host_cache(workdir):
    """Heads on cached features and token states: one epoch, validation included."""
    results = []
    for setting in ("cpu", "auto"):
        trainer, generator = make_trainer(workdir, {"cache_device": setting})
        trainer.set_epoch(1)
        trainer.prepare_caches()
        assert trainer.cached_parts() == ("image_features", "token_states")
        assert trainer.place_caches() == CPU
        row = trainer.run_epoch(1, generator)
        results.append({key: value for key, value in row.items() if key != "seconds"})
    assert results[0] == results[1]


def test_caches_move_to_the_cache_device_gather_there_and_go_back_when_a_part_trains(workdir, monkeypatch):
    trainer, _ = make_trainer(workdir, {"freeze": {"text_model_epochs": 1}})
    trainer.set_epoch(1)
    host = {name: getattr(trainer.train, name) for name in ("image_features", "token_states")}
    stand_in = torch.device("meta")
    monkeypatch.setattr(trainer_module, "cache_device_for", lambda *args: stand_in)
    trainer.prepare_caches()
    assert trainer.train.image_features.device == trainer.train.token_states.device == stand_in
    captions = torch.arange(4)
    assert trainer.train.image_features_of(captions).device == stand_in  # gathered where the cache is
    moves = []

    def to_device(tensor, device):  # records the copies; a meta tensor has no data to copy back
        moves.append((tensor.device.type, device.type))
        return tensor.to(device) if device == stand_in else tensor

    monkeypatch.setattr(trainer_module, "to_device", to_device)
    states = trainer.text_input(trainer.train, captions)
    assert states.device == stand_in and states.shape == (4, *host["token_states"].shape[1:])
    assert moves == [("cpu", "meta"), ("meta", "cpu")]  # the row indices in, the gathered rows out
    trainer.set_epoch(2)  # the transformer trains: its cache's device copy is freed
    assert trainer.train.token_states is host["token_states"]
    assert trainer.train.image_features.device == stand_in  # still read
