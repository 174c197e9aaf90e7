"""``training.deterministic``: the kernel settings a run holds while it trains, put back afterwards.

On the CPU the flags change nothing the run computes, so the test checks that they are set during
the epochs and restored after, and that a deterministic run trains to the same result.
"""

from __future__ import annotations

import os
import warnings

import pytest
import torch

from tests.training.tiny_run import tiny_inputs
from timam.training.config import training_config
from timam.training.determinism import CUBLAS_WORKSPACE, kernel_settings
from timam.training.loop import train_timam
from timam.training.trainer import TimamTrainer


def settings() -> tuple:
    cudnn = torch.backends.cudnn
    return (
        cudnn.deterministic,
        cudnn.benchmark,
        torch.are_deterministic_algorithms_enabled(),
        os.environ.get(CUBLAS_WORKSPACE),
    )


@pytest.fixture
def during_epochs(monkeypatch) -> list[tuple]:
    """The settings at the start of every training epoch."""
    seen: list[tuple] = []
    original = TimamTrainer.train_epoch

    def spy(self, *args, **kwargs):
        seen.append(settings())
        return original(self, *args, **kwargs)

    monkeypatch.setattr(TimamTrainer, "train_epoch", spy)
    monkeypatch.delenv(CUBLAS_WORKSPACE, raising=False)
    return seen


def _train(workdir, deterministic: bool):
    train, val, model_config = tiny_inputs(workdir)
    values = {"epochs": 2, "batch_size": 8, "embed_batch_size": 8, "device": "cpu", "deterministic": deterministic}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        checkpoint, history = train_timam(train, val, model_config, training_config(values))
    return checkpoint, history.drop(columns="seconds")


def test_a_deterministic_run_holds_the_deterministic_kernels_and_restores_the_callers_settings(tmp_path, during_epochs):
    before = settings()
    assert before[2] is False and before[3] is None
    checkpoint, history = _train(tmp_path, deterministic=True)
    assert during_epochs == [(True, False, True, ":4096:8")] * 2
    assert settings() == before
    during_epochs.clear()
    other_checkpoint, other_history = _train(tmp_path, deterministic=False)
    # Fixed-size training: cuDNN may time its convolution algorithms; the caller's other flags stay.
    assert during_epochs == [(before[0], True, False, None)] * 2
    assert settings() == before
    assert history.equals(other_history)  # CPU kernels are deterministic either way
    state, other = checkpoint.model.state_dict(), other_checkpoint.model.state_dict()
    assert all(torch.equal(tensor, other[name]) for name, tensor in state.items())


def test_kernel_settings_restore_after_an_error_and_keep_a_deterministic_workspace(monkeypatch):
    monkeypatch.setenv(CUBLAS_WORKSPACE, ":16:8")  # the other deterministic workspace: kept
    before = settings()
    with pytest.raises(RuntimeError, match="crash"), kernel_settings(True):
        assert settings() == (True, False, True, ":16:8")
        raise RuntimeError("crash")
    assert settings() == before
    monkeypatch.setenv(CUBLAS_WORKSPACE, ":0:0")  # not a deterministic one: replaced, then put back
    with kernel_settings(True):
        assert os.environ[CUBLAS_WORKSPACE] == ":4096:8"
    assert os.environ[CUBLAS_WORKSPACE] == ":0:0"


def test_deterministic_must_be_a_boolean():
    with pytest.raises(ValueError, match="training.deterministic must be a valid boolean.*got 'maybe'"):
        training_config({"deterministic": "maybe"})
