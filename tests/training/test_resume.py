"""Crash safety and determinism of training: SIGKILL and resume gives the uninterrupted result."""

import argparse
import errno
import json
import os
import pickle
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.training.tiny_run import checkout_env, run
from timam.formats.atomic import ArtifactWriteError
from timam.training.resume import load_state, restore_rng, rng_state, save_state
from timam.training.trainer import TimamTrainer

SCRIPT = Path(__file__).with_name("tiny_run.py")
EPOCHS = 6


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict:
    return run(tmp_path_factory.mktemp("reference"), EPOCHS, state_path=None)


def test_same_seed_gives_identical_training(tmp_path, uninterrupted):
    again = run(tmp_path, EPOCHS, state_path=None)
    assert again == uninterrupted


def _run_script(workdir: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), str(workdir), str(EPOCHS)],
        env=checkout_env(),
        capture_output=True,
        text=True,
        check=False,
    )


def test_sigkill_then_rerun_resumes_and_matches_uninterrupted_run(tmp_path):
    # Both sides in fresh processes: what a test before this one left in the pytest worker (threads,
    # backend flags) cannot make the comparison differ.
    reference = tmp_path / "reference"
    reference.mkdir()
    assert _run_script(reference).returncode == 0
    uninterrupted = json.loads((reference / "result.json").read_text())
    env = checkout_env()
    state = tmp_path / "state.pt"
    process = subprocess.Popen(
        [sys.executable, str(SCRIPT), str(tmp_path), str(EPOCHS)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.time() + 120
    while not state.exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert state.exists(), "the run finished or failed before an epoch state was saved"
    killed_at = torch.load(state, weights_only=True)["epoch"]
    assert 1 <= killed_at < EPOCHS
    assert not (tmp_path / "result.json").exists()

    resumed = _run_script(tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"after epoch {killed_at}" in resumed.stderr
    assert json.loads((tmp_path / "result.json").read_text()) == uninterrupted
    assert not state.exists(), "a completed run leaves no state behind"


def test_state_of_another_configuration_is_not_resumed(tmp_path, caplog):
    run(tmp_path, 2, state_path=None)
    state = tmp_path / "state.pt"
    torch.save({"fingerprint": "someone-else", "epoch": 1}, state)
    result = run(tmp_path, 2, state_path=state)
    assert len(result["history"]) == 2
    assert "different run configuration" in caplog.text


def test_crash_mid_epoch_resumes_from_the_last_step_saved(tmp_path, uninterrupted, monkeypatch):
    """With save_every_steps the state holds the epoch's batches and position; a rerun skips the
    steps already taken and still ends exactly where an uninterrupted run ends."""
    state = tmp_path / "state.pt"
    calls = {"n": 0}
    original = TimamTrainer.batch_terms

    def crash_on_eleventh_step(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 11:
            raise RuntimeError("power cut")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(TimamTrainer, "batch_terms", crash_on_eleventh_step)
    with pytest.raises(RuntimeError, match="power cut"):
        run(tmp_path, EPOCHS, state_path=state, save_every_steps=3)
    monkeypatch.setattr(TimamTrainer, "batch_terms", original)
    partial = torch.load(state, weights_only=True)["partial_epoch"]
    assert partial is not None and (partial["epoch"], partial["step"]) == (2, 3)  # 6 steps per epoch

    assert run(tmp_path, EPOCHS, state_path=state, save_every_steps=3) == uninterrupted
    assert not state.exists()


def test_full_disk_on_state_save_names_the_fix_and_keeps_the_previous_state(tmp_path, monkeypatch):
    state = tmp_path / "state.pt"
    save_state(state, {"epoch": 1})

    def disk_full(self, data):
        open(self, "wb").write(bytes(data)[:4])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", disk_full)
    with pytest.raises(ArtifactWriteError, match="Free disk space"):
        save_state(state, {"epoch": 2})
    monkeypatch.undo()
    assert torch.load(state, weights_only=True) == {"epoch": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["state.pt"]


def test_nan_loss_stops_training_naming_term_and_step_and_keeps_the_saved_state(tmp_path, monkeypatch):
    import timam.training.objective as objective

    state = tmp_path / "state.pt"
    calls = {"n": 0}
    original = objective.cmpm_loss

    def diverging_cmpm(*args, **kwargs):
        calls["n"] += 1
        image_to_text, text_to_image = original(*args, **kwargs)
        return (image_to_text * float("nan"), text_to_image) if calls["n"] == 9 else (image_to_text, text_to_image)

    monkeypatch.setattr(objective, "cmpm_loss", diverging_cmpm)
    with pytest.raises(FloatingPointError, match=r"'cmpm' is nan at epoch 2, step 2"):
        run(tmp_path, EPOCHS, state_path=state)  # 6 steps per epoch: the 9th batch is epoch 2, step 2
    saved = torch.load(state, weights_only=True)
    assert saved["epoch"] == 1 and saved["best_epoch"] == 1
    assert all(torch.isfinite(tensor).all() for tensor in saved["best_model"].values())


def _draws(generator: torch.Generator) -> tuple:
    batches = torch.randperm(6, generator=generator).tolist()
    return random.random(), float(np.random.rand()), torch.rand(3).tolist(), batches


def test_random_states_round_trip_and_hold_no_cuda_state_without_cuda():
    generator = torch.Generator().manual_seed(4)
    state = rng_state(generator)
    first = _draws(generator)
    restore_rng(state, generator)
    assert _draws(generator) == first
    assert state["cuda"] == []


def test_every_cuda_devices_random_state_is_saved_and_restored(tmp_path, monkeypatch, caplog):
    """The CUDA branch, with torch.cuda stood in for by two devices: both states go into the state
    file, come back from it and are restored; the file still loads and resumes without CUDA."""
    devices = [torch.arange(8, dtype=torch.uint8), torch.arange(8, 16, dtype=torch.uint8)]
    restored: list[list[torch.Tensor]] = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: [device.clone() for device in devices])
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", lambda states: restored.append(list(states)))
    generator = torch.Generator().manual_seed(4)
    save_state(tmp_path / "state.pt", {"rng": rng_state(generator)})
    saved = torch.load(tmp_path / "state.pt", weights_only=True)["rng"]
    restore_rng(saved, generator)
    assert len(restored) == 1 and all(torch.equal(a, b) for a, b in zip(restored[0], devices, strict=True))

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)  # fewer GPUs now: the first is restored
    restore_rng(saved, generator)
    assert len(restored[1]) == 1 and torch.equal(restored[1][0], devices[0])

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # a machine without CUDA
    first = _draws(generator)
    restore_rng(saved, generator)
    assert len(restored) == 2 and "torch sees no GPU" in caplog.text
    assert _draws(generator) == first  # the CPU states are still restored
    older = {key: value for key, value in saved.items() if key != "cuda"}  # saved before CUDA states were kept
    restore_rng(older, generator)
    assert _draws(generator) == first


def _foreign_files(directory: Path) -> dict[str, bytes]:
    """A truncated state of this version, a pickle of something else, and random bytes."""
    save_state(directory / "real.pt", {"fingerprint": "x", "epoch": 1, "model": {"w": torch.ones(4096)}})
    real = (directory / "real.pt").read_bytes()
    foreign = pickle.dumps(argparse.Namespace(note="not a training state"))
    return {"truncated": real[: len(real) // 2], "foreign pickle": foreign, "random bytes": os.urandom(4096)}


@pytest.mark.parametrize("kind", ["truncated", "foreign pickle", "random bytes"])
def test_a_file_that_is_no_resume_state_is_moved_aside_naming_it(tmp_path, caplog, kind):
    content = _foreign_files(tmp_path)[kind]
    state = tmp_path / "training_state.pt"
    state.write_bytes(content)
    assert load_state(state, "fingerprint") is None
    assert not state.exists()
    rejected = tmp_path / "training_state.pt.rejected"
    assert rejected.read_bytes() == content, "moved aside, not deleted"
    message = caplog.text
    assert f"{state} is not a training state this version of timam wrote" in message
    assert f"moved to {rejected}" in message and "starts from epoch 1" in message
    assert "weights_only" not in message
    state.write_bytes(content)  # the same again: the first rejected file is kept
    load_state(state, "fingerprint")
    assert rejected.exists() and (tmp_path / "training_state.pt.1.rejected").read_bytes() == content


def test_training_over_a_file_that_is_no_resume_state_starts_fresh(tmp_path, uninterrupted):
    """The whole run: the random bytes at state_path do not block it, and it trains from epoch 1."""
    state = tmp_path / "state.pt"
    state.write_bytes(os.urandom(4096))
    assert run(tmp_path, EPOCHS, state_path=state) == uninterrupted
    assert (tmp_path / "state.pt.rejected").exists() and not state.exists()
